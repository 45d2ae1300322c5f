use std::time::Duration;

use time::macros::datetime;
use time::OffsetDateTime;

use super::record::{AuditStep, IncidentStore, PendingAudit};
use super::window::{EventWindow, SpikeRule, SubjectMap, TokenBuckets};
use super::*;
use crate::store::StoreDb;

const T0: OffsetDateTime = datetime!(2026-11-25 12:00:00 UTC);

fn at(seconds: f64) -> OffsetDateTime {
    T0 + Duration::from_secs_f64(seconds)
}

// ---------------------------------------------------------------------------------------
// Windows.

/// Feeds events at the given offsets (seconds) and returns the 1-based indices that fired.
fn check_window(window_seconds: u64, threshold: u32, offsets: &[f64], expected: &[usize]) {
    let mut window = EventWindow::default();
    let fired: Vec<usize> = offsets
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            window
                .record(at(*t), Some("x"), window_seconds, threshold)
                .map(|_| i + 1)
        })
        .collect();
    assert_eq!(
        fired, expected,
        "window {window_seconds}s threshold {threshold} offsets {offsets:?}"
    );
}

#[test]
fn event_window_fires_exactly_at_the_threshold_and_expires_old_events() {
    let ten_in_a_row: Vec<f64> = (0..10).map(f64::from).collect();
    let nine_then_late: Vec<f64> = (0..9).map(f64::from).chain([60.0]).collect();
    let nine_then_just_in_time: Vec<f64> = (0..9).map(|_| 0.0).chain([59.999]).collect();
    let twenty: Vec<f64> = (0..20).map(f64::from).collect();
    let cases: &[(u64, u32, &[f64], &[usize])] = &[
        (60, 10, &ten_in_a_row, &[10]),
        (60, 10, &ten_in_a_row[..9], &[]),
        // the first event is exactly 60 s old when the tenth arrives: no longer counted
        (60, 10, &nine_then_late, &[]),
        (60, 10, &nine_then_just_in_time, &[10]),
        // the window starts over after firing
        (60, 10, &twenty, &[10, 20]),
        (60, 1, &[0.0, 0.0], &[1, 2]),
        // threshold 0 disables the trigger
        (60, 0, &ten_in_a_row, &[]),
    ];
    for (window, threshold, offsets, expected) in cases {
        check_window(*window, *threshold, offsets, expected);
    }
}

#[test]
fn event_window_reports_evidence_and_keeps_at_most_threshold_events() {
    let mut window = EventWindow::default();
    for i in 0..4 {
        assert!(window
            .record(at(f64::from(i)), Some(&format!("s{}", i % 2)), 600, 5)
            .is_none());
    }
    assert!(window.len() <= 5);
    let fired = window.record(at(10.0), Some("s9"), 600, 5).unwrap();
    assert_eq!(fired.count, 5);
    assert_eq!(fired.first_seen, at(0.0));
    assert_eq!(fired.last_seen, at(10.0));
    assert_eq!(fired.samples, vec!["s0", "s1", "s9"]);
    assert_eq!(window.len(), 0);
}

#[test]
fn event_window_tolerates_a_clock_stepping_back() {
    let mut window = EventWindow::default();
    for _ in 0..9 {
        window.record(at(100.0), None, 60, 10);
    }
    // 50 s "earlier": counted as now, so it does not expire the others nor get lost
    assert!(window.record(at(50.0), None, 60, 10).is_some());
}

fn rule() -> SpikeRule {
    SpikeRule {
        window_seconds: 300,
        factor: 10.0,
        min_tokens: 20_000,
    }
}

