//! The HTTP gateway (CONTRACT §3): two actix-web apps on two listeners. It turns requests into
//! actor messages and answers back; it holds no domain state.
//!
//! Gateway port: `POST /chat`, channel webhooks, `GET /healthz`.
//! Dashboard port: `/api/v1/*`, `GET /metrics`, `GET /healthz`.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpResponse, HttpServer, Resource};
use tracing::Instrument;

use kafclaw_actors::audit::{AppendRecord, AuditChainer, AuditKind, AuditReceipt};
use kafclaw_actors::store::Store;
use kafclaw_actors::supervisor::{Slot, Supervisor};

pub mod auth;
pub mod error;
pub mod lockout;
pub mod metrics;
pub mod routes;
mod webhooks;

use auth::{AuthFailure, Authenticator};
use error::ApiError;

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
    /// The store actor (timeline).
    pub store: Slot<Store>,
    /// Allowed cross-origin browser origins (exact).
    pub cors_origins: Vec<String>,
    /// `local`, `loopback` or `remote`.
    pub mode: &'static str,
    /// Whether a model provider is configured.
    pub provider_configured: bool,
    /// Failed authentications since start (for `/metrics`).
    pub auth_failures: AtomicU64,
    /// The audit chainer.
    pub audit: Slot<AuditChainer>,
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
    /// The home (for backups over the control socket).
    pub home: kafclaw_actors::paths::Home,
    /// The open store (for backups over the control socket: sled is single-process).
    pub db: kafclaw_actors::store::StoreDb,
}

impl AppState {
    /// Notes a failed authentication in the log. Cheap on purpose: the first failure and then
    /// every 100th is logged, so a storm cannot flood the log or slow others down.
    pub fn note_auth_failure(&self, client: &str, path: &str, failure: &AuthFailure) {
        let n = self.auth_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 || n % 100 == 0 {
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
}

/// Applies the limits shared by both listeners (a macro: `HttpServer`'s type parameters are
/// not nameable without depending on actix-http directly).
macro_rules! configure {
    ($server:expr, $limits:expr $(,)?) => {
        $server
            .workers($limits.workers)
            .max_connections($limits.max_connections)
            .client_request_timeout($limits.request_timeout)
            .client_disconnect_timeout(Duration::from_secs(1))
            .keep_alive(Duration::from_secs(30))
            .shutdown_timeout(8)
            .disable_signals()
    };
}

/// Starts both listeners on already-bound sockets.
pub fn serve(
    state: web::Data<AppState>,
    limits: &Limits,
    gateway: TcpListener,
    dashboard: TcpListener,
) -> std::io::Result<(Server, Server)> {
    let gateway_state = state.clone();
    let gateway_limits = limits.clone();
    let gateway_server = configure!(
        HttpServer::new(move || {
            App::new()
                .app_data(gateway_state.clone())
                .app_data(json_config(gateway_limits.max_body_bytes))
                .app_data(query_config())
                .app_data(web::PayloadConfig::new(gateway_limits.max_body_bytes))
                .wrap(from_fn(edge))
                .service(route_get("/healthz", routes::healthz))
                .service(route_post("/chat", routes::chat))
                .service(
                    web::resource("/webhooks/whatsapp")
                        .app_data(web::PayloadConfig::new(
                            gateway_limits.webhook_max_body_bytes,
                        ))
                        .route(web::get().to(webhooks::whatsapp_handshake))
                        .route(web::post().to(webhooks::whatsapp_inbound))
                        .default_service(web::to(method_not_allowed)),
                )
                .service(route_post(
                    "/webhooks/bridge/{name}",
                    webhooks::bridge_inbound,
                ))
                .default_service(web::to(not_found))
        }),
        limits,
    )
    .listen(gateway)?
    .run();

    let dashboard_limits = limits.clone();
    let dashboard_server = configure!(
        HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(json_config(dashboard_limits.max_body_bytes))
                .app_data(query_config())
                .app_data(web::PayloadConfig::new(dashboard_limits.max_body_bytes))
                .wrap(from_fn(edge))
                .service(route_get("/healthz", routes::healthz))
                .service(route_get("/api/v1/status", routes::status))
                .service(route_get("/api/v1/auth/verify", routes::auth_verify))
                .service(route_get("/api/v1/supervisor", routes::supervisor))
                .service(route_get("/api/v1/timeline", routes::timeline))
                .service(route_get("/api/v1/audit/head", routes::audit_head_route))
                .service(route_get("/api/v1/approvals", routes::approvals))
                .service(route_get("/api/v1/channels", webhooks::channels))
                .service(route_get(
                    "/api/v1/channels/{name}/outbox",
                    webhooks::outbox,
                ))
                .service(route_get("/api/v1/incidents", routes::incidents))
                .service(route_get("/metrics", metrics::metrics))
                .service(route_post("/api/v1/admin/control", routes::admin_control))
                .service(route_post(
                    "/api/v1/approvals/{id}",
                    routes::decide_approval,
                ))
                .configure(test_hooks)
                .default_service(web::to(not_found))
        }),
        limits,
    )
    .listen(dashboard)?
    .run();

