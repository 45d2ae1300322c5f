//! Operator operations on the trust core (`kafclaw secrets …`, `kafclaw token …`): implemented
//! once, against actor addresses, and reached two ways — through the running gateway's
//! control socket, or, when no gateway runs, by the command starting the same actors itself.
//! Operations on live channel state (`kafclaw pairing …`, control messages) exist only inside
//! the gateway (`OpsContext::control` is `Some`) and are refused offline.
//!
//! Every change is audited (names only, never values) before it is reported done. Pairing
//! codes are shown to the operator who asks and never written to a log or the audit log.

pub mod skill;
use serde_json::{json, Value};

use kafclaw_actors::audit::{AppendRecord, AuditChainer, AuditKind};
use kafclaw_actors::channel::pairing::PairingError;
use kafclaw_actors::channel::{
    ApprovePairing, ChannelBridge, ChannelError, DenyPairing, ListPairing,
};
use kafclaw_actors::supervisor::Slot;
use kafclaw_actors::token::{self, Scope, TokenRegistry};
use kafclaw_actors::vault::{
    ListSecrets, RemoveSecret, RotateKey, SecretValue, SecretVault, SetSecret,
};

// The operation types' old path (they live in `crate::protocol`, the control socket's
// client side, so that commands need not depend on the operations).
pub use crate::protocol::Operation;

/// Why an operation failed: a message for the operator (no secret values).
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// Bad input (unknown scope, invalid name, unknown token, …).
    #[error("{0}")]
    Invalid(String),
    /// A check ran and found a problem (exit 1), e.g. a broken audit chain.
    #[error("{0}")]
    Failed(String),
    /// A component is down or the audit log cannot be written.
    #[error("{0}")]
    Unavailable(String),
}

/// What an operation needs.
pub struct OpsContext {
    /// The vault.
    pub vault: Slot<SecretVault>,
    /// The audit log.
    pub audit: Slot<AuditChainer>,
    /// Tokens.
    pub tokens: TokenRegistry,
    /// Who asks (`cli:uid=1000`, a token name).
    pub actor: String,
    /// Tool approvals.
    pub approvals: Slot<kafclaw_actors::approval::Approvals>,
    /// The audit directory and key (for `audit verify`).
    pub audit_dir: std::path::PathBuf,
    /// The audit chain key.
    pub audit_key: kafclaw_actors::audit::AuditKey,
    /// The home (for backups).
    pub home: kafclaw_actors::paths::Home,
    /// The open store (for backups: sled allows one process per store).
    pub db: kafclaw_actors::store::StoreDb,
    /// What control messages act on; `None` when no gateway runs.
    pub control: Option<crate::admin::ControlContext>,
}

impl OpsContext {
    async fn audit(&self, kind: AuditKind, subject: &str, data: Value) -> Result<(), OpError> {
        self.audit_receipt(kind, subject, data).await.map(|_| ())
    }

    /// Appends a record and returns where it landed (seq and hash).
    pub(crate) async fn audit_receipt(
        &self,
        kind: AuditKind,
        subject: &str,
        data: Value,
    ) -> Result<kafclaw_actors::audit::AuditReceipt, OpError> {
        let addr = self.audit.addr().ok_or_else(|| {
            OpError::Unavailable("audit log unavailable; nothing was changed".into())
        })?;
        let record = AppendRecord {
            kind,
            actor: self.actor.clone(),
            subject: subject.to_string(),
            data,
        };
        match addr.send(record).await {
            Ok(Ok(receipt)) => Ok(receipt),
            _ => Err(OpError::Unavailable(
                "the audit log cannot be written; nothing was changed".into(),
            )),
        }
    }

    fn vault(&self) -> Result<actix::Addr<SecretVault>, OpError> {
        self.vault
            .addr()
            .ok_or_else(|| OpError::Unavailable("vault unavailable".into()))
    }
}

/// A refusal by the vault, the token registry or the approvals (bad name, unknown id, …).
fn invalid(e: impl std::fmt::Display) -> OpError {
    OpError::Invalid(e.to_string())
}

fn mailbox(_: actix::MailboxError) -> OpError {
    OpError::Unavailable("vault unavailable".into())
}

