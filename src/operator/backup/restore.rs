//! `backup restore PATH [--force] [--accept-config] [--unauthenticated]`.
//!
//! The backup is unpacked into `~/.kafclaw/.restore-<time>/` (0700, locked while the restore
//! runs), checked there ([`super::verify::inspect`]), its config loaded and validated with the
//! real settings loader, every security-relevant setting that differs from the current one
//! printed (and refused without `--accept-config`), the restore itself audited into the staged
//! chain, and only then swapped in ([`super::swap`]). `security check` runs on the result.
//!
//! Owns: that order, and the list of what is swapped.
//! Must not: change anything in the home before every check passed — a refused restore leaves
//! the home byte for byte as it was.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use kafclaw_actors::audit::{AuditKind, AuditLog};
use kafclaw_actors::fsutil;
use kafclaw_actors::paths::Home;

use super::config_diff::{self, Change};
use super::files::{create_new_private_dir, read_private_regular, stamp, write_new};
use super::swap::{self, Journal, KillHook, State, STAGING_PREFIX};
use super::verify::{self, Inspection};

mod items;
use super::REDACTED;
use crate::checks::{self, Report, Status};
use crate::settings::Settings;

/// The operator's choices.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flags {
    /// Replace a populated home.
    pub force: bool,
    /// Take the backup's security-relevant settings that differ from the current ones.
    pub accept_config: bool,
    /// Restore a backup whose manifest cannot be authenticated.
    pub unauthenticated: bool,
}

/// Runs the command; returns the exit code (2: refused before anything was read).
pub fn run(
    path: &Path,
    home: &Home,
    env: &HashMap<String, String>,
    flags: Flags,
    json: bool,
) -> i32 {
    use crate::envelope::{fail, ErrorCode};
    if checks::home_in_use(home) {
        return fail(
            "backup restore",
            json,
            ErrorCode::Refused,
            "a gateway is running or starting with the target home (its store is held); stop it first",
        );
    }
    let occupied = occupied(home);
    if !occupied.is_empty() && !flags.force {
        let list: Vec<String> = occupied.iter().map(|p| p.display().to_string()).collect();
        return fail(
            "backup restore",
            json,
            ErrorCode::Refused,
            &format!(
                "the target is not empty ({}); pass --force to replace it (the current state is kept as a pre-restore copy)",
                list.join(", ")
            ),
        );
    }
    let mut report = Report::new("backup restore");
    if restore(path, home, env, flags, &mut report) {
        // The restored home's posture: findings only (as warnings: the restore itself is done).
        let posture = crate::security::check(home, env, false, "security check");
        let clean = posture
            .checks
            .iter()
            .filter(|c| c.status == Status::Pass)
            .count();
        report.pass(
            "security",
            format!("`security check` on the restored home: {clean} checks pass"),
        );
        for check in posture
            .checks
            .into_iter()
            .filter(|c| c.status != Status::Pass)
        {
            let name = format!("security.{}", check.name);
            report.push(name, Status::Warn, check.message, check.remedy);
        }
    }
    report.print(json)
}

/// What a restore would replace that exists now.
fn occupied(home: &Home) -> Vec<PathBuf> {
    let mut occupied: Vec<PathBuf> = vec![home.store_dir(), home.config_file()];
    occupied.retain(|p| std::fs::symlink_metadata(p).is_ok());
    if !checks::files::audit_segments(home).is_empty() {
        occupied.push(home.audit_dir());
    }
    occupied
}

/// The staging directory, locked for as long as this value lives.
struct Staging {
    dir: PathBuf,
    _lock: OwnedFd,
    created_state_dir: bool,
}

