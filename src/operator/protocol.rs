//! The control socket's protocol and client: the [`Operation`]s an operator command sends to a
//! running gateway over `~/.kafclaw/control.sock`, the [`Answer`] it gets, and [`send`].
//!
//! Owns: the wire types (one JSON [`Operation`] line in, one JSON answer line out) and the
//! client's retry while the gateway is busy.
//! Must not: depend on the gateway's side (`crate::control`, `crate::ops`): commands, checks and
//! backups use this module to ask a gateway, and the operations depend on those modules' pure
//! parts, never the other way round.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use kafclaw_actors::paths::Home;

use crate::envelope::ErrorCode;

/// How long the client keeps retrying while the gateway answers "busy".
const BUSY_RETRY: Duration = Duration::from_secs(20);

/// The socket's path.
pub fn socket_path(home: &Home) -> PathBuf {
    home.control_socket()
}

/// The request field that carries the control cookie (`~/.kafclaw/control.cookie`).
pub const COOKIE_FIELD: &str = "cookie";

/// The running gateway's control cookie, read from `~/.kafclaw/control.cookie`.
fn read_cookie(home: &Home) -> Result<String, String> {
    let path = home.control_cookie();
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read the gateway's control cookie {}: {e} (run this command as the \
             gateway's user)",
            path.display()
        )
    })?;
    Ok(text.trim().to_string())
}

/// One operation. Sent as JSON over the control socket (values travel in the body, never in
/// argv or a URL).
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    /// Seal a secret.
    SecretSet {
        /// Name.
        name: String,
        /// Value (UTF-8).
        value: String,
    },
    /// Names and times of every secret.
    SecretList,
    /// Remove a secret.
    SecretRm {
        /// Name.
        name: String,
    },
    /// Re-seal every secret under a new vault key.
    SecretRotateKey,
    /// Issue a scoped token (printed once).
    TokenCreate {
        /// `admin`, `read` or `chat`.
        scope: String,
        /// Lifetime such as `30d`.
        ttl: Option<String>,
        /// Name.
        name: Option<String>,
    },
    /// Token names, scopes, ages, last use.
    TokenList,
    /// Revoke a token by name.
    TokenRevoke {
        /// Name.
        name: String,
    },
    /// Pending tool approvals.
    ApprovalList,
    /// Approve or deny a pending tool call.
    ApprovalDecide {
        /// The approval's id.
        id: String,
        /// Approve (true) or deny (false).
        approved: bool,
    },
    /// One admin control message (CONTRACT §3.4), as JSON.
    Control {
        /// The message, tagged by `type`.
        message: Value,
    },
    /// Recompute the audit chain.
    AuditVerify {
        /// First sequence number to verify (trusting its `prev`).
        from: Option<u64>,
        /// A fleet anchor the chain must also reach, with the same hash (older clients).
        #[serde(default)]
        anchor: Option<kafclaw_actors::audit::AuditHead>,
        /// Every fleet anchor of this node (`--anchored`): the chain must reach the newest and
        /// carry each one's hash at its seq.
        #[serde(default)]
        anchors: Vec<kafclaw_actors::audit::AuditHead>,
    },
    /// Unexpired pairing requests, with their codes (for the operator, never for a log).
    PairingPending {
        /// Only this channel; every channel when `None`.
        channel: Option<String>,
    },
    /// Approve a pairing code: its sender is allow-listed on the channel.
    PairingApprove {
        /// The channel.
        channel: String,
        /// The code as typed.
        code: String,
    },
    /// Deny a pairing code.
    PairingDeny {
        /// The channel.
        channel: String,
        /// The code as typed.
        code: String,
    },
    /// The running gateway's full status (`kafclaw status`): answered by the control socket
    /// itself, which holds the gateway's state.
    Status,
    /// A skill operation (`kafclaw skills …`).
    Skill {
        /// What to do.
        request: SkillOp,
    },
    /// Write a backup (`kafclaw backup create` while the gateway holds the store).
    BackupCreate {
        /// The archive file to write (checked by the CLI with `backup::destination`).
        out: std::path::PathBuf,
        /// The vault key file, already sealed with the operator's passphrase by the CLI.
        sealed_key: Option<String>,
        /// zstd-compress the archive.
        #[serde(default)]
        compress: bool,
        /// The workspace whose identity files are carried.
        #[serde(default)]
        workspace: Option<std::path::PathBuf>,
    },
}

