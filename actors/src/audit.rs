//! The audit log (CONTRACT §7): hash-chained, keyed-BLAKE3 records under `~/.kafclaw/audit/`.
//!
//! Owns: the record format, the chain, segment files, group-committed fsyncs, verification and
//! the repair of a torn tail.
//! Must not: hold a secret value in a record (names only), answer an append before the record
//! is durable, or silently drop or truncate anything (a torn tail is repaired only on the
//! operator's explicit `kafclaw audit repair`, which is itself audited; a tail that lost whole
//! records is noticed against the head recorded apart from the segments, [`RecordedHead`],
//! and accepted only with `kafclaw audit repair --accept-missing`).
//!
//! # Files
//!
//! Segments live in the audit directory (mode 0700) as `audit-000001.jsonl`,
//! `audit-000002.jsonl`, … (the index is decimal, zero-padded to at least six digits, gapless
//! from 1), each created with mode 0600 and only ever appended to. A new segment is started
//! before a write once the current one holds at least [`AuditSettings::segment_max_bytes`];
//! a batch is never split, so a segment may exceed the limit by one batch.
//!
//! The head of the chain (`seq`, `hash`) is also recorded where the segments are not: in the
//! store with every group commit and in `~/.kafclaw/audit.head` at a clean stop (see
//! [`RecordedHead`]). Opening, verifying and repairing compare the segments with it.
//!
//! # Record format
//!
//! One JSON object per line (`\n`-terminated, UTF-8), fields in exactly this order:
//!
//! ```text
//! {"seq":7,"ts":"2026-11-25T14:20:51.123456789Z","kind":"auth.failed","actor":"10.0.0.9",
//!  "subject":"/api/v1/status","data":{"reason":"bad_token"},"prev":"<64 hex>","hash":"<64 hex>"}
//! ```
//!
//! (shown wrapped; a stored record is a single line.)
//!
//! - `seq`: starts at 1 and is gapless across segments and restarts.
//! - `ts`: RFC 3339 UTC of the append.
//! - `kind`: an [`AuditKind`] string; `actor`, `subject`: strings; `data`: any JSON value.
//! - `prev`: the `hash` of the record with `seq - 1`. **Genesis:** the record with `seq` 1 has
//!   `prev` = 64 ASCII zeros (`"000…0"`).
//! - `hash`: lowercase hex of `blake3::keyed_hash(audit_key, canonical_bytes)`.
//!
//! # Canonical bytes
//!
//! The canonical bytes of a record are the compact JSON (no whitespace anywhere) of the object
//! `{"seq","ts","kind","actor","subject","data","prev"}` in that field order, i.e. the record
//! *without* `hash`, where:
//!
//! - `seq` is a decimal integer without sign, leading zeros or exponent;
//! - strings escape only `"` → `\"`, `\` → `\\` and control characters (U+0000–U+001F) as
//!   `\b \f \n \r \t` or `\u00XX` (lowercase hex); `/` and non-ASCII are written as raw UTF-8;
//! - `data` is canonicalised recursively: object keys sorted by their UTF-8 bytes, no
//!   duplicate keys, arrays in order, numbers as `serde_json` prints them (integers in
//!   decimal; floats in their shortest round-trip form).
//!
//! This is exactly what `serde_json::to_vec` prints for a struct with those seven fields in that
//! order when `data` has sorted keys. The stored line is the canonical bytes with the final `}`
//! replaced by `,"hash":"<64 hex>"}` followed by `\n`. Because of that choice an external
//! verifier does not need to re-serialise anything: **strip the last 75 bytes of the line
//! (`,"hash":"` + 64 hex + `"}`), append `}`, and keyed-BLAKE3 the result**; the recomputed
//! hash must equal the stored one, and `prev` sits at a fixed place (the 64 hex digits right
//! before `","hash":"`). [`verify`] does precisely that, streaming, without a JSON parser; a line
//! only verifies when its bytes are the ones the key holder wrote, so no canonicalisation of
//! untrusted input is ever needed.
//!
//! # Durability and failure
//!
//! [`AuditLog`] (synchronous, for command-line tools) fsyncs (`fdatasync`) every append.
//! [`AuditChainer`] (the actor) assigns `seq` and `hash` in mailbox order, collects concurrent
//! appends into one batch written by a blocking task with a single `fdatasync`, and answers each
//! sender only after its batch is durable. If a write or fsync fails it answers every waiter
//! with [`AuditError::Write`] and stops itself, so the supervisor restarts it from disk
//! (fail closed). A segment whose last line is incomplete (a crash mid-write) makes opening
//! fail with [`AuditError::TornTail`] until the operator runs `kafclaw audit repair` ([`repair`]).

