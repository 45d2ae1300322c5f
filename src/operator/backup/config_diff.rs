//! Which settings a restore would change: the merged settings tree of the staged home against
//! the current one, leaf by leaf.
//!
//! Owns: the rule that every setting is security-relevant except a short list of harmless
//! ones (so a key added later is covered without anyone remembering this file), and how a
//! change is shown.
//! Must not: show a secret's value (secrets appear as "(secret value)").

use std::collections::BTreeMap;

use serde_json::Value;

use crate::settings::keys::{self, Kind};

/// Settings whose change cannot weaken the gateway (prefixes of the key path).
const HARMLESS: &[&str] = &["log.", "providers.openai.model", "backup.max_age"];

/// One setting that differs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The key path, e.g. `tools.policy.max_tier_external`.
    pub key: String,
    /// The current value, shown.
    pub before: String,
    /// The restored value, shown.
    pub after: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} -> {}", self.key, self.before, self.after)
    }
}

/// The security-relevant settings that differ between `current` and `restored` (both merged
/// settings trees). A secret the backup left out (redacted) is not a change: it comes from
/// the vault.
pub fn security_changes(current: &Value, restored: &Value) -> Vec<Change> {
    let (mut before, mut after) = (BTreeMap::new(), BTreeMap::new());
    flatten(current, "", &mut before);
    flatten(restored, "", &mut after);
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let mut changes = Vec::new();
    for key in keys {
        let (b, a) = (before.get(key), after.get(key));
        if b == a || HARMLESS.iter().any(|h| key.starts_with(h)) {
            continue;
        }
        let secret = is_secret(key);
        if secret && a.is_none_or(is_empty) {
            continue;
        }
        changes.push(Change {
            key: key.clone(),
            before: shown(b, secret),
            after: shown(a, secret),
        });
    }
    changes
}

fn is_secret(key: &str) -> bool {
    keys::lookup(key).is_some_and(|k| k.kind == Kind::Secret)
        || key
            .rsplit('.')
            .next()
            .is_some_and(crate::checks::sensitive_name)
}

fn is_empty(v: &Value) -> bool {
    v.is_null() || v.as_str() == Some("")
}

fn shown(value: Option<&Value>, secret: bool) -> String {
    match value {
        None => "(unset)".into(),
        Some(v) if is_empty(v) => "(unset)".into(),
        Some(_) if secret => "(secret value)".into(),
        Some(v) => {
            let text = v.to_string();
            if text.chars().count() > 120 {
                format!("{}…", text.chars().take(120).collect::<String>())
            } else {
                text
            }
        }
    }
}

fn flatten(value: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(v, &key, out);
            }
        }
        other if !prefix.is_empty() => {
            out.insert(prefix.to_string(), other.clone());
        }
        _ => {}
    }
}
