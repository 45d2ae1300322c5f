//! The skill operations that change state or decide: install, remove, enable/disable, verify,
//! credential set. Run in the gateway when one answers on the control socket (so enable and
//! disable apply at once), else in the command's own actors.
//!
//! Owns: auditing each decision in the main chain and mirroring it, with the chain's seq and
//! hash, as a JSON line under `~/.kafclaw/skills/audit/` (`install-decisions.jsonl` for installs,
//! refusals and removals; `security-events.jsonl` for the rest).
//! Must not: put a credential value in a record, a line or an answer.

use std::path::PathBuf;

use serde_json::{json, Value};

use kafclaw_actors::audit::{AuditKind, AuditReceipt};
use kafclaw_actors::fsutil;
use kafclaw_actors::vault::{SecretValue, SetSecret};

use super::{OpError, OpsContext};
use crate::skills::install::{self, InstallError};
use crate::skills::{LinkPolicy, SkillsDir};

/// The mirror of install decisions.
pub const INSTALL_DECISIONS: &str = "install-decisions.jsonl";
/// The mirror of the other skill security events.
pub const SECURITY_EVENTS: &str = "security-events.jsonl";

pub use crate::protocol::SkillOp;

/// Appends a record to the main chain, then its mirror line.
async fn record(
    ctx: &OpsContext,
    dir: &SkillsDir,
    kind: AuditKind,
    subject: &str,
    data: Value,
) -> Result<AuditReceipt, OpError> {
    let receipt = ctx.audit_receipt(kind, subject, data.clone()).await?;
    write_mirror(dir, kind, &receipt, &ctx.actor, subject, data).map_err(|e| {
        OpError::Unavailable(format!(
            "recorded in the audit chain (seq {}) but the mirror could not be written: {e}",
            receipt.seq
        ))
    })?;
    Ok(receipt)
}

/// Writes the mirror line of the chain's record `receipt` (`install-decisions.jsonl` for
/// installs, refusals and removals, `security-events.jsonl` for the rest), synced.
pub fn write_mirror(
    dir: &SkillsDir,
    kind: AuditKind,
    receipt: &AuditReceipt,
    actor: &str,
    subject: &str,
    data: Value,
) -> std::io::Result<()> {
    let file = match kind {
        AuditKind::SkillInstalled | AuditKind::SkillRefused | AuditKind::SkillRemoved => {
            INSTALL_DECISIONS
        }
        _ => SECURITY_EVENTS,
    };
    let line = json!({
        "seq": receipt.seq,
        "hash": receipt.hash,
        "kind": kind.as_str(),
        "actor": actor,
        "subject": subject,
        "ts": time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        "data": data,
    });
    use std::io::Write;
    fsutil::create_private_dir(&dir.audit())?;
    let mut f = fsutil::open_private_append(&dir.audit().join(file))?;
    writeln!(f, "{line}")?;
    f.sync_data()
}

/// Runs one skill operation.
pub async fn execute(op: SkillOp, ctx: &OpsContext) -> Result<Value, OpError> {
    let dir = SkillsDir::of(&ctx.home);
    match op {
        SkillOp::Install {
            path,
            accept_warnings,
            allow_domains,
            max_links,
        } => {
            let policy = LinkPolicy {
                allow_domains,
                max_links,
            };
            install_skill(ctx, &dir, path, &policy, accept_warnings).await
        }
        SkillOp::Remove { name } => {
            install::read_pins(&dir, &name).map_err(OpError::Invalid)?;
            record(
                ctx,
                &dir,
                AuditKind::SkillRemoved,
                &name,
                json!({"name": name}),
            )
            .await?;
            install::remove(&dir, &name).map_err(OpError::Unavailable)?;
            Ok(json!({"name": name, "action": "removed"}))
        }
        SkillOp::Enable { name, on } => {
            install::read_pins(&dir, &name).map_err(OpError::Invalid)?;
            let kind = if on {
                AuditKind::SkillEnabled
            } else {
                AuditKind::SkillDisabled
            };
            record(ctx, &dir, kind, &name, json!({"name": name})).await?;
            install::set_enabled(&dir, &name, on).map_err(OpError::Unavailable)?;
            let action = if on { "enabled" } else { "disabled" };
            Ok(json!({"name": name, "action": action}))
        }
        SkillOp::Verify { name } => verify(ctx, &dir, name).await,
        SkillOp::CredentialSet {
            name,
            credential,
            value,
        } => {
            let manifest = install::read_manifest(&dir, &name).map_err(OpError::Invalid)?;
            if !manifest.credentials.contains(&credential) {
                return Err(OpError::Invalid(format!(
                    "skill {name} declares no credential {credential}"
                )));
            }
            if value.is_empty() {
                return Err(OpError::Invalid("the value is empty".into()));
            }
            let secret = format!("skills.{name}.{credential}");
            let data = json!({"name": name, "credential": credential, "secret": secret});
            record(ctx, &dir, AuditKind::SkillCredentialChanged, &name, data).await?;
            ctx.vault()?
                .send(SetSecret {
                    name: secret.clone(),
                    value: SecretValue::from(value),
                })
                .await
                .map_err(super::mailbox)?
                .map_err(super::invalid)?;
            Ok(json!({"name": name, "credential": credential, "secret": secret, "action": "set"}))
        }
    }
}

