//! Audit log throughput: durable appends per second with 1, 8 and 64 concurrent writers through
//! the `AuditChainer` (group commit), with and without the head recorded in a sled store (one
//! insert per batch, as the gateway runs it), the synchronous `AuditLog` (one fsync per record),
//! and `verify` in MB/s.
//!
//! `cargo run --release -p kafclaw-actors --example audit_bench [-- DIR]`; the log is written to
//! a temporary directory under DIR (default: the system temporary directory), which should be
//! on the disk the gateway will use.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use actix::prelude::*;
use kafclaw_actors::audit::{
    verify, AppendRecord, AuditChainer, AuditKey, AuditKind, AuditLog, AuditSettings, RecordedHead,
};
use kafclaw_actors::store::StoreDb;
use serde_json::json;

fn key() -> AuditKey {
    AuditKey::from_bytes([42u8; 32])
}

fn record(writer: usize, i: usize) -> AppendRecord {
    AppendRecord {
        kind: AuditKind::ToolExecuted,
        actor: format!("writer-{writer}"),
        subject: "exec".to_string(),
        data: json!({ "argv": ["git", "status"], "exit": 0, "i": i, "ms": 12 }),
    }
}

/// `writers` concurrent tasks, each awaiting every append before the next, for `duration`.
async fn chainer_rate(
    dir: &Path,
    writers: usize,
    duration: Duration,
    recorded: bool,
) -> Result<f64, Box<dyn Error>> {
    let settings = AuditSettings::default();
    // Kept alive for the run: the store the head is recorded in.
    let mut _db = None;
    let chainer = if recorded {
        let db = StoreDb::open(&dir.with_extension("db"))?;
        let head = RecordedHead::new(dir.with_extension("head"), Some(&db))?;
        _db = Some(db);
        AuditChainer::open_recorded(dir, key(), &settings, head)?
    } else {
        AuditChainer::open(dir, key(), &settings)?
    };
    let addr = chainer.start();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let addr = addr.clone();
        tasks.push(actix_rt::spawn(async move {
            let mut done = 0usize;
            while start.elapsed() < duration {
                match addr.send(record(writer, done)).await {
                    Ok(Ok(_)) => done += 1,
                    _ => return Err(()),
                }
            }
            Ok(done)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await?.map_err(|()| "an append failed")?;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// The disk's floor: raw 320-byte appends, each followed by `fdatasync`, no audit code at all.
/// A closed-loop writer can never beat this; `n` such writers at best reach `n` times it.
fn raw_fsync_rate(dir: &Path, duration: Duration) -> Result<f64, Box<dyn Error>> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("raw"))?;
    let line = [b'x'; 320];
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed() < duration {
        file.write_all(&line)?;
        file.sync_data()?;
        done += 1;
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

fn sync_rate(dir: &Path, duration: Duration) -> Result<f64, Box<dyn Error>> {
    let mut log = AuditLog::open(dir, key(), &AuditSettings::default())?;
    let start = Instant::now();
    let mut done = 0usize;
    let data = json!({ "argv": ["git", "status"], "exit": 0, "i": 0, "ms": 12 });
    while start.elapsed() < duration {
        log.append(AuditKind::ToolExecuted, "cli", "exec", &data)?;
        done += 1;
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

/// User + system CPU time of this process so far (Linux `/proc/self/stat`, 100 ticks/s).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the whole line are utime and stime; `after_name` starts at field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn fresh(base: &Path, name: &str) -> PathBuf {
    base.join(name)
}

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let base = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::tempdir_in(base)?;
    let secs = Duration::from_secs(3);
    println!("audit bench in {}", tmp.path().display());

    let rate = raw_fsync_rate(&fresh(tmp.path(), "raw"), secs)?;
    println!("raw write+fdatasync (the disk's floor): {rate:>10.0} appends/s");
    let rate = sync_rate(&fresh(tmp.path(), "sync"), secs)?;
    println!("AuditLog (sync, fsync per record):      {rate:>10.0} durable appends/s");
    for writers in [1usize, 8, 64] {
        // Interleaved, so both modes see the same disk conditions.
        for (recorded, label) in [(false, "segments only "), (true, "+ head in store")] {
            let name = format!("chainer{writers}-{recorded}");
            let rate = chainer_rate(&fresh(tmp.path(), &name), writers, secs, recorded).await?;
            println!(
                "AuditChainer, {writers:>2} concurrent writers, {label}: {rate:>10.0} durable appends/s"
            );
        }
    }

    // A log of ~100 MB for verify, written with many concurrent writers (big batches).
    let dir = fresh(tmp.path(), "verify");
    let addr = AuditChainer::open(&dir, key(), &AuditSettings::default())?.start();
    let mut tasks = Vec::new();
    for writer in 0..256 {
        let addr = addr.clone();
        tasks.push(actix_rt::spawn(async move {
            for i in 0..1500 {
                if !matches!(addr.send(record(writer, i)).await, Ok(Ok(_))) {
                    return Err(());
                }
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await?.map_err(|()| "an append failed")?;
    }
    for pass in ["first pass", "second pass", "third pass"] {
        let cpu_before = cpu_seconds();
        let start = Instant::now();
        let report = verify(&dir, &key(), None)?;
        let secs = start.elapsed().as_secs_f64();
        let cpu = cpu_seconds()
            .zip(cpu_before)
            .map(|(after, before)| after - before);
        let mb = report.bytes as f64 / 1e6;
        println!(
            "verify ({pass}): {} records, {mb:.1} MB in {secs:.3} s = {:>5.0} MB/s wall; \
             {} CPU-s = {} MB per CPU-second",
            report.records,
            mb / secs,
            cpu.map_or("?".to_string(), |c| format!("{c:.2}")),
            cpu.map_or("?".to_string(), |c| format!("{:.0}", mb / c.max(0.001))),
        );
    }
    Ok(())
}
