//! The supervisor in the real process: a panicking child is replaced, a child that keeps
//! failing exhausts its budget and stops the process with exit code 1.
//! Needs the `test-hooks` feature (the README's test command enables it).

#![cfg(feature = "test-hooks")]

use std::time::{Duration, Instant};

use crate::harness::{client, Gateway, Options};

async fn tree(gw: &Gateway) -> serde_json::Value {
    client()
        .get(gw.url("/api/v1/supervisor"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn store_restarts(gw: &Gateway) -> (u64, String) {
    let tree = tree(gw).await;
    let store = &tree[0]["children"][0];
    assert_eq!(store["name"], "store");
    (
        store["restarts"].as_u64().unwrap(),
        store["state"].as_str().unwrap().to_string(),
    )
}

async fn panic_store(gw: &Gateway) {
    let res = client()
        .post(gw.url("/api/v1/test/panic/store"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
}

#[tokio::test]
async fn a_panicked_child_is_replaced_by_a_working_one_within_a_second() {
    let gw = Gateway::start(Options::default());
    panic_store(&gw).await;
    let start = Instant::now();
    loop {
        let (restarts, state) = store_restarts(&gw).await;
        if restarts == 1 && state == "running" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "no working store after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The fresh child serves requests that go through it.
    let res = client()
        .get(gw.url("/api/v1/timeline"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = client().get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_permanent_child_that_keeps_failing_stops_the_process_with_exit_1() {
    let mut gw = Gateway::start(
        Options::default()
            .env("KAFCLAW_SUPERVISOR_MAX_RESTARTS", "2")
            .env("KAFCLAW_SUPERVISOR_WINDOW_SECONDS", "60"),
    );
    for round in 1..=2u64 {
        panic_store(&gw).await;
        let start = Instant::now();
        while store_restarts(&gw).await != (round, "running".to_string()) {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "restart {round} missing"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    panic_store(&gw).await;
    let status = gw.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1));
    assert!(gw.stderr().contains("restart budget exhausted"));
}

#[tokio::test]
async fn a_bridge_that_keeps_panicking_is_quarantined_with_the_reason() {
    let model = crate::model_server::ModelServer::start(vec![]);
    let gw = Gateway::start(
        crate::channels::options(&model).env("KAFCLAW_SUPERVISOR_MAX_RESTARTS", "2"),
    );
    let auth = format!("Bearer {}", crate::harness::TOKEN);
    let state = || async {
        let channels: serde_json::Value = client()
            .get(gw.url("/api/v1/channels"))
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        channels
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "slack")
            .cloned()
            .unwrap()
    };
    let start = Instant::now();
    loop {
        let res = client()
            .post(gw.url("/api/v1/test/panic/channel:slack"))
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap();
        let slack = state().await;
        if slack["state"] == "quarantined" {
            assert!(
                slack["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("panicked"),
                "{slack}"
            );
            break;
        }
        assert!(
            res.status() == 202 || res.status() == 404,
            "{}",
            res.status()
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never quarantined: {slack}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The gateway keeps running and the other channel is unaffected.
    let res = client().get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let incidents: serde_json::Value = client()
        .get(gw.url("/api/v1/incidents"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(incidents.to_string().contains("crash_loop"), "{incidents}");
}
