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

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::budget::{utc_today, Budget, BudgetError, BudgetExceeded};
use crate::provider::{
    ChatClient, ChatRequest, Message, ProviderError, ToolCall, ToolChoice, Usage,
};
use crate::store::StoreError;

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
/// provider call gated and counted by `budget`.
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
    let mut messages = Vec::with_capacity(history.len() + 4);
    if let Some(prompt) = &ctx.system_prompt {
        messages.push(Message::system(prompt.clone()));
    }
    messages.extend(history);
    let mut first_new = messages.len();
    messages.push(Message::user(user_text));
    let mut request = ChatRequest {
        messages,
        tools: tool_schemas,
        tool_choice: ToolChoice::Auto,
    };

    let mut usage = Usage::default();
    let mut model_calls = Vec::new();
    let mut iterations: u32 = 0;
    let (reply, limit_hit) = loop {
        let final_call = iterations >= ctx.max_tool_iterations;
        if final_call {
            request.tool_choice = ToolChoice::None;
            first_new += add_limit_note(&mut request.messages, ctx.max_tool_iterations);
        }
        budget.check(ctx)?;
        let started = Instant::now();
        let response = client.complete(&request).await?;
        let elapsed = started.elapsed();
        if let Err(error) = budget.record(ctx, response.usage) {
            // The call was made and its answer is good; the next check reads the store again
            // and fails closed if it is still broken.
            tracing::error!(trace_id = %ctx.trace_id, %error, "token usage not recorded");
        }
        usage += response.usage;
        let mut message = response.message;
        model_calls.push(ModelCall {
            usage: response.usage,
            elapsed,
            tool_calls: message.tool_calls.iter().map(|c| c.name.clone()).collect(),
        });
        tracing::debug!(
            trace_id = %ctx.trace_id,
            session = %ctx.session,
            prompt_tokens = response.usage.prompt_tokens,
            completion_tokens = response.usage.completion_tokens,
            tool_calls = message.tool_calls.len(),
            "model call"
        );

        if message.tool_calls.is_empty() || final_call {
            message.tool_calls.clear();
            let mut reply = message.content.take().unwrap_or_default();
            if final_call {
                reply = limit_reply(reply, ctx.max_tool_iterations);
            }
            message.content = Some(reply.clone());
            request.messages.push(message);
            break (reply, final_call);
        }

        iterations += 1;
        let calls = message.tool_calls.clone();
        request.messages.push(message);
        for call in calls {
            let id = call.id.clone();
            let result = tools.run(call).await;
            request
                .messages
                .push(Message::tool_result(id, result.content));
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

/// Tells the model, in the system prompt, that it must answer now. Returns how many messages
/// were inserted before the turn's new ones (1 when there was no system prompt, else 0).
fn add_limit_note(messages: &mut Vec<Message>, limit: u32) -> usize {
    let note = format!(
        "The limit of {limit} rounds of tool calls for this message has been reached. \
Do not call any tool. Answer the user now with what you have, and say that the tool-call limit was reached."
    );
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
fn limit_reply(answer: String, limit: u32) -> String {
    let notice = format!(
        "(Stopped after {limit} rounds of tool calls: the limit for one message was reached.)"
    );
    let answer = answer.trim();
    if answer.is_empty() {
        notice
    } else {
        format!("{answer}\n\n{notice}")
    }
}
