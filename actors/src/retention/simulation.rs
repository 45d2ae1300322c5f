//! The retention simulation: messages through the inbox, a journaled turn, the outbox and the
//! timeline under a simulated clock, a pruning pass every simulated day, and a check of the
//! bound after every pass. Run by the unit tests (`cfg(test)`) and by
//! `cargo run --release -p kafclaw-actors --example retention_bench` (`#[path]`-included), so
//! it names the crate `kafclaw_actors` and uses nothing private.

use std::time::{Duration, Instant};

use kafclaw_actors::agent::journal::{Step, TurnKey};
use kafclaw_actors::agent::TurnJournal;
use kafclaw_actors::channel::inbox::{Accepted, Inbox, InboxState, NewEntry};
use kafclaw_actors::channel::outbox::{AttemptResult, Backoff, OutboundMessage, Outbox};
use kafclaw_actors::channel::{InboundMessage, MessageKind, SenderKind};
use kafclaw_actors::provider::{Message, Usage};
use kafclaw_actors::retention::{prune_pass, store_stats, RetentionSettings};
use kafclaw_actors::store::{append_event, RecordEvent, Space, State, StoreDb, TreeName};

/// One simulated day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// What a simulation found.
#[derive(Debug, Default)]
pub struct Simulated {
    /// The most inbox records kept after any pass.
    pub peak_records: usize,
    /// The bound every kind was checked against: one retention plus one day of messages.
    pub bound: usize,
    /// Bytes on disk after every tenth day.
    pub sizes: Vec<(usize, u64)>,
    /// The longest chunk of any pass, microseconds.
    pub longest_chunk_us: u64,
    /// Wall time of all passes together.
    pub pruning: Duration,
    /// Records of each kind at the end.
    pub kept: Vec<(&'static str, usize)>,
}

pub(crate) fn message(id: &str) -> InboundMessage {
    InboundMessage {
        message_id: id.into(),
        sender_id: "4915100000001".into(),
        chat_id: "4915100000001".into(),
        thread_id: None,
        text: Some("a message of some length, as people write them".into()),
        kind: MessageKind::Text,
        timestamp: 0,
        is_group: false,
        mentioned: false,
        reply_to: None,
        content: None,
        attachments: Vec::new(),
    }
}

/// How many keys start with `prefix` in `space`.
pub fn count(state: &State, space: Space, prefix: &str) -> usize {
    let mut n = 0;
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        let page = state
            .scan(space, prefix.as_bytes(), cursor.as_deref(), 4096)
            .unwrap();
        let Some((last, _)) = page.last() else {
            return n;
        };
        n += page.len();
        cursor = Some(last.clone());
    }
}

/// One simulated message at `at_ms`: accepted, claimed, answered through a journaled turn,
/// replied, marked done, recorded on the timeline. Returns its inbox sequence number.
pub fn drive(db: &StoreDb, state: &State, i: usize, at_ms: i64) -> u64 {
    let inbox = Inbox::over(state.clone());
    let outbox = Outbox::over(state.clone(), Backoff::default());
    let journal = TurnJournal::new(state.clone());
    let id = format!("wamid.{i}");
    let entry = NewEntry {
        state: InboxState::Pending,
        sender_kind: Some(SenderKind::Owner),
        session_key: Some("room:whatsapp:1:491".into()),
        reason: None,
    };
    let seq = match inbox
        .accept("whatsapp", &message(&id), entry, at_ms / 1000)
        .unwrap()
    {
        Accepted::New(seq) => seq,
        other => panic!("{other:?}"),
    };
    inbox.claim_next("whatsapp", u64::MAX).unwrap();
    let key = TurnKey::message("whatsapp", &id);
    journal.begin(&key, "s", "whatsapp", "text", at_ms).unwrap();
    let answer = Step::Model {
        message: Message::assistant("an answer of some length"),
        usage: Usage::default(),
    };
    journal.record(&key, 0, &answer).unwrap();
    journal
        .finish(&key, "an answer of some length", Usage::default())
        .unwrap();
    let reply = OutboundMessage {
        to: "491".into(),
        text: "an answer of some length".into(),
        reply_to: Some(id.clone()),
        session: None,
    };
    let rid = outbox.enqueue("whatsapp", reply, 1, at_ms).unwrap().id();
    let taken = outbox
        .take_due(Some("whatsapp"), at_ms, 1, &[], 30_000)
        .unwrap();
    assert_eq!(taken.len(), 1);
    outbox
        .record_attempt(rid, 1, AttemptResult::Sent, 1, at_ms)
        .unwrap();
    outbox
        .note_provider_id("whatsapp", rid, 0, &format!("wamid.out{i}"))
        .unwrap();
    inbox.mark_done("whatsapp", seq).unwrap();
    let at =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000).unwrap();
    let event = RecordEvent {
        trace_id: id,
        kind: "message.inbound".into(),
        sender: None,
        channel: Some("whatsapp".into()),
        data: serde_json::json!({"chars": 40}),
    };
    append_event(db, event, at).unwrap();
    seq
}

