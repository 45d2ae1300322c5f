//! The record layout, reachable from the `fuzz/` crate (feature `fuzzing` only).
//!
//! Owns: thin wrappers over the private sealer and line parser, so a fuzz target can seal a
//! record with arbitrary fields and read arbitrary bytes back as a stored line.
//! Must not: add behaviour; every function here calls the one the audit log itself uses.

use serde_json::Value;

use super::record::{parse_line, Chain};
use super::{AuditKey, AuditKind};

/// A stored line split at the fixed places of the layout (see [`read_line`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedLine {
    /// The `seq` field.
    pub seq: u64,
    /// The decoded `prev` field.
    pub prev: [u8; 32],
    /// The decoded `hash` field.
    pub hash: [u8; 32],
    /// Length of the hashed prefix (the canonical bytes without their final `}`).
    pub unsealed_len: usize,
    /// Whether `hash` is the keyed hash of that prefix under the given key.
    pub hash_ok: bool,
}

/// Seals one record after the head `(head_seq, head_hash)` and returns the stored line with
/// its `\n`, exactly as the chainer and [`super::AuditLog`] write it.
#[allow(clippy::too_many_arguments)]
pub fn seal_line(
    key: &AuditKey,
    head_seq: u64,
    head_hash: [u8; 32],
    ts: &str,
    kind: AuditKind,
    actor: &str,
    subject: &str,
    data: &Value,
) -> Result<Vec<u8>, String> {
    let mut chain = Chain::new(key.clone(), head_seq, head_hash);
    let mut out = Vec::new();
    chain
        .seal(ts, kind, actor, subject, data, &mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Reads a stored line (without its `\n`) the way `verify` does.
pub fn read_line(line: &[u8], key: &AuditKey) -> Result<ParsedLine, &'static str> {
    let view = parse_line(line)?;
    Ok(ParsedLine {
        seq: view.seq,
        prev: view.prev,
        hash: view.hash,
        unsealed_len: view.unsealed.len(),
        hash_ok: view.verify_hash(key),
    })
}
