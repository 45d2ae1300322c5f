//! The `Agent` actor: runs turns, one at a time per session and many sessions at once.
//!
//! Owns: per-session ordering (a FIFO lock per session: a slow model reply in one session never
//! blocks another), the wiring of a turn to the tool executor and the approvals, the turn
//! journal of keyed turns (a finished turn answers from it, an interrupted one resumes from
//! it), the timeline events of a turn (one trace per message), and the persisted history.
//! Must not: decide tool policy (the executor does), talk HTTP to channels (their outboxes do),
//! or run a keyed turn's model call or tool before the journal step it depends on is durable.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use actix::prelude::*;
use serde_json::json;

use super::journal::{JournalError, Resume, Step, TurnJournal, TurnKey};
use super::{
    run_journaled_turn, system_prompt, Budget, Refusal, SessionHistory, ToolResult, ToolRunner,
    TurnContext, TurnError, TurnInput, TurnLog, TurnOutcome,
};
use crate::approval::{ApprovalOutcome, Approvals, RequestApproval, WithdrawForTurn};
use crate::audit::{AppendRecord, AuditKind};
use crate::drain::Drain;
use crate::executor::{ExecuteTool, OutcomeStatus, ToolExecutor};
use crate::policy::{Restriction, SenderKind, Tool};
use crate::provider::{ChatClient, ToolCall, Usage};
use crate::store::{RecordEvent, Store};
use crate::supervisor::{Ping, Pong, Slot};

/// The channel name of turns that come from `POST /chat` (not a channel bridge).
pub const API_CHANNEL: &str = "api";

/// The stored session key of a `POST /chat` turn: `api:<principal>:<session>`, both parts
/// percent-encoded (so neither holds a `:`), so the same `session` name from two principals
/// (token names, or `local`) is two conversations, and no choice of names makes two pairs
/// meet. Channel session keys start with their scope's name (`room:`, `user:`, …), never `api:`.
pub fn api_session_key(principal: &str, session: &str) -> String {
    use crate::channel::session::encode_component;
    format!(
        "{API_CHANNEL}:{}:{}",
        encode_component(principal),
        encode_component(session)
    )
}

/// The tool surface in force at run time: the restriction set by control messages
/// (`restrict_tools`, `lockdown`) and per-sender blocks. Shared with the admin side.
#[derive(Clone, Default)]
pub struct ToolSurface {
    inner: Arc<RwLock<SurfaceState>>,
}

#[derive(Default)]
struct SurfaceState {
    restriction: Restriction,
    blocked: std::collections::HashSet<(String, String)>,
    restricted: HashMap<(String, String), u8>,
}

/// Who is singled out on the tool surface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SurfaceOverview {
    /// Blocked senders, as `(channel, sender)`.
    pub blocked: Vec<(String, String)>,
    /// Per-sender tier limits, as `(channel, sender, max_tier)`.
    pub limited: Vec<(String, String, u8)>,
}

impl ToolSurface {
    /// The restriction for one sender: the global one, tightened by a per-sender limit.
    pub fn restriction_for(&self, channel: &str, sender: &str) -> (Restriction, bool) {
        let state = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let key = (channel.to_string(), sender.to_string());
        let mut restriction = state.restriction.clone();
        if let Some(max) = state.restricted.get(&key) {
            restriction.max_tier = Some(restriction.max_tier.map_or(*max, |m| m.min(*max)));
        }
        (restriction, state.blocked.contains(&key))
    }
    /// Replaces the global restriction.
    pub fn set_restriction(&self, restriction: Restriction) {
        self.inner
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .restriction = restriction;
    }
    /// The global restriction.
    pub fn restriction(&self) -> Restriction {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .restriction
            .clone()
    }
    /// The senders whose tools are blocked and the per-sender tier limits in force, in order
    /// (for the operator's view).
    pub fn overview(&self) -> SurfaceOverview {
        let state = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let mut blocked: Vec<(String, String)> = state.blocked.iter().cloned().collect();
        blocked.sort();
        let mut limited: Vec<(String, String, u8)> = state
            .restricted
            .iter()
            .map(|((channel, sender), tier)| (channel.clone(), sender.clone(), *tier))
            .collect();
        limited.sort();
        SurfaceOverview { blocked, limited }
    }
    /// Blocks or unblocks a sender's tool use.
    pub fn set_blocked(&self, channel: &str, sender: &str, blocked: bool) {
        let mut state = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let key = (channel.to_string(), sender.to_string());
        if blocked {
            state.blocked.insert(key);
        } else {
            state.blocked.remove(&key);
        }
    }
    /// Limits one sender's tools to `max_tier` (or lifts the limit with `None`).
    pub fn set_sender_tier(&self, channel: &str, sender: &str, max_tier: Option<u8>) {
        let mut state = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let key = (channel.to_string(), sender.to_string());
        match max_tier {
            Some(t) => {
                state.restricted.insert(key, t);
            }
            None => {
                state.restricted.remove(&key);
            }
        }
    }
}

