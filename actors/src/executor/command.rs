//! The first gate of `exec`: the raw command string, before and while it is split into argv.
//!
//! Owns: the closed list of reasons a command is refused ([`Denial`]), the lexical scan that
//! rejects shell syntax, and the split into argv (POSIX quoting, via `shell-words`).
//! Must not: look at the file system or at which program is named (that is `rules` and
//! `paths`).
//!
//! The rule on metacharacters is deliberately blunt: the characters below are rejected
//! *everywhere in the string, quoted or not*. The command never reaches a shell, so a quoted
//! `;` would be harmless to run, but accepting it would make the audit log and an approval
//! prompt show something that reads like a chained command. A model that needs a literal `;`
//! can write a file and point a tool at it.
//!
//! Rejected anywhere: `;` `|` `&` `>` `<` `` ` ``, `$` followed by a name character, a digit,
//! one of `{ ( ? ! # @ * - $` or a quote (variables, substitutions, special parameters,
//! `$'…'`), line breaks, NUL and every other ASCII control character except the horizontal
//! tab (a plain separator, like the space), and every non-ASCII character that is not a
//! letter or a digit (unicode spaces, zero-width and bidirectional-format characters,
//! look-alike punctuation) plus the whole fullwidth block (`；｜＆＞＜＄`, fullwidth letters).
//! Glob characters (`* ? [ ]`) and a `~` at the start of a word are checked after the split,
//! because a program rule may allow globs (none does by default).

use std::fmt;

/// The longest command accepted, in bytes.
pub const MAX_COMMAND_BYTES: usize = 4096;
/// The most arguments (including the program) accepted.
pub const MAX_ARGS: usize = 64;

