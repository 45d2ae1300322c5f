//! The container runtime of `skills.runtime_isolation = strict|auto`: docker or podman,
//! usable by the current user (its `version` command answers, client and server).
//!
//! Owns: probing the runtimes (bounded in time) and choosing the isolation.
//! Must not: run anything but `docker version` / `podman version`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one `version` probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A usable runtime, or why none is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// `docker` or `podman` answered.
    Usable(&'static str),
    /// Neither did: one reason per runtime.
    Unusable(String),
}

/// Runs `docker version` then `podman version` (with `path` as `PATH` when given) and
/// returns the first that answers.
pub fn probe() -> Probe {
    let mut reasons = Vec::new();
    for runtime in ["docker", "podman"] {
        match version(runtime) {
            Ok(()) => return Probe::Usable(runtime),
            Err(e) => reasons.push(format!("{runtime}: {e}")),
        }
    }
    Probe::Unusable(reasons.join("; "))
}

fn version(runtime: &str) -> Result<(), String> {
    // As the current user, with only the client's own variables (never the gateway's token,
    // provider keys or `*_FILE` paths) and this process's PATH to find it.
    let mut child = Command::new(runtime)
        .arg("version")
        .env_clear()
        .envs(std::env::var("PATH").map(|p| ("PATH".to_string(), p)))
        .envs(kafclaw_actors::executor::runtime_client_env())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "not installed (not on PATH)".to_string(),
            _ => format!("cannot run `{runtime} version`: {e}"),
        })?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                let line = err
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim()
                    .chars()
                    .take(200)
                    .collect::<String>();
                return Err(format!(
                    "`{runtime} version` exited with {status} as this user{}",
                    if line.is_empty() {
                        String::new()
                    } else {
                        format!(": {line}")
                    }
                ));
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{runtime} version` did not answer within {PROBE_TIMEOUT:?}"
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The absolute path of `runtime`'s client on this process's `PATH`.
pub fn locate(runtime: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(runtime))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
