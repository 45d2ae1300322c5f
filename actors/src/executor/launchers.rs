//! Launchers: programs that start other programs. The one classification of `tools.exec.allow`
//! used by the executor (a refused name never resolves), by the gateway's start (exit 2, one
//! line naming each) and by `kafclaw security check` (FAIL).
//!
//! Owns: the table of launcher families and the few launchers a [`ProgramRule`] makes safe
//! (`git`, `find`, `sed`).
//! Must not: run the program it classifies (it reads at most the first bytes of the file).
//!
//! A name is classified three ways and refused if any says so: by the configured name, by the
//! file name of the canonical target (`awk` → `/etc/alternatives/awk` → `mawk`; an `ls` that
//! is a symlink to `busybox`), and by inode against every launcher found on the system's
//! search path (a hard link named `ls` to `busybox`). Version suffixes are part of a family
//! (`python3.11`, `perl5.36`, `gcc-12`). A script (`#!`) is refused as run by its interpreter.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::rules::ProgramRule;

/// One family of launchers and why none of them may be allowed.
struct Family {
    names: &'static [&'static str],
    why: &'static str,
}

/// Every launcher family. A name here can never be on the allow-list.
const FAMILIES: &[Family] = &[
    Family {
        names: &[
            "sh", "bash", "dash", "zsh", "ksh", "mksh", "pdksh", "ash", "csh", "tcsh", "fish",
            "rbash", "yash", "posh", "elvish", "xonsh", "nu",
        ],
        why: "a shell runs any program",
    },
    Family {
        names: &["busybox", "toybox"],
        why: "a multi-call binary is every program at once, shells included",
    },
    Family {
        names: &[
            "python", "python2", "python3", "pypy", "pypy3", "perl", "ruby", "irb", "node",
            "nodejs", "deno", "bun", "php", "lua", "luajit", "tclsh", "wish", "expect",
            "rscript", "r", "julia", "guile", "racket", "ocaml", "erl", "escript", "elixir",
            "iex", "pwsh", "raku", "rakudo", "groovy", "jshell", "java", "scala", "kotlin",
            "swift", "gnuplot", "sqlite3", "psql", "mysql",
        ],
        why: "an interpreter runs any program its script names",
    },
    Family {
        names: &["awk", "gawk", "mawk", "nawk", "original-awk"],
        why: "awk runs programs from its script (system(), pipes) and writes files",
    },
    Family {
        names: &[
            "env", "xargs", "nice", "nohup", "timeout", "stdbuf", "time", "setsid", "strace",
            "ltrace", "gdb", "lldb", "valgrind", "sudo", "su", "doas", "runuser", "pkexec",
            "sg", "newgrp", "chroot", "unshare", "nsenter", "setpriv", "capsh", "prlimit",
            "flock", "watch", "script", "ionice", "chrt", "taskset", "numactl", "systemd-run",
            "run-parts", "parallel", "unbuffer", "faketime", "fakeroot", "firejail", "bwrap",
            "proot", "catchsegv", "dbus-run-session", "start-stop-daemon", "daemonize", "tmux",
            "screen", "entr", "chpst", "runcon", "setarch", "linux32", "linux64",
        ],
        why: "runs the program named in its arguments",
    },
    Family {
        names: &[
            "ssh", "scp", "sftp", "rsh", "rlogin", "rsync", "ssh-agent", "ssh-add",
            "ssh-keygen", "git-shell",
        ],
        why: "runs programs through a remote shell, -e/-S/ProxyCommand or a loaded library",
    },
    Family {
        names: &[
            "tar", "bsdtar", "cpio", "pax", "unzip", "7z", "7za", "7zr", "patch",
        ],
        why: "runs programs named by its options (--to-command, --use-compress-program, -I, --checkpoint-action, --rsh-command) or writes files its arguments do not name",
    },
    Family {
        names: &[
            "vi", "vim", "nvim", "view", "vimdiff", "rvim", "ex", "ed", "red", "emacs", "nano",
            "pico", "less", "more", "most", "pg", "man", "info", "editor", "pager",
            "sensible-editor", "sensible-pager", "sensible-browser", "xdg-open",
            "x-www-browser", "www-browser", "lynx", "links", "w3m",
        ],
        why: "an editor, pager or browser runs a shell on request",
    },
    Family {
        names: &[
            "make", "gmake", "bmake", "cmake", "ninja", "meson", "scons", "cargo", "rustc",
            "go", "gcc", "g++", "cc", "c++", "clang", "clang++", "tcc", "ld", "npm", "npx",
            "yarn", "pnpm", "pip", "pip3", "pipx", "uv", "poetry", "gem", "bundle", "rake",
            "mvn", "gradle", "ant", "dotnet",
        ],
        why: "a build tool or compiler runs what its inputs name (recipes, build scripts, plugins, linkers)",
    },
    Family {
        names: &["m4", "dc"],
        why: "its input language runs shell commands (syscmd, !)",
    },
    Family {
        names: &["nc", "ncat", "netcat", "socat", "openssl"],
        why: "runs programs (-e, EXEC:, engines) or relays to other hosts",
    },
    Family {
        names: &[
            "split", "zip", "wget", "aria2c", "ffmpeg", "gs", "ghostscript", "convert",
            "magick", "pandoc", "latex", "pdflatex", "xelatex", "lualatex", "tex", "fzf",
            "tcpdump", "nmap", "perf", "bpftrace", "hyperfine", "chronic", "ifne", "pee",
            "sendmail", "mail", "mailx", "mutt",
        ],
        why: "runs a command named by its options or input (--filter, -TT, --use-askpass, delegates, filters, \\write18, -z, --script, --preview)",
    },
    Family {
        names: &[
            "gpg", "gpg2", "gpgsm", "gpg-agent", "gpgconf", "dirmngr", "pinentry", "scalar",
            "hg", "svn", "bzr", "fossil",
        ],
        why: "runs helper programs, hooks or programs its configuration names",
    },
    Family {
        names: &[
            "ip", "apt", "apt-get", "dpkg", "rpm", "dnf", "yum", "snap", "flatpak", "docker",
            "podman", "kubectl", "helm", "crontab", "at", "batch", "systemctl", "journalctl",
            "service", "logrotate", "virsh", "qemu-system-x86_64",
        ],
        why: "runs commands, package scripts, containers or a pager on request",
    },
];

