use kafclaw_actors::channel::ChannelState;
use kafclaw_actors::supervisor::{ChildState, ChildStatus, RestartPolicy};

use super::{escape_help, escape_label, ChannelSample, Snapshot};

fn check_label(input: &str, expected: &str) {
    assert_eq!(escape_label(input), expected, "{input:?}");
}

#[test]
fn label_values_are_escaped() {
    check_label("whatsapp", "whatsapp");
    check_label(r#"a"b"#, r#"a\"b"#);
    check_label(r"a\b", r"a\\b");
    check_label("a\nb", r"a\nb");
    check_label("grüße", "grüße");
    check_label("\\\"\n", r#"\\\"\n"#);
}

#[test]
fn help_text_is_escaped() {
    assert_eq!(escape_help("a\\b\nc \"d\""), "a\\\\b\\nc \"d\"");
}

fn child(name: &str, state: ChildState, restarts: u32) -> ChildStatus {
    ChildStatus {
        name: name.into(),
        state,
        policy: RestartPolicy::Permanent,
        restarts,
        last_failure: None,
        last_failure_at: None,
        children: Vec::new(),
    }
}

#[test]
fn a_snapshot_renders_every_family_once_with_its_samples() {
    let snapshot = Snapshot {
        version: "0.1.0".into(),
        uptime_seconds: 12.5,
        auth_failures: 3,
        children: Some(vec![
            child("store", ChildState::Running, 0),
            child("channel:we\"ird", ChildState::Restarting, 2),
        ]),
        channels: vec![ChannelSample {
            name: "whatsapp".into(),
            state: ChannelState::Quarantined,
            inbound_total: 7,
            unknown_senders_total: 1,
        }],
        incidents_open: Some(1),
        audit_head_seq: Some(42),
    };
    let text = snapshot.render();
    for line in [
        "kafclaw_up 1",
        "kafclaw_build_info{version=\"0.1.0\"} 1",
        "kafclaw_uptime_seconds 12.500",
        "kafclaw_auth_failures_total 3",
        "kafclaw_supervisor_restarts_total{child=\"store\"} 0",
        "kafclaw_supervisor_restarts_total{child=\"channel:we\\\"ird\"} 2",
        "kafclaw_child_up{child=\"store\"} 1",
        "kafclaw_child_up{child=\"channel:we\\\"ird\"} 0",
        "kafclaw_channel_state{channel=\"whatsapp\",state=\"quarantined\"} 1",
        "kafclaw_channel_state{channel=\"whatsapp\",state=\"running\"} 0",
        "kafclaw_channel_inbound_total{channel=\"whatsapp\"} 7",
        "kafclaw_channel_unknown_senders_total{channel=\"whatsapp\"} 1",
        "kafclaw_incidents_open 1",
        "kafclaw_audit_head_seq 42",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
    let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
    assert_eq!(types, helps);
    assert_eq!(types, 11, "{text}");
    assert!(text.ends_with('\n'));
}

#[test]
fn series_of_actors_that_did_not_answer_are_left_out() {
    let text = Snapshot::default().render();
    assert!(text.contains("kafclaw_up 1"));
    for absent in [
        "kafclaw_child_up",
        "kafclaw_channel_state",
        "kafclaw_incidents_open",
        "kafclaw_audit_head_seq",
    ] {
        assert!(!text.contains(absent), "{absent} in\n{text}");
    }
}
