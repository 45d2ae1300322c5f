//! One reply per inbound message, receipts, the wait after a crash, reply tags and pruning.

use super::*;
use crate::store::StoreDb;

const LEASE: i64 = 30_000;

fn outbox() -> Outbox {
    Outbox::new(&StoreDb::temporary().unwrap(), Backoff::default()).unwrap()
}

fn reply(to_message: Option<&str>) -> OutboundMessage {
    OutboundMessage {
        to: "491".into(),
        text: "reply".into(),
        reply_to: to_message.map(str::to_string),
        session: None,
    }
}

/// Starts an attempt on every due reply at `now`.
fn take(outbox: &Outbox, now: i64) -> Vec<OutboxRecord> {
    outbox.take_due(None, now, 100, &[], LEASE).unwrap()
}

#[test]
fn a_second_reply_to_one_message_is_refused_on_its_channel_only() {
    let o = outbox();
    let first = o.enqueue("wa", reply(Some("wamid.1")), 1, 0).unwrap();
    assert!(matches!(first, Enqueued::New(_)));
    assert_eq!(
        o.enqueue("wa", reply(Some("wamid.1")), 1, 5).unwrap(),
        Enqueued::Duplicate(first.id())
    );
    assert!(matches!(
        o.enqueue("slack", reply(Some("wamid.1")), 1, 5).unwrap(),
        Enqueued::New(_)
    ));
    // Notices that answer no message are never refused.
    assert_ne!(
        o.enqueue("wa", reply(None), 1, 0).unwrap().id(),
        o.enqueue("wa", reply(None), 1, 0).unwrap().id()
    );
    assert_eq!(
        o.reply_for("wa", "wamid.1").unwrap().unwrap().id,
        first.id()
    );
    assert_eq!(o.queued("wa").unwrap().len(), 3);
}

#[test]
fn receipts_move_forward_only_and_count_parts() {
    let o = outbox();
    let id = o.enqueue("wa", reply(Some("m")), 2, 0).unwrap().id();
    // Never sent: a receipt for it is not ours.
    assert!(o.plan_receipt(id, 0, &Receipt::Sent, 1).unwrap().is_none());
    take(&o, 0);
    // The first part's receipt: progress, not yet sent.
    let t = o
        .plan_receipt(id, 0, &Receipt::Delivered, 1)
        .unwrap()
        .unwrap();
    assert!(o.commit(&t).unwrap());
    let r = o.get(id).unwrap().unwrap();
    assert_eq!(
        (r.state.clone(), r.parts_accepted),
        (OutboxState::Sending, 1)
    );
    // The last part's: delivered, off the schedule.
    let t = o
        .plan_receipt(id, 1, &Receipt::Delivered, 2)
        .unwrap()
        .unwrap();
    assert!(o.commit(&t).unwrap());
    assert_eq!(o.get(id).unwrap().unwrap().state, OutboxState::Delivered);
    assert!(take(&o, i64::MAX / 2).is_empty());
    // A late "sent" changes nothing; "read" moves on; a failure after delivery is ignored.
    assert!(o.plan_receipt(id, 1, &Receipt::Sent, 3).unwrap().is_none());
    let t = o.plan_receipt(id, 1, &Receipt::Read, 3).unwrap().unwrap();
    assert!(!t.fails());
    assert!(o.commit(&t).unwrap());
    let failed = Receipt::Failed {
        code: Some(131026),
        title: Some("undeliverable".into()),
    };
    assert!(o.plan_receipt(id, 1, &failed, 4).unwrap().is_none());
    // A part the reply does not have is not ours either.
    assert!(o.plan_receipt(id, 7, &Receipt::Read, 4).unwrap().is_none());
}

#[test]
fn a_failure_receipt_fails_the_reply_with_the_code_and_a_stale_plan_is_not_written() {
    let o = outbox();
    let id = o.enqueue("wa", reply(Some("m")), 1, 0).unwrap().id();
    take(&o, 0);
    let failed = Receipt::Failed {
        code: Some(131026),
        title: Some("Message undeliverable".into()),
    };
    let plan = o.plan_receipt(id, 0, &failed, 1).unwrap().unwrap();
    assert!(plan.fails());
    // The record changes before the plan is committed (an answer arrived): not written.
    o.record_attempt(id, 1, AttemptResult::Sent, 1, 1).unwrap();
    assert!(!o.commit(&plan).unwrap());
    assert_eq!(o.get(id).unwrap().unwrap().state, OutboxState::Sent);
    // Planned again from the new state, it applies.
    let plan = o.plan_receipt(id, 0, &failed, 2).unwrap().unwrap();
    assert!(o.commit(&plan).unwrap());
    assert!(matches!(
        o.get(id).unwrap().unwrap().state,
        OutboxState::Failed { code: Some(131026), ref reason, .. } if reason.contains("undeliverable")
    ));
}

