//! The free-space guard of the state directory: below `store.min_free_mib` free (an eighth of
//! the file system when that is less), new work (channel deliveries, `/chat` turns) is refused
//! with 503 before anything is stored or asked, so what the gateway already acknowledged can
//! still be written from the reserve — its turns, replies and audit records — and the store
//! never meets a full disk under load. Work is taken again, without a restart, as soon as the
//! reserve is free again.
//!
//! Owns: the check (one `statvfs` per request, no timer, no cache) and the two log lines of a
//! transition (full, space returned), each written once per transition.
//! Must not: write anything, or let a failed check pass (a file system it cannot measure is
//! treated as full: fail closed). In `test-hooks` builds `KAFCLAW_TEST_FREE_BYTES_FILE` may
//! replace the measurement (where a test cannot mount a small file system).

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
        let space = measure(&self.dir);
        // A small file system keeps an eighth of itself, not more than it can ever have free.
        let reserve = space.map_or(self.reserve, |s| self.reserve.min(s.total / 8));
        let free = space.map(|s| s.free);
        let short = free.is_none_or(|free| free < reserve);
        let was_short = self.short.swap(short, Ordering::Relaxed);
        let (mib, reserve_mib) = (free.map(|f| f >> 20), reserve >> 20);
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

/// The size of a file system and what of it an unprivileged writer may still use, in bytes.
#[derive(Clone, Copy, Debug)]
struct Space {
    total: u64,
    free: u64,
}

/// The file system under `dir`; `None` when it cannot be measured.
fn measure(dir: &std::path::Path) -> Option<Space> {
    #[cfg(feature = "test-hooks")]
    if let Some(injected) = injected_free_bytes() {
        return injected.map(|free| Space {
            total: u64::MAX,
            free,
        });
    }
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(Space {
        total: stat.f_blocks.saturating_mul(stat.f_frsize),
        free: stat.f_bavail.saturating_mul(stat.f_frsize),
    })
}

/// The environment variable naming a file whose content (a decimal byte count) replaces the
/// measured free space (test-hooks builds only: for machines where a test cannot mount a small
/// file system).
#[cfg(feature = "test-hooks")]
pub const FREE_BYTES_ENV: &str = "KAFCLAW_TEST_FREE_BYTES_FILE";

/// The injected free space: `None` without [`FREE_BYTES_ENV`], `Some(None)` when its file
/// cannot be read or parsed (which counts as short, like a failed `statvfs`).
#[cfg(feature = "test-hooks")]
fn injected_free_bytes() -> Option<Option<u64>> {
    static FILE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    let file = FILE.get_or_init(|| std::env::var_os(FREE_BYTES_ENV).map(PathBuf::from));
    let file = file.as_ref()?;
    Some(
        std::fs::read_to_string(file)
            .ok()
            .and_then(|s| s.trim().parse().ok()),
    )
}
