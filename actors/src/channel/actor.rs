//! The `ChannelBridge` actor: one per channel, the single writer of that channel's inbox.
//!
//! Owns: the channel's state (`running | observe | quarantined | disabled | failed`, persisted
//! under `state/<channel>` so it survives restarts), its run-time allow/block lists, its inbox
//! queue and hand-over to the agent, pairing requests, and the gate in front of its outbox.
//! Must not: verify signatures (the HTTP edge does, before sending [`AcceptInbound`]), send
//! HTTP, or put message text, codes or secrets into the audit log or a log line.
//!
//! Flow of [`AcceptInbound`]: de-duplicate on `channel + message_id`; evaluate the access
//! policy; dropped messages are audited *first* (so a failed audit leaves nothing stored and the
//! redelivery is audited again), then stored without text; admitted messages are stored as
//! `pending` or `held` depending on the state; the store is flushed; only then is the answer
//! sent (the webhook's 200). Messages are handed to the agent only after the flush that made
//! them durable, in arrival order, through `Recipient<DeliverToAgent>`, and only after their
//! claim (`processing`) is synced; the agent's `Ok` answer marks them done, and that is synced
//! too. A refusal or a closed mailbox puts them back to `pending` and retries later. A message
//! handed over again after a crash is safe: the agent's turn journal is keyed on
//! `channel + message_id`, and the outbox keeps one reply per inbound message.
//!
//! States: `running` hands everything on; `observe` hands on owners only and holds the rest;
//! `quarantined`, `disabled` and `failed` hand on nothing and send nothing, but still store,
//! acknowledge and hold every message. Decision (disabled): a disabled channel keeps accepting
//! and holding, exactly like quarantine, so nothing is ever lost; `enable` (= running) replays the
//! held messages in order. (Refusing at the HTTP edge instead would make senders retry or give
//! up, and a message given up on is lost.) Releasing to `running` replays held messages in
//! arrival order, each exactly once (each is moved back to `pending` once, then claimed once).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use super::access::{evaluate, normalize_sender, Access, ChannelPolicy, DropReason, RuntimeLists};
use super::backlog::Backlog;
use super::content::Handling;
use super::inbox::{Accepted, Inbox, InboxCounts, InboxRecord, InboxState, NewEntry};
use super::media::MediaFetcher;
use super::outbox::{Backoff, OutboundMessage, Outbox, OutboxError};
use super::pairing::{Pairing, PairingError, PairingRequest, PairingSettings, PendingPairing};
use super::session::{encode_component, session_key};
use super::{ChannelKind, InboundMessage, SenderKind};
use crate::audit::{AppendRecord, AuditError, AuditKind};
use crate::drain::Drain;
use crate::store::{KvTree, StoreDb, StoreError, TreeName};
use crate::supervisor::{Ping, Pong};

mod prepare;
mod replies;
pub use replies::*;

/// A message claimed for the agent, with its hand-over.
struct Claimed {
    /// The claimed record.
    record: InboxRecord,
    /// What the agent gets (its text replaced by the prepared text, if prepared now).
    delivery: DeliverToAgent,
    /// Work in flight until the message is done or pending again.
    work: crate::drain::Work,
}

/// How long to wait before handing messages on again after the agent refused one.
const AGENT_RETRY: Duration = Duration::from_secs(1);
/// At most this many messages are claimed per hand-over (one sync covers their claims).
const MAX_HANDOVER: usize = 64;

/// At most this many messages of one channel are handed to the agent and not yet answered;
/// the rest wait, durable, in the inbox. Without it a sender faster than its session's turns
/// had every message queued as a waiting turn in memory (heaptrack under the growth soak:
/// 33 MB of waiting `RunTurn` futures after 90 s).
pub(crate) const MAX_AWAITING: usize = 128;

/// The state of a channel (CONTRACT §3.3 `GET /api/v1/channels`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelState {
    /// Normal service.
    #[default]
    Running,
    /// Staged release: owners are handed on, everyone else is held.
    Observe,
    /// Nothing handed on or sent; everything accepted is held.
    Quarantined,
    /// Turned off by an operator; everything accepted is held (see the module docs).
    Disabled,
    /// Given up on by the supervisor; everything accepted is held.
    Failed,
}

impl ChannelState {
    /// The state's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelState::Running => "running",
            ChannelState::Observe => "observe",
            ChannelState::Quarantined => "quarantined",
            ChannelState::Disabled => "disabled",
            ChannelState::Failed => "failed",
        }
    }

    /// Whether a message from a sender of `kind` is handed to the agent in this state.
    pub fn hands_on(self, kind: SenderKind) -> bool {
        match self {
            ChannelState::Running => true,
            ChannelState::Observe => kind == SenderKind::Owner,
            ChannelState::Quarantined | ChannelState::Disabled | ChannelState::Failed => false,
        }
    }

    /// Whether replies may be sent in this state.
    pub fn sends(self) -> bool {
        matches!(self, ChannelState::Running | ChannelState::Observe)
    }
}

/// The persisted state record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StoredState {
    state: ChannelState,
    since: String,
    reason: Option<String>,
}

