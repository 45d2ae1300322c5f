//! The chain head recorded apart from the segments, so that records cut from the *end* of the
//! log (which leaves a valid, shorter chain) are noticed.
//!
//! Owns: two records of the head `{seq, hash}` that do not live in the audit directory:
//! - in the store (tree `audit`, key `head`: 8 bytes big-endian seq + 32 bytes hash), written
//!   by every group commit of the [`super::AuditChainer`] and every append of a recorded
//!   [`super::AuditLog`], *after* the segment's fsync (so it never runs ahead of the durable
//!   segments) and *before* the senders are answered; it is not flushed on its own (the
//!   store's periodic flush and the flushes callers make anyway carry it), so after a crash it
//!   may lag the segments by the store's flush interval, never lead them;
//! - in `~/.kafclaw/audit.head` (JSON `{"seq":N,"hash":"<64 hex>"}`, 0600, replaced atomically),
//!   written at a clean stop of the gateway and by an accepted `audit repair`.
//!
//! The recorded head is the later of the two. The segments must reach it: a log whose last
//! record is before it is missing records ([`super::AuditError::TailMissing`] when opening,
//! [`super::VerifyError::TailMissing`] when verifying), and a log whose record at that seq has
//! another hash was rewritten from there.
//! Must not: hold anything but seq and hash (no record content, no key), or move the recorded
//! head backwards except through [`RecordedHead::reset`] (the operator's explicit
//! `audit repair --accept-missing`, itself audited).

use std::path::{Path, PathBuf};

use super::{AuditError, AuditHead};
use crate::paths::Home;
use crate::store::{KvTree, StoreDb, TreeName};

/// The key of the head in the `audit` tree.
const HEAD_KEY: &[u8] = b"head";

/// Where the head is recorded apart from the segments (see the module doc).
#[derive(Clone)]
pub struct RecordedHead {
    /// `~/.kafclaw/audit.head`.
    file: PathBuf,
    /// The store's `audit` tree, when the store is open here.
    tree: Option<KvTree>,
}

impl std::fmt::Debug for RecordedHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordedHead")
            .field("file", &self.file)
            .field("store", &self.tree.is_some())
            .finish()
    }
}

/// The head as stored in the `audit` tree and the head file, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) seq: u64,
    pub(crate) hash: [u8; 32],
}

impl Head {
    fn to_audit_head(self) -> AuditHead {
        AuditHead {
            seq: self.seq,
            hash: hex::encode(self.hash),
        }
    }
}

/// Decodes an [`AuditHead`] (seq and 64 hex digits).
pub(crate) fn decode(head: &AuditHead) -> Option<Head> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(&head.hash, &mut hash).ok()?;
    Some(Head {
        seq: head.seq,
        hash,
    })
}

impl RecordedHead {
    /// The head recorded in `file` and, when `db` is given, in its `audit` tree.
    pub fn new(file: PathBuf, db: Option<&StoreDb>) -> Result<Self, AuditError> {
        let tree = match db {
            Some(db) => Some(
                db.tree(TreeName::Audit)
                    .map_err(|e| unreadable("store", e))?,
            ),
            None => None,
        };
        Ok(Self { file, tree })
    }

    /// The head of a home: `~/.kafclaw/audit.head` and the store `db`.
    pub fn for_home(home: &Home, db: Option<&StoreDb>) -> Result<Self, AuditError> {
        Self::new(home.audit_head_file(), db)
    }

    /// The recorded head: the later of the store's and the file's; `None` when neither holds
    /// one (a log never written through a recorded head). An unreadable record is an error:
    /// the caller cannot tell what the log should reach (fail closed).
    pub fn read(&self) -> Result<Option<AuditHead>, AuditError> {
        Ok(self.read_raw()?.map(Head::to_audit_head))
    }

    pub(crate) fn read_raw(&self) -> Result<Option<Head>, AuditError> {
        let stored = match &self.tree {
            Some(tree) => match tree.get(HEAD_KEY).map_err(|e| unreadable("store", e))? {
                Some(bytes) => Some(from_bytes(&bytes).ok_or_else(|| {
                    unreadable("store", "the audit head in the store is corrupt")
                })?),
                None => None,
            },
            None => None,
        };
        let filed = read_file(&self.file)?;
        Ok(match (stored, filed) {
            (Some(a), Some(b)) => Some(if b.seq > a.seq { b } else { a }),
            (a, b) => a.or(b),
        })
    }

