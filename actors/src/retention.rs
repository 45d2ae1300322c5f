//! Bounded state: the background [`Pruner`] that removes what is older than
//! `store.retention_days` — finished inbox records, de-duplication keys (never before
//! [`MIN_DEDUPE`]: providers retry deliveries for days), finished outbox replies, turn
//! journals, timeline events and saved media files with their owner entries — and the store
//! facts `status` shows.
//!
//! Owns: the pass (every kind, in bounded chunks of [`RetentionSettings::chunk`] keys, on the
//! blocking pool, outside every actor's mailbox, so a webhook never waits for it), its clock
//! (injected by tests to simulate weeks) and [`store_stats`].
//! Must not: remove anything live (a pending, held or processing message, a queued or sending
//! reply), or anything younger than the retention; it only ever removes through the owning
//! module's own prune functions, which remove finished records only.
//!
//! Pace: chunks of [`RetentionSettings::chunk`] keys, and after each a sleep of at least
//! [`RetentionSettings::pause`] and [`RetentionSettings::duty`] times the chunk's own time, so a
//! pass takes no more than a fifth of a core and adds little to the next webhook's fsync —
//! unless the last pass took more than half the interval: then the store is falling behind its
//! retention and the next pass catches up at up to half a core
//! ([`RetentionSettings::catching_up`]). The idempotency keys alone (7 days of messages, swept
//! only when the retention is shorter) are swept a bounded part per pass ([`DedupeSweep`]), so
//! a pass does not grow with the uptime.
//!
//! Bound: with messages arriving at `r` per day, at most about `r × (retention + one
//! interval)` records of each kind are kept (plus live ones), whatever the uptime.

use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;

use crate::agent::TurnJournal;
use crate::channel::inbox::Inbox;
use crate::channel::media::MediaOwners;
use crate::channel::outbox::{Backoff, Outbox};
use crate::store::{oldest_event_ms, prune_timeline, State, StoreDb, StoreError};
use crate::supervisor::{Ping, Pong};

/// De-duplication keys are kept at least this long, whatever the retention.
pub const MIN_DEDUPE: Duration = Duration::from_secs(7 * 86_400);

/// The longest time between two passes (a day-long retention runs a pass this often).
pub const MAX_INTERVAL: Duration = Duration::from_secs(600);

/// The shortest time between two passes (a retention of minutes).
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);

/// `store.retention_days` and the pruner's pace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Records older than this are removed.
    pub retention: Duration,
    /// Time between two passes.
    pub interval: Duration,
    /// Keys looked at per chunk (each chunk is one short blocking step and one batch).
    pub chunk: usize,
    /// After every chunk the pass sleeps at least this long, and at least `duty` times as long
    /// as the chunk took: it never takes more than a fraction of a core, and adds little to the
    /// next fsync of a webhook (a backlog of weeks is worked off over minutes, not in a burst).
    pub pause: Duration,
    /// Sleep per unit of chunk work (4: the pass uses at most a fifth of one core).
    pub duty: u32,
}

impl RetentionSettings {
    /// The default pace for `retention`: a pass every quarter of it, at least every 5 s and at
    /// most every [`MAX_INTERVAL`] (so a short retention is kept to about 1.25 times itself).
    pub fn for_retention(retention: Duration) -> Self {
        Self {
            retention,
            interval: (retention / 4).clamp(MIN_INTERVAL, MAX_INTERVAL),
            ..Self::default()
        }
    }

    /// The pace of a pass after one that took more than half the interval: the store is
    /// falling behind its retention (messages arrive faster than a fifth of a core removes
    /// them), so chunks four times as large and a sleep only as long as the chunk (at most
    /// half a core). A bounded store outranks a polite pruner; the pace returns to normal once
    /// a pass is short again.
    pub fn catching_up(&self) -> Self {
        Self {
            chunk: self.chunk.saturating_mul(4),
            duty: self.duty.min(1),
            ..self.clone()
        }
    }

