//! The vault key file (`~/.config/kafclaw/tomb.rr`): its versioned format, its creation with
//! mode 0600, its loading, and the optional passphrase wrapping (Argon2id + XChaCha20-Poly1305).
//!
//! Owns: the bytes of the key file and the key material in memory.
//! Must not: touch the store, seal secrets, or put key bytes into an error or a log.
//!
//! The format (one JSON object, one line):
//!
//! ```text
//! {"format":"kafclaw-tomb","version":1,"key_id":"<16 hex>","kind":"plain","created":"<rfc3339>",
//!  "key":"<base64 of 32 bytes>"}
//! {"format":"kafclaw-tomb","version":1,"key_id":"<16 hex>","kind":"argon2id","created":"<rfc3339>",
//!  "kdf":{"algorithm":"argon2id","version":19,"m_cost_kib":65536,"t_cost":3,"p_cost":1,
//!         "salt":"<base64 of 16 bytes>"},
//!  "nonce":"<base64 of 24 bytes>","wrapped_key":"<base64 of 48 bytes>"}
//! ```
//!
//! `key_id` is derived from the key (BLAKE3 `derive_key`, first 8 bytes, hex), so a key that does
//! not match its id (a flipped byte, a pasted key) is caught on load. The wrapped key is sealed
//! with associated data `"kafclaw-tomb\0" || version || "\0" || key_id`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::{SecretValue, VaultError};
use crate::{clock, fsutil};

/// The `format` field of every key file.
pub const FORMAT: &str = "kafclaw-tomb";
/// The key-file format version written by this build.
pub const VERSION: u32 = 1;
/// Length of the vault key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of an XChaCha20-Poly1305 nonce.
pub const NONCE_LEN: usize = 24;
/// Length of the Argon2id salt.
const SALT_LEN: usize = 16;
/// The BLAKE3 context that derives a key id from a key.
const KEY_ID_CONTEXT: &str = "kafclaw vault key id v1";

/// Argon2id cost parameters of a wrapped key file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory cost in KiB.
    pub m_cost_kib: u32,
    /// Number of passes.
    pub t_cost: u32,
    /// Degree of parallelism.
    pub p_cost: u32,
}

impl KdfParams {
    /// The parameters for a new key file: 64 MiB, 3 passes, 1 lane (above the OWASP minimum).
    /// This crate's unit tests use a cheap setting so that the suite stays fast (the code path is
    /// the same); every other build, `test-hooks` included, gets the real cost.
    pub fn for_new_file() -> Self {
        if cfg!(test) {
            Self {
                m_cost_kib: 1024,
                t_cost: 1,
                p_cost: 1,
            }
        } else {
            Self {
                m_cost_kib: 64 * 1024,
                t_cost: 3,
                p_cost: 1,
            }
        }
    }

    /// Refuses parameters a hostile or damaged file could use to exhaust memory or time.
    fn check(self) -> Result<Params, String> {
        if self.m_cost_kib > 4 * 1024 * 1024 || self.t_cost > 64 || self.p_cost > 64 {
            return Err("argon2id parameters out of range".into());
        }
        Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(KEY_LEN))
            .map_err(|e| format!("argon2id parameters rejected: {e}"))
    }
}

/// The key-encryption key derived from a passphrase, kept (instead of the passphrase) so that a
/// key rotation can write the new key wrapped under the same passphrase.
pub struct Wrapping {
    /// The cipher keyed with the Argon2id output (zeroized on drop by the cipher).
    kek: XChaCha20Poly1305,
    /// The salt the key-encryption key was derived with.
    salt: [u8; SALT_LEN],
    /// The cost parameters the key-encryption key was derived with.
    params: KdfParams,
}

impl Wrapping {
    /// Derives a fresh key-encryption key (new random salt) from `passphrase`.
    pub fn derive_new(passphrase: &SecretValue, params: KdfParams) -> Result<Self, VaultError> {
        let mut salt = [0u8; SALT_LEN];
        random_fill(&mut salt)?;
        let argon = params
            .check()
            .map_err(|reason| VaultError::Internal { reason })?;
        let kek = derive_kek(passphrase, &salt, argon)
            .map_err(|reason| VaultError::Internal { reason })?;
        Ok(Self { kek, salt, params })
    }
}

/// The active vault key: its id and a cipher keyed with it (zeroized on drop by the cipher).
pub struct VaultKey {
    /// The key id (16 hex characters), bound into every ciphertext's associated data.
    id: String,
    /// XChaCha20-Poly1305 keyed with the vault key.
    cipher: XChaCha20Poly1305,
}

impl VaultKey {
    /// The key id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The cipher keyed with this key.
    pub fn cipher(&self) -> &XChaCha20Poly1305 {
        &self.cipher
    }
}

impl std::fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultKey").field("id", &self.id).finish()
    }
}

/// A new random key, ready to be written and used.
pub struct NewKey {
    /// The key in memory.
    pub key: VaultKey,
    /// The serialized key file (zeroized on drop: it may hold the key in clear).
    pub file_bytes: Zeroizing<Vec<u8>>,
}

