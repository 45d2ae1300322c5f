//! Route handlers. Each declares its scope in its signature (`Authorized<Read>` …); a
//! protected handler takes everything else it reads from the request (path, query, body)
//! through `Authorized<S, T>`, so nothing is parsed before the caller is authenticated.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use kafclaw_actors::store::{GetTimeline, TimelineQuery};
use kafclaw_actors::supervisor::{GetSupervisionTree, SupervisionTree};

use super::auth::{Authorized, Chat, MaybeAuthorized, Read, Scope};
use super::error::ApiError;
use super::AppState;

async fn tree(state: &AppState) -> Result<SupervisionTree, ApiError> {
    state
        .supervisor
        .send(GetSupervisionTree)
        .await
        .map_err(|_| ApiError::Unavailable("supervisor unavailable".into()))
}

/// `GET /healthz` (both ports, no auth): 200 when every permanent child runs, else 503.
/// Read from the supervisor's health board: a probe never queues behind the supervisor.
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let failing = state.health.failing();
    if failing.is_empty() && state.control.fleet.is_none() {
        return HttpResponse::Ok()
            .content_type("application/json")
            .body(r#"{"ok":true}"#);
    }
    let mut body = if failing.is_empty() {
        json!({"ok": true})
    } else {
        json!({"ok": false, "failing": failing})
    };
    // Fleet mode: a degraded node still serves (health, reads, the control socket).
    if let Some(fleet) = &state.control.fleet {
        body["fleet"] = fleet.status();
    }
    if failing.is_empty() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// `GET /api/v1/status`: minimal without a token, full with a read-capable one.
pub async fn status(
    state: web::Data<AppState>,
    caller: MaybeAuthorized,
) -> Result<HttpResponse, ApiError> {
    let uptime = state.started.elapsed().as_secs();
    let full = caller
        .0
        .as_ref()
        .is_some_and(|p| p.scope.permits(Scope::Read));
    if !full {
        return Ok(HttpResponse::Ok().json(json!({
            "version": state.version,
            "uptime_seconds": uptime,
            "ok": state.health.failing().is_empty(),
        })));
    }
    Ok(HttpResponse::Ok().json(full_status(&state, Cache::Use).await?))
}

/// Whether [`full_status`] may answer from the one-second cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cache {
    /// Polling readers (dashboards, load balancers): the body of the current second.
    Use,
    /// An operator who just changed something (`kafclaw status`): fresh.
    Bypass,
}

/// The full status body (a read token's `GET /api/v1/status`, and `kafclaw status` over the
/// control socket): mode, channels, supervisor, open incidents, today's usage, audit head,
/// store.
pub async fn full_status(state: &AppState, cache: Cache) -> Result<serde_json::Value, ApiError> {
    let uptime = state.started.elapsed().as_secs();
    // The full body asks five components; serve it from a one-second cache so polling status
    // (dashboards, load balancers) costs little more than /healthz (no message at all).
    if cache == Cache::Use {
        if let Some(cached) = state.status_cache.get(uptime) {
            return Ok(cached);
        }
    }
    let tree = tree(state).await?;
    let ok = tree.unhealthy().is_empty();
    let audit_head = audit_head(state).await.ok();
    let children = &tree.root.children;
    let running = children
        .iter()
        .filter(|c| c.state == kafclaw_actors::supervisor::ChildState::Running)
        .count();
    let restarts: u32 = children.iter().map(|c| c.restarts).sum();
    let mut channels = Vec::new();
    for (name, slot) in &state.control.channels {
        let info = match slot.addr() {
            Some(addr) => addr
                .send(kafclaw_actors::channel::GetChannelInfo)
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        };
        channels.push(match info {
            Some(info) => json!({"name": name, "state": info.state, "since": info.since}),
            None => json!({"name": name, "state": "failed"}),
        });
    }
    let open_incidents = match state.monitor.addr() {
        Some(monitor) => monitor
            .send(kafclaw_actors::incident::ListIncidents {
                state: None,
                limit: None,
            })
            .await
            .ok()
            .and_then(Result::ok)
            .map(|list| {
                list.iter()
                    .filter(|i| i.state != kafclaw_actors::incident::IncidentState::Resolved)
                    .count()
            }),
        None => None,
    };
    let usage = kafclaw_actors::agent::Budget::new(&state.db, Default::default())
        .ok()
        .and_then(|b| b.usage_today().ok());
    let body = json!({
        "version": state.version,
        "uptime_seconds": uptime,
        "ok": ok,
        // "local" only while no token is active (an issued token ends local mode).
        "mode": match state.mode {
            "local" if !state.auth.local_mode() => "loopback",
            mode => mode,
        },
        "provider_configured": state.provider_configured,
        "skills": state.skills,
        "channels": channels,
        "supervisor": {"children": children.len(), "running": running, "restarts": restarts},
        "open_incidents": open_incidents,
        "usage_today": usage,
        "audit_head": audit_head,
        "fleet": state.control.fleet.as_ref().map(crate::fleet::Fleet::status_with_nodes),
        "store": kafclaw_actors::retention::store_stats(&state.db).ok(),
        "memory": {
            "resident_bytes": super::metrics::process::sample(state.started).resident_memory_bytes,
        },
    });
    state.status_cache.put(uptime, body.clone());
    Ok(body)
}