/// Runs one operation.
pub async fn execute(op: Operation, ctx: &OpsContext) -> Result<Value, OpError> {
    match op {
        Operation::SecretSet { name, value } => {
            if value.is_empty() {
                return Err(OpError::Invalid("the value is empty".into()));
            }
            let value = SecretValue::from(value);
            kafclaw_actors::vault::validate_name(&name).map_err(invalid)?;
            let vault = ctx.vault()?;
            // Audited before the vault changes: no credential is replaced unrecorded.
            ctx.audit(
                AuditKind::SecretChanged,
                &name,
                json!({"action": "set", "name": name}),
            )
            .await?;
            vault
                .send(SetSecret {
                    name: name.clone(),
                    value,
                })
                .await
                .map_err(mailbox)?
                .map_err(invalid)?;
            Ok(json!({"name": name, "action": "set"}))
        }
        Operation::SecretList => {
            let list = ctx
                .vault()?
                .send(ListSecrets)
                .await
                .map_err(mailbox)?
                .map_err(invalid)?;
            Ok(json!(list))
        }
        Operation::SecretRm { name } => {
            let vault = ctx.vault()?;
            let known = vault
                .send(ListSecrets)
                .await
                .map_err(mailbox)?
                .map_err(invalid)?
                .iter()
                .any(|s| s.name == name);
            if !known {
                return Err(OpError::Invalid(format!("no secret named {name}")));
            }
            // Audited before the secret goes.
            ctx.audit(
                AuditKind::SecretChanged,
                &name,
                json!({"action": "rm", "name": name}),
            )
            .await?;
            let removed = vault
                .send(RemoveSecret { name: name.clone() })
                .await
                .map_err(mailbox)?
                .map_err(invalid)?;
            if !removed {
                return Err(OpError::Invalid(format!("no secret named {name}")));
            }
            Ok(json!({"name": name, "action": "rm"}))
        }
        Operation::SecretRotateKey => {
            let vault = ctx.vault()?;
            // The decision is audited before the vault is resealed, the outcome (key ids)
            // after it.
            ctx.audit(
                AuditKind::SecretChanged,
                "vault.key",
                json!({"action": "rotate_key"}),
            )
            .await?;
            let rotation = vault
                .send(RotateKey)
                .await
                .map_err(mailbox)?
                .map_err(invalid)?;
            ctx.audit(AuditKind::SecretChanged, "vault.key", json!({"action": "rotate_key", "old_key_id": rotation.old_key_id, "new_key_id": rotation.new_key_id, "resealed": rotation.resealed}))
                .await
                .map_err(|_| OpError::Unavailable("the vault key was rotated but its key ids could not be written to the audit log".into()))?;
            Ok(json!(rotation))
        }
        Operation::TokenCreate { scope, ttl, name } => {
            let scope: Scope = scope.parse().map_err(invalid)?;
            let ttl = ttl
                .as_deref()
                .map(token::parse_ttl)
                .transpose()
                .map_err(invalid)?;
            let issued = ctx.tokens.create(scope, ttl, name).await.map_err(invalid)?;
            let record = &issued.record;
            let audited = ctx.audit(
                AuditKind::TokenCreated,
                &record.name,
                json!({"name": record.name, "scope": record.scope.as_str(), "expires_at": record.expires_at.map(kafclaw_actors::clock::to_rfc3339)}),
            )
            .await;
            if let Err(e) = audited {
                // Fail closed: a token nobody recorded is revoked before anyone sees it.
                ctx.tokens.revoke(&record.name).await.map_err(|_| {
                    OpError::Unavailable(format!(
                        "the audit log cannot be written and token {} could not be revoked; revoke it by hand",
                        record.name
                    ))
                })?;
                return Err(e);
            }
            Ok(json!({
                "name": record.name,
                "scope": record.scope.as_str(),
                "expires_at": record.expires_at.map(kafclaw_actors::clock::to_rfc3339),
                "token": issued.token.expose(),
            }))
        }
        Operation::TokenList => {
            let list = ctx.tokens.list().map_err(invalid)?;
            Ok(json!(list
                .iter()
                .map(|r| json!({
                    "name": r.name,
                    "scope": r.scope.as_str(),
                    "created_at": kafclaw_actors::clock::to_rfc3339(r.created_at),
                    "expires_at": r.expires_at.map(kafclaw_actors::clock::to_rfc3339),
                    "last_used_at": r.last_used_at.map(kafclaw_actors::clock::to_rfc3339),
                    "revoked_at": r.revoked_at.map(kafclaw_actors::clock::to_rfc3339),
                }))
                .collect::<Vec<_>>()))
        }
        Operation::Control { message } => {
            let control = ctx.control.as_ref().ok_or_else(|| {
                OpError::Unavailable("control messages need a running gateway".into())
            })?;
            let message = crate::http::routes::parse_control(message)
                .map_err(|e| OpError::Invalid(e.to_string()))?;
            crate::admin::apply(message, &ctx.actor, control)
                .await
                .map_err(|e| match e {
                    crate::admin::ControlError::Unavailable(m)
                    | crate::admin::ControlError::Conflict(m) => OpError::Unavailable(m),
                    other => OpError::Invalid(other.to_string()),
                })
        }
        Operation::AuditVerify {
            from,
            anchor,
            mut anchors,
        } => {
            anchors.extend(anchor);
            let input = crate::last_verify::VerifyInput {
                home: ctx.home.clone(),
                db: ctx.db.clone(),
                dir: ctx.audit_dir.clone(),
                key: ctx.audit_key.clone(),
                from,
                by: ctx.actor.clone(),
            };
            // The anchors first: they are the evidence kept off this host.
            if !anchors.is_empty() {
                let (dir, key) = (ctx.audit_dir.clone(), ctx.audit_key.clone());
                tokio::task::spawn_blocking(move || {
                    crate::fleet::check_anchors(&dir, &key, &anchors)
                })
                .await
                .map_err(|_| OpError::Unavailable("the verification was interrupted".into()))?
                .map_err(OpError::Failed)?;
            }
            let (report, _) = crate::last_verify::run(input).await.map_err(|e| match e {
                crate::last_verify::VerifyRunError::Interrupted => {
                    OpError::Unavailable(e.to_string())
                }
                other => OpError::Failed(other.to_string()),
            })?;
            let report = report.map_err(OpError::Failed)?;
            let mirrored = skill::check_mirror(&ctx.home, &ctx.audit_dir).map_err(|e| {
                OpError::Failed(format!(
                    "the audit chain verifies but the skills audit mirror does not: {e}"
                ))
            })?;
            Ok(json!({
                "skills_mirror_lines": mirrored,
                "records": report.records,
                "head_seq": report.head_seq,
                "head_hash": report.head_hash,
                "bytes": report.bytes,
            }))
        }
        Operation::ApprovalList => {
            let addr = ctx
                .approvals
                .addr()
                .ok_or_else(|| OpError::Unavailable("approvals unavailable".into()))?;
            let list = addr
                .send(kafclaw_actors::approval::ListApprovals)
                .await
                .map_err(|_| OpError::Unavailable("approvals unavailable".into()))?
                .map_err(invalid)?;
            Ok(json!(list))
        }
        Operation::ApprovalDecide { id, approved } => {
            let addr = ctx
                .approvals
                .addr()
                .ok_or_else(|| OpError::Unavailable("approvals unavailable".into()))?;
            let record = addr
                .send(kafclaw_actors::approval::DecideApproval {
                    id,
                    approved,
                    actor: ctx.actor.clone(),
                })
                .await
                .map_err(|_| OpError::Unavailable("approvals unavailable".into()))?
                .map_err(invalid)?;
            Ok(json!(record))
        }
        Operation::BackupCreate {
            out,
            sealed_key,
            compress,
            workspace,
        } => backup_create(out, sealed_key, compress, workspace, ctx).await,
        Operation::Skill { request } => skill::execute(request, ctx).await,
        Operation::Status => Err(OpError::Unavailable(
            "status is answered by the running gateway's control socket".into(),
        )),
        Operation::PairingPending { channel } => pairing_pending(channel, ctx).await,
        Operation::PairingApprove { channel, code } => {
            pairing_decide(channel, code, true, ctx).await
        }
        Operation::PairingDeny { channel, code } => pairing_decide(channel, code, false, ctx).await,
        Operation::TokenRevoke { name } => {
            // Revoked first (the stricter state wins even with the audit log down), then
            // recorded; a failed record is reported as such.
            let record = ctx.tokens.revoke(&name).await.map_err(invalid)?;
            ctx.audit(
                AuditKind::TokenRevoked,
                &record.name,
                json!({"name": record.name, "scope": record.scope.as_str()}),
            )
            .await
            .map_err(|_| {
                OpError::Unavailable(format!(
                    "token {} is revoked, but the revocation could not be written to the audit log",
                    record.name
                ))
            })?;
            Ok(json!({"name": record.name, "revoked": true}))
        }
    }
}