/// What the agent needs besides the model.
#[derive(Clone)]
pub struct AgentLinks {
    /// The tool executor.
    pub executor: Slot<ToolExecutor>,
    /// Tool approvals.
    pub approvals: Slot<Approvals>,
    /// The store actor (timeline).
    pub store: Slot<Store>,
    /// The runtime tool surface.
    pub surface: ToolSurface,
    /// Token usage per turn, for the incident monitor's spike detection.
    pub usage: Option<Recipient<crate::incident::TokenUsageSignal>>,
    /// The stop gate: a turn is work in flight from its session's turn to its reply; once
    /// closed, turns not yet started answer [`AgentError::ShuttingDown`].
    pub drain: Drain,
    /// The turn journal (keyed turns are journaled step by step).
    pub journal: Option<TurnJournal>,
    /// The audit log (`tool.interrupted`); without it an interrupted turn cannot resume.
    pub audit: Option<Recipient<AppendRecord>>,
}

/// Agent settings (`model.*`, paths).
#[derive(Clone, Debug)]
pub struct AgentSettings {
    /// Tool rounds per message.
    pub max_tool_iterations: u32,
    /// Tool calls run per model answer (`model.max_tool_calls_per_round`).
    pub max_tool_calls_per_round: u32,
    /// Total tool wall time per turn (`model.max_turn_seconds`).
    pub max_turn_time: std::time::Duration,
    /// The workspace holding the identity files.
    pub workspace: PathBuf,
    /// The skills described to the model (`skills.enabled`), read at each turn so that
    /// enabling or disabling one applies at once; `None` when skills are off.
    pub skills: Option<SkillCatalog>,
    /// The enabled skills with an entry, read at each turn: `skill_run` is offered with them
    /// (and not at all when there are none); `None` when skills are off.
    pub skill_tool: Option<SkillOffer>,
}

/// The skills `skill_run` is offered with at each turn (the root crate owns the skills tree).
#[derive(Clone)]
pub struct SkillOffer(pub Arc<dyn Fn() -> Vec<crate::policy::OfferedSkill> + Send + Sync>);

impl std::fmt::Debug for SkillOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SkillOffer")
    }
}

/// The tools offered for one turn: the built-in ones, and `skill_run` with the enabled skills.
fn offered_tools(skills: Option<&SkillOffer>) -> Vec<serde_json::Value> {
    let mut schemas: Vec<serde_json::Value> = Tool::BUILT_IN.iter().map(|t| t.schema()).collect();
    if let Some(offer) = skills {
        let offered = (offer.0)();
        if !offered.is_empty() {
            schemas.push(crate::policy::skill_run_schema(&offered));
        }
    }
    schemas
}

/// Builds the prompt's skills section at each turn (the root crate owns the skills tree).
#[derive(Clone)]
pub struct SkillCatalog(pub Arc<dyn Fn() -> String + Send + Sync>);

impl std::fmt::Debug for SkillCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SkillCatalog")
    }
}

