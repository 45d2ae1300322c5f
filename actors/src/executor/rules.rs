//! The allow-list and the per-program argument rules of `exec`.
//!
//! Owns: which programs may run (resolved once to absolute paths from a fixed `PATH`), and which
//! of their options are refused.
//! Must not: touch the paths the arguments name (that is `paths`).
//!
//! Options are refused by name. A long option is also refused when it is an abbreviation
//! (at least `--` plus one character) of a refused one, because GNU `getopt_long` and git's
//! parse-options accept unambiguous prefixes (`grep --fil=…` is `--file=…`). Single-dash
//! clusters (`-nz`) are refused when any of their letters is a refused short option; this can
//! refuse a harmless value glued to an option (`rg -ez`), never the reverse.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::command::Denial;

/// The fixed search path for allowed programs (and the child's `PATH`).
pub const FIXED_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The default allow-list (`tools.exec.allow`).
pub const DEFAULT_ALLOW: [&str; 10] = [
    "git", "ls", "cat", "pwd", "rg", "grep", "head", "tail", "wc", "echo",
];

/// Options refused for every program: they name an output file, run another program or
/// open an editor or pager.
const DENIED_LONG_ALL: &[&str] = &[
    "--output",
    "--exec",
    "--exec-path",
    "--pager",
    "--editor",
    "--command",
    "--upload-pack",
    "--receive-pack",
    "--pre",
    "--pre-glob",
    "--hostname-bin",
];
/// Single-dash words in the style of `find` that run programs or delete files.
const DENIED_WORDS_ALL: &[&str] = &["-exec", "-execdir", "-ok", "-okdir", "-delete"];

/// The `git` subcommands that only read.
pub const GIT_READ_SUBCOMMANDS: &[&str] = &[
    "status",
    "log",
    "diff",
    "show",
    "branch",
    "ls-files",
    "blame",
    "rev-parse",
];
/// Global `git` options (before the subcommand) that are allowed; every other one is refused
/// (`-c`, `-C`, `--config-env`, `--git-dir`, `--work-tree`, `--namespace`, `-p`, …).
const GIT_GLOBAL_ALLOWED: &[&str] = &[
    "--no-pager",
    "-P",
    "--no-optional-locks",
    "--literal-pathspecs",
    "--no-replace-objects",
];
/// Options refused after any `git` subcommand.
const GIT_DENIED_LONG: &[&str] = &[
    "--output",
    "--ext-diff",
    "--textconv",
    "--no-index",
    "--paginate",
    "--open-files-in-pager",
    "--contents",
    "--git-dir",
    "--work-tree",
    "--exec-path",
    "--upload-pack",
    "--config-env",
];
/// Options refused after `git branch` (they create, delete, rename or configure branches).
const GIT_BRANCH_DENIED_LONG: &[&str] = &[
    "--delete",
    "--move",
    "--copy",
    "--force",
    "--set-upstream-to",
    "--unset-upstream",
    "--set-upstream",
    "--track",
    "--no-track",
    "--edit-description",
    "--create-reflog",
    "--recurse-submodules",
];
/// Short options refused after `git branch`.
const GIT_BRANCH_DENIED_SHORT: &[char] = &['d', 'D', 'm', 'M', 'c', 'C', 'u', 'f', 't'];
/// Options of `git branch` that take the next argument as their value (a commit or pattern).
const GIT_BRANCH_VALUE_OPTIONS: &[&str] = &[
    "--contains",
    "--no-contains",
    "--merged",
    "--no-merged",
    "--points-at",
    "--sort",
    "--format",
];

/// The rule set of one program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramRule {
    /// `git`: read subcommands only, no configuration or repository switches.
    Git,
    /// `rg`: no preprocessors, no decompression helpers, no following symlinks.
    Ripgrep,
    /// `grep`: no dereferencing recursion.
    Grep,
    /// `ls`: no dereferencing (`ls -RL` would walk a symlink out of the tree).
    Ls,
    /// Everything else on the allow-list: normal flags, minus the refused-for-all options.
    Plain,
}

