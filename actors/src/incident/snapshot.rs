//! Incident snapshots (`snapshot` control message): a consistent copy of timeline.db and the
//! audit log, made while the gateway keeps running, with a manifest of BLAKE3 sums.
//!
//! Owns: the layout `~/.kafclaw/snapshots/<YYYYMMDDTHHMMSSZ>[-<label>]/` (0700) holding
//! `timeline.db/` (an export through [`StoreDb::export_to`]), `audit/` (the segments, files 0600)
//! and `MANIFEST.json` (0600): every file's relative path, size and BLAKE3 hash, plus the head
//! (seq, hash) of the copied audit chain.
//! Must not: stop or slow the writers (the store exports from a consistent view; the audit
//! segments are append-only, so the copy takes every closed segment whole and the last one up
//! to its last complete line — a prefix of the chain, whatever is appended meanwhile), or leave
//! a half-made snapshot behind (a failure removes it).
//!
//! Both functions block (file I/O, hashing): call them from a blocking task.

use std::fs::{self, DirBuilder, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::macros::format_description;
use time::OffsetDateTime;

use crate::audit::{AuditHead, GENESIS_PREV};
use crate::fsutil;
use crate::paths::Home;
use crate::store::{StoreDb, StoreError};

/// The manifest's file name inside a snapshot.
pub const MANIFEST_NAME: &str = "MANIFEST.json";
/// The store export's directory inside a snapshot.
const STORE_NAME: &str = "timeline.db";
/// The audit copy's directory inside a snapshot.
const AUDIT_NAME: &str = "audit";
/// The manifest format.
const FORMAT: u32 = 1;
/// The longest label.
const MAX_LABEL: usize = 32;
/// How much of a segment's end is read at a time while looking for its last line.
const TAIL_CHUNK: u64 = 64 * 1024;

/// One file of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// Relative to the snapshot directory, `/`-separated (`audit/audit-000001.jsonl`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the content (hex).
    pub blake3: String,
}

/// A snapshot that was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The snapshot directory.
    pub path: PathBuf,
    /// Its `MANIFEST.json`.
    pub manifest_path: PathBuf,
    /// Every file but the manifest, sorted by path.
    pub files: Vec<SnapshotFile>,
    /// The last record of the copied audit chain (seq 0 and 64 zeros when it is empty).
    pub audit_head: AuditHead,
}

/// `MANIFEST.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    /// Always 1.
    format: u32,
    /// When the snapshot was taken (RFC 3339 UTC).
    created_at: String,
    /// The operator's label, if any.
    label: Option<String>,
    /// Every file but the manifest, sorted by path.
    files: Vec<SnapshotFile>,
    /// The head of the copied audit chain.
    audit_head: AuditHead,
}

