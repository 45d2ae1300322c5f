//! The supervisor: one-for-one restarts with exponential backoff and a restart budget.
//!
//! Owns: the list of supervised children, their current addresses ([`Slot`]), their restart
//! history, and the decision to give up on one (CONTRACT §6).
//! Must not: know what a child does.
//!
//! actix does not restart an actor whose handler panicked: the panic unwinds out of the
//! actor's future, the runtime drops it, and its mailbox closes silently. The supervisor
//! therefore watches every child itself: a frequent, message-free `connected()` check catches
//! a dead mailbox (panic or stop) within [`SupervisorSettings::watch_interval`], and a periodic
//! [`Ping`] with a deadline catches a child that is alive but stuck. A failed child is replaced
//! by a *fresh* instance from its factory (never the old struct), and its [`Slot`] is updated so
//! every holder of the slot reaches the new one.
//!
//! The supervisor also publishes what `/healthz` answers on a [`HealthBoard`] (the failing
//! permanent children, and a heartbeat each watch tick), so a health probe reads shared state
//! instead of queueing a message behind everything else on the supervisor's thread.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::backoff::Backoff;

#[cfg(test)]
mod tests;

/// Liveness probe every supervised actor answers.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "Pong")]
pub struct Ping;

/// The answer to [`Ping`].
#[derive(MessageResponse, Clone, Copy, Debug)]
pub struct Pong;

/// Test-only: makes the receiving child panic inside a handler.
#[cfg(any(test, feature = "test-hooks"))]
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct InjectPanic(pub String);

/// Restart budget and timing (`supervisor.*` settings).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SupervisorSettings {
    /// A child failing more than this many times within `window_seconds` is given up on.
    pub max_restarts: u32,
    /// The window of the restart budget.
    pub window_seconds: u64,
    /// First restart delay (before jitter); doubles with each failure inside the window.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Upper bound of the restart delay.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

fn default_initial_backoff_ms() -> u64 {
    25
}
fn default_max_backoff_ms() -> u64 {
    2_000
}

impl Default for SupervisorSettings {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window_seconds: 60,
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
        }
    }
}

impl SupervisorSettings {
    /// How often the supervisor checks that every child's mailbox is still open.
    pub fn watch_interval(&self) -> Duration {
        Duration::from_millis(100)
    }
    /// How often a child must answer a [`Ping`], and how long it may take.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(5)
    }
    /// The restart delay after `failures_in_window` failures: the shared [`Backoff`] schedule
    /// from `initial_backoff_ms` to `max_backoff_ms`, with jitter (the budget, not the
    /// schedule, decides when to give up).
    fn backoff(&self, failures_in_window: usize) -> Duration {
        let failures = u32::try_from(failures_in_window).unwrap_or(u32::MAX);
        Backoff::new(self.initial_backoff_ms, self.max_backoff_ms, u32::MAX).delay(failures)
    }
}

/// What happens when a child exhausts its restart budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    /// The vault, the audit chainer, the store, …: the process exits 1 (fail closed; the
    /// service manager restarts it).
    Permanent,
    /// A channel bridge: it is quarantined with the failure reason; the process runs on.
    Quarantine,
}

/// Where a child stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildState {
    /// Its mailbox is open and it answers pings.
    Running,
    /// It failed and a fresh instance is scheduled.
    Restarting,
    /// It exhausted its budget (permanent child: the process is stopping).
    Failed,
    /// It exhausted its budget and was quarantined.
    Quarantined,
}

/// The closed set of things the supervisor reports (to `run`, to the audit log, to tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SupervisionEvent {
    /// A child's failure was noticed.
    ChildFailed { name: String, reason: String },
    /// A fresh instance of a child is running.
    ChildRestarted { name: String, restarts: u32 },
    /// A child exhausted its budget; `policy` says what follows.
    GaveUp {
        name: String,
        policy: RestartPolicy,
        reason: String,
    },
}

/// The current address of a supervised actor. Cloned freely; after a restart every clone
/// hands out the fresh instance's address, so nobody keeps talking to a dead mailbox.
pub struct Slot<A: Actor> {
    current: Arc<RwLock<Option<Addr<A>>>>,
}

