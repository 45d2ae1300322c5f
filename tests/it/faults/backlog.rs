//! A backlog at `store.max_pending`: a gateway sent messages faster than its model answers
//! keeps at most that many unfinished per channel. Beyond it a delivery is refused with 503 +
//! `Retry-After` before anything is stored (the sender delivers it again; nothing is lost),
//! counted in `/metrics` and audited once per change; receipts and other channels still pass.
//! Once the model answers and the backlog drains, deliveries are taken again, and every
//! message, refused first or not, is answered exactly once.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use kafclaw_actors::channel::whatsapp::sign_webhook;

use super::{assert_healthy_and_whole, options, Graph};
use crate::exactly_once::fixture::{
    self, audit_kind, eventually, post_bridge, post_whatsapp, APP_SECRET, OWNERS,
};
use crate::harness::{client, Gateway};
use crate::model_server::{turn_step, ModelServer, Recorded, Reply};

/// A model that answers nothing until the gate opens, then `reply to <text>`.
fn gated_model() -> (ModelServer, Arc<(Mutex<bool>, Condvar)>) {
    let gate: Arc<(Mutex<bool>, Condvar)> = Arc::default();
    let held = gate.clone();
    let model = ModelServer::start_with(move |_, request: &Recorded| {
        let (text, _) = turn_step(&request.json())?;
        let (open, opened) = &*held;
        let mut open = open.lock().unwrap();
        while !*open {
            open = opened.wait(open).unwrap();
        }
        Some(Reply::text(&format!("reply to {text}"), 3, 2))
    });
    (model, gate)
}

fn open(gate: &(Mutex<bool>, Condvar)) {
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
}

/// A signed WhatsApp delivery of `body`: its status, `Retry-After` and body.
async fn post_signed(gw: &Gateway, body: &Value) -> (StatusCode, Option<String>, Value) {
    let body = body.to_string();
    let res = client()
        .post(gw.gw_url("/webhooks/whatsapp"))
        .header("content-type", "application/json")
        .header(
            "X-Hub-Signature-256",
            sign_webhook(APP_SECRET.as_bytes(), body.as_bytes()),
        )
        .body(body)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry, res.json().await.unwrap_or(Value::Null))
}

/// A WhatsApp text from `from` (one message per delivery).
fn text_delivery(from: &str, id: &str, text: &str) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "e1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": fixture::PNID},
            "contacts": [{"profile": {"name": "T"}, "wa_id": from}],
            "messages": [{"from": from, "id": id, "timestamp": "1700000000", "type": "text", "text": {"body": text}}]
        }}]}]
    })
}

