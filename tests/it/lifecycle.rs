//! Issue 11 §5–§6 end to end: draining on SIGTERM/SIGINT, `/chat` sessions bound to the
//! calling principal, lockdown and `restrict_tools` denying at once, and the audit head
//! recorded apart from the segments.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{client, run, Gateway};

mod audit_head;
mod drain;
mod lockdown;
mod sessions;

/// `POST /chat` with `token`, answered within `timeout` (a turn that waits on an approval fails
/// the test instead of hanging it).
async fn chat_with(
    gw: &Gateway,
    token: &str,
    body: Value,
    timeout: Duration,
) -> (StatusCode, Value) {
    let res = client()
        .post(gw.gw_url("/chat"))
        .header("Authorization", format!("Bearer {token}"))
        .timeout(timeout)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /chat {body} got no answer within {timeout:?}: {e}"));
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A GET on the dashboard with the admin token.
async fn admin_get(gw: &Gateway, path: &str) -> Value {
    client()
        .get(gw.url(path))
        .header("Authorization", format!("Bearer {}", crate::harness::TOKEN))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A control message with the admin token; panics unless it was applied.
async fn control(gw: &Gateway, body: Value) {
    let res = client()
        .post(gw.url("/api/v1/admin/control"))
        .header("Authorization", format!("Bearer {}", crate::harness::TOKEN))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let answer: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::OK, "{body}: {answer}");
}

/// Creates a token with `kafclaw token create` in `home` (no gateway running) and returns it.
fn create_token(home: &std::path::Path, scope: &str, name: &str) -> String {
    let (code, out, err) = run(
        home,
        &HashMap::new(),
        &["token", "create", "--scope", scope, "--name", name],
    );
    assert_eq!(code, 0, "{err}");
    out.trim().to_string()
}

/// Polls `done` every 20 ms until it holds, failing with `what` after `deadline`.
async fn wait_until(deadline: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < deadline, "{what} (waited {deadline:?})");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `messages` of a recorded model request, as one string (for "contains" checks).
fn messages_text(request: &crate::model_server::Seen) -> String {
    request.body["messages"].to_string()
}

/// The content of the last `tool` message of a recorded model request.
fn last_tool_result(request: &crate::model_server::Seen) -> String {
    request.body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .find(|m| m["role"] == "tool")
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string()
}
