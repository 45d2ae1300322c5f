//! Dispatcher tests against a real local HTTP server standing in for the Graph API and for a
//! bridge. The dispatcher's clock is a counter the tests move, so `Retry-After` and backoff are
//! checked exactly without sleeping; waiting for a delivery polls the outbox with a deadline.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::*;
use crate::audit::{AppendRecord, AuditError, AuditReceipt};
use crate::channel::access::ChannelPolicy;
use crate::channel::bridge::{sign_bridge, verify_bridge, ReplayCache};
use crate::channel::outbox::{Backoff, OutboundMessage, Outbox, OutboxRecord, OutboxState};
use crate::channel::pairing::PairingSettings;
use crate::channel::whatsapp::build_text_messages;
use crate::channel::{
    ChannelConfig, ChannelKind, ChannelLinks, ChannelState, DeliverToAgent, DeliveryRefused,
    EnqueueReply, SetChannelState,
};
use crate::provider::test_server::{Reply, TestServer};
use crate::store::StoreDb;
use crate::supervisor::{InjectPanic, RestartPolicy, SupervisionEvent, SupervisorBuilder};

/// The bridge's clock (seconds); replies are enqueued at `NOW_S * 1000`.
const NOW_S: i64 = 1_700_000_000;
const T0: i64 = NOW_S * 1000;
const TOKEN: &str = "EAAGtest-access-token-do-not-leak-0123456789";
const SECRET: &str = "bridge-secret-do-not-leak-abcdef0123456789";
const PNID: &str = "109876543210";

struct NullAgent;
impl Actor for NullAgent {
    type Context = Context<Self>;
}
impl Handler<DeliverToAgent> for NullAgent {
    type Result = Result<(), DeliveryRefused>;
    fn handle(&mut self, _: DeliverToAgent, _: &mut Context<Self>) -> Self::Result {
        Ok(())
    }
}

struct NullAudit;
impl Actor for NullAudit {
    type Context = Context<Self>;
}
impl Handler<AppendRecord> for NullAudit {
    type Result = Result<AuditReceipt, AuditError>;
    fn handle(&mut self, _: AppendRecord, _: &mut Context<Self>) -> Self::Result {
        Ok(AuditReceipt {
            seq: 1,
            hash: String::new(),
        })
    }
}

fn links() -> ChannelLinks {
    ChannelLinks {
        agent: NullAgent.start().recipient(),
        audit: NullAudit.start().recipient(),
        unknown_senders: None,
        drain: Default::default(),
        media: None,
    }
}

fn config(kind: ChannelKind) -> ChannelConfig {
    ChannelConfig {
        name: kind.as_str().into(),
        kind,
        account: "acct".into(),
        policy: ChannelPolicy::default(),
        pairing: PairingSettings::default(),
        backoff: Backoff::default(),
        resend_after: std::time::Duration::from_secs(30),
        messages: Default::default(),
        backlog: Default::default(),
    }
}

/// Polls below the test's control: only [`DispatchNow`] and the start-up poll take replies.
fn manual(max_in_flight: usize) -> DispatchSettings {
    DispatchSettings {
        poll_interval: Duration::from_secs(3600),
        max_in_flight,
    }
}

fn whatsapp(server: &TestServer) -> DispatchTarget {
    DispatchTarget::WhatsApp {
        graph_base: server.base_url().trim_end_matches("/v1").to_string(),
        api_version: "v21.0".into(),
        phone_number_id: PNID.into(),
        access_token: TOKEN.into(),
    }
}

fn bridge_target(server: &TestServer) -> DispatchTarget {
    DispatchTarget::Bridge {
        outbound_url: format!(
            "{}/hooks/outbound",
            server.base_url().trim_end_matches("/v1")
        ),
        secret: SECRET.into(),
    }
}

/// A channel bridge over a temporary store, its outbox (to read records back) and the
/// dispatcher's clock.
struct Harness {
    bridge: Slot<ChannelBridge>,
    outbox: Outbox,
    now_ms: Arc<AtomicI64>,
}

impl Harness {
    fn new(kind: ChannelKind) -> Self {
        let db = StoreDb::temporary().unwrap();
        let bridge = ChannelBridge::with_clock(config(kind), &db, links(), || NOW_S)
            .unwrap()
            .start();
        Self {
            bridge: Slot::with(bridge),
            outbox: Outbox::new(&db, Backoff::default()).unwrap(),
            now_ms: Arc::new(AtomicI64::new(T0)),
        }
    }

