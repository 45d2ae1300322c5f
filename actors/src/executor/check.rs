//! The whole `exec` check: from the model's `command` and `working_dir` to a
//! [`CheckedCommand`] or a [`Denial`]. Pure except for path resolution.
//!
//! Order: syntax scan → split → globs → program (bare name on the allow-list) → argument rules
//! → working directory → every path-like argument → (git) the repository git would use.

use std::path::{Path, PathBuf};

use super::command::{self, Denial};
use super::paths::{Confinement, SecretRule};
use super::rules::{AllowList, AllowListWarning, ProgramRule};

/// `git -c` overrides put in front of every git command: repository configuration must not
/// run programs (the agent cannot write `.git/` or `.gitconfig`, but an existing repository
/// might carry such settings).
const GIT_SAFETY_ARGS: &[&str] = &[
    "--no-pager",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.pager=cat",
    "-c",
    "protocol.allow=never",
];
/// Put right after `diff`, `log` and `show`: no external diff program, no textconv filter.
const GIT_DIFF_SAFETY_ARGS: &[&str] = &["--no-ext-diff", "--no-textconv"];

/// A command that passed every check: run `program` with `argv[1..]` in `cwd`, never a shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedCommand {
    /// The canonical absolute path of the program, resolved when the checker was built.
    pub program: PathBuf,
    /// The arguments, `argv[0]` being the bare program name as allowed.
    pub argv: Vec<String>,
    /// The canonical working directory.
    pub cwd: PathBuf,
}

/// Checks `exec` commands against the allow-list, the argument rules and the confinement.
#[derive(Clone, Debug)]
pub struct CommandChecker {
    /// The allowed programs, resolved once.
    allow: AllowList,
    /// Where paths may point.
    confinement: Confinement,
    /// `tools.exec.restrict_workspace`: paths must resolve inside the roots.
    restrict_workspace: bool,
}

impl CommandChecker {
    /// A checker for the names in `allow`; names that cannot be allowed come back as warnings.
    pub fn new(
        allow: &[String],
        confinement: Confinement,
        restrict_workspace: bool,
    ) -> (Self, Vec<AllowListWarning>) {
        let (allow, warnings) = AllowList::resolve(allow);
        (
            Self {
                allow,
                confinement,
                restrict_workspace,
            },
            warnings,
        )
    }

    /// The allow-list as resolved.
    pub fn allow_list(&self) -> &AllowList {
        &self.allow
    }

    /// Test-only: the allow-list, to add programs that are not installed.
    #[cfg(test)]
    pub(crate) fn allow_list_mut(&mut self) -> &mut AllowList {
        &mut self.allow
    }

    /// The confinement in force.
    pub fn confinement(&self) -> &Confinement {
        &self.confinement
    }

    /// Checks one command. `working_dir` is relative to the work repo (default: the work repo).
    pub fn check(
        &self,
        command: &str,
        working_dir: Option<&str>,
    ) -> Result<CheckedCommand, Denial> {
        let argv = command::split(command)?;
        let name = argv[0].as_str();
        let rule = ProgramRule::for_name(name);
        if !rule.allows_globs() {
            if let Some(g) = argv.iter().find_map(|a| command::glob_char(a)) {
                return Err(Denial::Glob(g));
            }
        }
        if name.contains('/') {
            return Err(Denial::ProgramPath(name.to_string()));
        }
        let Some(program) = self.allow.get(name) else {
            return Err(Denial::ProgramNotAllowed(name.to_string()));
        };
        rule.check(name, &argv[1..])?;
        let cwd = self.working_dir(working_dir)?;
        for arg in &argv[1..] {
            self.check_path_arg(arg, &cwd)?;
        }
        let mut argv = argv;
        if rule == ProgramRule::Git {
            self.check_git_repository(&cwd)?;
            argv.splice(1..1, GIT_SAFETY_ARGS.iter().map(|s| s.to_string()));
            let sub = argv[1..]
                .iter()
                .position(|a| !a.starts_with('-') && !a.contains('='))
                .map(|i| i + 1);
            if let Some(sub) = sub {
                if matches!(argv[sub].as_str(), "diff" | "log" | "show") {
                    argv.splice(
                        sub + 1..sub + 1,
                        GIT_DIFF_SAFETY_ARGS.iter().map(|s| s.to_string()),
                    );
                }
            }
        }
        Ok(CheckedCommand {
            program: program.to_path_buf(),
            argv,
            cwd,
        })
    }

    fn working_dir(&self, working_dir: Option<&str>) -> Result<PathBuf, Denial> {
        let repo = self.confinement.work_repo();
        let cwd = match working_dir {
            None => repo.to_path_buf(),
            Some(raw) if raw.trim().is_empty() => repo.to_path_buf(),
            Some(raw) => {
                command::scan(raw)?;
                self.confinement.check_read(
                    raw,
                    repo,
                    self.restrict_workspace,
                    SecretRule::AlsoAncestors,
                )?
            }
        };
        if !cwd.is_dir() {
            return Err(Denial::WorkingDirectoryMissing(
                working_dir.unwrap_or_default().to_string(),
            ));
        }
        // Run with no path argument, most programs read the working directory itself.
        if self
            .confinement
            .touches_secret(&cwd, SecretRule::AlsoAncestors)
        {
            return Err(Denial::SecretPath(working_dir.unwrap_or(".").to_string()));
        }
        Ok(cwd)
    }

    /// Checks every part of `arg` that may name a path: the argument itself, the value of
    /// `--opt=value`, and every suffix of a single-dash cluster (`-f/etc/shadow`).
    fn check_path_arg(&self, arg: &str, cwd: &Path) -> Result<(), Denial> {
        if let Some(rest) = arg.strip_prefix("--") {
            if let Some((_, value)) = rest.split_once('=') {
                return self.check_candidate(value, cwd);
            }
            return Ok(());
        }
        if arg.len() > 1 && arg.starts_with('-') {
            for (i, _) in arg.char_indices().skip(2) {
                self.check_candidate(&arg[i..], cwd)?;
            }
            return Ok(());
        }
        self.check_candidate(arg, cwd)
    }

    fn check_candidate(&self, candidate: &str, cwd: &Path) -> Result<(), Denial> {
        if candidate.is_empty() {
            return Ok(());
        }
        let looks_like_path = candidate.contains('/')
            || candidate.starts_with('.')
            || std::fs::symlink_metadata(cwd.join(candidate)).is_ok();
        if !looks_like_path {
            return Ok(());
        }
        self.confinement
            .check_read(
                candidate,
                cwd,
                self.restrict_workspace,
                SecretRule::AlsoAncestors,
            )
            .map(|_| ())
    }

    /// The repository git would discover from `cwd` must be inside the roots: walk up from
    /// `cwd` and find a `.git` before leaving them.
    fn check_git_repository(&self, cwd: &Path) -> Result<(), Denial> {
        if !self.restrict_workspace {
            return Ok(());
        }
        let roots = self.confinement.read_roots();
        let mut dir = Some(cwd);
        while let Some(d) = dir {
            if !roots.iter().any(|r| d.starts_with(r)) {
                break;
            }
            if std::fs::symlink_metadata(d.join(".git")).is_ok() {
                return Ok(());
            }
            dir = d.parent();
        }
        Err(Denial::GitRepositoryOutsideRoots)
    }
}
