//! The in-memory token table and its write-through operations (see the parent module for the
//! tree layout and how a running gateway learns of changes).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{
    redact_if_token, validate_name, AdminRotation, IssuedToken, Scope, TokenCheck, TokenError,
    TokenHashKey, TokenRecord, TokenSecret, MAX_TTL, MIN_TOKEN_CHARS, STATIC_ADMIN_NAME,
    TOKEN_PREFIX, TOKEN_RANDOM_BYTES,
};
use crate::store::{KvBatch, KvTree, StoreDb, TreeName};

/// Presented strings longer than this are refused without hashing.
const MAX_PRESENTED_LEN: usize = 1024;
/// Last-use times are kept to this resolution, so a busy token does not write a shared
/// cache line on every request.
const LAST_USED_RESOLUTION_MS: i64 = 1_000;
/// "Never used" in a [`Usage`] timestamp.
const NEVER: i64 = i64::MIN;

const NAME_PREFIX: &str = "name:";
const HASH_PREFIX: &str = "hash:";
const RETIRED_PREFIX: &str = "retired:";
const GENERATION_KEY: &str = "meta:generation";
const ROTATED_ADMIN_KEY: &str = "meta:rotated_admin";

/// Last-use bookkeeping of one token, shared across reloads of the table.
#[derive(Debug)]
struct Usage {
    /// Set by the first accepted use (or when the store says it was used before).
    used: AtomicBool,
    /// Latest accepted use, Unix milliseconds, or [`NEVER`].
    last_used_ms: AtomicI64,
    /// What the store holds, Unix milliseconds, or [`NEVER`].
    persisted_ms: AtomicI64,
}

impl Usage {
    fn new(stored: Option<OffsetDateTime>) -> Self {
        let ms = stored.map_or(NEVER, unix_ms);
        Self {
            used: AtomicBool::new(stored.is_some()),
            last_used_ms: AtomicI64::new(ms),
            persisted_ms: AtomicI64::new(ms),
        }
    }

    /// Merges what the store says (another writer may have recorded a later use).
    fn merge_stored(&self, stored: Option<OffsetDateTime>) {
        if let Some(at) = stored {
            let ms = unix_ms(at);
            self.used.store(true, Ordering::Relaxed);
            self.last_used_ms.fetch_max(ms, Ordering::Relaxed);
            self.persisted_ms.fetch_max(ms, Ordering::Relaxed);
        }
    }

    /// Records an accepted use; true only for the first one.
    fn mark_used(&self, now_ms: i64) -> bool {
        let last = self.last_used_ms.load(Ordering::Relaxed);
        if now_ms >= last.saturating_add(LAST_USED_RESOLUTION_MS) {
            self.last_used_ms.fetch_max(now_ms, Ordering::Relaxed);
        }
        !self.used.load(Ordering::Relaxed) && !self.used.swap(true, Ordering::AcqRel)
    }

    fn last_used(&self) -> Option<OffsetDateTime> {
        from_unix_ms(self.last_used_ms.load(Ordering::Relaxed))
    }
}

/// One accepted hash in the in-memory table.
#[derive(Debug)]
struct Entry {
    /// The token's name.
    name: Arc<str>,
    /// What it may do.
    scope: Scope,
    /// Its keyed hash.
    hash: [u8; 32],
    /// End of its lifetime.
    expires_at: Option<OffsetDateTime>,
    /// When it is (or will be) revoked.
    revoked_at: Option<OffsetDateTime>,
    /// Last-use bookkeeping, carried over across reloads.
    usage: Arc<Usage>,
}

impl Entry {
    fn check(&self, now: OffsetDateTime) -> TokenCheck {
        if self.revoked_at.is_some_and(|at| at <= now) {
            TokenCheck::Revoked {
                name: self.name.clone(),
            }
        } else if self.expires_at.is_some_and(|at| at <= now) {
            TokenCheck::Expired {
                name: self.name.clone(),
            }
        } else {
            TokenCheck::Valid {
                name: self.name.clone(),
                scope: self.scope,
                first_use: self.usage.mark_used(unix_ms(now)),
            }
        }
    }
}

