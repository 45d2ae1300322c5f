//! Plaintext secrets (runbook §2-§3, §9): no secret value in `~/.kafclaw/config.json` or in
//! `~/.config/kafclaw/env`. `doctor --fix` moves the env file's credentials into the vault with
//! one atomic import and only then scrubs their lines (every other byte kept); `security fix`
//! does the same for secret settings found in config.json.

use std::collections::BTreeMap;

use serde_json::Value;

use kafclaw_actors::paths::Home;
use kafclaw_actors::vault::{SecretValue, Vault};

use super::{sensitive_var, shown, vault_name_for, Report};
use crate::settings::keys::{self, Kind};
use crate::settings::{parse_env_line, EnvLine};

/// Every `(dotted key)` of config.json that is a secret setting with a non-empty value.
pub fn config_secret_keys(config: &serde_json::Map<String, Value>) -> Vec<String> {
    let mut flat = Vec::new();
    flatten("", &Value::Object(config.clone()), &mut flat);
    flat.into_iter()
        .filter(|(key, value)| {
            keys::lookup(key).is_some_and(|s| s.kind == Kind::Secret)
                && value.as_str().is_some_and(|v| !v.trim().is_empty())
        })
        .map(|(key, _)| key)
        .collect()
}

pub use crate::settings::flatten;

/// The env file split into lines (each with its own terminator, byte for byte).
pub struct EnvFile {
    /// Lines including their `\n`.
    pub lines: Vec<String>,
}

impl EnvFile {
    /// Reads the env file (None when absent or unreadable).
    pub fn read(home: &Home) -> Option<EnvFile> {
        let text = std::fs::read_to_string(home.env_file()).ok()?;
        Some(EnvFile {
            lines: text.split_inclusive('\n').map(String::from).collect(),
        })
    }

    /// The sensitive `KEY=VALUE` pairs with a non-empty value: variable → (value, line
    /// indexes); the last assignment of a variable wins, as when the file is loaded.
    pub fn sensitive(&self) -> BTreeMap<String, (String, Vec<usize>)> {
        let mut out: BTreeMap<String, (String, Vec<usize>)> = BTreeMap::new();
        for (i, line) in self.lines.iter().enumerate() {
            let EnvLine::Pair(var, value) = parse_env_line(line.trim_end_matches(['\n', '\r']))
            else {
                continue;
            };
            if value.is_empty() || !sensitive_var(&var) {
                continue;
            }
            let entry = out.entry(var).or_default();
            entry.0 = value;
            entry.1.push(i);
        }
        out
    }

    /// The file without the given lines; every other byte unchanged.
    pub fn without(&self, drop: &[usize]) -> String {
        self.lines
            .iter()
            .enumerate()
            .filter(|(i, _)| !drop.contains(i))
            .map(|(_, l)| l.as_str())
            .collect()
    }
}

/// FAIL for every secret in config.json and every credential in the env file.
pub fn check(home: &Home, report: &mut Report) {
    let config_keys = super::read_config_json(home)
        .map(|c| config_secret_keys(&c))
        .unwrap_or_default();
    if config_keys.is_empty() {
        report.pass("plaintext_config", "no secret values in config.json");
    } else {
        report.fail(
            "plaintext_config",
            format!("{} holds secret values for {}", shown(home, &home.config_file()), config_keys.join(", ")),
            "`kafclaw security fix --yes` moves them into the vault (or `kafclaw secrets set NAME` and delete them from config.json)",
        );
    }
    let env_vars: Vec<String> = EnvFile::read(home)
        .map(|f| f.sensitive().into_keys().collect())
        .unwrap_or_default();
    if env_vars.is_empty() {
        report.pass("plaintext_env_file", "no credentials in the env file");
    } else {
        report.fail(
            "plaintext_env_file",
            format!(
                "{} holds plaintext credentials: {}",
                shown(home, &home.env_file()),
                env_vars.join(", ")
            ),
            "`kafclaw doctor --fix` moves them into the vault and scrubs them from the file",
        );
    }
}

