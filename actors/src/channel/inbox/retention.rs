//! Pruning of the inbox: finished records (`done`, `dropped`) older than the retention, and
//! idempotency keys older than their own, longer horizon.
//!
//! Owns: bounded passes over [`Space::Inbox`](crate::store::Space::Inbox) that a background
//! pruner calls chunk by chunk (a cursor carries the position), one batch of removals per chunk
//! (finished records are never written again, so a removal cannot undo a live write; keys
//! without an arrival time are stamped with compare-and-swap).
//! Must not: remove a record in a live state (`pending`, `held`, `processing`) whatever its
//! age (nothing accepted is lost), or an idempotency key younger than its horizon (a
//! redelivery inside the providers' retry window must stay a duplicate).

use super::{decode_dedupe, encode_dedupe, Inbox, InboxRecord};
use crate::store::{Batch, StoreError, Swap};

/// What one chunk of a pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InboxPruned {
    /// Records removed.
    pub records: usize,
    /// Idempotency keys removed.
    pub dedupe_keys: usize,
    /// Whether the pass has more to look at (call again with the same cursor).
    pub more: bool,
}

/// Appends a byte above every id and digit, to skip past a key range.
fn past(prefix: &str) -> Vec<u8> {
    let mut key = prefix.as_bytes().to_vec();
    key.push(0xff);
    key
}

impl Inbox {
    /// One chunk (at most `limit` keys looked at) of a pass over the records: removes finished
    /// records received before `record_cutoff` (unix seconds), with their idempotency key when
    /// that is older than `dedupe_cutoff` too. Records are in arrival order per channel, so
    /// the first younger record ends that channel's part of the pass.
    pub fn prune_records(
        &self,
        record_cutoff: i64,
        dedupe_cutoff: i64,
        cursor: &mut Option<Vec<u8>>,
        limit: usize,
    ) -> Result<InboxPruned, StoreError> {
        let mut out = InboxPruned::default();
        let page = self.space.scan("inbox/", cursor.as_deref(), limit.max(1))?;
        out.more = page.len() >= limit.max(1);
        // One batch per chunk. Finished records are never written again by their channel, so
        // removing them cannot undo a live write.
        let mut batch = Batch::default();
        for (key, value) in &page {
            *cursor = Some(key.clone());
            let text = String::from_utf8_lossy(key);
            let Some((channel_part, kind)) = split_inbox_key(&text) else {
                continue;
            };
            if kind == "i" {
                // Index entries belong to live records: skip the channel's whole index.
                *cursor = Some(past(&format!("inbox/{channel_part}/i/")));
                continue;
            }
            let Ok(record) = serde_json::from_slice::<InboxRecord>(value) else {
                continue;
            };
            if record.received_at >= record_cutoff {
                *cursor = Some(past(&format!("inbox/{channel_part}/m/")));
                continue;
            }
            if !record.state.is_finished() {
                continue;
            }
            batch.delete(key);
            out.records += 1;
            if record.received_at < dedupe_cutoff {
                if let Some(dedupe) = self.dedupe_of(&record, dedupe_cutoff)? {
                    batch.delete(dedupe);
                    out.dedupe_keys += 1;
                }
            }
        }
        self.space.apply(batch)?;
        if !out.more {
            *cursor = None;
        }
        Ok(out)
    }

    /// The idempotency key of `record`, if it still points at it and is past `dedupe_cutoff`.
    fn dedupe_of(
        &self,
        record: &InboxRecord,
        dedupe_cutoff: i64,
    ) -> Result<Option<String>, StoreError> {
        let key = Self::dedupe_key(&record.channel, &record.message.message_id);
        let Some(value) = self.space.get(&key)? else {
            return Ok(None);
        };
        let Some((seq, at)) = decode_dedupe(&value) else {
            return Ok(None);
        };
        if seq != record.seq || at.is_some_and(|at| at >= dedupe_cutoff) {
            return Ok(None);
        }
        Ok(Some(key))
    }

    /// One chunk of a pass over the idempotency keys alone (needed when the records' retention
    /// is shorter than the keys' horizon): removes keys that arrived before `dedupe_cutoff`;
    /// a key without an arrival time (written before it was recorded) gets `now` as its time.
    pub fn prune_dedupe(
        &self,
        dedupe_cutoff: i64,
        now: i64,
        cursor: &mut Option<Vec<u8>>,
        limit: usize,
    ) -> Result<InboxPruned, StoreError> {
        let mut out = InboxPruned::default();
        let page = self
            .space
            .scan("dedupe/", cursor.as_deref(), limit.max(1))?;
        out.more = page.len() >= limit.max(1);
        for (key, value) in &page {
            *cursor = Some(key.clone());
            let Some((seq, at)) = decode_dedupe(value) else {
                continue;
            };
            match at {
                Some(at) if at < dedupe_cutoff => {
                    if self.space.compare_and_swap(key, Some(value), None)? == Swap::Done {
                        out.dedupe_keys += 1;
                    }
                }
                Some(_) => {}
                None => {
                    let stamped = encode_dedupe(seq, now);
                    self.space
                        .compare_and_swap(key, Some(value), Some(&stamped))?;
                }
            }
        }
        if !out.more {
            *cursor = None;
        }
        Ok(out)
    }

    /// When the oldest record kept arrived (unix seconds), over every channel.
    pub fn oldest_received_at(&self) -> Result<Option<i64>, StoreError> {
        let mut oldest: Option<i64> = None;
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            let page = self.space.scan("inbox/", cursor.as_deref(), 1)?;
            let Some((key, value)) = page.into_iter().next() else {
                return Ok(oldest);
            };
            let text = String::from_utf8_lossy(&key).into_owned();
            let Some((channel_part, kind)) = split_inbox_key(&text) else {
                cursor = Some(key);
                continue;
            };
            if kind == "m" {
                if let Ok(record) = serde_json::from_slice::<InboxRecord>(&value) {
                    oldest = Some(oldest.map_or(record.received_at, |o| o.min(record.received_at)));
                }
            }
            // The first record of a channel is its oldest: go on with the next channel.
            cursor = Some(past(&format!("inbox/{channel_part}/{kind}/")));
        }
    }
}

/// `inbox/<channel>/<kind>/…` → (`<channel>` as stored, `<kind>`).
fn split_inbox_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("inbox/")?;
    let mut parts = rest.splitn(3, '/');
    let channel = parts.next()?;
    let kind = parts.next()?;
    parts.next()?;
    Some((channel, kind))
}
