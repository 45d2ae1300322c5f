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
        (r#"{"webhook_url":"not a url"}"#, "webhook_url"),
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

// ---------------------------------------------------------------------------------------
// The monitor.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::audit::{AppendRecord, AuditError, AuditKind, AuditReceipt};
use crate::executor::HighRiskDenied;
use crate::policy::SenderKind;

/// A stand-in audit log: records appends, or fails them while `fail` is set.
#[derive(Clone, Default)]
struct AuditProbe {
    records: Arc<Mutex<Vec<AppendRecord>>>,
    attempts: Arc<AtomicUsize>,
    fail: Arc<AtomicBool>,
}

impl Actor for AuditProbe {
    type Context = Context<Self>;
}

impl Handler<AppendRecord> for AuditProbe {
    type Result = Result<AuditReceipt, AuditError>;
    fn handle(&mut self, msg: AppendRecord, _: &mut Context<Self>) -> Self::Result {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(AuditError::Write("disk full".into()));
        }
        let mut records = self.records.lock().unwrap();
        records.push(msg);
        Ok(AuditReceipt {
            seq: records.len() as u64,
            hash: "00".into(),
        })
    }
}

impl AuditProbe {
    fn kinds(&self) -> Vec<AuditKind> {
        self.records
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.kind)
            .collect()
    }
    fn records(&self) -> Vec<AppendRecord> {
        self.records.lock().unwrap().clone()
    }
}

/// A stand-in supervisor side: records every action request.
#[derive(Clone, Default)]
struct ActionProbe {
    requests: Arc<Mutex<Vec<RequestAction>>>,
    /// What the audit probe had recorded when each request arrived.
    audited_before: Arc<Mutex<Vec<usize>>>,
    audit: Option<AuditProbe>,
}

impl Actor for ActionProbe {
    type Context = Context<Self>;
}

impl Handler<RequestAction> for ActionProbe {
    type Result = Result<(), ActionFailed>;
    fn handle(&mut self, msg: RequestAction, _: &mut Context<Self>) -> Self::Result {
        if let Some(audit) = &self.audit {
            self.audited_before
                .lock()
                .unwrap()
                .push(audit.records.lock().unwrap().len());
        }
        self.requests.lock().unwrap().push(msg);
        Ok(())
    }
}

impl ActionProbe {
    fn actions(&self) -> Vec<IncidentAction> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.action.clone())
            .collect()
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    monitor: Addr<IncidentMonitor>,
    audit: AuditProbe,
    actions: ActionProbe,
}

fn fixed_clock() -> Clock {
    Arc::new(|| T0)
}

fn links(audit: &AuditProbe, actions: &ActionProbe) -> MonitorLinks {
    MonitorLinks {
        audit: audit.clone().start().recipient(),
        actions: actions.clone().start().recipient(),
        webhook_key: None,
    }
}

fn harness(settings: IncidentSettings) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let db = StoreDb::open(&dir.path().join("timeline.db")).unwrap();
    let audit = AuditProbe::default();
    let actions = ActionProbe {
        audit: Some(audit.clone()),
        ..ActionProbe::default()
    };
    let monitor = IncidentMonitor::new(settings, &db, links(&audit, &actions))
        .unwrap()
        .with_clock(fixed_clock())
        .start();
    Harness {
        _dir: dir,
        monitor,
        audit,
        actions,
    }
}

/// Polls `condition` until it holds (5 s deadline).
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until every owed audit step is done (audited and acted upon).
async fn settle(monitor: &Addr<IncidentMonitor>) {
    eventually("the audit queue to drain", || async {
        let status = monitor.send(GetMonitorStatus).await.unwrap();
        status.pending_audits == 0 && !status.audit_in_flight
    })
    .await;
}

async fn list(monitor: &Addr<IncidentMonitor>) -> Vec<Incident> {
    monitor
        .send(ListIncidents::default())
        .await
        .unwrap()
        .unwrap()
}