/// Everything a channel needs from configuration.
#[derive(Clone, Debug)]
pub struct ChannelConfig {
    /// The channel's name (`whatsapp`, or the bridge's name).
    pub name: String,
    /// Its transport.
    pub kind: ChannelKind,
    /// Its account for session keys (WhatsApp: phone number id; bridges: the bridge name).
    pub account: String,
    /// Its access policy.
    pub policy: ChannelPolicy,
    /// Its pairing limits.
    pub pairing: PairingSettings,
    /// Its outbox retry schedule.
    pub backoff: Backoff,
    /// How long a reply found `sending` (its answer lost) waits for a receipt before it is
    /// sent again (`channels.whatsapp.resend_after_seconds`).
    pub resend_after: Duration,
    /// How messages beyond plain text are handled.
    pub messages: MessageOptions,
    /// The backlog bound (`store.max_pending`), shared with the webhook edge that checks it.
    pub backlog: Arc<Backlog>,
}

/// How a channel handles messages beyond plain text (`channels.whatsapp.react_to_reactions`,
/// `channels.whatsapp.unsupported_reply`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageOptions {
    /// Reactions and system events get a turn of the agent (default: only noted in the
    /// session, no model call).
    pub react_to_reactions: bool,
    /// The reply to a message type that cannot be handled (empty: none).
    pub unsupported_reply: String,
    /// The origin bridge attachments may be fetched from (the bridge's `outbound_url`
    /// origin); `None`: URL attachments are not fetched.
    pub attachment_origin: Option<String>,
}

/// The default `channels.whatsapp.unsupported_reply`.
pub const DEFAULT_UNSUPPORTED_REPLY: &str =
    "Sorry, I can't read this type of message. Please send it as text.";

impl Default for MessageOptions {
    fn default() -> Self {
        Self {
            react_to_reactions: false,
            unsupported_reply: DEFAULT_UNSUPPORTED_REPLY.to_string(),
            attachment_origin: None,
        }
    }
}

/// Where the channel sends what it produces.
#[derive(Clone)]
pub struct ChannelLinks {
    /// The agent, which takes admitted messages.
    pub agent: Recipient<DeliverToAgent>,
    /// The audit chainer.
    pub audit: Recipient<AppendRecord>,
    /// The incident monitor, told about dropped unknown senders (optional).
    pub unknown_senders: Option<Recipient<UnknownSenderDropped>>,
    /// The stop gate: every message handed to the agent is work in flight until it is marked
    /// done or put back; once closed, nothing more is handed over (it waits in the inbox).
    pub drain: Drain,
    /// Saves media and attachments of admitted messages before their hand-over (`None`: they
    /// are handed on marked unavailable).
    pub media: Option<MediaFetcher>,
}

/// An admitted message handed to the agent. The agent answers `Ok` once it has processed (or
/// durably taken over) the message; its idempotency key is `channel + message_id`, because after
/// a crash the same message may be handed over again.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<(), DeliveryRefused>")]
pub struct DeliverToAgent {
    /// The channel.
    pub channel: String,
    /// The session key (per the channel's scope).
    pub session_key: String,
    /// Owner or external.
    pub sender_kind: SenderKind,
    /// The normalised sender.
    pub sender_id: String,
    /// The chat to reply in.
    pub chat_id: String,
    /// The channel's message id (with `channel`, the idempotency key).
    pub message_id: String,
    /// The text (for messages beyond plain text, their rendering: see
    /// [`super::content::Content::render`]).
    pub text: String,
    /// A trace id derived from channel and message id (stable across redeliveries).
    pub trace_id: String,
    /// Whether the agent answers it with a turn; `false`: it is only noted in the session
    /// and on the timeline (reactions and system events), no model call, no reply.
    pub respond: bool,
}

/// The agent could not take a message now (it is retried later).
#[derive(Debug, Clone, thiserror::Error)]
#[error("agent refused the message: {0}")]
pub struct DeliveryRefused(pub String);

/// Signal for the incident monitor: a message from an unknown sender was dropped.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct UnknownSenderDropped {
    /// The channel.
    pub channel: String,
    /// The normalised sender.
    pub sender_id: String,
}

/// What can go wrong in a channel. Any of these means "not acknowledged".
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log could not record the action (fail closed).
    #[error("audit log unavailable: {0}")]
    Audit(String),
    /// A pairing operation failed.
    #[error(transparent)]
    Pairing(#[from] PairingError),
    /// An outbox operation failed.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

impl From<AuditError> for ChannelError {
    fn from(error: AuditError) -> Self {
        ChannelError::Audit(error.to_string())
    }
}

/// What happened to an inbound message (answered only after it is durable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InboundOutcome {
    /// Stored under `seq`; `held` when the state keeps it back for now.
    Accepted {
        /// Its inbox sequence number.
        seq: u64,
        /// True when it is held (quarantine, observe, disabled).
        held: bool,
    },
    /// Seen before; nothing changed.
    Duplicate,
    /// Refused by the access policy, with the reason (`unknown_sender`, `pairing_required`, …).
    Dropped {
        /// Why.
        reason: String,
    },
}

/// A verified, parsed inbound message for this channel.
#[derive(Message, Debug)]
#[rtype(result = "Result<InboundOutcome, ChannelError>")]
pub struct AcceptInbound {
    /// The message.
    pub message: InboundMessage,
}

/// Changes the channel's state (quarantine, observe, release, disable, enable).
#[derive(Message, Debug)]
#[rtype(result = "Result<ChannelInfo, ChannelError>")]
pub struct SetChannelState {
    /// The new state.
    pub state: ChannelState,
    /// Why (shown in `GET /api/v1/channels`, audited).
    pub reason: Option<String>,
    /// Who asked: a token name, `cli`, `incident-monitor`, `supervisor`.
    pub actor: String,
}

