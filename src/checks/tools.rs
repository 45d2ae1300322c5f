//! Tool policy (CONTRACT §4): nothing looser than the built-in defaults — external senders at
//! tier 0, no extra programs on the exec allow-list, and `tools.exec.restrict_workspace` on
//! (off is a FAIL; `security fix` turns it back on in config.json). No launcher on the
//! allow-list (FAIL: the gateway refuses to start with one), and the kernel confining exec
//! children (`tools.exec.sandbox`: off is a FAIL — it removes the only layer that does not
//! depend on parsing arguments the way each program does; auto without Landlock is a WARN).
//! `tools.exec.restrict_workspace` is judged with the tool roots in [`super::isolation`] (the
//! verdict the gateway's start shares).

use serde_json::Value;

use kafclaw_actors::executor::{
    kernel_support, refused_launchers, ExecSettings, KernelSupport, SandboxMode, SandboxStatus,
};
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

    launchers(&allowed(tools), report);
    sandbox(settings, kernel_support(), report);
}

/// FAILs every launcher on the allow-list (the gateway would refuse to start).
fn launchers(allow: &[String], report: &mut Report) {
    let refused = refused_launchers(allow);
    if refused.is_empty() {
        report.pass(
            "exec_launchers",
            "no program on tools.exec.allow starts other programs",
        );
    } else {
        let list: Vec<String> = refused.iter().map(ToString::to_string).collect();
        report.fail(
            "exec_launchers",
            format!("tools.exec.allow names launchers: {}", list.join("; ")),
            "remove them from tools.exec.allow: allowing one hands out every program (the gateway refuses to start with one listed)",
        );
    }
}

/// The exec sandbox mode as this machine's kernel makes it.
pub fn sandbox_mode(settings: &Settings) -> SandboxMode {
    serde_json::from_value::<ExecSettings>(settings.tools["exec"].clone())
        .map(|s| s.sandbox)
        .unwrap_or_default()
}

/// PASS with Landlock, WARN for auto without it, FAIL for off or a required Landlock missing.
fn sandbox(settings: &Settings, kernel: KernelSupport, report: &mut Report) {
    match SandboxStatus::decide(sandbox_mode(settings), kernel) {
        Ok(status @ SandboxStatus::Landlock { .. }) => {
            report.pass("exec_sandbox", status.to_string())
        }
        Ok(status @ SandboxStatus::PathChecksOnly { .. }) => report.warn(
            "exec_sandbox",
            status.to_string(),
            "run on a kernel with Landlock (Linux 5.13+, lsm=landlock) so the kernel confines exec children",
        ),
        Ok(status @ SandboxStatus::Off) => report.fail(
            "exec_sandbox",
            status.to_string(),
            "set tools.exec.sandbox to auto (KAFCLAW_TOOLS_EXEC_SANDBOX=auto)",
        ),
        Err(e) => report.fail(
            "exec_sandbox",
            e.to_string(),
            "run on a kernel with Landlock, or set tools.exec.sandbox to auto",
        ),
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
