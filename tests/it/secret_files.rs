//! Issue 13: secrets handed over as files — `NAME_FILE` next to every secret variable and
//! systemd credentials in `$CREDENTIALS_DIRECTORY/<key>` — with the same precedence slot as
//! the environment, the mode refusal, and `doctor` saying where each secret came from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::edge::{exchange, request};
use crate::harness::{run, Gateway, Options, TOKEN};
use crate::tls::{refusal_lines, write_file};

/// Another strong token.
const OTHER: &str = "kc_other-token-0123456789abcdefghijklmnopqrstuv";

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn secret(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    write_file(&path, text, mode);
    path
}

/// The status of `GET /api/v1/auth/verify` with `token`.
fn verify(gw: &Gateway, token: &str) -> u16 {
    // A wildcard bind is reached (and named) on loopback.
    let addr = gw.dashboard.replace("0.0.0.0:", "127.0.0.1:");
    let host = format!("Host: {addr}");
    let auth = format!("Authorization: Bearer {token}");
    exchange(
        &addr,
        &request("GET", "/api/v1/auth/verify", &[&host, &auth], ""),
    )
    .status
}

fn start(env: HashMap<String, String>) -> Gateway {
    Gateway::start(Options {
        env,
        ..Default::default()
    })
}

fn gateway_args() -> [&'static str; 5] {
    ["gateway", "--port", "0", "--dashboard-port", "0"]
}

#[test]
fn a_token_file_is_used_with_its_trailing_newline_stripped() {
    let dir = tempfile::tempdir().unwrap();
    for text in [
        format!("{TOKEN}\n"),
        format!("{TOKEN}\r\n"),
        TOKEN.to_string(),
    ] {
        let path = secret(dir.path(), "token", &text, 0o600);
        let gw = start(vars(&[(
            "KAFCLAW_GATEWAY_AUTH_TOKEN_FILE",
            path.to_str().unwrap(),
        )]));
        assert_eq!(verify(&gw, TOKEN), 200);
        assert_eq!(verify(&gw, OTHER), 401);
    }
    // 0400 is fine too, and a remote bind takes its token from the file.
    let path = secret(dir.path(), "token", TOKEN, 0o400);
    let gw = Gateway::start(Options {
        env: vars(&[
            ("KAFCLAW_GATEWAY_AUTH_TOKEN_FILE", path.to_str().unwrap()),
            ("KAFCLAW_GATEWAY_HOST", "0.0.0.0"),
            ("KAFCLAW_GATEWAY_TLS_MODE", "proxy"),
            ("KAFCLAW_GATEWAY_TRUSTED_PROXIES", "192.0.2.0/24"),
        ]),
        args: vec!["--allow-root".into()],
        ..Default::default()
    });
    assert_eq!(verify(&gw, TOKEN), 200);
}

