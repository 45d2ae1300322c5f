//! Exactly once across crashes (issue 12), on the real binary: a message acknowledged before a
//! kill is answered after the restart without asking the model again for an answer it gave,
//! without running a tool twice, and with one reply. Deterministic cases kill the process at
//! an exact point (`KAFCLAW_TEST_CRASH_AT`, test-hooks builds only); the soak kills it at random
//! moments under load.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;

use crate::harness::{client, Gateway, Options, TOKEN};

pub(crate) mod fixture;
mod soak;

use fixture::*;

#[cfg(feature = "test-hooks")]
const CRASH_ENV: &str = kafclaw_actors::testpoint::CRASH_ENV;

/// The servers around one gateway.
struct World {
    behavior: Arc<Mutex<ModelBehavior>>,
    model: crate::model_server::ModelServer,
    poster: StatusPoster,
    graph: crate::model_server::ModelServer,
    receiver: crate::model_server::ModelServer,
}

impl World {
    fn new() -> World {
        let behavior = Arc::new(Mutex::new(ModelBehavior::default()));
        let model = model(behavior.clone());
        let poster = StatusPoster::start();
        let graph = graph(&poster);
        World {
            behavior,
            model,
            poster,
            graph,
            receiver: receiver(),
        }
    }

    fn options(&self, resend_after: u64) -> Options {
        options(&self.model, &self.graph, &self.receiver, resend_after)
    }

    fn start(&self, options: Options) -> Gateway {
        let gw = Gateway::start(options);
        self.poster.point_at(Some(&gw));
        gw
    }

    fn restart(&self, gw: &mut Gateway, options: Options) -> Gateway {
        self.poster.point_at(None);
        verify_audit(gw.home.path());
        let fresh = restart(gw, options);
        self.poster.point_at(Some(&fresh));
        fresh
    }

    /// Model requests of the turn answering `text`, by step.
    fn requests(&self, text: &str, step: usize) -> usize {
        model_steps(&self.model)
            .get(&(text.to_string(), step))
            .map_or(0, Vec::len)
    }
}

/// The gateway aborted (or was killed): wait for it to be gone.
fn gone(gw: &mut Gateway) {
    gw.wait_exit(Duration::from_secs(20));
}

#[tokio::test]
async fn a_kill_while_the_model_is_answering_asks_only_that_step_again() {
    let world = World::new();
    let text = "soak slow tool";
    world.behavior.lock().unwrap().slow_once = Some((text.into(), 1, Duration::from_secs(60)));
    let mut gw = world.start(world.options(30));
    let url = format!("http://{}", gw.gateway);
    assert_eq!(
        post_whatsapp(&url, OWNERS[0], "wamid.slow", text)
            .await
            .unwrap(),
        StatusCode::OK
    );
    // The tool ran and the model is answering the second step: kill.
    eventually("the second model call", Duration::from_secs(10), || {
        world.requests(text, 1) == 1
    })
    .await;
    gw.signal("KILL");
    gone(&mut gw);

    let gw = world.restart(&mut gw, world.options(30));
    eventually("the reply", Duration::from_secs(15), || {
        graph_sends(&world.graph).contains_key("wamid.slow")
    })
    .await;
    assert_eq!(
        world.requests(text, 0),
        1,
        "the journaled answer is not asked again"
    );
    assert_eq!(
        world.requests(text, 1),
        2,
        "the unanswered call is asked once more"
    );
    let decisions = tool_decisions(gw.home.path());
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert!(
        decisions.values().all(|n| *n == 1),
        "the tool ran once: {decisions:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        graph_sends(&world.graph)["wamid.slow"].len(),
        1,
        "one reply"
    );
}

/// (Crash points exist in `test-hooks` builds only.)
#[cfg(feature = "test-hooks")]
#[tokio::test]
async fn a_kill_after_the_model_answered_before_the_answer_was_journaled_runs_nothing_twice() {
    let world = World::new();
    let text = "soak answered tool";
    let mut gw = world.start(world.options(30).env(CRASH_ENV, "turn.model_answered"));
    let url = format!("http://{}", gw.gateway);
    assert_eq!(
        post_whatsapp(&url, OWNERS[3], "wamid.answered", text)
            .await
            .unwrap(),
        StatusCode::OK
    );
    gone(&mut gw);
    assert!(
        tool_decisions(gw.home.path()).is_empty(),
        "nothing ran on a lost answer"
    );

    let gw = world.restart(&mut gw, world.options(30));
    eventually("the reply", Duration::from_secs(15), || {
        graph_sends(&world.graph).contains_key("wamid.answered")
    })
    .await;
    // The lost answer is asked for again (nothing acted on it); the tool runs once.
    assert_eq!(world.requests(text, 0), 2);
    assert_eq!(world.requests(text, 1), 1);
    let decisions = tool_decisions(gw.home.path());
    assert_eq!(
        decisions.values().copied().collect::<Vec<_>>(),
        [1],
        "{decisions:?}"
    );
    assert_eq!(graph_sends(&world.graph)["wamid.answered"].len(), 1);
}

