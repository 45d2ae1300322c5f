//! The `AuditChainer` actor: the permanent owner of `~/.kafclaw/audit` inside the gateway.
//!
//! Owns: the order of the chain (seq and hash are assigned in mailbox order) and group commit:
//! records that arrive while a batch is being written wait in a buffer and go out together in
//! the next batch, with one `fdatasync`. The write runs on tokio's blocking pool so the actor
//! keeps accepting records meanwhile. After the fsync and before any sender is answered, the
//! batch's last record is noted as the recorded head (one store insert per batch, no extra
//! fsync; see [`super::RecordedHead`]). The actor answers a durable batch itself, then yields
//! once before cutting the next: the senders it woke run first and their next records join it.
//! An [`AppendWritten`] (a refusal's record) is answered once its batch is written, before the
//! fsync; every other append only once the batch is durable.
//! Must not: answer an [`AppendRecord`] before its batch is durable, or run on after a failed
//! write (it
//! answers every waiter with [`AuditError::Write`] and stops, so the supervisor restarts it
//! from what is on disk).

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::head::RecordedHead;
use super::record::Chain;
use super::segment::SegmentWriter;
use super::{
    AppendRecord, AppendWritten, AuditError, AuditHead, AuditKey, AuditLog, AuditReceipt,
    AuditSettings,
};
use crate::clock;
use crate::supervisor::{Ping, Pong};

/// The head of the chain as far as it is durable: `{seq, hash}`, seq 0 and 64 zeros when empty.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "AuditHead")]
pub struct GetHead;

/// One sender waiting for its batch: its receipt, its answer, and whether it waits for the
/// fsync (`false`: answered once the batch is written).
type Waiter = (
    AuditReceipt,
    oneshot::Sender<Result<AuditReceipt, AuditError>>,
    bool,
);

/// The audit chain actor (see the module doc).
pub struct AuditChainer {
    /// Seq, hash and key of the last sealed (not necessarily durable) record.
    chain: Chain,
    /// The segment writer; `None` while a batch is being written on the blocking pool.
    writer: Option<SegmentWriter>,
    /// Sealed lines waiting for the next batch.
    pending: Vec<u8>,
    /// Their senders, in seq order.
    waiters: Vec<Waiter>,
    /// The last durable record; the writer task updates it before answering the senders.
    durable: Arc<Mutex<AuditHead>>,
    /// Why the chainer failed, once it has: every later append is refused.
    failed: Option<String>,
    /// Whether a flush is already scheduled to run after the mailbox is drained.
    flush_scheduled: bool,
    /// Where every durable batch's last record is noted, apart from the segments.
    recorded: Option<RecordedHead>,
    /// Batches made durable so far (one fsync each).
    batches: u64,
}

impl std::fmt::Debug for AuditChainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditChainer")
            .field("durable", &*lock(&self.durable))
            .field("waiting", &self.waiters.len())
            .finish_non_exhaustive()
    }
}

impl AuditChainer {
    /// A chainer appending to an open log.
    pub fn new(log: AuditLog) -> Self {
        let durable = Arc::new(Mutex::new(log.head()));
        let (chain, writer, recorded) = log.into_parts();
        Self {
            chain,
            writer: Some(writer),
            pending: Vec::with_capacity(64 * 1024),
            waiters: Vec::new(),
            durable,
            failed: None,
            flush_scheduled: false,
            recorded,
            batches: 0,
        }
    }

    /// Opens the log in `dir` (see [`AuditLog::open`]) and builds a chainer on it.
    pub fn open(dir: &Path, key: AuditKey, settings: &AuditSettings) -> Result<Self, AuditError> {
        AuditLog::open(dir, key, settings).map(Self::new)
    }

    /// Opens the log in `dir` against its recorded head (see [`AuditLog::open_recorded`]) and
    /// builds a chainer that records every batch's head there; this is the supervisor's
    /// factory for a fresh instance.
    pub fn open_recorded(
        dir: &Path,
        key: AuditKey,
        settings: &AuditSettings,
        recorded: RecordedHead,
    ) -> Result<Self, AuditError> {
        AuditLog::open_recorded(dir, key, settings, recorded).map(Self::new)
    }

