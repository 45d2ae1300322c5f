//! The durable outbox (DESIGN "Data flow" step 6): replies wait here until they are delivered,
//! every send attempt is recorded *before* it is made, and the provider's delivery receipts
//! move a reply forward.
//!
//! Owns, in [`Space::Outbox`] of the storage seam: `outbox/m/<id>` (the [`OutboxRecord`]),
//! `outbox/due/<next attempt ms>/<id>` (the schedule) and `outbox/r/<channel>/<message id>`
//! (the one reply per inbound message), always changed together in one batch;
//! `outbox/w/<channel>/<provider id>` → id and `outbox/wi/<id>/<part>` → provider id (the ids
//! the provider gave the parts we sent, from its send answer or its receipts: a user's reply
//! to one of our messages names that id, and the channel quotes our text); the delivery
//! state machine; the retry schedule ([`Backoff`]) and the HTTP classification
//! ([`classify_http`]).
//! Must not: send anything (the dispatcher does, between [`Outbox::take_due`] and
//! [`Outbox::record_attempt`]), or sync (the caller syncs before the externally visible action:
//! the answer to an enqueue, the send itself).
//!
//! States: `queued` → `sending` (attempt n, recorded and synced before the send) → `sent`
//! (the provider accepted it) → `delivered` → `read`; `failed` (terminal answer, too many
//! attempts, or the provider's failure receipt, with its error code). A transient failure goes
//! back to `queued` with backoff. States only move forward; a receipt never moves a reply back.
//!
//! A reply found `sending` when it falls due again (its attempt's answer was never recorded:
//! the process died, or the answer is overdue) has waited the channel's `resend_after` since the
//! attempt started — time for a delivery receipt carrying its id to arrive — and is sent again
//! as a new attempt. Every send carries the reply's id ([`reply_tag`]): WhatsApp echoes it in
//! its status webhooks, bridges de-duplicate on it (`Idempotency-Key`).
//!
//! Times are unix **milliseconds**, always passed in, so the schedule is tested without sleeping.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::session::encode_component;
use crate::store::{Batch, Space, SpaceRef, State, StoreDb, StoreError};

mod retention;
mod schedule;

pub use retention::OutboxPruned;
pub use schedule::{classify_http, classify_network_error, AttemptResult, Backoff};

/// The default wait for a receipt before a reply found `sending` is sent again.
pub const DEFAULT_RESEND_AFTER: Duration = Duration::from_secs(30);
/// The longest `Retry-After` honoured; longer values are capped to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// One reply to send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundMessage {
    /// Recipient: the chat (bridges) or number (WhatsApp).
    pub to: String,
    /// The text (split by the sender as the channel requires).
    pub text: String,
    /// The inbound message this answers: reply context, and the key of "one reply per
    /// inbound message".
    pub reply_to: Option<String>,
    /// The session it belongs to.
    pub session: Option<String>,
}

/// Where a reply stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum OutboxState {
    /// Waiting for its next attempt.
    Queued,
    /// An attempt was recorded and may be under way (or was cut short by a crash).
    Sending,
    /// The provider accepted every part.
    Sent,
    /// The provider reports it delivered.
    Delivered,
    /// The provider reports it read.
    Read,
    /// Given up: a terminal answer, too many attempts, or a failure receipt.
    Failed {
        /// The HTTP status of the last attempt, if any.
        status: Option<u16>,
        /// The provider's error code, if it gave one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<i64>,
        /// Why.
        reason: String,
    },
}