/// Why a snapshot could not be made or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The label has characters other than `a-z`, `0-9`, `-`, or more than 32 of them.
    #[error("invalid snapshot label: use at most 32 of a-z, 0-9 and -")]
    InvalidLabel,
    /// A file or directory could not be read or written.
    #[error("snapshot i/o failed on {path}: {reason}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        reason: String,
    },
    /// Exporting the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No free directory name for this second.
    #[error("too many snapshots with the same time and label")]
    NameTaken,
    /// `MANIFEST.json` is missing or not a manifest.
    #[error("snapshot manifest unreadable: {reason}")]
    ManifestUnreadable {
        /// What is wrong.
        reason: String,
    },
    /// A file listed in the manifest is missing.
    #[error("snapshot file {path} is missing")]
    FileMissing {
        /// Its relative path.
        path: String,
    },
    /// A file's size or hash differs from the manifest.
    #[error("snapshot file {path} does not match the manifest")]
    FileChanged {
        /// Its relative path.
        path: String,
    },
    /// A file is in the snapshot but not in the manifest (or is not a regular file).
    #[error("snapshot file {path} is not in the manifest")]
    UnexpectedFile {
        /// Its relative path.
        path: String,
    },
    /// The copied audit chain does not end where the manifest says.
    #[error("the snapshot's audit copy ends at record {found}, the manifest says {expected}")]
    AuditHeadMismatch {
        /// The manifest's head seq.
        expected: u64,
        /// The copy's head seq.
        found: u64,
    },
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> SnapshotError + '_ {
    move |error| SnapshotError::Io {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

/// Checks a label: `[a-z0-9-]{0,32}`; an empty label counts as none.
fn check_label(label: Option<&str>) -> Result<Option<&str>, SnapshotError> {
    match label {
        None | Some("") => Ok(None),
        Some(label)
            if label.len() <= MAX_LABEL
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
        {
            Ok(Some(label))
        }
        Some(_) => Err(SnapshotError::InvalidLabel),
    }
}

/// Writes a snapshot of `db` and `home`'s audit log under `home.snapshots_dir()`.
///
/// The directory is named `<now as YYYYMMDDTHHMMSSZ>-<label>` (`-2`, `-3`, … appended if that
/// name is taken). A label other than `[a-z0-9-]{0,32}` is refused before anything is written.
pub fn create_snapshot(
    home: &Home,
    db: &StoreDb,
    label: Option<&str>,
    now: OffsetDateTime,
) -> Result<SnapshotInfo, SnapshotError> {
    let label = check_label(label)?;
    let root = home.snapshots_dir();
    fsutil::create_private_dir(&root).map_err(io_error(&root))?;
    let stamp = now
        .to_offset(time::UtcOffset::UTC)
        .format(format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .map_err(|e| SnapshotError::Io {
            path: root.clone(),
            reason: e.to_string(),
        })?;
    let base = match label {
        Some(label) => format!("{stamp}-{label}"),
        None => stamp,
    };
    let dest = create_unique_dir(&root, &base)?;
    match fill_snapshot(home, db, &dest, label, now) {
        Ok(info) => Ok(info),
        Err(error) => {
            // Never leave a half-made snapshot that could be mistaken for a good one.
            let _ = fs::remove_dir_all(&dest);
            Err(error)
        }
    }
}

/// Creates `root/base` (or `base-2`, …), mode 0700, failing rather than reusing one.
fn create_unique_dir(root: &Path, base: &str) -> Result<PathBuf, SnapshotError> {
    for n in 1..100u32 {
        let name = if n == 1 {
            base.to_string()
        } else {
            format!("{base}-{n}")
        };
        let path = root.join(name);
        match DirBuilder::new().mode(fsutil::DIR_MODE).create(&path) {
            Ok(()) => return Ok(path),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(io_error(&path)(error)),
        }
    }
    Err(SnapshotError::NameTaken)
}

fn fill_snapshot(
    home: &Home,
    db: &StoreDb,
    dest: &Path,
    label: Option<&str>,
    now: OffsetDateTime,
) -> Result<SnapshotInfo, SnapshotError> {
    db.export_to(&dest.join(STORE_NAME))?;
    let audit_copy = dest.join(AUDIT_NAME);
    copy_audit(&home.audit_dir(), &audit_copy)?;
    let audit_head = audit_head(&audit_copy)?;
    let files = hash_tree(dest)?;
    let manifest = Manifest {
        format: FORMAT,
        created_at: crate::clock::to_rfc3339(now),
        label: label.map(str::to_string),
        files: files.clone(),
        audit_head: audit_head.clone(),
    };
    let manifest_path = dest.join(MANIFEST_NAME);
    let bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|e| SnapshotError::ManifestUnreadable {
            reason: e.to_string(),
        })?;
    let mut file = fsutil::create_private_new(&manifest_path).map_err(io_error(&manifest_path))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_error(&manifest_path))?;
    fsutil::sync_dir(dest).map_err(io_error(dest))?;
    Ok(SnapshotInfo {
        path: dest.to_path_buf(),
        manifest_path,
        files,
        audit_head,
    })
}

/// The audit segment files in `dir` (`audit-NNNNNN.jsonl`), sorted by index.
fn audit_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io_error(dir)(error)),
    };
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let Some(index) = name
            .to_str()
            .and_then(|n| n.strip_prefix("audit-"))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u64>().ok())
        else {
            continue;
        };
        segments.push((index, entry.path()));
    }
    segments.sort_unstable_by_key(|(index, _)| *index);
    Ok(segments)
}