/// One signal of any kind.
#[derive(Clone, Debug)]
enum Sig {
    Auth(&'static str, f64),
    Unknown(&'static str, String, f64),
    HighRisk(&'static str, &'static str, f64),
    Executor(&'static str, &'static str),
    Tokens(&'static str, u64, f64),
    Child(&'static str, &'static str, bool),
}

impl Sig {
    async fn send(&self, monitor: &Addr<IncidentMonitor>) {
        let sent = match self.clone() {
            Sig::Auth(ip, t) => monitor.send(AuthFailureSignal {
                ip: ip.into(),
                at: at(t),
            }),
            Sig::Unknown(channel, sender, t) => {
                return monitor
                    .send(UnknownSenderDropped {
                        channel: channel.into(),
                        sender,
                        at: at(t),
                    })
                    .await
                    .unwrap()
            }
            Sig::HighRisk(channel, sender, t) => {
                return monitor
                    .send(DeniedHighRiskSignal {
                        channel: channel.into(),
                        sender: sender.into(),
                        tool: "exec".into(),
                        at: at(t),
                    })
                    .await
                    .unwrap()
            }
            Sig::Executor(channel, sender) => {
                return monitor
                    .send(HighRiskDenied {
                        sender_id: sender.into(),
                        sender: SenderKind::External,
                        channel: channel.into(),
                        session: "s1".into(),
                        tool: "exec".into(),
                        reason: "tier 2 tools are not allowed for this sender (limit 0)".into(),
                    })
                    .await
                    .unwrap()
            }
            Sig::Tokens(channel, tokens, t) => {
                return monitor
                    .send(TokenUsageSignal {
                        channel: channel.into(),
                        tokens,
                        at: at(t),
                    })
                    .await
                    .unwrap()
            }
            Sig::Child(child, reason, gave_up) => {
                return monitor
                    .send(ChildFailureSignal {
                        child: child.into(),
                        reason: reason.into(),
                        gave_up,
                        at: T0,
                    })
                    .await
                    .unwrap()
            }
        };
        sent.await.unwrap();
    }
}

struct TriggerCase {
    name: &'static str,
    /// Every signal; only the last one may open the incident.
    signals: Vec<Sig>,
    /// `None`: no incident at all.
    expect: Option<(IncidentKind, &'static str, Vec<IncidentAction>)>,
}

fn trigger_cases() -> Vec<TriggerCase> {
    let quarantine = |channel: &str, reason: &str| IncidentAction::QuarantineChannel {
        channel: channel.into(),
        reason: reason.into(),
    };
    vec![
        TriggerCase {
            name: "auth failures from one ip",
            signals: (0..10)
                .map(|i| Sig::Auth("10.0.0.9", f64::from(i)))
                .collect(),
            expect: Some((
                IncidentKind::AuthFailures,
                "10.0.0.9",
                vec![IncidentAction::LockoutIp {
                    ip: "10.0.0.9".into(),
                    seconds: 300,
                }],
            )),
        },
        TriggerCase {
            name: "auth failures spread beyond the window",
            signals: (0..9)
                .map(|i| Sig::Auth("10.0.0.9", f64::from(i)))
                .chain([Sig::Auth("10.0.0.9", 60.0)])
                .collect(),
            expect: None,
        },
        TriggerCase {
            name: "global auth storm (each ip below its own threshold)",
            signals: (0..50)
                .map(|i| {
                    Sig::Auth(
                        [
                            "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6",
                        ][i % 6],
                        i as f64 / 2.0,
                    )
                })
                .collect(),
            expect: Some((IncidentKind::AuthStorm, "*", vec![])),
        },
        TriggerCase {
            name: "unknown senders on one channel",
            signals: (0..20)
                .map(|i| Sig::Unknown("whatsapp", format!("+4915{i:07}"), f64::from(i) * 10.0))
                .collect(),
            expect: Some((
                IncidentKind::UnknownSenders,
                "whatsapp",
                vec![quarantine(
                    "whatsapp",
                    "20 messages from unknown senders within 300 s",
                )],
            )),
        },
        TriggerCase {
            name: "denied high-risk attempts by one sender",
            signals: (0..5)
                .map(|i| Sig::HighRisk("whatsapp", "alice", f64::from(i) * 100.0))
                .collect(),
            expect: Some((
                IncidentKind::HighRiskTools,
                "whatsapp/alice",
                vec![
                    IncidentAction::BlockSender {
                        channel: "whatsapp".into(),
                        sender: "alice".into(),
                    },
                    IncidentAction::RestrictSender {
                        channel: "whatsapp".into(),
                        sender: "alice".into(),
                        max_tier: 0,
                    },
                ],
            )),
        },
        TriggerCase {
            name: "denied high-risk attempts reported by the executor",
            signals: (0..5)
                .map(|_| Sig::Executor("bridge:slack", "U123"))
                .collect(),
            expect: Some((
                IncidentKind::HighRiskTools,
                "bridge:slack/U123",
                vec![
                    IncidentAction::BlockSender {
                        channel: "bridge:slack".into(),
                        sender: "U123".into(),
                    },
                    IncidentAction::RestrictSender {
                        channel: "bridge:slack".into(),
                        sender: "U123".into(),
                        max_tier: 0,
                    },
                ],
            )),
        },
        TriggerCase {
            name: "token spike on a channel",
            signals: vec![
                Sig::Tokens("whatsapp", 20_000, 0.0),
                Sig::Tokens("whatsapp", 1, 10.0),
            ],
            expect: Some((
                IncidentKind::TokenSpike,
                "whatsapp",
                vec![quarantine(
                    "whatsapp",
                    "token spike: 20001 tokens within 300 s, above 10 x the hourly average of 0 \
                     per 300 s",
                )],
            )),
        },
        TriggerCase {
            name: "crash loop of a channel bridge",
            signals: (0..5)
                .map(|_| Sig::Child("channel:whatsapp", "panicked", false))
                .chain([Sig::Child("channel:whatsapp", "panicked: boom", true)])
                .collect(),
            expect: Some((
                IncidentKind::CrashLoop,
                "channel:whatsapp",
                vec![quarantine("whatsapp", "crash loop: panicked: boom")],
            )),
        },
        TriggerCase {
            name: "a permanent child given up on: incident only",
            signals: vec![Sig::Child("store", "did not answer a ping in time", true)],
            expect: Some((IncidentKind::CrashLoop, "store", vec![])),
        },
    ]
}

#[actix_rt::test]
async fn each_trigger_opens_one_incident_with_its_actions_exactly_at_the_threshold() {
    for case in trigger_cases() {
        let h = harness(IncidentSettings::default());
        let (last, before) = case.signals.split_last().unwrap();
        for signal in before {
            signal.send(&h.monitor).await;
        }
        settle(&h.monitor).await;
        assert!(
            list(&h.monitor).await.is_empty(),
            "{}: opened one signal early",
            case.name
        );
        assert!(h.audit.records().is_empty(), "{}", case.name);
        last.send(&h.monitor).await;
        settle(&h.monitor).await;
        let incidents = list(&h.monitor).await;
        let Some((kind, subject, actions)) = case.expect else {
            assert!(incidents.is_empty(), "{}: {incidents:?}", case.name);
            continue;
        };
        assert_eq!(incidents.len(), 1, "{}: {incidents:?}", case.name);
        let incident = &incidents[0];
        assert_eq!(
            (incident.kind, incident.subject.as_str()),
            (kind, subject),
            "{}",
            case.name
        );
        assert_eq!(incident.state, IncidentState::Open);
        assert!(incident.evidence.sample_ids.len() <= MAX_SAMPLE_IDS);
        assert_eq!(h.actions.actions(), actions, "{}", case.name);
        assert_eq!(
            h.audit.kinds(),
            vec![AuditKind::IncidentOpened],
            "{}",
            case.name
        );
        let data = &h.audit.records()[0].data;
        assert_eq!(data["incident"], incident.id.as_str());
        assert_eq!(data["kind"], kind.as_str());
        assert_eq!(data["count"], incident.evidence.count);
        // every request went out after the audit record was durable
        assert!(h
            .actions
            .audited_before
            .lock()
            .unwrap()
            .iter()
            .all(|n| *n >= 1));
        if actions.is_empty() {
            assert_eq!(
                incident.actions,
                vec!["none (incident only)"],
                "{}",
                case.name
            );
        } else {
            let described: Vec<String> = actions.iter().map(IncidentAction::describe).collect();
            assert_eq!(incident.actions, described, "{}", case.name);
        }
    }
}

#[actix_rt::test]
async fn a_trigger_while_open_updates_the_incident_instead_of_opening_another() {
    let h = harness(IncidentSettings::default());
    for i in 0..10 {
        Sig::Auth("10.0.0.9", f64::from(i)).send(&h.monitor).await;
    }
    settle(&h.monitor).await;
    // five more: evidence grows, nothing is audited or requested
    for i in 10..15 {
        Sig::Auth("10.0.0.9", f64::from(i)).send(&h.monitor).await;
    }
    settle(&h.monitor).await;
    let incidents = list(&h.monitor).await;
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0].evidence.count, 15);
    assert_eq!(incidents[0].evidence.first_seen, at(0.0));
    assert_eq!(incidents[0].evidence.last_seen, at(14.0));
    assert_eq!(incidents[0].evidence.sample_ids, vec!["10.0.0.9"]);
    assert_eq!(h.audit.kinds(), vec![AuditKind::IncidentOpened]);
    assert_eq!(h.actions.actions().len(), 1);
    // five more make ten since the first firing: re-triggered, audited as an update, acted on
    for i in 15..20 {
        Sig::Auth("10.0.0.9", f64::from(i)).send(&h.monitor).await;
    }
    settle(&h.monitor).await;
    let incidents = list(&h.monitor).await;
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0].evidence.count, 20);
    assert_eq!(
        h.audit.kinds(),
        vec![AuditKind::IncidentOpened, AuditKind::IncidentUpdated]
    );
    assert_eq!(h.audit.records()[1].data["change"], "retriggered");
    assert_eq!(h.actions.actions().len(), 2);
    assert_eq!(incidents[0].actions.len(), 2);

