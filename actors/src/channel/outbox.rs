//! The durable outbox (DESIGN "Data flow" step 6): replies wait here until they are sent, with
//! retries on transient failures and a recorded reason on terminal ones.
//!
//! Owns, in the `channels` tree: `outbox/m/<id>` (the [`OutboxRecord`]) and
//! `outbox/due/<next attempt ms>/<id>` (the schedule), always changed together in one batch;
//! the retry schedule ([`Backoff`]); the HTTP classification ([`classify_http`]).
//! Must not: send anything (the binary's HTTP client does, then calls
//! [`Outbox::record_attempt`]), or flush (the caller does before acknowledging).
//!
//! Times are unix **milliseconds**, always passed in, so the schedule is tested without sleeping.
//! [`Outbox::due`] *leases* what it returns (the schedule entry moves [`LEASE_MS`] ahead), so a
//! reply whose sender crashed mid-attempt is tried again after the lease instead of being lost,
//! and two callers never take the same reply at once.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::{KvBatch, KvTree, StoreDb, StoreError, TreeName};

/// How long a reply returned by [`Outbox::due`] is reserved for its attempt.
pub const LEASE_MS: i64 = 60_000;
/// The longest `Retry-After` honoured; longer values are capped to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// One reply to send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundMessage {
    /// Recipient: the chat (bridges) or number (WhatsApp).
    pub to: String,
    /// The text (split by the sender as the channel requires).
    pub text: String,
    /// The inbound message this answers, for reply context.
    pub reply_to: Option<String>,
    /// The session it belongs to.
    pub session: Option<String>,
}

/// The result of one send attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    /// Delivered (2xx).
    Sent,
    /// Worth retrying (429, 5xx, 408, network errors), no earlier than `retry_after`.
    Transient {
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
        /// What went wrong (no secrets, no body text).
        reason: String,
    },
    /// Will never succeed (other 4xx, unexpected statuses).
    Terminal {
        /// The HTTP status, if there was one.
        status: Option<u16>,
        /// What went wrong.
        reason: String,
    },
}

/// Classifies an HTTP response: 2xx sent; 429, 408 and 5xx transient (with `Retry-After` in
/// delta-seconds; the HTTP-date form is ignored and the backoff applies); everything else
/// terminal.
pub fn classify_http(status: u16, retry_after_header: Option<&str>) -> AttemptResult {
    match status {
        200..=299 => AttemptResult::Sent,
        408 | 429 | 500..=599 => AttemptResult::Transient {
            retry_after: retry_after_header
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
            reason: format!("http status {status}"),
        },
        _ => AttemptResult::Terminal {
            status: Some(status),
            reason: format!("http status {status}"),
        },
    }
}

/// A network failure (connect, timeout, reset) is always transient.
pub fn classify_network_error(reason: &str) -> AttemptResult {
    AttemptResult::Transient {
        retry_after: None,
        reason: format!("network error: {reason}"),
    }
}

/// The retry schedule: exponential from `base_ms`, capped at `cap_ms`, with "equal jitter"
/// (half the delay fixed, half random), at most `max_attempts` attempts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// Delay after the first failure (before jitter), ms.
    pub base_ms: u64,
    /// Largest delay, ms.
    pub cap_ms: u64,
    /// Attempts before a reply is given up on as terminal.
    pub max_attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base_ms: 1_000,
            cap_ms: 300_000,
            max_attempts: 10,
        }
    }
}

impl Backoff {
    /// The delay after failed attempt number `attempt` (1-based), with `random` choosing the
    /// jitter: the result lies in `[d/2, d]` for `d = min(cap, base·2^(attempt-1))`.
    pub fn delay_ms(&self, attempt: u32, random: u64) -> u64 {
        let exp = attempt.saturating_sub(1).min(32);
        let full = self.base_ms.saturating_mul(1u64 << exp).min(self.cap_ms);
        let half = full / 2;
        full - half + random % (half + 1)
    }
}

/// Where a reply stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum OutboxState {
    /// Waiting for its next attempt.
    Queued,
    /// Delivered.
    Sent,
    /// Given up: a terminal response or too many attempts.
    Failed {
        /// The HTTP status of the last attempt, if any.
        status: Option<u16>,
        /// Why.
        reason: String,
    },
}

/// One stored reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRecord {
    /// Its id (strictly increasing).
    pub id: u64,
    /// The channel it goes out on.
    pub channel: String,
    /// The reply.
    pub message: OutboundMessage,
    /// Where it stands.
    pub state: OutboxState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (ms), while queued.
    pub next_attempt_at: i64,
    /// The last transient failure, if any.
    pub last_error: Option<String>,
    /// When it was enqueued (ms).
    pub created_at: i64,
}

/// What can go wrong in the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// No reply has this id.
    #[error("no outbox entry {0}")]
    UnknownId(u64),
    /// The reply was already sent or failed.
    #[error("outbox entry {0} is already finished")]
    Finished(u64),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The durable outbox of every channel.
#[derive(Clone)]
pub struct Outbox {
    /// For ids.
    db: StoreDb,
    /// The `channels` tree.
    tree: KvTree,
    /// The retry schedule.
    backoff: Backoff,
    /// Jitter source (the OS RNG; fixed in tests).
    random: fn() -> u64,
}

