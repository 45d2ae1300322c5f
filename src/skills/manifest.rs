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
        // Byte offsets of each line as written (`\r\n` counts two), so the slice below
        // always falls on a line start.
        let end = rest
            .split_inclusive('\n')
            .scan(0usize, |at, line| {
                let start = *at;
                *at += line.len();
                Some((start, line))
            })
            .find(|(_, line)| line.trim_end() == "---")
            .map(|(start, _)| start)
            .ok_or(ManifestError::Missing)?;
        let yaml = &rest[..end];
        let invalid =
            |e: serde_yaml_ng::Error| ManifestError::Invalid(first_line_lowercase(&e.to_string()));
        // One reading of the YAML for the schema and the positional order: the generic tree
        // refuses a key given twice, which the typed reading would settle silently.
        let tree: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).map_err(invalid)?;
        let mut m: SkillManifest = serde_yaml_ng::from_str(yaml).map_err(invalid)?;
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

fn first_line_lowercase(message: &str) -> String {
    message.lines().next().unwrap_or("").to_lowercase()
}

/// A relative path of plain components (no `/` at the start, no `.` or `..`).
pub fn relative_plain(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path.split('/').all(crate::backup::layout::plain_component)
}
