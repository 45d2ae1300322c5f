//! Channel webhooks (CONTRACT §5), `GET /api/v1/channels` and
//! `GET /api/v1/channels/{name}/outbox`.
//!
//! Each inbound is authenticated by its own signature over the raw body, checked before any
//! parsing; the body is read through `SignedBody` (one of the listener's slots for bodies of
//! unknown senders, under the whole-body deadline). The 200 goes out only after the channel
//! stored and flushed the message. WhatsApp status webhooks (`statuses[]`: sent, delivered,
//! read, failed, carrying the reply's id in `biz_opaque_callback_data`) are applied to the
//! outbox before the 200, so Meta redelivers one the gateway could not record.

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Deserialize;
use serde_json::json;

use kafclaw_actors::audit::AuditKind;
use kafclaw_actors::channel::backlog::{Backlog, BacklogCheck};
use kafclaw_actors::channel::bridge::{parse_bridge_message, verify_bridge, BridgeAuthError};
use kafclaw_actors::channel::outbox::{reply_id, OutboxRecord, OutboxState};
use kafclaw_actors::channel::whatsapp::{
    parse_webhook_for, verify_handshake, verify_signature, HandshakeError,
};
use kafclaw_actors::channel::{
    AcceptInbound, ApplyReceipts, ChannelBridge, GetChannelInfo, GetOutbox, InboundMessage,
};
use kafclaw_actors::supervisor::{GetSupervisionTree, Slot};

use super::auth::{check_webhook_credential, AuthFailure, Authorized, Read};
use super::body::SignedBody;
use super::client::Client;
use super::error::ApiError;
use super::AppState;

/// Query of the WhatsApp handshake.
#[derive(Deserialize)]
pub struct Handshake {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

fn forbidden() -> HttpResponse {
    HttpResponse::Forbidden().json(json!({"error": "forbidden"}))
}

/// `GET /webhooks/whatsapp`: the `hub.challenge` echoed byte for byte, or 403.
pub async fn whatsapp_handshake(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<Handshake>,
) -> HttpResponse {
    let Some(wa) = &state.channels.whatsapp else {
        return forbidden();
    };
    let verdict = verify_handshake(
        query.mode.as_deref(),
        query.verify_token.as_deref(),
        query.challenge.as_deref(),
        wa.verify_token.expose(),
    );
    // A wrong token is a guess at a secret: counted, locked out and audited like a bad token.
    let credential = match &verdict {
        Err(HandshakeError::WrongToken) => Err(AuthFailure::VerifyToken),
        _ => Ok(()),
    };
    if let Err(refused) = check_webhook_credential(&req, &state, credential).await {
        return match refused {
            ApiError::LockedOut { .. } => refused.error_response(),
            _ => forbidden(),
        };
    }
    match verdict {
        Ok(challenge) => HttpResponse::Ok()
            .content_type("text/plain")
            .body(challenge),
        Err(e) => {
            tracing::warn!(reason = %e, "whatsapp handshake refused");
            forbidden()
        }
    }
}

/// `POST /webhooks/whatsapp`: signature over the raw body, then store every message.
pub async fn whatsapp_inbound(
    state: web::Data<AppState>,
    req: HttpRequest,
    SignedBody(body): SignedBody,
) -> Result<HttpResponse, ApiError> {
    let Some(wa) = &state.channels.whatsapp else {
        return Err(ApiError::NotFound);
    };
    let header = req
        .headers()
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    let verdict = verify_signature(wa.app_secret.expose().as_bytes(), &body, header)
        .map_err(|_| AuthFailure::Signature);
    check_webhook_credential(&req, &state, verdict).await?;
    state.space.admit()?;
    let batch = parse_webhook_for(&body, Some(&wa.phone_number_id))
        .map_err(|e| ApiError::BadRequest(format!("invalid payload: {e}")))?;
    if batch.foreign > 0 {
        // Signed by our app, sent to another of its numbers: not this channel's to handle.
        tracing::warn!(
            skipped = batch.foreign,
            client = %client(&req),
            "whatsapp webhook for another phone_number_id skipped"
        );
    }
    if !batch.messages.is_empty() {
        admit_backlog(&state, "whatsapp", &wa.backlog).await?;
    }
    for inbound in batch.messages {
        accept("whatsapp", &wa.channel, inbound.message).await?;
    }
    if !batch.statuses.is_empty() {
        apply_receipts(&wa.channel, batch.statuses).await?;
    }
    Ok(HttpResponse::Ok().json(json!({"ok": true})))
}

async fn apply_receipts(
    channel: &Slot<ChannelBridge>,
    statuses: Vec<kafclaw_actors::channel::whatsapp::DeliveryStatus>,
) -> Result<(), ApiError> {
    let addr = channel
        .addr()
        .ok_or_else(|| ApiError::Unavailable("channel unavailable".into()))?;
    match addr.send(ApplyReceipts { statuses }).await {
        Ok(Ok(applied)) => {
            tracing::debug!(
                applied = applied.applied,
                ignored = applied.ignored,
                "delivery receipts"
            );
            Ok(())
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "channel could not record delivery receipts");
            Err(ApiError::Unavailable("channel unavailable".into()))
        }
        Err(_) => Err(ApiError::Unavailable("channel unavailable".into())),
    }
}

