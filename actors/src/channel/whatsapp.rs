//! The WhatsApp Cloud API edge logic (CONTRACT §5): the webhook handshake, the
//! `X-Hub-Signature-256` check, payload parsing, and outbound request bodies.
//!
//! Owns: pure functions over bytes and strings; the HTTP layer calls them with the raw request.
//! Must not: parse a body before its signature was verified (callers verify first), fail a
//! delivery over a message type it does not know, or put a secret, token or signature into an
//! error message.
//!
//! Decision (uppercase hex): the signature's hex digits are *decoded* and the resulting 32
//! bytes are compared in constant time, so `sha256=ABCD…` and `sha256=abcd…` are the same
//! signature and both are accepted. Meta sends lowercase; accepting uppercase adds no forgery
//! power (the comparison is on the MAC bytes, not on the text), and rejecting it would only
//! break proxies that re-case headers. The `sha256=` prefix itself is case-sensitive.

use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::content::Content;
use super::{is_clean_id, InboundMessage, MessageKind, MAX_TEXT_BYTES};

type HmacSha256 = Hmac<Sha256>;

/// WhatsApp's limit for one text message body, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;

/// Why a `GET /webhooks/whatsapp` handshake was refused (the edge answers 403 for all).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// `hub.mode` was missing or not `subscribe`.
    #[error("hub.mode is not subscribe")]
    WrongMode,
    /// `hub.verify_token` was missing or did not match.
    #[error("verify token does not match")]
    WrongToken,
    /// `hub.challenge` was missing.
    #[error("hub.challenge is missing")]
    MissingChallenge,
    /// No verify token is configured, so no handshake can succeed.
    #[error("no verify token is configured")]
    NotConfigured,
}

/// Answers the subscription handshake: returns the challenge, byte for byte, to echo as the
/// 200 body. The token comparison is constant-time (over SHA-256 digests, so not even the
/// token's length leaks).
pub fn verify_handshake(
    mode: Option<&str>,
    verify_token_presented: Option<&str>,
    challenge: Option<&str>,
    expected_token: &str,
) -> Result<String, HandshakeError> {
    if expected_token.is_empty() {
        return Err(HandshakeError::NotConfigured);
    }
    if mode != Some("subscribe") {
        return Err(HandshakeError::WrongMode);
    }
    let presented = verify_token_presented.ok_or(HandshakeError::WrongToken)?;
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected_token.as_bytes());
    if !bool::from(a.as_slice().ct_eq(b.as_slice())) {
        return Err(HandshakeError::WrongToken);
    }
    challenge
        .map(str::to_string)
        .ok_or(HandshakeError::MissingChallenge)
}

/// Why a webhook signature was refused (the edge answers 401 for all).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-Hub-Signature-256` header.
    #[error("signature header is missing")]
    Missing,
    /// The header names another algorithm (for example the legacy `sha1=`).
    #[error("signature algorithm is not sha256")]
    UnsupportedAlgorithm,
    /// The header is not of the form `sha256=<hex>`.
    #[error("signature header is malformed")]
    Malformed,
    /// The signature is not valid hex.
    #[error("signature is not hex")]
    BadHex,
    /// The signature does not decode to 32 bytes.
    #[error("signature has {0} bytes, expected 32")]
    WrongLength(usize),
    /// The signature does not match the body.
    #[error("signature does not match")]
    Mismatch,
    /// No app secret is configured, so nothing can be verified.
    #[error("no app secret is configured")]
    NotConfigured,
}

