//! The per-session locks that keep one turn at a time per session (turns of different
//! sessions run in parallel).
//!
//! Owns: the table of locks by session key and its bound: the locks in use (a turn holds or
//! waits on them, so they are bounded by the turns in flight, which the HTTP connection cap and
//! the channels' hand-over bound limit) plus at most [`MAX_IDLE_LOCKS`] idle ones; when the
//! table passes that, idle locks are forgotten (amortised O(1) per turn). A forgotten lock is
//! recreated on the session's next turn: nobody held it, so no ordering is lost.
//! Must not: forget a lock a turn holds or waits on.

use std::collections::HashMap;
use std::sync::Arc;

/// Locks kept beyond those in use.
pub const MAX_IDLE_LOCKS: usize = 4_096;

/// One lock per session with a turn in flight, plus a bounded number of idle ones.
#[derive(Debug)]
pub struct SessionLocks {
    locks: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    max_idle: usize,
}

impl Default for SessionLocks {
    fn default() -> Self {
        Self::with_max_idle(MAX_IDLE_LOCKS)
    }
}

impl SessionLocks {
    /// A table forgetting idle locks once it holds more than `max_idle`.
    pub fn with_max_idle(max_idle: usize) -> Self {
        Self {
            locks: HashMap::new(),
            max_idle,
        }
    }

    /// The lock of `session` (the caller holds the returned handle while it waits and runs).
    pub fn get(&mut self, session: &str) -> Arc<tokio::sync::Mutex<()>> {
        if self.locks.len() > self.max_idle {
            self.locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        self.locks.entry(session.to_string()).or_default().clone()
    }

    /// Sessions in the table.
    pub fn len(&self) -> usize {
        self.locks.len()
    }

    /// True when the table is empty.
    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }
}

#[cfg(test)]
mod tests;
