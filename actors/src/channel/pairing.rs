//! Pairing (CONTRACT §5): one-time codes that let an owner admit an unknown sender.
//!
//! Owns: code generation (8 characters from `ABCDEFGHJKLMNPQRSTUVWXYZ23456789`, 40 bits from
//! the OS RNG), pending requests under `pairing/<channel>/<sender>` in the `channels` tree,
//! expiry, and the per-channel limit.
//! Must not: log a code, or compare one in variable time.
//!
//! Decisions: the same sender asking again gets its existing (unexpired) code. When a channel
//! already has `max_pending` unexpired requests, a *new* sender is refused
//! ([`PairingRequest::Full`]) rather than evicting the oldest: evicting would let anyone who can
//! send messages churn away the code a legitimate person is reading out to the owner.
//! Expired requests are purged whenever the channel's list is touched.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::session::encode_component;
use crate::store::{KvTree, StoreError};

/// The code alphabet: no `0 O 1 I`, 32 symbols (so a random byte maps without bias).
pub const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
/// Characters in a code.
pub const CODE_LEN: usize = 8;

/// Pairing settings of a channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PairingSettings {
    /// Most unexpired pending requests per channel (default 3).
    pub max_pending: usize,
    /// How long a code is valid, in seconds (default 3600).
    pub ttl_seconds: i64,
}

impl Default for PairingSettings {
    fn default() -> Self {
        Self {
            max_pending: 3,
            ttl_seconds: 3600,
        }
    }
}

/// A pairing code. Its `Debug` is opaque so it never reaches a log by accident.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PairingCode(String);

impl std::fmt::Debug for PairingCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairingCode(…)")
    }
}

impl PairingCode {
    /// The code, to show to the sender or the owner (never to a log).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A fresh random code.
    pub fn generate() -> Result<Self, PairingError> {
        let mut random = [0u8; CODE_LEN];
        getrandom::fill(&mut random).map_err(|_| PairingError::NoRandomness)?;
        Ok(Self(
            random
                .iter()
                .map(|b| ALPHABET[usize::from(b & 31)] as char)
                .collect(),
        ))
    }

    /// Constant-time comparison with what an operator typed (case and surrounding space
    /// ignored).
    pub fn matches(&self, typed: &str) -> bool {
        let typed = typed.trim().to_ascii_uppercase();
        bool::from(self.0.as_bytes().ct_eq(typed.as_bytes()))
    }
}

/// A pending pairing request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingPairing {
    /// The channel it was requested on.
    pub channel: String,
    /// The normalised sender who asked.
    pub sender_id: String,
    /// The chat to answer in (for the approval notice).
    pub chat_id: String,
    /// The code (opaque `Debug`).
    pub code: PairingCode,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; the code is refused from then on.
    pub expires_at: i64,
}

/// The outcome of [`Pairing::request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PairingRequest {
    /// A new code was issued.
    Issued(PendingPairing),
    /// The sender already had an unexpired code; here it is again.
    Existing(PendingPairing),
    /// The channel's pending list is full; the sender gets nothing.
    Full,
}

/// What can go wrong with pairing.
#[derive(Debug, thiserror::Error)]
pub enum PairingError {
    /// No pending request on that channel has this code.
    #[error("no pending pairing with that code")]
    UnknownCode,
    /// The code existed but expired (it is removed now).
    #[error("pairing code expired")]
    Expired,
    /// The OS random number generator failed.
    #[error("no randomness available for a pairing code")]
    NoRandomness,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Pending pairing requests of every channel, in the `channels` tree.
#[derive(Clone)]
pub struct Pairing {
    /// The `channels` tree.
    tree: KvTree,
    /// Limits and TTL.
    settings: PairingSettings,
}

impl Pairing {
    /// Pairing over the `channels` tree.
    pub fn new(tree: KvTree, settings: PairingSettings) -> Self {
        Self { tree, settings }
    }

    fn prefix(channel: &str) -> String {
        format!("pairing/{}/", encode_component(channel))
    }

    fn key(channel: &str, sender: &str) -> String {
        format!("{}{}", Self::prefix(channel), encode_component(sender))
    }