#[test]
fn a_secret_file_that_group_or_others_can_read_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    for mode in [0o644, 0o640, 0o604, 0o660, 0o606] {
        let path = secret(dir.path(), "token", TOKEN, mode);
        let shown = path.to_str().unwrap();
        for var in [
            "KAFCLAW_GATEWAY_AUTH_TOKEN_FILE",
            "KAFCLAW_PROVIDERS_OPENAI_API_KEY_FILE",
            "KAFCLAW_CHANNELS_BRIDGES_SLACK_SECRET_FILE",
        ] {
            let (code, out, err) = run(home.path(), &vars(&[(var, shown)]), &gateway_args());
            assert_eq!(code, 2, "{var} mode {mode:o}: {err}");
            assert!(!out.contains("ready"));
            assert!(err.contains(var) && err.contains(shown), "{err}");
            assert!(!err.contains(TOKEN), "never the value: {err}");
            assert_eq!(refusal_lines(&err), 1, "one line: {err}");
        }
    }
    // A credential is held to the same rule.
    let creds = tempfile::tempdir().unwrap();
    let path = secret(creds.path(), "gateway.auth_token", TOKEN, 0o640);
    let (code, _, err) = run(
        home.path(),
        &vars(&[("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap())]),
        &gateway_args(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(path.to_str().unwrap()), "{err}");
}

/// What a secret file variable may not name: the kernel's own files (`/proc/self/environ`
/// reports size 0 and mode 0400, and would make the environment the token), a FIFO, a file
/// past the size cap, a file of another user. Each is refused, in one line, at once.
#[test]
fn kernel_files_fifos_oversize_and_foreign_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::set_permissions(&fifo, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let big = secret(dir.path(), "big", &"x".repeat(70 * 1024), 0o600);
    let mut cases = vec![
        ("/proc/self/environ".to_string(), "kernel file"),
        (fifo.display().to_string(), "not a regular file"),
        (big.display().to_string(), "larger than"),
    ];
    if rustix::process::geteuid().is_root() {
        let foreign = secret(dir.path(), "foreign", TOKEN, 0o600);
        std::os::unix::fs::chown(&foreign, Some(1234), Some(1234)).unwrap();
        cases.push((foreign.display().to_string(), "belongs to uid 1234"));
    }
    for (path, why) in cases {
        let started = std::time::Instant::now();
        let (code, out, err) = run(
            home.path(),
            &vars(&[("KAFCLAW_GATEWAY_AUTH_TOKEN_FILE", &path)]),
            &gateway_args(),
        );
        assert_eq!(code, 2, "{path}: {err}");
        assert!(!out.contains("ready"));
        assert!(err.contains(why), "{path}: {err}");
        assert_eq!(refusal_lines(&err), 1, "one line: {err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{path}"
        );
    }
}

#[test]
fn missing_files_and_name_with_name_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let path = secret(dir.path(), "token", TOKEN, 0o600);
    let cases = [
        vec![("KAFCLAW_GATEWAY_AUTH_TOKEN_FILE", "/nonexistent/token")],
        vec![("KAFCLAW_GATEWAY_AUTH_TOKEN_FILE", "relative/token")],
        vec![(
            "KAFCLAW_GATEWAY_AUTH_TOKEN_FILE",
            dir.path().to_str().unwrap(),
        )],
        vec![
            ("KAFCLAW_GATEWAY_AUTH_TOKEN_FILE", path.to_str().unwrap()),
            ("KAFCLAW_GATEWAY_AUTH_TOKEN", OTHER),
        ],
    ];
    for case in cases {
        let (code, out, err) = run(home.path(), &vars(&case), &gateway_args());
        assert_eq!(code, 2, "{case:?}: {err}");
        assert!(!out.contains("ready"));
        assert!(err.contains("KAFCLAW_GATEWAY_AUTH_TOKEN_FILE"), "{err}");
        assert!(!err.contains(TOKEN) && !err.contains(OTHER), "{err}");
    }
}

#[test]
fn systemd_credentials_supply_secrets_and_an_explicit_variable_wins() {
    let creds = tempfile::tempdir().unwrap();
    secret(
        creds.path(),
        "gateway.auth_token",
        &format!("{TOKEN}\n"),
        0o400,
    );
    // Files not named for a secret key are not read (even unreadable ones).
    secret(creds.path(), "unrelated", "x", 0o644);
    let dir = creds.path().to_str().unwrap();
    let gw = start(vars(&[("CREDENTIALS_DIRECTORY", dir)]));
    assert_eq!(verify(&gw, TOKEN), 200);
    assert_eq!(verify(&gw, OTHER), 401);
    drop(gw);

    // The environment names the token explicitly: it wins over the credential.
    let gw = start(vars(&[
        ("CREDENTIALS_DIRECTORY", dir),
        ("KAFCLAW_GATEWAY_AUTH_TOKEN", OTHER),
    ]));
    assert_eq!(verify(&gw, OTHER), 200);
    assert_eq!(verify(&gw, TOKEN), 401);
    drop(gw);
    let files = tempfile::tempdir().unwrap();
    let path = secret(files.path(), "token", OTHER, 0o600);
    let gw = start(vars(&[
        ("CREDENTIALS_DIRECTORY", dir),
        ("KAFCLAW_GATEWAY_AUTH_TOKEN_FILE", path.to_str().unwrap()),
    ]));
    assert_eq!(verify(&gw, OTHER), 200);
    assert_eq!(verify(&gw, TOKEN), 401);
}

fn doctor(env: &HashMap<String, String>) -> (Value, String) {
    let home = tempfile::tempdir().unwrap();
    let (_, out, err) = run(home.path(), env, &["doctor", "--json"]);
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}{err}"));
    (doc, out)
}

fn row<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let checks = doc["checks"].as_array().expect("checks");
    checks
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no row {name}: {doc}"))
}