use std::path::PathBuf;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

mod chainer;
mod head;
mod log;
mod record;
mod repair;
mod segment;
mod verify;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;
#[cfg(test)]
mod tests;

pub use chainer::{AuditChainer, GetHead};
pub use head::RecordedHead;
pub use log::AuditLog;
pub use record::GENESIS_PREV;
pub use repair::{repair, Missing, RepairOptions, RepairReport};
pub use verify::{verify, verify_against, verify_anchored, VerifyError, VerifyReport};

/// The 32-byte key of the keyed-BLAKE3 chain. Generated once and held sealed by the vault
/// (rotating the vault key never changes it); the caller hands the plaintext bytes in.
///
/// Wiped from memory when dropped; its `Debug` never shows the bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AuditKey([u8; 32]);

impl AuditKey {
    /// Wraps key bytes. The caller should wipe its own copy.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key bytes, for `blake3::keyed_hash` only.
    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

/// The `audit.*` settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// A new segment is started once the current one holds at least this many bytes
    /// (default 64 MiB). Small values are only useful in tests.
    pub segment_max_bytes: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            segment_max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The head of the chain: the last durable record.
#[derive(MessageResponse, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// Its sequence number; 0 when the log is empty.
    pub seq: u64,
    /// Its hash (hex); [`GENESIS_PREV`] (64 zeros) when the log is empty.
    pub hash: String,
}

/// The stable record kinds (for SIEMs). Add kinds as needed; never rename one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuditKind {
    /// The gateway started (settings summary, never secrets).
    #[serde(rename = "gateway.started")]
    GatewayStarted,
    /// The gateway stopped (signal or fatal error).
    #[serde(rename = "gateway.stopped")]
    GatewayStopped,
    /// A request presented a missing, unknown or revoked token.
    #[serde(rename = "auth.failed")]
    AuthFailed,
    /// An IP was locked out after repeated auth failures.
    #[serde(rename = "auth.locked_out")]
    AuthLockedOut,
    /// A valid token lacked the scope for a route.
    #[serde(rename = "auth.scope_denied")]
    AuthScopeDenied,
    /// A gateway token was created (its name, never the token).
    #[serde(rename = "token.created")]
    TokenCreated,
    /// A gateway token was revoked.
    #[serde(rename = "token.revoked")]
    TokenRevoked,
    /// A gateway token was rotated.
    #[serde(rename = "token.rotated")]
    TokenRotated,
    /// A gateway token was used for the first time.
    #[serde(rename = "token.first_used")]
    TokenFirstUsed,
    /// A vault secret was set, rotated or removed (its name only).
    #[serde(rename = "secret.changed")]
    SecretChanged,
    /// A configuration problem was found (unknown key, weak setting).
    #[serde(rename = "config.warning")]
    ConfigWarning,
    /// A message from a sender the access policy denies was dropped.
    #[serde(rename = "channel.dropped")]
    ChannelDropped,
    /// A channel changed state (running, observe, quarantined, disabled).
    #[serde(rename = "channel.state_changed")]
    ChannelStateChanged,
    /// A channel's backlog reached `store.max_pending` (deliveries refused) or drained again.
    #[serde(rename = "channel.backlog")]
    ChannelBacklog,
    /// An unknown sender was sent a pairing code.
    #[serde(rename = "pairing.requested")]
    PairingRequested,
    /// An operator approved or denied a pairing.
    #[serde(rename = "pairing.decided")]
    PairingDecided,
    /// The policy allowed or denied a tool call.
    #[serde(rename = "tool.decided")]
    ToolDecided,
    /// A tool ran (exit status, duration; never its output).
    #[serde(rename = "tool.executed")]
    ToolExecuted,
    /// An operator approved or denied a pending tool call.
    #[serde(rename = "approval.decided")]
    ApprovalDecided,
    /// An admin control message was applied.
    #[serde(rename = "control.applied")]
    ControlApplied,
    /// An incident trigger fired.
    #[serde(rename = "incident.opened")]
    IncidentOpened,
    /// An incident changed (acknowledged, resolved, acted upon).
    #[serde(rename = "incident.updated")]
    IncidentUpdated,
    /// A backup archive was written.
    #[serde(rename = "backup.created")]
    BackupCreated,
    /// A backup was restored into this home (with the flags that let it through).
    #[serde(rename = "backup.restored")]
    BackupRestored,
    /// A torn tail of the audit log was repaired (`kafclaw audit repair`).
    #[serde(rename = "audit.repaired")]
    AuditRepaired,
    /// A supervised child failed and was restarted or given up on.
    #[serde(rename = "supervisor.child_failed")]
    SupervisorChildFailed,
    /// An operator repair was applied (`doctor --fix`, `security fix --yes`): what changed,
    /// never a value.
    #[serde(rename = "config.fixed")]
    ConfigFixed,
    /// A tool call had started when the gateway stopped and its result was never recorded: it
    /// is not run again, the model is told so.
    #[serde(rename = "tool.interrupted")]
    ToolInterrupted,
    /// Tool calls of one model answer were not run: over `model.max_tool_calls_per_round`, or
    /// after `model.max_turn_seconds` of tool time (one record per answer, with the count).
    #[serde(rename = "tool.refused")]
    ToolRefused,
    /// A reply was given up on (terminal answer, too many attempts, or a failure receipt).
    #[serde(rename = "reply.failed")]
    ReplyFailed,
    /// Configuration was re-read at run time (SIGHUP: the TLS certificate and key), or a
    /// reload failed and the previous configuration stayed in force.
    #[serde(rename = "config.reloaded")]
    ConfigReloaded,
    /// A skill was installed (name, version, pinned files, accepted warnings).
    #[serde(rename = "skill.installed")]
    SkillInstalled,
    /// A skill install was refused (the verifier's findings).
    #[serde(rename = "skill.refused")]
    SkillRefused,
    /// An installed skill was removed.
    #[serde(rename = "skill.removed")]
    SkillRemoved,
    /// An installed skill no longer matches its pins.
    #[serde(rename = "skill.verify_failed")]
    SkillVerifyFailed,
    /// A skill was enabled.
    #[serde(rename = "skill.enabled")]
    SkillEnabled,
    /// A skill was disabled.
    #[serde(rename = "skill.disabled")]
    SkillDisabled,
    /// A skill's entry ran (exit status, duration; never its output).
    #[serde(rename = "skill.executed")]
    SkillExecuted,
    /// A skill credential was set (its name, never the value).
    #[serde(rename = "skill.credential_changed")]
    SkillCredentialChanged,
}

