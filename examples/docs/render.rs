//! Renders the generated reference pages: `docs/config.md` from the key table
//! (`kafclaw::settings::keys`) and the comments of `config/default.toml`, and `docs/http.md`
//! from `docs/openapi.yaml`.
//!
//! Owns: both renderers and the reading of `config/default.toml`'s documentation (every key
//! of the table, active or commented out, with the comment block above it).
//! Must not: write files (`examples/docs.rs` does) or read anything but its arguments and the
//! key table. `tests/it/docs.rs` includes this file and compares its output with the pages.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use kafclaw::settings::keys::{self, KeySpec, Kind};
use serde_json::Value;

/// One key as `config/default.toml` documents it.
#[derive(Debug, Clone)]
pub struct Documented {
    /// The key as the table spells it (`*` for a bridge's name).
    pub key: String,
    /// The value written in the file (commented-out keys included), as TOML text.
    pub value: String,
    /// The comment block above the key, without the key's own environment name.
    pub text: String,
    /// Whether the key is commented out (secrets and channel keys).
    pub commented: bool,
}

/// Reads every documented key of `toml` (the text of `config/default.toml`): `[section]` and
/// `# [section]` headers, `key = value` and `# key = value` lines whose key is in the table,
/// and the `#` lines above each key (a blank line or a header starts a new block).
pub fn documented_keys(toml: &str) -> Result<Vec<Documented>, String> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut block: Vec<String> = Vec::new();
    for (n, raw) in toml.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            block.clear();
            continue;
        }
        let (commented, body) = match line.strip_prefix('#') {
            Some(rest) => (true, rest.trim()),
            None => (false, line),
        };
        if let Some(name) = header(body) {
            section = name.replace(".NAME", ".*");
            block.clear();
            continue;
        }
        if let Some((name, value)) = body.split_once('=') {
            let name = name.trim();
            let key = format!("{section}.{name}");
            if keys::KEYS.iter().any(|s| s.key == key) {
                let env = env_of(&key);
                let text = block
                    .iter()
                    .flat_map(|l| l.split_whitespace())
                    .filter(|w| w.trim_end_matches(['.', ',', ')']) != env)
                    .collect::<Vec<_>>()
                    .join(" ");
                out.push(Documented {
                    key,
                    value: value.trim().to_string(),
                    text,
                    commented,
                });
                block.clear();
                continue;
            }
            if !commented {
                return Err(format!(
                    "config/default.toml line {}: {key} is not in the key table",
                    n + 1
                ));
            }
        }
        if commented {
            block.push(body.to_string());
        }
    }
    Ok(out)
}

/// The section named by a `[a.b]` line.
fn header(body: &str) -> Option<&str> {
    let name = body.strip_prefix('[')?.strip_suffix(']')?;
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_');
    valid.then_some(name)
}

/// The environment variable of a key (`<NAME>` for a bridge's name).
pub fn env_of(key: &str) -> String {
    match key.split_once(".*.") {
        Some((head, tail)) => format!(
            "{}_<NAME>_{}",
            keys::env_name(head),
            tail.to_ascii_uppercase().replace('.', "_")
        ),
        None => keys::env_name(key),
    }
}

/// Checks that `toml` documents every key of the table exactly once, each with a text.
pub fn check_documentation(toml: &str) -> Result<BTreeMap<String, Documented>, String> {
    let mut by_key = BTreeMap::new();
    let mut problems = Vec::new();
    for doc in documented_keys(toml)? {
        if doc.text.is_empty() {
            problems.push(format!("{} has no comment above it", doc.key));
        }
        let optional = doc.key.starts_with("channels.")
            || keys::KEYS
                .iter()
                .any(|s| s.key == doc.key && s.kind == Kind::Secret);
        if doc.commented && !optional {
            problems.push(format!("{} is commented out but has a default", doc.key));
        }
        if let Some(previous) = by_key.insert(doc.key.clone(), doc) {
            problems.push(format!("{} is documented twice", previous.key));
        }
    }
    for spec in keys::KEYS {
        if !by_key.contains_key(spec.key) {
            problems.push(format!("{} is not in config/default.toml", spec.key));
        }
    }
    if problems.is_empty() {
        Ok(by_key)
    } else {
        Err(problems.join("; "))
    }
}