/// Verifies `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app_secret, raw_body)>` over the
/// raw bytes, in constant time. Upper- and lowercase hex are both accepted (see the module
/// documentation).
pub fn verify_signature(
    app_secret: &[u8],
    raw_body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    if app_secret.is_empty() {
        return Err(SignatureError::NotConfigured);
    }
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let hex_sig = match header.split_once('=') {
        Some(("sha256", hex_sig)) => hex_sig,
        Some((algorithm, _)) if !algorithm.is_empty() && algorithm != "sha256" => {
            return Err(SignatureError::UnsupportedAlgorithm)
        }
        _ => return Err(SignatureError::Malformed),
    };
    let signature = decode_mac_hex(hex_sig)?;
    let mut mac = HmacSha256::new_from_slice(app_secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(raw_body);
    mac.verify_slice(&signature)
        .map_err(|_| SignatureError::Mismatch)
}

/// Decodes a 32-byte MAC from hex (either case).
pub(crate) fn decode_mac_hex(hex_sig: &str) -> Result<Vec<u8>, SignatureError> {
    if !hex_sig.len().is_multiple_of(2) {
        return Err(SignatureError::BadHex);
    }
    let bytes = hex::decode(hex_sig).map_err(|_| SignatureError::BadHex)?;
    if bytes.len() != 32 {
        return Err(SignatureError::WrongLength(bytes.len()));
    }
    Ok(bytes)
}

/// Computes the header value for a body (tests and the benchmark's load generator).
pub fn sign_webhook(app_secret: &[u8], raw_body: &[u8]) -> String {
    let mut mac = match HmacSha256::new_from_slice(app_secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(raw_body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why a verified webhook body could not be parsed (the edge answers 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The body is not JSON of the expected shape.
    #[error("invalid json: {0}")]
    Json(String),
    /// `object` is not `whatsapp_business_account`.
    #[error("object is not whatsapp_business_account")]
    WrongObject,
    /// A message lacks a required field or has an invalid one.
    #[error("message field {0} is missing or invalid")]
    InvalidField(&'static str),
}

/// A delivery receipt for one of our outbound messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryStatus {
    /// The outbound message's `wamid…`.
    pub message_id: String,
    /// `sent`, `delivered`, `read`, `failed`, …
    pub status: String,
    /// Unix seconds.
    pub timestamp: i64,
    /// The recipient's number, normalised.
    pub recipient_id: String,
    /// Error codes and titles Meta attached (failures only).
    pub errors: Vec<StatusErrorInfo>,
    /// `biz_opaque_callback_data` as the send carried it (KafClaw puts the reply's tag there),
    /// when present and clean.
    pub callback_data: Option<String>,
}

/// One error of a failed [`DeliveryStatus`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusErrorInfo {
    /// Meta's error code.
    pub code: Option<i64>,
    /// Its title.
    pub title: Option<String>,
}

/// One inbound message with the WhatsApp-specific context around it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhatsappInbound {
    /// The business number that received it (`metadata.phone_number_id`): the account.
    pub phone_number_id: String,
    /// The sender's profile name, as the sender chose it (untrusted, display only).
    pub profile_name: Option<String>,
    /// The message.
    pub message: InboundMessage,
}

/// Everything one webhook delivery carried.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookBatch {
    /// Inbound messages, in payload order.
    pub messages: Vec<WhatsappInbound>,
    /// Delivery receipts, in payload order.
    pub statuses: Vec<DeliveryStatus>,
    /// Messages and receipts skipped because they were for another business number.
    pub foreign: usize,
}

#[derive(Deserialize)]
struct Envelope {
    object: String,
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    #[serde(default)]
    field: String,
    #[serde(default)]
    value: Option<ChangeValue>,
}

#[derive(Deserialize, Default)]
struct ChangeValue {
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    contacts: Vec<Contact>,
    #[serde(default)]
    messages: Vec<serde_json::Value>,
    #[serde(default)]
    statuses: Vec<WireStatus>,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    phone_number_id: String,
}

#[derive(Deserialize)]
struct Contact {
    #[serde(default)]
    wa_id: String,
    #[serde(default)]
    profile: Option<Profile>,
}

#[derive(Deserialize)]
struct Profile {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct WireStatus {
    #[serde(default)]
    id: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    timestamp: String,
    #[serde(default)]
    recipient_id: String,
    #[serde(default)]
    errors: Vec<WireStatusError>,
    #[serde(default)]
    biz_opaque_callback_data: Option<String>,
}

#[derive(Deserialize)]
struct WireStatusError {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    title: Option<String>,
}

fn parse_timestamp(raw: &str) -> Result<i64, ParseError> {
    if raw.is_empty() || raw.len() > 12 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::InvalidField("timestamp"));
    }
    raw.parse()
        .map_err(|_| ParseError::InvalidField("timestamp"))
}

