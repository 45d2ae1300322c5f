//! The HTTP gateway (CONTRACT §3): two actix-web apps on two listeners. It turns requests into
//! actor messages and answers back; it holds no domain state.
//!
//! Gateway port: `POST /chat`, channel webhooks, `GET /healthz`.
//! Dashboard port: the page at `/`, `/api/v1/*`, `GET /metrics`, `GET /healthz`.
//! Both listeners' routes come from one table (`table::ENDPOINTS`).
//! Every request passes `edge::edge` first (Host, Origin, caps, body deadline).

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};

use kafclaw_actors::audit::{AppendRecord, AuditChainer, AuditKind, AuditReceipt};
use kafclaw_actors::store::Store;
use kafclaw_actors::supervisor::{Slot, Supervisor};

pub mod auth;
pub mod body;
pub mod client;
pub mod conn;
pub mod dashboard;
pub mod edge;
pub mod error;
pub mod host;
pub mod lockout;
pub mod metrics;
pub mod posture;
pub mod routes;
pub mod space;
pub mod table;
pub mod tls;
mod webhooks;

use auth::{AuthFailure, Authenticator};
use body::BodySlots;
use client::TrustedProxies;
use conn::ConnectionLimit;
use edge::{edge, EdgePolicy};
use error::ApiError;
use host::{AllowedHosts, HostPattern};
use lockout::AuditThrottle;
use table::Listener;

/// What every handler can reach. Addresses of actors and read-only configuration only.
pub struct AppState {
    /// Build version.
    pub version: &'static str,
    /// When the process started (for `uptime_seconds`).
    pub started: Instant,
    /// Credential checks.
    pub auth: Authenticator,
    /// The supervisor (health, tree).
    pub supervisor: actix::Addr<Supervisor>,
    /// What the supervisor publishes for `/healthz` (read without a message).
    pub health: kafclaw_actors::supervisor::HealthBoard,
    /// The store actor (timeline).
    pub store: Slot<Store>,
    /// Allowed cross-origin browser origins (exact).
    pub cors_origins: Vec<String>,
    /// `local`, `loopback` or `remote` as bound (`local`: loopback without an admin token;
    /// `GET /api/v1/status` says `loopback` once a token is issued).
    pub mode: &'static str,
    /// Whether a model provider is configured.
    pub provider_configured: bool,
    /// The skills row (`skills.runtime_isolation` as resolved at start).
    pub skills: serde_json::Value,
    /// Failed authentications since start (for `/metrics`).
    pub auth_failures: AtomicU64,
    /// The audit chainer.
    pub audit: Slot<AuditChainer>,
    /// Refuses new work while the state directory's file system is short of its reserve.
    pub space: space::SpaceGuard,
    /// The secret vault.
    pub vault: Slot<kafclaw_actors::vault::SecretVault>,
    /// The audit directory (for verification over the control socket).
    pub audit_dir: std::path::PathBuf,
    /// The audit chain key (for verification over the control socket).
    pub audit_key: kafclaw_actors::audit::AuditKey,
    /// Pending tool approvals.
    pub approvals: Slot<kafclaw_actors::approval::Approvals>,
    /// The agent.
    pub agent: Slot<kafclaw_actors::agent::Agent>,
    /// The channels' webhook secrets and actors.
    pub channels: crate::channels::ChannelEdge,
    /// The incident monitor.
    pub monitor: Slot<kafclaw_actors::incident::IncidentMonitor>,
    /// Signals to the current incident monitor.
    pub signals:
        actix::Addr<kafclaw_actors::supervisor::Forward<kafclaw_actors::incident::IncidentMonitor>>,
    /// What control messages act on.
    pub control: crate::admin::ControlContext,
    /// The full status body of the current second.
    pub status_cache: StatusCache,
    /// Places for `/chat` turns in progress (`gateway.max_concurrent_chats`): a turn takes
    /// one for its whole run or is refused at once.
    pub chat_slots: std::sync::Arc<tokio::sync::Semaphore>,
    /// The home (for backups over the control socket).
    pub home: kafclaw_actors::paths::Home,
    /// The open store (for backups over the control socket: sled is single-process).
    pub db: kafclaw_actors::store::StoreDb,
    /// The configured tool policy (`tools.policy.*`, for `GET /api/v1/tools`).
    pub tool_policy: kafclaw_actors::policy::PolicySettings,
}

impl AppState {
    /// Notes a failed authentication in the log. Cheap on purpose: the first failure and then
    /// every 100th is logged, so a storm cannot flood the log or slow others down.
    pub fn note_auth_failure(&self, client: &str, path: &str, failure: &AuthFailure) {
        let n = self.auth_failures.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::edge::metrics().auth_failure(failure.as_str());
        if n == 1 || n.is_multiple_of(100) {
            tracing::warn!(
                client,
                path,
                reason = failure.as_str(),
                total_failures = n,
                "authentication failed"
            );
        }
    }

