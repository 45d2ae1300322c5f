//! The free-space guard of the state directory: below `store.min_free_mib` free, new work
//! (channel deliveries, `/chat` turns) is refused with 503 before anything is stored or asked,
//! so what the gateway already acknowledged can still be written from the reserve — its turns,
//! replies and audit records — and the store never meets a full disk under load. Work is taken
//! again, without a restart, as soon as the reserve is free again.
//!
//! Owns: the check (one `statvfs` per request, no timer, no cache) and the two log lines of a
//! transition (full, space returned), each written once per transition.
//! Must not: write anything, or let a failed check pass (a file system it cannot measure is
//! treated as full: fail closed).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use super::error::ApiError;

/// Refuses new work while the state directory's file system is short of its reserve.
#[derive(Debug)]
pub struct SpaceGuard {
    /// The state directory (`~/.kafclaw`): the store and the audit log live under it.
    dir: PathBuf,
    /// `store.min_free_mib` in bytes; 0 turns the guard off.
    reserve: u64,
    /// Whether the last check found the reserve short (for logging transitions only).
    short: AtomicBool,
}

impl SpaceGuard {
    /// A guard over `dir` keeping `reserve_mib` MiB free.
    pub fn new(dir: PathBuf, reserve_mib: u64) -> Self {
        Self {
            dir,
            reserve: reserve_mib.saturating_mul(1 << 20),
            short: AtomicBool::new(false),
        }
    }

    /// `Ok` when new work may be taken; [`ApiError::DiskFull`] while the reserve is short.
    pub fn admit(&self) -> Result<(), ApiError> {
        if self.reserve == 0 {
            return Ok(());
        }
        let free = free_bytes(&self.dir);
        let short = free.is_none_or(|free| free < self.reserve);
        let was_short = self.short.swap(short, Ordering::Relaxed);
        let (mib, reserve_mib) = (free.map(|f| f >> 20), self.reserve >> 20);
        match (was_short, short) {
            (false, true) => tracing::error!(
                free_mib = ?mib,
                reserve_mib,
                "the state directory's file system is full (below store.min_free_mib); \
                 refusing new work until space returns"
            ),
            (true, false) => tracing::info!(
                free_mib = ?mib,
                reserve_mib,
                "space returned on the state directory's file system; accepting new work again"
            ),
            _ => {}
        }
        if short {
            Err(ApiError::DiskFull)
        } else {
            Ok(())
        }
    }
}

/// Bytes an unprivileged writer may still use under `dir`; `None` when it cannot be measured.
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}