/// The value of the series `series` (name and labels as `/metrics` prints them).
async fn metric(gw: &Gateway, series: &str) -> f64 {
    let text = gw.get_text("/metrics").await;
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

async fn refused_total(gw: &Gateway, channel: &str) -> f64 {
    metric(
        gw,
        &format!("kafclaw_channel_backlog_refused_total{{channel=\"{channel}\"}}"),
    )
    .await
}

#[tokio::test]
async fn a_full_backlog_answers_503_with_retry_after_and_every_message_is_answered_once() {
    let (model, gate) = gated_model();
    let graph = Graph::accepting();
    let gw = Gateway::start(
        options(&model, &graph)
            .env("KAFCLAW_STORE_MAX_PENDING", "4")
            .env("KAFCLAW_PROVIDERS_OPENAI_TIMEOUT_SECONDS", "60"),
    );
    let url = format!("http://{}", gw.gateway);
    assert_eq!(refused_total(&gw, "whatsapp").await, 0.0);

    // Four unfinished messages: the model answers none of them yet.
    let mut admitted = Vec::new();
    for i in 0..4 {
        let id = format!("wamid.backlog.{i}");
        let text = format!("backlog {i}");
        let status = post_whatsapp(&url, OWNERS[i % OWNERS.len()], &id, &text).await;
        assert_eq!(status.unwrap(), StatusCode::OK, "{id}");
        admitted.push(id);
    }

    // The fifth and sixth (one sender or another) are refused before anything is stored.
    let mut refused = Vec::new();
    for i in 4..6 {
        let id = format!("wamid.backlog.{i}");
        let delivery = text_delivery(OWNERS[i % OWNERS.len()], &id, &format!("backlog {i}"));
        let (status, retry, body) = post_signed(&gw, &delivery).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{id}: {body}");
        assert_eq!(retry.as_deref(), Some("5"), "{id}");
        assert_eq!(body["error"], "too many messages waiting; retry later");
        refused.push((id, delivery));
    }
    assert_eq!(refused_total(&gw, "whatsapp").await, 2.0);
    let mut unfinished = 0.0;
    for queue in ["pending", "held", "processing"] {
        let series =
            format!("kafclaw_channel_inbox_depth{{channel=\"whatsapp\",queue=\"{queue}\"}}");
        unfinished += metric(&gw, &series).await;
    }
    assert_eq!(unfinished, 4.0, "nothing refused was stored");

    // Receipts still pass (they store no message), and so does another channel.
    let receipts = fixture::status_body(vec![fixture::status(
        "wamid.none",
        "delivered",
        OWNERS[0],
        "unknown-callback",
    )]);
    let (status, _, body) = post_signed(&gw, &receipts).await;
    assert_eq!(status, StatusCode::OK, "receipts while full: {body}");
    let bridged = post_bridge(&url, "U1", "slack-backlog-1", "bridged while full").await;
    assert_eq!(bridged.unwrap(), StatusCode::OK);

    // One audit record for the change to full, however many refusals.
    let full: Vec<Value> = audit_kind(gw.home.path(), "channel.backlog");
    assert_eq!(full.len(), 1, "{full:?}");
    assert_eq!(full[0]["subject"], "channel:whatsapp");
    assert_eq!(full[0]["data"]["state"], "full");
    assert_eq!(full[0]["data"]["max_pending"], 4);

    // The model answers: the backlog drains, and the refused messages, delivered again as
    // Meta does, are taken.
    open(&gate);
    graph
        .wait_answered(&admitted, Duration::from_secs(30))
        .await;
    let mut retried = Vec::new();
    for (id, delivery) in &refused {
        fixture::until(
            "a refused message taken on redelivery",
            Duration::from_secs(20),
            async || post_signed(&gw, delivery).await.0 == StatusCode::OK,
        )
        .await;
        retried.push(id.clone());
    }
    let mut all = admitted.clone();
    all.extend(retried);
    graph.wait_answered(&all, Duration::from_secs(30)).await;
    let texts = graph.answered_once(&all);
    for (id, text) in all.iter().zip(&texts) {
        let n = id.rsplit('.').next().unwrap();
        assert_eq!(text, &format!("reply to backlog {n}"), "{id}");
    }
    eventually("the change back audited", Duration::from_secs(10), || {
        let records = audit_kind(gw.home.path(), "channel.backlog");
        records.len() == 2 && records[1]["data"]["state"] == "open"
    })
    .await;
    assert_healthy_and_whole(gw).await;
}

/// A signed bridge delivery: its status and `Retry-After`.
async fn post_bridge_full(gw: &Gateway, id: &str, text: &str) -> (StatusCode, Option<String>) {
    let body =
        json!({"message_id": id, "sender_id": "U2", "chat_id": "C-U2", "text": text}).to_string();
    let now = kafclaw_actors::clock::unix_now();
    let res = client()
        .post(gw.gw_url("/webhooks/bridge/slack"))
        .header("X-KafClaw-Timestamp", now.to_string())
        .header(
            "X-KafClaw-Signature",
            kafclaw_actors::channel::bridge::sign_bridge(
                fixture::BRIDGE_SECRET.as_bytes(),
                now,
                body.as_bytes(),
            ),
        )
        .header("content-type", "application/json")
        .body(body)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (res.status(), retry)
}

#[tokio::test]
async fn a_bridge_backlog_is_bounded_too_and_the_bound_survives_a_restart() {
    let (model, gate) = gated_model();
    let graph = Graph::accepting();
    let receiver = ModelServer::start(vec![]);
    let options = || {
        fixture::options(&model, &graph.server, &receiver, 30)
            .env("KAFCLAW_STORE_MAX_PENDING", "2")
            .env("KAFCLAW_PROVIDERS_OPENAI_TIMEOUT_SECONDS", "60")
    };
    let mut gw = Gateway::start(options());
    let url = format!("http://{}", gw.gateway);
    let ids = ["slack-b-0", "slack-b-1", "slack-b-2"];
    for id in &ids[..2] {
        let status = post_bridge(&url, "U2", id, &format!("bridged {id}")).await;
        assert_eq!(status.unwrap(), StatusCode::OK, "{id}");
    }
    let (status, retry) = post_bridge_full(&gw, ids[2], "bridged slack-b-2").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry.as_deref(), Some("5"));
    assert_eq!(refused_total(&gw, "slack").await, 1.0);
    // WhatsApp has a bound of its own.
    let wa = post_whatsapp(&url, OWNERS[0], "wamid.beside", "backlog beside").await;
    assert_eq!(wa.unwrap(), StatusCode::OK);

    // Killed with the backlog full: the new process counts it from the inbox.
    gw.signal("KILL");
    gw.wait_exit(Duration::from_secs(10));
    let gw = fixture::restart(&mut gw, options());
    let (status, _) = post_bridge_full(&gw, ids[2], "bridged slack-b-2").await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "full after a restart"
    );

    open(&gate);
    fixture::until(
        "the refused bridge message taken on redelivery",
        Duration::from_secs(30),
        async || post_bridge_full(&gw, ids[2], "bridged slack-b-2").await.0 == StatusCode::OK,
    )
    .await;
    eventually(
        "every bridge message answered",
        Duration::from_secs(30),
        || {
            let posts = fixture::bridge_posts(&receiver);
            ids.iter().all(|id| posts.contains_key(*id))
        },
    )
    .await;
    let posts = fixture::bridge_posts(&receiver);
    for id in ids {
        let keys: std::collections::BTreeSet<&str> =
            posts[id].iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(
            keys.len(),
            1,
            "{id} answered with one reply id: {:?}",
            posts[id]
        );
        assert!(
            posts[id][0].1.starts_with("reply to bridged"),
            "{:?}",
            posts[id]
        );
    }
    graph
        .wait_answered(&["wamid.beside".to_string()], Duration::from_secs(30))
        .await;
    assert_healthy_and_whole(gw).await;
}
