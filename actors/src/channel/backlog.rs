//! The bound on a channel's backlog (`store.max_pending`): how many of its messages are
//! unfinished (pending, held, processing) in the inbox. A gateway that is sent messages faster
//! than it runs turns would otherwise grow its inbox on disk (and the store's index) without
//! limit. At the bound the webhook refuses the delivery (503 + `Retry-After`) before anything
//! is stored, so the sender delivers it again later and nothing is lost.
//!
//! Owns: the count (set from the inbox when the channel's actor starts, then one up per new
//! unfinished message and one down per message done) and the full/open verdict with its
//! hysteresis (open again once an eighth of the bound has drained, so a backlog at the bound
//! does not flap), each change seen by exactly one caller (who logs and audits it).
//! Must not: read the store (the edge checks it on every delivery), or refuse anything once
//! the count is below the bound again.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// One channel's backlog count and bound, shared by its actor and its webhook edge.
#[derive(Debug)]
pub struct Backlog {
    /// `store.max_pending`.
    max: usize,
    /// Unfinished messages in the inbox.
    live: AtomicUsize,
    /// Whether the last check found the backlog full.
    full: AtomicBool,
}

impl Default for Backlog {
    /// No bound (component tests; the gateway always passes `store.max_pending`).
    fn default() -> Self {
        Self::new(usize::MAX)
    }
}

/// What a check of the backlog found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BacklogCheck {
    /// Below the bound: take the delivery.
    Open,
    /// Below the bound again after being full: take it (this caller reports the change).
    Reopened,
    /// At the bound: refuse; `changed` for the one caller that saw it fill.
    Full {
        /// This check found it full first.
        changed: bool,
    },
}

impl Backlog {
    /// A bound of `max` unfinished messages (at least 1).
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            live: AtomicUsize::new(0),
            full: AtomicBool::new(false),
        }
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Unfinished messages now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// The count found in the inbox (when the channel's actor starts).
    pub fn set(&self, live: usize) {
        self.live.store(live, Ordering::Relaxed);
    }

    /// A new unfinished message was stored.
    pub fn added(&self) {
        self.live.fetch_add(1, Ordering::Relaxed);
    }

    /// An unfinished message is done.
    pub fn finished(&self) {
        let _ = self
            .live
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
    }

    /// Whether a delivery may be stored now.
    pub fn check(&self) -> BacklogCheck {
        let live = self.live();
        let was_full = self.full.load(Ordering::Relaxed);
        let full = if was_full {
            live >= self.max - self.max / 8
        } else {
            live >= self.max
        };
        if full == was_full {
            return if full {
                BacklogCheck::Full { changed: false }
            } else {
                BacklogCheck::Open
            };
        }
        // Exactly one caller reports a change.
        let changed = self
            .full
            .compare_exchange(was_full, full, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        match (full, changed) {
            (true, changed) => BacklogCheck::Full { changed },
            (false, true) => BacklogCheck::Reopened,
            (false, false) => BacklogCheck::Open,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_at_the_bound_and_opens_once_an_eighth_drained() {
        let backlog = Backlog::new(16);
        for _ in 0..15 {
            backlog.added();
        }
        assert_eq!(backlog.check(), BacklogCheck::Open);
        backlog.added();
        assert_eq!(backlog.check(), BacklogCheck::Full { changed: true });
        assert_eq!(backlog.check(), BacklogCheck::Full { changed: false });
        backlog.finished();
        // 15: still full (hysteresis: open below 14).
        assert_eq!(backlog.check(), BacklogCheck::Full { changed: false });
        backlog.finished();
        backlog.finished();
        assert_eq!(backlog.live(), 13);
        assert_eq!(backlog.check(), BacklogCheck::Reopened);
        assert_eq!(backlog.check(), BacklogCheck::Open);
    }

    #[test]
    fn a_bound_of_one_refuses_while_one_is_unfinished() {
        let backlog = Backlog::new(1);
        assert_eq!(backlog.check(), BacklogCheck::Open);
        backlog.added();
        assert_eq!(backlog.check(), BacklogCheck::Full { changed: true });
        backlog.finished();
        backlog.finished();
        assert_eq!(backlog.live(), 0);
        assert_eq!(backlog.check(), BacklogCheck::Reopened);
    }

    #[test]
    fn the_count_restarts_from_the_inbox() {
        let backlog = Backlog::new(4);
        backlog.set(9);
        assert_eq!(backlog.check(), BacklogCheck::Full { changed: true });
        backlog.set(0);
        assert_eq!(backlog.check(), BacklogCheck::Reopened);
    }
}