/// Parses a (verified) webhook body: `entry[].changes[]` with `field == "messages"`; other
/// fields are skipped, unknown keys tolerated. Every message carries its typed content and the
/// text the agent would see (see [`Content::render`]); unknown types are kept as
/// [`Content::Unknown`].
pub fn parse_webhook(raw_body: &[u8]) -> Result<WebhookBatch, ParseError> {
    parse_webhook_for(raw_body, None)
}

/// Like [`parse_webhook`], keeping only what was sent to the business number `expected`
/// (`metadata.phone_number_id`): one Meta app signs the webhooks of every number it serves, so
/// a signature alone does not say the message is this channel's. A change naming another
/// number is skipped and counted in [`WebhookBatch::foreign`]; one without metadata is kept.
pub fn parse_webhook_for(
    raw_body: &[u8],
    expected: Option<&str>,
) -> Result<WebhookBatch, ParseError> {
    let envelope: Envelope =
        serde_json::from_slice(raw_body).map_err(|e| ParseError::Json(e.to_string()))?;
    if envelope.object != "whatsapp_business_account" {
        return Err(ParseError::WrongObject);
    }
    let mut batch = WebhookBatch::default();
    for change in envelope.entry.into_iter().flat_map(|e| e.changes) {
        if change.field != "messages" {
            continue;
        }
        let Some(value) = change.value else { continue };
        let phone_number_id = value.metadata.unwrap_or_default().phone_number_id;
        if expected.is_some_and(|e| !phone_number_id.is_empty() && phone_number_id != e) {
            batch.foreign += value.messages.len() + value.statuses.len();
            continue;
        }
        for wire in value.messages {
            let inbound = parse_message(&wire, &value.contacts, &phone_number_id)?;
            batch.messages.push(inbound);
        }
        for wire in value.statuses {
            if !is_clean_id(&wire.id) {
                return Err(ParseError::InvalidField("statuses.id"));
            }
            batch.statuses.push(DeliveryStatus {
                message_id: wire.id,
                status: wire.status.chars().take(32).collect(),
                timestamp: parse_timestamp(&wire.timestamp)?,
                recipient_id: normalize_number(&wire.recipient_id),
                errors: wire
                    .errors
                    .into_iter()
                    .map(|e| StatusErrorInfo {
                        code: e.code,
                        title: e.title,
                    })
                    .collect(),
                callback_data: wire.biz_opaque_callback_data.filter(|d| is_clean_id(d)),
            });
        }
    }
    Ok(batch)
}

