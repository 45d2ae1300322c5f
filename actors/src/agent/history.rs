//! Session history: the last `history_messages` messages of each session, in
//! [`Space::History`] of the storage seam, so that a restart continues the conversation.
//!
//! Owns: the stored form (one JSON array per session under `history/<session>`, and under
//! `turns/<session>` the keys of the last [`REMEMBERED_TURNS`] journaled turns appended, both
//! written in one batch) and trimming, which never leaves a `tool` message without the
//! assistant message that called it.
//! Must not: store system prompts (they are rebuilt for every turn) or order turns: the
//! caller runs at most one turn per session at a time (the agent's per-session queue), so a
//! read-modify-write of one session never races with another of the same session. A journaled
//! turn resumed after a crash appends its messages once: [`SessionHistory::append_turn`] skips a
//! turn key it has already appended.

use crate::provider::{Message, Role};
use crate::store::{Batch, Space, SpaceRef, State, StoreDb, StoreError};

/// How many appended turn keys a session remembers (for idempotent appends).
pub const REMEMBERED_TURNS: usize = 16;

/// Default bound on stored messages per session (`model.history_messages`).
pub const DEFAULT_HISTORY_MESSAGES: usize = 40;

/// Key prefix of a session's history.
const KEY_PREFIX: &str = "history/";
/// Key prefix of a session's appended turn keys.
const TURNS_PREFIX: &str = "turns/";

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
    /// [`Space::History`] of the storage seam.
    space: SpaceRef,
    /// At most this many messages are kept per session.
    max_messages: usize,
}

impl std::fmt::Debug for SessionHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHistory")
            .field("space", &self.space.space())
            .field("max_messages", &self.max_messages)
            .finish()
    }
}

impl SessionHistory {
    /// History over `db`'s `Sessions` tree, keeping at most `max_messages` (at least 1) per
    /// session.
    pub fn new(db: &StoreDb, max_messages: usize) -> Result<Self, HistoryError> {
        Ok(Self::over(db.state()?, max_messages))
    }

    /// History over the storage seam.
    pub fn over(state: State, max_messages: usize) -> Self {
        Self {
            space: SpaceRef::new(state, Space::History),
            max_messages: max_messages.max(1),
        }
    }

    /// The bound on stored messages per session.
    pub fn max_messages(&self) -> usize {
        self.max_messages
    }

    /// The stored messages of `session`, oldest first; empty for an unknown session.
    pub fn load(&self, session: &str) -> Result<Vec<Message>, HistoryError> {
        Ok(self
            .space
            .get_json::<Vec<Message>>(key(KEY_PREFIX, session))?
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
        self.append_turn(session, None, messages)
    }

    /// Like [`SessionHistory::append`] for the turn `turn`: when that turn's messages were
    /// appended before (a resumed turn), nothing changes. Not yet durable.
    pub fn append_turn(
        &self,
        session: &str,
        turn: Option<&str>,
        messages: &[Message],
    ) -> Result<Vec<Message>, HistoryError> {
        let mut turns: Vec<String> = self
            .space
            .get_json(key(TURNS_PREFIX, session))?
            .unwrap_or_default();
        if turn.is_some_and(|t| turns.iter().any(|seen| seen == t)) {
            return self.load(session);
        }
        let mut stored = self.load(session)?;
        stored.extend(messages.iter().filter(|m| m.role != Role::System).cloned());
        let stored = trim(stored, self.max_messages);
        let mut batch = Batch::default();
        batch.put(
            key(KEY_PREFIX, session),
            crate::store::seam::encode(&stored)?,
        );
        if let Some(turn) = turn {
            turns.push(turn.to_string());
            let excess = turns.len().saturating_sub(REMEMBERED_TURNS);
            turns.drain(..excess);
            batch.put(
                key(TURNS_PREFIX, session),
                crate::store::seam::encode(&turns)?,
            );
        }
        self.space.apply(batch)?;
        Ok(stored)
    }

    /// Forgets `session`.
    pub fn clear(&self, session: &str) -> Result<(), HistoryError> {
        let mut batch = Batch::default();
        batch.delete(key(KEY_PREFIX, session));
        batch.delete(key(TURNS_PREFIX, session));
        self.space.apply(batch)?;
        Ok(())
    }

    /// Makes every history write so far durable.
    pub async fn flush(&self) -> Result<(), HistoryError> {
        self.space.sync().await?;
        Ok(())
    }
}

fn key(prefix: &str, session: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + session.len());
    key.extend_from_slice(prefix.as_bytes());
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
