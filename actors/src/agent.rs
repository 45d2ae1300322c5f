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
//! journal.begin(turn key) ─ done → the stored reply (nothing runs again)
//!     └─ new or interrupted → history.load(session) → system_prompt(…) → run_journaled_turn(…)
//!          └─ per round: (journaled? replay) budget.check → provider call → journal + sync
//!             → per tool call: (journaled? replay) journal "started" + sync → tools.run(call)
//!             → journal result
//! → history.append_turn(session, turn key, outcome.new_messages) → journal "done" → sync
//! → reply
//! ```
//!
//! Turns are idempotent on their key (channel + message id): see [`journal`].

pub mod actor;
pub mod bounds;
pub mod budget;
pub mod history;
pub mod journal;
pub mod locks;
pub mod prompt;
pub mod router;
pub mod turn;

pub use actor::{
    api_session_key, Agent, AgentError, AgentLinks, AgentSettings, NoteInSession, RunTurn,
    SkillCatalog, SkillOffer, ToolSurface, TurnReply,
};
pub use bounds::{
    Limit, Refusal, RefusalReason, DEFAULT_MAX_TOOL_CALLS_PER_ROUND, DEFAULT_MAX_TURN_TIME,
};
pub use budget::{
    utc_today, Budget, BudgetError, BudgetExceeded, BudgetLimit, BudgetSettings, UsageTotals,
};
pub use history::{HistoryError, SessionHistory, DEFAULT_HISTORY_MESSAGES};
pub use journal::{JournalError, Resume, Step, TurnJournal, TurnKey};
pub use prompt::{system_prompt, IDENTITY_FILES, MAX_IDENTITY_FILE_BYTES};
pub use router::AgentRouter;
pub use turn::{
    run_journaled_turn, run_turn, ModelCall, NoLog, ToolResult, ToolRunner, TurnContext, TurnError,
    TurnInput, TurnLog, TurnOutcome, Unmetered, UsageGate, DEFAULT_MAX_TOOL_ITERATIONS,
    INTERRUPTED_RESULT,
};

#[cfg(test)]
mod tests;

/// Who sent the message a turn answers (CONTRACT §4): one type across policy, agent and
/// channels.
pub use crate::policy::SenderKind;
