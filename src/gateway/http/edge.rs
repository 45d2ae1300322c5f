//! The edge middleware every request of both listeners passes first (issue 11 §3, §4).
//!
//! In order: a connection over its client's cap is refused (503); the client address is
//! resolved (`gateway.trusted_proxies`); `Host` must name this listener (421, before any
//! authentication); a browser `Origin` must be this listener or listed in
//! `gateway.cors_origins` (403); a locked-out client presenting credentials is refused (429);
//! then the body is guarded (deadline, authentication gate) and the request is routed.
//! Afterwards: a body past its deadline answers 408, errors are JSON, caching and sniffing
//! are off, the content security policy, `X-Frame-Options: DENY` and `Referrer-Policy:
//! no-referrer` go on every answer, the request is counted (route template, method, status
//! class, latency), and a connection whose body was left unread is closed, never drained.
//! Must not: read a body, trust a forwarding header from an untrusted peer, or write more than
//! a bounded number of audit records for refusals that no credential was checked for.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{ConnectionType, Method};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse, ResponseError};
use serde_json::json;
use tracing::Instrument;

use kafclaw_actors::audit::AuditKind;

use super::auth::AuthFailure;
use super::body::{BodyState, GuardedPayload};
use super::client::{Client, TrustedProxies};
use super::conn::ConnInfo;
use super::error::{self, ApiError};
use super::host::AllowedHosts;
use super::lockout::{AuditDecision, AuditThrottle};
use super::AppState;

/// What the edge of one listener enforces.
pub struct EdgePolicy {
    /// The names this listener answers to.
    pub hosts: AllowedHosts,
    /// Peers that may report the client address.
    pub proxies: Arc<TrustedProxies>,
    /// Deadline for the whole body, from the complete request head.
    pub body_timeout: Duration,
    /// How many refusals without a credential check are audited (shared by both listeners).
    pub refusals: Arc<AuditThrottle>,
}

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How long a locked-out client, or one whose refusals are no longer audited, waits.
const TARPIT: Duration = Duration::from_millis(250);

/// The policy of every answer: the dashboard page loads its own script and style files and
/// talks to its own origin, nothing inline, nothing evaluated, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The longest presented `Host` kept in an audit record.
const MAX_AUDITED_HOST: usize = 100;

/// An answer's body that keeps the request's unread body attached until the answer is
/// written: actix then closes the connection after it instead of draining the rest (a chunked
/// body trickled after an early answer would otherwise hold the connection for ever).
struct KeepUnread {
    body: BoxBody,
    _unread: Rc<BodyState>,
}

impl MessageBody for KeepUnread {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> actix_web::body::BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<actix_web::web::Bytes, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_next(cx)
    }
}

/// The edge middleware (see the module doc).
pub async fn edge(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = format!("r{:x}", REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed));
    let body = BodyState::new(req.take_payload(), req.headers());
    let screened = match (
        req.app_data::<web::Data<AppState>>().cloned(),
        req.app_data::<web::Data<EdgePolicy>>().cloned(),
    ) {
        (Some(state), Some(policy)) => screen(&req, &state, &policy).await,
        _ => Err(ApiError::internal("edge state missing")),
    };
    let (res, allowed_origin) = match screened {
        Err(refusal) => (req.into_response(refusal.error_response()), None),
        Ok(Screened::Preflight(origin)) => (req.into_response(preflight(&origin)), None),
        Ok(Screened::Pass {
            client,
            allowed_origin,
            body_timeout,
        }) => {
            let (payload, gate) = GuardedPayload::install(&body, started + body_timeout);
            req.set_payload(payload);
            req.extensions_mut().insert(client);
            req.extensions_mut().insert(gate);
            let span = tracing::debug_span!("request", id = %request_id, method = %req.method(), path = %req.path());
            let res = next.call(req).instrument(span).await?.map_into_boxed_body();
            (replace_failures(res, &body), allowed_origin)
        }
    };
    super::metrics::edge::metrics().request(
        res.request().match_pattern(),
        res.request().method(),
        res.status(),
        started.elapsed(),
    );
    Ok(finish(res, &body, &request_id, allowed_origin))
}