/// `POST /webhooks/bridge/{name}`: unknown bridge 404, bad or replayed signature 401.
pub async fn bridge_inbound(
    state: web::Data<AppState>,
    req: HttpRequest,
    name: web::Path<String>,
    SignedBody(body): SignedBody,
) -> Result<HttpResponse, ApiError> {
    let Some(bridge) = state.channels.bridges.get(name.as_str()) else {
        return Err(ApiError::NotFound);
    };
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
    let now = kafclaw_actors::clock::unix_now();
    let verified = {
        let mut cache = bridge.replay.lock().unwrap_or_else(|p| p.into_inner());
        verify_bridge(
            bridge.secret.expose().as_bytes(),
            header("x-kafclaw-timestamp"),
            header("x-kafclaw-signature"),
            &body,
            now,
            &mut cache,
        )
    };
    match verified {
        Ok(()) => {}
        Err(BridgeAuthError::ReplayCacheFull) => {
            return Err(ApiError::Unavailable(
                "too many deliveries; retry later".into(),
            ))
        }
        // A replay, or a stale or future timestamp, may carry a genuine signature (a bridge
        // retrying, a skewed clock): refused, not counted against the bridge's address.
        Err(
            e @ (BridgeAuthError::Replayed
            | BridgeAuthError::Stale(_)
            | BridgeAuthError::Future(_)
            | BridgeAuthError::NotConfigured),
        ) => {
            tracing::warn!(bridge = %name, reason = %e, client = %client(&req), "bridge delivery refused");
            check_webhook_credential(&req, &state, Ok(())).await?;
            return Err(ApiError::Unauthorized);
        }
        Err(e) => {
            tracing::debug!(bridge = %name, reason = %e, "bridge delivery refused");
            check_webhook_credential(&req, &state, Err(AuthFailure::Signature)).await?;
            return Err(ApiError::Unauthorized);
        }
    }
    state.space.admit()?;
    let timestamp = header("x-kafclaw-timestamp")
        .and_then(|t| t.parse().ok())
        .unwrap_or(now);
    let message = parse_bridge_message(&body, timestamp)
        .map_err(|e| ApiError::BadRequest(format!("invalid payload: {e}")))?;
    admit_backlog(&state, &name, &bridge.backlog).await?;
    accept(&name, &bridge.channel, message).await?;
    Ok(HttpResponse::Ok().json(json!({"ok": true})))
}

/// The backlog bound of channel `name` (`store.max_pending`), checked before a delivery with
/// messages is stored: at the bound it is refused (503 + `Retry-After`, counted), so the sender
/// delivers it again later and nothing is lost. The change to full, and back, is logged and
/// audited once, by the one request that sees it, before that request is answered.
async fn admit_backlog(state: &AppState, name: &str, backlog: &Backlog) -> Result<(), ApiError> {
    let check = backlog.check();
    let (full, changed) = match check {
        BacklogCheck::Open => return Ok(()),
        BacklogCheck::Reopened => (false, true),
        BacklogCheck::Full { changed } => (true, changed),
    };
    if full {
        kafclaw_actors::metrics::metrics().backlog_refused(name);
    }
    if changed {
        let (unfinished, max_pending) = (backlog.live(), backlog.max());
        if full {
            tracing::warn!(
                channel = name,
                unfinished,
                max_pending,
                "channel backlog full (store.max_pending); refusing deliveries with 503 until it drains"
            );
        } else {
            tracing::info!(
                channel = name,
                unfinished,
                max_pending,
                "channel backlog drained; taking deliveries again"
            );
        }
        // A failed append is logged by `audit`; the refusal stands either way (fail closed).
        let _ = state
            .audit(
                AuditKind::ChannelBacklog,
                "gateway",
                &format!("channel:{name}"),
                json!({
                    "state": if full { "full" } else { "open" },
                    "unfinished": unfinished,
                    "max_pending": max_pending,
                }),
            )
            .await;
    }
    if full {
        Err(ApiError::BacklogFull)
    } else {
        Ok(())
    }
}

/// Hands one message to the channel `name` and counts what it answered (here, at the edge,
/// so the count outlives the channel's actor).
async fn accept(
    name: &str,
    channel: &Slot<ChannelBridge>,
    message: InboundMessage,
) -> Result<(), ApiError> {
    let addr = channel
        .addr()
        .ok_or_else(|| ApiError::Unavailable("channel unavailable".into()))?;
    match addr.send(AcceptInbound { message }).await {
        Ok(Ok(outcome)) => {
            kafclaw_actors::metrics::metrics().inbound(name, &outcome);
            Ok(())
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "channel could not store a message");
            Err(ApiError::Unavailable("channel unavailable".into()))
        }
        Err(_) => Err(ApiError::Unavailable("channel unavailable".into())),
    }
}

