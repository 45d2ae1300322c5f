//! The channel's outbox side: queueing replies (one per inbound message), starting attempts
//! (recorded and synced before the dispatcher sends), recording answers and applying the
//! provider's delivery receipts, and listing replies for `GET /api/v1/channels/{name}/outbox`.
//!
//! Owns: the messages [`EnqueueReply`], [`TakeDueReplies`], [`RecordDelivery`],
//! [`ApplyReceipts`] and [`GetOutbox`], and the timeline events of delivery states
//! (`reply.sending`, `reply.sent`, `reply.delivered`, `reply.read`, `reply.failed`).
//! Must not: write a reply's failure before its `reply.failed` audit record is durable, or put
//! reply text into the timeline or the audit log.

use actix::prelude::*;
use serde_json::json;

use super::{trace_id, ChannelBridge, ChannelError};
use crate::audit::{AppendRecord, AuditKind};
use crate::channel::outbox::{
    parse_reply_tag, reply_id, AttemptResult, Enqueued, OutboundMessage, Outbox, OutboxRecord,
    OutboxState, Receipt, Transition,
};
use crate::channel::whatsapp::{split_text, DeliveryStatus, MAX_TEXT_CHARS};
use crate::channel::ChannelKind;
use crate::store::{append_event, RecordEvent, StoreDb};

/// Queues a reply in the durable outbox (synced before the answer). A second reply to the same
/// inbound message is refused: the answer is then [`Enqueued::Duplicate`] with the first one's
/// id.
#[derive(Message, Debug)]
#[rtype(result = "Result<Enqueued, ChannelError>")]
pub struct EnqueueReply {
    /// The reply.
    pub message: OutboundMessage,
}

/// Starts an attempt on due replies: each is recorded `sending` (attempt n) and synced before
/// the answer. Empty while the channel may not send.
#[derive(Message, Debug)]
#[rtype(result = "Result<Vec<OutboxRecord>, ChannelError>")]
pub struct TakeDueReplies {
    /// Now, unix milliseconds.
    pub now_ms: i64,
    /// At most this many.
    pub limit: usize,
    /// Replies whose attempt is still in flight at the caller.
    pub exclude: Vec<u64>,
}

/// The answer to one send attempt (synced before the answer; a failure audited first).
#[derive(Message, Debug)]
#[rtype(result = "Result<OutboxRecord, ChannelError>")]
pub struct RecordDelivery {
    /// The outbox id.
    pub id: u64,
    /// The attempt this answers (the record's `attempts` when it was taken).
    pub attempt: u32,
    /// What happened.
    pub result: AttemptResult,
    /// Leading parts the provider has accepted so far.
    pub parts_accepted: u32,
    /// The ids the provider gave the parts it accepted in this attempt (part, id).
    pub provider_ids: Vec<(u32, String)>,
    /// Now, unix milliseconds.
    pub now_ms: i64,
}

/// Delivery receipts from a verified WhatsApp status webhook (synced before the answer).
#[derive(Message, Debug)]
#[rtype(result = "Result<ReceiptsApplied, ChannelError>")]
pub struct ApplyReceipts {
    /// The `statuses[]` of the webhook, in payload order.
    pub statuses: Vec<DeliveryStatus>,
}

/// What [`ApplyReceipts`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiptsApplied {
    /// Receipts that moved a reply forward.
    pub applied: usize,
    /// Receipts for no reply of ours, of an unknown status, or that changed nothing.
    pub ignored: usize,
}

/// Replies of the channel, newest first.
#[derive(Message, Debug)]
#[rtype(result = "Result<Vec<OutboxRecord>, ChannelError>")]
pub struct GetOutbox {
    /// Only replies with ids below this one.
    pub before: Option<u64>,
    /// At most this many (clamped to 1..=500).
    pub limit: usize,
}

/// The receipt a WhatsApp status stands for, if it is one of ours.
fn receipt_of(status: &DeliveryStatus) -> Option<(u64, u32, Receipt)> {
    let (id, part) = parse_reply_tag(status.callback_data.as_deref()?)?;
    let receipt = match status.status.as_str() {
        "sent" => Receipt::Sent,
        "delivered" => Receipt::Delivered,
        "read" => Receipt::Read,
        "failed" => {
            let first = status.errors.first();
            Receipt::Failed {
                code: first.and_then(|e| e.code),
                title: first.and_then(|e| e.title.clone()),
            }
        }
        _ => return None,
    };
    Some((id, part, receipt))
}