impl std::fmt::Debug for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the value of a secret.
        let name = match self {
            Operation::SecretSet { .. } => "secret_set",
            Operation::SecretList => "secret_list",
            Operation::SecretRm { .. } => "secret_rm",
            Operation::SecretRotateKey => "secret_rotate_key",
            Operation::TokenCreate { .. } => "token_create",
            Operation::TokenList => "token_list",
            Operation::TokenRevoke { .. } => "token_revoke",
            Operation::AuditVerify { .. } => "audit_verify",
            Operation::Control { .. } => "control",
            Operation::ApprovalList => "approval_list",
            Operation::ApprovalDecide { .. } => "approval_decide",
            Operation::BackupCreate { .. } => "backup_create",
            Operation::Skill { request } => request.label(),
            Operation::Status => "status",
            Operation::PairingPending { .. } => "pairing_pending",
            Operation::PairingApprove { .. } => "pairing_approve",
            Operation::PairingDeny { .. } => "pairing_deny",
        };
        f.write_str(name)
    }
}

/// One skill operation.
#[derive(Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum SkillOp {
    /// Verify and install a directory or archive.
    Install {
        /// The source (resolved to an absolute path by the command).
        path: PathBuf,
        /// Install despite warnings.
        accept_warnings: bool,
        /// `skills.link_policy.allow_domains`.
        allow_domains: Vec<String>,
        /// `skills.link_policy.max_links`.
        max_links: usize,
    },
    /// Remove an installed skill.
    Remove {
        /// Its name.
        name: String,
    },
    /// Enable (`on`) or disable a skill.
    Enable {
        /// Its name.
        name: String,
        /// Enable or disable.
        on: bool,
    },
    /// Re-hash one or every installed skill against its pins.
    Verify {
        /// One skill, or all.
        name: Option<String>,
    },
    /// Seal a credential of a skill as `skills.<name>.<credential>`.
    CredentialSet {
        /// The skill.
        name: String,
        /// The credential's name (declared in its front matter).
        credential: String,
        /// The value (never logged or audited).
        value: String,
    },
}

impl SkillOp {
    /// The operation's name for logs (never a value).
    pub fn label(&self) -> &'static str {
        match self {
            SkillOp::Install { .. } => "skill_install",
            SkillOp::Remove { .. } => "skill_remove",
            SkillOp::Enable { .. } => "skill_enable",
            SkillOp::Verify { .. } => "skill_verify",
            SkillOp::CredentialSet { .. } => "skill_credential_set",
        }
    }
}

/// The answer of a running gateway to one operation.
pub enum Answer {
    /// Done; the result.
    Ok(Value),
    /// A check failed (exit 1).
    Failed(String),
    /// Refused or could not be done (exit 2), and why ([`ErrorCode::Internal`] when the
    /// gateway named no code).
    Error(ErrorCode, String),
}

/// Client side: sends `op` to a running gateway. `Ok(None)` when no gateway listens. While
/// the gateway answers "busy" (all connections taken), retries for up to [`BUSY_RETRY`].
pub fn send(home: &Home, op: &Operation) -> Result<Option<Answer>, String> {
    let started = std::time::Instant::now();
    loop {
        let value = match send_once(home, op)? {
            None => return Ok(None),
            Some(v) => v,
        };
        if value["code"] == "busy" && started.elapsed() < BUSY_RETRY {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let error = value["error"]
            .as_str()
            .unwrap_or("request failed")
            .to_string();
        return Ok(Some(match value["status"].as_str() {
            Some("ok") => Answer::Ok(value["result"].clone()),
            Some("failed") => Answer::Failed(error),
            _ => Answer::Error(
                ErrorCode::parse(value["code"].as_str().unwrap_or("")),
                error,
            ),
        }));
    }
}

fn send_once(home: &Home, op: &Operation) -> Result<Option<Value>, String> {
    let path = socket_path(home);
    let mut stream = match StdUnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(format!("cannot reach the gateway's control socket: {e}")),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let mut request = serde_json::to_value(op).map_err(|e| e.to_string())?;
    request[COOKIE_FIELD] = Value::String(read_cookie(home)?);
    let mut line = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
    line.push(b'\n');
    // A "busy" gateway may close before reading: its answer line is still there to read.
    let written = stream.write_all(&line);
    let mut answer = String::new();
    let read = BufReader::new(stream).read_line(&mut answer);
    match (written, read) {
        (Err(e), _) if answer.is_empty() => return Err(format!("cannot talk to the gateway: {e}")),
        (_, Err(e)) => return Err(format!("cannot read the gateway's answer: {e}")),
        _ => {}
    }
    serde_json::from_str(&answer)
        .map(Some)
        .map_err(|_| "malformed answer from the gateway".to_string())
}