impl<A: Actor> Clone for Slot<A> {
    fn clone(&self) -> Self {
        Self {
            current: Arc::clone(&self.current),
        }
    }
}

impl<A: Actor> Default for Slot<A> {
    fn default() -> Self {
        Self {
            current: Arc::new(RwLock::new(None)),
        }
    }
}

impl<A: Actor> Slot<A> {
    /// A slot already holding `addr` (for tests and unsupervised tools).
    pub fn with(addr: Addr<A>) -> Self {
        let slot = Self::default();
        slot.set(addr);
        slot
    }
    /// The current address, or `None` before the first start.
    pub fn addr(&self) -> Option<Addr<A>> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
    fn set(&self, addr: Addr<A>) {
        match self.current.write() {
            Ok(mut guard) => *guard = Some(addr),
            Err(poisoned) => *poisoned.into_inner() = Some(addr),
        }
    }
}

/// A way to build a fresh instance of a child.
pub type Factory<A> = Box<dyn Fn() -> Result<A, String> + Send>;

/// What the supervisor needs from a child, whatever its actor type.
trait Child {
    fn start_fresh(&mut self) -> Result<(), String>;
    fn is_connected(&self) -> bool;
    fn ping(&self, deadline: Duration) -> BoxFuture<'static, bool>;
}

struct ActorChild<A>
where
    A: Actor<Context = Context<A>> + Handler<Ping>,
{
    factory: Factory<A>,
    slot: Slot<A>,
}

impl<A> Child for ActorChild<A>
where
    A: Actor<Context = Context<A>> + Handler<Ping>,
{
    fn start_fresh(&mut self) -> Result<(), String> {
        let actor = (self.factory)()?;
        self.slot.set(actor.start());
        Ok(())
    }
    fn is_connected(&self) -> bool {
        self.slot.addr().is_some_and(|a| a.connected())
    }
    fn ping(&self, deadline: Duration) -> BoxFuture<'static, bool> {
        let addr = self.slot.addr();
        Box::pin(async move {
            match addr {
                Some(addr) => matches!(addr.send(Ping).timeout(deadline).await, Ok(Pong)),
                None => false,
            }
        })
    }
}

/// A child that runs on its own arbiter (thread), so its work does not queue behind the
/// actors on the system arbiter.
struct ArbiterChild<A>
where
    A: Actor<Context = Context<A>> + Handler<Ping> + Send,
{
    factory: Factory<A>,
    slot: Slot<A>,
    arbiter: actix::Arbiter,
}

impl<A> Child for ArbiterChild<A>
where
    A: Actor<Context = Context<A>> + Handler<Ping> + Send,
{
    fn start_fresh(&mut self) -> Result<(), String> {
        let actor = (self.factory)()?;
        let addr = A::start_in_arbiter(&self.arbiter.handle(), move |_| actor);
        self.slot.set(addr);
        Ok(())
    }
    fn is_connected(&self) -> bool {
        self.slot.addr().is_some_and(|a| a.connected())
    }
    fn ping(&self, deadline: Duration) -> BoxFuture<'static, bool> {
        let addr = self.slot.addr();
        Box::pin(async move {
            match addr {
                Some(addr) => matches!(addr.send(Ping).timeout(deadline).await, Ok(Pong)),
                None => false,
            }
        })
    }
}

/// One entry of the supervision tree.
struct ChildEntry {
    name: String,
    policy: RestartPolicy,
    child: Box<dyn Child>,
    state: ChildState,
    restarts: u32,
    failures: VecDeque<Instant>,
    last_failure: Option<String>,
    last_failure_at: Option<String>,
}

