//! Per-client authentication-failure counting and lockout (CONTRACT §3.1): after
//! `security.auth_lockout.max_failures` failures within `window_seconds` of the first one from
//! one client key (an IPv4 address, an IPv6 /64), that key gets 429 with `Retry-After` for
//! `lockout_seconds`, even with a correct token. Also the rate at which refusals that are not
//! authentication attempts (a wrong `Host`, a foreign `Origin`) are written to the audit log.
//!
//! Owns: bounded tables with O(1) work per event: a fixed capacity, and the oldest counting
//! entry is evicted when a new key arrives at a full table (no scan under the lock). Lockouts
//! in force live apart from the counts, so a flood of new keys evicts counts, never a
//! lockout: only a full lockout table (every entry locked) is scanned, dropping expired
//! lockouts, then the one that ends soonest.
//! Must not: block, allocate per event beyond one new entry, or key by anything but
//! [`ClientKey`].

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::client::ClientKey;

#[cfg(test)]
mod tests;

/// Entries a table holds at most (~64 bytes each).
pub const TABLE_CAPACITY: usize = 16_384;

/// Lockout thresholds.
#[derive(Clone, Copy, Debug)]
pub struct LockoutPolicy {
    /// Failures tolerated within `window`.
    pub max_failures: u32,
    /// Counting window.
    pub window: Duration,
    /// How long a locked-out client is refused.
    pub lockout: Duration,
}

/// What a recorded failure led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Counted; the client may keep trying.
    Counted { failures_in_window: u32 },
    /// This failure locked the client out (reported once per lockout).
    LockedOut { retry_after: Duration },
}

/// A map with a fixed capacity that evicts its oldest key (by insertion) to admit a new one.
struct BoundedTable<V> {
    map: HashMap<ClientKey, V>,
    /// Keys in insertion order; exactly the keys of `map`.
    order: VecDeque<ClientKey>,
    capacity: usize,
}

impl<V: Default> BoundedTable<V> {
    fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    fn entry(&mut self, key: ClientKey) -> &mut V {
        if !self.map.contains_key(&key) {
            if self.map.len() >= self.capacity {
                if let Some(oldest) = self.order.pop_front() {
                    self.map.remove(&oldest);
                }
            }
            self.order.push_back(key);
        }
        self.map.entry(key).or_default()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        debug_assert_eq!(self.map.len(), self.order.len());
        self.map.len()
    }
}

#[derive(Default)]
struct Record {
    failures: u32,
    window_start: Option<Instant>,
}

/// The counts, and the lockouts in force (by when they end).
struct Tables {
    counts: BoundedTable<Record>,
    locks: HashMap<ClientKey, Instant>,
    lock_capacity: usize,
}

impl Tables {
    fn locked_until(&self, key: &ClientKey, now: Instant) -> Option<Instant> {
        self.locks.get(key).copied().filter(|until| *until > now)
    }

    /// Locks `key` until `until` (never shortening a lockout in force); true when it was not
    /// locked out before.
    fn lock(&mut self, key: ClientKey, until: Instant, now: Instant) -> bool {
        let fresh = self.locked_until(&key, now).is_none();
        if !self.locks.contains_key(&key) && self.locks.len() >= self.lock_capacity {
            self.locks.retain(|_, u| *u > now);
            if self.locks.len() >= self.lock_capacity {
                if let Some(soonest) = self.locks.iter().min_by_key(|(_, u)| **u).map(|(k, _)| *k) {
                    self.locks.remove(&soonest);
                }
            }
        }
        let entry = self.locks.entry(key).or_insert(until);
        if *entry < until {
            *entry = until;
        }
        fresh
    }
}

/// The failure table.
pub struct Lockout {
    policy: LockoutPolicy,
    table: Mutex<Tables>,
}

impl Lockout {
    /// An empty table.
    pub fn new(policy: LockoutPolicy) -> Self {
        Self::with_capacity(policy, TABLE_CAPACITY)
    }

    /// An empty table holding at most `capacity` clients.
    pub fn with_capacity(policy: LockoutPolicy, capacity: usize) -> Self {
        Self {
            policy,
            table: Mutex::new(Tables {
                counts: BoundedTable::new(capacity),
                locks: HashMap::new(),
                lock_capacity: capacity.max(1),
            }),
        }
    }

