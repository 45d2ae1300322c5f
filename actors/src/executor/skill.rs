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

/// The variables a docker or podman client gets from the gateway's environment, and nothing
/// else (the gateway's token, provider keys and `*_FILE` paths never reach the client, its
/// plugins, credential helpers or hooks).
pub const RUNTIME_CLIENT_ENV: &[&str] = &[
    "HOME",
    "XDG_RUNTIME_DIR",
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "CONTAINER_HOST",
    // podman's own configuration (runtime, storage) as the operator set it.
    "CONTAINERS_CONF",
    "CONTAINERS_STORAGE_CONF",
];

/// The values of [`RUNTIME_CLIENT_ENV`] set in this process's environment.
pub fn runtime_client_env() -> Vec<(String, String)> {
    RUNTIME_CLIENT_ENV
        .iter()
        .filter_map(|key| std::env::var(key).ok().map(|v| ((*key).to_string(), v)))
        .collect()
}
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
            let user = container_user(work_repo);
            // The container user must read the skill: when it does not own the installed copy
            // (a gateway running as root keeps it 0700 root), it gets a private read-only copy
            // for this run, removed afterwards.
            let staged = match stage_for(plan, &name, user) {
                Ok(staged) => staged,
                Err(e) => {
                    return Err(SandboxError::Spawn {
                        program: plan.entry.clone(),
                        reason: format!("cannot stage the skill for its container: {e}"),
                    })
                }
            };
            let source = staged
                .as_ref()
                .map_or(plan.skill_dir.as_path(), |s| s.dir.as_path());
            let mounts = ContainerMounts {
                skill_dir: source,
                work_repo,
                user,
            };
            let argv = container_argv(plan, &name, image, &mounts, limits, &env);
            // The client passes the named variables through from its own environment: the
            // values never appear in an argument vector.
            let mut client_env = env;
            client_env.extend(runtime_client_env());
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
            drop(staged);
            report
        }
    }
}

/// A skill copied for one container run, owned by the container user, read-only; removed when
/// dropped.
struct StagedSkill {
    dir: PathBuf,
}

impl Drop for StagedSkill {
    fn drop(&mut self) {
        // Its directories are read-only (0500): writable again first, for an owner without
        // root's override.
        fn writable(dir: &Path) {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    writable(&entry.path());
                }
            }
        }
        writable(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The copy of `plan`'s skill the container user `user` can read, or `None` when it owns the
/// installed one. Lives in `skills/run/<container name>` beside `skills/installed/`.
fn stage_for(
    plan: &SkillPlan,
    name: &str,
    user: (u32, u32),
) -> std::io::Result<Option<StagedSkill>> {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata(&plan.skill_dir)?.uid() == user.0 {
        return Ok(None);
    }
    let skills = plan
        .skill_dir
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| std::io::Error::other("the skill directory has no skills tree"))?;
    let runs = skills.join("run");
    crate::fsutil::create_private_dir(&runs)?;
    let staged = StagedSkill {
        dir: runs.join(name),
    };
    copy_read_only(&plan.skill_dir, &staged.dir, user)?;
    Ok(Some(staged))
}

/// Copies the tree `from` to `to` (which must not exist): directories 0500, files 0400,
/// executables 0500, all owned by `user`; anything but a directory or a regular file refuses.
fn copy_read_only(from: &Path, to: &Path, user: (u32, u32)) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    std::fs::DirBuilder::new().mode(0o700).create(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if kind.is_dir() {
            copy_read_only(&source, &target, user)?;
        } else if kind.is_file() {
            let executable = entry.metadata()?.permissions().mode() & 0o111 != 0;
            let bytes = std::fs::read(&source)?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(if executable { 0o500 } else { 0o400 })
                .open(&target)?;
            file.write_all(&bytes)?;
            std::os::unix::fs::fchown(&file, Some(user.0), Some(user.1))?;
        } else {
            return Err(std::io::Error::other(format!(
                "{} is neither a file nor a directory",
                source.display()
            )));
        }
    }
    std::os::unix::fs::chown(to, Some(user.0), Some(user.1))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o500))
}

fn container_name(skill: &str) -> String {
    let mut random = [0u8; 6];
    let _ = getrandom::fill(&mut random);
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("kafclaw-skill-{skill}-{suffix}")
}

/// `nobody` and `nogroup`.
const NOBODY: (u32, u32) = (65534, 65534);

