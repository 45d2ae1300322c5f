//! The outbound [`Dispatcher`] (DESIGN "Data flow" step 6): one actor per channel that takes
//! due replies from its [`ChannelBridge`]'s durable outbox, delivers them over HTTP (the
//! WhatsApp Cloud API or a signed bridge's `outbound_url`), and records each attempt's result.
//!
//! Owns: the HTTP delivery of replies — the request shape per target ([`send`]), the
//! in-flight limit and the poll schedule.
//! Must not: decide retries or keep the schedule (the outbox does, from the [`AttemptResult`]
//! recorded through [`RecordDelivery`]), send a reply whose attempt is not durably recorded
//! (it sends only what [`TakeDueReplies`] answered, and the bridge answers after the sync),
//! talk to a bridge through a stale `Addr` (it holds a [`Slot`]), block its mailbox while a
//! request is in flight, or put the access token, the bridge secret, the outbound URL's path or
//! message text into a log line or an error.
//!
//! Flow: every [`DispatchSettings::poll_interval`] (and on [`DispatchNow`]) the dispatcher asks
//! the bridge for at most as many due replies as it has free in-flight slots
//! ([`TakeDueReplies`], excluding the replies it is still sending): the bridge records each as
//! `sending` (attempt n) and syncs before answering. Each reply is sent by a future spawned on
//! the actor's context, starting at its first part not yet accepted; the result is classified
//! with [`super::outbox::classify_http`] / [`super::outbox::classify_network_error`] (429 and
//! `Retry-After` included) and recorded with [`RecordDelivery`] (attempt number and parts
//! accepted). When a poll filled every free slot, the next completion polls again at once.
//!
//! Exactly-once delivery across crashes: every send carries the reply's id — WhatsApp as
//! `biz_opaque_callback_data` (`kafclaw-<id>`, `kafclaw-<id>.<part>` for later parts), which
//! Meta echoes in its status webhooks; bridges as the `Idempotency-Key: kafclaw-<id>` header
//! (and the body's `message_id`). A reply whose answer was lost (the process died after the
//! provider accepted it) stays `sending` and is sent again only after the channel's
//! `resend_after` (WhatsApp: `channels.whatsapp.resend_after_seconds`, default 30 s) has passed
//! without a receipt for it; bridges drop the repeat by its key.
//!
//! The bridge's outbound request (documented for bridge authors in
//! `deploy/bridge-example/README.md`):
//!
//! ```text
//! POST {outbound_url}
//! Content-Type: application/json
//! Idempotency-Key: kafclaw-<outbox id>
//! X-KafClaw-Timestamp: <unix seconds>
//! X-KafClaw-Signature: v1=<hex HMAC-SHA256(secret, "{timestamp}.{raw body}")>
//!
//! {"message_id":"kafclaw-<outbox id>","chat_id":"…","text":"…","reply_to":"…"}
//! ```
//!
//! `reply_to` (the bridge's own inbound `message_id` this answers) is omitted when there is none.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::actor::{ChannelBridge, ChannelError, RecordDelivery, TakeDueReplies};
use super::outbox::{AttemptResult, OutboxError, OutboxRecord, OutboxState};
use crate::supervisor::{Ping, Pong, Slot};
use crate::vault::SecretValue;

mod send;
#[cfg(test)]
mod tests;

pub(crate) use send::{bearer, error_reason};
pub use send::{bridge_body, BridgeOutbound};

/// Default time between two polls of the outbox.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Default number of replies in flight at once, per channel.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;
/// Timeout of one HTTP request (connect, send, answer) of the client from [`http_client`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A clock in unix **milliseconds** (injected by tests to step over `Retry-After`).
pub type MillisClock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Where a channel's replies go.
#[derive(Clone)]
pub enum DispatchTarget {
    /// The WhatsApp Cloud API: `POST {graph_base}/{api_version}/{phone_number_id}/messages`
    /// with `Authorization: Bearer <access_token>`, one request per part of the text.
    WhatsApp {
        /// `channels.whatsapp.graph_base`, e.g. `https://graph.facebook.com` (tests: a local
        /// server).
        graph_base: String,
        /// `channels.whatsapp.api_version`, e.g. `v21.0`.
        api_version: String,
        /// `channels.whatsapp.phone_number_id`: the business number replies are sent from.
        phone_number_id: String,
        /// `channels.whatsapp.access_token`, from the vault.
        access_token: SecretValue,
    },
    /// A signed bridge: `POST {outbound_url}` with the JSON body of [`BridgeOutbound`], signed
    /// like inbound deliveries (`X-KafClaw-Timestamp`, `X-KafClaw-Signature: v1=…`).
    Bridge {
        /// `channels.bridges.<name>.outbound_url`. Treated as a secret beyond its origin (a
        /// webhook URL often carries a token in its path): only the origin is ever shown.
        outbound_url: String,
        /// `channels.bridges.<name>.secret`, from the vault.
        secret: SecretValue,
    },
}