async fn audit_head(state: &AppState) -> Result<kafclaw_actors::audit::AuditHead, ApiError> {
    let addr = state
        .audit
        .addr()
        .ok_or_else(|| ApiError::Unavailable("audit log unavailable".into()))?;
    addr.send(kafclaw_actors::audit::GetHead)
        .await
        .map_err(|_| ApiError::Unavailable("audit log unavailable".into()))
}

/// `GET /api/v1/audit/head` (read): `{"seq","hash"}` of the last durable record.
pub async fn audit_head_route(
    state: web::Data<AppState>,
    _caller: Authorized<Read>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(audit_head(&state).await?))
}

/// `GET /api/v1/auth/verify`: any valid credential.
pub async fn auth_verify(caller: MaybeAuthorized) -> Result<HttpResponse, ApiError> {
    match caller.0 {
        Some(p) if !p.authenticated => {
            Ok(HttpResponse::Ok().json(json!({"valid": true, "auth_required": false})))
        }
        Some(p) => Ok(HttpResponse::Ok().json(json!({
            "valid": true,
            "auth_required": true,
            "scope": p.scope.as_str(),
        }))),
        None => Err(ApiError::Unauthorized),
    }
}

/// `GET /api/v1/supervisor` (read): the supervision tree.
pub async fn supervisor(
    state: web::Data<AppState>,
    _caller: Authorized<Read>,
) -> Result<HttpResponse, ApiError> {
    let tree = tree(&state).await?;
    Ok(HttpResponse::Ok().json([tree.root]))
}

/// Query of `GET /api/v1/timeline`.
#[derive(Deserialize)]
pub struct TimelineParams {
    limit: Option<usize>,
    before: Option<String>,
    trace_id: Option<String>,
    sender: Option<String>,
}

/// `GET /api/v1/timeline` (read): newest first.
pub async fn timeline(
    state: web::Data<AppState>,
    caller: Authorized<Read, web::Query<TimelineParams>>,
) -> Result<HttpResponse, ApiError> {
    let params = caller.input.into_inner();
    if let Some(before) = &params.before {
        if before.is_empty() || u64::from_str_radix(before, 16).is_err() {
            return Err(ApiError::BadRequest("before must be an event id".into()));
        }
    }
    let store = state
        .store
        .addr()
        .ok_or_else(|| ApiError::Unavailable("store unavailable".into()))?;
    let events = store
        .send(GetTimeline(TimelineQuery {
            limit: params.limit,
            before: params.before,
            trace_id: params.trace_id,
            sender: params.sender,
        }))
        .await
        .map_err(|_| ApiError::Unavailable("store unavailable".into()))?
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(events))
}