/// (Crash points exist in `test-hooks` builds only.)
#[cfg(feature = "test-hooks")]
#[tokio::test]
async fn a_kill_after_the_tool_ran_before_its_result_was_journaled_does_not_run_it_again() {
    let world = World::new();
    let text = "soak crash tool";
    let mut gw = world.start(world.options(30).env(CRASH_ENV, "tool.ran"));
    let url = format!("http://{}", gw.gateway);
    assert_eq!(
        post_whatsapp(&url, OWNERS[0], "wamid.toolcrash", text)
            .await
            .unwrap(),
        StatusCode::OK
    );
    gone(&mut gw);

    let gw = world.restart(&mut gw, world.options(30));
    eventually("the reply", Duration::from_secs(15), || {
        graph_sends(&world.graph).contains_key("wamid.toolcrash")
    })
    .await;
    assert_eq!(world.requests(text, 0), 1);
    assert_eq!(world.requests(text, 1), 1);
    let decisions = tool_decisions(gw.home.path());
    assert_eq!(
        decisions.values().copied().collect::<Vec<_>>(),
        [1],
        "ran once"
    );
    // The model was told the call was interrupted and not retried …
    let steps = model_steps(&world.model);
    let second = &world.model.seen()[steps[&(text.to_string(), 1)][0]].body;
    let tool_result = second["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(tool_result.starts_with("interrupted:"), "{tool_result}");
    // … and the interruption is audited with the call id.
    let interrupted = audit_kind(gw.home.path(), "tool.interrupted");
    assert_eq!(interrupted.len(), 1);
    assert_eq!(
        interrupted[0]["data"]["call_id"].as_str(),
        decisions.keys().next().map(String::as_str)
    );
    assert_eq!(graph_sends(&world.graph)["wamid.toolcrash"].len(), 1);
}

/// (Crash points exist in `test-hooks` builds only.)
#[cfg(feature = "test-hooks")]
#[tokio::test]
async fn a_kill_after_the_provider_accepted_a_send_waits_for_its_status_and_sends_once() {
    let world = World::new();
    let mut gw = world.start(world.options(3).env(CRASH_ENV, "send.accepted"));
    let url = format!("http://{}", gw.gateway);
    assert_eq!(
        post_whatsapp(&url, OWNERS[1], "wamid.sent", "soak accepted")
            .await
            .unwrap(),
        StatusCode::OK
    );
    gone(&mut gw);
    assert_eq!(graph_sends(&world.graph)["wamid.sent"].len(), 1);

    // Meta's status webhook for that send reaches the restarted gateway.
    let gw = world.restart(&mut gw, world.options(3));
    until("the delivered state", Duration::from_secs(10), async || {
        first_state(&gw, "whatsapp").await == "delivered"
    })
    .await;
    // Past the resend wait: still one send.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let sends = &graph_sends(&world.graph)["wamid.sent"];
    assert_eq!(sends.len(), 1, "{sends:?}");
    assert!(sends[0].0.starts_with("kafclaw-"), "{sends:?}");
    assert_eq!(world.requests("soak accepted", 0), 1);
}

/// (Crash points exist in `test-hooks` builds only.)
#[cfg(feature = "test-hooks")]
#[tokio::test]
async fn without_a_status_a_send_cut_short_is_repeated_only_after_the_resend_wait_with_its_ids() {
    let world = World::new();
    world
        .poster
        .enabled
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let mut gw = world.start(world.options(3).env(CRASH_ENV, "send.accepted"));
    let url = format!("http://{}", gw.gateway);
    assert_eq!(
        post_bridge(&url, "U1", "b.sent", "soak bridge accepted")
            .await
            .unwrap(),
        StatusCode::OK
    );
    gone(&mut gw);
    let first = bridge_posts(&world.receiver)["b.sent"].clone();
    assert_eq!(first.len(), 1);

    let started = std::time::Instant::now();
    let _gw = world.restart(&mut gw, world.options(3));
    eventually("the repeat", Duration::from_secs(15), || {
        bridge_posts(&world.receiver)["b.sent"].len() == 2
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "repeated before the resend wait: {:?}",
        started.elapsed()
    );
    let posts = &bridge_posts(&world.receiver)["b.sent"];
    assert_eq!(
        posts[0].0, posts[1].0,
        "the same Idempotency-Key: {posts:?}"
    );
    assert!(posts[0].0.starts_with("kafclaw-"));
    assert_eq!(posts[0].1, posts[1].1);
}

/// (Crash points exist in `test-hooks` builds only.)
#[cfg(feature = "test-hooks")]
#[tokio::test]
async fn a_kill_between_mark_done_and_its_flush_does_not_run_the_turn_again() {
    let world = World::new();
    let text = "soak done tool";
    // (The reply may have been taken for sending just before the abort: it then waits the
    // resend wait for a receipt that never comes, and goes out once after it.)
    let mut gw = world.start(world.options(2).env(CRASH_ENV, "inbox.marked_done"));
    let url = format!("http://{}", gw.gateway);
    assert_eq!(
        post_whatsapp(&url, OWNERS[2], "wamid.done", text)
            .await
            .unwrap(),
        StatusCode::OK
    );
    gone(&mut gw);

    let gw = world.restart(&mut gw, world.options(2));
    // The message is handed over again (its `done` never reached the disk): the journal
    // answers it without a model call, and the outbox refuses a second reply.
    until("the replayed turn", Duration::from_secs(10), async || {
        timeline_kinds(&gw)
            .await
            .iter()
            .any(|k| k == "turn.replayed")
    })
    .await;
    eventually("the reply", Duration::from_secs(10), || {
        graph_sends(&world.graph).contains_key("wamid.done")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(world.requests(text, 0), 1, "no model call repeated");
    assert_eq!(world.requests(text, 1), 1, "no model call repeated");
    assert!(tool_decisions(gw.home.path()).values().all(|n| *n == 1));
    assert_eq!(
        graph_sends(&world.graph)["wamid.done"].len(),
        1,
        "one reply"
    );
}

#[tokio::test]
async fn receipts_move_replies_forward_and_a_failure_is_audited_and_visible() {
    let world = World::new();
    let gw = world.start(world.options(30));
    let url = format!("http://{}", gw.gateway);
    assert_eq!(
        post_whatsapp(&url, OWNERS[3], "wamid.r1", "soak receipts")
            .await
            .unwrap(),
        StatusCode::OK
    );
    until("the delivered state", Duration::from_secs(10), async || {
        first_state(&gw, "whatsapp").await == "delivered"
    })
    .await;
    let reply = outbox(&gw, "whatsapp").await[0].clone();
    let tag = reply["id"].as_str().unwrap().to_string();
    assert_eq!(reply["reply_to"], "wamid.r1");
    assert!(reply.get("text").is_none(), "no reply text in the listing");
    // read, then a stale "sent": states only move forward.
    world
        .poster
        .queue(vec![status("wamid.x", "read", OWNERS[3], &tag)]);
    world
        .poster
        .queue(vec![status("wamid.x", "sent", OWNERS[3], &tag)]);
    until("read", Duration::from_secs(10), async || {
        first_state(&gw, "whatsapp").await == "read"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(first_state(&gw, "whatsapp").await, "read");

    // Read scope is needed.
    let denied = client()
        .get(gw.url("/api/v1/channels/whatsapp/outbox"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
    let unknown = client()
        .get(gw.url("/api/v1/channels/nope/outbox"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_failure_receipt_for_a_sent_reply_is_audited_before_it_is_visible() {
    let world = World::new();
    world
        .poster
        .enabled
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let gw = world.start(world.options(30));
    let url = format!("http://{}", gw.gateway);
    assert_eq!(
        post_bridge(&url, "U2", "b.f", "soak fail").await.unwrap(),
        StatusCode::OK
    );
    assert_eq!(
        post_whatsapp(&url, OWNERS[0], "wamid.f", "soak fail wa")
            .await
            .unwrap(),
        StatusCode::OK
    );
    until("the sent state", Duration::from_secs(10), async || {
        first_state(&gw, "whatsapp").await == "sent"
    })
    .await;
    let tag = outbox(&gw, "whatsapp").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut failed = status("wamid.z", "failed", OWNERS[0], &tag);
    failed["errors"] = serde_json::json!([{"code": 131026, "title": "Message undeliverable"}]);
    world.poster.queue(vec![failed]);
    until("failed", Duration::from_secs(10), async || {
        first_state(&gw, "whatsapp").await == "failed"
    })
    .await;
    let entry = outbox(&gw, "whatsapp").await[0].clone();
    assert_eq!(entry["error"]["code"], 131026, "{entry}");
    let audited = audit_kind(gw.home.path(), "reply.failed");
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0]["data"]["code"], 131026);
    assert_eq!(audited[0]["data"]["reply_id"], tag.as_str());
    assert!(timeline_kinds(&gw)
        .await
        .iter()
        .any(|k| k == "reply.failed"));
    // The bridge's reply is visible on its own outbox, sent.
    let bridge = outbox(&gw, "slack").await;
    assert_eq!(bridge.len(), 1);
    assert_eq!(bridge[0]["state"], "sent");
}

#[tokio::test]
async fn a_chat_retry_with_its_idempotency_key_gets_the_same_turn() {
    let world = World::new();
    let gw = world.start(world.options(30));
    let url = format!("http://{}", gw.gateway);
    let (status, first) = post_chat(&url, "k-1", "s", "soak chat tool").await.unwrap();
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, again) = post_chat(&url, "k-1", "s", "soak chat tool").await.unwrap();
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(first["reply"], again["reply"]);
    assert_eq!(first["trace_id"], again["trace_id"]);
    assert_eq!(world.requests("soak chat tool", 0), 1);
    assert_eq!(world.requests("soak chat tool", 1), 1);
    // The same key for another message is refused; bad keys are refused.
    let (status, body) = post_chat(&url, "k-1", "s", "something else").await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = post_chat(&url, "k-1", "other", "soak chat tool")
        .await
        .unwrap();
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "one key, one session: {body}"
    );
    let (status, _) = post_chat(&url, "bad key", "s", "x").await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Without a key, every request is a new turn (as before).
    let res = client()
        .post(gw.gw_url("/chat"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .json(&serde_json::json!({"message": "soak unkeyed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn status_shows_the_store_size_and_its_oldest_record() {
    let world = World::new();
    let gw = world.start(world.options(30));
    let url = format!("http://{}", gw.gateway);
    assert_eq!(
        post_whatsapp(&url, OWNERS[0], "wamid.st", "soak status")
            .await
            .unwrap(),
        StatusCode::OK
    );
    let body = gw.get_json("/api/v1/status").await;
    assert!(body["store"]["size_bytes"].as_u64().unwrap() > 0, "{body}");
    let oldest = body["store"]["oldest_record"].as_str().unwrap();
    assert!(
        kafclaw_actors::clock::parse_rfc3339(oldest).is_some(),
        "{oldest}"
    );
    // Without a gateway, `kafclaw status` reads the store itself.
    let mut gw = gw;
    gw.signal("TERM");
    gw.wait_exit(Duration::from_secs(15));
    let (code, out, err) =
        crate::harness::run(gw.home.path(), &Default::default(), &["status", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("MiB on disk, oldest record 20") && out.contains("retention 30 days"),
        "{out}"
    );
}

/// Kinds of the newest timeline events.
async fn timeline_kinds(gw: &Gateway) -> Vec<String> {
    let events: serde_json::Value = client()
        .get(gw.url("/api/v1/timeline?limit=1000"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str().map(str::to_string))
        .collect()
}

/// The state of the channel's newest reply (`""` when it has none).
async fn first_state(gw: &Gateway, channel: &str) -> String {
    outbox(gw, channel)
        .await
        .first()
        .and_then(|r| r["state"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[test]
fn the_example_bridge_shows_a_repeated_reply_once() {
    // deploy/bridge-example/bridge.py de-duplicates on Idempotency-Key: the gateway repeats a
    // reply (re-signed, same key) when a crash lost the bridge's 200.
    let script = r#"
import sys, threading, time, urllib.request, http.server
sys.path.insert(0, sys.argv[1])
import bridge
got = []
bridge.Outbound.secret = b"s"
bridge.Outbound.on_reply = staticmethod(got.append)
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), bridge.Outbound)
threading.Thread(target=server.serve_forever, daemon=True).start()
def post(ts, key):
    body = bridge.encode({"message_id": key, "chat_id": "c", "text": "hi"})
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.server_port}/", data=body, method="POST",
        headers={"Content-Type": "application/json", "Idempotency-Key": key,
                 "X-KafClaw-Timestamp": str(ts),
                 "X-KafClaw-Signature": bridge.sign(b"s", str(ts), body)})
    return urllib.request.urlopen(request).status
now = int(time.time())
print(post(now, "kafclaw-7"), post(now + 1, "kafclaw-7"), post(now + 2, "kafclaw-8"), len(got))
"#;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/bridge-example");
    let out = std::process::Command::new("python3")
        .args(["-c", script, dir])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "200 200 200 2");
}
