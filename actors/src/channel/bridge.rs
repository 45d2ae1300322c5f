//! The signed bridge protocol (CONTRACT §5 "Bridge"): `X-KafClaw-Timestamp` (unix seconds,
//! within ±300 s) and `X-KafClaw-Signature: v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`,
//! with a replay window, and the JSON body of an inbound bridge message.
//!
//! Owns: verification (constant-time, replay-checked), signing for outbound, body parsing.
//! Must not: remember anything but MAC digests and their timestamps, or put a secret or a
//! signature into an error.
//!
//! Decision (replay cache when full): a [`ReplayCache`] holds every accepted signature until its
//! timestamp leaves the window (after that the timestamp check alone refuses a replay). When it
//! is full of entries still inside the window it *refuses* new deliveries
//! ([`BridgeAuthError::ReplayCacheFull`], the edge answers 503 so the bridge retries later)
//! instead of forgetting an entry, because forgetting would re-open a replay hole. Only deliveries
//! with a valid MAC are remembered, so only a holder of the secret can fill it.

use std::collections::{BTreeSet, HashSet};

use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::content::Attachment;
use super::{is_clean_id, InboundMessage, MessageKind, MAX_TEXT_BYTES};

type HmacSha256 = Hmac<Sha256>;

/// The accepted clock skew between the bridge and the gateway, in seconds.
pub const REPLAY_WINDOW_SECONDS: i64 = 300;
/// Default number of signatures a [`ReplayCache`] remembers.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// Why a bridge delivery was refused (the edge answers 401, or 503 for a full cache).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BridgeAuthError {
    /// No bridge secret is configured.
    #[error("no bridge secret is configured")]
    NotConfigured,
    /// No `X-KafClaw-Timestamp` header.
    #[error("timestamp header is missing")]
    MissingTimestamp,
    /// The timestamp is not plain unix seconds.
    #[error("timestamp is not unix seconds")]
    BadTimestamp,
    /// The timestamp is more than the window in the past.
    #[error("timestamp is {0} s old, outside the replay window")]
    Stale(i64),
    /// The timestamp is more than the window in the future.
    #[error("timestamp is {0} s in the future, outside the replay window")]
    Future(i64),
    /// No `X-KafClaw-Signature` header.
    #[error("signature header is missing")]
    MissingSignature,
    /// The header is not of the form `v1=<hex>`.
    #[error("signature version is not v1")]
    UnsupportedVersion,
    /// The signature is not hex.
    #[error("signature is not hex")]
    BadHex,
    /// The signature does not decode to 32 bytes.
    #[error("signature has {0} bytes, expected 32")]
    WrongLength(usize),
    /// The signature does not match.
    #[error("signature does not match")]
    Mismatch,
    /// This exact signature was already accepted inside the window.
    #[error("signature was already used")]
    Replayed,
    /// The replay cache is full of live entries; the delivery is refused, not risked.
    #[error("replay cache is full")]
    ReplayCacheFull,
}

/// Signatures accepted within the window, so each is accepted only once.
#[derive(Debug)]
pub struct ReplayCache {
    /// Seconds an entry must be kept (the timestamp window).
    window: i64,
    /// Most entries kept at once.
    capacity: usize,
    /// Entries ordered by their timestamp, for eviction.
    by_time: BTreeSet<(i64, [u8; 32])>,
    /// The same entries, for lookup.
    seen: HashSet<[u8; 32]>,
}

impl Default for ReplayCache {
    fn default() -> Self {
        Self::new(REPLAY_WINDOW_SECONDS, DEFAULT_REPLAY_CAPACITY)
    }
}

impl ReplayCache {
    /// A cache keeping entries for `window_seconds`, at most `capacity` of them.
    pub fn new(window_seconds: i64, capacity: usize) -> Self {
        Self {
            window: window_seconds,
            capacity,
            by_time: BTreeSet::new(),
            seen: HashSet::new(),
        }
    }

