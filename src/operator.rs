//! The operator's side: every `kafclaw` command but `gateway`, the checks they share, and the
//! operations the commands and the running gateway perform on the trust core.
//!
//! Owns: `commands` (secrets, token, audit, approvals, admin, pairing, skills), `doctor`,
//! `security`, `status`, `healthcheck`, `backup`; the checks (`checks`); the operations
//! (`ops`, run in the gateway through the control socket or in the command's own actors); the
//! control socket's client and wire types (`protocol`) and the remote-gateway client (`remote`);
//! the one `--json` shape (`envelope`) and progress lines (`progress`).
//! Must not: serve anything (that is `crate::gateway`); `ops` depends on the command modules'
//! pure parts, never back.

pub mod backup;
pub mod checks;
pub mod commands;
pub mod doctor;
pub mod envelope;
pub mod healthcheck;
pub mod ops;
pub mod progress;
pub mod protocol;
pub mod remote;
pub mod security;
pub mod status;
