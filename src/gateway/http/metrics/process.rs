//! `process_start_time_seconds` and `process_resident_memory_bytes` (the names every
//! Prometheus client library uses), read from `/proc/self`.
//!
//! Owns: reading two files per scrape. Must not: fail a scrape — a figure that cannot be
//! read is left out (the start time falls back to now minus the uptime).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The process figures of one scrape.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessSample {
    /// Unix time the process started, in seconds.
    pub start_time_seconds: f64,
    /// Resident set size in bytes, when `/proc/self/statm` could be read.
    pub resident_memory_bytes: Option<u64>,
}

/// Reads the figures now; `started` is the gateway's own start (the fallback).
pub fn sample(started: Instant) -> ProcessSample {
    let fallback = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|now| now.as_secs_f64() - started.elapsed().as_secs_f64())
        .unwrap_or(0.0);
    ProcessSample {
        start_time_seconds: start_time().unwrap_or(fallback),
        resident_memory_bytes: resident_memory(),
    }
}

/// The boot time (`btime` of `/proc/stat`) plus the process's start in clock ticks after
/// boot (field 22 of `/proc/self/stat`): what the Go client reports, stable across scrapes.
fn start_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces and parentheses: count after its last ')'.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let ticks: f64 = after_comm.split_whitespace().nth(19)?.parse().ok()?;
    let boot: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let per_second = rustix::param::clock_ticks_per_second() as f64;
    (per_second > 0.0).then(|| boot + ticks / per_second)
}

/// Resident pages (field 2 of `/proc/self/statm`) times the page size.
fn resident_memory() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages.saturating_mul(rustix::param::page_size() as u64))
}

impl ProcessSample {
    /// Registers the `process_*` gauges.
    pub fn register(&self, registry: &mut Registry) {
        let start: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
        start.set(self.start_time_seconds);
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            start,
        );
        if let Some(bytes) = self.resident_memory_bytes {
            let rss: Gauge = Gauge::default();
            rss.set(i64::try_from(bytes).unwrap_or(i64::MAX));
            registry.register(
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                rss,
            );
        }
    }
}
