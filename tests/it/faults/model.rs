//! The model server slow, answering 500, and hanging past `providers.openai.timeout_seconds`:
//! every acknowledged message gets one reply (the model's, or the clean "unavailable" text when
//! the model could not answer), and the gateway stays healthy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use super::{assert_healthy, assert_healthy_and_whole, options, post_messages, Graph};
use crate::harness::{client, Gateway, TOKEN};
use crate::model_server::{turn_step, ModelServer, Recorded, Reply};

/// The text the gateway replies with when the model could not answer.
const UNAVAILABLE: &str = "Sorry, the assistant is unavailable right now";

/// A model that answers `reply to <text>`, except that `fault(text, attempt)` may replace the
/// answer to attempt `attempt` (0-based) of a turn's text.
fn model(fault: impl Fn(&str, usize) -> Option<Reply> + Send + Sync + 'static) -> ModelServer {
    let attempts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    ModelServer::start_with(move |_, request: &Recorded| {
        let (text, _) = turn_step(&request.json())?;
        let attempt = {
            let mut attempts = attempts.lock().unwrap();
            let n = attempts.entry(text.clone()).or_default();
            *n += 1;
            *n - 1
        };
        Some(
            fault(&text, attempt).unwrap_or_else(|| Reply::text(&format!("reply to {text}"), 3, 2)),
        )
    })
}

#[tokio::test]
async fn a_slow_model_within_its_timeout_answers_every_message_once() {
    let model = model(|_, _| {
        Some(Reply::text("slow but sure", 3, 2).with_delay(Duration::from_millis(1500)))
    });
    let graph = Graph::accepting();
    let gw = Gateway::start(
        options(&model, &graph).env("KAFCLAW_PROVIDERS_OPENAI_TIMEOUT_SECONDS", "10"),
    );
    let ids = post_messages(&gw, "slow", 6).await;
    graph.wait_answered(&ids, Duration::from_secs(30)).await;
    let texts = graph.answered_once(&ids);
    assert!(texts.iter().all(|t| t == "slow but sure"), "{texts:?}");
    assert_eq!(model.seen().len(), ids.len(), "one model call per message");
    assert_healthy_and_whole(gw).await;
}

#[tokio::test]
async fn a_model_answering_500_is_retried_and_a_dead_one_gets_the_unavailable_reply_once() {
    // `flaky` fails once, then answers; `down` fails on every attempt.
    let model = model(|text, attempt| {
        let failing = text.starts_with("down") || (text.starts_with("flaky") && attempt == 0);
        failing.then(|| Reply::error(500, "scripted failure"))
    });
    let graph = Graph::accepting();
    let gw =
        Gateway::start(options(&model, &graph).env("KAFCLAW_PROVIDERS_OPENAI_MAX_RETRIES", "1"));
    let mut ids = post_messages(&gw, "flaky", 3).await;
    ids.extend(post_messages(&gw, "down", 2).await);
    graph.wait_answered(&ids, Duration::from_secs(30)).await;
    let texts = graph.answered_once(&ids);
    for (id, text) in ids.iter().zip(&texts) {
        if id.contains(".flaky.") {
            assert!(text.starts_with("reply to flaky"), "{id}: {text}");
        } else {
            assert!(text.starts_with(UNAVAILABLE), "{id}: {text}");
            assert!(
                !text.contains("127.0.0.1") && !text.contains("/v1"),
                "{text}"
            );
        }
    }
    // One attempt plus one retry per message, never more.
    assert_eq!(model.seen().len(), 2 * ids.len());
    // The model is back: a new message is answered by it.
    let again = post_messages(&gw, "flaky-again", 1).await;
    graph.wait_answered(&again, Duration::from_secs(15)).await;
    assert!(graph.answered_once(&again)[0].starts_with("reply to flaky-again"));
    assert_healthy_and_whole(gw).await;
}

#[tokio::test]
async fn a_model_hanging_past_its_timeout_gets_one_reply_and_frees_the_gateway() {
    // The first attempt of every `hang` turn never answers within the timeout.
    let model = model(|text, attempt| {
        (text.starts_with("hang") && attempt == 0)
            .then(|| Reply::text("too late", 3, 2).with_delay(Duration::from_secs(60)))
    });
    let graph = Graph::accepting();
    let gw = Gateway::start(
        options(&model, &graph)
            .env("KAFCLAW_PROVIDERS_OPENAI_TIMEOUT_SECONDS", "3")
            .env("KAFCLAW_PROVIDERS_OPENAI_MAX_RETRIES", "2"),
    );
    let ids = post_messages(&gw, "hang", 3).await;
    // `/chat` meanwhile: the hanging model is a clean upstream error, not a stuck request.
    let res = client()
        .post(gw.gw_url("/chat"))
        .bearer_auth(TOKEN)
        .json(&json!({"message": "hang chat", "session": "c"}))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body = res.text().await.unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        !body.contains("127.0.0.1") && !body.contains("/v1"),
        "{body}"
    );
    graph.wait_answered(&ids, Duration::from_secs(30)).await;
    let texts = graph.answered_once(&ids);
    assert!(
        texts.iter().all(|t| t.starts_with(UNAVAILABLE)),
        "{texts:?}"
    );
    assert!(
        texts.iter().all(|t| !t.contains("too late")),
        "a timed-out answer is never used: {texts:?}"
    );
    // A timeout is not retried (the model may still be working on it): one call per turn.
    assert_eq!(model.seen().len(), ids.len() + 1);
    // Nothing is stuck behind the hung calls: the next message is answered at once.
    assert_healthy(&gw).await;
    let next = post_messages(&gw, "after", 1).await;
    graph.wait_answered(&next, Duration::from_secs(15)).await;
    assert_eq!(graph.answered_once(&next), ["reply to after 0"]);
    assert_healthy_and_whole(gw).await;
}
