//! Session history: the last `history_messages` messages of each session, in the store's
//! `Sessions` tree, so that a restart continues the conversation.
//!
//! Owns: the stored form (one JSON array per session under `history/<session>`) and trimming,
//! which never leaves a `tool` message without the assistant message that called it.
//! Must not: store system prompts (they are rebuilt for every turn) or order turns: the
//! caller runs at most one turn per session at a time (the agent's per-session queue), so a
//! read-modify-write of one session never races with another of the same session.

use crate::provider::{Message, Role};
use crate::store::{KvTree, StoreDb, StoreError, TreeName};

/// Default bound on stored messages per session (`model.history_messages`).
pub const DEFAULT_HISTORY_MESSAGES: usize = 40;

/// Key prefix of a session's history in the `Sessions` tree.
const KEY_PREFIX: &str = "history/";

/// What can go wrong reading or writing history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The store failed or holds a value that is not a history.
    #[error("session history is unavailable: {0}")]
    Store(#[from] StoreError),
}

/// The bounded, persisted history of every session. Cheap to clone.
#[derive(Clone)]
pub struct SessionHistory {
    /// The `Sessions` tree.
    tree: KvTree,
    /// At most this many messages are kept per session.
    max_messages: usize,
}

impl std::fmt::Debug for SessionHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHistory")
            .field("tree", &self.tree.name())
            .field("max_messages", &self.max_messages)
            .finish()
    }
}

impl SessionHistory {
    /// History over `db`'s `Sessions` tree, keeping at most `max_messages` (at least 1) per
    /// session.
    pub fn new(db: &StoreDb, max_messages: usize) -> Result<Self, HistoryError> {
        Ok(Self {
            tree: db.tree(TreeName::Sessions)?,
            max_messages: max_messages.max(1),
        })
    }

    /// The bound on stored messages per session.
    pub fn max_messages(&self) -> usize {
        self.max_messages
    }

    /// The stored messages of `session`, oldest first; empty for an unknown session.
    pub fn load(&self, session: &str) -> Result<Vec<Message>, HistoryError> {
        Ok(self
            .tree
            .get_json::<Vec<Message>>(key(session))?
            .unwrap_or_default())
    }

    /// Appends `messages` to `session`, trims to the bound and returns what is now stored.
    /// Not yet durable: call [`SessionHistory::flush`] before acknowledging anything that
    /// depends on it (sled also flushes on its own every 500 ms).
    pub fn append(
        &self,
        session: &str,
        messages: &[Message],
    ) -> Result<Vec<Message>, HistoryError> {
        let mut stored = self.load(session)?;
        stored.extend(messages.iter().filter(|m| m.role != Role::System).cloned());
        let stored = trim(stored, self.max_messages);
        self.tree.put_json(key(session), &stored)?;
        Ok(stored)
    }

    /// Forgets `session`.
    pub fn clear(&self, session: &str) -> Result<(), HistoryError> {
        self.tree.remove(key(session))?;
        Ok(())
    }

    /// Makes every history write so far durable.
    pub async fn flush(&self) -> Result<(), HistoryError> {
        self.tree.flush().await?;
        Ok(())
    }
}

fn key(session: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(KEY_PREFIX.len() + session.len());
    key.extend_from_slice(KEY_PREFIX.as_bytes());
    key.extend_from_slice(session.as_bytes());
    key
}

/// The newest suffix of `messages` of at most `max` messages that starts where a provider can
/// start reading: never on a `tool` message (its assistant `tool_calls` message would be cut
/// off). Because a suffix is kept, an assistant message that is kept keeps all its results.
pub fn trim(messages: Vec<Message>, max: usize) -> Vec<Message> {
    let mut start = messages.len().saturating_sub(max);
    while start < messages.len() && messages[start].role == Role::Tool {
        start += 1;
    }
    if start == 0 {
        return messages;
    }
    messages.into_iter().skip(start).collect()
}
