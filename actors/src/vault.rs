//! The secret vault: the key file `~/.config/kafclaw/tomb.rr` and the secrets sealed under it in
//! the store's `secrets` tree.
//!
//! Owns: the vault key (created, loaded, rotated crash-safely), sealing and opening secrets,
//! secret names (with the reserved `kafclaw.` prefix), and the [`SecretVault`] actor. This is the
//! only module that ever holds plaintext secrets; they travel as [`SecretValue`], whose `Debug`
//! is opaque and which is zeroized on drop.
//! Must not: log a value, put a value into an error, store a ciphertext next to the key, chmod a
//! file after creating it, or import sled (the store is reached through [`StoreDb`]).
//!
//! Architecture Invariant: a crash at any point of [`Vault::rotate_key`] leaves either the
//! complete old state or the complete new state. The store's `secrets` tree records the active
//! key id (`meta/vault.active_key_id`) in the same atomic batch that reseals every secret; the
//! new key waits in `tomb.rr.next` until that batch is durable, and opening a vault finishes or
//! discards an interrupted rotation by comparing key ids.
//!
//! Architecture Invariant: one [`Vault`] per store at a time (the [`SecretVault`] actor in the
//! gateway, or a command-line tool, which cannot open the store while the gateway holds it).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::clock;
use crate::fsutil;
use crate::paths::Home;
use crate::store::{KvBatch, KvTree, StoreDb, TreeName};

mod actor;
mod error;
mod keyfile;
mod seal;
#[cfg(test)]
mod tests;

pub use actor::{
    log_warnings, GetOrCreateRandom, GetSecret, ImportSecrets, ListSecrets, RemoveSecret,
    RotateKey, SecretVault, SetSecret, VerifySecrets,
};
pub use error::{VaultError, VaultWarning};
pub use keyfile::KdfParams;

use keyfile::{VaultKey, Wrapping};
use seal::SealedRecord;

/// Names starting with this prefix (case-insensitively) are kafclaw's own secrets: listed as
/// internal, never set or removed from the operator's command line.
pub const RESERVED_PREFIX: &str = "kafclaw.";
/// The audit chain's BLAKE3 key (CONTRACT §7); rotating the vault key never changes it.
pub const AUDIT_KEY_NAME: &str = "kafclaw.audit_key";
/// The key of the backup manifests' BLAKE3 MAC, created on the first backup; rotating the vault
/// key never changes it, so older backups stay verifiable.
pub const BACKUP_KEY_NAME: &str = "kafclaw.backup_key";
/// Longest secret name.
pub const MAX_NAME_LEN: usize = 128;
/// Largest secret value (a PEM chain fits; a file dump does not).
pub const MAX_VALUE_LEN: usize = 256 * 1024;
/// Largest value [`Vault::get_or_create_random`] makes.
pub const MAX_RANDOM_LEN: usize = 1024;

/// Store keys of sealed secrets: `secret/<name>` (names never contain `/`).
const SECRET_PREFIX: &str = "secret/";
/// Store key of the id of the key every secret is sealed under.
const META_ACTIVE_KEY_ID: &str = "meta/vault.active_key_id";

/// A plaintext secret: zeroized on drop, opaque in `Debug`, no `Display`.
/// Equality is constant-time in the content.
#[derive(Clone, Default)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    /// Wraps `bytes` (taken by value, so no copy is left behind by this call).
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }
    /// The plaintext bytes. Keep the borrow short; never log it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
    /// The plaintext as UTF-8, when it is.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True for an empty value.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(..)")
    }
}

impl PartialEq for SecretValue {
    fn eq(&self, other: &Self) -> bool {
        self.expose().ct_eq(other.expose()).into()
    }
}

impl Eq for SecretValue {}

impl From<Vec<u8>> for SecretValue {
    fn from(bytes: Vec<u8>) -> Self {
        Self::new(bytes)
    }
}

impl From<String> for SecretValue {
    fn from(text: String) -> Self {
        Self::new(text.into_bytes())
    }
}

