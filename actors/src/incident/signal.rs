//! Bounded delivery of signals to the monitor: every sender uses `try_send` (never `do_send`,
//! which ignores mailbox bounds), and a signal the monitor cannot take now is counted in
//! `kafclaw_incident_signals_dropped_total{reason}` instead of being queued without limit.
//!
//! Owns: the monitor's mailbox bound ([`SIGNAL_MAILBOX`]) and the one way to offer a signal.
//! Must not: wait (a webhook or a failed login never waits for the monitor), or drop silently.

use actix::prelude::SendError;

use crate::supervisor::Undelivered;

/// The most signals the monitor's mailbox (and the forwarder's in front of it) holds.
pub const SIGNAL_MAILBOX: usize = 4_096;

/// Counts the outcome of one `try_send` of a signal; true when it was taken.
pub fn offer<M>(sent: Result<(), SendError<M>>) -> bool {
    match sent {
        Ok(()) => true,
        Err(SendError::Full(_)) => {
            dropped(Undelivered::Full);
            false
        }
        Err(SendError::Closed(_)) => {
            dropped(Undelivered::Down);
            false
        }
    }
}

/// Counts one signal that did not reach the monitor (the forwarder's drop hook).
pub fn dropped(why: Undelivered) {
    crate::metrics::metrics().incident_signal_dropped(why.as_str());
}
