//! `kafclaw security check | audit --deep | fix [--yes]` (CONTRACT §8, the operators' runbook).
//!
//! Owns: which checks make up the posture, the deep audit (audit chain, every vault secret,
//! store integrity, a scan for leaked secret values) and the plan of `fix`.
//! Must not: print a secret value (leaks are reported by secret name and place only), change
//! anything without `--yes`, or repair anything while a gateway runs (exit 2).
//!
//! With a running gateway, `check` asks it over the control socket for the vault's secret
//! names and times (the store is the gateway's); `audit --deep` has it verify the audit chain,
//! and reports the vault and store checks as skipped (WARN): stop the gateway for those.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kafclaw_actors::audit::{AuditKey, RecordedHead};
use kafclaw_actors::paths::Home;
use kafclaw_actors::store::TreeName;
use kafclaw_actors::vault::{SecretValue, AUDIT_KEY_NAME};

use crate::checks::{
    self, backup, bind, channels, files, hard_links, isolation, secrets, tools, Create, Report,
    TrustState,
};
use crate::cli::SecurityCommand;
use crate::doctor::Fixer;
use crate::protocol::Operation;
use crate::protocol::{self, Answer};
use crate::settings::keys::{self, Kind};
use crate::settings::Settings;

/// Secret values shorter than this are not searched for (they would match by chance).
const MIN_SCAN_LEN: usize = 8;
/// Files in the log directory larger than this are scanned only up to it.
const MAX_SCAN_FILE: u64 = 256 << 20;

/// Runs one `security` subcommand; returns the exit code.
pub fn run(cmd: &SecurityCommand, home: &Home, env: &HashMap<String, String>, json: bool) -> i32 {
    crate::logging::init("warn", false);
    match cmd {
        SecurityCommand::Check => check(home, env, false, "security check").print(json),
        SecurityCommand::Audit { deep } => {
            let name = if *deep {
                "security audit --deep"
            } else {
                "security audit"
            };
            let progress = crate::progress::Progress::start(
                json || !*deep,
                "security audit --deep: audit chain, vault, store, leak scan",
            );
            let report = check(home, env, *deep, name);
            progress.finish();
            report.print(json)
        }
        SecurityCommand::Fix { yes } => fix(home, env, *yes, json),
    }
}

/// The posture; with `deep`, the integrity checks and the leak scan too.
pub fn check(home: &Home, env: &HashMap<String, String>, deep: bool, command: &str) -> Report {
    let mut report = Report::new(command);
    let trust = TrustState::open(home, env, Create::No);
    posture(home, env, trust, deep, &mut report);
    report
}

fn posture(
    home: &Home,
    env: &HashMap<String, String>,
    trust: TrustState,
    deep: bool,
    report: &mut Report,
) {
    let mut settings = match checks::load_settings(home, env) {
        Ok(s) => s,
        Err(e) => {
            report.fail(
                "config_file",
                e.to_string(),
                "correct the named file or value, then run `kafclaw doctor`",
            );
            files::check(home, None, report);
            return;
        }
    };
    if let Some(vault) = &trust.vault {
        if let Err(e) = crate::core::resolve_secrets(&mut settings, vault) {
            report.fail(
                "vault_secrets",
                e.to_string(),
                "`kafclaw security audit --deep`",
            );
        }
    }
    bind::check(&settings, &trust, report);
    bind::local_mode(&settings, &trust, report);
    bind::fleet_control(&settings, &trust, report);
    crate::checks::tls::check(&settings, report);
    files::check(home, Some(&settings), report);
    isolation::check(home, &settings, env, report);
    secrets::check(home, report);
    channels::check_policy(&settings, report);
    let defaults = checks::default_settings();
    tools::check(&settings, defaults.as_ref(), report);
    hard_links::check(home, &settings, report);
    crate::checks::skills::check(home, &settings, deep, report);
    backup::check(home, &settings, report);
    if deep {
        deep_checks(home, &settings, &trust, report);
    }
}

