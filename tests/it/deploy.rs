//! Issue 13: the deployment files keep their promises. Checked statically (no docker daemon,
//! no systemd instance): the unit's hardening and `systemd-analyze` (when installed), the
//! Dockerfile, `.dockerignore`, the compose example and its Caddyfile.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::Value;

use crate::harness::BIN;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `[Section]` → key → every value given (systemd allows repeating a key).
fn unit(text: &str) -> HashMap<String, HashMap<String, Vec<String>>> {
    let mut out: HashMap<String, HashMap<String, Vec<String>>> = HashMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (k, v) = line.split_once('=').expect("Key=Value");
        out.entry(section.clone())
            .or_default()
            .entry(k.trim().to_string())
            .or_default()
            .push(v.trim().to_string());
    }
    out
}

#[test]
fn the_systemd_unit_is_hardened_notify_and_does_not_restart_a_refused_config() {
    let text = read("deploy/kafclaw.service");
    let unit = unit(&text);
    let service = &unit["Service"];
    let one = |k: &str| -> String {
        service
            .get(k)
            .and_then(|v| v.last())
            .cloned()
            .unwrap_or_else(|| panic!("no {k}= in [Service]"))
    };
    for (key, want) in [
        ("Type", "notify"),
        ("RestartPreventExitStatus", "2"),
        ("ProtectProc", "invisible"),
        ("ProcSubset", "pid"),
        ("PrivateUsers", "true"),
        ("LimitCORE", "0"),
        ("UMask", "0077"),
        ("NoNewPrivileges", "true"),
        ("ProtectSystem", "strict"),
        ("CapabilityBoundingSet", ""),
        (
            "Environment",
            "KAFCLAW_GATEWAY_TLS_KEY_FILE=/etc/kafclaw/tls.key",
        ),
    ] {
        if key == "Environment" {
            assert!(service[key].iter().any(|v| v == want), "{key}={want}");
        } else {
            assert_eq!(one(key), want, "{key}");
        }
    }
    assert!(one("WatchdogSec").ends_with('s'));
    assert!(one("User") != "root" && !one("User").is_empty());
    let filters = &service["SystemCallFilter"];
    let allowed: Vec<&str> = filters
        .iter()
        .filter(|f| !f.starts_with('~'))
        .flat_map(|f| f.split_whitespace())
        .collect();
    assert!(allowed.contains(&"@system-service"), "{filters:?}");
    // The exec sandbox needs Landlock and setrlimit under the filter.
    for needed in [
        "landlock_create_ruleset",
        "landlock_add_rule",
        "landlock_restrict_self",
    ] {
        assert!(allowed.contains(&needed), "{needed}: {filters:?}");
    }
    let denied: Vec<&str> = filters
        .iter()
        .filter_map(|f| f.strip_prefix('~'))
        .flat_map(|f| f.split_whitespace())
        .collect();
    assert!(!denied.contains(&"@resources"), "{filters:?}");
    let families = one("RestrictAddressFamilies");
    assert_eq!(
        families.split_whitespace().collect::<Vec<_>>(),
        ["AF_INET", "AF_INET6", "AF_UNIX"]
    );
    // The token is a credential, named for its key; never a plain Environment= value.
    assert!(one("LoadCredential").starts_with("gateway.auth_token:"));
    assert!(!text.contains("KAFCLAW_GATEWAY_AUTH_TOKEN="));
    assert!(service["Environment"]
        .iter()
        .any(|v| v == "KAFCLAW_GATEWAY_TLS_MODE=native"));
    assert!(one("ExecReload").contains("-HUP"));
    assert!(one("ExecStart").ends_with("kafclaw gateway"));
}

/// The unit with ExecStart pointing at the binary under test (verify checks it exists).
fn unit_for_verify() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kafclaw.service");
    let text = read("deploy/kafclaw.service").replace("/usr/local/bin/kafclaw", BIN);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn systemd_analyze() -> Option<PathBuf> {
    ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

#[test]
fn systemd_analyze_rates_the_unit_at_most_1_5_and_verifies_it_clean() {
    let Some(analyze) = systemd_analyze() else {
        eprintln!("systemd-analyze is not installed (.ci/run installs Debian's systemd): skipped");
        return;
    };
    let (_dir, path) = unit_for_verify();
    let out = Command::new(&analyze)
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for kafclaw.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in {text}"));
    assert!(level <= 1.5, "exposure {level}:\n{text}");

    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{errors}");
    let about_us: Vec<&str> = errors
        .lines()
        .filter(|l| l.contains("kafclaw.service"))
        .collect();
    assert!(about_us.is_empty(), "{errors}");
}

/// Dockerfile instructions of the final stage, continuations joined.
fn final_stage(text: &str) -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    let start = joined
        .iter()
        .rposition(|l| l.to_ascii_uppercase().starts_with("FROM "))
        .unwrap();
    joined[start..]
        .iter()
        .filter_map(|l| {
            let (op, rest) = l.split_once(' ')?;
            Some((op.to_ascii_uppercase(), rest.trim().to_string()))
        })
        .collect()
}