/// The channel's status.
#[derive(Message, Debug)]
#[rtype(result = "Result<ChannelInfo, ChannelError>")]
pub struct GetChannelInfo;

/// A channel's status (`GET /api/v1/channels`; `restarts` is filled in from the supervisor).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChannelInfo {
    /// The channel's name.
    pub name: String,
    /// Its transport.
    pub kind: ChannelKind,
    /// Its state.
    pub state: ChannelState,
    /// When it entered that state (RFC 3339).
    pub since: String,
    /// Why, if a reason was given.
    pub reason: Option<String>,
    /// Restarts, when the caller knows them (the actor does not).
    pub restarts: Option<u32>,
    /// New inbound messages since this instance started.
    pub inbound_total: u64,
    /// Messages from unknown senders dropped or sent to pairing since this instance started.
    pub unknown_senders_total: u64,
    /// Inbox queue lengths.
    pub queue: InboxCounts,
}

/// Blocks a sender at run time (persisted).
#[derive(Message, Debug)]
#[rtype(result = "Result<(), ChannelError>")]
pub struct BlockSender {
    /// The sender (normalised for the channel).
    pub sender: String,
}

/// Lifts a run-time block (a configured denylist entry stays).
#[derive(Message, Debug)]
#[rtype(result = "Result<(), ChannelError>")]
pub struct UnblockSender {
    /// The sender.
    pub sender: String,
}

/// Allows a sender at run time (persisted).
#[derive(Message, Debug)]
#[rtype(result = "Result<(), ChannelError>")]
pub struct AllowSender {
    /// The sender.
    pub sender: String,
}

/// Approves a pairing code: its sender is allowed, audited; returns the sender.
#[derive(Message, Debug)]
#[rtype(result = "Result<String, ChannelError>")]
pub struct ApprovePairing {
    /// The code as typed.
    pub code: String,
    /// Who approved.
    pub actor: String,
}

/// Denies a pairing code, audited; returns the sender.
#[derive(Message, Debug)]
#[rtype(result = "Result<String, ChannelError>")]
pub struct DenyPairing {
    /// The code as typed.
    pub code: String,
    /// Who denied.
    pub actor: String,
}

/// The channel's unexpired pairing requests, oldest first.
#[derive(Message, Debug)]
#[rtype(result = "Result<Vec<PendingPairing>, ChannelError>")]
pub struct ListPairing;

/// One channel.
pub struct ChannelBridge {
    /// Configuration.
    config: ChannelConfig,
    /// The store (flushes, ids).
    db: StoreDb,
    /// The `channels` tree (state record, run-time lists).
    tree: KvTree,
    /// The inbox.
    inbox: Inbox,
    /// The outbox.
    outbox: Outbox,
    /// Pending pairing requests.
    pairing: Pairing,
    /// Run-time allow/block lists.
    runtime: RuntimeLists,
    /// The current state.
    state: StoredState,
    /// Agent, audit, incident monitor.
    links: ChannelLinks,
    /// New inbound messages since start.
    inbound_total: u64,
    /// Unknown-sender messages since start.
    unknown_senders_total: u64,
    /// Messages with `seq` up to this are durable and may be handed on.
    flushed_seq: u64,
    /// A retry of the hand-over is already scheduled.
    retry_scheduled: bool,
    /// Claims are being made durable; the next pump waits for them (arrival order).
    handing_over: bool,
    /// A pump was asked for while handing over: pump again when it is done.
    pump_again: bool,
    /// Claimed and handed to the agent (or about to be), not yet answered: at most
    /// [`MAX_AWAITING`]; an answer frees a place and pumps again.
    awaiting: usize,
    /// Unix seconds (injected by tests).
    clock: fn() -> i64,
}

fn state_key(channel: &str) -> String {
    format!("state/{}", encode_component(channel))
}

/// Records a channel's state without its actor (used when the supervisor gave up on the actor:
/// the channel comes back quarantined after a process restart, with the reason).
pub fn persist_state(
    db: &StoreDb,
    channel: &str,
    state: ChannelState,
    reason: Option<String>,
) -> Result<(), ChannelError> {
    let tree = db.tree(TreeName::Channels)?;
    tree.put_json(
        state_key(channel),
        &StoredState {
            state,
            since: crate::clock::now_rfc3339(),
            reason,
        },
    )?;
    db.flush_blocking()?;
    Ok(())
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(crate::clock::to_rfc3339)
        .unwrap_or_else(|_| unix.to_string())
}

/// A stable trace id for a message: the same on every redelivery.
pub fn trace_id(channel: &str, message_id: &str) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(channel.as_bytes());
    hasher.update(&[0]);
    hasher.update(message_id.as_bytes());
    hasher.finalize().to_hex()[..32].to_string()
}

impl ChannelBridge {
    /// A channel over the store, with its persisted state (a new channel starts `running`).
    pub fn new(
        config: ChannelConfig,
        db: &StoreDb,
        links: ChannelLinks,
    ) -> Result<Self, ChannelError> {
        Self::with_clock(config, db, links, crate::clock::unix_now)
    }

