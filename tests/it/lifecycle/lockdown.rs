//! Under `lockdown` or `restrict_tools {max_tier}`, a tool above the tier is denied at once for
//! every sender, owners included: the model gets the reason as the tool result, and no approval
//! request is created for the turn to wait on.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{admin_get, chat_with, control, create_token, last_tool_result};
use crate::harness::{Gateway, Options, TOKEN};
use crate::model_server::{self, ModelServer};

/// Well below the approval timeout (120 s): a turn waiting on an approval fails the test.
const TURN: Duration = Duration::from_secs(8);

fn with_model(server: &ModelServer) -> Options {
    Options::default()
        .token()
        .env("KAFCLAW_PROVIDERS_OPENAI_API_BASE", &server.base)
        .env("KAFCLAW_PROVIDERS_OPENAI_MODEL", "test-model")
        .env("KAFCLAW_PROVIDERS_OPENAI_MAX_RETRIES", "0")
}

fn exec_call() -> (&'static str, Value) {
    ("exec", json!({"command": "ls"}))
}

fn write_call() -> (&'static str, Value) {
    ("write_file", json!({"path": "locked.txt", "content": "x"}))
}

/// Runs one turn whose model asks for `call`, with `restriction` applied first and `token` as
/// the caller; returns the tool result the model got back.
async fn tool_result_under(
    restriction: Value,
    token: Option<&str>,
    call: (&str, Value),
) -> (String, Gateway) {
    let server = ModelServer::start(vec![
        model_server::tool_call(call.0, call.1),
        model_server::text("done", 1, 1),
    ]);
    let home = tempfile::tempdir().unwrap();
    let chat_token = create_token(home.path(), "chat", "owner-chat");
    let gw = Gateway::start_in(home, with_model(&server));
    control(&gw, restriction.clone()).await;
    let caller = token.map_or(chat_token, str::to_string);
    let (status, body) = chat_with(&gw, &caller, json!({"message": "go"}), TURN).await;
    assert_eq!(status, StatusCode::OK, "{restriction}: {body}");
    assert_eq!(body["reply"], "done");
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "the turn went on after the tool result");
    let approvals = admin_get(&gw, "/api/v1/approvals").await;
    assert_eq!(
        approvals,
        json!([]),
        "{restriction}: no approval was created"
    );
    (last_tool_result(&seen[1]), gw)
}

#[track_caller]
fn assert_denied_by_operator(result: &str, context: &str) {
    assert!(
        result.starts_with("denied") && result.contains("restricted"),
        "{context}: {result}"
    );
}

#[tokio::test]
async fn lockdown_denies_an_owners_exec_at_once() {
    let lockdown = json!({"type": "lockdown", "reason": "drill"});
    for token in [Some(TOKEN), None] {
        let (result, _gw) = tool_result_under(lockdown.clone(), token, exec_call()).await;
        assert_denied_by_operator(&result, "lockdown exec");
    }
}

#[tokio::test]
async fn lockdown_denies_an_owners_write_at_once() {
    let lockdown = json!({"type": "lockdown", "reason": "drill"});
    let (result, gw) = tool_result_under(lockdown, Some(TOKEN), write_call()).await;
    assert_denied_by_operator(&result, "lockdown write_file");
    assert!(!gw
        .home_path()
        .join(".kafclaw/work-repo/locked.txt")
        .exists());
}

#[tokio::test]
async fn restrict_tools_max_tier_0_denies_write_and_exec_at_once() {
    let restrict = json!({"type": "restrict_tools", "max_tier": 0});
    for call in [exec_call(), write_call()] {
        let name = call.0;
        let (result, _gw) = tool_result_under(restrict.clone(), Some(TOKEN), call).await;
        assert_denied_by_operator(&result, &format!("max_tier 0 {name}"));
    }
}

#[tokio::test]
async fn restrict_tools_max_tier_1_denies_exec_and_allows_write() {
    let restrict = json!({"type": "restrict_tools", "max_tier": 1});
    let (result, _gw) = tool_result_under(restrict.clone(), Some(TOKEN), exec_call()).await;
    assert_denied_by_operator(&result, "max_tier 1 exec");
    let (result, gw) = tool_result_under(restrict, None, write_call()).await;
    assert!(
        !result.starts_with("denied"),
        "max_tier 1 write_file: {result}"
    );
    assert!(gw
        .home_path()
        .join(".kafclaw/work-repo/locked.txt")
        .exists());
}

#[tokio::test]
async fn the_denial_is_audited_as_a_decision() {
    let lockdown = json!({"type": "lockdown", "reason": "drill"});
    let (_, gw) = tool_result_under(lockdown, Some(TOKEN), exec_call()).await;
    let audit =
        std::fs::read_to_string(gw.home_path().join(".kafclaw/audit/audit-000001.jsonl")).unwrap();
    let decided: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["kind"] == "tool.decided")
        .collect();
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(decided[0]["data"]["decision"], "deny");
    assert_eq!(decided[0]["data"]["sender_kind"], "owner");
}

#[tokio::test]
async fn a_lockdown_while_an_owner_waits_for_an_approval_ends_the_wait() {
    // The owner's configured limit asks for an approval; the lockdown that follows means nobody
    // may give it: the request is withdrawn, audited, and the turn goes on with the reason.
    let server = ModelServer::start(vec![
        model_server::tool_call("write_file", json!({"path": "w.txt", "content": "x"})),
        model_server::text("done", 1, 1),
    ]);
    let gw = Gateway::start(with_model(&server).env("KAFCLAW_TOOLS_POLICY_MAX_TIER_OWNER", "0"));
    let turn = tokio::spawn({
        let url = gw.gw_url("/chat");
        async move {
            let res = crate::harness::client()
                .post(url)
                .header("Authorization", format!("Bearer {TOKEN}"))
                .timeout(TURN)
                .json(&json!({"message": "write"}))
                .send()
                .await
                .expect("the turn ends once the lockdown withdraws the approval");
            (res.status(), res.json::<Value>().await.unwrap())
        }
    });
    let start = std::time::Instant::now();
    loop {
        let pending = admin_get(&gw, "/api/v1/approvals").await;
        if pending.as_array().is_some_and(|a| a.len() == 1) {
            break;
        }
        assert!(start.elapsed() < TURN, "no approval request appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    control(&gw, json!({"type": "lockdown", "reason": "drill"})).await;
    let (status, body) = turn.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["reply"], "done");
    assert_denied_by_operator(&last_tool_result(&server.seen()[1]), "withdrawn");
    assert_eq!(admin_get(&gw, "/api/v1/approvals").await, json!([]));
    assert!(!gw.home_path().join(".kafclaw/work-repo/w.txt").exists());
    let audit =
        std::fs::read_to_string(gw.home_path().join(".kafclaw/audit/audit-000001.jsonl")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"approval.decided\"") && l.contains("\"actor\":\"restriction\"")),
        "the withdrawal is on the record"
    );
}
