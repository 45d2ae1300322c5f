//! Channels (CONTRACT §5, runbook §4): enabled channels have every credential (doctor), and
//! access policies are tight — no `open` unknown-sender policy, no `*` in an allow-list
//! (security check). `security fix` tightens `open` to `pairing` in config.json.

use serde_json::Value;

use kafclaw_actors::paths::Home;

use super::{Change, Report, TrustState};
use crate::settings::{Origin, Settings};

/// One configured channel: its settings prefix and its JSON slice.
struct Channel<'a> {
    /// `channels.whatsapp` or `channels.bridges.NAME`.
    prefix: String,
    /// Its settings (secrets included where they came from config/env/vault).
    slice: &'a Value,
}

fn configured(settings: &Settings) -> Vec<Channel<'_>> {
    let mut out = Vec::new();
    let ch = &settings.channels;
    if ch["whatsapp"].is_object() {
        out.push(Channel {
            prefix: "channels.whatsapp".into(),
            slice: &ch["whatsapp"],
        });
    }
    if let Some(bridges) = ch["bridges"].as_object() {
        for (name, slice) in bridges {
            out.push(Channel {
                prefix: format!("channels.bridges.{name}"),
                slice,
            });
        }
    }
    out
}

fn enabled(c: &Channel<'_>) -> bool {
    if c.prefix == "channels.whatsapp" {
        c.slice["enabled"] == Value::Bool(true)
    } else {
        c.slice["enabled"] != Value::Bool(false)
    }
}

/// Enabled channels have their credentials (in settings or the vault).
pub fn check_complete(settings: &Settings, trust: &TrustState, report: &mut Report) {
    let channels = configured(settings);
    let mut any = false;
    for c in &channels {
        if !enabled(c) {
            continue;
        }
        any = true;
        let required: &[&str] = if c.prefix == "channels.whatsapp" {
            &[
                "phone_number_id",
                "verify_token",
                "app_secret",
                "access_token",
            ]
        } else {
            &["secret", "outbound_url"]
        };
        let missing: Vec<String> = required
            .iter()
            .map(|f| format!("{}.{f}", c.prefix))
            .filter(|key| {
                let field = key.rsplit('.').next().unwrap_or_default();
                let set = c.slice[field].as_str().is_some_and(|v| !v.is_empty());
                !set && !trust.has_secret(key)
            })
            .collect();
        let name = format!("channel:{}", c.prefix.trim_start_matches("channels."));
        if missing.is_empty() {
            report.pass(name, "enabled and complete");
        } else {
            report.fail(
                name,
                format!("enabled but missing {}", missing.join(", ")),
                "set the secrets with `kafclaw secrets set NAME` (and the other keys in config.json), or disable the channel",
            );
        }
    }
    if !any {
        report.pass("channels", "no channel enabled");
    }
}

/// `open` policies and `*` allow-lists.
pub fn check_policy(settings: &Settings, report: &mut Report) {
    let channels = configured(settings);
    if channels.is_empty() {
        report.pass("channel_policy", "no channel configured");
        return;
    }
    for c in &channels {
        let name = format!(
            "channel_policy:{}",
            c.prefix.trim_start_matches("channels.")
        );
        let policy = c.slice["unknown_senders"].as_str().unwrap_or("deny");
        let wildcard = c.slice["allowlist"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v.as_str().map(str::trim) == Some("*")));
        let mut problems = Vec::new();
        if !matches!(policy, "deny" | "pairing") {
            problems.push(format!(
                "unknown_senders is {policy:?} (anyone can talk to the agent)"
            ));
        }
        if wildcard {
            problems.push("the allowlist contains \"*\"".to_string());
        }
        if problems.is_empty() {
            report.pass(
                name,
                format!("unknown_senders={policy}, allowlist without wildcard"),
            );
        } else {
            report.warn(
                name,
                problems.join("; "),
                format!(
                    "set {p}.unknown_senders to deny or pairing (`kafclaw security fix --yes` sets pairing) and list senders explicitly in {p}.allowlist",
                    p = c.prefix
                ),
            );
        }
    }
}

/// `open` policies set in config.json that `security fix` changes to `pairing`.
pub fn fix_plan(home: &Home, settings: &Settings) -> (Vec<String>, Vec<String>) {
    let config = super::read_config_json(home)
        .map(Value::Object)
        .unwrap_or(Value::Null);
    let mut fixable = Vec::new();
    let mut elsewhere = Vec::new();
    for c in configured(settings) {
        let key = format!("{}.unknown_senders", c.prefix);
        if c.slice["unknown_senders"].as_str() != Some("open") {
            continue;
        }
        let in_config = super::at(&config, &key).as_str() == Some("open");
        match settings.origin(&key) {
            Origin::ConfigFile(_) if in_config => fixable.push(key),
            other => elsewhere.push(format!("{key} (set in {other})")),
        }
    }
    (fixable, elsewhere)
}

/// Sets every fixable `open` policy to `pairing` in config.json (one atomic rewrite).
pub fn fix(home: &Home, keys: &[String]) -> Vec<Change> {
    if keys.is_empty() {
        return Vec::new();
    }
    let Some(mut config) = super::read_config_json(home) else {
        return vec![Err("config.json could not be read".into())];
    };
    for key in keys {
        super::secrets::set_path(&mut config, key, Value::from("pairing"));
    }
    match super::write_config_json(home, &config) {
        Ok(()) => keys
            .iter()
            .map(|k| Ok(format!("{k}: open -> pairing in config.json")))
            .collect(),
        Err(e) => vec![Err(format!("could not rewrite config.json: {e}"))],
    }
}
