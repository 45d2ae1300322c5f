//! The durable inbox of the channels (DESIGN "Data flow" step 2): every accepted message is
//! stored, keyed by a monotonic sequence number, before it is acknowledged.
//!
//! Owns, in the inbox space of the storage seam ([`Space::Inbox`]):
//! - `inbox/<channel>/m/<seq>`: the [`InboxRecord`] (JSON);
//! - `inbox/<channel>/i/<state>/<seq>`: an index of the records in the live states
//!   (`pending`, `held`, `processing`), so queues are read in arrival order without a scan;
//! - `dedupe/<channel>/<message id>`: the idempotency key, holding the sequence number and
//!   the arrival time (16 bytes, big-endian; stores written before carry the sequence only).
//!
//! Everything lives in [`Space::Inbox`] behind the storage seam. A new message's record, index
//! entry and idempotency key are written in one atomic batch, so a crash leaves either all
//! three or none (a redelivery is then stored again, never lost, never doubled). Every state
//! change moves the record and its index entry in one batch.
//! Must not: flush (the caller syncs once before acknowledging or handing on, so syncs group),
//! or have two writers for one channel: the check for the idempotency key and the batch are not
//! one atomic step, so each channel's live records are written only by its `ChannelBridge` (the
//! pruner only removes finished records, with compare-and-swap).
//!
//! States: `pending` → `processing` → `done`; `held` while a channel is quarantined or in
//! observe mode (back to `pending`, in order, on release); `dropped` for refused messages (kept
//! without their text, for de-duplication). A claim (`processing`) is made durable before the
//! agent sees the message. After a restart [`Inbox::recover`] returns `processing` records to
//! `pending`, so a message may be handed to the agent more than once: hand-over is
//! at-least-once, and turns are exactly-once because the agent keys its turn journal on
//! `channel + message_id` (a finished turn is not run again, an interrupted one resumes from its
//! journal) and the outbox keeps at most one reply per inbound message.

use serde::{Deserialize, Serialize};

use super::content::Content;
use super::session::encode_component;
use super::{InboundMessage, SenderKind};
use crate::store::{Batch, Space, SpaceRef, State, StoreDb, StoreError};

mod retention;
pub use retention::InboxPruned;

/// Where a stored message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InboxState {
    /// Waiting to be handed to the agent.
    Pending,
    /// Kept back while the channel is quarantined, in observe mode or disabled.
    Held,
    /// Handed to the agent, not yet confirmed.
    Processing,
    /// Processed (or nothing to process, for non-text messages).
    Done,
    /// Refused by the access policy; stored without text, for de-duplication only.
    Dropped,
}

impl InboxState {
    /// Whether the record is finished (done or dropped): only finished records are pruned.
    pub fn is_finished(self) -> bool {
        matches!(self, InboxState::Done | InboxState::Dropped)
    }

    fn index_name(self) -> Option<&'static str> {
        match self {
            InboxState::Pending => Some("pending"),
            InboxState::Held => Some("held"),
            InboxState::Processing => Some("processing"),
            InboxState::Done | InboxState::Dropped => None,
        }
    }
}

/// One stored message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxRecord {
    /// Arrival order (strictly increasing, across restarts).
    pub seq: u64,
    /// The channel it arrived on.
    pub channel: String,
    /// The message (text removed when dropped).
    pub message: InboundMessage,
    /// Where it stands.
    pub state: InboxState,
    /// Owner or external, for admitted messages.
    pub sender_kind: Option<SenderKind>,
    /// The session it belongs to, for admitted messages.
    pub session_key: Option<String>,
    /// Why it was dropped or finished without processing.
    pub reason: Option<String>,
    /// When it was accepted (unix seconds).
    pub received_at: i64,
    /// The message was prepared for the agent once (media saved, reply context looked up):
    /// its `message.text` is final, so every hand-over carries the same text.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prepared: bool,
}

/// How a new message enters the inbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEntry {
    /// Initial state: `Pending`, `Held`, `Done` or `Dropped`.
    pub state: InboxState,
    /// Owner or external, for admitted messages.
    pub sender_kind: Option<SenderKind>,
    /// The session key, for admitted messages.
    pub session_key: Option<String>,
    /// Why it was dropped or finished without processing.
    pub reason: Option<String>,
}

