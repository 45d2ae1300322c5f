//! Workspace isolation (runbook §1: "keep bot workspace and work repo isolated from sensitive
//! host paths"). A tool root is refused when it is `/`, the KafClaw root itself, a system
//! directory (or inside one), when it contains the state directory or `~/.config/kafclaw`, or
//! when it lies inside a secret path (the store, the audit log, `~/.config/kafclaw`, …).
//! A dedicated subdirectory of `~/.kafclaw` (the default layout) is isolated.

use std::path::{Path, PathBuf};

use kafclaw_actors::paths::Home;

use super::{resolve, shown, Report};
use crate::settings::Settings;

/// System trees no tool root may be, or be inside of.
pub const SYSTEM_PATHS: &[&str] = &[
    "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/var", "/proc", "/sys", "/dev", "/boot",
    "/root", "/run",
];

/// Why `path` is not an isolated tool root, or `None` when it is.
pub fn isolation_problem(home: &Home, path: &Path) -> Option<String> {
    let p = resolve(path);
    if p == Path::new("/") {
        return Some("is the file-system root".into());
    }
    let root = resolve(home.root());
    if p == root {
        return Some("is the KafClaw root (home directory) itself".into());
    }
    // The KafClaw root may itself live under a system tree (`/root`, `/var/lib/kafclaw`): only
    // a system path outside the root counts.
    if !p.starts_with(&root) {
        if let Some(sys) = SYSTEM_PATHS.iter().find(|s| p.starts_with(s)) {
            return Some(format!("is inside the system directory {sys}"));
        }
    }
    let state = resolve(&home.state_dir());
    let config = resolve(&home.config_dir());
    if p == state {
        return Some("is the state directory itself".into());
    }
    for (sensitive, what) in [
        (&state, "the state directory"),
        (&config, "~/.config/kafclaw"),
    ] {
        if sensitive.starts_with(&p) {
            return Some(format!("contains {what}"));
        }
    }
    let mut secret: Vec<PathBuf> = home.secret_paths();
    secret.push(home.snapshots_dir());
    for s in secret {
        let s = resolve(&s);
        if p.starts_with(&s) {
            return Some(format!("is inside {}", shown(home, &s)));
        }
    }
    None
}

/// Checks that the workspace and the work repo exist and are isolated.
pub fn check(home: &Home, settings: &Settings, report: &mut Report) {
    for (name, key, path) in [
        (
            "workspace_path",
            "paths.workspace",
            settings.workspace(home),
        ),
        (
            "work_repo_path",
            "paths.work_repo",
            settings.work_repo(home),
        ),
    ] {
        if let Some(problem) = isolation_problem(home, &path) {
            report.fail(
                name,
                format!("{} {problem}", path.display()),
                format!(
                    "set {key} to a dedicated directory (empty = the default under ~/.kafclaw)"
                ),
            );
        } else if !path.is_dir() {
            report.warn(
                name,
                format!("{} does not exist", path.display()),
                "`kafclaw doctor --fix` creates it (0700), or start the gateway once",
            );
        } else {
            report.pass(name, format!("{} exists and is isolated", path.display()));
        }
    }
}
