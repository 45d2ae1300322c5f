//! KafClaw: a self-hosted, security-first gateway between chat channels, operators and a
//! tool-running AI agent.
//!
//! This crate is the process edge: the command line, settings, the HTTP gateway and the
//! operator commands. Every actor and its domain logic live in `kafclaw-actors`.

#![forbid(unsafe_code)]

pub mod secret;
pub mod settings;
