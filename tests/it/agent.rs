//! `POST /chat` end to end against a real local model server (CONTRACT §3.3, §4).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{client, run, Gateway, Options, TOKEN};
use crate::model_server::{self, ModelServer};

const API_KEY: &str = "sk-test-provider-key-never-logged-0123456789";

fn with_model(server: &ModelServer) -> Options {
    Options::default()
        .token()
        .env("KAFCLAW_PROVIDERS_OPENAI_API_BASE", &server.base)
        .env("KAFCLAW_PROVIDERS_OPENAI_MODEL", "test-model")
        .env("KAFCLAW_PROVIDERS_OPENAI_API_KEY", API_KEY)
        .env("KAFCLAW_PROVIDERS_OPENAI_MAX_RETRIES", "1")
}

async fn chat(gw: &Gateway, body: serde_json::Value) -> (StatusCode, serde_json::Value) {
    let res = client()
        .post(gw.gw_url("/chat"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn a_plain_reply_has_the_contract_shape_and_a_trace() {
    let server = ModelServer::start(vec![model_server::text("hello there", 12, 3)]);
    let gw = Gateway::start(with_model(&server));
    let (status, body) = chat(&gw, json!({"message": "hi", "session": "s1"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["reply"], "hello there");
    assert_eq!(body["session"], "s1");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 3})
    );
    let trace = body["trace_id"].as_str().unwrap().to_string();

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    let messages = seen[0].body["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    assert!(messages[0]["content"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .contains("owner"));
    assert_eq!(messages.last().unwrap()["content"], "hi");

    let events: serde_json::Value = client()
        .get(gw.url(&format!("/api/v1/timeline?trace_id={trace}")))
        .header("Authorization", format!("Bearer {TOKEN}"))
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
    assert_eq!(kinds, ["message.outbound", "model.call", "message.inbound"]);

    let status = gw.get_json("/api/v1/status").await;
    assert_eq!(status["usage_today"]["total"], 15, "{status}");
    assert_eq!(status["open_incidents"], 0);

    // The query-string form of KafClaw still works.
    let res = client()
        .post(gw.gw_url("/chat?message=again&session=s1"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let second = &server.seen()[1].body["messages"];
    assert!(
        second.to_string().contains("hello there"),
        "history is sent back: {second}"
    );
}

#[tokio::test]
async fn an_allowed_tool_call_runs_and_its_result_reaches_the_model() {
    let server = ModelServer::start(vec![
        model_server::tool_call("exec", json!({"command": "cat notes.txt"})),
        model_server::text("done", 20, 2),
    ]);
    let gw = Gateway::start(with_model(&server));
    std::fs::write(
        gw.home_path().join(".kafclaw/work-repo/notes.txt"),
        "tool-output-42\n",
    )
    .unwrap();
    let (status, body) = chat(&gw, json!({"message": "run it"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["reply"], "done");
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    let tool_message = seen[1].body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .cloned()
        .expect("a tool message");
    assert!(
        tool_message["content"]
            .as_str()
            .unwrap()
            .contains("tool-output-42"),
        "{tool_message}"
    );
    let audit =
        std::fs::read_to_string(gw.home_path().join(".kafclaw/audit/audit-000001.jsonl")).unwrap();
    assert!(audit.contains("\"tool.decided\"") && audit.contains("\"tool.executed\""));
    assert!(
        !audit.contains("tool-output-42"),
        "tool output never reaches the audit log"
    );
}

#[tokio::test]
async fn a_shell_trick_is_denied_and_the_model_is_told() {
    let server = ModelServer::start(vec![
        model_server::tool_call("exec", json!({"command": "echo x; cat /etc/passwd"})),
        model_server::text("ok", 1, 1),
    ]);
    let gw = Gateway::start(with_model(&server));
    let (status, _) = chat(&gw, json!({"message": "x"})).await;
    assert_eq!(status, StatusCode::OK);
    let tool = server.seen()[1].body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .cloned()
        .unwrap();
    assert!(
        tool["content"].as_str().unwrap().starts_with("denied"),
        "{tool}"
    );
}

#[tokio::test]
async fn a_tier_above_the_owner_limit_waits_for_an_approval() {
    let server = ModelServer::start(vec![
        model_server::tool_call(
            "write_file",
            json!({"path": "notes.txt", "content": "approved text"}),
        ),
        model_server::text("written", 1, 1),
    ]);
    let gw = Gateway::start(with_model(&server).env("KAFCLAW_TOOLS_POLICY_MAX_TIER_OWNER", "0"));
    let pending = {
        let home = gw.home_path();
        std::thread::spawn(move || {
            let start = Instant::now();
            loop {
                let (_, out, _) = run(&home, &HashMap::new(), &["approvals", "list", "--json"]);
                let doc: serde_json::Value = serde_json::from_str(&out).unwrap_or(json!({}));
                if let Some(first) = doc["result"].as_array().and_then(|a| a.first()) {
                    let id = first["id"].as_str().unwrap().to_string();
                    let (code, _, err) =
                        run(&home, &HashMap::new(), &["approvals", "approve", &id]);
                    assert_eq!(code, 0, "{err}");
                    return first.clone();
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "no approval request appeared"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let (status, body) = chat(&gw, json!({"message": "write it"})).await;
    let request = pending.join().unwrap();
    assert_eq!(request["tool"], "write_file");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        std::fs::read_to_string(gw.home_path().join(".kafclaw/work-repo/notes.txt")).unwrap(),
        "approved text"
    );
}

#[tokio::test]
async fn a_failing_provider_gives_a_clean_error_without_key_or_url() {
    let server = ModelServer::start(vec![]);
    server.fallback(model_server::status(500));
    let mut gw = Gateway::start(with_model(&server));
    let (status, body) = chat(&gw, json!({"message": "hi"})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let text = body.to_string();
    assert!(
        !text.contains(API_KEY) && !text.contains("127.0.0.1") && !text.contains("/v1"),
        "{text}"
    );
    assert_eq!(server.seen().len(), 2, "one attempt plus max_retries=1");
    gw.signal("TERM");
    gw.wait_exit(Duration::from_secs(10));
    let logs = gw.stderr();
    assert!(!logs.contains(API_KEY), "API key in the logs");
    let state = std::fs::read_dir(gw.home_path().join(".kafclaw/timeline.db")).unwrap();
    for entry in state.flatten() {
        if entry.path().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap();
            assert!(
                !bytes
                    .windows(API_KEY.len())
                    .any(|w| w == API_KEY.as_bytes()),
                "API key in the store"
            );
        }
    }
}

#[tokio::test]
async fn an_exhausted_budget_makes_no_provider_call() {
    let server = ModelServer::start(vec![model_server::text("first", 80, 30)]);
    let gw = Gateway::start(with_model(&server).env("KAFCLAW_BUDGETS_DAILY_TOKENS", "100"));
    let (status, _) = chat(&gw, json!({"message": "one"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = chat(&gw, json!({"message": "two"})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body["error"].as_str().unwrap().contains("budget"), "{body}");
    assert_eq!(server.seen().len(), 1, "no request reached the provider");
}

#[tokio::test]
async fn history_survives_a_restart() {
    let server = ModelServer::start(vec![
        model_server::text("remembered reply", 1, 1),
        model_server::text("second", 1, 1),
    ]);
    let mut gw = Gateway::start(with_model(&server));
    chat(&gw, json!({"message": "first message", "session": "keep"})).await;
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)).code(), Some(0));
    let home = std::mem::replace(&mut gw.home, tempfile::tempdir().unwrap());
    let gw2 = Gateway::start_in(home, with_model(&server));
    let (status, _) = chat(&gw2, json!({"message": "and now?", "session": "keep"})).await;
    assert_eq!(status, StatusCode::OK);
    let messages = server.seen()[1].body["messages"].to_string();
    assert!(
        messages.contains("first message") && messages.contains("remembered reply"),
        "{messages}"
    );
}

#[tokio::test]
async fn a_slow_session_does_not_block_another() {
    let server = ModelServer::start(vec![]);
    server.fallback(model_server::text("fast", 1, 1));
    let gw = Gateway::start(with_model(&server));
    // First request gets a slow reply.
    {
        let mut slow = model_server::text("slow", 1, 1);
        slow.delay = Duration::from_secs(3);
        server.fallback(slow);
    }
    let slow = tokio::spawn({
        let url = gw.gw_url("/chat");
        async move {
            let start = Instant::now();
            client()
                .post(url)
                .header("Authorization", format!("Bearer {TOKEN}"))
                .json(&json!({"message": "slow", "session": "a"}))
                .send()
                .await
                .unwrap();
            start.elapsed()
        }
    });
    // Wait until the slow request reached the model, then make replies fast again.
    let start = Instant::now();
    while server.seen().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.fallback(model_server::text("fast", 1, 1));
    let fast_start = Instant::now();
    let (status, body) = chat(&gw, json!({"message": "fast", "session": "b"})).await;
    let fast = fast_start.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["reply"], "fast");
    let slow = slow.await.unwrap();
    assert!(
        fast < slow,
        "the fast session ({fast:?}) waited for the slow one ({slow:?})"
    );
}

#[tokio::test]
async fn chat_turns_over_the_concurrency_cap_are_refused_at_once_and_the_place_comes_back() {
    let server = ModelServer::start(vec![]);
    let mut slow = model_server::text("slow", 1, 1);
    slow.delay = Duration::from_secs(2);
    server.fallback(slow);
    let gw = Gateway::start(with_model(&server).env("KAFCLAW_GATEWAY_MAX_CONCURRENT_CHATS", "1"));
    let first = tokio::spawn({
        let url = gw.gw_url("/chat");
        async move {
            client()
                .post(url)
                .header("Authorization", format!("Bearer {TOKEN}"))
                .json(&json!({"message": "first", "session": "a"}))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let start = Instant::now();
    while server.seen().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the first turn never reached the model"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Another session, another caller's worth of work: refused at once, nothing asked.
    let res = client()
        .post(gw.gw_url("/chat"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .json(&json!({"message": "second", "session": "b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "1");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "too many chat turns in progress");
    assert_eq!(server.seen().len(), 1, "a refused turn asks no model");
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    // The place is free again once the first turn answered.
    server.fallback(model_server::text("fast", 1, 1));
    let (status, body) = chat(&gw, json!({"message": "third", "session": "b"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