impl OutboxState {
    /// The state's wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            OutboxState::Queued => "queued",
            OutboxState::Sending => "sending",
            OutboxState::Sent => "sent",
            OutboxState::Delivered => "delivered",
            OutboxState::Read => "read",
            OutboxState::Failed { .. } => "failed",
        }
    }

    /// Whether nothing more will be sent for it.
    pub fn is_finished(&self) -> bool {
        !matches!(self, OutboxState::Queued | OutboxState::Sending)
    }

    /// Order of the delivery states (a state never moves to a lower rank).
    fn rank(&self) -> u8 {
        match self {
            OutboxState::Queued | OutboxState::Sending => 0,
            OutboxState::Sent => 1,
            OutboxState::Delivered => 2,
            OutboxState::Read => 3,
            OutboxState::Failed { .. } => 4,
        }
    }
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
    /// Attempts started so far (the current one included while `sending`).
    pub attempts: u32,
    /// When the next attempt is due (ms), while queued or sending.
    pub next_attempt_at: i64,
    /// The last transient failure, if any.
    pub last_error: Option<String>,
    /// When it was enqueued (ms).
    pub created_at: i64,
    /// When it last changed (ms).
    #[serde(default)]
    pub updated_at: i64,
    /// How many parts the channel sends it in (WhatsApp splits long text).
    #[serde(default = "one")]
    pub parts: u32,
    /// How many leading parts the provider accepted (an attempt resumes after them).
    #[serde(default)]
    pub parts_accepted: u32,
}

fn one() -> u32 {
    1
}

/// The answer of [`Outbox::enqueue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored under this id.
    New(u64),
    /// The inbound message already has a reply (this id); nothing was stored.
    Duplicate(u64),
}

impl Enqueued {
    /// The reply's id, new or earlier.
    pub fn id(self) -> u64 {
        match self {
            Enqueued::New(id) | Enqueued::Duplicate(id) => id,
        }
    }
}

/// A delivery receipt from the provider (WhatsApp `statuses[]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Receipt {
    /// The provider sent the part.
    Sent,
    /// The part reached the recipient's device.
    Delivered,
    /// The recipient read it.
    Read,
    /// The provider could not deliver it.
    Failed {
        /// The provider's error code.
        code: Option<i64>,
        /// Its title (kept short).
        title: Option<String>,
    },
}

/// A planned change of one record: what it was and what it becomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The record as read.
    pub before: OutboxRecord,
    /// The record as it will be written.
    pub after: OutboxRecord,
}

impl Transition {
    /// Whether this change gives the reply up (to be audited before it is written).
    pub fn fails(&self) -> bool {
        matches!(self.after.state, OutboxState::Failed { .. })
            && !matches!(self.before.state, OutboxState::Failed { .. })
    }
}

/// What can go wrong in the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// No reply has this id.
    #[error("no outbox entry {0}")]
    UnknownId(u64),
    /// The reply was already finished, or the attempt was superseded by a newer one.
    #[error("outbox entry {0} is already finished")]
    Finished(u64),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The durable outbox of every channel.
#[derive(Clone)]
pub struct Outbox {
    /// [`Space::Outbox`] of the storage seam.
    space: SpaceRef,
    /// The retry schedule.
    backoff: Backoff,
    /// Jitter source (the OS RNG; fixed in tests).
    random: fn() -> u64,
}

fn record_key(id: u64) -> String {
    format!("outbox/m/{id:020}")
}

fn due_key(at: i64, id: u64) -> String {
    format!("outbox/due/{:020}/{id:020}", at.max(0))
}

fn reply_key(channel: &str, message_id: &str) -> String {
    format!(
        "outbox/r/{}/{}",
        encode_component(channel),
        encode_component(message_id)
    )
}

/// Longest provider message id kept (Meta's `wamid…` ids are about 60 characters).
const MAX_PROVIDER_ID: usize = 256;

fn sent_key(channel: &str, provider_id: &str) -> String {
    format!(
        "outbox/w/{}/{}",
        encode_component(channel),
        encode_component(provider_id)
    )
}

fn sent_part_prefix(id: u64) -> String {
    format!("outbox/wi/{id:020}/")
}

fn sent_part_key(id: u64, part: u32) -> String {
    format!("{}{part:010}", sent_part_prefix(id))
}

/// The id a reply carries on every send: `kafclaw-<id>` (the bridge `Idempotency-Key`,
/// WhatsApp's `biz_opaque_callback_data` of the first part).
pub fn reply_id(id: u64) -> String {
    format!("kafclaw-{id}")
}

