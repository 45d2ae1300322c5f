//! Test-only crash points: `hit("name")` aborts the process (as abruptly as `kill -9`: no
//! destructor, no flush) when the environment variable [`CRASH_ENV`] names the point.
//!
//! Owns: reading `KAFCLAW_TEST_CRASH_AT=name[:n]` once (abort at the n-th hit of `name`,
//! default the first) and counting hits.
//! Must not: exist in a release build: without the `test-hooks` feature `hit` is an empty
//! inline function and the variable is never read.
//!
//! Points (each placed right after the named effect and before the write that records it):
//! - `turn.model_answered`: the model answered, the answer is not journaled yet;
//! - `tool.ran`: a tool ran, its result is not journaled yet;
//! - `send.accepted`: the provider accepted a reply, the acceptance is not recorded yet;
//! - `inbox.marked_done`: a message was marked done, not yet flushed.

/// The environment variable naming the crash point.
pub const CRASH_ENV: &str = "KAFCLAW_TEST_CRASH_AT";

#[cfg(any(test, feature = "test-hooks"))]
mod armed {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    /// The configured point and the hit that aborts.
    fn target() -> &'static Option<(String, u64)> {
        static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
        TARGET.get_or_init(|| {
            let raw = std::env::var(super::CRASH_ENV).ok()?;
            let (name, n) = match raw.split_once(':') {
                Some((name, n)) => (name.to_string(), n.parse().ok()?),
                None => (raw, 1),
            };
            Some((name, n))
        })
    }

    static HITS: AtomicU64 = AtomicU64::new(0);

    pub fn hit(name: &str) {
        let Some((target, n)) = target() else { return };
        if target != name {
            return;
        }
        if HITS.fetch_add(1, Ordering::SeqCst) + 1 >= *n {
            eprintln!("testpoint {name}: aborting the process");
            std::process::abort();
        }
    }
}

/// Aborts the process when [`CRASH_ENV`] names `name` (test-hooks builds only).
#[cfg(any(test, feature = "test-hooks"))]
pub fn hit(name: &str) {
    armed::hit(name);
}

/// Does nothing: crash points exist only in test-hooks builds.
#[cfg(not(any(test, feature = "test-hooks")))]
#[inline(always)]
pub fn hit(_name: &str) {}