/// Generates a new key and its key file, wrapped when `wrapping` is given.
pub fn generate(wrapping: Option<&Wrapping>) -> Result<NewKey, VaultError> {
    let mut raw = Zeroizing::new([0u8; KEY_LEN]);
    random_fill(raw.as_mut())?;
    let id = key_id_of(&raw);
    let created = clock::now_rfc3339();
    let doc = match wrapping {
        None => KeyFileDoc {
            format: FORMAT.into(),
            version: VERSION,
            key_id: id.clone(),
            kind: KIND_PLAIN.into(),
            created,
            key: Some(B64.encode(raw.as_ref())),
            kdf: None,
            nonce: None,
            wrapped_key: None,
        },
        Some(w) => {
            let mut nonce = [0u8; NONCE_LEN];
            random_fill(&mut nonce)?;
            let wrapped = w
                .kek
                .encrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: raw.as_ref(),
                        aad: &wrap_aad(&id),
                    },
                )
                .map_err(|_| VaultError::Internal {
                    reason: "wrapping the vault key failed".into(),
                })?;
            KeyFileDoc {
                format: FORMAT.into(),
                version: VERSION,
                key_id: id.clone(),
                kind: KIND_ARGON2ID.into(),
                created,
                key: None,
                kdf: Some(KdfDoc {
                    algorithm: KIND_ARGON2ID.into(),
                    version: 0x13,
                    m_cost_kib: w.params.m_cost_kib,
                    t_cost: w.params.t_cost,
                    p_cost: w.params.p_cost,
                    salt: B64.encode(w.salt),
                }),
                nonce: Some(B64.encode(nonce)),
                wrapped_key: Some(B64.encode(wrapped)),
            }
        }
    };
    let mut file_bytes =
        Zeroizing::new(serde_json::to_vec(&doc).map_err(|e| VaultError::Internal {
            reason: format!("serializing the key file failed: {}", json_error_class(&e)),
        })?);
    file_bytes.push(b'\n');
    let key = VaultKey {
        cipher: XChaCha20Poly1305::new((&*raw).into()),
        id,
    };
    Ok(NewKey { key, file_bytes })
}

/// What [`load`] found besides the key.
pub struct Loaded {
    /// The key.
    pub key: VaultKey,
    /// The key-encryption key, when the file is passphrase-wrapped.
    pub wrapping: Option<Wrapping>,
    /// True when a passphrase was given but the file is not wrapped.
    pub passphrase_unused: bool,
}

/// Reads only the header (format, version, key id) of a key file, without decrypting anything:
/// rotation recovery compares key ids before a passphrase is even checked.
pub fn read_key_id(path: &Path) -> Result<String, VaultError> {
    let bytes = read_file(path)?;
    let doc = parse(path, &bytes)?;
    Ok(doc.key_id.clone())
}

/// Loads the key file at `path`, unwrapping it with `passphrase` when it is wrapped.
pub fn load(path: &Path, passphrase: Option<&SecretValue>) -> Result<Loaded, VaultError> {
    let bytes = read_file(path)?;
    let doc = parse(path, &bytes)?;
    let malformed = |reason: &str| VaultError::KeyFileMalformed {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let (raw, wrapping) = match doc.kind.as_str() {
        KIND_PLAIN => {
            let encoded = doc.key.as_deref().ok_or_else(|| malformed("missing key"))?;
            let raw = decode_fixed::<KEY_LEN>(encoded).ok_or_else(|| malformed("bad key"))?;
            (raw, None)
        }
        KIND_ARGON2ID => {
            let passphrase = passphrase.ok_or_else(|| VaultError::PassphraseRequired {
                path: path.to_path_buf(),
            })?;
            let kdf = doc.kdf.as_ref().ok_or_else(|| malformed("missing kdf"))?;
            if kdf.algorithm != KIND_ARGON2ID || kdf.version != 0x13 {
                return Err(malformed("unsupported kdf"));
            }
            let params = KdfParams {
                m_cost_kib: kdf.m_cost_kib,
                t_cost: kdf.t_cost,
                p_cost: kdf.p_cost,
            };
            let argon = params.check().map_err(|reason| malformed(&reason))?;
            let salt = decode_fixed::<SALT_LEN>(&kdf.salt).ok_or_else(|| malformed("bad salt"))?;
            let nonce = decode_fixed::<NONCE_LEN>(doc.nonce.as_deref().unwrap_or(""))
                .ok_or_else(|| malformed("bad nonce"))?;
            let wrapped = doc
                .wrapped_key
                .as_deref()
                .and_then(|w| B64.decode(w).ok())
                .filter(|w| w.len() == KEY_LEN + 16)
                .ok_or_else(|| malformed("bad wrapped key"))?;
            let kek = derive_kek(passphrase, salt.as_ref(), argon).map_err(|r| malformed(&r))?;
            let opened = Zeroizing::new(
                kek.decrypt(
                    &XNonce::from(*nonce),
                    Payload {
                        msg: &wrapped,
                        aad: &wrap_aad(&doc.key_id),
                    },
                )
                .map_err(|_| VaultError::WrongPassphrase {
                    path: path.to_path_buf(),
                })?,
            );
            if opened.len() != KEY_LEN {
                return Err(malformed("bad wrapped key length"));
            }
            let mut raw = Zeroizing::new([0u8; KEY_LEN]);
            raw.copy_from_slice(&opened);
            let salt_array: [u8; SALT_LEN] = *salt;
            (
                raw,
                Some(Wrapping {
                    kek,
                    salt: salt_array,
                    params,
                }),
            )
        }
        _ => return Err(malformed("unknown kind")),
    };
    if key_id_of(&raw) != doc.key_id {
        return Err(malformed("the key does not match its key id"));
    }
    let passphrase_unused = passphrase.is_some() && wrapping.is_none();
    Ok(Loaded {
        key: VaultKey {
            cipher: XChaCha20Poly1305::new((&*raw).into()),
            id: doc.key_id.clone(),
        },
        wrapping,
        passphrase_unused,
    })
}

/// Writes a key file atomically (0600 temporary file, fsync, rename, directory fsync).
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), VaultError> {
    fsutil::write_atomic(path, bytes).map_err(|e| io_error(path, &e))
}