/// A child's public status (`GET /api/v1/supervisor`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ChildStatus {
    /// Child name (`store`, `vault`, `audit`, `channel:whatsapp`, …).
    pub name: String,
    /// Its state.
    pub state: ChildState,
    /// Whether exhausting its budget stops the process or quarantines it.
    pub policy: RestartPolicy,
    /// Restarts since the process started.
    pub restarts: u32,
    /// The last failure's reason.
    pub last_failure: Option<String>,
    /// When the last failure happened (RFC 3339).
    pub last_failure_at: Option<String>,
    /// Nested children (none yet: every child is a leaf).
    pub children: Vec<ChildStatus>,
}

/// What `/healthz` answers, published by the supervisor and read without a message.
///
/// The supervisor rewrites the failing list whenever a child changes state and beats the
/// heartbeat on every watch tick; a reader sees `supervisor` failing when the heartbeat is
/// older than the ping deadline (the supervisor's thread is stuck, or it stopped), the same
/// deadline the supervisor gives its children.
#[derive(Clone)]
pub struct HealthBoard {
    inner: Arc<HealthInner>,
}

struct HealthInner {
    /// Names of permanent children that are not running.
    failing: RwLock<Arc<[String]>>,
    /// Milliseconds since `epoch` of the last heartbeat (`u64::MAX`: stopped).
    beat_ms: AtomicU64,
    epoch: Instant,
    /// Older heartbeats mean the supervisor is not running.
    stale_after: Duration,
}

impl std::fmt::Debug for HealthBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthBoard")
            .field("failing", &self.failing())
            .finish()
    }
}

impl HealthBoard {
    fn new(stale_after: Duration) -> Self {
        Self {
            inner: Arc::new(HealthInner {
                failing: RwLock::new(Arc::from(Vec::new())),
                beat_ms: AtomicU64::new(0),
                epoch: Instant::now(),
                stale_after,
            }),
        }
    }

    fn beat(&self) {
        let ms = self.inner.epoch.elapsed().as_millis() as u64;
        // A stopped supervisor stays stopped.
        let _ = self
            .inner
            .beat_ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                (old != u64::MAX).then_some(ms.max(old))
            });
    }

    fn stopped(&self) {
        self.inner.beat_ms.store(u64::MAX, Ordering::Release);
    }

    fn publish(&self, failing: Vec<String>) {
        let mut slot = self
            .inner
            .failing
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if slot.as_ref() != failing.as_slice() {
            *slot = Arc::from(failing);
        }
    }

    /// Names of what is not healthy now (empty when healthy): the permanent children that
    /// are not running, or `supervisor` when the supervisor itself stopped or is stuck.
    pub fn failing(&self) -> Vec<String> {
        let beat = self.inner.beat_ms.load(Ordering::Acquire);
        let now = self.inner.epoch.elapsed().as_millis() as u64;
        if beat == u64::MAX || now.saturating_sub(beat) > self.inner.stale_after.as_millis() as u64
        {
            return vec!["supervisor".to_string()];
        }
        self.inner
            .failing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .to_vec()
    }
}

/// The supervisor actor. Build it with [`SupervisorBuilder`].
pub struct Supervisor {
    settings: SupervisorSettings,
    children: Vec<ChildEntry>,
    events: mpsc::UnboundedSender<SupervisionEvent>,
    started_at: Instant,
    health: HealthBoard,
}

/// Collects the children in start order (startup order lives in one function, `run`).
pub struct SupervisorBuilder {
    settings: SupervisorSettings,
    children: Vec<ChildEntry>,
    health: HealthBoard,
}

impl SupervisorBuilder {
    /// An empty tree.
    pub fn new(settings: SupervisorSettings) -> Self {
        Self {
            health: HealthBoard::new(settings.ping_interval()),
            settings,
            children: Vec::new(),
        }
    }

    /// The board on which the supervisor will publish its health (for `/healthz`).
    pub fn health(&self) -> HealthBoard {
        self.health.clone()
    }

    /// Adds a child; returns the slot through which the rest of the system reaches it.
    pub fn child<A>(&mut self, name: &str, policy: RestartPolicy, factory: Factory<A>) -> Slot<A>
    where
        A: Actor<Context = Context<A>> + Handler<Ping>,
    {
        self.child_in(Slot::default(), name, policy, factory)
    }