    /// Appends an audit record and waits until it is durable. An error means the record is
    /// not on disk: callers acting on a security decision must fail closed.
    pub async fn audit(
        &self,
        kind: AuditKind,
        actor: &str,
        subject: &str,
        data: serde_json::Value,
    ) -> Result<AuditReceipt, ApiError> {
        let addr = self
            .audit
            .addr()
            .ok_or_else(|| ApiError::Unavailable("audit log unavailable".into()))?;
        let record = AppendRecord {
            kind,
            actor: actor.to_string(),
            subject: subject.to_string(),
            data,
        };
        match addr.send(record).await {
            Ok(Ok(receipt)) => Ok(receipt),
            Ok(Err(e)) => {
                tracing::error!(error = %e, kind = kind.as_str(), "audit append failed");
                Err(ApiError::Unavailable("audit log unavailable".into()))
            }
            Err(_) => Err(ApiError::Unavailable("audit log unavailable".into())),
        }
    }

    /// Appends the record of a refusal (a 401) and waits until it is written in chain order,
    /// not for its fsync: see ARCHITECTURE "What a 401 acts on".
    pub async fn audit_refusal(
        &self,
        kind: AuditKind,
        actor: &str,
        subject: &str,
        data: serde_json::Value,
    ) -> Result<AuditReceipt, ApiError> {
        let addr = self
            .audit
            .addr()
            .ok_or_else(|| ApiError::Unavailable("audit log unavailable".into()))?;
        let record = AppendRecord {
            kind,
            actor: actor.to_string(),
            subject: subject.to_string(),
            data,
        };
        match addr
            .send(kafclaw_actors::audit::AppendWritten(record))
            .await
        {
            Ok(Ok(receipt)) => Ok(receipt),
            Ok(Err(e)) => {
                tracing::error!(error = %e, kind = kind.as_str(), "audit append failed");
                Err(ApiError::Unavailable("audit log unavailable".into()))
            }
            Err(_) => Err(ApiError::Unavailable("audit log unavailable".into())),
        }
    }
}

/// The full `/api/v1/status` body, kept for the second (of uptime) it was built in.
#[derive(Default)]
pub struct StatusCache {
    body: std::sync::Mutex<Option<(u64, serde_json::Value)>>,
}

impl StatusCache {
    /// The body built during `second`, if any.
    pub fn get(&self, second: u64) -> Option<serde_json::Value> {
        let body = self.body.lock().unwrap_or_else(|p| p.into_inner());
        body.as_ref()
            .filter(|(at, _)| *at == second)
            .map(|(_, v)| v.clone())
    }
    /// Keeps `body` for `second`.
    pub fn put(&self, second: u64, body: serde_json::Value) {
        *self.body.lock().unwrap_or_else(|p| p.into_inner()) = Some((second, body));
    }
}

/// Limits applied to every request.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Body cap (413 above).
    pub max_body_bytes: usize,
    /// WhatsApp webhook body cap.
    pub webhook_max_body_bytes: usize,
    /// Time to receive the request head.
    pub request_timeout: Duration,
    /// Connections per worker.
    pub max_connections: usize,
    /// Worker threads per listener.
    pub workers: usize,
    /// Worker threads of the dashboard listener (one unless `gateway.workers` names a count:
    /// it serves one operator's browser and the control API, not the traffic).
    pub dashboard_workers: usize,
    /// Deadline for a whole request body, from the complete head (408 after).
    pub body_timeout: Duration,
    /// Open connections per client key on each listener (0 = no cap).
    pub max_connections_per_ip: usize,
    /// Bodies read at once before anyone is authenticated (webhooks), per listener.
    pub max_unauthenticated_bodies: usize,
    /// `gateway.allowed_hosts`.
    pub allowed_hosts: Vec<HostPattern>,
    /// `gateway.trusted_proxies`.
    pub trusted_proxies: Arc<TrustedProxies>,
    /// How many refusals of a wrong `Host`/`Origin` are audited per client and in total,
    /// per `refusal_window`.
    pub refusal_audits: (u32, u32),
    /// The window of `refusal_audits`.
    pub refusal_window: Duration,
}

impl Limits {
    /// The edge policy of one listener.
    fn edge_policy(&self, refusals: &Arc<AuditThrottle>) -> web::Data<EdgePolicy> {
        web::Data::new(EdgePolicy {
            hosts: AllowedHosts::new(self.allowed_hosts.clone()),
            proxies: self.trusted_proxies.clone(),
            body_timeout: self.body_timeout,
            refusals: refusals.clone(),
        })
    }

