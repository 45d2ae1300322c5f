//! The embedded store (`~/.kafclaw/timeline.db`, sled): the only module that imports sled.
//!
//! Owns: opening the database with its final mode, the named trees, atomic batches, durable
//! flushes, and the timeline (events newest first). Other modules reach their own tree through
//! [`StoreDb::tree`] and never see a sled type.
//! Must not: interpret other modules' values (the vault's ciphertexts, the token table, …).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::supervisor::{Ping, Pong};

pub mod seam;
mod timeline;
pub use seam::{Batch, SledState, Space, SpaceRef, State, StateStore, Swap};
pub use timeline::{
    append_event, oldest_event_ms, prune_timeline, GetTimeline, RecordEvent, TimelineEvent,
    TimelineQuery,
};

#[cfg(test)]
mod tests;

/// What can go wrong in the store. Messages never include stored values.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened (locked by another process, corrupt, unreadable).
    #[error("cannot open the store at {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    /// A read, write or flush failed.
    #[error("store i/o failed: {0}")]
    Io(String),
    /// A stored value could not be decoded (written by another version, or corrupt).
    #[error("store value in tree {tree} is corrupt: {reason}")]
    Corrupt { tree: &'static str, reason: String },
}

impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> Self {
        StoreError::Io(error.to_string())
    }
}

/// The named trees. One closed list, so two modules can never share a tree by accident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TreeName {
    /// Timeline events, keyed by a monotonic id (big-endian u64).
    Timeline,
    /// Runtime settings that survive a restart (channel states, restrictions, …).
    Settings,
    /// Sealed secrets of the vault (ciphertext only).
    Secrets,
    /// Gateway tokens (keyed hashes and metadata, never a token).
    Tokens,
    /// Channel inbox and outbox messages.
    Channels,
    /// Agent sessions (history).
    Sessions,
    /// Pending and decided tool approvals.
    Approvals,
    /// Incidents.
    Incidents,
    /// Token usage counters.
    Usage,
    /// The audit chain's head as of the last group commit (recorded apart from the segments).
    Audit,
    /// Turn journals (behind [`seam`]).
    Journal,
    /// Which session each saved media file belongs to (path under the media root → session).
    Media,
}

impl TreeName {
    /// Every tree (for size reports).
    pub const ALL: [TreeName; 12] = [
        TreeName::Timeline,
        TreeName::Settings,
        TreeName::Secrets,
        TreeName::Tokens,
        TreeName::Channels,
        TreeName::Sessions,
        TreeName::Approvals,
        TreeName::Incidents,
        TreeName::Usage,
        TreeName::Audit,
        TreeName::Journal,
        TreeName::Media,
    ];

    /// The sled tree name.
    pub fn as_str(self) -> &'static str {
        match self {
            TreeName::Timeline => "timeline",
            TreeName::Settings => "settings",
            TreeName::Secrets => "secrets",
            TreeName::Tokens => "tokens",
            TreeName::Channels => "channels",
            TreeName::Sessions => "sessions",
            TreeName::Approvals => "approvals",
            TreeName::Incidents => "incidents",
            TreeName::Usage => "usage",
            TreeName::Audit => "audit",
            TreeName::Journal => "journal",
            TreeName::Media => "media",
        }
    }
}

/// The page cache of a store opened without a setting (`store.cache_mib`'s default).
pub const DEFAULT_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// A cheap, cloneable handle on the open database.
#[derive(Clone)]
pub struct StoreDb {
    /// The sled database; sled handles are internally reference-counted and thread-safe.
    /// Behind our own `Arc` so the idle flush can hold it weakly (a dropped store is not kept
    /// open, or locked, by a pending flush).
    db: Arc<sled::Db>,
    /// Where it lives (for messages and snapshots).
    path: PathBuf,
    /// The page cache sled was opened with (`store.cache_mib`): the store's memory bound.
    cache_bytes: u64,
    /// Coalesces concurrent durable flushes into shared ones (group commit).
    flusher: std::sync::Arc<Flusher>,
    /// Schedules a flush of writes nobody flushed (replaces sled's periodic flusher).
    idle: Arc<IdleFlush>,
}

/// How long a write may stay unflushed when nobody flushes it: sled's `flush_every_ms(500)`
/// bound, which this replaces.
const IDLE_FLUSH_AFTER: Duration = Duration::from_millis(500);