fn rule(kind: Kind) -> String {
    match kind {
        Kind::Str => "string".into(),
        Kind::Secret => "secret string".into(),
        Kind::Bool => "`true` or `false`".into(),
        Kind::Port => "port 0-65535 (0 = any free port)".into(),
        Kind::UInt { min, max: u64::MAX } => format!("integer ≥ {min}"),
        Kind::UInt { min, max } => format!("integer {min}-{max}"),
        Kind::UIntOneOf(allowed) => {
            let words: Vec<String> = allowed.iter().map(|n| format!("`{n}`")).collect();
            format!("one of {}", words.join(", "))
        }
        Kind::List => "list of strings".into(),
        Kind::OneOf(words) => {
            let words: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
            format!("one of {}", words.join(", "))
        }
        Kind::Url => "`http://` or `https://` URL".into(),
        Kind::Float => "positive number".into(),
        Kind::HostList => {
            "list of host names or IP addresses, each with an optional `:port`".into()
        }
        Kind::CidrList => "list of CIDRs or IP addresses".into(),
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

fn default_of(spec: &KeySpec, doc: &Documented) -> String {
    if spec.kind == Kind::Secret {
        "unset".into()
    } else {
        format!("`{}`", doc.value)
    }
}

/// `docs/config.md`.
pub fn config_markdown(toml: &str) -> Result<String, String> {
    let documented = check_documentation(toml)?;
    let mut md = String::new();
    md.push_str(
        "# Configuration keys\n\n\
         <!-- Generated by `cargo run --example docs` from the key table (`src/settings/keys.rs`)\n\
         and the comments of `config/default.toml`. Do not edit: `tests/it/docs.rs` fails when\n\
         this page and its sources differ. -->\n\n\
         Every key KafClaw reads, generated from the key table that validates them and the\n\
         comments of [`config/default.toml`](../config/default.toml) (the built-in defaults,\n\
         embedded in the binary).\n\n\
         Precedence, highest first: command-line flags > process environment (`KAFCLAW_*`) >\n\
         `~/.config/kafclaw/env` (only names not already in the environment) > vault-held values\n\
         (secret keys only) > `~/.kafclaw/config.json` > built-in defaults. A key is set in\n\
         `config.json` under its JSON path, or in the environment under the name in the table\n\
         (`KAFCLAW_` + the upper-cased path, `.` → `_`; lists comma-separated). Secret keys are\n\
         best kept in the vault: `kafclaw secrets set NAME`. A bad value stops startup with one\n\
         line naming the key, its source and what is allowed; an unknown key or `KAFCLAW_*`\n\
         variable is a warning at startup and in `kafclaw doctor`. `<NAME>` is a bridge's name\n\
         (`[a-z0-9_-]{1,32}`; in the environment without `_`).\n",
    );
    let mut current = "";
    for spec in keys::KEYS {
        let group = spec.key.split('.').next().unwrap_or_default();
        if group != current {
            current = group;
            let _ = write!(
                md,
                "\n## `{group}`\n\n| key | environment | value | default | what |\n|---|---|---|---|---|\n"
            );
        }
        let doc = &documented[spec.key];
        let _ = writeln!(
            md,
            "| `{}` | `{}` | {} | {} | {} |",
            spec.key.replace(".*.", ".<NAME>."),
            env_of(spec.key),
            cell(&rule(spec.kind)),
            cell(&default_of(spec, doc)),
            cell(&doc.text),
        );
    }
    md.push_str(
        "\n## Aliases\n\nOther names for a key: most take a duration (`60s`, `5m`, `90d`, or a bare \
         number in the key's unit); those marked \"same value\" are another spelling (the \
         runbook's camelCase names).\n\n| alias | sets | unit |\n|---|---|---|\n",
    );
    for (alias, key, unit) in keys::ALIASES {
        let unit = match unit {
            keys::Unit::Seconds => "seconds",
            keys::Unit::Days => "days",
            keys::Unit::Same => "same value",
        };
        let _ = writeln!(md, "| `{alias}` | `{key}` | {unit} |");
    }
    md.push_str("\n## Other variables\n\n| variable | what |\n|---|---|\n");
    md.push_str("| `KAFCLAW_HOME` | the root whose `.kafclaw/` holds the state (default: the user's home; `--home` wins) |\n");
    md.push_str(
        "| `KAFCLAW_VAULT_PASSPHRASE` | the passphrase of a vault key sealed with Argon2id |\n",
    );
    md.push_str("| `KAFCLAW_BACKUP_PASSPHRASE` | the passphrase that seals the vault key inside a backup made with `--include-key` |\n");
    Ok(md)
}

/// The `#/components/...` object a `$ref` names.
fn resolve<'a>(doc: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let mut at = doc;
            for part in r.trim_start_matches("#/").split('/') {
                at = &at[part];
            }
            at
        }
        None => node,
    }
}

fn ref_name(node: &Value) -> Option<&str> {
    node.get("$ref")?.as_str()?.rsplit('/').next()
}

