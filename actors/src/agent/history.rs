//! Session history: the last `history_messages` messages of each session, in
//! [`Space::History`] of the storage seam, so that a restart continues the conversation.
//!
//! Owns: the stored form and trimming, which never leaves a `tool` message without the
//! assistant message that called it. The stored form: one key per message,
//! `m/<session>/<seq>` (the session as [`encode_component`] writes it, so it holds no `/`;
//! `seq` as 16 hex digits, so key order is message order), and under `turns/<session>` the
//! keys of the last [`REMEMBERED_TURNS`] journaled turns appended, all written in one batch.
//! A turn writes its new messages and deletes the trimmed ones: the store is not handed the
//! whole history again every turn (issue 20: two 3-minute growth soaks measured 3,927 -> 2,799
//! and 3,427 -> 3,331 store bytes per message with this, BENCHMARKS.md; not yet settled by a
//! longer run). Stores written before hold one JSON array
//! per session under `history/<session>`: it is read as the oldest part of the history, and
//! the session's next append moves it to per-message keys in the same batch.
//! Must not: store system prompts (they are rebuilt for every turn) or order turns: the
//! caller runs at most one turn per session at a time (the agent's per-session queue), so a
//! read-modify-write of one session never races with another of the same session. A journaled
//! turn resumed after a crash appends its messages once: [`SessionHistory::append_turn`] skips a
//! turn key it has already appended.

use crate::channel::session::encode_component;
use crate::provider::{Message, Role};
use crate::store::{Batch, Space, SpaceRef, State, StoreDb, StoreError};

/// How many appended turn keys a session remembers (for idempotent appends).
pub const REMEMBERED_TURNS: usize = 16;

/// Default bound on stored messages per session (`model.history_messages`).
pub const DEFAULT_HISTORY_MESSAGES: usize = 40;

/// Key prefix of a session's history in stores written before per-message keys (one JSON
/// array per session).
const LEGACY_PREFIX: &str = "history/";
/// Key prefix of a session's messages (`m/<session>/<seq>`).
const MESSAGE_PREFIX: &str = "m/";
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
            .stored(session)?
            .into_iter()
            .map(|m| m.message)
            .collect())
    }

    /// The stored messages of `session` with their keys: the legacy array's first (no key),
    /// then the per-message keys in order.
    fn stored(&self, session: &str) -> Result<Vec<Stored>, HistoryError> {
        let mut stored: Vec<Stored> = self
            .space
            .get_json::<Vec<Message>>(key(LEGACY_PREFIX, session))?
            .unwrap_or_default()
            .into_iter()
            .map(|message| Stored { key: None, message })
            .collect();
        for (key, value) in self.space.scan_all(message_prefix(session))? {
            let message = crate::store::seam::decode(Space::History, &value)?;
            stored.push(Stored {
                key: Some(key),
                message,
            });
        }
        Ok(stored)
    }

    /// Appends `messages` to `session`, trims to the bound and returns what is now stored.
    /// Not yet durable: call [`SessionHistory::flush`] before acknowledging anything that
    /// depends on it (the store also flushes on its own shortly after a write).
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
        let mut stored = self.stored(session)?;
        // Only the legacy array's messages are read without a key.
        let legacy = stored.first().is_some_and(|m| m.key.is_none());
        let prefix = message_prefix(session);
        let mut next = stored
            .last()
            .and_then(|m| m.key.as_deref())
            .and_then(|k| seq_of(&prefix, k))
            .map_or(0, |seq| seq + 1);
        stored.extend(
            messages
                .iter()
                .filter(|m| m.role != Role::System)
                .map(|m| Stored {
                    key: None,
                    message: m.clone(),
                }),
        );
        let start = trim_start(&stored, self.max_messages, |m| &m.message);
        let mut batch = Batch::default();
        if legacy {
            batch.delete(key(LEGACY_PREFIX, session));
        }
        for dropped in &stored[..start] {
            if let Some(key) = &dropped.key {
                batch.delete(key);
            }
        }
        let kept: Vec<Message> = stored
            .drain(start..)
            .map(|m| {
                if m.key.is_none() {
                    let mut key = prefix.clone();
                    key.extend_from_slice(format!("{next:016x}").as_bytes());
                    next += 1;
                    crate::store::seam::encode(&m.message).map(|value| {
                        batch.put(key, value);
                        m.message
                    })
                } else {
                    Ok(m.message)
                }
            })
            .collect::<Result<_, _>>()?;
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
        Ok(kept)
    }

    /// Forgets `session`.
    pub fn clear(&self, session: &str) -> Result<(), HistoryError> {
        let mut batch = Batch::default();
        batch.delete(key(LEGACY_PREFIX, session));
        batch.delete(key(TURNS_PREFIX, session));
        for (key, _) in self.space.scan_all(message_prefix(session))? {
            batch.delete(key);
        }
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

/// One stored message: its key, or `None` for one of the legacy array or not yet written.
struct Stored {
    key: Option<Vec<u8>>,
    message: Message,
}

/// `m/<session>/`: the prefix of every message key of `session`.
fn message_prefix(session: &str) -> Vec<u8> {
    let mut prefix = key(MESSAGE_PREFIX, &encode_component(session));
    prefix.push(b'/');
    prefix
}

/// The sequence number of a message key under `prefix`.
fn seq_of(prefix: &[u8], key: &[u8]) -> Option<u64> {
    let digits = std::str::from_utf8(key.strip_prefix(prefix)?).ok()?;
    u64::from_str_radix(digits, 16).ok()
}

/// The newest suffix of `messages` of at most `max` messages that starts where a provider can
/// start reading: never on a `tool` message (its assistant `tool_calls` message would be cut
/// off). Because a suffix is kept, an assistant message that is kept keeps all its results.
pub fn trim(messages: Vec<Message>, max: usize) -> Vec<Message> {
    let start = trim_start(&messages, max, |m| m);
    if start == 0 {
        return messages;
    }
    messages.into_iter().skip(start).collect()
}

/// Where [`trim`]'s suffix starts in `items`.
fn trim_start<T>(items: &[T], max: usize, message: impl Fn(&T) -> &Message) -> usize {
    let mut start = items.len().saturating_sub(max);
    while start < items.len() && message(&items[start]).role == Role::Tool {
        start += 1;
    }
    start
}
