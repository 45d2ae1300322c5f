//! One delivery attempt over HTTP: the request per target, its classification, and reasons
//! that are safe to store and log.
//!
//! Owns: the WhatsApp request (`Authorization: Bearer`, one POST per part of
//! [`build_text_messages`], each carrying the part's [`reply_tag`] as
//! `biz_opaque_callback_data`), the bridge request (JSON [`BridgeOutbound`], signed with
//! [`sign_bridge`], `Idempotency-Key: <reply id>`), reading at most [`MAX_ANSWER_BYTES`] of an
//! answer, and failure reasons with the provider's error code.
//! Must not: touch actor state (it runs in a spawned future), or let the token, the secret, the
//! outbound URL (beyond its origin), an answer body's text or message text into a reason —
//! reasons end up in the outbox record, the logs and the dashboard.

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{DispatchError, DispatchTarget, MillisClock};
use crate::channel::bridge::sign_bridge;
use crate::channel::outbox::{
    classify_http, classify_network_error, reply_id, reply_tag, AttemptResult, OutboxRecord,
};
use crate::channel::whatsapp::{build_text_messages, messages_url};
use crate::vault::SecretValue;

/// The most of an answer's body that is read (to reuse the connection and to pick Graph error
/// codes from an error answer); the rest is dropped.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The JSON body POSTed to a bridge's `outbound_url`, one per reply (bridges split long text
/// themselves, as their platform requires).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeOutbound {
    /// `kafclaw-<outbox id>`: the same on every retry of this reply, so the bridge can drop a
    /// duplicate delivery.
    pub message_id: String,
    /// The conversation to post in: the `chat_id` of the inbound message being answered.
    pub chat_id: String,
    /// The reply text (UTF-8, not split).
    pub text: String,
    /// The bridge's own inbound `message_id` this reply answers (for threading or quoting);
    /// omitted when there is none (pairing notices, for example).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
}

/// The bridge body for one outbox record.
pub fn bridge_body(record: &OutboxRecord) -> BridgeOutbound {
    BridgeOutbound {
        message_id: reply_id(record.id),
        chat_id: record.message.to.clone(),
        text: record.message.text.clone(),
        reply_to: record.message.reply_to.clone(),
    }
}

/// The result of one attempt and how many parts of the reply the channel has accepted so far
/// (counting parts accepted by earlier attempts).
#[derive(Clone, Debug)]
pub(super) struct Delivery {
    /// What to record.
    pub result: AttemptResult,
    /// Parts accepted; a retry starts at this part.
    pub parts_done: u32,
    /// The ids the provider gave the parts it accepted in this attempt (part, id): WhatsApp's
    /// `messages[0].id` of each send.
    pub provider_ids: Vec<(u32, String)>,
}

/// A validated target.
enum Target {
    /// The Graph API messages URL and the access token.
    WhatsApp {
        url: reqwest::Url,
        token: SecretValue,
    },
    /// The bridge's outbound URL and its secret.
    Bridge {
        url: reqwest::Url,
        secret: SecretValue,
    },
}

/// Sends replies to one target.
pub(super) struct Sender {
    /// The shared client (timeout, no redirects).
    http: reqwest::Client,
    /// Where to.
    target: Target,
}

/// True for a URL path component made only of `[A-Za-z0-9._-]`.
fn is_plain_component(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn http_url(raw: &str, what: &'static str) -> Result<reqwest::Url, DispatchError> {
    let url = reqwest::Url::parse(raw).map_err(|_| DispatchError::InvalidTarget(what))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(DispatchError::InvalidTarget(what));
    }
    Ok(url)
}

/// `Bearer <token>` as a sensitive header value (kept out of reqwest's `Debug`).
pub(crate) fn bearer(token: &SecretValue) -> Option<HeaderValue> {
    let token = token.expose_str()?;
    let mut text = Zeroizing::new(String::with_capacity(token.len() + 7));
    text.push_str("Bearer ");
    text.push_str(token);
    let mut value = HeaderValue::from_str(&text).ok()?;
    value.set_sensitive(true);
    Some(value)
}