/// The channels of the running gateway; pairing requests live in their actors.
fn pairing_channels(ctx: &OpsContext) -> Result<&crate::admin::ControlContext, OpError> {
    ctx.control
        .as_ref()
        .ok_or_else(|| OpError::Unavailable(NEEDS_GATEWAY.into()))
}

/// Why pairing commands refuse to run offline.
pub const NEEDS_GATEWAY: &str =
    "pairing needs a running gateway: pending codes are held by its channels (start `kafclaw gateway`)";

fn pairing_channel(
    control: &crate::admin::ControlContext,
    name: &str,
) -> Result<actix::Addr<ChannelBridge>, OpError> {
    control
        .channels
        .get(name)
        .ok_or_else(|| OpError::Invalid(format!("unknown channel: {name}")))?
        .addr()
        .ok_or_else(|| OpError::Unavailable(format!("channel {name} is not running")))
}

/// `pairing pending [CHANNEL]`: `{"pending":[…],"unavailable":[…]}`. A channel that is not
/// running is listed under `unavailable` instead of failing the whole listing (it could not
/// take an approval either); a named one that is not running is an error.
async fn pairing_pending(channel: Option<String>, ctx: &OpsContext) -> Result<Value, OpError> {
    let control = pairing_channels(ctx)?;
    let names: Vec<String> = match channel {
        Some(name) => {
            pairing_channel(control, &name)?;
            vec![name]
        }
        None => control.channels.keys().cloned().collect(),
    };
    let mut pending = Vec::new();
    let mut unavailable = Vec::new();
    for name in names {
        let listed = match pairing_channel(control, &name) {
            Ok(addr) => addr.send(ListPairing).await.ok(),
            Err(_) => None,
        };
        match listed {
            Some(Ok(list)) => pending.extend(list),
            Some(Err(e)) => return Err(OpError::Unavailable(e.to_string())),
            None => unavailable.push(name),
        }
    }
    pending.sort_by(|a, b| (a.created_at, &a.channel).cmp(&(b.created_at, &b.channel)));
    let pending: Vec<Value> = pending
        .iter()
        .map(|p| {
            json!({
                "channel": p.channel,
                "sender_id": p.sender_id,
                "code": p.code.expose(),
                "created_at": unix_rfc3339(p.created_at),
                "expires_at": unix_rfc3339(p.expires_at),
            })
        })
        .collect();
    Ok(json!({"pending": pending, "unavailable": unavailable}))
}