    fn clock(&self) -> MillisClock {
        let now = Arc::clone(&self.now_ms);
        Arc::new(move || now.load(Ordering::SeqCst))
    }

    fn set_now(&self, ms: i64) {
        self.now_ms.store(ms, Ordering::SeqCst);
    }

    fn dispatcher(&self, target: DispatchTarget, settings: DispatchSettings) -> Addr<Dispatcher> {
        Dispatcher::new(target, self.bridge.clone(), http_client().unwrap())
            .unwrap()
            .with_settings(settings)
            .with_clock(self.clock())
            .start()
    }

    async fn enqueue(&self, to: &str, text: &str, reply_to: Option<&str>) -> u64 {
        self.bridge
            .addr()
            .unwrap()
            .send(EnqueueReply {
                message: OutboundMessage {
                    to: to.into(),
                    text: text.into(),
                    reply_to: reply_to.map(str::to_string),
                    session: None,
                },
            })
            .await
            .unwrap()
            .unwrap()
            .id()
    }

    /// Waits (deadline 10 s) until reply `id` satisfies `done`.
    async fn wait(&self, id: u64, done: impl Fn(&OutboxRecord) -> bool) -> OutboxRecord {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let record = self.outbox.get(id).unwrap().unwrap();
            if done(&record) {
                return record;
            }
            assert!(
                Instant::now() < deadline,
                "reply {id} never reached the expected state: {record:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until attempt `attempts` on `id` has its answer recorded.
    async fn attempted(&self, id: u64, attempts: u32) -> OutboxRecord {
        self.wait(id, |r| {
            r.attempts >= attempts && r.state != OutboxState::Sending
        })
        .await
    }
}

async fn dispatch_now(dispatcher: &Addr<Dispatcher>) -> usize {
    dispatcher.send(DispatchNow).await.unwrap().unwrap()
}

/// Asks until one reply is started: a reply whose attempt was just recorded stays excluded
/// until the dispatcher has handled the end of that attempt, which may come a moment later.
async fn dispatch_one(dispatcher: &Addr<Dispatcher>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match dispatch_now(dispatcher).await {
            0 if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            started => return assert_eq!(started, 1),
        }
    }
}

/// The Graph bodies of reply `id` as the dispatcher sends them: each part carries its tag in
/// `biz_opaque_callback_data`.
fn tagged(id: u64, mut parts: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    for (part, body) in parts.iter_mut().enumerate() {
        body["biz_opaque_callback_data"] =
            serde_json::Value::from(crate::channel::outbox::reply_tag(id, part as u32));
    }
    parts
}

fn graph_ok() -> Reply {
    Reply::json(
        200,
        serde_json::json!({
            "messaging_product": "whatsapp",
            "contacts": [{"input": "4915100000001", "wa_id": "4915100000001"}],
            "messages": [{"id": "wamid.OUT"}]
        }),
    )
}

#[actix_rt::test]
async fn whatsapp_reply_is_posted_with_the_bearer_token_and_the_exact_body() {
    let server = TestServer::repeating(graph_ok()).await;
    let h = Harness::new(ChannelKind::Whatsapp);
    // The real timer this time: no DispatchNow.
    let _dispatcher = h.dispatcher(
        whatsapp(&server),
        DispatchSettings {
            poll_interval: Duration::from_millis(20),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        },
    );
    let id = h
        .enqueue("+49 151 00000001", "Hallo, grüß dich", Some("wamid.IN1"))
        .await;

    let record = h.wait(id, |r| r.state.is_finished()).await;
    assert_eq!((record.state, record.attempts), (OutboxState::Sent, 1));
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.target, format!("/v21.0/{PNID}/messages"));
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.json(),
        serde_json::json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "4915100000001",
            "type": "text",
            "text": {"body": "Hallo, grüß dich", "preview_url": false},
            "context": {"message_id": "wamid.IN1"},
            "biz_opaque_callback_data": format!("kafclaw-{id}")
        })
    ); // The id Meta gave the message finds the reply (a user's reply to it quotes our text).
    let name = config(ChannelKind::Whatsapp).name;
    let ours = h.outbox.sent_as(&name, "wamid.OUT").unwrap();
    assert_eq!(ours.map(|r| r.id), Some(id));
}

