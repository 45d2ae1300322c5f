//! `kafclaw audit repair`: the one explicit, audited way to get past a torn tail.
//!
//! Owns: cutting the incomplete last line of the last non-empty segment (or, when that line is
//! a whole record that only lacks its `\n`, restoring the newline), then appending an
//! `audit.repaired` record that says what was done.
//! Must not: remove a complete line, touch any segment but the last non-empty one, or repair
//! anything verification would call tampering (a bad hash, a gap): that stays visible.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::Serialize;
use serde_json::json;

use super::record::parse_line;
use super::segment::{list_segments, read_tail, Tail};
use super::{AuditError, AuditKey, AuditKind, AuditLog, AuditReceipt, AuditSettings};

/// The `actor` of the `audit.repaired` record.
const REPAIR_ACTOR: &str = "cli";

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
}

/// Repairs a torn tail of the audit log in `dir` (see the module doc). A log without a torn
/// tail is left untouched and reported with `segment: None`.
pub fn repair(
    dir: &Path,
    key: &AuditKey,
    settings: &AuditSettings,
) -> Result<RepairReport, AuditError> {
    let open_error = |path: &Path, error: std::io::Error| AuditError::Open {
        path: path.to_path_buf(),
        reason: error.to_string(),
    };
    let segments = list_segments(dir).map_err(|e| open_error(dir, e))?;
    for (_, path) in segments.iter().rev() {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| open_error(path, e))?;
        let len = file.metadata().map_err(|e| open_error(path, e))?.len();
        let (complete_len, torn) = match read_tail(&file, len).map_err(|e| open_error(path, e))? {
            Tail::Empty => continue,
            Tail::Complete { .. } => break,
            Tail::Torn { complete_len, torn } => (complete_len, torn),
        };
        let whole_record = parse_line(&torn).is_ok_and(|view| view.verify_hash(key));
        let write_error = |error: std::io::Error| AuditError::Write(error.to_string());
        let bytes_cut = if whole_record {
            file.write_all_at(b"\n", len).map_err(write_error)?;
            0
        } else {
            file.set_len(complete_len).map_err(write_error)?;
            len - complete_len
        };
        file.sync_all().map_err(write_error)?;
        drop(file);

        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let data = json!({
            "segment": name,
            "bytes_cut": bytes_cut,
            "newline_restored": whole_record,
            "cut_blake3": (!whole_record).then(|| blake3::hash(&torn).to_hex().to_string()),
        });
        let mut log = AuditLog::open(dir, key.clone(), settings)?;
        let record = log.append(AuditKind::AuditRepaired, REPAIR_ACTOR, &name, &data)?;
        tracing::warn!(segment = %name, bytes_cut, newline_restored = whole_record, seq = record.seq, "audit log repaired");
        return Ok(RepairReport {
            segment: Some(name),
            bytes_cut,
            newline_restored: whole_record,
            record: Some(record),
        });
    }
    Ok(RepairReport {
        segment: None,
        bytes_cut: 0,
        newline_restored: false,
        record: None,
    })
}
