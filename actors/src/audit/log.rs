//! The synchronous audit log: open a directory with a key, append durably, one record at a time.
//!
//! Owns: recovering the head of the chain when opening, and the fsync-per-append path used by
//! command-line tools. The [`super::AuditChainer`] actor is built from an open [`AuditLog`] and
//! reuses its chain and segment writer for group commits.
//! Must not: append behind a torn or unverifiable tail, or behind a tail that is short of the
//! head recorded apart from the segments (it refuses and names the repair).

use std::fs::File;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::head::RecordedHead;
use super::record::{parse_line, Chain};
use super::segment::{list_segments, read_tail, SegmentWriter, Tail};
use super::{AuditError, AuditHead, AuditKey, AuditKind, AuditReceipt, AuditSettings};
use crate::{clock, fsutil};

/// An open audit log that appends with one `fdatasync` per record.
pub struct AuditLog {
    /// The audit directory.
    dir: PathBuf,
    /// Seq and hash of the last record, and the key.
    chain: Chain,
    /// The last segment, open for appending.
    writer: SegmentWriter,
    /// Reused encoding buffer.
    buf: Vec<u8>,
    /// Set after a failed write: what reached the disk is unknown, so nothing more is appended.
    broken: Option<String>,
    /// Where the head is recorded apart from the segments (`None`: not recorded, e.g. a copy
    /// of the log in a backup).
    recorded: Option<RecordedHead>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (seq, _) = self.chain.head();
        f.debug_struct("AuditLog")
            .field("dir", &self.dir)
            .field("head_seq", &seq)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (creating it with mode 0700 if missing) the audit directory `dir` and recovers the
    /// head of the chain from the last non-empty segment.
    ///
    /// Fails with [`AuditError::TornTail`] if that segment ends in an incomplete line, with
    /// [`AuditError::CorruptTail`] if its last line is not a record, and with
    /// [`AuditError::KeyMismatch`] if the last record does not verify with `key`.
    pub fn open(dir: &Path, key: AuditKey, settings: &AuditSettings) -> Result<Self, AuditError> {
        Self::open_inner(dir, key, settings, None)
    }

    /// Like [`AuditLog::open`], and the segments must reach the head recorded in `recorded`
    /// ([`AuditError::TailMissing`] / [`AuditError::HeadMismatch`] otherwise); every append
    /// then records the new head there (after its fsync, before the receipt).
    pub fn open_recorded(
        dir: &Path,
        key: AuditKey,
        settings: &AuditSettings,
        recorded: RecordedHead,
    ) -> Result<Self, AuditError> {
        Self::open_inner(dir, key, settings, Some(recorded))
    }

    fn open_inner(
        dir: &Path,
        key: AuditKey,
        settings: &AuditSettings,
        recorded: Option<RecordedHead>,
    ) -> Result<Self, AuditError> {
        let open_error = |path: &Path, error: std::io::Error| AuditError::Open {
            path: path.to_path_buf(),
            reason: error.to_string(),
        };
        fsutil::create_private_dir(dir).map_err(|e| open_error(dir, e))?;
        let segments = list_segments(dir).map_err(|e| open_error(dir, e))?;
        let (head_seq, head_hash) = recover_head(&segments, &key)?;
        if let Some(recorded) = &recorded {
            recorded.check(head_seq, &head_hash)?;
        }
        let (index, len) = match segments.last() {
            Some((index, path)) => {
                let len = std::fs::metadata(path)
                    .map_err(|e| open_error(path, e))?
                    .len();
                (*index, len)
            }
            None => (1, 0),
        };
        let writer = SegmentWriter::open(dir, settings.segment_max_bytes, index, len)
            .map_err(|e| open_error(dir, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            chain: Chain::new(key, head_seq, head_hash),
            writer,
            buf: Vec::with_capacity(512),
            broken: None,
            recorded,
        })
    }

    /// Appends one record and `fdatasync`s it; the receipt means the record is durable.
    ///
    /// After a failed write every later append fails too: reopen the log (which then reports a
    /// torn tail if part of the record reached the disk).
    pub fn append(
        &mut self,
        kind: AuditKind,
        actor: &str,
        subject: &str,
        data: &Value,
    ) -> Result<AuditReceipt, AuditError> {
        if let Some(reason) = &self.broken {
            return Err(AuditError::Write(format!(
                "an earlier write failed ({reason}); reopen the audit log"
            )));
        }
        self.buf.clear();
        let ts = clock::now_rfc3339();
        let receipt = self
            .chain
            .seal(&ts, kind, actor, subject, data, &mut self.buf)?;
        if let Err(error) = self.writer.write_batch(&self.buf) {
            self.broken = Some(error.to_string());
            return Err(AuditError::Write(error.to_string()));
        }
        crate::metrics::metrics().audit_appended(1);
        if let Some(recorded) = &self.recorded {
            // One record per command-line append: make the recorded head durable with it.
            let (seq, hash) = self.chain.head();
            recorded.note(seq, &hash)?;
            recorded.flush()?;
        }
        Ok(receipt)
    }

    /// The last record (seq 0 and 64 zeros when the log is empty).
    pub fn head(&self) -> AuditHead {
        let (seq, hash) = self.chain.head();
        AuditHead {
            seq,
            hash: hex::encode(hash),
        }
    }

    /// The audit directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The chain, the writer and the recorded head, for the actor's group commit.
    pub(crate) fn into_parts(self) -> (Chain, SegmentWriter, Option<RecordedHead>) {
        (self.chain, self.writer, self.recorded)
    }
}

/// Seq and hash of the last record of the last non-empty segment (0 and zeros when none).
fn recover_head(
    segments: &[(u64, PathBuf)],
    key: &AuditKey,
) -> Result<(u64, [u8; 32]), AuditError> {
    for (_, path) in segments.iter().rev() {
        let open_error = |error: std::io::Error| AuditError::Open {
            path: path.clone(),
            reason: error.to_string(),
        };
        let file = File::open(path).map_err(open_error)?;
        let len = file.metadata().map_err(open_error)?.len();
        match read_tail(&file, len).map_err(open_error)? {
            Tail::Empty => continue,
            Tail::Torn { complete_len, .. } => {
                return Err(AuditError::TornTail {
                    segment: path.clone(),
                    bytes: len - complete_len,
                })
            }
            Tail::Complete { last_line } => {
                let view = parse_line(&last_line).map_err(|reason| AuditError::CorruptTail {
                    segment: path.clone(),
                    reason: reason.to_string(),
                })?;
                if !view.verify_hash(key) {
                    return Err(AuditError::KeyMismatch { seq: view.seq });
                }
                return Ok((view.seq, view.hash));
            }
        }
    }
    Ok((0, [0u8; 32]))
}
