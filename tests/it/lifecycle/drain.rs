//! SIGTERM/SIGINT drain: listeners stop accepting, in-flight turns, tool runs and reply sends
//! finish within `gateway.shutdown_grace_seconds`, then the process exits 0. A message whose
//! turn finished is not processed again after the restart; one whose turn could not finish in
//! time is still in the inbox and is processed after the restart.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use kafclaw_actors::channel::bridge::sign_bridge;
use kafclaw_actors::channel::whatsapp::sign_webhook;

use super::{chat_with, messages_text, wait_until};
use crate::harness::{client, Gateway, Options, TOKEN};
use crate::model_server::{self, ModelServer, Reply};

const WA_SECRET: &str = "wa-app-secret-for-drain";
const BRIDGE_SECRET: &str = "bridge-secret-for-drain";
const WA_OWNER: &str = "4915112345678";
/// The contract's bound for a stop.
const CONTRACT_STOP: Duration = Duration::from_secs(10);

fn slow(text: &str, delay: Duration) -> Reply {
    let mut reply = model_server::text(text, 1, 1);
    reply.delay = delay;
    reply
}

/// A gateway with a WhatsApp channel and a bridge `slack`, both sending their replies to `sink`.
fn options(model: &ModelServer, sink: &ModelServer) -> Options {
    let sink_root = sink.base.trim_end_matches("/v1").to_string();
    let mut options = Options::default()
        .token()
        .env("KAFCLAW_PROVIDERS_OPENAI_API_BASE", &model.base)
        .env("KAFCLAW_PROVIDERS_OPENAI_MODEL", "test-model")
        .env("KAFCLAW_PROVIDERS_OPENAI_MAX_RETRIES", "0")
        .env("KAFCLAW_CHANNELS_WHATSAPP_APP_SECRET", WA_SECRET)
        .env("KAFCLAW_CHANNELS_WHATSAPP_VERIFY_TOKEN", "verify")
        .env("KAFCLAW_CHANNELS_WHATSAPP_ACCESS_TOKEN", "graph-token")
        .env("KAFCLAW_CHANNELS_BRIDGES_SLACK_SECRET", BRIDGE_SECRET);
    options.config_json = Some(
        json!({
            "channels": {
                "whatsapp": {
                    "enabled": true,
                    "phone_number_id": "1234567890",
                    "graph_base": sink_root,
                    "owner_ids": [format!("+{WA_OWNER}")]
                },
                "bridges": {"slack": {"outbound_url": format!("{sink_root}/out"), "owner_ids": ["U-OWNER"]}}
            }
        })
        .to_string(),
    );
    options
}

#[derive(Clone, Copy, Debug)]
enum Channel {
    WhatsApp,
    Bridge,
}

/// Posts one signed owner message `id` with `text` on `channel`; asserts the 200.
async fn post(gw: &Gateway, channel: Channel, id: &str, text: &str) {
    let request = match channel {
        Channel::WhatsApp => {
            let body = json!({
                "object": "whatsapp_business_account",
                "entry": [{"id": "e1", "changes": [{"field": "messages", "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550000000", "phone_number_id": "1234567890"},
                    "contacts": [{"profile": {"name": "Owner"}, "wa_id": WA_OWNER}],
                    "messages": [{"from": WA_OWNER, "id": id, "timestamp": "1700000000", "type": "text", "text": {"body": text}}]
                }}]}]
            })
            .to_string();
            client()
                .post(gw.gw_url("/webhooks/whatsapp"))
                .header(
                    "X-Hub-Signature-256",
                    sign_webhook(WA_SECRET.as_bytes(), body.as_bytes()),
                )
                .header("content-type", "application/json")
                .body(body)
        }
        Channel::Bridge => {
            let body =
                json!({"message_id": id, "sender_id": "U-OWNER", "chat_id": "C1", "text": text})
                    .to_string();
            let now = kafclaw_actors::clock::unix_now();
            client()
                .post(gw.gw_url("/webhooks/bridge/slack"))
                .header("X-KafClaw-Timestamp", now.to_string())
                .header(
                    "X-KafClaw-Signature",
                    sign_bridge(BRIDGE_SECRET.as_bytes(), now, body.as_bytes()),
                )
                .header("content-type", "application/json")
                .body(body)
        }
    };
    let status = request.send().await.unwrap().status();
    assert_eq!(status, StatusCode::OK, "{channel:?} {id}");
}

