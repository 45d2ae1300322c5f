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
use super::launchers::{self, RefusedProgram, Verdict};

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
    // Options that name a program to run, in programs that are not launchers otherwise
    // (`sort`, `diff3`/`sdiff`) or that are refused anyway (belt and braces).
    "--compress-program",
    "--diff-program",
    "--use-compress-program",
    "--to-command",
    "--rsh-command",
    "--rmt-command",
    "--info-script",
    "--new-volume-script",
    "--checkpoint-action",
    "--rsync-path",
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

/// Words refused anywhere in a `find` command: they run programs, delete, write files, or
/// follow symlinks out of the tree (`-L`, `-follow`), or read the start points from a file.
const FIND_DENIED_WORDS: &[&str] = &[
    "-exec",
    "-execdir",
    "-ok",
    "-okdir",
    "-delete",
    "-fprint",
    "-fprint0",
    "-fprintf",
    "-fls",
    "-L",
    "-follow",
    "-files0-from",
];

/// Programs known to only read (and print): the kernel gives them the work repo read-only, and
/// the forms of them that would write are refused by name (`check_reader`) for hosts where the
/// kernel does not confine them.
const READERS: &[&str] = &[
    "cat",
    "head",
    "tail",
    "wc",
    "echo",
    "pwd",
    "printf",
    "stat",
    "du",
    "tree",
    "sort",
    "uniq",
    "cut",
    "tr",
    "diff",
    "cmp",
    "comm",
    "md5sum",
    "sha1sum",
    "sha256sum",
    "sha512sum",
    "b2sum",
    "basename",
    "dirname",
    "realpath",
    "readlink",
    "nl",
    "tac",
    "od",
    "xxd",
    "hexdump",
    "strings",
    "column",
    "join",
    "paste",
    "fold",
    "fmt",
    "expand",
    "unexpand",
    "jq",
    "date",
    "true",
    "false",
    "file",
    "dir",
    "vdir",
];

/// The rule set of one program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramRule {
    /// `git`: read subcommands only, no configuration or repository switches; pinned to the
    /// work repo's own repository (see `git`).
    Git,
    /// `rg`: no preprocessors, no decompression helpers, no following symlinks.
    Ripgrep,
    /// `grep`: no dereferencing recursion.
    Grep,
    /// `ls`: no dereferencing (`ls -RL` would walk a symlink out of the tree).
    Ls,
    /// `find`: none of the words that run programs, delete, write or follow symlinks.
    Find,
    /// `sed`: always `--sandbox` (no `e`, `w`, `r` commands), never `-i`.
    Sed,
    /// A program known to only read: normal flags, minus the refused-for-all options.
    Reader,
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
            // `dir` and `vdir` are `ls` with other defaults.
            "ls" | "dir" | "vdir" => ProgramRule::Ls,
            "find" => ProgramRule::Find,
            "sed" => ProgramRule::Sed,
            n if READERS.contains(&n) => ProgramRule::Reader,
            _ => ProgramRule::Plain,
        }
    }

    /// Whether the kernel lets the program write the work repo. Only programs KafClaw does
    /// not know get write access; every known rule reads.
    pub fn writes_work_repo(self) -> bool {
        self == ProgramRule::Plain
    }

    /// Whether the kernel lets the program open TCP connections or listen (no rule does).
    pub fn uses_network(self) -> bool {
        false
    }

    /// Arguments put right after `argv[0]` (before the model's): `sed --sandbox`.
    pub fn injected_args(self) -> &'static [&'static str] {
        match self {
            ProgramRule::Sed => &["--sandbox"],
            _ => &[],
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
            ProgramRule::Plain | ProgramRule::Reader => &["--files0-from"],
            ProgramRule::Ls => &["--dereference"],
            ProgramRule::Sed => &["--in-place", "--sandbox"],
            ProgramRule::Git | ProgramRule::Find => &[],
        }
    }

    fn denied_short(self) -> &'static [char] {
        match self {
            ProgramRule::Ripgrep => &['z', 'L'],
            ProgramRule::Grep => &['R'],
            ProgramRule::Ls => &['L'],
            ProgramRule::Sed => &['i'],
            ProgramRule::Git | ProgramRule::Plain | ProgramRule::Reader | ProgramRule::Find => &[],
        }
    }

    /// Checks `args` (argv without the program) against the rule.
    pub fn check(self, program: &str, args: &[String]) -> Result<(), Denial> {
        match self {
            ProgramRule::Git => check_git(args),
            // `find` has no end of options: every word counts, wherever it is.
            ProgramRule::Find => match args
                .iter()
                .find(|a| FIND_DENIED_WORDS.contains(&a.as_str()))
            {
                Some(word) => Err(denied(program, word)),
                None => Ok(()),
            },
            _ => {
                for arg in options(args) {
                    check_common(program, arg, self.denied_long(), self.denied_short())?;
                }
                if self == ProgramRule::Reader {
                    check_reader(program, args)?;
                }
                Ok(())
            }
        }
    }
}

