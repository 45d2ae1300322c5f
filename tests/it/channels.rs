//! Channel webhooks end to end (CONTRACT §5): the real binary, signed deliveries, a real local
//! model server behind the agent.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use kafclaw_actors::channel::bridge::sign_bridge;
use kafclaw_actors::channel::whatsapp::sign_webhook;

use crate::harness::{client, Gateway, Options, TOKEN};
use crate::model_server::{self, ModelServer};

pub(crate) const APP_SECRET: &str = "wa-app-secret-for-tests";
const VERIFY: &str = "wa-verify-token";
pub(crate) const BRIDGE_SECRET: &str = "bridge-secret-for-tests";
pub(crate) const OWNER: &str = "4915112345678";

pub(crate) fn options(server: &ModelServer) -> Options {
    let mut options = Options::default()
        .token()
        .env("KAFCLAW_PROVIDERS_OPENAI_API_BASE", &server.base)
        .env("KAFCLAW_PROVIDERS_OPENAI_MODEL", "test-model")
        .env("KAFCLAW_CHANNELS_WHATSAPP_APP_SECRET", APP_SECRET)
        .env("KAFCLAW_CHANNELS_WHATSAPP_VERIFY_TOKEN", VERIFY)
        .env(
            "KAFCLAW_CHANNELS_WHATSAPP_ACCESS_TOKEN",
            "graph-access-token",
        )
        .env("KAFCLAW_CHANNELS_BRIDGES_SLACK_SECRET", BRIDGE_SECRET);
    options.config_json = Some(
        json!({
            "channels": {
                "whatsapp": {
                    "enabled": true,
                    "phone_number_id": "1234567890",
                    "graph_base": "http://127.0.0.1:9",
                    "owner_ids": [format!("+{OWNER}")]
                },
                "bridges": {"slack": {"outbound_url": "http://127.0.0.1:9/out", "owner_ids": ["U-OWNER"]}}
            }
        })
        .to_string(),
    );
    options
}

pub(crate) fn wa_body(from: &str, id: &str, text: &str) -> String {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "e1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": "1234567890"},
            "contacts": [{"profile": {"name": "Test"}, "wa_id": from}],
            "messages": [{"from": from, "id": id, "timestamp": "1700000000", "type": "text", "text": {"body": text}}]
        }}]}]
    })
    .to_string()
}