#[actix_rt::test]
async fn long_text_is_sent_in_parts_with_the_reply_context_on_the_first() {
    let server = TestServer::repeating(graph_ok()).await;
    let h = Harness::new(ChannelKind::Whatsapp);
    let dispatcher = h.dispatcher(whatsapp(&server), manual(4));
    let text: String = "ä".repeat(4096) + &"b".repeat(4096) + "tail";
    let id = h.enqueue("4915100000001", &text, Some("wamid.IN2")).await;
    dispatch_now(&dispatcher).await;

    let record = h.wait(id, |r| r.state.is_finished()).await;
    assert_eq!((record.state, record.attempts), (OutboxState::Sent, 1));
    let expected = tagged(
        id,
        build_text_messages("4915100000001", &text, Some("wamid.IN2")),
    );
    let sent: Vec<_> = server.requests().iter().map(|r| r.json()).collect();
    assert_eq!(sent, expected, "three parts, in order, each with its tag");
    assert_eq!(sent[0]["text"]["body"], "ä".repeat(4096));
    assert_eq!(sent[2]["text"]["body"], "tail");
    assert!(sent[0].get("context").is_some());
    assert!(sent[1].get("context").is_none() && sent[2].get("context").is_none());
}

#[actix_rt::test]
async fn too_many_requests_is_retried_no_earlier_than_retry_after() {
    let server = TestServer::scripted(vec![
        Reply::error(429, "slow down").with_header("Retry-After", "1"),
        graph_ok(),
    ])
    .await;
    let h = Harness::new(ChannelKind::Whatsapp);
    let dispatcher = h.dispatcher(whatsapp(&server), manual(4));
    let id = h.enqueue("4915100000001", "hi", None).await;
    dispatch_now(&dispatcher).await;

    let record = h.attempted(id, 1).await;
    assert_eq!(record.state, OutboxState::Queued);
    assert_eq!(record.last_error.as_deref(), Some("http status 429"));
    // Backoff after one failure is at most 1 s; Retry-After says exactly 1 s.
    assert_eq!(record.next_attempt_at, T0 + 1000);

    h.set_now(T0 + 999);
    assert_eq!(
        dispatch_now(&dispatcher).await,
        0,
        "not due before Retry-After"
    );
    assert_eq!(server.request_count(), 1);

    h.set_now(T0 + 1000);
    dispatch_one(&dispatcher).await;
    let record = h.wait(id, |r| r.state.is_finished()).await;
    assert_eq!((record.state, record.attempts), (OutboxState::Sent, 2));
    assert_eq!(server.request_count(), 2);
}

#[actix_rt::test]
async fn server_error_is_retried_after_the_backoff_then_succeeds() {
    let server = TestServer::scripted(vec![Reply::error(500, "oops"), graph_ok()]).await;
    let h = Harness::new(ChannelKind::Whatsapp);
    let dispatcher = h.dispatcher(whatsapp(&server), manual(4));
    let id = h.enqueue("4915100000001", "hi", None).await;
    dispatch_now(&dispatcher).await;

    let record = h.attempted(id, 1).await;
    assert_eq!(record.state, OutboxState::Queued);
    assert_eq!(record.last_error.as_deref(), Some("http status 500"));
    let due = record.next_attempt_at;
    assert!(
        (T0 + 500..=T0 + 1000).contains(&due),
        "backoff with jitter: {due}"
    );

    h.set_now(due - 1);
    assert_eq!(dispatch_now(&dispatcher).await, 0);
    h.set_now(due);
    dispatch_one(&dispatcher).await;
    let record = h.wait(id, |r| r.state.is_finished()).await;
    assert_eq!((record.state, record.attempts), (OutboxState::Sent, 2));
}

