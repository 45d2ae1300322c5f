//! Sliding windows: event counts per subject, and token buckets per channel.
//!
//! Owns: counting with bounded memory. Time is always a parameter (`at`), never read here, so
//! every rule is testable without waiting.
//! Must not: know what a subject is or what happens when a threshold is reached.
//!
//! Memory bounds: an [`EventWindow`] keeps at most `threshold` events (more can never matter:
//! it fires at `threshold` and starts over); [`TokenBuckets`] keeps one bucket per fifth of the
//! window over the window plus the trailing hour; a [`SubjectMap`] tracks at most
//! `max_subjects` subjects, dropping idle ones first and then the least recently seen.
//! A subject dropped under pressure loses its partial count (the global auth counter still sees
//! every failure).

use std::collections::{HashMap, VecDeque};

use time::OffsetDateTime;

/// The trailing period a token spike is compared with.
pub(crate) const BASELINE_SECONDS: u64 = 3_600;

const NANOS_PER_SECOND: i128 = 1_000_000_000;

fn nanos(at: OffsetDateTime) -> i128 {
    at.unix_timestamp_nanos()
}

fn from_nanos(n: i128) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(n).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn seconds(s: u64) -> i128 {
    i128::from(s) * NANOS_PER_SECOND
}

/// A threshold was reached inside the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fired {
    /// Events in the window (the threshold).
    pub count: u64,
    /// The oldest event in the window.
    pub first_seen: OffsetDateTime,
    /// The event that reached the threshold.
    pub last_seen: OffsetDateTime,
    /// Distinct sample ids of the window's events, oldest first.
    pub samples: Vec<String>,
}

/// Anything a [`SubjectMap`] can hold: it knows when it last saw an event.
pub(crate) trait Recency {
    /// The time of the latest event (unix nanoseconds), or `None` when empty.
    fn last_nanos(&self) -> Option<i128>;
    /// Whether nothing in it can matter any more at `now` (everything is older than the
    /// longest span it looks back over).
    fn is_idle(&self, now: i128) -> bool;
}

/// The recent events of one subject for one trigger.
#[derive(Debug, Default)]
pub(crate) struct EventWindow {
    /// Event times (unix nanoseconds, non-decreasing) with an optional sample id.
    events: VecDeque<(i128, Option<Box<str>>)>,
    /// The window's span (nanoseconds), remembered for [`Recency::is_idle`].
    span: i128,
}

impl EventWindow {
    /// Counts one event at `at`. Returns [`Fired`] when it is the `threshold`-th event within
    /// the last `window_seconds` (an event exactly `window_seconds` old no longer counts); the
    /// window then starts over. A threshold of 0 never fires.
    pub fn record(
        &mut self,
        at: OffsetDateTime,
        sample: Option<&str>,
        window_seconds: u64,
        threshold: u32,
    ) -> Option<Fired> {
        if threshold == 0 {
            return None;
        }
        self.span = seconds(window_seconds);
        // A clock that steps back must not reorder the window: count it as "now".
        let now = self.events.back().map_or(nanos(at), |(last, _)| {
            let t = nanos(at);
            if t < *last {
                *last
            } else {
                t
            }
        });
        self.prune(now);
        self.events.push_back((now, sample.map(Box::from)));
        while self.events.len() > threshold as usize {
            self.events.pop_front();
        }
        if self.events.len() < threshold as usize {
            return None;
        }
        let first = self.events.front().map_or(now, |(t, _)| *t);
        let mut samples: Vec<String> = Vec::new();
        for (_, id) in &self.events {
            if let Some(id) = id {
                if samples.len() < super::MAX_SAMPLE_IDS && !samples.iter().any(|s| **s == **id) {
                    samples.push(id.to_string());
                }
            }
        }
        let fired = Fired {
            count: self.events.len() as u64,
            first_seen: from_nanos(first),
            last_seen: from_nanos(now),
            samples,
        };
        self.events.clear();
        Some(fired)
    }

    /// Drops events that are `span` or more old at `now`.
    fn prune(&mut self, now: i128) {
        while self
            .events
            .front()
            .is_some_and(|(t, _)| now - *t >= self.span)
        {
            self.events.pop_front();
        }
    }

    /// Events currently held (for tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.events.len()
    }
}

impl Recency for EventWindow {
    fn last_nanos(&self) -> Option<i128> {
        self.events.back().map(|(t, _)| *t)
    }
    fn is_idle(&self, now: i128) -> bool {
        self.last_nanos().is_none_or(|t| now - t >= self.span)
    }
}

/// A token spike was detected.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Spike {
    /// Tokens in the window.
    pub recent: u64,
    /// The trailing hourly average per window.
    pub baseline: u64,
    /// The first usage counted in the window.
    pub first_seen: OffsetDateTime,
    /// The usage that made it a spike.
    pub last_seen: OffsetDateTime,
}