/// The inbound message ids the sink received replies to (WhatsApp `context.message_id`, bridge
/// `reply_to`), with the reply text.
fn replies(sink: &ModelServer) -> Vec<(String, String)> {
    sink.seen()
        .iter()
        .filter_map(|s| {
            let b: &Value = &s.body;
            let to = b["context"]["message_id"]
                .as_str()
                .or(b["reply_to"].as_str())?;
            let text = b["text"]["body"].as_str().or(b["text"].as_str())?;
            Some((to.to_string(), text.to_string()))
        })
        .collect()
}

/// Sends SIGTERM and waits for the exit; returns how long it took.
fn terminate(gw: &mut Gateway, bound: Duration) -> Duration {
    let start = Instant::now();
    gw.signal("TERM");
    let status = gw.wait_exit(bound + Duration::from_secs(5));
    let took = start.elapsed();
    assert_eq!(status.code(), Some(0), "{}", gw.stderr());
    assert!(took < bound, "the stop took {took:?} (bound {bound:?})");
    took
}

/// Restarts in the same home.
fn restart(gw: &mut Gateway, options: Options) -> Gateway {
    let home = std::mem::replace(&mut gw.home, tempfile::tempdir().unwrap());
    Gateway::start_in(home, options)
}

/// A message is in its model call when SIGTERM arrives: its reply is delivered before the
/// exit (0, within the bound), and after a restart the model is not asked again for it.
async fn a_turn_in_flight_finishes(channel: Channel) {
    let model = ModelServer::start(vec![slow("the drained reply", Duration::from_secs(2))]);
    model.fallback(model_server::text("after the restart", 1, 1));
    let sink = ModelServer::start(vec![]);
    let mut gw = Gateway::start(options(&model, &sink));
    post(&gw, channel, "m-drain-1", "finish me").await;
    wait_until(
        Duration::from_secs(10),
        "the turn never reached the model",
        || !model.seen().is_empty(),
    )
    .await;
    terminate(&mut gw, CONTRACT_STOP);
    assert_eq!(
        replies(&sink),
        [("m-drain-1".to_string(), "the drained reply".to_string())],
        "{channel:?}: the reply was sent before the exit"
    );

    let gw2 = restart(&mut gw, options(&model, &sink));
    post(&gw2, channel, "m-drain-2", "next").await;
    wait_until(
        Duration::from_secs(10),
        "the second message got no reply",
        || replies(&sink).iter().any(|(to, _)| to == "m-drain-2"),
    )
    .await;
    let seen = model.seen();
    assert_eq!(
        seen.len(),
        2,
        "{channel:?}: the model was asked again for the drained message"
    );
    assert!(messages_text(&seen[1]).contains("next"));
    assert_eq!(replies(&sink).len(), 2, "no reply was sent twice");
}

#[tokio::test]
async fn sigterm_during_a_bridge_turn_delivers_the_reply_and_it_is_not_redone() {
    a_turn_in_flight_finishes(Channel::Bridge).await;
}

#[tokio::test]
async fn sigterm_during_a_whatsapp_turn_delivers_the_reply_and_it_is_not_redone() {
    a_turn_in_flight_finishes(Channel::WhatsApp).await;
}

