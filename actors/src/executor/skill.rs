//! `skill_run`: an enabled skill's entry program, run as a tier-2 tool call.
//!
//! Owns: the seam to the root crate's skills tree ([`SkillHost`]: prepare the run, audit its
//! start and finish, hand over its credentials), and how one run is started: `host` through the
//! sandbox (no shell, the executor's timeout, output cap and rlimits, Landlock with the skill
//! directory read-only and the work repo the only writable root), `strict` through `docker run`
//! or `podman run` (no network unless the skill declares it, read-only root, every capability
//! dropped, no new privileges, a non-root user, the skill directory read-only and the work repo
//! the only writable mount), under the same limits.
//! Must not: put a credential value in an argument vector, a record, a log or the model's
//! result (the values are passed as environment variables and masked in the output).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use serde_json::{json, Value};

use super::check::CheckedCommand;
use super::sandbox::{self, ChildAccess, ExecReport, KernelJail, SandboxError, SandboxLimits};
use crate::vault::SecretValue;

/// Where the skill directory is mounted in a strict container.
pub const CONTAINER_SKILL_DIR: &str = "/skill";
/// Where the work repo is mounted in a strict container (its working directory).
pub const CONTAINER_WORK_DIR: &str = "/work";

/// How a skill's entry is isolated (`skills.runtime_isolation`, `auto` resolved at start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkillIsolation {
    /// Through the executor's sandbox.
    Host,
    /// In a container.
    Strict {
        /// `docker` or `podman`.
        runtime: String,
        /// The runtime's client, resolved.
        program: PathBuf,
        /// The image (`skills.strict_image`).
        image: String,
    },
}

impl SkillIsolation {
    /// `host` or `strict`.
    pub fn as_str(&self) -> &'static str {
        match self {
            SkillIsolation::Host => "host",
            SkillIsolation::Strict { .. } => "strict",
        }
    }
}

/// A `skill_run` call that passed its checks: what will run, nothing secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkillPlan {
    /// The skill's name.
    pub skill: String,
    /// Its version.
    pub version: String,
    /// BLAKE3 of its `.pins.json` (which pins every file), hex.
    pub pins_hash: String,
    /// The installed skill's directory (canonical).
    pub skill_dir: PathBuf,
    /// The entry, relative to the skill directory.
    pub entry: String,
    /// The entry's arguments, positional.
    pub args: Vec<String>,
    /// The skill declares `network: true`.
    pub network: bool,
    /// The credentials it declares (names only).
    pub credentials: Vec<String>,
    /// How it is isolated.
    pub isolation: SkillIsolation,
}

impl SkillPlan {
    /// What the audit records say about the run (never a value).
    pub fn describe(&self) -> Value {
        json!({
            "skill": self.skill,
            "version": self.version,
            "pins_hash": self.pins_hash,
            "entry": self.entry,
            "args": self.args,
            "network": self.network,
            "credentials": self.credentials,
            "isolation": self.isolation.as_str(),
            "runtime": match &self.isolation {
                SkillIsolation::Host => None,
                SkillIsolation::Strict { runtime, .. } => Some(runtime.clone()),
            },
        })
    }
}

/// A credential handed to one run: the variable's name and its value.
pub struct SkillCredential {
    /// `KAFCLAW_CRED_<NAME>`.
    pub env: String,
    /// The value (zeroized when dropped).
    pub value: SecretValue,
}

impl std::fmt::Debug for SkillCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SkillCredential({})", self.env)
    }
}

/// The environment variable a skill's credential `name` is handed over in.
pub fn credential_env(name: &str) -> String {
    let upper: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' => c.to_ascii_uppercase(),
            '0'..='9' | 'A'..='Z' => c,
            _ => '_',
        })
        .collect();
    format!("KAFCLAW_CRED_{upper}")
}