/// `prompt` with the skills section before its request context (nothing when empty).
fn with_skills(prompt: String, skills: Option<&SkillCatalog>) -> String {
    let section = skills.map(|c| (c.0)()).unwrap_or_default();
    if section.trim().is_empty() {
        return prompt;
    }
    let block = format!("\n\n## Skills\n\n{}", section.trim_end());
    match prompt.rfind("\n\n## Request context") {
        Some(at) => format!("{}{block}{}", &prompt[..at], &prompt[at..]),
        None => prompt + &block,
    }
}

/// The agent actor.
pub struct Agent {
    client: Option<ChatClient>,
    history: SessionHistory,
    budget: Budget,
    links: AgentLinks,
    settings: AgentSettings,
    /// One turn at a time per session (bounded: see [`super::locks`]).
    sessions: super::locks::SessionLocks,
}

impl Agent {
    /// An agent; `client` is `None` when no provider is configured (turns then fail with
    /// [`AgentError::NoProvider`] and the rest of the gateway runs on).
    pub fn new(
        client: Option<ChatClient>,
        history: SessionHistory,
        budget: Budget,
        links: AgentLinks,
        settings: AgentSettings,
    ) -> Self {
        Self {
            client,
            history,
            budget,
            links,
            settings,
            sessions: Default::default(),
        }
    }

    fn session_lock(&mut self, session: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.sessions.get(session)
    }
}

impl Actor for Agent {
    type Context = Context<Self>;
}

impl Handler<Ping> for Agent {
    type Result = Pong;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Pong {
        Pong
    }
}

#[cfg(any(test, feature = "test-hooks"))]
impl Handler<crate::supervisor::InjectPanic> for Agent {
    type Result = ();
    fn handle(&mut self, msg: crate::supervisor::InjectPanic, _: &mut Context<Self>) {
        panic!("injected panic: {}", msg.0);
    }
}

/// One user message to answer.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<TurnReply, AgentError>")]
pub struct RunTurn {
    /// The session (history key).
    pub session: String,
    /// Owner or external.
    pub sender: SenderKind,
    /// The sender's id within the channel.
    pub sender_id: String,
    /// The channel (`api`, `whatsapp`, `bridge:NAME`).
    pub channel: String,
    /// The user's text.
    pub text: String,
    /// The message's trace id.
    pub trace_id: String,
    /// The turn's idempotency key: channel + message id, or `/chat`'s `Idempotency-Key`.
    /// With a key the turn is journaled and runs at most once; `None`: not journaled.
    pub turn_key: Option<TurnKey>,
}

/// The answer to a [`RunTurn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnReply {
    /// The reply text.
    pub reply: String,
    /// The session.
    pub session: String,
    /// The trace id.
    pub trace_id: String,
    /// Tokens used by the turn.
    pub usage: Usage,
}

/// Why a turn produced no reply. `Display` is safe to show the user.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No model provider is configured.
    #[error("no model provider configured")]
    NoProvider,
    /// A token budget is used up (the message says which).
    #[error("{0}")]
    Budget(String),
    /// The provider failed (a clean message, no keys or URLs).
    #[error("{0}")]
    Provider(String),
    /// The gateway is stopping and the turn had not started: nothing of it ran (a channel
    /// message stays in the inbox for the next start).
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// The turn key was used before for another message.
    #[error("{0}")]
    KeyReused(String),
    /// Something else; the detail is logged.
    #[error("the agent could not answer: {0}")]
    Internal(String),
}

impl Handler<RunTurn> for Agent {
    type Result = ResponseFuture<Result<TurnReply, AgentError>>;

    fn handle(&mut self, msg: RunTurn, _: &mut Context<Self>) -> Self::Result {
        let Some(client) = self.client.clone() else {
            return Box::pin(async { Err(AgentError::NoProvider) });
        };
        let lock = self.session_lock(&msg.session);
        let history = self.history.clone();
        let budget = self.budget.clone();
        let links = self.links.clone();
        let settings = self.settings.clone();
        Box::pin(async move {
            // One turn at a time per session, in arrival order (tokio's mutex is FIFO).
            let _turn = lock.lock().await;
            // Checked once it is this turn's turn: a turn queued behind one that is draining
            // does not start.
            let Some(_work) = links.drain.begin() else {
                return Err(AgentError::ShuttingDown);
            };
            let deps = Deps {
                client,
                history,
                budget,
                links,
                settings,
            };
            run_one(&deps, msg).await
        })
    }
}