/// Remembers the provider's ids of parts of reply `id` (for quoting a user's reply to them).
/// Best effort: the index serves quotes only, so a store failure is logged, never fatal.
fn note_provider_ids(outbox: &Outbox, channel: &str, id: u64, ids: &[(u32, String)]) {
    for (part, provider_id) in ids {
        if let Err(error) = outbox.note_provider_id(channel, id, *part, provider_id) {
            tracing::warn!(%channel, id, %error, "provider message id not recorded");
        }
    }
}

impl ChannelBridge {
    /// How many parts the channel sends `text` in.
    pub(super) fn parts(&self, text: &str) -> u32 {
        match self.config.kind {
            ChannelKind::Whatsapp => {
                u32::try_from(split_text(text, MAX_TEXT_CHARS).len().max(1)).unwrap_or(u32::MAX)
            }
            ChannelKind::Bridge => 1,
        }
    }
}

/// Audits (durably) a transition that gives a reply up, then commits it. `Ok(None)` when the
/// record changed meanwhile and nothing was written.
async fn audit_and_commit(
    outbox: &Outbox,
    audit: &Recipient<AppendRecord>,
    transition: Transition,
) -> Result<Option<OutboxRecord>, ChannelError> {
    if transition.fails() {
        let after = &transition.after;
        let (status, code, reason) = match &after.state {
            OutboxState::Failed {
                status,
                code,
                reason,
            } => (*status, *code, reason.clone()),
            _ => (None, None, String::new()),
        };
        let record = AppendRecord {
            kind: AuditKind::ReplyFailed,
            actor: "dispatcher".into(),
            subject: format!("channel:{}", after.channel),
            data: json!({
                "reply_id": reply_id(after.id),
                "reply_to": after.message.reply_to,
                "attempts": after.attempts,
                "status": status,
                "code": code,
                "reason": reason,
            }),
        };
        audit
            .send(record)
            .await
            .map_err(|e| ChannelError::Audit(e.to_string()))??;
    }
    Ok(outbox
        .commit(&transition)?
        .then(|| transition.after.clone()))
}

/// Records a delivery state of `record` on the timeline (never its text).
fn reply_event(db: &StoreDb, record: &OutboxRecord, now_ms: i64) {
    let trace = match &record.message.reply_to {
        Some(message_id) => trace_id(&record.channel, message_id),
        None => reply_id(record.id),
    };
    let mut data = json!({
        "reply_id": reply_id(record.id),
        "attempt": record.attempts,
        "parts": record.parts,
        "parts_accepted": record.parts_accepted,
    });
    if let OutboxState::Failed {
        status,
        code,
        reason,
    } = &record.state
    {
        data["status"] = json!(status);
        data["code"] = json!(code);
        data["reason"] = json!(reason);
    }
    if let Some(error) = &record.last_error {
        data["last_error"] = json!(error);
    }
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    let event = RecordEvent {
        trace_id: trace,
        kind: format!("reply.{}", record.state.as_str()),
        sender: None,
        channel: Some(record.channel.clone()),
        data,
    };
    if let Err(error) = append_event(db, event, at) {
        tracing::warn!(channel = %record.channel, %error, "cannot record a delivery state");
    }
}

impl Handler<EnqueueReply> for ChannelBridge {
    type Result = ResponseActFuture<Self, Result<Enqueued, ChannelError>>;
    fn handle(&mut self, msg: EnqueueReply, _: &mut Context<Self>) -> Self::Result {
        let now_ms = (self.clock)().saturating_mul(1000);
        let parts = self.parts(&msg.message.text);
        match self
            .outbox
            .enqueue(&self.config.name, msg.message, parts, now_ms)
        {
            Ok(enqueued) => {
                if let Enqueued::Duplicate(id) = enqueued {
                    tracing::info!(channel = %self.config.name, id, "a second reply to one message refused");
                }
                self.audited(None, enqueued)
            }
            Err(error) => Box::pin(fut::ready(Err(error.into()))),
        }
    }
}

