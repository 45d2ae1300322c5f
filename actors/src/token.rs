//! Scoped gateway tokens (CONTRACT §3.1, §3.4): issuing, listing, revoking and rotating bearer
//! tokens, and verifying a presented token on every request.
//!
//! Owns: the token format, the keyed hash that is stored instead of a token, the layout of the
//! `Tokens` tree, the in-memory [`TokenRegistry`] that the HTTP middleware asks on every request,
//! and the config admin token (`KAFCLAW_GATEWAY_AUTH_TOKEN`, named [`STATIC_ADMIN_NAME`]).
//!
//! Must not: store, log or echo a token (only its keyed BLAKE3 hash leaves a [`TokenSecret`]);
//! touch the store on the verification path; choose HTTP statuses or write audit records (the
//! caller does both from the values returned here: [`TokenCheck`] for `auth.*` and
//! `token.first_used`, [`IssuedToken`]/[`AdminRotation`]/[`TokenRecord`] for `token.created`,
//! `token.rotated` and `token.revoked`).
//!
//! Layout of the `Tokens` tree:
//!
//! | key | value |
//! |---|---|
//! | `name:<name>` | a [`TokenRecord`] as JSON |
//! | `hash:<hex>` | the name that hash belongs to; written in the same batch as the record |
//! | `retired:<hex>` | when the config admin token with that hash stops working (after a rotation) |
//! | `meta:rotated_admin` | the name of the admin token issued by the latest rotation |
//! | `meta:generation` | 8 bytes, big-endian: a fresh store id written by every change |
//!
//! How a running gateway learns of a change made elsewhere: every write also stores a fresh,
//! never-reused id under `meta:generation`. The owner of the registry polls
//! [`TokenRegistry::reload_if_changed`] every [`RELOAD_POLL_INTERVAL`] (one point read, compared
//! with `!=`, so two writers can never hide each other's change); on a change it re-reads the
//! tree and swaps the in-memory table. A revocation therefore takes effect within one poll
//! interval. Changes made through this registry take effect before the call returns.
//!
//! Architecture Invariant: [`TokenRegistry::verify`] does one keyed hash, one read-lock, one map
//! lookup and a constant-time comparison; it never reads or writes the store. Last-use times are
//! kept in memory and written by [`TokenRegistry::persist_last_used`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::store::StoreError;

mod registry;
pub use registry::TokenRegistry;

#[cfg(test)]
mod tests;

/// The prefix of every issued token, so a leaked token is recognisable (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "kc_";
/// Random bytes in an issued token.
pub const TOKEN_RANDOM_BYTES: usize = 32;
/// Characters of 32 random bytes in unpadded base64: the shortest acceptable bearer string
/// (CONTRACT §3: a shorter configured token is refused on non-loopback binds).
pub const MIN_TOKEN_CHARS: usize = 43;
/// The name under which the config admin token (`KAFCLAW_GATEWAY_AUTH_TOKEN`) is reported.
pub const STATIC_ADMIN_NAME: &str = "env:KAFCLAW_GATEWAY_AUTH_TOKEN";
/// How often the owner of a registry should call [`TokenRegistry::reload_if_changed`].
pub const RELOAD_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);
/// The longest accepted token lifetime or rotation grace period (ten years).
pub const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(3650 * 86_400);

/// What a token may do (CONTRACT §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Everything, including `/api/v1/admin/*`.
    Admin,
    /// GET endpoints of the API and `/metrics`.
    Read,
    /// Only `POST /chat`.
    Chat,
}

impl Scope {
    /// Every scope, widest first.
    pub const ALL: [Scope; 3] = [Scope::Admin, Scope::Read, Scope::Chat];

    /// True when a token with this scope may use a route that requires `required`:
    /// admin permits everything, read permits read, chat permits chat.
    pub fn permits(self, required: Scope) -> bool {
        matches!(
            (self, required),
            (Scope::Admin, _) | (Scope::Read, Scope::Read) | (Scope::Chat, Scope::Chat)
        )
    }