impl Sender {
    /// Validates `target` once, so that a delivery never fails for a configuration reason.
    pub(super) fn new(
        target: DispatchTarget,
        http: reqwest::Client,
    ) -> Result<Self, DispatchError> {
        let target = match target {
            DispatchTarget::WhatsApp {
                graph_base,
                api_version,
                phone_number_id,
                access_token,
            } => {
                if !is_plain_component(api_version.trim_matches('/')) {
                    return Err(DispatchError::InvalidTarget("api_version is not a version"));
                }
                if !is_plain_component(&phone_number_id) {
                    return Err(DispatchError::InvalidTarget(
                        "phone_number_id is not a plain id",
                    ));
                }
                http_url(&graph_base, "graph_base is not an http(s) url")?;
                let url = http_url(
                    &messages_url(&graph_base, &api_version, &phone_number_id),
                    "graph_base is not an http(s) url",
                )?;
                if access_token.is_empty() || bearer(&access_token).is_none() {
                    return Err(DispatchError::InvalidTarget(
                        "access token is empty or cannot be sent in a header",
                    ));
                }
                Target::WhatsApp {
                    url,
                    token: access_token,
                }
            }
            DispatchTarget::Bridge {
                outbound_url,
                secret,
            } => {
                let url = http_url(&outbound_url, "outbound_url is not an http(s) url")?;
                if secret.is_empty() {
                    return Err(DispatchError::InvalidTarget("bridge secret is empty"));
                }
                Target::Bridge { url, secret }
            }
        };
        Ok(Self { http, target })
    }