#[test]
fn token_spike_needs_both_the_factor_and_the_minimum() {
    // (baseline tokens per 5 min over the hour before, burst tokens in 5 min, spike?)
    let cases: &[(u64, u64, bool)] = &[
        (0, 20_000, false), // not above the minimum
        (0, 20_001, true),  // a silent channel suddenly burning tokens
        (1_000, 10_001, false),
        (2_500, 25_000, false), // exactly 10× is not above 10×
        (2_500, 25_001, true),
        (5_000, 40_000, false), // above the minimum but not 10×
    ];
    for (baseline, burst, spike) in cases {
        let mut buckets = TokenBuckets::default();
        // the trailing hour: twelve 5-minute periods of `baseline` tokens, ending at t = 3600
        for period in 0..12 {
            let start = f64::from(period) * 300.0;
            if *baseline > 0 {
                assert!(buckets.record(at(start), *baseline, rule()).is_none());
            }
        }
        // the burst within the next five minutes, in two halves
        let first = buckets.record(at(3_700.0), burst / 2, rule());
        assert!(first.is_none(), "half of {burst} alone is no spike");
        let result = buckets.record(at(3_800.0), burst - burst / 2, rule());
        assert_eq!(
            result.is_some(),
            *spike,
            "baseline {baseline} burst {burst}: {result:?}"
        );
        if let Some(found) = result {
            assert_eq!(found.recent, *burst);
            assert_eq!(found.baseline, *baseline);
            assert_eq!(found.first_seen, at(3_700.0));
            // fires once: the next usage starts a fresh window
            assert!(buckets.record(at(3_801.0), 1, rule()).is_none());
        }
    }
}

#[test]
fn token_usage_older_than_the_window_moves_into_the_baseline() {
    let mut buckets = TokenBuckets::default();
    assert!(buckets.record(at(0.0), 15_000, rule()).is_none());
    // 15 000 + 15 000 within five minutes would be a spike; ten minutes apart it is not, and the
    // first 15 000 now count towards the baseline.
    assert!(buckets.record(at(600.0), 15_000, rule()).is_none());
}

#[derive(Default)]
struct Probe(Option<i128>);

impl window::Recency for Probe {
    fn last_nanos(&self) -> Option<i128> {
        self.0
    }
    fn is_idle(&self, _: i128) -> bool {
        false
    }
}

#[test]
fn subject_map_is_bounded_and_drops_the_least_recently_seen() {
    let mut map: SubjectMap<EventWindow> = SubjectMap::new(100);
    for i in 0..10_000u32 {
        map.entry(&format!("10.0.{}.{}", i / 256, i % 256), at(f64::from(i)))
            .record(at(f64::from(i)), None, 1_000_000, 10);
        assert!(map.len() <= 100);
    }
    // the most recent subject survived; an early one was dropped (a fresh window)
    assert!(map.entry("10.0.39.15", at(10_000.0)).len() == 1);
    assert!(map.entry("10.0.0.0", at(10_000.0)).len() == 0);

    let mut probes: SubjectMap<Probe> = SubjectMap::new(4);
    for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
        probes.entry(name, at(0.0)).0 = Some(i as i128);
    }
    probes.entry("e", at(0.0)).0 = Some(10);
    assert_eq!(
        probes.len(),
        3,
        "dropped down to three quarters, then added e"
    );
    probes.entry("c", at(0.0));
    probes.entry("d", at(0.0));
    assert_eq!(probes.len(), 3, "c and d were kept (most recent)");
}

// ---------------------------------------------------------------------------------------
// The store.

fn incident(id: &str, kind: IncidentKind, subject: &str, state: IncidentState) -> Incident {
    Incident {
        id: id.into(),
        kind,
        subject: subject.into(),
        state,
        opened_at: T0,
        updated_at: T0,
        evidence: Evidence {
            count: 10,
            window_seconds: 60,
            first_seen: T0,
            last_seen: T0,
            sample_ids: vec!["10.0.0.9".into()],
            baseline: None,
        },
        actions: vec![],
        notes: vec![],
    }
}

