//! The kernel layer alone: commands the checker would never let through, run under the jail,
//! must still be refused by Landlock (reads outside the roots through symlinks, the store,
//! the gateway's `/proc`, writes where the rule says read-only, TCP to loopback, signals).

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::executor::tests::{auto_status, Fixture};
use crate::executor::{CheckedCommand, Confinement};

fn limits() -> SandboxLimits {
    SandboxLimits {
        timeout: Duration::from_secs(10),
        ..SandboxLimits::default()
    }
}

fn raw(program: &str, args: &[&str], cwd: &Path, access: ChildAccess) -> CheckedCommand {
    let program = fs::canonicalize(program).unwrap();
    let mut argv = vec![program.file_name().unwrap().to_string_lossy().into_owned()];
    argv.extend(args.iter().map(|s| s.to_string()));
    CheckedCommand {
        program,
        argv,
        cwd: cwd.to_path_buf(),
        env: Vec::new(),
        access,
    }
}

/// The jail `auto` builds here, or `None` (with a note) on a kernel without Landlock.
fn confined(f: &Fixture) -> Option<KernelJail> {
    let jail = f.jail();
    if !jail.enforces() {
        eprintln!("this kernel has no Landlock; the kernel layer cannot be exercised");
        return None;
    }
    Some(jail)
}

async fn output(cmd: &CheckedCommand, f: &Fixture, jail: &KernelJail) -> (ExitState, String) {
    let report = run(cmd, &f.work_repo, jail, &limits()).await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&report.stdout.bytes),
        String::from_utf8_lossy(&report.stderr.bytes)
    );
    (report.status, text)
}

#[test]
fn the_mode_and_the_kernel_decide_the_status() {
    let landlock = KernelSupport::Landlock { abi: 7 };
    let missing = KernelSupport::Missing { reason: "none" };
    use SandboxMode::*;
    assert_eq!(
        SandboxStatus::decide(Auto, landlock),
        Ok(SandboxStatus::Landlock { abi: 7 })
    );
    assert_eq!(
        SandboxStatus::decide(Auto, missing),
        Ok(SandboxStatus::PathChecksOnly { reason: "none" })
    );
    assert_eq!(
        SandboxStatus::decide(Landlock, landlock),
        Ok(SandboxStatus::Landlock { abi: 7 })
    );
    let refused = SandboxStatus::decide(Landlock, missing).unwrap_err();
    assert!(
        refused.to_string().contains("tools.exec.sandbox"),
        "{refused}"
    );
    assert!(!refused.to_string().contains('\n'));
    assert_eq!(SandboxStatus::decide(Off, landlock), Ok(SandboxStatus::Off));
    assert_eq!(SandboxStatus::decide(Off, missing), Ok(SandboxStatus::Off));
    for status in [
        SandboxStatus::Landlock { abi: 7 },
        SandboxStatus::PathChecksOnly { reason: "none" },
        SandboxStatus::Off,
    ] {
        let text = status.to_string();
        assert!(!text.contains('\n') && text.starts_with(|c: char| c.is_lowercase()));
    }
    let parsed: SandboxMode = serde_json::from_str("\"landlock\"").unwrap();
    assert_eq!(parsed, Landlock);
    assert!(serde_json::from_str::<SandboxMode>("\"chroot\"").is_err());
}

#[actix_rt::test]
async fn a_recursive_reader_following_symlinks_gets_nothing_from_the_secrets() {
    let f = Fixture::new();
    let Some(jail) = confined(&f) else { return };
    // A hard link is the same file under a path inside the roots: Landlock grants by path, so
    // it cannot tell; the path checks refuse it and `security check` lists it (`hard_links`).
    fs::remove_file(f.work_repo.join("hard_tomb")).unwrap();
    symlink(f.home.config_dir(), f.work_repo.join("config_link")).unwrap();
    symlink(f.home.state_dir(), f.work_repo.join("state_link")).unwrap();
    for (program, args) in [
        ("/usr/bin/grep", &["-R", "KEY-MATERIAL", "."][..]),
        ("/usr/bin/grep", &["-R", "secret", "state_link"][..]),
        ("/usr/bin/cat", &["config_link/tomb.rr"][..]),
        ("/usr/bin/find", &["-L", ".", "-name", "tomb.rr"][..]),
    ] {
        let cmd = raw(program, args, &f.work_repo, ChildAccess::default());
        let (_, text) = output(&cmd, &f, &jail).await;
        assert!(
            !text.contains("KEY-MATERIAL") && !text.contains("AUTH_TOKEN=secret"),
            "{program} {args:?}: {text}"
        );
        // Without the jail the same command reads the secret: the kernel made the difference.
        let open = KernelJail::unconfined(&f.work_repo);
        if program.ends_with("grep") && args[2] == "." {
            let (_, text) = output(&cmd, &f, &open).await;
            assert!(text.contains("KEY-MATERIAL"), "control: {text}");
        }
    }
}

