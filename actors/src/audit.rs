//! The audit log (CONTRACT §7): hash-chained, keyed-BLAKE3 records under `~/.kafclaw/audit/`.
//!
//! Owns: the record format, the chain, segment files, group-committed fsyncs, verification.
//! Must not: hold a secret value in a record (names only), or answer an append before the
//! record is durable.

use actix::prelude::*;
use serde::{Deserialize, Serialize};

/// The stable record kinds (for SIEMs). Add kinds as needed; never rename one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuditKind {
    #[serde(rename = "gateway.started")]
    GatewayStarted,
    #[serde(rename = "gateway.stopped")]
    GatewayStopped,
    #[serde(rename = "auth.failed")]
    AuthFailed,
    #[serde(rename = "auth.locked_out")]
    AuthLockedOut,
    #[serde(rename = "auth.scope_denied")]
    AuthScopeDenied,
    #[serde(rename = "token.created")]
    TokenCreated,
    #[serde(rename = "token.revoked")]
    TokenRevoked,
    #[serde(rename = "token.rotated")]
    TokenRotated,
    #[serde(rename = "token.first_used")]
    TokenFirstUsed,
    #[serde(rename = "secret.changed")]
    SecretChanged,
    #[serde(rename = "config.warning")]
    ConfigWarning,
    #[serde(rename = "channel.dropped")]
    ChannelDropped,
    #[serde(rename = "channel.state_changed")]
    ChannelStateChanged,
    #[serde(rename = "pairing.requested")]
    PairingRequested,
    #[serde(rename = "pairing.decided")]
    PairingDecided,
    #[serde(rename = "tool.decided")]
    ToolDecided,
    #[serde(rename = "tool.executed")]
    ToolExecuted,
    #[serde(rename = "approval.decided")]
    ApprovalDecided,
    #[serde(rename = "control.applied")]
    ControlApplied,
    #[serde(rename = "incident.opened")]
    IncidentOpened,
    #[serde(rename = "incident.updated")]
    IncidentUpdated,
    #[serde(rename = "backup.created")]
    BackupCreated,
    #[serde(rename = "audit.repaired")]
    AuditRepaired,
    #[serde(rename = "supervisor.child_failed")]
    SupervisorChildFailed,
}

impl AuditKind {
    /// The record's `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::GatewayStarted => "gateway.started",
            AuditKind::GatewayStopped => "gateway.stopped",
            AuditKind::AuthFailed => "auth.failed",
            AuditKind::AuthLockedOut => "auth.locked_out",
            AuditKind::AuthScopeDenied => "auth.scope_denied",
            AuditKind::TokenCreated => "token.created",
            AuditKind::TokenRevoked => "token.revoked",
            AuditKind::TokenRotated => "token.rotated",
            AuditKind::TokenFirstUsed => "token.first_used",
            AuditKind::SecretChanged => "secret.changed",
            AuditKind::ConfigWarning => "config.warning",
            AuditKind::ChannelDropped => "channel.dropped",
            AuditKind::ChannelStateChanged => "channel.state_changed",
            AuditKind::PairingRequested => "pairing.requested",
            AuditKind::PairingDecided => "pairing.decided",
            AuditKind::ToolDecided => "tool.decided",
            AuditKind::ToolExecuted => "tool.executed",
            AuditKind::ApprovalDecided => "approval.decided",
            AuditKind::ControlApplied => "control.applied",
            AuditKind::IncidentOpened => "incident.opened",
            AuditKind::IncidentUpdated => "incident.updated",
            AuditKind::BackupCreated => "backup.created",
            AuditKind::AuditRepaired => "audit.repaired",
            AuditKind::SupervisorChildFailed => "supervisor.child_failed",
        }
    }
}

/// Appends one record; answered only after the record (and its batch) is fsynced.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<AuditReceipt, AuditError>")]
pub struct AppendRecord {
    /// What happened.
    pub kind: AuditKind,
    /// Who did it: a token name, `cli`, `system`, a sender id, a client IP.
    pub actor: String,
    /// What it was done to: a route, a tool, a channel, a secret's name.
    pub subject: String,
    /// Structured detail. Never a secret value, never message text.
    pub data: serde_json::Value,
}

/// Where an appended record landed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReceipt {
    /// Gapless sequence number across segments and restarts.
    pub seq: u64,
    /// The record's hash (hex).
    pub hash: String,
}

/// Why the audit log could not do what was asked. Callers fail closed on any of these.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Writing or fsyncing a segment failed.
    #[error("audit log write failed: {0}")]
    Write(String),
    /// The chainer is not running (its mailbox is closed).
    #[error("audit log unavailable")]
    Unavailable,
}
