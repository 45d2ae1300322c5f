//! Incidents, quarantine and admin control messages end to end (CONTRACT §3.4, §6).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use kafclaw_actors::channel::whatsapp::sign_webhook;

use crate::channels::{options, post_wa, wa_body, APP_SECRET, OWNER};
use crate::harness::{client, run, Gateway, TOKEN};
use crate::model_server::{self, ModelServer};

async fn control(gw: &Gateway, token: &str, body: Value) -> (StatusCode, Value) {
    let res = client()
        .post(gw.url("/api/v1/admin/control"))
        .header("Authorization", format!("Bearer {token}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn get(gw: &Gateway, path: &str) -> Value {
    gw.get_json(path).await
}

async fn channel_state(gw: &Gateway, name: &str) -> String {
    let channels = get(gw, "/api/v1/channels").await;
    channels
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .map(|c| c["state"].as_str().unwrap().to_string())
        .unwrap()
}

pub(crate) async fn send_wa(gw: &Gateway, from: &str, id: &str, text: &str) {
    let body = wa_body(from, id, text);
    let sig = sign_webhook(APP_SECRET.as_bytes(), body.as_bytes());
    assert_eq!(post_wa(gw, &body, Some(sig)).await, StatusCode::OK, "{id}");
}

pub(crate) async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A Graph API stand-in: records every reply the gateway sends.
pub(crate) fn graph() -> ModelServer {
    let server = ModelServer::start(vec![]);
    server.fallback(model_server::ok(json!({"messages": [{"id": "wamid.out"}]})));
    server
}

pub(crate) fn with_graph(
    mut options: crate::harness::Options,
    graph: &ModelServer,
) -> crate::harness::Options {
    let base = graph.base.trim_end_matches("/v1").to_string();
    let mut config: Value = serde_json::from_str(options.config_json.as_deref().unwrap()).unwrap();
    config["channels"]["whatsapp"]["graph_base"] = Value::from(base);
    options.config_json = Some(config.to_string());
    options
}

#[tokio::test]
async fn control_messages_are_validated_and_need_admin() {
    let model = ModelServer::start(vec![]);
    let home = tempfile::tempdir().unwrap();
    let (_, read, _) = run(
        home.path(),
        &HashMap::new(),
        &["token", "create", "--scope", "read"],
    );
    let gw = Gateway::start_in(home, options(&model));
    let cases = [
        (json!({"type": "explode"}), "unknown type"),
        (json!({"channel": "whatsapp"}), "type is required"),
        (
            json!({"type": "quarantine_channel", "reason": "x"}),
            "channel",
        ),
        (
            json!({"type": "quarantine_channel", "channel": "nope", "reason": "x"}),
            "unknown channel",
        ),
        (
            json!({"type": "release_channel", "channel": "whatsapp", "stage": "half"}),
            "stage",
        ),
        (json!({"type": "restrict_tools", "max_tier": 5}), "max_tier"),
        (json!({"type": "restrict_tools"}), "max_tier"),
        (
            json!({"type": "restrict_tools", "deny": ["rm"]}),
            "unknown tool",
        ),
        (
            json!({"type": "block_sender", "channel": "whatsapp"}),
            "sender",
        ),
        (json!({"type": "snapshot", "label": "Bad Label!"}), "label"),
        (json!({"type": "lockdown"}), "reason"),
        (
            json!({"type": "quarantine_channel", "channel": "whatsapp", "reason": "x", "extra": 1}),
            "extra",
        ),
    ];
    for (body, expected) in cases {
        let (status, answer) = control(&gw, TOKEN, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(expected), "{body}: {error}");
    }
    let (status, _) = control(&gw, read.trim(), json!({"type": "relax_tools"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = control(
        &gw,
        TOKEN,
        json!({"type": "resolve_incident", "id": "inc-none"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = control(
        &gw,
        TOKEN,
        json!({"type": "restrict_tools", "max_tier": 0, "deny": ["exec"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ok"], true);
    assert_eq!(body["result"]["max_tier"], 0);
    let (status, _) = control(&gw, TOKEN, json!({"type": "relax_tools"})).await;
    assert_eq!(status, StatusCode::OK);
    let audit =
        std::fs::read_to_string(gw.home_path().join(".kafclaw/audit/audit-000001.jsonl")).unwrap();
    assert!(audit.contains("\"control.applied\""));
    assert!(
        audit.contains("env:KAFCLAW_GATEWAY_AUTH_TOKEN"),
        "audited with the token's name"
    );
}

#[tokio::test]
async fn quarantine_holds_observe_admits_owners_and_full_replays_in_order() {
    let model = ModelServer::start(vec![]);
    model.fallback(model_server::text("answer", 1, 1));
    let graph = graph();
    let mut config = options(&model);
    let mut cfg: Value = serde_json::from_str(config.config_json.as_deref().unwrap()).unwrap();
    cfg["channels"]["whatsapp"]["allowlist"] = json!(["4915122222222"]);
    config.config_json = Some(cfg.to_string());
    let gw = Gateway::start(with_graph(config, &graph));

    let (status, _) = control(
        &gw,
        TOKEN,
        json!({"type": "quarantine_channel", "channel": "whatsapp", "reason": "test"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(channel_state(&gw, "whatsapp").await, "quarantined");
    send_wa(&gw, "4915122222222", "wamid.e1", "external one").await;
    send_wa(&gw, OWNER, "wamid.o1", "owner one").await;
    send_wa(&gw, "4915122222222", "wamid.e2", "external two").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        model.seen().is_empty(),
        "nothing is handed to the agent while quarantined"
    );
    assert!(graph.seen().is_empty(), "nothing is sent while quarantined");

    let (status, _) = control(
        &gw,
        TOKEN,
        json!({"type": "release_channel", "channel": "whatsapp", "stage": "observe"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    wait_for("the owner's message", async || model.seen().len() == 1).await;
    let first = model.seen()[0].body["messages"].to_string();
    assert!(first.contains("owner one"), "{first}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        model.seen().len(),
        1,
        "external senders stay held in observe"
    );

    let (status, _) = control(
        &gw,
        TOKEN,
        json!({"type": "release_channel", "channel": "whatsapp", "stage": "full"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    wait_for("the held messages", async || model.seen().len() == 3).await;
    wait_for("three replies sent", async || graph.seen().len() == 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let texts: Vec<String> = model
        .seen()
        .iter()
        .map(|s| {
            s.body["messages"].as_array().unwrap().last().unwrap()["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        texts,
        ["owner one", "external one", "external two"],
        "replayed in order, none twice"
    );
    assert_eq!(graph.seen().len(), 3, "each answered once");
    assert_eq!(graph.seen()[0].path, "/v21.0/1234567890/messages");
    assert_eq!(
        graph.seen()[0].authorization.as_deref(),
        Some("Bearer graph-access-token")
    );
}

#[tokio::test]
async fn quarantine_survives_a_restart() {
    let model = ModelServer::start(vec![]);
    let mut gw = Gateway::start(options(&model));
    control(
        &gw,
        TOKEN,
        json!({"type": "quarantine_channel", "channel": "whatsapp", "reason": "persist"}),
    )
    .await;
    gw.signal("TERM");
    gw.wait_exit(Duration::from_secs(10));
    let home = std::mem::replace(&mut gw.home, tempfile::tempdir().unwrap());
    let gw2 = Gateway::start_in(home, options(&model));
    assert_eq!(channel_state(&gw2, "whatsapp").await, "quarantined");
}

#[tokio::test]
async fn unknown_sender_activity_quarantines_the_channel() {
    let model = ModelServer::start(vec![]);
    let gw = Gateway::start(options(&model));
    for i in 0..20 {
        send_wa(
            &gw,
            &format!("49151000000{i:02}"),
            &format!("wamid.u{i}"),
            "hi",
        )
        .await;
    }
    wait_for("quarantine", async || {
        channel_state(&gw, "whatsapp").await == "quarantined"
    })
    .await;
    let incidents = get(&gw, "/api/v1/incidents").await;
    let incident = incidents
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "unknown_senders")
        .unwrap()
        .clone();
    assert_eq!(incident["subject"], "whatsapp");
    assert_eq!(incident["state"], "open");
    assert!(
        !incident.to_string().contains("\"hi\""),
        "evidence holds no message text"
    );
    // Later messages are still stored and acknowledged.
    send_wa(&gw, OWNER, "wamid.after", "still accepted").await;
}

#[tokio::test]
async fn repeated_denied_exec_attempts_block_the_sender() {
    let model = ModelServer::start(vec![]);
    model.fallback(model_server::tool_call("exec", json!({"command": "ls"})));
    let mut config = options(&model);
    let mut cfg: Value = serde_json::from_str(config.config_json.as_deref().unwrap()).unwrap();
    cfg["channels"]["whatsapp"]["allowlist"] = json!(["4915133333333"]);
    config.config_json = Some(cfg.to_string());
    let config = config.env("KAFCLAW_MODEL_MAX_TOOL_ITERATIONS", "5");
    let gw = Gateway::start(config);
    send_wa(&gw, "4915133333333", "wamid.x1", "run ls please").await;
    // The incident is recorded (and audited) before its actions run, so wait for both.
    wait_for("a high-risk incident with its actions", async || {
        get(&gw, "/api/v1/incidents")
            .await
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["kind"] == "high_risk_tools" && i["actions"].to_string().contains("block"))
    })
    .await;
    let incidents = get(&gw, "/api/v1/incidents").await;
    let incident = incidents
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "high_risk_tools")
        .unwrap()
        .clone();
    assert!(
        incident["subject"]
            .as_str()
            .unwrap()
            .contains("4915133333333"),
        "{incident}"
    );
    let actions = incident["actions"].to_string();
    assert!(actions.contains("block"), "{actions}");
    // The blocked sender's next message is dropped, never handed to the agent. (The first
    // turn may still be iterating, so look for the message itself, not at the request count.)
    send_wa(&gw, "4915133333333", "wamid.x2", "again, blocked").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !model
            .seen()
            .iter()
            .any(|s| s.body.to_string().contains("again, blocked")),
        "a blocked sender reaches no model"
    );
}

#[tokio::test]
async fn token_rotation_with_and_without_grace() {
    let model = ModelServer::start(vec![]);
    let gw = Gateway::start(options(&model));
    let verify = |token: String| {
        let url = gw.url("/api/v1/auth/verify");
        async move {
            client()
                .get(url)
                .header("Authorization", format!("Bearer {token}"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let (status, body) = control(
        &gw,
        TOKEN,
        json!({"type": "rotate_gateway_token", "grace_seconds": 60}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first = body["result"]["token"].as_str().unwrap().to_string();
    assert_eq!(
        verify(first.clone()).await,
        StatusCode::OK,
        "the new token works at once"
    );
    assert_eq!(
        verify(TOKEN.to_string()).await,
        StatusCode::OK,
        "the old one works during the grace"
    );
    let (status, body) = control(&gw, &first, json!({"type": "rotate_gateway_token"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = body["result"]["token"].as_str().unwrap().to_string();
    assert_eq!(verify(second).await, StatusCode::OK);
    assert_eq!(
        verify(first).await,
        StatusCode::UNAUTHORIZED,
        "no grace: refused at once"
    );
    let audit =
        std::fs::read_to_string(gw.home_path().join(".kafclaw/audit/audit-000001.jsonl")).unwrap();
    assert_eq!(audit.matches("\"token.rotated\"").count(), 2);
}

#[tokio::test]
async fn lockdown_then_staged_release_and_a_snapshot_that_verifies() {
    let model = ModelServer::start(vec![]);
    let gw = Gateway::start(options(&model));
    let (status, body) = control(&gw, TOKEN, json!({"type": "lockdown", "reason": "drill"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["max_tier"], 0);
    assert_eq!(channel_state(&gw, "whatsapp").await, "quarantined");
    assert_eq!(channel_state(&gw, "slack").await, "quarantined");
    let incidents = get(&gw, "/api/v1/incidents").await;
    assert!(incidents
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["kind"] == "manual"));

    let (_, _, err) = run(
        &gw.home_path(),
        &HashMap::new(),
        &[
            "admin",
            "release-channel",
            "--channel",
            "slack",
            "--stage",
            "observe",
        ],
    );
    assert_eq!(channel_state(&gw, "slack").await, "observe", "{err}");
    control(
        &gw,
        TOKEN,
        json!({"type": "release_channel", "channel": "slack", "stage": "full"}),
    )
    .await;
    assert_eq!(channel_state(&gw, "slack").await, "running");

    let (status, body) = control(&gw, TOKEN, json!({"type": "snapshot", "label": "drill"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let path = std::path::PathBuf::from(body["result"]["path"].as_str().unwrap());
    assert!(path.starts_with(gw.home_path().join(".kafclaw/snapshots")));
    kafclaw_actors::incident::verify_snapshot(&path).unwrap();
}

#[tokio::test]
async fn kafclaw_admin_sends_over_the_socket_without_a_token_and_over_http_with_url() {
    let model = ModelServer::start(vec![]);
    let gw = Gateway::start(options(&model));
    let url = format!("http://{}", gw.dashboard);
    // No dashboard port and no token in this environment: `--url` names the remote gateway.
    let env = HashMap::new();
    let (code, out, err) = run(
        &gw.home_path(),
        &env,
        &[
            "admin",
            "quarantine-channel",
            "--channel",
            "whatsapp",
            "--reason",
            "over http",
            "--url",
            &url,
            "--token",
            TOKEN,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(channel_state(&gw, "whatsapp").await, "quarantined");
    let (code, _, err) = run(
        &gw.home_path(),
        &env,
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
    // A remote gateway without any token is a usage error, not a request.
    let (code, _, err) = run(
        &gw.home_path(),
        &env,
        &["admin", "relax-tools", "--url", &url],
    );
    assert_eq!(code, 2);
    assert!(err.contains("needs a token"), "{err}");
    let (code, _, err) = run(
        &gw.home_path(),
        &env,
        &["admin", "enable-channel", "--channel", "whatsapp"],
    );
    assert_eq!(code, 0, "socket: {err}");
    assert_eq!(channel_state(&gw, "whatsapp").await, "running");
    let (code, _, err) = run(&gw.home_path(), &env, &["admin", "explode"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown type"), "{err}");
    let audit =
        std::fs::read_to_string(gw.home_path().join(".kafclaw/audit/audit-000001.jsonl")).unwrap();
    assert!(
        audit.contains("cli:uid="),
        "socket messages are audited with the caller's uid"
    );
}
