//! `kafclaw skills …`: list and show read the skills tree; the rest are operations
//! ([`crate::ops::skill`]) sent to the running gateway, or run with the command's own actors.
//!
//! Owns: the command line's side (resolving the source path, reading a credential from stdin,
//! the link policy from the settings) and the human output.
//! Must not: print a credential value.

use std::io::Read;

use serde_json::{json, Value};

use super::{finish, CommandEnv, Outcome};
use crate::cli::{SkillCredentialCommand, SkillsCommand};
use crate::envelope::{self, ErrorCode};
use crate::protocol::{Operation, SkillOp};
use crate::skills::{install, SkillsConfig, SkillsDir};

/// Runs one `skills` subcommand; returns the exit code.
pub fn run(cmd: SkillsCommand, ctx: CommandEnv<'_>) -> i32 {
    let (json, command) = (ctx.json, ctx.command.clone());
    let dir = SkillsDir::of(ctx.home);
    let config = SkillsConfig::of(&ctx.settings);
    let request = match cmd {
        SkillsCommand::List => return finish(list(&dir), &command, json, print_list),
        SkillsCommand::Show { name } => {
            return finish(show(&dir, &name), &command, json, |v| {
                println!("{}", serde_json::to_string_pretty(v).unwrap_or_default())
            })
        }
        SkillsCommand::Enable { name } => SkillOp::Enable { name, on: true },
        SkillsCommand::Disable { name } => SkillOp::Enable { name, on: false },
        SkillsCommand::Remove { name } => SkillOp::Remove { name },
        SkillsCommand::Verify { name } => SkillOp::Verify { name },
        SkillsCommand::Install {
            path,
            accept_warnings,
        } => {
            let path = match std::path::absolute(&path) {
                Ok(p) => p,
                Err(e) => {
                    let msg = format!("cannot resolve {}: {e}", path.display());
                    return envelope::fail(&command, json, ErrorCode::Usage, &msg);
                }
            };
            SkillOp::Install {
                path,
                accept_warnings,
                allow_domains: config.link_policy.allow_domains.clone(),
                max_links: config.link_policy.max_links,
            }
        }
        SkillsCommand::Credential(SkillCredentialCommand::Set { name, credential }) => {
            let mut value = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut value) {
                let msg = format!("cannot read the value from stdin: {e}");
                return envelope::fail(&command, json, ErrorCode::Internal, &msg);
            }
            let value = value.trim_end_matches(['\n', '\r']).to_string();
            SkillOp::CredentialSet {
                name,
                credential,
                value,
            }
        }
    };
    let outcome = super::run(Operation::Skill { request }, ctx);
    finish(outcome, &command, json, print_result)
}

fn list(dir: &SkillsDir) -> Outcome {
    let enabled = install::enabled(dir);
    let items: Vec<Value> = install::installed_names(dir)
        .into_iter()
        .map(|n| match install::read_manifest(dir, &n) {
            Ok(m) => json!({
                "name": n,
                "version": m.version,
                "description": m.description,
                "enabled": enabled.contains(&n),
                "entry": m.entry,
            }),
            Err(e) => json!({"name": n, "enabled": enabled.contains(&n), "error": e}),
        })
        .collect();
    Outcome::Done(json!(items))
}

fn print_list(v: &Value) {
    let items = v.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        println!("no skills installed");
    }
    for s in items {
        let state = if s["enabled"] == true {
            "enabled"
        } else {
            "disabled"
        };
        println!(
            "{}  {}  {state}  {}",
            s["name"].as_str().unwrap_or_default(),
            s["version"].as_str().unwrap_or("?"),
            s["description"]
                .as_str()
                .or(s["error"].as_str())
                .unwrap_or_default()
        );
    }
}

fn show(dir: &SkillsDir, name: &str) -> Outcome {
    let manifest = match install::read_manifest(dir, name) {
        Ok(m) => m,
        Err(e) => return Outcome::Error(ErrorCode::Refused, e),
    };
    let pins = install::read_pins(dir, name)
        .map(|p| p.files)
        .unwrap_or_default();
    Outcome::Done(json!({
        "name": name,
        "enabled": install::enabled(dir).contains(name),
        "path": dir.skill(name),
        "manifest": manifest,
        "pins": pins,
    }))
}

fn print_result(v: &Value) {
    match v {
        Value::Array(items) => {
            if items.is_empty() {
                println!("no skills installed");
            }
            for s in items {
                println!(
                    "PASS skill {}: matches its pins",
                    s["name"].as_str().unwrap_or_default()
                );
            }
        }
        other => {
            println!(
                "skill {}: {}",
                other["name"].as_str().unwrap_or_default(),
                other["action"].as_str().unwrap_or_default()
            );
            for w in other["warnings"].as_array().into_iter().flatten() {
                println!(
                    "WARN {} {}: {}",
                    w["kind"].as_str().unwrap_or_default(),
                    w["file"].as_str().unwrap_or_default(),
                    w["detail"].as_str().unwrap_or_default()
                );
            }
        }
    }
}
