//! `kafclaw audit repair`: the one explicit, audited way to get past a torn tail, or past a
//! tail that lost whole records.
//!
//! Owns: cutting the incomplete last line of the last non-empty segment (or, when that line is
//! a whole record that only lacks its `\n`, restoring the newline), then appending an
//! `audit.repaired` record that says what was done. When the chain (after that cut) ends
//! before the head recorded apart from the segments ([`super::RecordedHead`]), repair refuses
//! and changes nothing, unless the operator passes `accept_missing` (`--accept-missing`):
//! then the `audit.repaired` record also names the missing range and the recorded head, and
//! the recorded head is moved to that record.
//! Must not: remove a complete line, touch any segment but the last non-empty one, accept a
//! chain shorter than the recorded head without the operator's flag, or repair anything
//! verification would call tampering (a bad hash, a gap): that stays visible.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::Serialize;
use serde_json::json;

use super::head::{Head, RecordedHead};
use super::record::parse_line;
use super::segment::{list_segments, read_tail, Tail};
use super::{AuditError, AuditHead, AuditKey, AuditKind, AuditLog, AuditReceipt, AuditSettings};

/// The `actor` of the `audit.repaired` record.
const REPAIR_ACTOR: &str = "cli";

/// How [`repair`] treats the head recorded apart from the segments.
#[derive(Clone, Debug, Default)]
pub struct RepairOptions {
    /// The recorded head of the log's home (`None`: none is kept, e.g. a copied log).
    pub recorded: Option<RecordedHead>,
    /// The operator accepts a chain that ends before the recorded head (`--accept-missing`).
    pub accept_missing: bool,
}

/// What [`repair`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RepairReport {
    /// The repaired segment's file name; `None` when there was nothing to repair.
    pub segment: Option<String>,
    /// How many bytes of an incomplete line were cut.
    pub bytes_cut: u64,
    /// Whether the torn line was a whole, valid record missing only its `\n`, which was added.
    pub newline_restored: bool,
    /// The `audit.repaired` record; `None` when there was nothing to repair.
    pub record: Option<AuditReceipt>,
    /// The records the operator accepted as missing: the chain ended after this seq, while
    /// the recorded head was `recorded_seq`.
    pub missing: Option<Missing>,
}

/// A range of records accepted as missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Missing {
    /// The last record the segments held.
    pub after_seq: u64,
    /// The recorded head.
    pub recorded_seq: u64,
}

/// The torn last line of the last non-empty segment, as found.
struct Torn {
    path: std::path::PathBuf,
    len: u64,
    complete_len: u64,
    bytes: Vec<u8>,
    whole_record: bool,
}

/// Repairs a torn tail of the audit log in `dir` (see the module doc). A log without a torn
/// tail and not short of its recorded head is left untouched and reported with `segment: None`.
pub fn repair(
    dir: &Path,
    key: &AuditKey,
    settings: &AuditSettings,
    options: &RepairOptions,
) -> Result<RepairReport, AuditError> {
    let segments = list_segments(dir).map_err(|e| open_error(dir, e))?;
    let torn = find_torn(&segments, key)?;
    let head_after = head_after_cut(&segments, torn.as_ref(), key)?;
    let recorded = match &options.recorded {
        Some(recorded) => recorded.read_raw()?,
        None => None,
    };
    let missing = recorded
        .filter(|r| {
            head_after.seq < r.seq || (head_after.seq == r.seq && head_after.hash != r.hash)
        })
        .map(|r| Missing {
            after_seq: head_after.seq,
            recorded_seq: r.seq,
        });
    if let (Some(m), false) = (missing, options.accept_missing) {
        return Err(if m.after_seq < m.recorded_seq {
            AuditError::TailMissing {
                after_seq: m.after_seq,
                recorded_seq: m.recorded_seq,
            }
        } else {
            AuditError::HeadMismatch { seq: m.after_seq }
        });
    }
    if torn.is_none() && missing.is_none() {
        return Ok(RepairReport {
            segment: None,
            bytes_cut: 0,
            newline_restored: false,
            record: None,
            missing: None,
        });
    }
    let (segment, bytes_cut, newline_restored, cut_blake3) = match &torn {
        Some(torn) => cut(torn)?,
        None => (
            segment_file_name(segments.last().map(|(_, p)| p.as_path())),
            0,
            false,
            None,
        ),
    };
    let mut data = json!({
        "segment": segment,
        "bytes_cut": bytes_cut,
        "newline_restored": newline_restored,
        "cut_blake3": cut_blake3,
    });
    if let (Some(m), Some(r), Some(map)) = (missing, recorded, data.as_object_mut()) {
        map.insert("missing_after_seq".into(), json!(m.after_seq));
        map.insert("recorded_head_seq".into(), json!(r.seq));
        map.insert("recorded_head_hash".into(), json!(hex::encode(r.hash)));
    }
    let record = append_repaired(
        dir,
        key,
        settings,
        options,
        missing.is_some(),
        &segment,
        &data,
    )?;
    tracing::warn!(%segment, bytes_cut, newline_restored, missing = ?missing, seq = record.seq, "audit log repaired");
    Ok(RepairReport {
        segment: Some(segment),
        bytes_cut,
        newline_restored,
        record: Some(record),
        missing,
    })
}