/// Writes no caller has made durable yet. Replaces sled's flusher thread, which fsyncs every
/// 500 ms even when nothing changed: the first write after a clean state schedules one flush
/// [`IDLE_FLUSH_AFTER`] later, and an explicit flush clears the mark, so an idle store never
/// fsyncs and no write stays unflushed longer than it did before. (sled's flusher also cleaned
/// segments; sled cleans one page on every page write as well, so only an idle store skips
/// cleaning, and it has nothing new to clean.)
struct IdleFlush {
    /// A write happened that no flush has covered yet.
    dirty: AtomicBool,
    /// A deferred flush is pending (at most one at a time, however many writes).
    scheduled: AtomicBool,
    db: Weak<sled::Db>,
    /// Held by a deferred flush while it holds the store: the last [`StoreDb`] waits for it
    /// when dropped, so a dropped store is closed (its lock released) when the drop returns
    /// and the same directory can be opened again at once.
    busy: std::sync::Mutex<()>,
    /// Set (under `busy`) by the last [`StoreDb`] as it is dropped: no deferred flush takes
    /// the store after that (sled flushes when it is closed).
    closing: AtomicBool,
}

impl IdleFlush {
    /// Called after every write: schedules a deferred flush unless one is pending.
    fn mark(self: &Arc<Self>) {
        self.dirty.store(true, Ordering::SeqCst);
        if self.scheduled.swap(true, Ordering::SeqCst) {
            return;
        }
        let idle = Arc::clone(self);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    tokio::time::sleep(IDLE_FLUSH_AFTER).await;
                    idle.scheduled.store(false, Ordering::SeqCst);
                    if idle.dirty.load(Ordering::SeqCst) {
                        let _ = tokio::task::spawn_blocking(move || idle.flush_if_dirty()).await;
                    }
                });
            }
            // Command-line tools write outside a runtime (and flush before they exit).
            Err(_) => {
                let spawned = std::thread::Builder::new()
                    .name("store-flush".into())
                    .spawn(move || {
                        std::thread::sleep(IDLE_FLUSH_AFTER);
                        idle.scheduled.store(false, Ordering::SeqCst);
                        idle.flush_if_dirty();
                    });
                if spawned.is_err() {
                    self.scheduled.store(false, Ordering::SeqCst);
                    self.flush_if_dirty();
                }
            }
        }
    }

    /// Clears the mark; the caller is about to flush everything written so far.
    fn clear(&self) {
        self.dirty.store(false, Ordering::SeqCst);
    }

    /// Flushes if a write is still uncovered. A store dropped meanwhile has flushed itself
    /// (sled flushes when it is closed).
    fn flush_if_dirty(&self) {
        let _busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if self.closing.load(Ordering::SeqCst) {
            return;
        }
        if self.dirty.swap(false, Ordering::SeqCst) {
            if let Some(db) = self.db.upgrade() {
                if let Err(error) = db.flush() {
                    tracing::error!(error = %error, "store: deferred flush failed");
                }
            }
        }
    }
}

/// Group commit for [`StoreDb::flush`]: a caller takes a ticket; one flush that *starts* after
/// the ticket was taken covers every write made before it, so callers that arrive while a
/// flush runs wait for the next one together instead of each paying an fsync.
#[derive(Default)]
struct Flusher {
    state: std::sync::Mutex<FlushState>,
    done: tokio::sync::Notify,
}

#[derive(Default)]
struct FlushState {
    /// The last ticket handed out.
    requested: u64,
    /// Every ticket up to this one is durable.
    completed: u64,
    /// A flush is running.
    running: bool,
    /// The last flush failed with this message (tickets it covered fail too).
    failed: Option<(u64, String)>,
}

impl std::fmt::Debug for StoreDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreDb").field("path", &self.path).finish()
    }
}