impl AuditKind {
    /// The record's `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::GatewayStarted => "gateway.started",
            AuditKind::GatewayStopped => "gateway.stopped",
            AuditKind::AuthFailed => "auth.failed",
            AuditKind::AuthLockedOut => "auth.locked_out",
            AuditKind::AuthScopeDenied => "auth.scope_denied",
            AuditKind::TokenCreated => "token.created",
            AuditKind::TokenRevoked => "token.revoked",
            AuditKind::TokenRotated => "token.rotated",
            AuditKind::TokenFirstUsed => "token.first_used",
            AuditKind::SecretChanged => "secret.changed",
            AuditKind::ConfigWarning => "config.warning",
            AuditKind::ChannelDropped => "channel.dropped",
            AuditKind::ChannelStateChanged => "channel.state_changed",
            AuditKind::ChannelBacklog => "channel.backlog",
            AuditKind::PairingRequested => "pairing.requested",
            AuditKind::PairingDecided => "pairing.decided",
            AuditKind::ToolDecided => "tool.decided",
            AuditKind::ToolExecuted => "tool.executed",
            AuditKind::ApprovalDecided => "approval.decided",
            AuditKind::ControlApplied => "control.applied",
            AuditKind::IncidentOpened => "incident.opened",
            AuditKind::IncidentUpdated => "incident.updated",
            AuditKind::BackupCreated => "backup.created",
            AuditKind::BackupRestored => "backup.restored",
            AuditKind::AuditRepaired => "audit.repaired",
            AuditKind::SupervisorChildFailed => "supervisor.child_failed",
            AuditKind::ConfigFixed => "config.fixed",
            AuditKind::ToolInterrupted => "tool.interrupted",
            AuditKind::ToolRefused => "tool.refused",
            AuditKind::ReplyFailed => "reply.failed",
            AuditKind::ConfigReloaded => "config.reloaded",
            AuditKind::SkillInstalled => "skill.installed",
            AuditKind::SkillRefused => "skill.refused",
            AuditKind::SkillRemoved => "skill.removed",
            AuditKind::SkillVerifyFailed => "skill.verify_failed",
            AuditKind::SkillEnabled => "skill.enabled",
            AuditKind::SkillDisabled => "skill.disabled",
            AuditKind::SkillExecuted => "skill.executed",
            AuditKind::SkillCredentialChanged => "skill.credential_changed",
        }
    }
}

