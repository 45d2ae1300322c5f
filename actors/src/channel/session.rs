//! Session keys (CONTRACT §5 "Session scope"): which stored conversation a message joins.
//!
//! Owns: the key format. Every key starts with the scope's name and holds a fixed number of
//! components for that scope; every component is percent-encoded so that it contains no `:`
//! and distinct inputs never give the same key (the Go original replaced separators by `_`,
//! so `a:b_c` and `a_b:c` collided). [`decode_session_key`] inverts the format, which is the
//! proof of that property and is exercised by a property test.
//! Must not: read or write sessions.

use serde::{Deserialize, Serialize};

/// How messages of a channel are grouped into agent sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionScope {
    /// One session per conversation (default).
    #[default]
    Room,
    /// One session per thread of a conversation (messages outside a thread share one).
    Thread,
    /// One session per sender, across conversations.
    User,
    /// One session per account of the channel.
    Account,
    /// One session for the whole channel.
    Channel,
}

impl SessionScope {
    /// The scope's name, also the first component of its keys.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionScope::Room => "room",
            SessionScope::Thread => "thread",
            SessionScope::User => "user",
            SessionScope::Account => "account",
            SessionScope::Channel => "channel",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "room" => SessionScope::Room,
            "thread" => SessionScope::Thread,
            "user" => SessionScope::User,
            "account" => SessionScope::Account,
            "channel" => SessionScope::Channel,
            _ => return None,
        })
    }
}

/// Marks an absent thread; can never be the encoding of a present one (`~` is always escaped).
const NO_THREAD: &str = "~";

/// Percent-encodes everything but ASCII letters, digits, `-`, `_` and `.`, so the result never
/// contains `:`, `/`, `|`, `%`-ambiguity or `~`. Used for every key component in this module.
pub(crate) fn encode_component(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.') {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push_str(&format!("{byte:02X}"));
        }
    }
    out
}

/// Inverts [`encode_component`]; `None` for anything it could not have produced.
pub(crate) fn decode_component(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            if hex.bytes().any(|h| h.is_ascii_lowercase()) {
                return None;
            }
            let value = u8::from_str_radix(hex, 16).ok()?;
            if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'_' | b'.') {
                return None;
            }
            out.push(value);
            i += 3;
        } else if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// The session key of a message.
///
/// `account` is the channel's account (WhatsApp: the phone number id; bridges: the bridge
/// name). Only the components the scope uses enter the key:
///
/// | scope | key |
/// |---|---|
/// | `room` | `room:{channel}:{account}:{chat}` |
/// | `thread` | `thread:{channel}:{account}:{chat}:{thread or ~}` |
/// | `user` | `user:{channel}:{account}:{sender}` |
/// | `account` | `account:{channel}:{account}` |
/// | `channel` | `channel:{channel}` |
///
/// with every component percent-encoded.
pub fn session_key(
    scope: SessionScope,
    channel: &str,
    account: &str,
    chat_id: &str,
    thread_id: Option<&str>,
    sender_id: &str,
) -> String {
    let mut parts = vec![scope.as_str().to_string(), encode_component(channel)];
    match scope {
        SessionScope::Room => {
            parts.push(encode_component(account));
            parts.push(encode_component(chat_id));
        }
        SessionScope::Thread => {
            parts.push(encode_component(account));
            parts.push(encode_component(chat_id));
            parts.push(thread_id.map_or_else(|| NO_THREAD.to_string(), encode_component));
        }
        SessionScope::User => {
            parts.push(encode_component(account));
            parts.push(encode_component(sender_id));
        }
        SessionScope::Account => parts.push(encode_component(account)),
        SessionScope::Channel => {}
    }
    parts.join(":")
}

/// The parts of a session key, as [`decode_session_key`] recovers them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionKeyParts {
    /// The scope.
    pub scope: SessionScope,
    /// The channel name.
    pub channel: String,
    /// The account, for every scope but `channel`.
    pub account: Option<String>,
    /// The chat, for `room` and `thread`.
    pub chat_id: Option<String>,
    /// The thread, for `thread` (inner `None`: no thread).
    pub thread_id: Option<Option<String>>,
    /// The sender, for `user`.
    pub sender_id: Option<String>,
}

/// Recovers the components of a key made by [`session_key`]; `None` for anything else.
pub fn decode_session_key(key: &str) -> Option<SessionKeyParts> {
    let fields: Vec<&str> = key.split(':').collect();
    let (&scope_name, rest) = fields.split_first()?;
    let scope = SessionScope::from_name(scope_name)?;
    let expected = match scope {
        SessionScope::Room | SessionScope::User => 3,
        SessionScope::Thread => 4,
        SessionScope::Account => 2,
        SessionScope::Channel => 1,
    };
    if rest.len() != expected {
        return None;
    }
    let mut parts = SessionKeyParts {
        scope,
        channel: decode_component(rest[0])?,
        account: None,
        chat_id: None,
        thread_id: None,
        sender_id: None,
    };
    if scope != SessionScope::Channel {
        parts.account = Some(decode_component(rest[1])?);
    }
    match scope {
        SessionScope::Room => parts.chat_id = Some(decode_component(rest[2])?),
        SessionScope::Thread => {
            parts.chat_id = Some(decode_component(rest[2])?);
            parts.thread_id = Some(if rest[3] == NO_THREAD {
                None
            } else {
                Some(decode_component(rest[3])?)
            });
        }
        SessionScope::User => parts.sender_id = Some(decode_component(rest[2])?),
        SessionScope::Account | SessionScope::Channel => {}
    }
    Some(parts)
}
