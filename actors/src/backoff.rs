//! [`Backoff`]: the one retry schedule of the system (outbox sends, supervisor restarts,
//! model-provider retries, media re-fetches).
//!
//! Owns: exponential growth from a base, a cap, "equal jitter" (half of each delay fixed, half
//! random, so retries of many senders spread out instead of arriving together), and the attempt
//! budget; [`Retries`] walks the schedule for one retry loop and can be reset.
//! Must not: sleep or know what is retried.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A retry schedule: the delay after failed attempt `n` (1-based) lies in `[d/2, d]` for
/// `d = min(cap_ms, base_ms·2^(n-1))`; at most `max_attempts` attempts.
///
/// [`Backoff::default`] is the channel outbox's schedule (1 s doubling to 5 min, 10 attempts).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// Delay after the first failure (before jitter), ms.
    pub base_ms: u64,
    /// Largest delay, ms.
    pub cap_ms: u64,
    /// Attempts before the work is given up on.
    pub max_attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base_ms: 1_000,
            cap_ms: 300_000,
            max_attempts: 10,
        }
    }
}

impl Backoff {
    /// A schedule from `base_ms` doubling up to `cap_ms`, with `max_attempts` attempts.
    pub const fn new(base_ms: u64, cap_ms: u64, max_attempts: u32) -> Self {
        Self {
            base_ms,
            cap_ms,
            max_attempts,
        }
    }

    /// The delay before jitter after failed attempt `attempt` (1-based):
    /// `min(cap_ms, base_ms·2^(attempt-1))`.
    pub fn ceiling_ms(&self, attempt: u32) -> u64 {
        let exp = attempt.saturating_sub(1).min(63);
        self.base_ms.saturating_mul(1u64 << exp).min(self.cap_ms)
    }

    /// The delay after failed attempt `attempt` (1-based), with `random` choosing the jitter:
    /// the result lies in `[d/2, d]` for `d = ceiling_ms(attempt)`.
    pub fn delay_ms(&self, attempt: u32, random: u64) -> u64 {
        let full = self.ceiling_ms(attempt);
        let half = full / 2;
        full - half + random % (half + 1)
    }

    /// [`Backoff::delay_ms`] with jitter from the operating system's random source.
    pub fn delay(&self, attempt: u32) -> Duration {
        Duration::from_millis(self.delay_ms(attempt, os_random()))
    }

    /// A walk through this schedule for one retry loop.
    pub fn retries(&self) -> Retries {
        Retries {
            backoff: self.clone(),
            failures: 0,
        }
    }
}

/// One retry loop's position in a [`Backoff`] schedule.
#[derive(Clone, Debug)]
pub struct Retries {
    backoff: Backoff,
    failures: u32,
}

impl Retries {
    /// Records one failed attempt; answers the wait before the next one, or `None` when the
    /// attempt budget is spent.
    pub fn next_delay(&mut self) -> Option<Duration> {
        self.next_delay_with(os_random())
    }

    /// [`Retries::next_delay`] with the jitter chosen by `random`.
    pub fn next_delay_with(&mut self, random: u64) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        (self.failures < self.backoff.max_attempts)
            .then(|| Duration::from_millis(self.backoff.delay_ms(self.failures, random)))
    }

    /// Failed attempts recorded so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Back to the start of the schedule (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A random number for jitter. Jitter only spreads retries; without randomness (the source
/// failing), no jitter is still a valid schedule.
pub fn os_random() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_from_the_base_up_to_the_cap() {
        let b = Backoff::new(25, 2_000, 5);
        let ceilings: Vec<u64> = (1..=9).map(|n| b.ceiling_ms(n)).collect();
        assert_eq!(ceilings, [25, 50, 100, 200, 400, 800, 1_600, 2_000, 2_000]);
        // Attempt 0 counts as the first; huge attempts neither overflow nor pass the cap.
        assert_eq!(b.ceiling_ms(0), 25);
        assert_eq!(b.ceiling_ms(u32::MAX), 2_000);
        let unbounded = Backoff::new(5_000, u64::MAX, 3);
        assert_eq!(unbounded.ceiling_ms(200), u64::MAX);
    }

    #[test]
    fn jitter_keeps_every_delay_between_half_and_the_whole_ceiling() {
        let b = Backoff::default();
        for attempt in 1..=12 {
            let d = b.ceiling_ms(attempt);
            for random in [0, 1, 7, 499, 500, 501, 12_345, u64::MAX / 3, u64::MAX] {
                let delay = b.delay_ms(attempt, random);
                assert!(
                    delay >= d - d / 2 && delay <= d,
                    "attempt {attempt}: {delay} outside [{}, {d}]",
                    d - d / 2
                );
            }
        }
        // Both ends are reachable: random 0 gives the fixed half, random = half the whole.
        assert_eq!(b.delay_ms(1, 0), 500);
        assert_eq!(b.delay_ms(1, 500), 1_000);
        assert_eq!(b.delay_ms(20, 150_000), 300_000);
    }

    #[test]
    fn the_os_jitter_spreads_delays_inside_the_range() {
        let b = Backoff::new(1_000, 60_000, 10);
        let delays: std::collections::BTreeSet<u128> =
            (0..64).map(|_| b.delay(3).as_millis()).collect();
        assert!(delays.iter().all(|d| (2_000..=4_000).contains(d)));
        assert!(delays.len() > 1, "64 draws gave one delay: no jitter");
    }

    #[test]
    fn retries_stop_at_the_attempt_budget_and_start_over_after_a_reset() {
        let b = Backoff::new(100, 1_000, 4);
        let mut r = b.retries();
        let walk: Vec<Option<Duration>> = (0..5).map(|_| r.next_delay_with(0)).collect();
        assert_eq!(
            walk,
            [
                Some(Duration::from_millis(50)),
                Some(Duration::from_millis(100)),
                Some(Duration::from_millis(200)),
                None,
                None,
            ]
        );
        assert_eq!(r.failures(), 5);
        r.reset();
        assert_eq!(r.failures(), 0);
        assert_eq!(r.next_delay_with(50), Some(Duration::from_millis(100)));
        // One attempt allowed: no retry at all.
        assert_eq!(Backoff::new(100, 1_000, 1).retries().next_delay(), None);
    }
}
