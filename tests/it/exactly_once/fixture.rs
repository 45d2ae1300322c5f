//! The world around a gateway under crash tests: a model server whose answers name the request
//! that produced them, a Graph API stand-in that records sends by `biz_opaque_callback_data`
//! and posts signed status webhooks back (retrying, as Meta does), a bridge receiver that
//! records `Idempotency-Key`, and readers for what the gateway wrote (audit log, outbox).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use kafclaw_actors::channel::bridge::sign_bridge;
use kafclaw_actors::channel::whatsapp::sign_webhook;

use crate::harness::{client, Gateway, Options, TOKEN};
use crate::model_server::{turn_step, ModelServer, Recorded, Reply};

pub const APP_SECRET: &str = "wa-app-secret-for-exactly-once";
pub const BRIDGE_SECRET: &str = "bridge-secret-for-exactly-once";
pub const PNID: &str = "1234567890";
/// WhatsApp senders configured as owners.
pub const OWNERS: [&str; 4] = [
    "4915100000001",
    "4915100000002",
    "4915100000003",
    "4915100000004",
];

/// How the model answers: `soak …` texts containing `tool` get a `list_dir` call first; every
/// answer names its request number (`#n`, `call-n`), so the test can tell which answer was used.
#[derive(Default)]
pub struct ModelBehavior {
    /// Each answer waits up to this many milliseconds (from a cheap hash of the request number).
    pub jitter_ms: u64,
    /// Answers to (text containing this, step) wait this long (a kill lands while the model is
    /// answering), once.
    pub slow_once: Option<(String, usize, Duration)>,
}

/// The answer to request `n` of a turn at `step`.
pub fn answer(n: usize, text: &str, step: usize) -> Reply {
    if text.contains("tool") && step == 0 {
        Reply::tool_calls(
            &[(&format!("call-{n}"), "list_dir", r#"{"path":"."}"#)],
            10,
            5,
        )
    } else {
        Reply::text(&format!("reply to {text} #{n}"), 10, 5)
    }
}

/// The request number an answer text or call id names.
pub fn nonce(text: &str) -> Option<usize> {
    let tail = text.rsplit(['#', '-']).next()?;
    tail.trim().parse().ok()
}

pub fn model(behavior: Arc<Mutex<ModelBehavior>>) -> ModelServer {
    ModelServer::start_with(move |n, request: &Recorded| {
        let (text, step) = turn_step(&request.json())?;
        let mut reply = answer(n, &text, step);
        let mut behavior = behavior.lock().unwrap();
        if let Some((needle, slow_step, delay)) = behavior.slow_once.clone() {
            if text.contains(&needle) && step == slow_step {
                behavior.slow_once = None;
                reply = reply.with_delay(delay);
            }
        }
        if behavior.jitter_ms > 0 {
            let spread = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            reply = reply.with_delay(Duration::from_millis(spread % behavior.jitter_ms));
        }
        Some(reply)
    })
}

/// Posts signed WhatsApp status webhooks to whichever gateway is up, retrying each until it is
/// answered 200 (a gateway that is down or restarting gets it later, as from Meta).
pub struct StatusPoster {
    pub target: Arc<Mutex<Option<String>>>,
    jobs: mpsc::Sender<Value>,
    pub enabled: Arc<AtomicBool>,
}

impl StatusPoster {
    pub fn start() -> StatusPoster {
        let target: Arc<Mutex<Option<String>>> = Arc::default();
        let (jobs, queue) = mpsc::channel::<Value>();
        let t = target.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let http = client();
                while let Ok(body) = queue.recv() {
                    let body = body.to_string();
                    let deadline = Instant::now() + Duration::from_secs(120);
                    while Instant::now() < deadline {
                        let url = t.lock().unwrap().clone();
                        let Some(url) = url else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        let sent = http
                            .post(format!("{url}/webhooks/whatsapp"))
                            .header("content-type", "application/json")
                            .header(
                                "X-Hub-Signature-256",
                                sign_webhook(APP_SECRET.as_bytes(), body.as_bytes()),
                            )
                            .body(body.clone())
                            .timeout(Duration::from_secs(5))
                            .send()
                            .await;
                        if matches!(&sent, Ok(r) if r.status() == StatusCode::OK) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            });
        });
        StatusPoster {
            target,
            jobs,
            enabled: Arc::new(AtomicBool::new(true)),
        }
    }

    pub fn point_at(&self, gw: Option<&Gateway>) {
        *self.target.lock().unwrap() = gw.map(|g| format!("http://{}", g.gateway));
    }

    pub fn queue(&self, statuses: Vec<Value>) {
        let _ = self.jobs.send(status_body(statuses));
    }
}

