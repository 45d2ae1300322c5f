//! Issue 11 §3-§5: the HTTP edge. `Host` is checked before authentication on both listeners
//! (DNS rebinding), browser origins cannot change state, only trusted proxies set the client
//! address, every protected route authenticates before it parses anything, and a listener that
//! cannot bind exits 2 with one line. Slow bodies and connection floods: `edge/flood.rs`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{run, security_check_row, Gateway, Options, TOKEN};

mod flood;

/// One answer read off a raw connection.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {self:?}"))
    }
}

/// Reads one response (head and a `Content-Length` body); `None` on EOF or timeout first.
pub fn read_answer(stream: &mut TcpStream) -> Option<Answer> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some(Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Writes `request` on a new connection to `addr` and reads the answer.
pub fn exchange(addr: &str, request: &str) -> Answer {
    let stream = TcpStream::connect(addr).unwrap();
    exchange_on(stream, request)
}

/// Writes `request` on `stream` (from a thread: the answer may come before the body is all
/// written, and write errors after it are expected) and reads the answer.
pub fn exchange_on(mut stream: TcpStream, request: &str) -> Answer {
    let mut writer = stream.try_clone().unwrap();
    let bytes = request.as_bytes().to_vec();
    let writing = std::thread::spawn(move || {
        let _ = writer.write_all(&bytes);
    });
    let answer = read_answer(&mut stream);
    drop(stream);
    let _ = writing.join();
    answer.unwrap_or_else(|| {
        let shown: String = request.chars().take(300).collect();
        panic!("no answer to {shown:?}")
    })
}

/// A request with the given head lines and JSON body.
pub fn request(method: &str, path: &str, head: &[&str], body: &str) -> String {
    let mut out = format!("{method} {path} HTTP/1.1\r\n");
    for line in head.iter().filter(|l| !l.is_empty()) {
        out.push_str(line);
        out.push_str("\r\n");
    }
    if !body.is_empty() || method == "POST" {
        out.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out
}

fn port(addr: &str) -> u16 {
    addr.parse::<SocketAddr>().unwrap().port()
}

/// The audit records of `kind` so far.
pub fn audit(gw: &Gateway, kind: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(gw.home_path().join(".kafclaw/audit/audit-000001.jsonl"))
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["kind"] == kind)
        .collect()
}

const RESTRICT: &str = r#"{"type":"restrict_tools","max_tier":0}"#;

#[test]
fn dns_rebinding_hosts_are_refused_before_authentication_in_local_mode() {
    let gw = Gateway::start(Options::default());
    let (dash, gate) = (port(&gw.dashboard), port(&gw.gateway));
    let control = |host: String, origin: Option<String>| {
        let mut head = vec![format!("Host: {host}")];
        head.extend(origin.map(|o| format!("Origin: {o}")));
        let head: Vec<&str> = head.iter().map(String::as_str).collect();
        exchange(
            &gw.dashboard,
            &request("POST", "/api/v1/admin/control", &head, RESTRICT),
        )
    };
    // The issue's example: a rebound name with a matching Origin.
    let rebound = control(
        format!("attacker.example:{dash}"),
        Some(format!("http://attacker.example:{dash}")),
    );
    assert_eq!(rebound.status, 421, "{rebound:?}");
    assert_eq!(rebound.json()["error"], "misdirected request");
    for host in [
        format!("attacker.example:{dash}"),
        "attacker.example".to_string(),
        format!("ATTACKER.example.:{dash}"),
        format!("localhost.attacker.example:{dash}"),
        format!("127.0.0.1.nip.io:{dash}"),
        format!("localhost:{gate}"),
        "localhost".to_string(),
        format!("127.0.0.1@attacker.example:{dash}"),
        format!("user@127.0.0.1:{dash}"),
        format!("127.0.0.1:{dash}:{dash}"),
        format!("[::1:{dash}"),
        format!("127.1:{dash}"),
        String::new(),
    ] {
        let answer = control(host.clone(), None);
        assert_eq!(answer.status, 421, "Host {host:?}: {answer:?}");
    }
    let chat = exchange(
        &gw.gateway,
        &request(
            "POST",
            "/chat",
            &[
                &format!("Host: attacker.example:{gate}"),
                &format!("Origin: http://attacker.example:{gate}"),
            ],
            r#"{"message":"run ls"}"#,
        ),
    );
    assert_eq!(chat.status, 421, "{chat:?}");
    assert!(
        audit(&gw, "control.applied").is_empty(),
        "nothing was applied"
    );
    let refused = audit(&gw, "auth.failed");
    assert!(
        refused.iter().any(|r| r["data"]["reason"] == "host"
            && r["data"]["host"] == format!("attacker.example:{dash}")),
        "{refused:?}"
    );
    // The loopback names with the listener's port still work, unauthenticated (local mode).
    for host in [
        format!("localhost:{dash}"),
        format!("LocalHost.:{dash}"),
        format!("127.0.0.1:{dash}"),
        format!("[::1]:{dash}"),
    ] {
        let answer = control(host.clone(), None);
        assert_eq!(answer.status, 200, "Host {host:?}: {answer:?}");
    }
}

#[test]
fn host_headers_that_are_missing_doubled_or_overridden_are_refused() {
    let gw = Gateway::start(Options::default());
    let dash = port(&gw.dashboard);
    let good = format!("Host: 127.0.0.1:{dash}");
    let cases: Vec<(&str, String)> = vec![
        (
            "HTTP/1.0 without Host",
            "GET /api/v1/supervisor HTTP/1.0\r\n\r\n".to_string(),
        ),
        (
            "HTTP/1.1 without Host",
            "GET /api/v1/supervisor HTTP/1.1\r\n\r\n".to_string(),
        ),
        (
            "two Host headers",
            format!("GET /api/v1/supervisor HTTP/1.1\r\n{good}\r\nHost: attacker.example:{dash}\r\n\r\n"),
        ),
        (
            "absolute-form target naming another host",
            format!("POST http://attacker.example:{dash}/api/v1/admin/control HTTP/1.1\r\n{good}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{RESTRICT}", RESTRICT.len()),
        ),
        (
            "X-Forwarded-Host does not count",
            format!("GET /api/v1/supervisor HTTP/1.1\r\nHost: attacker.example:{dash}\r\nX-Forwarded-Host: 127.0.0.1:{dash}\r\nForwarded: host=127.0.0.1:{dash}\r\n\r\n"),
        ),
    ];
    for (case, raw) in cases {
        let answer = exchange(&gw.dashboard, &raw);
        // actix's parser already answers 400 to an HTTP/1.1 request without exactly one Host.
        let parser_refuses = ["HTTP/1.1 without Host", "two Host headers"].contains(&case);
        let expected = if parser_refuses { 400 } else { 421 };
        assert_eq!(answer.status, expected, "{case}: {answer:?}");
    }
    // Both listeners, every route: /healthz too.
    for addr in [&gw.gateway, &gw.dashboard] {
        let answer = exchange(
            addr,
            &request("GET", "/healthz", &["Host: attacker.example"], ""),
        );
        assert_eq!(answer.status, 421, "{addr}: {answer:?}");
    }
    let absolute_ok = exchange(
        &gw.dashboard,
        &format!("GET http://127.0.0.1:{dash}/healthz HTTP/1.1\r\n{good}\r\n\r\n"),
    );
    assert_eq!(absolute_ok.status, 200, "{absolute_ok:?}");
    assert!(audit(&gw, "control.applied").is_empty());
}

#[test]
fn allowed_hosts_with_and_without_a_port() {
    let gw = Gateway::start(Options::default().token().env(
        "KAFCLAW_GATEWAY_ALLOWED_HOSTS",
        "kafclaw.example.com, pinned.example.com:1",
    ));
    let auth = format!("Authorization: Bearer {TOKEN}");
    for (host, status) in [
        ("kafclaw.example.com", 200),
        ("kafclaw.example.com:443", 200),
        ("KAFCLAW.EXAMPLE.COM.:8443", 200),
        ("pinned.example.com:1", 200),
        ("pinned.example.com", 421),
        ("pinned.example.com:443", 421),
        ("evil.kafclaw.example.com", 421),
    ] {
        let answer = exchange(
            &gw.dashboard,
            &request(
                "GET",
                "/api/v1/supervisor",
                &[&format!("Host: {host}"), &auth],
                "",
            ),
        );
        assert_eq!(answer.status, status, "Host {host}: {answer:?}");
    }
    let home = tempfile::tempdir().unwrap();
    let env = [(
        "KAFCLAW_GATEWAY_ALLOWED_HOSTS".to_string(),
        "https://kafclaw.example.com/".to_string(),
    )]
    .into();
    let (code, out, err) = run(
        home.path(),
        &env,
        &["gateway", "--port", "0", "--dashboard-port", "0"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(!out.contains("ready"));
    assert!(err.contains("gateway.allowed_hosts"), "{err}");
}

#[test]
fn a_remote_bind_answers_to_the_address_a_connection_arrived_on() {
    let gw = Gateway::start(
        Options::default()
            .token()
            .env("KAFCLAW_GATEWAY_HOST", "0.0.0.0")
            // A remote bind needs TLS (issue 13): a proxy in front, none of whose addresses
            // is this test's.
            .env("KAFCLAW_GATEWAY_TLS_MODE", "proxy")
            .env("KAFCLAW_GATEWAY_TRUSTED_PROXIES", "192.0.2.0/24")
            .arg("--allow-root"),
    );
    let dash = port(&gw.dashboard);
    let arrived = format!("127.0.0.3:{dash}");
    let auth = format!("Authorization: Bearer {TOKEN}");
    for (host, status) in [
        (arrived.clone(), 200),
        (format!("127.0.0.4:{dash}"), 421),
        (format!("0.0.0.0:{dash}"), 421),
        (format!("localhost:{dash}"), 200),
        ("kafclaw.example.com".to_string(), 421),
    ] {
        let answer = exchange(
            &arrived,
            &request(
                "GET",
                "/api/v1/auth/verify",
                &[&format!("Host: {host}"), &auth],
                "",
            ),
        );
        assert_eq!(answer.status, status, "Host {host}: {answer:?}");
    }
}

#[test]
fn browser_origins_cannot_change_state() {
    let gw = Gateway::start(
        Options::default().env("KAFCLAW_GATEWAY_CORS_ORIGINS", "https://ops.example.com"),
    );
    let dash = port(&gw.dashboard);
    let host = format!("Host: 127.0.0.1:{dash}");
    let post = |extra: &[&str]| {
        let mut head = vec![host.as_str()];
        head.extend_from_slice(extra);
        exchange(
            &gw.dashboard,
            &request("POST", "/api/v1/admin/control", &head, RESTRICT),
        )
    };
    let own = format!("Origin: http://127.0.0.1:{dash}");
    let own_localhost = format!("Origin: http://localhost:{dash}");
    let other_port = format!("Origin: http://127.0.0.1:{}", port(&gw.gateway));
    for (case, extra) in [
        ("a foreign origin", vec!["Origin: http://attacker.example"]),
        ("Origin: null", vec!["Origin: null"]),
        ("another port of localhost", vec![other_port.as_str()]),
        (
            "a prefix of a listed origin",
            vec!["Origin: https://ops.example.com.evil"],
        ),
        (
            "two Origin headers",
            vec![own.as_str(), "Origin: http://attacker.example"],
        ),
        (
            "no Origin, Sec-Fetch-Site: cross-site",
            vec!["Sec-Fetch-Site: cross-site"],
        ),
    ] {
        let answer = post(&extra);
        assert_eq!(answer.status, 403, "{case}: {answer:?}");
        assert!(
            !answer.head.contains("access-control-allow-origin"),
            "{case}"
        );
    }
    assert!(audit(&gw, "control.applied").is_empty());
    let refused = audit(&gw, "auth.failed");
    assert!(
        refused.iter().any(|r| r["data"]["reason"] == "origin"),
        "{refused:?}"
    );
    for (case, extra) in [
        ("the listener's own origin", vec![own.as_str()]),
        ("the listener as localhost", vec![own_localhost.as_str()]),
        ("no Origin (not a browser)", vec![]),
        (
            "same-origin fetch",
            vec![own.as_str(), "Sec-Fetch-Site: same-origin"],
        ),
    ] {
        let answer = post(&extra);
        assert_eq!(answer.status, 200, "{case}: {answer:?}");
    }
    let listed = post(&[
        "Origin: https://ops.example.com",
        "Sec-Fetch-Site: cross-site",
    ]);
    assert_eq!(listed.status, 200, "{listed:?}");
    assert!(listed
        .head
        .contains("access-control-allow-origin: https://ops.example.com"));
}

#[test]
fn local_mode_trusts_only_direct_loopback_requests() {
    let gw = Gateway::start(Options::default());
    let dash = port(&gw.dashboard);
    let host = format!("Host: 127.0.0.1:{dash}");
    let direct = exchange(
        &gw.dashboard,
        &request("GET", "/api/v1/supervisor", &[&host], ""),
    );
    assert_eq!(direct.status, 200, "{direct:?}");
    for header in [
        "X-Forwarded-For: 203.0.113.9",
        "X-Forwarded-For: 127.0.0.1",
        "Forwarded: for=203.0.113.9",
        "X-Real-IP: 203.0.113.9",
    ] {
        let relayed = exchange(
            &gw.dashboard,
            &request("GET", "/api/v1/supervisor", &[&host, header], ""),
        );
        assert_eq!(relayed.status, 401, "{header}: {relayed:?}");
        let status = exchange(
            &gw.dashboard,
            &request("GET", "/api/v1/status", &[&host, header], ""),
        );
        assert_eq!(status.status, 200, "minimal status stays open: {status:?}");
        assert!(status.json().get("mode").is_none(), "{status:?}");
    }
}

#[test]
fn a_flood_of_bad_hosts_is_audited_boundedly_and_locks_nobody_out() {
    let gw = Gateway::start(
        Options::default()
            .env("KAFCLAW_SECURITY_AUTH_LOCKOUT_MAX_FAILURES", "3")
            .env("KAFCLAW_INCIDENTS_AUTH_FAILURES_PER_IP", "0"),
    );
    let dash = port(&gw.dashboard);
    let mut stream = TcpStream::connect(&gw.dashboard).unwrap();
    let started = Instant::now();
    for i in 0..20 {
        let raw = request(
            "GET",
            "/api/v1/supervisor",
            &[&format!("Host: rebind-{i}.attacker.example:{dash}")],
            "",
        );
        stream.write_all(raw.as_bytes()).unwrap();
        let answer = read_answer(&mut stream).expect("an answer on the same connection");
        assert_eq!(answer.status, 421);
    }
    let refused: Vec<Value> = audit(&gw, "auth.failed")
        .into_iter()
        .filter(|r| r["data"]["reason"] == "host")
        .collect();
    assert_eq!(
        refused.len(),
        3,
        "at most max_failures audited per client and window: {refused:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250 * 17),
        "refusals past the audit rate wait in the tarpit"
    );
    assert!(audit(&gw, "auth.locked_out").is_empty());
    let after = exchange(
        &gw.dashboard,
        &request(
            "GET",
            "/api/v1/supervisor",
            &[&format!("Host: 127.0.0.1:{dash}")],
            "",
        ),
    );
    assert_eq!(
        after.status, 200,
        "the local operator is not locked out: {after:?}"
    );
}

/// Sends a request from a chosen loopback source address.
fn from(source: &str, addr: &str, raw: &str) -> Answer {
    exchange_on(connect_from(source, addr), raw)
}

/// A blocking connection from `source` (any 127.0.0.0/8 address) to `addr` (made on a thread
/// of its own, so async tests can call it too).
pub fn connect_from(source: &str, addr: &str) -> TcpStream {
    let (source, addr) = (source.to_string(), addr.to_string());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let stream = runtime.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket
                .bind(SocketAddr::new(source.parse().unwrap(), 0))
                .unwrap_or_else(|e| panic!("bind {source}: {e}"));
            socket
                .connect(addr.parse().unwrap())
                .await
                .unwrap_or_else(|e| panic!("connect {source} -> {addr}: {e}"))
        });
        let stream = stream.into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream
    })
    .join()
    .unwrap()
}