/// Body of `POST /chat`.
#[derive(Deserialize)]
pub struct ChatBody {
    message: String,
    #[serde(default)]
    session: Option<String>,
}

/// Query form of `POST /chat` (KafClaw compatibility).
#[derive(Deserialize)]
pub struct ChatQuery {
    message: Option<String>,
    #[serde(default)]
    session: Option<String>,
}

/// Longest accepted session name.
const MAX_SESSION_CHARS: usize = 128;

/// Longest accepted `Idempotency-Key` of `POST /chat`.
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;

/// The turn key of a `/chat` request: its `Idempotency-Key` header, scoped to the caller.
fn chat_turn_key(
    req: &actix_web::HttpRequest,
    principal: &str,
) -> Result<Option<kafclaw_actors::agent::TurnKey>, ApiError> {
    let Some(raw) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .ok()
        .filter(|k| {
            !k.is_empty()
                && k.len() <= MAX_IDEMPOTENCY_KEY_CHARS
                && k.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters"
            ))
        })?;
    Ok(Some(kafclaw_actors::agent::TurnKey::api(principal, key)))
}

/// `POST /chat` (chat scope): one turn as the owner. Without a configured provider: 503.
/// With `Idempotency-Key`, the turn is journaled: a retry of the same request (same key,
/// same message) resumes an interrupted turn or returns the finished turn's reply, and never
/// asks the model again for an answer it already gave or runs a tool twice.
pub async fn chat(
    state: web::Data<AppState>,
    caller: Authorized<Chat, (web::Query<ChatQuery>, web::Bytes)>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    use kafclaw_actors::agent::{AgentError, RunTurn};
    let (query, body) = caller.input;
    let query = query.into_inner();
    let (message, session) = if body.is_empty() {
        let message = query
            .message
            .ok_or_else(|| ApiError::BadRequest("message is required".into()))?;
        (message, query.session)
    } else {
        let parsed: ChatBody = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid json: {e}")))?;
        (parsed.message, parsed.session.or(query.session))
    };
    if message.trim().is_empty() {
        return Err(ApiError::BadRequest("message is empty".into()));
    }
    if !state.provider_configured {
        return Err(ApiError::Unavailable("no model provider configured".into()));
    }
    state.space.admit()?;
    // Held until the turn ends (the answer is written or the client went away and the handler
    // was dropped); a turn over the cap is refused before anything is stored or asked.
    let _slot = state
        .chat_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::TooManyChats)?;
    let principal = caller.principal;
    // The caller's name for the session comes back in the response; the stored key is bound
    // to the principal, so naming another caller's session opens an empty one of your own.
    let turn_key = chat_turn_key(&req, &principal.name)?;
    let session = match session {
        Some(s)
            if s.is_empty()
                || s.chars().count() > MAX_SESSION_CHARS
                || s.chars().any(char::is_control) =>
        {
            return Err(ApiError::BadRequest(format!(
                "session must be 1-{MAX_SESSION_CHARS} printable characters"
            )))
        }
        Some(s) => s,
        None => principal.name.clone(),
    };
    let session_key = kafclaw_actors::agent::api_session_key(&principal.name, &session);
    // A keyed turn keeps one trace across its retries.
    let trace_id = match &turn_key {
        Some(key) => format!(
            "tr-{}",
            &blake3::hash(key.as_str().as_bytes()).to_hex()[..16]
        ),
        None => format!("tr-{:016x}", rand_u64()),
    };
    let agent = state
        .agent
        .addr()
        .ok_or_else(|| ApiError::Unavailable("the agent is not running".into()))?;
    let reply = agent
        .send(RunTurn {
            session: session_key,
            sender: kafclaw_actors::policy::SenderKind::Owner,
            sender_id: principal.name,
            channel: kafclaw_actors::agent::actor::API_CHANNEL.into(),
            text: message,
            trace_id,
            turn_key,
        })
        .await
        .map_err(|_| ApiError::Unavailable("the agent is not running".into()))?;
    match reply {
        Ok(turn) => Ok(HttpResponse::Ok().json(json!({
            "reply": turn.reply,
            "session": session,
            "trace_id": turn.trace_id,
            "usage": {
                "prompt_tokens": turn.usage.prompt_tokens,
                "completion_tokens": turn.usage.completion_tokens,
            },
        }))),
        Err(AgentError::NoProvider) => {
            Err(ApiError::Unavailable("no model provider configured".into()))
        }
        Err(AgentError::Budget(message)) => Err(ApiError::BudgetExceeded(message)),
        Err(AgentError::KeyReused(message)) => Err(ApiError::BadRequest(message)),
        Err(AgentError::Provider(message)) => Err(ApiError::BadGateway(message)),
        Err(AgentError::ShuttingDown) => Err(ApiError::Unavailable(
            "the gateway is shutting down; nothing was run, send it again".into(),
        )),
        Err(other) => Err(ApiError::internal(other)),
    }
}