    /// Like [`ChannelBridge::new`] with an injected clock (unix seconds).
    pub fn with_clock(
        config: ChannelConfig,
        db: &StoreDb,
        links: ChannelLinks,
        clock: fn() -> i64,
    ) -> Result<Self, ChannelError> {
        let tree = db.tree(TreeName::Channels)?;
        let state = tree
            .get_json(state_key(&config.name))?
            .unwrap_or(StoredState {
                state: ChannelState::Running,
                since: rfc3339(clock()),
                reason: None,
            });
        let runtime = RuntimeLists::load(&tree, &config.name)?;
        let inbox = Inbox::new(db)?;
        let outbox = Outbox::new(db, config.backoff.clone())?;
        let pairing = Pairing::new(tree.clone(), config.pairing.clone());
        // Everything stored before this instance is as durable as it will get: allow it.
        let flushed_seq = db.next_id()?;
        Ok(Self {
            config,
            db: db.clone(),
            tree,
            inbox,
            outbox,
            pairing,
            runtime,
            state,
            links,
            inbound_total: 0,
            unknown_senders_total: 0,
            flushed_seq,
            retry_scheduled: false,
            handing_over: false,
            pump_again: false,
            awaiting: 0,
            clock,
        })
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    fn info(&self) -> Result<ChannelInfo, ChannelError> {
        Ok(ChannelInfo {
            name: self.config.name.clone(),
            kind: self.config.kind,
            state: self.state.state,
            since: self.state.since.clone(),
            reason: self.state.reason.clone(),
            restarts: None,
            inbound_total: self.inbound_total,
            unknown_senders_total: self.unknown_senders_total,
            queue: self.inbox.counts(self.name())?,
        })
    }

    /// Holds what the current state must not hand on, releases what it may.
    fn reconcile_queue(&self) -> Result<(), StoreError> {
        let state = self.state.state;
        let name = self.name();
        let may = |r: &InboxRecord| r.sender_kind.is_some_and(|k| state.hands_on(k));
        self.inbox.hold_pending(name, |r| !may(r))?;
        self.inbox.release_held(name, may)?;
        Ok(())
    }

    /// Claims every durable pending message the state hands on, makes the claims durable,
    /// then hands them to the agent in arrival order (one hand-over batch at a time); nothing
    /// once the gateway is stopping (the messages stay pending for the next start).
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.handing_over {
            self.pump_again = true;
            return;
        }
        let mut deliveries = Vec::new();
        loop {
            if self.awaiting >= MAX_AWAITING {
                // Full: the answer that frees a place pumps again.
                break;
            }
            let Some(work) = self.links.drain.begin() else {
                break;
            };
            let record = match self.inbox.claim_next(&self.config.name, self.flushed_seq) {
                Ok(Some(record)) => record,
                Ok(None) => break,
                Err(error) => {
                    tracing::error!(channel = %self.config.name, %error, "inbox read failed");
                    self.schedule_retry(ctx);
                    break;
                }
            };
            match self.delivery_for(&record) {
                Some(delivery) => {
                    self.awaiting += 1;
                    deliveries.push(Claimed {
                        record,
                        delivery,
                        work,
                    })
                }
                None => {
                    // Not for the agent now: back to pending, then held by the reconciliation.
                    let _ = self.inbox.unclaim(&record.channel, record.seq);
                    if let Err(error) = self.reconcile_queue() {
                        tracing::error!(channel = %self.config.name, %error, "inbox update failed");
                    }
                }
            }
            if deliveries.len() >= MAX_HANDOVER {
                self.pump_again = true;
                break;
            }
        }
        if deliveries.is_empty() {
            return;
        }
        self.handing_over = true;
        let inbox = self.inbox.clone();
        let synced = async move { inbox.sync().await };
        ctx.spawn(synced.into_actor(self).map(move |synced, this, ctx| {
            this.handing_over = false;
            match synced {
                Ok(()) => {
                    this.prepare_and_hand_over(deliveries, ctx);
                    return;
                }
                Err(error) => {
                    tracing::error!(channel = %this.config.name, %error, "claims not durable; handing on later");
                    for claimed in &deliveries {
                        let _ = this.inbox.unclaim(&this.config.name, claimed.record.seq);
                    }
                    this.awaiting = this.awaiting.saturating_sub(deliveries.len());
                    this.schedule_retry(ctx);
                }
            }
            if std::mem::take(&mut this.pump_again) {
                this.pump(ctx);
            }
        }));
    }

    /// The hand-over of a claimed record, if the current state passes it to the agent.
    fn delivery_for(&self, record: &InboxRecord) -> Option<DeliverToAgent> {
        let kind = record.sender_kind?;
        if !self.state.state.hands_on(kind) {
            return None;
        }
        Some(DeliverToAgent {
            channel: record.channel.clone(),
            session_key: record.session_key.clone()?,
            sender_kind: kind,
            sender_id: record.message.sender_id.clone(),
            chat_id: record.message.chat_id.clone(),
            message_id: record.message.message_id.clone(),
            text: record.message.text.clone()?,
            trace_id: trace_id(&record.channel, &record.message.message_id),
            respond: self.handling(&record.message) == Handling::Turn,
        })
    }

    /// What the channel does with `message` (plain text and records stored before typed
    /// content: a turn).
    fn handling(&self, message: &InboundMessage) -> Handling {
        message.content.as_ref().map_or(Handling::Turn, |c| {
            c.handling(self.config.messages.react_to_reactions)
        })
    }

