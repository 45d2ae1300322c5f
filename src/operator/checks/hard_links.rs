//! Hard links to secret files inside the tool roots (issue 11 §2): a file in the work repo or
//! the workspace whose (device, inode) is a secret file's reads as that secret to any program
//! the kernel lets into the roots, so it is a FAIL naming both.
//!
//! Owns: the bounded walk of the roots and of the secret paths.
//! Must not: follow symlinks (a symlink is not a hard link, and following one could leave the
//! roots), read file contents, or walk without bound: each walk stops after [`MAX_ENTRIES`]
//! entries or [`MAX_DEPTH`] levels and says so (WARN).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kafclaw_actors::paths::Home;

use super::{shown, Report};
use crate::settings::Settings;

/// Entries visited per walk before it stops.
pub const MAX_ENTRIES: usize = 100_000;
/// Directory levels descended per walk.
pub const MAX_DEPTH: usize = 32;

/// Regular files under `root` (or `root` itself), by (device, inode); `false` when the walk
/// stopped at a bound.
fn files(root: &Path, out: &mut Vec<((u64, u64), PathBuf)>) -> bool {
    let mut seen = 0usize;
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((path, depth)) = stack.pop() {
        seen += 1;
        if seen > MAX_ENTRIES {
            return false;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_file() {
            out.push(((meta.dev(), meta.ino()), path));
        } else if meta.is_dir() {
            if depth >= MAX_DEPTH {
                return false;
            }
            let Ok(entries) = std::fs::read_dir(&path) else {
                continue;
            };
            for entry in entries.flatten() {
                stack.push((entry.path(), depth + 1));
            }
        }
    }
    true
}

/// FAILs files in the work repo or workspace that are a secret file under another name.
pub fn check(home: &Home, settings: &Settings, report: &mut Report) {
    let mut secret_files = Vec::new();
    let mut complete = true;
    for secret in home.secret_paths() {
        complete &= files(&secret, &mut secret_files);
    }
    let secrets: HashMap<(u64, u64), PathBuf> = secret_files.into_iter().collect();
    let mut found = Vec::new();
    for root in [settings.work_repo(home), settings.workspace(home)] {
        let mut in_root = Vec::new();
        complete &= files(&root, &mut in_root);
        for (id, path) in in_root {
            if let Some(secret) = secrets.get(&id) {
                if secret != &path {
                    found.push(format!("{} is {}", shown(home, &path), shown(home, secret)));
                }
            }
        }
    }
    if !found.is_empty() {
        report.fail(
            "hard_links",
            format!("hard links to secret files in the tool roots: {}", found.join("; ")),
            "delete those names (`rm` the listed path; the secret itself stays), then find who placed them",
        );
    } else if !complete {
        report.warn(
            "hard_links",
            format!("no hard link to a secret found, but a walk stopped at its bound ({MAX_ENTRIES} entries or {MAX_DEPTH} levels)"),
            "keep the work repo and workspace smaller, or check with `find -samefile`",
        );
    } else {
        report.pass(
            "hard_links",
            "no file in the work repo or workspace is a secret file under another name",
        );
    }
}