/// What the checks before routing decided.
enum Screened {
    /// Route it.
    Pass {
        client: Client,
        allowed_origin: Option<String>,
        body_timeout: Duration,
    },
    /// A CORS preflight of a listed origin.
    Preflight(String),
}

async fn screen(
    req: &ServiceRequest,
    state: &web::Data<AppState>,
    policy: &web::Data<EdgePolicy>,
) -> Result<Screened, ApiError> {
    let (peer, local) = match req.conn_data::<ConnInfo>() {
        Some(conn) if conn.refused => return Err(ApiError::TooManyConnections),
        Some(conn) => (conn.peer, conn.local),
        None => (
            req.peer_addr()
                .ok_or_else(|| ApiError::internal("no peer address"))?,
            req.app_config().local_addr(),
        ),
    };
    let client = Client::resolve(peer.ip(), req.headers(), &policy.proxies);
    if let Err(presented) = check_host(req, &policy.hosts, local) {
        refuse(req, state, policy, &client, AuthFailure::Host, presented).await;
        return Err(ApiError::MisdirectedRequest);
    }
    let allowed_origin = match cross_origin(req, state, &policy.hosts, local) {
        CrossOrigin::None => None,
        CrossOrigin::Allowed(origin) => Some(origin),
        CrossOrigin::Refused(origin) => {
            refuse(req, state, policy, &client, AuthFailure::Origin, origin).await;
            return Err(ApiError::OriginNotAllowed);
        }
    };
    // A locked-out client presenting credentials is refused before routing: during a storm
    // its requests should cost as little as possible.
    if req.headers().contains_key(header::AUTHORIZATION) {
        if let Some(left) = state.control.lockout.check(client.addr, Instant::now()) {
            // Tarpit: the answer waits (an async sleep costs no CPU), so a storm on keep-alive
            // connections slows to a trickle instead of taking CPU from everyone else.
            actix_web::rt::time::sleep(TARPIT).await;
            return Err(ApiError::LockedOut {
                retry_after_seconds: left.as_secs().max(1),
            });
        }
    }
    if req.method() == Method::OPTIONS {
        if let Some(origin) = allowed_origin {
            return Ok(Screened::Preflight(origin));
        }
    }
    Ok(Screened::Pass {
        client,
        allowed_origin,
        body_timeout: policy.body_timeout,
    })
}

/// `Ok` when every authority the request names is this listener; else the presented value.
/// Exactly one `Host` is required (HTTP/1.0 without one is refused too); an absolute-form
/// target (`POST http://name/…`) must name an allowed host as well.
fn check_host(req: &ServiceRequest, hosts: &AllowedHosts, local: SocketAddr) -> Result<(), String> {
    let mut values = req.headers().get_all(header::HOST);
    let host = match (values.next(), values.next()) {
        (Some(value), None) => value,
        (None, _) => return Err(String::new()),
        (Some(_), Some(_)) => return Err("(several Host headers)".into()),
    };
    let shown = || String::from_utf8_lossy(host.as_bytes()).into_owned();
    let text = host.to_str().map_err(|_| shown())?;
    if !hosts.allows_host(text, local) {
        return Err(shown());
    }
    if let Some(authority) = req.uri().authority() {
        if !hosts.allows_host(authority.as_str(), local) {
            return Err(authority.as_str().to_string());
        }
    }
    Ok(())
}

enum CrossOrigin {
    /// No `Origin` header, or this listener itself.
    None,
    /// A listed origin (CORS headers go out).
    Allowed(String),
    /// Anything else; the presented origin.
    Refused(String),
}