    /// Prepares the claimed messages that need it (media saved, reply context looked up; the
    /// prepared text is stored and synced, so every later hand-over carries the same text),
    /// then hands them to the agent in claim order. The next pump waits until all of them are
    /// handed over, so a slow download never lets a later message overtake an earlier one.
    fn prepare_and_hand_over(&mut self, claimed: Vec<Claimed>, ctx: &mut Context<Self>) {
        let agent = self.links.agent.clone();
        let preparer = prepare::Preparer {
            inbox: self.inbox.clone(),
            outbox: self.outbox.clone(),
            media: self.links.media.clone(),
            attachment_origin: self.config.messages.attachment_origin.clone(),
        };
        self.handing_over = true;
        let chain = async move {
            let mut requests = Vec::with_capacity(claimed.len());
            let mut unready = Vec::new();
            for Claimed {
                record,
                mut delivery,
                work,
            } in claimed
            {
                match preparer.prepare(&record).await {
                    Ok(Some(text)) => delivery.text = text,
                    Ok(None) => {}
                    Err(error) => {
                        tracing::error!(channel = %record.channel, %error, "prepared message not stored; handing on later");
                        unready.push((record.seq, work));
                        continue;
                    }
                }
                // `send` queues the message at once: the agent sees them in claim order.
                requests.push((record.seq, agent.send(delivery), work));
            }
            (requests, unready)
        };
        ctx.spawn(
            chain
                .into_actor(self)
                .map(|(requests, unready), this, ctx| {
                    this.handing_over = false;
                    for (seq, request, work) in requests {
                        this.await_answer(seq, request, work, ctx);
                    }
                    if !unready.is_empty() {
                        this.awaiting = this.awaiting.saturating_sub(unready.len());
                        for (seq, _work) in unready {
                            let _ = this.inbox.unclaim(&this.config.name, seq);
                        }
                        this.schedule_retry(ctx);
                    }
                    if std::mem::take(&mut this.pump_again) {
                        this.pump(ctx);
                    }
                }),
        );
    }

    /// Waits for the agent's answer to one handed-over message; its `Ok` marks the message
    /// done. The hand-over is work in flight (`work`) until the inbox says done or pending again.
    fn await_answer(
        &mut self,
        seq: u64,
        request: actix::dev::RecipientRequest<DeliverToAgent>,
        work: crate::drain::Work,
        ctx: &mut Context<Self>,
    ) {
        ctx.spawn(request.into_actor(self).map(move |answer, this, ctx| {
            let _work = work;
            let name = this.config.name.clone();
            let was_full = this.awaiting >= MAX_AWAITING;
            this.awaiting = this.awaiting.saturating_sub(1);
            match answer {
                Ok(Ok(())) => this.finish(seq, ctx),
                Ok(Err(_)) if this.links.drain.is_closed() => {
                    // Stopping: the message waits in the inbox for the next start.
                    let _ = this.inbox.unclaim(&name, seq);
                }
                Ok(Err(refused)) => {
                    tracing::warn!(channel = %name, seq, %refused, "agent refused a message");
                    let _ = this.inbox.unclaim(&name, seq);
                    this.schedule_retry(ctx);
                }
                Err(error) => {
                    tracing::warn!(channel = %name, seq, %error, "agent unreachable");
                    let _ = this.inbox.unclaim(&name, seq);
                    this.schedule_retry(ctx);
                }
            }
            if was_full && !this.links.drain.is_closed() {
                this.pump(ctx);
            }
        }));
    }

    /// Marks a processed message done and makes that durable (a crash before the sync hands
    /// it on again; the agent's journal answers that from the finished turn).
    fn finish(&mut self, seq: u64, ctx: &mut Context<Self>) {
        let name = self.config.name.clone();
        match self.inbox.mark_done(&name, seq) {
            Ok(true) => self.config.backlog.finished(),
            Ok(false) => {}
            Err(error) => {
                tracing::error!(channel = %name, %error, "inbox update failed");
                return;
            }
        }
        crate::testpoint::hit("inbox.marked_done");
        let inbox = self.inbox.clone();
        ctx.spawn(
            async move {
                if let Err(error) = inbox.sync().await {
                    tracing::warn!(channel = %name, %error, "inbox sync failed");
                }
            }
            .into_actor(self),
        );
    }

    fn schedule_retry(&mut self, ctx: &mut Context<Self>) {
        if self.retry_scheduled {
            return;
        }
        self.retry_scheduled = true;
        ctx.run_later(AGENT_RETRY, |this, ctx| {
            this.retry_scheduled = false;
            this.pump(ctx);
        });
    }

    fn audit_record(&self, kind: AuditKind, actor: &str, data: serde_json::Value) -> AppendRecord {
        AppendRecord {
            kind,
            actor: actor.to_string(),
            subject: format!("channel:{}", self.config.name),
            data,
        }
    }

    fn signal_unknown(&self, sender_id: &str) {
        if let Some(monitor) = &self.links.unknown_senders {
            let signal = UnknownSenderDropped {
                channel: self.config.name.clone(),
                sender_id: sender_id.to_string(),
            };
            if !crate::incident::offer_signal(monitor.try_send(signal)) {
                tracing::warn!(channel = %self.config.name, "incident monitor did not take a signal");
            }
        }
    }
}

