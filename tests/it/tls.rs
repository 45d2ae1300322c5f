//! Issue 13: native TLS on both listeners (a throwaway CA made at run time, a client that
//! trusts only it), the key-mode refusal, the SIGHUP reload seen by new connections while an
//! old one keeps working, the TLS modes' start-up rules, proxy mode's client address, and
//! `kafclaw healthcheck`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::edge::{audit, exchange, request};
use crate::harness::{run, Gateway, Options, TOKEN};

/// A throwaway certificate authority.
pub struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A leaf certificate and its key, as PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn issue(&self) -> Leaf {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kafclaw test gateway");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// Writes `text` to `path`, created with `mode` (replacing atomically).
pub fn write_file(path: &Path, text: &str, mode: u32) {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
    drop(f);
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The certificate and key files of a gateway.
pub struct TlsFiles {
    _dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    pub fn new(leaf: &Leaf) -> TlsFiles {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            _dir: dir,
        };
        files.install(leaf, 0o600);
        files
    }

    pub fn install(&self, leaf: &Leaf, key_mode: u32) {
        write_file(&self.cert, &leaf.cert_pem, 0o644);
        write_file(&self.key, &leaf.key_pem, key_mode);
    }

    /// Options for a native-TLS gateway with these files.
    pub fn options(&self) -> Options {
        let mut o = Options::default();
        for (k, v) in self.env() {
            o = o.env(k, &v);
        }
        o
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KAFCLAW_GATEWAY_TLS_MODE", "native".to_string()),
            (
                "KAFCLAW_GATEWAY_TLS_CERT_FILE",
                self.cert.display().to_string(),
            ),
            (
                "KAFCLAW_GATEWAY_TLS_KEY_FILE",
                self.key.display().to_string(),
            ),
        ]
    }
}

/// A TLS client that trusts only `ca_pem`, with the given protocol versions.
pub fn client_config(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn trusting(ca: &Ca) -> Arc<rustls::ClientConfig> {
    client_config(&ca.pem(), rustls::DEFAULT_VERSIONS)
}

/// One keep-alive HTTPS connection.
pub struct Conn {
    addr: String,
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl Conn {
    /// Connects and completes the handshake (the error is the handshake's).
    pub fn open(addr: &str, config: Arc<rustls::ClientConfig>) -> Result<Conn, String> {
        let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| e.to_string())?;
        }
        Ok(Conn {
            addr: addr.to_string(),
            stream,
        })
    }

    /// The DER of the certificate the server presented.
    pub fn peer_leaf(&self) -> Vec<u8> {
        self.stream.conn.peer_certificates().unwrap()[0].to_vec()
    }

    pub fn protocol(&self) -> Option<rustls::ProtocolVersion> {
        self.stream.conn.protocol_version()
    }

    /// `GET path` on this connection (keep-alive): status and body.
    pub fn get(&mut self, path: &str, headers: &[&str]) -> (u16, String) {
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        self.stream.write_all(req.as_bytes()).unwrap();
        self.stream.flush().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(self.stream.read(&mut byte).unwrap(), 1, "connection closed");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse::<usize>().unwrap())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body).unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// Variables for a child process.
type Vars = Vec<(&'static str, String)>;

/// Lines of stderr besides the root warning (tests may run as root).
pub fn refusal_lines(err: &str) -> usize {
    err.trim()
        .lines()
        .filter(|l| !l.contains("RUNNING AS ROOT"))
        .count()
}

fn gateway_args() -> Vec<&'static str> {
    vec!["gateway", "--port", "0", "--dashboard-port", "0"]
}

fn env_of(pairs: Vec<(&str, String)>) -> std::collections::HashMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Polls `what` until it is true (deadline 10 s).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn both_listeners_speak_tls_to_a_client_that_trusts_only_the_test_ca() {
    let ca = Ca::new("kafclaw test ca");
    let files = TlsFiles::new(&ca.issue());
    let gw = Gateway::start(files.options().token());
    assert!(gw.tls, "the ready line says https:// with native TLS");
    for addr in [&gw.gateway, &gw.dashboard] {
        let mut conn = Conn::open(addr, trusting(&ca)).unwrap();
        let (status, body) = conn.get("/healthz", &[]);
        assert_eq!(status, 200, "{body}");
        let auth = format!("Authorization: Bearer {TOKEN}");
        if addr == &gw.dashboard {
            let (status, body) = conn.get("/api/v1/auth/verify", &[&auth]);
            assert_eq!(status, 200, "{body}");
        }
    }
    // TLS 1.2 is accepted as well.
    let tls12 = client_config(&ca.pem(), &[&rustls::version::TLS12]);
    let conn = Conn::open(&gw.gateway, tls12).unwrap();
    assert_eq!(conn.protocol(), Some(rustls::ProtocolVersion::TLSv1_2));
    // A client that trusts another CA refuses the certificate.
    let other = Ca::new("someone else");
    assert!(Conn::open(&gw.gateway, trusting(&other)).is_err());
    // Plain HTTP gets no HTTP answer.
    let mut plain = TcpStream::connect(&gw.gateway).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/1.1 200"));
}