pub(crate) async fn post_wa(gw: &Gateway, body: &str, signature: Option<String>) -> StatusCode {
    let mut req = client()
        .post(gw.gw_url("/webhooks/whatsapp"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(sig) = signature {
        req = req.header("X-Hub-Signature-256", sig);
    }
    req.send().await.unwrap().status()
}

#[tokio::test]
async fn whatsapp_handshake_and_signatures() {
    let server = ModelServer::start(vec![]);
    let gw = Gateway::start(options(&server));
    let url = |mode: &str, token: &str| {
        format!(
            "{}?hub.mode={mode}&hub.verify_token={token}&hub.challenge=ch%C3%A9-123",
            gw.gw_url("/webhooks/whatsapp")
        )
    };
    let res = client().get(url("subscribe", VERIFY)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.text().await.unwrap(),
        "ché-123",
        "challenge echoed byte for byte"
    );
    assert_eq!(
        client()
            .get(url("subscribe", "wrong"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        client()
            .get(url("unsubscribe", VERIFY))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );

    let body = wa_body("4915199999999", "wamid.sig1", "grüße \u{1F600} \\u00e9");
    let good = sign_webhook(APP_SECRET.as_bytes(), body.as_bytes());
    assert_eq!(
        post_wa(&gw, &body, None).await,
        StatusCode::UNAUTHORIZED,
        "missing header"
    );
    let wrong = sign_webhook(b"other-secret", body.as_bytes());
    assert_eq!(
        post_wa(&gw, &body, Some(wrong)).await,
        StatusCode::UNAUTHORIZED,
        "wrong secret"
    );
    let tampered = body.replace("grüße", "grusse");
    assert_eq!(
        post_wa(&gw, &tampered, Some(good.clone())).await,
        StatusCode::UNAUTHORIZED,
        "body changed"
    );
    let sha1 = good.replacen("sha256=", "sha1=", 1);
    assert_eq!(
        post_wa(&gw, &body, Some(sha1)).await,
        StatusCode::UNAUTHORIZED,
        "sha1 prefix"
    );
    assert_eq!(
        post_wa(&gw, &body, Some(good)).await,
        StatusCode::OK,
        "non-ASCII body verified on raw bytes"
    );

    let big = "x".repeat(4 * 1024 * 1024);
    let sig = sign_webhook(APP_SECRET.as_bytes(), big.as_bytes());
    assert_eq!(
        post_wa(&gw, &big, Some(sig)).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

#[tokio::test]
async fn an_owner_message_is_answered_once_and_unknown_senders_are_dropped() {
    let server = ModelServer::start(vec![]);
    server.fallback(model_server::text("hi owner", 3, 2));
    let gw = Gateway::start(options(&server));

    let unknown = wa_body("4915100000000", "wamid.unknown", "let me in");
    let sig = sign_webhook(APP_SECRET.as_bytes(), unknown.as_bytes());
    assert_eq!(
        post_wa(&gw, &unknown, Some(sig)).await,
        StatusCode::OK,
        "acknowledged, then dropped"
    );

    // Signed by the same Meta app, sent to another of its numbers: not this channel's.
    let foreign = wa_body(OWNER, "wamid.foreign", "for the other number").replace(
        "\"phone_number_id\":\"1234567890\"",
        "\"phone_number_id\":\"999\"",
    );
    assert!(foreign.contains("\"999\""), "{foreign}");
    let sig = sign_webhook(APP_SECRET.as_bytes(), foreign.as_bytes());
    assert_eq!(post_wa(&gw, &foreign, Some(sig)).await, StatusCode::OK);

    let owner = wa_body(OWNER, "wamid.owner1", "hello");
    let sig = sign_webhook(APP_SECRET.as_bytes(), owner.as_bytes());
    assert_eq!(
        post_wa(&gw, &owner, Some(sig.clone())).await,
        StatusCode::OK
    );
    assert_eq!(
        post_wa(&gw, &owner, Some(sig)).await,
        StatusCode::OK,
        "a duplicate delivery is acknowledged"
    );

    let start = Instant::now();
    while server.seen().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the owner's message never reached the model"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = server.seen();
    assert_eq!(seen.len(), 1, "processed exactly once");
    assert!(
        !seen[0].body.to_string().contains("for the other number"),
        "a message for another business number reached the model"
    );
    let system = seen[0].body["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(system.contains("owner"), "{system}");

    let channels: serde_json::Value = client()
        .get(gw.url("/api/v1/channels"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let wa = channels
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "whatsapp")
        .unwrap()
        .clone();
    assert_eq!(wa["state"], "running");
    assert_eq!(wa["unknown_senders_total"], 1);
    let audit =
        std::fs::read_to_string(gw.home_path().join(".kafclaw/audit/audit-000001.jsonl")).unwrap();
    assert!(audit.contains("\"channel.dropped\""));
    assert!(
        !audit.contains("let me in"),
        "message text never reaches the audit log"
    );
}

#[tokio::test]
async fn bridge_signatures_timestamps_replays_and_unknown_bridges() {
    let server = ModelServer::start(vec![]);
    let gw = Gateway::start(options(&server));
    let body =
        json!({"message_id": "m1", "sender_id": "U-OWNER", "chat_id": "C1", "text": "hello"})
            .to_string();
    let now = kafclaw_actors::clock::unix_now();
    let post = |name: &str, ts: i64, sig: String, body: String| {
        client()
            .post(gw.gw_url(&format!("/webhooks/bridge/{name}")))
            .header("X-KafClaw-Timestamp", ts.to_string())
            .header("X-KafClaw-Signature", sig)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let sig = sign_bridge(BRIDGE_SECRET.as_bytes(), now, body.as_bytes());
    assert_eq!(
        post("slack", now, sig.clone(), body.clone())
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        post("slack", now, sig.clone(), body.clone())
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED,
        "replay"
    );
    assert_eq!(
        post("teams", now, sig, body.clone())
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND,
        "unknown bridge"
    );
    let stale = now - 301;
    let stale_sig = sign_bridge(BRIDGE_SECRET.as_bytes(), stale, body.as_bytes());
    assert_eq!(
        post("slack", stale, stale_sig, body.clone())
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED,
        "stale"
    );
    let wrong = sign_bridge(b"nope", now, body.as_bytes());
    assert_eq!(
        post("slack", now, wrong, body).await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "wrong secret"
    );
}

#[test]
fn an_enabled_channel_without_its_secret_refuses_to_start() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".kafclaw")).unwrap();
    std::fs::write(
        home.path().join(".kafclaw/config.json"),
        json!({"channels": {"whatsapp": {"enabled": true, "phone_number_id": "1"}}}).to_string(),
    )
    .unwrap();
    let (code, _, err) = crate::harness::run(
        home.path(),
        &Default::default(),
        &["gateway", "--port", "0", "--dashboard-port", "0"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("channels.whatsapp.verify_token"), "{err}");
}

#[tokio::test]
async fn a_message_acknowledged_before_a_kill_9_is_processed_after_the_restart() {
    let server = ModelServer::start(vec![]);
    let mut slow = model_server::text("late answer", 1, 1);
    slow.delay = Duration::from_secs(30);
    server.fallback(slow);
    let mut gw = Gateway::start(options(&server));
    let owner = wa_body(OWNER, "wamid.crash1", "survive a crash");
    let sig = sign_webhook(APP_SECRET.as_bytes(), owner.as_bytes());
    assert_eq!(
        post_wa(&gw, &owner, Some(sig.clone())).await,
        StatusCode::OK
    );
    let start = Instant::now();
    while server.seen().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the turn never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.signal("KILL");
    gw.wait_exit(Duration::from_secs(10));

    server.fallback(model_server::text("answer after restart", 1, 1));
    let home = std::mem::replace(&mut gw.home, tempfile::tempdir().unwrap());
    let gw2 = Gateway::start_in(home, options(&server));
    let start = Instant::now();
    while server.seen().len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the stored message was not processed after the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let replayed = server.seen()[1].body["messages"].to_string();
    assert!(replayed.contains("survive a crash"), "{replayed}");
    // A redelivery of the same webhook after the restart is a duplicate, not a new turn.
    assert_eq!(post_wa(&gw2, &owner, Some(sig)).await, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.seen().len(), 2, "processed once after the restart");
}

#[tokio::test]
async fn concurrent_deliveries_are_all_stored_and_acknowledged() {
    // Regression: sled's flush_async stopped completing under concurrent flushes, hanging every
    // webhook after the first few.
    let server = ModelServer::start(vec![]);
    let gw = Gateway::start(options(&server));
    let mut tasks = Vec::new();
    for i in 0..64 {
        let url = gw.gw_url("/webhooks/whatsapp");
        tasks.push(tokio::spawn(async move {
            let body = wa_body("4915100000099", &format!("wamid.c{i}"), "x");
            let sig = sign_webhook(APP_SECRET.as_bytes(), body.as_bytes());
            client()
                .post(url)
                .header("X-Hub-Signature-256", sig)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map(|r| r.status())
        }));
    }
    let all = tokio::time::timeout(Duration::from_secs(20), futures_join(tasks)).await;
    let statuses = all.expect("every delivery answered within 20 s");
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
}

async fn futures_join(
    tasks: Vec<tokio::task::JoinHandle<reqwest::Result<StatusCode>>>,
) -> Vec<StatusCode> {
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap().unwrap());
    }
    out
}

/// A wrong webhook signature or handshake token is a guess at a secret: counted toward the
/// lockout like a wrong token and audited; a locked-out client is refused even when signed.
#[tokio::test]
async fn bad_webhook_signatures_count_toward_the_lockout_and_are_audited() {
    let server = ModelServer::start(vec![]);
    let gw =
        Gateway::start(options(&server).env("KAFCLAW_SECURITY_AUTH_LOCKOUT_MAX_FAILURES", "5"));
    let body = wa_body(OWNER, "wamid.lock1", "hello");
    for _ in 0..3 {
        let status = post_wa(&gw, &body, Some("sha256=00".into())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let handshake = format!(
        "{}?hub.mode=subscribe&hub.verify_token=guess&hub.challenge=c",
        gw.gw_url("/webhooks/whatsapp")
    );
    for _ in 0..2 {
        let status = client().get(&handshake).send().await.unwrap().status();
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    // Five failures: locked out, a correctly signed delivery too.
    let good = sign_webhook(APP_SECRET.as_bytes(), body.as_bytes());
    assert_eq!(
        post_wa(&gw, &body, Some(good)).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    let audit =
        std::fs::read_to_string(gw.home_path().join(".kafclaw/audit/audit-000001.jsonl")).unwrap();
    assert!(audit.contains("\"bad_signature\""), "{audit}");
    assert!(audit.contains("\"bad_verify_token\""), "{audit}");
    assert!(audit.contains("\"auth.locked_out\""), "{audit}");
    assert!(
        !audit.contains("guess"),
        "a presented token never reaches the audit log"
    );
}
