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

#[cfg(test)]
mod tests;

/// Refuses new work while the state directory's file system is short of its reserve.
#[derive(Debug)]
pub struct SpaceGuard {
    /// Where the gateway writes: the store and the audit directory (measured apart, as either
    /// may be a mount of its own).
    dirs: [PathBuf; 2],
    /// `store.min_free_mib` in bytes; 0 turns the guard off.
    reserve: u64,
    /// Whether the last check found the reserve short: work is taken again only once an
    /// eighth more than the reserve is free, so a file system at the threshold does not flap.
    short: AtomicBool,
}

impl SpaceGuard {
    /// A guard over the store and audit directories of `home` keeping `reserve_mib` MiB free.
    pub fn new(home: &kafclaw_actors::paths::Home, reserve_mib: u64) -> Self {
        Self {
            dirs: [home.store_dir(), home.audit_dir()],
            reserve: reserve_mib.saturating_mul(1 << 20),
            short: AtomicBool::new(false),
        }
    }

    /// `Ok` when new work may be taken; [`ApiError::DiskFull`] while the reserve is short.
    pub fn admit(&self) -> Result<(), ApiError> {
        if self.reserve == 0 {
            return Ok(());
        }
        let was_short = self.short.load(Ordering::Relaxed);
        let spaces = self.dirs.each_ref().map(|dir| measure(dir));
        let (short, least) = decide(self.reserve, was_short, &spaces);
        self.short.store(short, Ordering::Relaxed);
        let free_mib = least.map(|(free, _)| free >> 20);
        let reserve_mib = least.map_or(self.reserve, |(_, reserve)| reserve) >> 20;
        match (was_short, short) {
            (false, true) => tracing::error!(
                free_mib = ?free_mib,
                reserve_mib,
                "the state directory's file system is full (below store.min_free_mib); \
                 refusing new work until space returns"
            ),
            (true, false) => tracing::info!(
                free_mib = ?free_mib,
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

/// Whether the file systems `spaces` are short of `reserve` bytes (an unmeasured one is), given
/// whether they were at the last check; and `(free, reserve)` of the tightest measured one.
fn decide(reserve: u64, was_short: bool, spaces: &[Option<Space>]) -> (bool, Option<(u64, u64)>) {
    let mut short = false;
    let mut least: Option<(u64, u64)> = None;
    for space in spaces {
        let Some(space) = space else {
            short = true;
            continue;
        };
        // A small file system keeps an eighth of itself, not more than it can ever free.
        let reserve = reserve.min(space.total / 8);
        let needed = if was_short {
            reserve + reserve / 8
        } else {
            reserve
        };
        short |= space.free < needed;
        if least.is_none_or(|(free, _)| space.free < free) {
            least = Some((space.free, reserve));
        }
    }
    (short, least)
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