impl ProgramRule {
    /// The rule for a program name.
    pub fn for_name(name: &str) -> Self {
        match name {
            "git" => ProgramRule::Git,
            "rg" => ProgramRule::Ripgrep,
            "grep" => ProgramRule::Grep,
            "ls" => ProgramRule::Ls,
            _ => ProgramRule::Plain,
        }
    }

    /// Whether glob characters may appear in the arguments (none by default).
    pub fn allows_globs(self) -> bool {
        false
    }

    fn denied_long(self) -> &'static [&'static str] {
        match self {
            ProgramRule::Ripgrep => &["--search-zip", "--follow"],
            ProgramRule::Grep => &["--dereference-recursive"],
            // `wc --files0-from=F` reads the names of the files to open from F, past every
            // path check. (Not refused for grep: its `--file` would read as an abbreviation.)
            ProgramRule::Plain => &["--files0-from"],
            ProgramRule::Ls => &["--dereference"],
            ProgramRule::Git => &[],
        }
    }

    fn denied_short(self) -> &'static [char] {
        match self {
            ProgramRule::Ripgrep => &['z', 'L'],
            ProgramRule::Grep => &['R'],
            ProgramRule::Ls => &['L'],
            ProgramRule::Git | ProgramRule::Plain => &[],
        }
    }

    /// Checks `args` (argv without the program) against the rule.
    pub fn check(self, program: &str, args: &[String]) -> Result<(), Denial> {
        match self {
            ProgramRule::Git => check_git(args),
            _ => {
                for arg in options(args) {
                    check_common(program, arg, self.denied_long(), self.denied_short())?;
                }
                Ok(())
            }
        }
    }
}

/// The arguments before a `--` end-of-options marker.
fn options(args: &[String]) -> impl Iterator<Item = &String> {
    args.iter().take_while(|a| a.as_str() != "--")
}

fn denied(program: &str, option: &str) -> Denial {
    Denial::DeniedOption {
        program: program.to_string(),
        option: option.to_string(),
    }
}

/// The name part of a long option (`--opt=value` → `--opt`).
fn long_name(arg: &str) -> &str {
    arg.split_once('=').map_or(arg, |(name, _)| name)
}

/// Whether the long option `name` is `denied` or an abbreviation of it.
fn long_matches(name: &str, denied: &str) -> bool {
    name == denied || (name.len() > 2 && denied.starts_with(name))
}

fn check_common(
    program: &str,
    arg: &str,
    denied_long: &[&str],
    denied_short: &[char],
) -> Result<(), Denial> {
    if let Some(rest) = arg.strip_prefix("--") {
        if rest.is_empty() {
            return Ok(());
        }
        let name = long_name(arg);
        if DENIED_LONG_ALL
            .iter()
            .chain(denied_long)
            .any(|d| long_matches(name, d))
        {
            return Err(denied(program, arg));
        }
    } else if let Some(cluster) = arg.strip_prefix('-') {
        if DENIED_WORDS_ALL.contains(&arg) || cluster.chars().any(|c| denied_short.contains(&c)) {
            return Err(denied(program, arg));
        }
    }
    Ok(())
}