#[actix_rt::test]
async fn bad_request_is_terminal_with_its_reason_and_never_retried() {
    let server = TestServer::repeating(Reply::json(
        400,
        serde_json::json!({"error": {
            "message": "(#100) Invalid parameter",
            "type": "OAuthException",
            "code": 100,
            "error_subcode": 2494010,
            "fbtrace_id": "Az"
        }}),
    ))
    .await;
    let h = Harness::new(ChannelKind::Whatsapp);
    let dispatcher = h.dispatcher(whatsapp(&server), manual(4));
    let id = h.enqueue("4915100000001", "hi", None).await;
    dispatch_now(&dispatcher).await;

    let record = h.wait(id, |r| r.state.is_finished()).await;
    assert_eq!(
        record.state,
        OutboxState::Failed {
            status: Some(400),
            code: Some(100),
            reason: "http status 400 (graph error code 100, subcode 2494010)".into()
        }
    );
    assert_eq!(record.attempts, 1);
    h.set_now(T0 + 24 * 3600 * 1000);
    assert_eq!(dispatch_now(&dispatcher).await, 0);
    assert_eq!(server.request_count(), 1, "never retried");
}

#[actix_rt::test]
async fn a_retry_resumes_at_the_part_that_failed() {
    let server = TestServer::scripted(vec![
        graph_ok(),
        Reply::error(503, "busy"),
        graph_ok(),
        graph_ok(),
    ])
    .await;
    let h = Harness::new(ChannelKind::Whatsapp);
    let dispatcher = h.dispatcher(whatsapp(&server), manual(4));
    let text = "x".repeat(2 * 4096 + 1);
    let id = h.enqueue("4915100000001", &text, Some("wamid.IN3")).await;
    dispatch_now(&dispatcher).await;

    let record = h.attempted(id, 1).await;
    assert_eq!(
        record.last_error.as_deref(),
        Some("part 2 of 3: http status 503")
    );
    h.set_now(record.next_attempt_at);
    dispatch_one(&dispatcher).await;
    let record = h.wait(id, |r| r.state.is_finished()).await;
    assert_eq!((record.state, record.attempts), (OutboxState::Sent, 2));

    let parts = tagged(
        id,
        build_text_messages("4915100000001", &text, Some("wamid.IN3")),
    );
    let sent: Vec<_> = server.requests().iter().map(|r| r.json()).collect();
    assert_eq!(
        sent,
        [&parts[0], &parts[1], &parts[1], &parts[2]].map(Clone::clone),
        "the first part is not sent again"
    );
}

#[actix_rt::test]
async fn bridge_reply_is_signed_so_that_it_verifies() {
    let server = TestServer::repeating(Reply::json(200, serde_json::json!({"ok": true}))).await;
    let h = Harness::new(ChannelKind::Bridge);
    let dispatcher = h.dispatcher(bridge_target(&server), manual(4));
    let first = h.enqueue("C0123", "Hallo 👋", Some("slack-1")).await;
    let second = h.enqueue("C0123", "no context", None).await;
    dispatch_now(&dispatcher).await;
    h.wait(first, |r| r.state == OutboxState::Sent).await;
    h.wait(second, |r| r.state == OutboxState::Sent).await;

    let mut requests = server.requests();
    assert_eq!(requests.len(), 2);
    if requests[0].json()["message_id"] != format!("kafclaw-{first}") {
        requests.swap(0, 1);
    }
    let mut cache = ReplayCache::default();
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.target, "/hooks/outbound");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("x-kafclaw-timestamp"), Some("1700000000"));
        let verified = verify_bridge(
            SECRET.as_bytes(),
            request.header("x-kafclaw-timestamp"),
            request.header("x-kafclaw-signature"),
            &request.body,
            NOW_S + 10,
            &mut cache,
        );
        assert_eq!(verified, Ok(()));
    }
    assert_eq!(
        String::from_utf8(requests[0].body.clone()).unwrap(),
        format!(
            r#"{{"message_id":"kafclaw-{first}","chat_id":"C0123","text":"Hallo 👋","reply_to":"slack-1"}}"#
        ),
        "exact bytes"
    );
    assert_eq!(
        requests[1].json(),
        serde_json::json!({
            "message_id": format!("kafclaw-{second}"),
            "chat_id": "C0123",
            "text": "no context"
        }),
        "reply_to omitted when there is none"
    );
}

