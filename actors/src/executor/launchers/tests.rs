//! The launcher classification: by name (with version suffixes), by canonical target, by
//! script interpreter and by inode; and what the allow-list and the checker make of it.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use super::*;
use crate::executor::rules::{AllowList, AllowListWarning, ProgramRule};

#[track_caller]
fn launcher(name: &str) {
    assert!(
        matches!(classify_name(name), Verdict::Launcher(_)),
        "{name} should be a launcher"
    );
}

#[test]
fn programs_whose_options_run_other_programs_are_launchers() {
    // Found by trying every installed program: each runs a command named in an option
    // (`split --filter`, `zip -TT`, `wget --use-askpass`, gpg's helpers, a git program that
    // runs hooks and config-named programs outside git's pinned rule, …).
    for name in [
        "split",
        "zip",
        "gpg",
        "gpg2",
        "gpgsm",
        "gpg-agent",
        "wget",
        "git-upload-pack",
        "git-receive-pack",
        "git-upload-archive",
        "git-shell",
        "git-lfs",
        "scalar",
        "hg",
        "svn",
        "fzf",
        "pandoc",
        "convert",
        "magick",
        "gs",
        "tcpdump",
        "nmap",
        "ip",
        "apt-get",
        "dpkg",
        "rpm",
        "perf",
        "bpftrace",
        "hyperfine",
        "chronic",
        "ifne",
        "pee",
        "aria2c",
        "ffmpeg",
        "docker",
        "podman",
        "kubectl",
        "crontab",
        "at",
        "systemctl",
        "journalctl",
        "logrotate",
        "pdflatex",
        "latex",
        "sendmail",
        "mail",
    ] {
        launcher(name);
    }
}

#[test]
fn every_family_and_its_versions_are_launchers() {
    for name in [
        // The list.
        "env",
        "xargs",
        "nice",
        "nohup",
        "timeout",
        "stdbuf",
        "time",
        "setsid",
        "strace",
        "sudo",
        "ssh",
        "tar",
        "rsync",
        "awk",
        "python3",
        "perl",
        "ruby",
        "node",
        // The rest of the family.
        "sh",
        "bash",
        "dash",
        "zsh",
        "busybox",
        "toybox",
        "gawk",
        "mawk",
        "nawk",
        "vi",
        "vim",
        "less",
        "more",
        "man",
        "make",
        "gdb",
        "chroot",
        "unshare",
        "nsenter",
        "flock",
        "watch",
        "script",
        "ionice",
        "chrt",
        "taskset",
        "su",
        "doas",
        "runuser",
        "pkexec",
        "systemd-run",
        "scp",
        "sftp",
        "git-shell",
        "php",
        "lua",
        "tclsh",
        "m4",
        "socat",
        "nc",
        "openssl",
        "cc",
        "gcc",
        "cargo",
        "npm",
        "sqlite3",
        "ed",
        "emacs",
        "parallel",
        "prlimit",
        // Version suffixes and the loader.
        "python3.11",
        "python2.7",
        "perl5.36",
        "lua5.4",
        "tclsh8.6",
        "php8.2",
        "ruby3.1",
        "gcc-12",
        "clang-16",
        "pip3.11",
        "ld-linux-x86-64.so.2",
        "ld.so",
        // Case does not matter.
        "Python3",
        "BASH",
    ] {
        launcher(name);
    }
}

#[test]
fn ordinary_tools_are_not_launchers_and_keep_their_rule() {
    for (name, rule) in [
        ("git", ProgramRule::Git),
        ("find", ProgramRule::Find),
        ("sed", ProgramRule::Sed),
        ("rg", ProgramRule::Ripgrep),
        ("grep", ProgramRule::Grep),
        ("ls", ProgramRule::Ls),
        ("cat", ProgramRule::Reader),
        ("wc", ProgramRule::Reader),
        // Names that start like a launcher but are not one.
        ("shred", ProgramRule::Plain),
        ("sha256sum", ProgramRule::Reader),
        ("sum", ProgramRule::Plain),
        ("timeoutx", ProgramRule::Plain),
        ("edit-notes", ProgramRule::Plain),
        ("nicer", ProgramRule::Plain),
        ("lsblk", ProgramRule::Plain),
    ] {
        assert_eq!(classify_name(name), Verdict::Tool(rule), "{name}");
    }
}