/// Appends one record; answered only after the record (and its batch) is fsynced.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<AuditReceipt, AuditError>")]
pub struct AppendRecord {
    /// What happened.
    pub kind: AuditKind,
    /// Who did it: a token name, `cli`, `system`, a sender id, a client IP.
    pub actor: String,
    /// What it was done to: a route, a tool, a channel, a secret's name.
    pub subject: String,
    /// Structured detail. Never a secret value, never message text.
    pub data: serde_json::Value,
}

/// Appends one record of a refusal; answered once the record is written to the segment (in
/// chain order, readable), before its batch's fsync. Only for decisions whose action grants
/// nothing and changes nothing (a 401): the record cannot be lost while anything that follows
/// it is durable, because the same fsync makes the whole batch durable, and a failed write or
/// fsync stops the chainer (every later append fails closed).
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<AuditReceipt, AuditError>")]
pub struct AppendWritten(pub AppendRecord);

/// Where an appended record landed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReceipt {
    /// Gapless sequence number across segments and restarts.
    pub seq: u64,
    /// The record's hash (hex).
    pub hash: String,
}

/// Why the audit log could not do what was asked. Callers fail closed on any of these.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Writing or fsyncing a segment failed.
    #[error("audit log write failed: {0}")]
    Write(String),
    /// The chainer is not running (its mailbox is closed).
    #[error("audit log unavailable")]
    Unavailable,
    /// The audit directory or a segment could not be opened, listed or read.
    #[error("cannot open the audit log at {path}: {reason}")]
    Open {
        /// The directory or segment.
        path: PathBuf,
        /// The underlying error.
        reason: String,
    },
    /// The last segment ends in an incomplete record (a crash mid-write); nothing is appended
    /// until the operator repairs it.
    #[error(
        "audit segment {segment} ends in an incomplete record ({bytes} bytes after the last \
         complete one); run `kafclaw audit repair`"
    )]
    TornTail {
        /// The segment with the torn tail.
        segment: PathBuf,
        /// How many bytes follow the last complete line.
        bytes: u64,
    },
    /// The last complete record cannot be read as a record, so the head is unknown.
    #[error(
        "audit segment {segment} ends in a corrupt record: {reason}; run `kafclaw audit verify`"
    )]
    CorruptTail {
        /// The segment holding the record.
        segment: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The head record does not verify with the given key (wrong key, or a forged record).
    #[error("audit record {seq} does not verify with this audit key")]
    KeyMismatch {
        /// The head record's sequence number.
        seq: u64,
    },
    /// The segments end before the head recorded apart from them: whole records were cut from
    /// the end. Nothing is appended (that would hide the cut) until the operator accepts it.
    #[error(
        "audit records after seq {after_seq} are missing (the recorded head is record          {recorded_seq}); run `kafclaw audit verify`, and `kafclaw audit repair          --accept-missing` to continue the chain after them"
    )]
    TailMissing {
        /// The last record the segments hold (0 when none).
        after_seq: u64,
        /// The recorded head's sequence number.
        recorded_seq: u64,
    },
    /// The segments' last record has the recorded head's seq but another hash: the log was
    /// rewritten from there.
    #[error(
        "audit record {seq} is not the recorded head: the log was rewritten; run `kafclaw audit verify`"
    )]
    HeadMismatch {
        /// The record's sequence number.
        seq: u64,
    },
    /// The head recorded apart from the segments cannot be read.
    #[error("cannot read the recorded audit head ({place}): {reason}")]
    HeadUnreadable {
        /// Where: `store` or the head file's path.
        place: String,
        /// Why.
        reason: String,
    },
}

/// Forwards [`AppendRecord`] to whichever [`AuditChainer`] instance is current, so actors that
/// hold a `Recipient<AppendRecord>` keep reaching the log after the chainer is restarted (a
/// recipient of the chainer itself would point at a dead mailbox). A closed or missing chainer
/// answers [`AuditError::Unavailable`]: callers fail closed.
pub struct AuditRelay {
    /// The chainer's current address.
    slot: crate::supervisor::Slot<AuditChainer>,
}

impl AuditRelay {
    /// A relay over the chainer's slot.
    pub fn new(slot: crate::supervisor::Slot<AuditChainer>) -> Self {
        Self { slot }
    }
}

impl Actor for AuditRelay {
    type Context = Context<Self>;
}

impl Handler<AppendRecord> for AuditRelay {
    type Result = ResponseFuture<Result<AuditReceipt, AuditError>>;

    fn handle(&mut self, msg: AppendRecord, _: &mut Context<Self>) -> Self::Result {
        let addr = self.slot.addr();
        Box::pin(async move {
            match addr {
                Some(addr) => addr.send(msg).await.unwrap_or(Err(AuditError::Unavailable)),
                None => Err(AuditError::Unavailable),
            }
        })
    }
}