#[actix_rt::test]
async fn the_store_the_home_and_the_gateways_proc_are_out_of_reach() {
    let f = Fixture::new();
    let Some(jail) = confined(&f) else { return };
    fs::create_dir_all(f.home.store_dir()).unwrap();
    fs::write(f.home.store_dir().join("db"), "TIMELINE-ROWS").unwrap();
    fs::write(f.home.root().join("private.txt"), "HOME-FILE").unwrap();
    let environ = format!("/proc/{}/environ", std::process::id());
    for path in [
        f.home.store_dir().join("db").display().to_string(),
        f.home.root().join("private.txt").display().to_string(),
        f.home.key_file().display().to_string(),
        environ,
    ] {
        let cmd = raw(
            "/usr/bin/cat",
            &[&path],
            &f.work_repo,
            ChildAccess::default(),
        );
        let (status, text) = output(&cmd, &f, &jail).await;
        assert_ne!(status, ExitState::Code(0), "{path}: {text}");
        assert!(text.contains("Permission denied"), "{path}: {text}");
    }
    // What the roots hold is readable.
    let cmd = raw(
        "/usr/bin/cat",
        &["file.txt", "../workspace/notes.md"],
        &f.work_repo,
        ChildAccess::default(),
    );
    let (status, text) = output(&cmd, &f, &jail).await;
    assert_eq!(status, ExitState::Code(0), "{text}");
    assert!(text.contains("line one") && text.contains("workspace notes"));
}

#[actix_rt::test]
async fn writes_follow_the_rule_and_never_leave_the_work_repo() {
    let f = Fixture::new();
    let Some(jail) = confined(&f) else { return };
    let write = |target: &str, access| {
        raw(
            "/bin/sh",
            &["-c", &format!("echo x > {target}")],
            &f.work_repo,
            access,
        )
    };
    let reader = ChildAccess::default();
    let writer = ChildAccess {
        write_work_repo: true,
        network: false,
    };
    let (status, _) = output(&write("new.txt", reader), &f, &jail).await;
    assert_ne!(status, ExitState::Code(0));
    assert!(!f.work_repo.join("new.txt").exists());
    let (status, text) = output(&write("new.txt", writer), &f, &jail).await;
    assert_eq!(status, ExitState::Code(0), "{text}");
    assert!(f.work_repo.join("new.txt").exists());
    for target in [
        "../workspace/w.txt".to_string(),
        f.home.root().join("h.txt").display().to_string(),
        "/tmp/kafclaw-landlock-test".to_string(),
    ] {
        let (status, _) = output(&write(&target, writer), &f, &jail).await;
        assert_ne!(status, ExitState::Code(0), "{target}");
        assert!(!f.work_repo.join(&target).exists(), "{target}");
    }
    assert!(!Path::new("/tmp/kafclaw-landlock-test").exists());
    // A hard link into the work repo of a file outside it is refused (Refer, or EXDEV).
    let link = raw(
        "/bin/ln",
        &[&f.home.env_file().display().to_string(), "env_link"],
        &f.work_repo,
        writer,
    );
    let (status, _) = output(&link, &f, &jail).await;
    assert_ne!(status, ExitState::Code(0));
    assert!(!f.work_repo.join("env_link").exists());
}