    // once resolved, the next trigger opens a new incident
    let id = incidents[0].id.clone();
    h.monitor
        .send(ResolveIncident {
            id: id.clone(),
            note: None,
            actor: "ops".into(),
        })
        .await
        .unwrap()
        .unwrap();
    for i in 20..30 {
        Sig::Auth("10.0.0.9", f64::from(i)).send(&h.monitor).await;
    }
    settle(&h.monitor).await;
    let incidents = list(&h.monitor).await;
    assert_eq!(incidents.len(), 2);
    assert_eq!(incidents[0].state, IncidentState::Open);
    assert_ne!(incidents[0].id, id);
    assert_eq!(incidents[1].state, IncidentState::Resolved);
}

#[actix_rt::test]
async fn acknowledge_and_resolve_are_audited_and_refuse_unknown_or_resolved_incidents() {
    let h = harness(IncidentSettings::default());
    let opened = h
        .monitor
        .send(OpenIncident {
            subject: "lockdown".into(),
            reason: "operator saw odd traffic".into(),
            actor: "admin-token".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(opened.kind, IncidentKind::Manual);
    assert_eq!(opened.notes[0].text, "operator saw odd traffic");
    assert!(
        h.actions.actions().is_empty(),
        "the caller carries out a lockdown"
    );

    let acked = h
        .monitor
        .send(AcknowledgeIncident {
            id: opened.id.clone(),
            note: Some("looking".into()),
            actor: "ops".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(acked.state, IncidentState::Acknowledged);
    assert_eq!(acked.notes.len(), 2);
    let open_only = h
        .monitor
        .send(ListIncidents {
            state: Some(IncidentState::Open),
            limit: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(open_only.is_empty());

    let resolved = h
        .monitor
        .send(ResolveIncident {
            id: opened.id.clone(),
            note: None,
            actor: "ops".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resolved.state, IncidentState::Resolved);

    let again = h
        .monitor
        .send(ResolveIncident {
            id: opened.id.clone(),
            note: None,
            actor: "ops".into(),
        })
        .await
        .unwrap();
    assert!(
        matches!(again, Err(IncidentError::AlreadyResolved { .. })),
        "{again:?}"
    );
    let unknown = h
        .monitor
        .send(AcknowledgeIncident {
            id: "inc-0000000000000bad".into(),
            note: None,
            actor: "ops".into(),
        })
        .await
        .unwrap();
    assert!(
        matches!(unknown, Err(IncidentError::UnknownIncident { .. })),
        "{unknown:?}"
    );

    let records = h.audit.records();
    let changes: Vec<(AuditKind, String, String)> = records
        .iter()
        .map(|r| {
            (
                r.kind,
                r.actor.clone(),
                r.data["change"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            (
                AuditKind::IncidentOpened,
                "admin-token".into(),
                "opened".into()
            ),
            (
                AuditKind::IncidentUpdated,
                "ops".into(),
                "acknowledged".into()
            ),
            (AuditKind::IncidentUpdated, "ops".into(), "resolved".into()),
        ]
    );
    // operator text stays out of the audit log
    for record in &records {
        let data = record.data.to_string();
        assert!(
            !data.contains("odd traffic") && !data.contains("looking"),
            "{data}"
        );
    }
}

#[actix_rt::test]
async fn an_operator_change_is_refused_when_the_audit_append_fails() {
    let h = harness(IncidentSettings::default());
    h.audit.fail.store(true, Ordering::SeqCst);
    let refused = h
        .monitor
        .send(OpenIncident {
            subject: "lockdown".into(),
            reason: "test".into(),
            actor: "ops".into(),
        })
        .await
        .unwrap();
    assert!(
        matches!(refused, Err(IncidentError::Audit(_))),
        "{refused:?}"
    );
    assert!(list(&h.monitor).await.is_empty(), "nothing changed");
}

#[actix_rt::test]
async fn no_action_is_requested_while_the_audit_append_fails_and_it_is_retried_on_the_next_signal()
{
    let h = harness(IncidentSettings::default());
    h.audit.fail.store(true, Ordering::SeqCst);
    for i in 0..10 {
        Sig::Auth("10.0.0.9", f64::from(i)).send(&h.monitor).await;
    }
    eventually("the audit append to fail", || async {
        h.monitor
            .send(GetMonitorStatus)
            .await
            .unwrap()
            .audit_failing
    })
    .await;
    assert!(
        h.actions.actions().is_empty(),
        "no action before a durable audit record"
    );
    let status = h.monitor.send(GetMonitorStatus).await.unwrap();
    assert_eq!((status.active_incidents, status.pending_audits), (1, 1));

    h.audit.fail.store(false, Ordering::SeqCst);
    Sig::Auth("10.0.0.9", 10.0).send(&h.monitor).await;
    settle(&h.monitor).await;
    assert_eq!(h.audit.kinds(), vec![AuditKind::IncidentOpened]);
    assert_eq!(
        h.actions.actions(),
        vec![IncidentAction::LockoutIp {
            ip: "10.0.0.9".into(),
            seconds: 300
        }]
    );
    assert!(h.audit.attempts.load(Ordering::SeqCst) >= 2);
}

#[actix_rt::test]
async fn incidents_and_owed_audit_steps_survive_a_restart_over_the_same_store() {
    use crate::supervisor::{InjectPanic, RestartPolicy, SupervisorBuilder, SupervisorSettings};

    let dir = tempfile::tempdir().unwrap();
    let db = StoreDb::open(&dir.path().join("timeline.db")).unwrap();
    let audit = AuditProbe::default();
    let actions = ActionProbe::default();
    audit.fail.store(true, Ordering::SeqCst);
    let mut builder = SupervisorBuilder::new(SupervisorSettings {
        initial_backoff_ms: 5,
        ..SupervisorSettings::default()
    });
    let factory_db = db.clone();
    let factory_links = links(&audit, &actions);
    let slot = builder.child(
        "incidents",
        RestartPolicy::Permanent,
        Box::new(move || {
            IncidentMonitor::new(
                IncidentSettings::default(),
                &factory_db,
                factory_links.clone(),
            )
            .map(|m| m.with_clock(fixed_clock()))
            .map_err(|e| e.to_string())
        }),
    );
    let (_supervisor, _events) = builder.start().unwrap();
    let first = slot.addr().unwrap();

    // an acknowledged incident, and one whose audit (and so its action) is still owed
    audit.fail.store(false, Ordering::SeqCst);
    for i in 0..20 {
        Sig::Unknown("whatsapp", format!("s{i}"), f64::from(i))
            .send(&first)
            .await;
    }
    settle(&first).await;
    let acked = list(&first).await[0].id.clone();
    first
        .send(AcknowledgeIncident {
            id: acked.clone(),
            note: None,
            actor: "ops".into(),
        })
        .await
        .unwrap()
        .unwrap();
    audit.fail.store(true, Ordering::SeqCst);
    for i in 0..10 {
        Sig::Auth("10.0.0.9", f64::from(i)).send(&first).await;
    }
    eventually("the audit append to fail", || async {
        first.send(GetMonitorStatus).await.unwrap().audit_failing
    })
    .await;
    assert_eq!(actions.actions().len(), 1, "only the quarantine so far");

    audit.fail.store(false, Ordering::SeqCst);
    first.do_send(InjectPanic("boom".into()));
    eventually("a fresh monitor", || async {
        slot.addr().is_some_and(|a| a.connected() && !a.eq(&first))
    })
    .await;
    let second = slot.addr().unwrap();
    settle(&second).await;
    let incidents = list(&second).await;
    let states: Vec<(IncidentKind, IncidentState)> =
        incidents.iter().map(|i| (i.kind, i.state)).collect();
    assert_eq!(
        states,
        vec![
            (IncidentKind::AuthFailures, IncidentState::Open),
            (IncidentKind::UnknownSenders, IncidentState::Acknowledged),
        ]
    );
    // the owed audit step went out from the store's marker, then its action
    assert_eq!(
        audit.kinds(),
        vec![
            AuditKind::IncidentOpened,
            AuditKind::IncidentUpdated,
            AuditKind::IncidentOpened
        ]
    );
    assert_eq!(actions.actions().len(), 2);
    // the acknowledged incident is still the one that collects evidence
    for i in 20..40 {
        Sig::Unknown("whatsapp", format!("s{i}"), 100.0 + f64::from(i))
            .send(&second)
            .await;
    }
    settle(&second).await;
    let incidents = list(&second).await;
    assert_eq!(incidents.len(), 2);
    let whatsapp = incidents.iter().find(|i| i.id == acked).unwrap();
    assert_eq!(whatsapp.state, IncidentState::Acknowledged);
    assert_eq!(whatsapp.evidence.count, 40);
}

#[actix_rt::test]
async fn evidence_holds_ids_and_counts_never_text() {
    let h = harness(IncidentSettings::default());
    let long = "x".repeat(5_000);
    for i in 0..20 {
        let sender = if i == 0 {
            format!("{long}\n\u{1b}[31m")
        } else {
            format!("+4915{i:07}")
        };
        Sig::Unknown("whatsapp", sender, f64::from(i))
            .send(&h.monitor)
            .await;
    }
    settle(&h.monitor).await;
    let incident = list(&h.monitor).await.remove(0);
    let json = serde_json::to_value(&incident).unwrap();
    let keys: Vec<&str> = json["evidence"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        vec![
            "count",
            "first_seen",
            "last_seen",
            "sample_ids",
            "window_seconds"
        ]
    );
    let samples = &incident.evidence.sample_ids;
    assert_eq!(samples.len(), MAX_SAMPLE_IDS);
    assert!(samples
        .iter()
        .all(|s| s.chars().count() <= 128 && !s.chars().any(char::is_control)));
    let record = h.audit.records().remove(0).data.to_string();
    assert!(
        !record.contains("xxxx") && !record.contains("+4915"),
        "{record}"
    );
}

// ---------------------------------------------------------------------------------------
// Snapshots.

#[test]
fn a_snapshot_under_load_is_consistent_verifies_and_detects_a_flipped_byte() {
    use crate::audit::{self, AuditKey, AuditLog, AuditSettings};
    use crate::fsutil::mode_of;
    use crate::paths::Home;
    use crate::store::TreeName;

    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    home.ensure_state_dirs().unwrap();
    let db = StoreDb::open(&home.store_dir()).unwrap();
    let key = AuditKey::from_bytes([7u8; 32]);
    // small segments, so that the log rotates while the snapshot is taken
    let settings = AuditSettings {
        segment_max_bytes: 4_096,
    };
    let mut log = AuditLog::open(&home.audit_dir(), key.clone(), &settings).unwrap();
    let timeline = db.tree(TreeName::Timeline).unwrap();
    for i in 0..100u64 {
        log.append(
            AuditKind::ControlApplied,
            "ops",
            "before",
            &serde_json::json!({"i": i}),
        )
        .unwrap();
        timeline.insert(i.to_be_bytes(), b"before").unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let timeline = timeline.clone();
        std::thread::spawn(move || {
            let mut i = 100u64;
            while !stop.load(Ordering::SeqCst) {
                log.append(
                    AuditKind::ControlApplied,
                    "ops",
                    "during",
                    &serde_json::json!({"i": i}),
                )
                .unwrap();
                timeline.insert(i.to_be_bytes(), b"during").unwrap();
                i += 1;
            }
            i
        })
    };
    let info = create_snapshot(&home, &db, Some("under-load"), T0).unwrap();
    let second = create_snapshot(&home, &db, Some("under-load"), T0).unwrap();
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();
    assert!(written > 100);

    assert_eq!(
        info.path,
        home.snapshots_dir().join("20261125T120000Z-under-load")
    );
    assert_eq!(
        second.path,
        home.snapshots_dir().join("20261125T120000Z-under-load-2")
    );
    verify_snapshot(&info.path).unwrap();
    verify_snapshot(&second.path).unwrap();
    let report = audit::verify(&info.path.join("audit"), &key, None).unwrap();
    assert!(report.head_seq >= 100);
    assert_eq!(report.head_seq, info.audit_head.seq);
    assert_eq!(report.head_hash, info.audit_head.hash);
    assert!(info
        .files
        .iter()
        .any(|f| f.path == "audit/audit-000001.jsonl"));
    assert!(info
        .files
        .iter()
        .any(|f| f.path.starts_with("timeline.db/")));

    for dir in [
        &info.path,
        &info.path.join("audit"),
        &info.path.join("timeline.db"),
    ] {
        assert_eq!(mode_of(dir).unwrap(), 0o700, "{}", dir.display());
    }
    assert_eq!(mode_of(&info.manifest_path).unwrap(), 0o600);
    for file in info.files.iter().filter(|f| f.path.starts_with("audit/")) {
        assert_eq!(mode_of(&info.path.join(&file.path)).unwrap(), 0o600);
    }

    // the exported store holds what was written before the snapshot
    let copy = tempfile::tempdir().unwrap();
    let copied_db = copy.path().join("timeline.db");
    std::fs::create_dir(&copied_db).unwrap();
    for entry in walk(&info.path.join("timeline.db")) {
        let target = copied_db.join(entry.strip_prefix(info.path.join("timeline.db")).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &target).unwrap();
    }
    let reopened = StoreDb::open(&copied_db).unwrap();
    let tree = reopened.tree(TreeName::Timeline).unwrap();
    for i in 0..100u64 {
        assert_eq!(
            tree.get(i.to_be_bytes()).unwrap().as_deref(),
            Some(&b"before"[..])
        );
    }

    // one flipped byte in a copied file is caught
    let segment = info.path.join("audit/audit-000001.jsonl");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[10] ^= 0x01;
    std::fs::write(&segment, bytes).unwrap();
    assert!(matches!(
        verify_snapshot(&info.path),
        Err(SnapshotError::FileChanged { path }) if path == "audit/audit-000001.jsonl"
    ));
    // so is an extra file
    std::fs::write(second.path.join("audit/extra"), b"x").unwrap();
    assert!(matches!(
        verify_snapshot(&second.path),
        Err(SnapshotError::UnexpectedFile { .. })
    ));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn snapshot_labels_are_checked_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let home = crate::paths::Home::new(dir.path());
    let db = StoreDb::open(&home.store_dir()).unwrap();
    let long = "a".repeat(33);
    for bad in [
        "Upper",
        "../up",
        "with space",
        "dot.ted",
        "ü",
        long.as_str(),
    ] {
        assert!(
            matches!(
                create_snapshot(&home, &db, Some(bad), T0),
                Err(SnapshotError::InvalidLabel)
            ),
            "{bad}"
        );
    }
    assert!(!home.snapshots_dir().exists());
    // no label, and no audit log yet: an empty chain
    let info = create_snapshot(&home, &db, None, T0).unwrap();
    assert_eq!(info.path, home.snapshots_dir().join("20261125T120000Z"));
    assert_eq!(info.audit_head.seq, 0);
    verify_snapshot(&info.path).unwrap();
    let ok = create_snapshot(&home, &db, Some("pre-release-2"), T0).unwrap();
    assert!(ok.path.ends_with("20261125T120000Z-pre-release-2"));
}

// ---------------------------------------------------------------------------------------
// The webhook, against a real local HTTP/1.1 server.

use std::collections::HashMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request the hook server received.
#[derive(Clone, Debug)]
struct HookRequest {
    request_line: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

struct HookServer {
    url: String,
    requests: Arc<Mutex<Vec<HookRequest>>>,
}

/// A tiny HTTP/1.1 server answering the n-th request with `statuses[n]` (then 200).
async fn hook_server(statuses: Vec<u16>) -> HookServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&requests);
    tokio::spawn(async move {
        let mut served = 0usize;
        while let Ok((mut socket, _)) = listener.accept().await {
            let request = read_request(&mut socket).await;
            let status = statuses.get(served).copied().unwrap_or(200);
            served += 1;
            seen.lock().unwrap().push(request);
            let response = format!(
                "HTTP/1.1 {status} Status\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    HookServer { url, requests }
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> HookRequest {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = socket.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the headers ended");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap().to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .map_or(0, |v| v.parse().unwrap());
    while buf.len() < head_end + len {
        let n = socket.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the body ended");
        buf.extend_from_slice(&chunk[..n]);
    }
    HookRequest {
        request_line,
        headers,
        body: buf[head_end..head_end + len].to_vec(),
    }
}

/// Checks the signature independently of the code under test.
fn signature_verifies(key: &[u8; 32], request: &HookRequest) -> bool {
    use hmac::{Hmac, KeyInit, Mac};
    let timestamp = &request.headers["x-kafclaw-timestamp"];
    let Some(hex_sig) = request.headers["x-kafclaw-signature"].strip_prefix("v1=") else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&request.body);
    mac.verify_slice(&hex::decode(hex_sig).unwrap()).is_ok()
}

fn fast_retry(retries: u32) -> RetryPolicy {
    RetryPolicy {
        retries,
        initial_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
    }
}

#[actix_rt::test]
async fn a_new_incident_is_posted_signed_to_the_webhook_and_retried_after_a_500() {
    let server = hook_server(vec![500, 200]).await;
    let key = [42u8; 32];
    let dir = tempfile::tempdir().unwrap();
    let db = StoreDb::open(&dir.path().join("timeline.db")).unwrap();
    let audit = AuditProbe::default();
    let actions = ActionProbe::default();
    let settings = IncidentSettings {
        webhook_url: Some(server.url.clone()),
        owner: Some("sec-team".into()),
        ..IncidentSettings::default()
    };
    let links = MonitorLinks {
        webhook_key: Some(WebhookKey::from_bytes(key)),
        ..links(&audit, &actions)
    };
    let monitor = IncidentMonitor::new(settings, &db, links)
        .unwrap()
        .with_notify_retry(fast_retry(5))
        .start();
    for i in 0..10 {
        Sig::Auth("10.0.0.9", f64::from(i)).send(&monitor).await;
    }
    settle(&monitor).await;
    eventually("the retried POST", || async {
        server.requests.lock().unwrap().len() >= 2
    })
    .await;
    let incident = list(&monitor).await.remove(0);
    let requests = server.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "one failure, one retry that succeeded");
    for request in &requests {
        assert_eq!(request.request_line, "POST /hook HTTP/1.1");
        assert_eq!(request.headers["content-type"], "application/json");
        assert!(signature_verifies(&key, request), "{request:?}");
        assert!(!signature_verifies(&[0u8; 32], request));
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["event"], "incident.opened");
        assert_eq!(body["owner"], "sec-team");
        assert_eq!(body["incident"]["id"], incident.id.as_str());
        assert_eq!(body["incident"]["kind"], "auth_failures");
        assert_eq!(body["incident"]["evidence"]["count"], 10);
    }
}

#[actix_rt::test]
async fn the_webhook_gives_up_after_its_retries_and_does_not_retry_a_client_error() {
    let key = WebhookKey::from_bytes([1u8; 32]);
    let failing = hook_server(vec![503, 503, 503, 503]).await;
    let notifier = WebhookNotifier::new(&failing.url, key.clone())
        .unwrap()
        .with_retry(fast_retry(2));
    let outcome = notifier.deliver(b"{}").await;
    assert!(
        matches!(outcome, Err(NotifyError::GaveUp { attempts: 3, .. })),
        "{outcome:?}"
    );
    assert_eq!(failing.requests.lock().unwrap().len(), 3);

    let refusing = hook_server(vec![403]).await;
    let notifier = WebhookNotifier::new(&refusing.url, key.clone())
        .unwrap()
        .with_retry(fast_retry(5));
    let outcome = notifier.deliver(b"{}").await;
    assert!(
        matches!(outcome, Err(NotifyError::Rejected { status: 403 })),
        "{outcome:?}"
    );
    assert_eq!(refusing.requests.lock().unwrap().len(), 1);
    // the URL (which may carry a credential) never shows in an error or a Debug
    let secret_url = format!("{}?token=hunter2", refusing.url);
    let notifier = WebhookNotifier::new(&secret_url, key).unwrap();
    assert!(!format!("{notifier:?}").contains("hunter2"));
}

#[test]
fn a_webhook_url_without_a_key_is_refused() {
    let db = StoreDb::temporary().unwrap();
    let system = actix::System::new();
    system.block_on(async {
        let audit = AuditProbe::default();
        let actions = ActionProbe::default();
        let settings = IncidentSettings {
            webhook_url: Some("https://hooks.example.org/x".into()),
            ..IncidentSettings::default()
        };
        let refused = IncidentMonitor::new(settings, &db, links(&audit, &actions));
        assert!(matches!(refused, Err(IncidentError::WebhookKeyMissing)));
    });
}

#[actix_rt::test]
async fn incidents_keyed_by_a_client_are_bounded_and_one_more_is_counted_not_opened() {
    let dir = tempfile::tempdir().unwrap();
    let db = StoreDb::open(&dir.path().join("timeline.db")).unwrap();
    let audit = AuditProbe::default();
    let actions = ActionProbe::default();
    let settings = IncidentSettings {
        auth_failures_per_ip: 1,
        ..IncidentSettings::default()
    };
    let monitor = IncidentMonitor::new(settings, &db, links(&audit, &actions))
        .unwrap()
        .with_clock(fixed_clock())
        .with_max_active(3)
        .start();
    let full = || crate::metrics::metrics().incident_signals_dropped("incidents_full");
    let before = full();
    let ips = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"];
    for (i, ip) in ips.into_iter().enumerate() {
        Sig::Auth(ip, i as f64).send(&monitor).await;
    }
    // A subject already open still counts on its incident (no new one, nothing dropped).
    Sig::Auth("10.0.0.1", 9.0).send(&monitor).await;
    settle(&monitor).await;
    let opened: Vec<String> = list(&monitor)
        .await
        .into_iter()
        .filter(|i| i.kind == IncidentKind::AuthFailures)
        .map(|i| i.subject)
        .collect();
    assert_eq!(opened.len(), 3, "{opened:?}");
    assert!(!opened.iter().any(|s| s == "10.0.0.4" || s == "10.0.0.5"));
    // Other tests share the process-wide counter: at least our two.
    assert!(full() >= before + 2, "{} -> {}", before, full());
    let status = monitor.send(GetMonitorStatus).await.unwrap();
    assert_eq!(status.active_incidents, 3);
}
