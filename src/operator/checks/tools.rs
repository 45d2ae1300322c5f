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

/// The names on `tools.exec.allow` of a `tools` settings object.
fn allowed(tools: &Value) -> Vec<String> {
    at(tools, "exec.allow")
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// WARNs every program on `tools.exec.allow` that is not installed on the gateway's fixed
/// `PATH` (the gateway leaves it out at start, and the agent's calls to it are refused), with
/// how to install it or take it off the list.
pub fn programs(settings: &Settings, report: &mut Report) {
    use kafclaw_actors::executor::{AllowList, AllowListWarning, FIXED_PATH};
    let (_, warnings) = AllowList::resolve(&allowed(&settings.tools));
    let missing: Vec<&str> = warnings
        .iter()
        .filter_map(|w| match w {
            AllowListWarning::NotFound(name) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    if missing.is_empty() {
        report.pass(
            "exec_programs",
            "every program on tools.exec.allow is installed",
        );
        return;
    }
    let hints: Vec<String> = missing
        .iter()
        .filter_map(|name| package_of(name).map(|p| format!("`apt-get install {p}` for {name}")))
        .collect();
    let hint = if hints.is_empty() {
        String::new()
    } else {
        format!(" ({})", hints.join(", "))
    };
    let names = missing.join(", ");
    let (it_is, it) = if missing.len() == 1 {
        ("it is", "it")
    } else {
        ("they are", "them")
    };
    report.warn(
        "exec_programs",
        format!(
            "tools.exec.allow names {names} but {it_is} not installed on {FIXED_PATH}: the gateway leaves {it} out and the agent cannot run {it}"
        ),
        format!("install {names}{hint}, or remove {it} from tools.exec.allow"),
    );
}

/// The Debian package of a program whose package has another name.
fn package_of(program: &str) -> Option<&'static str> {
    match program {
        "rg" => Some("ripgrep"),
        "fd" => Some("fd-find"),
        _ => None,
    }
}

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
