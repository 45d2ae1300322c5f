//! The turn journal: every turn's progress, step by step, so that a turn interrupted by a
//! crash continues where it stopped instead of asking the model again or running a tool twice.
//!
//! Owns, in [`Space::Journal`] of the storage seam:
//! - `h/<turn key>`: the [`Header`] (session, a hash of the user's text, running or done with
//!   the reply);
//! - `s/<turn key>/<n>`: step `n` ([`Step`]: a model answer, a tool call started, a tool
//!   result), kept while the turn runs (removed when it finishes: the header keeps the reply);
//! - `t/<created ms>/<turn key>`: the time index the pruner walks.
//!
//! The turn key is `channel + message id` for channel messages and `api + principal +
//! Idempotency-Key` for `POST /chat`; a turn without a key (a `/chat` request without the
//! header) is not journaled.
//! Must not: sync on its own (the turn loop syncs before each externally visible action: the
//! model call, the tool run, the reply), or store a secret (tool results are the tool's output
//! as the model saw it, never the child's environment).

use serde::{Deserialize, Serialize};

use crate::channel::session::encode_component;
use crate::provider::{Message, Usage};
use crate::store::{Batch, Space, SpaceRef, State, StoreError};

/// What a turn recorded, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// The model answered (text, tool calls, or both) with this usage.
    Model {
        /// The assistant message as the model sent it.
        message: Message,
        /// Its tokens.
        usage: Usage,
    },
    /// A tool call was handed to the executor (recorded durably before it was).
    ToolStarted {
        /// The model's call id.
        call_id: String,
        /// The tool's name.
        tool: String,
    },
    /// A tool call's result as the model sees it.
    ToolResult {
        /// The model's call id.
        call_id: String,
        /// The result text.
        content: String,
        /// True when the call was interrupted by a restart and not run again.
        #[serde(default)]
        interrupted: bool,
        /// Wall time the call took (0 when interrupted, and in journals written before the
        /// turn's tool time was bounded): a resumed turn counts it against the bound.
        #[serde(default)]
        elapsed_ms: u64,
    },
    /// A tool call was refused by a bound of the turn and not run (the refusal was audited
    /// before this was written).
    ToolRefused {
        /// The model's call id.
        call_id: String,
        /// The result text the model got.
        content: String,
    },
}

/// Where a journaled turn stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TurnState {
    /// Started, not finished.
    Running,
    /// Finished with this reply.
    Done {
        /// The reply text.
        reply: String,
        /// Tokens of the whole turn.
        usage: Usage,
    },
}

/// The header of one journaled turn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The session the turn belongs to.
    pub session: String,
    /// The channel (`api` for `/chat`).
    pub channel: String,
    /// BLAKE3 of the user's text (hex): a key reused for another text is refused.
    pub text_hash: String,
    /// When the turn was first started (unix ms).
    pub created_at: i64,
    /// Running or done.
    #[serde(flatten)]
    pub state: TurnState,
}

/// What [`TurnJournal::begin`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resume {
    /// Nothing: a new turn (its header is written).
    Fresh,
    /// An interrupted run: its steps, in order.
    Partial(Vec<Step>),
    /// A finished turn: its reply and usage (nothing runs again).
    Done {
        /// The reply.
        reply: String,
        /// Its tokens.
        usage: Usage,
    },
}

/// Why a journal operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The turn key was used before for another message text or session.
    #[error("the idempotency key was already used for another message")]
    KeyReused,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A turn's key in the journal (already encoded, opaque): `m:<channel>:<message id>` or
/// `a:<principal>:<idempotency key>`, each component percent-encoded, so no two turns share one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TurnKey(String);

impl TurnKey {
    /// The key of the turn answering `message_id` on `channel`.
    pub fn message(channel: &str, message_id: &str) -> Self {
        Self(format!(
            "m:{}:{}",
            encode_component(channel),
            encode_component(message_id)
        ))
    }

    /// The key of a `/chat` turn of `principal` with the client's `Idempotency-Key`.
    pub fn api(principal: &str, idempotency_key: &str) -> Self {
        Self(format!(
            "a:{}:{}",
            encode_component(principal),
            encode_component(idempotency_key)
        ))
    }

    /// The encoded key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn header_key(key: &TurnKey) -> String {
    format!("h/{}", key.0)
}

fn step_prefix(key: &TurnKey) -> String {
    format!("s/{}/", key.0)
}

fn step_key(key: &TurnKey, n: usize) -> String {
    format!("s/{}/{n:06}", key.0)
}

fn index_key(created_at: i64, key: &TurnKey) -> String {
    format!("t/{:020}/{}", created_at.max(0), key.0)
}

/// The hash of a turn's user text.
fn text_hash(text: &str) -> String {
    blake3::hash(text.as_bytes()).to_hex().to_string()
}

/// The journal of every turn. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TurnJournal {
    space: SpaceRef,
}

