//! The agent's pure parts: the system prompt, session history, token budgets and the turn loop.
//!
//! Owns: what one user message does to a conversation, independent of how it arrived. The
//! [`turn::run_turn`] loop calls the model through [`crate::provider::ChatClient`], runs the
//! tool calls it asks for through a [`turn::ToolRunner`] (the tool executor, in the gateway),
//! checks budgets before every model call and counts the tokens after it.
//! Must not: run tools itself, decide tool policy, or know channels and HTTP. The actor that
//! serialises turns per session and wires the executor, channels and timeline sits on top.
//!
//! A turn, as the gateway runs it:
//!
//! ```text
//! history.load(session) → system_prompt(workspace, sender, channel) → run_turn(…)
//!     └─ per round: budget.check → provider call → budget.record → tools.run(call)…
//! → history.append(session, outcome.new_messages) → reply
//! ```

pub mod actor;
pub mod budget;
pub mod history;
pub mod prompt;
pub mod router;
pub mod turn;

pub use actor::{
    api_session_key, Agent, AgentError, AgentLinks, AgentSettings, RunTurn, ToolSurface, TurnReply,
};
pub use budget::{
    utc_today, Budget, BudgetError, BudgetExceeded, BudgetLimit, BudgetSettings, UsageTotals,
};
pub use history::{HistoryError, SessionHistory, DEFAULT_HISTORY_MESSAGES};
pub use prompt::{system_prompt, IDENTITY_FILES, MAX_IDENTITY_FILE_BYTES};
pub use router::AgentRouter;
pub use turn::{
    run_turn, ModelCall, ToolResult, ToolRunner, TurnContext, TurnError, TurnOutcome, Unmetered,
    UsageGate, DEFAULT_MAX_TOOL_ITERATIONS,
};

#[cfg(test)]
mod tests;

/// Who sent the message a turn answers (CONTRACT §4): one type across policy, agent and
/// channels.
pub use crate::policy::SenderKind;