/// A `git-…` program is git without git's pinned rule: it runs hooks and the programs a
/// repository's configuration names (`git-upload-pack`, `git-receive-pack`, `git-shell`, …).
const GIT_PROGRAM_PREFIX: &str = "git-";

const GIT_PROGRAM: Family = Family {
    names: &[],
    why: "a git program outside git's pinned rule runs hooks and the programs a repository's configuration names",
};

/// Prefixes of the dynamic loader's names (`ld-linux-x86-64.so.2 /any/program`).
const LOADER_PREFIXES: &[&str] = &["ld-linux", "ld.so", "ld-musl"];

/// Directories searched for launchers whose inode an allowed program might share.
const LAUNCHER_DIRS: &[&str] = &["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"];

/// How `exec` may treat one program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A tool: allowed with this argument rule.
    Tool(ProgramRule),
    /// A launcher: never allowed, for this reason.
    Launcher(String),
}

/// An allow-list name refused as a launcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedProgram {
    /// The name as configured.
    pub name: String,
    /// Where it resolves, when it does.
    pub target: Option<PathBuf>,
    /// Why it is a launcher.
    pub why: String,
}

impl std::fmt::Display for RefusedProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            Some(t) if t.file_name().is_some_and(|n| n != self.name.as_str()) => {
                write!(f, "{} ({}): {}", self.name, t.display(), self.why)
            }
            _ => write!(f, "{}: {}", self.name, self.why),
        }
    }
}

/// The family `name` belongs to, version suffixes included.
fn family_of(name: &str) -> Option<&'static Family> {
    let name = name.to_ascii_lowercase();
    if LOADER_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Some(&LOADER);
    }
    if name.starts_with(GIT_PROGRAM_PREFIX) {
        return Some(&GIT_PROGRAM);
    }
    FAMILIES
        .iter()
        .find(|f| f.names.iter().any(|n| same_family(&name, n)))
}

const LOADER: Family = Family {
    names: &[],
    why: "the dynamic loader runs the program named in its arguments",
};

