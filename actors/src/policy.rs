//! The tool policy (CONTRACT §4): who may run which tool, as a pure function.
//!
//! Owns: the tool catalogue ([`Tool`]: names, tiers, JSON schemas), the settings
//! `tools.policy.*`, and [`decide`].
//! Must not: do I/O, allocate on the decision path, or know how a tool runs.
//!
//! Order of the rules (first match wins): a blocked sender is denied; a tool in the runtime
//! deny set is denied; a tier above the runtime restriction (`lockdown`, `restrict_tools`, an
//! incident's per-sender limit) is denied for every sender, owners included — the operator
//! restricted it, so no approval could lift it and none is asked for; a tier above the
//! sender's configured maximum is denied for an external sender and needs approval for an
//! owner; everything else is allowed. A skill's entry (`skill_run`) never runs for an external
//! sender, whatever `tools.policy.max_tier_external` says.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Who sent the message that led to the tool call.
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

/// `tools.policy.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySettings {
    /// The highest tier an owner runs without approval.
    pub max_tier_owner: u8,
    /// The highest tier an external sender may run at all.
    pub max_tier_external: u8,
    /// How long an approval request waits before it counts as denied.
    pub approval_timeout_seconds: u64,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            max_tier_owner: 2,
            max_tier_external: 0,
            approval_timeout_seconds: 120,
        }
    }
}

/// The runtime tightening applied by `restrict_tools` / `lockdown` (CONTRACT §3.4).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restriction {
    /// The highest tier anyone may run without approval; `None` means no runtime limit.
    pub max_tier: Option<u8>,
    /// Tools nobody may run.
    pub denied_tools: BTreeSet<String>,
}

/// Everything [`decide`] looks at. Borrowed, so building one allocates nothing.
#[derive(Clone, Copy, Debug)]
pub struct PolicyInput<'a> {
    /// The sender's kind.
    pub sender: SenderKind,
    /// The channel the message came from (for the record; no rule depends on it yet).
    pub channel: &'a str,
    /// The tool's name.
    pub tool: &'a str,
    /// The tool's tier: 0 read, 1 write, 2 exec.
    pub tier: u8,
    /// The runtime restriction in force.
    pub restriction: &'a Restriction,
    /// Whether the sender is blocked (`block_sender`, incident response).
    pub sender_blocked: bool,
    /// The configured policy.
    pub settings: &'a PolicySettings,
}

/// Why a tool call was denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum DenyReason {
    /// The sender is blocked.
    SenderBlocked,
    /// The tool is in the runtime deny set.
    ToolDenied,
    /// The tier is above the runtime restriction (any sender: the operator's `lockdown` or
    /// `restrict_tools`, or an incident's limit on this sender).
    AboveRestriction {
        /// The tool's tier.
        tier: u8,
        /// The restriction's maximum.
        max: u8,
    },
    /// The tier is above what this kind of sender may run (external sender).
    AboveSenderLimit {
        /// The tool's tier.
        tier: u8,
        /// The sender kind's maximum.
        max: u8,
    },
    /// No tool of that name exists.
    UnknownTool,
    /// The tool's arguments are malformed.
    InvalidArguments,
    /// The arguments were refused by the tool's own checks (command rules, path confinement).
    ArgumentsRefused,
    /// Skill entries run for owners only.
    OwnersOnly,
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::SenderBlocked => write!(f, "sender is blocked"),
            DenyReason::ToolDenied => write!(f, "tool is disabled by the current restriction"),
            DenyReason::AboveRestriction { tier, max } => write!(
                f,
                "tier {tier} tools are restricted to tier {max} by the operator (lockdown or restrict_tools)"
            ),
            DenyReason::AboveSenderLimit { tier, max } => write!(
                f,
                "tier {tier} tools are not allowed for this sender (limit {max})"
            ),
            DenyReason::UnknownTool => write!(f, "unknown tool"),
            DenyReason::InvalidArguments => write!(f, "invalid tool arguments"),
            DenyReason::ArgumentsRefused => write!(f, "tool arguments refused"),
            DenyReason::OwnersOnly => write!(f, "skill entries run for owners only"),
        }
    }
}

/// The outcome of [`decide`]: a value, never an error (CONTRACT: an error fails closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum Decision {
    /// Run it.
    Allow,
    /// Do not run it.
    Deny(DenyReason),
    /// Run it only after an operator approves (owners only).
    NeedsApproval,
}

impl Decision {
    /// The stable string form (`allow`, `deny`, `needs_approval`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny(_) => "deny",
            Decision::NeedsApproval => "needs_approval",
        }
    }
}

/// Decides one tool call. Pure, allocation-free.
pub fn decide(input: &PolicyInput<'_>) -> Decision {
    if input.sender_blocked {
        return Decision::Deny(DenyReason::SenderBlocked);
    }
    if input.restriction.denied_tools.contains(input.tool) {
        return Decision::Deny(DenyReason::ToolDenied);
    }
    // The runtime restriction binds everyone: an approval would let an owner's turn wait on
    // an operator for something the operator has just switched off.
    if let Some(max) = input.restriction.max_tier {
        if input.tier > max {
            return Decision::Deny(DenyReason::AboveRestriction {
                tier: input.tier,
                max,
            });
        }
    }
    if input.sender == SenderKind::External && input.tool == SKILL_RUN {
        return Decision::Deny(DenyReason::OwnersOnly);
    }
    let max = match input.sender {
        SenderKind::Owner => input.settings.max_tier_owner,
        SenderKind::External => input.settings.max_tier_external,
    };
    if input.tier > max {
        return match input.sender {
            SenderKind::Owner => Decision::NeedsApproval,
            SenderKind::External => Decision::Deny(DenyReason::AboveSenderLimit {
                tier: input.tier,
                max,
            }),
        };
    }
    Decision::Allow
}