    /// Unexpired requests of `channel`; expired ones are removed on the way.
    fn live(&self, channel: &str, now: i64) -> Result<Vec<PendingPairing>, PairingError> {
        let mut live = Vec::new();
        for (key, value) in self.tree.scan_prefix(Self::prefix(channel))? {
            let entry: Option<PendingPairing> = serde_json::from_slice(&value).ok();
            match entry {
                Some(entry) if entry.expires_at > now => live.push(entry),
                _ => {
                    self.tree.remove(&key)?;
                }
            }
        }
        Ok(live)
    }

    /// A sender on `channel` needs pairing: returns its existing code, a new one, or `Full`.
    /// The caller flushes before sending the code.
    pub fn request(
        &self,
        channel: &str,
        sender_id: &str,
        chat_id: &str,
        now: i64,
    ) -> Result<PairingRequest, PairingError> {
        let live = self.live(channel, now)?;
        if let Some(existing) = live.iter().find(|p| p.sender_id == sender_id) {
            return Ok(PairingRequest::Existing(existing.clone()));
        }
        if live.len() >= self.settings.max_pending {
            return Ok(PairingRequest::Full);
        }
        let entry = PendingPairing {
            channel: channel.to_string(),
            sender_id: sender_id.to_string(),
            chat_id: chat_id.to_string(),
            code: PairingCode::generate()?,
            created_at: now,
            expires_at: now.saturating_add(self.settings.ttl_seconds),
        };
        self.tree.put_json(Self::key(channel, sender_id), &entry)?;
        Ok(PairingRequest::Issued(entry))
    }

    /// Finds and removes the request with `code` on `channel` (every entry is compared, in
    /// constant time each).
    fn take(&self, channel: &str, code: &str, now: i64) -> Result<PendingPairing, PairingError> {
        let mut found = None;
        for (key, value) in self.tree.scan_prefix(Self::prefix(channel))? {
            if let Ok(entry) = serde_json::from_slice::<PendingPairing>(&value) {
                if entry.code.matches(code) && found.is_none() {
                    found = Some((key, entry));
                }
            }
        }
        let (key, entry) = found.ok_or(PairingError::UnknownCode)?;
        self.tree.remove(&key)?;
        if entry.expires_at <= now {
            return Err(PairingError::Expired);
        }
        Ok(entry)
    }

    /// Approves the request with `code`: returns it (its sender is to be allow-listed) and
    /// removes it. The caller persists the allowance and flushes.
    pub fn approve(
        &self,
        channel: &str,
        code: &str,
        now: i64,
    ) -> Result<PendingPairing, PairingError> {
        self.take(channel, code, now)
    }

    /// Denies the request with `code`: removes it and returns it.
    pub fn deny(
        &self,
        channel: &str,
        code: &str,
        now: i64,
    ) -> Result<PendingPairing, PairingError> {
        self.take(channel, code, now)
    }

    /// Withdraws the request of `sender_id` on `channel`, if any (used when the code could not
    /// be audited and sent, so the sender's next message gets a fresh one).
    pub fn withdraw(&self, channel: &str, sender_id: &str) -> Result<(), PairingError> {
        self.tree.remove(Self::key(channel, sender_id))?;
        Ok(())
    }

    /// Unexpired requests of `channel` (every channel when `None`), oldest first.
    pub fn pending(
        &self,
        channel: Option<&str>,
        now: i64,
    ) -> Result<Vec<PendingPairing>, PairingError> {
        let mut all = match channel {
            Some(channel) => self.live(channel, now)?,
            None => {
                let mut channels = std::collections::BTreeSet::new();
                for (_, value) in self.tree.scan_prefix("pairing/")? {
                    if let Ok(entry) = serde_json::from_slice::<PendingPairing>(&value) {
                        channels.insert(entry.channel);
                    }
                }
                let mut all = Vec::new();
                for channel in channels {
                    all.extend(self.live(&channel, now)?);
                }
                all
            }
        };
        all.sort_by(|a, b| (a.created_at, &a.channel).cmp(&(b.created_at, &b.channel)));
        Ok(all)
    }
}
