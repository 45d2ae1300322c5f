//! What an attempt's answer means and when to try again: the HTTP classification and the
//! retry schedule.
//!
//! Owns: [`AttemptResult`], [`classify_http`], [`classify_network_error`], [`Backoff`].
//! Must not: read or write the store.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The result of one send attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    /// Delivered (2xx).
    Sent,
    /// Worth retrying (429, 5xx, 408, network errors), no earlier than `retry_after`.
    Transient {
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
        /// What went wrong (no secrets, no body text).
        reason: String,
    },
    /// Will never succeed (other 4xx, unexpected statuses).
    Terminal {
        /// The HTTP status, if there was one.
        status: Option<u16>,
        /// The provider's own error code (the Graph API's `error.code`), if it sent one.
        code: Option<i64>,
        /// What went wrong.
        reason: String,
    },
}

/// Classifies an HTTP response: 2xx sent; 429, 408 and 5xx transient (with `Retry-After` in
/// delta-seconds; the HTTP-date form is ignored and the backoff applies); everything else
/// terminal.
pub fn classify_http(status: u16, retry_after_header: Option<&str>) -> AttemptResult {
    match status {
        200..=299 => AttemptResult::Sent,
        408 | 429 | 500..=599 => AttemptResult::Transient {
            retry_after: retry_after_header
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
            reason: format!("http status {status}"),
        },
        _ => AttemptResult::Terminal {
            status: Some(status),
            code: None,
            reason: format!("http status {status}"),
        },
    }
}

/// A network failure (connect, timeout, reset) is always transient.
pub fn classify_network_error(reason: &str) -> AttemptResult {
    AttemptResult::Transient {
        retry_after: None,
        reason: format!("network error: {reason}"),
    }
}

/// The retry schedule: exponential from `base_ms`, capped at `cap_ms`, with "equal jitter"
/// (half the delay fixed, half random), at most `max_attempts` attempts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// Delay after the first failure (before jitter), ms.
    pub base_ms: u64,
    /// Largest delay, ms.
    pub cap_ms: u64,
    /// Attempts before a reply is given up on as terminal.
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
    /// The delay after failed attempt number `attempt` (1-based), with `random` choosing the
    /// jitter: the result lies in `[d/2, d]` for `d = min(cap, base·2^(attempt-1))`.
    pub fn delay_ms(&self, attempt: u32, random: u64) -> u64 {
        let exp = attempt.saturating_sub(1).min(32);
        let full = self.base_ms.saturating_mul(1u64 << exp).min(self.cap_ms);
        let half = full / 2;
        full - half + random % (half + 1)
    }
}