/// The tools the agent may call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tool {
    /// Read a text file (tier 0).
    ReadFile,
    /// List a directory (tier 0).
    ListDir,
    /// Write a file in the work repo (tier 1).
    WriteFile,
    /// Replace one occurrence of a text in a file in the work repo (tier 1).
    EditFile,
    /// Run an allowed program without a shell (tier 2).
    Exec,
    /// Run an enabled skill's entry program (tier 2, owners only; offered to the model only
    /// when an enabled skill has an entry).
    SkillRun,
}

/// The name of [`Tool::SkillRun`].
pub const SKILL_RUN: &str = "skill_run";

impl Tool {
    /// Every tool, in catalogue order.
    pub const ALL: [Tool; 6] = [
        Tool::ReadFile,
        Tool::ListDir,
        Tool::WriteFile,
        Tool::EditFile,
        Tool::Exec,
        Tool::SkillRun,
    ];

    /// The tools offered to the model on every turn (`skill_run` is offered per turn, with
    /// the enabled skills, see [`skill_run_schema`]).
    pub const BUILT_IN: [Tool; 5] = [
        Tool::ReadFile,
        Tool::ListDir,
        Tool::WriteFile,
        Tool::EditFile,
        Tool::Exec,
    ];

    /// The name the model calls it by.
    pub fn name(self) -> &'static str {
        match self {
            Tool::ReadFile => "read_file",
            Tool::ListDir => "list_dir",
            Tool::WriteFile => "write_file",
            Tool::EditFile => "edit_file",
            Tool::Exec => "exec",
            Tool::SkillRun => SKILL_RUN,
        }
    }

    /// The tool for a name, if any.
    pub fn from_name(name: &str) -> Option<Tool> {
        Tool::ALL.into_iter().find(|t| t.name() == name)
    }

    /// 0 read-only, 1 write, 2 high-risk.
    pub fn tier(self) -> u8 {
        match self {
            Tool::ReadFile | Tool::ListDir => 0,
            Tool::WriteFile | Tool::EditFile => 1,
            Tool::Exec | Tool::SkillRun => 2,
        }
    }

    /// The tool's definition in the OpenAI function-calling format.
    pub fn schema(self) -> Value {
        let path = json!({
            "type": "string",
            "description": "Path relative to the work repository (or absolute inside the workspace or work repository)"
        });
        let (description, properties, required) = match self {
            Tool::ReadFile => (
                "Read a text file from the workspace or the work repository.",
                json!({ "path": path }),
                json!(["path"]),
            ),
            Tool::ListDir => (
                "List the entries of a directory in the workspace or the work repository.",
                json!({ "path": path }),
                json!(["path"]),
            ),
            Tool::WriteFile => (
                "Create or replace a file in the work repository.",
                json!({
                    "path": path,
                    "content": { "type": "string", "description": "The whole new content" }
                }),
                json!(["path", "content"]),
            ),
            Tool::EditFile => (
                "Replace the single occurrence of old_text with new_text in a file of the work repository.",
                json!({
                    "path": path,
                    "old_text": { "type": "string", "description": "Text that occurs exactly once in the file" },
                    "new_text": { "type": "string", "description": "Its replacement" }
                }),
                json!(["path", "old_text", "new_text"]),
            ),
            Tool::Exec => (
                "Run one allowed program (git, ls, cat, pwd, rg, grep, head, tail, wc, echo by default) with arguments. Never a shell: no pipes, redirection, chaining, variables or globs.",
                json!({
                    "command": { "type": "string", "description": "The program and its arguments, e.g. \"git log -n 5\"" },
                    "working_dir": { "type": "string", "description": "Directory relative to the work repository (default: the work repository)" }
                }),
                json!(["command"]),
            ),
            Tool::SkillRun => return skill_run_schema(&[]),
        };
        json!({
            "type": "function",
            "function": {
                "name": self.name(),
                "description": description,
                "parameters": {
                    "type": "object",
                    "properties": properties,
                    "required": required,
                    "additionalProperties": false
                }
            }
        })
    }
}

/// One enabled skill with an entry, as offered to the model.
#[derive(Clone, Debug, PartialEq)]
pub struct OfferedSkill {
    /// The skill's name.
    pub name: String,
    /// Its description (data, not instructions).
    pub description: String,
    /// The JSON schema of its entry's arguments (`{}` when it takes none).
    pub args: Value,
}

/// The `skill_run` definition for the model: `skill` is one of `skills`' names, `args` is
/// checked against that skill's schema when the call is prepared.
pub fn skill_run_schema(skills: &[OfferedSkill]) -> Value {
    let names: Vec<&str> = skills.iter().map(|s| s.name.as_str()).collect();
    let mut description = String::from(
        "Run an enabled skill's entry program (isolated, with only its own credentials). Skills and their args:",
    );
    for skill in skills {
        let desc: String = skill.description.chars().take(300).collect();
        description.push_str(&format!(
            "\n- {}: {desc} args schema: {}",
            skill.name, skill.args
        ));
    }
    json!({
        "type": "function",
        "function": {
            "name": SKILL_RUN,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {
                    "skill": { "type": "string", "enum": names, "description": "The skill's name" },
                    "args": { "type": "object", "description": "The entry's arguments, as the skill's args schema says" }
                },
                "required": ["skill"],
                "additionalProperties": false
            }
        }
    })
}

#[cfg(test)]
mod tests;