#[actix_rt::test]
async fn tokens_secrets_and_url_paths_never_appear_in_reasons_errors_or_debug() {
    // A Graph API that echoes the token back in its error answer.
    let server = TestServer::repeating(
        Reply::json(
            401,
            serde_json::json!({"error": {"message": format!("bad token {TOKEN}"), "code": 190}}),
        )
        .with_header("X-Echo", TOKEN),
    )
    .await;
    let h = Harness::new(ChannelKind::Whatsapp);
    let dispatcher = h.dispatcher(whatsapp(&server), manual(4));
    let id = h.enqueue("4915100000001", "hi", None).await;
    dispatch_now(&dispatcher).await;
    let record = h.wait(id, |r| r.state.is_finished()).await;
    let stored = format!("{record:?}");
    assert!(
        stored.contains("http status 401 (graph error code 190)"),
        "{stored}"
    );
    assert!(!stored.contains(TOKEN), "{stored}");

    // A bridge whose outbound URL carries a secret path, on a port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let secret_path = "/services/T000/B000/hookSECRETpath";
    let target = DispatchTarget::Bridge {
        outbound_url: format!("http://127.0.0.1:{port}{secret_path}?token=QUERYSECRET"),
        secret: SECRET.into(),
    };
    let shown = format!("{target:?}");
    assert_eq!(
        shown,
        format!(
            "Bridge {{ outbound_url: \"http://127.0.0.1:{port}/…\", secret: SecretValue(..) }}"
        )
    );
    let b = Harness::new(ChannelKind::Bridge);
    let dispatcher = b.dispatcher(target, manual(4));
    let id = b.enqueue("C1", "hi", None).await;
    dispatch_now(&dispatcher).await;
    let record = b.attempted(id, 1).await;
    assert_eq!(
        record.state,
        OutboxState::Queued,
        "network errors are transient"
    );
    let reason = record.last_error.clone().unwrap();
    assert!(
        reason.starts_with("network error: connection failed"),
        "{reason}"
    );
    for leak in [SECRET, "hookSECRETpath", "QUERYSECRET"] {
        assert!(
            !format!("{record:?}").contains(leak),
            "{leak} in {record:?}"
        );
    }

    let whatsapp_shown = format!("{:?}", whatsapp(&server));
    assert!(!whatsapp_shown.contains(TOKEN), "{whatsapp_shown}");
    assert!(whatsapp_shown.contains("SecretValue(..)"));

    let bad_token = format!("{TOKEN}\n");
    let error = Dispatcher::new(
        DispatchTarget::WhatsApp {
            graph_base: "https://graph.facebook.com".into(),
            api_version: "v21.0".into(),
            phone_number_id: PNID.into(),
            access_token: bad_token.as_str().into(),
        },
        Slot::default(),
        http_client().unwrap(),
    )
    .err()
    .unwrap();
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(!shown.contains(TOKEN), "{shown}");
    }
    assert_eq!(
        error.to_string(),
        "invalid dispatch target: access token is empty or cannot be sent in a header"
    );
}

#[test]
fn targets_are_validated_before_anything_is_sent() {
    fn check(target: DispatchTarget, expected: &str) {
        let built = Dispatcher::new(target, Slot::default(), http_client().unwrap());
        match built {
            Ok(_) => assert_eq!("ok", expected),
            Err(error) => assert_eq!(error.to_string(), expected),
        }
    }
    let wa = |graph_base: &str, api_version: &str, phone_number_id: &str, token: &str| {
        DispatchTarget::WhatsApp {
            graph_base: graph_base.into(),
            api_version: api_version.into(),
            phone_number_id: phone_number_id.into(),
            access_token: token.into(),
        }
    };
    let br = |url: &str, secret: &str| DispatchTarget::Bridge {
        outbound_url: url.into(),
        secret: secret.into(),
    };
    check(
        wa("https://graph.facebook.com/", "v21.0", PNID, TOKEN),
        "ok",
    );
    check(
        wa("ftp://graph.facebook.com", "v21.0", PNID, TOKEN),
        "invalid dispatch target: graph_base is not an http(s) url",
    );
    check(
        wa("https://graph.facebook.com", "v21.0", "1/../2", TOKEN),
        "invalid dispatch target: phone_number_id is not a plain id",
    );
    check(
        wa("https://graph.facebook.com", "v21.0?x", PNID, TOKEN),
        "invalid dispatch target: api_version is not a version",
    );
    check(
        wa("https://graph.facebook.com", "v21.0", PNID, ""),
        "invalid dispatch target: access token is empty or cannot be sent in a header",
    );
    check(br("http://127.0.0.1:18800/", SECRET), "ok");
    check(
        br("not a url", SECRET),
        "invalid dispatch target: outbound_url is not an http(s) url",
    );
    check(
        br("http://127.0.0.1:18800/", ""),
        "invalid dispatch target: bridge secret is empty",
    );
}

