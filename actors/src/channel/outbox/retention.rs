//! Pruning of the outbox: finished replies (sent, delivered, read, failed) older than the
//! retention, with their "one reply per inbound message" key and the provider ids of their
//! parts.
//!
//! Owns: bounded passes over [`Space::Outbox`](crate::store::Space::Outbox) in id order (ids
//! grow with time, so the first younger reply ends a pass), one batch of removals per chunk.
//! Must not: remove a reply that is still queued or sending, whatever its age.

use super::{record_key, reply_key, sent_key, sent_part_prefix, Outbox, OutboxRecord};
use crate::store::{Batch, StoreError};

/// What one chunk of a pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxPruned {
    /// Replies removed.
    pub records: usize,
    /// Whether the pass has more to look at (call again with the same cursor).
    pub more: bool,
}

impl Outbox {
    /// One chunk (at most `limit` replies looked at) of a pass: removes finished replies
    /// created before `cutoff_ms`.
    pub fn prune(
        &self,
        cutoff_ms: i64,
        cursor: &mut Option<Vec<u8>>,
        limit: usize,
    ) -> Result<OutboxPruned, StoreError> {
        let mut out = OutboxPruned::default();
        let page = self
            .space
            .scan("outbox/m/", cursor.as_deref(), limit.max(1))?;
        out.more = page.len() >= limit.max(1);
        // One batch per chunk. A finished reply changes only by a late receipt; one that
        // arrives for a reply older than the retention is dropped with it.
        let mut batch = Batch::default();
        for (key, value) in &page {
            let Ok(record) = serde_json::from_slice::<OutboxRecord>(value) else {
                *cursor = Some(key.clone());
                continue;
            };
            if record.created_at >= cutoff_ms {
                out.more = false;
                break;
            }
            *cursor = Some(key.clone());
            if !record.state.is_finished() {
                continue;
            }
            batch.delete(record_key(record.id));
            if let Some(message_id) = &record.message.reply_to {
                let reply = reply_key(&record.channel, message_id);
                if self.space.get(&reply)?.as_deref() == Some(&record.id.to_be_bytes()[..]) {
                    batch.delete(reply);
                }
            }
            for (part_key, provider_id) in self.space.scan(
                sent_part_prefix(record.id),
                None,
                record.parts.max(1) as usize,
            )? {
                let provider_id = String::from_utf8_lossy(&provider_id);
                batch.delete(sent_key(&record.channel, &provider_id));
                batch.delete(part_key);
            }
            out.records += 1;
        }
        self.space.apply(batch)?;
        if !out.more {
            *cursor = None;
        }
        Ok(out)
    }

    /// When the oldest reply kept was created (unix ms).
    pub fn oldest_created_at(&self) -> Result<Option<i64>, StoreError> {
        Ok(self
            .space
            .scan("outbox/m/", None, 1)?
            .first()
            .and_then(|(_, v)| serde_json::from_slice::<OutboxRecord>(v).ok())
            .map(|r| r.created_at))
    }
}
