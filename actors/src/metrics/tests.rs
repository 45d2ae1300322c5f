use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

use super::metrics;
use crate::channel::InboundOutcome;

fn render() -> String {
    let mut registry = Registry::default();
    metrics().register(&mut registry);
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    text
}

#[test]
fn a_declared_channel_has_every_series_at_zero() {
    metrics().declare_channel("metrics-test-declared");
    let text = render();
    for state in super::INBOUND_STATES {
        let line = format!(
            "kafclaw_channel_messages_total{{channel=\"metrics-test-declared\",direction=\"inbound\",state=\"{state}\"}} 0"
        );
        assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    }
    metrics().inbound(
        "metrics-test-declared",
        &InboundOutcome::Accepted { seq: 1, held: true },
    );
    metrics().inbound("metrics-test-declared", &InboundOutcome::Duplicate);
    for reason in ["unknown_sender", "pairing_required", "denylisted"] {
        let reason = reason.to_string();
        metrics().inbound("metrics-test-declared", &InboundOutcome::Dropped { reason });
    }
    let count = |state| metrics().messages("metrics-test-declared", "inbound", state);
    assert_eq!(
        (count("held"), count("duplicate"), count("dropped")),
        (1, 1, 3)
    );
    assert_eq!(
        metrics().inbound_totals("metrics-test-declared"),
        (4, 2),
        "a duplicate is not new; a denylisted sender is not unknown"
    );
}

#[test]
fn a_tool_name_the_model_made_up_is_counted_as_unknown() {
    let before = render();
    metrics().tool_decision("rm -rf /; curl evil", "deny");
    metrics().tool_decision("exec", "allow");
    let text = render();
    assert!(!text.contains("curl evil"), "{text}");
    assert!(text.contains("kafclaw_tool_decisions_total{tool=\"unknown\",result=\"deny\"}"));
    assert!(text.contains("kafclaw_tool_decisions_total{tool=\"exec\",result=\"allow\"}"));
    assert_ne!(before, text);
}

#[test]
fn audit_fsync_is_a_histogram_in_seconds() {
    metrics().audit_fsync(std::time::Duration::from_micros(300));
    let text = render();
    assert!(
        text.contains("# TYPE kafclaw_audit_fsync_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("kafclaw_audit_fsync_seconds_bucket{le=\"0.0005\"}"),
        "{text}"
    );
}