/// `name` is `base` or `base` plus a version suffix (`3`, `3.11`, `-12`, `5.36`).
fn same_family(name: &str, base: &str) -> bool {
    let Some(rest) = name.strip_prefix(base) else {
        return false;
    };
    let rest = rest.strip_prefix(['-', '.']).unwrap_or(rest);
    rest.is_empty()
        || (rest.starts_with(|c: char| c.is_ascii_digit())
            && rest.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

/// Classifies one name alone (no file system): a launcher, or a tool with its rule.
pub fn classify_name(name: &str) -> Verdict {
    match family_of(name) {
        Some(f) => Verdict::Launcher(f.why.to_string()),
        None => Verdict::Tool(ProgramRule::for_name(name)),
    }
}

/// Classifies `name` resolved to the canonical file `target` (see the module doc).
pub fn classify(name: &str, target: &Path) -> Verdict {
    classify_in(name, target, &LauncherIndex::scan())
}

/// Like [`classify`], against an index of the launchers on the search path taken once for
/// several names (an allow-list).
pub fn classify_in(name: &str, target: &Path, index: &LauncherIndex) -> Verdict {
    if let Verdict::Launcher(why) = classify_name(name) {
        return Verdict::Launcher(why);
    }
    let target_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Verdict::Launcher(why) = classify_name(&target_name) {
        return Verdict::Launcher(why);
    }
    if let Some(interpreter) = script_interpreter(target) {
        return Verdict::Launcher(format!(
            "a script run by {interpreter}, which runs whatever the script says"
        ));
    }
    if let Some(launcher) = index.same_file(target) {
        return Verdict::Launcher(format!(
            "the same file as {launcher}: {}",
            family_of(&launcher).map_or("a launcher", |f| f.why)
        ));
    }
    let by_target = ProgramRule::for_name(&target_name);
    if by_target != ProgramRule::Plain {
        return Verdict::Tool(by_target);
    }
    Verdict::Tool(ProgramRule::for_name(name))
}

/// The interpreter of a `#!` script (`/usr/bin/env python3` counts as `python3`).
fn script_interpreter(path: &Path) -> Option<String> {
    let mut head = [0u8; 256];
    let n = fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|b| *b == b'\n').next().unwrap_or_default();
    let text = String::from_utf8_lossy(line);
    let mut words = text.split_whitespace();
    let first = words.next().unwrap_or("(none)");
    let base = Path::new(first)
        .file_name()
        .map_or(first.to_string(), |n| n.to_string_lossy().into_owned());
    if base == "env" {
        if let Some(next) = words.find(|w| !w.starts_with('-')) {
            return Some(next.to_string());
        }
    }
    Some(base)
}

/// Every launcher on the system's search path by file identity (device and inode), taken in
/// one pass: each of [`LAUNCHER_DIRS`] is listed once and only the launcher names it holds are
/// looked at (a lookup of every family name in every directory was about 1,200 `stat`s per
/// allow-listed program, most of the gateway's start, issue 17). A directory that cannot be
/// listed has every name looked up in it instead, so nothing is missed. Taken when an
/// allow-list is checked, never kept: a launcher installed later is seen by the next check.
#[derive(Debug, Default)]
pub struct LauncherIndex {
    /// (device, inode) → the first launcher name (in family order) that is that file.
    files: HashMap<(u64, u64), &'static str>,
}

impl LauncherIndex {
    /// Lists the launcher directories now.
    pub fn scan() -> Self {
        let listings: Vec<Option<HashSet<OsString>>> = LAUNCHER_DIRS
            .iter()
            .map(|dir| {
                fs::read_dir(dir)
                    .ok()?
                    .map(|entry| entry.map(|e| e.file_name()))
                    .collect::<Result<HashSet<_>, _>>()
                    .ok()
            })
            .collect();
        let mut files = HashMap::new();
        for name in FAMILIES.iter().flat_map(|f| f.names.iter()) {
            for (dir, listing) in LAUNCHER_DIRS.iter().zip(&listings) {
                if listing
                    .as_ref()
                    .is_some_and(|names| !names.contains(std::ffi::OsStr::new(name)))
                {
                    continue;
                }
                if let Ok(m) = fs::metadata(Path::new(dir).join(name)) {
                    files.entry((m.dev(), m.ino())).or_insert(*name);
                }
            }
        }
        Self { files }
    }

    /// The launcher on the search path that is the very file `target`, if any.
    pub fn same_file(&self, target: &Path) -> Option<String> {
        let meta = fs::metadata(target).ok()?;
        self.files
            .get(&(meta.dev(), meta.ino()))
            .map(|name| name.to_string())
    }
}

/// The names in `allow` that are launchers, each with where it resolves (when it does).
pub fn refused(allow: &[String]) -> Vec<RefusedProgram> {
    let index = LauncherIndex::scan();
    allow
        .iter()
        .filter_map(|name| {
            let target = super::rules::find_executable(name);
            let verdict = match &target {
                Some(t) => classify_in(name, t, &index),
                None => classify_name(name),
            };
            match verdict {
                Verdict::Launcher(why) => Some(RefusedProgram {
                    name: name.clone(),
                    target,
                    why,
                }),
                Verdict::Tool(_) => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