#[test]
fn a_plain_ready_line_has_no_https() {
    let gw = Gateway::start(Options::default());
    assert!(!gw.tls);
}

#[test]
fn a_key_file_that_group_or_others_can_access_is_refused_naming_it() {
    let ca = Ca::new("kafclaw test ca");
    let leaf = ca.issue();
    let files = TlsFiles::new(&leaf);
    for mode in [0o640, 0o644, 0o604, 0o660, 0o602] {
        files.install(&leaf, mode);
        let home = tempfile::tempdir().unwrap();
        let (code, out, err) = run(home.path(), &env_of(files.env()), &gateway_args());
        assert_eq!(code, 2, "mode {mode:o}: {err}");
        assert!(!out.contains("ready"), "{out}");
        assert!(
            err.contains(&files.key.display().to_string()),
            "names the file: {err}"
        );
        assert_eq!(refusal_lines(&err), 1, "one line: {err}");
        assert!(!err.contains("PRIVATE KEY"), "{err}");
    }
    // 0400 (read-only for the owner) is fine.
    files.install(&leaf, 0o400);
    let gw = Gateway::start(files.options());
    assert!(gw.tls);
}

#[test]
fn native_mode_refuses_missing_mismatched_or_malformed_files() {
    let ca = Ca::new("kafclaw test ca");
    let files = TlsFiles::new(&ca.issue());
    let home = tempfile::tempdir().unwrap();
    let cases: Vec<(Vars, &str)> = vec![
        (
            vec![("KAFCLAW_GATEWAY_TLS_MODE", "native".into())],
            "gateway.tls.cert_file",
        ),
        (
            vec![
                ("KAFCLAW_GATEWAY_TLS_MODE", "native".into()),
                (
                    "KAFCLAW_GATEWAY_TLS_CERT_FILE",
                    files.cert.display().to_string(),
                ),
            ],
            "gateway.tls.key_file",
        ),
        (
            vec![
                ("KAFCLAW_GATEWAY_TLS_MODE", "native".into()),
                (
                    "KAFCLAW_GATEWAY_TLS_CERT_FILE",
                    "/nonexistent/tls.crt".into(),
                ),
                (
                    "KAFCLAW_GATEWAY_TLS_KEY_FILE",
                    files.key.display().to_string(),
                ),
            ],
            "/nonexistent/tls.crt",
        ),
    ];
    for (vars, named) in cases {
        let (code, _, err) = run(home.path(), &env_of(vars), &gateway_args());
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(named), "{named}: {err}");
    }
    // A key of another certificate.
    let other = ca.issue();
    write_file(&files.key, &other.key_pem, 0o600);
    let (code, _, err) = run(home.path(), &env_of(files.env()), &gateway_args());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not fit"), "{err}");
    // Not PEM at all.
    write_file(&files.cert, "not a certificate\n", 0o644);
    let (code, _, err) = run(home.path(), &env_of(files.env()), &gateway_args());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("gateway.tls.cert_file"), "{err}");
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections_while_an_open_one_keeps_working() {
    let ca = Ca::new("kafclaw test ca");
    let first = ca.issue();
    let files = TlsFiles::new(&first);
    let mut gw = Gateway::start(files.options());
    let mut old = Conn::open(&gw.gateway, trusting(&ca)).unwrap();
    assert_eq!(old.get("/healthz", &[]).0, 200);
    assert_eq!(old.peer_leaf(), first.der);

    let second = ca.issue();
    files.install(&second, 0o600);
    gw.signal("HUP");
    eventually("a new connection to get the second certificate", || {
        Conn::open(&gw.gateway, trusting(&ca)).unwrap().peer_leaf() == second.der
    });
    // The dashboard listener shares the certificate.
    let dash = Conn::open(&gw.dashboard, trusting(&ca)).unwrap();
    assert_eq!(dash.peer_leaf(), second.der);
    // The connection opened before the reload keeps its session and keeps being served.
    assert_eq!(old.get("/healthz", &[]).0, 200);
    assert_eq!(old.peer_leaf(), first.der);
    let reloaded = audit(&gw, "config.reloaded");
    assert!(
        reloaded.iter().any(|r| r["data"]["ok"] == true),
        "{reloaded:?}"
    );

    // A reload that fails (a key others can read) keeps the certificate in service, is
    // audited, and does not stop the gateway.
    let third = ca.issue();
    files.install(&third, 0o644);
    gw.signal("HUP");
    eventually("the failed reload to be audited", || {
        audit(&gw, "config.reloaded")
            .iter()
            .any(|r| r["data"]["ok"] == false)
    });
    let conn = Conn::open(&gw.gateway, trusting(&ca)).unwrap();
    assert_eq!(conn.peer_leaf(), second.der);
    // The log line follows the audit record.
    eventually("the failed reload's log line", || {
        gw.stderr()
            .contains("previous certificate stays in service")
    });
    let failed = audit(&gw, "config.reloaded");
    assert!(
        !serde_json::to_string(&failed).unwrap().contains("PRIVATE"),
        "no key material in the audit log"
    );
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(15)).success());
}

