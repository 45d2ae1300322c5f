//! Bounded state under a simulated clock (the full 200,000-message run is
//! `cargo run --release -p kafclaw-actors --example retention_bench`, whose figures are in the
//! README), short retention and live messages.

use super::simulation::{drive, simulate, DAY_MS};
use super::*;
use crate::channel::inbox::{Accepted, InboxState, NewEntry};
use crate::channel::{InboundMessage, MessageKind, SenderKind};

#[test]
fn messages_over_sixty_simulated_days_stay_within_one_retention() {
    // 12,000 messages over 60 days, retention 30: every kind stays within 200 × 31.
    let run = simulate(12_000, 60, 30);
    assert!(run.peak_records >= 200 * 29, "{run:?}");
    assert!(run.peak_records <= run.bound, "{run:?}");
}

#[test]
fn dedupe_keys_outlive_a_short_retention_by_the_providers_retry_window() {
    let db = StoreDb::temporary().unwrap();
    let state = db.state().unwrap();
    let settings = RetentionSettings {
        retention: Duration::from_secs(86_400),
        ..RetentionSettings::default()
    };
    let t0 = 1_700_000_000_000i64;
    let seq = drive(&db, &state, 1, t0);
    let inbox = Inbox::over(state.clone());
    // Two days on: the record is gone (retention 1 day), its idempotency key is not.
    prune_pass(&db, &state, &settings, t0 + 2 * DAY_MS, |_| {}).unwrap();
    assert!(inbox.get("whatsapp", seq).unwrap().is_none());
    assert!(inbox.known("whatsapp", "wamid.1").unwrap().is_some());
    // Past seven days it goes too.
    let report = prune_pass(&db, &state, &settings, t0 + 8 * DAY_MS, |_| {}).unwrap();
    assert_eq!(report.dedupe_keys, 1);
    assert!(inbox.known("whatsapp", "wamid.1").unwrap().is_none());
}

#[test]
fn live_messages_are_never_pruned_whatever_their_age() {
    let db = StoreDb::temporary().unwrap();
    let state = db.state().unwrap();
    let inbox = Inbox::over(state.clone());
    let held = NewEntry {
        state: InboxState::Held,
        sender_kind: Some(SenderKind::External),
        session_key: Some("s".into()),
        reason: None,
    };
    let message = InboundMessage {
        message_id: "old-held".into(),
        sender_id: "491".into(),
        chat_id: "491".into(),
        thread_id: None,
        text: Some("held".into()),
        kind: MessageKind::Text,
        timestamp: 0,
        is_group: false,
        mentioned: false,
        reply_to: None,
        content: None,
        attachments: Vec::new(),
    };
    let Accepted::New(seq) = inbox.accept("whatsapp", &message, held, 0).unwrap() else {
        panic!("not stored")
    };
    let report = prune_pass(
        &db,
        &state,
        &RetentionSettings::default(),
        400 * DAY_MS,
        |_| {},
    )
    .unwrap();
    assert_eq!(report.inbox_records, 0);
    assert!(inbox.get("whatsapp", seq).unwrap().is_some());
    assert!(inbox.known("whatsapp", "old-held").unwrap().is_some());
}

#[test]
fn the_pass_interval_follows_a_short_retention_within_its_bounds() {
    let pace = |secs| RetentionSettings::for_retention(Duration::from_secs(secs)).interval;
    assert_eq!(pace(30 * 86_400), MAX_INTERVAL, "days: every 10 minutes");
    assert_eq!(
        pace(300),
        Duration::from_secs(75),
        "5 minutes: every quarter"
    );
    assert_eq!(pace(8), MIN_INTERVAL, "never busier than every 5 s");
    assert_eq!(
        RetentionSettings::for_retention(Duration::from_secs(300)).chunk,
        RetentionSettings::default().chunk
    );
}