    /// Adds a child whose slot was made beforehand (when others need the slot before the
    /// child's factory can be written, e.g. a router and the channels that call it).
    pub fn child_in<A>(
        &mut self,
        slot: Slot<A>,
        name: &str,
        policy: RestartPolicy,
        factory: Factory<A>,
    ) -> Slot<A>
    where
        A: Actor<Context = Context<A>> + Handler<Ping>,
    {
        self.children.push(ChildEntry {
            name: name.to_string(),
            policy,
            child: Box::new(ActorChild {
                factory,
                slot: slot.clone(),
            }),
            state: ChildState::Restarting,
            restarts: 0,
            failures: VecDeque::new(),
            last_failure: None,
            last_failure_at: None,
        });
        slot
    }

    /// Adds a child that runs on a dedicated arbiter (its own thread): for actors with steady
    /// work of their own (channel bridges) that should not queue behind everyone else.
    pub fn child_on_own_thread<A>(
        &mut self,
        slot: Slot<A>,
        name: &str,
        policy: RestartPolicy,
        factory: Factory<A>,
    ) -> Slot<A>
    where
        A: Actor<Context = Context<A>> + Handler<Ping> + Send,
    {
        self.children.push(ChildEntry {
            name: name.to_string(),
            policy,
            child: Box::new(ArbiterChild {
                factory,
                slot: slot.clone(),
                arbiter: actix::Arbiter::new(),
            }),
            state: ChildState::Restarting,
            restarts: 0,
            failures: VecDeque::new(),
            last_failure: None,
            last_failure_at: None,
        });
        slot
    }

