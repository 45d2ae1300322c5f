//! Installing, verifying, listing and removing skills.
//!
//! Owns: staging into `quarantine/` (0700 directories, 0600 files, 0700 executables, each
//! created with its final mode and hashed while copied), the decision (no critical finding,
//! warnings only with `--accept-warnings`), the BLAKE3 pins and the atomic rename into
//! `installed/<name>/`; re-hashing against the pins; the enabled set.
//! Must not: leave a refused skill anywhere but nowhere (its staging copy is removed), or
//! replace an installed skill in place.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use kafclaw_actors::fsutil;

use super::manifest::SkillManifest;
use super::walk::{Visit, Walk};
use super::{verify, Finding, FindingKind, LinkPolicy, SkillsDir, PINS, SKILL_MD};

/// Why an install did not happen.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The verifier refused it (critical findings, or warnings not accepted).
    #[error("refused: {}", summary(.findings))]
    Refused {
        /// The skill's name when its front matter parsed.
        name: Option<String>,
        /// Every finding.
        findings: Vec<Finding>,
    },
    /// A skill of that name is installed.
    #[error("skill {0} is already installed; remove it first")]
    Exists(String),
    /// Reading the source or writing the copy failed.
    #[error("{0}")]
    Io(String),
}

fn summary(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| {
            if f.file.is_empty() {
                format!("{}: {}", f.kind.as_str(), f.detail)
            } else {
                format!("{}: {} {}", f.kind.as_str(), f.file, f.detail)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The pins of an installed skill (`.pins.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pins {
    /// The skill's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Every file (relative name) and its BLAKE3 (hex).
    pub files: BTreeMap<String, String>,
    /// The files installed executable (0700).
    #[serde(default)]
    pub executables: BTreeSet<String>,
}

/// An installed skill.
#[derive(Clone, Debug)]
pub struct Installed {
    /// Its front matter.
    pub manifest: SkillManifest,
    /// The warnings accepted.
    pub warnings: Vec<Finding>,
    /// Its pins.
    pub pins: Pins,
}

/// Copies entries into the staging directory, hashing each.
struct Stager {
    root: PathBuf,
    hashes: BTreeMap<String, String>,
    executables: BTreeSet<String>,
}

fn io(what: &str, e: impl std::fmt::Display) -> String {
    format!("cannot write the staging copy {what}: {e}")
}

impl Visit for Stager {
    fn dir(&mut self, rel: &str) -> Result<(), String> {
        let path = self.root.join(rel);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(|e| io(rel, e))
    }

    fn file(
        &mut self,
        rel: &str,
        size: u64,
        mode: u32,
        reader: &mut dyn Read,
    ) -> Result<(), String> {
        if self.hashes.contains_key(rel) {
            return Err(format!("{rel} appears twice"));
        }
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            self.dir(
                parent
                    .strip_prefix(&self.root)
                    .map_or("", |p| p.to_str().unwrap_or("")),
            )?;
        }
        let exec = mode & 0o111 != 0;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if exec { 0o700 } else { 0o600 })
            .open(&path)
            .map_err(|e| io(rel, e))?;
        let hash = copy_hashed(rel, size, reader, Some(file))?;
        if exec {
            self.executables.insert(rel.to_string());
        }
        self.hashes.insert(rel.to_string(), hash);
        Ok(())
    }
}

/// Copies exactly `size` bytes (into `file` when given, fsynced) and returns their BLAKE3.
fn copy_hashed(
    rel: &str,
    size: u64,
    reader: &mut dyn Read,
    file: Option<std::fs::File>,
) -> Result<String, String> {
    let mut hasher = blake3::Hasher::new();
    let mut out = file.map(|f| std::io::BufWriter::with_capacity(64 << 10, f));
    let mut buf = vec![0u8; 64 << 10];
    let mut left = size;
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        let n = reader
            .read(&mut buf[..want])
            .map_err(|e| format!("cannot read {rel}: {e}"))?;
        if n == 0 {
            return Err(format!("cannot read {rel}: ends {left} bytes early"));
        }
        hasher.update(&buf[..n]);
        if let Some(out) = out.as_mut() {
            out.write_all(&buf[..n]).map_err(|e| io(rel, e))?;
        }
        left -= n as u64;
    }
    if let Some(out) = out {
        let file = out.into_inner().map_err(|e| io(rel, e.error()))?;
        file.sync_all().map_err(|e| io(rel, e))?;
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// A staging directory that is removed unless it was moved into place.
struct Quarantine(PathBuf);

impl Drop for Quarantine {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ensure_tree(dir: &SkillsDir) -> Result<(), String> {
    for d in [
        dir.root().to_path_buf(),
        dir.quarantine(),
        dir.installed(),
        dir.audit(),
    ] {
        fsutil::create_private_dir(&d)
            .map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    Ok(())
}

/// Stages `source` (a directory or a tar archive), verifies it, and installs it.
pub fn install(
    dir: &SkillsDir,
    source: &Path,
    policy: &LinkPolicy,
    accept_warnings: bool,
) -> Result<Installed, InstallError> {
    ensure_tree(dir).map_err(InstallError::Io)?;
    let meta = std::fs::metadata(source)
        .map_err(|e| InstallError::Io(format!("cannot read {}: {e}", source.display())))?;
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| InstallError::Io(e.to_string()))?;
    let staging = dir.quarantine().join(hex::encode(random));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(|e| InstallError::Io(io("directory", e)))?;
    let guard = Quarantine(staging.clone());
    let mut stager = Stager {
        root: staging.clone(),
        hashes: BTreeMap::new(),
        executables: BTreeSet::new(),
    };
    let mut walk = Walk::new(&mut stager);
    if meta.is_dir() {
        walk.directory(source)
    } else if meta.is_file() {
        walk.archive(source)
    } else {
        Err(format!(
            "{} is not a directory or an archive file",
            source.display()
        ))
    }
    .map_err(InstallError::Io)?;
    let mut findings = std::mem::take(&mut walk.findings);
    // An archive may hold the skill in one top directory.
    let prefix = top_prefix(&stager.hashes);
    let root = staging.join(prefix.trim_end_matches('/'));
    let files: BTreeMap<String, String> = stager
        .hashes
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|k| (k.to_string(), v.clone())))
        .filter(|(k, _)| k != PINS)
        .collect();
    let executables: BTreeSet<String> = stager
        .executables
        .iter()
        .filter_map(|k| k.strip_prefix(&prefix).map(String::from))
        .collect();
    let manifest = match files.contains_key(SKILL_MD) {
        false => {
            findings.push(Finding::new(
                FindingKind::FrontMatter,
                SKILL_MD,
                "is missing",
            ));
            None
        }
        true => match std::fs::read_to_string(root.join(SKILL_MD)) {
            Ok(text) => match SkillManifest::parse(&text) {
                Ok(m) => Some(m),
                Err(e) => {
                    findings.push(Finding::new(
                        FindingKind::FrontMatter,
                        SKILL_MD,
                        e.to_string(),
                    ));
                    None
                }
            },
            Err(_) => {
                findings.push(Finding::new(
                    FindingKind::FrontMatter,
                    SKILL_MD,
                    "is not UTF-8 text",
                ));
                None
            }
        },
    };
    if let Some(entry) = manifest.as_ref().and_then(|m| m.entry.as_ref()) {
        if !files.contains_key(entry) {
            findings.push(Finding::new(
                FindingKind::FrontMatter,
                SKILL_MD,
                format!("entry {entry} is not a file of the skill"),
            ));
        }
    }
    let mut links = Vec::new();
    for rel in files.keys() {
        let bytes = std::fs::read(root.join(rel)).map_err(|e| InstallError::Io(e.to_string()))?;
        let text = String::from_utf8_lossy(&bytes);
        let mut found = Vec::new();
        verify::scan_text(rel, &text, &mut findings, &mut found);
        links.extend(found.into_iter().map(|l| (rel.clone(), l)));
    }
    verify::check_links(&links, policy, &mut findings);
    let name = manifest.as_ref().map(|m| m.name.clone());
    let refused =
        findings.iter().any(Finding::critical) || (!findings.is_empty() && !accept_warnings);
    let Some(manifest) = manifest.filter(|_| !refused) else {
        return Err(InstallError::Refused { name, findings });
    };
    let target = dir.skill(&manifest.name);
    if target.exists() {
        return Err(InstallError::Exists(manifest.name));
    }
    let pins = Pins {
        name: manifest.name.clone(),
        version: manifest.version.clone(),
        files,
        executables,
    };
    let bytes = serde_json::to_vec_pretty(&pins).map_err(|e| InstallError::Io(e.to_string()))?;
    fsutil::write_atomic(&root.join(PINS), &bytes).map_err(|e| InstallError::Io(io(PINS, e)))?;
    std::fs::rename(&root, &target)
        .map_err(|e| InstallError::Io(format!("cannot move the skill into place: {e}")))?;
    fsutil::sync_dir(&dir.installed()).map_err(|e| InstallError::Io(e.to_string()))?;
    drop(guard);
    Ok(Installed {
        manifest,
        warnings: findings,
        pins,
    })
}

/// `dir/` when every staged file is under one top directory and none is `SKILL.md` at the
/// top; else empty.
fn top_prefix(files: &BTreeMap<String, String>) -> String {
    if files.contains_key(SKILL_MD) {
        return String::new();
    }
    let tops: BTreeSet<&str> = files
        .keys()
        .filter_map(|k| k.split_once('/').map(|(t, _)| t))
        .collect();
    let all_nested = files.keys().all(|k| k.contains('/'));
    match (tops.len(), all_nested) {
        (1, true) => format!("{}/", tops.iter().next().copied().unwrap_or_default()),
        _ => String::new(),
    }
}

/// Hashes entries without copying them.
struct Hasher(BTreeMap<String, String>, BTreeSet<String>);

impl Visit for Hasher {
    fn dir(&mut self, _rel: &str) -> Result<(), String> {
        Ok(())
    }
    fn file(
        &mut self,
        rel: &str,
        size: u64,
        mode: u32,
        reader: &mut dyn Read,
    ) -> Result<(), String> {
        if rel != PINS {
            if mode & 0o111 != 0 {
                self.1.insert(rel.to_string());
            }
            self.0
                .insert(rel.to_string(), copy_hashed(rel, size, reader, None)?);
        }
        Ok(())
    }
}

/// Re-hashes the installed skill `name` against its pins: the problems found (empty when it
/// verifies), or why it could not be checked.
pub fn verify_installed(dir: &SkillsDir, name: &str) -> Result<Vec<String>, String> {
    let root = dir.skill(name);
    let pins = read_pins(dir, name)?;
    let mut hasher = Hasher(BTreeMap::new(), BTreeSet::new());
    let mut walk = Walk::new(&mut hasher);
    walk.directory(&root)?;
    let mut problems: Vec<String> = walk
        .findings
        .iter()
        .map(|f| format!("{} {}", f.file, f.detail))
        .collect();
    for (rel, pinned) in &pins.files {
        match hasher.0.get(rel) {
            None => problems.push(format!("{rel} is missing")),
            Some(h) if h != pinned => {
                problems.push(format!("{rel} changed (blake3 {h}, pinned {pinned})"))
            }
            Some(_) => {}
        }
    }
    for rel in hasher.0.keys().filter(|k| !pins.files.contains_key(*k)) {
        problems.push(format!("{rel} is not pinned"));
    }
    for rel in hasher.1.difference(&pins.executables) {
        problems.push(format!("{rel} became executable"));
    }
    Ok(problems)
}

/// The pins of the installed skill `name`.
pub fn read_pins(dir: &SkillsDir, name: &str) -> Result<Pins, String> {
    if !super::valid_name(name) {
        return Err(format!("{name:?} is not a skill name"));
    }
    let path = dir.skill(name).join(PINS);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("skill {name} is not installed"))
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The front matter of the installed skill `name`.
pub fn read_manifest(dir: &SkillsDir, name: &str) -> Result<SkillManifest, String> {
    read_pins(dir, name)?;
    let text = std::fs::read_to_string(dir.skill(name).join(SKILL_MD))
        .map_err(|e| format!("skill {name}: cannot read {SKILL_MD}: {e}"))?;
    SkillManifest::parse(&text).map_err(|e| format!("skill {name}: {e}"))
}

/// The names of the installed skills, sorted.
pub fn installed_names(dir: &SkillsDir) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.installed())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| super::valid_name(n))
        .collect();
    names.sort();
    names
}

/// Removes the installed skill `name` (moved aside first, so a crash never leaves half a
/// skill under `installed/`).
pub fn remove(dir: &SkillsDir, name: &str) -> Result<(), String> {
    read_pins(dir, name)?;
    ensure_tree(dir)?;
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| e.to_string())?;
    let aside = dir
        .quarantine()
        .join(format!("removed-{}", hex::encode(random)));
    std::fs::rename(dir.skill(name), &aside)
        .map_err(|e| format!("cannot remove skill {name}: {e}"))?;
    let _ = set_enabled(dir, name, false);
    std::fs::remove_dir_all(&aside).map_err(|e| format!("cannot remove skill {name}: {e}"))
}

/// The enabled skills' names.
pub fn enabled(dir: &SkillsDir) -> BTreeSet<String> {
    std::fs::read(dir.enabled_file())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Enables or disables `name`; true when that changed something.
pub fn set_enabled(dir: &SkillsDir, name: &str, on: bool) -> Result<bool, String> {
    let mut set = enabled(dir);
    let changed = if on {
        set.insert(name.to_string())
    } else {
        set.remove(name)
    };
    if changed {
        ensure_tree(dir)?;
        let bytes = serde_json::to_vec(&set).map_err(|e| e.to_string())?;
        fsutil::write_atomic(&dir.enabled_file(), &bytes)
            .map_err(|e| format!("cannot write {}: {e}", dir.enabled_file().display()))?;
    }
    Ok(changed)
}