#[test]
fn a_non_loopback_bind_without_tls_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let token = ("KAFCLAW_GATEWAY_AUTH_TOKEN", TOKEN.to_string());
    let cases: Vec<(Vars, Vec<&str>)> = vec![
        (
            vec![token.clone(), ("KAFCLAW_GATEWAY_HOST", "0.0.0.0".into())],
            vec![],
        ),
        (
            vec![
                token.clone(),
                ("KAFCLAW_GATEWAY_HOST", "0.0.0.0".into()),
                ("KAFCLAW_GATEWAY_TLS_MODE", "off".into()),
            ],
            vec![],
        ),
        (vec![token.clone()], vec!["--host", "0.0.0.0"]),
        (vec![token.clone()], vec!["--host", "192.0.2.1"]),
        (vec![token.clone()], vec!["--host", "::"]),
    ];
    for (vars, extra) in cases {
        let mut args = gateway_args();
        args.extend(extra);
        args.push("--allow-root");
        let (code, out, err) = run(home.path(), &env_of(vars), &args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(!out.contains("ready"));
        assert!(err.contains("gateway.tls.mode"), "{err}");
        assert_eq!(refusal_lines(&err), 1, "one line: {err}");
        assert!(!err.contains(TOKEN));
    }
    // Proxy mode without trusted proxies is refused too, on any bind.
    for host in ["127.0.0.1", "0.0.0.0"] {
        let vars = vec![
            token.clone(),
            ("KAFCLAW_GATEWAY_HOST", host.to_string()),
            ("KAFCLAW_GATEWAY_TLS_MODE", "proxy".into()),
        ];
        let mut args = gateway_args();
        args.push("--allow-root");
        let (code, _, err) = run(home.path(), &env_of(vars), &args);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("gateway.trusted_proxies"), "{err}");
    }
}

#[test]
fn proxy_mode_starts_on_a_non_loopback_bind_and_says_http() {
    let gw = Gateway::start(
        Options::default()
            .token()
            .env("KAFCLAW_GATEWAY_HOST", "0.0.0.0")
            .env("KAFCLAW_GATEWAY_TLS_MODE", "proxy")
            .env("KAFCLAW_GATEWAY_TRUSTED_PROXIES", "127.0.0.1/32")
            .arg("--allow-root"),
    );
    assert!(!gw.tls);
    assert!(gw.gateway.starts_with("0.0.0.0:"), "{}", gw.gateway);
}

/// Three bad tokens from `bad` (X-Forwarded-For), then the right token from `bad` and from
/// `other`: the statuses of those two.
fn lockout_after_bad_tokens(gw: &Gateway, bad: &str, other: &str) -> (u16, u16) {
    let good = format!("Authorization: Bearer {TOKEN}");
    let wrong = "Authorization: Bearer kc_wrong-token-0123456789abcdefghijklmnopqrstu";
    let host = format!("Host: {}", gw.dashboard);
    let ask = |xff: &str, auth: &str| {
        let xff = format!("X-Forwarded-For: {xff}");
        exchange(
            &gw.dashboard,
            &request("GET", "/api/v1/auth/verify", &[&host, &xff, auth], ""),
        )
        .status
    };
    for _ in 0..3 {
        assert_eq!(ask(bad, wrong), 401);
    }
    (ask(bad, &good), ask(other, &good))
}