/// A webhook body carrying `statuses`.
pub fn status_body(statuses: Vec<Value>) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "e1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": PNID},
            "statuses": statuses
        }}]}]
    })
}

/// One status of an outbound message.
pub fn status(wamid: &str, state: &str, to: &str, callback: &str) -> Value {
    json!({
        "id": wamid, "status": state, "timestamp": "1700000000", "recipient_id": to,
        "biz_opaque_callback_data": callback,
    })
}

/// The Graph API stand-in: answers every send 200 with `wamid.out.<n>` and queues `sent` +
/// `delivered` receipts with the send's `biz_opaque_callback_data` (while statuses are on).
pub fn graph(poster: &StatusPoster) -> ModelServer {
    let jobs = poster.jobs.clone();
    let enabled = poster.enabled.clone();
    ModelServer::start_with(move |n, request: &Recorded| {
        let body = request.json();
        let wamid = format!("wamid.out.{n}");
        if enabled.load(Ordering::SeqCst) {
            if let (Some(tag), Some(to)) = (
                body["biz_opaque_callback_data"].as_str(),
                body["to"].as_str(),
            ) {
                let _ = jobs.send(status_body(vec![
                    status(&wamid, "sent", to, tag),
                    status(&wamid, "delivered", to, tag),
                ]));
            }
        }
        Some(Reply::json(
            200,
            json!({"messaging_product": "whatsapp", "messages": [{"id": wamid}]}),
        ))
    })
}

/// A bridge receiver: answers every reply 200 (a receiver honouring `Idempotency-Key` keeps
/// the first of each key; the test counts keys).
pub fn receiver() -> ModelServer {
    ModelServer::start_with(|_, _| Some(Reply::json(200, json!({"ok": true}))))
}

/// Gateway options for the world: WhatsApp and the bridge `slack`, owners only, replies to the
/// stand-ins, `resend_after` as given.
pub fn options(
    model: &ModelServer,
    graph: &ModelServer,
    receiver: &ModelServer,
    resend_after: u64,
) -> Options {
    let mut options = Options::default()
        .token()
        .env("KAFCLAW_PROVIDERS_OPENAI_API_BASE", &model.base)
        .env("KAFCLAW_PROVIDERS_OPENAI_MODEL", "test-model")
        .env("KAFCLAW_PROVIDERS_OPENAI_MAX_RETRIES", "0")
        .env("KAFCLAW_CHANNELS_WHATSAPP_APP_SECRET", APP_SECRET)
        .env("KAFCLAW_CHANNELS_WHATSAPP_VERIFY_TOKEN", "verify")
        .env("KAFCLAW_CHANNELS_WHATSAPP_ACCESS_TOKEN", "graph-token")
        .env("KAFCLAW_CHANNELS_BRIDGES_SLACK_SECRET", BRIDGE_SECRET);
    options.config_json = Some(
        json!({
            "channels": {
                "whatsapp": {
                    "enabled": true,
                    "phone_number_id": PNID,
                    "graph_base": graph.origin(),
                    "owner_ids": OWNERS,
                    "resend_after_seconds": resend_after,
                },
                "bridges": {"slack": {
                    "outbound_url": format!("{}/out", receiver.origin()),
                    "owner_ids": ["U1", "U2", "U3", "U4"],
                    "resend_after_seconds": resend_after,
                }}
            }
        })
        .to_string(),
    );
    options
}

/// A signed WhatsApp text message webhook.
pub async fn post_whatsapp(
    gw: &str,
    from: &str,
    id: &str,
    text: &str,
) -> reqwest::Result<StatusCode> {
    let body = json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "e1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": PNID},
            "contacts": [{"profile": {"name": "T"}, "wa_id": from}],
            "messages": [{"from": from, "id": id, "timestamp": "1700000000", "type": "text", "text": {"body": text}}]
        }}]}]
    })
    .to_string();
    let sig = sign_webhook(APP_SECRET.as_bytes(), body.as_bytes());
    client()
        .post(format!("{gw}/webhooks/whatsapp"))
        .header("content-type", "application/json")
        .header("X-Hub-Signature-256", sig)
        .body(body)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .map(|r| r.status())
}

