//! Incidents (CONTRACT §6): signals counted in sliding windows, incident records, the automatic
//! response the monitor asks for, the signed webhook, and consistent snapshots.
//!
//! Owns: the `incidents.*` settings, the [`IncidentMonitor`] actor and its messages, the
//! [`Incident`] record and its tree (`TreeName::Incidents`), the [`IncidentAction`]s it requests,
//! the incident webhook ([`WebhookNotifier`]) and snapshots ([`create_snapshot`],
//! [`verify_snapshot`]).
//! Must not: carry out an action itself (it sends [`RequestAction`]; the supervisor side
//! quarantines, blocks and locks out), request an action before the incident's audit record is
//! durable, or keep message text or secrets in an incident (signals carry ids and counts only).
//!
//! # Flow of one signal
//!
//! ```text
//! signal ──► window of its trigger (per subject) ──► threshold reached?
//!                                                     │ no: if an incident for the same kind and
//!                                                     │     subject is open, its evidence grows
//!                                                     ▼ yes
//!            open (or update) the incident, store it with a durable "pending audit" marker
//!                                                     ▼
//!            audit `incident.opened` / `incident.updated` (send().await, durable)
//!                                                     ▼ only once durable
//!            RequestAction for each automatic action, then the webhook (new incidents only)
//! ```
//!
//! If the audit append fails, nothing is requested: the incident stays open in memory and in
//! the store with its marker, and the append is retried when the next message reaches the
//! monitor (and after a restart, from the marker). Audit and action are therefore delivered at
//! least once; the supervisor side treats repeated requests as no-ops.

use std::fmt;
use std::sync::Arc;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::audit::AuditError;
use crate::store::StoreError;

mod messages;
mod monitor;
mod notify;
mod record;
mod signal;
mod snapshot;
mod window;

#[cfg(test)]
mod tests;

pub use messages::{
    AcknowledgeIncident, AuthFailureSignal, ChildFailureSignal, DeniedHighRiskSignal,
    GetMonitorStatus, ListIncidents, MonitorLinks, MonitorStatus, OpenIncident, ResolveIncident,
    TokenUsageSignal, UnknownSenderDropped,
};
pub use monitor::{IncidentMonitor, MAX_ACTIVE_INCIDENTS, MONITOR_ACTOR};
pub use notify::{NotifyError, RetryPolicy, WebhookKey, WebhookNotifier};
pub use record::{Evidence, Incident, IncidentKind, IncidentState, Note, MAX_SAMPLE_IDS};
pub use signal::{dropped as signal_dropped, offer as offer_signal, SIGNAL_MAILBOX};
pub use snapshot::{
    create_snapshot, verify_snapshot, SnapshotError, SnapshotFile, SnapshotInfo, MANIFEST_NAME,
};

/// A source of wall-clock time. The monitor reads it only for messages that carry no time of
/// their own (operator commands, [`crate::executor::HighRiskDenied`]); tests inject a fixed one.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(OffsetDateTime::now_utc)
}

/// The `incidents.*` settings (CONTRACT §6). A threshold of 0 disables its trigger.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IncidentSettings {
    /// Failed authentications from one IP within the window that lock it out (default 10).
    pub auth_failures_per_ip: u32,
    /// The window of both auth-failure triggers, in seconds (default 60).
    pub auth_failures_window_seconds: u64,
    /// Failed authentications from all IPs within the window that count as a storm
    /// (default 50; incident only, no automatic action).
    pub auth_failures_global: u32,
    /// Messages from unknown senders dropped on one channel within the window that quarantine
    /// it (default 20).
    pub unknown_senders_per_channel: u32,
    /// The window of the unknown-sender trigger, in seconds (default 300).
    pub unknown_senders_window_seconds: u64,
    /// Denied tier-2 tool attempts by one sender within the window that block the sender
    /// (default 5).
    pub denied_high_risk_per_sender: u32,
    /// The window of the high-risk trigger, in seconds (default 600).
    pub denied_high_risk_window_seconds: u64,
    /// A channel's tokens in the window above this many times its trailing hourly average per
    /// window count as a spike (default 10.0).
    pub token_spike_factor: f64,
    /// The window of the token-spike trigger, in seconds (default 300).
    pub token_spike_window_seconds: u64,
    /// A spike must also exceed this many tokens in the window (default 20 000).
    pub token_spike_min_tokens: u64,
    /// Where each new incident is POSTed (signed); unset: no notification. May embed a
    /// credential (many chat webhooks do), so it is never logged.
    pub webhook_url: Option<String>,
    /// Who answers for incidents (shown by `status`, checked by `security check`).
    pub owner: Option<String>,
}

impl Default for IncidentSettings {
    fn default() -> Self {
        Self {
            auth_failures_per_ip: 10,
            auth_failures_window_seconds: 60,
            auth_failures_global: 50,
            unknown_senders_per_channel: 20,
            unknown_senders_window_seconds: 300,
            denied_high_risk_per_sender: 5,
            denied_high_risk_window_seconds: 600,
            token_spike_factor: 10.0,
            token_spike_window_seconds: 300,
            token_spike_min_tokens: 20_000,
            webhook_url: None,
            owner: None,
        }
    }
}