impl From<&str> for SecretValue {
    fn from(text: &str) -> Self {
        Self::new(text.as_bytes().to_vec())
    }
}

impl From<&[u8]> for SecretValue {
    fn from(bytes: &[u8]) -> Self {
        Self::new(bytes.to_vec())
    }
}

/// What `list` tells about one secret (never its value).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SecretInfo {
    /// The name.
    pub name: String,
    /// When it was first set (RFC 3339 UTC).
    pub created: String,
    /// When its value last changed (RFC 3339 UTC).
    pub updated: String,
    /// True for reserved `kafclaw.` names, which the operator cannot set or remove.
    pub internal: bool,
}

/// The outcome of a key rotation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KeyRotation {
    /// The key id before.
    pub old_key_id: String,
    /// The key id after.
    pub new_key_id: String,
    /// How many secrets were resealed.
    pub resealed: usize,
}

/// One entry per stored secret, in name order: its name and whether it opens.
pub type VerifyReport = Vec<(String, Result<(), VaultError>)>;

/// The steps of a key rotation, after which a test may stop as if the process were killed.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RotateStep {
    /// `tomb.rr.next` is written and fsynced.
    WroteNextKey,
    /// The resealed secrets and the new active key id are durable in the store.
    CommittedStore,
    /// `tomb.rr.next` replaced `tomb.rr` (the rotation is complete).
    RenamedKey,
}