/// The tag of part `part` of reply `id`: [`reply_id`] for the first part, `kafclaw-<id>.<part>`
/// for the others.
pub fn reply_tag(id: u64, part: u32) -> String {
    if part == 0 {
        reply_id(id)
    } else {
        format!("kafclaw-{id}.{part}")
    }
}

/// Reply id and part of a tag made by [`reply_tag`]; `None` for anything else.
pub fn parse_reply_tag(tag: &str) -> Option<(u64, u32)> {
    let rest = tag.strip_prefix("kafclaw-")?;
    let (id, part) = match rest.split_once('.') {
        Some((id, part)) => (id, part),
        None => (rest, "0"),
    };
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(id) || !digits(part) || (part.len() > 1 && part.starts_with('0')) {
        return None;
    }
    Some((id.parse().ok()?, part.parse().ok()?))
}

impl Outbox {
    /// The outbox over an open store.
    pub fn new(db: &StoreDb, backoff: Backoff) -> Result<Self, StoreError> {
        Ok(Self::over(db.state()?, backoff))
    }

    /// The outbox over the storage seam.
    pub fn over(state: State, backoff: Backoff) -> Self {
        Self {
            space: SpaceRef::new(state, Space::Outbox),
            backoff,
            random: crate::backoff::os_random,
        }
    }

    /// Replaces the jitter source (tests: a fixed value gives an exact schedule).
    pub fn with_random(mut self, random: fn() -> u64) -> Self {
        self.random = random;
        self
    }

