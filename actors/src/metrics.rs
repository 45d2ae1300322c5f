//! The process-wide counters the actors report to (issue 16): channel messages by direction
//! and delivery state, tool decisions, model tokens, incidents opened, audit appends and the
//! audit fsync latency.
//!
//! Owns: one set of `prometheus-client` families per process ([`metrics`]), outside every
//! actor, so a restarted actor (a fresh instance built by its factory) never resets a counter
//! and a channel that does not answer a scrape keeps its counts (`rate()` never sees a drop
//! to 0). Registering them for a scrape ([`Metrics::register`]).
//! Must not: take a sender, a token, a path or any text from a message as a label; labels are
//! configured channel names, closed sets of states and tool names (`unknown` for anything a
//! model made up), so the number of series is bounded by the configuration.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::channel::access::DropReason;
use crate::channel::InboundOutcome;
use crate::incident::IncidentKind;
use crate::policy::Tool;

/// `{channel, direction, state}` of `kafclaw_channel_messages_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    /// The configured channel name.
    pub channel: String,
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// Inbound: `accepted`, `held`, `duplicate`, `dropped`; outbound: `queued`, `sent`,
    /// `retried`, `failed`.
    pub state: &'static str,
}

/// `{channel}` of the per-channel totals.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    /// The configured channel name.
    pub channel: String,
}

/// `{tool, result}` of `kafclaw_tool_decisions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabels {
    /// A catalogue tool name, or `unknown`.
    pub tool: &'static str,
    /// `allow`, `deny` or `needs_approval`.
    pub result: &'static str,
}

/// `{channel, kind}` of `kafclaw_model_tokens_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// The channel the turn came from (`api` for `/chat`).
    pub channel: String,
    /// `prompt` or `completion`.
    pub kind: &'static str,
}

/// `{kind}` of `kafclaw_incidents_opened_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IncidentLabels {
    /// The incident kind (`unknown_senders`, `auth_failures`, …).
    pub kind: &'static str,
}

/// `{reason}` of `kafclaw_incident_signals_dropped_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// One of [`SIGNAL_DROP_REASONS`].
    pub reason: &'static str,
}

/// Why a signal did not reach the monitor or did not open an incident: its mailbox was full,
/// it was down (restarting), or it already tracks the most active incidents it keeps.
pub const SIGNAL_DROP_REASONS: [&str; 3] = ["mailbox_full", "target_down", "incidents_full"];

/// Inbound delivery states, each a series from the start (a counter that appears late makes
/// `rate()` miss its first increase).
pub const INBOUND_STATES: [&str; 4] = ["accepted", "held", "duplicate", "dropped"];
/// Outbound delivery states.
pub const OUTBOUND_STATES: [&str; 4] = ["queued", "sent", "retried", "failed"];

/// Upper bounds of the audit fsync histogram, in seconds (100 µs to ~1.6 s).
const FSYNC_BUCKETS: [f64; 15] = [
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2,
];

/// The families (cheap to clone: every field shares its storage).
#[derive(Clone, Debug)]
pub struct Metrics {
    channel_messages: Family<MessageLabels, Counter>,
    inbound_total: Family<ChannelLabel, Counter>,
    unknown_senders: Family<ChannelLabel, Counter>,
    tool_decisions: Family<ToolLabels, Counter>,
    model_tokens: Family<TokenLabels, Counter>,
    incidents_opened: Family<IncidentLabels, Counter>,
    signals_dropped: Family<DropLabels, Counter>,
    backlog_refused: Family<ChannelLabel, Counter>,
    audit_appends: Counter,
    audit_fsync: Histogram,
}

/// Every incident kind, each a series from the start.
const INCIDENT_KINDS: [IncidentKind; 7] = [
    IncidentKind::AuthFailures,
    IncidentKind::AuthStorm,
    IncidentKind::UnknownSenders,
    IncidentKind::HighRiskTools,
    IncidentKind::TokenSpike,
    IncidentKind::CrashLoop,
    IncidentKind::Manual,
];

