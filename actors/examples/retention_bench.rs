//! Bounded state, measured (issue 12): the retention simulation at full size, and how long a
//! webhook's store step waits while a pruning pass runs.
//!
//! Run: `cargo run --release -p kafclaw-actors --example retention_bench [messages] [days] [retention days]`
//! (defaults 200000, 60, 30).
//!
//! Part 1 drives `messages` messages evenly over `days` simulated days through the inbox, a
//! journaled turn, the outbox (sent) and the timeline, with a pruning pass after every day;
//! it checks after every pass that no kind keeps more than one retention plus one day of
//! messages and that nothing younger than the retention is gone (it panics otherwise), and
//! prints the peak, the bound, the size on disk every ten days and the longest prune chunk.
//!
//! Part 2 fills an on-disk store with 200,000 finished messages older than the retention, then
//! sends `AcceptInbound` (the webhook's store step: de-duplicate, store, fsync, answer) to a
//! `ChannelBridge` back to back — first alone, then while a pruning pass removes all of them, as
//! the pruner runs it (chunks of 64 keys, a pause of 4× the chunk's time, at least 5 ms, after
//! each) — and prints p50 / p99 / max
//! of each. Part 2 alone: `retention_bench --webhook-only`.

#![forbid(unsafe_code)]

#[path = "../src/retention/simulation.rs"]
#[allow(dead_code)]
mod simulation;

use std::time::{Duration, Instant};

use actix::prelude::*;

use kafclaw_actors::audit::{AppendRecord, AuditError, AuditReceipt};
use kafclaw_actors::channel::access::ChannelPolicy;
use kafclaw_actors::channel::outbox::{Backoff, DEFAULT_RESEND_AFTER};
use kafclaw_actors::channel::pairing::PairingSettings;
use kafclaw_actors::channel::{
    AcceptInbound, ChannelBridge, ChannelConfig, ChannelKind, ChannelLinks, DeliverToAgent,
    DeliveryRefused, InboundMessage, MessageKind,
};
use kafclaw_actors::retention::{prune_pass, RetentionSettings};
use kafclaw_actors::store::StoreDb;

struct NullAgent;
impl Actor for NullAgent {
    type Context = Context<Self>;
}
impl Handler<DeliverToAgent> for NullAgent {
    type Result = Result<(), DeliveryRefused>;
    fn handle(&mut self, _: DeliverToAgent, _: &mut Context<Self>) -> Self::Result {
        Ok(())
    }
}

struct NullAudit;
impl Actor for NullAudit {
    type Context = Context<Self>;
}
impl Handler<AppendRecord> for NullAudit {
    type Result = Result<AuditReceipt, AuditError>;
    fn handle(&mut self, _: AppendRecord, _: &mut Context<Self>) -> Self::Result {
        Ok(AuditReceipt {
            seq: 0,
            hash: String::new(),
        })
    }
}

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn show(what: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "  {what}: {} accepts, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 99.0)),
        ms(samples.last().copied().unwrap_or_default())
    );
}

fn main() {
    if std::env::args().any(|a| a == "--webhook-only") {
        System::new().block_on(webhook_while_pruning());
        return;
    }
    let messages = arg(1, 200_000) as usize;
    let days = arg(2, 60) as usize;
    let retention = arg(3, 30) as i64;
    let started = Instant::now();
    let run = simulation::simulate(messages, days, retention);
    println!(
        "retention simulation: {messages} messages over {days} days, retention {retention} days, \
         a pass per day ({:.1} s in all, {:.1} s pruning)",
        started.elapsed().as_secs_f64(),
        run.pruning.as_secs_f64()
    );
    println!(
        "  bound per kind: {} (one retention + one day); peak inbox records {}; longest prune \
         chunk {:.2} ms",
        run.bound,
        run.peak_records,
        run.longest_chunk_us as f64 / 1000.0
    );
    for (what, n) in &run.kept {
        println!("  kept at the end: {n} {what}");
    }
    for (day, bytes) in &run.sizes {
        println!(
            "  size on disk after day {day}: {:.1} MiB",
            *bytes as f64 / 1048576.0
        );
    }
    System::new().block_on(webhook_while_pruning());
}

fn inbound(id: &str) -> InboundMessage {
    InboundMessage {
        message_id: id.into(),
        sender_id: "4915100000001".into(),
        chat_id: "4915100000001".into(),
        thread_id: None,
        text: Some("hello".into()),
        kind: MessageKind::Text,
        timestamp: 0,
        is_group: false,
        mentioned: false,
        reply_to: None,
        content: None,
        attachments: Vec::new(),
    }
}

async fn accept(bridge: &Addr<ChannelBridge>, id: &str) -> Duration {
    let started = Instant::now();
    bridge
        .send(AcceptInbound {
            message: inbound(id),
        })
        .await
        .expect("bridge")
        .expect("accepted");
    started.elapsed()
}

async fn webhook_while_pruning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = StoreDb::open(&dir.path().join("timeline.db")).expect("store");
    let state = db.state().expect("state");
    let old = 1_700_000_000_000i64;
    let fill = 200_000;
    for i in 0..fill {
        simulation::drive(&db, &state, i, old + i as i64);
    }
    db.flush_blocking().expect("flush");
    let config = ChannelConfig {
        name: "whatsapp".into(),
        kind: ChannelKind::Whatsapp,
        account: "1".into(),
        policy: ChannelPolicy {
            owner_ids: vec!["4915100000001".into()],
            ..ChannelPolicy::default()
        },
        pairing: PairingSettings::default(),
        backoff: Backoff::default(),
        resend_after: DEFAULT_RESEND_AFTER,
        messages: Default::default(),
        backlog: Default::default(),
    };
    let links = ChannelLinks {
        agent: NullAgent.start().recipient(),
        audit: NullAudit.start().recipient(),
        unknown_senders: None,
        drain: kafclaw_actors::drain::Drain::new(),
        media: None,
    };
    let bridge = ChannelBridge::new(config, &db, links)
        .expect("bridge")
        .start();
    println!("webhook store step (AcceptInbound, fsync included) with {fill} prunable messages:");
    let mut alone = Vec::new();
    for n in 0..2_000 {
        alone.push(accept(&bridge, &format!("alone.{n}")).await);
    }
    show("alone", alone);
    let settings = RetentionSettings::default();
    let now = old + 400 * simulation::DAY_MS;
    let (pass_db, pass_state) = (db.clone(), state.clone());
    // The pass as the pruner runs it: chunks of `chunk` keys, throttled after each.
    let pass = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let throttle = settings.throttle();
        let report = prune_pass(&pass_db, &pass_state, None, &settings, now, throttle);
        (report, started.elapsed())
    });
    let mut during = Vec::new();
    let mut n = 0;
    while !pass.is_finished() {
        during.push(accept(&bridge, &format!("during.{n}")).await);
        n += 1;
    }
    let (report, took) = pass.await.expect("pass");
    let report = report.expect("prune");
    show("during a pass", during);
    println!(
        "  the pass removed {} inbox records, {} dedupe keys, {} replies, {} journals, {} events \
         in {:.2} s ({} chunks, longest {:.2} ms)",
        report.inbox_records,
        report.dedupe_keys,
        report.outbox_records,
        report.journals,
        report.timeline_events,
        took.as_secs_f64(),
        report.chunks,
        report.longest_chunk_us as f64 / 1000.0
    );
}