/// `pairing approve|deny CHANNEL CODE`. The channel actor audits the decision
/// (`pairing.decided`, with the operator and the sender, never the code) before it answers.
async fn pairing_decide(
    channel: String,
    code: String,
    approve: bool,
    ctx: &OpsContext,
) -> Result<Value, OpError> {
    let control = pairing_channels(ctx)?;
    let addr = pairing_channel(control, &channel)?;
    if code.trim().is_empty() {
        return Err(OpError::Invalid("the code is empty".into()));
    }
    let actor = ctx.actor.clone();
    let answer = if approve {
        addr.send(ApprovePairing { code, actor }).await
    } else {
        addr.send(DenyPairing { code, actor }).await
    };
    let sender = answer
        .map_err(|_| OpError::Unavailable(format!("channel {channel} is not running")))?
        .map_err(|e| match e {
            ChannelError::Pairing(e @ (PairingError::UnknownCode | PairingError::Expired)) => {
                OpError::Invalid(format!("{e} on channel {channel}"))
            }
            other => OpError::Unavailable(other.to_string()),
        })?;
    let decision = if approve { "approved" } else { "denied" };
    Ok(json!({"channel": channel, "sender_id": sender, "decision": decision}))
}

fn unix_rfc3339(seconds: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .map(kafclaw_actors::clock::to_rfc3339)
}

