//! The command line as scripts and operators meet it (issue 14): one `--json` shape for every
//! command on stdout, success or failure; `--json` accepted anywhere; local commands reach the
//! running gateway through its control socket without a token; today's token usage as the
//! model server reported it; the papercuts of `security fix`, `doctor` and the start log.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{client, is_root, run, Gateway, Options, TOKEN};
use crate::model_server::{self, ModelServer};

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs `args` (which carry `--json` somewhere), checks the one shape and returns the exit
/// code and the document: `ok` and `command` always; `result` or `checks` when it succeeded
/// or ran checks; `error.code` and `error.message` exactly when `ok` is false.
fn shaped(home: &Path, env: &HashMap<String, String>, args: &[&str]) -> (i32, Value) {
    let (code, out, err) = run(home, env, args);
    let doc: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| {
        panic!("{args:?}: stdout is not one JSON document ({e}): {out:?} {err}")
    });
    assert!(doc["ok"].is_boolean(), "{args:?}: {doc}");
    assert!(doc["command"].is_string(), "{args:?}: {doc}");
    let ok = doc["ok"] == true;
    assert_eq!(
        ok,
        code == 0,
        "{args:?}: ok and the exit code disagree: {doc}"
    );
    assert_eq!(doc.get("error").is_some(), !ok, "{args:?}: {doc}");
    if !ok {
        assert!(doc["error"]["code"].is_string(), "{args:?}: {doc}");
        assert!(doc["error"]["message"].is_string(), "{args:?}: {doc}");
    }
    assert!(
        doc.get("result").is_some() || doc.get("checks").is_some() || !ok,
        "{args:?}: {doc}"
    );
    (code, doc)
}

/// One case: the command line, the exit code, the document's command and error code.
fn check(home: &Path, args: &[&str], code: i32, command: &str, error: Option<&str>) {
    let (got, doc) = shaped(home, &HashMap::new(), args);
    assert_eq!(got, code, "{args:?}: {doc}");
    assert_eq!(doc["command"], command, "{args:?}: {doc}");
    assert_eq!(doc["error"]["code"].as_str(), error, "{args:?}: {doc}");
}

/// Writes config.json with its final mode (0600, as doctor wants it).
fn config(home: &Path, json: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = home.join(".kafclaw/config.json");
    std::fs::write(&path, json).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn initialised() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let (code, out, err) = run(home.path(), &HashMap::new(), &["doctor", "--fix"]);
    assert_eq!(code, 0, "{out}{err}");
    home
}