#[test]
fn after_a_restart_a_reply_cut_short_waits_a_full_resend_wait() {
    let o = outbox();
    let id = o.enqueue("wa", reply(Some("m")), 1, 0).unwrap().id();
    let other = o.enqueue("slack", reply(Some("m")), 1, 0).unwrap().id();
    take(&o, 0);
    // Down for a minute: the attempt's own wait is long over; the restart at 60 s defers it.
    assert_eq!(o.defer_sending("wa", 60_000 + LEASE).unwrap(), 1);
    let due: Vec<u64> = take(&o, 60_000).iter().map(|r| r.id).collect();
    assert_eq!(due, [other], "only the other channel's reply is due");
    let again = o
        .take_due(Some("wa"), 60_000 + LEASE, 100, &[], LEASE)
        .unwrap();
    assert_eq!(
        again.iter().map(|r| (r.id, r.attempts)).collect::<Vec<_>>(),
        [(id, 2)]
    );
    // A queued reply (a retry after a failure) is not held back.
    o.record_attempt(
        id,
        2,
        AttemptResult::Transient {
            retry_after: None,
            reason: "503".into(),
        },
        0,
        90_000,
    )
    .unwrap();
    assert_eq!(o.defer_sending("wa", i64::MAX / 2).unwrap(), 0);
}

#[test]
fn reply_tags_round_trip_and_nothing_else_parses() {
    assert_eq!(reply_id(42), "kafclaw-42");
    for (id, part) in [(0, 0), (42, 0), (42, 1), (u64::MAX, 12)] {
        assert_eq!(parse_reply_tag(&reply_tag(id, part)), Some((id, part)));
    }
    for bad in [
        "",
        "kafclaw-",
        "kafclaw-x",
        "kafclaw-1.",
        "kafclaw-1.01",
        "kafclaw-+1",
        "kafclaw-1.2.3",
        "KAFCLAW-1",
        "kafclaw-1 ",
        "kafclaw-99999999999999999999999",
    ] {
        assert_eq!(parse_reply_tag(bad), None, "{bad:?}");
    }
}

#[test]
fn pruning_removes_finished_replies_older_than_the_cutoff_only() {
    let o = outbox();
    let old_sent = o.enqueue("wa", reply(Some("a")), 1, 1_000).unwrap().id();
    let old_queued = o.enqueue("wa", reply(Some("b")), 1, 2_000).unwrap().id();
    let young = o.enqueue("wa", reply(Some("c")), 1, 9_000).unwrap().id();
    for r in o.take_due(None, 10_000, 100, &[old_queued], LEASE).unwrap() {
        o.record_attempt(r.id, r.attempts, AttemptResult::Sent, 1, 10_000)
            .unwrap();
    }
    assert_eq!(o.oldest_created_at().unwrap(), Some(1_000));
    let mut cursor = None;
    let pruned = o.prune(5_000, &mut cursor, 100).unwrap();
    assert_eq!(pruned.records, 1);
    assert!(o.get(old_sent).unwrap().is_none());
    assert!(
        o.reply_for("wa", "a").unwrap().is_none(),
        "its one-reply key goes too"
    );
    assert!(
        o.get(old_queued).unwrap().is_some(),
        "never a reply still to send"
    );
    assert!(o.get(young).unwrap().is_some());
    assert_eq!(o.oldest_created_at().unwrap(), Some(2_000));
}

#[test]
fn provider_ids_find_our_reply_on_its_channel_and_part_only() {
    let o = outbox();
    let id = o.enqueue("wa", reply(Some("m")), 2, 0).unwrap().id();
    assert!(o.note_provider_id("wa", id, 0, "wamid.ours0").unwrap());
    assert!(o.note_provider_id("wa", id, 1, "wamid.ours1").unwrap());
    // Known already, another channel, a part it does not have, no such reply, bad ids.
    assert!(!o.note_provider_id("wa", id, 0, "wamid.ours0").unwrap());
    assert!(!o.note_provider_id("slack", id, 0, "wamid.x").unwrap());
    assert!(!o.note_provider_id("wa", id, 2, "wamid.x").unwrap());
    assert!(!o.note_provider_id("wa", id + 99, 0, "wamid.x").unwrap());
    assert!(!o.note_provider_id("wa", id, 0, "").unwrap());
    assert!(!o.note_provider_id("wa", id, 0, &"w".repeat(257)).unwrap());
    assert_eq!(o.sent_as("wa", "wamid.ours1").unwrap().unwrap().id, id);
    assert!(o.sent_as("wa", "wamid.x").unwrap().is_none());
    assert!(o.sent_as("slack", "wamid.ours0").unwrap().is_none());
    assert!(o.sent_as("wa", "").unwrap().is_none());
}

#[test]
fn pruning_a_reply_forgets_the_provider_ids_of_its_parts() {
    let o = outbox();
    let old = o.enqueue("wa", reply(Some("a")), 2, 1_000).unwrap().id();
    let young = o.enqueue("wa", reply(Some("b")), 1, 9_000).unwrap().id();
    for r in take(&o, 10_000) {
        o.record_attempt(r.id, r.attempts, AttemptResult::Sent, r.parts, 10_000)
            .unwrap();
    }
    o.note_provider_id("wa", old, 0, "wamid.old0").unwrap();
    o.note_provider_id("wa", old, 1, "wamid.old1").unwrap();
    o.note_provider_id("wa", young, 0, "wamid.young").unwrap();
    let mut cursor = None;
    assert_eq!(o.prune(5_000, &mut cursor, 100).unwrap().records, 1);
    assert!(o.sent_as("wa", "wamid.old0").unwrap().is_none());
    assert!(o.sent_as("wa", "wamid.old1").unwrap().is_none());
    assert_eq!(o.sent_as("wa", "wamid.young").unwrap().unwrap().id, young);
    let left = o.space.scan_all("outbox/w").unwrap();
    assert_eq!(left.len(), 2, "only the young reply's two keys: {left:?}");
}