/// Checks a secret name against `[A-Za-z0-9_.:-]{1,128}`.
pub fn validate_name(name: &str) -> Result<(), VaultError> {
    let invalid = |reason| VaultError::InvalidName {
        name: name.chars().take(64).collect(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid("longer than 128 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
    {
        return Err(invalid("only letters, digits and _ . : - are allowed"));
    }
    Ok(())
}

/// True for names reserved for kafclaw's own secrets (`kafclaw.` prefix, any case).
pub fn is_reserved(name: &str) -> bool {
    name.len() >= RESERVED_PREFIX.len()
        && name.as_bytes()[..RESERVED_PREFIX.len()].eq_ignore_ascii_case(RESERVED_PREFIX.as_bytes())
}

/// The vault, synchronous: usable from command-line tools without actors, and owned by the
/// [`SecretVault`] actor in the gateway.
pub struct Vault {
    /// `tomb.rr`, for messages and rotation.
    key_path: PathBuf,
    /// The store, for durable flushes after every change.
    db: StoreDb,
    /// The `secrets` tree: sealed secrets and the active key id.
    tree: KvTree,
    /// The active key.
    key: VaultKey,
    /// The passphrase-derived key-encryption key, when the key file is wrapped; kept instead of
    /// the passphrase so that a rotation writes the new key wrapped the same way.
    wrapping: Option<Wrapping>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("key_path", &self.key_path)
            .field("key_id", &self.key.id())
            .field("passphrase_protected", &self.wrapping.is_some())
            .finish()
    }
}

impl Vault {
    /// Opens the vault of `home` over `db`, creating the key file (wrapped when a passphrase is
    /// given) if there is none and the store holds no secrets. Finishes or discards an
    /// interrupted key rotation. Returns warnings for the caller to log.
    pub fn open_or_create(
        home: &Home,
        db: &StoreDb,
        passphrase: Option<SecretValue>,
    ) -> Result<(Vault, Vec<VaultWarning>), VaultError> {
        Self::open(home, db, passphrase, true)
    }

    /// Like [`Vault::open_or_create`], but a missing key file is an error.
    pub fn open_existing(
        home: &Home,
        db: &StoreDb,
        passphrase: Option<SecretValue>,
    ) -> Result<(Vault, Vec<VaultWarning>), VaultError> {
        Self::open(home, db, passphrase, false)
    }

    fn open(
        home: &Home,
        db: &StoreDb,
        passphrase: Option<SecretValue>,
        create: bool,
    ) -> Result<(Vault, Vec<VaultWarning>), VaultError> {
        if passphrase.as_ref().is_some_and(SecretValue::is_empty) {
            return Err(VaultError::PassphraseEmpty);
        }
        let key_path = home.key_file();
        let dir = home.config_dir();
        let mut warnings = Vec::new();
        if create {
            fsutil::create_private_dir(&dir).map_err(|e| keyfile::io_error(&dir, &e))?;
        }
        let tree = db.tree(TreeName::Secrets)?;
        remove_leftovers(&key_path, &mut warnings)?;
        let mut store_key_id = active_key_id(&tree)?;
        recover_rotation(&key_path, store_key_id.as_deref(), &mut warnings)?;

        let (key, wrapping) = if exists(&key_path)? {
            let loaded = keyfile::load(&key_path, passphrase.as_ref())?;
            if loaded.passphrase_unused {
                warnings.push(VaultWarning::PassphraseUnused {
                    path: key_path.clone(),
                });
            }
            (loaded.key, loaded.wrapping)
        } else {
            if let Some(sealed_key_id) = first_sealed_key_id(&tree)? {
                return Err(VaultError::KeyFileLost {
                    path: key_path,
                    key_id: store_key_id.unwrap_or(sealed_key_id),
                });
            }
            if !create {
                return Err(VaultError::KeyFileMissing { path: key_path });
            }
            // No secret is sealed under the old key (if there was one): nothing is orphaned,
            // and the store's active key id is replaced below.
            store_key_id = None;
            let wrapping = passphrase
                .as_ref()
                .map(|p| Wrapping::derive_new(p, KdfParams::for_new_file()))
                .transpose()?;
            let new = keyfile::generate(wrapping.as_ref())?;
            keyfile::write(&key_path, &new.file_bytes)?;
            (new.key, wrapping)
        };

        let mismatch = |store_key_id: String| VaultError::KeyMismatch {
            path: key_path.clone(),
            store_key_id,
            file_key_id: key.id().to_string(),
        };
        match store_key_id {
            Some(id) if id != key.id() => return Err(mismatch(id)),
            Some(_) => {}
            None => {
                if let Some(id) = first_sealed_key_id(&tree)? {
                    if id != key.id() {
                        return Err(mismatch(id));
                    }
                }
                tree.insert(META_ACTIVE_KEY_ID, key.id())?;
                db.flush_blocking()?;
            }
        }

        match fsutil::mode_of(&key_path) {
            Ok(mode) if mode != fsutil::FILE_MODE => warnings.push(VaultWarning::KeyFileMode {
                path: key_path.clone(),
                mode,
            }),
            Ok(_) => {}
            Err(e) => return Err(keyfile::io_error(&key_path, &e)),
        }
        if let Ok(mode) = fsutil::mode_of(&dir) {
            if mode != fsutil::DIR_MODE {
                warnings.push(VaultWarning::KeyDirMode { path: dir, mode });
            }
        }

        let vault = Vault {
            key_path,
            db: db.clone(),
            tree,
            key,
            wrapping,
        };
        Ok((vault, warnings))
    }

    /// The id of the active key (not secret; shown by `secrets list` and audits).
    pub fn key_id(&self) -> &str {
        self.key.id()
    }

    /// The key file's path.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// True when the key file is wrapped with a passphrase.
    pub fn is_passphrase_protected(&self) -> bool {
        self.wrapping.is_some()
    }

    /// Seals `value` as `name` (replacing any previous value, keeping its creation time) and
    /// makes it durable. Reserved names are allowed here: this is the internal path.
    pub fn set(&self, name: &str, value: SecretValue) -> Result<(), VaultError> {
        validate_name(name)?;
        check_value(name, &value)?;
        let now = clock::now_rfc3339();
        let created = self
            .tree
            .get(storage_key(name))?
            .and_then(|bytes| SealedRecord::from_bytes(name, &bytes).ok())
            .map_or_else(|| now.clone(), |record| record.created);
        let record = seal::seal(&self.key, name, &value, created, now)?;
        self.tree.insert(storage_key(name), record.to_bytes()?)?;
        self.flush()
    }

    /// [`Vault::set`] for the operator's path: refuses reserved `kafclaw.` names.
    pub fn set_user(&self, name: &str, value: SecretValue) -> Result<(), VaultError> {
        refuse_reserved(name)?;
        self.set(name, value)
    }

    /// The value of `name`, or `None` when there is no such secret.
    pub fn get(&self, name: &str) -> Result<Option<SecretValue>, VaultError> {
        validate_name(name)?;
        match self.tree.get(storage_key(name))? {
            None => Ok(None),
            Some(bytes) => {
                let record = SealedRecord::from_bytes(name, &bytes)?;
                seal::open(&self.key, name, &record).map(Some)
            }
        }
    }

    /// Removes `name` durably; false when there was no such secret. Internal path: reserved
    /// names may be removed.
    pub fn remove(&self, name: &str) -> Result<bool, VaultError> {
        validate_name(name)?;
        let existed = self.tree.remove(storage_key(name))?.is_some();
        if existed {
            self.flush()?;
        }
        Ok(existed)
    }

    /// [`Vault::remove`] for the operator's path: refuses reserved `kafclaw.` names.
    pub fn remove_user(&self, name: &str) -> Result<bool, VaultError> {
        refuse_reserved(name)?;
        self.remove(name)
    }

    /// Every secret's name and timestamps, in name order; never a value.
    pub fn list(&self) -> Result<Vec<SecretInfo>, VaultError> {
        self.tree
            .scan_prefix(SECRET_PREFIX)?
            .into_iter()
            .map(|(key, bytes)| {
                let name = name_of(&key);
                let record = SealedRecord::from_bytes(&name, &bytes)?;
                Ok(SecretInfo {
                    internal: is_reserved(&name),
                    name,
                    created: record.created,
                    updated: record.updated,
                })
            })
            .collect()
    }

    /// Seals every entry in one atomic, durable store batch: all are imported or none is.
    /// Operator path (`doctor --fix`): reserved names, invalid names, duplicates and oversized
    /// values refuse the whole batch. Returns how many secrets were written.
    pub fn import(&self, entries: Vec<(String, SecretValue)>) -> Result<usize, VaultError> {
        let mut seen = std::collections::BTreeSet::new();
        for (name, value) in &entries {
            validate_name(name)?;
            refuse_reserved(name)?;
            check_value(name, value)?;
            if !seen.insert(name.as_str()) {
                return Err(VaultError::DuplicateName { name: name.clone() });
            }
        }
        let now = clock::now_rfc3339();
        let mut batch = KvBatch::default();
        for (name, value) in &entries {
            let created = self
                .tree
                .get(storage_key(name))?
                .and_then(|bytes| SealedRecord::from_bytes(name, &bytes).ok())
                .map_or_else(|| now.clone(), |record| record.created);
            let record = seal::seal(&self.key, name, value, created, now.clone())?;
            batch.insert(storage_key(name), record.to_bytes()?);
        }
        self.tree.apply(batch)?;
        self.flush()?;
        Ok(entries.len())
    }

    /// The value of `name`, creating it atomically from `len` random bytes when absent (the
    /// audit key, the token-hash key). An existing value is returned as it is, whatever its
    /// length; one that does not open is an error, never overwritten.
    pub fn get_or_create_random(&self, name: &str, len: usize) -> Result<SecretValue, VaultError> {
        validate_name(name)?;
        if len == 0 || len > MAX_RANDOM_LEN {
            return Err(VaultError::InvalidRandomLength {
                len,
                max: MAX_RANDOM_LEN,
            });
        }
        if let Some(value) = self.get(name)? {
            return Ok(value);
        }
        let mut bytes = Zeroizing::new(vec![0u8; len]);
        keyfile::random_fill(&mut bytes)?;
        let value = SecretValue::new(std::mem::take(&mut *bytes));
        let now = clock::now_rfc3339();
        let record = seal::seal(&self.key, name, &value, now.clone(), now)?;
        if self
            .tree
            .insert_new(storage_key(name), record.to_bytes()?)?
        {
            self.flush()?;
            return Ok(value);
        }
        // Another writer created it between our read and our insert: theirs wins.
        self.get(name)?.ok_or_else(|| VaultError::Internal {
            reason: format!("secret {name} vanished while being created"),
        })
    }

    /// Generates a new key and reseals every secret under it, crash-safely: (a) the new key is
    /// written to `tomb.rr.next`; (b) every resealed secret and the new active key id are
    /// written in one atomic store batch and flushed; (c) `tomb.rr.next` is renamed over
    /// `tomb.rr`. A secret that does not open aborts the rotation before anything is written.
    /// A wrapped key file stays wrapped under the same passphrase.
    pub fn rotate_key(&mut self) -> Result<KeyRotation, VaultError> {
        self.rotate(None)
    }

    /// Test hook: runs a rotation and stops right after `step`, without any cleanup, as if the
    /// process were killed there.
    #[cfg(test)]
    pub(crate) fn rotate_key_until(&mut self, step: RotateStep) -> Result<KeyRotation, VaultError> {
        self.rotate(Some(step))
    }

    fn rotate(&mut self, stop_after: Option<RotateStep>) -> Result<KeyRotation, VaultError> {
        let stop = |step| stop_after == Some(step);
        // A `.next` left by an earlier failed rotation of this process is settled first, so it
        // is never overwritten while it may be the only copy of the active key.
        let mut ignored = Vec::new();
        recover_rotation(&self.key_path, Some(self.key.id()), &mut ignored)?;

        let next_path = keyfile::next_path(&self.key_path);
        let new = keyfile::generate(self.wrapping.as_ref())?;
        let mut batch = KvBatch::default();
        let mut resealed = 0;
        for (key, bytes) in self.tree.scan_prefix(SECRET_PREFIX)? {
            let name = name_of(&key);
            let record = SealedRecord::from_bytes(&name, &bytes)?;
            let value = seal::open(&self.key, &name, &record)?;
            let sealed = seal::seal(&new.key, &name, &value, record.created, record.updated)?;
            batch.insert(&key, sealed.to_bytes()?);
            resealed += 1;
        }
        batch.insert(META_ACTIVE_KEY_ID, new.key.id());
        let rotation = KeyRotation {
            old_key_id: self.key.id().to_string(),
            new_key_id: new.key.id().to_string(),
            resealed,
        };

        // (a) The new key, beside the old one, durable before anything refers to it.
        keyfile::write(&next_path, &new.file_bytes)?;
        if stop(RotateStep::WroteNextKey) {
            return Ok(rotation);
        }

        // (b) The commit point: one atomic batch, then a flush.
        if let Err(error) = self.tree.apply(batch) {
            let _ = fs::remove_file(&next_path);
            return Err(error.into());
        }
        // From here the store refers to the new key; if the flush fails, `.next` stays and the
        // next open settles the rotation by the key id that reached the disk.
        self.key = new.key;
        self.db.flush_blocking()?;
        if stop(RotateStep::CommittedStore) {
            return Ok(rotation);
        }

        // (c) The new key file takes the old one's place.
        fs::rename(&next_path, &self.key_path).map_err(|e| keyfile::io_error(&next_path, &e))?;
        sync_parent(&self.key_path)?;
        Ok(rotation)
    }

    /// Opens every secret; one entry per secret, in name order (`security audit --deep`).
    pub fn verify_all(&self) -> Result<VerifyReport, VaultError> {
        Ok(self
            .tree
            .scan_prefix(SECRET_PREFIX)?
            .into_iter()
            .map(|(key, bytes)| {
                let name = name_of(&key);
                let outcome = SealedRecord::from_bytes(&name, &bytes)
                    .and_then(|record| seal::open(&self.key, &name, &record))
                    .map(drop);
                (name, outcome)
            })
            .collect())
    }

    fn flush(&self) -> Result<(), VaultError> {
        self.db.flush_blocking()?;
        Ok(())
    }
}

fn storage_key(name: &str) -> String {
    format!("{SECRET_PREFIX}{name}")
}

fn name_of(key: &[u8]) -> String {
    String::from_utf8_lossy(&key[SECRET_PREFIX.len().min(key.len())..]).into_owned()
}

fn refuse_reserved(name: &str) -> Result<(), VaultError> {
    if is_reserved(name) {
        return Err(VaultError::ReservedName {
            name: name.to_string(),
        });
    }
    Ok(())
}

fn check_value(name: &str, value: &SecretValue) -> Result<(), VaultError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(VaultError::ValueTooLarge {
            name: name.to_string(),
            len: value.len(),
            max: MAX_VALUE_LEN,
        });
    }
    Ok(())
}

