//! Path confinement: where a tool may read and write.
//!
//! Owns: resolving a path the way the kernel will (symlinks followed, `..` applied after the
//! link it follows), the roots check, and the secret-file check.
//! Must not: open or list anything.
//!
//! A path is resolved by canonicalising its longest existing prefix and appending the rest;
//! the rest may not contain `.` or `..` (the kernel would refuse to walk a missing directory
//! anyway). A secret path is refused even when a misconfigured root contains it, and so is any
//! *ancestor* of a secret path for `exec` (a recursive `grep` or `ls` of the home would read or
//! list it). Existing files are also compared by device and inode with the secret files, so a
//! hard link to `tomb.rr` inside the work repo is refused too. The gateway's control socket
//! counts as a secret: it takes operator commands from any process of the gateway's user; so
//! do `snapshots/` and `backups/` (copies of every conversation), and everything else in
//! `~/.kafclaw` but its workspace and work repo (pre-restore copies, restore staging).
//!
//! Architecture Invariant: a check happens on the path that will be used; a race with another
//! process that swaps a directory for a symlink between check and use is out of scope (no tool
//! can create a symlink).

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use super::command::Denial;
use crate::paths::Home;

/// The roots a tool may touch and the secrets it may never touch.
#[derive(Clone, Debug)]
pub struct Confinement {
    /// Canonical workspace and work repo: the read roots.
    read_roots: Vec<PathBuf>,
    /// Canonical work repo: the only write root.
    write_root: PathBuf,
    /// The secret paths as named by the home, and resolved (both are compared).
    secrets: Vec<PathBuf>,
    /// The state directory, as named and resolved: everything in it is secret but `open`.
    state_dir: Vec<PathBuf>,
    /// The parts of the state directory a tool may touch: its default workspace and work
    /// repo, and configured roots inside it (as named and resolved).
    state_open: Vec<PathBuf>,
}

/// How much of a path relationship with the secrets counts as a hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretRule {
    /// The path is a secret or lies under one.
    SecretOrUnder,
    /// Also when the path is an ancestor of a secret (recursive readers such as `grep -r`).
    AlsoAncestors,
}

impl Confinement {
    /// Confinement to `workspace` (read) and `work_repo` (read and write); `home` names the
    /// secrets. Roots that do not exist yet are resolved through their longest existing
    /// ancestor.
    pub fn new(workspace: &Path, work_repo: &Path, home: &Home) -> Self {
        let work = resolve_lenient(work_repo);
        let both = |paths: Vec<PathBuf>| -> Vec<PathBuf> {
            let mut out = Vec::with_capacity(paths.len() * 2);
            for path in paths {
                let resolved = resolve_lenient(&path);
                if resolved != path {
                    out.push(resolved);
                }
                out.push(path);
            }
            out
        };
        // The control socket (among the secret paths) answers operator commands to any
        // process of the gateway's user.
        let secrets = both(home.secret_paths());
        let state_dir = both(vec![home.state_dir()]);
        let read_roots = vec![resolve_lenient(workspace), work.clone()];
        let mut open = vec![home.default_workspace(), home.default_work_repo()];
        open.extend(
            read_roots
                .iter()
                .filter(|r| state_dir.iter().any(|s| r.starts_with(s) && *r != s))
                .cloned(),
        );
        Self {
            read_roots,
            write_root: work,
            secrets,
            state_dir,
            state_open: both(open),
        }
    }

    /// The canonical work repo (default working directory, write root).
    pub fn work_repo(&self) -> &Path {
        &self.write_root
    }

    /// The canonical workspace (a read root).
    pub fn workspace(&self) -> &Path {
        self.read_roots
            .first()
            .map_or(self.write_root.as_path(), PathBuf::as_path)
    }

    /// The secret paths, as named by the home and as resolved.
    pub fn secrets(&self) -> &[PathBuf] {
        &self.secrets
    }

    /// The canonical read roots.
    pub fn read_roots(&self) -> &[PathBuf] {
        &self.read_roots
    }

    /// Resolves `raw` (relative to `base`) for reading: it must resolve inside a read root
    /// (when `restrict` is set) and not touch a secret.
    pub fn check_read(
        &self,
        raw: &str,
        base: &Path,
        restrict: bool,
        rule: SecretRule,
    ) -> Result<PathBuf, Denial> {
        let resolved = self.resolve(raw, base)?;
        // A secret itself is named as such wherever it is; an ancestor of one only once the
        // path is known to be inside the roots (`ls /` is "outside", not "secret").
        self.check_named_secret(raw, &resolved)?;
        if restrict && !self.read_roots.iter().any(|r| resolved.starts_with(r)) {
            return Err(self.outside(raw, base));
        }
        self.check_secret(raw, &resolved, rule)?;
        Ok(resolved)
    }

    /// Resolves `raw` (relative to `base`) for writing: it must resolve inside the work repo,
    /// not touch a secret, and not be git metadata or configuration.
    pub fn check_write(&self, raw: &str, base: &Path) -> Result<PathBuf, Denial> {
        let resolved = self.resolve(raw, base)?;
        self.check_named_secret(raw, &resolved)?;
        let Ok(inside) = resolved.strip_prefix(&self.write_root) else {
            return Err(self.outside_of(raw, base, std::slice::from_ref(&self.write_root)));
        };
        self.check_secret(raw, &resolved, SecretRule::AlsoAncestors)?;
        if is_protected(inside) {
            return Err(Denial::ProtectedPath(raw.to_string()));
        }
        Ok(resolved)
    }

