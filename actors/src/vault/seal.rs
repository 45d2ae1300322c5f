//! Sealing one secret, and the encoding of a sealed secret in the store's `secrets` tree.
//!
//! Owns: XChaCha20-Poly1305 with a fresh random 24-byte nonce per write, and the associated data
//! `"kafclaw-vault\0" || record version (u32 BE) || "\0" || key id || "\0" || secret name`, so a
//! ciphertext copied under another name, or sealed under another key, fails to open.
//! Must not: read or write the store or the key file; put plaintext into an error.
//!
//! The stored value is one JSON object:
//!
//! ```text
//! {"v":1,"key_id":"<16 hex>","nonce":"<base64 24 bytes>","ct":"<base64 ciphertext+tag>",
//!  "created":"<rfc3339>","updated":"<rfc3339>"}
//! ```

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::XNonce;
use serde::{Deserialize, Serialize};

use super::keyfile::{json_error_class, random_fill, VaultKey, NONCE_LEN};
use super::{SecretValue, VaultError};

/// The version of the stored-secret encoding written by this build.
pub const RECORD_VERSION: u32 = 1;
/// Poly1305 tag length.
const TAG_LEN: usize = 16;

/// One sealed secret as stored (ciphertext only; the value never appears here in clear).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedRecord {
    /// Encoding version ([`RECORD_VERSION`]); part of the associated data.
    pub v: u32,
    /// The id of the key the secret is sealed under; part of the associated data.
    pub key_id: String,
    /// The random nonce, base64.
    pub nonce: String,
    /// Ciphertext and tag, base64.
    pub ct: String,
    /// When the secret was first set (RFC 3339 UTC).
    pub created: String,
    /// When its value last changed (RFC 3339 UTC).
    pub updated: String,
}

impl SealedRecord {
    /// Serializes the record for the store.
    pub fn to_bytes(&self) -> Result<Vec<u8>, VaultError> {
        serde_json::to_vec(self).map_err(|e| VaultError::Internal {
            reason: format!("encoding a sealed secret failed: {}", json_error_class(&e)),
        })
    }

    /// Decodes a stored record of the secret `name`.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Self, VaultError> {
        let record: SealedRecord =
            serde_json::from_slice(bytes).map_err(|e| VaultError::SecretRecordMalformed {
                name: name.to_string(),
                reason: json_error_class(&e).to_string(),
            })?;
        if record.v != RECORD_VERSION {
            return Err(VaultError::SecretRecordMalformed {
                name: name.to_string(),
                reason: format!("unsupported record version {}", record.v),
            });
        }
        Ok(record)
    }
}

/// Seals `value` as the secret `name` under `key` with a fresh nonce.
pub fn seal(
    key: &VaultKey,
    name: &str,
    value: &SecretValue,
    created: String,
    updated: String,
) -> Result<SealedRecord, VaultError> {
    let mut nonce = [0u8; NONCE_LEN];
    random_fill(&mut nonce)?;
    let aad = aad(RECORD_VERSION, key.id(), name);
    let ct = key
        .cipher()
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: value.expose(),
                aad: &aad,
            },
        )
        .map_err(|_| VaultError::Internal {
            reason: format!("sealing secret {name} failed"),
        })?;
    Ok(SealedRecord {
        v: RECORD_VERSION,
        key_id: key.id().to_string(),
        nonce: B64.encode(nonce),
        ct: B64.encode(ct),
        created,
        updated,
    })
}

/// Opens the record of the secret `name` with `key`.
pub fn open(key: &VaultKey, name: &str, record: &SealedRecord) -> Result<SecretValue, VaultError> {
    if record.key_id != key.id() {
        return Err(VaultError::SecretKeyMismatch {
            name: name.to_string(),
            sealed_key_id: record.key_id.clone(),
            active_key_id: key.id().to_string(),
        });
    }
    let malformed = |reason: &str| VaultError::SecretRecordMalformed {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let nonce = B64
        .decode(&record.nonce)
        .ok()
        .filter(|n| n.len() == NONCE_LEN)
        .ok_or_else(|| malformed("bad nonce"))?;
    let ct = B64
        .decode(&record.ct)
        .ok()
        .filter(|c| c.len() >= TAG_LEN)
        .ok_or_else(|| malformed("bad ciphertext encoding"))?;
    let aad = aad(record.v, key.id(), name);
    key.cipher()
        .decrypt(
            &XNonce::try_from(nonce.as_slice()).map_err(|_| malformed("bad nonce"))?,
            Payload {
                msg: &ct,
                aad: &aad,
            },
        )
        .map(SecretValue::new)
        .map_err(|_| VaultError::SecretCorrupt {
            name: name.to_string(),
        })
}

fn aad(version: u32, key_id: &str, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32 + name.len());
    aad.extend_from_slice(b"kafclaw-vault\0");
    aad.extend_from_slice(&version.to_be_bytes());
    aad.push(0);
    aad.extend_from_slice(key_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad
}