/// A message that is noted in its session without a model call (a reaction or a system
/// event): appended to the history as a user message, once per `turn_key`, and recorded on the
/// timeline (`message.inbound` with `"model_call": false`). Ordered with the session's turns.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<(), AgentError>")]
pub struct NoteInSession {
    /// The session (history key).
    pub session: String,
    /// Owner or external.
    pub sender: SenderKind,
    /// The sender's id within the channel.
    pub sender_id: String,
    /// The channel.
    pub channel: String,
    /// The rendering of the message.
    pub text: String,
    /// The message's trace id.
    pub trace_id: String,
    /// Channel + message id: a second note of the same message appends nothing.
    pub turn_key: TurnKey,
}

impl Handler<NoteInSession> for Agent {
    type Result = ResponseFuture<Result<(), AgentError>>;

    fn handle(&mut self, msg: NoteInSession, _: &mut Context<Self>) -> Self::Result {
        let lock = self.session_lock(&msg.session);
        let history = self.history.clone();
        let store = self.links.store.clone();
        let drain = self.links.drain.clone();
        Box::pin(async move {
            let _turn = lock.lock().await;
            let Some(_work) = drain.begin() else {
                return Err(AgentError::ShuttingDown);
            };
            let internal = |e: &dyn std::fmt::Display| AgentError::Internal(e.to_string());
            history
                .append_turn(
                    &msg.session,
                    Some(msg.turn_key.as_str()),
                    &[crate::provider::Message::user(msg.text.clone())],
                )
                .map_err(|e| internal(&e))?;
            history.flush().await.map_err(|e| internal(&e))?;
            let turn = RunTurn {
                session: msg.session.clone(),
                sender: msg.sender,
                sender_id: msg.sender_id.clone(),
                channel: msg.channel.clone(),
                text: msg.text.clone(),
                trace_id: msg.trace_id.clone(),
                turn_key: Some(msg.turn_key.clone()),
            };
            record(
                &store,
                &turn,
                "message.inbound",
                json!({
                    "sender_kind": msg.sender.as_str(),
                    "chars": msg.text.chars().count(),
                    "model_call": false,
                }),
            )
            .await;
            Ok(())
        })
    }
}

/// What one turn runs with.
struct Deps {
    client: ChatClient,
    history: SessionHistory,
    budget: Budget,
    links: AgentLinks,
    settings: AgentSettings,
}

async fn run_one(deps: &Deps, msg: RunTurn) -> Result<TurnReply, AgentError> {
    let links = &deps.links;
    let journaled = match (&msg.turn_key, &links.journal) {
        (Some(key), Some(journal)) => Some((key.clone(), journal.clone())),
        _ => None,
    };
    let replay = match &journaled {
        None => Vec::new(),
        Some((key, journal)) => match begin(journal, key, &msg)? {
            Resume::Fresh => Vec::new(),
            Resume::Partial(steps) => {
                record(
                    &links.store,
                    &msg,
                    "turn.resumed",
                    json!({"steps": steps.len()}),
                )
                .await;
                steps
            }
            Resume::Done { reply, usage } => {
                // Finished before: the same answer, nothing runs again.
                record(&links.store, &msg, "turn.replayed", json!({})).await;
                return Ok(TurnReply {
                    reply,
                    session: msg.session,
                    trace_id: msg.trace_id,
                    usage,
                });
            }
        },
    };
    record(
        &links.store,
        &msg,
        "message.inbound",
        json!({"sender_kind": msg.sender.as_str(), "chars": msg.text.chars().count()}),
    )
    .await;
    let outcome = turn(deps, &msg, replay, journaled.as_ref()).await?;
    for call in &outcome.model_calls {
        record(
            &links.store,
            &msg,
            "model.call",
            json!({
                "prompt_tokens": call.usage.prompt_tokens,
                "completion_tokens": call.usage.completion_tokens,
                "elapsed_ms": call.elapsed.as_millis() as u64,
                "tool_calls": call.tool_calls,
            }),
        )
        .await;
    }
    conclude(&deps.history, journaled.as_ref(), &msg, &outcome).await?;
    // Spike detection quarantines channels; `/chat` (channel `api`) is not a channel bridge.
    if let Some(usage) = links.usage.as_ref().filter(|_| msg.channel != API_CHANNEL) {
        crate::incident::offer_signal(usage.try_send(crate::incident::TokenUsageSignal {
            channel: msg.channel.clone(),
            tokens: outcome.usage.total(),
            at: time::OffsetDateTime::now_utc(),
        }));
    }
    record(
        &links.store,
        &msg,
        "message.outbound",
        json!({"chars": outcome.reply.chars().count(), "iterations": outcome.iterations, "limit_hit": outcome.limit_hit}),
    )
    .await;
    Ok(TurnReply {
        reply: outcome.reply,
        session: msg.session,
        trace_id: msg.trace_id,
        usage: outcome.usage,
    })
}