/// What the env-file migration would move: `(variable, vault name)`.
pub fn env_plan(home: &Home) -> Vec<(String, String)> {
    EnvFile::read(home)
        .map(|f| {
            f.sensitive()
                .into_keys()
                .map(|var| {
                    let name = vault_name_for(&var);
                    (var, name)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Moves the env file's credentials into the vault (one atomic import), then — only if that
/// succeeded — rewrites the env file without their lines. Returns `(variable, vault name)`
/// of each moved credential.
pub fn migrate_env(home: &Home, vault: &Vault) -> Result<Vec<(String, String)>, String> {
    let Some(file) = EnvFile::read(home) else {
        return Ok(Vec::new());
    };
    let sensitive = file.sensitive();
    if sensitive.is_empty() {
        return Ok(Vec::new());
    }
    let mut entries = Vec::new();
    let mut moved = Vec::new();
    let mut drop = Vec::new();
    for (var, (value, lines)) in sensitive {
        let name = vault_name_for(&var);
        entries.push((name.clone(), SecretValue::from(value)));
        moved.push((var, name));
        drop.extend(lines);
    }
    vault
        .import(entries)
        .map_err(|e| format!("the vault refused the import ({e}); the env file is unchanged"))?;
    kafclaw_actors::fsutil::write_atomic(&home.env_file(), file.without(&drop).as_bytes())
        .map_err(|e| {
            format!("the credentials are in the vault but the env file could not be rewritten: {e}; remove their lines by hand")
        })?;
    Ok(moved)
}

/// Secret keys of config.json that the vault resolves (others are reported, not moved).
pub fn config_plan(home: &Home) -> Vec<String> {
    super::read_config_json(home)
        .map(|c| {
            config_secret_keys(&c)
                .into_iter()
                .filter(|k| crate::core::VAULT_SECRET_KEYS.contains(&k.as_str()))
                .collect()
        })
        .unwrap_or_default()
}

/// Moves the secret settings of config.json that the vault resolves into the vault (one atomic
/// import), then removes them from config.json (atomic rewrite, other keys kept).
pub fn migrate_config(home: &Home, vault: &Vault) -> Result<Vec<String>, String> {
    let Some(mut config) = super::read_config_json(home) else {
        return Ok(Vec::new());
    };
    let keys = config_plan(home);
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let tree = Value::Object(config.clone());
    let entries = keys
        .iter()
        .filter_map(|k| {
            super::at(&tree, k)
                .as_str()
                .map(|v| (k.clone(), SecretValue::from(v.trim())))
        })
        .collect();
    vault
        .import(entries)
        .map_err(|e| format!("the vault refused the import ({e}); config.json is unchanged"))?;
    for key in &keys {
        remove_path(&mut config, key);
    }
    super::write_config_json(home, &config).map_err(|e| {
        format!("the secrets are in the vault but config.json could not be rewritten: {e}")
    })?;
    Ok(keys)
}

/// Removes a dotted key from a JSON object (leaving its parents).
pub fn remove_path(map: &mut serde_json::Map<String, Value>, key: &str) {
    match key.split_once('.') {
        None => {
            map.remove(key);
        }
        Some((head, rest)) => {
            if let Some(Value::Object(child)) = map.get_mut(head) {
                remove_path(child, rest);
            }
        }
    }
}

/// Sets a dotted key in a JSON object, creating parents.
pub fn set_path(map: &mut serde_json::Map<String, Value>, key: &str, value: Value) {
    match key.split_once('.') {
        None => {
            map.insert(key.to_string(), value);
        }
        Some((head, rest)) => {
            let child = map
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Default::default()));
            if !child.is_object() {
                *child = Value::Object(Default::default());
            }
            if let Value::Object(child) = child {
                set_path(child, rest, value);
            }
        }
    }
}
