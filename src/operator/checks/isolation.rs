//! Tool isolation (runbook §1, issue 21): whether any tool can reach a secret path. One verdict
//! serves both `kafclaw security check` (its rows) and `kafclaw gateway`, which refuses to
//! start (exit 2, one line naming the key and the problem) on every FAIL row of it.
//!
//! Tool roots: `paths.workspace` (read) and `paths.work_repo` (read, write, exec's working
//! directory) — the executor's and the kernel sandbox's only roots — and, with
//! `tools.exec.restrict_workspace` off, every path an exec argument names.
//! Secret paths: `/`, the KafClaw root (`~`), the gateway user's `$HOME`, `~/.kafclaw` and
//! everything in it but its `workspace/` and `work-repo/` (the store, the audit log and its
//! head, `snapshots/`, `backups/`, pre-restore copies, the control socket), `~/.config/kafclaw`,
//! and the system trees. A root is refused when it is one, lies inside one, or contains one
//! (an ancestor); symlinks are resolved first, so a link to `~` is `~`.
//! `restrict_workspace = false` lets exec arguments name any path: it is accepted (WARN) only
//! when the kernel confines every exec child to the roots (Landlock: `tools.exec.sandbox` auto
//! or landlock on a kernel that has it), and refused otherwise. The file tools never follow
//! it (they always resolve inside the roots).
//!
//! Architecture Invariant: `security check`'s FAIL rows named in [`ROWS`] are exactly the
//! gateway's start refusals: both call [`assess`].
//! Must not: create, open or change anything (the gateway calls it before it touches the home).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use kafclaw_actors::executor::{kernel_support, KernelSupport, SandboxStatus};
use kafclaw_actors::paths::Home;

use super::report::{Check, Status};
use super::{at, resolve, shown, Report};
use crate::settings::Settings;

/// System trees no tool root may be, or be inside of.
pub const SYSTEM_PATHS: &[&str] = &[
    "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/var", "/proc", "/sys", "/dev", "/boot",
    "/root", "/run",
];

/// The rows of the verdict: (check name, the key it judges).
pub const ROWS: &[(&str, &str)] = &[
    ("workspace_path", "paths.workspace"),
    ("work_repo_path", "paths.work_repo"),
    ("exec_restrict_workspace", RESTRICT),
];

const RESTRICT: &str = "tools.exec.restrict_workspace";

/// The secret places of one home, resolved once.
#[derive(Clone, Debug)]
pub struct SecretPlaces {
    home: Home,
    /// The KafClaw root, resolved.
    root: PathBuf,
    /// `~/.kafclaw`, resolved.
    state: PathBuf,
    /// `~/.config/kafclaw`, resolved.
    config: PathBuf,
    /// The gateway user's `$HOME`, resolved, when set and absolute.
    user_home: Option<PathBuf>,
    /// The named secrets inside the state and config directories, resolved.
    secrets: Vec<PathBuf>,
    /// The only directories inside `~/.kafclaw` that may be tool roots.
    state_roots: [PathBuf; 2],
}

impl SecretPlaces {
    /// The secret places of `home` for a process whose environment is `env` (`HOME`).
    pub fn new(home: &Home, env: &HashMap<String, String>) -> Self {
        let user_home = env
            .get("HOME")
            .map(Path::new)
            .filter(|p| p.is_absolute())
            .map(resolve);
        Self {
            home: home.clone(),
            root: resolve(home.root()),
            state: resolve(&home.state_dir()),
            config: resolve(&home.config_dir()),
            user_home,
            secrets: home.secret_paths().iter().map(|p| resolve(p)).collect(),
            state_roots: [
                resolve(&home.default_workspace()),
                resolve(&home.default_work_repo()),
            ],
        }
    }

    /// Why `path` may not be a tool root, or `None` when it is isolated.
    pub fn problem(&self, path: &Path) -> Option<String> {
        let p = resolve(path);
        if p == Path::new("/") {
            return Some("is the file-system root".into());
        }
        if p == self.root {
            return Some("is the KafClaw root (home directory) itself".into());
        }
        if let Some(user_home) = &self.user_home {
            if &p == user_home {
                return Some("is the gateway user's home directory ($HOME)".into());
            }
            if user_home.starts_with(&p) {
                return Some("contains the gateway user's home directory ($HOME)".into());
            }
        }
        // The KafClaw root may itself live under a system tree (`/root`, `/var/lib/kafclaw`):
        // only a system path outside the root counts.
        if !p.starts_with(&self.root) {
            if let Some(sys) = SYSTEM_PATHS.iter().find(|s| p.starts_with(s)) {
                return Some(format!("is inside the system directory {sys}"));
            }
        }
        if p == self.state {
            return Some("is the state directory itself".into());
        }
        for (sensitive, what) in [
            (&self.state, "the state directory"),
            (&self.config, "~/.config/kafclaw"),
        ] {
            if sensitive.starts_with(&p) {
                return Some(format!("contains {what}"));
            }
        }
        if let Some(s) = self.secrets.iter().find(|s| p.starts_with(s)) {
            return Some(format!("is inside {}", shown(&self.home, s)));
        }
        if p.starts_with(&self.state) && !self.state_roots.iter().any(|r| p.starts_with(r)) {
            return Some(format!(
                "is inside the state directory {} (only its workspace/ and work-repo/ may be tool roots)",
                shown(&self.home, &self.state)
            ));
        }
        None
    }
}

