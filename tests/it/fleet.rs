//! Fleet mode (issue 18) on real servers: three gateways against a real 3-server NATS
//! JetStream cluster on loopback (`fleet/cluster.rs`).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{client, Gateway, Options, TOKEN};

mod cluster;

use cluster::Cluster;

const BRIDGE_SECRET: &str = "fleet-bridge-secret-0123456789";

/// A fleet node: token, one bridge channel, `fleet.*` pointed at the cluster.
/// Every node's `fleet.control_key` (the control messages of these tests are authenticated).
const CONTROL_KEY: &str = "fleet-control-key-0123456789abcdefghijklmnop";

fn node(cluster: &Cluster, id: &str) -> Options {
    let mut options = Options::default()
        .token()
        .env("KAFCLAW_FLEET_ENABLED", "true")
        .env("KAFCLAW_FLEET_NATS_URLS", &cluster.urls())
        .env("KAFCLAW_FLEET_NODE_ID", id)
        .env("KAFCLAW_FLEET_STREAM_REPLICAS", "3")
        .env("KAFCLAW_FLEET_CONTROL_KEY", CONTROL_KEY)
        .env("KAFCLAW_CHANNELS_BRIDGES_SLACK_SECRET", BRIDGE_SECRET);
    options.config_json = Some(
        json!({"channels": {"bridges": {"slack": {"outbound_url": "http://127.0.0.1:9/out"}}}})
            .to_string(),
    );
    options
}

/// Three nodes `a`, `b`, `c`, each connected to the fleet.
async fn three(cluster: &Cluster) -> Vec<Gateway> {
    let nodes: Vec<Gateway> = ["a", "b", "c"]
        .iter()
        .map(|id| Gateway::start(node(cluster, id)))
        .collect();
    for gw in &nodes {
        wait_for("the node to connect", Duration::from_secs(15), async || {
            fleet_state(gw).await == "connected"
        })
        .await;
    }
    nodes
}

