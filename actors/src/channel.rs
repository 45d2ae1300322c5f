//! Channels (CONTRACT §5): the WhatsApp Cloud API and signed bridges, their access policy,
//! pairing, session keys, and the durable inbox and outbox behind each `ChannelBridge`.
//!
//! Owns: the domain logic of a channel — verifying and parsing what arrives, deciding who may
//! talk to the agent, keeping every accepted message durable until it is processed, and
//! scheduling replies with retries.
//! Must not: serve HTTP (the binary crate verifies requests with the functions here; only
//! [`dispatch`] is an HTTP *client*, for replies), hold a secret longer than a call (the
//! dispatcher keeps its token or bridge secret as a `SecretValue`), or log message text,
//! pairing codes or signatures.
//!
//! Code map:
//! - [`whatsapp`]: webhook handshake, `X-Hub-Signature-256`, payload parsing, outbound bodies.
//! - [`bridge`]: the signed bridge protocol (`v1=` HMAC over `"{timestamp}.{body}"`) with a
//!   replay window.
//! - [`access`]: the per-channel access policy and sender-id normalisation.
//! - [`content`]: the closed type of what a message carries ([`content::Content`]) and the
//!   text rendering the agent sees.
//! - [`media`]: fetching WhatsApp media through the Graph API, and saving bridge attachments,
//!   under `workspace/media/<channel>/` with size, MIME and checksum checks.
//! - [`session`]: collision-free session keys per scope.
//! - [`pairing`]: one-time pairing codes for unknown senders.
//! - [`inbox`] / [`outbox`]: durable queues in the store's `channels` tree.
//! - [`actor`]: the `ChannelBridge` actor that ties them together.
//! - [`dispatch`]: the `Dispatcher` actor that delivers queued replies over HTTP.

use serde::{Deserialize, Serialize};

pub mod access;
pub mod actor;
pub mod backlog;
pub mod bridge;
pub mod content;
pub mod dispatch;
pub mod inbox;
pub mod media;
pub mod outbox;
pub mod pairing;
pub mod session;
pub mod whatsapp;

#[cfg(test)]
mod tests;

pub use access::{evaluate, policy_warnings, Access, ChannelPolicy, DropReason, RuntimeLists};
pub use actor::*;
pub use session::{session_key, SessionScope};

/// Longest accepted id (message, sender, chat, thread), in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest accepted inbound text, in bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// What kind of transport a channel uses; decides how sender ids are normalised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// WhatsApp Cloud API: sender ids are phone numbers, compared as digits only.
    Whatsapp,
    /// A signed bridge (Slack, Teams, Signal, …): sender ids are compared exactly.
    Bridge,
}

impl ChannelKind {
    /// The kind's name as shown in `GET /api/v1/channels`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Whatsapp => "whatsapp",
            ChannelKind::Bridge => "bridge",
        }
    }
}

/// The coarse class of an inbound message, as stored since the first version. The full content
/// is [`InboundMessage::content`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// Plain text.
    Text,
    /// An image, audio, video, document or sticker (recorded, not handed on as text).
    Media,
    /// A reaction to an earlier message (recorded, not handed on).
    Reaction,
    /// Any other type, by its wire name (recorded, not handed on).
    Other(String),
}

/// One inbound message, whatever channel it came from, after verification and parsing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// The channel's own message id (`wamid…` on WhatsApp); with the channel name it is the
    /// idempotency key.
    pub message_id: String,
    /// Who sent it, normalised for the channel (WhatsApp: digits only).
    pub sender_id: String,
    /// The conversation it belongs to (WhatsApp direct chats: the sender's number).
    pub chat_id: String,
    /// A thread inside the conversation, when the channel has threads.
    pub thread_id: Option<String>,
    /// The text the agent sees: the body of a text message, the rendering of any other
    /// content ([`content::Content::render`]); `None` when there is nothing to hand on.
    pub text: Option<String>,
    /// What kind of message it is.
    pub kind: MessageKind,
    /// When the channel says it was sent (unix seconds).
    pub timestamp: i64,
    /// Whether it was posted in a group conversation.
    pub is_group: bool,
    /// Whether the bot was mentioned (group messages may require it).
    pub mentioned: bool,
    /// The message this one replies to, if any.
    pub reply_to: Option<String>,
    /// What the message carries (`None` in records stored before typed content: plain text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<content::Content>,
    /// Attachments a bridge sent along (WhatsApp media are in `content`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<content::Attachment>,
}

/// Whether an admitted sender is one of the channel's owners or anyone else (CONTRACT §4).
pub use crate::policy::SenderKind;

/// True when `s` has no control characters (ids are shown in logs and the dashboard).
pub(crate) fn is_clean_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_BYTES && !s.chars().any(char::is_control)
}
