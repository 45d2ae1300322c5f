//! Operator commands end to end (CONTRACT §8): `doctor [--fix]`, `security check | audit
//! --deep | fix [--yes]`, `backup create | verify | restore`, `status` — the real binary, a
//! temporary `--home` arranged for each check.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{command, is_root, run, Gateway, Options};

const SECRET: &str = "kc_vault-held-admin-token-0123456789abcdefghijklmnop";
const API_KEY: &str = "sk-pasted-provider-key-0123456789";

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs `kafclaw --json args…`; returns the exit code and the parsed document (Null if none).
fn json(home: &Path, vars: &HashMap<String, String>, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = run(home, vars, &all);
    let doc = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
    (code, doc, format!("{out}{err}"))
}

/// The checks named `name` in a report.
fn checks<'a>(doc: &'a Value, name: &str) -> Vec<&'a Value> {
    doc["checks"]
        .as_array()
        .map(|a| a.iter().filter(|c| c["name"] == name).collect())
        .unwrap_or_default()
}

/// The status of the single check `name`.
fn status(doc: &Value, name: &str) -> String {
    let found = checks(doc, name);
    assert!(!found.is_empty(), "no check {name} in {doc:#}");
    found
        .iter()
        .map(|c| c["status"].as_str().unwrap_or_default())
        .max_by_key(|s| match *s {
            "fail" => 2,
            "warn" => 1,
            _ => 0,
        })
        .unwrap_or_default()
        .to_string()
}