    /// `whatsapp` or `bridge`, for logs.
    pub(super) fn kind(&self) -> &'static str {
        match self.target {
            Target::WhatsApp { .. } => "whatsapp",
            Target::Bridge { .. } => "bridge",
        }
    }

    /// Sends `record`, starting at its first part not yet accepted.
    pub(super) async fn deliver(&self, record: &OutboxRecord, clock: &MillisClock) -> Delivery {
        let from_part = record.parts_accepted as usize;
        if record.message.text.is_empty() {
            return Delivery {
                result: AttemptResult::Terminal {
                    status: None,
                    code: None,
                    reason: "reply text is empty".into(),
                },
                parts_done: 0,
                provider_ids: Vec::new(),
            };
        }
        let delivery = match &self.target {
            Target::WhatsApp { url, token } => {
                self.deliver_whatsapp(url, token, record, from_part).await
            }
            Target::Bridge { url, secret } => {
                if from_part >= 1 {
                    // Accepted by an earlier attempt whose result was not recorded.
                    return Delivery {
                        result: AttemptResult::Sent,
                        parts_done: 1,
                        provider_ids: Vec::new(),
                    };
                }
                let (result, _) = self.deliver_bridge(url, secret, record, clock).await;
                let parts_done = u32::from(result == AttemptResult::Sent);
                Delivery {
                    result,
                    parts_done,
                    provider_ids: Vec::new(),
                }
            }
        };
        Delivery {
            result: self.scrub(delivery.result),
            ..delivery
        }
    }

    async fn deliver_whatsapp(
        &self,
        url: &reqwest::Url,
        token: &SecretValue,
        record: &OutboxRecord,
        from_part: usize,
    ) -> Delivery {
        let message = &record.message;
        let parts = build_text_messages(&message.to, &message.text, message.reply_to.as_deref());
        let total = parts.len();
        let done = |index: usize| u32::try_from(index).unwrap_or(u32::MAX);
        let mut provider_ids = Vec::new();
        for (index, mut body) in parts.into_iter().enumerate().skip(from_part) {
            let Some(authorization) = bearer(token) else {
                return Delivery {
                    result: AttemptResult::Terminal {
                        status: None,
                        code: None,
                        reason: "access token cannot be sent in a header".into(),
                    },
                    parts_done: done(index),
                    provider_ids,
                };
            };
            // Meta echoes this in the status webhooks of the message: the receipt that tells
            // a restarted gateway the part went out.
            body["biz_opaque_callback_data"] =
                serde_json::Value::from(reply_tag(record.id, done(index)));
            let request = self
                .http
                .post(url.clone())
                .header(AUTHORIZATION, authorization)
                .json(&body);
            match attempt(request, true).await {
                (AttemptResult::Sent, provider_id) => {
                    provider_ids.extend(provider_id.map(|id| (done(index), id)));
                }
                (failed, _) => {
                    return Delivery {
                        result: with_part(failed, index, total),
                        parts_done: done(index),
                        provider_ids,
                    }
                }
            }
        }
        Delivery {
            result: AttemptResult::Sent,
            parts_done: done(total),
            provider_ids,
        }
    }

    async fn deliver_bridge(
        &self,
        url: &reqwest::Url,
        secret: &SecretValue,
        record: &OutboxRecord,
        clock: &MillisClock,
    ) -> (AttemptResult, Option<String>) {
        let body = match serde_json::to_vec(&bridge_body(record)) {
            Ok(body) => body,
            Err(_) => {
                let result = AttemptResult::Terminal {
                    status: None,
                    code: None,
                    reason: "reply cannot be encoded".into(),
                };
                return (result, None);
            }
        };
        let timestamp = clock().div_euclid(1000);
        let signature = sign_bridge(secret.expose(), timestamp, &body);
        let Ok(mut signature) = HeaderValue::from_str(&signature) else {
            let result = AttemptResult::Terminal {
                status: None,
                code: None,
                reason: "reply cannot be signed".into(),
            };
            return (result, None);
        };
        signature.set_sensitive(true);
        let request = self
            .http
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", reply_id(record.id))
            .header("X-KafClaw-Timestamp", timestamp.to_string())
            .header("X-KafClaw-Signature", signature)
            .body(body);
        attempt(request, false).await
    }

    /// Removes the token or secret and the outbound URL's path from a failure's reason, in
    /// case a cause ever quotes them (defence in depth; reasons are built to not carry them).
    fn scrub(&self, result: AttemptResult) -> AttemptResult {
        let (secret, url) = match &self.target {
            Target::WhatsApp { url, token } => (token, url),
            Target::Bridge { url, secret } => (secret, url),
        };
        let clean = |reason: String| {
            let mut reason = reason;
            if let Some(secret) = secret.expose_str().filter(|s| !s.is_empty()) {
                reason = reason.replace(secret, "[redacted]");
            }
            let path = url.path();
            if path.len() > 1 {
                reason = reason.replace(path, "/[redacted]");
            }
            reason
        };
        match result {
            AttemptResult::Sent => AttemptResult::Sent,
            AttemptResult::Transient {
                retry_after,
                reason,
            } => AttemptResult::Transient {
                retry_after,
                reason: clean(reason),
            },
            AttemptResult::Terminal {
                status,
                code,
                reason,
            } => AttemptResult::Terminal {
                status,
                code,
                reason: clean(reason),
            },
        }
    }
}

/// Sends one request and classifies the answer; `graph` adds the Graph API's numeric error
/// codes to a failure's reason and reads the id it gave an accepted message.
async fn attempt(request: reqwest::RequestBuilder, graph: bool) -> (AttemptResult, Option<String>) {
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => return (classify_network_error(&error_reason(&error)), None),
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = read_capped(response, MAX_ANSWER_BYTES).await;
    let detail = if graph { graph_error(&body) } else { None };
    let result = match (classify_http(status, retry_after.as_deref()), detail) {
        (
            AttemptResult::Transient {
                retry_after,
                reason,
            },
            Some((_, detail)),
        ) => AttemptResult::Transient {
            retry_after,
            reason: format!("{reason} ({detail})"),
        },
        (AttemptResult::Terminal { status, reason, .. }, Some((code, detail))) => {
            AttemptResult::Terminal {
                status,
                code,
                reason: format!("{reason} ({detail})"),
            }
        }
        (result, _) => result,
    };
    let provider_id = (graph && result == AttemptResult::Sent)
        .then(|| graph_message_id(&body))
        .flatten();
    (result, provider_id)
}

