//! The process heap's bounds (issue 20): glibc malloc tuned at start so a long flood leaves
//! RSS close to the live heap instead of growing with fragmentation.
//!
//! Owns: the two `mallopt(3)` settings made before the first thread starts.
//! Must not: run after threads exist (arenas are created lazily per thread), or override an
//! operator's own tuning (`MALLOC_ARENA_MAX`, `MALLOC_TRIM_THRESHOLD_`, `GLIBC_TUNABLES`).
//!
//! Why these two (measured with `tests/bench/growth_soak.py`, README "Benchmarks"): glibc gives
//! every thread that contends for the heap an arena of its own, up to 8 per core. Sled's
//! flusher, the blocking pool, the actix arbiters and the HTTP workers each fill one, and
//! freed memory stays in the arena that served it; the default trim threshold also rises with
//! every large free, so big freed buffers are kept rather than handed back. Two arenas and a
//! fixed 128 KiB trim threshold (which also keeps the mmap threshold at its 128 KiB default)
//! held the soak's RSS to about the live heap, where jemalloc and mimalloc (preloaded, same
//! run) kept more.

/// Arenas glibc may create (the main one included).
pub const ARENA_MAX: i32 = 2;

/// Free memory at the top of an arena above this is returned to the kernel (bytes).
pub const TRIM_THRESHOLD: i32 = 128 * 1024;

/// The environment variables through which an operator tunes glibc malloc; when any is set,
/// [`tune`] leaves the allocator as the operator configured it.
pub const OPERATOR_TUNING: [&str; 3] = [
    "MALLOC_ARENA_MAX",
    "MALLOC_TRIM_THRESHOLD_",
    "GLIBC_TUNABLES",
];

/// What [`tune`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tuning {
    /// Both settings applied.
    Applied,
    /// The operator tunes malloc through the environment: nothing changed.
    Operator,
    /// Not glibc (musl, another OS): nothing to tune.
    Unsupported,
    /// glibc refused a setting (its defaults stay).
    Refused,
}

/// Tunes glibc malloc (see the module documentation). Call first thing in `main`, before any
/// thread is spawned, with the names of the process environment's variables.
pub fn tune<S: AsRef<str>>(env_names: impl IntoIterator<Item = S>) -> Tuning {
    if env_names
        .into_iter()
        .any(|name| OPERATOR_TUNING.contains(&name.as_ref()))
    {
        return Tuning::Operator;
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn apply() -> Tuning {
    // SAFETY: mallopt(3) takes two integers and touches no memory of ours; glibc takes its
    // arena lock for the change, so it is sound from any thread (`tune` is called before other
    // threads exist only so that every arena is created under the new limit).
    let arenas = unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX) };
    // SAFETY: as above.
    let trim = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) };
    if arenas == 1 && trim == 1 {
        Tuning::Applied
    } else {
        Tuning::Refused
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> Tuning {
    Tuning::Unsupported
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operator_setting_leaves_malloc_alone() {
        for name in OPERATOR_TUNING {
            assert_eq!(tune(["PATH", name]), Tuning::Operator, "{name}");
        }
    }

    #[test]
    fn without_operator_settings_glibc_takes_both() {
        let expected = if cfg!(all(target_os = "linux", target_env = "gnu")) {
            Tuning::Applied
        } else {
            Tuning::Unsupported
        };
        assert_eq!(tune(["PATH", "HOME"]), expected);
    }
}