/// A boxed future borrowing its host.
pub type HostFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who called (for the skill's own audit records).
#[derive(Clone, Debug)]
pub struct SkillCaller {
    /// The model's tool-call id.
    pub call_id: String,
    /// The sender's id (the records' actor).
    pub sender_id: String,
    /// The channel.
    pub channel: String,
    /// The agent session.
    pub session: String,
}

/// The root crate's side of `skill_run`.
pub trait SkillHost: Send + Sync + 'static {
    /// Checks a call (blocking file work allowed): the skill is installed and enabled, has an
    /// entry, `args` fits its schema, and its isolation is usable. `Err` is the refusal.
    fn prepare(&self, skill: &str, args: &Value) -> Result<SkillPlan, String>;
    /// Just before the run: re-verifies the pins (a changed file refuses, audited as
    /// `skill.verify_failed`), audits `skill.executed` (phase `started`) durably, and reads
    /// the skill's own credentials from the vault. `Err`: nothing runs.
    fn begin<'a>(
        &'a self,
        plan: &'a SkillPlan,
        caller: &'a SkillCaller,
    ) -> HostFuture<'a, Result<Vec<SkillCredential>, String>>;
    /// After the run: audits `skill.executed` (phase `finished`) with `outcome`.
    fn finish<'a>(
        &'a self,
        plan: &'a SkillPlan,
        caller: &'a SkillCaller,
        outcome: Value,
    ) -> HostFuture<'a, Result<(), String>>;
}

/// Runs `plan` with `credentials` in `work_repo` under `limits`; `jail` is the executor's.
pub async fn run(
    plan: &SkillPlan,
    credentials: &[SkillCredential],
    work_repo: &Path,
    jail: &KernelJail,
    limits: &SandboxLimits,
) -> Result<ExecReport, SandboxError> {
    let mut env: Vec<(String, String)> = vec![
        ("KAFCLAW_SKILL".into(), plan.skill.clone()),
        ("KAFCLAW_SKILL_VERSION".into(), plan.version.clone()),
    ];
    for c in credentials {
        let Some(value) = c.value.expose_str() else {
            return Err(SandboxError::Spawn {
                program: plan.entry.clone(),
                reason: format!("credential {} is not text", c.env),
            });
        };
        env.push((c.env.clone(), value.to_string()));
    }
    match &plan.isolation {
        SkillIsolation::Host => {
            env.push((
                "KAFCLAW_SKILL_DIR".into(),
                plan.skill_dir.display().to_string(),
            ));
            let program = plan.skill_dir.join(&plan.entry);
            let mut argv = vec![plan.entry.clone()];
            argv.extend(plan.args.iter().cloned());
            let command = CheckedCommand {
                program,
                argv,
                cwd: work_repo.to_path_buf(),
                env,
                access: ChildAccess {
                    write_work_repo: true,
                    network: plan.network,
                },
            };
            let jail = jail.with_read_only(&plan.skill_dir);
            sandbox::run(&command, work_repo, &jail, limits).await
        }
        SkillIsolation::Strict { program, image, .. } => {
            let name = container_name(&plan.skill);
            let argv = container_argv(plan, &name, image, work_repo, limits, &env);
            // The client passes the named variables through from its own environment: the
            // values never appear in an argument vector.
            let mut client_env = env;
            for key in [
                "HOME",
                "XDG_RUNTIME_DIR",
                "DOCKER_HOST",
                "DOCKER_CONTEXT",
                "DOCKER_CONFIG",
                "CONTAINER_HOST",
                // podman's own configuration (runtime, storage) as the operator set it.
                "CONTAINERS_CONF",
                "CONTAINERS_STORAGE_CONF",
            ] {
                if let Ok(v) = std::env::var(key) {
                    client_env.push((key.into(), v));
                }
            }
            let command = CheckedCommand {
                program: program.clone(),
                argv,
                cwd: work_repo.to_path_buf(),
                env: client_env,
                access: ChildAccess {
                    write_work_repo: true,
                    network: true,
                },
            };
            // The client talks to the engine over its socket: not under Landlock (the
            // container is the confinement), still under the timeout, output cap and rlimits.
            let unconfined = KernelJail::unconfined(work_repo);
            let report = sandbox::run(&command, work_repo, &unconfined, limits).await;
            if report.as_ref().map_or(true, |r| r.timed_out) {
                // Killing the client does not stop the container.
                let (program, name) = (program.clone(), name.clone());
                let _ =
                    tokio::task::spawn_blocking(move || sandbox::remove_container(&program, &name))
                        .await;
            }
            report
        }
    }
}

