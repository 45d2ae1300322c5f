//! `GET /metrics` (CONTRACT §3.3, read scope): the gateway's health through `prometheus-client`,
//! in the Prometheus text format (0.0.4), or OpenMetrics when the scraper asks for it.
//!
//! Owns: one scrape. The counters live outside every actor — the actors' in
//! `kafclaw_actors::metrics`, the edge's in [`edge`] — so a restarted or silent actor never
//! makes one drop to 0; what only an actor knows (the supervision tree, a channel's state)
//! is asked for with a deadline and left out when the actor does not answer; queue depths
//! are read from the store, which does not depend on the channel's actor.
//! Must not: expose a sender, a token name, a secret or message text — labels are child and
//! channel names, route templates and closed sets of states.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use kafclaw_actors::channel::inbox::{Inbox, InboxCounts};
use kafclaw_actors::channel::outbox::{Backoff, Outbox};
use kafclaw_actors::channel::{ChannelState, GetChannelInfo};
use kafclaw_actors::incident::GetMonitorStatus;
use kafclaw_actors::supervisor::{ChildState, ChildStatus, GetSupervisionTree};

use super::auth::{Authorized, Read};
use super::error::ApiError;
use super::AppState;

pub mod edge;
pub mod process;

#[cfg(test)]
mod tests;

/// The Prometheus text format's content type (what scrapers and `curl` get by default).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// OpenMetrics' content type (served when the `Accept` header asks for it).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long one actor may take to answer a scrape.
const ASK_DEADLINE: Duration = Duration::from_secs(2);

/// Queued replies read at most per scrape.
const MAX_OUTBOX_SCAN: usize = 100_000;

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
    caller: Authorized<Read, HttpRequest>,
) -> Result<HttpResponse, ApiError> {
    let openmetrics = caller
        .input
        .headers()
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let snapshot = collect(&state).await;
    let (content_type, text) = if openmetrics {
        (OPENMETRICS_CONTENT_TYPE, snapshot.render_openmetrics())
    } else {
        (CONTENT_TYPE, snapshot.render())
    };
    Ok(HttpResponse::Ok().content_type(content_type).body(text))
}

/// One channel's figures at the scrape.
#[derive(Debug, Default)]
pub struct ChannelSample {
    /// The channel's name.
    pub name: String,
    /// Its state (`failed` when its actor does not answer).
    pub state: Option<ChannelState>,
    /// Inbox queue lengths (from the store); `None` when the store did not answer.
    pub inbox: Option<InboxCounts>,
    /// Replies waiting in the outbox (from the store).
    pub outbox: Option<usize>,
}

/// Everything one scrape reports besides the process-wide counters; `None` where the actor
/// did not answer in time (the series is then left out rather than reported as a made-up 0).
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
    /// Client keys locked out now.
    pub lockouts_active: usize,
    /// `process_*` figures.
    pub process: process::ProcessSample,
    /// The store's size on disk; `None` when it could not be read.
    pub store_size_bytes: Option<u64>,
    /// The store's page-cache limit (`store.cache_mib`), in bytes.
    pub store_cache_limit_bytes: u64,
    /// Fleet mode: whether this node is connected, and the roster (`Fleet::nodes`).
    pub fleet: Option<(bool, serde_json::Value)>,
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
    let states =
        futures_util::future::join_all(state.control.channels.values().map(|slot| async move {
            match slot.addr() {
                Some(addr) => addr
                    .send(GetChannelInfo)
                    .timeout(ASK_DEADLINE)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|info| info.state),
                None => None,
            }
        }))
        .await;
    let names: Vec<String> = state.control.channels.keys().cloned().collect();
    let (inboxes, outboxes) = depths(state, names.clone()).await;
    let channels = names
        .into_iter()
        .zip(states)
        .map(|(name, state)| ChannelSample {
            inbox: inboxes.as_ref().and_then(|m| m.get(&name).copied()),
            outbox: outboxes
                .as_ref()
                .map(|m| m.get(&name).copied().unwrap_or(0)),
            name,
            state: Some(state.unwrap_or(ChannelState::Failed)),
        })
        .collect();
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
        lockouts_active: state.control.lockout.active(Instant::now()).len(),
        process: process::sample(state.started),
        store_size_bytes: state.db.size_on_disk().ok(),
        store_cache_limit_bytes: state.db.cache_limit_bytes(),
        fleet: state
            .control
            .fleet
            .as_ref()
            .map(|f| (f.connected(), f.nodes())),
    }
}