/// The table `verify` reads; replaced wholesale by a reload.
#[derive(Debug, Default)]
struct Snapshot {
    /// Stored tokens by keyed hash.
    by_hash: HashMap<[u8; 32], Arc<Entry>>,
    /// The config admin token, when one is set.
    static_admin: Option<Arc<Entry>>,
    /// Config admin token hashes superseded by a rotation, with their deadline.
    retired: HashMap<[u8; 32], OffsetDateTime>,
    /// The store generation this table was read at.
    generation: u64,
}

impl Snapshot {
    fn static_entry(&self, hash: [u8; 32], usage: Arc<Usage>) -> Arc<Entry> {
        Arc::new(Entry {
            name: Arc::from(STATIC_ADMIN_NAME),
            scope: Scope::Admin,
            hash,
            expires_at: None,
            revoked_at: self.retired.get(&hash).copied(),
            usage,
        })
    }
}

/// When the config admin token with some hash stops working (JSON under `retired:<hex>`).
#[derive(Debug, Serialize, Deserialize)]
struct RetiredStatic {
    /// Always [`STATIC_ADMIN_NAME`] (for people reading the store).
    name: String,
    /// The deadline.
    #[serde(with = "time::serde::rfc3339")]
    revoked_at: OffsetDateTime,
}

/// The token table: a cheap `Clone + Send + Sync` handle shared by the HTTP middleware (which
/// calls [`verify`](Self::verify) on every request) and the admin paths (which create, revoke and
/// rotate, writing through to the store and flushing before they return).
#[derive(Clone)]
pub struct TokenRegistry {
    inner: Arc<Shared>,
}

struct Shared {
    /// The hash key (from the vault).
    key: TokenHashKey,
    /// The database, for flushes and fresh ids.
    db: StoreDb,
    /// The `Tokens` tree.
    tree: KvTree,
    /// What `verify` reads; the write lock is held only to swap in a new table.
    snapshot: RwLock<Snapshot>,
    /// Serialises this process's writers (name checks, read-modify-write of records).
    writer: tokio::sync::Mutex<()>,
}

impl fmt::Debug for TokenRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snapshot = self.read();
        f.debug_struct("TokenRegistry")
            .field("tokens", &snapshot.by_hash.len())
            .field("static_admin", &snapshot.static_admin.is_some())
            .field("generation", &snapshot.generation)
            .finish_non_exhaustive()
    }
}

impl TokenRegistry {
    /// Opens the registry over the store's `Tokens` tree and loads it.
    pub fn open(db: &StoreDb, key: TokenHashKey) -> Result<Self, TokenError> {
        let registry = Self {
            inner: Arc::new(Shared {
                key,
                db: db.clone(),
                tree: db.tree(TreeName::Tokens)?,
                snapshot: RwLock::new(Snapshot::default()),
                writer: tokio::sync::Mutex::new(()),
            }),
        };
        registry.reload_from_store()?;
        Ok(registry)
    }

    /// Judges a presented bearer token at `now`. No store I/O: one keyed hash, a read lock, a
    /// map lookup by hash and a constant-time comparison of the hash. Covers stored tokens and
    /// the config admin token.
    pub fn verify(&self, presented: &str, now: OffsetDateTime) -> TokenCheck {
        self.verify_bytes(presented.as_bytes(), now)
    }

    /// [`verify`](Self::verify) for a token taken from a header as bytes (no UTF-8 check needed).
    pub fn verify_bytes(&self, presented: &[u8], now: OffsetDateTime) -> TokenCheck {
        if presented.is_empty() || presented.len() > MAX_PRESENTED_LEN {
            return TokenCheck::Unknown;
        }
        let digest = self.inner.key.digest(presented);
        let snapshot = self.read();
        let static_hit = snapshot
            .static_admin
            .as_ref()
            .filter(|entry| bool::from(entry.hash[..].ct_eq(&digest[..])));
        match snapshot.by_hash.get(&digest) {
            Some(entry) if bool::from(entry.hash[..].ct_eq(&digest[..])) => entry.check(now),
            _ => static_hit.map_or(TokenCheck::Unknown, |entry| entry.check(now)),
        }
    }

