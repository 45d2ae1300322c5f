//! The turn loop: one user message in, one reply out, with tool rounds in between.
//!
//! Owns: the order of a turn (budget check → model call → usage record → the tool calls it
//! asked for, in order → again), the tool-round limit and the shape of the messages a turn adds
//! to the history.
//! Must not: run tools or decide their policy (the [`ToolRunner`] does, and tells the model
//! its decision as the tool's result), or persist anything itself but token usage through the
//! [`UsageGate`].
//!
//! The limit: after `max_tool_iterations` rounds of tool calls, one last model call is made
//! with `tool_choice: "none"` and a note in the system prompt asking for a final answer that
//! says the limit was hit; a fixed sentence saying so is appended to that answer in any case,
//! and tool calls the model still asks for are dropped (so the history never holds an
//! unanswered tool call).
//! A failure (budget, accounting, provider) ends the turn with a [`TurnError`] and no new
//! messages: tools that already ran are not undone, and the stored history stays as it was.
//!
//! Journaled turns ([`run_journaled_turn`]): every model answer is written to the [`TurnLog`]
//! and synced before any tool it asks for runs (a final answer is synced by the caller with the
//! turn's conclusion, before the reply leaves); every tool call is
//! written as started and synced before the tool runs, and its result written after. A resumed
//! turn replays its journal first: journaled answers are not asked again, journaled results
//! are not run again, and a call started without a journaled result is not run again either —
//! the model gets [`INTERRUPTED_RESULT`] and the interruption is audited (`tool.interrupted`).
//!
//! Bounds ([`super::bounds`]): calls of one answer beyond `max_tool_calls_per_round`, and every
//! call once `max_turn_time` of tool time is spent, are refused: the refusal is audited by the
//! [`ToolRunner`] (one `tool.refused` record per answer) after the results it rests on are
//! durable, then journaled, before the results go back to the model; a resumed turn replays
//! journaled refusals and never runs them. Tool time is journaled with each result, so a
//! resumed turn decides the same way.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::bounds::{
    Limit, Refusal, RefusalReason, DEFAULT_MAX_TOOL_CALLS_PER_ROUND, DEFAULT_MAX_TURN_TIME,
};
use super::budget::{utc_today, Budget, BudgetError, BudgetExceeded};
use super::journal::Step;
use crate::provider::{
    ChatClient, ChatRequest, Message, ProviderError, ToolCall, ToolChoice, Usage,
};
use crate::store::StoreError;

/// The result a tool call gets when it had started before a restart and its result was never
/// recorded: it is not run again.
pub const INTERRUPTED_RESULT: &str = "interrupted: the gateway restarted while this tool call was running, before its result was recorded. It was not run again, and whether it completed is unknown; check its effect before calling it again.";

/// Default bound on tool rounds per message (`model.max_tool_iterations`).
pub const DEFAULT_MAX_TOOL_ITERATIONS: u32 = 20;

/// Who and what a turn is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnContext {
    /// The session (history key); also the session the usage is counted under.
    pub session: String,
    /// The sender's id within the channel (budgets are per sender).
    pub sender: String,
    /// The channel name (`cli`, `http`, `whatsapp`, `bridge:NAME`, …).
    pub channel: String,
    /// The trace id of the inbound message, carried into logs.
    pub trace_id: String,
    /// The system prompt (see [`super::system_prompt`]); sent first, never stored in history.
    pub system_prompt: Option<String>,
    /// At most this many rounds of tool calls; then a final answer is forced.
    pub max_tool_iterations: u32,
    /// At most this many calls run from one model answer; the rest are refused.
    pub max_tool_calls_per_round: u32,
    /// Total tool wall time of the turn; once spent, the remaining calls are refused and a
    /// final answer is forced.
    pub max_turn_time: Duration,
}

impl TurnContext {
    /// A context with no system prompt and the default tool-round limit.
    pub fn new(
        session: impl Into<String>,
        sender: impl Into<String>,
        channel: impl Into<String>,
        trace_id: impl Into<String>,
    ) -> Self {
        Self {
            session: session.into(),
            sender: sender.into(),
            channel: channel.into(),
            trace_id: trace_id.into(),
            system_prompt: None,
            max_tool_iterations: DEFAULT_MAX_TOOL_ITERATIONS,
            max_tool_calls_per_round: DEFAULT_MAX_TOOL_CALLS_PER_ROUND,
            max_turn_time: DEFAULT_MAX_TURN_TIME,
        }
    }
}

/// What a tool call produced, as text for the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolResult {
    /// The tool's output, or `denied: <reason>`, or `approval required: …`.
    pub content: String,
}