/// A key-file i/o error naming the file (the OS message never contains file content).
pub fn io_error(path: &Path, error: &io::Error) -> VaultError {
    VaultError::KeyFileIo {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

/// The `.next` file of a rotation in progress, beside the key file.
pub fn next_path(key_path: &Path) -> PathBuf {
    let mut name = key_path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".next");
    key_path.with_file_name(name)
}

/// Fills `buf` from the operating system's random source.
pub fn random_fill(buf: &mut [u8]) -> Result<(), VaultError> {
    getrandom::fill(buf).map_err(|e| VaultError::Internal {
        reason: format!("no randomness from the operating system: {e}"),
    })
}

const KIND_PLAIN: &str = "plain";
const KIND_ARGON2ID: &str = "argon2id";

/// The serialized key file. Fields are optional per `kind`; unknown fields are refused.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileDoc {
    format: String,
    version: u32,
    key_id: String,
    kind: String,
    created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kdf: Option<KdfDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wrapped_key: Option<String>,
}

impl Drop for KeyFileDoc {
    fn drop(&mut self) {
        if let Some(key) = self.key.as_mut() {
            key.zeroize();
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfDoc {
    algorithm: String,
    version: u32,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
}

fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Zeroizing::new(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(VaultError::KeyFileMissing {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(io_error(path, &e)),
    }
}

/// Parses and checks the header. Error reasons never quote the file's content: serde's messages
/// can echo a value, so only the error class and position are kept.
fn parse(path: &Path, bytes: &[u8]) -> Result<KeyFileDoc, VaultError> {
    let malformed = |reason: String| VaultError::KeyFileMalformed {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(malformed("the file is empty".into()));
    }
    let doc: KeyFileDoc = serde_json::from_slice(bytes).map_err(|e| {
        malformed(format!(
            "{} at line {} column {} (truncated or not a key file)",
            json_error_class(&e),
            e.line(),
            e.column()
        ))
    })?;
    if doc.format != FORMAT {
        return Err(malformed("not a kafclaw vault key file".into()));
    }
    if doc.version != VERSION {
        return Err(VaultError::KeyFileUnsupported {
            path: path.to_path_buf(),
            version: doc.version,
        });
    }
    if doc.key_id.len() != 16 || !doc.key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("bad key id".into()));
    }
    Ok(doc)
}

fn derive_kek(
    passphrase: &SecretValue,
    salt: &[u8],
    params: Params,
) -> Result<XChaCha20Poly1305, String> {
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.expose(), salt, out.as_mut())
        .map_err(|e| format!("argon2id failed: {e}"))?;
    Ok(XChaCha20Poly1305::new((&*out).into()))
}

fn wrap_aad(key_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32);
    aad.extend_from_slice(FORMAT.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&VERSION.to_be_bytes());
    aad.push(0);
    aad.extend_from_slice(key_id.as_bytes());
    aad
}

fn key_id_of(raw: &[u8; KEY_LEN]) -> String {
    let derived = Zeroizing::new(blake3::derive_key(KEY_ID_CONTEXT, raw));
    hex::encode(&derived[..8])
}

/// Decodes base64 of exactly `N` bytes; `None` otherwise (the decoder's message, which can
/// quote a byte of the input, is dropped).
fn decode_fixed<const N: usize>(encoded: &str) -> Option<Zeroizing<[u8; N]>> {
    let bytes = Zeroizing::new(B64.decode(encoded).ok()?);
    if bytes.len() != N {
        return None;
    }
    let mut out = Zeroizing::new([0u8; N]);
    out.copy_from_slice(&bytes);
    Some(out)
}

/// A name for a JSON error's class that never quotes the input.
pub fn json_error_class(error: &serde_json::Error) -> &'static str {
    match error.classify() {
        serde_json::error::Category::Io => "i/o error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected field or value",
        serde_json::error::Category::Eof => "unexpected end of input",
    }
}