/// Length of the first `len` bytes of `file` up to and including the last `\n` (0 if none).
fn complete_prefix(file: &File, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut chunk = Vec::new();
    while end > 0 {
        let start = end.saturating_sub(TAIL_CHUNK);
        chunk.resize((end - start) as usize, 0);
        file.read_exact_at(&mut chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Copies every segment of `from` into `to` (0700, files 0600): closed segments whole, the last
/// one up to its last complete line.
fn copy_audit(from: &Path, to: &Path) -> Result<(), SnapshotError> {
    DirBuilder::new()
        .mode(fsutil::DIR_MODE)
        .create(to)
        .map_err(io_error(to))?;
    let segments = audit_segments(from)?;
    let last = segments.len().saturating_sub(1);
    for (position, (_, source)) in segments.iter().enumerate() {
        let file = File::open(source).map_err(io_error(source))?;
        let len = file.metadata().map_err(io_error(source))?.len();
        // Appends may continue on the last segment: stop at its last complete line. A closed
        // segment never changes, but the same rule costs nothing and also drops a torn tail.
        let take = if position == last {
            complete_prefix(&file, len).map_err(io_error(source))?
        } else {
            len
        };
        let name = source.file_name().unwrap_or_default();
        let target = to.join(name);
        let mut out = fsutil::create_private_new(&target).map_err(io_error(&target))?;
        let copied = io::copy(&mut (&file).take(take), &mut out).map_err(io_error(&target))?;
        if copied != take {
            return Err(SnapshotError::Io {
                path: source.clone(),
                reason: format!("read {copied} of {take} bytes"),
            });
        }
        out.sync_all().map_err(io_error(&target))?;
    }
    fsutil::sync_dir(to).map_err(io_error(to))
}

/// The head of the audit chain copied into `dir`: seq and hash of the last line of the last
/// non-empty segment.
fn audit_head(dir: &Path) -> Result<AuditHead, SnapshotError> {
    #[derive(Deserialize)]
    struct Head {
        seq: u64,
        hash: String,
    }
    for (_, path) in audit_segments(dir)?.iter().rev() {
        let file = File::open(path).map_err(io_error(path))?;
        let len = file.metadata().map_err(io_error(path))?.len();
        let Some(line) = last_line(&file, len).map_err(io_error(path))? else {
            continue;
        };
        let head: Head = serde_json::from_slice(&line).map_err(|e| SnapshotError::Io {
            path: path.clone(),
            reason: format!("last audit record unreadable: {e}"),
        })?;
        return Ok(AuditHead {
            seq: head.seq,
            hash: head.hash,
        });
    }
    Ok(AuditHead {
        seq: 0,
        hash: GENESIS_PREV.to_string(),
    })
}

/// The last line (without its `\n`) of the first `len` bytes of `file`, `None` when empty.
fn last_line(file: &File, len: u64) -> io::Result<Option<Vec<u8>>> {
    let end = if len > 0 {
        let mut last = [0u8; 1];
        file.read_exact_at(&mut last, len - 1)?;
        if last[0] == b'\n' {
            len - 1
        } else {
            len
        }
    } else {
        0
    };
    if end == 0 {
        return Ok(None);
    }
    let start = complete_prefix(file, end)?;
    let mut line = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut line, start)?;
    Ok(Some(line))
}

/// Every regular file under `root` except the manifest, with size and BLAKE3, sorted by path.
fn hash_tree(root: &Path) -> Result<Vec<SnapshotFile>, SnapshotError> {
    let mut files = Vec::new();
    let mut dirs = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = dirs.pop() {
        for entry in fs::read_dir(&dir).map_err(io_error(&dir))? {
            let entry = entry.map_err(io_error(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            if relative == MANIFEST_NAME {
                continue;
            }
            let path = entry.path();
            let kind = fs::symlink_metadata(&path)
                .map_err(io_error(&path))?
                .file_type();
            if kind.is_dir() {
                dirs.push((path, relative));
            } else if kind.is_file() {
                let (size, blake3) = hash_file(&path)?;
                files.push(SnapshotFile {
                    path: relative,
                    size,
                    blake3,
                });
            } else {
                return Err(SnapshotError::UnexpectedFile { path: relative });
            }
        }
    }
    files.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn hash_file(path: &Path) -> Result<(u64, String), SnapshotError> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(&file).map_err(io_error(path))?;
    let size = file.metadata().map_err(io_error(path))?.len();
    Ok((size, hasher.finalize().to_hex().to_string()))
}

/// Recomputes every file's size and BLAKE3 under the snapshot at `path` and checks them, the
/// file list and the audit head against its manifest.
pub fn verify_snapshot(path: &Path) -> Result<(), SnapshotError> {
    let manifest_path = path.join(MANIFEST_NAME);
    let bytes = fs::read(&manifest_path).map_err(|e| SnapshotError::ManifestUnreadable {
        reason: e.to_string(),
    })?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| SnapshotError::ManifestUnreadable {
            reason: e.to_string(),
        })?;
    if manifest.format != FORMAT {
        return Err(SnapshotError::ManifestUnreadable {
            reason: format!("unknown format {}", manifest.format),
        });
    }
    let found = hash_tree(path)?;
    for expected in &manifest.files {
        match found.iter().find(|f| f.path == expected.path) {
            None => {
                return Err(SnapshotError::FileMissing {
                    path: expected.path.clone(),
                })
            }
            Some(actual) if actual != expected => {
                return Err(SnapshotError::FileChanged {
                    path: expected.path.clone(),
                })
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = found
        .iter()
        .find(|f| !manifest.files.iter().any(|m| m.path == f.path))
    {
        return Err(SnapshotError::UnexpectedFile {
            path: extra.path.clone(),
        });
    }
    let head = audit_head(&path.join(AUDIT_NAME))?;
    if head != manifest.audit_head {
        return Err(SnapshotError::AuditHeadMismatch {
            expected: manifest.audit_head.seq,
            found: head.seq,
        });
    }
    Ok(())
}
