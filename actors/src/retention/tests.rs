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
    prune_pass(&db, &state, None, &settings, t0 + 2 * DAY_MS, |_| {}).unwrap();
    assert!(inbox.get("whatsapp", seq).unwrap().is_none());
    assert!(inbox.known("whatsapp", "wamid.1").unwrap().is_some());
    // Past seven days it goes too.
    let report = prune_pass(&db, &state, None, &settings, t0 + 8 * DAY_MS, |_| {}).unwrap();
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
        None,
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

#[test]
fn saved_media_older_than_the_retention_is_removed_with_its_entry_and_nothing_else() {
    use crate::channel::media::MediaOwners;
    use std::time::{Duration, SystemTime};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("media");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(root.join("whatsapp")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let db = StoreDb::temporary().unwrap();
    let state = db.state().unwrap();
    let owners = MediaOwners::new(&db, root.clone()).unwrap();
    let now = SystemTime::now();
    let forty_days_ago = now - Duration::from_secs(40 * 86_400);
    let write = |path: &std::path::Path, written: SystemTime| {
        std::fs::write(path, b"media").unwrap();
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(written).unwrap();
    };
    let old = root.join("whatsapp/wamid.OLD.jpg");
    let young = root.join("whatsapp/wamid.YOUNG.jpg");
    let unrecorded = root.join("whatsapp/wamid.UNRECORDED.jpg");
    write(&old, forty_days_ago);
    write(&young, now);
    write(&unrecorded, forty_days_ago);
    owners.record(&old, "s1").unwrap();
    owners.record(&young, "s2").unwrap();
    // A file already gone, a symlink to a file elsewhere and a symlinked directory: entries
    // dropped, nothing outside the media directory touched.
    let gone = root.join("whatsapp/wamid.GONE.jpg");
    write(&gone, forty_days_ago);
    owners.record(&gone, "s3").unwrap();
    std::fs::remove_file(&gone).unwrap();
    // Recorded, then swapped for a symlink to a file elsewhere.
    let target = outside.join("precious.txt");
    write(&target, forty_days_ago);
    let link = root.join("whatsapp/wamid.LINK.jpg");
    write(&link, forty_days_ago);
    owners.record(&link, "s4").unwrap();
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    // Recorded, then its directory swapped for a symlink to a directory elsewhere.
    std::fs::create_dir_all(root.join("bridge")).unwrap();
    let swapped = root.join("bridge/nested.jpg");
    write(&swapped, forty_days_ago);
    owners.record(&swapped, "s5").unwrap();
    std::fs::remove_dir_all(root.join("bridge")).unwrap();
    let nested = outside.join("nested.jpg");
    write(&nested, forty_days_ago);
    std::os::unix::fs::symlink(&outside, root.join("bridge")).unwrap();

    let settings = RetentionSettings {
        chunk: 2, // several chunks: the cursor carries over
        ..RetentionSettings::default()
    };
    let now_ms = i64::try_from(
        now.duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let report = prune_pass(&db, &state, Some(&owners), &settings, now_ms, |_| {}).unwrap();

    assert_eq!(report.media_files, 1);
    assert!(!old.exists());
    assert_eq!(owners.owner(&old), None);
    assert!(young.exists());
    assert_eq!(owners.owner(&young).as_deref(), Some("s2"));
    assert!(unrecorded.exists(), "only files retention knows of");
    assert!(
        target.exists() && nested.exists(),
        "nothing outside the media root"
    );
    let left: Vec<_> = db
        .tree(crate::store::TreeName::Media)
        .unwrap()
        .scan_prefix("")
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8(k).unwrap())
        .collect();
    assert_eq!(left, ["whatsapp/wamid.YOUNG.jpg"]);
}

#[test]
fn the_pruner_sweeps_idempotency_keys_a_bounded_part_per_pass_and_comes_round() {
    // 5,000 dropped messages (finished at once): a 1-day retention removes their records on
    // day 2; their keys expire on day 8. A rolling sweep looks at DEDUPE_SWEEP_FLOOR keys per
    // pass (no records removed in those passes), so the keys go over two passes, and a pass
    // never walks the whole set.
    let db = StoreDb::temporary().unwrap();
    let state = db.state().unwrap();
    let inbox = Inbox::over(state.clone());
    let t0 = 1_700_000_000_000i64;
    let total = DEDUPE_SWEEP_FLOOR + 904;
    for i in 0..total {
        let entry = NewEntry {
            state: InboxState::Dropped,
            sender_kind: None,
            session_key: None,
            reason: None,
        };
        let message = super::simulation::message(&format!("wamid.{i:05}"));
        assert!(matches!(
            inbox
                .accept("whatsapp", &message, entry, t0 / 1000)
                .unwrap(),
            Accepted::New(_)
        ));
    }
    let settings = RetentionSettings {
        retention: Duration::from_secs(86_400),
        chunk: 256,
        ..RetentionSettings::default()
    };
    let mut sweep = DedupeSweep::rolling();
    let mut pass =
        |at: i64| prune_pass_with(&db, &state, None, &settings, at, |_| {}, &mut sweep).unwrap();
    let day2 = pass(t0 + 2 * DAY_MS);
    assert_eq!((day2.inbox_records, day2.dedupe_keys), (total, 0));
    let first = pass(t0 + 8 * DAY_MS);
    assert_eq!(first.dedupe_keys, DEDUPE_SWEEP_FLOOR);
    assert!(inbox.known("whatsapp", "wamid.04999").unwrap().is_some());
    let second = pass(t0 + 8 * DAY_MS);
    assert_eq!(second.dedupe_keys, 904);
    assert!(inbox.known("whatsapp", "wamid.04999").unwrap().is_none());
    assert_eq!(pass(t0 + 8 * DAY_MS).dedupe_keys, 0);
}

#[test]
fn a_pruner_falling_behind_catches_up_with_larger_chunks_and_shorter_sleeps() {
    let normal = RetentionSettings::for_retention(Duration::from_secs(120));
    let fast = normal.catching_up();
    assert_eq!(fast.chunk, normal.chunk * 4);
    assert_eq!(fast.duty, 1);
    assert_eq!(
        (fast.retention, fast.interval),
        (normal.retention, normal.interval)
    );
}