/// A short type of a schema, linking named schemas to their section.
fn type_of(schema: &Value) -> String {
    if let Some(name) = ref_name(schema) {
        return format!("[{name}](#{})", name.to_ascii_lowercase());
    }
    if let Some(c) = schema.get("const") {
        return format!("`{c}`");
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let words: Vec<String> = values
            .iter()
            .map(|v| {
                format!(
                    "`{}`",
                    v.as_str().map_or_else(|| v.to_string(), str::to_string)
                )
            })
            .collect();
        return words.join(" \\| ");
    }
    if let Some(all) = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))
        .and_then(Value::as_array)
    {
        return all.iter().map(type_of).collect::<Vec<_>>().join(" or ");
    }
    match schema.get("type") {
        Some(Value::String(t)) if t == "array" => format!("array of {}", type_of(&schema["items"])),
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        _ if schema.get("properties").is_some() => "object".into(),
        _ => "any".into(),
    }
}

/// Bounds and notes of a schema (`1-500`, a pattern, its description).
fn notes_of(schema: &Value) -> String {
    let mut notes = Vec::new();
    match (schema.get("minimum"), schema.get("maximum")) {
        (Some(lo), Some(hi)) => notes.push(format!("{lo}-{hi}")),
        (Some(lo), None) => notes.push(format!("≥ {lo}")),
        (None, Some(hi)) => notes.push(format!("≤ {hi}")),
        (None, None) => {}
    }
    if let Some(n) = schema.get("maxLength") {
        notes.push(format!("at most {n} characters"));
    }
    if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
        notes.push(format!("pattern `{p}`"));
    }
    if let Some(f) = schema.get("format").and_then(Value::as_str) {
        notes.push(f.to_string());
    }
    if let Some(d) = schema.get("description").and_then(Value::as_str) {
        notes.push(d.trim().replace('\n', " "));
    }
    notes.join("; ")
}

/// One row per field, nested objects and arrays of objects flattened (`usage.prompt_tokens`,
/// `channels[].name`).
fn field_rows(schema: &Value, prefix: &str, rows: &mut Vec<String>) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, field) in props {
        let path = format!("{prefix}{name}");
        let needed = if required.contains(&name.as_str()) {
            "yes"
        } else {
            "no"
        };
        rows.push(format!(
            "| `{path}` | {} | {needed} | {} |",
            type_of(field),
            cell(&notes_of(field))
        ));
        if ref_name(field).is_none() {
            field_rows(field, &format!("{path}."), rows);
            if field.get("type").and_then(Value::as_str) == Some("array") {
                let items = &field["items"];
                if ref_name(items).is_none() {
                    field_rows(items, &format!("{path}[]."), rows);
                }
            }
        }
    }
}

fn json_block(value: &Value) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    format!("```json\n{text}\n```\n")
}

/// Who may call an operation, from its `security` requirement.
fn access_of(doc: &Value, op: &Value) -> String {
    let Some(reqs) = op.get("security").and_then(Value::as_array) else {
        return "none".into();
    };
    if reqs.is_empty() {
        return "none".into();
    }
    let mut ways = Vec::new();
    for req in reqs {
        let Some(req) = req.as_object() else { continue };
        if req.is_empty() {
            ways.push("none (minimal answer)".to_string());
            continue;
        }
        let mut parts = Vec::new();
        for (scheme, scopes) in req {
            let scopes: Vec<&str> = scopes
                .as_array()
                .map(|s| s.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let def = &doc["components"]["securitySchemes"][scheme];
            parts.push(if scheme == "bearer" {
                match scopes.as_slice() {
                    [] => "any valid token".to_string(),
                    ["admin"] => "bearer token, scope `admin`".to_string(),
                    s => format!("bearer token, scope `{}` (or `admin`)", s.join("`, `")),
                }
            } else {
                let header = def["name"].as_str().unwrap_or(scheme);
                let place = def["in"].as_str().unwrap_or("header");
                format!("`{header}` ({place})")
            });
        }
        ways.push(parts.join(" + "));
    }
    ways.join("; or ")
}

fn listeners_of(op: &Value) -> String {
    match &op["x-kafclaw-listener"] {
        Value::String(one) => one.clone(),
        Value::Array(many) => many
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" and "),
        _ => "?".into(),
    }
}

