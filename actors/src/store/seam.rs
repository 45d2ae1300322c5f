//! The storage seam: the one narrow interface behind which the channel inbox, the
//! de-duplication keys, the turn journal, session history and the outbox keep their state.
//!
//! Owns: the operations every stateful actor needs — get, put, delete, compare-and-swap on one
//! key, an atomic batch within one [`Space`], scans in key order by prefix, fresh ids, and an
//! explicit durability barrier ([`StateStore::sync`]) — and their sled implementation
//! ([`SledState`]).
//! Must not: know a caller's key layout or value format, or let a sled type through. A later
//! fleet mode puts the same trait on NATS JetStream (one key-value bucket per space, an atomic
//! batch publish for [`StateStore::apply`], the stream sequence for [`StateStore::next_id`],
//! and a no-op `sync` because every write is acknowledged by the stream) without touching an
//! actor.
//!
//! Durability is explicit: a write is visible to readers at once and durable once a later
//! [`StateStore::sync`] has completed. Callers sync before the externally visible action that
//! depends on a write (an acknowledgement, a model call, a tool run, a send); concurrent syncs
//! share one fsync (group commit).

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{KvPairs, KvTree, StoreDb, StoreError, TreeName};

/// The independent key spaces behind the seam. Keys in different spaces never meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Space {
    /// Inbound messages of every channel and their de-duplication keys.
    Inbox,
    /// Replies of every channel, their schedule and delivery state.
    Outbox,
    /// Turn journals: each turn's progress, step by step.
    Journal,
    /// Session history.
    History,
}

impl Space {
    /// Every space (for size reports and pruning).
    pub const ALL: [Space; 4] = [Space::Inbox, Space::Outbox, Space::Journal, Space::History];

    /// The space's name (a JetStream bucket name later).
    pub fn as_str(self) -> &'static str {
        match self {
            Space::Inbox => "inbox",
            Space::Outbox => "outbox",
            Space::Journal => "journal",
            Space::History => "history",
        }
    }
}

/// One write of a [`Batch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Set a key.
    Put(Vec<u8>, Vec<u8>),
    /// Remove a key.
    Delete(Vec<u8>),
}

/// Writes applied atomically to one space: all or none after a crash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// In order.
    pub writes: Vec<Write>,
}

impl Batch {
    /// Adds a put.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.writes
            .push(Write::Put(key.as_ref().to_vec(), value.as_ref().to_vec()));
    }
    /// Adds a removal.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) {
        self.writes.push(Write::Delete(key.as_ref().to_vec()));
    }
    /// True when it holds no write.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// The answer of [`StateStore::compare_and_swap`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Swap {
    /// The key held the expected value and now holds the new one.
    Done,
    /// The key held something else (returned); nothing was written.
    Conflict(Option<Vec<u8>>),
}