/// Why a command (or a path given to a file tool) was refused. Each variant is one fact; the
/// `Display` form is the reason string given to the model and written to the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// The command is empty or only whitespace.
    Empty,
    /// The command is longer than [`MAX_COMMAND_BYTES`].
    TooLong {
        /// Its length in bytes.
        bytes: usize,
        /// The cap.
        max: usize,
    },
    /// More arguments than [`MAX_ARGS`].
    TooManyArguments {
        /// How many there were.
        count: usize,
        /// The cap.
        max: usize,
    },
    /// `;`, `|` or `&` (also `&&`, `||`): command chaining, pipes, background jobs.
    Chaining(char),
    /// `>` or `<`: redirection.
    Redirection(char),
    /// A backtick or `$(`: command substitution.
    CommandSubstitution,
    /// `$NAME`, `${…}`, `$1`, `$?`, `$'…'`: expansion of the (absent) shell's variables.
    VariableExpansion,
    /// A line feed or carriage return.
    LineBreak,
    /// A NUL byte.
    Nul,
    /// Another ASCII control character (vertical tab, form feed, escape, DEL, …).
    ControlCharacter(u8),
    /// A non-ASCII character that looks like ASCII punctuation or letters (fullwidth forms,
    /// small forms, Greek question mark, smart quotes, …).
    LookAlike {
        /// The character found.
        found: char,
        /// The ASCII character it imitates.
        imitates: char,
    },
    /// A unicode space, zero-width or bidirectional-format character.
    InvisibleOrSpace(char),
    /// Another non-ASCII character that is neither a letter nor a digit.
    NonAsciiSymbol(char),
    /// Quotes that are not closed (or a trailing backslash).
    UnbalancedQuotes,
    /// A glob character (`*`, `?`, `[`, `]`) for a program whose rule does not allow globs.
    Glob(char),
    /// A `~` at the start of a word or after `=` / `:` (home-directory expansion).
    TildeExpansion,
    /// The program contains a `/`: only bare names from the allow-list may run.
    ProgramPath(String),
    /// The program is not on the allow-list.
    ProgramNotAllowed(String),
    /// An option refused for this program (it names an output file, runs another program,
    /// changes the repository or configuration, or follows links out of the tree).
    DeniedOption {
        /// The program.
        program: String,
        /// The option as given.
        option: String,
    },
    /// `git` with no subcommand, or one that is not read-only.
    GitSubcommandNotAllowed(String),
    /// `git branch` asked to do something other than list branches.
    GitBranchNotListing(String),
    /// The work repo has no repository of its own (a real `.git` directory) to pin git to.
    GitNoRepository,
    /// git asked to run outside the work repo (its working tree).
    GitOutsideWorkRepo(String),
    /// The working directory is, lies inside, or holds a git directory other than the work
    /// repo's own.
    GitDirectoryWorkingDir(String),
    /// The pinned repository's configuration cannot be neutralized for this git (an
    /// include, a per-worktree config, an odd filter name).
    GitConfigUnpinnable(String),
    /// A path escapes the roots through `..`.
    PathTraversal(String),
    /// A path resolves (symlinks followed) outside the allowed roots.
    PathOutsideRoots(String),
    /// A path looks inside the roots but a symlink on the way leads outside.
    SymlinkEscape(String),
    /// A path is, contains or lies under one of the home's secret files.
    SecretPath(String),
    /// A path could not be resolved (dangling symlink, permission, invalid name).
    Unresolvable(String),
    /// A write inside the work repository that would change how `git` runs (`.git/`,
    /// `.gitconfig`, `.config/`).
    ProtectedPath(String),
    /// The working directory does not exist or is not a directory.
    WorkingDirectoryMissing(String),
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::Empty => write!(f, "empty command"),
            Denial::TooLong { bytes, max } => {
                write!(f, "command is {bytes} bytes long, the limit is {max}")
            }
            Denial::TooManyArguments { count, max } => {
                write!(f, "command has {count} arguments, the limit is {max}")
            }
            Denial::Chaining(c) => write!(
                f,
                "shell syntax {c:?} (chaining, pipes, background jobs) is not allowed; commands never run in a shell"
            ),
            Denial::Redirection(c) => write!(f, "redirection {c:?} is not allowed"),
            Denial::CommandSubstitution => write!(f, "command substitution is not allowed"),
            Denial::VariableExpansion => {
                write!(f, "variable expansion ($NAME, ${{…}}, $1, $?) is not allowed")
            }
            Denial::LineBreak => write!(f, "line breaks are not allowed in a command"),
            Denial::Nul => write!(f, "a NUL byte is not allowed in a command"),
            Denial::ControlCharacter(b) => {
                write!(f, "control character 0x{b:02x} is not allowed")
            }
            Denial::LookAlike { found, imitates } => write!(
                f,
                "character U+{:04X} imitates {imitates:?} and is not allowed",
                u32::from(*found)
            ),
            Denial::InvisibleOrSpace(c) => write!(
                f,
                "invisible, unicode-space or text-direction character U+{:04X} is not allowed",
                u32::from(*c)
            ),
            Denial::NonAsciiSymbol(c) => write!(
                f,
                "non-ASCII symbol U+{:04X} is not allowed",
                u32::from(*c)
            ),
            Denial::UnbalancedQuotes => write!(f, "unbalanced quotes"),
            Denial::Glob(c) => write!(f, "glob character {c:?} is not allowed for this program"),
            Denial::TildeExpansion => write!(f, "'~' expansion is not allowed; use a relative path"),
            Denial::ProgramPath(p) => write!(
                f,
                "program {p:?} contains a '/'; only bare names from the allow-list may run"
            ),
            Denial::ProgramNotAllowed(p) => write!(f, "program {p:?} is not on the allow-list"),
            Denial::DeniedOption { program, option } => {
                write!(f, "option {option:?} is not allowed for {program}")
            }
            Denial::GitSubcommandNotAllowed(s) => write!(
                f,
                "git subcommand {s:?} is not allowed; only status, log, diff, show, branch, ls-files, blame, rev-parse"
            ),
            Denial::GitBranchNotListing(a) => {
                write!(f, "git branch may only list branches (refused {a:?})")
            }
            Denial::GitNoRepository => write!(
                f,
                "git is refused: the work repo has no repository of its own (.git directory) to pin git to, and git never discovers one"
            ),
            Denial::GitOutsideWorkRepo(p) => {
                write!(f, "git runs only inside the work repo, not in {p:?}")
            }
            Denial::GitDirectoryWorkingDir(p) => write!(
                f,
                "working directory {p:?} is, lies inside, or holds a git directory other than the work repo's own; git would read its configuration"
            ),
            Denial::GitConfigUnpinnable(what) => write!(
                f,
                "git is refused: this git cannot ignore work-tree .gitattributes, and the work repo's configuration has {what}, whose filters cannot be turned off"
            ),
            Denial::PathTraversal(p) => write!(f, "path {p:?} escapes the allowed roots through '..'"),
            Denial::PathOutsideRoots(p) => {
                write!(f, "path {p:?} is outside the workspace and work repo")
            }
            Denial::SymlinkEscape(p) => write!(
                f,
                "path {p:?} leads outside the allowed roots through a symbolic link"
            ),
            Denial::SecretPath(p) => write!(f, "path {p:?} is or contains a protected secret file"),
            Denial::Unresolvable(p) => write!(f, "path {p:?} cannot be resolved"),
            Denial::ProtectedPath(p) => write!(
                f,
                "path {p:?} is protected: tools may not write git metadata or configuration"
            ),
            Denial::WorkingDirectoryMissing(p) => {
                write!(f, "working directory {p:?} does not exist or is not a directory")
            }
        }
    }
}

/// Rejects shell syntax and suspicious characters in the raw command (see the module doc).
pub fn scan(command: &str) -> Result<(), Denial> {
    if command.len() > MAX_COMMAND_BYTES {
        return Err(Denial::TooLong {
            bytes: command.len(),
            max: MAX_COMMAND_BYTES,
        });
    }
    let mut chars = command.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ';' | '|' | '&' => return Err(Denial::Chaining(c)),
            '>' | '<' => return Err(Denial::Redirection(c)),
            '`' => return Err(Denial::CommandSubstitution),
            '$' => match chars.peek() {
                Some('(') => return Err(Denial::CommandSubstitution),
                Some(&n) if expands_after_dollar(n) => return Err(Denial::VariableExpansion),
                _ => {}
            },
            '\n' | '\r' => return Err(Denial::LineBreak),
            '\0' => return Err(Denial::Nul),
            '\t' | ' ' => {}
            c if c.is_ascii_control() => return Err(Denial::ControlCharacter(c as u8)),
            c if c.is_ascii() => {}
            c => classify_non_ascii(c)?,
        }
    }
    Ok(())
}