fn anchor(method: &str, path: &str) -> String {
    format!("{method} {path}")
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn param_notes(p: &Value) -> String {
    let mut notes = notes_of(&p["schema"]);
    if let Some(d) = p["description"].as_str() {
        if !notes.is_empty() {
            notes.push_str("; ");
        }
        notes.push_str(d.trim());
    }
    notes
}

fn operation(doc: &Value, method: &str, path: &str, op: &Value, md: &mut String) {
    let m = method.to_ascii_uppercase();
    let _ = write!(md, "\n### {m} {path}\n\n");
    if let Some(s) = op["summary"].as_str() {
        let _ = write!(md, "{s}.\n\n");
    }
    let _ = writeln!(md, "- listener: {} port", listeners_of(op));
    let _ = writeln!(md, "- access: {}", access_of(doc, op));
    md.push('\n');
    if let Some(d) = op["description"].as_str() {
        let _ = write!(md, "{}\n\n", d.trim());
    }
    if let Some(params) = op["parameters"].as_array() {
        md.push_str(
            "Parameters:\n\n| name | in | required | type | notes |\n|---|---|---|---|---|\n",
        );
        for p in params {
            let p = resolve(doc, p);
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} | {} |",
                p["name"].as_str().unwrap_or_default(),
                p["in"].as_str().unwrap_or_default(),
                if p["required"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                },
                type_of(&p["schema"]),
                cell(&param_notes(p)),
            );
        }
        md.push('\n');
    }
    if let Some(body) = op.get("requestBody") {
        let body = resolve(doc, body);
        let required = body["required"].as_bool() == Some(true);
        for (ctype, media) in body["content"].as_object().into_iter().flatten() {
            let _ = write!(
                md,
                "Body ({}): `{ctype}`, {}.\n\n",
                if required { "required" } else { "optional" },
                type_of(&media["schema"])
            );
            if let Some(example) = media.get("example") {
                md.push_str(&json_block(example));
                md.push('\n');
            }
        }
    }
    md.push_str("Answers:\n\n| status | what |\n|---|---|\n");
    let mut examples = Vec::new();
    for (status, answer) in op["responses"].as_object().into_iter().flatten() {
        let shared = ref_name(answer);
        let answer = resolve(doc, answer);
        let mut what = answer["description"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .replace('\n', " ");
        for (ctype, media) in answer["content"].as_object().into_iter().flatten() {
            if media.get("schema").is_some() {
                let _ = write!(what, " `{ctype}`: {}.", type_of(&media["schema"]));
            } else {
                let _ = write!(what, " `{ctype}`.");
            }
            if let (Some(example), None) = (media.get("example"), shared) {
                examples.push((status.clone(), example.clone()));
            }
        }
        let _ = writeln!(md, "| {status} | {} |", cell(what.trim()));
    }
    md.push('\n');
    for (status, example) in examples {
        let _ = write!(md, "Example ({status}):\n\n{}\n", json_block(&example));
    }
}

/// `docs/http.md`, from the text of `docs/openapi.yaml`.
pub fn http_markdown(openapi_yaml: &str) -> Result<String, String> {
    let doc: Value = serde_yaml_ng::from_str(openapi_yaml)
        .map_err(|e| format!("docs/openapi.yaml is not YAML: {e}"))?;
    let mut md = String::new();
    md.push_str(
        "# HTTP API\n\n\
         <!-- Generated by `cargo run --example docs` from `docs/openapi.yaml`. Do not edit:\n\
         `tests/it/docs.rs` fails when this page and the document differ, and\n\
         `tests/it/openapi.rs` checks the document against the route table and real answers. -->\n\n\
         Every route of both listeners, with who may call it, its body and its answers, rendered\n\
         from [`openapi.yaml`](openapi.yaml) (OpenAPI 3.1). The control messages of\n\
         `POST /api/v1/admin/control` are described in [control.md](control.md).\n\n",
    );
    if let Some(d) = doc["info"]["description"].as_str() {
        md.push_str(d.trim());
        md.push_str("\n\n");
    }
    md.push_str(
        "## Routes\n\n| method | path | listener | access | what |\n|---|---|---|---|---|\n",
    );
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            ops.push((method.clone(), path.clone(), op.clone()));
        }
    }
    for (method, path, op) in &ops {
        let _ = writeln!(
            md,
            "| {} | [`{path}`](#{}) | {} | {} | {} |",
            method.to_ascii_uppercase(),
            anchor(method, path),
            listeners_of(op),
            cell(&access_of(&doc, op)),
            cell(op["summary"].as_str().unwrap_or_default()),
        );
    }
    md.push_str("\n## Operations\n");
    for (method, path, op) in &ops {
        operation(&doc, method, path, op, &mut md);
    }
    md.push_str("\n## Shared answers\n\n| name | what | example |\n|---|---|---|\n");
    for (name, answer) in doc["components"]["responses"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let example = answer["content"]["application/json"]
            .get("example")
            .map(|e| format!("`{e}`"))
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "| {name} | {} | {} |",
            cell(answer["description"].as_str().unwrap_or_default().trim()),
            cell(&example)
        );
    }
    md.push_str("\n## Schemas\n");
    for (name, schema) in doc["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let _ = write!(md, "\n### {name}\n\n");
        if let Some(d) = schema["description"].as_str() {
            let _ = write!(md, "{}\n\n", d.trim());
        }
        let mut rows = Vec::new();
        field_rows(schema, "", &mut rows);
        if rows.is_empty() {
            let _ = writeln!(md, "{}.", type_of(schema));
        } else {
            md.push_str("| field | type | required | notes |\n|---|---|---|---|\n");
            for row in rows {
                md.push_str(&row);
                md.push('\n');
            }
        }
    }
    Ok(md)
}