    /// The unauthenticated-body slots of one listener.
    fn body_slots(&self) -> BodySlots {
        BodySlots(Arc::new(tokio::sync::Semaphore::new(
            self.max_unauthenticated_bodies,
        )))
    }

    /// The per-client connection cap of one listener.
    fn connection_limit(&self) -> ConnectionLimit {
        ConnectionLimit::new(self.max_connections_per_ip, self.trusted_proxies.clone())
    }
}

/// Applies the limits shared by both listeners (a macro: `HttpServer`'s type parameters are
/// not nameable without depending on actix-http directly).
macro_rules! configure {
    ($server:expr, $limits:expr, $connections:expr $(,)?) => {
        $server
            .on_connect(move |io, ext| $connections.on_connect(io, ext))
            .workers($limits.workers)
            .max_connections($limits.max_connections)
            .client_request_timeout($limits.request_timeout)
            .client_disconnect_timeout(Duration::from_secs(1))
            .keep_alive(Duration::from_secs(30))
            .tls_handshake_timeout($limits.request_timeout)
            .shutdown_timeout(8)
            .disable_signals()
    };
}

/// Adds the listener, speaking TLS when a configuration is given.
macro_rules! listen {
    ($server:expr, $listener:expr, $tls:expr $(,)?) => {{
        let server = $server;
        match $tls {
            Some(config) => server.listen_rustls_0_23($listener, config)?,
            None => server.listen($listener)?,
        }
    }};
}

/// Starts both listeners on already-bound sockets, over TLS when `tls` holds the certificate.
pub fn serve(
    state: web::Data<AppState>,
    limits: &Limits,
    gateway: TcpListener,
    dashboard: TcpListener,
    tls: Option<&Arc<tls::CertStore>>,
) -> std::io::Result<(Server, Server)> {
    let tls_config = tls
        .map(|store| store.server_config())
        .transpose()
        .map_err(std::io::Error::other)?;
    let refusals = Arc::new(AuditThrottle::new(
        limits.refusal_audits.0,
        limits.refusal_audits.1,
        limits.refusal_window,
    ));
    for name in state.control.channels.keys() {
        kafclaw_actors::metrics::metrics().declare_channel(name);
    }
    let gateway_state = state.clone();
    let gateway_limits = limits.clone();
    let gateway_policy = limits.edge_policy(&refusals);
    let gateway_slots = limits.body_slots();
    let gateway_connections = limits.connection_limit();
    let gateway_server = listen!(
        configure!(
            HttpServer::new(move || {
                App::new()
                    .app_data(gateway_state.clone())
                    .app_data(gateway_policy.clone())
                    .app_data(gateway_slots.clone())
                    .app_data(json_config(gateway_limits.max_body_bytes))
                    .app_data(query_config())
                    .app_data(web::PayloadConfig::new(gateway_limits.max_body_bytes))
                    .wrap(from_fn(edge))
                    .configure(|cfg| table::configure(Listener::Gateway, &gateway_limits, cfg))
            }),
            limits,
            gateway_connections,
        ),
        gateway,
        tls_config.clone()
    )
    .run();

    let dashboard_limits = limits.clone();
    let dashboard_policy = limits.edge_policy(&refusals);
    let dashboard_slots = limits.body_slots();
    let dashboard_connections = limits.connection_limit();
    let dashboard_server = listen!(
        configure!(
            HttpServer::new(move || {
                App::new()
                    .app_data(state.clone())
                    .app_data(dashboard_policy.clone())
                    .app_data(dashboard_slots.clone())
                    .app_data(json_config(dashboard_limits.max_body_bytes))
                    .app_data(query_config())
                    .app_data(web::PayloadConfig::new(dashboard_limits.max_body_bytes))
                    .wrap(from_fn(edge))
                    .configure(|cfg| table::configure(Listener::Dashboard, &dashboard_limits, cfg))
            }),
            limits,
            dashboard_connections,
        )
        .workers(limits.dashboard_workers),
        dashboard,
        tls_config
    )
    .run();

    Ok((gateway_server, dashboard_server))
}

fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, _req| {
            use actix_web::error::JsonPayloadError as E;
            match err {
                E::OverflowKnownLength { .. } | E::Overflow { .. } => ApiError::PayloadTooLarge,
                E::ContentType => ApiError::BadRequest(
                    "invalid json: content type must be application/json".into(),
                ),
                E::Deserialize(e) => ApiError::BadRequest(format!("invalid json: {e}")),
                E::Payload(actix_web::error::PayloadError::Overflow) => ApiError::PayloadTooLarge,
                other => ApiError::BadRequest(format!("invalid json: {other}")),
            }
            .into()
        })
}

fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|err, _req| ApiError::BadRequest(format!("invalid query: {err}")).into())
}