async fn install_skill(
    ctx: &OpsContext,
    dir: &SkillsDir,
    path: PathBuf,
    policy: &LinkPolicy,
    accept_warnings: bool,
) -> Result<Value, OpError> {
    let source = path.display().to_string();
    // Walking, hashing and copying a skill is file work: off the control socket's arbiter, so
    // a large archive never stalls the gateway's other control requests.
    let installed = {
        let (dir, policy) = (dir.clone(), policy.clone());
        tokio::task::spawn_blocking(move || install::install(&dir, &path, &policy, accept_warnings))
            .await
            .map_err(|_| OpError::Unavailable("the install was interrupted".into()))?
    };
    match installed {
        Ok(done) => {
            let data = json!({
                "name": done.manifest.name,
                "version": done.manifest.version,
                "source": source,
                "files": done.pins.files.len(),
                "accepted_warnings": done.warnings,
            });
            if let Err(e) = record(
                ctx,
                dir,
                AuditKind::SkillInstalled,
                &done.manifest.name,
                data,
            )
            .await
            {
                // Fail closed: a skill whose install is not on the record is not installed.
                let _ = install::remove(dir, &done.manifest.name);
                return Err(e);
            }
            Ok(json!({
                "name": done.manifest.name,
                "version": done.manifest.version,
                "action": "installed",
                "files": done.pins.files,
                "warnings": done.warnings,
            }))
        }
        Err(InstallError::Refused { name, findings }) => {
            let subject = name.clone().unwrap_or_else(|| source.clone());
            let data = json!({"name": name, "source": source, "findings": findings});
            record(ctx, dir, AuditKind::SkillRefused, &subject, data).await?;
            let critical = findings.iter().any(crate::skills::Finding::critical);
            let what = if critical {
                "critical findings"
            } else {
                "warnings (install with --accept-warnings to take them)"
            };
            Err(OpError::Failed(format!(
                "install of {source} refused, {what}: {}",
                InstallError::Refused { name, findings }
                    .to_string()
                    .trim_start_matches("refused: ")
            )))
        }
        Err(InstallError::Exists(name)) => Err(OpError::Invalid(format!(
            "skill {name} is already installed; remove it first"
        ))),
        Err(InstallError::Io(e)) => Err(OpError::Invalid(e)),
    }
}

async fn verify(ctx: &OpsContext, dir: &SkillsDir, name: Option<String>) -> Result<Value, OpError> {
    let names = match name {
        Some(n) => {
            install::read_pins(dir, &n).map_err(OpError::Invalid)?;
            vec![n]
        }
        None => install::installed_names(dir),
    };
    let mut results = Vec::new();
    let mut failed = Vec::new();
    for n in names {
        let problems = match install::verify_installed(dir, &n) {
            Ok(p) => p,
            Err(e) => vec![e],
        };
        if !problems.is_empty() {
            let data = json!({"name": n, "problems": problems});
            record(ctx, dir, AuditKind::SkillVerifyFailed, &n, data).await?;
            failed.push(format!("{n}: {}", problems.join("; ")));
        }
        results.push(json!({"name": n, "ok": problems.is_empty(), "problems": problems}));
    }
    if failed.is_empty() {
        Ok(json!(results))
    } else {
        Err(OpError::Failed(format!(
            "skill verification failed: {}",
            failed.join(" | ")
        )))
    }
}

/// Checks the mirror under `~/.kafclaw/skills/audit/` against the (already verified) chain in
/// `audit_dir`: every line's seq must be a record of the same kind and hash (lines older than
/// the chain's first kept record, pruned by retention, are skipped). Returns the lines checked.
pub fn check_mirror(
    home: &kafclaw_actors::paths::Home,
    audit_dir: &std::path::Path,
) -> Result<usize, String> {
    let mut chain = std::collections::HashMap::new();
    let mut segments: Vec<PathBuf> = std::fs::read_dir(audit_dir)
        .map_err(|e| format!("cannot read {}: {e}", audit_dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    segments.sort();
    for segment in segments {
        let text = std::fs::read_to_string(&segment).unwrap_or_default();
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                if let Some(seq) = v["seq"].as_u64() {
                    chain.insert(seq, (v["kind"].clone(), v["hash"].clone()));
                }
            }
        }
    }
    let first = chain.keys().min().copied().unwrap_or(u64::MAX);
    let dir = SkillsDir::of(home).audit();
    let mut checked = 0;
    for file in [INSTALL_DECISIONS, SECURITY_EVENTS] {
        let Ok(text) = std::fs::read_to_string(dir.join(file)) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            let at = format!("{file} line {}", n + 1);
            let v: Value = serde_json::from_str(line).map_err(|_| format!("{at} is not JSON"))?;
            let seq = v["seq"]
                .as_u64()
                .ok_or_else(|| format!("{at} has no seq"))?;
            if seq < first {
                continue;
            }
            match chain.get(&seq) {
                Some((kind, hash)) if *kind == v["kind"] && *hash == v["hash"] => checked += 1,
                Some(_) => return Err(format!("{at} (seq {seq}) does not match the audit chain")),
                None => {
                    return Err(format!(
                        "{at} names seq {seq}, which the audit chain does not hold"
                    ))
                }
            }
        }
    }
    Ok(checked)
}
