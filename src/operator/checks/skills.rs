//! The skills row of `security check` (runbook §9): the scope, the isolation (with `strict`,
//! a container runtime really usable by this user), and with `--deep` every installed skill
//! re-hashed against its pins.

use kafclaw_actors::paths::Home;

use super::Report;
use crate::settings::Settings;
use crate::skills::runtime::{self, Probe};
use crate::skills::{install, SkillsConfig, SkillsDir};

/// Scope and isolation; with `deep`, the pins of every installed skill.
pub fn check(home: &Home, settings: &Settings, deep: bool, report: &mut Report) {
    let config = SkillsConfig::of(settings);
    let dir = SkillsDir::of(home);
    let installed = install::installed_names(&dir);
    let enabled = install::enabled(&dir);
    let state = format!(
        "skills.enabled = {}, {} installed, {} enabled",
        config.enabled,
        installed.len(),
        installed.iter().filter(|n| enabled.contains(*n)).count()
    );
    let isolation = match config.runtime_isolation.as_str() {
        "host" => Ok("isolation host (the executor's sandbox)".to_string()),
        mode => match runtime::probe() {
            Probe::Usable(rt) => Ok(format!("isolation {mode}: containers via {rt}")),
            Probe::Unusable(why) if mode == "strict" => Err(why),
            Probe::Unusable(why) => Ok(format!(
                "isolation auto: host (no usable container runtime: {why})"
            )),
        },
    };
    match (isolation, config.scope.as_str()) {
        (Err(why), _) => report.fail(
            "skills",
            format!("skills.runtime_isolation = strict but no container runtime is usable by this user: {why}"),
            "install docker or podman usable by this user (e.g. rootless podman), or set skills.runtime_isolation = auto",
        ),
        (Ok(iso), "all") => report.warn(
            "skills",
            format!("skills.scope = all: every installed skill is described to the model; {iso}; {state}"),
            "set skills.scope = selected and enable only the skills in use (`kafclaw skills enable NAME`)",
        ),
        (Ok(iso), scope) => report.pass("skills", format!("skills.scope = {scope}; {iso}; {state}")),
    }
    if deep {
        let mut bad = Vec::new();
        for name in &installed {
            match install::verify_installed(&dir, name) {
                Ok(p) if p.is_empty() => {}
                Ok(p) => bad.push(format!("{name} ({})", p.join("; "))),
                Err(e) => bad.push(format!("{name} ({e})")),
            }
        }
        if bad.is_empty() {
            report.pass(
                "skills_integrity",
                format!("all {} installed skills match their pins", installed.len()),
            );
        } else {
            report.fail(
                "skills_integrity",
                format!("skills that changed since install: {}", bad.join(", ")),
                "`kafclaw skills remove NAME` and install it again from a trusted source",
            );
        }
    }
}