    /// Starts every child in order, then the supervisor. Fails if a child cannot even be
    /// built the first time (the caller reports it and exits).
    pub fn start(
        mut self,
    ) -> Result<(Addr<Supervisor>, mpsc::UnboundedReceiver<SupervisionEvent>), String> {
        for entry in &mut self.children {
            entry
                .child
                .start_fresh()
                .map_err(|e| format!("{} did not start: {e}", entry.name))?;
            entry.state = ChildState::Running;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let supervisor = Supervisor {
            settings: self.settings,
            children: self.children,
            events: tx,
            started_at: Instant::now(),
            health: self.health,
        };
        supervisor.publish_health();
        Ok((supervisor.start(), rx))
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.publish_health();
        ctx.run_interval(self.settings.watch_interval(), |this, ctx| {
            this.check_mailboxes(ctx);
            this.health.beat();
        });
        ctx.run_interval(self.settings.ping_interval(), |this, ctx| {
            this.ping_children(ctx)
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.health.stopped();
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.health.stopped();
    }
}

impl Supervisor {
    /// Publishes the failing permanent children and beats the heartbeat.
    fn publish_health(&self) {
        self.health.publish(
            self.children
                .iter()
                .filter(|c| c.policy == RestartPolicy::Permanent && c.state != ChildState::Running)
                .map(|c| c.name.clone())
                .collect(),
        );
        self.health.beat();
    }

    fn check_mailboxes(&mut self, ctx: &mut Context<Self>) {
        for index in 0..self.children.len() {
            let entry = &self.children[index];
            if entry.state == ChildState::Running && !entry.child.is_connected() {
                self.child_failed(index, "stopped or panicked (mailbox closed)".into(), ctx);
            }
        }
    }

    fn ping_children(&mut self, ctx: &mut Context<Self>) {
        let deadline = self.settings.ping_interval();
        for (index, entry) in self.children.iter().enumerate() {
            if entry.state != ChildState::Running {
                continue;
            }
            let probe = entry.child.ping(deadline);
            let name = entry.name.clone();
            ctx.spawn(
                fut::wrap_future(probe).map(move |alive, this: &mut Self, ctx| {
                    let still_same = this
                        .children
                        .get(index)
                        .is_some_and(|e| e.name == name && e.state == ChildState::Running);
                    if !alive && still_same {
                        this.child_failed(index, "did not answer a ping in time".into(), ctx);
                    }
                }),
            );
        }
    }

    fn child_failed(&mut self, index: usize, reason: String, ctx: &mut Context<Self>) {
        let window = Duration::from_secs(self.settings.window_seconds);
        let max = self.settings.max_restarts as usize;
        let now = Instant::now();
        let entry = &mut self.children[index];
        tracing::error!(child = %entry.name, %reason, "supervised child failed");
        entry.failures.push_back(now);
        while entry
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            entry.failures.pop_front();
        }
        entry.last_failure = Some(reason.clone());
        entry.last_failure_at = Some(crate::clock::now_rfc3339());
        let _ = self.events.send(SupervisionEvent::ChildFailed {
            name: entry.name.clone(),
            reason: reason.clone(),
        });
        if entry.failures.len() > max {
            entry.state = match entry.policy {
                RestartPolicy::Permanent => ChildState::Failed,
                RestartPolicy::Quarantine => ChildState::Quarantined,
            };
            tracing::error!(
                child = %entry.name,
                failures = entry.failures.len(),
                window_seconds = self.settings.window_seconds,
                "restart budget exhausted; giving up"
            );
            let _ = self.events.send(SupervisionEvent::GaveUp {
                name: entry.name.clone(),
                policy: entry.policy,
                reason,
            });
            self.publish_health();
            return;
        }
        entry.state = ChildState::Restarting;
        let delay = self.settings.backoff(entry.failures.len());
        self.publish_health();
        ctx.run_later(delay, move |this, ctx| this.restart(index, ctx));
    }

    fn restart(&mut self, index: usize, ctx: &mut Context<Self>) {
        let entry = &mut self.children[index];
        if entry.state != ChildState::Restarting {
            return;
        }
        match entry.child.start_fresh() {
            Ok(()) => {
                entry.state = ChildState::Running;
                entry.restarts += 1;
                tracing::warn!(child = %entry.name, restarts = entry.restarts, "child restarted");
                let _ = self.events.send(SupervisionEvent::ChildRestarted {
                    name: entry.name.clone(),
                    restarts: entry.restarts,
                });
                self.publish_health();
            }
            Err(reason) => {
                self.child_failed(index, format!("restart failed: {reason}"), ctx);
            }
        }
    }

    fn status(&self) -> Vec<ChildStatus> {
        self.children
            .iter()
            .map(|e| ChildStatus {
                name: e.name.clone(),
                state: e.state,
                policy: e.policy,
                restarts: e.restarts,
                last_failure: e.last_failure.clone(),
                last_failure_at: e.last_failure_at.clone(),
                children: Vec::new(),
            })
            .collect()
    }
}

/// The supervision tree, rooted at the supervisor itself.
#[derive(Message)]
#[rtype(result = "SupervisionTree")]
pub struct GetSupervisionTree;

/// Answer to [`GetSupervisionTree`].
#[derive(MessageResponse, Clone, Debug, Serialize)]
pub struct SupervisionTree {
    /// Seconds since the supervisor started.
    pub uptime_seconds: u64,
    /// The root node (`supervisor`) with every child.
    pub root: ChildStatus,
}

impl SupervisionTree {
    /// Names of permanent children that are not running (empty when healthy).
    pub fn unhealthy(&self) -> Vec<String> {
        self.root
            .children
            .iter()
            .filter(|c| c.policy == RestartPolicy::Permanent && c.state != ChildState::Running)
            .map(|c| c.name.clone())
            .collect()
    }
}

impl Handler<GetSupervisionTree> for Supervisor {
    type Result = SupervisionTree;
    fn handle(&mut self, _: GetSupervisionTree, _: &mut Context<Self>) -> SupervisionTree {
        let children = self.status();
        let failed = children
            .iter()
            .any(|c| c.policy == RestartPolicy::Permanent && c.state == ChildState::Failed);
        SupervisionTree {
            uptime_seconds: self.started_at.elapsed().as_secs(),
            root: ChildStatus {
                name: "supervisor".into(),
                state: if failed {
                    ChildState::Failed
                } else {
                    ChildState::Running
                },
                policy: RestartPolicy::Permanent,
                restarts: 0,
                last_failure: None,
                last_failure_at: None,
                children,
            },
        }
    }
}

/// A child reports its own failure (for example the audit chainer after a failed fsync);
/// the supervisor restarts it under the same budget as a crash.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ReportFailure {
    /// The child's name as registered.
    pub name: String,
    /// What went wrong (no secrets).
    pub reason: String,
}

impl Handler<ReportFailure> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: ReportFailure, ctx: &mut Context<Self>) {
        if let Some(index) = self.children.iter().position(|c| c.name == msg.name) {
            if self.children[index].state == ChildState::Running {
                self.child_failed(index, msg.reason, ctx);
            }
        }
    }
}