impl TurnJournal {
    /// The journal over the storage seam.
    pub fn new(state: State) -> Self {
        Self {
            space: SpaceRef::new(state, Space::Journal),
        }
    }

    /// Opens the turn `key`: a new turn gets its header (not yet durable), an interrupted one
    /// its steps, a finished one its reply. `text` and `session` must be those the key was first
    /// used with (so two runs of one key always share a session, and with it the agent's
    /// per-session queue: they never run at the same time).
    pub fn begin(
        &self,
        key: &TurnKey,
        session: &str,
        channel: &str,
        text: &str,
        now_ms: i64,
    ) -> Result<Resume, JournalError> {
        let hash = text_hash(text);
        if let Some(header) = self.space.get_json::<Header>(header_key(key))? {
            if header.text_hash != hash || header.session != session {
                return Err(JournalError::KeyReused);
            }
            return Ok(match header.state {
                TurnState::Done { reply, usage } => Resume::Done { reply, usage },
                TurnState::Running => Resume::Partial(self.steps(key)?),
            });
        }
        let header = Header {
            session: session.to_string(),
            channel: channel.to_string(),
            text_hash: hash,
            created_at: now_ms,
            state: TurnState::Running,
        };
        let mut batch = Batch::default();
        batch.put(header_key(key), crate::store::seam::encode(&header)?);
        batch.put(index_key(now_ms, key), []);
        self.space.apply(batch)?;
        Ok(Resume::Fresh)
    }

    /// The steps of `key`, in order.
    pub fn steps(&self, key: &TurnKey) -> Result<Vec<Step>, StoreError> {
        self.space
            .scan_all(step_prefix(key))?
            .iter()
            .map(|(_, v)| crate::store::seam::decode(Space::Journal, v))
            .collect()
    }

    /// The header of `key`, if the turn is journaled.
    pub fn header(&self, key: &TurnKey) -> Result<Option<Header>, StoreError> {
        self.space.get_json(header_key(key))
    }

    /// Writes step `n` of `key` (not yet durable).
    pub fn record(&self, key: &TurnKey, n: usize, step: &Step) -> Result<(), StoreError> {
        self.space.put_json(step_key(key, n), step)
    }

    /// Marks `key` finished with `reply` (not yet durable) and drops its steps in the same
    /// atomic batch: a finished turn answers from its header and never reads them, and the
    /// last model step would otherwise keep the reply a second time (with every tool result).
    pub fn finish(&self, key: &TurnKey, reply: &str, usage: Usage) -> Result<(), StoreError> {
        let Some(mut header) = self.header(key)? else {
            return Ok(());
        };
        header.state = TurnState::Done {
            reply: reply.to_string(),
            usage,
        };
        let mut batch = Batch::default();
        for (step, _) in self.space.scan_all(step_prefix(key))? {
            batch.delete(step);
        }
        batch.put(header_key(key), crate::store::seam::encode(&header)?);
        self.space.apply(batch)
    }

    /// Makes every journal write so far durable.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.space.sync().await
    }

    /// One chunk of a pruning pass: looks at up to `limit` turns after `cursor`, oldest first,
    /// and removes those first started before `cutoff_ms` (header, steps and index entry), in
    /// one batch. Returns how many turns were removed and whether older ones may remain.
    pub fn prune(
        &self,
        cutoff_ms: i64,
        cursor: &mut Option<Vec<u8>>,
        limit: usize,
    ) -> Result<(usize, bool), StoreError> {
        let page = self.space.scan("t/", cursor.as_deref(), limit.max(1))?;
        let mut more = page.len() >= limit.max(1);
        let mut batch = Batch::default();
        let mut removed = 0;
        for (index, _) in &page {
            let text = String::from_utf8_lossy(index);
            let parsed = text
                .strip_prefix("t/")
                .and_then(|rest| rest.split_once('/'))
                .map(|(at, key)| (at.parse::<i64>().ok(), key.to_string()));
            if let Some((Some(at), _)) = &parsed {
                if *at >= cutoff_ms {
                    more = false;
                    break;
                }
            }
            *cursor = Some(index.clone());
            batch.delete(index.clone());
            let Some((_, key)) = parsed else { continue };
            let key = TurnKey(key);
            for (step, _) in self.space.scan_all(step_prefix(&key))? {
                batch.delete(step);
            }
            batch.delete(header_key(&key));
            removed += 1;
        }
        self.space.apply(batch)?;
        if !more {
            *cursor = None;
        }
        Ok((removed, more))
    }

    /// When the oldest journaled turn kept was started (unix ms).
    pub fn oldest_created_at(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.space.scan("t/", None, 1)?.first().and_then(|(k, _)| {
            std::str::from_utf8(k)
                .ok()?
                .strip_prefix("t/")?
                .split('/')
                .next()?
                .parse()
                .ok()
        }))
    }
}

#[cfg(test)]
mod tests;