    /// Sets (or clears) the config admin token. Only its keyed hash is kept, in memory. If a
    /// rotation superseded a token with the same value, the same deadline applies to it.
    pub fn set_static_admin(&self, token: Option<&str>) {
        let hash = token
            .filter(|t| !t.is_empty())
            .map(|t| self.inner.key.digest(t.as_bytes()));
        let mut snapshot = self.write();
        snapshot.static_admin = hash.map(|hash| {
            let usage = snapshot
                .static_admin
                .as_ref()
                .filter(|old| old.hash == hash)
                .map_or_else(|| Arc::new(Usage::new(None)), |old| old.usage.clone());
            snapshot.static_entry(hash, usage)
        });
    }

    /// Every stored token, by name, with the latest known last use; never a token.
    pub fn list(&self) -> Result<Vec<TokenRecord>, TokenError> {
        let mut records = self.stored_records()?;
        let snapshot = self.read();
        for (hash, record) in &mut records {
            if let Some(entry) = snapshot.by_hash.get(hash) {
                record.last_used_at = record.last_used_at.max(entry.usage.last_used());
            }
        }
        Ok(records.into_iter().map(|(_, record)| record).collect())
    }

    /// True when some token would be accepted at `now` (a stored one or the config admin
    /// token): the gateway is then not in local single-user mode (CONTRACT §3.1).
    pub fn has_active_tokens(&self, now: OffsetDateTime) -> bool {
        let snapshot = self.read();
        let active = |e: &Arc<Entry>| {
            e.revoked_at.is_none_or(|at| at > now) && e.expires_at.is_none_or(|at| at > now)
        };
        snapshot.static_admin.iter().any(active) || snapshot.by_hash.values().any(active)
    }

    /// The store generation the in-memory table was read at.
    pub fn generation(&self) -> u64 {
        self.read().generation
    }

    /// True when the store has changed since `generation` (one point read).
    pub fn changed_since(&self, generation: u64) -> Result<bool, TokenError> {
        Ok(self.stored_generation()? != generation)
    }

