//! Channel webhooks (CONTRACT §5) and `GET /api/v1/channels`.
//!
//! Each inbound is authenticated by its own signature over the raw body, checked before any
//! parsing; the body is read through `SignedBody` (one of the listener's slots for bodies of
//! unknown senders, under the whole-body deadline). The 200 goes out only after the channel
//! stored and flushed the message.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use kafclaw_actors::channel::bridge::{parse_bridge_message, verify_bridge, BridgeAuthError};
use kafclaw_actors::channel::whatsapp::{parse_webhook, verify_handshake, verify_signature};
use kafclaw_actors::channel::{AcceptInbound, ChannelBridge, GetChannelInfo, InboundMessage};
use kafclaw_actors::supervisor::{GetSupervisionTree, Slot};

use super::auth::{Authorized, Read};
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
    query: web::Query<Handshake>,
) -> HttpResponse {
    let Some(wa) = &state.channels.whatsapp else {
        return forbidden();
    };
    match verify_handshake(
        query.mode.as_deref(),
        query.verify_token.as_deref(),
        query.challenge.as_deref(),
        wa.verify_token.expose(),
    ) {
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
    if let Err(e) = verify_signature(wa.app_secret.expose().as_bytes(), &body, header) {
        tracing::warn!(reason = %e, client = %client(&req), "whatsapp webhook signature refused");
        return Err(ApiError::Unauthorized);
    }
    let batch =
        parse_webhook(&body).map_err(|e| ApiError::BadRequest(format!("invalid payload: {e}")))?;
    for inbound in batch.messages {
        accept(&wa.channel, inbound.message).await?;
    }
    Ok(HttpResponse::Ok().json(json!({"ok": true})))
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
        Err(e) => {
            tracing::warn!(bridge = %name, reason = %e, client = %client(&req), "bridge delivery refused");
            return Err(ApiError::Unauthorized);
        }
    }
    let timestamp = header("x-kafclaw-timestamp")
        .and_then(|t| t.parse().ok())
        .unwrap_or(now);
    let message = parse_bridge_message(&body, timestamp)
        .map_err(|e| ApiError::BadRequest(format!("invalid payload: {e}")))?;
    accept(&bridge.channel, message).await?;
    Ok(HttpResponse::Ok().json(json!({"ok": true})))
}

async fn accept(channel: &Slot<ChannelBridge>, message: InboundMessage) -> Result<(), ApiError> {
    let addr = channel
        .addr()
        .ok_or_else(|| ApiError::Unavailable("channel unavailable".into()))?;
    match addr.send(AcceptInbound { message }).await {
        Ok(Ok(_)) => Ok(()),
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
        out.push(match info {
            Some(info) => json!({
                "name": info.name,
                "kind": info.kind,
                "state": info.state,
                "since": info.since,
                "reason": info.reason,
                "restarts": restarts,
                "inbound_total": info.inbound_total,
                "unknown_senders_total": info.unknown_senders_total,
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
                "inbound_total": 0,
                "unknown_senders_total": 0,
            }),
        });
    }
    Ok(HttpResponse::Ok().json(out))
}