#[test]
fn doctor_says_where_each_secret_came_from_never_its_value() {
    let files = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    let token = secret(files.path(), "token", TOKEN, 0o600);
    let bridge = secret(files.path(), "bridge", "bridge-secret-value-123", 0o600);
    secret(
        creds.path(),
        "providers.openai.api_key",
        "sk-credential-9876",
        0o400,
    );
    let env = vars(&[
        ("KAFCLAW_GATEWAY_AUTH_TOKEN_FILE", token.to_str().unwrap()),
        (
            "KAFCLAW_CHANNELS_BRIDGES_SLACK_SECRET_FILE",
            bridge.to_str().unwrap(),
        ),
        ("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap()),
        (
            "KAFCLAW_CHANNELS_WHATSAPP_APP_SECRET",
            "whatsapp-app-secret-42",
        ),
    ]);
    let (doc, out) = doctor(&env);
    for value in [
        TOKEN,
        "bridge-secret-value-123",
        "sk-credential-9876",
        "whatsapp-app-secret-42",
    ] {
        assert!(!out.contains(value), "a value in doctor's output: {out}");
    }
    let message = |name: &str| row(&doc, name)["message"].as_str().unwrap().to_string();
    let token_row = message("secret_source:gateway.auth_token");
    assert!(
        token_row.contains("file") && token_row.contains(token.to_str().unwrap()),
        "{token_row}"
    );
    let bridge_row = message("secret_source:channels.bridges.slack.secret");
    assert!(
        bridge_row.contains("KAFCLAW_CHANNELS_BRIDGES_SLACK_SECRET_FILE"),
        "{bridge_row}"
    );
    let key_row = message("secret_source:providers.openai.api_key");
    assert!(key_row.contains("systemd credential"), "{key_row}");
    let env_row = message("secret_source:channels.whatsapp.app_secret");
    assert!(env_row.contains("environment"), "{env_row}");
}

#[test]
fn the_vault_passphrase_comes_from_a_file_or_a_credential_too() {
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let phrase = "correct horse battery staple 42";
    let file = secret(files.path(), "passphrase", &format!("{phrase}\n"), 0o600);
    let by_file = vars(&[("KAFCLAW_VAULT_PASSPHRASE_FILE", file.to_str().unwrap())]);
    let (code, out, err) = run(home.path(), &by_file, &["secrets", "list"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!err.contains("unknown variable"), "{err}");
    // The key file is now wrapped: without the passphrase the vault does not open.
    let (code, _, _) = run(home.path(), &HashMap::new(), &["secrets", "list"]);
    assert_ne!(code, 0);
    // The same passphrase as a plain variable, or as a credential, opens it.
    let (code, _, err) = run(
        home.path(),
        &vars(&[("KAFCLAW_VAULT_PASSPHRASE", phrase)]),
        &["secrets", "list"],
    );
    assert_eq!(code, 0, "{err}");
    let creds = tempfile::tempdir().unwrap();
    secret(creds.path(), "vault.passphrase", phrase, 0o400);
    let (code, _, err) = run(
        home.path(),
        &vars(&[("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap())]),
        &["secrets", "list"],
    );
    assert_eq!(code, 0, "{err}");
    // A passphrase file others can read is refused, naming it, never showing it.
    let loose = secret(files.path(), "loose", phrase, 0o644);
    let (code, _, err) = run(
        home.path(),
        &vars(&[("KAFCLAW_VAULT_PASSPHRASE_FILE", loose.to_str().unwrap())]),
        &["secrets", "list"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(loose.to_str().unwrap()) && !err.contains(phrase),
        "{err}"
    );
}

#[test]
fn a_file_variable_in_the_env_file_is_a_path_not_a_plaintext_secret() {
    let files = tempfile::tempdir().unwrap();
    let token = secret(files.path(), "token", TOKEN, 0o600);
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join(".config/kafclaw");
    std::fs::create_dir_all(&config).unwrap();
    write_file(
        &config.join("env"),
        &format!("KAFCLAW_GATEWAY_AUTH_TOKEN_FILE={}\n", token.display()),
        0o600,
    );
    let (_, out, err) = run(
        home.path(),
        &HashMap::new(),
        &["security", "check", "--json"],
    );
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}{err}"));
    assert_eq!(row(&doc, "plaintext_env_file")["status"], "pass", "{doc}");
    let source = row(&doc, "token_strength");
    assert_eq!(source["status"], "pass", "{doc}");
    let gw = Gateway::start_in(home, Options::default());
    assert_eq!(verify(&gw, TOKEN), 200);
}