    /// Number of remembered signatures.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Forgets entries whose timestamp left the window.
    fn evict(&mut self, now: i64) {
        while let Some(&(ts, mac)) = self.by_time.first() {
            if ts >= now - self.window {
                break;
            }
            self.by_time.pop_first();
            self.seen.remove(&mac);
        }
    }

    /// Remembers `mac` (timestamp `ts`) unless it is known or the cache is full.
    fn remember(&mut self, mac: [u8; 32], ts: i64, now: i64) -> Result<(), BridgeAuthError> {
        self.evict(now);
        if self.seen.contains(&mac) {
            return Err(BridgeAuthError::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(BridgeAuthError::ReplayCacheFull);
        }
        self.seen.insert(mac);
        self.by_time.insert((ts, mac));
        Ok(())
    }
}

fn mac_for(secret: &[u8], timestamp: &str, body: &[u8]) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// Verifies one inbound bridge delivery at time `now` (unix seconds): the timestamp window,
/// then the MAC (constant-time), then the replay cache. The MAC covers the timestamp header
/// exactly as sent, a `.`, and the raw body.
pub fn verify_bridge(
    secret: &[u8],
    timestamp_header: Option<&str>,
    signature_header: Option<&str>,
    raw_body: &[u8],
    now: i64,
    cache: &mut ReplayCache,
) -> Result<(), BridgeAuthError> {
    if secret.is_empty() {
        return Err(BridgeAuthError::NotConfigured);
    }
    let ts_raw = timestamp_header.ok_or(BridgeAuthError::MissingTimestamp)?;
    if ts_raw.is_empty() || ts_raw.len() > 12 || !ts_raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BridgeAuthError::BadTimestamp);
    }
    let ts: i64 = ts_raw.parse().map_err(|_| BridgeAuthError::BadTimestamp)?;
    if ts < now - REPLAY_WINDOW_SECONDS {
        return Err(BridgeAuthError::Stale(now - ts));
    }
    if ts > now + REPLAY_WINDOW_SECONDS {
        return Err(BridgeAuthError::Future(ts - now));
    }
    let sig = signature_header
        .ok_or(BridgeAuthError::MissingSignature)?
        .trim();
    let hex_sig = sig
        .strip_prefix("v1=")
        .ok_or(BridgeAuthError::UnsupportedVersion)?;
    if !hex_sig.len().is_multiple_of(2) {
        return Err(BridgeAuthError::BadHex);
    }
    let presented = hex::decode(hex_sig).map_err(|_| BridgeAuthError::BadHex)?;
    let presented: [u8; 32] = presented
        .as_slice()
        .try_into()
        .map_err(|_| BridgeAuthError::WrongLength(presented.len()))?;
    let mac = mac_for(secret, ts_raw, raw_body).ok_or(BridgeAuthError::Mismatch)?;
    mac.verify_slice(&presented)
        .map_err(|_| BridgeAuthError::Mismatch)?;
    cache.remember(presented, ts, now)
}

/// The `X-KafClaw-Signature` value for an outbound body sent with `X-KafClaw-Timestamp: {timestamp}`.
pub fn sign_bridge(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    match mac_for(secret, &timestamp.to_string(), body) {
        Some(mac) => format!("v1={}", hex::encode(mac.finalize().into_bytes())),
        None => String::new(),
    }
}

/// Why a verified bridge body was refused (the edge answers 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BridgeParseError {
    /// Not JSON of the expected shape.
    #[error("invalid json: {0}")]
    Json(String),
    /// A required field is missing, empty, too long, or holds control characters.
    #[error("field {0} is missing or invalid")]
    InvalidField(&'static str),
}

#[derive(Deserialize)]
struct WireBridgeMessage {
    message_id: Option<String>,
    sender_id: Option<String>,
    chat_id: Option<String>,
    #[serde(default)]
    thread_id: Option<String>,
    text: Option<String>,
    #[serde(default)]
    is_group: bool,
    #[serde(default)]
    mentioned: bool,
    #[serde(default)]
    reply_to: Option<String>,
    #[serde(default)]
    attachments: Vec<Attachment>,
}

