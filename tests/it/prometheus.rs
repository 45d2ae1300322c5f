//! `promtool` (Debian's `prometheus` package) on what we ship and serve (issue 16): the
//! example alert rules and a real `/metrics` scrape. When promtool is missing the tests say so
//! and pass; `.ci/run` installs it, so CI always runs them.

use std::process::{Command, Stdio};

use crate::channels::{options, OWNER};
use crate::harness::{client, Gateway};
use crate::incidents::send_wa;
use crate::model_server::{self, ModelServer};

fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        println!("skipped: promtool is not installed (apt-get install prometheus; .ci/run does)");
    }
    found.then_some("promtool")
}

#[test]
fn the_example_alert_rules_pass_promtool() {
    let Some(promtool) = promtool() else { return };
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/alerts.yaml");
    let out = Command::new(promtool)
        .args(["check", "rules", rules])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(rules).unwrap();
    for watched in [
        "kafclaw_model_tokens_total",
        "kafclaw_channel_unknown_senders_total",
        "kafclaw_tool_decisions_total",
        "kafclaw_auth_failures_total",
    ] {
        assert!(text.contains(watched), "the runbook's watch item {watched}");
    }
}

#[tokio::test]
async fn a_real_scrape_passes_promtool_check_metrics() {
    let Some(promtool) = promtool() else { return };
    let model = ModelServer::start(vec![]);
    model.fallback(model_server::text("hi", 1, 1));
    let gw = Gateway::start(options(&model));
    send_wa(&gw, OWNER, "wamid.p1", "hello").await;
    let _ = client()
        .get(gw.url("/api/v1/channels"))
        .send()
        .await
        .unwrap();
    let text = gw.get_text("/metrics").await;
    let mut cmd = Command::new(promtool);
    cmd.args(["check", "metrics"]);
    let out = crate::harness::run_fed(cmd, text.as_bytes());
    assert!(
        out.status.success(),
        "{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for family in [
        "process_start_time_seconds",
        "kafclaw_http_requests_total",
        "kafclaw_audit_fsync_seconds_bucket",
        "kafclaw_channel_messages_total",
    ] {
        assert!(text.contains(family), "{family}");
    }
}