impl Actor for ChannelBridge {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let name = self.config.name.clone();
        let recovered = self
            .inbox
            .recover(&name)
            .and_then(|n| self.reconcile_queue().map(|()| n));
        match recovered {
            Ok(n) if n > 0 => tracing::info!(channel = %name, n, "unprocessed messages recovered"),
            Ok(_) => {}
            Err(error) => tracing::error!(channel = %name, %error, "inbox recovery failed"),
        }
        match self.inbox.counts(&name) {
            Ok(c) => self.config.backlog.set(c.pending + c.held + c.processing),
            Err(error) => tracing::error!(channel = %name, %error, "inbox count failed"),
        }
        // Replies whose send was cut short wait a full resend wait for a receipt from now.
        let resend = i64::try_from(self.config.resend_after.as_millis()).unwrap_or(i64::MAX);
        let until = (self.clock)().saturating_mul(1000).saturating_add(resend);
        match self.outbox.defer_sending(&name, until) {
            Ok(n) if n > 0 => {
                tracing::info!(channel = %name, n, "replies cut short wait for a receipt before they are sent again")
            }
            Ok(_) => {}
            Err(error) => tracing::error!(channel = %name, %error, "outbox recovery failed"),
        }
        self.pump(ctx);
    }
}

impl Handler<Ping> for ChannelBridge {
    type Result = Pong;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Pong {
        Pong
    }
}

#[cfg(any(test, feature = "test-hooks"))]
impl Handler<crate::supervisor::InjectPanic> for ChannelBridge {
    type Result = ();
    fn handle(&mut self, msg: crate::supervisor::InjectPanic, _: &mut Context<Self>) {
        panic!("injected panic: {}", msg.0);
    }
}

/// What the store step of an accept does after the (optional) audit.
enum Plan {
    /// Store as admitted (pending, held, or done with the `unsupported` reply queued).
    Admit {
        /// How it is stored.
        entry: NewEntry,
        /// A reply to queue with it (the `unsupported` reply), once per message id.
        reply: Option<OutboundMessage>,
    },
    /// Store as dropped, audit first.
    Drop {
        /// The reason.
        reason: String,
        /// Whether it counts as unknown-sender activity (incident signal).
        signal: bool,
        /// The audit record, if the drop is audited.
        audit: Option<AppendRecord>,
        /// A reply to queue (pairing code).
        reply: Option<OutboundMessage>,
    },
}

impl Handler<AcceptInbound> for ChannelBridge {
    type Result = ResponseActFuture<Self, Result<InboundOutcome, ChannelError>>;

    fn handle(&mut self, msg: AcceptInbound, _: &mut Context<Self>) -> Self::Result {
        let now = (self.clock)();
        let name = self.config.name.clone();
        let mut message = msg.message;
        message.sender_id = normalize_sender(self.config.kind, &message.sender_id);
        let plan = match self.plan(&message, now) {
            Ok(Some(plan)) => plan,
            // Duplicate: still wait for a flush (the original may not be durable yet).
            Ok(None) => {
                let db = self.db.clone();
                return Box::pin(
                    async move { db.flush().await.map(|()| InboundOutcome::Duplicate) }
                        .into_actor(self)
                        .map(|res, _, _| res.map_err(ChannelError::from)),
                );
            }
            Err(error) => return Box::pin(fut::ready(Err(error))),
        };
        let inbox = self.inbox.clone();
        let outbox = self.outbox.clone();
        let db = self.db.clone();
        let audit = self.links.audit.clone();
        let pairing = self.pairing.clone();
        let sender_id = message.sender_id.clone();
        let reply_parts = match &plan {
            Plan::Drop {
                reply: Some(reply), ..
            }
            | Plan::Admit {
                reply: Some(reply), ..
            } => self.parts(&reply.text),
            _ => 1,
        };
        let work = async move {
            let (entry, dropped, admitted_reply) = match plan {
                Plan::Admit { entry, reply } => (entry, None, reply),
                Plan::Drop {
                    reason,
                    signal,
                    audit: record,
                    reply,
                } => {
                    if let Some(record) = record {
                        let audited = match audit.send(record).await {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err(error)) => Err(ChannelError::from(error)),
                            Err(error) => Err(ChannelError::Audit(error.to_string())),
                        };
                        if let Err(error) = audited {
                            if reply.is_some() {
                                // The code was neither audited nor sent: forget it.
                                pairing.withdraw(&name, &message.sender_id)?;
                            }
                            return Err(error);
                        }
                    }
                    let entry = NewEntry {
                        state: InboxState::Dropped,
                        sender_kind: None,
                        session_key: None,
                        reason: Some(reason.clone()),
                    };
                    (entry, Some((reason, signal, reply)), None)
                }
            };
            let held = entry.state == InboxState::Held;
            let unfinished = !entry.state.is_finished();
            let accepted = inbox.accept(&name, &message, entry, now)?;
            if let (Accepted::New(_), Some((_, _, Some(reply)))) = (accepted, &dropped) {
                outbox.enqueue(&name, reply.clone(), reply_parts, now.saturating_mul(1000))?;
            }
            // The outbox keeps one reply per message id: a redelivery queues nothing more.
            if let (Accepted::New(_), Some(reply)) = (accepted, admitted_reply) {
                outbox.enqueue(&name, reply, reply_parts, now.saturating_mul(1000))?;
            }
            db.flush().await?;
            Ok::<_, ChannelError>((accepted, held, unfinished, dropped))
        };
        Box::pin(work.into_actor(self).map(move |res, this, ctx| {
            let (accepted, held, unfinished, dropped) = res?;
            let seq = match accepted {
                Accepted::Duplicate(_) => return Ok(InboundOutcome::Duplicate),
                Accepted::New(seq) => seq,
            };
            if unfinished {
                this.config.backlog.added();
            }
            this.inbound_total += 1;
            this.flushed_seq = this.flushed_seq.max(seq);
            match dropped {
                Some((reason, signal, _)) => {
                    if signal {
                        this.signal_unknown(&sender_id);
                    }
                    Ok(InboundOutcome::Dropped { reason })
                }
                None => {
                    this.pump(ctx);
                    Ok(InboundOutcome::Accepted { seq, held })
                }
            }
        }))
    }
}