type Depths = (
    Option<BTreeMap<String, InboxCounts>>,
    Option<BTreeMap<String, usize>>,
);

/// Inbox and outbox depths per channel, read from the store off the worker thread.
async fn depths(state: &AppState, names: Vec<String>) -> Depths {
    let db = state.db.clone();
    let read = web::block(move || {
        let inboxes = Inbox::new(&db).ok().map(|inbox| {
            names
                .iter()
                .filter_map(|name| inbox.counts(name).ok().map(|c| (name.clone(), c)))
                .collect()
        });
        let outboxes = Outbox::new(&db, Backoff::default())
            .and_then(|outbox| outbox.depths(MAX_OUTBOX_SCAN))
            .ok();
        (inboxes, outboxes)
    });
    read.await.unwrap_or((None, None))
}

fn flatten(children: &[ChildStatus], out: &mut Vec<ChildStatus>) {
    for child in children {
        out.push(child.clone());
        flatten(&child.children, out);
    }
}

type Labels = Vec<(&'static str, String)>;

fn gauge_family() -> Family<Labels, Gauge> {
    Family::default()
}

fn set(family: &Family<Labels, Gauge>, labels: &[(&'static str, &str)], value: i64) {
    let labels: Labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
    family.get_or_create(&labels).set(value);
}

impl Snapshot {
    /// The Prometheus text exposition (0.0.4).
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry());
        text
    }

    /// The OpenMetrics exposition (ends with `# EOF`).
    pub fn render_openmetrics(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry());
        text
    }

    /// Every family of one scrape: this snapshot's, the edge's and the actors' counters.
    fn registry(&self) -> Registry {
        let mut registry = Registry::default();
        self.register_gateway(&mut registry);
        self.register_children(&mut registry);
        self.register_channels(&mut registry);
        self.register_fleet(&mut registry);
        edge::metrics().register(&mut registry, self.lockouts_active);
        kafclaw_actors::metrics::metrics().register(&mut registry);
        self.process.register(&mut registry);
        registry
    }

    fn register_gateway(&self, registry: &mut Registry) {
        let up: Gauge = Gauge::default();
        up.set(1);
        registry.register("kafclaw_up", "1 while the gateway answers scrapes", up);
        let build = gauge_family();
        set(&build, &[("version", &self.version)], 1);
        registry.register(
            "kafclaw_build_info",
            "The running build; the value is always 1",
            build,
        );
        let uptime: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
        uptime.set(self.uptime_seconds);
        registry.register(
            "kafclaw_uptime_seconds",
            "Seconds since the gateway process started (process_start_time_seconds is better for alerts)",
            uptime,
        );
        let failures: Counter = Counter::default();
        failures.inc_by(self.auth_failures);
        registry.register(
            "kafclaw_auth_failures",
            "Failed authentications on both ports since start",
            failures,
        );
        if let Some(open) = self.incidents_open {
            let gauge: Gauge = Gauge::default();
            gauge.set(open as i64);
            registry.register(
                "kafclaw_incidents_open",
                "Incidents not yet resolved (open or acknowledged)",
                gauge,
            );
        }
        if let Some(bytes) = self.store_size_bytes {
            let gauge: Gauge = Gauge::default();
            gauge.set(i64::try_from(bytes).unwrap_or(i64::MAX));
            registry.register(
                "kafclaw_store_size_bytes",
                "Bytes the store (timeline.db) occupies on disk",
                gauge,
            );
        }
        let cache: Gauge = Gauge::default();
        cache.set(i64::try_from(self.store_cache_limit_bytes).unwrap_or(i64::MAX));
        registry.register(
            "kafclaw_store_cache_limit_bytes",
            "The store's page-cache limit in bytes (store.cache_mib)",
            cache,
        );
        if let Some(seq) = self.audit_head_seq {
            let gauge: Gauge = Gauge::default();
            gauge.set(i64::try_from(seq).unwrap_or(i64::MAX));
            registry.register(
                "kafclaw_audit_head_seq",
                "Sequence number of the last durable audit record (0 when the log is empty)",
                gauge,
            );
        }
    }

    fn register_fleet(&self, registry: &mut Registry) {
        let Some((connected, nodes)) = &self.fleet else {
            return;
        };
        let up: Gauge = Gauge::default();
        up.set(i64::from(*connected));
        registry.register(
            "kafclaw_fleet_connected",
            "1 when this node is connected to NATS with the fleet streams in place, else 0",
            up,
        );
        let seen = gauge_family();
        let applied = gauge_family();
        let head = gauge_family();
        for node in nodes.as_array().into_iter().flatten() {
            let id = node["node_id"].as_str().unwrap_or("?");
            let gauge =
                |v: &serde_json::Value| i64::try_from(v.as_u64().unwrap_or(0)).unwrap_or(i64::MAX);
            set(&seen, &[("node", id)], gauge(&node["seconds_since_seen"]));
            set(
                &applied,
                &[("node", id)],
                gauge(&node["applied_control_seq"]),
            );
            set(&head, &[("node", id)], gauge(&node["audit_head"]["seq"]));
        }
        registry.register(
            "kafclaw_fleet_node_seconds_since_seen",
            "Seconds since each node of the fleet roster last put its entry (as this node read it)",
            seen,
        );
        registry.register(
            "kafclaw_fleet_node_applied_control_seq",
            "The last control-stream sequence each node of the fleet applied",
            applied,
        );
        registry.register(
            "kafclaw_fleet_node_audit_head_seq",
            "Each node's audit head sequence, as last put in the fleet roster",
            head,
        );
    }

    fn register_children(&self, registry: &mut Registry) {
        let Some(children) = &self.children else {
            return;
        };
        let restarts = Family::<Labels, Counter>::default();
        let up = gauge_family();
        for child in children {
            let labels: Labels = vec![("child", child.name.clone())];
            restarts
                .get_or_create(&labels)
                .inc_by(u64::from(child.restarts));
            set(
                &up,
                &[("child", &child.name)],
                i64::from(child.state == ChildState::Running),
            );
        }
        registry.register(
            "kafclaw_supervisor_restarts",
            "Restarts of each supervised child since start",
            restarts,
        );
        registry.register(
            "kafclaw_child_up",
            "1 when the supervised child is running, else 0",
            up,
        );
    }

    fn register_channels(&self, registry: &mut Registry) {
        if self.channels.is_empty() {
            return;
        }
        let states = gauge_family();
        let inbox = gauge_family();
        let outbox = gauge_family();
        for channel in &self.channels {
            let name = channel.name.as_str();
            if let Some(current) = channel.state {
                for state in CHANNEL_STATES {
                    set(
                        &states,
                        &[("channel", name), ("state", state.as_str())],
                        i64::from(current == state),
                    );
                }
            }
            if let Some(counts) = channel.inbox {
                for (queue, n) in [
                    ("pending", counts.pending),
                    ("held", counts.held),
                    ("processing", counts.processing),
                ] {
                    set(&inbox, &[("channel", name), ("queue", queue)], n as i64);
                }
            }
            if let Some(n) = channel.outbox {
                set(&outbox, &[("channel", name)], n as i64);
            }
        }
        registry.register(
            "kafclaw_channel_state",
            "1 for the channel's current state, 0 for the others",
            states,
        );
        registry.register(
            "kafclaw_channel_inbox_depth",
            "Messages in the channel's inbox by queue (pending, held by quarantine or observe, processing)",
            inbox,
        );
        registry.register(
            "kafclaw_channel_outbox_depth",
            "Replies waiting in the channel's outbox",
            outbox,
        );
    }
}