    /// What the pruner does between two chunks: sleep (see [`RetentionSettings::pause`]).
    pub fn throttle(&self) -> impl FnMut(Duration) {
        let (pause, duty) = (self.pause, self.duty);
        move |took: Duration| std::thread::sleep(pause.max(took.saturating_mul(duty)))
    }
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(30 * 86_400),
            interval: MAX_INTERVAL,
            chunk: 64,
            pause: Duration::from_millis(5),
            duty: 4,
        }
    }
}

/// What one pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Inbox records.
    pub inbox_records: usize,
    /// De-duplication keys.
    pub dedupe_keys: usize,
    /// Outbox replies.
    pub outbox_records: usize,
    /// Turn journals.
    pub journals: usize,
    /// Timeline events.
    pub timeline_events: usize,
    /// Saved media files (with their owner entries).
    pub media_files: usize,
    /// Chunks the pass took.
    pub chunks: usize,
    /// The longest chunk, microseconds.
    pub longest_chunk_us: u64,
}

/// Idempotency keys a rolling sweep looks at per pass, at least.
pub const DEDUPE_SWEEP_FLOOR: usize = 4096;

/// Idempotency keys a rolling sweep looks at per inbox record the same pass removed: with
/// records pruned at the rate messages arrive, the whole set (7 days of messages) is swept in
/// under a day of passes, so a key outlives its horizon by less than a day.
pub const DEDUPE_SWEEP_PER_RECORD: usize = 8;

/// The sweep over the idempotency keys alone (needed when the retention is shorter than
/// [`MIN_DEDUPE`]): where it stands between passes and how much of it one pass does. The set
/// holds 7 days of messages whatever the retention, so a pass that swept all of it would grow
/// with the uptime and, under a sustained load, no longer finish within its interval: the
/// records behind it would wait and the store would grow without bound.
#[derive(Clone, Debug, Default)]
pub struct DedupeSweep {
    cursor: Option<Vec<u8>>,
    rolling: bool,
}

impl DedupeSweep {
    /// The whole set in one pass (operator tools and tests).
    pub fn whole() -> Self {
        Self::default()
    }

    /// A part per pass, going on where the last pass stopped and starting over at the end: at
    /// least [`DEDUPE_SWEEP_FLOOR`] keys, [`DEDUPE_SWEEP_PER_RECORD`] per record removed.
    pub fn rolling() -> Self {
        Self {
            cursor: None,
            rolling: true,
        }
    }

    fn budget(&self, records_removed: usize) -> usize {
        if self.rolling {
            DEDUPE_SWEEP_FLOOR.max(records_removed.saturating_mul(DEDUPE_SWEEP_PER_RECORD))
        } else {
            usize::MAX
        }
    }
}

/// One pass over every kind at `now_ms`, chunk by chunk (synchronous: run it on the blocking
/// pool), and over the saved media files of `media` when given. `between` runs after every
/// chunk with the chunk's duration (the pruner sleeps there, see [`RetentionSettings::pause`]).
/// The idempotency keys are swept whole; the pruner sweeps them a part per pass
/// ([`prune_pass_with`]).
pub fn prune_pass(
    db: &StoreDb,
    state: &State,
    media: Option<&MediaOwners>,
    settings: &RetentionSettings,
    now_ms: i64,
    between: impl FnMut(Duration),
) -> Result<PruneReport, StoreError> {
    let mut sweep = DedupeSweep::whole();
    prune_pass_with(db, state, media, settings, now_ms, between, &mut sweep)
}