fn rand_u64() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// `POST /api/v1/test/panic/{child}` (admin; `test-hooks` builds only): makes a child panic
/// inside a handler, to prove the supervisor replaces it.
#[cfg(feature = "test-hooks")]
pub async fn inject_panic(
    state: web::Data<AppState>,
    caller: Authorized<super::auth::Admin, web::Path<String>>,
) -> Result<HttpResponse, ApiError> {
    use kafclaw_actors::supervisor::InjectPanic;
    let child = caller.input;
    match child.as_str() {
        "store" => {
            let addr = state
                .store
                .addr()
                .ok_or_else(|| ApiError::Unavailable("store unavailable".into()))?;
            addr.do_send(InjectPanic("test hook".into()));
        }
        name => {
            let channel = name
                .strip_prefix("channel:")
                .and_then(|c| state.control.channels.get(c))
                .and_then(|slot| slot.addr())
                .ok_or(ApiError::NotFound)?;
            channel.do_send(InjectPanic("test hook".into()));
        }
    }
    Ok(HttpResponse::Accepted().json(json!({"ok": true})))
}

/// `GET /api/v1/approvals` (read): pending tool approvals, oldest first.
pub async fn approvals(
    state: web::Data<AppState>,
    _caller: Authorized<Read>,
) -> Result<HttpResponse, ApiError> {
    let addr = state
        .approvals
        .addr()
        .ok_or_else(|| ApiError::Unavailable("approvals unavailable".into()))?;
    let list = addr
        .send(kafclaw_actors::approval::ListApprovals)
        .await
        .map_err(|_| ApiError::Unavailable("approvals unavailable".into()))?
        .map_err(ApiError::internal)?;
    let shown: Vec<serde_json::Value> = list
        .iter()
        .map(|record| {
            let mut entry = json!(record);
            entry["asked"] = asked(&record.tool, &record.arguments);
            entry
        })
        .collect();
    Ok(HttpResponse::Ok().json(shown))
}

/// What an approval would let run, as the executor would see it: `exec`'s argv split without a
/// shell (or why it cannot be split) and working directory, a file tool's path.
fn asked(tool: &str, arguments: &serde_json::Value) -> serde_json::Value {
    let text = |key: &str| arguments.get(key).and_then(serde_json::Value::as_str);
    match tool {
        "exec" => match text("command").map(kafclaw_actors::executor::split_command) {
            Some(Ok(argv)) => json!({"argv": argv, "working_dir": text("working_dir")}),
            Some(Err(denial)) => json!({"argv": null, "refused": denial.to_string()}),
            None => json!({"argv": null, "refused": "no command"}),
        },
        _ => json!({"path": text("path")}),
    }
}

