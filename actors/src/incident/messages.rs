//! The monitor's messages: signals (fire and forget, each with the time it happened), queries,
//! operator commands, and the links it sends through.
//!
//! Owns: the shapes other modules and the HTTP edge build. Signals carry ids and counts only —
//! no field can hold message text.
//! Must not: hold behaviour (that is `monitor`).

use actix::prelude::*;
use time::OffsetDateTime;

use super::{Incident, IncidentError, IncidentState, RequestAction, WebhookKey};
use crate::audit::AppendRecord;

// ---------------------------------------------------------------------------------------
// Signals: fire and forget, each with the time it happened.

/// A request failed gateway authentication.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct AuthFailureSignal {
    /// The client IP.
    pub ip: String,
    /// When.
    pub at: OffsetDateTime,
}

/// A channel dropped a message from a sender its access policy does not know.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct UnknownSenderDropped {
    /// The channel's name.
    pub channel: String,
    /// The (normalised) sender id. Never the message text.
    pub sender: String,
    /// When.
    pub at: OffsetDateTime,
}

/// The policy denied a tier-2 (high-risk) tool call.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct DeniedHighRiskSignal {
    /// The channel the message came from.
    pub channel: String,
    /// The sender id.
    pub sender: String,
    /// The tool's name.
    pub tool: String,
    /// When.
    pub at: OffsetDateTime,
}

/// A model call on behalf of a channel used tokens.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct TokenUsageSignal {
    /// The channel's name.
    pub channel: String,
    /// Prompt plus completion tokens.
    pub tokens: u64,
    /// When.
    pub at: OffsetDateTime,
}

/// A supervised child failed. Only `gave_up` failures (restart budget exhausted) matter.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct ChildFailureSignal {
    /// The child's name as registered with the supervisor (`channel:whatsapp`, `store`, …).
    pub child: String,
    /// The last failure's reason.
    pub reason: String,
    /// Whether the supervisor gave up on it.
    pub gave_up: bool,
    /// When.
    pub at: OffsetDateTime,
}

// ---------------------------------------------------------------------------------------
// Queries and operator commands.

/// Incidents, newest first.
#[derive(Message, Clone, Debug, Default)]
#[rtype(result = "Result<Vec<Incident>, IncidentError>")]
pub struct ListIncidents {
    /// Only incidents in this state; `None` for all.
    pub state: Option<IncidentState>,
    /// At most this many (default and upper bound 1000).
    pub limit: Option<usize>,
}

/// An operator has seen an incident (`acknowledge_incident`). Answered after the audit record
/// is durable and the change flushed.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<Incident, IncidentError>")]
pub struct AcknowledgeIncident {
    /// The incident.
    pub id: String,
    /// An optional remark (at most 1000 characters kept; not copied into the audit log).
    pub note: Option<String>,
    /// Who (the token's name, `cli`).
    pub actor: String,
}

/// An operator closes an incident (`resolve_incident`). Answered after the audit record is
/// durable and the change flushed.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<Incident, IncidentError>")]
pub struct ResolveIncident {
    /// The incident.
    pub id: String,
    /// An optional remark (at most 1000 characters kept; not copied into the audit log).
    pub note: Option<String>,
    /// Who (the token's name, `cli`).
    pub actor: String,
}

/// An operator opens a `manual` incident (`lockdown`); an open manual incident with the same
/// subject is updated instead. The monitor requests no action for it: the caller carries out
/// the lockdown. Answered after the audit record is durable and the change flushed.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<Incident, IncidentError>")]
pub struct OpenIncident {
    /// What it is about (`lockdown`, a channel, …; at most 200 characters).
    pub subject: String,
    /// Why (kept as the first note; not copied into the audit log).
    pub reason: String,
    /// Who (the token's name, `cli`).
    pub actor: String,
}

/// The monitor's own health, for `status` and tests.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "MonitorStatus")]
pub struct GetMonitorStatus;

/// Answer to [`GetMonitorStatus`].
#[derive(MessageResponse, Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonitorStatus {
    /// Open and acknowledged incidents.
    pub active_incidents: usize,
    /// Incidents whose audit record (and so their actions) is still owed.
    pub pending_audits: usize,
    /// Whether an audit step (and its actions) is in flight.
    pub audit_in_flight: bool,
    /// Whether the last audit append failed (retried on the next message).
    pub audit_failing: bool,
    /// Subjects tracked in all windows.
    pub tracked_subjects: usize,
}

/// Where the monitor sends what it decides.
#[derive(Clone)]
pub struct MonitorLinks {
    /// The audit log (`AuditChainer`).
    pub audit: Recipient<AppendRecord>,
    /// The supervisor side that carries out actions.
    pub actions: Recipient<RequestAction>,
    /// Signs the webhook; required when `incidents.webhook_url` is set.
    pub webhook_key: Option<WebhookKey>,
}
