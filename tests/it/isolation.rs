//! Issue 21: the gateway starts only with the isolation `security check` accepts, and one model
//! answer or one turn cannot ask the tools for more than its bounds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{client, run, Gateway, Options, TOKEN};
use crate::model_server::{self, ModelServer, Reply};

fn env(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// A tool root built from the home under test.
type RootOf = fn(&Path) -> String;

/// The isolation rows of `security check`, the start refusal shares them.
const ROWS: &[&str] = &[
    "workspace_path",
    "work_repo_path",
    "exec_restrict_workspace",
];

fn gateway_start(home: &Path, vars: &HashMap<String, String>) -> (i32, String, String) {
    run(
        home,
        vars,
        &["gateway", "--port", "0", "--dashboard-port", "0"],
    )
}

fn security_rows(home: &Path, vars: &HashMap<String, String>) -> Vec<Value> {
    let (_, out, err) = run(home, vars, &["--json", "security", "check"]);
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}\n{err}"));
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| ROWS.contains(&c["name"].as_str().unwrap_or_default()))
        .cloned()
        .collect()
}

/// Whether exec children run under Landlock on this machine (`security check` says so).
fn kernel_confines() -> bool {
    let home = tempfile::tempdir().unwrap();
    let (_, out, _) = run(
        home.path(),
        &HashMap::new(),
        &["--json", "security", "check"],
    );
    let doc: Value = serde_json::from_str(&out).unwrap();
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "exec_sandbox" && c["status"] == "pass")
}

/// Refused at start (exit 2, one line naming `key` and `problem`), nothing created, and
/// `security check` FAILs exactly the rows the refusal names.
fn assert_refused(home: &Path, vars: &HashMap<String, String>, key: &str, problem: &str) {
    let (code, out, err) = gateway_start(home, vars);
    assert_eq!(code, 2, "{key}: {err}");
    assert!(!out.contains("ready"), "{out}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("refusing to start"))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    let line = lines[0];
    assert!(line.contains(key) && line.contains(problem), "{line}");
    assert!(
        !home.join(".kafclaw/timeline.db").exists(),
        "refused before the store is opened"
    );
    let rows = security_rows(home, vars);
    let failed: Vec<&Value> = rows.iter().filter(|r| r["status"] == "fail").collect();
    assert!(!failed.is_empty(), "{key}: {rows:?}");
    for row in &failed {
        let message = row["message"].as_str().unwrap();
        assert!(line.contains(message), "{message} not in {line}");
    }
    for row in rows.iter().filter(|r| r["status"] != "fail") {
        let message = row["message"].as_str().unwrap();
        assert!(!line.contains(message), "{message} in {line}");
    }
}

#[test]
fn a_tool_root_that_reaches_a_secret_path_is_refused_at_start() {
    let other = tempfile::tempdir().unwrap();
    let user_home = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, RootOf, &str)> = vec![
        (
            "KAFCLAW_PATHS_WORK_REPO",
            |_| "/".into(),
            "file-system root",
        ),
        (
            "KAFCLAW_PATHS_WORKSPACE",
            |h| h.display().to_string(),
            "KafClaw root",
        ),
        (
            "KAFCLAW_PATHS_WORK_REPO",
            |h| h.join(".kafclaw").display().to_string(),
            "state directory",
        ),
        (
            "KAFCLAW_PATHS_WORKSPACE",
            |h| h.join(".config/kafclaw").display().to_string(),
            "~/.config/kafclaw",
        ),
        (
            "KAFCLAW_PATHS_WORK_REPO",
            |h| h.join(".config").display().to_string(),
            "contains ~/.config/kafclaw",
        ),
        (
            "KAFCLAW_PATHS_WORK_REPO",
            |h| h.parent().unwrap().display().to_string(),
            "contains",
        ),
        (
            "KAFCLAW_PATHS_WORKSPACE",
            |h| h.join(".kafclaw/snapshots").display().to_string(),
            "snapshots",
        ),
        (
            "KAFCLAW_PATHS_WORK_REPO",
            |h| h.join(".kafclaw/backups/2026").display().to_string(),
            "backups",
        ),
        (
            "KAFCLAW_PATHS_WORK_REPO",
            |h| h.join(".kafclaw/pre-restore-1").display().to_string(),
            "state directory",
        ),
        (
            "KAFCLAW_PATHS_WORKSPACE",
            |h| h.join(".kafclaw/audit").display().to_string(),
            "audit",
        ),
        ("KAFCLAW_PATHS_WORKSPACE", |_| "/etc/kafclaw".into(), "/etc"),
    ];
    for (i, (var, value, problem)) in cases.iter().enumerate() {
        let home = tempfile::tempdir().unwrap();
        let value = value(home.path());
        let key = var
            .trim_start_matches("KAFCLAW_")
            .to_lowercase()
            .replacen('_', ".", 1);
        let vars = env(&[(var, value.clone())]);
        eprintln!("case {i}: {key} = {value}");
        assert_refused(home.path(), &vars, &key, problem);
    }

    // A symlink to the home is the home; so is a relative spelling of it.
    let home = tempfile::tempdir().unwrap();
    let link = other.path().join("looks-harmless");
    std::os::unix::fs::symlink(home.path(), &link).unwrap();
    let vars = env(&[("KAFCLAW_PATHS_WORK_REPO", link.display().to_string())]);
    assert_refused(home.path(), &vars, "paths.work_repo", "KafClaw root");
    // A link into the state directory: dangling until the gateway would create it, then live.
    let inside = other.path().join("via-link");
    std::os::unix::fs::symlink(home.path().join(".kafclaw"), &inside).unwrap();
    let vars = env(&[(
        "KAFCLAW_PATHS_WORKSPACE",
        inside.join("snapshots").display().to_string(),
    )]);
    assert_refused(home.path(), &vars, "paths.workspace", "dangling symlink");
    std::fs::create_dir(home.path().join(".kafclaw")).unwrap();
    assert_refused(home.path(), &vars, "paths.workspace", ".kafclaw/snapshots");

    // The gateway user's $HOME (apart from --home) and its ancestors.
    let home = tempfile::tempdir().unwrap();
    for root in [user_home.path().to_path_buf(), PathBuf::from("/tmp")] {
        let vars = env(&[
            ("HOME", user_home.path().display().to_string()),
            ("KAFCLAW_PATHS_WORK_REPO", root.display().to_string()),
        ]);
        assert_refused(home.path(), &vars, "paths.work_repo", "$HOME");
    }
}