    /// Flushes once the mailbox has been drained: actix polls the mailbox before spawned items,
    /// so every append already queued joins this batch instead of waiting for the next one.
    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flush_scheduled {
            return;
        }
        self.flush_scheduled = true;
        ctx.spawn(fut::ready(()).map(|(), act: &mut Self, ctx| {
            act.flush_scheduled = false;
            act.flush(ctx);
        }));
    }

    /// Starts writing the pending records unless a batch is already being written.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.waiters.is_empty() || self.failed.is_some() {
            return;
        }
        let Some(mut writer) = self.writer.take() else {
            return; // the running batch calls `flush` again when it is done
        };
        let batch = std::mem::take(&mut self.pending);
        let waiters = std::mem::take(&mut self.waiters);
        // Every pending record is in this batch, so the chain's head is the batch's last.
        let (last_seq, last_hash) = self.chain.head();
        let recorded = self.recorded.clone();
        // The batch's last record (possibly a refusal's): the durable head once it is synced.
        let head = waiters.last().map(|(receipt, _, _)| AuditHead {
            seq: receipt.seq,
            hash: receipt.hash.clone(),
        });
        let batch_len = waiters.len();
        let task = tokio::task::spawn_blocking(move || {
            let mut waiters = waiters;
            let written = writer.write_unsynced(&batch);
            if written.is_ok() {
                // Refusals' records are in the segment, in chain order: answer them now.
                waiters.retain_mut(|(receipt, tx, durable)| {
                    if !*durable {
                        let (done, _) = oneshot::channel();
                        let tx = std::mem::replace(tx, done);
                        let _ = tx.send(Ok(receipt.clone()));
                    }
                    *durable
                });
            }
            let written = written
                .and_then(|()| writer.sync())
                .and_then(|()| match &recorded {
                    Some(recorded) => recorded
                        .note(last_seq, &last_hash)
                        .map_err(std::io::Error::other),
                    None => Ok(()),
                });
            (writer, written, batch, waiters)
        });
        // The durable batch is answered here, on the actor's thread, not by the writer task:
        // one cross-thread wake per batch instead of one per sender, and the senders it wakes
        // are queued ahead of the actor, so a yield lets the ones on this thread send their next
        // record before the next batch is cut (group commit that groups: a closed loop of N
        // writers fills each batch with N records instead of alternating 1 and N - 1). If the
        // task panics, the waiters are dropped and their senders see `Unavailable`: never a
        // receipt.
        ctx.spawn(
            task.into_actor(self)
                .map(move |joined, act, ctx| match joined {
                    Ok((writer, Ok(()), mut batch, waiters)) => {
                        act.answer_durable(waiters, batch_len, head);
                        if act.pending.is_empty() {
                            batch.clear();
                            act.pending = batch; // keep the allocation
                        }
                        act.writer = Some(writer);
                        ctx.spawn(
                            tokio::task::yield_now()
                                .into_actor(act)
                                .map(|(), act, ctx| act.flush(ctx)),
                        );
                    }
                    Ok((_, Err(error), _, waiters)) => {
                        let reason = error.to_string();
                        for (_, tx, _) in waiters {
                            let _ = tx.send(Err(AuditError::Write(reason.clone())));
                        }
                        act.fail(ctx, reason);
                    }
                    Err(join_error) => {
                        act.fail(ctx, format!("audit writer task failed: {join_error}"))
                    }
                }),
        );
    }

    /// Notes the durable head, then answers the batch's senders in seq order.
    fn answer_durable(&mut self, waiters: Vec<Waiter>, batch_len: usize, head: Option<AuditHead>) {
        crate::metrics::metrics().audit_appended(batch_len as u64);
        self.batches += 1;
        if let Some(head) = head {
            // Before any durable receipt goes out, so `GetHead` never lags one.
            *lock(&self.durable) = head;
        }
        for (receipt, tx, _) in waiters {
            let _ = tx.send(Ok(receipt));
        }
    }

    /// Answers every queued waiter with a write error and stops (fail closed).
    /// The batch that failed has been answered by the writer task; this answers the appends
    /// queued behind it.
    fn fail(&mut self, ctx: &mut Context<Self>, reason: String) {
        tracing::error!(error = %reason, "audit write failed; the audit chainer stops");
        for (_, tx, _) in std::mem::take(&mut self.waiters) {
            let _ = tx.send(Err(AuditError::Write(reason.clone())));
        }
        self.pending.clear();
        self.failed = Some(reason);
        ctx.stop();
    }
}

/// Locks the durable head; a panic elsewhere cannot leave an `AuditHead` half-written.
fn lock(head: &Mutex<AuditHead>) -> MutexGuard<'_, AuditHead> {
    head.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Actor for AuditChainer {
    type Context = Context<Self>;
}

impl Handler<AppendRecord> for AuditChainer {
    type Result = ResponseFuture<Result<AuditReceipt, AuditError>>;

    fn handle(&mut self, msg: AppendRecord, ctx: &mut Context<Self>) -> Self::Result {
        self.append(msg, true, ctx)
    }
}

impl Handler<AppendWritten> for AuditChainer {
    type Result = ResponseFuture<Result<AuditReceipt, AuditError>>;

    fn handle(&mut self, msg: AppendWritten, ctx: &mut Context<Self>) -> Self::Result {
        self.append(msg.0, false, ctx)
    }
}

impl AuditChainer {
    /// Seals `msg` in mailbox order and queues it for the next batch.
    fn append(
        &mut self,
        msg: AppendRecord,
        durable: bool,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<AuditReceipt, AuditError>> {
        if let Some(reason) = &self.failed {
            let error = AuditError::Write(format!("an earlier write failed: {reason}"));
            return Box::pin(async move { Err(error) });
        }
        let ts = clock::now_rfc3339();
        let sealed = self.chain.seal(
            &ts,
            msg.kind,
            &msg.actor,
            &msg.subject,
            &msg.data,
            &mut self.pending,
        );
        let receipt = match sealed {
            Ok(receipt) => receipt,
            Err(error) => return Box::pin(async move { Err(error) }),
        };
        let (tx, rx) = oneshot::channel();
        self.waiters.push((receipt, tx, durable));
        self.schedule_flush(ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(AuditError::Unavailable)) })
    }
}

impl Handler<GetHead> for AuditChainer {
    type Result = AuditHead;

    fn handle(&mut self, _: GetHead, _: &mut Context<Self>) -> AuditHead {
        lock(&self.durable).clone()
    }
}

impl Handler<Ping> for AuditChainer {
    type Result = Pong;

    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Pong {
        Pong
    }
}

/// How many batches (fsyncs) the chainer has made durable: tests check that group commit groups.
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "u64")]
pub(crate) struct GetBatches;

#[cfg(test)]
impl Handler<GetBatches> for AuditChainer {
    type Result = u64;

    fn handle(&mut self, _: GetBatches, _: &mut Context<Self>) -> u64 {
        self.batches
    }
}

#[cfg(any(test, feature = "test-hooks"))]
impl Handler<crate::supervisor::InjectPanic> for AuditChainer {
    type Result = ();

    fn handle(&mut self, msg: crate::supervisor::InjectPanic, _: &mut Context<Self>) {
        panic!("injected panic: {}", msg.0);
    }
}
