//! Running a [`CheckedCommand`]: the only place in KafClaw that spawns a process.
//!
//! Owns: the child's environment (cleared, then exactly `PATH`, `HOME`, `LANG`, plus the
//! checker's pinning variables for git), its process group, its resource limits, its kernel
//! confinement (`kernel`: Landlock, applied between fork and exec), the wall-clock timeout
//! that kills the whole group, and the capped capture of its output. Also the one-off probe of
//! an allowed program's version at start.
//! Must not: decide whether a command may run (the checker did).
//!
//! The child is its own process-group leader (`process_group(0)`), so on timeout one
//! `SIGKILL` to `-pgid` reaches every descendant that did not leave the group (the allowed
//! programs never do). The group is also killed after a normal exit, so a straggler that
//! closed its pipes cannot outlive the command. Each stream is read to the end while only
//! the first `max_output_bytes` are kept, so the child never blocks on a full pipe.
//!
//! `RLIMIT_NPROC` counts every process of the user, not of the child, so it is only set when
//! not running as root (root ignores it anyway); set it well above what the gateway's user
//! runs besides.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod kernel;

pub use kernel::{
    kernel_support, ChildAccess, KernelJail, KernelSupport, LandlockUnavailable, SandboxMode,
    SandboxStatus,
};

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::check::CheckedCommand;
use super::rules::FIXED_PATH;

/// How long to wait for the output pipes after the group was killed.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Resource limits of one child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Wall-clock limit; the whole process group is killed after it.
    pub timeout: Duration,
    /// Bytes kept from each of stdout and stderr.
    pub max_output_bytes: usize,
    /// `RLIMIT_CPU`, seconds of CPU time.
    pub cpu_seconds: u64,
    /// `RLIMIT_FSIZE`, the largest file the child may write, in bytes.
    pub file_size_bytes: u64,
    /// `RLIMIT_NOFILE`, open file descriptors.
    pub open_files: u64,
    /// `RLIMIT_NPROC`, processes of the user (skipped as root, see the module doc).
    pub processes: u64,
    /// `RLIMIT_DATA`, the child's heap and private writable mappings in bytes (files it only
    /// reads through mappings do not count): a command cannot take the host's memory.
    pub memory_bytes: u64,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            max_output_bytes: 65_536,
            cpu_seconds: 30,
            file_size_bytes: 16 * 1024 * 1024,
            open_files: 256,
            processes: 64,
            memory_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// How the child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum ExitState {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

/// One stream's capture.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Captured {
    /// The first `max_output_bytes` bytes.
    pub bytes: Vec<u8>,
    /// Every byte the child wrote, kept or not.
    pub total_bytes: u64,
    /// Whether bytes were dropped.
    pub truncated: bool,
}

/// What running a command produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecReport {
    /// Exit code or signal.
    pub status: ExitState,
    /// Captured stdout.
    pub stdout: Captured,
    /// Captured stderr.
    pub stderr: Captured,
    /// Wall-clock time from spawn to reaping.
    pub duration: Duration,
    /// Whether the wall-clock limit killed the group.
    pub timed_out: bool,
}

/// Why a command could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The program could not be started.
    #[error("cannot start {program}: {reason}")]
    Spawn {
        /// The program path.
        program: String,
        /// The operating system's reason.
        reason: String,
    },
    /// Waiting for the child failed.
    #[error("cannot wait for the child: {0}")]
    Wait(String),
    /// The kernel confinement could not be prepared; nothing was started.
    #[error("{0}")]
    Confine(#[from] kernel::RulesetFailed),
}