    /// `Some(retry_after)` while the client `ip` belongs to is locked out.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table
            .locked_until(&ClientKey::of(ip), now)
            .map(|until| until.saturating_duration_since(now))
    }

    /// Locks `ip`'s key out for `duration` from `now` (an incident action); never shortens
    /// a lockout.
    pub fn lock(&self, ip: IpAddr, duration: Duration, now: Instant) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if table.lock(ClientKey::of(ip), now + duration, now) {
            super::metrics::edge::metrics().lockout();
        }
    }

    /// The client keys locked out at `now`, with the time left, longest first. A scan of the
    /// bounded table: for the dashboard and a scrape, never for a request's decision.
    pub fn active(&self, now: Instant) -> Vec<(ClientKey, Duration)> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(ClientKey, Duration)> = table
            .locks
            .iter()
            .filter_map(|(key, until)| {
                let left = until.checked_duration_since(now)?;
                (!left.is_zero()).then_some((*key, left))
            })
            .collect();
        out.sort_by_key(|entry| std::cmp::Reverse(entry.1));
        out
    }

    /// Counts one failure from `ip`'s key.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) -> FailureOutcome {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let key = ClientKey::of(ip);
        let locked = table.locked_until(&key, now).is_some();
        let record = table.counts.entry(key);
        if locked {
            return FailureOutcome::Counted {
                failures_in_window: record.failures,
            };
        }
        let expired = record
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) > self.policy.window);
        if expired {
            record.failures = 0;
            record.window_start = Some(now);
        }
        record.failures += 1;
        if record.failures >= self.policy.max_failures {
            record.failures = 0;
            record.window_start = None;
            table.lock(key, now + self.policy.lockout, now);
            super::metrics::edge::metrics().lockout();
            FailureOutcome::LockedOut {
                retry_after: self.policy.lockout,
            }
        } else {
            FailureOutcome::Counted {
                failures_in_window: record.failures,
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().unwrap().counts.len()
    }
}

/// Whether one refusal is written to the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditDecision {
    /// Audit it; `suppressed` earlier refusals of this client were not audited.
    Audit { suppressed: u32 },
    /// Over the rate: count it, do not audit it.
    Suppress,
}

#[derive(Default)]
struct Rate {
    audited: u32,
    suppressed: u32,
    window_start: Option<Instant>,
}

impl Rate {
    fn admit(&mut self, limit: u32, window: Duration, now: Instant) -> AuditDecision {
        if self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) > window)
        {
            self.window_start = Some(now);
            self.audited = 0;
        }
        if self.audited < limit {
            self.audited += 1;
            AuditDecision::Audit {
                suppressed: std::mem::take(&mut self.suppressed),
            }
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            AuditDecision::Suppress
        }
    }
}

/// At most `per_client` audited refusals per client key and `total` from everyone within
/// `window`: a flood of bad `Host`s costs no more audit appends than the lockout lets
/// authentication failures cost, and it never locks anyone out (a rebinding page runs in the
/// local operator's own browser, from 127.0.0.1).
pub struct AuditThrottle {
    per_client: u32,
    total: u32,
    window: Duration,
    state: Mutex<(BoundedTable<Rate>, Rate)>,
}

impl AuditThrottle {
    /// A throttle with the given limits.
    pub fn new(per_client: u32, total: u32, window: Duration) -> Self {
        Self {
            per_client,
            total,
            window,
            state: Mutex::new((BoundedTable::new(TABLE_CAPACITY), Rate::default())),
        }
    }

    /// Decides about one refusal from `ip`.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> AuditDecision {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (table, global) = &mut *state;
        let rate = table.entry(ClientKey::of(ip));
        match rate.admit(self.per_client, self.window, now) {
            AuditDecision::Suppress => AuditDecision::Suppress,
            AuditDecision::Audit { suppressed } => {
                match global.admit(self.total, self.window, now) {
                    AuditDecision::Audit { .. } => AuditDecision::Audit { suppressed },
                    AuditDecision::Suppress => {
                        // Give the client's slot back: it was not audited.
                        rate.audited -= 1;
                        rate.suppressed = suppressed.saturating_add(1);
                        AuditDecision::Suppress
                    }
                }
            }
        }
    }
}