fn active_key_id(tree: &KvTree) -> Result<Option<String>, VaultError> {
    Ok(tree
        .get(META_ACTIVE_KEY_ID)?
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
}

/// The key id of the first sealed secret, if any (a store written before the meta entry).
fn first_sealed_key_id(tree: &KvTree) -> Result<Option<String>, VaultError> {
    let mut found = None;
    tree.for_each(|key, bytes| {
        if key.starts_with(SECRET_PREFIX.as_bytes()) {
            found = Some(SealedRecord::from_bytes(&name_of(key), bytes).map(|r| r.key_id));
            return false;
        }
        true
    })?;
    found.transpose()
}

fn exists(path: &Path) -> Result<bool, VaultError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(keyfile::io_error(path, &e)),
    }
}

fn sync_parent(path: &Path) -> Result<(), VaultError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fsutil::sync_dir(dir).map_err(|e| keyfile::io_error(dir, &e))
}

/// Settles an interrupted rotation: `tomb.rr.next` holding the key id the store committed to
/// finishes step (c); any other `.next` (not committed, or unreadable as a key file) is removed.
fn recover_rotation(
    key_path: &Path,
    store_key_id: Option<&str>,
    warnings: &mut Vec<VaultWarning>,
) -> Result<(), VaultError> {
    let next = keyfile::next_path(key_path);
    if !exists(&next)? {
        return Ok(());
    }
    let next_key_id = match keyfile::read_key_id(&next) {
        Ok(id) => Some(id),
        Err(VaultError::KeyFileMalformed { .. } | VaultError::KeyFileUnsupported { .. }) => None,
        Err(other) => return Err(other),
    };
    if next_key_id.is_some() && next_key_id.as_deref() == store_key_id {
        fs::rename(&next, key_path).map_err(|e| keyfile::io_error(&next, &e))?;
        sync_parent(key_path)?;
        warnings.push(VaultWarning::RotationCompleted {
            path: key_path.to_path_buf(),
        });
    } else {
        fs::remove_file(&next).map_err(|e| keyfile::io_error(&next, &e))?;
        sync_parent(key_path)?;
        warnings.push(VaultWarning::RotationRolledBack { path: next });
    }
    Ok(())
}

/// Removes `.tomb.rr.*.tmp` files that a crash inside an atomic write left behind (they may hold
/// a key; they are 0600).
fn remove_leftovers(key_path: &Path, warnings: &mut Vec<VaultWarning>) -> Result<(), VaultError> {
    let Some(dir) = key_path.parent() else {
        return Ok(());
    };
    let Some(key_name) = key_path.file_name().and_then(|n| n.to_str()) else {
        return Ok(());
    };
    let prefix = format!(".{key_name}.");
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(keyfile::io_error(dir, &e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| keyfile::io_error(dir, &e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(&prefix) && name.ends_with(".tmp") {
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| keyfile::io_error(&path, &e))?;
            warnings.push(VaultWarning::LeftoverRemoved { path });
        }
    }
    Ok(())
}