fn container_name(skill: &str) -> String {
    let mut random = [0u8; 6];
    let _ = getrandom::fill(&mut random);
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("kafclaw-skill-{skill}-{suffix}")
}

/// The uid:gid the container runs as: the gateway's own, or `nobody` when that is root.
fn container_user() -> String {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    if uid == 0 {
        "65534:65534".into()
    } else {
        format!("{uid}:{gid}")
    }
}

fn runtime_name(plan: &SkillPlan) -> String {
    match &plan.isolation {
        SkillIsolation::Strict { runtime, .. } => runtime.clone(),
        SkillIsolation::Host => "docker".into(),
    }
}

/// User-namespace arguments: rootless podman (the gateway not root) keeps the gateway's uid
/// inside the container (`--userns=keep-id`), so the container user is the owner of the
/// skill directory and the work repo as on the host; docker's daemon and rootful podman map
/// uids one to one already.
fn userns_args(runtime: &str, uid: u32) -> Vec<String> {
    if runtime == "podman" && uid != 0 {
        vec!["--userns=keep-id".into()]
    } else {
        Vec::new()
    }
}

/// `run --rm …` for `plan` (the values of `env` are not in it: `-e NAME` only).
pub fn container_argv(
    plan: &SkillPlan,
    name: &str,
    image: &str,
    work_repo: &Path,
    limits: &SandboxLimits,
    env: &[(String, String)],
) -> Vec<String> {
    let runtime = runtime_name(plan);
    let mut argv: Vec<String> = vec![
        runtime.clone(),
        "run".into(),
        "--rm".into(),
        "--name".into(),
        name.into(),
        "--pull".into(),
        "never".into(),
    ];
    if !plan.network {
        argv.extend(["--network".into(), "none".into()]);
    }
    argv.extend(userns_args(&runtime, rustix::process::getuid().as_raw()));
    argv.extend([
        "--read-only".into(),
        "--cap-drop".into(),
        "ALL".into(),
        "--security-opt".into(),
        "no-new-privileges".into(),
        "--user".into(),
        container_user(),
        "--pids-limit".into(),
        limits.processes.to_string(),
        "--ulimit".into(),
        format!("nproc={0}:{0}", limits.processes),
        "--ulimit".into(),
        format!("cpu={0}:{0}", limits.cpu_seconds),
        "--ulimit".into(),
        format!("nofile={0}:{0}", limits.open_files),
        "--ulimit".into(),
        format!("fsize={0}:{0}", limits.file_size_bytes),
        "--mount".into(),
        format!(
            "type=bind,source={},target={CONTAINER_SKILL_DIR},readonly",
            plan.skill_dir.display()
        ),
        "--mount".into(),
        format!(
            "type=bind,source={},target={CONTAINER_WORK_DIR}",
            work_repo.display()
        ),
        "--workdir".into(),
        CONTAINER_WORK_DIR.into(),
        "--env".into(),
        format!("HOME={CONTAINER_WORK_DIR}"),
        "--env".into(),
        format!("KAFCLAW_SKILL_DIR={CONTAINER_SKILL_DIR}"),
    ]);
    for (key, _) in env {
        argv.extend(["--env".into(), key.clone()]);
    }
    argv.push(image.into());
    argv.push(format!("{CONTAINER_SKILL_DIR}/{}", plan.entry));
    argv.extend(plan.args.iter().cloned());
    argv
}