#[actix_rt::test]
async fn in_flight_replies_are_bounded_and_the_backlog_drains() {
    let server = TestServer::repeating(graph_ok().with_delay(Duration::from_millis(300))).await;
    let h = Harness::new(ChannelKind::Whatsapp);
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(
            h.enqueue("4915100000001", &format!("reply {n}"), None)
                .await,
        );
    }
    // The start-up poll takes two; while both are in flight, nothing more is taken.
    let dispatcher = h.dispatcher(whatsapp(&server), manual(2));
    assert_eq!(dispatch_now(&dispatcher).await, 0);
    assert!(server.request_count() <= 2);
    // No DispatchNow and no timer tick: completions alone pull the rest.
    for id in ids {
        let record = h.wait(id, |r| r.state.is_finished()).await;
        assert_eq!(record.state, OutboxState::Sent);
    }
    assert_eq!(server.request_count(), 6);
}

#[actix_rt::test]
async fn a_quarantined_channel_sends_nothing_until_released() {
    let server = TestServer::repeating(graph_ok()).await;
    let h = Harness::new(ChannelKind::Whatsapp);
    let set_state = |state: ChannelState| SetChannelState {
        state,
        reason: None,
        actor: "admin".into(),
    };
    let bridge = h.bridge.addr().unwrap();
    bridge
        .send(set_state(ChannelState::Quarantined))
        .await
        .unwrap()
        .unwrap();
    let dispatcher = h.dispatcher(whatsapp(&server), manual(4));
    let id = h.enqueue("4915100000001", "held back", None).await;
    assert_eq!(dispatch_now(&dispatcher).await, 0);
    assert_eq!(server.request_count(), 0);

    bridge
        .send(set_state(ChannelState::Running))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dispatch_now(&dispatcher).await, 1);
    let record = h.wait(id, |r| r.state.is_finished()).await;
    assert_eq!((record.state, record.attempts), (OutboxState::Sent, 1));
}

