//! `kafclaw-actors`: every actor of KafClaw, its messages, its errors and its domain logic.
//!
//! This crate knows no HTTP and no command line (Architecture Invariant: it never depends on
//! actix-web or clap). The binary crate turns requests and commands into the messages below.
//!
//! The supervision tree (one-for-one, a restart budget per child):
//!
//! ```text
//! Supervisor                (children in start order, as `src/gateway/services.rs` builds them)
//! ├── store            Store: owns timeline.db (sled); the only module importing sled [permanent]
//! ├── vault            SecretVault: owns tomb.rr and the sealed secrets               [permanent]
//! ├── audit            AuditChainer: ~/.kafclaw/audit, keyed-BLAKE3 chain, group commit [permanent]
//! ├── approvals        Approvals: pending tool approvals, decided out of band         [permanent]
//! ├── executor         ToolExecutor: policy + sandboxed execution; never a shell      [permanent]
//! ├── agent            Agent: turns, the journal, the model client, session locks     [permanent]
//! ├── retention        Pruner: removes finished records past store.retention_days     [quarantine]
//! ├── channel:NAME     ChannelBridge, one per channel, on its own thread              [quarantine]
//! ├── dispatch:NAME    Dispatcher, one per channel: the outbox's sends                [quarantine]
//! └── incidents        IncidentMonitor: sliding-window triggers, automatic actions    [permanent]
//! ```
//!
//! The HTTP gateway lives in the binary crate and holds no domain state.

// Denied everywhere; allowed only on the functions that make system or libc calls rustix does
// not wrap (`executor::sandbox`: between fork and exec; `heap`: mallopt at start), each
// carrying its SAFETY argument.
#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

// Lets code shared with the examples (`retention/simulation.rs`) name the crate the same way
// inside and outside it.
extern crate self as kafclaw_actors;

pub mod agent;
pub mod approval;
pub mod audit;
pub mod backoff;
pub mod channel;
pub mod clock;
pub mod drain;
pub mod executor;
pub mod fsutil;
pub mod heap;
pub mod incident;
pub mod metrics;
pub mod paths;
pub mod policy;
pub mod provider;
pub mod retention;
pub mod store;
pub mod supervisor;
pub mod testpoint;
pub mod token;
pub mod vault;