    /// The lowercase name (`admin`, `read`, `chat`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Read => "read",
            Scope::Chat => "chat",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| TokenError::UnknownScope {
                given: redact_if_token(s),
            })
    }
}

/// What can go wrong with tokens. Messages never contain a token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A scope other than `admin`, `read` or `chat`.
    #[error("unknown scope {given:?}: expected admin, read or chat")]
    UnknownScope {
        /// What was given (redacted when it looks like a token).
        given: String,
    },
    /// A name outside `[A-Za-z0-9_.-]{1,64}`, or one that looks like a token.
    #[error(
        "invalid token name {name:?}: use 1 to 64 of A-Z a-z 0-9 _ . - (not starting with kc_)"
    )]
    InvalidName {
        /// The rejected name (redacted when it looks like a token).
        name: String,
    },
    /// The name is already taken (revoked tokens keep their names).
    #[error("a token named {name:?} already exists")]
    NameTaken {
        /// The taken name.
        name: String,
    },
    /// No token has this name.
    #[error("no token named {name:?}")]
    NotFound {
        /// The unknown name (redacted when it looks like a token).
        name: String,
    },
    /// A lifetime or grace period that cannot be used.
    #[error("invalid duration {given:?}: {reason}")]
    InvalidDuration {
        /// What was given.
        given: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The operating system's random source failed; no token was issued.
    #[error("the system random source failed")]
    Random,
    /// A stored value of the `Tokens` tree could not be encoded or decoded.
    #[error("token entry {key:?} is corrupt: {reason}")]
    Corrupt {
        /// The store key.
        key: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The key of the token hash (32 bytes, held sealed by the vault and handed in by the caller).
/// Zeroized on drop; its `Debug` never shows it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct TokenHashKey([u8; 32]);

impl TokenHashKey {
    /// Wraps key bytes (the caller should zeroize its own copy).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh random key, for the vault to seal on first start.
    pub fn generate() -> Result<Self, TokenError> {
        let mut key = Self([0; 32]);
        getrandom::fill(&mut key.0).map_err(|_| TokenError::Random)?;
        Ok(key)
    }

    /// The key bytes, for the vault to seal. Never log them.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The keyed BLAKE3 hash of a presented or issued token.
    fn digest(&self, token: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.0, token).as_bytes()
    }
}

impl fmt::Debug for TokenHashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHashKey(..)")
    }
}

/// A bearer token in clear: exists only between issuing it and showing it once.
/// Zeroized on drop; its `Debug` never shows it; not `Clone`, not `Serialize`.
pub struct TokenSecret(Zeroizing<String>);

impl TokenSecret {
    /// The token, to print once or to return once in `result.token`.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(..)")
    }
}

/// A newly issued token: the secret (shown once) and its stored record.
#[derive(Debug)]
pub struct IssuedToken {
    /// The bearer token; never stored.
    pub token: TokenSecret,
    /// What was stored about it.
    pub record: TokenRecord,
}

/// The result of [`TokenRegistry::rotate_admin`].
#[derive(Debug)]
pub struct AdminRotation {
    /// The new admin token.
    pub issued: IssuedToken,
    /// Names of the tokens it supersedes: the previous rotated admin token and/or
    /// [`STATIC_ADMIN_NAME`]. They are refused as [`TokenCheck::Revoked`] from `old_valid_until`.
    pub superseded: Vec<String>,
    /// When the superseded tokens stop working (`now + grace`).
    pub old_valid_until: OffsetDateTime,
}

/// What is stored about a token (JSON under `name:<name>`); never the token itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Unique name, `[A-Za-z0-9_.-]{1,64}`; used as the audit actor.
    pub name: String,
    /// What the token may do.
    pub scope: Scope,
    /// When it was issued.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it stops working, if it has a lifetime.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// When it was last accepted (kept to a second, persisted lazily).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// When it was (or, after a rotation with grace, will be) revoked.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// The keyed BLAKE3 hash of the token, hex.
    pub hash: String,
}

