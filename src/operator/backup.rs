//! `kafclaw backup create | verify | restore` (CONTRACT §8, runbook §7).
//!
//! A backup is one archive file (ustar, optionally zstd; mode 0600) — or, when written by an
//! older version, a directory — holding: `MANIFEST.json` (first; BLAKE3 and size of every
//! other file, the audit head, and a keyed-BLAKE3 MAC under the vault's `kafclaw.backup_key`),
//! `timeline.db/` (a consistent sled export of every tree — the vault's sealed secrets
//! included, ciphertext only), `audit/` (the segments, each cut after its last complete
//! record), `config.json` (every secret setting's value replaced by [`REDACTED`]),
//! `workspace/` (the agent's identity files), and with `--include-key` `tomb.rr.sealed` (the
//! vault key file under an Argon2id key from `KAFCLAW_BACKUP_PASSPHRASE`).
//!
//! `verify` and `restore` treat a backup as untrusted input: it is copied entry by entry into
//! a private staging directory (only regular files and directories with names in the layout,
//! bounded sizes, streamed), then the vault, the MAC, the checksums and the audit chain are
//! checked there; `restore` swaps the staged home in only after all of that and the config
//! passed, keeping the previous state as `~/.kafclaw/pre-restore-<time>/` until the gateway
//! has started once.
//!
//! Owns: writing, checking and restoring that layout; recording the last successful backup in
//! `~/.kafclaw/last-backup` for `security check`.
//! Must not: put a secret value in clear into a backup; change the home before a restore has
//! passed every check. While a gateway runs, `create` goes through its control socket
//! ([`crate::protocol::Operation::BackupCreate`]): sled allows one process per store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::envelope::ErrorCode;

use kafclaw_actors::audit::{AuditKind, AuditLog, RecordedHead};
use kafclaw_actors::paths::Home;
use kafclaw_actors::vault::BACKUP_KEY_NAME;

use crate::checks::{self, Report};
use crate::cli::BackupCommand;
use crate::protocol::{self, Answer, Operation};

pub(crate) mod archive;
mod config_diff;
mod create;
mod destination;
mod files;
pub(crate) mod layout;
mod manifest;
mod restore;
mod seal;
pub(crate) mod staging;
mod swap;
#[cfg(test)]
mod tests;
mod verify;

pub use create::{audit_head, create, Inputs};
pub use destination::{destination, Destination};
pub use seal::{open_key, seal_key};

/// The value that replaces every secret in a backed-up config.json.
pub const REDACTED: &str = "<redacted: in vault>";
/// The variable holding the passphrase of `--include-key`.
pub const PASSPHRASE_ENV: &str = "KAFCLAW_BACKUP_PASSPHRASE";
/// The manifest's file name.
pub const MANIFEST: &str = layout::MANIFEST;
/// The sealed key file's name.
pub const SEALED_KEY: &str = layout::SEALED_KEY;
/// Where a backup keeps the workspace identity files (and where they are staged).
const WORKSPACE_DIR: &str = layout::WORKSPACE;

/// What `create` wrote.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// The archive file.
    pub path: PathBuf,
    /// Files listed in the manifest.
    pub files: usize,
    /// Audit segments copied.
    pub audit_segments: usize,
    /// The last audit record in the backup.
    pub audit_head: Value,
    /// Secret settings redacted from config.json.
    pub redacted: Vec<String>,
    /// The vault key is inside (sealed with the passphrase).
    pub key_included: bool,
    /// The workspace identity files carried.
    #[serde(default)]
    pub identity_files: Vec<String>,
}

/// Runs one `backup` subcommand; returns the exit code.
pub fn run(cmd: &BackupCommand, home: &Home, env: &HashMap<String, String>, json: bool) -> i32 {
    crate::logging::init("warn", false);
    match cmd {
        BackupCommand::Create { out, include_key } => {
            create_cmd(home, env, out.as_deref(), *include_key, json)
        }
        BackupCommand::Verify {
            path,
            unauthenticated,
        } => verify::verify(path, home, env, *unauthenticated).print(json),
        BackupCommand::Restore {
            path,
            force,
            accept_config,
            unauthenticated,
        } => {
            let flags = restore::Flags {
                force: *force,
                accept_config: *accept_config,
                unauthenticated: *unauthenticated,
            };
            restore::run(path, home, env, flags, json)
        }
    }
}

/// Finishes or rolls back whatever an interrupted restore left in `home`; called before any
/// command touches the home. Returns a line for the operator when something was done.
pub fn recover(home: &Home) -> Result<Option<String>, String> {
    swap::recover(home)
}

/// Called by the gateway once it has started: a restored home has now started once, so the
/// pre-restore copies of committed restores are removed. Returns what was removed.
pub fn started(home: &Home) -> Vec<PathBuf> {
    swap::started(home)
}

