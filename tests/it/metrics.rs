//! `GET /metrics` on the dashboard port (CONTRACT §3.3): read scope, Prometheus text format.

use std::collections::{HashMap, HashSet};

use reqwest::StatusCode;

use crate::channels::{options, OWNER};
use crate::harness::{client, run, Gateway};
use crate::incidents::send_wa;
use crate::model_server::{self, ModelServer};

/// One sample line: `name{label="value",…} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Parses the exposition strictly: every line is `# HELP`, `# TYPE` or a sample of a family
/// whose `# TYPE` came before it.
fn parse(text: &str) -> Vec<Sample> {
    let mut typed = HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect(line);
            assert!(is_name(name) && !help.is_empty(), "{line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect(line);
            assert!(is_name(name), "{line}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(typed.insert(name.to_string()), "family typed twice: {line}");
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    typed.insert(format!("{name}{suffix}"));
                }
            }
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
        let (series, value) = line.rsplit_once(' ').expect(line);
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').expect(line))),
        };
        assert!(is_name(name), "{line}");
        assert!(typed.contains(name), "sample before its # TYPE: {line}");
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    samples
}

/// `a="x",b="y\"z"` with the format's escapes.
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert!(is_name(&name), "{text}");
        assert_eq!(chars.next(), Some('"'), "{text}");
        let mut value = String::new();
        loop {
            match chars.next().expect(text) {
                '"' => break,
                '\\' => match chars.next().expect(text) {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    other => panic!("bad escape \\{other} in {text}"),
                },
                c => value.push(c),
            }
        }
        labels.push((name, value));
        match chars.next() {
            None => break,
            Some(',') => {}
            Some(other) => panic!("unexpected {other} in {text}"),
        }
    }
    labels
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(n, v)| s.label(n) == Some(v)))
        .unwrap_or_else(|| panic!("no {name} {labels:?}"))
        .value
}