    /// Reloads when the store changed since the last load; call every [`RELOAD_POLL_INTERVAL`](super::RELOAD_POLL_INTERVAL).
    /// Returns whether it reloaded.
    pub fn reload_if_changed(&self) -> Result<bool, TokenError> {
        if self.changed_since(self.generation())? {
            self.reload_from_store()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Re-reads the `Tokens` tree and swaps in a new table (keeping in-memory last-use times).
    /// A corrupt record is skipped with a warning: its token is refused (fails closed).
    pub fn reload_from_store(&self) -> Result<(), TokenError> {
        let generation = self.stored_generation()?;
        let records = self.stored_records()?;
        let mut retired = HashMap::new();
        for (key, value) in self.inner.tree.scan_prefix(RETIRED_PREFIX)? {
            let parsed = decode_hash(&key[RETIRED_PREFIX.len()..]).and_then(|hash| {
                serde_json::from_slice::<RetiredStatic>(&value)
                    .ok()
                    .map(|r| (hash, r.revoked_at))
            });
            match parsed {
                Some((hash, at)) => {
                    retired.insert(hash, at);
                }
                None => {
                    tracing::warn!(key = %String::from_utf8_lossy(&key), "skipping corrupt token entry")
                }
            }
        }

        let mut snapshot = self.write();
        let mut by_hash = HashMap::with_capacity(records.len());
        for (hash, record) in records {
            let usage = match snapshot.by_hash.get(&hash) {
                Some(old) if *old.name == *record.name => {
                    old.usage.merge_stored(record.last_used_at);
                    old.usage.clone()
                }
                _ => Arc::new(Usage::new(record.last_used_at)),
            };
            let entry = Entry {
                name: Arc::from(record.name.as_str()),
                scope: record.scope,
                hash,
                expires_at: record.expires_at,
                revoked_at: record.revoked_at,
                usage,
            };
            by_hash.insert(hash, Arc::new(entry));
        }
        snapshot.by_hash = by_hash;
        snapshot.retired = retired;
        snapshot.generation = generation;
        if let Some(old) = snapshot.static_admin.take() {
            snapshot.static_admin = Some(snapshot.static_entry(old.hash, old.usage.clone()));
        }
        Ok(())
    }

    /// Issues a token with `scope`, an optional lifetime and an optional name (default
    /// `token-<n>`). The record is durable before this returns; the token is shown only here.
    pub async fn create(
        &self,
        scope: Scope,
        ttl: Option<std::time::Duration>,
        name: Option<String>,
    ) -> Result<IssuedToken, TokenError> {
        let _writer = self.inner.writer.lock().await;
        let now = OffsetDateTime::now_utc();
        if ttl.is_some_and(|ttl| ttl.is_zero()) {
            return Err(TokenError::InvalidDuration {
                given: "0s".to_owned(),
                reason: "must be positive",
            });
        }
        let expires_at = ttl.map(|ttl| add_duration(now, ttl)).transpose()?;
        let name = match name {
            Some(name) => {
                validate_name(&name)?;
                if self.inner.tree.get(name_key(&name))?.is_some() {
                    return Err(TokenError::NameTaken { name });
                }
                name
            }
            None => self.next_default_name()?,
        };
        let issued = self.issue(name, scope, now, expires_at)?;
        let mut batch = KvBatch::default();
        self.add_new_record(&mut batch, &issued.record)?;
        self.commit(batch).await?;
        Ok(issued)
    }

    /// Revokes the token `name` now (an earlier revocation stays as it was). Durable before it
    /// returns; the running gateway refuses it within one [`RELOAD_POLL_INTERVAL`](super::RELOAD_POLL_INTERVAL).
    pub async fn revoke(&self, name: &str) -> Result<TokenRecord, TokenError> {
        let _writer = self.inner.writer.lock().await;
        let not_found = || TokenError::NotFound {
            name: redact_if_token(name),
        };
        validate_name(name).map_err(|_| not_found())?;
        let mut record = self.read_record(name)?.ok_or_else(not_found)?;
        let now = OffsetDateTime::now_utc();
        if record.revoked_at.is_some_and(|at| at <= now) {
            return Ok(record);
        }
        record.revoked_at = Some(now);
        let mut batch = KvBatch::default();
        put_record(&mut batch, &record)?;
        self.commit(batch).await?;
        Ok(record)
    }

    /// Issues a new admin token named `admin-<UTC timestamp>` (CONTRACT §3.4). The admin token of
    /// the previous rotation and the config admin token (if set here) keep working until
    /// `now + grace` and are then refused as [`TokenCheck::Revoked`] (their `revoked_at` is set to
    /// that deadline; for the config admin token the deadline is stored by hash, so it survives a
    /// restart with the same `KAFCLAW_GATEWAY_AUTH_TOKEN`). Other admin tokens are not touched.
    pub async fn rotate_admin(
        &self,
        grace: std::time::Duration,
    ) -> Result<AdminRotation, TokenError> {
        let _writer = self.inner.writer.lock().await;
        let now = OffsetDateTime::now_utc();
        let deadline = add_duration(now, grace)?;
        let name = self.rotation_name(now)?;
        let issued = self.issue(name, Scope::Admin, now, None)?;
        let mut batch = KvBatch::default();
        let mut superseded = Vec::new();

        let previous = self
            .inner
            .tree
            .get(ROTATED_ADMIN_KEY)?
            .and_then(|bytes| String::from_utf8(bytes).ok());
        if let Some(mut record) = previous.and_then(|p| self.read_record(&p).ok().flatten()) {
            if !matches!(record.revoked_at, Some(at) if at <= deadline) {
                record.revoked_at = Some(deadline);
                put_record(&mut batch, &record)?;
                superseded.push(record.name);
            }
        }
        let static_hash = self.read().static_admin.as_ref().map(|entry| entry.hash);
        if let Some(hash) = static_hash {
            let key = format!("{RETIRED_PREFIX}{}", hex::encode(hash));
            let earlier = self.read().retired.get(&hash).copied();
            let retired = RetiredStatic {
                name: STATIC_ADMIN_NAME.to_owned(),
                revoked_at: earlier.map_or(deadline, |at| at.min(deadline)),
            };
            batch.insert(key.as_bytes(), to_json(&key, &retired)?);
            superseded.push(STATIC_ADMIN_NAME.to_owned());
        }
        self.add_new_record(&mut batch, &issued.record)?;
        batch.insert(ROTATED_ADMIN_KEY, issued.record.name.as_bytes());
        self.commit(batch).await?;
        Ok(AdminRotation {
            issued,
            superseded,
            old_valid_until: deadline,
        })
    }

    /// Writes last-use times newer than the stored ones (one batch, then a flush). Call
    /// periodically and on shutdown; never per request. Does not signal a change to other
    /// registries (last use is informational). Returns how many records it updated.
    pub async fn persist_last_used(&self) -> Result<usize, TokenError> {
        let _writer = self.inner.writer.lock().await;
        let pending: Vec<(Arc<Entry>, i64)> = self
            .read()
            .by_hash
            .values()
            .filter_map(|entry| {
                let last = entry.usage.last_used_ms.load(Ordering::Relaxed);
                (last > entry.usage.persisted_ms.load(Ordering::Relaxed))
                    .then(|| (entry.clone(), last))
            })
            .collect();
        let mut batch = KvBatch::default();
        let mut written = Vec::new();
        for (entry, last_ms) in pending {
            let Some(mut record) = self.read_record(&entry.name)? else {
                continue;
            };
            if record.hash != hex::encode(entry.hash) {
                continue;
            }
            let last = from_unix_ms(last_ms);
            if record.last_used_at < last {
                record.last_used_at = last;
                put_record(&mut batch, &record)?;
            }
            written.push((entry, last_ms));
        }
        if written.is_empty() {
            return Ok(0);
        }
        self.inner.tree.apply(batch)?;
        self.inner.db.flush().await?;
        for (entry, last_ms) in &written {
            entry
                .usage
                .persisted_ms
                .fetch_max(*last_ms, Ordering::Relaxed);
        }
        Ok(written.len())
    }

    fn read(&self) -> RwLockReadGuard<'_, Snapshot> {
        // The write lock only guards plain assignments, so a poisoned table is still whole.
        self.inner
            .snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Snapshot> {
        self.inner
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Draws a fresh token and builds its record.
    fn issue(
        &self,
        name: String,
        scope: Scope,
        now: OffsetDateTime,
        expires_at: Option<OffsetDateTime>,
    ) -> Result<IssuedToken, TokenError> {
        let mut random = Zeroizing::new([0u8; TOKEN_RANDOM_BYTES]);
        getrandom::fill(random.as_mut()).map_err(|_| TokenError::Random)?;
        // Exact capacity: the string never reallocates, so no unzeroized copy is left behind.
        let mut text = Zeroizing::new(String::with_capacity(TOKEN_PREFIX.len() + MIN_TOKEN_CHARS));
        text.push_str(TOKEN_PREFIX);
        URL_SAFE_NO_PAD.encode_string(random.as_ref(), &mut text);
        let hash = self.inner.key.digest(text.as_bytes());
        Ok(IssuedToken {
            token: TokenSecret(text),
            record: TokenRecord {
                name,
                scope,
                created_at: now,
                expires_at,
                last_used_at: None,
                revoked_at: None,
                hash: hex::encode(hash),
            },
        })
    }

    /// Adds a new record and its hash index to `batch`.
    fn add_new_record(&self, batch: &mut KvBatch, record: &TokenRecord) -> Result<(), TokenError> {
        put_record(batch, record)?;
        batch.insert(
            format!("{HASH_PREFIX}{}", record.hash).as_bytes(),
            record.name.as_bytes(),
        );
        Ok(())
    }

    /// Applies `batch` with a fresh generation, flushes, and reloads the table.
    async fn commit(&self, mut batch: KvBatch) -> Result<(), TokenError> {
        let generation = self.inner.db.next_id()?;
        batch.insert(GENERATION_KEY, generation.to_be_bytes());
        self.inner.tree.apply(batch)?;
        self.inner.db.flush().await?;
        self.reload_from_store()
    }

    fn stored_generation(&self) -> Result<u64, TokenError> {
        match self.inner.tree.get(GENERATION_KEY)? {
            None => Ok(0),
            Some(bytes) => <[u8; 8]>::try_from(bytes.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| TokenError::Corrupt {
                    key: GENERATION_KEY.to_owned(),
                    reason: "expected 8 bytes".to_owned(),
                }),
        }
    }

    /// Every decodable record with its hash, in name order; corrupt ones are skipped.
    fn stored_records(&self) -> Result<Vec<([u8; 32], TokenRecord)>, TokenError> {
        let mut records = Vec::new();
        for (key, value) in self.inner.tree.scan_prefix(NAME_PREFIX)? {
            let parsed = serde_json::from_slice::<TokenRecord>(&value)
                .ok()
                .filter(|r| key[NAME_PREFIX.len()..] == *r.name.as_bytes())
                .and_then(|r| decode_hash(r.hash.as_bytes()).map(|hash| (hash, r)));
            match parsed {
                Some(pair) => records.push(pair),
                None => {
                    tracing::warn!(key = %String::from_utf8_lossy(&key), "skipping corrupt token entry")
                }
            }
        }
        Ok(records)
    }

    fn read_record(&self, name: &str) -> Result<Option<TokenRecord>, TokenError> {
        let key = name_key(name);
        self.inner
            .tree
            .get(&key)?
            .map(|bytes| {
                serde_json::from_slice(&bytes).map_err(|e| TokenError::Corrupt {
                    key,
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    /// `token-<n>`, one above the highest such name in use.
    fn next_default_name(&self) -> Result<String, TokenError> {
        let prefix = format!("{NAME_PREFIX}token-");
        let highest = self
            .inner
            .tree
            .scan_prefix(&prefix)?
            .iter()
            .filter_map(|(key, _)| std::str::from_utf8(&key[prefix.len()..]).ok()?.parse().ok())
            .max()
            .unwrap_or(0u64);
        Ok(format!("token-{}", highest.saturating_add(1)))
    }

    /// `admin-YYYYMMDDTHHMMSSZ`, with `-2`, `-3`, … when rotated twice in one second.
    fn rotation_name(&self, now: OffsetDateTime) -> Result<String, TokenError> {
        let stamp = format!(
            "admin-{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        );
        let mut name = stamp.clone();
        let mut n = 1u32;
        while self.inner.tree.get(name_key(&name))?.is_some() {
            n += 1;
            name = format!("{stamp}-{n}");
        }
        Ok(name)
    }
}

fn name_key(name: &str) -> String {
    format!("{NAME_PREFIX}{name}")
}

fn put_record(batch: &mut KvBatch, record: &TokenRecord) -> Result<(), TokenError> {
    let key = name_key(&record.name);
    let value = to_json(&key, record)?;
    batch.insert(key.as_bytes(), value);
    Ok(())
}

fn to_json<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>, TokenError> {
    serde_json::to_vec(value).map_err(|e| TokenError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

fn decode_hash(hex_bytes: &[u8]) -> Option<[u8; 32]> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(hex_bytes, &mut hash).ok()?;
    Some(hash)
}

fn add_duration(
    now: OffsetDateTime,
    duration: std::time::Duration,
) -> Result<OffsetDateTime, TokenError> {
    let invalid = |reason| TokenError::InvalidDuration {
        given: format!("{}s", duration.as_secs()),
        reason,
    };
    if duration > MAX_TTL {
        return Err(invalid("longer than ten years"));
    }
    let duration = time::Duration::try_from(duration).map_err(|_| invalid("too long"))?;
    now.checked_add(duration).ok_or_else(|| invalid("too long"))
}

fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn from_unix_ms(ms: i64) -> Option<OffsetDateTime> {
    if ms == NEVER {
        return None;
    }
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}