#[test]
fn exec_path_checks_off_start_only_when_the_kernel_confines_exec() {
    let home = tempfile::tempdir().unwrap();
    let off = env(&[
        ("KAFCLAW_TOOLS_EXEC_RESTRICT_WORKSPACE", "false".into()),
        ("KAFCLAW_TOOLS_EXEC_SANDBOX", "off".into()),
    ]);
    assert_refused(
        home.path(),
        &off,
        "tools.exec.restrict_workspace",
        "does not confine",
    );
    let auto = env(&[("KAFCLAW_TOOLS_EXEC_RESTRICT_WORKSPACE", "false".into())]);
    let rows = security_rows(home.path(), &auto);
    let row = rows
        .iter()
        .find(|r| r["name"] == "exec_restrict_workspace")
        .unwrap();
    if kernel_confines() {
        assert_eq!(row["status"], "warn", "{row}");
        let gw = Gateway::start_in(
            home,
            Options {
                env: auto,
                ..Options::default()
            },
        );
        drop(gw);
    } else {
        assert_eq!(row["status"], "fail", "{row}");
        assert_refused(home.path(), &auto, "tools.exec.restrict_workspace", "");
    }
}

#[test]
fn dedicated_tool_roots_outside_the_home_start_and_pass_the_check() {
    let roots = tempfile::tempdir().unwrap();
    let (workspace, work_repo) = (roots.path().join("ws"), roots.path().join("repo"));
    std::fs::create_dir(&workspace).unwrap();
    std::fs::create_dir(&work_repo).unwrap();
    let vars = env(&[
        ("KAFCLAW_PATHS_WORKSPACE", workspace.display().to_string()),
        ("KAFCLAW_PATHS_WORK_REPO", work_repo.display().to_string()),
    ]);
    let home = tempfile::tempdir().unwrap();
    for row in security_rows(home.path(), &vars) {
        assert_eq!(row["status"], "pass", "{row}");
    }
    let gw = Gateway::start_in(
        home,
        Options {
            env: vars,
            ..Options::default()
        },
    );
    drop(gw);
    // The default layout starts too.
    drop(Gateway::start(Options::default()));
}

// ---------------------------------------------------------------------------------------
// Bounds per model answer and per turn.

fn with_model(server: &ModelServer, extra: &[(&str, &str)]) -> Options {
    let mut options = Options::default()
        .token()
        .env("KAFCLAW_PROVIDERS_OPENAI_API_BASE", &server.base)
        .env("KAFCLAW_PROVIDERS_OPENAI_MODEL", "test-model")
        .env("KAFCLAW_PROVIDERS_OPENAI_MAX_RETRIES", "0");
    for (k, v) in extra {
        options = options.env(k, v);
    }
    options
}