/// `text` with every credential value replaced by `[redacted]`.
pub fn mask(text: String, credentials: &[SkillCredential]) -> String {
    let mut out = text;
    for c in credentials {
        if let Some(v) = c.value.expose_str().filter(|v| v.len() >= 4) {
            if out.contains(v) {
                out = out.replace(v, "[redacted]");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(network: bool) -> SkillPlan {
        SkillPlan {
            skill: "git-activity".into(),
            version: "1".into(),
            pins_hash: "00".repeat(32),
            skill_dir: PathBuf::from("/home/u/.kafclaw/skills/installed/git-activity"),
            entry: "report.sh".into(),
            args: vec!["7".into()],
            network,
            credentials: vec!["api_token".into()],
            isolation: SkillIsolation::Strict {
                runtime: "podman".into(),
                program: PathBuf::from("/usr/bin/podman"),
                image: "debian:stable-slim".into(),
            },
        }
    }

    #[test]
    fn the_container_is_locked_down_and_values_stay_out_of_the_argv() {
        let env = vec![(
            "KAFCLAW_CRED_API_TOKEN".to_string(),
            "secret-value-123".to_string(),
        )];
        let limits = SandboxLimits::default();
        let argv = container_argv(
            &plan(false),
            "kafclaw-skill-x",
            "debian:stable-slim",
            Path::new("/home/u/.kafclaw/work-repo"),
            &limits,
            &env,
        );
        let joined = argv.join(" ");
        assert!(joined.starts_with("podman run --rm --name kafclaw-skill-x --pull never"));
        for needed in [
            "--network none",
            "--read-only",
            "--cap-drop ALL",
            "--security-opt no-new-privileges",
            "--pids-limit 64",
            "--ulimit cpu=30:30",
            "--ulimit nproc=64:64",
            "type=bind,source=/home/u/.kafclaw/skills/installed/git-activity,target=/skill,readonly",
            "type=bind,source=/home/u/.kafclaw/work-repo,target=/work",
            "--workdir /work",
            "--env KAFCLAW_CRED_API_TOKEN debian:stable-slim /skill/report.sh 7",
        ] {
            assert!(joined.contains(needed), "{needed}: {joined}");
        }
        let user = &argv[argv.iter().position(|a| a == "--user").unwrap() + 1];
        assert!(!user.starts_with("0:"), "never root: {user}");
        assert!(!joined.contains("secret-value-123"));
        // Exactly two mounts: the skill (read-only) and the work repo.
        assert_eq!(argv.iter().filter(|a| *a == "--mount").count(), 2);
        let networked = container_argv(&plan(true), "n", "i", Path::new("/w"), &limits, &[]);
        assert!(!networked.join(" ").contains("--network none"));
    }

    /// Rootless podman maps container uids onto subordinate ids, so without `keep-id` the
    /// gateway's own uid inside could not read the 0700 skill or write the work repo.
    #[test]
    fn rootless_podman_keeps_the_gateways_uid_and_docker_or_root_do_not_remap() {
        assert_eq!(
            userns_args("podman", 1000),
            vec!["--userns=keep-id".to_string()]
        );
        assert!(userns_args("podman", 0).is_empty());
        assert!(userns_args("docker", 1000).is_empty());
    }

    #[test]
    fn credential_names_become_plain_variables_and_values_are_masked() {
        assert_eq!(credential_env("api-token"), "KAFCLAW_CRED_API_TOKEN");
        let creds = [SkillCredential {
            env: "KAFCLAW_CRED_X".into(),
            value: SecretValue::from("tok-123456".to_string()),
        }];
        assert_eq!(
            mask("a tok-123456 b tok-123456".into(), &creds),
            "a [redacted] b [redacted]"
        );
        assert!(!format!("{:?}", creds[0]).contains("tok-"));
    }
}