impl Handler<Ping> for Supervisor {
    type Result = Pong;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Pong {
        Pong
    }
}

/// Forwards fire-and-forget messages (signals, `Result = ()`) to whichever instance of a
/// supervised actor is current, so a long-lived `Recipient` survives the target's restarts.
///
/// Bounded: its own mailbox holds at most [`Forward::capacity`] messages (plus one per sending
/// handle: actix's bound is per handle, so senders keep theirs and use `try_send`), and it hands
/// each on with `try_send` over one kept handle, so a target that falls behind never makes a
/// queue grow. A message the target cannot take now (its mailbox is full, or it is down) is
/// dropped and reported to the `on_drop` hook (signals are best effort by nature; the hook
/// counts them).
pub struct Forward<A: Actor> {
    slot: Slot<A>,
    /// The handle messages go out on, kept across messages: actix bounds a mailbox per sending
    /// handle (a full one parks the handle, and only a parked handle's `try_send` fails), so a
    /// fresh clone per message would never see the target full.
    current: Option<Addr<A>>,
    capacity: usize,
    on_drop: fn(Undelivered),
}

/// Why [`Forward`] dropped a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Undelivered {
    /// The target's mailbox was full.
    Full,
    /// No instance of the target was running (or its mailbox was closed).
    Down,
}

impl Undelivered {
    /// `mailbox_full` or `target_down` (a metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Undelivered::Full => "mailbox_full",
            Undelivered::Down => "target_down",
        }
    }
}

/// The mailbox of a [`Forward`] unless [`Forward::with_capacity`] says otherwise.
pub const FORWARD_CAPACITY: usize = 4_096;

impl<A: Actor> Forward<A> {
    /// A forwarder to `slot` holding at most [`FORWARD_CAPACITY`] messages, dropping silently.
    pub fn new(slot: Slot<A>) -> Self {
        Self {
            slot,
            current: None,
            capacity: FORWARD_CAPACITY,
            on_drop: |_| {},
        }
    }

    /// The same forwarder with a mailbox of `capacity` messages.
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// The same forwarder reporting every dropped message to `hook`.
    pub fn on_drop(mut self, hook: fn(Undelivered)) -> Self {
        self.on_drop = hook;
        self
    }

    /// The most messages its mailbox holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl<A: Actor> Actor for Forward<A> {
    type Context = Context<Self>;

    /// Starts with the mailbox bound already set (a bound set in `started` would come after
    /// the first messages).
    fn start(self) -> Addr<Self> {
        let capacity = self.capacity;
        Self::create(move |ctx| {
            ctx.set_mailbox_capacity(capacity);
            self
        })
    }
}

impl<A, M> Handler<M> for Forward<A>
where
    A: Actor<Context = Context<A>> + Handler<M>,
    M: Message<Result = ()> + Send + 'static,
{
    type Result = ();
    fn handle(&mut self, msg: M, _: &mut Context<Self>) {
        let live = self.slot.addr();
        if live != self.current {
            // A restart put a fresh instance in the slot (or took it out).
            self.current = live;
        }
        let dropped = match &self.current {
            Some(addr) => match addr.try_send(msg) {
                Ok(()) => return,
                Err(SendError::Full(_)) => Undelivered::Full,
                Err(SendError::Closed(_)) => Undelivered::Down,
            },
            None => Undelivered::Down,
        };
        (self.on_drop)(dropped);
    }
}