/// Token usage of one channel in buckets of a fifth of the window.
#[derive(Debug, Default)]
pub(crate) struct TokenBuckets {
    /// (bucket index = unix seconds / width, tokens, time of the bucket's first usage).
    buckets: VecDeque<(i64, u64, i128)>,
    /// The look-back (window + hour, nanoseconds), for [`Recency::is_idle`].
    horizon: i128,
    /// The latest usage.
    last: Option<i128>,
}

/// The token-spike thresholds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SpikeRule {
    /// The window, in seconds.
    pub window_seconds: u64,
    /// Recent tokens must exceed `factor` × the baseline…
    pub factor: f64,
    /// …and this many tokens.
    pub min_tokens: u64,
}

impl TokenBuckets {
    /// Adds `tokens` used at `at`. Returns [`Spike`] when the tokens of the last window exceed
    /// both `factor` × the average per window over the hour before it and `min_tokens`; the
    /// window's buckets are then dropped so that one spike fires once and does not inflate the
    /// baseline later.
    pub fn record(&mut self, at: OffsetDateTime, tokens: u64, rule: SpikeRule) -> Option<Spike> {
        let window = rule.window_seconds.max(1);
        let width = (window / 5).max(1);
        let recent_buckets = window.div_ceil(width) as i64;
        let baseline_buckets = BASELINE_SECONDS.div_ceil(width) as i64;
        let t = nanos(at).max(self.last.unwrap_or(i128::MIN));
        self.last = Some(t);
        self.horizon = seconds(window + BASELINE_SECONDS);
        let secs = (t.div_euclid(NANOS_PER_SECOND)) as i64;
        let index = secs.div_euclid(width as i64);
        match self.buckets.back_mut() {
            Some((i, sum, _)) if *i == index => *sum = sum.saturating_add(tokens),
            _ => self.buckets.push_back((index, tokens, t)),
        }
        let oldest_kept = index - recent_buckets - baseline_buckets;
        while self
            .buckets
            .front()
            .is_some_and(|(i, _, _)| *i <= oldest_kept)
        {
            self.buckets.pop_front();
        }
        let recent_from = index - recent_buckets; // exclusive
        let mut recent = 0u64;
        let mut baseline_sum = 0u64;
        let mut first_seen = t;
        for (i, sum, first) in &self.buckets {
            if *i > recent_from {
                recent = recent.saturating_add(*sum);
                first_seen = first_seen.min(*first);
            } else {
                baseline_sum = baseline_sum.saturating_add(*sum);
            }
        }
        let windows_per_hour = BASELINE_SECONDS as f64 / window as f64;
        let baseline = baseline_sum as f64 / windows_per_hour;
        if recent > rule.min_tokens && recent as f64 > rule.factor * baseline {
            self.buckets.retain(|(i, _, _)| *i <= recent_from);
            return Some(Spike {
                recent,
                baseline: baseline.round() as u64,
                first_seen: from_nanos(first_seen),
                last_seen: from_nanos(t),
            });
        }
        None
    }
}

impl Recency for TokenBuckets {
    fn last_nanos(&self) -> Option<i128> {
        self.last
    }
    fn is_idle(&self, now: i128) -> bool {
        self.last.is_none_or(|t| now - t >= self.horizon)
    }
}

/// Per-subject state with a cap on the number of subjects.
#[derive(Debug)]
pub(crate) struct SubjectMap<T> {
    map: HashMap<String, T>,
    max_subjects: usize,
}

impl<T: Recency + Default> SubjectMap<T> {
    /// An empty map tracking at most `max_subjects` subjects (at least 1).
    pub fn new(max_subjects: usize) -> Self {
        Self {
            map: HashMap::new(),
            max_subjects: max_subjects.max(1),
        }
    }

    /// The state of `subject`, created if needed. When the map is full, idle subjects are
    /// dropped, then the least recently seen ones until a quarter of the room is free (so a
    /// flood of new subjects costs amortised O(log n) each, not a scan per event).
    pub fn entry(&mut self, subject: &str, at: OffsetDateTime) -> &mut T {
        if !self.map.contains_key(subject) && self.map.len() >= self.max_subjects {
            self.make_room(nanos(at));
        }
        self.map.entry(subject.to_string()).or_default()
    }

    /// How many subjects are tracked.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    fn make_room(&mut self, now: i128) {
        self.map.retain(|_, state| !state.is_idle(now));
        let target = self.max_subjects - self.max_subjects / 4;
        if self.map.len() < target.max(1) {
            return;
        }
        let mut by_age: Vec<(i128, String)> = self
            .map
            .iter()
            .map(|(k, v)| (v.last_nanos().unwrap_or(i128::MIN), k.clone()))
            .collect();
        by_age.sort_unstable();
        let excess = self.map.len() + 1 - target.max(1);
        for (_, key) in by_age.into_iter().take(excess) {
            self.map.remove(&key);
        }
    }
}