/// Body of `POST /api/v1/approvals/{id}`.
#[derive(Deserialize)]
pub struct DecisionBody {
    approved: bool,
}

/// `POST /api/v1/approvals/{id}` (admin): `{"approved":bool}`; unknown id → 404.
pub async fn decide_approval(
    state: web::Data<AppState>,
    caller: Authorized<super::auth::Admin, (web::Path<String>, web::Json<DecisionBody>)>,
) -> Result<HttpResponse, ApiError> {
    let (id, body) = caller.input;
    use kafclaw_actors::approval::{ApprovalError, DecideApproval};
    let addr = state
        .approvals
        .addr()
        .ok_or_else(|| ApiError::Unavailable("approvals unavailable".into()))?;
    let record = addr
        .send(DecideApproval {
            id: id.into_inner(),
            approved: body.approved,
            actor: caller.principal.name,
        })
        .await
        .map_err(|_| ApiError::Unavailable("approvals unavailable".into()))?
        .map_err(|e| match e {
            ApprovalError::NotFound(_) => ApiError::NotFound,
            ApprovalError::AuditFailed => ApiError::Unavailable("audit log unavailable".into()),
            other => ApiError::internal(other),
        })?;
    Ok(HttpResponse::Ok().json(record))
}

/// `GET /api/v1/incidents` (read): newest first.
pub async fn incidents(
    state: web::Data<AppState>,
    _caller: Authorized<Read>,
) -> Result<HttpResponse, ApiError> {
    let monitor = state
        .monitor
        .addr()
        .ok_or_else(|| ApiError::Unavailable("incident monitor unavailable".into()))?;
    let list = monitor
        .send(kafclaw_actors::incident::ListIncidents {
            state: None,
            limit: None,
        })
        .await
        .map_err(|_| ApiError::Unavailable("incident monitor unavailable".into()))?
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(list))
}

/// `POST /api/v1/admin/control` (admin): one control message, audited with the token's name.
pub async fn admin_control(
    state: web::Data<AppState>,
    caller: Authorized<super::auth::Admin, web::Json<serde_json::Value>>,
) -> Result<HttpResponse, ApiError> {
    let message = parse_control(caller.input.into_inner())?;
    let result = crate::admin::apply(message, &caller.principal.name, &state.control)
        .await
        .map_err(control_error)?;
    Ok(HttpResponse::Ok().json(json!({"ok": true, "result": result})))
}

/// Parses a control message, naming the problem (unknown type, missing or unknown field).
pub fn parse_control(value: serde_json::Value) -> Result<crate::admin::ControlMessage, ApiError> {
    if !value.is_object() {
        return Err(ApiError::BadRequest(
            "a control message is a JSON object".into(),
        ));
    }
    match value.get("type").and_then(|t| t.as_str()) {
        None => return Err(ApiError::BadRequest("type is required".into())),
        Some(t) if !CONTROL_TYPES.contains(&t) => {
            return Err(ApiError::BadRequest(format!("unknown type: {t}")))
        }
        Some(_) => {}
    }
    serde_json::from_value(value).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// Every control message type (CONTRACT §3.4), plus `allow_sender`.
pub const CONTROL_TYPES: &[&str] = &[
    "quarantine_channel",
    "release_channel",
    "disable_channel",
    "enable_channel",
    "restrict_tools",
    "relax_tools",
    "rotate_gateway_token",
    "block_sender",
    "unblock_sender",
    "allow_sender",
    "snapshot",
    "lockdown",
    "resolve_incident",
    "acknowledge_incident",
];

fn control_error(e: crate::admin::ControlError) -> ApiError {
    match e {
        crate::admin::ControlError::Invalid(m) => ApiError::BadRequest(m),
        crate::admin::ControlError::NotFound(_) => ApiError::NotFound,
        crate::admin::ControlError::Unavailable(m) => ApiError::Unavailable(m),
        crate::admin::ControlError::Conflict(m) => ApiError::Conflict(m),
    }
}