#[test]
fn the_image_runs_as_non_root_with_volumes_a_healthcheck_and_file_secrets() {
    let text = read("deploy/Dockerfile");
    let stage = final_stage(&text);
    let all = |op: &str| -> Vec<String> {
        stage
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, r)| r.clone())
            .collect()
    };
    let user = all("USER").pop().expect("USER");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "0" && uid != "root", "{user}");
    let volumes = all("VOLUME").join(" ");
    for dir in ["/home/kafclaw/.kafclaw", "/home/kafclaw/.config/kafclaw"] {
        assert!(volumes.contains(dir), "VOLUME {dir}: {volumes}");
    }
    let health = all("HEALTHCHECK").pop().expect("HEALTHCHECK");
    assert!(
        health.contains("kafclaw") && health.contains("healthcheck"),
        "{health}"
    );
    let runs = all("RUN").join(" ");
    assert!(!runs.contains("curl") && !runs.contains("wget"), "{runs}");
    assert!(text.contains("KAFCLAW_GATEWAY_AUTH_TOKEN_FILE=/run/secrets/"));
    assert!(!text.contains("KAFCLAW_GATEWAY_AUTH_TOKEN=…") && !text.contains("AUTH_TOKEN=$"));
    let env = all("ENV").join(" ");
    assert!(env.contains("KAFCLAW_HOME=/home/kafclaw"), "{env}");

    let ignore = read(".dockerignore");
    let entries: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for must in ["target/", ".git/", "deploy/secrets/"] {
        assert!(entries.contains(&must), ".dockerignore lacks {must}");
    }
}

fn yaml(path: &str) -> Value {
    serde_yaml_ng::from_str(&read(path)).unwrap()
}

fn env_map(service: &Value) -> HashMap<String, String> {
    match &service["environment"] {
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => serde_yaml_ng::to_string(other).unwrap().trim().to_string(),
                };
                (k.as_str().unwrap().to_string(), v)
            })
            .collect(),
        Value::Sequence(items) => items
            .iter()
            .filter_map(|i| i.as_str()?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        _ => HashMap::new(),
    }
}

#[test]
fn the_compose_example_puts_the_gateway_in_proxy_mode_behind_a_tls_proxy() {
    let doc = yaml("deploy/compose.yaml");
    let gateway = &doc["services"]["kafclaw"];
    let proxy = &doc["services"]["proxy"];
    let env = env_map(gateway);
    assert_eq!(env["KAFCLAW_GATEWAY_TLS_MODE"], "proxy");
    assert_eq!(env["KAFCLAW_GATEWAY_HOST"], "0.0.0.0");
    assert!(!env.contains_key("KAFCLAW_GATEWAY_AUTH_TOKEN"));

    // The token is a compose secret, mounted where the _FILE variable points.
    let secret_file = &env["KAFCLAW_GATEWAY_AUTH_TOKEN_FILE"];
    let name = secret_file
        .strip_prefix("/run/secrets/")
        .expect("/run/secrets/…");
    let listed: Vec<&str> = gateway["secrets"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(listed.contains(&name), "{listed:?}");
    let source = doc["secrets"][name]["file"]
        .as_str()
        .expect("a secret file");
    assert!(source.starts_with("./secrets/"), "{source}");
    assert!(read(".gitignore").contains("deploy/secrets"));

    // Only the proxy is reachable from outside; its fixed address is the only trusted proxy.
    assert!(gateway["ports"].is_null(), "the gateway publishes no port");
    assert!(proxy["ports"].as_sequence().is_some_and(|p| !p.is_empty()));
    let proxy_ip = proxy["networks"]["edge"]["ipv4_address"].as_str().unwrap();
    assert_eq!(
        env["KAFCLAW_GATEWAY_TRUSTED_PROXIES"],
        format!("{proxy_ip}/32")
    );
    assert!(proxy["image"].as_str().unwrap().starts_with("caddy"));
    assert_eq!(
        proxy["depends_on"]["kafclaw"]["condition"].as_str(),
        Some("service_healthy")
    );

    // The proxy forwards both listeners, for the names the gateway answers to.
    let mounts: Vec<&str> = proxy["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        mounts.contains(&"./Caddyfile:/etc/caddy/Caddyfile:ro"),
        "{mounts:?}"
    );
    let caddy = read("deploy/Caddyfile");
    for upstream in ["reverse_proxy kafclaw:18790", "reverse_proxy kafclaw:18791"] {
        assert!(caddy.contains(upstream), "Caddyfile lacks {upstream}");
    }
    assert!(caddy.contains("{$KAFCLAW_SITE:localhost}"));
    assert_eq!(
        env["KAFCLAW_GATEWAY_ALLOWED_HOSTS"],
        "${KAFCLAW_SITE:-localhost}"
    );
    assert_eq!(env_map(proxy)["KAFCLAW_SITE"], "${KAFCLAW_SITE:-localhost}");
    // The image's defaults that proxy mode relies on.
    let build = &gateway["build"];
    assert_eq!(build["dockerfile"].as_str(), Some("deploy/Dockerfile"));
}

/// Datagrams a gateway sends to its `NOTIFY_SOCKET`, read until `until` arrives (10 s).
fn notifications_until(socket: &std::os::unix::net::UnixDatagram, until: &str) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.iter().any(|m: &String| m.contains(until)) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {until} among {seen:?}"
        );
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    seen
}

#[test]
fn the_gateway_notifies_systemd_of_readiness_feeds_the_watchdog_and_says_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let mut gw = crate::harness::Gateway::start(
        crate::harness::Options::default()
            .env("NOTIFY_SOCKET", path.to_str().unwrap())
            .env("WATCHDOG_USEC", "400000"),
    );
    // READY=1 comes once the ready line (both listeners bound) is out.
    let seen = notifications_until(&socket, "READY=1");
    assert!(seen.iter().all(|m| !m.contains("WATCHDOG=1")), "{seen:?}");
    // Healthy: the watchdog is fed.
    notifications_until(&socket, "WATCHDOG=1");
    notifications_until(&socket, "WATCHDOG=1");
    gw.signal("TERM");
    notifications_until(&socket, "STOPPING=1");
    assert!(gw.wait_exit(std::time::Duration::from_secs(15)).success());
}