    /// Makes every outbox write so far durable (shared with concurrent callers).
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.space.sync().await
    }

    /// Writes `record`, moving its schedule entry from `old_due` (one batch).
    fn write(&self, record: &OutboxRecord, old_due: Option<i64>) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        if let Some(at) = old_due {
            batch.delete(due_key(at, record.id));
        }
        if !record.state.is_finished() {
            batch.put(due_key(record.next_attempt_at, record.id), []);
        }
        batch.put(record_key(record.id), crate::store::seam::encode(record)?);
        self.space.apply(batch)
    }

    /// Stores a reply in `parts` parts, due at once, unless the inbound message it answers
    /// already has one. The caller syncs.
    pub fn enqueue(
        &self,
        channel: &str,
        message: OutboundMessage,
        parts: u32,
        now_ms: i64,
    ) -> Result<Enqueued, StoreError> {
        let answered = message.reply_to.as_deref().map(|m| reply_key(channel, m));
        if let Some(key) = &answered {
            if let Some(id) = self.space.get(key)?.and_then(|v| decode_id(&v)) {
                return Ok(Enqueued::Duplicate(id));
            }
        }
        let record = OutboxRecord {
            id: self.space.next_id()?,
            channel: channel.to_string(),
            message,
            state: OutboxState::Queued,
            attempts: 0,
            next_attempt_at: now_ms,
            last_error: None,
            created_at: now_ms,
            updated_at: now_ms,
            parts: parts.max(1),
            parts_accepted: 0,
        };
        let mut batch = Batch::default();
        batch.put(due_key(record.next_attempt_at, record.id), []);
        batch.put(record_key(record.id), crate::store::seam::encode(&record)?);
        if let Some(key) = answered {
            batch.put(key, record.id.to_be_bytes());
        }
        self.space.apply(batch)?;
        crate::metrics::metrics().outbound(channel, "queued");
        Ok(Enqueued::New(record.id))
    }

    /// A reply by id.
    pub fn get(&self, id: u64) -> Result<Option<OutboxRecord>, StoreError> {
        self.space.get_json(record_key(id))
    }

    /// The reply of `channel` answering inbound `message_id`, if there is one.
    pub fn reply_for(
        &self,
        channel: &str,
        message_id: &str,
    ) -> Result<Option<OutboxRecord>, StoreError> {
        match self
            .space
            .get(reply_key(channel, message_id))?
            .and_then(|v| decode_id(&v))
        {
            Some(id) => self.get(id),
            None => Ok(None),
        }
    }

    /// Records that the provider calls part `part` of reply `id` on `channel` by
    /// `provider_id` (its send answer or a receipt said so). Nothing for a reply of another
    /// channel, a part it does not have, an empty or oversized id, or an id already known.
    /// The caller syncs (or lets the next sync carry it: the index only serves quotes).
    pub fn note_provider_id(
        &self,
        channel: &str,
        id: u64,
        part: u32,
        provider_id: &str,
    ) -> Result<bool, StoreError> {
        if provider_id.is_empty() || provider_id.len() > MAX_PROVIDER_ID {
            return Ok(false);
        }
        let key = sent_key(channel, provider_id);
        if self.space.get(&key)?.is_some() {
            return Ok(false);
        }
        match self.get(id)? {
            Some(record) if record.channel == channel && part < record.parts => {}
            _ => return Ok(false),
        }
        let mut batch = Batch::default();
        batch.put(key, id.to_be_bytes());
        batch.put(sent_part_key(id, part), provider_id.as_bytes());
        self.space.apply(batch)?;
        Ok(true)
    }

    /// The reply of `channel` the provider knows as `provider_id` (see
    /// [`Outbox::note_provider_id`]), if there is one.
    pub fn sent_as(
        &self,
        channel: &str,
        provider_id: &str,
    ) -> Result<Option<OutboxRecord>, StoreError> {
        if provider_id.is_empty() || provider_id.len() > MAX_PROVIDER_ID {
            return Ok(None);
        }
        match self
            .space
            .get(sent_key(channel, provider_id))?
            .and_then(|v| decode_id(&v))
        {
            Some(id) => Ok(self.get(id)?.filter(|r| r.channel == channel)),
            None => Ok(None),
        }
    }

    /// Starts an attempt on up to `limit` replies due at `now_ms` (of `channel`, or of every
    /// channel), oldest schedule first, skipping `exclude` (attempts still in flight): each
    /// becomes `sending` with its attempt counted and is due again after `lease_ms` (when no
    /// answer or receipt arrives). The caller syncs before sending any of them.
    pub fn take_due(
        &self,
        channel: Option<&str>,
        now_ms: i64,
        limit: usize,
        exclude: &[u64],
        lease_ms: i64,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let mut out = Vec::new();
        let mut cursor: Option<Vec<u8>> = None;
        while out.len() < limit {
            let page = self.space.scan("outbox/due/", cursor.as_deref(), 64)?;
            let Some((last, _)) = page.last() else { break };
            cursor = Some(last.clone());
            for (key, _) in &page {
                if out.len() >= limit {
                    break;
                }
                let Some((at, id)) = parse_due(key) else {
                    self.space.delete(key)?;
                    continue;
                };
                if at > now_ms {
                    return Ok(out);
                }
                let record = self.get(id)?;
                let Some(mut record) =
                    record.filter(|r| !r.state.is_finished() && r.next_attempt_at == at)
                else {
                    // Finished, removed or rescheduled meanwhile: a stale entry.
                    self.space.delete(key)?;
                    continue;
                };
                if channel.is_some_and(|c| c != record.channel) || exclude.contains(&id) {
                    continue;
                }
                if record.state == OutboxState::Sending {
                    tracing::info!(
                        channel = %record.channel,
                        id,
                        attempt = record.attempts,
                        "no answer or receipt for the last attempt; sending again"
                    );
                }
                record.state = OutboxState::Sending;
                record.attempts = record.attempts.saturating_add(1);
                record.next_attempt_at = now_ms.saturating_add(lease_ms.max(1));
                record.updated_at = now_ms;
                self.write(&record, Some(at))?;
                crate::metrics::metrics().outbound(&record.channel, "sending");
                out.push(record);
            }
        }
        Ok(out)
    }

    /// After a restart: every reply of `channel` found `sending` (its attempt's answer was lost
    /// with the process) waits until at least `until_ms` — a full resend wait from now, since
    /// no receipt could arrive while the gateway was down. Returns how many.
    pub fn defer_sending(&self, channel: &str, until_ms: i64) -> Result<usize, StoreError> {
        let mut deferred = 0;
        for (key, _) in self.space.scan_all("outbox/due/")? {
            let Some((at, id)) = parse_due(&key) else {
                continue;
            };
            let Some(mut record) = self.get(id)? else {
                continue;
            };
            if record.channel != channel
                || record.state != OutboxState::Sending
                || record.next_attempt_at != at
                || at >= until_ms
            {
                continue;
            }
            record.next_attempt_at = until_ms;
            self.write(&record, Some(at))?;
            deferred += 1;
        }
        Ok(deferred)
    }

    /// What the answer to attempt `attempt` on reply `id` changes (nothing written yet).
    /// `parts_accepted` counts the leading parts the provider has accepted so far.
    pub fn plan_attempt(
        &self,
        id: u64,
        attempt: u32,
        result: &AttemptResult,
        parts_accepted: u32,
        now_ms: i64,
    ) -> Result<Transition, OutboxError> {
        let before = self.get(id)?.ok_or(OutboxError::UnknownId(id))?;
        if before.state != OutboxState::Sending || before.attempts != attempt {
            return Err(OutboxError::Finished(id));
        }
        let mut after = before.clone();
        after.updated_at = now_ms;
        after.parts_accepted = after.parts_accepted.max(parts_accepted).min(after.parts);
        match result {
            AttemptResult::Sent => after.state = OutboxState::Sent,
            AttemptResult::Terminal {
                status,
                code,
                reason,
            } => {
                after.state = OutboxState::Failed {
                    status: *status,
                    code: *code,
                    reason: reason.clone(),
                }
            }
            AttemptResult::Transient {
                retry_after,
                reason,
            } => {
                after.last_error = Some(reason.clone());
                if after.attempts >= self.backoff.max_attempts {
                    after.state = OutboxState::Failed {
                        status: None,
                        code: None,
                        reason: format!("gave up after {} attempts: {reason}", after.attempts),
                    };
                } else {
                    let backoff = self.backoff.delay_ms(after.attempts, (self.random)());
                    let server = retry_after
                        .map(|d| d.min(MAX_RETRY_AFTER).as_millis() as u64)
                        .unwrap_or(0);
                    let delay = i64::try_from(backoff.max(server)).unwrap_or(i64::MAX);
                    after.state = OutboxState::Queued;
                    after.next_attempt_at = now_ms.saturating_add(delay);
                }
            }
        }
        Ok(Transition { before, after })
    }

    /// What a receipt for part `part` of reply `id` changes, if anything (`None` for a
    /// receipt that moves nothing forward, or one for a reply never sent).
    pub fn plan_receipt(
        &self,
        id: u64,
        part: u32,
        receipt: &Receipt,
        now_ms: i64,
    ) -> Result<Option<Transition>, StoreError> {
        let Some(before) = self.get(id)? else {
            return Ok(None);
        };
        if before.attempts == 0 || part >= before.parts {
            return Ok(None);
        }
        let mut after = before.clone();
        after.updated_at = now_ms;
        match receipt {
            Receipt::Failed { code, title } => {
                if before.state.rank() >= OutboxState::Delivered.rank() {
                    return Ok(None);
                }
                let title = title
                    .as_deref()
                    .map(|t| format!(": {}", t.chars().take(120).collect::<String>()))
                    .unwrap_or_default();
                after.state = OutboxState::Failed {
                    status: None,
                    code: *code,
                    reason: format!("the provider reported the delivery failed{title}"),
                };
            }
            accepted => {
                after.parts_accepted = after.parts_accepted.max(part + 1);
                let target = match accepted {
                    Receipt::Delivered => OutboxState::Delivered,
                    Receipt::Read => OutboxState::Read,
                    _ => OutboxState::Sent,
                };
                if after.parts_accepted >= after.parts && target.rank() > before.state.rank() {
                    after.state = target;
                }
            }
        }
        let moved = after.state != before.state || after.parts_accepted != before.parts_accepted;
        Ok((moved && after.state.rank() >= before.state.rank())
            .then_some(Transition { before, after }))
    }

    /// Writes a planned transition if the record is still as it was planned from; returns
    /// whether it was written.
    pub fn commit(&self, transition: &Transition) -> Result<bool, StoreError> {
        let current = self.get(transition.before.id)?;
        if current.as_ref() != Some(&transition.before) {
            return Ok(false);
        }
        let old_due =
            (!transition.before.state.is_finished()).then_some(transition.before.next_attempt_at);
        self.write(&transition.after, old_due)?;
        let state = transition.after.state.as_str();
        if state != transition.before.state.as_str() {
            crate::metrics::metrics().outbound(&transition.after.channel, state);
        }
        Ok(true)
    }

    /// Records the answer to attempt `attempt` on reply `id` at `now_ms` and returns the new
    /// record (plan and commit in one step, for callers that audit nothing in between).
    pub fn record_attempt(
        &self,
        id: u64,
        attempt: u32,
        result: AttemptResult,
        parts_accepted: u32,
        now_ms: i64,
    ) -> Result<OutboxRecord, OutboxError> {
        let transition = self.plan_attempt(id, attempt, &result, parts_accepted, now_ms)?;
        if !self.commit(&transition)? {
            return Err(OutboxError::Finished(id));
        }
        Ok(transition.after)
    }

    /// Replies of `channel`, newest first: at most `limit` with ids below `before`.
    pub fn list(
        &self,
        channel: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let mut out = Vec::new();
        let mut cursor = before.map(|id| record_key(id).into_bytes());
        let mut scanned = 0usize;
        while out.len() < limit && scanned < 100_000 {
            let page = self.space.scan_back("outbox/m/", cursor.as_deref(), 256)?;
            let Some((last, _)) = page.last() else { break };
            cursor = Some(last.clone());
            scanned += page.len();
            for (_, value) in &page {
                let record: OutboxRecord = crate::store::seam::decode(Space::Outbox, value)?;
                if record.channel == channel {
                    out.push(record);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// How many replies are not finished yet, per channel (read from the store, so a channel
    /// whose actor is down still reports its depth). Reads at most `cap` entries: a scrape
    /// during a long outage costs a bounded amount.
    pub fn depths(&self, cap: usize) -> Result<BTreeMap<String, usize>, StoreError> {
        let mut out = BTreeMap::new();
        for (key, _) in self.space.scan("outbox/due/", None, cap)? {
            let text = String::from_utf8_lossy(&key);
            let id = text
                .rsplit('/')
                .next()
                .and_then(|id| id.parse::<u64>().ok());
            if let Some(record) = id.map(|id| self.get(id)).transpose()?.flatten() {
                *out.entry(record.channel).or_insert(0) += 1;
            }
        }
        Ok(out)
    }

    /// Every reply of `channel` not finished yet, by id.
    pub fn queued(&self, channel: &str) -> Result<Vec<OutboxRecord>, StoreError> {
        let mut out = Vec::new();
        for (_, value) in self.space.scan_all("outbox/m/")? {
            if let Ok(record) = serde_json::from_slice::<OutboxRecord>(&value) {
                if record.channel == channel && !record.state.is_finished() {
                    out.push(record);
                }
            }
        }
        Ok(out)
    }
}

fn decode_id(value: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(value).ok().map(u64::from_be_bytes)
}

fn parse_due(key: &[u8]) -> Option<(i64, u64)> {
    let text = std::str::from_utf8(key).ok()?;
    let mut fields = text.strip_prefix("outbox/due/")?.split('/');
    let at = fields.next()?.parse().ok()?;
    let id = fields.next()?.parse().ok()?;
    Some((at, id))
}

#[cfg(test)]
mod tests;
