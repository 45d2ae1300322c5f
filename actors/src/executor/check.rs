//! The whole `exec` check: from the model's `command` and `working_dir` to a
//! [`CheckedCommand`] or a [`Denial`]. Pure except for path resolution (and reading the
//! pinned git config for an old git, see `git`).
//!
//! Order: syntax scan → split → globs → program (bare name on the allow-list, launchers never
//! are) → argument rules → working directory → every path-like argument → (git) the pinned
//! repository, its environment and overrides.

use std::path::{Path, PathBuf};

use super::command::{self, Denial};
use super::git::GitPin;
use super::paths::{Confinement, SecretRule};
use super::rules::{AllowList, AllowListWarning, ProgramRule};
use super::sandbox::{self, ChildAccess};

/// A command that passed every check: run `program` with `argv[1..]` in `cwd`, never a shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedCommand {
    /// The canonical absolute path of the program, resolved when the checker was built.
    pub program: PathBuf,
    /// The arguments, `argv[0]` being the bare program name as allowed.
    pub argv: Vec<String>,
    /// The canonical working directory.
    pub cwd: PathBuf,
    /// Variables the child gets besides `PATH`, `HOME` and `LANG` (git's pinning).
    pub env: Vec<(String, String)>,
    /// What the kernel lets the child do beyond reading the roots.
    pub access: ChildAccess,
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
    /// What the allowed git can do (probed once).
    git: GitPin,
}

impl CommandChecker {
    /// A checker for the names in `allow`; names that cannot be allowed come back as warnings.
    pub fn new(
        allow: &[String],
        confinement: Confinement,
        restrict_workspace: bool,
    ) -> (Self, Vec<AllowListWarning>) {
        let (allow, warnings) = AllowList::resolve(allow);
        let git = match allow.get("git") {
            Some(git) => {
                GitPin::from_version_output(sandbox::program_version(&git.path).as_deref())
            }
            None => GitPin::from_version_output(None),
        };
        (
            Self {
                allow,
                confinement,
                restrict_workspace,
                git,
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

    /// Test-only: pretend the allowed git is this one.
    #[cfg(test)]
    pub(crate) fn set_git_for_test(&mut self, path: &Path) {
        self.allow.insert_for_test("git", path);
        self.git = GitPin::from_version_output(sandbox::program_version(path).as_deref());
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
        let mut argv = command::split(command)?;
        let name = argv[0].clone();
        let allowed = self.allow.get(&name);
        let rule = allowed.map_or_else(|| ProgramRule::for_name(&name), |p| p.rule);
        if !rule.allows_globs() {
            if let Some(g) = argv.iter().find_map(|a| command::glob_char(a)) {
                return Err(Denial::Glob(g));
            }
        }
        if name.contains('/') {
            return Err(Denial::ProgramPath(name));
        }
        let Some(program) = allowed else {
            return Err(Denial::ProgramNotAllowed(name));
        };
        rule.check(&name, &argv[1..])?;
        let cwd = self.working_dir(working_dir)?;
        // A program that may write must not run inside git metadata: it could create files
        // there that no argument names (`curl -O`).
        if rule.writes_work_repo() && self.confinement.is_protected(&cwd) {
            return Err(Denial::ProtectedPath(
                working_dir.unwrap_or_default().to_string(),
            ));
        }
        for arg in &argv[1..] {
            self.check_path_arg(arg, &cwd, rule)?;
        }
        let mut env = Vec::new();
        if rule == ProgramRule::Git {
            env = self
                .git
                .pin(self.confinement.work_repo(), &cwd, &mut argv)?;
        }
        argv.splice(1..1, rule.injected_args().iter().map(|s| s.to_string()));
        Ok(CheckedCommand {
            program: program.path.clone(),
            argv,
            cwd,
            env,
            access: ChildAccess {
                write_work_repo: rule.writes_work_repo(),
                network: rule.uses_network(),
            },
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
    /// `--opt=value` or `name=value` (`dd if=…`), and every suffix of a single-dash cluster
    /// (`-f/etc/shadow`).
    fn check_path_arg(&self, arg: &str, cwd: &Path, rule: ProgramRule) -> Result<(), Denial> {
        if let Some(rest) = arg.strip_prefix("--") {
            if let Some((_, value)) = rest.split_once('=') {
                return self.check_candidate(value, cwd, rule);
            }
            return Ok(());
        }
        if arg.len() > 1 && arg.starts_with('-') {
            for (i, _) in arg.char_indices().skip(2) {
                self.check_candidate(&arg[i..], cwd, rule)?;
            }
            return Ok(());
        }
        if let Some((_, value)) = arg.split_once('=') {
            self.check_candidate(value, cwd, rule)?;
        }
        self.check_candidate(arg, cwd, rule)
    }

    fn check_candidate(
        &self,
        candidate: &str,
        cwd: &Path,
        rule: ProgramRule,
    ) -> Result<(), Denial> {
        if candidate.is_empty() {
            return Ok(());
        }
        let looks_like_path = candidate.contains('/')
            || candidate.starts_with('.')
            || std::fs::symlink_metadata(cwd.join(candidate)).is_ok();
        if !looks_like_path {
            return Ok(());
        }
        let resolved = self.confinement.check_read(
            candidate,
            cwd,
            self.restrict_workspace,
            SecretRule::AlsoAncestors,
        )?;
        // A program that may write must not be pointed at git metadata or configuration.
        if rule.writes_work_repo() && self.confinement.is_protected(&resolved) {
            return Err(Denial::ProtectedPath(candidate.to_string()));
        }
        Ok(())
    }
}
