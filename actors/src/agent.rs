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

use serde::{Deserialize, Serialize};

pub mod budget;
pub mod history;
pub mod prompt;
pub mod turn;

pub use budget::{
    utc_today, Budget, BudgetError, BudgetExceeded, BudgetLimit, BudgetSettings, UsageTotals,
};
pub use history::{HistoryError, SessionHistory, DEFAULT_HISTORY_MESSAGES};
pub use prompt::{system_prompt, IDENTITY_FILES, MAX_IDENTITY_FILE_BYTES};
pub use turn::{
    run_turn, ModelCall, ToolResult, ToolRunner, TurnContext, TurnError, TurnOutcome, Unmetered,
    UsageGate, DEFAULT_MAX_TOOL_ITERATIONS,
};

#[cfg(test)]
mod tests;

/// Who sent the message a turn answers (CONTRACT §4). Same shape and serde form as the tool
/// policy's sender kind, so the two can be unified without a data change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SenderKind {
    /// The CLI, `/chat` with an admin or chat token, a channel's configured owner.
    Owner,
    /// Everyone else admitted by a channel's access policy.
    External,
}

impl SenderKind {
    /// The stable string form.
    pub fn as_str(self) -> &'static str {
        match self {
            SenderKind::Owner => "owner",
            SenderKind::External => "external",
        }
    }
}