fn create_cmd(
    home: &Home,
    env: &HashMap<String, String>,
    out: Option<&Path>,
    include_key: bool,
    json: bool,
) -> i32 {
    let fail = |code, message: String| crate::envelope::fail("backup create", json, code, &message);
    let settings = match checks::load_settings(home, env) {
        Ok(s) => s,
        Err(e) => return fail(ErrorCode::Config, e.to_string()),
    };
    let out = out.map(|o| {
        if o.is_absolute() {
            o.to_path_buf()
        } else {
            checks::resolve(o)
        }
    });
    let dest = match destination(out.as_deref(), home, &settings) {
        Ok(d) => d,
        Err(e) => return fail(ErrorCode::Refused, format!("backup refused: {e}")),
    };
    let sealed_key = if include_key {
        match sealed_vault_key(home, env) {
            Ok(s) => Some(s),
            Err(e) => return fail(ErrorCode::Usage, e),
        }
    } else {
        None
    };
    let workspace = Some(settings.workspace(home));
    let op = Operation::BackupCreate {
        out: dest.file.clone(),
        sealed_key: sealed_key.clone(),
        compress: dest.compress,
        workspace: workspace.clone(),
    };
    let progress = crate::progress::Progress::start(
        json,
        &format!("writing the backup {}", dest.file.display()),
    );
    let written = match protocol::send(home, &op) {
        Ok(Some(Answer::Ok(v))) => serde_json::from_value::<Summary>(v)
            .map(|s| (s, "through the running gateway"))
            .map_err(|e| {
                (
                    ErrorCode::Internal,
                    format!("malformed answer from the gateway: {e}"),
                )
            }),
        Ok(Some(Answer::Failed(e))) | Err(e) => Err((ErrorCode::Unavailable, e)),
        Ok(Some(Answer::Error(code, e))) => Err((code, e)),
        Ok(None) => create_offline(home, env, &dest, sealed_key, workspace)
            .map(|s| (s, "offline"))
            .map_err(|e| (ErrorCode::Internal, e)),
    };
    // The spinner's line is cleared before anything else is printed.
    progress.finish();
    match written {
        Ok((summary, via)) => summary_report(&summary, via).print(json),
        Err((code, e)) => fail(code, format!("backup failed: {e}")),
    }
}

fn sealed_vault_key(home: &Home, env: &HashMap<String, String>) -> Result<String, String> {
    let Some(passphrase) = env.get(PASSPHRASE_ENV).filter(|p| !p.is_empty()) else {
        return Err(format!(
            "--include-key needs a passphrase in {PASSPHRASE_ENV}"
        ));
    };
    let key = std::fs::read(home.key_file()).map_err(|e| {
        format!(
            "cannot read the vault key {}: {e}",
            home.key_file().display()
        )
    })?;
    seal_key(&key, passphrase)
}

fn summary_report(summary: &Summary, via: &str) -> Report {
    let mut report = Report::new("backup create");
    report.pass(
        "backup",
        format!(
            "written {via} to {} ({} files, {} audit segments, head seq {})",
            summary.path.display(),
            summary.files,
            summary.audit_segments,
            summary.audit_head["seq"]
        ),
    );
    if summary.redacted.is_empty() {
        report.pass("config", "config.json holds no secret values");
    } else {
        report.pass(
            "config",
            format!("redacted from config.json: {}", summary.redacted.join(", ")),
        );
    }
    if !summary.identity_files.is_empty() {
        report.pass(
            "identity",
            format!(
                "workspace identity files: {}",
                summary.identity_files.join(", ")
            ),
        );
    }
    if summary.key_included {
        report.pass(
            "key",
            format!("vault key included, sealed with {PASSPHRASE_ENV}"),
        );
    } else {
        report.pass(
            "key",
            "vault key not included: keep ~/.config/kafclaw/tomb.rr in your secret store (or use --include-key)",
        );
    }
    report
}

fn create_offline(
    home: &Home,
    env: &HashMap<String, String>,
    dest: &Destination,
    sealed_key: Option<String>,
    workspace: Option<PathBuf>,
) -> Result<Summary, String> {
    let mut settings = checks::load_settings(home, env).map_err(|e| e.to_string())?;
    let core = crate::core::open(home, &mut settings, env).map_err(|e| e.to_string())?;
    let backup_key = core
        .vault
        .get_or_create_random(BACKUP_KEY_NAME, 32)
        .map_err(|e| e.to_string())
        .and_then(|k| backup_key_bytes(k.expose()))?;
    let inputs = Inputs {
        sealed_key,
        backup_key,
        workspace,
    };
    let summary = create(home, &core.db, dest, inputs)?;
    let recorded = RecordedHead::for_home(home, Some(&core.db))
        .map_err(|e| format!("the backup was written but cannot be audited: {e}"))?;
    let mut log = AuditLog::open_recorded(
        &home.audit_dir(),
        core.audit_key.clone(),
        &settings.audit,
        recorded,
    )
    .map_err(|e| format!("the backup was written but cannot be audited: {e}"))?;
    log.append(
        AuditKind::BackupCreated,
        &checks::cli_actor(),
        &summary.path.display().to_string(),
        &audit_data(&summary),
    )
    .map_err(|e| format!("the backup was written but cannot be audited: {e}"))?;
    Ok(summary)
}

/// The vault's backup key as the MAC key.
pub fn backup_key_bytes(bytes: &[u8]) -> Result<zeroize::Zeroizing<[u8; 32]>, String> {
    <[u8; 32]>::try_from(bytes)
        .map(zeroize::Zeroizing::new)
        .map_err(|_| format!("vault entry {BACKUP_KEY_NAME} is not 32 bytes"))
}

/// The `backup.created` record's data (names, counts; no secret).
pub fn audit_data(summary: &Summary) -> Value {
    json!({
        "path": summary.path.display().to_string(),
        "files": summary.files,
        "audit_head": summary.audit_head,
        "key_included": summary.key_included,
        "identity_files": summary.identity_files,
    })
}