#[tokio::test]
async fn metrics_need_a_read_token_and_describe_the_gateway() {
    let model = ModelServer::start(vec![]);
    model.fallback(model_server::text("hi", 1, 1));
    let home = tempfile::tempdir().unwrap();
    let token = |scope: &str| {
        let (code, out, err) = run(
            home.path(),
            &HashMap::new(),
            &["token", "create", "--scope", scope],
        );
        assert_eq!(code, 0, "{err}");
        out.trim().to_string()
    };
    let (read, chat) = (token("read"), token("chat"));
    let gw = Gateway::start_in(home, options(&model));
    send_wa(&gw, OWNER, "wamid.m1", "hello").await;

    let get = |token: Option<String>| {
        let mut req = client().get(gw.url("/metrics"));
        if let Some(token) = token {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        req.send()
    };
    let res = get(None).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        get(Some(chat)).await.unwrap().status(),
        StatusCode::FORBIDDEN,
        "a chat token may not read metrics"
    );
    assert_eq!(
        client()
            .get(gw.gw_url("/metrics"))
            .header("Authorization", format!("Bearer {read}"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND,
        "metrics live on the dashboard port only"
    );

    let res = get(Some(read)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = res.text().await.unwrap();
    let samples = parse(&text);

    assert_eq!(value(&samples, "kafclaw_up", &[]), 1.0);
    assert!(value(&samples, "kafclaw_uptime_seconds", &[]) >= 0.0);
    assert!(
        value(&samples, "kafclaw_auth_failures_total", &[]) >= 1.0,
        "the refused scrape was counted"
    );
    for child in ["store", "vault", "audit", "agent", "channel:whatsapp"] {
        assert_eq!(
            value(&samples, "kafclaw_child_up", &[("child", child)]),
            1.0,
            "{child}"
        );
        assert_eq!(
            value(
                &samples,
                "kafclaw_supervisor_restarts_total",
                &[("child", child)]
            ),
            0.0,
            "{child}"
        );
    }
    for channel in ["whatsapp", "slack"] {
        assert_eq!(
            value(
                &samples,
                "kafclaw_channel_state",
                &[("channel", channel), ("state", "running")]
            ),
            1.0
        );
        assert_eq!(
            value(
                &samples,
                "kafclaw_channel_state",
                &[("channel", channel), ("state", "quarantined")]
            ),
            0.0
        );
    }
    assert_eq!(
        value(
            &samples,
            "kafclaw_channel_inbound_total",
            &[("channel", "whatsapp")]
        ),
        1.0
    );
    assert_eq!(value(&samples, "kafclaw_incidents_open", &[]), 0.0);
    assert!(
        value(&samples, "kafclaw_audit_head_seq", &[]) >= 1.0,
        "gateway.started at least"
    );
    assert!(!text.contains("hello"), "no message text in metrics");
}

#[test]
fn the_parser_accepts_escaped_labels_and_refuses_garbage() {
    let samples = parse(
        "# HELP x_total a counter\n# TYPE x_total counter\nx_total{a=\"q\\\"uo\\\\te\\n\",b=\"\"} 2\n",
    );
    assert_eq!(samples[0].label("a"), Some("q\"uo\\te\n"));
    assert_eq!(samples[0].label("b"), Some(""));
    assert!(
        std::panic::catch_unwind(|| parse("x 1\n")).is_err(),
        "untyped sample"
    );
}

/// A channel whose actor restarted (a fresh instance) keeps its counters in `/metrics` and
/// `/api/v1/channels`: they live at the edge, not in the actor, so `rate()` never sees a drop.
#[cfg(feature = "test-hooks")]
#[tokio::test]
async fn a_restarted_channel_keeps_its_counters() {
    use crate::harness::TOKEN;
    let model = ModelServer::start(vec![]);
    model.fallback(model_server::text("hi", 1, 1));
    let gw = Gateway::start(options(&model));
    send_wa(&gw, OWNER, "wamid.k1", "one").await;
    send_wa(&gw, "4917000000099", "wamid.k2", "who am i").await;
    let scrape = || async {
        let text = gw.get_text("/metrics").await;
        parse(&text)
    };
    let before = scrape().await;
    let inbound = |s: &[Sample]| {
        value(
            s,
            "kafclaw_channel_inbound_total",
            &[("channel", "whatsapp")],
        )
    };
    let unknown = |s: &[Sample]| {
        value(
            s,
            "kafclaw_channel_unknown_senders_total",
            &[("channel", "whatsapp")],
        )
    };
    assert_eq!((inbound(&before), unknown(&before)), (2.0, 1.0));
    let res = client()
        .post(gw.url("/api/v1/test/panic/channel:whatsapp"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    crate::incidents::wait_for("the restart", async || {
        let s = scrape().await;
        s.iter().any(|x| {
            x.name == "kafclaw_supervisor_restarts_total"
                && x.label("child") == Some("channel:whatsapp")
                && x.value >= 1.0
        }) && value(&s, "kafclaw_child_up", &[("child", "channel:whatsapp")]) == 1.0
    })
    .await;
    let after = scrape().await;
    assert_eq!(
        (inbound(&after), unknown(&after)),
        (2.0, 1.0),
        "the counters survived the restart"
    );
    let channels = gw.get_json("/api/v1/channels").await;
    let whatsapp = channels
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "whatsapp")
        .unwrap();
    assert_eq!(
        (
            whatsapp["inbound_total"].as_u64(),
            whatsapp["unknown_senders_total"].as_u64()
        ),
        (Some(2), Some(1))
    );
    assert_eq!(
        value(
            &after,
            "kafclaw_channel_messages_total",
            &[
                ("channel", "whatsapp"),
                ("direction", "inbound"),
                ("state", "dropped")
            ]
        ),
        1.0
    );
    assert!(value(&after, "process_start_time_seconds", &[]) > 1.6e9);
}

#[tokio::test]
async fn the_store_cache_limit_rss_and_store_size_are_in_metrics_status_and_the_cli() {
    let model = ModelServer::start(vec![]);
    model.fallback(model_server::text("hi", 1, 1));
    let mib = 1024.0 * 1024.0;
    let gw = Gateway::start(options(&model).env("KAFCLAW_STORE_CACHE_MIB", "8"));
    send_wa(&gw, OWNER, "wamid.mem1", "hello").await;
    let text = gw.get_text("/metrics").await;
    let samples = parse(&text);
    assert_eq!(
        value(&samples, "kafclaw_store_cache_limit_bytes", &[]),
        8.0 * mib
    );
    assert!(value(&samples, "kafclaw_store_size_bytes", &[]) > 0.0);
    assert!(value(&samples, "process_resident_memory_bytes", &[]) > mib);
    for reason in ["mailbox_full", "target_down", "incidents_full"] {
        assert_eq!(
            value(
                &samples,
                "kafclaw_incident_signals_dropped_total",
                &[("reason", reason)]
            ),
            0.0,
            "{reason}"
        );
    }
    let status: serde_json::Value = client()
        .get(gw.url("/api/v1/status"))
        .header("Authorization", format!("Bearer {}", crate::harness::TOKEN))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["store"]["cache_limit_bytes"], 8 * 1024 * 1024);
    assert!(status["store"]["size_bytes"].as_u64().unwrap() > 0);
    assert!(status["memory"]["resident_bytes"].as_u64().unwrap() > 1 << 20);
    let mut gw = gw;
    gw.signal("TERM");
    assert!(gw.wait_exit(std::time::Duration::from_secs(20)).success());
    let home = gw.home_path();

    // Without a gateway `kafclaw status` reads the store and names the configured limit.
    let env = HashMap::from([("KAFCLAW_STORE_CACHE_MIB".to_string(), "8".to_string())]);
    let (code, out, err) = run(&home, &env, &["--json", "status"]);
    assert_eq!(code, 0, "{out}{err}");
    let doc: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let row = |name: &str| crate::harness::report_row(&doc, name);
    let memory = row("memory")["message"].as_str().unwrap().to_string();
    assert!(memory.contains("store cache limit 8.0 MiB"), "{memory}");
    assert!(row("store")["message"]
        .as_str()
        .unwrap()
        .contains("MiB on disk"));
}
