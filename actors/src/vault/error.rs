//! The vault's error and warning values.
//!
//! Owns: [`VaultError`] (key-file errors name the file, ciphertext errors name the secret) and
//! [`VaultWarning`] (what the caller logs after opening).
//! Must not: carry a secret value or key material, in any field or message.

use std::path::PathBuf;

use crate::store::StoreError;

/// What can go wrong in the vault. Key-file errors name the file, ciphertext errors name the
/// secret; no variant ever carries a secret value or key material.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// There is no key file (and none may be created here).
    #[error("vault key file {path} is missing")]
    KeyFileMissing {
        /// The key file.
        path: PathBuf,
    },
    /// The key file is gone but the store holds secrets sealed under it: creating a new key
    /// would silently orphan them. (A store without secrets just gets a new key.)
    #[error("vault key file {path} is missing but the store holds secrets sealed under key {key_id}; restore the key file")]
    KeyFileLost {
        /// The key file.
        path: PathBuf,
        /// The key id the store's secrets are sealed under.
        key_id: String,
    },
    /// The key file is empty, truncated, not JSON, or has a bad field.
    #[error("vault key file {path} is malformed: {reason}")]
    KeyFileMalformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong (never the file's content).
        reason: String,
    },
    /// The key file was written by a newer or unknown format version.
    #[error("vault key file {path} has unsupported format version {version}")]
    KeyFileUnsupported {
        /// The key file.
        path: PathBuf,
        /// The version found.
        version: u32,
    },
    /// Reading, writing or renaming the key file (or its directory) failed.
    #[error("vault key file {path}: {reason}")]
    KeyFileIo {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's message.
        reason: String,
    },
    /// The key file is passphrase-protected and no passphrase was given.
    #[error("vault key file {path} is passphrase-protected and no passphrase was given (KAFCLAW_VAULT_PASSPHRASE)")]
    PassphraseRequired {
        /// The key file.
        path: PathBuf,
    },
    /// The passphrase does not unwrap the key (or the wrapped key was altered).
    #[error("wrong passphrase for vault key file {path} (or the file was altered)")]
    WrongPassphrase {
        /// The key file.
        path: PathBuf,
    },
    /// An empty passphrase was given.
    #[error("the vault passphrase is empty")]
    PassphraseEmpty,
    /// The store's secrets are sealed under a different key than the key file holds
    /// (a key file from another vault, or a store restored from another machine).
    #[error("the store's secrets are sealed under key {store_key_id} but vault key file {path} holds key {file_key_id}")]
    KeyMismatch {
        /// The key file.
        path: PathBuf,
        /// The key id recorded in the store.
        store_key_id: String,
        /// The key id of the key file.
        file_key_id: String,
    },
    /// A secret name outside `[A-Za-z0-9_.:-]{1,128}`.
    #[error("invalid secret name {name:?}: {reason}")]
    InvalidName {
        /// The name (cut to 64 characters).
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A reserved `kafclaw.` name on an operator path.
    #[error("secret name {name} is reserved for kafclaw's internal use")]
    ReservedName {
        /// The name.
        name: String,
    },
    /// The same name twice in one import.
    #[error("secret {name} appears more than once in the import")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// A value above [`MAX_VALUE_LEN`](super::MAX_VALUE_LEN).
    #[error("secret {name} is {len} bytes, more than the limit of {max}")]
    ValueTooLarge {
        /// The name.
        name: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A random secret length outside `1..=MAX_RANDOM_LEN`.
    #[error("a random secret must be 1 to {max} bytes long, not {len}")]
    InvalidRandomLength {
        /// The requested length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The ciphertext does not authenticate: damaged, moved from another name, or sealed under
    /// another key.
    #[error("secret {name} failed authentication: its ciphertext is damaged, was copied from another name, or was sealed under another key")]
    SecretCorrupt {
        /// The secret's name.
        name: String,
    },
    /// The stored record of a secret cannot be decoded.
    #[error("stored secret {name} is malformed: {reason}")]
    SecretRecordMalformed {
        /// The secret's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A secret is sealed under a key other than the active one.
    #[error(
        "secret {name} is sealed under key {sealed_key_id}, not the active key {active_key_id}"
    )]
    SecretKeyMismatch {
        /// The secret's name.
        name: String,
        /// The key id in its record.
        sealed_key_id: String,
        /// The vault's active key id.
        active_key_id: String,
    },
    /// The store failed.
    #[error("vault store: {0}")]
    Store(#[from] StoreError),
    /// No randomness, or a cipher refused its input (should not happen).
    #[error("vault internal error: {reason}")]
    Internal {
        /// What failed.
        reason: String,
    },
}

/// Something the caller should log when opening the vault; never a reason to fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VaultWarning {
    /// The key file's mode is not 0600 (left as it is; `doctor --fix` repairs it).
    KeyFileMode {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file's directory mode is not 0700.
    KeyDirMode {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A passphrase was given but the key file is not passphrase-protected.
    PassphraseUnused {
        /// The key file.
        path: PathBuf,
    },
    /// An interrupted key rotation had committed: its new key file was moved into place.
    RotationCompleted {
        /// The key file.
        path: PathBuf,
    },
    /// An interrupted key rotation had not committed: its new key file was discarded.
    RotationRolledBack {
        /// The discarded file.
        path: PathBuf,
    },
    /// A temporary key file left by a crash was removed.
    LeftoverRemoved {
        /// The removed file.
        path: PathBuf,
    },
}

impl std::fmt::Display for VaultWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VaultWarning::KeyFileMode { path, mode } => write!(
                f,
                "vault key file {} has mode {mode:o}, expected 600",
                path.display()
            ),
            VaultWarning::KeyDirMode { path, mode } => write!(
                f,
                "vault key directory {} has mode {mode:o}, expected 700",
                path.display()
            ),
            VaultWarning::PassphraseUnused { path } => write!(
                f,
                "a vault passphrase was given but {} is not passphrase-protected",
                path.display()
            ),
            VaultWarning::RotationCompleted { path } => write!(
                f,
                "finished an interrupted key rotation: {} holds the new key",
                path.display()
            ),
            VaultWarning::RotationRolledBack { path } => write!(
                f,
                "discarded the unfinished key rotation file {}; the old key stays active",
                path.display()
            ),
            VaultWarning::LeftoverRemoved { path } => write!(
                f,
                "removed a leftover temporary key file {}",
                path.display()
            ),
        }
    }
}