    /// Whether a resolved path inside the work repo is git metadata or configuration (no
    /// tool may write it).
    pub fn is_protected(&self, resolved: &Path) -> bool {
        resolved
            .strip_prefix(&self.write_root)
            .is_ok_and(is_protected)
    }

    /// Whether a resolved path is a secret, under one, or (with [`SecretRule::AlsoAncestors`])
    /// an ancestor of one.
    pub fn touches_secret(&self, resolved: &Path, rule: SecretRule) -> bool {
        let by_name = self.secrets.iter().any(|s| {
            resolved.starts_with(s)
                || (rule == SecretRule::AlsoAncestors && s.starts_with(resolved))
        });
        by_name || self.in_state_dir(resolved) || self.same_file_as_secret(resolved)
    }

    /// Whether a path lies inside the state directory outside the parts tools may touch
    /// (pre-restore copies, restore staging, anything a later version keeps there). The
    /// directory itself is an ancestor of secrets ([`SecretRule::AlsoAncestors`]).
    fn in_state_dir(&self, resolved: &Path) -> bool {
        self.state_dir
            .iter()
            .any(|s| resolved.starts_with(s) && resolved != s)
            && !self.state_open.iter().any(|o| resolved.starts_with(o))
    }

    /// The first check, before the roots: a named secret (or one under another name) is
    /// reported as such wherever it is; the rest of the state directory only once the path is
    /// known to be inside the roots, or the roots are not enforced (it is "outside" first).
    fn check_named_secret(&self, raw: &str, resolved: &Path) -> Result<(), Denial> {
        let named = self.secrets.iter().any(|s| resolved.starts_with(s));
        if named || self.same_file_as_secret(resolved) {
            return Err(Denial::SecretPath(raw.to_string()));
        }
        Ok(())
    }

    fn check_secret(&self, raw: &str, resolved: &Path, rule: SecretRule) -> Result<(), Denial> {
        if self.touches_secret(resolved, rule) {
            return Err(Denial::SecretPath(raw.to_string()));
        }
        Ok(())
    }

    fn same_file_as_secret(&self, resolved: &Path) -> bool {
        let Ok(meta) = fs::metadata(resolved) else {
            return false;
        };
        if !meta.is_file() {
            return false;
        }
        self.secrets.iter().any(|s| {
            fs::metadata(s)
                .map(|m| m.dev() == meta.dev() && m.ino() == meta.ino())
                .unwrap_or(false)
        })
    }

    /// Resolves `raw` relative to `base` (see the module doc).
    pub fn resolve(&self, raw: &str, base: &Path) -> Result<PathBuf, Denial> {
        if raw.is_empty() || raw.contains('\0') {
            return Err(Denial::Unresolvable(raw.to_string()));
        }
        let path = Path::new(raw);
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            base.join(path)
        };
        resolve_existing_prefix(&absolute).map_err(|_| Denial::Unresolvable(raw.to_string()))
    }

    fn outside(&self, raw: &str, base: &Path) -> Denial {
        self.outside_of(raw, base, &self.read_roots)
    }

    /// Names the way out: `..`, a symlink, or a plain outside path.
    fn outside_of(&self, raw: &str, base: &Path, roots: &[PathBuf]) -> Denial {
        let path = Path::new(raw);
        if path.components().any(|c| c == Component::ParentDir) {
            let lexical = normalize_lexically(&base.join(path));
            if !roots.iter().any(|r| lexical.starts_with(r)) {
                return Denial::PathTraversal(raw.to_string());
            }
        }
        let lexical = normalize_lexically(&if path.is_absolute() {
            path.to_path_buf()
        } else {
            base.join(path)
        });
        if roots.iter().any(|r| lexical.starts_with(r)) {
            Denial::SymlinkEscape(raw.to_string())
        } else {
            Denial::PathOutsideRoots(raw.to_string())
        }
    }
}

/// A write target that would change how `git` behaves when run by `exec`: anything under a
/// `.git` component, and `$HOME/.gitconfig` / `$HOME/.config/` (HOME is the work repo).
fn is_protected(inside_work_repo: &Path) -> bool {
    let mut components = inside_work_repo.components();
    let first = components.next();
    if let Some(Component::Normal(name)) = first {
        if name == ".gitconfig" || name == ".config" {
            return true;
        }
    }
    inside_work_repo
        .components()
        .any(|c| matches!(c, Component::Normal(n) if n == ".git"))
}

/// Canonicalises the longest existing prefix of an absolute path and appends the rest. The
/// rest may not contain `.`/`..`; a prefix that exists but cannot be canonicalised (a dangling
/// symlink, no permission) is an error.
pub fn resolve_existing_prefix(absolute: &Path) -> io::Result<PathBuf> {
    let mut prefix = absolute.to_path_buf();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    loop {
        match fs::canonicalize(&prefix) {
            Ok(mut canonical) => {
                for part in rest.iter().rev() {
                    canonical.push(part);
                }
                return Ok(canonical);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if fs::symlink_metadata(&prefix).is_ok() {
                    return Err(io::Error::new(io::ErrorKind::NotFound, "dangling symlink"));
                }
                match prefix.components().next_back() {
                    Some(Component::Normal(name)) => rest.push(name.to_os_string()),
                    _ => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "missing path with '.' or '..'",
                        ))
                    }
                }
                if !prefix.pop() {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Like [`resolve_existing_prefix`], falling back to the lexical form (for configured roots).
fn resolve_lenient(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    resolve_existing_prefix(&absolute).unwrap_or_else(|_| normalize_lexically(&absolute))
}

/// Applies `.` and `..` without touching the file system.
pub fn normalize_lexically(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}