#[test]
fn the_canonical_target_decides_too() {
    let dir = tempfile::tempdir().unwrap();
    // awk → /etc/alternatives/awk → mawk: the configured name is innocent, the target is not.
    if let Ok(mawk) = fs::canonicalize("/usr/bin/awk") {
        let link = dir.path().join("ls");
        symlink(&mawk, &link).unwrap();
        let target = fs::canonicalize(&link).unwrap();
        assert!(
            matches!(classify("ls", &target), Verdict::Launcher(_)),
            "{target:?}"
        );
    }
    // A harmless name for a real tool gets the tool's rule.
    let find = fs::canonicalize("/usr/bin/find").unwrap();
    assert_eq!(classify("myfind", &find), Verdict::Tool(ProgramRule::Find));
    let busybox = dir.path().join("busybox");
    fs::write(&busybox, b"\x7fELF not really").unwrap();
    assert!(matches!(classify("ls", &busybox), Verdict::Launcher(_)));
}

#[test]
fn scripts_are_refused_as_run_by_their_interpreter() {
    let dir = tempfile::tempdir().unwrap();
    for (body, interpreter) in [
        ("#!/bin/sh\nexec grep -F \"$@\"\n", "sh"),
        ("#! /usr/bin/env -S python3 -u\nprint(1)\n", "python3"),
        ("#!/usr/bin/perl -w\n", "perl"),
        ("#!/opt/custom/interp\n", "interp"),
    ] {
        let path = dir.path().join("fgrep");
        fs::write(&path, body).unwrap();
        match classify("fgrep", &path) {
            Verdict::Launcher(why) => assert!(why.contains(interpreter), "{why}"),
            other => panic!("{body:?}: {other:?}"),
        }
    }
}

#[test]
fn a_hard_link_to_a_launcher_is_a_launcher_under_any_name() {
    let dir = tempfile::tempdir().unwrap();
    let dash = fs::canonicalize("/bin/sh").unwrap();
    let link = dir.path().join("cat");
    if fs::hard_link(&dash, &link).is_err() {
        eprintln!("cannot hard-link {dash:?} here (another file system); skipping");
        return;
    }
    match classify("cat", &link) {
        Verdict::Launcher(why) => assert!(why.contains("same file as"), "{why}"),
        other => panic!("{other:?}"),
    }
    // A copy of an ordinary tool under a tool's name is that tool.
    let copy = dir.path().join("head");
    fs::copy("/usr/bin/head", &copy).unwrap();
    assert_eq!(classify("head", &copy), Verdict::Tool(ProgramRule::Reader));
}

#[test]
fn refused_names_each_launcher_and_where_it_resolves() {
    let names: Vec<String> = [
        "git",
        "env",
        "awk",
        "python3.11",
        "find",
        "sed",
        "ls",
        "xargs",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(refused_for(&names), ["env", "awk", "python3.11", "xargs"]);
    let defaults: Vec<String> = crate::executor::DEFAULT_ALLOW
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(refused_for(&defaults), Vec::<String>::new());
    let awk = refused(&["awk".to_string()]).remove(0);
    assert!(awk.to_string().starts_with("awk ("), "{awk}");
    assert!(awk.to_string().contains("system()"), "{awk}");
}

fn refused_for(names: &[String]) -> Vec<String> {
    refused(names).into_iter().map(|r| r.name).collect()
}

#[test]
fn the_allow_list_never_resolves_a_launcher() {
    let names: Vec<String> = ["cat", "env", "sh"].iter().map(|s| s.to_string()).collect();
    let (allow, warnings) = AllowList::resolve(&names);
    assert_eq!(allow.names().collect::<Vec<_>>(), ["cat"]);
    assert_eq!(warnings.len(), 2);
    assert!(warnings
        .iter()
        .all(|w| matches!(w, AllowListWarning::Launcher(_))));
    assert!(allow
        .get("cat")
        .is_some_and(|p| Path::new(&p.path).is_absolute()));
}