impl Drop for StoreDb {
    fn drop(&mut self) {
        // The last holder, or the last but a deferred flush that holds the store right now:
        // wait for that flush, so no handle of ours outlives this drop (sled's own threads
        // release the directory's lock a moment later; `open` waits for that).
        if Arc::strong_count(&self.db) <= 2 {
            let _busy = self.idle.busy.lock().unwrap_or_else(|e| e.into_inner());
            // With `busy` held no deferred flush holds the store: 1 means this is the last.
            if Arc::strong_count(&self.db) == 1 {
                self.idle.closing.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// How long [`StoreDb::open`] waits for the directory's lock to be released.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// sled 0.34 reports a held `flock` as `ErrorKind::Other` with this text, the OS error
/// (`WouldBlock`) only formatted into it.
fn is_lock_contention(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::WouldBlock
        || (error.kind() == std::io::ErrorKind::Other
            && error.to_string().starts_with("could not acquire lock"))
}

impl StoreDb {
    /// Opens (or creates, with mode 0700) the store directory at `path` with the default page
    /// cache ([`DEFAULT_CACHE_BYTES`]).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Opens the store at `path` with a page cache of at most `cache_bytes` (sled's
    /// `cache_capacity`; without it sled caches up to 1 GiB and a long-running gateway's RSS
    /// grows with the store).
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let open_error = |reason: String| StoreError::Open {
            path: path.to_path_buf(),
            reason,
        };
        fsutil::create_private_dir(path).map_err(|e| open_error(e.to_string()))?;
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .flush_every_ms(None); // see `IdleFlush`
                                   // sled takes an exclusive `flock` on the directory and, when the last handle drops,
                                   // releases it from its own I/O threads a moment later: a store reopened in the same
                                   // process right after a close (a restart of the bridge, a restore) can find it still
                                   // held. Wait a bounded time for that; a lock still held then belongs to someone else.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(e)) if is_lock_contention(&e) => {
                    if std::time::Instant::now() >= deadline {
                        return Err(open_error(format!(
                            "it is locked by another process (a gateway or another kafclaw \
                             command using this home?), still after {} s",
                            LOCK_WAIT.as_secs()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(open_error(e.to_string())),
            }
        };
        Ok(Self::wrap(db, path.to_path_buf(), cache_bytes))
    }

    /// Opens a throw-away store in a temporary directory (tests and benchmarks).
    pub fn temporary() -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .temporary(true)
            .cache_capacity(DEFAULT_CACHE_BYTES)
            .flush_every_ms(None)
            .open()?;
        Ok(Self::wrap(
            db,
            PathBuf::from("(temporary)"),
            DEFAULT_CACHE_BYTES,
        ))
    }

    fn wrap(db: sled::Db, path: PathBuf, cache_bytes: u64) -> Self {
        let db = Arc::new(db);
        let idle = Arc::new(IdleFlush {
            dirty: AtomicBool::new(false),
            scheduled: AtomicBool::new(false),
            db: Arc::downgrade(&db),
            busy: std::sync::Mutex::new(()),
            closing: AtomicBool::new(false),
        });
        Self {
            db,
            path,
            cache_bytes,
            flusher: Default::default(),
            idle,
        }
    }

    /// The directory of the database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The page cache the store was opened with, in bytes (`store.cache_mib`).
    pub fn cache_limit_bytes(&self) -> u64 {
        self.cache_bytes
    }

    /// One named tree.
    pub fn tree(&self, name: TreeName) -> Result<KvTree, StoreError> {
        Ok(KvTree {
            tree: self.db.open_tree(name.as_str())?,
            name,
            idle: Arc::clone(&self.idle),
        })
    }

    /// Makes every write so far durable. Call before acknowledging anything that depends on it.
    ///
    /// Runs sled's blocking flush on the blocking pool: sled 0.34's `flush_async` can fail to
    /// complete when many callers flush at once (seen under webhook load), while concurrent
    /// blocking flushes simply queue behind each other.
    ///
    /// Concurrent callers share flushes (see [`Flusher`]): throughput of acknowledged writes
    /// is bounded by fsyncs per second times the batch, not by fsyncs per second alone.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let flusher = &self.flusher;
        let ticket = {
            let mut state = flusher.state.lock().unwrap_or_else(|p| p.into_inner());
            state.requested += 1;
            state.requested
        };
        loop {
            let notified = flusher.done.notified();
            let target = {
                let mut state = flusher.state.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((upto, reason)) = &state.failed {
                    if ticket <= *upto {
                        return Err(StoreError::Io(reason.clone()));
                    }
                }
                if state.completed >= ticket {
                    return Ok(());
                }
                if state.running {
                    None
                } else {
                    state.running = true;
                    Some(state.requested)
                }
            };
            match target {
                // Someone else is flushing; wait for them, then look again.
                None => notified.await,
                Some(target) => {
                    self.idle.clear();
                    let db = self.db.clone();
                    let result = tokio::task::spawn_blocking(move || db.flush())
                        .await
                        .map_err(|e| StoreError::Io(format!("flush task failed: {e}")))
                        .and_then(|r| r.map(|_| ()).map_err(StoreError::from));
                    {
                        let mut state = flusher.state.lock().unwrap_or_else(|p| p.into_inner());
                        state.running = false;
                        match &result {
                            Ok(()) => state.completed = state.completed.max(target),
                            Err(e) => state.failed = Some((target, e.to_string())),
                        }
                    }
                    flusher.done.notify_waiters();
                    return result;
                }
            }
        }
    }

    /// Synchronous flush, for shutdown and command-line tools.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.idle.clear();
        self.db.flush()?;
        Ok(())
    }

    /// A fresh, strictly increasing id (survives restarts).
    pub fn next_id(&self) -> Result<u64, StoreError> {
        let id = self.db.generate_id()?;
        self.idle.mark();
        Ok(id)
    }

    /// The storage seam over this store (inbox, outbox, journal, history).
    pub fn state(&self) -> Result<State, StoreError> {
        Ok(std::sync::Arc::new(SledState::new(self)?))
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Verifies the store's internal checksums (used by `security audit --deep`).
    pub fn verify_integrity(&self) -> Result<(), StoreError> {
        let checksum_before = self.db.checksum()?;
        let checksum_after = self.db.checksum()?;
        if checksum_before == checksum_after {
            Ok(())
        } else {
            Err(StoreError::Corrupt {
                tree: "*",
                reason: "checksum changed while idle".into(),
            })
        }
    }

    /// Writes a consistent export of every tree into `dest` (a new store directory):
    /// used by snapshots and backups while the gateway keeps running.
    pub fn export_to(&self, dest: &Path) -> Result<(), StoreError> {
        let target = StoreDb::open(dest)?;
        target.db.import(self.db.export());
        target.flush_blocking()
    }
}

/// Key/value pairs read from a tree, in the order the scan produced them.
pub type KvPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// One named tree: keys and values are bytes; typed helpers encode JSON.
#[derive(Clone)]
pub struct KvTree {
    tree: sled::Tree,
    name: TreeName,
    /// Marked after every write (see [`IdleFlush`]).
    idle: Arc<IdleFlush>,
}

/// A set of writes applied atomically to one tree.
#[derive(Default)]
pub struct KvBatch {
    batch: sled::Batch,
}

impl KvBatch {
    /// Adds an insert.
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.batch.insert(key.as_ref(), value.as_ref());
    }
    /// Adds a removal.
    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.batch.remove(key.as_ref());
    }
}

impl KvTree {
    /// The tree's name.
    pub fn name(&self) -> TreeName {
        self.name
    }
    /// The raw value under `key`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(key.as_ref())?.map(|v| v.to_vec()))
    }
    /// Sets `key` to `value`, returning the previous value.
    pub fn insert(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let previous = self.tree.insert(key.as_ref(), value.as_ref())?;
        self.idle.mark();
        Ok(previous.map(|v| v.to_vec()))
    }
    /// Inserts only if `key` is absent; returns false when it was already present.
    pub fn insert_new(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<bool, StoreError> {
        let swapped = self.tree.compare_and_swap(
            key.as_ref(),
            None as Option<&[u8]>,
            Some(value.as_ref()),
        )?;
        if swapped.is_ok() {
            self.idle.mark();
        }
        Ok(swapped.is_ok())
    }
    /// Sets `key` to `new` (`None` removes it) only if it holds `expected` (`None`: absent).
    pub fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<Swap, StoreError> {
        Ok(
            match self.tree.compare_and_swap(key.as_ref(), expected, new)? {
                Ok(()) => {
                    self.idle.mark();
                    Swap::Done
                }
                Err(conflict) => Swap::Conflict(conflict.current.map(|v| v.to_vec())),
            },
        )
    }
    /// Removes `key`, returning the previous value.
    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StoreError> {
        let previous = self.tree.remove(key.as_ref())?;
        self.idle.mark();
        Ok(previous.map(|v| v.to_vec()))
    }
    /// Applies every write of `batch` atomically.
    pub fn apply(&self, batch: KvBatch) -> Result<(), StoreError> {
        self.tree.apply_batch(batch.batch)?;
        self.idle.mark();
        Ok(())
    }
    /// All pairs whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<KvPairs, StoreError> {
        self.tree
            .scan_prefix(prefix.as_ref())
            .map(|item| {
                let (k, v) = item?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }
    /// Up to `limit` pairs under `prefix` with keys strictly above `after`, in key order.
    pub fn scan_after(
        &self,
        prefix: impl AsRef<[u8]>,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<KvPairs, StoreError> {
        use std::ops::Bound;
        let prefix = prefix.as_ref();
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        self.tree
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .take_while(|item| item.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
            .take(limit)
            .map(|item| {
                let (k, v) = item?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }
    /// Up to `limit` pairs under `prefix` with keys strictly below `before`, in reverse order.
    pub fn scan_before(
        &self,
        prefix: impl AsRef<[u8]>,
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<KvPairs, StoreError> {
        use std::ops::Bound;
        let prefix = prefix.as_ref();
        let end = match (before, prefix_end(prefix)) {
            (Some(before), Some(end)) if before.to_vec() < end => Bound::Excluded(before.to_vec()),
            (Some(before), None) => Bound::Excluded(before.to_vec()),
            (_, Some(end)) => Bound::Excluded(end),
            (_, None) => Bound::Unbounded,
        };
        if let Bound::Excluded(end) = &end {
            if end.as_slice() <= prefix {
                return Ok(Vec::new());
            }
        }
        self.tree
            .range::<Vec<u8>, _>((Bound::Included(prefix.to_vec()), end))
            .rev()
            .take_while(|item| item.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
            .take(limit)
            .map(|item| {
                let (k, v) = item?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }
    /// Up to `limit` pairs with keys strictly below `before` (or from the end), newest first.
    pub fn scan_rev(&self, before: Option<&[u8]>, limit: usize) -> Result<KvPairs, StoreError> {
        let iter = match before {
            Some(upper) => self.tree.range(..upper.to_vec()),
            None => self.tree.iter(),
        };
        iter.rev()
            .take(limit)
            .map(|item| {
                let (k, v) = item?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }
    /// Iterates over every pair in key order, stopping early when `visit` returns false.
    pub fn for_each(&self, mut visit: impl FnMut(&[u8], &[u8]) -> bool) -> Result<(), StoreError> {
        for item in self.tree.iter() {
            let (k, v) = item?;
            if !visit(&k, &v) {
                break;
            }
        }
        Ok(())
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.tree.len()
    }
    /// True when the tree holds nothing.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
    /// Reads a JSON value.
    pub fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<T>, StoreError> {
        match self.get(key)? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt {
                        tree: self.name.as_str(),
                        reason: e.to_string(),
                    })
            }
        }
    }
    /// Writes a JSON value.
    pub fn put_json<T: Serialize>(
        &self,
        key: impl AsRef<[u8]>,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Io(e.to_string()))?;
        self.insert(key, bytes)?;
        Ok(())
    }
    /// Makes this tree's writes durable, on the calling thread (command-line tools, blocking
    /// tasks).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.idle.clear();
        self.tree.flush()?;
        Ok(())
    }
    /// Makes this tree's writes durable (see [`StoreDb::flush`] for why it is blocking).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.idle.clear();
        let tree = self.tree.clone();
        tokio::task::spawn_blocking(move || tree.flush())
            .await
            .map_err(|e| StoreError::Io(format!("flush task failed: {e}")))??;
        Ok(())
    }
}

/// The smallest key greater than every key starting with `prefix` (`None` when there is none).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The supervised owner of the store: answers timeline queries and flushes.
/// A restart gives a fresh actor over the same open database.
pub struct Store {
    db: StoreDb,
    timeline: KvTree,
}

impl Store {
    /// A store actor over an open database.
    pub fn new(db: StoreDb) -> Result<Self, StoreError> {
        let timeline = db.tree(TreeName::Timeline)?;
        Ok(Self { db, timeline })
    }
}

impl Actor for Store {
    type Context = Context<Self>;
}

impl Handler<Ping> for Store {
    type Result = Pong;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Pong {
        Pong
    }
}

/// Makes every write so far durable.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Flush;

impl Handler<Flush> for Store {
    type Result = ResponseFuture<Result<(), StoreError>>;
    fn handle(&mut self, _: Flush, _: &mut Context<Self>) -> Self::Result {
        let db = self.db.clone();
        Box::pin(async move { db.flush().await })
    }
}

#[cfg(any(test, feature = "test-hooks"))]
impl Handler<crate::supervisor::InjectPanic> for Store {
    type Result = ();
    fn handle(&mut self, msg: crate::supervisor::InjectPanic, _: &mut Context<Self>) {
        panic!("injected panic: {}", msg.0);
    }
}
