//! The closed set of names a backup may hold, where each one is staged, and the most bytes
//! each may have.
//!
//! Owns: name validation (relative, `/`-separated, no `.`/`..`/empty components, a small
//! character set) and the mapping of a backup name onto a home laid out by [`Home`].
//! Must not: touch the file system; accept a name outside the layout.

use std::path::PathBuf;

use kafclaw_actors::agent::IDENTITY_FILES;
use kafclaw_actors::paths::Home;

/// The manifest's file name.
pub const MANIFEST: &str = "MANIFEST.json";
/// The sanitized config's file name.
pub const CONFIG: &str = "config.json";
/// The sealed vault key's file name (`--include-key`).
pub const SEALED_KEY: &str = "tomb.rr.sealed";
/// The store export's directory.
pub const STORE: &str = "timeline.db";
/// The audit segments' directory.
pub const AUDIT: &str = "audit";
/// The workspace identity files' directory.
pub const WORKSPACE: &str = "workspace";

/// Longest accepted name (bytes).
const MAX_NAME: usize = 200;
/// Deepest accepted name (components).
const MAX_DEPTH: usize = 4;

/// What a name is in the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// `MANIFEST.json`.
    Manifest,
    /// `config.json`.
    Config,
    /// `tomb.rr.sealed`.
    SealedKey,
    /// `timeline.db` or anything under it.
    Store,
    /// `audit` or one `audit/audit-NNNNNN.jsonl` segment.
    Audit,
    /// `workspace` or one of its identity files.
    Identity,
}

impl Part {
    /// The most bytes one file of this part may have.
    pub fn max_bytes(self) -> u64 {
        match self {
            Part::Manifest => 16 << 20,
            Part::Config | Part::Identity => 1 << 20,
            Part::SealedKey => 64 << 10,
            Part::Audit => 4 << 30,
            // Bounded by the free space of the staging file system (checked as it is written).
            Part::Store => u64::MAX,
        }
    }
}

/// Why a name is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Absolute, empty, `.`/`..`, odd characters, too long or too deep.
    #[error("{name:?} is not a plain relative name")]
    NotPlain {
        /// The name as found (lossy).
        name: String,
    },
    /// A plain name that a backup never holds.
    #[error("{name:?} is not part of a backup's layout")]
    OutsideLayout {
        /// The name.
        name: String,
    },
}

/// Validates a name found in a backup (`dir`: the entry is a directory); a trailing `/` of a
/// directory entry is accepted.
pub fn classify(raw: &[u8], dir: bool) -> Result<(String, Part), NameError> {
    let lossy = || String::from_utf8_lossy(raw).into_owned();
    let text = std::str::from_utf8(raw).map_err(|_| NameError::NotPlain { name: lossy() })?;
    let text = if dir {
        text.strip_suffix('/').unwrap_or(text)
    } else {
        text
    };
    let parts: Vec<&str> = text.split('/').collect();
    let plain = !text.is_empty()
        && text.len() <= MAX_NAME
        && parts.len() <= MAX_DEPTH
        && parts.iter().all(|p| plain_component(p));
    if !plain {
        return Err(NameError::NotPlain { name: lossy() });
    }
    let outside = || NameError::OutsideLayout {
        name: text.to_string(),
    };
    let part = match (parts.as_slice(), dir) {
        ([MANIFEST], false) => Part::Manifest,
        ([CONFIG], false) => Part::Config,
        ([SEALED_KEY], false) => Part::SealedKey,
        ([STORE, ..], true) | ([STORE, _, ..], false) => Part::Store,
        ([AUDIT], true) => Part::Audit,
        ([AUDIT, segment], false) if is_segment(segment) => Part::Audit,
        ([WORKSPACE], true) => Part::Identity,
        ([WORKSPACE, file], false) if IDENTITY_FILES.contains(file) => Part::Identity,
        _ => return Err(outside()),
    };
    Ok((text.to_string(), part))
}

pub(crate) fn plain_component(p: &str) -> bool {
    !p.is_empty()
        && p != "."
        && p != ".."
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `audit-NNNNNN.jsonl` (six or more digits), the audit log's segment names.
fn is_segment(name: &str) -> bool {
    name.strip_prefix("audit-")
        .and_then(|n| n.strip_suffix(".jsonl"))
        .is_some_and(|d| d.len() >= 6 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Where a (validated) name is staged in the home view `view`: the state parts under
/// `view.state_dir()`, the manifest and the sealed key in `view.root()`.
pub fn staged_path(view: &Home, name: &str, part: Part) -> PathBuf {
    match part {
        Part::Manifest | Part::SealedKey => view.root().join(name),
        Part::Config => view.config_file(),
        Part::Store | Part::Audit | Part::Identity => view.state_dir().join(name),
    }
}