impl ToolResult {
    /// The tool ran: its output.
    pub fn output(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
        }
    }
    /// The policy denied the call.
    pub fn denied(reason: impl std::fmt::Display) -> Self {
        Self {
            content: format!("denied: {reason}"),
        }
    }
    /// The call waits for (or timed out waiting for) the owner's approval.
    pub fn approval_required(detail: impl std::fmt::Display) -> Self {
        Self {
            content: format!("approval required: {detail}"),
        }
    }
}

/// Runs one tool call (policy decision, audit, execution) and says what came of it. It never
/// fails: a denial or an error is a result the model is told about.
pub trait ToolRunner: Sync {
    /// Runs `call` and returns its result for the model.
    fn run(&self, call: ToolCall) -> impl Future<Output = ToolResult> + Send;
    /// Audits (durably) that `refusal.calls` are not run; an error means the record is not
    /// durable and the turn must stop.
    fn refused(&self, refusal: &Refusal<'_>) -> impl Future<Output = Result<(), String>> + Send;
}

/// The budget as the turn loop sees it: a check before every provider call, a record after.
pub trait UsageGate: Sync {
    /// Whether another provider call may be made for `ctx`. An error means no call.
    fn check(&self, ctx: &TurnContext) -> Result<(), BudgetError>;
    /// Counts one call's tokens for `ctx`.
    fn record(&self, ctx: &TurnContext, usage: Usage) -> Result<(), StoreError>;
}

impl UsageGate for Budget {
    fn check(&self, ctx: &TurnContext) -> Result<(), BudgetError> {
        Budget::check(self, &ctx.channel, &ctx.sender, utc_today())
    }
    fn record(&self, ctx: &TurnContext, usage: Usage) -> Result<(), StoreError> {
        Budget::record(
            self,
            &ctx.session,
            &ctx.channel,
            &ctx.sender,
            utc_today(),
            usage,
        )
    }
}

/// Where a journaled turn writes its steps (the agent's [`super::TurnJournal`], in the gateway).
pub trait TurnLog: Sync {
    /// Writes the next step (not yet durable).
    fn record(&self, step: Step) -> Result<(), StoreError>;
    /// Makes every step written so far durable.
    fn sync(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Audits (durably) that `call` was interrupted and is not run again; an error means the
    /// record is not durable and the turn must stop.
    fn interrupted(&self, call: &ToolCall) -> impl Future<Output = Result<(), String>> + Send;
}

/// No journal: a turn that nobody can resume (a `/chat` request without an idempotency key).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLog;

impl TurnLog for NoLog {
    fn record(&self, _: Step) -> Result<(), StoreError> {
        Ok(())
    }
    async fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn interrupted(&self, _: &ToolCall) -> Result<(), String> {
        Err("no journal to resume from".into())
    }
}

/// No limits and no counting (tests, benchmarks, a gateway without a store).
#[derive(Clone, Copy, Debug, Default)]
pub struct Unmetered;

impl UsageGate for Unmetered {
    fn check(&self, _: &TurnContext) -> Result<(), BudgetError> {
        Ok(())
    }
    fn record(&self, _: &TurnContext, _: Usage) -> Result<(), StoreError> {
        Ok(())
    }
}

/// One provider call of a turn (for the timeline and for measuring overhead).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelCall {
    /// Its tokens.
    pub usage: Usage,
    /// Time spent in the provider client (HTTP, retries included).
    pub elapsed: Duration,
    /// Names of the tools it asked for, in order (empty for the final answer).
    pub tool_calls: Vec<String>,
}

/// What a turn produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnOutcome {
    /// The text for the user.
    pub reply: String,
    /// The messages to append to the session's history: the user's message, every assistant
    /// message with its tool results, and the final assistant message (whose text is `reply`).
    pub new_messages: Vec<Message>,
    /// Tokens of all provider calls of the turn.
    pub usage: Usage,
    /// Rounds of tool calls run.
    pub iterations: u32,
    /// Whether the tool-round limit ended the turn.
    pub limit_hit: bool,
    /// Every provider call, in order.
    pub model_calls: Vec<ModelCall>,
}

