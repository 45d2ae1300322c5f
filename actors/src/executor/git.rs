//! git pinned to the work repo's own repository: git never discovers a repository and never
//! reads configuration or attributes from a place a tool can write.
//!
//! Owns: the environment and the `-c` overrides of every git child, the refusal of working
//! directories that are (or lie inside, or hold) another git directory, and the fallback for
//! a git too old to ignore work-tree `.gitattributes`.
//! Must not: spawn git (the version is probed by `sandbox`), or decide which subcommands may
//! run (that is `rules`).
//!
//! Why this closes the class: git runs programs and reads paths only as its configuration and
//! attributes say. With `GIT_DIR`/`GIT_WORK_TREE` set, git does no discovery at all, so a
//! repository skeleton planted with `write_file` is never read; the only configuration left
//! is the pinned `.git/config` (tools cannot write under `.git`), the command line (ours) and
//! nothing else (`GIT_CONFIG_NOSYSTEM`, `GIT_CONFIG_GLOBAL=/dev/null`, the child's
//! environment is cleared). Attributes come from the pinned `info/attributes` and, for git ≥
//! 2.40, the empty tree instead of the work tree (`GIT_ATTR_SOURCE`, `attr.tree`), so an
//! agent-written `.gitattributes` cannot attach even a filter the operator defined. Older git
//! gets every filter the pinned config defines overridden to nothing, and is refused when
//! that config includes other files (they are not read here).

use std::fs;
use std::path::{Path, PathBuf};

use super::command::Denial;

/// git's well-known empty tree: attributes read from it are none.
pub const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// The first git that reads attributes from a tree instead of the work tree.
const ATTR_SOURCE_SINCE: (u32, u32) = (2, 40);

/// Put in front of every git subcommand: no pager, and every configuration key that names a
/// program or a path set to nothing (belt and braces: the pinned config is the operator's).
const OVERRIDES: &[&str] = &[
    "safe.bareRepository=explicit",
    "protocol.allow=never",
    "core.fsmonitor=false",
    "core.hooksPath=/dev/null",
    "core.pager=cat",
    "core.editor=false",
    "core.askPass=",
    "core.sshCommand=false",
    "core.gitProxy=",
    "core.attributesFile=/dev/null",
    "core.excludesFile=/dev/null",
    "core.alternateRefsCommand=",
    "core.untrackedCache=false",
    "diff.external=",
    "diff.orderFile=/dev/null",
    "gpg.program=false",
    "gpg.openpgp.program=false",
    "gpg.ssh.program=false",
    "gpg.x509.program=false",
    "gpg.ssh.allowedSignersFile=/dev/null",
    "gpg.ssh.defaultKeyCommand=false",
    "log.showSignature=false",
    "credential.helper=",
    "sequence.editor=false",
    "interactive.diffFilter=",
    "blame.ignoreRevsFile=",
    "mailmap.file=/dev/null",
    "mailmap.blob=",
    "submodule.recurse=false",
    "status.submoduleSummary=false",
    "gc.auto=0",
    "maintenance.auto=false",
];

/// Put right after `diff`, `log`, `show`: no external diff program, no textconv filter.
const DIFF_SAFETY_ARGS: &[&str] = &["--no-ext-diff", "--no-textconv"];
/// Put right after `blame`.
const BLAME_SAFETY_ARGS: &[&str] = &["--no-textconv"];

/// What the installed git can do, probed once at startup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitPin {
    /// `git --version`'s numbers, when it answered.
    version: Option<(u32, u32)>,
}

impl GitPin {
    /// From `git --version` output (`git version 2.47.3`).
    pub fn from_version_output(output: Option<&str>) -> Self {
        let version = output.and_then(|text| {
            let numbers = text.split_whitespace().nth(2)?;
            let mut parts = numbers.split('.');
            let major = parts.next()?.parse().ok()?;
            let minor = parts
                .next()?
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()?;
            Some((major, minor))
        });
        Self { version }
    }

    /// Whether git reads attributes from `GIT_ATTR_SOURCE` (2.40 and later).
    pub fn has_attr_source(&self) -> bool {
        self.version.is_some_and(|v| v >= ATTR_SOURCE_SINCE)
    }