/// The id the Graph API gave an accepted message (`{"messages":[{"id":"wamid…"}]}`), when it
/// is a plain printable token.
fn graph_message_id(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Answer {
        messages: Vec<Sent>,
    }
    #[derive(Deserialize)]
    struct Sent {
        id: String,
    }
    let id = serde_json::from_slice::<Answer>(body)
        .ok()?
        .messages
        .into_iter()
        .next()?
        .id;
    let plain = !id.is_empty() && id.len() <= 256 && id.bytes().all(|b| b.is_ascii_graphic());
    plain.then_some(id)
}

/// Reads at most `cap` bytes of the body; a body that fails half-way counts as what was read.
async fn read_capped(mut response: reqwest::Response, cap: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = cap.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= cap {
            break;
        }
    }
    body
}

/// The code and `graph error code N[, subcode M]` from a Graph API error answer. Only the
/// numbers: the message text is the server's and is not trusted into a stored reason.
fn graph_error(body: &[u8]) -> Option<(Option<i64>, String)> {
    #[derive(Deserialize)]
    struct Answer {
        error: GraphError,
    }
    #[derive(Deserialize)]
    struct GraphError {
        code: Option<i64>,
        error_subcode: Option<i64>,
    }
    let answer: Answer = serde_json::from_slice(body).ok()?;
    match (answer.error.code, answer.error.error_subcode) {
        (Some(code), Some(sub)) => Some((
            Some(code),
            format!("graph error code {code}, subcode {sub}"),
        )),
        (Some(code), None) => Some((Some(code), format!("graph error code {code}"))),
        _ => None,
    }
}

/// Prefixes a failure's reason with `part k of n: ` when the reply has several parts.
fn with_part(result: AttemptResult, index: usize, total: usize) -> AttemptResult {
    if total <= 1 {
        return result;
    }
    let prefix = |reason: String| format!("part {} of {total}: {reason}", index + 1);
    match result {
        AttemptResult::Sent => AttemptResult::Sent,
        AttemptResult::Transient {
            retry_after,
            reason,
        } => AttemptResult::Transient {
            retry_after,
            reason: prefix(reason),
        },
        AttemptResult::Terminal {
            status,
            code,
            reason,
        } => AttemptResult::Terminal {
            status,
            code,
            reason: prefix(reason),
        },
    }
}

/// What went wrong with a request, without the URL reqwest puts into its own message.
pub(crate) fn error_reason(error: &reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "answer unreadable"
    } else {
        "request failed"
    };
    // reqwest's own message carries the URL; its causes (io, hyper, rustls) do not.
    let Some(mut cause) = std::error::Error::source(error) else {
        return what.to_string();
    };
    while let Some(source) = cause.source() {
        cause = source;
    }
    let mut detail = cause.to_string();
    if let Some(url) = error.url() {
        detail = detail.replace(url.as_str(), "");
    }
    format!("{what}: {detail}")
}

#[cfg(test)]
mod tests {
    use super::graph_message_id;

    #[test]
    fn the_graph_message_id_is_read_only_when_plain() {
        let id = |body: &str| graph_message_id(body.as_bytes());
        assert_eq!(
            id(r#"{"messaging_product":"whatsapp","messages":[{"id":"wamid.HBg"}]}"#),
            Some("wamid.HBg".into())
        );
        assert_eq!(id(r#"{"messages":[]}"#), None);
        assert_eq!(id(r#"{"messages":[{"id":""}]}"#), None);
        assert_eq!(id(r#"{"messages":[{"id":"a b"}]}"#), None);
        assert_eq!(
            id(&format!(
                r#"{{"messages":[{{"id":"{}"}}]}}"#,
                "w".repeat(257)
            )),
            None
        );
        assert_eq!(id("not json"), None);
    }
}
