//! The access policy of a channel (CONTRACT §5): who may reach the agent, as a value.
//!
//! Owns: [`ChannelPolicy`] (configured), [`RuntimeLists`] (senders allowed or blocked at run
//! time, persisted in the `channels` tree), sender-id normalisation, [`evaluate`] and the
//! `doctor` warnings.
//! Must not: perform side effects; the `ChannelBridge` acts on the [`Access`] value.
//!
//! Order, first match wins: a missing sender is dropped; the denylist (configured or blocked at
//! run time) drops, even owners; a group message without a mention is ignored when the channel
//! requires one; owners; the allowlist (configured, `*` = everyone, or allowed at run time);
//! then the unknown-sender policy. Decision: pairing codes are offered in direct chats only —
//! unknown senders in groups are dropped (`pairing_needs_direct_chat`), so codes are not posted
//! into rooms and a group cannot flood the pending list.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::session::{encode_component, SessionScope};
use super::whatsapp::normalize_number;
use super::{ChannelKind, InboundMessage, SenderKind};
use crate::store::{KvTree, StoreError};

/// What happens to senders on no list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownSenders {
    /// Dropped, counted, audited, reported as an incident signal (default).
    #[default]
    Deny,
    /// Offered a one-time pairing code the owner can approve.
    Pairing,
    /// Admitted as external senders (flagged by `doctor`).
    Open,
}

/// The configured access policy of one channel (`channels.<x>.*`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelPolicy {
    /// Senders treated as owners (internal senders).
    pub owner_ids: Vec<String>,
    /// Senders admitted as external; `*` admits everyone.
    pub allowlist: Vec<String>,
    /// Senders always dropped, owners included.
    pub denylist: Vec<String>,
    /// What to do with senders on no list.
    pub unknown_senders: UnknownSenders,
    /// Group messages are only handled when they mention the bot.
    pub require_mention: bool,
    /// How messages are grouped into sessions.
    pub session_scope: SessionScope,
}

/// Senders allowed or blocked at run time (`allow_sender`, `block_sender`, pairing approvals),
/// normalised, persisted under `access/<channel>`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeLists {
    /// Admitted as external senders (in addition to the configured allowlist).
    pub allowed: BTreeSet<String>,
    /// Dropped like the configured denylist.
    pub blocked: BTreeSet<String>,
}

impl RuntimeLists {
    fn key(channel: &str) -> String {
        format!("access/{}", encode_component(channel))
    }

    /// Loads the lists of `channel` (empty when none were stored).
    pub fn load(tree: &KvTree, channel: &str) -> Result<Self, StoreError> {
        Ok(tree.get_json(Self::key(channel))?.unwrap_or_default())
    }

    /// Stores the lists of `channel` (the caller flushes before acknowledging).
    pub fn save(&self, tree: &KvTree, channel: &str) -> Result<(), StoreError> {
        tree.put_json(Self::key(channel), self)
    }

    /// Blocks a sender (and withdraws a run-time allowance).
    pub fn block(&mut self, kind: ChannelKind, sender: &str) {
        let id = normalize_sender(kind, sender);
        self.allowed.remove(&id);
        self.blocked.insert(id);
    }

    /// Lifts a run-time block (a configured denylist entry stays in force).
    pub fn unblock(&mut self, kind: ChannelKind, sender: &str) {
        self.blocked.remove(&normalize_sender(kind, sender));
    }

    /// Allows a sender at run time (a block, run-time or configured, still wins).
    pub fn allow(&mut self, kind: ChannelKind, sender: &str) {
        self.allowed.insert(normalize_sender(kind, sender));
    }
}

/// Normalises a sender id or list entry: WhatsApp numbers to digits only, bridge ids unchanged
/// (case-sensitive, exact).
pub fn normalize_sender(kind: ChannelKind, id: &str) -> String {
    match kind {
        ChannelKind::Whatsapp => normalize_number(id),
        ChannelKind::Bridge => id.to_string(),
    }
}

/// Why a message was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// The message had no usable sender id.
    MissingSender,
    /// The sender is on the denylist or was blocked.
    Denylisted,
    /// The sender is unknown and the policy is `deny`.
    UnknownSender,
    /// The sender is unknown, the policy is `pairing`, but the message came from a group.
    PairingNeedsDirectChat,
    /// The sender needs pairing but the channel's pending list is full.
    PairingFull,
}