/// Why a turn ended without a reply from the model. The `Display` is the reply for the user:
/// no key, no URL, no stack trace.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// A token budget is used up; no provider call was made for this round.
    #[error("{0}")]
    Budget(BudgetExceeded),
    /// The usage counters could not be read, so no provider call was made (fail closed).
    #[error(
        "token accounting is unavailable, so the model was not called; please try again later"
    )]
    Accounting(#[source] StoreError),
    /// The provider failed (after its retries).
    #[error("the model could not answer: {0}")]
    Provider(#[from] ProviderError),
    /// A step could not be journaled, so nothing further was done (fail closed).
    #[error("the turn could not be recorded, so it was stopped; please try again later")]
    Journal(#[source] StoreError),
    /// The journal does not fit this turn (written by another version, or corrupt).
    #[error("the turn's journal cannot be resumed")]
    JournalMismatch,
    /// An interrupted tool call could not be audited, so the turn stopped (fail closed).
    #[error("the turn could not be resumed; please try again later")]
    AuditUnavailable(String),
    /// Refused tool calls could not be audited, so the turn stopped (fail closed).
    #[error(
        "the turn was stopped: refused tool calls could not be recorded; please try again later"
    )]
    RefusalUnaudited(String),
}

impl From<StoreError> for TurnError {
    fn from(error: StoreError) -> Self {
        TurnError::Journal(error)
    }
}

impl From<BudgetError> for TurnError {
    fn from(error: BudgetError) -> Self {
        match error {
            BudgetError::Exceeded(exceeded) => TurnError::Budget(exceeded),
            BudgetError::Store(store) => TurnError::Accounting(store),
        }
    }
}

/// Runs one turn: `user_text` after `history` (stored messages, oldest first), with the tools
/// described by `tool_schemas` (empty: the model gets no tools) run through `tools`, and every
/// provider call gated and counted by `budget`. Not journaled.
pub async fn run_turn<T, G>(
    client: &ChatClient,
    tools: &T,
    budget: &G,
    ctx: &TurnContext,
    history: Vec<Message>,
    user_text: String,
    tool_schemas: Vec<Value>,
) -> Result<TurnOutcome, TurnError>
where
    T: ToolRunner,
    G: UsageGate + ?Sized,
{
    let input = TurnInput {
        history,
        user_text,
        tool_schemas,
        replay: Vec::new(),
    };
    run_journaled_turn(client, tools, budget, &NoLog, ctx, input).await
}

/// What a turn starts from.
#[derive(Clone, Debug, Default)]
pub struct TurnInput {
    /// Stored messages of the session, oldest first.
    pub history: Vec<Message>,
    /// The user's text.
    pub user_text: String,
    /// Tool schemas for the model (empty: no tools).
    pub tool_schemas: Vec<Value>,
    /// Steps journaled by an interrupted run of this turn, in order (empty for a new turn).
    pub replay: Vec<Step>,
}