#[test]
fn every_command_family_answers_in_one_shape_without_a_gateway() {
    let home = initialised();
    let h = home.path();
    check(h, &["version", "--json"], 0, "version", None);
    check(h, &["--json", "secrets", "list"], 0, "secrets list", None);
    check(h, &["token", "list", "--json"], 0, "token list", None);
    check(
        h,
        &["--json", "approvals", "list"],
        0,
        "approvals list",
        None,
    );
    check(h, &["--json", "audit", "verify"], 0, "audit verify", None);
    check(h, &["doctor", "--json"], 0, "doctor", None);
    check(h, &["--json", "status"], 0, "status", None);
    // Refusals and missing gateways: exit 2 with a code.
    let bad_scope = ["--json", "token", "create", "--scope", "root"];
    check(h, &bad_scope, 2, "token create", Some("refused"));
    check(
        h,
        &["secrets", "rm", "nope", "--json"],
        2,
        "secrets rm",
        Some("refused"),
    );
    check(
        h,
        &["--json", "pairing", "pending"],
        2,
        "pairing pending",
        Some("unavailable"),
    );
    check(
        h,
        &["admin", "relax-tools", "--json"],
        2,
        "admin",
        Some("unavailable"),
    );
    // Usage errors, from clap and from the commands themselves.
    check(
        h,
        &["--json", "secrets", "bogus"],
        2,
        "secrets",
        Some("usage"),
    );
    check(
        h,
        &["token", "create", "--json"],
        2,
        "token create",
        Some("usage"),
    );
    check(
        h,
        &["--json", "doctor", "--bogus"],
        2,
        "doctor",
        Some("usage"),
    );
    check(h, &["--json", "nonsense"], 2, "kafclaw", Some("usage"));
    check(h, &["admin", "--json"], 2, "admin", Some("usage"));
    check(
        h,
        &["admin", "lockdown", "reason", "--json"],
        2,
        "admin",
        Some("usage"),
    );
    let url = ["--json", "--url", "http://127.0.0.1:9", "secrets", "list"];
    check(h, &url, 2, "secrets list", Some("usage"));
    // A failed check: exit 1, the checks and an error naming them.
    let (code, doc) = shaped(
        h,
        &HashMap::new(),
        &["--json", "backup", "verify", "/nonexistent/kafclaw"],
    );
    assert_eq!(code, 1, "{doc}");
    assert_eq!(doc["command"], "backup verify");
    assert_eq!(doc["error"]["code"], "failed");
    assert!(doc["checks"].is_array());

    let (_, doc) = shaped(h, &HashMap::new(), &["--json", "secrets", "list"]);
    assert!(doc["result"].is_array(), "{doc}");
    let (_, doc) = shaped(h, &HashMap::new(), &["--json", "audit", "verify"]);
    assert!(doc["result"]["records"].as_u64().unwrap() > 0, "{doc}");
    // Without --json, errors stay one line on stderr and stdout stays empty.
    let (code, out, err) = run(h, &HashMap::new(), &["pairing", "pending"]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn security_fix_without_yes_exits_0_when_nothing_is_pending_and_1_when_something_is() {
    let home = initialised();
    config(home.path(), "{}");
    run(home.path(), &HashMap::new(), &["security", "fix", "--yes"]);
    let (code, doc) = shaped(home.path(), &HashMap::new(), &["--json", "security", "fix"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["command"], "security fix");
    assert!(doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["name"] != "confirmation"));
    // A pending change: the plan, exit 1, nothing changed.
    config(
        home.path(),
        r#"{"tools":{"exec":{"restrict_workspace":false}}}"#,
    );
    let (code, doc) = shaped(home.path(), &HashMap::new(), &["security", "fix", "--json"]);
    assert_eq!(code, 1, "{doc}");
    assert_eq!(doc["error"]["code"], "failed");
    let config = std::fs::read_to_string(home.path().join(".kafclaw/config.json")).unwrap();
    assert!(config.contains("false"));
}

#[test]
fn doctor_names_a_missing_allow_listed_program_with_a_remedy_and_a_variable_once() {
    let home = initialised();
    config(
        home.path(),
        r#"{"tools":{"exec":{"allow":["ls","no-such-program-kafclaw","rg"]}}}"#,
    );
    let env = vars(&[("KAFCLAW_NO_SUCH_SETTING", "1")]);
    let (code, doc) = shaped(home.path(), &env, &["doctor", "--json"]);
    assert_eq!(code, 0, "{doc}");
    let row = |name: &str| -> Value { crate::harness::report_row(&doc, name) };
    let programs = row("exec_programs");
    assert_eq!(programs["status"], "warn", "{programs}");
    assert!(programs["message"]
        .as_str()
        .unwrap()
        .contains("no-such-program-kafclaw"));
    let remedy = programs["remedy"].as_str().unwrap();
    assert!(
        remedy.contains("install") && remedy.contains("tools.exec.allow"),
        "{remedy}"
    );
    // rg is on the default allow-list; where it is missing, its package is named.
    if !Path::new("/usr/bin/rg").exists() && !Path::new("/usr/local/bin/rg").exists() {
        assert!(remedy.contains("apt-get install ripgrep"), "{remedy}");
    }
    let vars_row = row("env_vars");
    let message = vars_row["message"].as_str().unwrap();
    assert_eq!(
        message.matches("KAFCLAW_NO_SUCH_SETTING").count(),
        1,
        "{message}"
    );
    // Every default program installed: a pass.
    config(home.path(), r#"{"tools":{"exec":{"allow":["ls","cat"]}}}"#);
    let (_, doc) = shaped(home.path(), &HashMap::new(), &["doctor", "--json"]);
    let programs = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "exec_programs")
        .cloned()
        .unwrap();
    assert_eq!(programs["status"], "pass", "{programs}");
}

fn with_model(server: &ModelServer) -> Options {
    let mut options = Options::default()
        .token()
        .env("KAFCLAW_PROVIDERS_OPENAI_API_BASE", &server.base)
        .env("KAFCLAW_PROVIDERS_OPENAI_MODEL", "test-model")
        .env(
            "KAFCLAW_PROVIDERS_OPENAI_API_KEY",
            "sk-test-key-0123456789abcdef",
        )
        .env("KAFCLAW_PROVIDERS_OPENAI_MAX_RETRIES", "1");
    options.config_json =
        Some(r#"{"tools":{"exec":{"allow":["ls","no-such-program-kafclaw"]}}}"#.into());
    options
}

/// The `token_usage_today` row of `status --json`.
fn usage_row(home: &Path) -> String {
    let (code, doc) = shaped(home, &HashMap::new(), &["status", "--json"]);
    assert_eq!(code, 0, "{doc}");
    let row = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "token_usage_today")
        .cloned()
        .unwrap_or_else(|| panic!("no token usage row: {doc}"));
    row["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn status_reads_the_gateway_over_the_socket_and_counts_each_turn_once() {
    let server = ModelServer::start(vec![
        model_server::text("first", 12, 3),
        model_server::text("second", 20, 5),
    ]);
    let mut gw = Gateway::start(with_model(&server));
    for message in ["one", "two"] {
        let res = client()
            .post(gw.gw_url("/chat"))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .json(&json!({"message": message, "session": "s1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    // What the model server reported for the two turns.
    assert_eq!(server.seen().len(), 2);
    let reported = 12 + 3 + 20 + 5;
    // No token and no dashboard port in this environment: the control socket answers.
    let home = gw.home_path();
    let (code, doc) = shaped(&home, &HashMap::new(), &["--json", "status"]);
    assert_eq!(code, 0, "{doc}");
    let rows: HashMap<String, Value> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_string(), c.clone()))
        .collect();
    assert!(rows["source"]["message"]
        .as_str()
        .unwrap()
        .contains("control socket"));
    assert_eq!(rows["incidents"]["status"], "pass", "{doc}");
    let live = usage_row(&home);
    assert!(
        live.starts_with(&format!("{reported} tokens today")),
        "{live}"
    );
    assert!(live.contains("2 model call"), "{live}");

    // `--json` at the end of `admin`, over the socket, no token.
    let (code, doc) = shaped(
        &home,
        &HashMap::new(),
        &["admin", "lockdown", "--reason", "drill", "--json"],
    );
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["command"], "admin");
    let incident = doc["result"]["incident"].as_str().unwrap().to_string();
    let incidents_row = |doc: &Value| -> Value {
        doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "incidents")
            .cloned()
            .unwrap()
    };
    // The incident it opened is listed by status.
    let (_, doc) = shaped(&home, &HashMap::new(), &["status", "--json"]);
    let row = incidents_row(&doc);
    assert_eq!(row["status"], "warn", "{row}");
    let listed = row["message"].as_str().unwrap();
    assert!(listed.starts_with("1 open incident(s)"), "{listed}");
    assert!(
        listed.contains(&incident) && listed.contains("manual"),
        "{listed}"
    );
    let (code, doc) = shaped(&home, &HashMap::new(), &["admin", "relax-tools", "--json"]);
    assert_eq!(code, 0, "{doc}");
    // A remote gateway needs --url and a token; a wrong one is refused.
    let url = format!("http://{}", gw.dashboard);
    let (code, doc) = shaped(
        &home,
        &HashMap::new(),
        &["status", "--json", "--url", &url, "--token", TOKEN],
    );
    assert_eq!(code, 0, "{doc}");
    let source = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "source")
        .cloned()
        .unwrap();
    assert!(
        source["message"].as_str().unwrap().contains(&url),
        "{source}"
    );
    // The token may come from the environment too.
    let env = vars(&[("KAFCLAW_GATEWAY_AUTH_TOKEN", TOKEN)]);
    let (code, doc) = shaped(&home, &env, &["--url", &url, "approvals", "list", "--json"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["command"], "approvals list");
    assert!(doc["result"].is_array(), "{doc}");
    // Without any token a remote gateway is a usage error.
    let (code, doc) = shaped(&home, &HashMap::new(), &["status", "--json", "--url", &url]);
    assert_eq!(code, 2, "{doc}");
    assert_eq!(doc["error"]["code"], "usage", "{doc}");
    let bad = "kc_not-the-token-0123456789abcdefghijklmnopq";
    let (code, doc) = shaped(
        &home,
        &HashMap::new(),
        &[
            "admin",
            "relax-tools",
            "--url",
            &url,
            "--token",
            bad,
            "--json",
        ],
    );
    assert_eq!(code, 2, "{doc}");
    assert_eq!(doc["error"]["code"], "refused", "{doc}");
    assert!(!doc.to_string().contains(bad));

    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(15)).success());
    let stderr = gw.stderr();
    assert_eq!(
        stderr.matches("RUNNING AS ROOT").count(),
        usize::from(is_root()),
        "{stderr}"
    );
    assert!(
        stderr.contains("tools.exec.allow names no-such-program-kafclaw, which is not installed"),
        "{stderr}"
    );
    assert!(!stderr.contains("NotFound("), "{stderr}");
    // Read from the store: the same figure (each turn once, not once per counter).
    let offline = usage_row(&home);
    assert!(
        offline.starts_with(&format!("{reported} tokens today")),
        "{offline}"
    );
    let (_, doc) = shaped(&home, &HashMap::new(), &["status", "--json"]);
    let listed = incidents_row(&doc)["message"].as_str().unwrap().to_string();
    assert!(listed.contains(&incident), "{listed}");
}

/// Runs `kafclaw --home HOME args…` on a pseudo-terminal (util-linux `script`); all it wrote.
fn on_a_terminal(home: &Path, args: &str) -> String {
    let line = format!(
        "'{}' --home '{}' {args}",
        crate::harness::BIN,
        home.display()
    );
    let out = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("util-linux `script` runs the command on a terminal");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn long_operations_show_progress_on_a_terminal_only() {
    let home = initialised();
    let shown = on_a_terminal(home.path(), "backup create");
    assert!(shown.contains("writing the backup"), "{shown}");
    assert!(shown.contains("[PASS] backup"), "{shown}");
    let shown = on_a_terminal(home.path(), "audit verify");
    assert!(shown.contains("verifying the audit chain"), "{shown}");
    let shown = on_a_terminal(home.path(), "security audit --deep");
    assert!(
        shown.contains("security audit --deep: audit chain"),
        "{shown}"
    );
    // Hidden with --json (even on a terminal) and when stderr is not a terminal.
    let quiet = on_a_terminal(home.path(), "--json backup create");
    assert!(!quiet.contains("writing the backup"), "{quiet}");
    let doc: Value = serde_json::from_str(quiet.trim()).unwrap();
    assert_eq!(doc["ok"], true);
    for args in [
        &["backup", "create"][..],
        &["audit", "verify"],
        &["security", "audit", "--deep"],
    ] {
        let (_, out, err) = run(home.path(), &HashMap::new(), args);
        assert!(
            !err.contains("writing the backup")
                && !err.contains("verifying")
                && !err.contains("\u{1b}["),
            "{args:?}: {out}{err}"
        );
    }
}

#[test]
fn gateway_start_refusals_answer_in_the_one_shape_with_json() {
    let home = initialised();
    let h = home.path();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port().to_string();
    let missing = h.join("no-such-cert.pem").display().to_string();
    // (environment, extra flags, error code, a word the message must name)
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        // A remote bind without a token (as root: without --allow-root first).
        (vec![], vec!["--host", "0.0.0.0"], "refused", "0.0.0.0"),
        // Invalid settings: one line naming the key.
        (
            vec![("KAFCLAW_GATEWAY_PORT", "not-a-port")],
            vec![],
            "config",
            "gateway.port",
        ),
        // A tool root that reaches the file-system root.
        (
            vec![("KAFCLAW_PATHS_WORK_REPO", "/")],
            vec![],
            "refused",
            "file-system root",
        ),
        // TLS files that are not there.
        (
            vec![
                ("KAFCLAW_GATEWAY_TLS_MODE", "native"),
                ("KAFCLAW_GATEWAY_TLS_CERT_FILE", missing.as_str()),
                ("KAFCLAW_GATEWAY_TLS_KEY_FILE", missing.as_str()),
            ],
            vec![],
            "refused",
            "no-such-cert.pem",
        ),
        // A port another process holds.
        (
            vec![],
            vec!["--port", taken_port.as_str()],
            "unavailable",
            taken_port.as_str(),
        ),
    ];
    for (env, flags, code, named) in cases {
        let env = vars(&env);
        let mut args = vec!["gateway", "--json"];
        args.extend(flags.iter().copied());
        let (exit, doc) = shaped(h, &env, &args);
        assert_eq!(exit, 2, "{args:?} {env:?}: {doc}");
        assert_eq!(doc["command"], "gateway", "{doc}");
        assert_eq!(doc["error"]["code"], code, "{args:?} {env:?}: {doc}");
        let message = doc["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{named} not in {message}");
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(!message.starts_with("kafclaw:"), "{message}");

        // Without --json: the same line on stderr, nothing on stdout, the same exit code.
        args.retain(|a| *a != "--json");
        let (exit, out, err) = run(h, &env, &args);
        assert_eq!((exit, out.as_str()), (2, ""), "{args:?}: {err}");
        assert!(
            err.lines().any(|l| l == format!("kafclaw: {message}")),
            "{message} not on stderr: {err}"
        );
    }
    drop(taken);
}