/// The browser-origin rule: an `Origin` must be this listener (an allowed host with the
/// scheme's port) or listed in `gateway.cors_origins` exactly; `null` never is. A
/// state-changing request without `Origin` but with `Sec-Fetch-Site: cross-site` is refused.
fn cross_origin(
    req: &ServiceRequest,
    state: &AppState,
    hosts: &AllowedHosts,
    local: SocketAddr,
) -> CrossOrigin {
    let mut values = req.headers().get_all(header::ORIGIN);
    let origin = match (values.next(), values.next()) {
        (None, _) => None,
        (Some(value), None) => match value.to_str() {
            Ok(origin) => Some(origin),
            Err(_) => {
                return CrossOrigin::Refused(String::from_utf8_lossy(value.as_bytes()).into())
            }
        },
        (Some(_), Some(_)) => return CrossOrigin::Refused("(several Origin headers)".into()),
    };
    let Some(origin) = origin else {
        let state_changing = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        let cross_site = req
            .headers()
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
        if state_changing && cross_site {
            return CrossOrigin::Refused("(Sec-Fetch-Site: cross-site)".into());
        }
        return CrossOrigin::None;
    };
    if origin != "null" && hosts.allows_origin(origin, local) {
        return CrossOrigin::None;
    }
    if origin != "null" && state.cors_origins.iter().any(|o| o == origin) {
        return CrossOrigin::Allowed(origin.to_string());
    }
    CrossOrigin::Refused(origin.to_string())
}

/// Notes and audits a refusal made before any credential was looked at. The audit is rate
/// limited per client and in total (it never locks anyone out: a rebinding page runs in the
/// operator's own browser); past the rate the refusal waits in the tarpit instead.
async fn refuse(
    req: &ServiceRequest,
    state: &AppState,
    policy: &EdgePolicy,
    client: &Client,
    reason: AuthFailure,
    presented: String,
) {
    let addr = client.addr.to_string();
    state.note_auth_failure(&addr, req.path(), &reason);
    match policy.refusals.admit(client.addr, Instant::now()) {
        AuditDecision::Suppress => actix_web::rt::time::sleep(TARPIT).await,
        AuditDecision::Audit { suppressed } => {
            let field = if reason == AuthFailure::Host {
                "host"
            } else {
                "origin"
            };
            let presented: String = presented.chars().take(MAX_AUDITED_HOST).collect();
            let mut data = json!({
                "client": addr,
                "route": req.path(),
                "reason": reason.as_str(),
                "suppressed": suppressed,
            });
            data[field] = json!(presented);
            if client.relayed {
                data["peer"] = json!(client.peer.to_string());
            }
            // Refusing is the safe direction: the answer goes out even if the audit fails.
            let _ = state
                .audit(AuditKind::AuthFailed, &addr, req.path(), data)
                .await;
        }
    }
}

fn preflight(origin: &str) -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST"))
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "authorization, content-type",
        ))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
        .insert_header((header::VARY, "Origin"))
        .finish()
}

/// A body past its deadline is a 408, a body read before authentication a 500 (a bug, fail
/// closed), and an error produced inside actix (a body extractor's 413, a timeout) gets the
/// same JSON shape as our own errors, never a text body.
fn replace_failures(res: ServiceResponse<BoxBody>, body: &BodyState) -> ServiceResponse<BoxBody> {
    let replacement = if body.read_before_auth() {
        tracing::error!(path = %res.request().path(), "a handler read the body before authentication");
        Some(ApiError::internal("body read before authentication").error_response())
    } else if body.timed_out() {
        Some(ApiError::BodyTimeout.error_response())
    } else {
        let status = res.status();
        let is_error = status.is_client_error() || status.is_server_error();
        let is_json = res
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        (is_error && !is_json).then(|| error::json_for_status(status))
    };
    match replacement {
        Some(response) => {
            let (req, _) = res.into_parts();
            ServiceResponse::new(req, response)
        }
        None => res,
    }
}

/// Headers every answer carries; the connection closes when a body was left unread.
fn finish(
    mut res: ServiceResponse<BoxBody>,
    body: &Rc<BodyState>,
    request_id: &str,
    allowed_origin: Option<String>,
) -> ServiceResponse<BoxBody> {
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(header::HeaderName::from_static("x-request-id"), v);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Some(origin) = allowed_origin.and_then(|o| HeaderValue::from_str(&o).ok()) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    if !body.unread() {
        return res;
    }
    res.response_mut()
        .head_mut()
        .set_connection_type(ConnectionType::Close);
    let unread = body.clone();
    res.map_body(|_, body| KeepUnread {
        body,
        _unread: unread,
    })
    .map_into_boxed_body()
}