/// Runs one journaled turn (see the module documentation): replays `input.replay`, then goes
/// on, writing every new step to `log` and syncing it before the action that depends on it.
pub async fn run_journaled_turn<T, G, L>(
    client: &ChatClient,
    tools: &T,
    budget: &G,
    log: &L,
    ctx: &TurnContext,
    input: TurnInput,
) -> Result<TurnOutcome, TurnError>
where
    T: ToolRunner,
    G: UsageGate + ?Sized,
    L: TurnLog,
{
    let mut messages = Vec::with_capacity(input.history.len() + 4);
    if let Some(prompt) = &ctx.system_prompt {
        messages.push(Message::system(prompt.clone()));
    }
    messages.extend(input.history);
    let mut first_new = messages.len();
    messages.push(Message::user(input.user_text));
    let mut request = ChatRequest {
        messages,
        tools: input.tool_schemas,
        tool_choice: ToolChoice::Auto,
    };
    let mut replay = input.replay.into_iter().peekable();

    let mut usage = Usage::default();
    let mut model_calls = Vec::new();
    let mut iterations: u32 = 0;
    let mut tool_time = Duration::ZERO;
    let (reply, limit_hit) = loop {
        let limit = if tool_time >= ctx.max_turn_time {
            Some(Limit::ToolTime(ctx.max_turn_time))
        } else {
            (iterations >= ctx.max_tool_iterations)
                .then_some(Limit::Rounds(ctx.max_tool_iterations))
        };
        let final_call = limit.is_some();
        if let Some(limit) = limit {
            request.tool_choice = ToolChoice::None;
            first_new += add_limit_note(&mut request.messages, limit);
        }
        let (mut message, call_usage) = match replay.next() {
            // Journaled: the model is not asked again.
            Some(Step::Model { message, usage }) => (message, usage),
            Some(_) => return Err(TurnError::JournalMismatch),
            None => {
                let (message, call) = ask_model(client, budget, ctx, &request).await?;
                log.record(Step::Model {
                    message: message.clone(),
                    usage: call.usage,
                })?;
                if !message.tool_calls.is_empty() && !final_call {
                    // Durable before the tools it asks for run. A final answer is made durable
                    // with the turn's conclusion (history, journal done), before the reply is
                    // queued or returned: until then nothing outside has seen it.
                    log.sync().await?;
                }
                let usage = call.usage;
                model_calls.push(call);
                (message, usage)
            }
        };
        usage += call_usage;

        if message.tool_calls.is_empty() || final_call {
            message.tool_calls.clear();
            let mut reply = message.content.take().unwrap_or_default();
            if let Some(limit) = limit {
                reply = limit_reply(reply, limit);
            }
            message.content = Some(reply.clone());
            request.messages.push(message);
            break (reply, final_call);
        }

        iterations += 1;
        let calls = message.tool_calls.clone();
        request.messages.push(message);
        let mut unsynced = false;
        let asked = calls.len();
        let mut pending = calls.into_iter();
        let mut ran: usize = 0;
        while let Some(call) = pending.next() {
            // The journal decides first: a call it started is replayed, one it refused stays
            // refused (whatever the bounds say now).
            let bound = match replay.peek() {
                Some(Step::ToolStarted { call_id, .. }) if *call_id == call.id => None,
                Some(Step::ToolRefused { call_id, .. }) if *call_id == call.id => {
                    Some(bound(ctx, ran, tool_time).unwrap_or((
                        RefusalReason::MaxToolCallsPerRound,
                        u64::from(ctx.max_tool_calls_per_round),
                    )))
                }
                _ => bound(ctx, ran, tool_time),
            };
            if let Some((reason, limit)) = bound {
                let refused: Vec<ToolCall> = std::iter::once(call).chain(pending).collect();
                let refusal = Refusal {
                    reason,
                    limit,
                    asked,
                    calls: &refused,
                    tool_time,
                };
                let results = refuse(tools, log, &mut replay, refusal, &mut unsynced).await?;
                request.messages.extend(results);
                break;
            }
            let id = call.id.clone();
            let (content, spent) = run_tool(tools, log, &mut replay, call, &mut unsynced).await?;
            tool_time += spent;
            ran += 1;
            request.messages.push(Message::tool_result(id, content));
        }
        if unsynced {
            // The next model call sees these results: they are durable first.
            log.sync().await?;
        }
    };

    let new_messages = request.messages.split_off(first_new);
    Ok(TurnOutcome {
        reply,
        new_messages,
        usage,
        iterations,
        limit_hit,
        model_calls,
    })
}

/// One provider call: budget check, the call, usage record.
async fn ask_model<G: UsageGate + ?Sized>(
    client: &ChatClient,
    budget: &G,
    ctx: &TurnContext,
    request: &ChatRequest,
) -> Result<(Message, ModelCall), TurnError> {
    budget.check(ctx)?;
    let started = Instant::now();
    let response = client.complete(request).await?;
    let elapsed = started.elapsed();
    crate::testpoint::hit("turn.model_answered");
    crate::metrics::metrics().model_tokens(
        &ctx.channel,
        response.usage.prompt_tokens,
        response.usage.completion_tokens,
    );
    if let Err(error) = budget.record(ctx, response.usage) {
        // The call was made and its answer is good; the next check reads the store again
        // and fails closed if it is still broken.
        tracing::error!(trace_id = %ctx.trace_id, %error, "token usage not recorded");
    }
    let message = response.message;
    tracing::debug!(
        trace_id = %ctx.trace_id,
        session = %ctx.session,
        prompt_tokens = response.usage.prompt_tokens,
        completion_tokens = response.usage.completion_tokens,
        tool_calls = message.tool_calls.len(),
        "model call"
    );
    let call = ModelCall {
        usage: response.usage,
        elapsed,
        tool_calls: message.tool_calls.iter().map(|c| c.name.clone()).collect(),
    };
    Ok((message, call))
}

