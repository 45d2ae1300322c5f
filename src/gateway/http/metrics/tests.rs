use kafclaw_actors::channel::inbox::InboxCounts;
use kafclaw_actors::channel::ChannelState;
use kafclaw_actors::supervisor::{ChildState, ChildStatus, RestartPolicy};

use super::process::ProcessSample;
use super::{edge, ChannelSample, Snapshot};

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

fn snapshot() -> Snapshot {
    Snapshot {
        version: "0.1.0".into(),
        uptime_seconds: 12.5,
        auth_failures: 3,
        children: Some(vec![
            child("store", ChildState::Running, 0),
            child("channel:we\"ird", ChildState::Restarting, 2),
        ]),
        channels: vec![ChannelSample {
            name: "whatsapp".into(),
            state: Some(ChannelState::Quarantined),
            inbox: Some(InboxCounts {
                pending: 1,
                held: 4,
                processing: 0,
            }),
            outbox: Some(2),
        }],
        incidents_open: Some(1),
        audit_head_seq: Some(42),
        lockouts_active: 2,
        process: ProcessSample {
            start_time_seconds: 1_700_000_000.25,
            resident_memory_bytes: Some(10 << 20),
        },
        store_size_bytes: Some(3 << 20),
        store_cache_limit_bytes: 32 << 20,
        fleet: Some((
            true,
            serde_json::json!([
                {"node_id": "a", "seconds_since_seen": 1, "applied_control_seq": 7,
                 "audit_head": {"seq": 40, "hash": "00"}},
                {"node_id": "b", "seconds_since_seen": 12, "applied_control_seq": 6,
                 "audit_head": null},
            ]),
        )),
    }
}

#[test]
fn a_snapshot_keeps_todays_names_and_adds_the_new_series() {
    kafclaw_actors::metrics::metrics().declare_channel("whatsapp");
    kafclaw_actors::metrics::metrics().audit_fsync(std::time::Duration::from_millis(1));
    edge::metrics().auth_failure("missing");
    edge::metrics().request(
        Some("/healthz".into()),
        &actix_web::http::Method::GET,
        actix_web::http::StatusCode::OK,
        std::time::Duration::from_millis(1),
    );
    let text = snapshot().render();
    for line in [
        "kafclaw_up 1",
        "kafclaw_build_info{version=\"0.1.0\"} 1",
        "kafclaw_uptime_seconds 12.5",
        "kafclaw_auth_failures_total 3",
        "kafclaw_supervisor_restarts_total{child=\"store\"} 0",
        "kafclaw_supervisor_restarts_total{child=\"channel:we\\\"ird\"} 2",
        "kafclaw_child_up{child=\"store\"} 1",
        "kafclaw_fleet_connected 1",
        "kafclaw_fleet_node_seconds_since_seen{node=\"b\"} 12",
        "kafclaw_fleet_node_applied_control_seq{node=\"a\"} 7",
        "kafclaw_fleet_node_audit_head_seq{node=\"a\"} 40",
        "kafclaw_child_up{child=\"channel:we\\\"ird\"} 0",
        "kafclaw_channel_state{channel=\"whatsapp\",state=\"quarantined\"} 1",
        "kafclaw_channel_state{channel=\"whatsapp\",state=\"running\"} 0",
        "kafclaw_channel_inbox_depth{channel=\"whatsapp\",queue=\"held\"} 4",
        "kafclaw_channel_outbox_depth{channel=\"whatsapp\"} 2",
        "kafclaw_incidents_open 1",
        "kafclaw_audit_head_seq 42",
        "kafclaw_auth_lockouts_active 2",
        "process_start_time_seconds 1700000000.25",
        "process_resident_memory_bytes 10485760",
        "kafclaw_store_size_bytes 3145728",
        "kafclaw_store_cache_limit_bytes 33554432",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    for family in [
        "# TYPE kafclaw_auth_failures_total counter",
        "# TYPE kafclaw_channel_inbound_total counter",
        "# TYPE kafclaw_channel_unknown_senders_total counter",
        "# TYPE kafclaw_http_requests_total counter",
        "# TYPE kafclaw_http_request_duration_seconds histogram",
        "# TYPE kafclaw_channel_messages_total counter",
        "# TYPE kafclaw_tool_decisions_total counter",
        "# TYPE kafclaw_model_tokens_total counter",
        "# TYPE kafclaw_incidents_opened_total counter",
        "# TYPE kafclaw_audit_appends_total counter",
        "# TYPE kafclaw_audit_fsync_seconds histogram",
        "# TYPE process_start_time_seconds gauge",
    ] {
        assert!(text.lines().any(|l| l == family), "missing {family:?}");
    }
    let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
    let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
    assert_eq!(types, helps);
    assert!(!text.contains("# EOF"), "0.0.4 has no EOF marker");
    assert!(text.ends_with('\n'));
}

#[test]
fn openmetrics_is_served_with_its_eof_marker() {
    let text = snapshot().render_openmetrics();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE kafclaw_auth_failures counter"));
    assert!(text.contains("kafclaw_auth_failures_total 3"));
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
        let typed = format!("# TYPE {absent} ");
        assert!(!text.contains(&typed), "{absent} in\n{text}");
    }
}

#[test]
fn request_labels_are_bounded() {
    use actix_web::http::{Method, StatusCode};
    let odd = Method::from_bytes(b"BREW").unwrap();
    assert_eq!(edge::method_label(&odd), "other");
    assert_eq!(edge::method_label(&Method::GET), "GET");
    assert_eq!(edge::status_class(StatusCode::MISDIRECTED_REQUEST), "4xx");
    edge::metrics().request(
        None,
        &odd,
        StatusCode::NOT_FOUND,
        std::time::Duration::from_millis(3),
    );
    let text = Snapshot::default().render();
    assert!(text.contains(
        "kafclaw_http_requests_total{route=\"unmatched\",method=\"other\",status_class=\"4xx\"}"
    ));
}
