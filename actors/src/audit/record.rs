//! One record: its canonical bytes, sealing it into the chain, and reading a stored line back.
//!
//! Owns: the byte layout described in the [`crate::audit`] module doc (canonical bytes, the
//! spliced `hash` suffix, the genesis `prev`).
//! Must not: touch files (that is `segment`) or decide what to do with a bad line (that is
//! `verify` and `log`).

use serde_json::Value;

use super::{AuditError, AuditKey, AuditKind, AuditReceipt};

/// The `prev` of the first record (`seq` 1): 64 ASCII zeros.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Length of the stored suffix `,"hash":"` + 64 hex + `"}` that follows the canonical bytes
/// minus their final `}`.
pub(crate) const HASH_SUFFIX_LEN: usize = HASH_KEY.len() + 64 + 2;
/// The field that starts the hash suffix.
const HASH_KEY: &[u8] = b",\"hash\":\"";
/// The field that starts the `prev` part, right before the hash suffix.
const PREV_KEY: &[u8] = b",\"prev\":\"";
/// Length of `,"prev":"` + 64 hex + `"`.
const PREV_PART_LEN: usize = PREV_KEY.len() + 64 + 1;
/// Every record starts with these bytes.
const SEQ_KEY: &[u8] = b"{\"seq\":";
/// Shortest possible line: `{"seq":1` + prev part + hash suffix (the rest can't be shorter).
const MIN_LINE_LEN: usize = SEQ_KEY.len() + 1 + PREV_PART_LEN + HASH_SUFFIX_LEN;

/// The running state of the chain: the key, the last sealed record and the next `seq`.
pub(crate) struct Chain {
    /// The keyed-BLAKE3 key.
    key: AuditKey,
    /// `seq` of the last sealed record (0 when none).
    head_seq: u64,
    /// Hash of the last sealed record (all zeros for the genesis).
    head_hash: [u8; 32],
}

impl Chain {
    /// A chain whose last record is `head_seq` with `head_hash` (0 and zeros when empty).
    pub(crate) fn new(key: AuditKey, head_seq: u64, head_hash: [u8; 32]) -> Self {
        Self {
            key,
            head_seq,
            head_hash,
        }
    }

    /// The last sealed record.
    pub(crate) fn head(&self) -> (u64, [u8; 32]) {
        (self.head_seq, self.head_hash)
    }

    /// Assigns the next `seq`, computes the hash and appends the full stored line (with its
    /// `\n`) to `out`. On an encoding error `out` and the chain are left as they were.
    pub(crate) fn seal(
        &mut self,
        ts: &str,
        kind: AuditKind,
        actor: &str,
        subject: &str,
        data: &Value,
        out: &mut Vec<u8>,
    ) -> Result<AuditReceipt, AuditError> {
        let start = out.len();
        let seq = self.head_seq + 1;
        let encoded = encode_unsealed(seq, ts, kind, actor, subject, data, &self.head_hash, out);
        if let Err(error) = encoded {
            out.truncate(start);
            return Err(AuditError::Write(format!("cannot encode record: {error}")));
        }
        let hash = keyed_hash(&self.key, &out[start..]);
        let hash_hex = hex::encode(hash);
        out.extend_from_slice(HASH_KEY);
        out.extend_from_slice(hash_hex.as_bytes());
        out.extend_from_slice(b"\"}\n");
        self.head_seq = seq;
        self.head_hash = hash;
        Ok(AuditReceipt {
            seq,
            hash: hash_hex,
        })
    }
}

/// Writes the canonical bytes of a record *without their final `}`* to `out`.
#[allow(clippy::too_many_arguments)]
fn encode_unsealed(
    seq: u64,
    ts: &str,
    kind: AuditKind,
    actor: &str,
    subject: &str,
    data: &Value,
    prev: &[u8; 32],
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    out.extend_from_slice(SEQ_KEY);
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(b",\"ts\":");
    serde_json::to_writer(&mut *out, ts)?;
    out.extend_from_slice(b",\"kind\":");
    serde_json::to_writer(&mut *out, kind.as_str())?;
    out.extend_from_slice(b",\"actor\":");
    serde_json::to_writer(&mut *out, actor)?;
    out.extend_from_slice(b",\"subject\":");
    serde_json::to_writer(&mut *out, subject)?;
    out.extend_from_slice(b",\"data\":");
    write_canonical(data, out)?;
    out.extend_from_slice(PREV_KEY);
    out.extend_from_slice(hex::encode(prev).as_bytes());
    out.push(b'"');
    Ok(())
}

