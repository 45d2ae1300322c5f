//! `SKILL.md`'s YAML front matter: between a first line `---` and the next line `---`.
//!
//! Owns: parsing it into a closed type (unknown keys refused) and checking its names.
//! Must not: accept an `entry` outside the skill or a credential name that is not plain.

use serde::{Deserialize, Serialize};

/// The front matter of a skill.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SkillManifest {
    /// The skill's name (its directory under `installed/`).
    pub name: String,
    /// What it does, as described to the model.
    pub description: String,
    /// Its version.
    pub version: String,
    /// The tools it needs.
    #[serde(default)]
    pub tools: Vec<String>,
    /// A program in the skill run through the executor (relative path).
    #[serde(default)]
    pub entry: Option<String>,
    /// The JSON schema of the entry's arguments.
    #[serde(default)]
    pub args: Option<serde_json::Value>,
    /// The entry needs the network (strict isolation gives it none otherwise).
    #[serde(default)]
    pub network: bool,
    /// Credential names, sealed as `skills.<name>.<credential>`.
    #[serde(default)]
    pub credentials: Vec<String>,
    /// The names of `args.properties` in the order the front matter declares them (the
    /// entry's positional arguments).
    #[serde(skip)]
    pub arg_order: Vec<String>,
}

/// Why the front matter is refused (one lowercase line).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// No `---` block at the top.
    #[error("SKILL.md does not start with a `---` front matter block")]
    Missing,
    /// The YAML does not parse into the front matter.
    #[error("invalid front matter: {0}")]
    Invalid(String),
}

impl SkillManifest {
    /// Parses the front matter of `text` (the whole `SKILL.md`).
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let rest = text
            .strip_prefix("---\n")
            .or_else(|| text.strip_prefix("---\r\n"))
            .ok_or(ManifestError::Missing)?;
        let end = rest
            .lines()
            .scan(0usize, |at, line| {
                let start = *at;
                *at += line.len() + 1;
                Some((start, line))
            })
            .find(|(_, line)| line.trim_end() == "---")
            .map(|(start, _)| start)
            .ok_or(ManifestError::Missing)?;
        let yaml = &rest[..end];
        let mut m: SkillManifest = serde_yaml_ng::from_str(yaml).map_err(|e| {
            ManifestError::Invalid(e.to_string().lines().next().unwrap_or("").to_lowercase())
        })?;
        if let Ok(tree) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(yaml) {
            if let Some(props) = tree
                .get("args")
                .and_then(|a| a.get("properties"))
                .and_then(|p| p.as_mapping())
            {
                m.arg_order = props
                    .keys()
                    .filter_map(|k| k.as_str().map(String::from))
                    .collect();
            }
        }
        m.check()?;
        Ok(m)
    }

    fn check(&self) -> Result<(), ManifestError> {
        let bad = |s: String| Err(ManifestError::Invalid(s));
        if !super::valid_name(&self.name) {
            return bad(format!(
                "name {:?} is not 1-64 of a-z, 0-9, '-', '_'",
                self.name
            ));
        }
        if self.description.trim().is_empty() {
            return bad("description is empty".into());
        }
        if self.version.trim().is_empty() {
            return bad("version is empty".into());
        }
        if let Some(entry) = &self.entry {
            if !relative_plain(entry) {
                return bad(format!(
                    "entry {entry:?} is not a plain path inside the skill"
                ));
            }
        }
        if let Some(c) = self.credentials.iter().find(|c| !super::valid_name(c)) {
            return bad(format!(
                "credential name {c:?} is not 1-64 of a-z, 0-9, '-', '_'"
            ));
        }
        if let Some(t) = self.tools.iter().find(|t| t.trim().is_empty()) {
            return bad(format!("tool name {t:?} is empty"));
        }
        Ok(())
    }
}

/// A relative path of plain components (no `/` at the start, no `.` or `..`).
pub fn relative_plain(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path.split('/').all(crate::backup::layout::plain_component)
}
