//! What an attempt's answer means and when to try again: the HTTP classification and the
//! retry schedule.
//!
//! Owns: [`AttemptResult`], [`classify_http`], [`classify_network_error`]; the schedule is
//! the shared [`Backoff`] (`crate::backoff`).
//! Must not: read or write the store.

use std::time::Duration;

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

/// The retry schedule: the system's one [`Backoff`] (outbox default: 1 s doubling to 5 min
/// with equal jitter, 10 attempts).
pub use crate::backoff::Backoff;