/// Writes `value` as canonical compact JSON: object keys sorted by their UTF-8 bytes.
pub(crate) fn write_canonical(value: &Value, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key)?;
                out.push(b':');
                write_canonical(item, out)?;
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out)?;
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar)?,
    }
    Ok(())
}

/// `blake3::keyed_hash(key, unsealed ++ "}")`: the record hash from the stored prefix.
pub(crate) fn keyed_hash(key: &AuditKey, unsealed: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_keyed(key.bytes());
    hasher.update(unsealed);
    hasher.update(b"}");
    *hasher.finalize().as_bytes()
}

/// A stored line (without its `\n`) split at the fixed places of the layout. Nothing here is
/// trusted until [`LineView::verify_hash`] succeeds.
#[derive(Debug)]
pub(crate) struct LineView<'a> {
    /// The `seq` field.
    pub(crate) seq: u64,
    /// The decoded `prev` field.
    pub(crate) prev: [u8; 32],
    /// The decoded `hash` field.
    pub(crate) hash: [u8; 32],
    /// The canonical bytes without their final `}` (what the hash covers, with that `}`).
    pub(crate) unsealed: &'a [u8],
}

impl LineView<'_> {
    /// Whether the stored hash is the keyed hash of the canonical bytes (constant time).
    pub(crate) fn verify_hash(&self, key: &AuditKey) -> bool {
        blake3::Hash::from_bytes(keyed_hash(key, self.unsealed)) == blake3::Hash::from(self.hash)
    }
}

/// Splits a stored line (without `\n`) into its `seq`, `prev`, `hash` and hashed prefix,
/// or says which part does not have the record layout.
pub(crate) fn parse_line(line: &[u8]) -> Result<LineView<'_>, &'static str> {
    if line.len() < MIN_LINE_LEN {
        return Err("line too short for a record");
    }
    let rest = line
        .strip_prefix(SEQ_KEY)
        .ok_or("line does not start with {\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 || (digits > 1 && rest[0] == b'0') {
        return Err("seq is not a canonical decimal number");
    }
    let mut seq: u64 = 0;
    for &digit in &rest[..digits] {
        seq = seq
            .checked_mul(10)
            .and_then(|s| s.checked_add(u64::from(digit - b'0')))
            .ok_or("seq is out of range")?;
    }
    if rest.get(digits) != Some(&b',') {
        return Err("seq is not followed by the next field");
    }
    let n = line.len();
    let suffix = &line[n - HASH_SUFFIX_LEN..];
    if !suffix.starts_with(HASH_KEY) || !suffix.ends_with(b"\"}") {
        return Err("line does not end with the hash field");
    }
    let prev_part = &line[n - HASH_SUFFIX_LEN - PREV_PART_LEN..n - HASH_SUFFIX_LEN];
    if !prev_part.starts_with(PREV_KEY) || !prev_part.ends_with(b"\"") {
        return Err("prev field is not right before the hash field");
    }
    let prev = decode_hex32(&prev_part[PREV_KEY.len()..PREV_KEY.len() + 64])
        .ok_or("prev is not 64 lowercase hex digits")?;
    let hash = decode_hex32(&suffix[HASH_KEY.len()..HASH_KEY.len() + 64])
        .ok_or("hash is not 64 lowercase hex digits")?;
    Ok(LineView {
        seq,
        prev,
        hash,
        unsealed: &line[..n - HASH_SUFFIX_LEN],
    })
}

/// Value of each byte as a lowercase hex digit, or [`NOT_HEX`].
const HEX_VALUES: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};
/// Marks a byte that is not a lowercase hex digit.
const NOT_HEX: u8 = 0xff;

/// Decodes exactly 64 lowercase hex digits (the only form the writer produces; verification
/// runs this twice per record, so it is a table lookup rather than `hex::decode`).
pub(crate) fn decode_hex32(digits: &[u8]) -> Option<[u8; 32]> {
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    let mut invalid = 0u8;
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let high = HEX_VALUES[usize::from(pair[0])];
        let low = HEX_VALUES[usize::from(pair[1])];
        invalid |= (high | low) & 0xf0;
        *byte = (high << 4) | (low & 0x0f);
    }
    (invalid == 0).then_some(out)
}