/// A record's state at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenStatus {
    /// Accepted.
    Active,
    /// Past its lifetime.
    Expired,
    /// Revoked (takes precedence over expired).
    Revoked,
}

impl TokenRecord {
    /// The record's state at `now`.
    pub fn status_at(&self, now: OffsetDateTime) -> TokenStatus {
        if self.revoked_at.is_some_and(|at| at <= now) {
            TokenStatus::Revoked
        } else if self.expires_at.is_some_and(|at| at <= now) {
            TokenStatus::Expired
        } else {
            TokenStatus::Active
        }
    }
}

/// The verdict on a presented token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenCheck {
    /// Accepted with `scope`; check the route with [`Scope::permits`].
    Valid {
        /// The token's name (audit actor).
        name: Arc<str>,
        /// What it may do.
        scope: Scope,
        /// True exactly once per token: the caller audits `token.first_used`.
        first_use: bool,
    },
    /// No such token (401).
    Unknown,
    /// A known token past its lifetime (401).
    Expired {
        /// The token's name.
        name: Arc<str>,
    },
    /// A revoked token, or one superseded by a rotation after its grace period (401).
    Revoked {
        /// The token's name.
        name: Arc<str>,
    },
}

impl TokenCheck {
    /// The scope when valid.
    pub fn scope(&self) -> Option<Scope> {
        match self {
            TokenCheck::Valid { scope, .. } => Some(*scope),
            _ => None,
        }
    }

    /// The token's name when it is known (valid, expired or revoked).
    pub fn name(&self) -> Option<&str> {
        match self {
            TokenCheck::Valid { name, .. }
            | TokenCheck::Expired { name }
            | TokenCheck::Revoked { name } => Some(name),
            TokenCheck::Unknown => None,
        }
    }
}

/// Parses a token lifetime: a positive whole number and one unit, `s`, `m`, `h`, `d` or `w`
/// (`30d`, `12h`, `90m`, `3600s`), at most [`MAX_TTL`].
///
/// Hand-written rather than `humantime`: the grammar is five units, and humantime's extra forms
/// (months and years of fractional days, compound `1h 30m`) are ambiguity an expiry does not need.
pub fn parse_ttl(input: &str) -> Result<std::time::Duration, TokenError> {
    let invalid = |reason| TokenError::InvalidDuration {
        given: redact_if_token(input),
        reason,
    };
    let unit_at = input
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| invalid("missing unit: use s, m, h, d or w, e.g. 30d"))?;
    let (digits, unit) = input.split_at(unit_at);
    if digits.is_empty() {
        return Err(invalid("expected a number followed by s, m, h, d or w"));
    }
    let seconds_per_unit: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(invalid("unknown unit: use s, m, h, d or w")),
    };
    let count: u64 = digits.parse().map_err(|_| invalid("number too large"))?;
    if count == 0 {
        return Err(invalid("must be positive"));
    }
    let seconds = count
        .checked_mul(seconds_per_unit)
        .ok_or_else(|| invalid("too long"))?;
    let ttl = std::time::Duration::from_secs(seconds);
    if ttl > MAX_TTL {
        return Err(invalid("longer than ten years"));
    }
    Ok(ttl)
}

/// Checks a token name: `[A-Za-z0-9_.-]{1,64}`, not starting with [`TOKEN_PREFIX`] (a name must
/// never look like a token, so a token pasted as a name is never stored or echoed).
pub fn validate_name(name: &str) -> Result<(), TokenError> {
    let charset_ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if (1..=64).contains(&name.len()) && charset_ok && !name.starts_with(TOKEN_PREFIX) {
        Ok(())
    } else {
        Err(TokenError::InvalidName {
            name: redact_if_token(name),
        })
    }
}

/// Operator input as it may appear in an error: redacted when it could be a token.
fn redact_if_token(input: &str) -> String {
    if input.starts_with(TOKEN_PREFIX) || input.len() >= MIN_TOKEN_CHARS {
        "(redacted)".to_owned()
    } else {
        input.to_owned()
    }
}