fn client(req: &HttpRequest) -> String {
    use actix_web::HttpMessage;
    match req.extensions().get::<Client>() {
        Some(client) => client.addr.to_string(),
        None => req
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default(),
    }
}

/// `GET /api/v1/channels` (read).
pub async fn channels(
    state: web::Data<AppState>,
    _caller: Authorized<Read>,
) -> Result<HttpResponse, ApiError> {
    let tree = state.supervisor.send(GetSupervisionTree).await.ok();
    let mut out = Vec::new();
    for (name, slot) in &state.control.channels {
        let child = tree.as_ref().and_then(|t| {
            t.root
                .children
                .iter()
                .find(|c| c.name == format!("channel:{name}"))
                .cloned()
        });
        let restarts = child.as_ref().map_or(0, |c| c.restarts);
        let info = match slot.addr() {
            Some(addr) => addr.send(GetChannelInfo).await.ok().and_then(Result::ok),
            None => None,
        };
        // Counted at the edge since the process started: a restarted or silent actor keeps them.
        let (inbound_total, unknown_senders_total) =
            kafclaw_actors::metrics::metrics().inbound_totals(name);
        out.push(match info {
            Some(info) => json!({
                "name": info.name,
                "kind": info.kind,
                "state": info.state,
                "since": info.since,
                "reason": info.reason,
                "restarts": restarts,
                "inbound_total": inbound_total,
                "unknown_senders_total": unknown_senders_total,
            }),
            None => json!({
                "name": name,
                "kind": if name == "whatsapp" { "whatsapp" } else { "bridge" },
                "state": match child.as_ref().map(|c| c.state) {
                    Some(kafclaw_actors::supervisor::ChildState::Quarantined) => "quarantined",
                    _ => "failed",
                },
                "since": child.as_ref().and_then(|c| c.last_failure_at.clone()),
                "reason": child.as_ref().and_then(|c| c.last_failure.clone()),
                "restarts": restarts,
                "inbound_total": inbound_total,
                "unknown_senders_total": unknown_senders_total,
            }),
        });
    }
    Ok(HttpResponse::Ok().json(out))
}

/// Query of `GET /api/v1/channels/{name}/outbox`.
#[derive(Deserialize)]
pub struct OutboxParams {
    /// At most this many (1-500, default 100).
    limit: Option<usize>,
    /// Only replies older than this reply id (`kafclaw-<n>`).
    before: Option<String>,
}

/// `GET /api/v1/channels/{name}/outbox` (read): the channel's replies, newest first, with
/// their delivery state (queued, sending, sent, delivered, read, failed with the provider's
/// error code). Never the reply text.
pub async fn outbox(
    state: web::Data<AppState>,
    _caller: Authorized<Read>,
    name: web::Path<String>,
    params: web::Query<OutboxParams>,
) -> Result<HttpResponse, ApiError> {
    let slot = state
        .control
        .channels
        .get(name.as_str())
        .ok_or(ApiError::NotFound)?;
    let before = match params.before.as_deref() {
        None => None,
        Some(raw) => Some(
            kafclaw_actors::channel::outbox::parse_reply_tag(raw)
                .filter(|(_, part)| *part == 0)
                .map(|(id, _)| id)
                .ok_or_else(|| ApiError::BadRequest("before must be a reply id".into()))?,
        ),
    };
    let addr = slot
        .addr()
        .ok_or_else(|| ApiError::Unavailable("channel unavailable".into()))?;
    let records = addr
        .send(GetOutbox {
            before,
            limit: params.limit.unwrap_or(100),
        })
        .await
        .map_err(|_| ApiError::Unavailable("channel unavailable".into()))?
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(records.iter().map(outbox_entry).collect::<Vec<_>>()))
}

fn rfc3339_ms(ms: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .map(kafclaw_actors::clock::to_rfc3339)
}

fn outbox_entry(record: &OutboxRecord) -> serde_json::Value {
    let mut entry = json!({
        "id": reply_id(record.id),
        "state": record.state.as_str(),
        "to": record.message.to,
        "reply_to": record.message.reply_to,
        "attempts": record.attempts,
        "parts": record.parts,
        "parts_accepted": record.parts_accepted,
        "chars": record.message.text.chars().count(),
        "created_at": rfc3339_ms(record.created_at),
        "updated_at": rfc3339_ms(record.updated_at.max(record.created_at)),
        "last_error": record.last_error,
    });
    if !record.state.is_finished() {
        entry["next_attempt_at"] = json!(rfc3339_ms(record.next_attempt_at));
    }
    if let OutboxState::Failed {
        status,
        code,
        reason,
    } = &record.state
    {
        entry["error"] = json!({"status": status, "code": code, "reason": reason});
    }
    entry
}