impl ChannelBridge {
    /// Decides what to do with a message; `None` for a duplicate.
    fn plan(&mut self, message: &InboundMessage, now: i64) -> Result<Option<Plan>, ChannelError> {
        if self
            .inbox
            .known(&self.config.name, &message.message_id)?
            .is_some()
        {
            return Ok(None);
        }
        let access = evaluate(
            self.config.kind,
            &self.config.policy,
            &self.runtime,
            message,
        );
        let drop_plan = |this: &mut Self, reason: DropReason| {
            let signal = reason.is_unknown_sender();
            if signal {
                this.unknown_senders_total += 1;
            }
            Plan::Drop {
                reason: reason.as_str().to_string(),
                signal,
                audit: Some(this.audit_record(
                    AuditKind::ChannelDropped,
                    &message.sender_id,
                    serde_json::json!({
                        "sender": message.sender_id,
                        "message_id": message.message_id,
                        "reason": reason.as_str(),
                    }),
                )),
                reply: None,
            }
        };
        Ok(Some(match access {
            Access::Owner | Access::Allowed => {
                let kind = access.sender_kind().unwrap_or(SenderKind::External);
                let session = session_key(
                    self.config.policy.session_scope,
                    &self.config.name,
                    &self.config.account,
                    &message.chat_id,
                    message.thread_id.as_deref(),
                    &message.sender_id,
                );
                let handling = self.handling(message);
                let (state, reason) = if message.text.is_none() {
                    (InboxState::Done, Some("not_text".to_string()))
                } else if handling == Handling::Unsupported {
                    (InboxState::Done, Some("unsupported".to_string()))
                } else if self.state.state.hands_on(kind) {
                    (InboxState::Pending, None)
                } else {
                    (InboxState::Held, None)
                };
                let reply = (handling == Handling::Unsupported
                    && !self.config.messages.unsupported_reply.is_empty())
                .then(|| OutboundMessage {
                    to: message.chat_id.clone(),
                    text: self.config.messages.unsupported_reply.clone(),
                    reply_to: Some(message.message_id.clone()),
                    session: Some(session.clone()),
                });
                Plan::Admit {
                    entry: NewEntry {
                        state,
                        sender_kind: Some(kind),
                        session_key: Some(session),
                        reason,
                    },
                    reply,
                }
            }
            Access::MentionRequired => Plan::Drop {
                reason: "mention_required".into(),
                signal: false,
                audit: None,
                reply: None,
            },
            Access::Drop(reason) => drop_plan(self, reason),
            Access::NeedsPairing => {
                match self.pairing.request(
                    &self.config.name,
                    &message.sender_id,
                    &message.chat_id,
                    now,
                )? {
                    PairingRequest::Full => drop_plan(self, DropReason::PairingFull),
                    PairingRequest::Existing(_) => {
                        self.unknown_senders_total += 1;
                        Plan::Drop {
                            reason: "pairing_required".into(),
                            signal: false,
                            audit: None,
                            reply: None,
                        }
                    }
                    PairingRequest::Issued(request) => {
                        self.unknown_senders_total += 1;
                        let text = format!(
                            "KafClaw: access is not configured for you. Pairing code: {}. \
                             Ask the owner to approve it with: kafclaw pairing approve {} {}",
                            request.code.expose(),
                            self.config.name,
                            request.code.expose()
                        );
                        Plan::Drop {
                            reason: "pairing_required".into(),
                            signal: false,
                            audit: Some(self.audit_record(
                                AuditKind::PairingRequested,
                                &message.sender_id,
                                serde_json::json!({
                                    "sender": message.sender_id,
                                    "expires_at": rfc3339(request.expires_at),
                                }),
                            )),
                            reply: Some(OutboundMessage {
                                to: message.chat_id.clone(),
                                text,
                                reply_to: Some(message.message_id.clone()),
                                session: None,
                            }),
                        }
                    }
                }
            }
        }))
    }

    /// Audits `record`, then flushes, then answers `value`.
    fn audited<T: 'static>(
        &self,
        record: Option<AppendRecord>,
        value: T,
    ) -> ResponseActFuture<Self, Result<T, ChannelError>> {
        let audit = self.links.audit.clone();
        let db = self.db.clone();
        Box::pin(
            async move {
                if let Some(record) = record {
                    audit
                        .send(record)
                        .await
                        .map_err(|e| ChannelError::Audit(e.to_string()))??;
                }
                db.flush().await?;
                Ok(value)
            }
            .into_actor(self),
        )
    }
}

