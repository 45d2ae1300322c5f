//! Running a skill's entry (`skill_run`, a tier-2 tool call): the root crate's side of the
//! executor's [`SkillHost`] seam.
//!
//! Owns: the isolation in force (`skills.runtime_isolation`: `auto` resolved once at start,
//! `strict` re-probed at a run when no runtime was usable), what `skill_run` is offered with
//! (the enabled skills that have an entry), the checks of one call (installed, enabled, an
//! executable entry, its `args`), the pins re-verified before every run, the `skill.executed`
//! records (phase `started` before the run, `finished` with the exit after) and their mirror
//! lines, and reading the skill's own credentials (`skills.<name>.<credential>`) from the vault.
//! Must not: hand a skill another skill's credential, or put a value in a record or a line.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use actix::Recipient;
use serde_json::{json, Value};

use kafclaw_actors::audit::{AppendRecord, AuditKind};
use kafclaw_actors::executor::{
    credential_env, HostFuture, SkillCaller, SkillCredential, SkillHost, SkillIsolation, SkillPlan,
};
use kafclaw_actors::policy::OfferedSkill;
use kafclaw_actors::supervisor::Slot;
use kafclaw_actors::vault::{GetSecret, SecretVault};

use super::runtime::{self, Probe};
use super::{args, install, SkillsDir};

/// The default `skills.strict_image`.
pub const DEFAULT_STRICT_IMAGE: &str = "debian:stable-slim";

/// The isolation decided at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// `host`, or `auto` without a usable runtime.
    Host {
        /// Set for `auto`: why no runtime was usable.
        auto_reason: Option<String>,
    },
    /// `strict`, or `auto` with a usable runtime.
    Strict {
        /// `docker` or `podman`.
        runtime: String,
        /// Its client.
        program: PathBuf,
    },
    /// `strict` without a usable runtime: every run re-probes and refuses while none is.
    StrictUnusable(String),
}

impl Resolved {
    /// Decides `mode` (`auto`, `host`, `strict`) on this machine, probing the runtimes
    /// unless `host`.
    pub fn decide(mode: &str) -> Self {
        if mode == "host" {
            return Resolved::Host { auto_reason: None };
        }
        match (probe_located(), mode) {
            (Ok((runtime, program)), _) => Resolved::Strict { runtime, program },
            (Err(why), "strict") => Resolved::StrictUnusable(why),
            (Err(why), _) => Resolved::Host {
                auto_reason: Some(why),
            },
        }
    }

    /// `host`, `strict` or `unavailable` (strict without a runtime).
    pub fn effective(&self) -> &'static str {
        match self {
            Resolved::Host { .. } => "host",
            Resolved::Strict { .. } => "strict",
            Resolved::StrictUnusable(_) => "unavailable",
        }
    }

    /// One line: what runs skill entries and why.
    pub fn describe(&self, mode: &str) -> String {
        match self {
            Resolved::Host { auto_reason: None } => {
                "host: skill entries run through the executor's sandbox".into()
            }
            Resolved::Host {
                auto_reason: Some(why),
            } => format!(
                "host (skills.runtime_isolation = {mode}; no usable container runtime: {why}): skill entries run through the executor's sandbox"
            ),
            Resolved::Strict { runtime, .. } => format!(
                "strict (skills.runtime_isolation = {mode}): skill entries run in {runtime} containers"
            ),
            Resolved::StrictUnusable(why) => format!(
                "strict, unavailable: no container runtime is usable by this user ({why}); skill entries are refused"
            ),
        }
    }
}

/// The first usable runtime and its client's path.
fn probe_located() -> Result<(String, PathBuf), String> {
    match runtime::probe() {
        Probe::Usable(rt) => runtime::locate(rt)
            .map(|p| (rt.to_string(), p))
            .ok_or_else(|| format!("{rt} answered but is not found on PATH")),
        Probe::Unusable(why) => Err(why),
    }
}

/// What runs a skill's entry: the skills tree, the isolation, the audit log and the vault.
pub struct Host {
    dir: SkillsDir,
    mode: String,
    image: String,
    isolation: Mutex<Resolved>,
    audit: Recipient<AppendRecord>,
    vault: Slot<SecretVault>,
}

impl Host {
    /// A host over `dir` with `isolation` decided at start for `mode`.
    pub fn new(
        dir: SkillsDir,
        mode: &str,
        image: &str,
        isolation: Resolved,
        audit: Recipient<AppendRecord>,
        vault: Slot<SecretVault>,
    ) -> Arc<Self> {
        Arc::new(Self {
            dir,
            mode: mode.to_string(),
            image: image.to_string(),
            isolation: Mutex::new(isolation),
            audit,
            vault,
        })
    }

    fn isolation(&self) -> Result<SkillIsolation, String> {
        let mut current = self.isolation.lock().unwrap_or_else(|p| p.into_inner());
        if let Resolved::StrictUnusable(_) = &*current {
            *current = match probe_located() {
                Ok((runtime, program)) => Resolved::Strict { runtime, program },
                Err(why) => Resolved::StrictUnusable(why),
            };
        }
        match &*current {
            Resolved::Host { .. } => Ok(SkillIsolation::Host),
            Resolved::Strict { runtime, program } => Ok(SkillIsolation::Strict {
                runtime: runtime.clone(),
                program: program.clone(),
                image: self.image.clone(),
            }),
            Resolved::StrictUnusable(why) => Err(format!(
                "skills.runtime_isolation is strict but no container runtime is usable by this user: {why}"
            )),
        }
    }

