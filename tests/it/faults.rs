//! Injected faults (issue 17), on the real binary: the model server slow, failing and hanging;
//! the Graph API answering 429 with `Retry-After`, 500, or never; the disk under the state
//! directory full. Every test ends with the gateway healthy (`/healthz` 200 on both ports,
//! `/api/v1/status` ok) and nothing lost: every acknowledged message answered exactly once,
//! and the audit chain verifies (`kafclaw audit verify`).
//!
//! The world is the crash tests' one (`exactly_once/fixture.rs`): WhatsApp with owners only,
//! replies to a Graph stand-in. The Graph stand-in here answers by a plan per reply and
//! records when each attempt arrived and what it was answered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::exactly_once::fixture::{self, eventually, post_whatsapp, OWNERS};
use crate::harness::{client, Gateway, Options};
use crate::model_server::{ModelServer, Recorded, Reply};

mod backlog;
mod disk;
mod graph;
mod model;

/// One send the Graph stand-in received.
#[derive(Clone, Debug)]
struct Attempt {
    /// The inbound message it answers (`context.message_id`).
    reply_to: String,
    /// The reply's id (`biz_opaque_callback_data`): the same on every attempt of one reply.
    tag: String,
    /// The reply text.
    text: String,
    /// When it arrived.
    at: Instant,
    /// The status it was answered with.
    status: u16,
}

/// How the Graph stand-in answers attempt `n` (0-based) of one reply.
type Plan = dyn Fn(usize) -> Reply + Send + Sync;

/// The Graph API stand-in: answers each reply's attempts by its plan (200 with a message id
/// when the plan says so) and records every send.
struct Graph {
    server: ModelServer,
    sends: Arc<Mutex<Vec<Attempt>>>,
}

impl Graph {
    /// Answers every send 200.
    fn accepting() -> Graph {
        Graph::planned(|_| accepted())
    }

    /// Answers attempt `n` of each reply with `plan(n)`.
    fn planned(plan: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Graph {
        let sends: Arc<Mutex<Vec<Attempt>>> = Arc::default();
        let log = sends.clone();
        let plan: Arc<Plan> = Arc::new(plan);
        let server = ModelServer::start_with(move |_, request: &Recorded| {
            let body = request.json();
            let field = |v: &Value| v.as_str().unwrap_or_default().to_string();
            let tag = field(&body["biz_opaque_callback_data"]);
            let mut log = log.lock().unwrap();
            let attempt = log.iter().filter(|s| s.tag == tag).count();
            let reply = plan(attempt);
            log.push(Attempt {
                reply_to: field(&body["context"]["message_id"]),
                tag,
                text: field(&body["text"]["body"]),
                at: Instant::now(),
                status: reply.status,
            });
            Some(reply)
        });
        Graph { server, sends }
    }

    fn sends(&self) -> Vec<Attempt> {
        self.sends.lock().unwrap().clone()
    }

    /// The texts the stand-in accepted (2xx), by the inbound message they answer.
    fn accepted(&self) -> HashMap<String, Vec<String>> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for send in self.sends() {
            if (200..300).contains(&send.status) {
                out.entry(send.reply_to).or_default().push(send.text);
            }
        }
        out
    }

    /// Waits until every message in `ids` has an accepted reply.
    async fn wait_answered(&self, ids: &[String], limit: Duration) {
        eventually("every message answered", limit, || {
            let accepted = self.accepted();
            ids.iter().all(|id| accepted.contains_key(id))
        })
        .await;
    }

    /// Every message in `ids` has exactly one accepted reply and one reply id over all its
    /// attempts; their texts, in the order of `ids`.
    fn answered_once(&self, ids: &[String]) -> Vec<String> {
        let accepted = self.accepted();
        let mut texts = Vec::new();
        for id in ids {
            let replies = accepted.get(id).cloned().unwrap_or_default();
            assert_eq!(replies.len(), 1, "{id} answered {replies:?}");
            texts.push(replies[0].clone());
        }
        let sends: Vec<Attempt> = self
            .sends()
            .into_iter()
            .filter(|s| ids.contains(&s.reply_to))
            .collect();
        for send in &sends {
            let tags: Vec<&str> = sends
                .iter()
                .filter(|s| s.reply_to == send.reply_to)
                .map(|s| s.tag.as_str())
                .collect();
            assert!(
                tags.iter().all(|t| *t == send.tag),
                "one reply id: {tags:?}"
            );
        }
        texts
    }
}

/// Graph's answer to an accepted send.
fn accepted() -> Reply {
    Reply::json(
        200,
        json!({"messaging_product": "whatsapp", "messages": [{"id": "wamid.out"}]}),
    )
}

/// Gateway options for `model` and `graph` (no bridge traffic; receipts are not needed).
fn options(model: &ModelServer, graph: &Graph) -> Options {
    let receiver = crate::model_server::ModelServer::start(vec![]);
    let options = fixture::options(model, &graph.server, &receiver, 30);
    // The receiver is never written to: its address only fills the bridge's config.
    drop(receiver);
    options
}

/// Posts `count` messages (ids `<prefix>.<i>`, texts `<prefix> <i>`) from the owners at once;
/// every one must be acknowledged 200. Their ids.
async fn post_messages(gw: &Gateway, prefix: &str, count: usize) -> Vec<String> {
    let url = format!("http://{}", gw.gateway);
    let posts: Vec<_> = (0..count)
        .map(|i| {
            let url = url.clone();
            let (id, text) = (format!("wamid.{prefix}.{i}"), format!("{prefix} {i}"));
            tokio::spawn(async move {
                let status = post_whatsapp(&url, OWNERS[i % OWNERS.len()], &id, &text).await;
                (id, status)
            })
        })
        .collect();
    let mut ids = Vec::new();
    for post in posts {
        let (id, status) = post.await.unwrap();
        assert_eq!(status.unwrap(), StatusCode::OK, "{id} not acknowledged");
        ids.push(id);
    }
    ids
}

/// The gateway is healthy: `/healthz` 200 `{"ok":true}` on both ports and `/api/v1/status`
/// says ok.
async fn assert_healthy(gw: &Gateway) {
    for url in [gw.gw_url("/healthz"), gw.url("/healthz")] {
        let res = client().get(&url).send().await.unwrap();
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{url}: {body}");
        assert_eq!(body["ok"], true, "{url}: {body}");
    }
    let status = gw.get_json("/api/v1/status").await;
    assert_eq!(status["ok"], true, "{status}");
}

/// Healthy, then stopped cleanly with an audit chain that verifies.
async fn assert_healthy_and_whole(mut gw: Gateway) {
    assert_healthy(&gw).await;
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(20)).code(), Some(0));
    fixture::verify_audit(gw.home.path());
}