/// [`prune_pass`] with the idempotency keys swept as far as `sweep` says.
pub fn prune_pass_with(
    db: &StoreDb,
    state: &State,
    media: Option<&MediaOwners>,
    settings: &RetentionSettings,
    now_ms: i64,
    mut between: impl FnMut(Duration),
    sweep: &mut DedupeSweep,
) -> Result<PruneReport, StoreError> {
    let retention_ms = i64::try_from(settings.retention.as_millis()).unwrap_or(i64::MAX);
    let dedupe_ms = retention_ms.max(i64::try_from(MIN_DEDUPE.as_millis()).unwrap_or(i64::MAX));
    let cutoff_ms = now_ms.saturating_sub(retention_ms);
    let dedupe_cutoff_ms = now_ms.saturating_sub(dedupe_ms);
    let chunk = settings.chunk.max(1);
    let inbox = Inbox::over(state.clone());
    let outbox = Outbox::over(state.clone(), Backoff::default());
    let journal = TurnJournal::new(state.clone());
    let mut report = PruneReport::default();
    let mut timed = |report: &mut PruneReport,
                     work: &mut dyn FnMut() -> Result<bool, StoreError>| loop {
        let started = Instant::now();
        let more = work()?;
        let took = started.elapsed();
        report.chunks += 1;
        report.longest_chunk_us = report
            .longest_chunk_us
            .max(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        between(took);
        if !more {
            return Ok::<(), StoreError>(());
        }
    };

    let mut cursor = None;
    let (mut records, mut keys) = (0, 0);
    timed(&mut report, &mut || {
        let chunk = inbox.prune_records(
            cutoff_ms / 1000,
            dedupe_cutoff_ms / 1000,
            &mut cursor,
            chunk,
        )?;
        records += chunk.records;
        keys += chunk.dedupe_keys;
        Ok(chunk.more)
    })?;
    if dedupe_cutoff_ms < cutoff_ms {
        let mut budget = sweep.budget(records);
        let cursor = &mut sweep.cursor;
        timed(&mut report, &mut || {
            let limit = chunk.min(budget);
            let part = inbox.prune_dedupe(dedupe_cutoff_ms / 1000, now_ms / 1000, cursor, limit)?;
            keys += part.dedupe_keys;
            budget -= limit;
            // The cursor stays where this pass stopped; at the end it starts over.
            Ok(part.more && budget > 0)
        })?;
    }
    report.inbox_records = records;
    report.dedupe_keys = keys;

    let mut cursor = None;
    let mut replies = 0;
    timed(&mut report, &mut || {
        let chunk = outbox.prune(cutoff_ms, &mut cursor, chunk)?;
        replies += chunk.records;
        Ok(chunk.more)
    })?;
    report.outbox_records = replies;

    let mut cursor = None;
    let mut journals = 0;
    timed(&mut report, &mut || {
        let (removed, more) = journal.prune(cutoff_ms, &mut cursor, chunk)?;
        journals += removed;
        Ok(more)
    })?;
    report.journals = journals;

    let mut cursor = None;
    let mut events = 0;
    timed(&mut report, &mut || {
        let (removed, more) = prune_timeline(db, cutoff_ms, &mut cursor, chunk)?;
        events += removed;
        Ok(more)
    })?;
    report.timeline_events = events;

    if let Some(media) = media {
        let cutoff =
            std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(cutoff_ms).unwrap_or(0));
        let mut cursor = None;
        let mut files = 0;
        timed(&mut report, &mut || {
            let (removed, more) = media.prune(cutoff, &mut cursor, chunk)?;
            files += removed;
            Ok(more)
        })?;
        report.media_files = files;
    }
    Ok(report)
}

/// The store's size and its oldest record, for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Bytes on disk.
    pub size_bytes: u64,
    /// The page cache the store was opened with (`store.cache_mib`), in bytes.
    pub cache_limit_bytes: u64,
    /// When the oldest record kept was written (RFC 3339), if there is one.
    pub oldest_record: Option<String>,
}

/// Size and oldest record of the store (a handful of reads).
pub fn store_stats(db: &StoreDb) -> Result<StoreStats, StoreError> {
    let state = db.state()?;
    let inbox = Inbox::over(state.clone()).oldest_received_at()?;
    let candidates = [
        oldest_event_ms(db)?,
        inbox.map(|s| s.saturating_mul(1000)),
        Outbox::over(state.clone(), Backoff::default()).oldest_created_at()?,
        TurnJournal::new(state.clone()).oldest_created_at()?,
    ];
    let oldest = candidates.into_iter().flatten().min().and_then(|ms| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .map(crate::clock::to_rfc3339)
    });
    Ok(StoreStats {
        size_bytes: state.size_bytes()?,
        cache_limit_bytes: db.cache_limit_bytes(),
        oldest_record: oldest,
    })
}