/// The uid and gid the container runs as, never root: the gateway's own; for a gateway
/// running as root, the work repo's owner (the one identity with exactly that write access),
/// or `nobody` when root owns it too (the container then cannot write the work repo).
fn container_user(work_repo: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let uid = rustix::process::getuid().as_raw();
    if uid != 0 {
        return (uid, rustix::process::getgid().as_raw());
    }
    match std::fs::metadata(work_repo) {
        Ok(meta) if meta.uid() != 0 => (meta.uid(), meta.gid()),
        _ => NOBODY,
    }
}

/// What a strict container mounts and runs as.
pub struct ContainerMounts<'a> {
    /// The skill's files (read-only at [`CONTAINER_SKILL_DIR`]).
    pub skill_dir: &'a Path,
    /// The work repo (writable at [`CONTAINER_WORK_DIR`]).
    pub work_repo: &'a Path,
    /// The uid and gid inside (never 0).
    pub user: (u32, u32),
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
    mounts: &ContainerMounts<'_>,
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
        format!("{}:{}", mounts.user.0, mounts.user.1),
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
        "--ulimit".into(),
        format!("data={0}:{0}", limits.memory_bytes),
        "--mount".into(),
        format!(
            "type=bind,source={},target={CONTAINER_SKILL_DIR},readonly",
            mounts.skill_dir.display()
        ),
        "--mount".into(),
        format!(
            "type=bind,source={},target={CONTAINER_WORK_DIR}",
            mounts.work_repo.display()
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
        let p = plan(false);
        let mounts = ContainerMounts {
            skill_dir: &p.skill_dir,
            work_repo: Path::new("/home/u/.kafclaw/work-repo"),
            user: (1000, 1000),
        };
        let argv = container_argv(
            &p,
            "kafclaw-skill-x",
            "debian:stable-slim",
            &mounts,
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
        let networked = container_argv(&plan(true), "n", "i", &mounts, &limits, &[]);
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

    /// A gateway running as root never runs the container as root: it runs as the work repo's
    /// owner, or nobody, and gets a read-only copy of the root-owned skill owned by that user.
    #[test]
    fn a_root_gateway_runs_the_container_as_the_work_repos_owner_with_a_private_copy() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let home = tempfile::tempdir().unwrap();
        let work = home.path().join("work-repo");
        std::fs::create_dir(&work).unwrap();
        let me = (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        );
        if me.0 != 0 {
            assert_eq!(container_user(&work), me);
            return;
        }
        assert_eq!(container_user(&work), NOBODY);
        std::os::unix::fs::chown(&work, Some(1234), Some(4321)).unwrap();
        assert_eq!(container_user(&work), (1234, 4321));

        let installed = home.path().join("skills/installed/probe");
        std::fs::create_dir_all(installed.join("lib")).unwrap();
        std::fs::write(installed.join("SKILL.md"), "---\n").unwrap();
        std::fs::write(installed.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(installed.join("run.sh"), PermissionsExt::from_mode(0o700))
            .unwrap();
        std::fs::write(installed.join("lib/data.txt"), "d").unwrap();
        let mut p = plan(false);
        p.skill_dir = installed.clone();
        let staged = stage_for(&p, "kafclaw-skill-probe-1", (1234, 4321))
            .unwrap()
            .expect("a copy");
        assert_eq!(
            staged.dir,
            home.path().join("skills/run/kafclaw-skill-probe-1")
        );
        for (rel, mode) in [
            ("", 0o500),
            ("run.sh", 0o500),
            ("SKILL.md", 0o400),
            ("lib", 0o500),
            ("lib/data.txt", 0o400),
        ] {
            let meta = std::fs::metadata(staged.dir.join(rel)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (1234, 4321), "{rel}");
            assert_eq!(meta.mode() & 0o7777, mode, "{rel}");
        }
        assert_eq!(
            std::fs::read_to_string(staged.dir.join("lib/data.txt")).unwrap(),
            "d"
        );
        let dir = staged.dir.clone();
        drop(staged);
        assert!(!dir.exists(), "removed after the run");
        // The owner of the installed copy reads it in place.
        assert!(stage_for(&p, "n", (0, 0)).unwrap().is_none());
        // A link in the installed tree refuses the copy.
        std::os::unix::fs::symlink("/etc/passwd", installed.join("lib/link")).unwrap();
        assert!(stage_for(&p, "kafclaw-skill-probe-2", (1234, 4321)).is_err());
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
