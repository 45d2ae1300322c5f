//! `GET /metrics` (CONTRACT §3.3, read scope): the gateway's health in the Prometheus text
//! exposition format (version 0.0.4), written by hand.
//!
//! Owns: asking the supervisor, the channels, the incident monitor and the audit chainer for
//! what they already know, and formatting it. Each scrape costs one message per actor (with a
//! deadline, so a stuck actor cannot hang a scraper); nothing is counted here.
//! Must not: expose a sender, a token name, a secret or message text — labels are child and
//! channel names only.

use std::fmt::Write as _;
use std::time::Duration;

use actix_web::{web, HttpResponse};

use kafclaw_actors::channel::{ChannelState, GetChannelInfo};
use kafclaw_actors::incident::GetMonitorStatus;
use kafclaw_actors::supervisor::{ChildState, ChildStatus, GetSupervisionTree};

use super::auth::{Authorized, Read};
use super::error::ApiError;
use super::AppState;

#[cfg(test)]
mod tests;

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long one actor may take to answer a scrape.
const ASK_DEADLINE: Duration = Duration::from_secs(2);

/// Every channel state, so each channel has one `0|1` sample per state (alert on
/// `kafclaw_channel_state{state="quarantined"} == 1`).
const CHANNEL_STATES: [ChannelState; 5] = [
    ChannelState::Running,
    ChannelState::Observe,
    ChannelState::Quarantined,
    ChannelState::Disabled,
    ChannelState::Failed,
];

/// `GET /metrics` (read).
pub async fn metrics(
    state: web::Data<AppState>,
    _caller: Authorized<Read>,
) -> Result<HttpResponse, ApiError> {
    let snapshot = collect(&state).await;
    Ok(HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .body(snapshot.render()))
}

/// One channel's figures.
#[derive(Debug)]
pub struct ChannelSample {
    /// The channel's name.
    pub name: String,
    /// Its state (`failed` when its actor does not answer).
    pub state: ChannelState,
    /// New inbound messages since its actor started.
    pub inbound_total: u64,
    /// Unknown senders dropped or sent to pairing since its actor started.
    pub unknown_senders_total: u64,
}

/// Everything one scrape reports; `None` where the actor did not answer in time (the series
/// is then left out rather than reported as a made-up zero).
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Build version.
    pub version: String,
    /// Seconds since the process started.
    pub uptime_seconds: f64,
    /// Failed authentications since start.
    pub auth_failures: u64,
    /// Supervised children, flattened (`store`, `channel:whatsapp`, …).
    pub children: Option<Vec<ChildStatus>>,
    /// Channels by name.
    pub channels: Vec<ChannelSample>,
    /// Incidents not yet resolved.
    pub incidents_open: Option<usize>,
    /// The sequence number of the last durable audit record.
    pub audit_head_seq: Option<u64>,
}

async fn collect(state: &AppState) -> Snapshot {
    let children = state
        .supervisor
        .send(GetSupervisionTree)
        .timeout(ASK_DEADLINE)
        .await
        .ok()
        .map(|tree| {
            let mut flat = Vec::new();
            flatten(&tree.root.children, &mut flat);
            flat
        });
    let channels = futures_util::future::join_all(state.control.channels.iter().map(
        |(name, slot)| async move {
            let info = match slot.addr() {
                Some(addr) => addr
                    .send(GetChannelInfo)
                    .timeout(ASK_DEADLINE)
                    .await
                    .ok()
                    .and_then(Result::ok),
                None => None,
            };
            match info {
                Some(info) => ChannelSample {
                    name: name.clone(),
                    state: info.state,
                    inbound_total: info.inbound_total,
                    unknown_senders_total: info.unknown_senders_total,
                },
                None => ChannelSample {
                    name: name.clone(),
                    state: ChannelState::Failed,
                    inbound_total: 0,
                    unknown_senders_total: 0,
                },
            }
        },
    ))
    .await;
    let incidents_open = match state.monitor.addr() {
        Some(addr) => addr
            .send(GetMonitorStatus)
            .timeout(ASK_DEADLINE)
            .await
            .ok()
            .map(|s| s.active_incidents),
        None => None,
    };
    let audit_head_seq = match state.audit.addr() {
        Some(addr) => addr
            .send(kafclaw_actors::audit::GetHead)
            .timeout(ASK_DEADLINE)
            .await
            .ok()
            .map(|h| h.seq),
        None => None,
    };
    Snapshot {
        version: state.version.to_string(),
        uptime_seconds: state.started.elapsed().as_secs_f64(),
        auth_failures: state
            .auth_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        children,
        channels,
        incidents_open,
        audit_head_seq,
    }
}