impl fmt::Debug for IncidentSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncidentSettings")
            .field("auth_failures_per_ip", &self.auth_failures_per_ip)
            .field(
                "auth_failures_window_seconds",
                &self.auth_failures_window_seconds,
            )
            .field("auth_failures_global", &self.auth_failures_global)
            .field(
                "unknown_senders_per_channel",
                &self.unknown_senders_per_channel,
            )
            .field(
                "unknown_senders_window_seconds",
                &self.unknown_senders_window_seconds,
            )
            .field(
                "denied_high_risk_per_sender",
                &self.denied_high_risk_per_sender,
            )
            .field(
                "denied_high_risk_window_seconds",
                &self.denied_high_risk_window_seconds,
            )
            .field("token_spike_factor", &self.token_spike_factor)
            .field(
                "token_spike_window_seconds",
                &self.token_spike_window_seconds,
            )
            .field("token_spike_min_tokens", &self.token_spike_min_tokens)
            .field(
                "webhook_url",
                &self.webhook_url.as_ref().map(|_| "<set, not shown>"),
            )
            .field("owner", &self.owner)
            .finish()
    }
}

/// A setting that cannot work, named by its key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("incidents.{key} is invalid: {allowed}")]
pub struct InvalidIncidentSetting {
    /// The key under `incidents.`.
    pub key: &'static str,
    /// What is allowed.
    pub allowed: &'static str,
}

impl IncidentSettings {
    /// Checks the values that deserialisation cannot (zero windows, a factor that is not a
    /// positive number, a webhook URL that is not http(s)).
    pub fn validate(&self) -> Result<(), InvalidIncidentSetting> {
        let windows = [
            (
                "auth_failures_window_seconds",
                self.auth_failures_window_seconds,
            ),
            (
                "unknown_senders_window_seconds",
                self.unknown_senders_window_seconds,
            ),
            (
                "denied_high_risk_window_seconds",
                self.denied_high_risk_window_seconds,
            ),
            (
                "token_spike_window_seconds",
                self.token_spike_window_seconds,
            ),
        ];
        for (key, seconds) in windows {
            if seconds == 0 || seconds > 86_400 {
                return Err(InvalidIncidentSetting {
                    key,
                    allowed: "a number of seconds from 1 to 86400",
                });
            }
        }
        if !(self.token_spike_factor.is_finite() && self.token_spike_factor > 0.0) {
            return Err(InvalidIncidentSetting {
                key: "token_spike_factor",
                allowed: "a positive number",
            });
        }
        if let Some(url) = &self.webhook_url {
            if notify::parse_webhook_url(url).is_err() {
                return Err(InvalidIncidentSetting {
                    key: "webhook_url",
                    allowed: "an http:// or https:// URL",
                });
            }
        }
        Ok(())
    }
}

/// What the monitor asks the supervisor side to do. It decides; it never acts itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum IncidentAction {
    /// Refuse this IP for `seconds` (429 with `Retry-After`), even with a correct token.
    LockoutIp {
        /// The client IP.
        ip: String,
        /// How long.
        seconds: u64,
    },
    /// Quarantine a channel: inbound is stored and acknowledged, nothing reaches the agent.
    QuarantineChannel {
        /// The channel's name.
        channel: String,
        /// Why (the trigger, or a crash loop's failure reason).
        reason: String,
    },
    /// Block one sender on one channel.
    BlockSender {
        /// The channel's name.
        channel: String,
        /// The sender's id.
        sender: String,
    },
    /// Restrict one sender's tools to `max_tier` (always 0 from the monitor).
    RestrictSender {
        /// The channel's name.
        channel: String,
        /// The sender's id.
        sender: String,
        /// The highest tool tier left to the sender.
        max_tier: u8,
    },
    /// Nothing to do (a global auth storm: there is no single source to act on).
    None,
}

impl IncidentAction {
    /// A one-line description for the incident's `actions` list (no secrets, no text).
    pub fn describe(&self) -> String {
        match self {
            IncidentAction::LockoutIp { ip, seconds } => format!("lockout_ip {ip} {seconds}s"),
            IncidentAction::QuarantineChannel { channel, .. } => {
                format!("quarantine_channel {channel}")
            }
            IncidentAction::BlockSender { channel, sender } => {
                format!("block_sender {channel} {sender}")
            }
            IncidentAction::RestrictSender {
                channel,
                sender,
                max_tier,
            } => format!("restrict_sender {channel} {sender} max_tier={max_tier}"),
            IncidentAction::None => "none".to_string(),
        }
    }
}

/// The monitor asks the supervisor side to carry out one action for one incident.
///
/// Sent only after the incident's audit record is durable; may be sent more than once for the
/// same incident (a re-trigger, or a retry after a restart), so handling must be idempotent.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
#[rtype(result = "Result<(), ActionFailed>")]
pub struct RequestAction {
    /// The incident that asks for it.
    pub incident_id: String,
    /// Its kind.
    pub kind: IncidentKind,
    /// What to do.
    pub action: IncidentAction,
}

/// The supervisor side could not carry out a requested action.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("action failed: {reason}")]
pub struct ActionFailed {
    /// Why (no secrets).
    pub reason: String,
}

/// What can go wrong with an incident operation.
#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    /// No incident has this id.
    #[error("unknown incident {id}")]
    UnknownIncident {
        /// The id asked for.
        id: String,
    },
    /// The incident is resolved; it can be neither acknowledged nor resolved again.
    #[error("incident {id} is already resolved")]
    AlreadyResolved {
        /// The incident.
        id: String,
    },
    /// A field of an operator command is unusable.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit append failed or the audit log is unavailable: nothing was changed.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// `incidents.webhook_url` is set but no signing key was handed in.
    #[error("incidents.webhook_url is set but no webhook signing key was provided")]
    WebhookKeyMissing,
    /// The webhook could not be set up.
    #[error(transparent)]
    Notify(#[from] NotifyError),
    /// A setting is invalid.
    #[error(transparent)]
    Settings(#[from] InvalidIncidentSetting),
}