    /// Records `head` in the store (no flush: see the module doc). Called after the segment
    /// holding it is durable.
    pub(crate) fn note(&self, seq: u64, hash: &[u8; 32]) -> Result<(), AuditError> {
        let Some(tree) = &self.tree else {
            return Ok(());
        };
        let mut bytes = [0u8; 40];
        bytes[..8].copy_from_slice(&seq.to_be_bytes());
        bytes[8..].copy_from_slice(hash);
        tree.insert(HEAD_KEY, bytes)
            .map(|_| ())
            .map_err(|e| AuditError::Write(format!("cannot record the audit head: {e}")))
    }

    /// Makes the store's record durable (command-line appends, which fsync every record).
    pub(crate) fn flush(&self) -> Result<(), AuditError> {
        match &self.tree {
            Some(tree) => tree
                .flush_blocking()
                .map_err(|e| AuditError::Write(format!("cannot record the audit head: {e}"))),
            None => Ok(()),
        }
    }

    /// Writes the head file (at a clean stop): temp file + rename, 0600, fsynced.
    pub fn write_file(&self, head: &AuditHead) -> Result<(), AuditError> {
        let mut bytes = serde_json::to_vec(&serde_json::json!({
            "seq": head.seq,
            "hash": head.hash,
        }))
        .map_err(|e| AuditError::Write(e.to_string()))?;
        bytes.push(b'\n');
        crate::fsutil::write_atomic(&self.file, &bytes)
            .map_err(|e| AuditError::Write(format!("cannot write {}: {e}", self.file.display())))
    }

    /// Sets the store's record to `head`, also backwards, without touching the file: only for
    /// a *copy* of a store that travels with a copy of the log taken before it (a backup
    /// archive), so the copy expects exactly the copied log. The caller flushes the store.
    pub fn replace_in_store(&self, head: &AuditHead) -> Result<(), AuditError> {
        let decoded =
            decode(head).ok_or_else(|| AuditError::Write("the audit head is malformed".into()))?;
        self.note(decoded.seq, &decoded.hash)
    }

    /// Moves the recorded head to `head` in both places, also backwards, and makes it durable:
    /// only for the operator's accepted repair of a log that lost its tail.
    pub(crate) fn reset(&self, head: &AuditHead) -> Result<(), AuditError> {
        let decoded = decode(head)
            .ok_or_else(|| AuditError::Write("the new audit head is malformed".into()))?;
        self.note(decoded.seq, &decoded.hash)?;
        self.flush()?;
        self.write_file(head)
    }

    /// Fails when the segments' head `seq`/`hash` is short of the recorded head, or is the
    /// recorded seq with another hash; a log past the recorded head is fine (the record may lag).
    pub(crate) fn check(&self, seq: u64, hash: &[u8; 32]) -> Result<(), AuditError> {
        let Some(recorded) = self.read_raw()? else {
            return Ok(());
        };
        if seq < recorded.seq {
            return Err(AuditError::TailMissing {
                after_seq: seq,
                recorded_seq: recorded.seq,
            });
        }
        if seq == recorded.seq && *hash != recorded.hash {
            return Err(AuditError::HeadMismatch { seq });
        }
        Ok(())
    }
}

fn from_bytes(bytes: &[u8]) -> Option<Head> {
    let seq = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let hash: [u8; 32] = bytes.get(8..)?.try_into().ok()?;
    Some(Head { seq, hash })
}

fn read_file(path: &Path) -> Result<Option<Head>, AuditError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(&path.display().to_string(), e)),
    };
    let head: AuditHead = serde_json::from_str(text.trim())
        .map_err(|e| unreadable(&path.display().to_string(), e))?;
    decode(&head)
        .map(Some)
        .ok_or_else(|| unreadable(&path.display().to_string(), "the hash is not 64 hex digits"))
}

fn unreadable(place: &str, reason: impl std::fmt::Display) -> AuditError {
    AuditError::HeadUnreadable {
        place: place.to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests;
