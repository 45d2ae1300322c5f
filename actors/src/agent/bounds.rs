//! Bounds on what one turn may ask of the tools (issue 21): at most
//! `model.max_tool_calls_per_round` calls run from one model answer, and at most
//! `model.max_turn_seconds` of tool wall time are spent on one message.
//!
//! Owns: the refusal a call beyond a bound gets (its reason, the text the model reads, the
//! audit record's data).
//! Must not: run, journal or audit anything (the turn loop journals the refusal, the
//! [`super::ToolRunner`] audits it before the results go back to the model).
//!
//! A refused call is not run: its result says why, and the whole refusal of one answer is one
//! `tool.refused` record with the count. Once the time bound is spent, every remaining call is
//! refused and the next model call is the last (no tools, a reply that says the limit was hit).
//! A call that has started runs to its own timeout: the bound is checked before each call.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::provider::ToolCall;

/// Default `model.max_tool_calls_per_round`.
pub const DEFAULT_MAX_TOOL_CALLS_PER_ROUND: u32 = 32;

/// Default `model.max_turn_seconds`.
pub const DEFAULT_MAX_TURN_TIME: Duration = Duration::from_secs(300);

/// Distinct tool names listed in one `tool.refused` record (the model chooses them).
const MAX_NAMES_AUDITED: usize = 16;
/// Characters of one tool name kept in the record.
const MAX_NAME_CHARS: usize = 64;

/// Why a call was not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    /// The answer asked for more calls than `model.max_tool_calls_per_round`.
    MaxToolCallsPerRound,
    /// The turn had spent `model.max_turn_seconds` of tool time.
    MaxTurnSeconds,
}

impl RefusalReason {
    /// The audit record's `reason` (the setting's name).
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::MaxToolCallsPerRound => "max_tool_calls_per_round",
            RefusalReason::MaxTurnSeconds => "max_turn_seconds",
        }
    }
}

/// The calls of one model answer that are not run, and why.
#[derive(Clone, Debug)]
pub struct Refusal<'a> {
    /// Which bound.
    pub reason: RefusalReason,
    /// The bound's value (calls, or seconds).
    pub limit: u64,
    /// How many calls the answer asked for.
    pub asked: usize,
    /// The refused calls, in order.
    pub calls: &'a [ToolCall],
    /// Tool time the turn had spent when they were refused.
    pub tool_time: Duration,
}

impl Refusal<'_> {
    /// The result each refused call gets, as the model reads it.
    pub fn result(&self) -> String {
        match self.reason {
            RefusalReason::MaxToolCallsPerRound => format!(
                "refused: this answer asked for {} tool calls and at most {} run per answer (model.max_tool_calls_per_round); this call was not run. Ask again for the calls still needed, at most {} at once.",
                self.asked, self.limit, self.limit
            ),
            RefusalReason::MaxTurnSeconds => format!(
                "refused: the tool time limit of {} seconds for this message (model.max_turn_seconds) was reached; this call was not run.",
                self.limit
            ),
        }
    }

    /// The `tool.refused` record's data: counts and names, never arguments.
    pub fn audit_data(&self) -> Value {
        let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
        let mut other = 0usize;
        for call in self.calls {
            let name: String = call.name.chars().take(MAX_NAME_CHARS).collect();
            if by_name.len() < MAX_NAMES_AUDITED || by_name.contains_key(&name) {
                *by_name.entry(name).or_default() += 1;
            } else {
                other += 1;
            }
        }
        json!({
            "reason": self.reason.as_str(),
            "limit": self.limit,
            "asked": self.asked,
            "refused": self.calls.len(),
            "tools": by_name,
            "other_tools": other,
            "tool_seconds": self.tool_time.as_secs_f64(),
        })
    }
}

/// What ended a turn early: the round bound, or the time bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `model.max_tool_iterations` rounds were run.
    Rounds(u32),
    /// `model.max_turn_seconds` of tool time were spent.
    ToolTime(Duration),
}

impl Limit {
    /// The note added to the system prompt of the last model call.
    pub fn note(self) -> String {
        let what = match self {
            Limit::Rounds(n) => format!("The limit of {n} rounds of tool calls"),
            Limit::ToolTime(t) => format!("The limit of {} seconds of tool time", t.as_secs()),
        };
        format!(
            "{what} for this message has been reached. Do not call any tool. Answer the user now with what you have, and say that the tool-call limit was reached."
        )
    }

    /// The fixed sentence appended to the last answer.
    pub fn notice(self) -> String {
        match self {
            Limit::Rounds(n) => format!(
                "(Stopped after {n} rounds of tool calls: the limit for one message was reached.)"
            ),
            Limit::ToolTime(t) => format!(
                "(Stopped after {} seconds of tool time: the limit for one message was reached; the remaining tool calls were not run.)",
                t.as_secs()
            ),
        }
    }
}