#[actix_rt::test]
async fn supervised_dispatcher_reaches_a_restarted_bridge_and_survives_its_own_panic() {
    let server = TestServer::repeating(graph_ok()).await;
    let db = StoreDb::temporary().unwrap();
    let outbox = Outbox::new(&db, Backoff::default()).unwrap();
    let mut builder = SupervisorBuilder::new(crate::supervisor::SupervisorSettings {
        max_restarts: 5,
        window_seconds: 60,
        initial_backoff_ms: 5,
        max_backoff_ms: 50,
    });
    let bridge_db = db.clone();
    let bridge_links = links();
    let bridge = builder.child(
        "channel:whatsapp",
        RestartPolicy::Quarantine,
        Box::new(move || {
            ChannelBridge::new(
                config(ChannelKind::Whatsapp),
                &bridge_db,
                bridge_links.clone(),
            )
            .map_err(|e| e.to_string())
        }),
    );
    let target = whatsapp(&server);
    let bridge_slot = bridge.clone();
    let dispatcher = builder.child(
        "dispatch:whatsapp",
        RestartPolicy::Quarantine,
        Box::new(move || {
            let http = http_client().map_err(|e| e.to_string())?;
            Dispatcher::new(target.clone(), bridge_slot.clone(), http)
                .map(|d| d.with_settings(manual(4)))
                .map_err(|e| e.to_string())
        }),
    );
    let (_supervisor, mut events) = builder.start().unwrap();
    async fn restarted(
        events: &mut tokio::sync::mpsc::UnboundedReceiver<SupervisionEvent>,
        name: &str,
    ) {
        loop {
            let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
                .await
                .unwrap()
                .unwrap();
            if matches!(&event, SupervisionEvent::ChildRestarted { name: n, .. } if n == name) {
                return;
            }
        }
    }

    bridge.addr().unwrap().do_send(InjectPanic("bridge".into()));
    restarted(&mut events, "channel:whatsapp").await;
    dispatcher
        .addr()
        .unwrap()
        .do_send(InjectPanic("dispatcher".into()));
    restarted(&mut events, "dispatch:whatsapp").await;

    let id = bridge
        .addr()
        .unwrap()
        .send(EnqueueReply {
            message: OutboundMessage {
                to: "4915100000001".into(),
                text: "after the restarts".into(),
                reply_to: None,
                session: None,
            },
        })
        .await
        .unwrap()
        .unwrap()
        .id();
    let fresh = dispatcher.addr().unwrap();
    assert!(matches!(fresh.send(Ping).await, Ok(Pong)));
    fresh.send(DispatchNow).await.unwrap().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while outbox.get(id).unwrap().unwrap().state != OutboxState::Sent {
        assert!(Instant::now() < deadline, "never delivered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(server.request_count(), 1);
}

/// Known answers computed with `deploy/bridge-example/bridge.py` (`sign`, `encode`), so the
/// example and the gateway agree byte for byte in both directions.
#[test]
fn example_bridge_signatures_match() {
    let secret = b"kafclaw-example-secret";
    // Inbound, as bridge.py sends it (compact JSON, UTF-8).
    let inbound = r#"{"message_id":"console-1700000000-1","sender_id":"alice","chat_id":"console","text":"grüß dich, KafClaw"}"#;
    let python = "v1=938ee8a33719e717fff1b2df0799ab5992c8ebed0327497d6eb5aeea531c0d17";
    let mut cache = ReplayCache::default();
    assert_eq!(
        verify_bridge(
            secret,
            Some("1700000000"),
            Some(python),
            inbound.as_bytes(),
            1_700_000_100,
            &mut cache
        ),
        Ok(())
    );
    // Outbound, as the dispatcher sends it; bridge.py's `sign` gives the same value.
    let outbound = bridge_body(&OutboxRecord {
        id: 7,
        channel: "console".into(),
        message: OutboundMessage {
            to: "console".into(),
            text: "hi".into(),
            reply_to: Some("console-1700000000-1".into()),
            session: Some("s".into()),
        },
        state: OutboxState::Queued,
        attempts: 0,
        next_attempt_at: 0,
        last_error: None,
        created_at: 0,
        updated_at: 0,
        parts: 1,
        parts_accepted: 0,
    });
    let body = serde_json::to_vec(&outbound).unwrap();
    assert_eq!(
        String::from_utf8(body.clone()).unwrap(),
        r#"{"message_id":"kafclaw-7","chat_id":"console","text":"hi","reply_to":"console-1700000000-1"}"#
    );
    assert_eq!(
        sign_bridge(secret, 1_700_000_000, &body),
        "v1=4e0fb99d622ab1ea899456244c0d4562c667a1adf05ba496a9bbd11c41df082a"
    );
}

#[actix_rt::test]
async fn finish_sends_waits_for_what_is_in_flight_and_what_was_due_before_it() {
    let server = TestServer::repeating(graph_ok().with_delay(Duration::from_millis(300))).await;
    let h = Harness::new(ChannelKind::Whatsapp);
    let dispatcher = h.dispatcher(whatsapp(&server), manual(2));
    // Idle: answered at once.
    tokio::time::timeout(Duration::from_secs(2), dispatcher.send(FinishSends))
        .await
        .expect("an idle dispatcher answers at once")
        .unwrap();

    let h = Harness::new(ChannelKind::Whatsapp);
    let dispatcher = h.dispatcher(whatsapp(&server), manual(2));
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(h.enqueue("4915100000001", &format!("r{n}"), None).await);
    }
    // As the router does after a turn: DispatchNow, then (at the stop) FinishSends.
    dispatcher.do_send(DispatchNow);
    dispatcher.send(FinishSends).await.unwrap();
    // Every reply due before FinishSends went out, the backlog beyond the slots included.
    for id in ids {
        assert_eq!(h.outbox.get(id).unwrap().unwrap().state, OutboxState::Sent);
    }
}

#[actix_rt::test]
async fn after_finish_sends_the_timer_starts_nothing() {
    let server = TestServer::repeating(graph_ok()).await;
    let h = Harness::new(ChannelKind::Whatsapp);
    let settings = DispatchSettings {
        poll_interval: Duration::from_millis(20),
        max_in_flight: 2,
    };
    let dispatcher = h.dispatcher(whatsapp(&server), settings);
    dispatcher.send(FinishSends).await.unwrap();
    let id = h.enqueue("4915100000001", "late", None).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        h.outbox.get(id).unwrap().unwrap().state,
        OutboxState::Queued,
        "it waits in the outbox for the next start"
    );
    assert_eq!(server.request_count(), 0);
}