fn deep_checks(home: &Home, settings: &Settings, trust: &TrustState, report: &mut Report) {
    // The audit chain.
    if trust.running {
        match protocol::send(home, &Operation::AuditVerify {
            from: None,
            anchor: None,
            anchors: Vec::new(),
        }) {
            Ok(Some(Answer::Ok(v))) => report.pass(
                "audit_chain",
                format!(
                    "ok {} records, head {} (verified by the running gateway)",
                    v["records"],
                    v["head_hash"].as_str().unwrap_or_default()
                ),
            ),
            Ok(Some(Answer::Failed(e))) => report.fail(
                "audit_chain",
                e,
                "snapshot the audit log for investigation; `kafclaw audit verify` names the first bad record",
            ),
            Ok(Some(Answer::Error(_, e))) | Err(e) => {
                report.fail("audit_chain", format!("cannot verify: {e}"), "`kafclaw audit verify`")
            }
            Ok(None) => report.warn(
                "audit_chain",
                "the gateway stopped answering",
                "run `kafclaw security audit --deep` again",
            ),
        }
        report.warn(
            "vault_integrity",
            "skipped: the running gateway holds the store",
            "stop the gateway and run `kafclaw security audit --deep`, or verify a fresh `kafclaw backup create`",
        );
        report.warn(
            "store_integrity",
            "skipped: the running gateway holds the store",
            "stop the gateway and run `kafclaw security audit --deep`",
        );
    } else {
        match &trust.vault {
            Some(vault) => audit_chain(home, vault, trust.db.as_ref(), report),
            None => report.fail(
                "audit_chain",
                format!(
                    "cannot verify without the audit key: {}",
                    trust.vault_error.clone().unwrap_or_default()
                ),
                "restore ~/.config/kafclaw/tomb.rr, or set KAFCLAW_VAULT_PASSPHRASE",
            ),
        }
        match &trust.vault {
            Some(vault) => match vault.verify_all() {
                Ok(entries) => {
                    let bad: Vec<String> = entries
                        .iter()
                        .filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name} ({e})")))
                        .collect();
                    if bad.is_empty() {
                        report.pass(
                            "vault_integrity",
                            format!("all {} secrets open", entries.len()),
                        );
                    } else {
                        report.fail(
                            "vault_integrity",
                            format!("secrets that do not open: {}", bad.join(", ")),
                            "set them again with `kafclaw secrets set NAME`, or restore the store from a backup",
                        );
                    }
                }
                Err(e) => report.fail(
                    "vault_integrity",
                    e.to_string(),
                    "restore the store from a backup",
                ),
            },
            None => report.fail(
                "vault_integrity",
                trust
                    .vault_error
                    .clone()
                    .unwrap_or_else(|| "the vault is not open".into()),
                "restore ~/.config/kafclaw/tomb.rr, or set KAFCLAW_VAULT_PASSPHRASE",
            ),
        }
        match &trust.db {
            Some(db) => match db.verify_integrity() {
                Ok(()) => report.pass("store_integrity", "checksums consistent"),
                Err(e) => report.fail(
                    "store_integrity",
                    e.to_string(),
                    "restore the store with `kafclaw backup restore`",
                ),
            },
            None => report.warn(
                "store_integrity",
                trust.store_error.clone().unwrap_or_default(),
                "start the gateway once",
            ),
        }
    }
    leak_scan(home, settings, trust, report);
}

fn audit_chain(
    home: &Home,
    vault: &kafclaw_actors::vault::Vault,
    db: Option<&kafclaw_actors::store::StoreDb>,
    report: &mut Report,
) {
    let key = match vault.get(AUDIT_KEY_NAME) {
        Ok(Some(key)) => key,
        Ok(None) => {
            report.pass("audit_chain", "no audit key yet (nothing has been audited)");
            return;
        }
        Err(e) => {
            report.fail(
                "audit_chain",
                format!("the audit key does not open: {e}"),
                "restore the store from a backup",
            );
            return;
        }
    };
    let Ok(bytes) = <[u8; 32]>::try_from(key.expose()) else {
        report.fail(
            "audit_chain",
            "the audit key is not 32 bytes",
            "restore the store from a backup",
        );
        return;
    };
    // The segments must reach the head recorded apart from them (the store, the head file).
    let recorded = match RecordedHead::for_home(home, db).and_then(|h| h.read()) {
        Ok(recorded) => recorded,
        Err(e) => {
            report.fail(
                "audit_chain",
                e.to_string(),
                "keep a copy of the audit directory and the store for investigation",
            );
            return;
        }
    };
    let key = AuditKey::from_bytes(bytes);
    match kafclaw_actors::audit::verify_against(&home.audit_dir(), &key, None, recorded.as_ref()) {
        Ok(r) => report.pass("audit_chain", format!("ok {} records, head {}", r.records, r.head_hash)),
        Err(e) => report.fail(
            "audit_chain",
            e.to_string(),
            "keep a copy of the audit directory for investigation; `kafclaw audit verify` names the first bad record",
        ),
    }
}