/// The writing forms of programs on the readers' list, refused by name: without Landlock the
/// path checks read every argument as a file to read, so `sort -o .git/config x` or
/// `uniq x .git/info/attributes` would write where no writer may (and set git up to run a
/// program). Per program: (short options that write or run, short options whose value
/// follows, long options that write or run, whether a second operand is an output file,
/// options whose value is the next word).
struct ReaderWrites {
    short: &'static [char],
    short_values: &'static [char],
    long: &'static [&'static str],
    output_operand: bool,
    value_words: &'static [&'static str],
}

fn reader_writes(program: &str) -> Option<ReaderWrites> {
    Some(match program {
        // `-o FILE` writes, `-T DIR` writes temporaries, `--compress-program` runs a program.
        "sort" => ReaderWrites {
            short: &['o', 'T'],
            short_values: &['k', 't', 'S'],
            long: &["--output", "--temporary-directory", "--compress-program"],
            output_operand: false,
            value_words: &[],
        },
        // `-o FILE` writes the listing.
        "tree" => ReaderWrites {
            short: &['o'],
            short_values: &['L', 'P', 'I', 'H', 'T'],
            long: &["--output"],
            output_operand: false,
            value_words: &[],
        },
        // `-C` compiles the magic file into `magic.mgc` in the working directory.
        "file" => ReaderWrites {
            short: &['C'],
            short_values: &['e', 'F', 'f', 'm', 'P'],
            long: &["--compile"],
            output_operand: false,
            value_words: &[],
        },
        // `-s` sets the system clock (a root gateway would).
        "date" => ReaderWrites {
            short: &['s'],
            short_values: &['d', 'f', 'I', 'r'],
            long: &["--set"],
            output_operand: false,
            value_words: &[],
        },
        // `uniq [INPUT [OUTPUT]]`.
        "uniq" => ReaderWrites {
            short: &[],
            short_values: &['f', 's', 'w'],
            long: &[],
            output_operand: true,
            value_words: &["--skip-fields", "--skip-chars", "--check-chars"],
        },
        // `xxd [INFILE [OUTFILE]]` (its options are single-dash words).
        "xxd" => ReaderWrites {
            short: &[],
            short_values: &[],
            long: &[],
            output_operand: true,
            value_words: &[
                "-c",
                "-cols",
                "-g",
                "-groupsize",
                "-l",
                "-len",
                "-o",
                "-offset",
                "-s",
                "-seek",
                "-n",
                "-name",
                "-R",
            ],
        },
        _ => return None,
    })
}

