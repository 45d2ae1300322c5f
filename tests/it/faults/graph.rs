//! The Graph API answering 429 with `Retry-After`, 500, and never: the outbox retries (not
//! before the server's `Retry-After`), every reply keeps its one id, and each message is
//! accepted once.

use std::time::Duration;

use super::{accepted, assert_healthy_and_whole, options, post_messages, Attempt, Graph};
use crate::harness::Gateway;
use crate::model_server::{ModelServer, Reply};

/// The attempts of each reply, in arrival order, by reply id.
fn attempts_by_reply(sends: &[Attempt]) -> Vec<Vec<Attempt>> {
    let mut tags: Vec<&str> = sends.iter().map(|s| s.tag.as_str()).collect();
    tags.sort();
    tags.dedup();
    tags.iter()
        .map(|tag| sends.iter().filter(|s| s.tag == *tag).cloned().collect())
        .collect()
}

fn model() -> ModelServer {
    let model = ModelServer::start(vec![]);
    model.fallback(Reply::text("the answer", 3, 2));
    model
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_no_earlier_and_sent_once() {
    let graph = Graph::planned(|attempt| match attempt {
        0 => Reply::error(429, "rate limited").with_header("Retry-After", "3"),
        _ => accepted(),
    });
    let model = model();
    let gw = Gateway::start(options(&model, &graph));
    let ids = post_messages(&gw, "limited", 3).await;
    graph.wait_answered(&ids, Duration::from_secs(30)).await;
    graph.answered_once(&ids);
    for attempts in attempts_by_reply(&graph.sends()) {
        let statuses: Vec<u16> = attempts.iter().map(|s| s.status).collect();
        assert_eq!(statuses, [429, 200], "{attempts:?}");
        let waited = attempts[1].at - attempts[0].at;
        assert!(
            waited >= Duration::from_secs(3),
            "retried {waited:?} after a Retry-After of 3 s"
        );
    }
    assert_healthy_and_whole(gw).await;
}

#[tokio::test]
async fn a_graph_answering_500_is_retried_with_backoff_and_sent_once() {
    let graph = Graph::planned(|attempt| match attempt {
        0 | 1 => Reply::error(500, "internal"),
        _ => accepted(),
    });
    let model = model();
    let gw = Gateway::start(options(&model, &graph));
    let ids = post_messages(&gw, "graph500", 3).await;
    graph.wait_answered(&ids, Duration::from_secs(30)).await;
    graph.answered_once(&ids);
    for attempts in attempts_by_reply(&graph.sends()) {
        let statuses: Vec<u16> = attempts.iter().map(|s| s.status).collect();
        assert_eq!(statuses, [500, 500, 200], "{attempts:?}");
        // Backoff: at least half the base delay (1 s) between attempts.
        for pair in attempts.windows(2) {
            assert!(
                pair[1].at - pair[0].at >= Duration::from_millis(500),
                "{attempts:?}"
            );
        }
    }
    // Past another backoff: nothing more was sent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(graph.sends().len(), 3 * ids.len());
    assert_healthy_and_whole(gw).await;
}

#[tokio::test]
async fn a_graph_that_never_answers_times_out_and_the_reply_goes_out_once_after() {
    // The first attempt is held open past the dispatcher's 30 s request timeout (its planned
    // answer, a 503, never reaches the gateway).
    let graph = Graph::planned(|attempt| match attempt {
        0 => Reply::error(503, "held").with_delay(Duration::from_secs(120)),
        _ => accepted(),
    });
    let model = model();
    let gw = Gateway::start(options(&model, &graph));
    let ids = post_messages(&gw, "hung", 2).await;
    graph.wait_answered(&ids, Duration::from_secs(60)).await;
    graph.answered_once(&ids);
    for attempts in attempts_by_reply(&graph.sends()) {
        assert_eq!(attempts.len(), 2, "{attempts:?}");
        let waited = attempts[1].at - attempts[0].at;
        assert!(
            waited >= Duration::from_secs(30),
            "retried after {waited:?}"
        );
    }
    assert_healthy_and_whole(gw).await;
}