/// Every current secret value known here, by name (values never leave this module).
fn current_secrets(settings: &Settings, trust: &TrustState) -> Vec<(String, SecretValue)> {
    let mut out: Vec<(String, SecretValue)> = Vec::new();
    if let Some(vault) = &trust.vault {
        for info in vault.list().unwrap_or_default() {
            if let Ok(Some(v)) = vault.get(&info.name) {
                out.push((format!("vault secret {}", info.name), v));
            }
        }
    }
    if let Some(t) = &settings.gateway.auth_token {
        out.push(("gateway.auth_token".into(), SecretValue::from(t.expose())));
    }
    if let Some(k) = &settings.providers.openai.api_key {
        out.push((
            "providers.openai.api_key".into(),
            SecretValue::from(k.expose()),
        ));
    }
    let mut flat = Vec::new();
    secrets::flatten("channels", &settings.channels, &mut flat);
    for (key, value) in flat {
        if keys::lookup(&key).is_some_and(|s| s.kind == Kind::Secret) {
            if let Some(v) = value.as_str() {
                out.push((key, SecretValue::from(v)));
            }
        }
    }
    out.retain(|(_, v)| v.len() >= MIN_SCAN_LEN);
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() || haystack.len() < needle.len() {
        return false;
    }
    let first = needle[0];
    let last_start = haystack.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        match haystack[i..=last_start].iter().position(|b| *b == first) {
            None => return false,
            Some(offset) => {
                let at = i + offset;
                if &haystack[at..at + needle.len()] == needle {
                    return true;
                }
                i = at + 1;
            }
        }
    }
    false
}