#[actix_rt::test]
async fn a_child_cannot_connect_to_a_loopback_listener() {
    let f = Fixture::new();
    let Some(jail) = confined(&f) else { return };
    if !matches!(kernel_support(), KernelSupport::Landlock { abi } if abi >= 4) {
        eprintln!("Landlock ABI below 4 has no network rules");
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if stream.is_ok() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let bash = format!("exec 3<>/dev/tcp/127.0.0.1/{port}");
    let python = format!("import socket; socket.create_connection(('127.0.0.1', {port}))");
    let mut commands = vec![raw(
        "/bin/bash",
        &["-c", &bash],
        &f.work_repo,
        ChildAccess::default(),
    )];
    if let Ok(python3) = fs::canonicalize("/usr/bin/python3") {
        commands.push(raw(
            &python3.display().to_string(),
            &["-c", &python],
            &f.work_repo,
            ChildAccess::default(),
        ));
    }
    let listen = raw(
        "/bin/bash",
        &["-c", "exec 3<>/dev/tcp/127.0.0.1/1"],
        &f.work_repo,
        ChildAccess::default(),
    );
    for cmd in &commands {
        let (status, text) = output(cmd, &f, &jail).await;
        assert_ne!(status, ExitState::Code(0), "{:?}: {text}", cmd.argv);
        assert!(text.contains("Permission denied"), "{:?}: {text}", cmd.argv);
    }
    let _ = output(&listen, &f, &jail).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
    // A rule that allows the network would connect: the jail made the difference.
    let mut open = commands[0].clone();
    open.access.network = true;
    let (status, text) = output(&open, &f, &jail).await;
    assert_eq!(status, ExitState::Code(0), "{text}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the control never connected"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[actix_rt::test]
async fn a_child_cannot_signal_the_gateway() {
    let f = Fixture::new();
    let Some(jail) = confined(&f) else { return };
    if !matches!(kernel_support(), KernelSupport::Landlock { abi } if abi >= 6) {
        eprintln!("Landlock ABI below 6 has no signal scope");
        return;
    }
    let me = std::process::id().to_string();
    let cmd = raw(
        "/bin/kill",
        &["-0", &me],
        &f.work_repo,
        ChildAccess::default(),
    );
    let (status, text) = output(&cmd, &f, &jail).await;
    assert_ne!(status, ExitState::Code(0), "{text}");
    let (status, text) = output(&cmd, &f, &KernelJail::unconfined(&f.work_repo)).await;
    assert_eq!(status, ExitState::Code(0), "control: {text}");
}

#[actix_rt::test]
async fn a_root_misconfigured_to_hold_the_home_still_hides_the_secrets_from_the_kernel() {
    let f = Fixture::new();
    let status = auto_status();
    if !status.confines() {
        return;
    }
    let wide = Confinement::new(f.home.root(), &f.work_repo, &f.home);
    let jail = KernelJail::new(&status, &wide);
    let notes = f.workspace.join("notes.md").display().to_string();
    let cmd = raw(
        "/usr/bin/cat",
        &[&notes],
        &f.work_repo,
        ChildAccess::default(),
    );
    let (code, text) = output(&cmd, &f, &jail).await;
    assert_eq!(code, ExitState::Code(0), "{text}");
    for secret in [f.home.key_file(), f.home.env_file(), f.home.config_file()] {
        let path = secret.display().to_string();
        let cmd = raw(
            "/usr/bin/cat",
            &[&path],
            &f.work_repo,
            ChildAccess::default(),
        );
        let (code, text) = output(&cmd, &f, &jail).await;
        assert_ne!(code, ExitState::Code(0), "{path}: {text}");
        assert!(
            !text.contains("KEY-MATERIAL") && !text.contains("AUTH_TOKEN"),
            "{text}"
        );
    }
}

#[actix_rt::test]
async fn the_default_tools_still_work_under_the_kernel() {
    let f = Fixture::new();
    let Some(jail) = confined(&f) else { return };
    if !f.git_init() {
        return;
    }
    let checker = f.checker();
    for (command, expect) in [
        ("git status --short", "?? file.txt"),
        ("git rev-parse --show-toplevel", "work-repo"),
        ("ls -la", "file.txt"),
        ("grep -rn two .", "file.txt:2:line two"),
        ("cat file.txt", "line one"),
        ("head -n1 file.txt", "line one"),
        ("wc -c file.txt", "18 file.txt"),
    ] {
        let checked = checker.check(command, None).unwrap();
        let (status, text) = output(&checked, &f, &jail).await;
        assert_eq!(status, ExitState::Code(0), "{command}: {text}");
        assert!(text.contains(expect), "{command}: {text}");
    }
}

/// Found by review: no memory limit, so one command (a huge regex, a string doubled in awk)
/// could take the host's memory and get the gateway killed by the OOM killer.
#[actix_rt::test]
async fn a_child_cannot_take_more_memory_than_its_limit() {
    let f = Fixture::new();
    let jail = KernelJail::unconfined(&f.work_repo);
    // Doubles a string to 512 MiB.
    let cmd = raw(
        "/usr/bin/awk",
        &["BEGIN { s = \"x\"; while (length(s) < 300000000) s = s s; print length(s) }"],
        &f.work_repo,
        ChildAccess::default(),
    );
    let capped = SandboxLimits {
        memory_bytes: 64 * 1024 * 1024,
        ..limits()
    };
    let report = run(&cmd, &f.work_repo, &jail, &capped).await.unwrap();
    assert_ne!(
        report.status,
        ExitState::Code(0),
        "allocated past the limit"
    );
    let generous = SandboxLimits {
        memory_bytes: 2 * 1024 * 1024 * 1024,
        ..limits()
    };
    let report = run(&cmd, &f.work_repo, &jail, &generous).await.unwrap();
    assert_eq!(
        report.status,
        ExitState::Code(0),
        "control: within the limit it runs"
    );
}