fn message(doc: &Value, name: &str) -> String {
    checks(doc, name)
        .iter()
        .map(|c| c["message"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join(" | ")
}

fn write(path: PathBuf, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn config(home: &Path, json: &str) {
    write(home.join(".kafclaw/config.json"), json);
    chmod(&home.join(".kafclaw/config.json"), 0o600);
    chmod(&home.join(".kafclaw"), 0o700);
}

fn env_file(home: &Path, text: &str) {
    write(home.join(".config/kafclaw/env"), text);
    chmod(&home.join(".config/kafclaw/env"), 0o600);
    chmod(&home.join(".config/kafclaw"), 0o700);
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn secrets_set(home: &Path, name: &str, value: &str) {
    let mut cmd = command(home, &HashMap::new());
    cmd.args(["secrets", "set", name]);
    let out = crate::harness::run_fed(cmd, value.as_bytes());
    assert!(out.status.success(), "{out:?}");
}

fn secret_names(home: &Path) -> String {
    let (code, out, err) = run(home, &HashMap::new(), &["secrets", "list"]);
    assert_eq!(code, 0, "{out}{err}");
    out
}

/// A home where the gateway has run once (state dirs, store, vault, audit log).
fn initialised() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let (code, _, out) = json(home.path(), &HashMap::new(), &["doctor", "--fix"]);
    assert_eq!(code, 0, "{out}");
    home
}

#[test]
fn doctor_json_shape_and_exit_codes() {
    let home = initialised();
    let (code, doc, out) = json(home.path(), &HashMap::new(), &["doctor"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(doc["command"], "doctor");
    let summary = &doc["summary"];
    let total = doc["checks"].as_array().unwrap().len() as u64;
    assert_eq!(
        summary["pass"].as_u64().unwrap()
            + summary["warn"].as_u64().unwrap()
            + summary["fail"].as_u64().unwrap(),
        total
    );
    for c in doc["checks"].as_array().unwrap() {
        for field in ["name", "status", "message"] {
            assert!(c[field].is_string(), "{c}");
        }
        assert_eq!(c["remedy"].is_string(), c["status"] != "pass", "{c}");
    }
    for name in [
        "config_file",
        "config_keys",
        "env_vars",
        "workspace_path",
        "work_repo_path",
        "provider",
        "store",
        "vault",
    ] {
        assert!(!checks(&doc, name).is_empty(), "missing check {name}");
    }
    assert_eq!(status(&doc, "store"), "pass");
    assert_eq!(status(&doc, "vault"), "pass");
    assert_eq!(status(&doc, "provider"), "warn");

    // A group-readable config.json is a FAIL and exit 1; text output has the remedy line.
    config(home.path(), "{}");
    chmod(&home.path().join(".kafclaw/config.json"), 0o644);
    let (code, doc, _) = json(home.path(), &HashMap::new(), &["doctor"]);
    assert_eq!(code, 1);
    assert_eq!(status(&doc, "file_mode:.kafclaw/config.json"), "fail");
    let (code, text, _) = run(home.path(), &HashMap::new(), &["doctor"]);
    assert_eq!(code, 1);
    assert!(
        text.contains("[FAIL] file_mode:.kafclaw/config.json: mode 0644"),
        "{text}"
    );
    assert!(
        text.contains("       remedy: `kafclaw doctor --fix`"),
        "{text}"
    );

    // Usage errors exit 2.
    let (code, _, _) = run(home.path(), &HashMap::new(), &["doctor", "--bogus"]);
    assert_eq!(code, 2);
    let (code, _, _) = run(
        home.path(),
        &HashMap::new(),
        &["security", "fix", "--force"],
    );
    assert_eq!(code, 2);
}

#[test]
fn doctor_names_a_broken_config_and_unknown_names_with_suggestions() {
    let home = tempfile::tempdir().unwrap();
    config(home.path(), "{\"gateway\": {\"port\": ");
    let (code, doc, _) = json(home.path(), &HashMap::new(), &["doctor"]);
    assert_eq!(code, 1);
    assert_eq!(status(&doc, "config_file"), "fail");
    assert!(message(&doc, "config_file").contains("config.json"));

    config(
        home.path(),
        r#"{"gateway":{"prot":1},"tools":{"exec":{"restrict_workspace":true}}}"#,
    );
    let vars = env(&[("KAFCLAW_GATEWAY_AUTH_TOKN", "x")]);
    let (code, doc, out) = json(home.path(), &vars, &["doctor"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(status(&doc, "config_keys"), "warn");
    assert!(message(&doc, "config_keys").contains("gateway.port"));
    assert_eq!(status(&doc, "env_vars"), "warn");
    assert!(message(&doc, "env_vars").contains("KAFCLAW_GATEWAY_AUTH_TOKEN"));
    assert!(!out.contains("\"x\""));
}

#[test]
fn doctor_fix_moves_env_credentials_into_the_vault_and_is_idempotent() {
    let home = initialised();
    let original = format!(
        "# operator env\nexport KAFCLAW_GATEWAY_AUTH_TOKEN='{SECRET}'\nKAFCLAW_GATEWAY_PORT=18790\n\n# provider\nKAFCLAW_PROVIDERS_OPENAI_API_KEY={API_KEY}\nGITHUB_TOKEN=ghp_0123456789abcdef\nKAFCLAW_SECURITY_TOKEN_MAX_AGE_DAYS=30\n"
    );
    env_file(home.path(), &original);
    let (code, doc, _) = json(home.path(), &HashMap::new(), &["security", "check"]);
    assert_eq!(status(&doc, "plaintext_env_file"), "fail");
    assert_eq!(code, 1);

    let (code, doc, out) = json(home.path(), &HashMap::new(), &["doctor", "--fix"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(SECRET) && !out.contains(API_KEY));
    let fixes = message(&doc, "fix");
    for moved in [
        "gateway.auth_token",
        "providers.openai.api_key",
        "GITHUB_TOKEN",
    ] {
        assert!(fixes.contains(moved), "{fixes}");
    }
    let after = std::fs::read_to_string(home.path().join(".config/kafclaw/env")).unwrap();
    assert_eq!(
        after,
        "# operator env\nKAFCLAW_GATEWAY_PORT=18790\n\n# provider\nKAFCLAW_SECURITY_TOKEN_MAX_AGE_DAYS=30\n"
    );
    let names = secret_names(home.path());
    for moved in [
        "gateway.auth_token",
        "providers.openai.api_key",
        "GITHUB_TOKEN",
    ] {
        assert!(names.contains(moved), "{names}");
    }
    let (code, doc, _) = json(home.path(), &HashMap::new(), &["doctor", "--fix"]);
    assert_eq!(code, 0);
    assert_eq!(message(&doc, "fix"), "nothing to change");
    // Every repair is on the audit record, and the chain holds.
    let (code, out, _) = run(home.path(), &HashMap::new(), &["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
    let log =
        std::fs::read_to_string(home.path().join(".kafclaw/audit/audit-000001.jsonl")).unwrap();
    assert!(log.contains("\"kind\":\"secret.changed\"") && log.contains("\"from\":\"env file\""));
    assert!(!log.contains(SECRET));
}

#[test]
fn doctor_fix_leaves_the_env_file_untouched_when_the_vault_fails() {
    let home = initialised();
    let original = format!("# keep\nKAFCLAW_GATEWAY_AUTH_TOKEN={SECRET}\n");
    env_file(home.path(), &original);
    std::fs::write(
        home.path().join(".config/kafclaw/tomb.rr"),
        b"not a key file",
    )
    .unwrap();
    let (code, doc, out) = json(home.path(), &HashMap::new(), &["doctor", "--fix"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        checks(&doc, "fix")
            .iter()
            .chain(checks(&doc, "fix_audit").iter())
            .any(|c| c["status"] == "fail"),
        "{doc:#}"
    );
    assert_eq!(
        std::fs::read_to_string(home.path().join(".config/kafclaw/env")).unwrap(),
        original
    );
    assert_eq!(status(&doc, "vault"), "fail");
}

/// Every repair is decided, and audited, before it is made: a plan the audit log cannot take
/// changes nothing; one it takes is recorded (`phase: planned`) ahead of the repairs.
#[test]
fn doctor_fix_audits_its_plan_first_and_changes_nothing_when_it_cannot() {
    use std::os::unix::fs::PermissionsExt;
    let home = initialised();
    let env = home.path().join(".config/kafclaw/env");
    env_file(home.path(), "KAFCLAW_GATEWAY_PORT=18790\n");
    chmod(&env, 0o644);
    let segment = home.path().join(".kafclaw/audit/audit-000001.jsonl");
    let intact = std::fs::read(&segment).unwrap();
    // A torn tail: the log refuses to open until `audit repair`.
    let mut torn = intact.clone();
    torn.extend_from_slice(b"{\"seq\":");
    std::fs::write(&segment, &torn).unwrap();
    let (code, doc, out) = json(home.path(), &HashMap::new(), &["doctor", "--fix"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(status(&doc, "fix_audit"), "fail", "{doc:#}");
    assert!(
        message(&doc, "fix_audit").contains("nothing was changed"),
        "{doc:#}"
    );
    let mode = std::fs::metadata(&env).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "a repair ran without its audit record");

    std::fs::write(&segment, &intact).unwrap();
    let (code, _, out) = json(home.path(), &HashMap::new(), &["doctor", "--fix"]);
    assert_eq!(code, 0, "{out}");
    let mode = std::fs::metadata(&env).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let log = std::fs::read_to_string(&segment).unwrap();
    let planned = log
        .find("\"phase\":\"planned\"")
        .expect("the plan is audited");
    let fixed = log.rfind("\"fixed\":").expect("the repair is audited");
    assert!(planned < fixed, "the plan is recorded before the repair");
}

#[test]
fn workspace_isolation_and_missing_paths() {
    let home = initialised();
    let (_, doc, _) = json(home.path(), &HashMap::new(), &["doctor"]);
    assert_eq!(status(&doc, "workspace_path"), "pass");
    config(
        home.path(),
        r#"{"paths":{"workspace":"/etc/kafclaw-ws","work_repo":"."}}"#,
    );
    let (code, doc, _) = json(home.path(), &HashMap::new(), &["doctor"]);
    assert_eq!(code, 1);
    assert_eq!(status(&doc, "workspace_path"), "fail");
    assert!(message(&doc, "workspace_path").contains("/etc"));
    let home_as_repo = format!(r#"{{"paths":{{"work_repo":"{}"}}}}"#, home.path().display());
    config(home.path(), &home_as_repo);
    let (_, doc, _) = json(home.path(), &HashMap::new(), &["doctor"]);
    assert_eq!(status(&doc, "work_repo_path"), "fail");
    // --fix never creates a tool root that is not isolated.
    config(
        home.path(),
        r#"{"paths":{"workspace":"/etc/kafclaw-ws-never"}}"#,
    );
    let _ = json(home.path(), &HashMap::new(), &["doctor", "--fix"]);
    assert!(!Path::new("/etc/kafclaw-ws-never").exists());
}

#[test]
fn security_check_passes_a_hardened_home() {
    let home = initialised();
    secrets_set(home.path(), "gateway.auth_token", SECRET);
    config(
        home.path(),
        r#"{"log":{"retention_days":30},"incidents":{"owner":"ops@example.com"},
            "channels":{"bridges":{"slack":{"unknown_senders":"pairing","allowlist":["U1"]}}}}"#,
    );
    let (_, _, out) = json(home.path(), &HashMap::new(), &["backup", "create"]);
    assert!(out.contains("written offline"), "{out}");
    let (code, doc, out) = json(home.path(), &HashMap::new(), &["security", "check"]);
    for c in doc["checks"].as_array().unwrap() {
        if c["name"] != "root" {
            assert_eq!(c["status"], "pass", "{c}");
        }
    }
    assert!(message(&doc, "token_age").contains("0 day"));
    assert!(!out.contains(SECRET));
    if is_root() {
        assert_eq!(status(&doc, "root"), "fail");
        assert_eq!(code, 1);
    } else {
        assert_eq!(code, 0, "{out}");
    }
}

#[test]
fn security_check_finds_every_weakness() {
    let home = initialised();
    config(
        home.path(),
        &format!(
            r#"{{"gateway":{{"host":"0.0.0.0"}},
                "providers":{{"openai":{{"model":"m","api_key":"{API_KEY}"}}}},
                "channels":{{"whatsapp":{{"enabled":false,"unknown_senders":"open"}},
                            "bridges":{{"teams":{{"allowlist":["*"]}}}}}},
                "tools":{{"exec":{{"restrict_workspace":false,"sandbox":"off","allow":["git","python3"]}},
                         "policy":{{"max_tier_external":1}}}}}}"#
        ),
    );
    env_file(home.path(), "GITHUB_TOKEN=ghp_0123456789abcdef\n");
    let (code, doc, out) = json(home.path(), &HashMap::new(), &["security", "check"]);
    assert_eq!(code, 1);
    assert!(!out.contains(API_KEY) && !out.contains("ghp_0123456789abcdef"));
    for (name, want) in [
        ("bind", "fail"),
        ("plaintext_config", "fail"),
        ("plaintext_env_file", "fail"),
        ("channel_policy:whatsapp", "warn"),
        ("channel_policy:bridges.teams", "warn"),
        ("tool_policy", "warn"),
        ("exec_allowlist", "warn"),
        ("exec_restrict_workspace", "fail"),
        ("backup", "warn"),
        ("log_retention", "warn"),
        ("incident_owner", "warn"),
    ] {
        assert_eq!(status(&doc, name), want, "{name}: {}", message(&doc, name));
    }
    assert!(message(&doc, "exec_allowlist").contains("python3"));

    // A short token fails; a token from the environment has an unknown age.
    let vars = env(&[("KAFCLAW_GATEWAY_AUTH_TOKEN", "short-token")]);
    let (_, doc, _) = json(home.path(), &vars, &["security", "check"]);
    assert_eq!(status(&doc, "token_strength"), "fail");
    assert_eq!(status(&doc, "token_age"), "warn");
    assert_eq!(status(&doc, "bind"), "pass");
}

#[test]
fn security_fix_prints_a_plan_without_yes_and_applies_it_with_yes() {
    let home = initialised();
    let original = format!(
        r#"{{"gateway":{{"host":"0.0.0.0","port":18790}},
            "providers":{{"openai":{{"model":"gpt","api_key":"{API_KEY}"}}}},
            "channels":{{"bridges":{{"slack":{{"unknown_senders":"open","outbound_url":"http://127.0.0.1:9/out"}}}}}},
            "tools":{{"exec":{{"restrict_workspace":false}}}}}}"#
    );
    config(home.path(), &original);
    chmod(&home.path().join(".kafclaw/workspace"), 0o755);

    let (code, doc, out) = json(home.path(), &HashMap::new(), &["security", "fix"]);
    assert_eq!(code, 1, "{out}");
    let plan = message(&doc, "plan");
    for step in [
        "restrict_workspace",
        "pairing",
        "providers.openai.api_key",
        "gateway token",
        "chmod .kafclaw/workspace",
    ] {
        assert!(plan.contains(step), "{step} not in {plan}");
    }
    assert_eq!(
        std::fs::read_to_string(home.path().join(".kafclaw/config.json")).unwrap(),
        original
    );
    assert!(!secret_names(home.path()).contains("gateway.auth_token"));

    let (_, doc, out) = json(home.path(), &HashMap::new(), &["security", "fix", "--yes"]);
    assert!(!out.contains(API_KEY), "{out}");
    assert!(
        checks(&doc, "fix").iter().all(|c| c["status"] == "pass"),
        "{doc:#}"
    );
    let cfg: Value = serde_json::from_str(
        &std::fs::read_to_string(home.path().join(".kafclaw/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["tools"]["exec"]["restrict_workspace"], true);
    assert_eq!(
        cfg["channels"]["bridges"]["slack"]["unknown_senders"],
        "pairing"
    );
    assert_eq!(
        cfg["channels"]["bridges"]["slack"]["outbound_url"],
        "http://127.0.0.1:9/out"
    );
    assert_eq!(cfg["gateway"]["port"], 18790);
    assert!(cfg["providers"]["openai"].get("api_key").is_none());
    assert_eq!(cfg["providers"]["openai"]["model"], "gpt");
    let names = secret_names(home.path());
    assert!(names.contains("gateway.auth_token") && names.contains("providers.openai.api_key"));
    // The post-fix check passes what was fixed.
    for name in [
        "bind",
        "plaintext_config",
        "exec_restrict_workspace",
        "file_mode:.kafclaw/workspace",
    ] {
        assert_eq!(
            status(&doc, name),
            "pass",
            "{name}: {}",
            message(&doc, name)
        );
    }
    // Nothing pending: exit 0 without --yes.
    let (code, doc, _) = json(home.path(), &HashMap::new(), &["security", "fix"]);
    assert_eq!(code, 0);
    assert_eq!(message(&doc, "plan"), "nothing to change");
    let (code, out, _) = run(home.path(), &HashMap::new(), &["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn deep_audit_catches_a_pasted_secret_and_a_tampered_record() {
    let home = initialised();
    secrets_set(home.path(), "gateway.auth_token", SECRET);
    let (_, doc, out) = json(
        home.path(),
        &HashMap::new(),
        &["security", "audit", "--deep"],
    );
    for name in [
        "audit_chain",
        "vault_integrity",
        "store_integrity",
        "leak_scan",
    ] {
        assert_eq!(status(&doc, name), "pass", "{name}: {out}");
    }
    config(
        home.path(),
        &format!(r#"{{"gateway":{{"cors_origins":["{SECRET}"]}}}}"#),
    );
    let (code, doc, out) = json(
        home.path(),
        &HashMap::new(),
        &["security", "audit", "--deep"],
    );
    assert_eq!(code, 1);
    assert_eq!(status(&doc, "leak_scan"), "fail");
    assert!(message(&doc, "leak_scan").contains("gateway.auth_token in .kafclaw/config.json"));
    assert!(!out.contains(SECRET));

    config(home.path(), "{}");
    let segment = home.path().join(".kafclaw/audit/audit-000001.jsonl");
    let log = std::fs::read_to_string(&segment).unwrap();
    std::fs::write(&segment, log.replacen("\"set\"", "\"rm!\"", 1)).unwrap();
    let (code, doc, _) = json(
        home.path(),
        &HashMap::new(),
        &["security", "audit", "--deep"],
    );
    assert_eq!(code, 1);
    assert_eq!(status(&doc, "audit_chain"), "fail");
}

#[test]
fn backup_restores_into_a_fresh_home_that_starts_and_verifies() {
    let home = initialised();
    secrets_set(home.path(), "gateway.auth_token", SECRET);
    config(
        home.path(),
        &format!(r#"{{"providers":{{"openai":{{"model":"m","api_key":"{API_KEY}"}}}}}}"#),
    );
    let out_dir = tempfile::tempdir().unwrap();
    chmod(out_dir.path(), 0o700);
    // `--out FILE` writes exactly FILE: one archive (uncompressed here, so the bytes below are
    // the files' bytes).
    let file = out_dir.path().join("nightly.tar");
    let out = file.to_str().unwrap();
    let (code, _, _) = run(
        home.path(),
        &HashMap::new(),
        &["backup", "create", "--out", out, "--include-key"],
    );
    assert_eq!(code, 2, "--include-key needs a passphrase");
    let pass = env(&[("KAFCLAW_BACKUP_PASSPHRASE", "correct horse battery")]);
    let (code, _, text) = json(
        home.path(),
        &pass,
        &["backup", "create", "--out", out, "--include-key"],
    );
    assert_eq!(code, 0, "{text}");
    let backup = only_backup(out_dir.path());
    assert_eq!(backup, file, "the archive is exactly the path given");
    let backup_str = backup.to_str().unwrap();
    let all = std::fs::read(&backup).unwrap();
    assert!(
        !crate::harness::contains(&all, SECRET) && !crate::harness::contains(&all, API_KEY),
        "no secret in clear in a backup"
    );
    assert!(crate::harness::contains(&all, "<redacted: in vault>"));
    assert_eq!(mode(&backup), 0o600);
    // The same path again is refused: a backup never replaces a file.
    let (code, _, _) = json(home.path(), &pass, &["backup", "create", "--out", out]);
    assert_eq!(code, 2);
    // The backup is recorded for security check.
    let (_, doc, _) = json(home.path(), &HashMap::new(), &["security", "check"]);
    assert_eq!(status(&doc, "backup"), "pass");

    let (code, doc, text) = json(home.path(), &pass, &["backup", "verify", backup_str]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(status(&doc, "audit_chain"), "pass");

    let fresh = tempfile::tempdir().unwrap();
    let (code, doc, text) = json(fresh.path(), &pass, &["backup", "restore", backup_str]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(status(&doc, "audit_chain"), "pass");
    assert_eq!(status(&doc, "config_secret"), "warn");
    // A second restore into the now non-empty home is refused without --force.
    let (code, _, _) = json(fresh.path(), &pass, &["backup", "restore", backup_str]);
    assert_eq!(code, 2);
    let (code, _, text) = json(
        fresh.path(),
        &pass,
        &["backup", "restore", backup_str, "--force"],
    );
    assert_eq!(code, 0, "{text}");

    let fresh_path = fresh.path().to_path_buf();
    assert_eq!(
        pre_restore_copies(&fresh_path),
        1,
        "the forced restore kept the state it replaced"
    );
    let mut gw = Gateway::start_in(fresh, Options::default());
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(10)).success());
    assert_eq!(
        pre_restore_copies(&fresh_path),
        0,
        "pre-restore copies go once the restored home has started"
    );
    let (code, out, err) = run(&fresh_path, &HashMap::new(), &["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(secret_names(&fresh_path).contains("gateway.auth_token"));

    // A damaged backup fails verification (here in its directory form, still accepted).
    let dir = crate::restore::unpack(&backup);
    let victim = std::fs::read_dir(dir.path().join("audit"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&victim)
        .unwrap();
    f.write_all(b"x").unwrap();
    let dir_str = dir.path().to_str().unwrap();
    let (code, doc, _) = json(home.path(), &pass, &["backup", "verify", dir_str]);
    assert_eq!(code, 1);
    assert_eq!(status(&doc, "entries"), "fail", "{doc:#}");
}

/// How many `pre-restore-*` copies a home keeps.
fn pre_restore_copies(home: &Path) -> usize {
    std::fs::read_dir(home.join(".kafclaw"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("pre-restore-"))
        .count()
}

#[test]
fn a_running_gateway_is_backed_up_through_the_control_socket() {
    let home = initialised();
    secrets_set(home.path(), "gateway.auth_token", SECRET);
    let home_path = home.path().to_path_buf();
    let mut gw = Gateway::start_in(home, Options::default());
    let out_dir = tempfile::tempdir().unwrap();
    chmod(out_dir.path(), 0o700);
    let out = out_dir.path().to_str().unwrap();
    let (code, doc, text) = json(
        &home_path,
        &HashMap::new(),
        &["backup", "create", "--out", out],
    );
    assert_eq!(code, 0, "{text}");
    assert!(message(&doc, "backup").contains("through the running gateway"));

    // Read-only checks work while the gateway holds the store; repairs are refused.
    let (_, doc, _) = json(&home_path, &HashMap::new(), &["doctor"]);
    assert!(message(&doc, "store").contains("running gateway"));
    let (code, _, _) = json(&home_path, &HashMap::new(), &["doctor", "--fix"]);
    assert_eq!(code, 2);
    let (_, doc, _) = json(
        &home_path,
        &HashMap::new(),
        &["security", "audit", "--deep"],
    );
    assert_eq!(status(&doc, "audit_chain"), "pass");
    assert_eq!(status(&doc, "token_age"), "pass");
    let (code, doc, _) = json(&home_path, &HashMap::new(), &["status"]);
    assert_eq!(code, 0);
    assert!(!checks(&doc, "source").is_empty());

    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(10)).success());
    let backup = only_backup(out_dir.path());
    let fresh = fresh_home_with_key_of(&home_path);
    let (code, doc, text) = json(
        fresh.path(),
        &HashMap::new(),
        &["backup", "restore", backup.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{text}");
    assert_eq!(status(&doc, "audit_chain"), "pass");
    let (code, out, err) = run(fresh.path(), &HashMap::new(), &["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn status_reads_the_store_offline() {
    let home = initialised();
    config(
        home.path(),
        r#"{"providers":{"openai":{"model":"gpt-x"}},"channels":{"bridges":{"slack":{"enabled":true}}}}"#,
    );
    let (code, doc, out) = json(home.path(), &HashMap::new(), &["status"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(doc["command"], "status");
    assert!(message(&doc, "providers").contains("gpt-x"));
    assert!(message(&doc, "channels").contains("slack"));
    assert!(message(&doc, "source").contains("no gateway running"));
    assert!(message(&doc, "token_usage_today").contains("0 tokens"));
    assert_eq!(status(&doc, "incidents"), "pass");
    assert!(message(&doc, "audit_head").contains("seq"));
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn completion_prints_a_script_for_every_shell() {
    let home = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        // `output()` drains the pipes while the process runs (a script can outgrow a pipe).
        let out = command(home.path(), &HashMap::new())
            .args(["completion", shell])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains("kafclaw"), "{shell}: {script}");
        assert!(
            script.contains("pairing"),
            "{shell}: subcommands are completed"
        );
    }
    assert!(
        std::fs::read_dir(home.path()).unwrap().next().is_none(),
        "completion touches no home"
    );
    let (code, _, err) = run(home.path(), &HashMap::new(), &["completion", "tcsh"]);
    assert_eq!(code, 2);
    assert!(err.contains("tcsh"), "{err}");
}

#[test]
fn a_backup_taken_under_write_load_restores_into_a_gateway_that_starts() {
    let home = initialised();
    let home_path = home.path().to_path_buf();
    let mut gw = Gateway::start_in(home, Options::default());
    // Write load through the running gateway: every token is a store write plus an audit
    // record, while the backup is taken.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let home = home_path.clone();
        std::thread::spawn(move || {
            let mut written = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (code, _, err) = run(
                    &home,
                    &HashMap::new(),
                    &["token", "create", "--scope", "read"],
                );
                assert_eq!(code, 0, "{err}");
                written += 1;
            }
            written
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let out_dir = tempfile::tempdir().unwrap();
    chmod(out_dir.path(), 0o700);
    let (code, _, text) = json(
        &home_path,
        &HashMap::new(),
        &[
            "backup",
            "create",
            "--out",
            out_dir.path().to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{text}");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written >= 2, "the load wrote {written} times");
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(10)).success());

    let backup = only_backup(out_dir.path());
    let (code, _, text) = json(
        &home_path,
        &HashMap::new(),
        &["backup", "verify", backup.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{text}");
    let fresh = fresh_home_with_key_of(&home_path);
    let (code, _, text) = json(
        fresh.path(),
        &HashMap::new(),
        &["backup", "restore", backup.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{text}");
    let (code, out, err) = run(fresh.path(), &HashMap::new(), &["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    let fresh_path = fresh.path().to_path_buf();
    let mut restored = Gateway::start_in(fresh, Options::default());
    restored.signal("TERM");
    assert!(restored.wait_exit(Duration::from_secs(10)).success());
    let (code, out, err) = run(&fresh_path, &HashMap::new(), &["token", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let tokens: Value = serde_json::from_str(&out).unwrap();
    assert!(
        !tokens["result"].as_array().unwrap().is_empty(),
        "tokens written before the backup are restored"
    );
}

/// The one backup archive `backup create --out DIR` made in `dir`.
fn only_backup(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

/// A fresh home holding a copy of `home`'s vault key file (0600), as an operator restoring on a
/// new host would have installed it.
fn fresh_home_with_key_of(home: &Path) -> tempfile::TempDir {
    let fresh = tempfile::tempdir().unwrap();
    let key = fresh.path().join(".config/kafclaw/tomb.rr");
    write(key.clone(), "");
    std::fs::copy(home.join(".config/kafclaw/tomb.rr"), &key).unwrap();
    chmod(&key, 0o600);
    fresh
}

#[test]
fn the_control_socket_closes_silent_connections_and_caps_them() {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    let home = initialised();
    let home_path = home.path().to_path_buf();
    let mut gw = Gateway::start_in(home, Options::default());
    let socket = home_path.join(".kafclaw/control.sock");
    let started = std::time::Instant::now();
    let idle: Vec<UnixStream> = (0..200)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    // A normal command still works meanwhile (at worst after the silent ones' deadline).
    let (code, out, err) = run(&home_path, &HashMap::new(), &["token", "list"]);
    assert_eq!(code, 0, "{out}{err}");
    // Every silent connection gets one JSON line (busy, or timeout after the read deadline)
    // and is closed.
    let (mut busy, mut timed_out) = (0, 0);
    for mut conn in idle {
        conn.set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer)
            .expect("closed by the gateway within the deadline");
        let doc: Value = serde_json::from_str(answer.trim()).unwrap();
        assert_eq!(doc["status"], "error", "{answer}");
        match doc["code"].as_str() {
            Some("busy") => busy += 1,
            Some("timeout") => timed_out += 1,
            other => panic!("unexpected answer {other:?}: {answer}"),
        }
    }
    assert!(busy >= 200 - 32, "{busy} refused as busy");
    assert!(timed_out <= 32, "{timed_out} held a slot");
    assert!(started.elapsed() < Duration::from_secs(15));
    let (code, out, err) = run(&home_path, &HashMap::new(), &["token", "list"]);
    assert_eq!(code, 0, "{out}{err}");
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(10)).success());
}

/// A process of the gateway's own uid that may not read the state directory (an exec child or
/// a skill entry under Landlock, which before ABI 9 can still connect to a named socket) must
/// not command the gateway: every request carries the cookie of this run, kept 0600 in the
/// state directory and removed on stop.
#[test]
fn the_control_socket_obeys_only_requests_that_carry_the_control_cookie() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixStream;
    let home = initialised();
    let home_path = home.path().to_path_buf();
    let mut gw = Gateway::start_in(home, Options::default());
    let socket = home_path.join(".kafclaw/control.sock");
    let cookie_file = home_path.join(".kafclaw/control.cookie");
    let mode = std::fs::metadata(&cookie_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "cookie mode {mode:o}");
    let cookie = std::fs::read_to_string(&cookie_file).unwrap();
    assert_eq!(cookie.trim().len(), 64, "32 random bytes, hex");
    let ask = |line: String| -> Value {
        let mut conn = UnixStream::connect(&socket).unwrap();
        conn.write_all(line.as_bytes()).unwrap();
        conn.write_all(b"\n").unwrap();
        let mut answer = String::new();
        BufReader::new(conn).read_line(&mut answer).unwrap();
        serde_json::from_str(answer.trim()).unwrap()
    };
    let mint = |cookie: Option<&str>| {
        let mut request =
            serde_json::json!({"op": "token_create", "name": "minted", "scope": "admin"});
        if let Some(cookie) = cookie {
            request["cookie"] = Value::String(cookie.to_string());
        }
        request.to_string()
    };
    let wrong = "0".repeat(64);
    for (what, line) in [
        ("no cookie", mint(None)),
        ("a wrong cookie", mint(Some(&wrong))),
        ("a prefix of the cookie", mint(Some(&cookie.trim()[..32]))),
        (
            "a cookie of another type",
            mint(None).replace("}", ",\"cookie\":7}"),
        ),
    ] {
        let answer = ask(line);
        assert_eq!(answer["status"], "error", "{what}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("cookie"),
            "{what}: {answer}"
        );
    }
    let (code, list, err) = run(&home_path, &HashMap::new(), &["token", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !list.contains("minted"),
        "a refused request changed nothing: {list}"
    );
    // With the cookie the same request runs (what `kafclaw` sends).
    let answer = ask(mint(Some(cookie.trim())));
    assert_eq!(answer["status"], "ok", "{answer}");
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(10)).success());
    assert!(!cookie_file.exists(), "the cookie goes with the gateway");
}

/// Found by the `control_message` fuzz target: serde's "unknown variant" error repeats the
/// requested operation name, control characters included, so a refused line could answer (and
/// `kafclaw` print) an error of several lines.
#[test]
fn a_refused_control_request_is_answered_with_one_clean_line() {
    for line in [
        &b"{\"op\":\"\\n\\u0010\\u0010x\"}\n"[..],
        b"{\"op\":\"secret_set\",\"name\":\"a\\r\\nb\",\"value\":5}",
        b"{\"op\":\"\\u001b[31mred\"}",
    ] {
        let Err(answer) = kafclaw::control::parse_request(line) else {
            panic!("{line:?} was accepted");
        };
        assert_eq!(answer["code"], "usage");
        let message = answer["error"].as_str().expect("an error message");
        assert!(
            !message.chars().any(char::is_control),
            "control characters in {message:?}"
        );
    }
}