/// Splits a scanned command into argv with POSIX quoting rules and applies the size caps and
/// the per-word checks that do not depend on the program (`~`).
pub fn split(command: &str) -> Result<Vec<String>, Denial> {
    scan(command)?;
    let argv = shell_words::split(command).map_err(|_| Denial::UnbalancedQuotes)?;
    if argv.is_empty() {
        return Err(Denial::Empty);
    }
    if argv.len() > MAX_ARGS {
        return Err(Denial::TooManyArguments {
            count: argv.len(),
            max: MAX_ARGS,
        });
    }
    if argv.iter().any(|a| has_tilde_expansion(a)) {
        return Err(Denial::TildeExpansion);
    }
    Ok(argv)
}

/// The first glob character in `arg`, if any.
pub fn glob_char(arg: &str) -> Option<char> {
    arg.chars().find(|c| matches!(c, '*' | '?' | '[' | ']'))
}

fn has_tilde_expansion(arg: &str) -> bool {
    arg.starts_with('~') || arg.contains("=~") || arg.contains(":~")
}

fn expands_after_dollar(next: char) -> bool {
    next.is_ascii_alphanumeric()
        || matches!(
            next,
            '_' | '{' | '?' | '!' | '#' | '@' | '*' | '-' | '$' | '\'' | '"'
        )
}

fn classify_non_ascii(c: char) -> Result<(), Denial> {
    let code = u32::from(c);
    // Fullwidth ASCII forms U+FF01..U+FF5E map onto U+0021..U+007E.
    if (0xFF01..=0xFF5E).contains(&code) {
        let imitates = char::from_u32(code - 0xFF01 + 0x21).unwrap_or('?');
        return Err(Denial::LookAlike { found: c, imitates });
    }
    if let Some(imitates) = look_alike(c) {
        return Err(Denial::LookAlike { found: c, imitates });
    }
    if c.is_whitespace() || is_invisible(code) {
        return Err(Denial::InvisibleOrSpace(c));
    }
    if (0xFF00..=0xFFEF).contains(&code) {
        return Err(Denial::NonAsciiSymbol(c));
    }
    if c.is_alphanumeric() {
        return Ok(());
    }
    Err(Denial::NonAsciiSymbol(c))
}

fn look_alike(c: char) -> Option<char> {
    Some(match c {
        '\u{037E}' | '\u{FE54}' | '\u{204F}' => ';',
        '\u{FE63}' | '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2013}' | '\u{2014}'
        | '\u{2212}' => '-',
        '\u{FE60}' => '&',
        '\u{FE64}' | '\u{2039}' | '\u{2329}' | '\u{27E8}' => '<',
        '\u{FE65}' | '\u{203A}' | '\u{232A}' | '\u{27E9}' => '>',
        '\u{FE69}' => '$',
        '\u{FE56}' => '?',
        '\u{FE61}' | '\u{2217}' => '*',
        '\u{2223}' | '\u{01C0}' | '\u{2502}' => '|',
        '\u{2215}' | '\u{2044}' | '\u{29F8}' => '/',
        '\u{2216}' | '\u{29F9}' => '\\',
        '\u{2018}' | '\u{2019}' | '\u{201B}' | '\u{02BC}' | '\u{2032}' => '\'',
        '\u{201C}' | '\u{201D}' | '\u{201F}' | '\u{2033}' => '"',
        '\u{02DC}' | '\u{223C}' => '~',
        '\u{2024}' => '.',
        '\u{A789}' | '\u{2236}' => ':',
        '\u{FE59}' | '\u{207D}' | '\u{208D}' => '(',
        '\u{FE5A}' | '\u{207E}' | '\u{208E}' => ')',
        _ => return None,
    })
}

fn is_invisible(code: u32) -> bool {
    matches!(
        code,
        0x00AD              // soft hyphen
            | 0x034F        // combining grapheme joiner
            | 0x061C        // arabic letter mark
            | 0x115F | 0x1160
            | 0x17B4 | 0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F // zero-width space/joiners, LRM, RLM
            | 0x2028..=0x202E // line/paragraph separators, bidi embeddings and overrides
            | 0x205F..=0x206F // math space, word joiner, invisible operators, bidi isolates
            | 0x3164
            | 0xFE00..=0xFE0F // variation selectors
            | 0xFEFF          // BOM / zero-width no-break space
            | 0xFFA0
            | 0xFFF9..=0xFFFB
            | 0xE0000..=0xE007F // tag characters
    )
}
