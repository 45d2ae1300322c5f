//! Per-IP authentication-failure counting and lockout (CONTRACT §3.1): after
//! `security.auth_lockout.max_failures` failures within `window_seconds` from one IP, that IP
//! gets 429 with `Retry-After` for `lockout_seconds`, even with a correct token.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lockout thresholds.
#[derive(Clone, Copy, Debug)]
pub struct LockoutPolicy {
    /// Failures tolerated within `window`.
    pub max_failures: u32,
    /// Counting window.
    pub window: Duration,
    /// How long a locked-out IP is refused.
    pub lockout: Duration,
}

/// What a recorded failure led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Counted; the IP may keep trying.
    Counted { failures_in_window: u32 },
    /// This failure locked the IP out (reported once per lockout).
    LockedOut { retry_after: Duration },
}

#[derive(Default)]
struct IpRecord {
    failures: VecDeque<Instant>,
    locked_until: Option<Instant>,
}

/// The failure table. Bounded: entries with nothing recent are pruned as the table grows.
pub struct Lockout {
    policy: LockoutPolicy,
    table: Mutex<HashMap<IpAddr, IpRecord>>,
}

const PRUNE_ABOVE: usize = 10_000;

impl Lockout {
    /// An empty table.
    pub fn new(policy: LockoutPolicy) -> Self {
        Self {
            policy,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(retry_after)` while `ip` is locked out.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table
            .get(&ip)
            .and_then(|r| r.locked_until)
            .and_then(|until| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    /// Locks `ip` out for `duration` from `now` (an incident action); never shortens a lockout.
    pub fn lock(&self, ip: IpAddr, duration: Duration, now: Instant) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let record = table.entry(ip).or_default();
        let until = now + duration;
        if record.locked_until.is_none_or(|u| u < until) {
            record.locked_until = Some(until);
        }
    }

    /// Counts one failure from `ip`.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) -> FailureOutcome {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if table.len() > PRUNE_ABOVE {
            let window = self.policy.window;
            table.retain(|_, r| {
                r.locked_until.is_some_and(|u| u > now)
                    || r.failures
                        .back()
                        .is_some_and(|t| now.duration_since(*t) < window)
            });
        }
        let record = table.entry(ip).or_default();
        if record.locked_until.is_some_and(|u| u > now) {
            return FailureOutcome::Counted {
                failures_in_window: record.failures.len() as u32,
            };
        }
        record.locked_until = None;
        record.failures.push_back(now);
        while record
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.policy.window)
        {
            record.failures.pop_front();
        }
        let count = record.failures.len() as u32;
        if count >= self.policy.max_failures {
            record.failures.clear();
            record.locked_until = Some(now + self.policy.lockout);
            FailureOutcome::LockedOut {
                retry_after: self.policy.lockout,
            }
        } else {
            FailureOutcome::Counted {
                failures_in_window: count,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_out_after_max_failures_in_window_and_expires() {
        let lockout = Lockout::new(LockoutPolicy {
            max_failures: 3,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(300),
        });
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(
            lockout.record_failure(ip, t0),
            FailureOutcome::Counted {
                failures_in_window: 1
            }
        );
        lockout.record_failure(ip, t0 + Duration::from_secs(1));
        assert!(lockout.check(ip, t0 + Duration::from_secs(1)).is_none());
        assert!(matches!(
            lockout.record_failure(ip, t0 + Duration::from_secs(2)),
            FailureOutcome::LockedOut { .. }
        ));
        let left = lockout.check(ip, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(left, Duration::from_secs(300));
        assert!(
            lockout.check(other, t0).is_none(),
            "other clients are unaffected"
        );
        assert!(lockout.check(ip, t0 + Duration::from_secs(303)).is_none());
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let lockout = Lockout::new(LockoutPolicy {
            max_failures: 2,
            window: Duration::from_secs(10),
            lockout: Duration::from_secs(30),
        });
        let ip: IpAddr = "::1".parse().unwrap();
        let t0 = Instant::now();
        lockout.record_failure(ip, t0);
        assert_eq!(
            lockout.record_failure(ip, t0 + Duration::from_secs(11)),
            FailureOutcome::Counted {
                failures_in_window: 1
            }
        );
    }
}