/// At most this many attachments per bridge message.
pub const MAX_ATTACHMENTS: usize = 8;
/// Largest inline attachment (`attachments[].data`, decoded), in bytes; larger ones must be
/// served from the bridge's own host (`attachments[].url`).
pub const MAX_INLINE_BYTES: usize = 1024 * 1024;

/// Checks the attachments of a bridge message: ids and names clean, inline data under
/// [`MAX_INLINE_BYTES`], URLs `http(s)://` (their origin is checked when they are fetched).
fn check_attachments(attachments: Vec<Attachment>) -> Result<Vec<Attachment>, BridgeParseError> {
    if attachments.len() > MAX_ATTACHMENTS {
        return Err(BridgeParseError::InvalidField("attachments"));
    }
    let clean = |v: &Option<String>| v.as_deref().is_none_or(is_clean_id);
    attachments
        .into_iter()
        .map(|mut a| {
            let name_ok = clean(&a.name) && a.name.as_deref().is_none_or(|n| !n.contains('/'));
            if !name_ok || !clean(&a.mime_type) {
                return Err(BridgeParseError::InvalidField("attachments.name"));
            }
            if let Some(data) = &a.data {
                if data.len() > MAX_INLINE_BYTES.div_ceil(3) * 4 + 4 {
                    return Err(BridgeParseError::InvalidField("attachments.data"));
                }
            }
            if let Some(url) = &a.url {
                let parsed = reqwest::Url::parse(url)
                    .map_err(|_| BridgeParseError::InvalidField("attachments.url"))?;
                if !matches!(parsed.scheme(), "http" | "https") || url.len() > 2048 {
                    return Err(BridgeParseError::InvalidField("attachments.url"));
                }
            }
            if a.data.is_none() && a.url.is_none() {
                return Err(BridgeParseError::InvalidField("attachments.data"));
            }
            a.name = a.name.map(|n| n.chars().take(128).collect());
            Ok(a)
        })
        .collect()
}

fn required(value: Option<String>, field: &'static str) -> Result<String, BridgeParseError> {
    value
        .filter(|v| is_clean_id(v))
        .ok_or(BridgeParseError::InvalidField(field))
}

/// Parses a (verified) bridge body
/// `{"message_id","sender_id","chat_id","thread_id"?,"text","is_group"?,"mentioned"?,
/// "reply_to"?,"attachments"?:[{"name","mime_type","size","url"|"data"}]}`;
/// `timestamp` is the verified header value. Ids must be 1–256 bytes without control
/// characters; text at most 64 KiB. Unknown fields are tolerated.
pub fn parse_bridge_message(
    raw_body: &[u8],
    timestamp: i64,
) -> Result<InboundMessage, BridgeParseError> {
    let wire: WireBridgeMessage =
        serde_json::from_slice(raw_body).map_err(|e| BridgeParseError::Json(e.to_string()))?;
    let thread_id = match wire.thread_id {
        None => None,
        Some(t) if t.is_empty() => None,
        Some(t) => Some(required(Some(t), "thread_id")?),
    };
    let attachments = check_attachments(wire.attachments)?;
    // A message with attachments may come without text.
    let text = match wire.text {
        None if !attachments.is_empty() => String::new(),
        text => text
            .filter(|t| t.len() <= MAX_TEXT_BYTES)
            .ok_or(BridgeParseError::InvalidField("text"))?,
    };
    Ok(InboundMessage {
        message_id: required(wire.message_id, "message_id")?,
        sender_id: required(wire.sender_id, "sender_id")?,
        chat_id: required(wire.chat_id, "chat_id")?,
        thread_id,
        text: Some(text),
        kind: MessageKind::Text,
        timestamp,
        is_group: wire.is_group,
        mentioned: wire.mentioned,
        reply_to: wire.reply_to.filter(|r| is_clean_id(r)),
        content: None,
        attachments,
    })
}