impl DropReason {
    /// The reason as recorded in the audit log and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::MissingSender => "missing_sender",
            DropReason::Denylisted => "denylisted",
            DropReason::UnknownSender => "unknown_sender",
            DropReason::PairingNeedsDirectChat => "pairing_needs_direct_chat",
            DropReason::PairingFull => "pairing_full",
        }
    }

    /// True when the drop counts as unknown-sender activity (incident signal, CONTRACT §6).
    pub fn is_unknown_sender(self) -> bool {
        matches!(
            self,
            DropReason::UnknownSender
                | DropReason::PairingNeedsDirectChat
                | DropReason::PairingFull
        )
    }
}

/// The access decision for one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A configured owner: handed on as an owner sender.
    Owner,
    /// Admitted as an external sender.
    Allowed,
    /// Dropped, with the reason.
    Drop(DropReason),
    /// Unknown sender under the `pairing` policy, in a direct chat: offer a code.
    NeedsPairing,
    /// A group message without a mention on a channel that requires one: ignored silently.
    MentionRequired,
}

impl Access {
    /// The sender kind of an admitted message, `None` otherwise.
    pub fn sender_kind(self) -> Option<SenderKind> {
        match self {
            Access::Owner => Some(SenderKind::Owner),
            Access::Allowed => Some(SenderKind::External),
            _ => None,
        }
    }
}

fn listed(kind: ChannelKind, list: &[String], id: &str) -> bool {
    list.iter().any(|entry| {
        let entry = normalize_sender(kind, entry);
        !entry.is_empty() && entry == id
    })
}

/// Decides what happens to `message` on a channel of `kind` (see the module documentation for
/// the order).
pub fn evaluate(
    kind: ChannelKind,
    policy: &ChannelPolicy,
    runtime: &RuntimeLists,
    message: &InboundMessage,
) -> Access {
    let sender = normalize_sender(kind, &message.sender_id);
    if sender.is_empty() {
        return Access::Drop(DropReason::MissingSender);
    }
    if runtime.blocked.contains(&sender) || listed(kind, &policy.denylist, &sender) {
        return Access::Drop(DropReason::Denylisted);
    }
    if message.is_group && policy.require_mention && !message.mentioned {
        return Access::MentionRequired;
    }
    if listed(kind, &policy.owner_ids, &sender) {
        return Access::Owner;
    }
    if policy.allowlist.iter().any(|e| e == "*")
        || runtime.allowed.contains(&sender)
        || listed(kind, &policy.allowlist, &sender)
    {
        return Access::Allowed;
    }
    match policy.unknown_senders {
        UnknownSenders::Deny => Access::Drop(DropReason::UnknownSender),
        UnknownSenders::Open => Access::Allowed,
        UnknownSenders::Pairing if message.is_group => {
            Access::Drop(DropReason::PairingNeedsDirectChat)
        }
        UnknownSenders::Pairing => Access::NeedsPairing,
    }
}

/// What `doctor` should warn about in a channel's policy (empty when nothing).
pub fn policy_warnings(kind: ChannelKind, policy: &ChannelPolicy) -> Vec<String> {
    let mut warnings = Vec::new();
    if policy.unknown_senders == UnknownSenders::Open {
        warnings.push(
            "unknown_senders is open: anyone who can message the channel reaches the agent".into(),
        );
        if !policy.require_mention {
            warnings.push("unknown_senders is open without require_mention: any group message can trigger the agent".into());
        }
    }
    if policy.allowlist.iter().any(|e| e == "*") {
        warnings.push("allowlist contains \"*\": every sender is admitted".into());
    }
    for (name, list) in [
        ("owner_ids", &policy.owner_ids),
        ("allowlist", &policy.allowlist),
        ("denylist", &policy.denylist),
    ] {
        for entry in list {
            if entry == "*" && name != "allowlist" {
                warnings.push(format!(
                    "{name} contains \"*\", which only has a meaning in allowlist"
                ));
            } else if entry != "*" && normalize_sender(kind, entry).is_empty() {
                warnings.push(format!("{name} entry {entry:?} matches no sender"));
            }
        }
    }
    for owner in &policy.owner_ids {
        let id = normalize_sender(kind, owner);
        if !id.is_empty() && listed(kind, &policy.denylist, &id) {
            warnings.push(format!(
                "owner {owner:?} is also on the denylist and will be dropped"
            ));
        }
    }
    warnings
}