impl Handler<SetChannelState> for ChannelBridge {
    type Result = ResponseActFuture<Self, Result<ChannelInfo, ChannelError>>;

    fn handle(&mut self, msg: SetChannelState, ctx: &mut Context<Self>) -> Self::Result {
        let from = self.state.state;
        let stored = StoredState {
            state: msg.state,
            since: rfc3339((self.clock)()),
            reason: msg.reason.clone(),
        };
        let applied = self
            .tree
            .put_json(state_key(self.name()), &stored)
            .map_err(ChannelError::from)
            .and_then(|()| {
                self.state = stored;
                self.reconcile_queue().map_err(ChannelError::from)
            })
            .and_then(|()| self.info());
        let info = match applied {
            Ok(info) => info,
            Err(error) => return Box::pin(fut::ready(Err(error))),
        };
        tracing::warn!(channel = %self.config.name, from = from.as_str(), to = msg.state.as_str(), "channel state changed");
        self.pump(ctx);
        let record = self.audit_record(
            AuditKind::ChannelStateChanged,
            &msg.actor,
            serde_json::json!({
                "from": from.as_str(),
                "to": msg.state.as_str(),
                "reason": msg.reason,
            }),
        );
        self.audited(Some(record), info)
    }
}

impl Handler<GetChannelInfo> for ChannelBridge {
    type Result = Result<ChannelInfo, ChannelError>;
    fn handle(&mut self, _: GetChannelInfo, _: &mut Context<Self>) -> Self::Result {
        self.info()
    }
}

impl ChannelBridge {
    fn change_lists(
        &mut self,
        change: impl FnOnce(&mut RuntimeLists, ChannelKind),
    ) -> ResponseActFuture<Self, Result<(), ChannelError>> {
        let mut lists = self.runtime.clone();
        change(&mut lists, self.config.kind);
        if let Err(error) = lists.save(&self.tree, &self.config.name) {
            return Box::pin(fut::ready(Err(error.into())));
        }
        self.runtime = lists;
        self.audited(None, ())
    }
}

impl Handler<BlockSender> for ChannelBridge {
    type Result = ResponseActFuture<Self, Result<(), ChannelError>>;
    fn handle(&mut self, msg: BlockSender, _: &mut Context<Self>) -> Self::Result {
        self.change_lists(|lists, kind| lists.block(kind, &msg.sender))
    }
}

impl Handler<UnblockSender> for ChannelBridge {
    type Result = ResponseActFuture<Self, Result<(), ChannelError>>;
    fn handle(&mut self, msg: UnblockSender, _: &mut Context<Self>) -> Self::Result {
        self.change_lists(|lists, kind| lists.unblock(kind, &msg.sender))
    }
}

impl Handler<AllowSender> for ChannelBridge {
    type Result = ResponseActFuture<Self, Result<(), ChannelError>>;
    fn handle(&mut self, msg: AllowSender, _: &mut Context<Self>) -> Self::Result {
        self.change_lists(|lists, kind| lists.allow(kind, &msg.sender))
    }
}

impl Handler<ApprovePairing> for ChannelBridge {
    type Result = ResponseActFuture<Self, Result<String, ChannelError>>;
    fn handle(&mut self, msg: ApprovePairing, _: &mut Context<Self>) -> Self::Result {
        let now = (self.clock)();
        let approved = self.pairing.approve(&self.config.name, &msg.code, now);
        let request = match approved {
            Ok(request) => request,
            Err(error) => return Box::pin(fut::ready(Err(error.into()))),
        };
        let mut lists = self.runtime.clone();
        lists.allow(self.config.kind, &request.sender_id);
        let notice = OutboundMessage {
            to: request.chat_id.clone(),
            text: "Pairing approved. You can now send messages to KafClaw.".into(),
            reply_to: None,
            session: None,
        };
        let parts = self.parts(&notice.text);
        let saved = lists.save(&self.tree, &self.config.name).and_then(|()| {
            self.outbox
                .enqueue(&self.config.name, notice, parts, now.saturating_mul(1000))
        });
        if let Err(error) = saved {
            return Box::pin(fut::ready(Err(error.into())));
        }
        self.runtime = lists;
        let record = self.audit_record(
            AuditKind::PairingDecided,
            &msg.actor,
            serde_json::json!({ "sender": request.sender_id, "decision": "approved" }),
        );
        self.audited(Some(record), request.sender_id)
    }
}

impl Handler<DenyPairing> for ChannelBridge {
    type Result = ResponseActFuture<Self, Result<String, ChannelError>>;
    fn handle(&mut self, msg: DenyPairing, _: &mut Context<Self>) -> Self::Result {
        let now = (self.clock)();
        let request = match self.pairing.deny(&self.config.name, &msg.code, now) {
            Ok(request) => request,
            Err(error) => return Box::pin(fut::ready(Err(error.into()))),
        };
        let record = self.audit_record(
            AuditKind::PairingDecided,
            &msg.actor,
            serde_json::json!({ "sender": request.sender_id, "decision": "denied" }),
        );
        self.audited(Some(record), request.sender_id)
    }
}

impl Handler<ListPairing> for ChannelBridge {
    type Result = Result<Vec<PendingPairing>, ChannelError>;
    fn handle(&mut self, _: ListPairing, _: &mut Context<Self>) -> Self::Result {
        Ok(self
            .pairing
            .pending(Some(&self.config.name), (self.clock)())?)
    }
}