fn flatten(children: &[ChildStatus], out: &mut Vec<ChildStatus>) {
    for child in children {
        out.push(child.clone());
        flatten(&child.children, out);
    }
}

impl Snapshot {
    /// The exposition text: every family's `# HELP` and `# TYPE`, then its samples.
    pub fn render(&self) -> String {
        let mut out = Exposition::default();
        out.family(
            "kafclaw_up",
            "gauge",
            "1 while the gateway answers scrapes.",
        );
        out.sample("kafclaw_up", &[], 1);
        out.family(
            "kafclaw_build_info",
            "gauge",
            "The running build; the value is always 1.",
        );
        out.sample("kafclaw_build_info", &[("version", &self.version)], 1);
        out.family(
            "kafclaw_uptime_seconds",
            "gauge",
            "Seconds since the gateway process started.",
        );
        out.sample(
            "kafclaw_uptime_seconds",
            &[],
            format_args!("{:.3}", self.uptime_seconds),
        );
        out.family(
            "kafclaw_auth_failures_total",
            "counter",
            "Failed authentications on both ports since start.",
        );
        out.sample("kafclaw_auth_failures_total", &[], self.auth_failures);
        if let Some(children) = &self.children {
            out.family(
                "kafclaw_supervisor_restarts_total",
                "counter",
                "Restarts of each supervised child since start.",
            );
            for child in children {
                out.sample(
                    "kafclaw_supervisor_restarts_total",
                    &[("child", &child.name)],
                    child.restarts,
                );
            }
            out.family(
                "kafclaw_child_up",
                "gauge",
                "1 when the supervised child is running, else 0.",
            );
            for child in children {
                let up = u8::from(child.state == ChildState::Running);
                out.sample("kafclaw_child_up", &[("child", &child.name)], up);
            }
        }
        if !self.channels.is_empty() {
            out.family(
                "kafclaw_channel_state",
                "gauge",
                "1 for the channel's current state, 0 for the others.",
            );
            for channel in &self.channels {
                for state in CHANNEL_STATES {
                    out.sample(
                        "kafclaw_channel_state",
                        &[("channel", &channel.name), ("state", state.as_str())],
                        u8::from(channel.state == state),
                    );
                }
            }
            out.family(
                "kafclaw_channel_inbound_total",
                "counter",
                "New inbound messages accepted by the channel since its actor started.",
            );
            for channel in &self.channels {
                out.sample(
                    "kafclaw_channel_inbound_total",
                    &[("channel", &channel.name)],
                    channel.inbound_total,
                );
            }
            out.family(
                "kafclaw_channel_unknown_senders_total",
                "counter",
                "Messages from unknown senders dropped or sent to pairing since the channel's actor started.",
            );
            for channel in &self.channels {
                out.sample(
                    "kafclaw_channel_unknown_senders_total",
                    &[("channel", &channel.name)],
                    channel.unknown_senders_total,
                );
            }
        }
        if let Some(open) = self.incidents_open {
            out.family(
                "kafclaw_incidents_open",
                "gauge",
                "Incidents not yet resolved (open or acknowledged).",
            );
            out.sample("kafclaw_incidents_open", &[], open);
        }
        if let Some(seq) = self.audit_head_seq {
            out.family(
                "kafclaw_audit_head_seq",
                "gauge",
                "Sequence number of the last durable audit record (0 when the log is empty).",
            );
            out.sample("kafclaw_audit_head_seq", &[], seq);
        }
        out.text
    }
}

/// A text exposition being written.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// A label value as the exposition format wants it: `\`, `"` and newline escaped.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A `# HELP` text: `\` and newline escaped.
pub fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}