fn leak_scan(home: &Home, settings: &Settings, trust: &TrustState, report: &mut Report) {
    let secrets = current_secrets(settings, trust);
    let mut places: Vec<(String, Vec<u8>)> = Vec::new();
    if let Ok(bytes) = std::fs::read(home.config_file()) {
        places.push((checks::shown(home, &home.config_file()), bytes));
    }
    for segment in files::audit_segments(home) {
        if let Ok(bytes) = std::fs::read(&segment) {
            places.push((checks::shown(home, &segment), bytes));
        }
    }
    let mut scanned_store = false;
    if let Some(db) = &trust.db {
        scanned_store = true;
        for tree in [
            TreeName::Timeline,
            TreeName::Settings,
            TreeName::Channels,
            TreeName::Sessions,
            TreeName::Approvals,
            TreeName::Incidents,
            TreeName::Usage,
            TreeName::Tokens,
        ] {
            let Ok(t) = db.tree(tree) else { continue };
            let mut bytes = Vec::new();
            let _ = t.for_each(|k, v| {
                bytes.extend_from_slice(k);
                bytes.push(0);
                bytes.extend_from_slice(v);
                bytes.push(0);
                true
            });
            places.push((format!("the store (tree {})", tree.as_str()), bytes));
        }
    }
    let log_dir = checks::at(&settings.tree, "log.dir")
        .as_str()
        .unwrap_or("")
        .to_string();
    if !log_dir.is_empty() {
        for file in walk(Path::new(&log_dir)) {
            if let Ok(bytes) = read_capped(&file) {
                places.push((file.display().to_string(), bytes));
            }
        }
    }
    let mut leaks = Vec::new();
    for (name, value) in &secrets {
        for (place, bytes) in &places {
            if contains(bytes, value.expose()) {
                leaks.push(format!("{name} in {place}"));
            }
        }
    }
    let mut scope = vec!["config.json", "the audit log"];
    if scanned_store {
        scope.push("the store");
    }
    if !log_dir.is_empty() {
        scope.push("the log directory");
    }
    let what = format!(
        "{} secret value(s) searched in {}",
        secrets.len(),
        scope.join(", ")
    );
    if leaks.is_empty() {
        if trust.running {
            report.warn(
                "leak_scan",
                format!("{what}; vault values and the store were not scanned (the running gateway holds them)"),
                "stop the gateway and run `kafclaw security audit --deep`",
            );
        } else {
            report.pass("leak_scan", format!("no leak: {what}"));
        }
    } else {
        report.fail(
            "leak_scan",
            format!("current secret values found: {}", leaks.join("; ")),
            "remove the value from that place and rotate the secret (`kafclaw secrets set NAME`, `kafclaw admin rotate-gateway-token`)",
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            out.extend(walk(&entry.path()));
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    out
}

fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_SCAN_FILE)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// `security fix [--yes]`.
fn fix(home: &Home, env: &HashMap<String, String>, yes: bool, json: bool) -> i32 {
    let settings = checks::load_settings(home, env).ok();
    let plan = plan(home, env, settings.as_ref());
    if !yes {
        let mut report = Report::new("security fix");
        if plan.is_empty() {
            report.pass("plan", "nothing to change");
        }
        for step in &plan {
            report.warn(
                "plan",
                format!("would {step}"),
                "`kafclaw security fix --yes` applies the plan",
            );
        }
        // Nothing pending is a clean result (exit 0); pending changes not applied exit 1.
        if !plan.is_empty() {
            report.fail(
                "confirmation",
                "nothing was changed: --yes was not given",
                "review the plan above, then run `kafclaw security fix --yes`",
            );
        }
        return report.print(json);
    }
    if checks::home_in_use(home) {
        return crate::envelope::fail("security fix", json, crate::envelope::ErrorCode::Refused, "a gateway is running with this home: stop it before `kafclaw security fix --yes` (repairs open the vault and the audit log the gateway holds)");
    }
    let mut report = Report::new("security fix --yes");
    let mut fixer = Fixer::new(home, env);
    if let Err(e) = fixer.begin(settings.as_ref(), &plan) {
        crate::doctor::refused_unaudited(&mut report, &e);
        return report.print(json);
    }
    fixer.common(settings.as_ref());
    if let Some(s) = &settings {
        let (policies, elsewhere) = channels::fix_plan(home, s);
        for change in channels::fix(home, &policies) {
            fixer.record(change, "channels");
        }
        for key in elsewhere {
            fixer.record(
                Err(format!(
                    "{key}: open is not set in config.json; change it where it is set"
                )),
                "channels",
            );
        }
        match tools::fix_plan(s) {
            Ok(true) => {
                let change = tools::fix(home);
                fixer.record(change, "tools.exec.restrict_workspace");
            }
            Ok(false) => {}
            Err(origin) => fixer.record(
                Err(format!(
                    "tools.exec.restrict_workspace=false comes from {origin}; set it to true there"
                )),
                "tools.exec.restrict_workspace",
            ),
        }
        if !secrets::config_plan(home).is_empty() {
            let result = match &fixer.trust().vault {
                Some(vault) => secrets::migrate_config(home, vault),
                None => Err("cannot open the vault; config.json is unchanged".to_string()),
            };
            match result {
                Ok(keys) => {
                    for key in keys {
                        fixer.record_secret(
                            Ok(format!("moved {key} from config.json into the vault")),
                            &key,
                            "config.json",
                        );
                    }
                }
                Err(e) => fixer.record(Err(e), "config.json"),
            }
        }
        if needs_token(s) {
            let result = match &fixer.trust().vault {
                Some(vault) => generate_token(vault),
                None => Err("cannot open the vault to store a new gateway token".to_string()),
            };
            fixer.record_secret(result, "gateway.auth_token", "generated");
        }
    }
    let trust = fixer.finish(settings.as_ref(), &mut report);
    // The post-fix posture, on the store and vault the repairs opened (sled: one opener).
    let trust = trust.unwrap_or_else(|| TrustState::open(home, env, Create::No));
    posture(home, env, trust, false, &mut report);
    report.print(json)
}

fn needs_token(s: &Settings) -> bool {
    !s.gateway.is_loopback() && s.gateway.auth_token.is_none()
}

/// Generates a 32-byte random gateway token into the vault; it is never printed.
fn generate_token(vault: &kafclaw_actors::vault::Vault) -> Result<String, String> {
    if vault.get("gateway.auth_token").ok().flatten().is_some() {
        return Ok("gateway.auth_token is already in the vault".into());
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    let token = SecretValue::from(format!("kc_{}", hex::encode(bytes)));
    vault
        .set_user("gateway.auth_token", token)
        .map_err(|e| format!("cannot store the new gateway token: {e}"))?;
    Ok("generated a 67-character gateway token into the vault as gateway.auth_token (not shown: issue client tokens with `kafclaw token create --scope admin|read|chat`, or replace it with a value you know via `kafclaw secrets set gateway.auth_token`)".into())
}

/// What `security fix --yes` would do.
fn plan(home: &Home, env: &HashMap<String, String>, settings: Option<&Settings>) -> Vec<String> {
    let mut steps = crate::doctor::common_plan(home, env, settings);
    if let Some(s) = settings {
        for key in secrets::config_plan(home) {
            steps.push(format!("move {key} from config.json into the vault"));
        }
        let (policies, elsewhere) = channels::fix_plan(home, s);
        for key in policies {
            steps.push(format!("set {key} from open to pairing in config.json"));
        }
        for key in elsewhere {
            steps.push(format!("report {key}: it is not set in config.json"));
        }
        match tools::fix_plan(s) {
            Ok(true) => {
                steps.push("set tools.exec.restrict_workspace to true in config.json".into())
            }
            Ok(false) => {}
            Err(origin) => steps.push(format!(
                "report tools.exec.restrict_workspace=false set in {origin}"
            )),
        }
        let vault_token = {
            let trust = TrustState::open(home, env, Create::No);
            trust.has_secret("gateway.auth_token")
        };
        if !s.gateway.is_loopback() && s.gateway.auth_token.is_none() && !vault_token {
            steps.push(
                "generate a strong gateway token into the vault as gateway.auth_token".into(),
            );
        }
    }
    steps
}