async fn wait_for(what: &str, deadline: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn fleet_state(gw: &Gateway) -> String {
    let health: Value = match client().get(gw.url("/healthz")).send().await {
        Ok(res) => res.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    health["fleet"]["state"].as_str().unwrap_or("").to_string()
}

async fn control(gw: &Gateway, body: Value) -> (StatusCode, Value) {
    let res = client()
        .post(gw.url("/api/v1/admin/control"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// True when the node is locked down: its channel quarantined and tools at tier 0.
async fn locked_down(gw: &Gateway) -> bool {
    let channels = gw.get_json("/api/v1/channels").await;
    let quarantined = channels
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["name"] == "slack" && c["state"] == "quarantined");
    let tools = gw.get_json("/api/v1/tools").await;
    quarantined && tools["restriction"]["max_tier"] == 0
}

fn audit_text(gw: &Gateway) -> String {
    let dir = gw.home_path().join(".kafclaw/audit");
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.file_name().to_string_lossy().ends_with(".jsonl") {
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap());
        }
    }
    text
}

/// The `control.applied` records of a node's audit log.
fn control_applied(gw: &Gateway) -> Vec<Value> {
    audit_text(gw)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["kind"] == "control.applied")
        .collect()
}

fn data(record: &Value) -> &Value {
    if record["data"].is_object() {
        &record["data"]
    } else {
        record
    }
}

#[tokio::test]
async fn a_lockdown_on_one_node_locks_down_every_node_and_each_audits_it_once() {
    let cluster = Cluster::start();
    let nodes = three(&cluster).await;
    let (status, body) = control(&nodes[0], json!({"type": "lockdown", "reason": "drill"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(locked_down(&nodes[0]).await, "the origin applied it");
    let start = Instant::now();
    for gw in &nodes[1..] {
        wait_for(
            "the lockdown to reach every node",
            Duration::from_secs(10),
            async || locked_down(gw).await,
        )
        .await;
    }
    println!("lockdown fan-out to two nodes: {:?}", start.elapsed());
    // Each node audits it exactly once, naming the origin node and the envelope id; the
    // origin before it publishes (audit before act), the others with the stream sequence.
    let mut ids = Vec::new();
    for (i, gw) in nodes.iter().enumerate() {
        let applied = control_applied(gw);
        let lockdowns: Vec<&Value> = applied
            .iter()
            .filter(|r| r["subject"] == "lockdown")
            .collect();
        assert_eq!(lockdowns.len(), 1, "{applied:?}");
        let d = data(lockdowns[0]);
        assert_eq!(d["origin"], "a", "{d}");
        assert!(d["id"].as_str().is_some_and(|id| id.len() == 32), "{d}");
        ids.push(d["id"].clone());
        if i > 0 {
            assert!(d["seq"].as_u64().is_some_and(|s| s >= 1), "{d}");
        }
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    // A control message that stays local (a snapshot) is applied on its node only.
    let (status, _) = control(&nodes[1], json!({"type": "snapshot"})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!control_applied(&nodes[2])
        .iter()
        .any(|r| r["subject"] == "snapshot"));
}

#[tokio::test]
async fn a_node_that_was_down_applies_the_missed_lockdown_before_its_listeners_open() {
    let cluster = Cluster::start();
    let mut nodes = three(&cluster).await;
    nodes[2].signal("TERM");
    assert!(nodes[2].wait_exit(Duration::from_secs(20)).success());
    let (status, body) = control(
        &nodes[0],
        json!({"type": "lockdown", "reason": "while c was down"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let home = std::mem::replace(&mut nodes[2].home, tempfile::tempdir().unwrap());
    let restarted = Gateway::start_in(home, node(&cluster, "c"));
    // No polling: the first answer after the ready line already sees the lockdown.
    assert!(
        locked_down(&restarted).await,
        "applied before the listeners opened"
    );
    let applied = control_applied(&restarted);
    assert_eq!(
        applied
            .iter()
            .filter(|r| r["subject"] == "lockdown")
            .count(),
        1,
        "{applied:?}"
    );
}

/// Nodes publish only the kinds that fan out, each with its `fleet.control_key` MAC. Anything
/// else on the control stream was put there by someone else with publish access to NATS
/// (another client, a compromised account): a lockdown or a tool relaxation without a valid
/// MAC, a token rotation with no grace, a snapshot or an incident resolution is audited as
/// skipped and never run. Without a control key a local-only kind is still never applied.
#[tokio::test]
async fn forged_control_messages_on_the_stream_are_audited_and_skipped() {
    let cluster = Cluster::start();
    let mut keyless = node(&cluster, "b");
    keyless.env.remove("KAFCLAW_FLEET_CONTROL_KEY");
    let nodes = [Gateway::start(node(&cluster, "a")), Gateway::start(keyless)];
    for gw in &nodes {
        wait_for("the node to connect", Duration::from_secs(15), async || {
            fleet_state(gw).await == "connected"
        })
        .await;
    }
    let nats = async_nats::connect(cluster.urls().split(',').next().unwrap())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(nats);
    let local_only = [
        json!({"type": "rotate_gateway_token", "grace_seconds": 0}),
        json!({"type": "snapshot", "label": "forged"}),
        json!({"type": "resolve_incident", "id": "inc-1", "note": "x"}),
    ];
    let fan_out = [
        (json!({"type": "lockdown", "reason": "forged"}), None),
        (
            json!({"type": "relax_tools"}),
            Some("0".repeat(64)), // a MAC, but not this payload's
        ),
        // A long reason: recorded by a fixed-size summary where no node vouches for it.
        (
            json!({"type": "quarantine_channel", "channel": "slack", "reason": "r".repeat(20_000)}),
            None,
        ),
    ];
    let messages = local_only
        .iter()
        .map(|m| (m.clone(), None))
        .chain(fan_out.iter().cloned());
    for (i, (message, mac)) in messages.enumerate() {
        let envelope = json!({
            "id": format!("forged{i}"),
            "origin": "a",
            "actor": "env:KAFCLAW_GATEWAY_AUTH_TOKEN",
            "message": message,
        });
        let mut headers = async_nats::HeaderMap::new();
        if let Some(mac) = mac {
            headers.insert("Kafclaw-Control-Mac", mac.as_str());
        }
        let payload = serde_json::to_vec(&envelope).unwrap();
        js.publish_with_headers("kafclaw.control", headers, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // Over 64 KiB: the stream refuses it.
    let huge = json!({"id": "huge", "origin": "a", "actor": "x", "message": {"type": "lockdown", "reason": "h".repeat(100_000)}});
    let refused = match js
        .publish("kafclaw.control", serde_json::to_vec(&huge).unwrap().into())
        .await
    {
        Ok(ack) => ack.await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a 100 KB control message was stored");
    // Signed with the key (as a node would): a fresh one is applied, a copy issued an hour
    // before the stream took it (a replay) is not.
    let key = blake3::derive_key(
        "kafclaw 2026 fleet control message mac v1",
        CONTROL_KEY.as_bytes(),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let signed = [
        (
            json!({"type": "lockdown", "reason": "replayed"}),
            now - 3600,
        ),
        (
            json!({"type": "block_sender", "channel": "slack", "sender": "signed"}),
            now,
        ),
    ];
    for (i, (message, issued_at)) in signed.iter().enumerate() {
        let envelope = json!({
            "id": format!("signed{i}"),
            "origin": "a",
            "actor": "env:KAFCLAW_GATEWAY_AUTH_TOKEN",
            "message": message,
            "issued_at": issued_at,
        });
        let payload = serde_json::to_vec(&envelope).unwrap();
        let mut headers = async_nats::HeaderMap::new();
        let mac = blake3::keyed_hash(&key, &payload).to_hex();
        headers.insert("Kafclaw-Control-Mac", mac.as_str());
        js.publish_with_headers("kafclaw.control", headers, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let skipped = |gw: &Gateway, why: &str| {
        control_applied(gw)
            .iter()
            .filter(|r| data(r)["skipped"].as_str().is_some_and(|s| s.contains(why)))
            .count()
    };
    let total = local_only.len() + fan_out.len();
    wait_for(
        "node a to audit every forged message",
        Duration::from_secs(10),
        async || skipped(&nodes[0], "fleet.control_key MAC") == total,
    )
    .await;
    wait_for(
        "node b to audit the local-only ones",
        Duration::from_secs(10),
        async || skipped(&nodes[1], "never fans out") == local_only.len(),
    )
    .await;
    wait_for(
        "node a to audit the replay",
        Duration::from_secs(10),
        async || skipped(&nodes[0], "replayed message") == 1,
    )
    .await;
    for record in control_applied(&nodes[0]) {
        if data(&record)["skipped"]
            .as_str()
            .is_some_and(|s| s.contains("fleet.control_key MAC"))
        {
            assert!(record.to_string().len() < 1024, "{record}");
        }
    }
    // Published after the replay, so followed after it too: waited for, not assumed.
    wait_for(
        "node a to apply the fresh message with a valid MAC",
        Duration::from_secs(10),
        async || {
            control_applied(&nodes[0]).iter().any(|r| {
                r["subject"] == "block_sender"
                    && data(r)["sender"] == "signed"
                    && data(r)["skipped"].is_null()
            })
        },
    )
    .await;
    // Node a (with the key) applied no forged one: not locked down, the admin token still works (no
    // rotation ran), no snapshot was taken.
    assert!(!locked_down(&nodes[0]).await);
    let tools = nodes[0].get_json("/api/v1/tools").await;
    assert!(
        tools["restriction"].is_null() || tools["restriction"]["max_tier"] != 0,
        "{tools}"
    );
    for gw in &nodes {
        let (status, body) = control(
            gw,
            json!({"type": "block_sender", "channel": "slack", "sender": "u1"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let snapshots = gw.home_path().join(".kafclaw/snapshots");
        let taken = std::fs::read_dir(&snapshots)
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(taken, 0, "{}", snapshots.display());
    }
}

/// A guessable control key would make the MAC worthless: under 32 characters the gateway
/// refuses to start (before it connects anywhere), naming the key but never its value.
#[test]
fn a_short_fleet_control_key_is_refused_at_start() {
    let home = tempfile::tempdir().unwrap();
    let short = "only-31-characters-long-key-xyz";
    assert_eq!(short.len(), 31);
    let env: std::collections::HashMap<String, String> = [
        ("KAFCLAW_FLEET_ENABLED", "true"),
        ("KAFCLAW_FLEET_NATS_URLS", "nats://127.0.0.1:9"),
        ("KAFCLAW_FLEET_CONTROL_KEY", short),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (code, _, err) = crate::harness::run(
        home.path(),
        &env,
        &["gateway", "--port", "0", "--dashboard-port", "0"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("fleet.control_key has 31 characters; at least 32 are required"),
        "{err}"
    );
    assert!(!err.contains(short), "{err}");
}

#[tokio::test]
async fn with_every_nats_server_down_the_node_is_degraded_refuses_fan_out_and_recovers() {
    let mut cluster = Cluster::start();
    let nodes = three(&cluster).await;
    cluster.stop_all();
    for gw in &nodes {
        wait_for("degraded", Duration::from_secs(15), async || {
            fleet_state(gw).await == "degraded"
        })
        .await;
    }
    // Health and reads still answer.
    let health = client().get(nodes[0].url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let status = nodes[0].get_json("/api/v1/status").await;
    assert_eq!(status["fleet"]["state"], "degraded", "{status}");
    // A control message that must reach every node is refused with the reason, and nothing
    // was applied here.
    let (code, body) = control(&nodes[0], json!({"type": "lockdown", "reason": "split"})).await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("fleet degraded"), "{error}");
    assert!(!locked_down(&nodes[0]).await);
    // A local one still works.
    let (code, _) = control(&nodes[0], json!({"type": "snapshot"})).await;
    assert_eq!(code, StatusCode::OK);

    cluster.start_all();
    for gw in &nodes {
        wait_for("recovery", Duration::from_secs(30), async || {
            fleet_state(gw).await == "connected"
        })
        .await;
    }
    let (code, body) = control(&nodes[1], json!({"type": "lockdown", "reason": "after"})).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    for gw in &nodes {
        wait_for(
            "the lockdown after recovery",
            Duration::from_secs(10),
            async || locked_down(gw).await,
        )
        .await;
    }
}

#[tokio::test]
async fn ten_auth_failures_spread_over_three_nodes_lock_the_client_out_on_all_three() {
    let cluster = Cluster::start();
    let nodes = three(&cluster).await;
    let from = |addr: &str| {
        reqwest::Client::builder()
            .no_proxy()
            .local_address(addr.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    let attacker = from("127.0.0.3");
    // 4 + 3 + 3: no node alone sees the 10 failures of security.auth_lockout.max_failures.
    for i in 0..10 {
        let gw = &nodes[i % 3];
        let res = attacker
            .get(gw.url("/api/v1/supervisor"))
            .bearer_auth("wrong-token")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "failure {i}");
    }
    for gw in &nodes {
        wait_for(
            "the fleet-wide lockout",
            Duration::from_secs(10),
            async || {
                let res = attacker
                    .get(gw.url("/api/v1/supervisor"))
                    .bearer_auth(TOKEN)
                    .send()
                    .await
                    .unwrap();
                res.status() == StatusCode::TOO_MANY_REQUESTS
            },
        )
        .await;
    }
    // Another client is not affected on any node.
    let other = from("127.0.0.4");
    for gw in &nodes {
        let res = other
            .get(gw.url("/api/v1/supervisor"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    // The nodes that did not count the tenth failure audited the fleet-wide lockout.
    let audited = nodes
        .iter()
        .filter(|gw| audit_text(gw).contains("\"fleet\":true"))
        .count();
    assert!(audited >= 2, "{audited}");
}

#[tokio::test]
async fn audit_verify_anchored_catches_a_truncated_local_chain() {
    let cluster = Cluster::start();
    // The anchors stream as an older version created it (1000 anchors per node, deletable):
    // the node tightens it when it connects.
    let nats = async_nats::connect(cluster.urls().split(',').next().unwrap())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(nats);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "KAFCLAW_ANCHORS".into(),
        subjects: vec!["kafclaw.anchors.*".into()],
        num_replicas: 3,
        max_messages_per_subject: 1000,
        ..Default::default()
    })
    .await
    .unwrap();
    let options = node(&cluster, "a")
        .env("KAFCLAW_FLEET_ANCHOR_EVERY_RECORDS", "1")
        .env("KAFCLAW_FLEET_ANCHOR_EVERY_SECONDS", "1");
    let mut gw = Gateway::start(options.clone());
    wait_for("the node to connect", Duration::from_secs(15), async || {
        fleet_state(&gw).await == "connected"
    })
    .await;
    for _ in 0..3 {
        let (status, _) = control(&gw, json!({"type": "relax_tools"})).await;
        assert_eq!(status, StatusCode::OK);
    }
    let home = gw.home_path();
    let verify = || crate::harness::run(&home, &options.env, &["audit", "verify", "--anchored"]);
    // While the gateway runs (over the control socket), once the head is anchored.
    let start = Instant::now();
    loop {
        let (code, _, stderr) = verify();
        if code == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "never anchored: {stderr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status:?}: {}", gw.stderr());
    let (code, stdout, stderr) = verify();
    assert_eq!(code, 0, "offline, intact: {stdout} {stderr}");

    // Root on the host cuts the chain back to its first two records.
    let segment = home.join(".kafclaw/audit/audit-000001.jsonl");
    let text = std::fs::read_to_string(&segment).unwrap();
    let kept: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(&segment, kept).unwrap();
    let (code, stdout, stderr) = verify();
    assert_eq!(code, 1, "{stdout} {stderr}");
    let said = format!("{stdout}{stderr}");
    assert!(said.contains("fleet anchor"), "{said}");
    assert!(said.contains("missing"), "{said}");
    assert_eq!(said.trim().lines().count(), 1, "one clear line: {said}");

    // Root makes the cut chain whole on the host (`audit repair --accept-missing` moves the
    // recorded head to its record), and, holding the node's NATS credentials too, anchors the
    // new head as the newest anchor, then floods the node's subject to push the original
    // anchors out. Every retained anchor is checked; none can be evicted, deleted or purged.
    let (code, stdout, stderr) = crate::harness::run(
        &home,
        &options.env,
        &["audit", "repair", "--accept-missing"],
    );
    assert_eq!(code, 0, "{stdout} {stderr}");
    let plain = crate::harness::run(&home, &options.env, &["audit", "verify"]);
    assert_eq!(plain.0, 0, "the host alone cannot tell: {plain:?}");
    let repaired = std::fs::read_to_string(&segment).unwrap();
    let head = serde_json::from_str::<Value>(repaired.lines().last().unwrap()).unwrap();
    let forged = json!({"node": "a", "seq": head["seq"], "hash": head["hash"], "at": "2026-12-03T00:00:00Z"});
    for _ in 0..1100 {
        js.publish("kafclaw.anchors.a", forged.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let (code, stdout, stderr) = verify();
    assert_eq!(
        code, 1,
        "a newer anchor of the cut chain covered it: {stdout} {stderr}"
    );
    let said = format!("{stdout}{stderr}");
    assert!(said.contains("does not match the fleet anchors"), "{said}");
    assert_eq!(said.trim().lines().count(), 1, "one clear line: {said}");
    let mut stream = js.get_stream("KAFCLAW_ANCHORS").await.unwrap();
    let first = stream.info().await.unwrap().state.first_sequence;
    assert!(
        stream.delete_message(first).await.is_err(),
        "an anchor was deleted"
    );
    assert!(stream.purge().await.is_err(), "the anchors were purged");
    let config = stream.info().await.unwrap().config.clone();
    assert!(config.max_messages_per_subject <= 0, "{config:?}");
    assert!(config.deny_delete && config.deny_purge, "{config:?}");
}

/// The roster: every node's status, `GET /api/v1/status` and `kafclaw status` list every node
/// (id, version, last seen, applied control sequence, audit head), and a node that stops is
/// shown stale on the others.
#[tokio::test]
async fn status_on_any_node_lists_every_node_with_its_control_seq_and_audit_head() {
    let cluster = Cluster::start();
    let mut nodes = three(&cluster).await;
    let (status, body) = control(&nodes[0], json!({"type": "lockdown", "reason": "roster"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let roster =
        |v: &Value| -> Vec<Value> { v["fleet"]["nodes"].as_array().cloned().unwrap_or_default() };
    // Node b sees all three, each having applied the lockdown's sequence.
    wait_for(
        "every node in b's roster at the lockdown's seq",
        Duration::from_secs(20),
        async || {
            let listed = roster(&nodes[1].get_json("/api/v1/status").await);
            listed.len() == 3
                && listed.iter().all(|n| {
                    n["applied_control_seq"].as_u64().is_some_and(|s| s >= 1)
                        && n["state"] == "connected"
                        && n["audit_head"]["seq"].as_u64().is_some_and(|s| s >= 1)
                })
        },
    )
    .await;
    let listed = roster(&nodes[1].get_json("/api/v1/status").await);
    let ids: Vec<&str> = listed
        .iter()
        .filter_map(|n| n["node_id"].as_str())
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);
    for n in &listed {
        assert_eq!(n["version"], env!("CARGO_PKG_VERSION"), "{n}");
        assert!(
            n["last_seen"].as_str().is_some_and(|t| t.contains('T')),
            "{n}"
        );
        assert_eq!(n["stale"], false, "{n}");
    }
    // The operator's command on node c, through its control socket (no token).
    let env =
        std::collections::HashMap::from([("KAFCLAW_FLEET_NODE_ID".to_string(), "c".to_string())]);
    let (code, out, err) = crate::harness::run(&nodes[2].home_path(), &env, &["status"]);
    assert_eq!(code, 0, "{out}{err}");
    let row = out
        .lines()
        .find(|l| l.contains("fleet:"))
        .unwrap_or_else(|| panic!("no fleet row: {out}"));
    assert!(row.starts_with("[PASS]"), "{row}");
    for id in ["a (connected", "b (connected", "c (connected"] {
        assert!(row.contains(id), "{row}");
    }
    // Node c stops: a and b show it stale, and `kafclaw status` on a warns.
    nodes[2].signal("TERM");
    assert!(nodes[2].wait_exit(Duration::from_secs(20)).success());
    wait_for(
        "c stale in a's roster",
        Duration::from_secs(30),
        async || {
            roster(&nodes[0].get_json("/api/v1/status").await)
                .iter()
                .any(|n| n["node_id"] == "c" && n["stale"] == true)
        },
    )
    .await;
    let (_, out, _) = crate::harness::run(&nodes[0].home_path(), &env, &["status"]);
    let row = out
        .lines()
        .find(|l| l.contains("fleet:"))
        .unwrap_or_default();
    assert!(
        row.starts_with("[WARN]") && row.contains("c not seen for"),
        "{out}"
    );
}