#[tokio::test]
async fn sigterm_during_a_chat_turn_answers_it_and_stops_accepting() {
    let model = ModelServer::start(vec![slow("chat drained", Duration::from_secs(3))]);
    let sink = ModelServer::start(vec![]);
    let mut gw = Gateway::start(options(&model, &sink));
    let pending = tokio::spawn({
        let url = gw.gw_url("/chat");
        async move {
            let res = client()
                .post(url)
                .header("Authorization", format!("Bearer {TOKEN}"))
                .json(&json!({"message": "long one", "session": "drain"}))
                .send()
                .await
                .unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        }
    });
    wait_until(
        Duration::from_secs(10),
        "the turn never reached the model",
        || !model.seen().is_empty(),
    )
    .await;
    let start = Instant::now();
    gw.signal("TERM");
    // While the turn drains, new connections are refused.
    let healthz = gw.gw_url("/healthz");
    loop {
        let refused = client()
            .get(&healthz)
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .is_err();
        if refused {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the listener still accepts during the drain"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = pending.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["reply"], "chat drained");
    assert_eq!(gw.wait_exit(Duration::from_secs(15)).code(), Some(0));
    assert!(start.elapsed() < CONTRACT_STOP, "{:?}", start.elapsed());

    // The finished turn is in the history after the restart.
    model.fallback(model_server::text("again", 1, 1));
    let gw2 = restart(&mut gw, options(&model, &sink));
    let (status, _) = chat_with(
        &gw2,
        TOKEN,
        json!({"message": "and then?", "session": "drain"}),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = model.seen();
    assert_eq!(seen.len(), 2);
    assert!(messages_text(&seen[1]).contains("chat drained"));
}

#[tokio::test]
async fn sigint_drains_like_sigterm() {
    let model = ModelServer::start(vec![slow("int reply", Duration::from_secs(2))]);
    let sink = ModelServer::start(vec![]);
    let mut gw = Gateway::start(options(&model, &sink));
    post(&gw, Channel::Bridge, "m-int-1", "interrupt me").await;
    wait_until(
        Duration::from_secs(10),
        "the turn never reached the model",
        || !model.seen().is_empty(),
    )
    .await;
    let start = Instant::now();
    gw.signal("INT");
    assert_eq!(gw.wait_exit(Duration::from_secs(15)).code(), Some(0));
    assert!(start.elapsed() < CONTRACT_STOP);
    assert_eq!(
        replies(&sink).len(),
        1,
        "the reply was sent before the exit"
    );
}

#[tokio::test]
async fn a_turn_queued_behind_the_draining_one_is_kept_for_the_next_start() {
    // Two messages of one conversation: the second waits for the first (one turn at a time per
    // session). The drain finishes the first and does not start the second, which is processed
    // once after the restart.
    let model = ModelServer::start(vec![slow("first reply", Duration::from_secs(2))]);
    model.fallback(model_server::text("second reply", 1, 1));
    let sink = ModelServer::start(vec![]);
    let mut gw = Gateway::start(options(&model, &sink));
    post(&gw, Channel::Bridge, "m-q-1", "first").await;
    wait_until(
        Duration::from_secs(10),
        "the turn never reached the model",
        || !model.seen().is_empty(),
    )
    .await;
    post(&gw, Channel::Bridge, "m-q-2", "second").await;
    terminate(&mut gw, CONTRACT_STOP);
    assert_eq!(model.seen().len(), 1, "the queued turn did not start");
    let sent = replies(&sink);
    assert_eq!(sent, [("m-q-1".to_string(), "first reply".to_string())]);

    let _gw2 = restart(&mut gw, options(&model, &sink));
    wait_until(
        Duration::from_secs(10),
        "the kept message was not processed",
        || replies(&sink).iter().any(|(to, _)| to == "m-q-2"),
    )
    .await;
    let seen = model.seen();
    assert_eq!(seen.len(), 2, "only the kept message ran after the restart");
    assert!(messages_text(&seen[1]).contains("second"));
}

#[tokio::test]
async fn a_turn_that_outlasts_the_grace_exits_0_at_the_deadline_and_runs_after_restart() {
    let grace = Duration::from_secs(2);
    let model = ModelServer::start(vec![slow("too late", Duration::from_secs(30))]);
    model.fallback(model_server::text("after restart", 1, 1));
    let sink = ModelServer::start(vec![]);
    let with_grace = || options(&model, &sink).env("KAFCLAW_GATEWAY_SHUTDOWN_GRACE_SECONDS", "2");
    let mut gw = Gateway::start(with_grace());
    post(&gw, Channel::Bridge, "m-late-1", "never in time").await;
    wait_until(
        Duration::from_secs(10),
        "the turn never reached the model",
        || !model.seen().is_empty(),
    )
    .await;
    let took = terminate(&mut gw, grace + Duration::from_secs(2));
    assert!(
        took >= grace - Duration::from_secs(1),
        "the turn was not given its grace ({took:?})"
    );
    assert!(replies(&sink).is_empty());

    let _gw2 = restart(&mut gw, with_grace());
    wait_until(
        Duration::from_secs(10),
        "the unfinished message was not processed",
        || replies(&sink).iter().any(|(to, _)| to == "m-late-1"),
    )
    .await;
    assert_eq!(
        replies(&sink),
        [("m-late-1".into(), "after restart".into())]
    );
}

#[test]
fn a_bad_grace_is_refused_naming_the_key() {
    let home = tempfile::tempdir().unwrap();
    let mut env = std::collections::HashMap::new();
    env.insert(
        "KAFCLAW_GATEWAY_SHUTDOWN_GRACE_SECONDS".to_string(),
        "0".to_string(),
    );
    let (code, _, err) = crate::harness::run(
        home.path(),
        &env,
        &["gateway", "--port", "0", "--dashboard-port", "0"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("gateway.shutdown_grace_seconds"), "{err}");
}

/// The `tool.executed` records of a home's audit log.
fn executions(home: &std::path::Path) -> usize {
    let dir = home.join(".kafclaw/audit");
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .flat_map(|text| {
            text.lines()
                .filter(|l| l.contains("\"kind\":\"tool.executed\""))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .count()
}

#[tokio::test]
async fn sigterm_during_a_tool_run_lets_it_and_the_turn_finish_once() {
    // The model asks for a command that takes ~2 s; SIGTERM lands while it runs. The command
    // finishes, the model gets its result, the reply goes out, and nothing runs again later.
    let model = ModelServer::start(vec![
        model_server::tool_call("exec", json!({"command": "sleep 2"})),
        model_server::text("slept well", 1, 1),
    ]);
    model.fallback(model_server::text("after the restart", 1, 1));
    let sink = ModelServer::start(vec![]);
    let with_sleep = || options(&model, &sink).env("KAFCLAW_TOOLS_EXEC_ALLOW", "sleep");
    let mut gw = Gateway::start(with_sleep());
    post(&gw, Channel::Bridge, "m-tool-1", "take a nap").await;
    let home = gw.home_path();
    wait_until(Duration::from_secs(10), "the tool never started", || {
        std::fs::read_to_string(home.join(".kafclaw/audit/audit-000001.jsonl"))
            .is_ok_and(|t| t.contains("\"kind\":\"tool.decided\""))
    })
    .await;
    terminate(&mut gw, CONTRACT_STOP);
    assert_eq!(
        executions(&home),
        1,
        "the tool run finished and was audited"
    );
    assert_eq!(
        replies(&sink),
        [("m-tool-1".to_string(), "slept well".to_string())]
    );
    let model_calls = model.seen().len();
    assert_eq!(model_calls, 2, "the turn went on after the tool result");

    let gw2 = restart(&mut gw, with_sleep());
    post(&gw2, Channel::Bridge, "m-tool-2", "awake?").await;
    wait_until(
        Duration::from_secs(10),
        "the second message got no reply",
        || replies(&sink).iter().any(|(to, _)| to == "m-tool-2"),
    )
    .await;
    assert_eq!(
        model.seen().len(),
        model_calls + 1,
        "the drained turn was not redone"
    );
    assert_eq!(
        executions(&gw2.home_path()),
        1,
        "the tool did not run again"
    );
}

#[tokio::test]
async fn a_chat_turn_queued_behind_the_draining_one_is_refused_without_running() {
    let model = ModelServer::start(vec![slow("first", Duration::from_secs(2))]);
    model.fallback(model_server::text("never", 1, 1));
    let sink = ModelServer::start(vec![]);
    let mut gw = Gateway::start(options(&model, &sink));
    let send = |message: &'static str| {
        let url = gw.gw_url("/chat");
        tokio::spawn(async move {
            let res = client()
                .post(url)
                .header("Authorization", format!("Bearer {TOKEN}"))
                .json(&json!({"message": message, "session": "one"}))
                .send()
                .await
                .unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        })
    };
    let first = send("first");
    wait_until(
        Duration::from_secs(10),
        "the turn never reached the model",
        || !model.seen().is_empty(),
    )
    .await;
    let second = send("second");
    // Nothing outside shows a request waiting for its session, so give it a moment to arrive;
    // one that arrived late would be refused a connection and fail the test, never pass it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    terminate(&mut gw, CONTRACT_STOP);
    let (status, body) = first.await.unwrap();
    assert_eq!(
        (status, body["reply"].as_str()),
        (StatusCode::OK, Some("first"))
    );
    let (status, body) = second.await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("shutting down"),
        "{body}"
    );
    assert_eq!(
        model.seen().len(),
        1,
        "the queued turn never reached the model"
    );
}