/// The operations behind the seam. Every call is one small keyed operation.
pub trait StateStore: Send + Sync + 'static {
    /// The value under `key`.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Sets `key` to `value`.
    fn put(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key` (nothing happens when it is absent).
    fn delete(&self, space: Space, key: &[u8]) -> Result<(), StoreError>;
    /// Sets `key` to `new` (`None` removes it) only if it holds `expected` (`None`: absent).
    fn compare_and_swap(
        &self,
        space: Space,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<Swap, StoreError>;
    /// Applies `batch` atomically.
    fn apply(&self, space: Space, batch: Batch) -> Result<(), StoreError>;
    /// Up to `limit` pairs whose key starts with `prefix` and is strictly greater than `after`
    /// (from the first when `None`), in key order.
    fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<KvPairs, StoreError>;
    /// Up to `limit` pairs whose key starts with `prefix` and is strictly smaller than
    /// `before` (from the last when `None`), in reverse key order.
    fn scan_back(
        &self,
        space: Space,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<KvPairs, StoreError>;
    /// A fresh id, strictly greater than every id handed out before (across restarts).
    fn next_id(&self) -> Result<u64, StoreError>;
    /// Completes once every write made before the call is durable.
    fn sync(&self) -> BoxFuture<'static, Result<(), StoreError>>;
    /// Bytes the store occupies (on disk for sled), for `status`.
    fn size_bytes(&self) -> Result<u64, StoreError>;
}

/// A shared handle on the state behind the seam.
pub type State = Arc<dyn StateStore>;

/// The sled implementation: each space is a named tree of the embedded store (the inbox and
/// the outbox share the `channels` tree under their historical key prefixes, so stores written
/// before the seam read unchanged).
#[derive(Clone)]
pub struct SledState {
    db: StoreDb,
    channels: KvTree,
    journal: KvTree,
    sessions: KvTree,
}

impl SledState {
    /// The seam over an open store.
    pub fn new(db: &StoreDb) -> Result<Self, StoreError> {
        Ok(Self {
            db: db.clone(),
            channels: db.tree(TreeName::Channels)?,
            journal: db.tree(TreeName::Journal)?,
            sessions: db.tree(TreeName::Sessions)?,
        })
    }

    fn tree(&self, space: Space) -> &KvTree {
        match space {
            Space::Inbox | Space::Outbox => &self.channels,
            Space::Journal => &self.journal,
            Space::History => &self.sessions,
        }
    }
}

impl StateStore for SledState {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.tree(space).get(key)
    }

    fn put(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.tree(space).insert(key, value).map(|_| ())
    }

    fn delete(&self, space: Space, key: &[u8]) -> Result<(), StoreError> {
        self.tree(space).remove(key).map(|_| ())
    }

    fn compare_and_swap(
        &self,
        space: Space,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<Swap, StoreError> {
        self.tree(space).compare_and_swap(key, expected, new)
    }

    fn apply(&self, space: Space, batch: Batch) -> Result<(), StoreError> {
        let mut kv = super::KvBatch::default();
        for write in batch.writes {
            match write {
                Write::Put(k, v) => kv.insert(k, v),
                Write::Delete(k) => kv.remove(k),
            }
        }
        self.tree(space).apply(kv)
    }

    fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<KvPairs, StoreError> {
        self.tree(space).scan_after(prefix, after, limit)
    }

    fn scan_back(
        &self,
        space: Space,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<KvPairs, StoreError> {
        self.tree(space).scan_before(prefix, before, limit)
    }

    fn next_id(&self) -> Result<u64, StoreError> {
        self.db.next_id()
    }

    fn sync(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        let db = self.db.clone();
        Box::pin(async move { db.flush().await })
    }

    fn size_bytes(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk()
    }
}

/// One space of a [`State`], with JSON helpers: what the modules behind the seam hold.
#[derive(Clone)]
pub struct SpaceRef {
    state: State,
    space: Space,
}

impl std::fmt::Debug for SpaceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpaceRef")
            .field("space", &self.space)
            .finish()
    }
}

impl SpaceRef {
    /// `space` of `state`.
    pub fn new(state: State, space: Space) -> Self {
        Self { state, space }
    }
    /// The space.
    pub fn space(&self) -> Space {
        self.space
    }
    /// The whole state (for ids and syncs).
    pub fn state(&self) -> &State {
        &self.state
    }
    /// See [`StateStore::get`].
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StoreError> {
        self.state.get(self.space, key.as_ref())
    }
    /// See [`StateStore::put`].
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), StoreError> {
        self.state.put(self.space, key.as_ref(), value.as_ref())
    }
    /// See [`StateStore::delete`].
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<(), StoreError> {
        self.state.delete(self.space, key.as_ref())
    }
    /// See [`StateStore::compare_and_swap`].
    pub fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<Swap, StoreError> {
        self.state
            .compare_and_swap(self.space, key.as_ref(), expected, new)
    }
    /// See [`StateStore::apply`].
    pub fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.state.apply(self.space, batch)
    }
    /// See [`StateStore::scan`].
    pub fn scan(
        &self,
        prefix: impl AsRef<[u8]>,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<KvPairs, StoreError> {
        self.state.scan(self.space, prefix.as_ref(), after, limit)
    }
    /// Every pair under `prefix`, in key order (for small prefixes: one turn, one index).
    pub fn scan_all(&self, prefix: impl AsRef<[u8]>) -> Result<KvPairs, StoreError> {
        self.state
            .scan(self.space, prefix.as_ref(), None, usize::MAX)
    }
    /// See [`StateStore::scan_back`].
    pub fn scan_back(
        &self,
        prefix: impl AsRef<[u8]>,
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<KvPairs, StoreError> {
        self.state
            .scan_back(self.space, prefix.as_ref(), before, limit)
    }
    /// A JSON value.
    pub fn get_json<T: for<'de> serde::Deserialize<'de>>(
        &self,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<T>, StoreError> {
        match self.get(key)? {
            None => Ok(None),
            Some(bytes) => decode(self.space, &bytes).map(Some),
        }
    }
    /// Writes a JSON value.
    pub fn put_json<T: serde::Serialize>(
        &self,
        key: impl AsRef<[u8]>,
        value: &T,
    ) -> Result<(), StoreError> {
        self.put(key, encode(value)?)
    }
    /// See [`StateStore::next_id`].
    pub fn next_id(&self) -> Result<u64, StoreError> {
        self.state.next_id()
    }
    /// See [`StateStore::sync`].
    pub fn sync(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        self.state.sync()
    }
}

/// JSON bytes of a value (the encoding every module behind the seam uses).
pub fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Io(e.to_string()))
}

/// Decodes JSON bytes read from `space`.
pub fn decode<T: for<'de> serde::Deserialize<'de>>(
    space: Space,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree: space.as_str(),
        reason: e.to_string(),
    })
}