/// One row of the verdict with the key it judges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// The setting the row judges (named in the refusal).
    pub key: &'static str,
    /// The row as `security check` prints it.
    pub check: Check,
}

/// The verdict on `settings` for `home`, as a process with environment `env` on a kernel that
/// offers `kernel` sees it.
pub fn assess(
    home: &Home,
    settings: &Settings,
    env: &HashMap<String, String>,
    kernel: KernelSupport,
) -> Vec<Row> {
    let places = SecretPlaces::new(home, env);
    let mut rows = Vec::with_capacity(ROWS.len());
    for ((name, key), path) in ROWS
        .iter()
        .zip([settings.workspace(home), settings.work_repo(home)])
    {
        rows.push(root_row(&places, name, key, &path));
    }
    rows.push(restrict_row(settings, kernel));
    rows
}

fn row(name: &str, key: &'static str, status: Status, message: String, remedy: &str) -> Row {
    Row {
        key,
        check: Check {
            name: name.to_string(),
            status,
            message,
            remedy: (status != Status::Pass).then(|| remedy.to_string()),
        },
    }
}

fn root_row(places: &SecretPlaces, name: &str, key: &'static str, path: &Path) -> Row {
    let remedy = format!(
        "set {key} to a dedicated directory outside the home's secret paths (empty = the default under ~/.kafclaw)"
    );
    // A dangling symlink would resolve elsewhere once its target is created (the gateway
    // creates the state directories after this check): refused, not guessed.
    let absolute = std::env::current_dir().unwrap_or_default().join(path);
    if let Err(e) = kafclaw_actors::executor::resolve_existing_prefix(&absolute) {
        return row(
            name,
            key,
            Status::Fail,
            format!(
                "{key} {} cannot be resolved ({e}: a dangling symlink, or `..` after a missing directory)",
                path.display()
            ),
            &remedy,
        );
    }
    let resolved = resolve(path);
    let shown_path = if resolved == path {
        path.display().to_string()
    } else {
        format!("{} (resolves to {})", path.display(), resolved.display())
    };
    if let Some(problem) = places.problem(path) {
        row(
            name,
            key,
            Status::Fail,
            format!("{key} {shown_path} {problem}"),
            &remedy,
        )
    } else if !path.is_dir() {
        row(
            name,
            key,
            Status::Warn,
            format!("{} does not exist", path.display()),
            "`kafclaw doctor --fix` creates it (0700), or start the gateway once",
        )
    } else {
        row(
            name,
            key,
            Status::Pass,
            format!("{} exists and is isolated", path.display()),
            "",
        )
    }
}

fn restrict_row(settings: &Settings, kernel: KernelSupport) -> Row {
    let name = "exec_restrict_workspace";
    if at(&settings.tools, "exec.restrict_workspace") != &Value::Bool(false) {
        return row(
            name,
            RESTRICT,
            Status::Pass,
            "exec is confined to the workspace and work repo".into(),
            "",
        );
    }
    let origin = settings.origin(RESTRICT);
    match SandboxStatus::decide(super::tools::sandbox_mode(settings), kernel) {
        Ok(status @ SandboxStatus::Landlock { .. }) => row(
            name,
            RESTRICT,
            Status::Warn,
            format!("{RESTRICT} is false (set in {origin}): exec arguments may name any path; the kernel sandbox still confines every exec child ({status})"),
            "`kafclaw security fix --yes` (or set KAFCLAW_TOOLS_EXEC_RESTRICT_WORKSPACE=true): keep both layers",
        ),
        _ => row(
            name,
            RESTRICT,
            Status::Fail,
            format!("{RESTRICT} is false (set in {origin}) and the kernel does not confine exec children: any exec argument may name a secret path"),
            "`kafclaw security fix --yes` (or set KAFCLAW_TOOLS_EXEC_RESTRICT_WORKSPACE=true)",
        ),
    }
}

/// Adds the verdict's rows to `report` (this machine's kernel).
pub fn check(home: &Home, settings: &Settings, env: &HashMap<String, String>, report: &mut Report) {
    for r in assess(home, settings, env, kernel_support()) {
        report.checks.push(r.check);
    }
}

/// The start refusal of `rows`: one line naming each failing key and its problem.
pub fn refusal(rows: &[Row]) -> Option<String> {
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| r.check.status == Status::Fail)
        .map(|r| match &r.check.remedy {
            Some(remedy) => format!("{} ({remedy})", r.check.message),
            None => r.check.message.clone(),
        })
        .collect();
    (!failed.is_empty()).then(|| {
        format!(
            "refusing to start: a tool could reach a secret path: {} (`kafclaw security check` shows the same)",
            failed.join("; ")
        )
    })
}

/// The gateway's start check: `Err(one line)` when any row FAILs.
pub fn preflight(
    home: &Home,
    settings: &Settings,
    env: &HashMap<String, String>,
) -> Result<(), String> {
    match refusal(&assess(home, settings, env, kernel_support())) {
        Some(line) => Err(line),
        None => Ok(()),
    }
}