    Ok((gateway_server, dashboard_server))
}

fn route_get<F, Args>(path: &str, handler: F) -> Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler))
        .default_service(web::to(method_not_allowed))
}

fn route_post<F, Args>(path: &str, handler: F) -> Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::post().to(handler))
        .default_service(web::to(method_not_allowed))
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
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

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How long a locked-out client waits for its 429.
const LOCKED_OUT_DELAY: Duration = Duration::from_millis(250);

/// Edge middleware for every request: a request id (header and log span), the cross-origin
/// rule (no wildcard; only listed origins), and headers that keep responses out of caches
/// and sniffers.
async fn edge(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed);
    let request_id = format!("r{id:x}");
    // A locked-out client presenting credentials is refused before routing: during a storm
    // its requests should cost as little as possible.
    if req.headers().contains_key(header::AUTHORIZATION) {
        let locked = req.app_data::<web::Data<AppState>>().and_then(|state| {
            let ip = req.peer_addr()?.ip();
            state.control.lockout.check(ip, Instant::now())
        });
        if let Some(left) = locked {
            // Tarpit: the answer waits (an async sleep costs no CPU), so a storm on keep-alive
            // connections slows to a trickle instead of taking CPU from everyone else.
            actix_web::rt::time::sleep(LOCKED_OUT_DELAY).await;
            return Err(ApiError::LockedOut {
                retry_after_seconds: left.as_secs().max(1),
            }
            .into());
        }
    }
    let allowed_origin = match cross_origin(&req) {
        CrossOrigin::None => None,
        CrossOrigin::Allowed(origin) => Some(origin),
        CrossOrigin::Refused => return Err(ApiError::OriginNotAllowed.into()),
    };
    if req.method() == actix_web::http::Method::OPTIONS && allowed_origin.is_some() {
        let origin = allowed_origin.unwrap_or_default();
        let response = HttpResponse::NoContent()
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST"))
            .insert_header((
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "authorization, content-type",
            ))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
            .insert_header((header::VARY, "Origin"))
            .finish();
        return Ok(req.into_response(response).map_into_right_body());
    }
    let span = tracing::debug_span!("request", id = %request_id, method = %req.method(), path = %req.path());
    let res = next.call(req).instrument(span).await?;
    // Safety net: an error produced inside actix (a body extractor's 413, a timeout) becomes
    // the same JSON shape as our own errors, never a text body.
    let is_error = res.status().is_client_error() || res.status().is_server_error();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let mut res = if is_error && !is_json {
        let (req, response) = res.into_parts();
        let replacement = error::json_for_status(response.status());
        ServiceResponse::new(req, replacement).map_into_right_body()
    } else {
        res.map_into_left_body()
    };
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert(header::HeaderName::from_static("x-request-id"), v);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(origin) = allowed_origin.and_then(|o| HeaderValue::from_str(&o).ok()) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    Ok(res)
}

enum CrossOrigin {
    /// No `Origin` header, or the same origin as the request's host.
    None,
    /// A listed origin.
    Allowed(String),
    /// Any other origin.
    Refused,
}

fn cross_origin(req: &ServiceRequest) -> CrossOrigin {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return CrossOrigin::None;
    };
    let Ok(origin) = origin.to_str() else {
        return CrossOrigin::Refused;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let same_origin = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|rest| !host.is_empty() && rest == host);
    if same_origin {
        return CrossOrigin::None;
    }
    let listed = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|s| s.cors_origins.iter().any(|o| o == origin));
    if listed {
        CrossOrigin::Allowed(origin.to_string())
    } else {
        CrossOrigin::Refused
    }
}

/// Test-only routes, compiled only with the `test-hooks` feature (never in a release build).
#[cfg(feature = "test-hooks")]
fn test_hooks(cfg: &mut web::ServiceConfig) {
    cfg.service(route_post(
        "/api/v1/test/panic/{child}",
        routes::inject_panic,
    ));
}

#[cfg(not(feature = "test-hooks"))]
fn test_hooks(_: &mut web::ServiceConfig) {}
