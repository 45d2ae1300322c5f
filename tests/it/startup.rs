//! Startup refusals, settings precedence, graceful shutdown.

use std::collections::HashMap;
use std::time::Duration;

use crate::harness::{client, is_root, run, Gateway, Options, TOKEN};

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_remote_bind_without_a_token_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let (code, out, err) = run(
        home.path(),
        &env(&[("KAFCLAW_GATEWAY_HOST", "0.0.0.0")]),
        &[
            "gateway",
            "--port",
            "0",
            "--dashboard-port",
            "0",
            "--allow-root",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("KAFCLAW_GATEWAY_AUTH_TOKEN"), "{err}");
    assert!(!out.contains("ready"));
}

#[test]
fn a_remote_bind_with_a_short_token_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let (code, _, err) = run(
        home.path(),
        &env(&[(
            "KAFCLAW_GATEWAY_AUTH_TOKEN",
            "short-token-42-characters-long-0123456789",
        )]),
        &[
            "gateway",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--dashboard-port",
            "0",
            "--allow-root",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at least 43"), "{err}");
    assert!(
        !err.contains("short-token-42"),
        "the token is never echoed: {err}"
    );
}

#[test]
fn root_with_a_remote_bind_needs_allow_root() {
    if !is_root() {
        // The refusal only applies to uid 0; as another user this path cannot be reached.
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let vars = env(&[
        ("KAFCLAW_GATEWAY_AUTH_TOKEN", TOKEN),
        ("KAFCLAW_GATEWAY_HOST", "0.0.0.0"),
    ]);
    let (code, _, err) = run(
        home.path(),
        &vars,
        &["gateway", "--port", "0", "--dashboard-port", "0"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--allow-root"), "{err}");
}

#[test]
fn root_on_loopback_starts_with_a_loud_warning() {
    if !is_root() {
        return;
    }
    let mut gw = Gateway::start(Options::default());
    gw.signal("TERM");
    gw.wait_exit(Duration::from_secs(10));
    assert!(gw.stderr().contains("RUNNING AS ROOT"));
}

#[test]
fn a_bad_value_stops_startup_naming_its_key_and_source() {
    let home = tempfile::tempdir().unwrap();
    let (code, _, err) = run(
        home.path(),
        &env(&[("KAFCLAW_GATEWAY_DASHBOARD_PORT", "70000")]),
        &["gateway"],
    );
    assert_eq!(code, 2);
    let line = err
        .lines()
        .find(|l| l.contains("gateway.dashboard_port"))
        .unwrap_or_default();
    assert!(
        line.contains("KAFCLAW_GATEWAY_DASHBOARD_PORT in the environment"),
        "{err}"
    );
    assert!(line.contains("0-65535"), "{err}");

    std::fs::create_dir_all(home.path().join(".kafclaw")).unwrap();
    std::fs::write(
        home.path().join(".kafclaw/config.json"),
        r#"{"tools":{"exec":{"restrict_workspace":"maybe"}}}"#,
    )
    .unwrap();
    let (code, _, err) = run(home.path(), &HashMap::new(), &["gateway"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("tools.exec.restrict_workspace") && err.contains("config.json"),
        "{err}"
    );
}

#[tokio::test]
async fn env_beats_config_file_beats_defaults() {
    let options = Options {
        config_json: Some(
            r#"{"gateway":{"cors_origins":["https://from-config"]},"log":{"level":"warn"}}"#.into(),
        ),
        ..Default::default()
    }
    .env("KAFCLAW_LOG_LEVEL", "info");
    let mut gw = Gateway::start(options);
    let res = client()
        .get(gw.url("/healthz"))
        .header("Origin", "https://from-config")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "config.json beat the empty default list");
    gw.signal("TERM");
    gw.wait_exit(Duration::from_secs(10));
    assert!(
        gw.stderr().contains("INFO"),
        "env KAFCLAW_LOG_LEVEL=info beat config.json's warn"
    );
}

#[tokio::test]
async fn sigterm_and_sigint_exit_zero_and_flush_the_store() {
    for sig in ["TERM", "INT"] {
        let mut gw = Gateway::start(Options::default());
        let res = client().get(gw.url("/healthz")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        gw.signal(sig);
        let status = gw.wait_exit(Duration::from_secs(10));
        assert_eq!(status.code(), Some(0), "SIG{sig}");

        // The stopped event was flushed: a fresh gateway on the same home sees it.
        let home = std::mem::replace(&mut gw.home, tempfile::tempdir().unwrap());
        let next = Gateway::start_in(home, Options::default());
        let events: serde_json::Value = client()
            .get(next.url("/api/v1/timeline"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let kinds: Vec<&str> = events
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            &kinds[..3],
            ["gateway.started", "gateway.stopped", "gateway.started"]
                .iter()
                .rev()
                .copied()
                .collect::<Vec<_>>()
                .as_slice()
        );
    }
}

#[test]
fn state_is_created_with_final_modes() {
    use std::os::unix::fs::MetadataExt;
    let mut gw = Gateway::start(Options::default());
    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM right after the ready line is graceful"
    );
    let root = gw.home_path();
    let mut checked = 0;
    for entry in walk(&root.join(".kafclaw"))
        .into_iter()
        .chain(walk(&root.join(".config/kafclaw")))
    {
        let meta = std::fs::symlink_metadata(&entry).unwrap();
        let mode = meta.mode() & 0o777;
        let expected = if meta.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, expected, "{}", entry.display());
        checked += 1;
    }
    assert!(checked >= 8, "walked {checked} entries");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn the_second_gateway_on_one_home_is_refused_clearly() {
    let gw = Gateway::start(Options::default());
    let (code, _, err) = run(
        &gw.home_path(),
        &HashMap::new(),
        &["gateway", "--port", "0", "--dashboard-port", "0"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("kafclaw gateway running"), "{err}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let mut gw = Gateway::start(Options::default().arg("--log-format").arg("json"));
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)).code(), Some(0));
    let logs = gw.stderr();
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "{logs}");
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(value["level"].is_string(), "{line}");
    }
}