/// Opens the journal of a keyed turn.
fn begin(journal: &TurnJournal, key: &TurnKey, msg: &RunTurn) -> Result<Resume, AgentError> {
    let now_ms = i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX);
    journal
        .begin(key, &msg.session, &msg.channel, &msg.text, now_ms)
        .map_err(|e| match e {
            JournalError::KeyReused => AgentError::KeyReused(e.to_string()),
            JournalError::Store(store) => AgentError::Internal(store.to_string()),
        })
}

/// Runs the turn loop (journaled when `journaled` is set), recording a failure on the timeline.
async fn turn(
    deps: &Deps,
    msg: &RunTurn,
    replay: Vec<Step>,
    journaled: Option<&(TurnKey, TurnJournal)>,
) -> Result<TurnOutcome, AgentError> {
    let (client, budget, links, settings) =
        (&deps.client, &deps.budget, &deps.links, &deps.settings);
    let past = deps
        .history
        .load(&msg.session)
        .map_err(|e| AgentError::Internal(e.to_string()))?;
    let mut ctx = TurnContext::new(&msg.session, &msg.sender_id, &msg.channel, &msg.trace_id);
    ctx.max_tool_iterations = settings.max_tool_iterations;
    ctx.max_tool_calls_per_round = settings.max_tool_calls_per_round;
    ctx.max_turn_time = settings.max_turn_time;
    ctx.system_prompt = Some(with_skills(
        system_prompt(&settings.workspace, msg.sender, &msg.channel),
        settings.skills.as_ref(),
    ));
    let tools = ExecutorTools {
        links: links.clone(),
        turn: msg.clone(),
    };
    let input = TurnInput {
        history: past,
        user_text: msg.text.clone(),
        // External senders never run a skill (the policy denies it): not offered to them.
        tool_schemas: offered_tools(
            settings
                .skill_tool
                .as_ref()
                .filter(|_| msg.sender == crate::policy::SenderKind::Owner),
        ),
        replay,
    };
    let result = match journaled {
        Some((key, journal)) => {
            let log = JournalLog::new(journal.clone(), key.clone(), input.replay.len(), links, msg);
            run_journaled_turn(client, &tools, budget, &log, &ctx, input).await
        }
        None => run_journaled_turn(client, &tools, budget, &super::NoLog, &ctx, input).await,
    };
    result.map_err(|e| {
        let kind = match &e {
            TurnError::Budget(_) => "budget.exceeded",
            TurnError::Provider(_) => "model.failed",
            _ => "turn.failed",
        };
        let event = json!({"error": e.to_string()});
        let store = links.store.clone();
        let msg = msg.clone();
        actix::spawn(async move { record(&store, &msg, kind, event).await });
        match e {
            TurnError::Budget(b) => AgentError::Budget(b.to_string()),
            TurnError::Provider(p) => AgentError::Provider(p.to_string()),
            other => AgentError::Internal(other.to_string()),
        }
    })
}

