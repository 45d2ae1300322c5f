//! `--include-key`: the vault key file sealed under the operator's passphrase
//! (XChaCha20-Poly1305 under an Argon2id key), so a backup can be restored on a new host.
//!
//! Owns: the sealed key's format (`kafclaw-backup-key-1`) and its Argon2id cost.
//! Must not: write the passphrase or the key anywhere; accept a cost outside Argon2's bounds.

use base64::Engine;
use serde_json::{json, Value};

use super::PASSPHRASE_ENV;

const KEY_FORMAT: &str = "kafclaw-backup-key-1";
const KEY_AAD: &[u8] = b"kafclaw-backup-key-1";
/// Argon2id cost of the key-file passphrase (OWASP's minimum for Argon2id: 19 MiB, 2 passes).
const ARGON_M_KIB: u32 = 19_456;
const ARGON_T: u32 = 2;
const ARGON_P: u32 = 1;
/// The most memory (256 MiB) and passes a sealed key may ask Argon2id for: a crafted one must
/// not exhaust memory or time.
const ARGON_M_KIB_MAX: u32 = 1 << 18;
const ARGON_T_MAX: u32 = 10;
const ARGON_P_MAX: u32 = 8;

/// Seals the vault key file's bytes under `passphrase`.
pub fn seal_key(key_file: &[u8], passphrase: &str) -> Result<String, String> {
    use chacha20poly1305::aead::{Aead, Payload};
    use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut salt).map_err(|e| format!("no randomness: {e}"))?;
    getrandom::fill(&mut nonce).map_err(|e| format!("no randomness: {e}"))?;
    let key = derive(passphrase, &salt, ARGON_M_KIB, ARGON_T, ARGON_P)?;
    let cipher = XChaCha20Poly1305::new_from_slice(&*key).map_err(|e| e.to_string())?;
    let ciphertext = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: key_file,
                aad: KEY_AAD,
            },
        )
        .map_err(|_| "cannot encrypt the key file".to_string())?;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(json!({
        "format": KEY_FORMAT,
        "kdf": "argon2id",
        "m_cost_kib": ARGON_M_KIB,
        "t_cost": ARGON_T,
        "p_cost": ARGON_P,
        "salt": b64.encode(salt),
        "nonce": b64.encode(nonce),
        "ciphertext": b64.encode(ciphertext),
    })
    .to_string())
}

/// Opens a sealed key file with `passphrase`.
pub fn open_key(sealed: &str, passphrase: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    use chacha20poly1305::aead::{Aead, Payload};
    use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
    let v: Value =
        serde_json::from_str(sealed).map_err(|_| "the sealed key is malformed".to_string())?;
    if v["format"] != KEY_FORMAT {
        return Err("the sealed key has an unknown format".into());
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let field = |name: &str| {
        v[name]
            .as_str()
            .and_then(|s| b64.decode(s).ok())
            .ok_or_else(|| format!("the sealed key lacks {name}"))
    };
    let (salt, nonce, ciphertext) = (field("salt")?, field("nonce")?, field("ciphertext")?);
    if nonce.len() != 24 {
        return Err("the sealed key's nonce is malformed".into());
    }
    let cost = |name: &str| {
        v[name]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("the sealed key lacks {name}"))
    };
    let (m, t, p) = (cost("m_cost_kib")?, cost("t_cost")?, cost("p_cost")?);
    if m > ARGON_M_KIB_MAX || t > ARGON_T_MAX || p > ARGON_P_MAX {
        return Err("the sealed key asks for an unreasonable key-derivation cost".into());
    }
    let key = derive(passphrase, &salt, m, t, p)?;
    let cipher = XChaCha20Poly1305::new_from_slice(&*key).map_err(|e| e.to_string())?;
    cipher
        .decrypt(
            &XNonce::try_from(nonce.as_slice())
                .map_err(|_| "the sealed key's nonce is malformed".to_string())?,
            Payload {
                msg: &ciphertext,
                aad: KEY_AAD,
            },
        )
        .map(zeroize::Zeroizing::new)
        .map_err(|_| format!("wrong {PASSPHRASE_ENV}, or the sealed key was altered"))
}

fn derive(
    passphrase: &str,
    salt: &[u8],
    m: u32,
    t: u32,
    p: u32,
) -> Result<zeroize::Zeroizing<[u8; 32]>, String> {
    let params = argon2::Params::new(m, t, p, Some(32)).map_err(|e| e.to_string())?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.as_bytes(), salt, &mut *key)
        .map_err(|e| e.to_string())?;
    Ok(key)
}