/// The result of one tool call: from the journal when it has one, [`INTERRUPTED_RESULT`]
/// (audited) when it started but has none, else from running it — after its start is durable.
/// `unsynced` is set when a result was written but not yet synced.
async fn run_tool<T, L>(
    tools: &T,
    log: &L,
    replay: &mut std::iter::Peekable<std::vec::IntoIter<Step>>,
    call: ToolCall,
    unsynced: &mut bool,
) -> Result<(String, Duration), TurnError>
where
    T: ToolRunner,
    L: TurnLog,
{
    match replay.next() {
        None => {}
        Some(Step::ToolStarted { call_id, .. }) if call_id == call.id => {
            return match replay.next() {
                Some(Step::ToolResult {
                    call_id,
                    content,
                    elapsed_ms,
                    ..
                }) if call_id == call.id => Ok((content, Duration::from_millis(elapsed_ms))),
                Some(_) => Err(TurnError::JournalMismatch),
                None => {
                    log.interrupted(&call)
                        .await
                        .map_err(TurnError::AuditUnavailable)?;
                    log.record(Step::ToolResult {
                        call_id: call.id.clone(),
                        content: INTERRUPTED_RESULT.to_string(),
                        interrupted: true,
                        elapsed_ms: 0,
                    })?;
                    *unsynced = true;
                    Ok((INTERRUPTED_RESULT.to_string(), Duration::ZERO))
                }
            };
        }
        Some(_) => return Err(TurnError::JournalMismatch),
    }
    log.record(Step::ToolStarted {
        call_id: call.id.clone(),
        tool: call.name.clone(),
    })?;
    log.sync().await?;
    let id = call.id.clone();
    let started = tokio::time::Instant::now();
    let result = tools.run(call).await;
    let spent = started.elapsed();
    crate::testpoint::hit("tool.ran");
    log.record(Step::ToolResult {
        call_id: id,
        content: result.content.clone(),
        interrupted: false,
        elapsed_ms: u64::try_from(spent.as_millis()).unwrap_or(u64::MAX),
    })?;
    *unsynced = true;
    Ok((result.content, spent))
}

/// The bound the next call of a round would pass, if any: the turn's tool time first, then
/// the calls already handled in this answer.
fn bound(ctx: &TurnContext, ran: usize, tool_time: Duration) -> Option<(RefusalReason, u64)> {
    if tool_time >= ctx.max_turn_time {
        return Some((RefusalReason::MaxTurnSeconds, ctx.max_turn_time.as_secs()));
    }
    let cap = usize::try_from(ctx.max_tool_calls_per_round).unwrap_or(usize::MAX);
    (ran >= cap).then_some((
        RefusalReason::MaxToolCallsPerRound,
        u64::from(ctx.max_tool_calls_per_round),
    ))
}

/// The results of the refused calls of one answer: journaled refusals are replayed; the rest
/// are audited (after the results the decision rests on are durable), then journaled.
async fn refuse<T, L>(
    tools: &T,
    log: &L,
    replay: &mut std::iter::Peekable<std::vec::IntoIter<Step>>,
    refusal: Refusal<'_>,
    unsynced: &mut bool,
) -> Result<Vec<Message>, TurnError>
where
    T: ToolRunner,
    L: TurnLog,
{
    let mut results = Vec::with_capacity(refusal.calls.len());
    let mut calls = refusal.calls;
    while let Some((call, rest)) = calls.split_first() {
        match replay.peek() {
            Some(Step::ToolRefused { call_id, .. }) if *call_id == call.id => {
                if let Some(Step::ToolRefused { content, .. }) = replay.next() {
                    results.push(Message::tool_result(call.id.clone(), content));
                }
                calls = rest;
            }
            Some(_) => return Err(TurnError::JournalMismatch),
            None => break,
        }
    }
    if calls.is_empty() {
        return Ok(results);
    }
    if *unsynced {
        log.sync().await?;
        *unsynced = false;
    }
    let fresh = Refusal { calls, ..refusal };
    tools
        .refused(&fresh)
        .await
        .map_err(TurnError::RefusalUnaudited)?;
    let content = fresh.result();
    for call in calls {
        log.record(Step::ToolRefused {
            call_id: call.id.clone(),
            content: content.clone(),
        })?;
        results.push(Message::tool_result(call.id.clone(), content.clone()));
    }
    *unsynced = true;
    Ok(results)
}

/// Tells the model, in the system prompt, that it must answer now. Returns how many messages
/// were inserted before the turn's new ones (1 when there was no system prompt, else 0).
fn add_limit_note(messages: &mut Vec<Message>, limit: Limit) -> usize {
    let note = limit.note();
    match messages.first_mut() {
        Some(first) if first.role == crate::provider::Role::System => {
            let prompt = first.content.get_or_insert_with(String::new);
            prompt.push_str("\n\n");
            prompt.push_str(&note);
            0
        }
        _ => {
            messages.insert(0, Message::system(note));
            1
        }
    }
}

/// The final reply when the limit ended the turn: the model's answer (if any) and a fixed
/// sentence, so the user always learns why the work stopped.
fn limit_reply(answer: String, limit: Limit) -> String {
    let notice = limit.notice();
    let answer = answer.trim();
    if answer.is_empty() {
        notice
    } else {
        format!("{answer}\n\n{notice}")
    }
}
