//! Starting and stopping a real gateway process.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_kafclaw");

/// A strong token (43+ characters).
pub const TOKEN: &str = "kc_test-token-0123456789abcdefghijklmnopqrstuv";

/// A running gateway.
pub struct Gateway {
    pub child: Option<Child>,
    pub gateway: String,
    pub dashboard: String,
    pub home: tempfile::TempDir,
    /// True when the ready line said `https://` (native TLS).
    pub tls: bool,
    stderr: mpsc::Receiver<String>,
    stderr_lines: Vec<String>,
}

/// How to start one.
#[derive(Default, Clone)]
pub struct Options {
    pub env: HashMap<String, String>,
    pub args: Vec<String>,
    pub config_json: Option<String>,
    /// A program (and its arguments) that runs the binary: the child is
    /// `launcher… BIN --home HOME gateway …` (e.g. a private mount namespace, `tests/it/faults`).
    pub launcher: Vec<String>,
}

impl Options {
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.insert(k.into(), v.into());
        self
    }
    pub fn token(self) -> Self {
        self.env("KAFCLAW_GATEWAY_AUTH_TOKEN", TOKEN)
    }
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.into());
        self
    }
}

/// A command with a cleared environment (only PATH), the given home and env.
pub fn command(home: &Path, env: &HashMap<String, String>) -> Command {
    launched(&[], home, env)
}

/// [`command`], run through `launcher` (the program and its arguments before the binary).
fn launched(launcher: &[String], home: &Path, env: &HashMap<String, String>) -> Command {
    let mut cmd = match launcher.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(BIN);
            cmd
        }
        None => Command::new(BIN),
    };
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .arg("--home")
        .arg(home)
        .envs(env);
    cmd
}

impl Gateway {
    pub fn start(options: Options) -> Gateway {
        let home = tempfile::tempdir().unwrap();
        Self::start_in(home, options)
    }

    pub fn start_in(home: tempfile::TempDir, options: Options) -> Gateway {
        if let Some(json) = &options.config_json {
            std::fs::create_dir_all(home.path().join(".kafclaw")).unwrap();
            std::fs::write(home.path().join(".kafclaw/config.json"), json).unwrap();
        }
        let mut child = launched(&options.launcher, home.path(), &options.env)
            .arg("gateway")
            .args(["--port", "0", "--dashboard-port", "0"])
            .args(&options.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (err_tx, err_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if err_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let errors: Vec<String> = err_rx.try_iter().collect();
                panic!(
                    "gateway did not print its ready line; stderr:\n{}",
                    errors.join("\n")
                );
            }
        };
        let (gateway, dashboard) = parse_ready(&line);
        let tls = gateway.starts_with("https://");
        let bare = |addr: String| addr.trim_start_matches("https://").to_string();
        Gateway {
            child: Some(child),
            gateway: bare(gateway),
            dashboard: bare(dashboard),
            home,
            tls,
            stderr: err_rx,
            stderr_lines: Vec::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.dashboard, path)
    }
    pub fn gw_url(&self, path: &str) -> String {
        format!("http://{}{}", self.gateway, path)
    }
    /// `GET path` on the dashboard port with the admin [`TOKEN`]; the JSON answer.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        client()
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
    /// `GET path` on the dashboard port with the admin [`TOKEN`]; the body as text.
    pub async fn get_text(&self, path: &str) -> String {
        client()
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
    pub fn home_path(&self) -> PathBuf {
        self.home.path().to_path_buf()
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id();
        let status = Command::new("kill")
            .args([format!("-{sig}"), pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit (deadline), returning its status.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                start.elapsed() < deadline,
                "process did not exit within {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&mut self) -> String {
        self.stderr_lines.extend(self.stderr.try_iter());
        self.stderr_lines.join("\n")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn parse_ready(line: &str) -> (String, String) {
    let rest = line
        .strip_prefix("ready gateway=")
        .unwrap_or_else(|| panic!("unexpected first stdout line {line:?}"));
    let (gateway, dashboard) = rest.split_once(" dashboard=").unwrap();
    (gateway.to_string(), dashboard.to_string())
}

/// Runs `cmd` to the end with `stdin` written to it; its stdout and stderr are captured.
pub fn run_fed(mut cmd: Command, stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// Runs the binary to completion (for commands and refused starts).
pub fn run(home: &Path, env: &HashMap<String, String>, args: &[&str]) -> (i32, String, String) {
    let mut child = command(home, env)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = String::new();
    let mut err = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} did not finish within 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let code = child.wait().unwrap().code().unwrap_or(-1);
    (code, out, err)
}

/// The row `name` of `kafclaw --json security check` in `home` with `env`.
pub fn security_check_row(
    home: &Path,
    env: &HashMap<String, String>,
    name: &str,
) -> serde_json::Value {
    let (_, out, err) = run(home, env, &["--json", "security", "check"]);
    let doc: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}\n{err}"));
    report_row(&doc, name)
}

/// The row `name` of a `--json` report (`doctor`, `status`, `security check`).
pub fn report_row(doc: &serde_json::Value, name: &str) -> serde_json::Value {
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name} row: {doc:#}"))
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

pub fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// Every byte of every file under `dir`, for "the secret is nowhere on disk" checks.
pub fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(all_bytes(&p));
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.extend(bytes);
        }
    }
    out
}

/// True when `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}