fn open_error(path: &Path, error: std::io::Error) -> AuditError {
    AuditError::Open {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

fn segment_file_name(path: Option<&Path>) -> String {
    path.and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The torn tail of the last non-empty segment, if it has one.
fn find_torn(
    segments: &[(u64, std::path::PathBuf)],
    key: &AuditKey,
) -> Result<Option<Torn>, AuditError> {
    for (_, path) in segments.iter().rev() {
        let file = std::fs::File::open(path).map_err(|e| open_error(path, e))?;
        let len = file.metadata().map_err(|e| open_error(path, e))?.len();
        match read_tail(&file, len).map_err(|e| open_error(path, e))? {
            Tail::Empty => continue,
            Tail::Complete { .. } => return Ok(None),
            Tail::Torn { complete_len, torn } => {
                let whole_record = parse_line(&torn).is_ok_and(|view| view.verify_hash(key));
                return Ok(Some(Torn {
                    path: path.clone(),
                    len,
                    complete_len,
                    bytes: torn,
                    whole_record,
                }));
            }
        }
    }
    Ok(None)
}

/// The head the chain will have once `torn` is repaired (seq 0 when no record is left).
fn head_after_cut(
    segments: &[(u64, std::path::PathBuf)],
    torn: Option<&Torn>,
    key: &AuditKey,
) -> Result<Head, AuditError> {
    if let Some(view) = torn
        .filter(|t| t.whole_record)
        .and_then(|t| parse_line(&t.bytes).ok())
    {
        return Ok(Head {
            seq: view.seq,
            hash: view.hash,
        });
    }
    for (_, path) in segments.iter().rev() {
        let file = std::fs::File::open(path).map_err(|e| open_error(path, e))?;
        let len = match torn.filter(|t| &t.path == path) {
            Some(t) => t.complete_len,
            None => file.metadata().map_err(|e| open_error(path, e))?.len(),
        };
        match read_tail(&file, len).map_err(|e| open_error(path, e))? {
            Tail::Empty => continue,
            Tail::Complete { last_line } => {
                let view = parse_line(&last_line).map_err(|reason| AuditError::CorruptTail {
                    segment: path.clone(),
                    reason: reason.to_string(),
                })?;
                if !view.verify_hash(key) {
                    return Err(AuditError::KeyMismatch { seq: view.seq });
                }
                return Ok(Head {
                    seq: view.seq,
                    hash: view.hash,
                });
            }
            // An earlier segment with a torn end is not the tail: verification reports it.
            Tail::Torn { .. } => {
                return Err(AuditError::TornTail {
                    segment: path.clone(),
                    bytes: len,
                })
            }
        }
    }
    Ok(Head {
        seq: 0,
        hash: [0u8; 32],
    })
}

/// Cuts (or completes) the torn line; returns what the record says about it.
fn cut(torn: &Torn) -> Result<(String, u64, bool, Option<String>), AuditError> {
    let write_error = |error: std::io::Error| AuditError::Write(error.to_string());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&torn.path)
        .map_err(|e| open_error(&torn.path, e))?;
    let bytes_cut = if torn.whole_record {
        file.write_all_at(b"\n", torn.len).map_err(write_error)?;
        0
    } else {
        file.set_len(torn.complete_len).map_err(write_error)?;
        torn.len - torn.complete_len
    };
    file.sync_all().map_err(write_error)?;
    let cut_blake3 = (!torn.whole_record).then(|| blake3::hash(&torn.bytes).to_hex().to_string());
    Ok((
        segment_file_name(Some(&torn.path)),
        bytes_cut,
        torn.whole_record,
        cut_blake3,
    ))
}

/// Appends the `audit.repaired` record; after an accepted cut the recorded head moves to it.
fn append_repaired(
    dir: &Path,
    key: &AuditKey,
    settings: &AuditSettings,
    options: &RepairOptions,
    accepted_missing: bool,
    segment: &str,
    data: &serde_json::Value,
) -> Result<AuditReceipt, AuditError> {
    let record = match (&options.recorded, accepted_missing) {
        (Some(recorded), false) => {
            let mut log = AuditLog::open_recorded(dir, key.clone(), settings, recorded.clone())?;
            log.append(AuditKind::AuditRepaired, REPAIR_ACTOR, segment, data)?
        }
        (recorded, _) => {
            let mut log = AuditLog::open(dir, key.clone(), settings)?;
            let record = log.append(AuditKind::AuditRepaired, REPAIR_ACTOR, segment, data)?;
            if let Some(recorded) = recorded {
                recorded.reset(&AuditHead {
                    seq: record.seq,
                    hash: record.hash.clone(),
                })?;
            }
            record
        }
    };
    Ok(record)
}
