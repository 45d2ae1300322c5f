//! `kafclaw pairing pending|approve|deny` against a running gateway (CONTRACT §5, §8): an
//! unknown WhatsApp sender gets a one-time code, the operator sees and decides it, and only an
//! approved sender reaches the model.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::channels::options;
use crate::harness::{run, Gateway, Options};
use crate::incidents::{graph, send_wa, wait_for, with_graph};
use crate::model_server::{self, ModelServer};

const STRANGER: &str = "4915177777777";

/// The channel tests' setup with `unknown_senders: "pairing"` on WhatsApp and a Graph API
/// stand-in that records what is sent to the sender.
fn pairing_options(model: &ModelServer, graph: &ModelServer) -> Options {
    let mut options = with_graph(options(model), graph);
    let mut config: Value = serde_json::from_str(options.config_json.as_deref().unwrap()).unwrap();
    config["channels"]["whatsapp"]["unknown_senders"] = Value::from("pairing");
    options.config_json = Some(config.to_string());
    options
}

fn pairing(gw: &Gateway, args: &[&str]) -> (i32, String, String) {
    let mut full = vec!["pairing"];
    full.extend_from_slice(args);
    run(&gw.home_path(), &HashMap::new(), &full)
}

/// `pairing pending --json` → the pending entries.
fn pending(gw: &Gateway) -> Vec<Value> {
    let (code, out, err) = pairing(gw, &["pending", "--json"]);
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["result"]["unavailable"], serde_json::json!([]), "{doc}");
    doc["result"]["pending"].as_array().unwrap().clone()
}

fn audit_log(gw: &Gateway) -> String {
    std::fs::read_to_string(gw.home_path().join(".kafclaw/audit/audit-000001.jsonl")).unwrap()
}

#[tokio::test]
async fn an_approved_pairing_code_lets_the_sender_reach_the_model() {
    let model = ModelServer::start(vec![]);
    model.fallback(model_server::text("welcome", 3, 2));
    let graph = graph();
    let mut gw = Gateway::start(pairing_options(&model, &graph));

    send_wa(&gw, STRANGER, "wamid.p1", "let me in").await;
    let entries = pending(&gw);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["channel"], "whatsapp");
    assert_eq!(entries[0]["sender_id"], STRANGER);
    assert!(entries[0]["expires_at"].is_string());
    let code = entries[0]["code"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 8, "{code}");

    // The sender was told the code; the operator's plain listing shows it too.
    wait_for("the code to reach the sender", async || {
        graph
            .seen()
            .iter()
            .any(|s| s.body.to_string().contains(&code))
    })
    .await;
    let (status, out, err) = pairing(&gw, &["pending", "whatsapp"]);
    assert_eq!(status, 0, "{err}");
    assert!(out.contains(&code) && out.contains(STRANGER), "{out}");
    assert!(
        model.seen().is_empty(),
        "an unknown sender never reaches the model"
    );

    let (status, out, err) = pairing(&gw, &["approve", "whatsapp", &code]);
    assert_eq!(status, 0, "{err}");
    assert!(out.contains(STRANGER) && out.contains("approved"), "{out}");
    let (status, _, err) = pairing(&gw, &["approve", "whatsapp", &code]);
    assert_eq!(status, 2, "a code works once");
    assert!(err.contains("no pending pairing"), "{err}");
    assert!(pending(&gw).is_empty());

    send_wa(&gw, STRANGER, "wamid.p2", "thanks, now the real question").await;
    wait_for("the approved sender's message at the model", async || {
        model
            .seen()
            .iter()
            .any(|s| s.body.to_string().contains("now the real question"))
    })
    .await;

    let audit = audit_log(&gw);
    assert!(audit.contains("\"pairing.requested\""), "{audit}");
    let decided = audit
        .lines()
        .find(|l| l.contains("\"pairing.decided\""))
        .expect("the approval is audited");
    assert!(decided.contains("approved") && decided.contains("cli:uid="));
    assert!(
        !audit.contains(&code),
        "the code never reaches the audit log"
    );
    assert!(!gw.stderr().contains(&code), "the code is never logged");
}

#[tokio::test]
async fn denied_wrong_and_misdirected_codes_admit_nobody() {
    let model = ModelServer::start(vec![]);
    let graph = graph();
    let gw = Gateway::start(pairing_options(&model, &graph));
    send_wa(&gw, STRANGER, "wamid.d1", "hello?").await;
    let code = pending(&gw)[0]["code"].as_str().unwrap().to_string();

    let (status, _, err) = pairing(&gw, &["approve", "teams", &code]);
    assert_eq!(status, 2);
    assert!(err.contains("unknown channel: teams"), "{err}");
    let (status, _, err) = pairing(&gw, &["pending", "teams"]);
    assert_eq!(status, 2);
    assert!(err.contains("unknown channel: teams"), "{err}");
    let (status, _, err) = pairing(&gw, &["approve", "slack", &code]);
    assert_eq!(status, 2, "a code belongs to its channel");
    assert!(err.contains("no pending pairing"), "{err}");
    let wrong = if code == "ABCDEFGH" {
        "HGFEDCBA"
    } else {
        "ABCDEFGH"
    };
    let (status, _, err) = pairing(&gw, &["deny", "whatsapp", wrong]);
    assert_eq!(status, 2);
    assert!(
        err.contains("no pending pairing") && err.contains("whatsapp"),
        "{err}"
    );
    assert_eq!(pending(&gw).len(), 1, "a wrong code changes nothing");

    let (status, out, err) = pairing(&gw, &["deny", "whatsapp", &code, "--json"]);
    assert_eq!(status, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["result"]["decision"], "denied");
    assert_eq!(doc["result"]["sender_id"], STRANGER);
    assert!(pending(&gw).is_empty());

    // Still unknown: the next message asks for pairing again, with a fresh code.
    send_wa(&gw, STRANGER, "wamid.d2", "please?").await;
    let again = pending(&gw);
    assert_eq!(again.len(), 1);
    assert_ne!(again[0]["code"], Value::from(code.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(model.seen().is_empty(), "a denied sender reaches no model");
    let audit = audit_log(&gw);
    assert!(audit.contains("\"denied\""), "{audit}");
    assert!(!audit.contains(&code));
}

#[test]
fn pairing_needs_a_running_gateway() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["pairing", "pending"][..],
        &["pairing", "approve", "whatsapp", "ABCDEFGH"],
        &["pairing", "deny", "whatsapp", "ABCDEFGH", "--json"],
    ] {
        let (status, out, err) = run(home.path(), &HashMap::new(), args);
        assert_eq!(status, 2, "{args:?}: {out}{err}");
        // Text on stderr, or with --json the document on stdout.
        let said = format!("{out}{err}");
        assert!(said.contains("needs a running gateway"), "{args:?}: {said}");
    }
}
