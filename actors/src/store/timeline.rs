//! Timeline events: what happened, newest first, queryable by trace and sender.
//!
//! Owns: the `timeline` tree (events keyed by a monotonic id, big-endian), its queries and its
//! pruning (oldest first, up to a cutoff, in bounded chunks).
//! Must not: hold a secret or message text beyond what an event's producer puts in `data`.

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Store, StoreDb, StoreError, TreeName};

/// One timeline event. Never holds a secret; message text only where the event is a message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimelineEvent {
    /// Opaque id, increasing with time.
    pub id: String,
    /// RFC 3339 UTC.
    pub ts: String,
    /// Groups the events of one message's handling.
    pub trace_id: String,
    /// Event type, e.g. `gateway.started`, `message.inbound`, `tool.call`.
    pub kind: String,
    /// Sender id, when the event concerns one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// Channel name, when the event concerns one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Structured detail.
    #[serde(default)]
    pub data: serde_json::Value,
}

/// Filters of `GET /api/v1/timeline`.
#[derive(Clone, Debug, Default)]
pub struct TimelineQuery {
    /// At most this many events (clamped to 1..=1000; default 100).
    pub limit: Option<usize>,
    /// Only events older than this id.
    pub before: Option<String>,
    /// Only this trace.
    pub trace_id: Option<String>,
    /// Only this sender.
    pub sender: Option<String>,
}

/// Appends an event; answered after the event is in the store (not yet flushed).
#[derive(Message)]
#[rtype(result = "Result<TimelineEvent, StoreError>")]
pub struct RecordEvent {
    /// Trace id (a fresh one when empty).
    pub trace_id: String,
    /// Event type.
    pub kind: String,
    /// Sender, if any.
    pub sender: Option<String>,
    /// Channel, if any.
    pub channel: Option<String>,
    /// Structured detail; never a secret.
    pub data: serde_json::Value,
}

/// Reads events newest first.
#[derive(Message)]
#[rtype(result = "Result<Vec<TimelineEvent>, StoreError>")]
pub struct GetTimeline(pub TimelineQuery);

const MAX_SCAN: usize = 100_000;

/// Appends an event stamped `at` (not yet flushed). The store actor and the channels (delivery
/// states of replies) write through this one function.
pub fn append_event(
    db: &StoreDb,
    msg: RecordEvent,
    at: time::OffsetDateTime,
) -> Result<TimelineEvent, StoreError> {
    let id = db.next_id()?;
    let trace_id = if msg.trace_id.is_empty() {
        format!("t{id:016x}")
    } else {
        msg.trace_id
    };
    let event = TimelineEvent {
        id: format!("{id:016x}"),
        ts: crate::clock::to_rfc3339(at),
        trace_id,
        kind: msg.kind,
        sender: msg.sender,
        channel: msg.channel,
        data: msg.data,
    };
    db.tree(TreeName::Timeline)?
        .put_json(id.to_be_bytes(), &event)?;
    Ok(event)
}

fn event_ms(value: &[u8]) -> Option<i64> {
    #[derive(Deserialize)]
    struct Stamp {
        ts: String,
    }
    let stamp: Stamp = serde_json::from_slice(value).ok()?;
    let at = crate::clock::parse_rfc3339(&stamp.ts)?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

/// One chunk of a pruning pass: looks at up to `limit` events after `cursor` (oldest first)
/// and removes those stamped before `cutoff_ms` (unix ms), in one batch. Returns how many were
/// removed and whether older events may remain (call again with the same cursor).
pub fn prune_timeline(
    db: &StoreDb,
    cutoff_ms: i64,
    cursor: &mut Option<Vec<u8>>,
    limit: usize,
) -> Result<(usize, bool), StoreError> {
    let tree = db.tree(TreeName::Timeline)?;
    let page = tree.scan_after([], cursor.as_deref(), limit.max(1))?;
    let mut batch = super::KvBatch::default();
    let mut removed = 0;
    let mut more = page.len() >= limit.max(1);
    for (key, value) in &page {
        // Ids grow with time: the first event younger than the cutoff ends the pass. An
        // unreadable event is old junk by the same order and goes too. Events are never
        // rewritten, so a batch of removals cannot undo a live write.
        if event_ms(value).is_some_and(|ms| ms >= cutoff_ms) {
            more = false;
            break;
        }
        batch.remove(key);
        removed += 1;
        *cursor = Some(key.clone());
    }
    tree.apply(batch)?;
    if !more {
        *cursor = None;
    }
    Ok((removed, more))
}

/// When the oldest event kept was stamped (unix ms), if there is one.
pub fn oldest_event_ms(db: &StoreDb) -> Result<Option<i64>, StoreError> {
    let tree = db.tree(TreeName::Timeline)?;
    Ok(tree
        .scan_after([], None, 1)?
        .first()
        .and_then(|(_, v)| event_ms(v)))
}

impl Store {
    fn record(&self, msg: RecordEvent) -> Result<TimelineEvent, StoreError> {
        append_event(&self.db, msg, time::OffsetDateTime::now_utc())
    }

    fn query(&self, query: TimelineQuery) -> Result<Vec<TimelineEvent>, StoreError> {
        let limit = query.limit.unwrap_or(100).clamp(1, 1000);
        let before = match &query.before {
            Some(hex_id) => Some(
                u64::from_str_radix(hex_id, 16)
                    .map_err(|_| StoreError::Io("before is not an event id".into()))?
                    .to_be_bytes(),
            ),
            None => None,
        };
        let mut out = Vec::new();
        let mut cursor = before.map(|b| b.to_vec());
        let mut scanned = 0;
        while out.len() < limit && scanned < MAX_SCAN {
            let page = self.timeline.scan_rev(cursor.as_deref(), 256)?;
            if page.is_empty() {
                break;
            }
            scanned += page.len();
            for (key, value) in &page {
                let event: TimelineEvent =
                    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
                        tree: "timeline",
                        reason: e.to_string(),
                    })?;
                let trace_ok = query.trace_id.as_ref().is_none_or(|t| *t == event.trace_id);
                let sender_ok = query
                    .sender
                    .as_ref()
                    .is_none_or(|s| Some(s) == event.sender.as_ref());
                if trace_ok && sender_ok {
                    out.push(event);
                    if out.len() == limit {
                        break;
                    }
                }
                cursor = Some(key.clone());
            }
        }
        Ok(out)
    }
}

impl Handler<RecordEvent> for Store {
    type Result = Result<TimelineEvent, StoreError>;
    fn handle(&mut self, msg: RecordEvent, _: &mut Context<Self>) -> Self::Result {
        self.record(msg)
    }
}

impl Handler<GetTimeline> for Store {
    type Result = Result<Vec<TimelineEvent>, StoreError>;
    fn handle(&mut self, msg: GetTimeline, _: &mut Context<Self>) -> Self::Result {
        self.query(msg.0)
    }
}