fn proxy_gateway(trusted: &str) -> Gateway {
    Gateway::start(
        Options::default()
            .token()
            .env("KAFCLAW_GATEWAY_TLS_MODE", "proxy")
            .env("KAFCLAW_GATEWAY_TRUSTED_PROXIES", trusted)
            .env("KAFCLAW_SECURITY_AUTH_LOCKOUT_MAX_FAILURES", "3"),
    )
}

#[test]
fn in_proxy_mode_only_a_trusted_peer_names_the_client() {
    // The proxy (this test, at 127.0.0.1) is trusted: each forwarded client has its own lockout.
    let gw = proxy_gateway("127.0.0.1/32");
    assert_eq!(
        lockout_after_bad_tokens(&gw, "203.0.113.7", "203.0.113.8"),
        (429, 200)
    );
    let failed = audit(&gw, "auth.failed");
    assert!(
        failed
            .iter()
            .any(|r| serde_json::to_string(r).unwrap().contains("203.0.113.7")),
        "the forwarded client is in the audit record: {failed:?}"
    );

    // An untrusted peer's X-Forwarded-For is ignored: the peer itself is locked out.
    let gw = proxy_gateway("192.0.2.0/24");
    assert_eq!(
        lockout_after_bad_tokens(&gw, "203.0.113.7", "203.0.113.8"),
        (429, 429)
    );
}

