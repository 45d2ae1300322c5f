//! Operational readiness (runbook §5, §7): a recent backup, a defined log retention and an
//! incident owner.

use kafclaw_actors::clock;
use kafclaw_actors::paths::Home;

use super::files::last_backup_file;
use super::{at, Report};
use crate::settings::Settings;

/// The time of the last successful backup, from `~/.kafclaw/last-backup`.
pub fn last_backup(home: &Home) -> Option<(time::OffsetDateTime, String)> {
    let text = std::fs::read_to_string(last_backup_file(home)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let when = clock::parse_rfc3339(v["time"].as_str()?)?;
    Some((when, v["path"].as_str().unwrap_or_default().to_string()))
}

/// Records a successful backup (0600, atomic).
pub fn record_backup(home: &Home, path: &std::path::Path) -> std::io::Result<()> {
    let v = serde_json::json!({"time": clock::now_rfc3339(), "path": path.display().to_string()});
    kafclaw_actors::fsutil::write_atomic(&last_backup_file(home), v.to_string().as_bytes())
}

/// Backups, log retention, incident owner.
pub fn check(home: &Home, settings: &Settings, report: &mut Report) {
    let max_days = at(&settings.tree, "backup.max_age_days")
        .as_u64()
        .unwrap_or(7);
    match last_backup(home) {
        None => report.warn(
            "backup",
            "no successful backup recorded",
            "`kafclaw backup create` (schedule it; test restores with `kafclaw backup restore`)",
        ),
        Some((when, _)) => {
            let days = (clock::unix_now() - when.unix_timestamp()).max(0) / 86_400;
            if days as u64 > max_days {
                report.warn(
                    "backup",
                    format!(
                        "the last backup is {days} days old (backup.max_age_days = {max_days})"
                    ),
                    "`kafclaw backup create`",
                );
            } else {
                report.pass(
                    "backup",
                    format!(
                        "last backup {} ({days} day(s) ago)",
                        clock::to_rfc3339(when)
                    ),
                );
            }
        }
    }
    match at(&settings.tree, "log.retention_days")
        .as_u64()
        .unwrap_or(0)
    {
        0 => report.warn(
            "log_retention",
            "no log retention defined",
            "set log.retention_days (KAFCLAW_LOG_RETENTION_DAYS) to what your log pipeline keeps",
        ),
        days => report.pass("log_retention", format!("{days} days")),
    }
    match at(&settings.tree, "incidents.owner").as_str().unwrap_or("") {
        "" => report.warn(
            "incident_owner",
            "no incident owner defined",
            "set incidents.owner (KAFCLAW_INCIDENTS_OWNER) to who responds to incidents",
        ),
        owner => report.pass("incident_owner", owner.to_string()),
    }
}