/// Unix milliseconds from the system clock.
fn system_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

/// The supervised pruner: a pass at start and every [`RetentionSettings::interval`].
pub struct Pruner {
    db: StoreDb,
    state: State,
    media: Option<MediaOwners>,
    settings: RetentionSettings,
    clock: fn() -> i64,
    running: bool,
    /// Where the rolling sweep over the idempotency keys stands.
    sweep: DedupeSweep,
    /// The last pass took more than half the interval: the next one catches up
    /// ([`RetentionSettings::catching_up`]).
    behind: bool,
}

impl Pruner {
    /// A pruner over the store with the system clock.
    pub fn new(db: &StoreDb, settings: RetentionSettings) -> Result<Self, StoreError> {
        Ok(Self {
            db: db.clone(),
            state: db.state()?,
            media: None,
            settings,
            clock: system_ms,
            running: false,
            sweep: DedupeSweep::rolling(),
            behind: false,
        })
    }

    /// The same pruner, also removing the saved media files older than the retention.
    pub fn with_media(mut self, media: MediaOwners) -> Self {
        self.media = Some(media);
        self
    }

    /// The same pruner with another clock (unix milliseconds).
    pub fn with_clock(mut self, clock: fn() -> i64) -> Self {
        self.clock = clock;
        self
    }

    /// What a pass runs over, owned (it runs on the blocking pool).
    fn pass_inputs(&self) -> (StoreDb, State, Option<MediaOwners>, RetentionSettings, i64) {
        (
            self.db.clone(),
            self.state.clone(),
            self.media.clone(),
            self.settings.clone(),
            (self.clock)(),
        )
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.running {
            return;
        }
        self.running = true;
        let (db, state, media, mut settings, now) = self.pass_inputs();
        if self.behind {
            settings = settings.catching_up();
        }
        let mut sweep = std::mem::take(&mut self.sweep);
        let interval = self.settings.interval;
        let pass = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let throttle = settings.throttle();
            let result = prune_pass_with(
                &db,
                &state,
                media.as_ref(),
                &settings,
                now,
                throttle,
                &mut sweep,
            );
            (result, sweep, started.elapsed())
        });
        ctx.spawn(pass.into_actor(self).map(move |outcome, this, _| {
            this.running = false;
            match outcome {
                Ok((result, sweep, took)) => {
                    this.sweep = sweep;
                    let behind = took > interval / 2;
                    if behind != this.behind {
                        tracing::info!(
                            took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                            catching_up = behind,
                            "retention pass pace changed"
                        );
                    }
                    this.behind = behind;
                    match result {
                        Ok(report) => tracing::debug!(?report, "retention pass done"),
                        Err(error) => tracing::warn!(%error, "retention pass failed"),
                    }
                }
                Err(error) => {
                    this.sweep = DedupeSweep::rolling();
                    tracing::warn!(%error, "retention pass did not finish")
                }
            }
        }));
    }
}

impl Actor for Pruner {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.tick(ctx);
        ctx.run_interval(self.settings.interval, Self::tick);
    }
}

impl Handler<Ping> for Pruner {
    type Result = Pong;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Pong {
        Pong
    }
}

/// Runs one pass now and answers its report (tests, operator tools).
#[derive(Message, Debug)]
#[rtype(result = "Result<PruneReport, StoreError>")]
pub struct PruneNow;

impl Handler<PruneNow> for Pruner {
    type Result = ResponseFuture<Result<PruneReport, StoreError>>;
    fn handle(&mut self, _: PruneNow, _: &mut Context<Self>) -> Self::Result {
        let (db, state, media, settings, now) = self.pass_inputs();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                prune_pass(&db, &state, media.as_ref(), &settings, now, |_| {})
            })
            .await
            .map_err(|e| StoreError::Io(format!("prune task failed: {e}")))?
        })
    }
}

#[cfg(test)]
pub(crate) mod simulation;
#[cfg(test)]
mod tests;
