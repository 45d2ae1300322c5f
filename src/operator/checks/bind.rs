//! Bind, token and user (runbook §1-§3): a non-loopback bind needs a token, every token is at
//! least 43 characters (32 random bytes), the token is rotated on schedule, and the process
//! does not run as root.

use kafclaw_actors::clock;

use super::{Report, TrustState};
use crate::secret::Secret;
use crate::settings::{Origin, Settings};
use kafclaw_actors::token::MIN_TOKEN_CHARS;

/// Checks the bind address, the token's strength and age, and the user.
pub fn check(settings: &Settings, trust: &TrustState, report: &mut Report) {
    let gw = &settings.gateway;
    let token = gw.auth_token.as_ref();
    let token_in_vault = token.is_none() && trust.running && trust.has_secret("gateway.auth_token");
    let has_token = token.is_some() || token_in_vault;
    if gw.is_loopback() {
        report.pass("bind", format!("loopback host {}", gw.host));
    } else if has_token {
        report.pass(
            "bind",
            format!("non-loopback host {} with a gateway token", gw.host),
        );
    } else {
        report.fail(
            "bind",
            format!("non-loopback host {} without a gateway auth token", gw.host),
            "`kafclaw security fix --yes` (generates one into the vault), set KAFCLAW_GATEWAY_AUTH_TOKEN, or bind gateway.host=127.0.0.1",
        );
    }

    match token {
        Some(t) => strength(t, report),
        None if token_in_vault => report.pass(
            "token_strength",
            "held in the vault (the running gateway checked its length at start)",
        ),
        None => report.pass(
            "token_strength",
            "no gateway token (local single-user mode on loopback)",
        ),
    }

    age(settings, trust, report);

    if rustix::process::geteuid().is_root() {
        report.fail(
            "root",
            "running as root (uid 0)",
            "run kafclaw as a dedicated unprivileged user (see deploy/)",
        );
    } else {
        report.pass(
            "root",
            format!("running as uid {}", rustix::process::geteuid().as_raw()),
        );
    }
}

/// Local single-user mode (loopback bind, no token): WARN, because every local user and
/// process is then admin over HTTP; the remedy says how to close it.
pub fn local_mode(settings: &Settings, trust: &TrustState, report: &mut Report) {
    let gw = &settings.gateway;
    let token_in_vault = trust.running && trust.has_secret("gateway.auth_token");
    if !gw.is_loopback() || gw.auth_token.is_some() || token_in_vault {
        report.pass(
            "local_mode",
            "a gateway token is required (no tokenless local mode)",
        );
        return;
    }
    if trust.tokens_active == Some(true) {
        report.pass(
            "local_mode",
            "an issued token is active, so every request needs a token (tokenless local mode ends while a token is active)",
        );
        return;
    }
    report.warn(
        "local_mode",
        format!("local single-user mode: loopback host {} without a gateway token, so every local user and process on this host is admin on the dashboard and can chat (run tools) without a token", gw.host),
        "close it with a token: `head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=' | kafclaw secrets set gateway.auth_token`, then restart the gateway; operator commands (`kafclaw admin …`, `kafclaw approvals …`) keep working without it over the owner-only control socket",
    );
}

/// Fleet mode without `fleet.control_key`: WARN, because whoever may publish on the NATS
/// control subject can then quarantine, release or relax tools on every node.
pub fn fleet_control(settings: &Settings, trust: &TrustState, report: &mut Report) {
    let fleet = &settings.fleet;
    if !fleet.enabled {
        return;
    }
    let in_vault = trust.running && trust.has_secret("fleet.control_key");
    if fleet.control_key.is_some() || in_vault {
        report.pass(
            "fleet_control_key",
            "fleet control messages are authenticated (fleet.control_key)",
        );
        return;
    }
    report.warn(
        "fleet_control_key",
        "fleet mode without fleet.control_key: any NATS client allowed to publish on kafclaw.control can quarantine, release, relax tools or unblock senders on every node",
        "set the same key on every node: `head -c 32 /dev/urandom | base64 | kafclaw secrets set fleet.control_key`, then restart the nodes",
    );
}

fn strength(token: &Secret, report: &mut Report) {
    let len = token.char_len();
    if len < MIN_TOKEN_CHARS {
        report.fail(
            "token_strength",
            format!("the gateway token has {len} characters; at least {MIN_TOKEN_CHARS} (32 random bytes) are required"),
            "generate a new one (`kafclaw admin rotate-gateway-token` on a running gateway, or `openssl rand -base64 32 | kafclaw secrets set gateway.auth_token`)",
        );
    } else {
        report.pass("token_strength", format!("{len} characters"));
    }
}

fn age(settings: &Settings, trust: &TrustState, report: &mut Report) {
    let max_days = settings.security.token_max_age_days;
    let origin = settings.origin("gateway.auth_token");
    let vault_held = matches!(origin, Origin::Vault)
        || (settings.gateway.auth_token.is_none() && trust.has_secret("gateway.auth_token"));
    if settings.gateway.auth_token.is_none() && !vault_held {
        report.pass("token_age", "no gateway token");
        return;
    }
    if let Some(path) = crate::settings::secret_files::file_of(&origin) {
        file_age(&path, max_days, report);
        return;
    }
    if !vault_held {
        report.warn(
            "token_age",
            format!("the gateway token comes from {origin}: its age is unknown"),
            "keep it in the vault so its age is tracked: `kafclaw doctor --fix` moves it from the env file, or `kafclaw secrets set gateway.auth_token`",
        );
        return;
    }
    let updated = trust
        .secret_updated("gateway.auth_token")
        .and_then(clock::parse_rfc3339);
    let Some(updated) = updated else {
        report.warn(
            "token_age",
            "the vault-held gateway token's age cannot be read",
            "`kafclaw secrets list` shows its times; rotate it if in doubt",
        );
        return;
    };
    let days = (clock::unix_now() - updated.unix_timestamp()).max(0) / 86_400;
    if days as u64 > max_days {
        report.warn(
            "token_age",
            format!("the gateway token was set {days} days ago (security.token_max_age_days = {max_days})"),
            "rotate it: `kafclaw admin rotate-gateway-token`, or `kafclaw secrets set gateway.auth_token` and restart",
        );
    } else {
        report.pass(
            "token_age",
            format!("set {days} day(s) ago (limit {max_days})"),
        );
    }
}

/// The age of a token handed over as a file (`_FILE`, a systemd credential): its mtime.
fn file_age(path: &std::path::Path, max_days: u64, report: &mut Report) {
    let modified = std::fs::metadata(path).and_then(|m| m.modified());
    let Ok(modified) = modified else {
        report.warn(
            "token_age",
            format!(
                "the age of the gateway token in {} cannot be read",
                path.display()
            ),
            "rotate it if in doubt: write a new token to the file and restart the gateway",
        );
        return;
    };
    let days = modified
        .elapsed()
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0);
    if days > max_days {
        report.warn(
            "token_age",
            format!("the gateway token in {} was written {days} days ago (security.token_max_age_days = {max_days})", path.display()),
            "write a new token to the file and restart the gateway",
        );
    } else {
        report.pass(
            "token_age",
            format!(
                "the gateway token in {} was written {days} days ago",
                path.display()
            ),
        );
    }
}