/// One message of `messages[]`: the envelope fields are required (sender, id, timestamp); the
/// content never fails to parse ([`Content::from_wire`]), except a `text` message without its
/// body.
fn parse_message(
    wire: &serde_json::Value,
    contacts: &[Contact],
    phone_number_id: &str,
) -> Result<WhatsappInbound, ParseError> {
    let str_of = |name: &str| wire.get(name).and_then(serde_json::Value::as_str);
    let sender_id = normalize_number(str_of("from").unwrap_or_default());
    if sender_id.is_empty() {
        return Err(ParseError::InvalidField("from"));
    }
    let id = str_of("id").unwrap_or_default().to_string();
    if !is_clean_id(&id) {
        return Err(ParseError::InvalidField("id"));
    }
    let timestamp = parse_timestamp(str_of("timestamp").unwrap_or_default())?;
    let wire_kind = str_of("type").unwrap_or_default();
    let content = Content::from_wire(wire_kind, wire);
    let kind = match &content {
        Content::Text { .. } => MessageKind::Text,
        Content::Media { .. } => MessageKind::Media,
        Content::Reaction { .. } => MessageKind::Reaction,
        _ => MessageKind::Other(wire_kind.chars().take(64).collect()),
    };
    let text = match &content {
        Content::Text { .. } => {
            let body = wire
                .get("text")
                .and_then(|t| t.get("body"))
                .and_then(serde_json::Value::as_str)
                .ok_or(ParseError::InvalidField("text.body"))?;
            if body.len() > MAX_TEXT_BYTES {
                return Err(ParseError::InvalidField("text.body"));
            }
            body.to_string()
        }
        other => truncate_bytes(other.render(), MAX_TEXT_BYTES),
    };
    let reply_to = wire
        .get("context")
        .and_then(|c| c.get("id"))
        .and_then(serde_json::Value::as_str)
        .filter(|id| is_clean_id(id))
        .map(str::to_string);
    let profile_name = contacts
        .iter()
        .find(|c| normalize_number(&c.wa_id) == sender_id)
        .and_then(|c| c.profile.as_ref())
        .and_then(|p| p.name.clone());
    Ok(WhatsappInbound {
        phone_number_id: phone_number_id.to_string(),
        profile_name,
        message: InboundMessage {
            message_id: id,
            chat_id: sender_id.clone(),
            sender_id,
            thread_id: None,
            text: Some(text),
            kind,
            timestamp,
            is_group: false,
            mentioned: false,
            reply_to,
            content: Some(content),
            attachments: Vec::new(),
        },
    })
}

/// `text` cut to at most `max` bytes, at a character boundary.
pub(crate) fn truncate_bytes(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Normalises a WhatsApp number: `+4915…`, `4915…`, `+49 151-…` and the JID form
/// `4915…@s.whatsapp.net` all become the digits only. Anything without digits becomes `""`.
pub fn normalize_number(raw: &str) -> String {
    let user_part = raw.split('@').next().unwrap_or_default();
    user_part.chars().filter(char::is_ascii_digit).collect()
}

/// Splits text into parts of at most `max_chars` characters (Unicode scalar values, never
/// inside one). Empty text gives no parts.
pub fn split_text(text: &str, max_chars: usize) -> Vec<String> {
    let max_chars = max_chars.max(1);
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut count = 0;
    for c in text.chars() {
        if count == max_chars {
            parts.push(std::mem::take(&mut current));
            count = 0;
        }
        current.push(c);
        count += 1;
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

/// The Graph API URL replies are POSTed to: `{graph_base}/{api_version}/{phone_number_id}/messages`
/// (a trailing `/` of `graph_base` is ignored).
pub fn messages_url(graph_base: &str, api_version: &str, phone_number_id: &str) -> String {
    format!(
        "{}/{}/{}/messages",
        graph_base.trim_end_matches('/'),
        api_version.trim_matches('/'),
        phone_number_id
    )
}

/// The JSON bodies for one reply: the text split at [`MAX_TEXT_CHARS`] characters, the reply
/// context (`context.message_id`) on the first part only, `to` normalised to digits.
/// POST each to [`messages_url`] in order.
pub fn build_text_messages(to: &str, text: &str, reply_to: Option<&str>) -> Vec<serde_json::Value> {
    let to = normalize_number(to);
    split_text(text, MAX_TEXT_CHARS)
        .into_iter()
        .enumerate()
        .map(|(index, body)| {
            let mut message = serde_json::json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": to,
                "type": "text",
                "text": { "body": body, "preview_url": false },
            });
            if let (0, Some(id)) = (index, reply_to) {
                message["context"] = serde_json::json!({ "message_id": id });
            }
            message
        })
        .collect()
}