/// Appends the turn to the history (once per turn key) and marks its journal done, durably.
async fn conclude(
    history: &SessionHistory,
    journaled: Option<&(TurnKey, TurnJournal)>,
    msg: &RunTurn,
    outcome: &TurnOutcome,
) -> Result<(), AgentError> {
    let internal = |e: &dyn std::fmt::Display| AgentError::Internal(e.to_string());
    let key = journaled.map(|(key, _)| key.as_str());
    history
        .append_turn(&msg.session, key, &outcome.new_messages)
        .map_err(|e| internal(&e))?;
    if let Some((key, journal)) = journaled {
        journal
            .finish(key, &outcome.reply, outcome.usage)
            .map_err(|e| internal(&e))?;
    }
    history.flush().await.map_err(|e| internal(&e))
}

/// The journal of one keyed turn as the turn loop writes it: steps numbered after the replayed
/// ones, interruptions audited through the chainer.
struct JournalLog {
    journal: TurnJournal,
    key: TurnKey,
    next: std::sync::atomic::AtomicUsize,
    audit: Option<Recipient<AppendRecord>>,
    turn: RunTurn,
}

impl JournalLog {
    fn new(
        journal: TurnJournal,
        key: TurnKey,
        replayed: usize,
        links: &AgentLinks,
        turn: &RunTurn,
    ) -> Self {
        Self {
            journal,
            key,
            next: std::sync::atomic::AtomicUsize::new(replayed),
            audit: links.audit.clone(),
            turn: turn.clone(),
        }
    }
}

impl TurnLog for JournalLog {
    fn record(&self, step: Step) -> Result<(), crate::store::StoreError> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.journal.record(&self.key, n, &step)
    }

    async fn sync(&self) -> Result<(), crate::store::StoreError> {
        self.journal.sync().await
    }

    async fn interrupted(&self, call: &ToolCall) -> Result<(), String> {
        let audit = self.audit.as_ref().ok_or("the audit log is not linked")?;
        let record = AppendRecord {
            kind: AuditKind::ToolInterrupted,
            actor: self.turn.sender_id.clone(),
            subject: format!("tool:{}", call.name),
            data: json!({
                "call_id": call.id,
                "tool": call.name,
                "channel": self.turn.channel,
                "session": self.turn.session,
                "trace_id": self.turn.trace_id,
                "retried": false,
            }),
        };
        match audit.send(record).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}

async fn record(store: &Slot<Store>, msg: &RunTurn, kind: &str, data: serde_json::Value) {
    let Some(addr) = store.addr() else { return };
    let event = RecordEvent {
        trace_id: msg.trace_id.clone(),
        kind: kind.to_string(),
        sender: Some(msg.sender_id.clone()),
        channel: Some(msg.channel.clone()),
        data,
    };
    if !matches!(addr.send(event).await, Ok(Ok(_))) {
        tracing::warn!(kind, "cannot record a timeline event");
    }
}

/// Runs the model's tool calls through the executor; an approval request waits for the
/// operator (only this session's turn waits).
struct ExecutorTools {
    links: AgentLinks,
    turn: RunTurn,
}

impl ExecutorTools {
    fn call(&self, call: &ToolCall, approved_by: Option<String>) -> ExecuteTool {
        let (restriction, sender_blocked) = self
            .links
            .surface
            .restriction_for(&self.turn.channel, &self.turn.sender_id);
        ExecuteTool {
            call_id: call.id.clone(),
            tool: call.name.clone(),
            arguments: call.parse_arguments().unwrap_or(serde_json::Value::Null),
            sender: self.turn.sender,
            sender_id: self.turn.sender_id.clone(),
            channel: self.turn.channel.clone(),
            session: self.turn.session.clone(),
            restriction,
            sender_blocked,
            approved_by,
        }
    }

    async fn execute(&self, msg: ExecuteTool) -> Result<crate::executor::ToolOutcome, String> {
        let executor = self
            .links
            .executor
            .addr()
            .ok_or("the tool executor is not running")?;
        executor
            .send(msg)
            .await
            .map_err(|_| "the tool executor is not running".to_string())?
            .map_err(|e| e.to_string())
    }
}