impl std::fmt::Debug for DispatchTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DispatchTarget::WhatsApp {
                graph_base,
                api_version,
                phone_number_id,
                access_token,
            } => f
                .debug_struct("WhatsApp")
                .field("graph_base", &origin_of(graph_base))
                .field("api_version", api_version)
                .field("phone_number_id", phone_number_id)
                .field("access_token", access_token)
                .finish(),
            DispatchTarget::Bridge {
                outbound_url,
                secret,
            } => f
                .debug_struct("Bridge")
                .field("outbound_url", &origin_of(outbound_url))
                .field("secret", secret)
                .finish(),
        }
    }
}

/// `scheme://host:port/…` of a URL, never its path or query; a placeholder when it does not
/// parse.
pub(crate) fn origin_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => format!("{}/…", parsed.origin().ascii_serialization()),
        Err(_) => "<invalid url>".to_string(),
    }
}

/// How a dispatcher paces itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DispatchSettings {
    /// Time between two polls of the outbox when nobody sends [`DispatchNow`]; bounds the
    /// latency of retries and of replies enqueued without a [`DispatchNow`].
    pub poll_interval: Duration,
    /// Replies sent at once (at least 1); more wait in the outbox, not in memory.
    pub max_in_flight: usize,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self {
            poll_interval: DEFAULT_POLL_INTERVAL,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// What can go wrong in a dispatcher (never carries a secret, a URL path or message text).
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The target cannot be used (bad URL, empty secret, a token not sendable in a header).
    #[error("invalid dispatch target: {0}")]
    InvalidTarget(&'static str),
    /// The HTTP client could not be built.
    #[error("cannot build the http client: {0}")]
    Client(String),
    /// The channel bridge is not running (not started yet, or restarting).
    #[error("channel bridge is unavailable")]
    BridgeUnavailable,
    /// The channel bridge answered with an error.
    #[error(transparent)]
    Channel(#[from] ChannelError),
}

/// The HTTP client dispatchers should share: 30 s timeout per request, no redirects (a
/// redirect would carry the bearer token or a signed body to another origin), rustls.
pub fn http_client() -> Result<reqwest::Client, DispatchError> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("kafclaw/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| DispatchError::Client(send::error_reason(&e)))
}

/// Polls the outbox now instead of at the next tick (the gateway sends it after
/// `EnqueueReply`). Answers how many replies this poll started sending: 0 when none was due,
/// every in-flight slot was taken, or the channel may not send (quarantined, disabled).
#[derive(Message, Clone, Copy, Debug, Default)]
#[rtype(result = "Result<usize, DispatchError>")]
pub struct DispatchNow;

/// The gateway is stopping: answers once no reply is being sent by this dispatcher. Replies
/// already due when it arrives (after a [`DispatchNow`] sent before it) go out first; from
/// then on the timer no longer starts sends (retries wait in the durable outbox for the next
/// start). The caller bounds the wait.
#[derive(Message, Clone, Copy, Debug, Default)]
#[rtype(result = "()")]
pub struct FinishSends;

/// Unix milliseconds from the system clock.
pub fn unix_now_ms() -> i64 {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    i64::try_from(nanos).unwrap_or(i64::MAX)
}

/// Delivers one channel's replies. Supervise it like the bridge (it answers [`Ping`]); a fresh
/// instance keeps nothing but the in-flight set (progress is in the outbox).
pub struct Dispatcher {
    /// Builds and sends the requests; shared with the spawned deliveries.
    sender: Arc<send::Sender>,
    /// The channel's bridge, current across its restarts.
    bridge: Slot<ChannelBridge>,
    /// Pace and limit.
    settings: DispatchSettings,
    /// Now, unix ms (for the outbox schedule and the bridge timestamp).
    clock: MillisClock,
    /// Replies being sent right now.
    in_flight: usize,
    /// Slots promised to polls still waiting for the bridge's answer, so that overlapping polls
    /// never exceed `max_in_flight` together.
    reserved: usize,
    /// Outbox ids being sent right now (excluded from polls: a reply whose lease ran out
    /// while it was still in flight is not started a second time).
    active: HashSet<u64>,
    /// The last poll filled every free slot: poll again as soon as one frees up.
    backlog: bool,
    /// A timer-driven poll is running (ticks do not pile up behind a slow bridge).
    ticking: bool,
    /// The bridge was unreachable at the last poll (logged once per outage).
    bridge_down: bool,
    /// [`FinishSends`] arrived: timer ticks no longer poll.
    stopping: bool,
    /// Answered once nothing is in flight or reserved.
    idle_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Dispatcher {
    /// A dispatcher for `target`, taking replies from `bridge` and sending them with `http`
    /// (normally [`http_client`]), with the default settings and the system clock.
    pub fn new(
        target: DispatchTarget,
        bridge: Slot<ChannelBridge>,
        http: reqwest::Client,
    ) -> Result<Self, DispatchError> {
        Ok(Self {
            sender: Arc::new(send::Sender::new(target, http)?),
            bridge,
            settings: DispatchSettings::default(),
            clock: Arc::new(unix_now_ms),
            in_flight: 0,
            reserved: 0,
            active: HashSet::new(),
            backlog: false,
            ticking: false,
            bridge_down: false,
            stopping: false,
            idle_waiters: Vec::new(),
        })
    }

    /// Answers the [`FinishSends`] waiters once nothing is being sent or about to be.
    fn notify_if_idle(&mut self) {
        if self.in_flight == 0 && self.reserved == 0 {
            for waiter in self.idle_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    /// The same dispatcher with other settings (`max_in_flight` 0 counts as 1).
    pub fn with_settings(mut self, mut settings: DispatchSettings) -> Self {
        settings.max_in_flight = settings.max_in_flight.max(1);
        self.settings = settings;
        self
    }

    /// The same dispatcher with another clock (unix milliseconds).
    pub fn with_clock(mut self, clock: MillisClock) -> Self {
        self.clock = clock;
        self
    }

    /// Takes due replies for the free slots and starts sending each.
    fn poll(&mut self) -> ResponseActFuture<Self, Result<usize, DispatchError>> {
        let free = self
            .settings
            .max_in_flight
            .saturating_sub(self.in_flight + self.reserved);
        if free == 0 {
            self.backlog = true;
            return Box::pin(fut::ready(Ok(0)));
        }
        let Some(addr) = self.bridge.addr() else {
            self.note_bridge(false);
            return Box::pin(fut::ready(Err(DispatchError::BridgeUnavailable)));
        };
        self.reserved += free;
        let take = TakeDueReplies {
            now_ms: (self.clock)(),
            limit: free,
            exclude: self.active.iter().copied().collect(),
        };
        Box::pin(
            addr.send(take)
                .into_actor(self)
                .map(move |answer, this, ctx| {
                    this.reserved -= free;
                    let records = match answer {
                        Ok(Ok(records)) => records,
                        Ok(Err(error)) => {
                            this.notify_if_idle();
                            return Err(DispatchError::Channel(error));
                        }
                        Err(_) => {
                            this.note_bridge(false);
                            this.notify_if_idle();
                            return Err(DispatchError::BridgeUnavailable);
                        }
                    };
                    this.note_bridge(true);
                    this.backlog = records.len() >= free;
                    let mut started = 0;
                    for record in records {
                        if this.active.contains(&record.id) {
                            // Taken before our poll's exclusion list reached the bridge; the
                            // attempt in flight records the outcome.
                            continue;
                        }
                        this.start(record, ctx);
                        started += 1;
                    }
                    this.notify_if_idle();
                    Ok(started)
                }),
        )
    }

    /// Logs a change of the bridge's reachability once.
    fn note_bridge(&mut self, reachable: bool) {
        if reachable && self.bridge_down {
            tracing::info!(
                target_kind = self.sender.kind(),
                "channel bridge reachable again"
            );
        } else if !reachable && !self.bridge_down {
            tracing::warn!(
                target_kind = self.sender.kind(),
                "channel bridge unavailable; replies wait in the outbox"
            );
        }
        self.bridge_down = !reachable;
    }

    /// Sends `record` in a spawned future, then records the result with the bridge.
    fn start(&mut self, record: OutboxRecord, ctx: &mut Context<Self>) {
        let id = record.id;
        self.in_flight += 1;
        self.active.insert(id);
        let sender = Arc::clone(&self.sender);
        let clock = Arc::clone(&self.clock);
        let bridge = self.bridge.clone();
        let channel = record.channel.clone();
        let attempt = record.attempts;
        let work = async move {
            let delivery = sender.deliver(&record, &clock).await;
            if delivery.result == AttemptResult::Sent {
                crate::testpoint::hit("send.accepted");
            }
            let recorded = match bridge.addr() {
                None => Err(DispatchError::BridgeUnavailable),
                Some(addr) => match addr
                    .send(RecordDelivery {
                        id,
                        attempt,
                        result: delivery.result.clone(),
                        parts_accepted: delivery.parts_done,
                        provider_ids: delivery.provider_ids.clone(),
                        now_ms: clock(),
                    })
                    .await
                {
                    Ok(answer) => answer.map_err(DispatchError::from),
                    Err(_) => Err(DispatchError::BridgeUnavailable),
                },
            };
            (delivery, recorded)
        };
        ctx.spawn(
            work.into_actor(self)
                .map(move |(delivery, recorded), this, ctx| {
                    this.in_flight -= 1;
                    this.active.remove(&id);
                    log_outcome(&channel, id, &delivery, recorded);
                    if this.backlog {
                        this.backlog = false;
                        this.spawn_poll(ctx);
                    }
                    this.notify_if_idle();
                }),
        );
    }

    /// Polls in the background, logging a failure.
    fn spawn_poll(&mut self, ctx: &mut Context<Self>) {
        let poll = self.poll().map(|result, _, _| {
            if let Err(error) = result {
                tracing::debug!(%error, "outbox poll failed");
            }
        });
        ctx.spawn(poll);
    }

    /// One timer tick: polls unless the previous tick's poll is still waiting.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.ticking || self.stopping {
            return;
        }
        self.ticking = true;
        let poll = self.poll().map(|result, this: &mut Self, _| {
            this.ticking = false;
            if let Err(error) = result {
                tracing::debug!(%error, "outbox poll failed");
            }
        });
        ctx.spawn(poll);
    }
}

/// Logs the outcome of one attempt (no text, no secret).
fn log_outcome(
    channel: &str,
    id: u64,
    delivery: &send::Delivery,
    recorded: Result<OutboxRecord, DispatchError>,
) {
    match recorded {
        Ok(record) => match &record.state {
            OutboxState::Queued | OutboxState::Sending => {
                if let AttemptResult::Transient { reason, .. } = &delivery.result {
                    tracing::warn!(
                        channel,
                        id,
                        attempts = record.attempts,
                        next_attempt_at = record.next_attempt_at,
                        reason = reason.as_str(),
                        "reply not delivered; retry scheduled"
                    );
                }
            }
            OutboxState::Sent | OutboxState::Delivered | OutboxState::Read => {
                tracing::debug!(channel, id, attempts = record.attempts, "reply delivered");
            }
            OutboxState::Failed { status, reason, .. } => {
                tracing::warn!(
                    channel,
                    id,
                    attempts = record.attempts,
                    status = status.map(i64::from),
                    reason = reason.as_str(),
                    "reply given up"
                );
            }
        },
        Err(DispatchError::Channel(ChannelError::Outbox(
            error @ (OutboxError::Finished(_) | OutboxError::UnknownId(_)),
        ))) => {
            // A receipt finished it meanwhile, or a newer attempt superseded this one.
            tracing::debug!(channel, id, %error, "delivery result not recorded");
        }
        Err(error) => {
            // The reply stays `sending`; it is sent again after the channel's resend wait
            // (the bridge's key or a receipt keeps that from doubling it).
            tracing::warn!(channel, id, %error, "delivery result could not be recorded");
        }
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.tick(ctx);
        ctx.run_interval(self.settings.poll_interval, Self::tick);
    }
}

impl Handler<DispatchNow> for Dispatcher {
    type Result = ResponseActFuture<Self, Result<usize, DispatchError>>;

    fn handle(&mut self, _: DispatchNow, _: &mut Context<Self>) -> Self::Result {
        self.poll()
    }
}

impl Handler<FinishSends> for Dispatcher {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: FinishSends, _: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.idle_waiters.push(tx);
        self.notify_if_idle();
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<Ping> for Dispatcher {
    type Result = Pong;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Pong {
        Pong
    }
}

#[cfg(any(test, feature = "test-hooks"))]
impl Handler<crate::supervisor::InjectPanic> for Dispatcher {
    type Result = ();
    fn handle(&mut self, msg: crate::supervisor::InjectPanic, _: &mut Context<Self>) {
        panic!("injected panic: {}", msg.0);
    }
}