/// Tool-decision results.
const TOOL_RESULTS: [&str; 3] = ["allow", "deny", "needs_approval"];

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let metrics = Metrics {
        channel_messages: Family::default(),
        inbound_total: Family::default(),
        unknown_senders: Family::default(),
        tool_decisions: Family::default(),
        model_tokens: Family::default(),
        incidents_opened: Family::default(),
        signals_dropped: Family::default(),
        backlog_refused: Family::default(),
        audit_appends: Counter::default(),
        audit_fsync: Histogram::new(FSYNC_BUCKETS),
    };
    for tool in Tool::ALL.iter().map(|t| t.name()).chain(["unknown"]) {
        for result in TOOL_RESULTS {
            let _ = metrics
                .tool_decisions
                .get_or_create(&ToolLabels { tool, result });
        }
    }
    for kind in INCIDENT_KINDS {
        let _ = metrics.incidents_opened.get_or_create(&IncidentLabels {
            kind: kind.as_str(),
        });
    }
    for reason in SIGNAL_DROP_REASONS {
        let _ = metrics
            .signals_dropped
            .get_or_create(&DropLabels { reason });
    }
    metrics
});

/// The process's families.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    /// Creates every series of a configured channel at 0, so the first message already shows
    /// as an increase.
    pub fn declare_channel(&self, channel: &str) {
        let label = ChannelLabel {
            channel: channel.to_string(),
        };
        let _ = self.inbound_total.get_or_create(&label);
        let _ = self.unknown_senders.get_or_create(&label);
        let _ = self.backlog_refused.get_or_create(&label);
        for kind in ["prompt", "completion"] {
            let _ = self.model_tokens.get_or_create(&TokenLabels {
                channel: channel.to_string(),
                kind,
            });
        }
        for (direction, states) in [("inbound", INBOUND_STATES), ("outbound", OUTBOUND_STATES)] {
            for state in states {
                let _ = self.channel_messages.get_or_create(&MessageLabels {
                    channel: channel.to_string(),
                    direction,
                    state,
                });
            }
        }
    }

    /// What the channel answered for one inbound message (counted at the webhook edge, which
    /// outlives every channel actor).
    pub fn inbound(&self, channel: &str, outcome: &InboundOutcome) {
        let state = match outcome {
            InboundOutcome::Accepted { held: false, .. } => "accepted",
            InboundOutcome::Accepted { held: true, .. } => "held",
            InboundOutcome::Duplicate => "duplicate",
            InboundOutcome::Dropped { .. } => "dropped",
        };
        self.message(channel, "inbound", state);
        if matches!(outcome, InboundOutcome::Duplicate) {
            return;
        }
        let label = ChannelLabel {
            channel: channel.to_string(),
        };
        self.inbound_total.get_or_create(&label).inc();
        if let InboundOutcome::Dropped { reason } = outcome {
            if is_unknown_sender(reason) {
                self.unknown_senders.get_or_create(&label).inc();
            }
        }
    }

    /// One delivery to `channel` refused because its backlog is at `store.max_pending`.
    pub fn backlog_refused(&self, channel: &str) {
        let label = ChannelLabel {
            channel: channel.to_string(),
        };
        self.backlog_refused.get_or_create(&label).inc();
    }

    /// New inbound messages of `channel` (not duplicates) and those from unknown senders,
    /// since the process started.
    pub fn inbound_totals(&self, channel: &str) -> (u64, u64) {
        let label = ChannelLabel {
            channel: channel.to_string(),
        };
        let get =
            |family: &Family<ChannelLabel, Counter>| family.get(&label).map_or(0, |c| c.get());
        (get(&self.inbound_total), get(&self.unknown_senders))
    }

    /// One reply on `channel` reached `state` (one of [`OUTBOUND_STATES`]).
    pub fn outbound(&self, channel: &str, state: &'static str) {
        self.message(channel, "outbound", state);
    }

    fn message(&self, channel: &str, direction: &'static str, state: &'static str) {
        self.channel_messages
            .get_or_create(&MessageLabels {
                channel: channel.to_string(),
                direction,
                state,
            })
            .inc();
    }

    /// The count of `channel`'s messages in `direction` and `state` (0 when none yet).
    pub fn messages(&self, channel: &str, direction: &'static str, state: &'static str) -> u64 {
        self.channel_messages
            .get(&MessageLabels {
                channel: channel.to_string(),
                direction,
                state,
            })
            .map_or(0, |c| c.get())
    }

    /// One tool decision; `tool` is the name the model sent (unknown names count as
    /// `unknown`).
    pub fn tool_decision(&self, tool: &str, result: &'static str) {
        let tool = Tool::from_name(tool).map_or("unknown", Tool::name);
        self.tool_decisions
            .get_or_create(&ToolLabels { tool, result })
            .inc();
    }

    /// Tokens of one provider call made for a turn from `channel`.
    pub fn model_tokens(&self, channel: &str, prompt: u64, completion: u64) {
        for (kind, n) in [("prompt", prompt), ("completion", completion)] {
            self.model_tokens
                .get_or_create(&TokenLabels {
                    channel: channel.to_string(),
                    kind,
                })
                .inc_by(n);
        }
    }

    /// One incident of `kind` was opened (after its audit record).
    pub fn incident_opened(&self, kind: &'static str) {
        self.incidents_opened
            .get_or_create(&IncidentLabels { kind })
            .inc();
    }

    /// One signal did not reach the monitor, or did not open an incident (`reason`: one of
    /// [`SIGNAL_DROP_REASONS`]).
    pub fn incident_signal_dropped(&self, reason: &'static str) {
        self.signals_dropped
            .get_or_create(&DropLabels { reason })
            .inc();
    }

    /// Signals dropped for `reason` since the process started.
    pub fn incident_signals_dropped(&self, reason: &'static str) -> u64 {
        self.signals_dropped
            .get(&DropLabels { reason })
            .map_or(0, |c| c.get())
    }

    /// `n` audit records became durable.
    pub fn audit_appended(&self, n: u64) {
        self.audit_appends.inc_by(n);
    }

    /// One fsync of an audit segment took `took`.
    pub fn audit_fsync(&self, took: Duration) {
        self.audit_fsync.observe(took.as_secs_f64());
    }

    /// Registers every family (clones share the counts) for one scrape.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kafclaw_channel_inbound",
            "New inbound messages accepted by the channel since the process started",
            self.inbound_total.clone(),
        );
        registry.register(
            "kafclaw_channel_unknown_senders",
            "Messages from unknown senders dropped or sent to pairing since the process started",
            self.unknown_senders.clone(),
        );
        registry.register(
            "kafclaw_channel_backlog_refused",
            "Deliveries refused (503) because the channel's unfinished messages were at store.max_pending, since the process started",
            self.backlog_refused.clone(),
        );
        registry.register(
            "kafclaw_channel_messages",
            "Channel messages by direction and delivery state since the process started",
            self.channel_messages.clone(),
        );
        registry.register(
            "kafclaw_tool_decisions",
            "Tool-call decisions by tool and result since the process started",
            self.tool_decisions.clone(),
        );
        registry.register(
            "kafclaw_model_tokens",
            "Model tokens used by turns of each channel since the process started",
            self.model_tokens.clone(),
        );
        registry.register(
            "kafclaw_incidents_opened",
            "Incidents opened by kind since the process started",
            self.incidents_opened.clone(),
        );
        registry.register(
            "kafclaw_incident_signals_dropped",
            "Signals the incident monitor could not take (mailbox full, restarting) or that found it at its active-incident bound, since the process started",
            self.signals_dropped.clone(),
        );
        registry.register(
            "kafclaw_audit_appends",
            "Audit records made durable since the process started",
            self.audit_appends.clone(),
        );
        registry.register_with_unit(
            "kafclaw_audit_fsync",
            "Time one fsync of an audit segment took",
            Unit::Seconds,
            self.audit_fsync.clone(),
        );
    }
}

/// Whether a drop reason counts as unknown-sender activity (the incident trigger's signal,
/// and a sender asked to pair).
fn is_unknown_sender(reason: &str) -> bool {
    reason == "pairing_required"
        || [
            DropReason::UnknownSender,
            DropReason::PairingNeedsDirectChat,
            DropReason::PairingFull,
        ]
        .iter()
        .any(|r| r.as_str() == reason)
}

#[cfg(test)]
mod tests;