fn healthcheck(env: Vec<(&str, String)>, port: u16, extra: &[&str]) -> (i32, String, String) {
    let home = tempfile::tempdir().unwrap();
    let port = port.to_string();
    let mut args = vec!["healthcheck", "--port", &port];
    args.extend(extra);
    run(home.path(), &env_of(env), &args)
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn healthcheck_exits_0_only_when_healthz_answers_200() {
    let gw = Gateway::start(Options::default());
    let (code, out, err) = healthcheck(vec![], port_of(&gw.gateway), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("healthz"), "{out}");
    let (code, out, _) = healthcheck(vec![], port_of(&gw.gateway), &["--json"]);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(doc.to_string().contains("healthz"), "{doc}");

    // Nothing listening.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = free.local_addr().unwrap().port();
    drop(free);
    let (code, out, _) = healthcheck(vec![], closed, &[]);
    assert_eq!(code, 1, "{out}");

    // Something that does not answer HTTP within 2 s.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    let (code, _, _) = healthcheck(vec![], silent.local_addr().unwrap().port(), &[]);
    assert_eq!(code, 1);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn healthcheck_speaks_tls_trusting_exactly_the_configured_certificate() {
    let ca = Ca::new("kafclaw test ca");
    let files = TlsFiles::new(&ca.issue());
    let gw = Gateway::start(files.options());
    let port = port_of(&gw.gateway);
    let (code, out, err) = healthcheck(files.env(), port, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("https://"), "{out}");
    // Plain HTTP against the TLS listener is unhealthy.
    let (code, _, _) = healthcheck(vec![], port, &[]);
    assert_eq!(code, 1);
    // A certificate on disk other than the one served (renewed, not reloaded) is unhealthy.
    let elsewhere = TlsFiles::new(&ca.issue());
    let (code, out, _) = healthcheck(elsewhere.env(), port, &[]);
    assert_eq!(code, 1, "{out}");
}

#[test]
fn security_check_passes_the_hardened_quick_start_and_reports_the_tls_mode() {
    let ca = Ca::new("kafclaw test ca");
    let files = TlsFiles::new(&ca.issue());
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    write_file(&token, &format!("{TOKEN}\n"), 0o600);
    let mut env = files.env();
    env.push(("KAFCLAW_GATEWAY_HOST", "0.0.0.0".into()));
    env.push(("KAFCLAW_TOOLS_EXEC_RESTRICT_WORKSPACE", "true".into()));
    env.push((
        "KAFCLAW_GATEWAY_AUTH_TOKEN_FILE",
        token.display().to_string(),
    ));
    let check = |env: Vec<(&str, String)>| {
        let home = tempfile::tempdir().unwrap();
        let (code, out, err) = run(home.path(), &env_of(env), &["security", "check", "--json"]);
        let doc: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}{err}"));
        (code, doc)
    };
    let row = crate::harness::report_row;
    let (_, doc) = check(env.clone());
    let failed: Vec<String> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert!(failed.iter().all(|n| n == "root"), "{failed:?}: {doc}");
    let tls = row(&doc, "tls");
    assert_eq!(tls["status"], "pass");
    assert!(tls["message"].as_str().unwrap().contains("native"), "{tls}");
    assert!(!doc.to_string().contains(TOKEN));

    // Proxy mode passes with trusted proxies; off on a remote bind fails.
    let mut proxy = env.clone();
    proxy.retain(|(k, _)| !k.starts_with("KAFCLAW_GATEWAY_TLS_"));
    proxy.push(("KAFCLAW_GATEWAY_TLS_MODE", "proxy".into()));
    proxy.push(("KAFCLAW_GATEWAY_TRUSTED_PROXIES", "10.0.0.2/32".into()));
    let (_, doc) = check(proxy.clone());
    assert_eq!(row(&doc, "tls")["status"], "pass");
    assert!(row(&doc, "tls")["message"]
        .as_str()
        .unwrap()
        .contains("proxy"));
    let mut off = proxy;
    off.retain(|(k, _)| !k.starts_with("KAFCLAW_GATEWAY_TLS_"));
    let (code, doc) = check(off);
    assert_eq!(code, 1);
    assert_eq!(row(&doc, "tls")["status"], "fail");
    // A key others can read fails the row too.
    files.install(&ca.issue(), 0o644);
    let (_, doc) = check(env);
    assert_eq!(row(&doc, "tls")["status"], "fail");
}

#[test]
fn kafclaw_admin_with_url_and_token_speaks_tls_to_a_native_gateway() {
    let ca = Ca::new("kafclaw test ca");
    let files = TlsFiles::new(&ca.issue());
    let gw = Gateway::start(files.options().token());
    let env = files.env();
    let url = format!("https://127.0.0.1:{}", port_of(&gw.dashboard));
    // Another home: no control socket, so the message goes over HTTPS to --url, trusting
    // exactly gateway.tls.cert_file.
    let home = tempfile::tempdir().unwrap();
    let (code, out, err) = run(
        home.path(),
        &env_of(env.clone()),
        &["admin", "relax-tools", "--url", &url, "--token", TOKEN],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = run(
        home.path(),
        &env_of(env),
        &[
            "admin",
            "relax-tools",
            "--url",
            &url,
            "--token",
            "kc_not-the-token-0123456789abcdefghijklmnopq",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("401"), "{err}");
    // Without a certificate to trust, nothing is sent unverified.
    let (code, _, err) = run(
        home.path(),
        &env_of(vec![]),
        &["admin", "relax-tools", "--url", &url, "--token", TOKEN],
    );
    assert_eq!(code, 2);
    assert!(err.contains("gateway.tls.cert_file"), "{err}");
    // The older form (--token, no --url) still reaches this host's dashboard port.
    let mut env = files.env();
    env.push((
        "KAFCLAW_GATEWAY_DASHBOARD_PORT",
        port_of(&gw.dashboard).to_string(),
    ));
    let (code, out, err) = run(
        home.path(),
        &env_of(env),
        &["admin", "relax-tools", "--token", TOKEN],
    );
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn sighup_without_native_tls_reloads_nothing_and_keeps_serving() {
    let mut gw = Gateway::start(Options::default());
    gw.signal("HUP");
    eventually("the reload to be audited", || {
        !audit(&gw, "config.reloaded").is_empty()
    });
    let record = &audit(&gw, "config.reloaded")[0];
    assert_eq!(record["data"]["changed"], false, "{record}");
    let host = format!("Host: {}", gw.gateway);
    let answer = exchange(&gw.gateway, &request("GET", "/healthz", &[&host], ""));
    assert_eq!(answer.status, 200);
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(15)).success());
}

#[test]
fn native_tls_can_be_configured_in_config_json() {
    let ca = Ca::new("kafclaw test ca");
    let files = TlsFiles::new(&ca.issue());
    let json = serde_json::json!({"gateway": {"tls": {
        "mode": "native",
        "cert_file": files.cert.display().to_string(),
        "key_file": files.key.display().to_string(),
    }}});
    let gw = Gateway::start(Options {
        config_json: Some(json.to_string()),
        ..Default::default()
    });
    assert!(gw.tls);
    let mut conn = Conn::open(&gw.dashboard, trusting(&ca)).unwrap();
    assert_eq!(conn.get("/healthz", &[]).0, 200);
}