#[test]
fn incident_store_lists_newest_first_filters_and_keeps_pending_steps() {
    let dir = tempfile::tempdir().unwrap();
    let db = StoreDb::open(&dir.path().join("timeline.db")).unwrap();
    let store = IncidentStore::open(&db).unwrap();
    let a = store.new_id().unwrap();
    let b = store.new_id().unwrap();
    let c = store.new_id().unwrap();
    assert!(a < b && b < c, "ids increase: {a} {b} {c}");
    store
        .put(&incident(
            &a,
            IncidentKind::AuthFailures,
            "10.0.0.9",
            IncidentState::Resolved,
        ))
        .unwrap();
    let pending = PendingAudit {
        step: AuditStep::Opened,
        actions: vec![IncidentAction::LockoutIp {
            ip: "10.0.0.8".into(),
            seconds: 300,
        }],
        notify: true,
    };
    store
        .put_with_pending(
            &incident(
                &b,
                IncidentKind::AuthFailures,
                "10.0.0.8",
                IncidentState::Open,
            ),
            &pending,
        )
        .unwrap();
    store
        .put(&incident(
            &c,
            IncidentKind::UnknownSenders,
            "whatsapp",
            IncidentState::Acknowledged,
        ))
        .unwrap();

    let ids = |list: Vec<Incident>| list.into_iter().map(|i| i.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list(None, 100).unwrap()),
        vec![c.clone(), b.clone(), a.clone()]
    );
    assert_eq!(
        ids(store.list(None, 2).unwrap()),
        vec![c.clone(), b.clone()]
    );
    assert_eq!(
        ids(store.list(Some(IncidentState::Open), 100).unwrap()),
        vec![b.clone()]
    );
    assert_eq!(ids(store.active().unwrap()), vec![b.clone(), c.clone()]);
    assert_eq!(store.pending().unwrap(), vec![(b.clone(), pending)]);
    store.clear_pending(&b).unwrap();
    assert!(store.pending().unwrap().is_empty());
    assert_eq!(
        store.get(&a).unwrap().unwrap().state,
        IncidentState::Resolved
    );
    assert!(store.get("inc-nope").unwrap().is_none());
}

#[test]
fn pending_steps_merge_an_open_stays_an_open() {
    let lockout = |seconds| IncidentAction::LockoutIp {
        ip: "10.0.0.9".into(),
        seconds,
    };
    let opened = PendingAudit {
        step: AuditStep::Opened,
        actions: vec![lockout(300)],
        notify: true,
    };
    let updated = PendingAudit {
        step: AuditStep::Updated,
        actions: vec![lockout(600)],
        notify: false,
    };
    assert_eq!(
        opened.clone().merge(updated.clone()),
        PendingAudit {
            step: AuditStep::Opened,
            actions: vec![lockout(600)],
            notify: true
        }
    );
    let quiet = PendingAudit {
        step: AuditStep::Updated,
        actions: vec![],
        notify: false,
    };
    assert_eq!(updated.clone().merge(quiet), updated);
}

#[test]
fn settings_defaults_match_the_contract_and_validate() {
    let defaults = IncidentSettings::default();
    let parsed: IncidentSettings = serde_json::from_str("{}").unwrap();
    assert_eq!(parsed, defaults);
    assert_eq!(defaults.auth_failures_per_ip, 10);
    assert_eq!(defaults.auth_failures_global, 50);
    assert_eq!(defaults.unknown_senders_per_channel, 20);
    assert_eq!(defaults.denied_high_risk_per_sender, 5);
    assert_eq!(defaults.token_spike_min_tokens, 20_000);
    assert!(defaults.validate().is_ok());
    assert!(serde_json::from_str::<IncidentSettings>(r#"{"auth_failure_per_ip":3}"#).is_err());
    let cases: &[(&str, &str)] = &[
        (
            r#"{"auth_failures_window_seconds":0}"#,
            "auth_failures_window_seconds",
        ),
        (r#"{"token_spike_factor":-1.0}"#, "token_spike_factor"),
        (r#"{"webhook_url":"ftp://example.org/x"}"#, "webhook_url"),
    ];
    for (json, key) in cases {
        let settings: IncidentSettings = serde_json::from_str(json).unwrap();
        assert_eq!(settings.validate().unwrap_err().key, *key, "{json}");
    }
    let with_url = IncidentSettings {
        webhook_url: Some("https://hooks.example.org/T000/secret-part".into()),
        ..IncidentSettings::default()
    };
    assert!(with_url.validate().is_ok());
    assert!(!format!("{with_url:?}").contains("secret-part"));
}