/// Drives `messages` messages evenly over `days` simulated days with a pass every day and
/// `retention_days` of retention, checking after every pass that no kind keeps more than the
/// bound and, every 15 days and at the end, that nothing younger than the retention is gone.
/// Panics on a violation.
pub fn simulate(messages: usize, days: usize, retention_days: i64) -> Simulated {
    let db = StoreDb::temporary().unwrap();
    let state = db.state().unwrap();
    let settings = RetentionSettings {
        retention: Duration::from_secs(retention_days as u64 * 86_400),
        interval: Duration::from_secs(86_400),
        ..RetentionSettings::default()
    };
    let per_day = messages / days;
    let bound = per_day * (retention_days as usize + 1);
    let t0 = 1_700_000_000_000i64;
    let inbox = Inbox::over(state.clone());
    let mut seqs = Vec::with_capacity(messages);
    let mut out = Simulated {
        bound,
        ..Simulated::default()
    };
    let kinds = |state: &State, db: &StoreDb| {
        vec![
            ("inbox records", count(state, Space::Inbox, "inbox/")),
            ("dedupe keys", count(state, Space::Inbox, "dedupe/")),
            ("replies", count(state, Space::Outbox, "outbox/m/")),
            ("reply keys", count(state, Space::Outbox, "outbox/r/")),
            ("provider ids", count(state, Space::Outbox, "outbox/w/")),
            (
                "provider id parts",
                count(state, Space::Outbox, "outbox/wi/"),
            ),
            ("journals", count(state, Space::Journal, "h/")),
            ("journal steps", count(state, Space::Journal, "s/")),
            (
                "timeline events",
                db.tree(TreeName::Timeline).unwrap().len(),
            ),
        ]
    };
    for day in 0..days {
        for k in 0..per_day {
            let i = day * per_day + k;
            let at = t0 + day as i64 * DAY_MS + (k as i64 * DAY_MS) / per_day as i64;
            seqs.push((at, drive(&db, &state, i, at)));
        }
        let now = t0 + (day as i64 + 1) * DAY_MS;
        let started = Instant::now();
        let report = prune_pass(&db, &state, None, &settings, now, |_| {}).unwrap();
        out.pruning += started.elapsed();
        out.longest_chunk_us = out.longest_chunk_us.max(report.longest_chunk_us);
        let records = count(&state, Space::Inbox, "inbox/");
        out.peak_records = out.peak_records.max(records);
        assert!(
            records <= bound,
            "day {day}: {records} inbox records > {bound}"
        );
        if day % 10 == 9 {
            out.sizes.push((day + 1, state.size_bytes().unwrap()));
        }
        if day % 15 == 14 || day == days - 1 {
            for (what, n) in kinds(&state, &db) {
                assert!(n <= bound, "day {day}: {n} {what} > {bound}");
            }
            let cutoff = now - retention_days * DAY_MS;
            for (i, (at, seq)) in seqs.iter().enumerate() {
                if *at >= cutoff {
                    assert!(
                        inbox.get("whatsapp", *seq).unwrap().is_some(),
                        "message {i} pruned before its time"
                    );
                    assert!(inbox
                        .known("whatsapp", &format!("wamid.{i}"))
                        .unwrap()
                        .is_some());
                }
            }
        }
    }
    let stats = store_stats(&db).unwrap();
    let oldest =
        kafclaw_actors::clock::parse_rfc3339(stats.oldest_record.as_deref().unwrap()).unwrap();
    let oldest_ms = i64::try_from(oldest.unix_timestamp_nanos() / 1_000_000).unwrap();
    let end = t0 + days as i64 * DAY_MS;
    assert!(
        oldest_ms >= end - (retention_days + 1) * DAY_MS
            && oldest_ms < end - (retention_days - 1) * DAY_MS,
        "oldest record {stats:?}"
    );
    out.kept = kinds(&state, &db);
    out
}