impl ExecutorTools {
    /// Resolves once the operator's runtime restriction forbids `tool` (of `tier`) for this
    /// turn's sender: a restriction applied while the call waits for an approval.
    async fn restricted_meanwhile(&self, tool: &str, tier: u8) {
        loop {
            tokio::time::sleep(RESTRICTION_POLL).await;
            let (restriction, blocked) = self
                .links
                .surface
                .restriction_for(&self.turn.channel, &self.turn.sender_id);
            if blocked
                || restriction.denied_tools.contains(tool)
                || restriction.max_tier.is_some_and(|max| tier > max)
            {
                return;
            }
        }
    }
}

/// How often a call waiting for an approval looks at the runtime restriction.
const RESTRICTION_POLL: std::time::Duration = std::time::Duration::from_millis(200);

impl ToolRunner for ExecutorTools {
    async fn run(&self, call: ToolCall) -> ToolResult {
        let outcome = match self.execute(self.call(&call, None)).await {
            Ok(outcome) => outcome,
            Err(e) => return ToolResult::denied(format!("the tool could not run: {e}")),
        };
        record(
            &self.links.store,
            &self.turn,
            "tool.call",
            json!({"tool": call.name, "status": outcome.status}),
        )
        .await;
        if outcome.status != OutcomeStatus::ApprovalRequired {
            return ToolResult::output(outcome.content);
        }
        let Some(approvals) = self.links.approvals.addr() else {
            return ToolResult::denied("approval required, but approvals are unavailable");
        };
        let tier = crate::policy::Tool::from_name(&call.name).map_or(2, |t| t.tier());
        let trace_id = self.turn.trace_id.clone();
        let request = RequestApproval {
            tool: call.name.clone(),
            tier,
            arguments: call.parse_arguments().unwrap_or(serde_json::Value::Null),
            sender_id: self.turn.sender_id.clone(),
            channel: self.turn.channel.clone(),
            session: self.turn.session.clone(),
            trace_id: self.turn.trace_id.clone(),
        };
        let waiting = approvals.send(request);
        tokio::pin!(waiting);
        let answer = tokio::select! {
            answer = &mut waiting => answer,
            () = self.restricted_meanwhile(&call.name, tier) => {
                // Nobody may approve it any more: withdraw the request and decide again, so
                // the model gets the restriction as the result (audited as a denial).
                let withdraw = WithdrawForTurn { trace_id, tool: call.name.clone() };
                let _ = approvals.send(withdraw).await;
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), waiting).await;
                return match self.execute(self.call(&call, None)).await {
                    Ok(outcome) => ToolResult::output(outcome.content),
                    Err(e) => ToolResult::denied(format!("the tool could not run: {e}")),
                };
            }
        };
        match answer {
            Ok(Ok(ApprovalOutcome::Approved { id, .. })) => {
                match self.execute(self.call(&call, Some(id))).await {
                    Ok(outcome) => ToolResult::output(outcome.content),
                    Err(e) => ToolResult::denied(format!("the tool could not run: {e}")),
                }
            }
            Ok(Ok(ApprovalOutcome::Denied { .. })) => {
                ToolResult::denied("an operator denied this tool call")
            }
            Ok(Ok(ApprovalOutcome::Expired { .. })) => {
                ToolResult::denied("no operator approved this tool call in time")
            }
            _ => ToolResult::denied("approval required, but approvals are unavailable"),
        }
    }

    async fn refused(&self, refusal: &Refusal<'_>) -> Result<(), String> {
        let audit = self
            .links
            .audit
            .as_ref()
            .ok_or("the audit log is not linked")?;
        let mut data = refusal.audit_data();
        data["channel"] = json!(self.turn.channel);
        data["session"] = json!(self.turn.session);
        data["trace_id"] = json!(self.turn.trace_id);
        let entry = AppendRecord {
            kind: AuditKind::ToolRefused,
            actor: self.turn.sender_id.clone(),
            subject: "tool calls".into(),
            data: data.clone(),
        };
        match audit.send(entry).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(e) => return Err(e.to_string()),
        }
        record(&self.links.store, &self.turn, "tool.refused", data).await;
        Ok(())
    }
}