#[test]
fn only_trusted_proxies_set_the_client_address() {
    let gw = Gateway::start(
        Options::default()
            .token()
            .env("KAFCLAW_GATEWAY_TRUSTED_PROXIES", "127.0.0.2/32")
            .env("KAFCLAW_SECURITY_AUTH_LOCKOUT_MAX_FAILURES", "3")
            .env("KAFCLAW_INCIDENTS_AUTH_FAILURES_PER_IP", "0"),
    );
    let dash = port(&gw.dashboard);
    let host = format!("Host: 127.0.0.1:{dash}");
    let good = format!("Authorization: Bearer {TOKEN}");
    let get = |source: &str, auth: &str, forwarded: &str| {
        from(
            source,
            &gw.dashboard,
            &request("GET", "/api/v1/supervisor", &[&host, auth, forwarded], ""),
        )
        .status
    };
    // Through the trusted proxy: the forwarded client is counted and locked out.
    for _ in 0..3 {
        assert_eq!(
            get(
                "127.0.0.2",
                "Authorization: Bearer wrong",
                "X-Forwarded-For: 6.6.6.6, 198.51.100.7"
            ),
            401
        );
    }
    assert_eq!(
        get("127.0.0.2", &good, "X-Forwarded-For: 198.51.100.7"),
        429
    );
    assert_eq!(get("127.0.0.2", &good, "Forwarded: for=198.51.100.7"), 429);
    assert_eq!(
        get("127.0.0.2", &good, "X-Forwarded-For: 198.51.100.8"),
        200
    );
    assert_eq!(
        get("127.0.0.2", &good, ""),
        200,
        "the proxy itself is not locked out"
    );
    let failed = audit(&gw, "auth.failed");
    assert!(
        failed
            .iter()
            .any(|r| r["data"]["client"] == "198.51.100.7" && r["data"]["peer"] == "127.0.0.2"),
        "{failed:?}"
    );
    // From an untrusted peer the headers are ignored: the peer is counted.
    for i in 0..3 {
        let forged = format!("X-Forwarded-For: 203.0.113.{i}");
        assert_eq!(
            get("127.0.0.3", "Authorization: Bearer wrong", &forged),
            401
        );
    }
    assert_eq!(
        get("127.0.0.3", &good, "X-Forwarded-For: 203.0.113.50"),
        429
    );
    assert_eq!(get("127.0.0.4", &good, "X-Forwarded-For: 127.0.0.3"), 200);
    let failed = audit(&gw, "auth.failed");
    assert!(
        failed.iter().all(|r| !r["data"]["client"]
            .as_str()
            .unwrap_or_default()
            .starts_with("203.0.113.")),
        "{failed:?}"
    );

    let home = tempfile::tempdir().unwrap();
    let env = [(
        "KAFCLAW_GATEWAY_TRUSTED_PROXIES".to_string(),
        "10.0.0.0/33".to_string(),
    )]
    .into();
    let (code, _, err) = run(
        home.path(),
        &env,
        &["gateway", "--port", "0", "--dashboard-port", "0"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("gateway.trusted_proxies"), "{err}");
    assert_eq!(
        err.lines()
            .filter(|l| l.contains("gateway.trusted_proxies"))
            .count(),
        1,
        "{err}"
    );
}

/// Every protected POST route: (on the gateway port, path, takes a body).
const PROTECTED_POSTS: &[(bool, &str, bool)] = &[
    (true, "/chat", true),
    (false, "/api/v1/admin/control", true),
    (false, "/api/v1/approvals/ap-unknown", true),
    #[cfg(feature = "test-hooks")]
    (false, "/api/v1/test/panic/store", false),
];

#[test]
fn every_protected_route_authenticates_before_it_parses_a_body() {
    let gw = Gateway::start(
        Options::default()
            .token()
            .env("KAFCLAW_SECURITY_AUTH_LOCKOUT_MAX_FAILURES", "1000")
            .env("KAFCLAW_INCIDENTS_AUTH_FAILURES_PER_IP", "0"),
    );
    let huge = "x".repeat(2 * 1024 * 1024);
    let bad_bodies: &[(&str, &str, &str)] = &[
        ("invalid json", "application/json", "{\"approved\": "),
        ("wrong content type", "text/plain", "{\"approved\": true}"),
        ("not an object", "application/json", "[1, 2"),
        ("over the size cap", "application/json", &huge),
    ];
    for (gateway_port, path, _) in PROTECTED_POSTS {
        let addr = if *gateway_port {
            &gw.gateway
        } else {
            &gw.dashboard
        };
        let host = format!("Host: {addr}");
        for auth in ["Authorization: Bearer wrong", ""] {
            for (case, content_type, body) in bad_bodies {
                let mut raw = format!("POST {path} HTTP/1.1\r\n{host}\r\n");
                if !auth.is_empty() {
                    raw.push_str(&format!("{auth}\r\n"));
                }
                raw.push_str(&format!(
                    "content-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                ));
                let answer = exchange(addr, &raw);
                assert_eq!(answer.status, 401, "{path} {auth:?} {case}: {answer:?}");
                assert_eq!(answer.json()["error"], "unauthorized");
            }
        }
    }
    // A bad query is not parsed before authentication either.
    let answer = exchange(
        &gw.dashboard,
        &request(
            "GET",
            "/api/v1/timeline?limit=abc",
            &[
                &format!("Host: {}", gw.dashboard),
                "Authorization: Bearer wrong",
            ],
            "",
        ),
    );
    assert_eq!(answer.status, 401, "{answer:?}");
    // With the right token the same bodies are the client's fault.
    let good = format!("Authorization: Bearer {TOKEN}");
    for (gateway_port, path, _) in PROTECTED_POSTS.iter().filter(|r| r.2) {
        let addr = if *gateway_port {
            &gw.gateway
        } else {
            &gw.dashboard
        };
        let raw = request(
            "POST",
            path,
            &[&format!("Host: {addr}"), &good],
            "{\"approved\": ",
        );
        let answer = exchange(addr, &raw);
        assert_eq!(answer.status, 400, "{path}: {answer:?}");
        assert!(answer.json()["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid json"));
    }
}

#[test]
fn a_listener_that_cannot_bind_exits_2_with_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    for (flag, key) in [
        ("--port", "gateway.port"),
        ("--dashboard-port", "gateway.dashboard_port"),
    ] {
        let home = tempfile::tempdir().unwrap();
        let mut args = vec!["gateway", "--port", "0", "--dashboard-port", "0"];
        let at = args.iter().position(|a| *a == flag).unwrap();
        args[at + 1] = &port;
        let (code, out, err) = run(home.path(), &Default::default(), &args);
        assert_eq!(code, 2, "{flag}: {err}");
        assert!(out.is_empty(), "{out}");
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("kafclaw:")).collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(
            lines[0].contains("cannot bind") && lines[0].contains(key),
            "{err}"
        );
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
    }
}

#[test]
fn security_check_warns_about_tokenless_local_mode() {
    let home = tempfile::tempdir().unwrap();
    let none = std::collections::HashMap::new();
    let row = security_check_row(home.path(), &none, "local_mode");
    assert_eq!(row["status"], "warn", "{row}");
    let remedy = row["remedy"].as_str().unwrap();
    assert!(
        remedy.contains("gateway.auth_token") && remedy.contains("control socket"),
        "{remedy}"
    );

    let env = [("KAFCLAW_GATEWAY_AUTH_TOKEN".to_string(), TOKEN.to_string())].into();
    let row = security_check_row(home.path(), &env, "local_mode");
    assert_eq!(row["status"], "pass", "{row}");

    // An issued token ends tokenless local mode (the gateway then asks every request for a
    // token), so the check passes without gateway.auth_token; a revoked one does not count.
    let (code, _, err) = run(
        home.path(),
        &none,
        &["token", "create", "--scope", "read", "--name", "r"],
    );
    assert_eq!(code, 0, "{err}");
    let row = security_check_row(home.path(), &none, "local_mode");
    assert_eq!(row["status"], "pass", "{row}");
    let (code, _, err) = run(home.path(), &none, &["token", "revoke", "r"]);
    assert_eq!(code, 0, "{err}");
    let row = security_check_row(home.path(), &none, "local_mode");
    assert_eq!(row["status"], "warn", "{row}");
}