    async fn append(
        &self,
        kind: AuditKind,
        caller: &SkillCaller,
        skill: &str,
        data: Value,
    ) -> Result<(), String> {
        let record = AppendRecord {
            kind,
            actor: caller.sender_id.clone(),
            subject: skill.to_string(),
            data: data.clone(),
        };
        let receipt = match self.audit.send(record).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(format!("the audit log refused the record: {e}")),
            Err(_) => return Err("the audit log is unavailable".into()),
        };
        let (dir, actor, skill) = (
            self.dir.clone(),
            caller.sender_id.clone(),
            skill.to_string(),
        );
        tokio::task::spawn_blocking(move || {
            crate::ops::skill::write_mirror(&dir, kind, &receipt, &actor, &skill, data)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("the skills audit mirror could not be written: {e}"))
    }
}

/// The enabled skills with an entry, as `skill_run` offers them.
pub fn offered(dir: &SkillsDir) -> Vec<OfferedSkill> {
    let enabled = install::enabled(dir);
    install::installed_names(dir)
        .into_iter()
        .filter(|n| enabled.contains(n))
        .filter_map(|n| install::read_manifest(dir, &n).ok())
        .filter(|m| m.entry.is_some())
        .map(|m| OfferedSkill {
            name: m.name,
            description: m.description.chars().filter(|c| !c.is_control()).collect(),
            args: m.args.unwrap_or_else(|| json!({})),
        })
        .collect()
}

impl SkillHost for Host {
    fn prepare(&self, skill: &str, call_args: &Value) -> Result<SkillPlan, String> {
        if !super::valid_name(skill) || !install::enabled(&self.dir).contains(skill) {
            return Err(format!("no enabled skill named {skill:?}"));
        }
        let manifest = install::read_manifest(&self.dir, skill)?;
        let pins = install::read_pins(&self.dir, skill)?;
        let entry = manifest
            .entry
            .clone()
            .ok_or_else(|| format!("skill {skill} has no entry program"))?;
        if !pins.executables.contains(&entry) {
            return Err(format!(
                "skill {skill}'s entry {entry} was not installed executable"
            ));
        }
        let positional = args::positional(manifest.args.as_ref(), &manifest.arg_order, call_args)?;
        let isolation = self.isolation()?;
        let skill_dir = std::fs::canonicalize(self.dir.skill(skill))
            .map_err(|e| format!("cannot resolve skill {skill}: {e}"))?;
        let pins_text = std::fs::read(skill_dir.join(super::PINS))
            .map_err(|e| format!("cannot read skill {skill}'s pins: {e}"))?;
        Ok(SkillPlan {
            skill: skill.to_string(),
            version: manifest.version,
            pins_hash: blake3::hash(&pins_text).to_hex().to_string(),
            skill_dir,
            entry,
            args: positional,
            network: manifest.network,
            credentials: manifest.credentials,
            isolation,
        })
    }

    fn begin<'a>(
        &'a self,
        plan: &'a SkillPlan,
        caller: &'a SkillCaller,
    ) -> HostFuture<'a, Result<Vec<SkillCredential>, String>> {
        Box::pin(async move {
            let (dir, name) = (self.dir.clone(), plan.skill.clone());
            let problems = tokio::task::spawn_blocking(move || {
                install::verify_installed(&dir, &name).unwrap_or_else(|e| vec![e])
            })
            .await
            .map_err(|e| e.to_string())?;
            let pins_now = std::fs::read(plan.skill_dir.join(super::PINS))
                .map(|t| blake3::hash(&t).to_hex().to_string())
                .unwrap_or_default();
            let mut problems = problems;
            if problems.is_empty() && pins_now != plan.pins_hash {
                problems.push(format!(
                    "{} changed since the call was checked",
                    super::PINS
                ));
            }
            if !problems.is_empty() {
                let data =
                    json!({"name": plan.skill, "problems": problems, "call_id": caller.call_id});
                self.append(AuditKind::SkillVerifyFailed, caller, &plan.skill, data)
                    .await?;
                return Err(format!(
                    "refused: skill {} no longer matches its pins ({}); reinstall it",
                    plan.skill,
                    problems.join("; ")
                ));
            }
            let mut data = plan.describe();
            data["phase"] = json!("started");
            data["call_id"] = json!(caller.call_id);
            data["channel"] = json!(caller.channel);
            data["session"] = json!(caller.session);
            self.append(AuditKind::SkillExecuted, caller, &plan.skill, data)
                .await?;
            let mut credentials = Vec::new();
            if plan.credentials.is_empty() {
                return Ok(credentials);
            }
            let vault = self
                .vault
                .addr()
                .ok_or("the vault is unavailable, so the skill's credentials cannot be read")?;
            for name in &plan.credentials {
                let secret = format!("skills.{}.{name}", plan.skill);
                let value = vault
                    .send(GetSecret {
                        name: secret.clone(),
                    })
                    .await
                    .map_err(|_| "the vault is unavailable".to_string())?
                    .map_err(|e| format!("cannot read {secret}: {e}"))?;
                if let Some(value) = value {
                    credentials.push(SkillCredential {
                        env: credential_env(name),
                        value,
                    });
                }
            }
            Ok(credentials)
        })
    }

    fn finish<'a>(
        &'a self,
        plan: &'a SkillPlan,
        caller: &'a SkillCaller,
        outcome: Value,
    ) -> HostFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let mut data = json!({
                "skill": plan.skill,
                "version": plan.version,
                "pins_hash": plan.pins_hash,
                "isolation": plan.isolation.as_str(),
                "phase": "finished",
                "call_id": caller.call_id,
            });
            if let (Some(map), Some(add)) = (data.as_object_mut(), outcome.as_object()) {
                map.extend(add.clone());
            }
            self.append(AuditKind::SkillExecuted, caller, &plan.skill, data)
                .await
        })
    }
}

impl Host {
    /// `skills.runtime_isolation` as configured.
    pub fn mode(&self) -> &str {
        &self.mode
    }
}