impl Staging {
    fn new(home: &Home, stamp: &str) -> Result<Self, String> {
        let created_state_dir = !home.state_dir().exists();
        fsutil::create_private_dir(&home.state_dir()).map_err(|e| e.to_string())?;
        let dir = home.state_dir().join(format!("{STAGING_PREFIX}{stamp}"));
        create_new_private_dir(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let Some(lock) = swap::lock_staging(&dir) else {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!("cannot lock {}", dir.display()));
        };
        Ok(Self {
            dir,
            _lock: lock,
            created_state_dir,
        })
    }

    /// Removes the staging copy (and the state directory if this restore created it).
    fn discard(self, home: &Home) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if self.created_state_dir {
            let _ = std::fs::remove_dir(home.state_dir());
        }
    }
}

fn restore(
    path: &Path,
    home: &Home,
    env: &HashMap<String, String>,
    flags: Flags,
    report: &mut Report,
) -> bool {
    let stamp = stamp();
    let staging = match Staging::new(home, &stamp) {
        Ok(s) => s,
        Err(e) => {
            report.fail("staging", e, "check the home's permissions and free space");
            return false;
        }
    };
    let view = Home::new(&staging.dir);
    let done = match verify::inspect(path, &view, home, env, flags.unauthenticated, report) {
        Some(inspection) => {
            let ctx = Ctx {
                path,
                home,
                view: &view,
                env,
                flags,
                stamp: &stamp,
                staging: &staging.dir,
            };
            ctx.finish(inspection, report)
        }
        None => false,
    };
    if !done {
        staging.discard(home);
    }
    done
}

struct Ctx<'a> {
    path: &'a Path,
    home: &'a Home,
    view: &'a Home,
    env: &'a HashMap<String, String>,
    flags: Flags,
    stamp: &'a str,
    staging: &'a Path,
}

