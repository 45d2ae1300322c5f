//! The stop gate shared by everything that starts work on behalf of a message: it counts the
//! work in flight and, once closed, refuses to start more, so the gateway can stop accepting,
//! wait for what is running, and exit without dropping it.
//!
//! Owns: the count of [`Work`] guards alive and the closed flag, behind one lock so that no
//! work can start after [`Drain::idle`] has seen the count reach zero on a closed gate.
//! Must not: cancel anything (work that does not finish in time is abandoned by the process
//! exit, and must be durable enough to be resumed: the channel inbox keeps its message), or
//! wait itself (the gateway bounds the wait by `gateway.shutdown_grace_seconds`).
//!
//! Who holds a [`Work`]: the agent for every turn (from the moment it has its session's turn
//! until the reply exists), and a channel bridge for every message it hands to the agent (until
//! the message is marked done or put back). Neither starts new work once the gate is closed:
//! a turn not yet started answers [`crate::agent::AgentError::ShuttingDown`], and the channel
//! leaves its pending messages in the inbox for the next start.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The gate (cheap to clone; every clone is the same gate).
#[derive(Clone, Default)]
pub struct Drain {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Closed flag and the number of live [`Work`] guards.
    state: Mutex<State>,
    /// Woken whenever the count drops to zero.
    idle: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    closed: bool,
    active: usize,
}

impl std::fmt::Debug for Drain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("Drain")
            .field("closed", &state.closed)
            .field("active", &state.active)
            .finish()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One piece of work in flight; dropping it ends it.
#[must_use = "the work ends when this guard is dropped"]
pub struct Work {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Work")
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let now_idle = {
            let mut state = self.inner.lock();
            state.active = state.active.saturating_sub(1);
            state.active == 0
        };
        if now_idle {
            self.inner.idle.notify_waiters();
        }
    }
}

impl Drain {
    /// An open gate with nothing in flight.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a piece of work, or `None` once the gate is closed.
    pub fn begin(&self) -> Option<Work> {
        let mut state = self.inner.lock();
        if state.closed {
            return None;
        }
        state.active += 1;
        Some(Work {
            inner: Arc::clone(&self.inner),
        })
    }

    /// Closes the gate: [`Drain::begin`] refuses from now on; work in flight goes on.
    pub fn close(&self) {
        self.inner.lock().closed = true;
    }

    /// Whether the gate is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }

    /// How many pieces of work are in flight.
    pub fn active(&self) -> usize {
        self.inner.lock().active
    }

    /// Resolves once nothing is in flight (at once when nothing is). On a closed gate that
    /// stays true: nothing can start again.
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            // Registered before the count is read, so a drop to zero in between still wakes us.
            notified.as_mut().enable();
            if self.active() == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests;