/// `backup create` on the running gateway's store; the manifest's MAC key comes from the vault
/// (created on the first backup).
async fn backup_create(
    out: std::path::PathBuf,
    sealed_key: Option<String>,
    compress: bool,
    workspace: Option<std::path::PathBuf>,
    ctx: &OpsContext,
) -> Result<Value, OpError> {
    let vault = ctx
        .vault
        .addr()
        .ok_or_else(|| OpError::Unavailable("vault unavailable".into()))?;
    let key = vault
        .send(kafclaw_actors::vault::GetOrCreateRandom {
            name: kafclaw_actors::vault::BACKUP_KEY_NAME.to_string(),
            len: 32,
        })
        .await
        .map_err(|_| OpError::Unavailable("vault unavailable".into()))?
        .map_err(|e| OpError::Unavailable(e.to_string()))?;
    let backup_key = crate::backup::backup_key_bytes(key.expose()).map_err(OpError::Unavailable)?;
    let home = ctx.home.clone();
    let db = ctx.db.clone();
    let dest = crate::backup::Destination {
        file: out,
        compress,
    };
    let inputs = crate::backup::Inputs {
        sealed_key,
        backup_key,
        workspace,
    };
    let summary =
        tokio::task::spawn_blocking(move || crate::backup::create(&home, &db, &dest, inputs))
            .await
            .map_err(|_| OpError::Unavailable("the backup was interrupted".into()))?
            .map_err(OpError::Unavailable)?;
    let audited = ctx
        .audit(
            AuditKind::BackupCreated,
            &summary.path.display().to_string(),
            crate::backup::audit_data(&summary),
        )
        .await;
    if let Err(e) = audited {
        // No unrecorded copy of the conversations is left behind.
        let _ = std::fs::remove_file(&summary.path);
        return Err(e);
    }
    Ok(json!(summary))
}

#[cfg(test)]
mod tests {
    //! Audit before act: with the audit log down, an operation that changes a credential
    //! changes nothing (and says so), and a token nobody recorded never stays valid.
    use super::*;
    use actix::Actor;

    fn context(home: &std::path::Path) -> OpsContext {
        let home = kafclaw_actors::paths::Home::new(home);
        let db = kafclaw_actors::store::StoreDb::temporary().unwrap();
        let (vault, _) = kafclaw_actors::vault::Vault::open_or_create(&home, &db, None).unwrap();
        let key = kafclaw_actors::token::TokenHashKey::from_bytes([3; 32]);
        OpsContext {
            vault: Slot::with(SecretVault::new(vault).start()),
            audit: Slot::default(), // the audit chainer is down
            tokens: TokenRegistry::open(&db, key).unwrap(),
            actor: "cli:uid=0".into(),
            approvals: Slot::default(),
            audit_dir: home.root().join("audit"),
            audit_key: kafclaw_actors::audit::AuditKey::from_bytes([4; 32]),
            home,
            db,
            control: None,
        }
    }

    async fn names(ctx: &OpsContext) -> Vec<String> {
        let list = ctx
            .vault()
            .unwrap()
            .send(ListSecrets)
            .await
            .unwrap()
            .unwrap();
        list.into_iter().map(|s| s.name).collect()
    }

    fn unrecorded(result: Result<Value, OpError>) -> String {
        match result {
            Err(OpError::Unavailable(message)) => message,
            other => panic!("expected a refusal for the audit log, got {other:?}"),
        }
    }

    #[actix_rt::test]
    async fn with_the_audit_log_down_no_secret_or_token_changes() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path());
        let before = names(&ctx).await;

        let set = Operation::SecretSet {
            name: "gateway.auth_token".into(),
            value: "x".repeat(43),
        };
        let message = unrecorded(execute(set, &ctx).await);
        assert!(message.contains("nothing was changed"), "{message}");
        assert_eq!(names(&ctx).await, before, "the secret was set unrecorded");

        // A secret that exists (sealed straight into the vault) is not removed unrecorded.
        ctx.vault()
            .unwrap()
            .send(SetSecret {
                name: "provider.api_key".into(),
                value: SecretValue::from("k".to_string()),
            })
            .await
            .unwrap()
            .unwrap();
        let rm = Operation::SecretRm {
            name: "provider.api_key".into(),
        };
        unrecorded(execute(rm, &ctx).await);
        assert!(names(&ctx).await.contains(&"provider.api_key".to_string()));

        let key = std::fs::read(ctx.home.key_file()).unwrap();
        unrecorded(execute(Operation::SecretRotateKey, &ctx).await);
        assert_eq!(
            std::fs::read(ctx.home.key_file()).unwrap(),
            key,
            "the vault key was rotated unrecorded"
        );

        let create = Operation::TokenCreate {
            scope: "admin".into(),
            ttl: None,
            name: Some("unrecorded".into()),
        };
        unrecorded(execute(create, &ctx).await);
        assert!(
            !ctx.tokens
                .has_active_tokens(time::OffsetDateTime::now_utc()),
            "a token nobody recorded stays valid"
        );
    }
}
