//! File modes (CONTRACT §1): every state path exists with its mode, and nothing is readable by
//! the group or the world. `doctor --fix` creates missing directories (0700) and removes
//! group/world bits (chmod to 0600/0700); it never follows a symlink.

use std::path::{Path, PathBuf};

use kafclaw_actors::fsutil::{self, DIR_MODE, FILE_MODE};
use kafclaw_actors::paths::Home;

use super::{shown, Change, Report};
use crate::settings::Settings;

/// The file recording the last successful backup (read by `security check`).
pub fn last_backup_file(home: &Home) -> PathBuf {
    home.state_dir().join("last-backup")
}

/// One path the contract gives a mode.
#[derive(Clone, Debug)]
pub struct Expected {
    /// The path.
    pub path: PathBuf,
    /// A directory (else a regular file).
    pub dir: bool,
    /// Must exist once the gateway has run (missing = WARN, created by `--fix`).
    pub required: bool,
    /// A tool root (workspace, work repo): created only where isolation allows.
    pub tool_root: bool,
}

/// Every path of CONTRACT §1 (with the configured workspace and work repo).
pub fn expected(home: &Home, settings: Option<&Settings>) -> Vec<Expected> {
    let dir = |path: PathBuf, required| Expected {
        path,
        dir: true,
        required,
        tool_root: false,
    };
    let file = |path: PathBuf| Expected {
        path,
        dir: false,
        required: false,
        tool_root: false,
    };
    let tool_root = |path: PathBuf| Expected {
        path,
        dir: true,
        required: true,
        tool_root: true,
    };
    let (workspace, work_repo) = match settings {
        Some(s) => (s.workspace(home), s.work_repo(home)),
        None => (home.default_workspace(), home.default_work_repo()),
    };
    vec![
        dir(home.state_dir(), true),
        file(home.config_file()),
        dir(home.store_dir(), false),
        dir(home.audit_dir(), true),
        tool_root(workspace),
        tool_root(work_repo),
        dir(home.snapshots_dir(), true),
        file(last_backup_file(home)),
        dir(home.config_dir(), true),
        file(home.env_file()),
        file(home.key_file()),
    ]
}

/// The audit segments (`audit-*.jsonl`, 0600 each).
pub fn audit_segments(home: &Home) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(home.audit_dir())
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// What is wrong with one path's type or mode, if anything.
fn problem(path: &Path, dir: bool) -> Option<String> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if meta.file_type().is_symlink() {
        return Some("is a symbolic link (expected a real file or directory)".into());
    }
    if dir != meta.is_dir() {
        return Some(if dir {
            "is not a directory".into()
        } else {
            "is not a regular file".into()
        });
    }
    let mode = fsutil::mode_of(path).ok()?;
    (mode & 0o077 != 0).then(|| {
        format!(
            "mode {mode:04o} gives the group or others access (expected {:04o})",
            if dir { DIR_MODE } else { FILE_MODE }
        )
    })
}

/// Reports the mode of every path (one check each) and of the audit segments.
pub fn check(home: &Home, settings: Option<&Settings>, report: &mut Report) {
    for e in expected(home, settings) {
        let name = format!("file_mode:{}", shown(home, &e.path));
        let exists = std::fs::symlink_metadata(&e.path).is_ok();
        if !exists {
            if e.required {
                report.warn(
                    name,
                    "missing",
                    "`kafclaw doctor --fix` creates it (0700), or start the gateway once",
                );
            } else {
                report.pass(name, "absent (created when needed)");
            }
            continue;
        }
        match problem(&e.path, e.dir) {
            Some(p) => report.fail(
                name,
                p,
                format!(
                    "`kafclaw doctor --fix` (or chmod {:o} {})",
                    if e.dir { DIR_MODE } else { FILE_MODE },
                    e.path.display()
                ),
            ),
            None => {
                let mode = fsutil::mode_of(&e.path).unwrap_or(0);
                report.pass(name, format!("{mode:04o}"));
            }
        }
    }
    let segments = audit_segments(home);
    let bad: Vec<String> = segments
        .iter()
        .filter(|p| problem(p, false).is_some())
        .map(|p| shown(home, p))
        .collect();
    let name = "file_mode:.kafclaw/audit/*";
    if bad.is_empty() {
        report.pass(
            name,
            format!("{} segment(s), none readable by others", segments.len()),
        );
    } else {
        report.fail(
            name,
            format!("group/world access or wrong type: {}", bad.join(", ")),
            "`kafclaw doctor --fix` (or chmod 600 on each segment)",
        );
    }
}

/// What [`fix`] would change, as steps ("create …", "chmod …").
pub fn plan(
    home: &Home,
    settings: Option<&Settings>,
    isolated: impl Fn(&Path) -> bool,
) -> Vec<String> {
    repairs(home, settings, isolated, false)
        .into_iter()
        .map(|c| c.unwrap_or_else(|e| e))
        .collect()
}

/// Creates missing required directories (0700; only when `isolated(path)` allows it) and
/// removes group/world bits from every path and audit segment. Returns what changed (or could
/// not be changed).
pub fn fix(
    home: &Home,
    settings: Option<&Settings>,
    isolated: impl Fn(&Path) -> bool,
) -> Vec<Change> {
    repairs(home, settings, isolated, true)
}

fn repairs(
    home: &Home,
    settings: Option<&Settings>,
    isolated: impl Fn(&Path) -> bool,
    apply: bool,
) -> Vec<Change> {
    let mut changes = Vec::new();
    for e in expected(home, settings) {
        let exists = std::fs::symlink_metadata(&e.path).is_ok();
        if !exists {
            if e.required && e.dir && (!e.tool_root || isolated(&e.path)) {
                let shown = shown(home, &e.path);
                if !apply {
                    changes.push(Ok(format!("create {shown} (0700)")));
                    continue;
                }
                match fsutil::create_private_dir(&e.path) {
                    Ok(()) => changes.push(Ok(format!("created {shown} (0700)"))),
                    Err(err) => changes.push(Err(format!("could not create {shown}: {err}"))),
                }
            }
            continue;
        }
        changes.extend(repair_mode(home, &e.path, e.dir, apply));
    }
    for segment in audit_segments(home) {
        changes.extend(repair_mode(home, &segment, false, apply));
    }
    changes
}

fn repair_mode(home: &Home, path: &Path, dir: bool, apply: bool) -> Option<Change> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    // Never chmod through a symlink or change a path of the wrong type: reported, not fixed.
    if meta.file_type().is_symlink() || meta.is_dir() != dir {
        return None;
    }
    let mode = fsutil::mode_of(path).ok()?;
    if mode & 0o077 == 0 {
        return None;
    }
    let target = if dir { DIR_MODE } else { FILE_MODE };
    if !apply {
        return Some(Ok(format!(
            "chmod {} from {mode:04o} to {target:04o}",
            shown(home, path)
        )));
    }
    Some(match fsutil::set_mode(path, target) {
        Ok(()) => Ok(format!(
            "{} mode {mode:04o} -> {target:04o}",
            shown(home, path)
        )),
        Err(err) => Err(format!("could not chmod {}: {err}", shown(home, path))),
    })
}