fn check_git(args: &[String]) -> Result<(), Denial> {
    // Global options, up to the subcommand.
    let mut index = 0;
    while let Some(arg) = args.get(index) {
        if !arg.starts_with('-') {
            break;
        }
        if !GIT_GLOBAL_ALLOWED.contains(&arg.as_str()) {
            return Err(denied("git", arg));
        }
        index += 1;
    }
    let Some(sub) = args.get(index) else {
        return Err(Denial::GitSubcommandNotAllowed(String::new()));
    };
    if !GIT_READ_SUBCOMMANDS.contains(&sub.as_str()) {
        return Err(Denial::GitSubcommandNotAllowed(sub.clone()));
    }
    let rest = &args[index + 1..];
    let log_like = matches!(sub.as_str(), "log" | "diff" | "show");
    for arg in options(rest) {
        if arg.starts_with("--") {
            check_common("git", arg, GIT_DENIED_LONG, &[])?;
        } else if let Some(cluster) = arg.strip_prefix('-') {
            // `-c`/`-C` after the subcommand are harmless for most subcommands, but `-p`
            // before it pages and `-o` names an output file for log-like ones.
            if log_like && cluster.starts_with('o') {
                return Err(denied("git", arg));
            }
            check_common("git", arg, &[], &[])?;
        }
    }
    if sub == "branch" {
        check_git_branch(rest)?;
    }
    Ok(())
}

fn check_git_branch(args: &[String]) -> Result<(), Denial> {
    let listing = args.iter().any(|a| {
        a == "--list"
            || a == "-l"
            || (a.starts_with('-') && !a.starts_with("--") && a.contains('l'))
    });
    let mut expect_value = false;
    for arg in args {
        if expect_value {
            expect_value = false;
            continue;
        }
        if arg.starts_with("--") {
            let name = long_name(arg);
            if GIT_BRANCH_DENIED_LONG.iter().any(|d| long_matches(name, d)) {
                return Err(Denial::GitBranchNotListing(arg.clone()));
            }
            if GIT_BRANCH_VALUE_OPTIONS.contains(&name) && !arg.contains('=') {
                expect_value = true;
            }
        } else if let Some(cluster) = arg.strip_prefix('-') {
            if cluster
                .chars()
                .any(|c| GIT_BRANCH_DENIED_SHORT.contains(&c))
            {
                return Err(Denial::GitBranchNotListing(arg.clone()));
            }
        } else if !listing {
            // A positional argument without --list names a branch to create.
            return Err(Denial::GitBranchNotListing(arg.clone()));
        }
    }
    Ok(())
}

/// Allowed program names, each resolved once to a canonical absolute path.
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    /// Name → canonical path of the executable found first on [`FIXED_PATH`].
    programs: BTreeMap<String, PathBuf>,
}

/// A configured name that could not be allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowListWarning {
    /// The name is not a bare program name (contains `/`, starts with `.` or `-`, …).
    InvalidName(String),
    /// No executable of that name on [`FIXED_PATH`].
    NotFound(String),
}

impl AllowList {
    /// Resolves `names` against [`FIXED_PATH`]; names not found or not valid are dropped and
    /// returned as warnings.
    pub fn resolve(names: &[String]) -> (Self, Vec<AllowListWarning>) {
        let mut programs = BTreeMap::new();
        let mut warnings = Vec::new();
        for name in names {
            if !is_bare_name(name) {
                warnings.push(AllowListWarning::InvalidName(name.clone()));
                continue;
            }
            match find_executable(name) {
                Some(path) => {
                    programs.insert(name.clone(), path);
                }
                None => warnings.push(AllowListWarning::NotFound(name.clone())),
            }
        }
        (Self { programs }, warnings)
    }

    /// The resolved path of an allowed name.
    pub fn get(&self, name: &str) -> Option<&Path> {
        self.programs.get(name).map(PathBuf::as_path)
    }

    /// The allowed names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.programs.keys().map(String::as_str)
    }

    /// Test-only: allows `name` as `path` (to exercise a program's rules where it is not
    /// installed).
    #[cfg(test)]
    pub(crate) fn insert_for_test(&mut self, name: &str, path: &Path) {
        self.programs.insert(name.to_string(), path.to_path_buf());
    }
}

fn is_bare_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'))
}

fn find_executable(name: &str) -> Option<PathBuf> {
    FIXED_PATH.split(':').find_map(|dir| {
        let candidate = Path::new(dir).join(name);
        let meta = fs::metadata(&candidate).ok()?;
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            fs::canonicalize(&candidate).ok()
        } else {
            None
        }
    })
}