    /// Pins one git call: checks `cwd`, rewrites `argv` (overrides, safety options) and
    /// returns the environment the child gets on top of `PATH`, `HOME` and `LANG`.
    pub fn pin(
        &self,
        work_repo: &Path,
        cwd: &Path,
        argv: &mut Vec<String>,
    ) -> Result<Vec<(String, String)>, Denial> {
        let git_dir = work_repo.join(".git");
        if !is_real_git_directory(&git_dir) {
            return Err(Denial::GitNoRepository);
        }
        if !cwd.starts_with(work_repo) {
            return Err(Denial::GitOutsideWorkRepo(cwd.display().to_string()));
        }
        check_working_dir(work_repo, &git_dir, cwd)?;

        let mut overrides: Vec<String> = OVERRIDES.iter().map(|s| s.to_string()).collect();
        if self.has_attr_source() {
            overrides.push(format!("attr.tree={EMPTY_TREE}"));
        } else {
            overrides.extend(neutralized_filters(&git_dir)?);
        }
        let mut global = vec!["--no-pager".to_string()];
        for o in overrides {
            global.push("-c".into());
            global.push(o);
        }
        argv.splice(1..1, global.iter().cloned());
        add_subcommand_safety(argv, 1 + global.len());

        let mut env = vec![
            ("GIT_DIR", git_dir.display().to_string()),
            ("GIT_WORK_TREE", work_repo.display().to_string()),
            (
                "GIT_CEILING_DIRECTORIES",
                work_repo
                    .parent()
                    .unwrap_or(work_repo)
                    .display()
                    .to_string(),
            ),
            ("GIT_CONFIG_NOSYSTEM", "1".into()),
            ("GIT_CONFIG_SYSTEM", "/dev/null".into()),
            ("GIT_CONFIG_GLOBAL", "/dev/null".into()),
            ("GIT_ATTR_NOSYSTEM", "1".into()),
            ("GIT_NO_REPLACE_OBJECTS", "1".into()),
            ("GIT_OPTIONAL_LOCKS", "0".into()),
            ("GIT_TERMINAL_PROMPT", "0".into()),
            ("GIT_NO_LAZY_FETCH", "1".into()),
            ("GIT_PROTOCOL_FROM_USER", "0".into()),
        ];
        if self.has_attr_source() {
            env.push(("GIT_ATTR_SOURCE", EMPTY_TREE.into()));
        }
        Ok(env.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }
}

/// After the global options (which end at `from`): the subcommand's own safety options.
fn add_subcommand_safety(argv: &mut Vec<String>, from: usize) {
    let Some(sub) = argv[from..]
        .iter()
        .position(|a| !a.starts_with('-'))
        .map(|i| i + from)
    else {
        return;
    };
    let extra: &[&str] = match argv[sub].as_str() {
        "diff" | "log" | "show" => DIFF_SAFETY_ARGS,
        "blame" => BLAME_SAFETY_ARGS,
        _ => &[],
    };
    argv.splice(sub + 1..sub + 1, extra.iter().map(|s| s.to_string()));
}

/// git's own test for a repository directory: `HEAD`, `objects/` and `refs/`.
fn looks_like_git_directory(dir: &Path) -> bool {
    dir.join("HEAD").exists() && dir.join("objects").is_dir() && dir.join("refs").is_dir()
}

/// The pinned `.git`: a real directory (not a symlink, not a `gitdir:` file) that is a
/// repository.
fn is_real_git_directory(git_dir: &Path) -> bool {
    fs::symlink_metadata(git_dir).is_ok_and(|m| m.is_dir()) && looks_like_git_directory(git_dir)
}

/// Refuses a working directory that is, lies inside, or holds a git directory other than the
/// pinned one, between `cwd` and the work repo.
fn check_working_dir(work_repo: &Path, git_dir: &Path, cwd: &Path) -> Result<(), Denial> {
    if cwd.starts_with(git_dir) {
        return Ok(());
    }
    let mut dir: Option<&Path> = Some(cwd);
    while let Some(d) = dir {
        if d == work_repo {
            break;
        }
        let named_git = d.file_name().is_some_and(|n| n == ".git");
        let holds_git = fs::symlink_metadata(d.join(".git")).is_ok();
        if named_git || holds_git || looks_like_git_directory(d) {
            return Err(Denial::GitDirectoryWorkingDir(shown(work_repo, d)));
        }
        dir = d.parent();
    }
    Ok(())
}

fn shown(work_repo: &Path, dir: &Path) -> String {
    dir.strip_prefix(work_repo)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| PathBuf::from(dir))
        .display()
        .to_string()
}

/// For git without `GIT_ATTR_SOURCE`: `-c` overrides that turn every filter the pinned
/// config defines into no filter. A config that includes other files is refused.
fn neutralized_filters(git_dir: &Path) -> Result<Vec<String>, Denial> {
    let text = fs::read_to_string(git_dir.join("config")).unwrap_or_default();
    if fs::symlink_metadata(git_dir.join("config.worktree")).is_ok() {
        return Err(Denial::GitConfigUnpinnable("config.worktree".into()));
    }
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(header) = line.strip_prefix('[') else {
            continue;
        };
        let header = header.split(']').next().unwrap_or_default().trim();
        let lower = header.to_ascii_lowercase();
        if lower.starts_with("include") {
            return Err(Denial::GitConfigUnpinnable(format!("[{header}]")));
        }
        let name = if let Some(rest) = lower.strip_prefix("filter") {
            let rest = rest.trim_start();
            if let Some(quoted) = rest.strip_prefix('"') {
                // Subsection names are case-sensitive: take them from the original text.
                let start = header.len() - rest.len() + 1;
                Some(header[start..start + quoted.trim_end_matches('"').len()].to_string())
            } else {
                rest.strip_prefix('.').map(str::to_string)
            }
        } else {
            None
        };
        if let Some(name) = name {
            if name.contains(['=', '\n', '\\']) {
                return Err(Denial::GitConfigUnpinnable(format!("[{header}]")));
            }
            for key in ["clean=", "smudge=", "process=", "required=false"] {
                out.push(format!("filter.{name}.{key}"));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