/// A signed bridge message (a fresh signature per attempt).
pub async fn post_bridge(
    gw: &str,
    sender: &str,
    id: &str,
    text: &str,
) -> reqwest::Result<StatusCode> {
    let body = json!({"message_id": id, "sender_id": sender, "chat_id": format!("C-{sender}"), "text": text})
        .to_string();
    let now = kafclaw_actors::clock::unix_now();
    client()
        .post(format!("{gw}/webhooks/bridge/slack"))
        .header("X-KafClaw-Timestamp", now.to_string())
        .header(
            "X-KafClaw-Signature",
            sign_bridge(BRIDGE_SECRET.as_bytes(), now, body.as_bytes()),
        )
        .header("content-type", "application/json")
        .body(body)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .map(|r| r.status())
}

/// `POST /chat` with an `Idempotency-Key`: the reply on a 200.
pub async fn post_chat(
    gw: &str,
    key: &str,
    session: &str,
    text: &str,
) -> reqwest::Result<(StatusCode, Value)> {
    let res = client()
        .post(format!("{gw}/chat"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .header("Idempotency-Key", key)
        .json(&json!({"message": text, "session": session}))
        .timeout(Duration::from_secs(30))
        .send()
        .await?;
    let status = res.status();
    Ok((status, res.json().await.unwrap_or(Value::Null)))
}

/// Every audit record of the home, in order.
pub fn audit_records(home: &Path) -> Vec<Value> {
    let dir = home.join(".kafclaw/audit");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// How many `tool.decided` records each tool call id has (a call decided twice ran twice).
pub fn tool_decisions(home: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for record in audit_records(home) {
        if record["kind"] == "tool.decided" {
            if let Some(id) = record["data"]["call_id"].as_str() {
                *out.entry(id.to_string()).or_default() += 1;
            }
        }
    }
    out
}

/// Records of `kind` in the audit log.
pub fn audit_kind(home: &Path, kind: &str) -> Vec<Value> {
    audit_records(home)
        .into_iter()
        .filter(|r| r["kind"] == kind)
        .collect()
}

/// Model requests per (message text, step).
pub fn model_steps(model: &ModelServer) -> HashMap<(String, usize), Vec<usize>> {
    let mut out: HashMap<(String, usize), Vec<usize>> = HashMap::new();
    for (n, seen) in model.seen().iter().enumerate() {
        if let Some(step) = turn_step(&seen.body) {
            out.entry(step).or_default().push(n);
        }
    }
    out
}

/// WhatsApp sends (first parts) by the inbound message they answer: `(tag, text)` each.
pub fn graph_sends(graph: &ModelServer) -> HashMap<String, Vec<(String, String)>> {
    let mut out: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for seen in graph.seen() {
        let body = &seen.body;
        if let Some(answered) = body["context"]["message_id"].as_str() {
            out.entry(answered.to_string()).or_default().push((
                body["biz_opaque_callback_data"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                body["text"]["body"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ));
        }
    }
    out
}

/// Bridge replies by the inbound message they answer: `(Idempotency-Key, text)` each.
pub fn bridge_posts(receiver: &ModelServer) -> HashMap<String, Vec<(String, String)>> {
    let mut out: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for seen in receiver.seen() {
        let body = &seen.body;
        if let Some(answered) = body["reply_to"].as_str() {
            out.entry(answered.to_string()).or_default().push((
                seen.raw
                    .header("idempotency-key")
                    .unwrap_or_default()
                    .to_string(),
                body["text"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    out
}

/// `GET /api/v1/channels/{name}/outbox` with the admin token.
pub async fn outbox(gw: &Gateway, channel: &str) -> Vec<Value> {
    client()
        .get(gw.url(&format!("/api/v1/channels/{channel}/outbox")))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls `check` (deadline `limit`), failing with `what`.
pub async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls an asynchronous `check` (deadline `limit`), failing with `what`.
pub async fn until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Restarts a killed gateway on the same home (no crash point this time).
pub fn restart(gw: &mut Gateway, options: Options) -> Gateway {
    let home = std::mem::replace(&mut gw.home, tempfile::tempdir().unwrap());
    Gateway::start_in(home, options)
}

/// `kafclaw audit verify` on a stopped gateway's home: the chain must verify.
pub fn verify_audit(home: &Path) {
    let (code, out, err) = crate::harness::run(home, &HashMap::new(), &["audit", "verify"]);
    assert_eq!(code, 0, "audit chain broken after a kill: {out}{err}");
}