async fn chat(gw: &Gateway, message: &str) -> (StatusCode, Value) {
    let res = client()
        .post(gw.gw_url("/chat"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .header("Idempotency-Key", "turn-1")
        .json(&json!({"message": message, "session": "s1"}))
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn audit_records(home: &Path, kind: &str) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(home.join(".kafclaw/audit")) else {
        return Vec::new();
    };
    let mut segments: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    segments.sort();
    segments
        .iter()
        .flat_map(|s| {
            std::fs::read_to_string(s)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .collect::<Vec<_>>()
        })
        .filter(|r| r["kind"] == kind)
        .collect()
}

/// The tool results the model was sent in request `seen`, in order.
fn tool_results(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Answers the first request with `calls`, and the next with a text saying whether
/// `tool.refused` was already in the audit log when the results arrived.
fn model_asking(home: PathBuf, calls: Vec<(String, String, String)>) -> ModelServer {
    ModelServer::start_with(move |n, _| {
        if n == 0 {
            let calls: Vec<(&str, &str, &str)> = calls
                .iter()
                .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
                .collect();
            return Some(Reply::tool_calls(&calls, 10, 5));
        }
        let audited = !audit_records(&home, "tool.refused").is_empty();
        Some(model_server::text(
            if audited {
                "refusal audited first"
            } else {
                "refusal NOT audited"
            },
            10,
            5,
        ))
    })
}

#[tokio::test]
async fn an_answer_with_1500_tool_calls_runs_32_and_audits_the_refusal() {
    let home = tempfile::tempdir().unwrap();
    let calls: Vec<(String, String, String)> = (0..1500)
        .map(|i| {
            (
                format!("call_{i}"),
                "list_dir".into(),
                r#"{"path":"."}"#.into(),
            )
        })
        .collect();
    let server = model_asking(home.path().to_path_buf(), calls);
    let gw = Gateway::start_in(home, with_model(&server, &[]));
    let (status, body) = chat(&gw, "list everything").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["reply"], "refusal audited first", "{body}");

    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    let results = tool_results(&seen[1].body);
    assert_eq!(results.len(), 1500, "every call has a result");
    let refused = results.iter().filter(|r| r.starts_with("refused:")).count();
    assert_eq!(refused, 1468);
    assert!(results[..32].iter().all(|r| !r.starts_with("refused:")));
    assert!(
        results[32].contains("max_tool_calls_per_round"),
        "{}",
        results[32]
    );

    let home = gw.home_path();
    assert_eq!(
        audit_records(&home, "tool.decided").len(),
        32,
        "only 32 ran"
    );
    let records = audit_records(&home, "tool.refused");
    assert_eq!(records.len(), 1, "one record per answer: {records:?}");
    let data = &records[0]["data"];
    assert_eq!(data["reason"], "max_tool_calls_per_round");
    assert_eq!(data["limit"], 32);
    assert_eq!(data["asked"], 1500);
    assert_eq!(data["refused"], 1468);
    assert_eq!(data["tools"]["list_dir"], 1468);
    assert_eq!(data["channel"], "api");

    // The same request again (same Idempotency-Key) replays the finished turn: nothing runs.
    let (status, again) = chat(&gw, "list everything").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["reply"], body["reply"]);
    assert_eq!(server.seen().len(), 2);
    assert_eq!(audit_records(&home, "tool.decided").len(), 32);
    assert_eq!(audit_records(&home, "tool.refused").len(), 1);
}

#[tokio::test]
async fn a_lower_cap_from_the_config_applies_too() {
    let home = tempfile::tempdir().unwrap();
    let calls: Vec<(String, String, String)> = (0..5)
        .map(|i| (format!("c{i}"), "list_dir".into(), r#"{"path":"."}"#.into()))
        .collect();
    let server = model_asking(home.path().to_path_buf(), calls);
    let gw = Gateway::start_in(
        home,
        with_model(&server, &[("KAFCLAW_MODEL_MAX_TOOL_CALLS_PER_ROUND", "2")]),
    );
    let (status, body) = chat(&gw, "list").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let results = tool_results(&server.seen()[1].body);
    let refused: Vec<bool> = results.iter().map(|r| r.starts_with("refused:")).collect();
    assert_eq!(refused, [false, false, true, true, true]);
    let records = audit_records(&gw.home_path(), "tool.refused");
    assert_eq!(records[0]["data"]["refused"], 3);
}

#[tokio::test]
async fn the_turn_s_tool_time_is_bounded() {
    let home = tempfile::tempdir().unwrap();
    let calls: Vec<(String, String, String)> = (0..3)
        .map(|i| {
            (
                format!("slow{i}"),
                "exec".into(),
                json!({"command": "sleep 1.2"}).to_string(),
            )
        })
        .collect();
    let server = model_asking(home.path().to_path_buf(), calls);
    let gw = Gateway::start_in(
        home,
        with_model(
            &server,
            &[
                ("KAFCLAW_TOOLS_EXEC_ALLOW", "sleep"),
                ("KAFCLAW_MODEL_MAX_TURN_SECONDS", "1"),
            ],
        ),
    );
    let (status, body) = chat(&gw, "wait a while").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reply = body["reply"].as_str().unwrap();
    assert!(reply.starts_with("refusal audited first"), "{reply}");
    assert!(reply.contains("seconds of tool time"), "{reply}");

    let seen = server.seen();
    assert_eq!(seen.len(), 2, "the answer after the refusal is the last");
    assert_eq!(seen[1].body["tool_choice"], "none", "{}", seen[1].body);
    let results = tool_results(&seen[1].body);
    assert_eq!(results.len(), 3);
    assert!(!results[0].starts_with("refused:"), "{}", results[0]);
    for r in &results[1..] {
        assert!(
            r.starts_with("refused:") && r.contains("max_turn_seconds"),
            "{r}"
        );
    }
    let home = gw.home_path();
    assert_eq!(audit_records(&home, "tool.executed").len(), 1);
    let records = audit_records(&home, "tool.refused");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["data"]["reason"], "max_turn_seconds");
    assert_eq!(records[0]["data"]["refused"], 2);
}