impl Handler<TakeDueReplies> for ChannelBridge {
    type Result = ResponseActFuture<Self, Result<Vec<OutboxRecord>, ChannelError>>;
    fn handle(&mut self, msg: TakeDueReplies, _: &mut Context<Self>) -> Self::Result {
        if !self.state.state.sends() {
            return Box::pin(fut::ready(Ok(Vec::new())));
        }
        let lease = i64::try_from(self.config.resend_after.as_millis()).unwrap_or(i64::MAX);
        let taken = self.outbox.take_due(
            Some(&self.config.name),
            msg.now_ms,
            msg.limit,
            &msg.exclude,
            lease,
        );
        let records = match taken {
            Ok(records) => records,
            Err(error) => return Box::pin(fut::ready(Err(error.into()))),
        };
        for record in &records {
            reply_event(&self.db, record, msg.now_ms);
        }
        if records.is_empty() {
            return Box::pin(fut::ready(Ok(records)));
        }
        // The attempts are durable before the dispatcher sends anything.
        let outbox = self.outbox.clone();
        Box::pin(
            async move {
                outbox.sync().await?;
                Ok(records)
            }
            .into_actor(self),
        )
    }
}

impl Handler<RecordDelivery> for ChannelBridge {
    type Result = ResponseActFuture<Self, Result<OutboxRecord, ChannelError>>;
    fn handle(&mut self, msg: RecordDelivery, _: &mut Context<Self>) -> Self::Result {
        let planned = self.outbox.plan_attempt(
            msg.id,
            msg.attempt,
            &msg.result,
            msg.parts_accepted,
            msg.now_ms,
        );
        let transition = match planned {
            Ok(transition) => transition,
            Err(error) => return Box::pin(fut::ready(Err(error.into()))),
        };
        let outbox = self.outbox.clone();
        let audit = self.links.audit.clone();
        let db = self.db.clone();
        let id = msg.id;
        let channel = self.config.name.clone();
        Box::pin(
            async move {
                note_provider_ids(&outbox, &channel, id, &msg.provider_ids);
                let record = audit_and_commit(&outbox, &audit, transition)
                    .await?
                    .ok_or(crate::channel::outbox::OutboxError::Finished(id))?;
                reply_event(&db, &record, msg.now_ms);
                outbox.sync().await?;
                Ok(record)
            }
            .into_actor(self),
        )
    }
}

impl Handler<ApplyReceipts> for ChannelBridge {
    type Result = ResponseActFuture<Self, Result<ReceiptsApplied, ChannelError>>;
    fn handle(&mut self, msg: ApplyReceipts, _: &mut Context<Self>) -> Self::Result {
        let outbox = self.outbox.clone();
        let audit = self.links.audit.clone();
        let db = self.db.clone();
        let channel = self.config.name.clone();
        let now_ms = (self.clock)().saturating_mul(1000);
        Box::pin(
            async move {
                let mut out = ReceiptsApplied::default();
                for status in &msg.statuses {
                    let Some((id, part, receipt)) = receipt_of(status) else {
                        out.ignored += 1;
                        continue;
                    };
                    // Every status names the part by Meta's id for it.
                    let ids = [(part, status.message_id.clone())];
                    note_provider_ids(&outbox, &channel, id, &ids);
                    let planned = outbox
                        .plan_receipt(id, part, &receipt, now_ms)?
                        .filter(|t| t.before.channel == channel);
                    let Some(transition) = planned else {
                        out.ignored += 1;
                        continue;
                    };
                    match audit_and_commit(&outbox, &audit, transition).await? {
                        Some(record) => {
                            reply_event(&db, &record, now_ms);
                            out.applied += 1;
                        }
                        None => out.ignored += 1,
                    }
                }
                if out.applied > 0 {
                    outbox.sync().await?;
                }
                Ok(out)
            }
            .into_actor(self),
        )
    }
}

impl Handler<GetOutbox> for ChannelBridge {
    type Result = Result<Vec<OutboxRecord>, ChannelError>;
    fn handle(&mut self, msg: GetOutbox, _: &mut Context<Self>) -> Self::Result {
        Ok(self
            .outbox
            .list(&self.config.name, msg.before, msg.limit.clamp(1, 500))?)
    }
}