fn os_random() -> u64 {
    let mut bytes = [0u8; 8];
    // Jitter only spreads retries; without randomness, no jitter is still a valid schedule.
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

fn record_key(id: u64) -> String {
    format!("outbox/m/{id:020}")
}

fn due_key(at: i64, id: u64) -> String {
    format!("outbox/due/{:020}/{id:020}", at.max(0))
}

impl Outbox {
    /// The outbox over an open store.
    pub fn new(db: &StoreDb, backoff: Backoff) -> Result<Self, StoreError> {
        Ok(Self {
            db: db.clone(),
            tree: db.tree(TreeName::Channels)?,
            backoff,
            random: os_random,
        })
    }

    /// Replaces the jitter source (tests: a fixed value gives an exact schedule).
    pub fn with_random(mut self, random: fn() -> u64) -> Self {
        self.random = random;
        self
    }

    fn write(&self, record: &OutboxRecord, old_due: Option<i64>) -> Result<(), StoreError> {
        let mut batch = KvBatch::default();
        if let Some(at) = old_due {
            batch.remove(due_key(at, record.id));
        }
        if record.state == OutboxState::Queued {
            batch.insert(due_key(record.next_attempt_at, record.id), []);
        }
        batch.insert(
            record_key(record.id),
            serde_json::to_vec(record).map_err(|e| StoreError::Io(e.to_string()))?,
        );
        self.tree.apply(batch)
    }

    /// Stores a reply, due at once. The caller flushes. Returns its id.
    pub fn enqueue(
        &self,
        channel: &str,
        message: OutboundMessage,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let record = OutboxRecord {
            id: self.db.next_id()?,
            channel: channel.to_string(),
            message,
            state: OutboxState::Queued,
            attempts: 0,
            next_attempt_at: now_ms,
            last_error: None,
            created_at: now_ms,
        };
        self.write(&record, None)?;
        Ok(record.id)
    }

    /// A reply by id.
    pub fn get(&self, id: u64) -> Result<Option<OutboxRecord>, StoreError> {
        self.tree.get_json(record_key(id))
    }

    /// Up to `limit` replies due at `now_ms` (of `channel`, or of every channel), oldest
    /// schedule first, each leased for [`LEASE_MS`].
    pub fn due(
        &self,
        channel: Option<&str>,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let mut out = Vec::new();
        for (key, _) in self.tree.scan_prefix("outbox/due/")? {
            if out.len() >= limit {
                break;
            }
            let text = String::from_utf8_lossy(&key);
            let mut fields = text["outbox/due/".len()..].split('/');
            let (Some(Ok(at)), Some(Ok(id))) = (
                fields.next().map(str::parse::<i64>),
                fields.next().map(str::parse::<u64>),
            ) else {
                continue;
            };
            if at > now_ms {
                break;
            }
            let Some(mut record) = self.get(id)? else {
                self.tree.remove(&key)?;
                continue;
            };
            if channel.is_some_and(|c| c != record.channel) {
                continue;
            }
            record.next_attempt_at = now_ms.saturating_add(LEASE_MS);
            self.write(&record, Some(at))?;
            out.push(record);
        }
        Ok(out)
    }

    /// Records the result of an attempt on reply `id` at `now_ms` and returns the new state.
    pub fn record_attempt(
        &self,
        id: u64,
        result: AttemptResult,
        now_ms: i64,
    ) -> Result<OutboxRecord, OutboxError> {
        let mut record = self.get(id)?.ok_or(OutboxError::UnknownId(id))?;
        if record.state != OutboxState::Queued {
            return Err(OutboxError::Finished(id));
        }
        let old_due = record.next_attempt_at;
        record.attempts = record.attempts.saturating_add(1);
        match result {
            AttemptResult::Sent => record.state = OutboxState::Sent,
            AttemptResult::Terminal { status, reason } => {
                record.state = OutboxState::Failed { status, reason }
            }
            AttemptResult::Transient {
                retry_after,
                reason,
            } => {
                record.last_error = Some(reason.clone());
                if record.attempts >= self.backoff.max_attempts {
                    record.state = OutboxState::Failed {
                        status: None,
                        reason: format!("gave up after {} attempts: {reason}", record.attempts),
                    };
                } else {
                    let backoff = self.backoff.delay_ms(record.attempts, (self.random)());
                    let server = retry_after
                        .map(|d| d.min(MAX_RETRY_AFTER).as_millis() as u64)
                        .unwrap_or(0);
                    let delay = i64::try_from(backoff.max(server)).unwrap_or(i64::MAX);
                    record.next_attempt_at = now_ms.saturating_add(delay);
                }
            }
        }
        self.write(&record, Some(old_due))?;
        Ok(record)
    }

    /// Every reply of `channel` that is not yet sent or failed, by id.
    pub fn queued(&self, channel: &str) -> Result<Vec<OutboxRecord>, StoreError> {
        let mut out = Vec::new();
        for (_, value) in self.tree.scan_prefix("outbox/m/")? {
            if let Ok(record) = serde_json::from_slice::<OutboxRecord>(&value) {
                if record.channel == channel && record.state == OutboxState::Queued {
                    out.push(record);
                }
            }
        }
        Ok(out)
    }
}