/// Refuses the writing forms of a reader ([`reader_writes`]).
fn check_reader(program: &str, args: &[String]) -> Result<(), Denial> {
    let Some(writes) = reader_writes(program) else {
        return Ok(());
    };
    let mut operands = 0;
    let mut value_next = false;
    let mut options_done = false;
    for arg in args {
        if value_next {
            value_next = false;
            continue;
        }
        if !options_done && arg == "--" {
            options_done = true;
            continue;
        }
        if !options_done && arg.len() > 1 && arg.starts_with('-') {
            if writes.value_words.contains(&arg.as_str()) {
                value_next = true;
                continue;
            }
            if arg.starts_with("--") {
                if writes.long.iter().any(|d| long_matches(long_name(arg), d)) {
                    return Err(denied(program, arg));
                }
                continue;
            }
            if program == "xxd" {
                continue;
            }
            for (at, c) in arg.char_indices().skip(1) {
                if writes.short.contains(&c) {
                    return Err(denied(program, arg));
                }
                if writes.short_values.contains(&c) {
                    // The rest of the word is the value, or the next word is.
                    value_next = at + c.len_utf8() == arg.len();
                    break;
                }
            }
            continue;
        }
        operands += 1;
        if writes.output_operand && operands > 1 {
            return Err(Denial::DeniedOption {
                program: program.to_string(),
                option: format!("{arg} (an output file)"),
            });
        }
    }
    Ok(())
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

/// The words of `git branch …` that are not the value of an option given as two words
/// (`--format -l` is a format, not `-l`).
fn git_branch_words(args: &[String]) -> impl Iterator<Item = &String> {
    let mut expect_value = false;
    args.iter().filter(move |arg| {
        if expect_value {
            expect_value = false;
            return false;
        }
        if arg.starts_with("--")
            && GIT_BRANCH_VALUE_OPTIONS.contains(&long_name(arg))
            && !arg.contains('=')
        {
            expect_value = true;
        }
        true
    })
}

fn check_git_branch(args: &[String]) -> Result<(), Denial> {
    let listing = git_branch_words(args).any(|a| {
        a == "--list"
            || a == "-l"
            || (a.starts_with('-') && !a.starts_with("--") && a.contains('l'))
    });
    for arg in git_branch_words(args) {
        if arg.starts_with("--") {
            let name = long_name(arg);
            if GIT_BRANCH_DENIED_LONG.iter().any(|d| long_matches(name, d)) {
                return Err(Denial::GitBranchNotListing(arg.clone()));
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

/// One allowed program: where it is and the rule its arguments follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedProgram {
    /// The canonical path of the executable found first on [`FIXED_PATH`].
    pub path: PathBuf,
    /// Its rule, chosen from the name and the canonical target (see `launchers`).
    pub rule: ProgramRule,
}

/// Allowed program names, each resolved once to a canonical absolute path.
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    /// Name → the program.
    programs: BTreeMap<String, AllowedProgram>,
}

/// A configured name that could not be allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowListWarning {
    /// The name is not a bare program name (contains `/`, starts with `.` or `-`, …).
    InvalidName(String),
    /// No executable of that name on [`FIXED_PATH`].
    NotFound(String),
    /// The program starts other programs (the gateway refuses to start with one listed).
    Launcher(RefusedProgram),
}

impl std::fmt::Display for AllowListWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AllowListWarning::InvalidName(name) => write!(
                f,
                "tools.exec.allow names {name:?}, which is not a bare program name; it is left out"
            ),
            AllowListWarning::NotFound(name) => write!(
                f,
                "tools.exec.allow names {name}, which is not installed on {FIXED_PATH}; the agent cannot run it until it is installed"
            ),
            AllowListWarning::Launcher(refused) => write!(
                f,
                "tools.exec.allow names a program that starts other programs: {refused}"
            ),
        }
    }
}

impl AllowList {
    /// Resolves `names` against [`FIXED_PATH`]; names not found, not valid or launchers are
    /// dropped and returned as warnings.
    pub fn resolve(names: &[String]) -> (Self, Vec<AllowListWarning>) {
        let mut programs = BTreeMap::new();
        let mut warnings = Vec::new();
        let launchers = launchers::LauncherIndex::scan();
        for name in names {
            if !is_bare_name(name) {
                warnings.push(AllowListWarning::InvalidName(name.clone()));
                continue;
            }
            let Some(path) = find_executable(name) else {
                warnings.push(AllowListWarning::NotFound(name.clone()));
                continue;
            };
            match launchers::classify_in(name, &path, &launchers) {
                Verdict::Tool(rule) => {
                    programs.insert(name.clone(), AllowedProgram { path, rule });
                }
                Verdict::Launcher(why) => {
                    warnings.push(AllowListWarning::Launcher(RefusedProgram {
                        name: name.clone(),
                        target: Some(path),
                        why,
                    }))
                }
            }
        }
        (Self { programs }, warnings)
    }

    /// The allowed program of a name.
    pub fn get(&self, name: &str) -> Option<&AllowedProgram> {
        self.programs.get(name)
    }

    /// The allowed names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.programs.keys().map(String::as_str)
    }

    /// Test-only: allows `name` as `path` (to exercise a program's rules where it is not
    /// installed).
    #[cfg(test)]
    pub(crate) fn insert_for_test(&mut self, name: &str, path: &Path) {
        let program = AllowedProgram {
            path: path.to_path_buf(),
            rule: ProgramRule::for_name(name),
        };
        self.programs.insert(name.to_string(), program);
    }
}

fn is_bare_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'))
}

/// The canonical path of the first executable `name` on [`FIXED_PATH`].
pub(super) fn find_executable(name: &str) -> Option<PathBuf> {
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