/// Runs `command` with `home` as `HOME`, confined by `jail`, under `limits`, never through a
/// shell.
pub async fn run(
    command: &CheckedCommand,
    home: &Path,
    jail: &KernelJail,
    limits: &SandboxLimits,
) -> Result<ExecReport, SandboxError> {
    let ruleset = jail.ruleset(&command.program, command.access)?;
    let mut cmd = Command::new(&command.program);
    if let Some(arg0) = command.argv.first() {
        cmd.arg0(arg0);
    }
    cmd.args(command.argv.iter().skip(1))
        .current_dir(&command.cwd)
        .env_clear()
        .env("PATH", FIXED_PATH)
        .env("HOME", home)
        .env("LANG", "C.UTF-8")
        .envs(command.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    set_rlimits_before_exec(&mut cmd, limits);
    if let Some(fd) = &ruleset {
        confine_before_exec(&mut cmd, kernel::raw(fd));
    }

    let started = Instant::now();
    let spawned = cmd.spawn();
    // The child holds its own restriction now; the parent's copy of the ruleset can go.
    drop(ruleset);
    let mut child = spawned.map_err(|e| SandboxError::Spawn {
        program: command.program.display().to_string(),
        reason: e.to_string(),
    })?;
    let pgid = child.id().and_then(|id| i32::try_from(id).ok());
    let cap = limits.max_output_bytes;
    let mut stdout_task = child.stdout.take().map(|s| tokio::spawn(capture(s, cap)));
    let mut stderr_task = child.stderr.take().map(|s| tokio::spawn(capture(s, cap)));

    let finished = tokio::time::timeout(limits.timeout, async {
        let status = child.wait().await;
        let stdout = join_capture(stdout_task.as_mut()).await;
        let stderr = join_capture(stderr_task.as_mut()).await;
        (status, stdout, stderr)
    })
    .await;

    let (status, stdout, stderr, timed_out) = match finished {
        Ok((status, stdout, stderr)) => {
            kill_group(pgid);
            (status, stdout, stderr, false)
        }
        Err(_elapsed) => {
            kill_group(pgid);
            let status = child.wait().await;
            let stdout = drain_after_kill(stdout_task.as_mut()).await;
            let stderr = drain_after_kill(stderr_task.as_mut()).await;
            (status, stdout, stderr, true)
        }
    };
    let status = status.map_err(|e| SandboxError::Wait(e.to_string()))?;
    Ok(ExecReport {
        status: exit_state(status),
        stdout,
        stderr,
        duration: started.elapsed(),
        timed_out,
    })
}

async fn join_capture(task: Option<&mut tokio::task::JoinHandle<Captured>>) -> Captured {
    match task {
        Some(task) => task.await.unwrap_or_default(),
        None => Captured::default(),
    }
}

async fn drain_after_kill(task: Option<&mut tokio::task::JoinHandle<Captured>>) -> Captured {
    match task {
        Some(task) => match tokio::time::timeout(DRAIN_GRACE, &mut *task).await {
            Ok(captured) => captured.unwrap_or_default(),
            Err(_) => {
                // A process outside the group still holds the pipe: give up on its output.
                task.abort();
                Captured {
                    truncated: true,
                    ..Captured::default()
                }
            }
        },
        None => Captured::default(),
    }
}

/// Reads `stream` to its end, keeping the first `cap` bytes.
async fn capture<R: AsyncRead + Unpin>(mut stream: R, cap: usize) -> Captured {
    let mut captured = Captured::default();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                captured.total_bytes += n as u64;
                let room = cap.saturating_sub(captured.bytes.len());
                let keep = room.min(n);
                captured.bytes.extend_from_slice(&buf[..keep]);
                if keep < n {
                    captured.truncated = true;
                }
            }
        }
    }
    captured
}

fn kill_group(pgid: Option<i32>) {
    if let Some(pid) = pgid.and_then(rustix::process::Pid::from_raw) {
        // ESRCH (the group is already gone) is the normal case after a clean exit.
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

fn exit_state(status: ExitStatus) -> ExitState {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitState::Code(code),
        (None, Some(signal)) => ExitState::Signal(signal),
        (None, None) => ExitState::Code(-1),
    }
}

/// Installs the Landlock restriction, applied in the child after the resource limits.
#[allow(unsafe_code)]
fn confine_before_exec(cmd: &mut Command, ruleset: std::os::fd::RawFd) {
    // SAFETY: the closure runs in the forked child before exec and only calls
    // `restrict_in_child`, which issues two system calls on a descriptor the parent keeps open
    // until `spawn` returned, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || kernel::restrict_in_child(ruleset));
    }
}

/// `program --version`'s first line, with a cleared environment and a 5 s deadline: how the
/// checker learns what the allowed git can do, once, at start.
pub fn program_version(program: &Path) -> Option<String> {
    use std::io::Read;
    let mut child = std::process::Command::new(program)
        .arg("--version")
        .env_clear()
        .env("PATH", FIXED_PATH)
        .env("LANG", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut out = String::new();
    child
        .stdout
        .take()?
        .take(4096)
        .read_to_string(&mut out)
        .ok()?;
    out.lines().next().map(str::to_string)
}

/// `runtime rm --force name`, bounded to 10 s: the container of a strict skill run whose
/// client was killed (on timeout) does not outlive it.
pub fn remove_container(runtime: &Path, name: &str) {
    let child = std::process::Command::new(runtime)
        .args(["rm", "--force", name])
        .env_clear()
        .env("PATH", FIXED_PATH)
        .envs(super::skill::runtime_client_env())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
        }
    }
}

/// Installs the resource limits, applied in the child between fork and exec.
#[allow(unsafe_code)]
fn set_rlimits_before_exec(cmd: &mut Command, limits: &SandboxLimits) {
    use rustix::process::{setrlimit, Resource, Rlimit};
    let as_root = rustix::process::getuid().is_root();
    let pairs = [
        (Resource::Cpu, limits.cpu_seconds),
        (Resource::Fsize, limits.file_size_bytes),
        (Resource::Nofile, limits.open_files),
        (Resource::Nproc, limits.processes),
        (Resource::Data, limits.memory_bytes),
    ];
    // SAFETY: the closure runs in the forked child before exec. It only calls `setrlimit`
    // (a direct system call through rustix: no allocation, no lock, async-signal-safe) on
    // values computed before the fork, and builds an `io::Error` from a raw errno, which
    // does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            for (resource, value) in pairs {
                if as_root && resource == Resource::Nproc {
                    continue;
                }
                let limit = Rlimit {
                    current: Some(value),
                    maximum: Some(value),
                };
                setrlimit(resource, limit)
                    .map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error()))?;
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests;