/// The answer of [`Inbox::accept`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Stored under this sequence number.
    New(u64),
    /// Already stored (under this sequence number); nothing was written.
    Duplicate(u64),
}

/// The durable inbox of every channel.
#[derive(Clone)]
pub struct Inbox {
    /// [`Space::Inbox`] of the storage seam.
    space: SpaceRef,
}

/// Index entries read per page by [`Inbox::claim_next`].
const CLAIM_PAGE: usize = 32;

fn seq_key(seq: u64) -> String {
    format!("{seq:020}")
}

impl Inbox {
    /// The inbox over an open store.
    pub fn new(db: &StoreDb) -> Result<Self, StoreError> {
        Ok(Self::over(db.state()?))
    }

    /// The inbox over the storage seam.
    pub fn over(state: State) -> Self {
        Self {
            space: SpaceRef::new(state, Space::Inbox),
        }
    }

    /// Makes every inbox write so far durable (shared with concurrent callers).
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.space.sync().await
    }

    fn record_key(channel: &str, seq: u64) -> String {
        format!("inbox/{}/m/{}", encode_component(channel), seq_key(seq))
    }

    fn index_prefix(channel: &str, state: &str) -> String {
        format!("inbox/{}/i/{state}/", encode_component(channel))
    }

    fn dedupe_key(channel: &str, message_id: &str) -> String {
        format!(
            "dedupe/{}/{}",
            encode_component(channel),
            encode_component(message_id)
        )
    }

    /// The sequence number under which `channel` + `message_id` was stored, if it was.
    pub fn known(&self, channel: &str, message_id: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .space
            .get(Self::dedupe_key(channel, message_id))?
            .and_then(|v| decode_dedupe(&v))
            .map(|(seq, _)| seq))
    }

    /// Stores a message unless `channel` + `message_id` is already known. Record, index entry
    /// and idempotency key are one atomic batch. The caller flushes before acknowledging.
    pub fn accept(
        &self,
        channel: &str,
        message: &InboundMessage,
        entry: NewEntry,
        now: i64,
    ) -> Result<Accepted, StoreError> {
        if let Some(seq) = self.known(channel, &message.message_id)? {
            return Ok(Accepted::Duplicate(seq));
        }
        let seq = self.space.next_id()?;
        let mut message = message.clone();
        if entry.state == InboxState::Dropped {
            message.text = None;
            message.content = None;
            message.attachments.clear();
        }
        drop_repeated_text(&mut message);
        let record = InboxRecord {
            seq,
            channel: channel.to_string(),
            message,
            state: entry.state,
            sender_kind: entry.sender_kind,
            session_key: entry.session_key,
            reason: entry.reason,
            received_at: now,
            prepared: false,
        };
        let mut batch = Batch::default();
        batch.put(Self::record_key(channel, seq), encode(&record)?);
        if let Some(index) = entry.state.index_name() {
            batch.put(
                format!("{}{}", Self::index_prefix(channel, index), seq_key(seq)),
                [],
            );
        }
        batch.put(
            Self::dedupe_key(channel, &record.message.message_id),
            encode_dedupe(seq, now),
        );
        self.space.apply(batch)?;
        Ok(Accepted::New(seq))
    }

    /// The record `seq` of `channel`.
    pub fn get(&self, channel: &str, seq: u64) -> Result<Option<InboxRecord>, StoreError> {
        self.space.get_json(Self::record_key(channel, seq))
    }

    fn indexed(&self, channel: &str, state: InboxState) -> Result<Vec<u64>, StoreError> {
        self.indexed_page(channel, state, None, usize::MAX)
    }

    /// Up to `limit` sequence numbers of `state`'s index after `after`, in arrival order: the
    /// queue is read a page at a time where only its head matters (a claim, the next pending),
    /// so a backlog of thousands costs a claim one short scan, not a copy of the whole index.
    fn indexed_page(
        &self,
        channel: &str,
        state: InboxState,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<u64>, StoreError> {
        let Some(index) = state.index_name() else {
            return Ok(Vec::new());
        };
        let prefix = Self::index_prefix(channel, index);
        let after = after.map(|seq| format!("{prefix}{}", seq_key(seq)));
        Ok(self
            .space
            .scan(&prefix, after.as_deref().map(str::as_bytes), limit)?
            .into_iter()
            .filter_map(|(k, _)| std::str::from_utf8(&k[prefix.len()..]).ok()?.parse().ok())
            .collect())
    }

    fn records(&self, channel: &str, state: InboxState) -> Result<Vec<InboxRecord>, StoreError> {
        let mut out = Vec::new();
        for seq in self.indexed(channel, state)? {
            if let Some(record) = self.get(channel, seq)? {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Moves record `seq` from `from` to `to` (one batch); false when it was not in `from`.
    fn transition(
        &self,
        channel: &str,
        seq: u64,
        from: InboxState,
        to: InboxState,
        reason: Option<String>,
    ) -> Result<bool, StoreError> {
        let Some(mut record) = self.get(channel, seq)? else {
            return Ok(false);
        };
        if record.state != from {
            return Ok(false);
        }
        record.state = to;
        if reason.is_some() {
            record.reason = reason;
        }
        let mut batch = Batch::default();
        if let Some(index) = from.index_name() {
            batch.delete(format!(
                "{}{}",
                Self::index_prefix(channel, index),
                seq_key(seq)
            ));
        }
        if let Some(index) = to.index_name() {
            batch.put(
                format!("{}{}", Self::index_prefix(channel, index), seq_key(seq)),
                [],
            );
        }
        batch.put(Self::record_key(channel, seq), encode(&record)?);
        self.space.apply(batch)?;
        Ok(true)
    }

    /// Records the prepared form of a claimed message (its final text, attachments without
    /// inline bytes) and marks it prepared; false when the record is not `processing` or was
    /// prepared before (the first preparation stays). The caller syncs.
    pub fn set_prepared(
        &self,
        channel: &str,
        seq: u64,
        message: &InboundMessage,
    ) -> Result<bool, StoreError> {
        let Some(mut record) = self.get(channel, seq)? else {
            return Ok(false);
        };
        if record.state != InboxState::Processing || record.prepared {
            return Ok(false);
        }
        record.message = message.clone();
        drop_repeated_text(&mut record.message);
        record.prepared = true;
        let mut batch = Batch::default();
        batch.put(Self::record_key(channel, seq), encode(&record)?);
        self.space.apply(batch)?;
        Ok(true)
    }

    /// The stored message `message_id` of `channel`, if it is still stored.
    pub fn find(&self, channel: &str, message_id: &str) -> Result<Option<InboxRecord>, StoreError> {
        match self.known(channel, message_id)? {
            Some(seq) => self.get(channel, seq),
            None => Ok(None),
        }
    }

    /// The oldest pending message of `channel`, without claiming it.
    pub fn next_pending(&self, channel: &str) -> Result<Option<InboxRecord>, StoreError> {
        match self
            .indexed_page(channel, InboxState::Pending, None, 1)?
            .first()
        {
            Some(&seq) => self.get(channel, seq),
            None => Ok(None),
        }
    }

    /// Claims the oldest pending message with `seq <= up_to` (only durably stored messages
    /// may be handed on): it becomes `processing` and is returned.
    pub fn claim_next(&self, channel: &str, up_to: u64) -> Result<Option<InboxRecord>, StoreError> {
        // Page through the index instead of reading all of it: under a flood thousands wait,
        // and the pump claims one at a time (reading the whole queue per claim is quadratic).
        let mut after = None;
        loop {
            let page = self.indexed_page(channel, InboxState::Pending, after, CLAIM_PAGE)?;
            for &seq in &page {
                if seq > up_to {
                    return Ok(None);
                }
                if self.transition(
                    channel,
                    seq,
                    InboxState::Pending,
                    InboxState::Processing,
                    None,
                )? {
                    return self.get(channel, seq);
                }
            }
            if page.len() < CLAIM_PAGE {
                return Ok(None);
            }
            after = page.last().copied();
        }
    }

    /// Marks a claimed (or pending) message done. Idempotent: returns false when it already
    /// was done (or never existed), true on the one call that finished it.
    pub fn mark_done(&self, channel: &str, seq: u64) -> Result<bool, StoreError> {
        Ok(
            self.transition(channel, seq, InboxState::Processing, InboxState::Done, None)?
                || self.transition(channel, seq, InboxState::Pending, InboxState::Done, None)?,
        )
    }

    /// Gives a claimed message back (the agent could not take it): `processing` → `pending`.
    pub fn unclaim(&self, channel: &str, seq: u64) -> Result<bool, StoreError> {
        self.transition(
            channel,
            seq,
            InboxState::Processing,
            InboxState::Pending,
            None,
        )
    }

    /// After a restart: every `processing` message of `channel` goes back to `pending`.
    /// Returns how many.
    pub fn recover(&self, channel: &str) -> Result<usize, StoreError> {
        let mut moved = 0;
        for seq in self.indexed(channel, InboxState::Processing)? {
            if self.unclaim(channel, seq)? {
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// Holds every pending message for which `hold` says so (quarantine, observe). Returns how many.
    pub fn hold_pending(
        &self,
        channel: &str,
        hold: impl Fn(&InboxRecord) -> bool,
    ) -> Result<usize, StoreError> {
        let mut moved = 0;
        for record in self.records(channel, InboxState::Pending)? {
            if hold(&record)
                && self.transition(
                    channel,
                    record.seq,
                    InboxState::Pending,
                    InboxState::Held,
                    None,
                )?
            {
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// Releases held messages for which `release` says so back to `pending`, in arrival order.
    /// Returns how many.
    pub fn release_held(
        &self,
        channel: &str,
        release: impl Fn(&InboxRecord) -> bool,
    ) -> Result<usize, StoreError> {
        let mut moved = 0;
        for record in self.records(channel, InboxState::Held)? {
            if release(&record)
                && self.transition(
                    channel,
                    record.seq,
                    InboxState::Held,
                    InboxState::Pending,
                    None,
                )?
            {
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// Held messages of `channel`, in arrival order.
    pub fn held(&self, channel: &str) -> Result<Vec<InboxRecord>, StoreError> {
        self.records(channel, InboxState::Held)
    }

    /// Pending messages of `channel`, in arrival order.
    pub fn pending(&self, channel: &str) -> Result<Vec<InboxRecord>, StoreError> {
        self.records(channel, InboxState::Pending)
    }

    /// How many messages of `channel` are pending, held and processing.
    pub fn counts(&self, channel: &str) -> Result<InboxCounts, StoreError> {
        Ok(InboxCounts {
            pending: self.indexed(channel, InboxState::Pending)?.len(),
            held: self.indexed(channel, InboxState::Held)?.len(),
            processing: self.indexed(channel, InboxState::Processing)?.len(),
        })
    }
}

/// Queue lengths of one channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InboxCounts {
    /// Waiting to be handed on.
    pub pending: usize,
    /// Kept back by quarantine or observe mode.
    pub held: usize,
    /// Handed on, not yet confirmed.
    pub processing: usize,
}

/// A plain text arrives as its `text` and again as `content: Text { body }`: the record keeps
/// the text once (no content reads as plain text everywhere), so the store holds each
/// message's body once.
fn drop_repeated_text(message: &mut InboundMessage) {
    if matches!(
        &message.content,
        Some(Content::Text { body }) if message.text.as_deref() == Some(body.as_str())
    ) {
        message.content = None;
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    crate::store::seam::encode(value)
}

/// The value of an idempotency key: sequence number and arrival time (unix seconds).
fn encode_dedupe(seq: u64, received_at: i64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&seq.to_be_bytes());
    out[8..].copy_from_slice(&received_at.to_be_bytes());
    out
}

/// Sequence number and arrival time of an idempotency key (`None` for the time in stores
/// written before it was recorded).
fn decode_dedupe(value: &[u8]) -> Option<(u64, Option<i64>)> {
    let seq = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let at = value
        .get(8..16)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(i64::from_be_bytes);
    Some((seq, at))
}