impl Ctx<'_> {
    /// Everything after the backup itself checked out: config, audit, swap.
    fn finish(&self, inspection: Inspection, report: &mut Report) -> bool {
        let Some(restored) = self.staged_settings(report) else {
            return false;
        };
        let Some(accepted) = self.config_changes(&restored, report) else {
            return false;
        };
        let key_item = match self.key_item(&inspection, report) {
            Ok(item) => item,
            Err(()) => return false,
        };
        let mut items = self.state_items();
        items.extend(key_item);
        items.extend(self.identity_items(&restored, report));
        let pre_restore = self
            .home
            .state_dir()
            .join(format!("pre-restore-{}", self.stamp));
        if let Err(e) = self.audit(&inspection, &restored, &accepted, &pre_restore) {
            report.fail(
                "audit",
                e,
                "nothing was changed; check the free space and run the restore again",
            );
            return false;
        }
        let journal = Journal {
            state: State::Swapping,
            stamp: self.stamp.to_string(),
            staging: self.staging.to_path_buf(),
            pre_restore: pre_restore.clone(),
            items,
        };
        if let Err(e) = swap::execute(self.home, journal, &mut KillHook::from_env(self.env)) {
            report.fail("swap", e, "fix the problem and run the restore again");
            return false;
        }
        report.pass(
            "restore",
            format!(
                "the home now holds the backup; the previous state is kept in {} until the gateway has started once",
                pre_restore.display()
            ),
        );
        true
    }

    /// Loads the staged config with the real settings loader (this home's env file and the
    /// command's environment), after dropping the values the backup redacted.
    fn staged_settings(&self, report: &mut Report) -> Option<Settings> {
        let file = self.view.config_file();
        if let Ok(text) = std::fs::read_to_string(&file) {
            let mut config: Value = match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(e) => {
                    report.fail(
                        "config",
                        format!("the backup's config.json is not JSON: {e}"),
                        "use another backup",
                    );
                    return None;
                }
            };
            let mut dropped = Vec::new();
            strip_redacted(&mut config, "", &mut dropped);
            let mut bytes = serde_json::to_vec_pretty(&config).unwrap_or_default();
            bytes.push(b'\n');
            if let Err(e) = fsutil::write_atomic(&file, &bytes) {
                report.fail("config", e.to_string(), "check the free space");
                return None;
            }
            for key in dropped {
                report.warn(
                    "config_secret",
                    format!(
                        "{key} was redacted in the backup and is not restored from config.json"
                    ),
                    format!("if the vault does not hold it, `kafclaw secrets set {key}`"),
                );
            }
        }
        if let Some(env_file) = read_private_regular(&self.home.env_file(), 1 << 20) {
            let _ = fsutil::create_private_dir(&self.view.config_dir());
            let _ = write_new(&self.view.env_file(), &env_file);
        }
        let loaded = checks::load_settings(self.view, self.env);
        let _ = std::fs::remove_file(self.view.env_file());
        match loaded {
            Ok(s) => {
                report.pass("config", "the backup's config.json parses and validates");
                Some(s)
            }
            Err(e) => {
                report.fail(
                    "config",
                    format!("the backup's config.json does not validate: {e}"),
                    "use another backup",
                );
                None
            }
        }
    }

    /// Prints every security-relevant difference; `None` (refused) when there are some and
    /// `--accept-config` was not given. Returns the accepted changes.
    fn config_changes(&self, restored: &Settings, report: &mut Report) -> Option<Vec<Change>> {
        let current = checks::load_settings(self.home, self.env)
            .ok()
            .or_else(checks::default_settings)
            .map(|s| s.tree)
            .unwrap_or(Value::Null);
        let changes = config_diff::security_changes(&current, &restored.tree);
        for change in &changes {
            if self.flags.accept_config {
                report.warn(
                    "config_change",
                    format!("{change} (accepted with --accept-config)"),
                    "review it with `kafclaw security check`",
                );
            } else {
                report.fail(
                    "config_change",
                    change.to_string(),
                    "review it; restore with --accept-config to take the backup's settings",
                );
            }
        }
        (changes.is_empty() || self.flags.accept_config).then_some(changes)
    }

    /// Appends `backup.restored` to the staged chain (durable before the swap).
    fn audit(
        &self,
        inspection: &Inspection,
        restored: &Settings,
        accepted: &[Change],
        pre_restore: &Path,
    ) -> Result<(), String> {
        let mut log = AuditLog::open(
            &self.view.audit_dir(),
            inspection.audit_key.clone(),
            &restored.audit,
        )
        .map_err(|e| format!("cannot open the staged audit log: {e}"))?;
        let manifest = &inspection.staged.manifest.doc;
        let data = json!({
            "source": self.path.display().to_string(),
            "archive": inspection.staged.archive,
            "created": manifest["created"],
            "audit_head": manifest["audit_head"],
            "authenticated": inspection.authenticated,
            "unauthenticated": self.flags.unauthenticated,
            "accept_config": self.flags.accept_config,
            "accepted_changes": accepted.iter().map(|c| c.key.clone()).collect::<Vec<_>>(),
            "pre_restore": pre_restore.display().to_string(),
        });
        log.append(
            AuditKind::BackupRestored,
            &checks::cli_actor(),
            &self.path.display().to_string(),
            &data,
        )
        .map_err(|e| format!("cannot audit the restore: {e}"))?;
        Ok(())
    }
}

fn strip_redacted(value: &mut Value, prefix: &str, dropped: &mut Vec<String>) {
    if let Value::Array(items) = value {
        let before = items.len();
        items.retain(|item| item.as_str() != Some(REDACTED));
        if items.len() != before {
            dropped.push(prefix.to_string());
        }
        for item in items {
            strip_redacted(item, prefix, dropped);
        }
        return;
    }
    if let Value::Object(map) = value {
        let keys: Vec<String> = map.keys().cloned().collect();
        for k in keys {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if map.get(&k).and_then(Value::as_str) == Some(REDACTED) {
                map.remove(&k);
                dropped.push(key);
            } else if let Some(child) = map.get_mut(&k) {
                strip_redacted(child, &key, dropped);
            }
        }
    }
}
