//! What an operator looks at in an incident besides channels and incidents (issue 16): the
//! lockouts in force, the tool restriction, today's token usage per channel and the last
//! audit verification. Read scope, except running a verification (admin).
//!
//! Owns: shaping these answers from state other modules keep (the lockout table, the tool
//! surface, the usage counters, `last_verify`). Must not: change any of it, or show a
//! secret — lockouts name client keys, never tokens.

use std::time::Instant;

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};
use time::OffsetDateTime;

use kafclaw_actors::agent::{utc_today, Budget, UsageTotals};

use super::auth::{Admin, Authorized, Read};
use super::error::ApiError;
use super::AppState;

/// Lockouts listed at most (the table holds many more; `count` says how many there are).
const MAX_LISTED_LOCKOUTS: usize = 200;

/// `GET /api/v1/lockouts` (read): client keys locked out now, longest first.
pub async fn lockouts(
    state: web::Data<AppState>,
    _caller: Authorized<Read>,
) -> Result<HttpResponse, ApiError> {
    let active = state.control.lockout.active(Instant::now());
    let now = OffsetDateTime::now_utc();
    let listed: Vec<Value> = active
        .iter()
        .take(MAX_LISTED_LOCKOUTS)
        .map(|(key, left)| {
            let seconds = left.as_secs().max(1);
            json!({
                "client": key.to_string(),
                "retry_after_seconds": seconds,
                "until": kafclaw_actors::clock::to_rfc3339(now + *left),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"count": active.len(), "lockouts": listed})))
}

/// `GET /api/v1/tools` (read): the configured tool policy and the runtime restriction in
/// force (`restrict_tools`, `lockdown`, incident actions).
pub async fn tools(
    state: web::Data<AppState>,
    _caller: Authorized<Read>,
) -> Result<HttpResponse, ApiError> {
    let surface = &state.control.surface;
    let restriction = surface.restriction();
    let overview = surface.overview();
    let restricted = restriction.max_tier.is_some() || !restriction.denied_tools.is_empty();
    Ok(HttpResponse::Ok().json(json!({
        "configured": state.tool_policy,
        "restricted": restricted,
        "restriction": {
            "max_tier": restriction.max_tier,
            "deny": restriction.denied_tools,
        },
        "blocked_senders": overview
            .blocked
            .iter()
            .map(|(channel, sender)| json!({"channel": channel, "sender": sender}))
            .collect::<Vec<_>>(),
        "sender_limits": overview
            .limited
            .iter()
            .map(|(channel, sender, tier)| {
                json!({"channel": channel, "sender": sender, "max_tier": tier})
            })
            .collect::<Vec<_>>(),
    })))
}

fn totals(usage: &UsageTotals) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total": usage.total,
        "calls": usage.calls,
    })
}

/// `GET /api/v1/usage` (read): model tokens used today (UTC), in total and per channel;
/// every configured channel is listed, at 0 when it used none.
pub async fn usage(
    state: web::Data<AppState>,
    _caller: Authorized<Read>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let day = utc_today();
    let (total, mut by_channel) = web::block(move || {
        let budget = Budget::new(&db, Default::default())?;
        Ok::<_, kafclaw_actors::store::StoreError>((
            budget.usage_on(day)?,
            budget.usage_by_channel(day)?,
        ))
    })
    .await
    .map_err(|_| ApiError::Unavailable("usage unavailable".into()))?
    .map_err(ApiError::internal)?;
    for name in state.control.channels.keys() {
        by_channel.entry(name.clone()).or_default();
    }
    let channels: Vec<Value> = by_channel
        .iter()
        .map(|(channel, usage)| {
            let mut entry = totals(usage);
            entry["channel"] = json!(channel);
            entry
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "day": day.to_string(),
        "total": totals(&total),
        "channels": channels,
    })))
}

/// `GET /api/v1/audit/verify` (read): the last verification's outcome (`null` before the
/// first one).
pub async fn last_verify(
    state: web::Data<AppState>,
    _caller: Authorized<Read>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let last = web::block(move || crate::last_verify::read(&db))
        .await
        .map_err(|_| ApiError::Unavailable("store unavailable".into()))?;
    Ok(HttpResponse::Ok().json(json!({"last": last})))
}

/// `POST /api/v1/audit/verify` (admin, no body): verifies the whole chain now and answers its
/// outcome (200 also when the chain is broken: `ok` is false and `error` names the problem).
pub async fn verify_now(
    state: web::Data<AppState>,
    caller: Authorized<Admin>,
) -> Result<HttpResponse, ApiError> {
    let input = crate::last_verify::VerifyInput {
        home: state.home.clone(),
        db: state.db.clone(),
        dir: state.audit_dir.clone(),
        key: state.audit_key.clone(),
        from: None,
        by: caller.principal.name,
    };
    let (_, outcome) = crate::last_verify::run(input)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(HttpResponse::Ok().json(json!({"last": outcome})))
}
