//! Tool policy (CONTRACT §4): nothing looser than the built-in defaults — external senders at
//! tier 0, no extra programs on the exec allow-list, and `tools.exec.restrict_workspace` on
//! (off is a FAIL; `security fix` turns it back on in config.json).

use serde_json::Value;

use kafclaw_actors::paths::Home;

use super::{at, Change, Report};
use crate::settings::{Origin, Settings};

const RESTRICT: &str = "tools.exec.restrict_workspace";

/// Compares the tool policy with the defaults.
pub fn check(settings: &Settings, defaults: Option<&Settings>, report: &mut Report) {
    let tools = &settings.tools;
    let external = at(tools, "policy.max_tier_external").as_u64().unwrap_or(0);
    let owner = at(tools, "policy.max_tier_owner").as_u64().unwrap_or(2);
    if external > 0 {
        report.warn(
            "tool_policy",
            format!("tools.policy.max_tier_external is {external}: external senders may run tier-{external} tools without approval"),
            "set tools.policy.max_tier_external to 0",
        );
    } else {
        report.pass(
            "tool_policy",
            format!("external senders tier 0, owners up to tier {owner}"),
        );
    }

    let allowed = |v: &Value| -> Vec<String> {
        at(v, "exec.allow")
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let default_allow = defaults.map(|d| allowed(&d.tools)).unwrap_or_default();
    let extra: Vec<String> = allowed(tools)
        .into_iter()
        .filter(|p| !default_allow.contains(p))
        .collect();
    if extra.is_empty() {
        report.pass("exec_allowlist", "no program beyond the defaults");
    } else {
        report.warn(
            "exec_allowlist",
            format!("tools.exec.allow adds {}", extra.join(", ")),
            "keep tools.exec.allow to what the agent needs; every extra program widens what a prompt injection can run",
        );
    }

    if at(tools, "exec.restrict_workspace") == &Value::Bool(false) {
        report.fail(
            "exec_restrict_workspace",
            format!(
                "{RESTRICT} is false (set in {}): exec may touch any path",
                settings.origin(RESTRICT)
            ),
            "`kafclaw security fix --yes` (or set KAFCLAW_TOOLS_EXEC_RESTRICT_WORKSPACE=true)",
        );
    } else {
        report.pass(
            "exec_restrict_workspace",
            "exec is confined to the workspace and work repo",
        );
    }
}

/// Whether `security fix` can turn `restrict_workspace` back on: `Ok(true)` when config.json
/// turns it off, `Err(origin)` when something else does (the environment wins over the file).
pub fn fix_plan(settings: &Settings) -> Result<bool, String> {
    if at(&settings.tools, "exec.restrict_workspace") != &Value::Bool(false) {
        return Ok(false);
    }
    match settings.origin(RESTRICT) {
        Origin::ConfigFile(_) => Ok(true),
        other => Err(other.to_string()),
    }
}

/// Sets `tools.exec.restrict_workspace` to true in config.json.
pub fn fix(home: &Home) -> Change {
    let mut config = super::read_config_json(home).ok_or("config.json could not be read")?;
    super::secrets::set_path(&mut config, RESTRICT, Value::Bool(true));
    super::write_config_json(home, &config)
        .map(|()| format!("{RESTRICT}: false -> true in config.json"))
        .map_err(|e| format!("could not rewrite config.json: {e}"))
}
