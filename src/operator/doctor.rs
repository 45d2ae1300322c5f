//! `kafclaw doctor [--fix]`: diagnostics of the home (config, unknown keys and variables, file
//! modes, workspace isolation, provider, channels, store, vault), and the safe repairs.
//!
//! Owns: the order of the checks and the repair pipeline shared with `security fix --yes`
//! ([`Fixer`]): every repair is reported and audited (`config.fixed`, and `secret.changed` for
//! each credential moved into the vault).
//! Must not: repair anything while a gateway runs (it holds the store, the vault and the audit
//! log; a second writer would fork the audit chain) — `--fix` then exits 2 and says so.
//! Read-only checks while a gateway runs skip opening the store and the vault and say that the
//! running gateway opened them.

use std::collections::HashMap;

use serde_json::json;

use kafclaw_actors::audit::{AuditKey, AuditKind, AuditLog, RecordedHead};
use kafclaw_actors::paths::Home;
use kafclaw_actors::store::TreeName;
use kafclaw_actors::vault::AUDIT_KEY_NAME;

use crate::checks::{
    self, channels, files, isolation, secrets, Change, Create, Report, TrustState,
};
use crate::settings::{Settings, SettingsWarning};

/// Runs `kafclaw doctor [--fix]`; returns the exit code.
pub fn run(home: &Home, env: &HashMap<String, String>, json: bool, fix: bool) -> i32 {
    crate::logging::init("warn", false);
    let mut report = Report::new(if fix { "doctor --fix" } else { "doctor" });
    let mut trust = None;
    if fix {
        if checks::home_in_use(home) {
            return crate::envelope::fail("doctor", json, crate::envelope::ErrorCode::Refused, "a gateway is running with this home: stop it before `kafclaw doctor --fix` (repairs open the vault and the audit log the gateway holds)");
        }
        let settings = checks::load_settings(home, env).ok();
        let mut fixer = Fixer::new(home, env);
        let steps = common_plan(home, env, settings.as_ref());
        match fixer.begin(settings.as_ref(), &steps) {
            Ok(()) => {
                fixer.common(settings.as_ref());
                trust = fixer.finish(settings.as_ref(), &mut report);
            }
            Err(e) => refused_unaudited(&mut report, &e),
        }
    }
    diagnose(home, env, trust, &mut report);
    report.print(json)
}

/// The checks of `doctor` (also the first part of `security check`'s view of the config).
pub fn diagnose(
    home: &Home,
    env: &HashMap<String, String>,
    trust: Option<TrustState>,
    report: &mut Report,
) {
    let config = home.config_file();
    let mut settings = match checks::load_settings(home, env) {
        Ok(s) => {
            if s.config_file_found {
                report.pass(
                    "config_file",
                    format!("{} found and valid", config.display()),
                );
            } else {
                report.pass(
                    "config_file",
                    format!(
                        "no {} (optional): built-in defaults and the environment apply",
                        config.display()
                    ),
                );
            }
            Some(s)
        }
        Err(e) => {
            report.fail(
                "config_file",
                e.to_string(),
                "correct the named file or value (`kafclaw doctor` checks it again)",
            );
            None
        }
    };
    if let Some(s) = &settings {
        settings_warnings(s, report);
    }
    files::check(home, settings.as_ref(), report);
    let Some(s) = settings.as_mut() else {
        return;
    };
    isolation::check(home, s, env, report);
    crate::checks::tools::programs(s, report);
    let trust = trust.unwrap_or_else(|| TrustState::open(home, env, Create::No));
    if let Some(vault) = &trust.vault {
        if let Err(e) = crate::core::resolve_secrets(s, vault) {
            report.fail(
                "vault_secrets",
                e.to_string(),
                "see `kafclaw security audit --deep`",
            );
        }
    }
    checks::tls::secret_sources(s, report);
    provider(s, &trust, report);
    channels::check_complete(s, &trust, report);
    store_and_vault(home, &trust, report);
}

fn settings_warnings(s: &Settings, report: &mut Report) {
    let (mut keys, mut vars) = (0, 0);
    for w in &s.warnings {
        match w {
            SettingsWarning::UnknownKey {
                key, suggestion, ..
            } => {
                keys += 1;
                let remedy = match suggestion {
                    Some(good) => format!("rename {key} to {good} in config.json"),
                    None => format!(
                        "remove {key} from config.json (see config/default.toml for the keys)"
                    ),
                };
                report.warn("config_keys", w.to_string(), remedy);
            }
            SettingsWarning::UnknownEnv {
                var, suggestion, ..
            } => {
                vars += 1;
                let remedy = match suggestion {
                    Some(good) => format!("rename {var} to {good}"),
                    None => format!("remove {var} (see config/default.toml for the names)"),
                };
                report.warn("env_vars", w.to_string(), remedy);
            }
            SettingsWarning::BadEnvLine { path, .. } => report.warn(
                "env_file",
                w.to_string(),
                format!(
                    "write the line as KEY=VALUE or comment it out with # in {}",
                    path.display()
                ),
            ),
            SettingsWarning::EmptySecret { key, .. } => report.warn(
                "empty_secret",
                w.to_string(),
                format!("remove the empty value or set it with `kafclaw secrets set {key}`"),
            ),
        }
    }
    if keys == 0 {
        report.pass("config_keys", "every config.json key is known");
    }
    if vars == 0 {
        report.pass("env_vars", "every KAFCLAW_* variable is known");
    }
}

fn provider(s: &Settings, trust: &TrustState, report: &mut Report) {
    let openai = &s.providers.openai;
    if !s.provider_configured() {
        report.warn(
            "provider",
            "no model provider configured (POST /chat answers 503)",
            "set providers.openai.model (and api_base), and `kafclaw secrets set providers.openai.api_key`",
        );
        return;
    }
    let key = openai.api_key.is_some() || trust.has_secret("providers.openai.api_key");
    let key_note = if key {
        "API key set"
    } else {
        "no API key (fine for a local endpoint)"
    };
    report.pass(
        "provider",
        format!("model {} at {} ({key_note})", openai.model, openai.api_base),
    );
}

fn store_and_vault(home: &Home, trust: &TrustState, report: &mut Report) {
    if trust.running {
        report.pass(
            "store",
            "in use by the running gateway, which opened it at start",
        );
        let n = trust
            .secrets
            .as_ref()
            .map_or(0, |s| s.iter().filter(|s| !s.internal).count());
        report.pass(
            "vault",
            format!("opened by the running gateway ({n} operator secrets)"),
        );
        return;
    }
    match (&trust.db, &trust.store_error) {
        (Some(db), _) => {
            let events = db.tree(TreeName::Timeline).map(|t| t.len()).unwrap_or(0);
            report.pass(
                "store",
                format!(
                    "{} opens ({events} timeline events)",
                    checks::shown(home, &home.store_dir())
                ),
            );
        }
        (None, Some(e)) if !home.store_dir().exists() => report.warn(
            "store",
            e.clone(),
            "start the gateway once, or `kafclaw doctor --fix`",
        ),
        (None, e) => report.fail(
            "store",
            e.clone().unwrap_or_else(|| "cannot open".into()),
            "check the store directory; restore it with `kafclaw backup restore` if it is corrupt",
        ),
    }
    match (&trust.vault, &trust.vault_error) {
        (Some(vault), _) => {
            let n = vault.list().map_or(0, |s| s.iter().filter(|s| !s.internal).count());
            report.pass(
                "vault",
                format!(
                    "opens (key {}, {n} operator secrets, {})",
                    vault.key_id(),
                    if vault.is_passphrase_protected() { "passphrase-protected" } else { "key file not passphrase-protected" }
                ),
            );
        }
        (None, Some(e)) if trust.vault_absent => report.warn(
            "vault",
            e.clone(),
            "the vault key is created on first start or by `kafclaw doctor --fix`",
        ),
        (None, Some(e)) => report.fail(
            "vault",
            e.clone(),
            "restore ~/.config/kafclaw/tomb.rr from your secret store, or set KAFCLAW_VAULT_PASSPHRASE",
        ),
        (None, None) => {}
    }
}

/// A repair that was made (or failed), with how it is audited.
struct Applied {
    change: Change,
    kind: AuditKind,
    subject: String,
    /// For a secret moved or created: where it came from (`env file`, `config.json`, …).
    from: &'static str,
}

/// The repair pipeline: file-level repairs first, then the ones that need the vault, then one
/// audit record per repair, then the report lines.
pub struct Fixer<'a> {
    home: &'a Home,
    env: &'a HashMap<String, String>,
    trust: Option<TrustState>,
    applied: Vec<Applied>,
    /// Opened by [`Fixer::begin`], which audits the plan before anything is changed.
    log: Option<AuditLog>,
}

/// The steps of [`Fixer::common`] (`doctor --fix`, and the first part of `security fix`).
pub fn common_plan(
    home: &Home,
    env: &HashMap<String, String>,
    settings: Option<&Settings>,
) -> Vec<String> {
    let places = isolation::SecretPlaces::new(home, env);
    let mut steps = files::plan(home, settings, |p| places.problem(p).is_none());
    for (var, name) in secrets::env_plan(home) {
        steps.push(format!(
            "move {var} from the env file into the vault as {name} and scrub it from the file"
        ));
    }
    steps
}

/// A repair plan the audit log could not take: nothing was changed.
pub fn refused_unaudited(report: &mut Report, error: &str) {
    report.fail(
        "fix_audit",
        format!(
            "nothing was changed: the plan could not be written to the audit log first: {error}"
        ),
        "`kafclaw audit verify`, then `kafclaw audit repair` if the log is torn",
    );
}

impl<'a> Fixer<'a> {
    /// A pipeline for `home` (the caller has checked that no gateway runs).
    pub fn new(home: &'a Home, env: &'a HashMap<String, String>) -> Self {
        Self {
            home,
            env,
            trust: None,
            applied: Vec::new(),
            log: None,
        }
    }

    /// Audits the plan (`config.fixed` with `phase: planned` and the steps) before any repair:
    /// an error means the audit log cannot take it, and nothing may be changed. Nothing to do
    /// records nothing.
    pub fn begin(&mut self, settings: Option<&Settings>, steps: &[String]) -> Result<(), String> {
        if steps.is_empty() {
            return Ok(());
        }
        let audit_settings = settings.map(|s| s.audit.clone()).unwrap_or_default();
        let mut log = self.open_log(&audit_settings)?;
        log.append(
            AuditKind::ConfigFixed,
            &checks::cli_actor(),
            "plan",
            &json!({"phase": "planned", "steps": steps}),
        )
        .map_err(|e| e.to_string())?;
        self.log = Some(log);
        Ok(())
    }

    /// Records a file-level repair (audited as `config.fixed`).
    pub fn record(&mut self, change: Change, subject: &str) {
        self.applied.push(Applied {
            change,
            kind: AuditKind::ConfigFixed,
            subject: subject.to_string(),
            from: "",
        });
    }

    /// Records a secret written into the vault (audited as `secret.changed`, by name only).
    pub fn record_secret(&mut self, change: Change, name: &str, from: &'static str) {
        self.applied.push(Applied {
            change,
            kind: AuditKind::SecretChanged,
            subject: name.to_string(),
            from,
        });
    }

    /// The store and vault, opened (and created) on first use.
    pub fn trust(&mut self) -> &TrustState {
        let (home, env) = (self.home, self.env);
        self.trust
            .get_or_insert_with(|| TrustState::open(home, env, Create::Yes))
    }

    /// The repairs of `doctor --fix`: directories, modes, env-file credentials into the vault.
    pub fn common(&mut self, settings: Option<&Settings>) {
        let home = self.home;
        let places = isolation::SecretPlaces::new(home, self.env);
        for change in files::fix(home, settings, |p| places.problem(p).is_none()) {
            self.record(change, "file_mode");
        }
        if secrets::env_plan(home).is_empty() {
            return;
        }
        let result = match &self.trust().vault {
            Some(vault) => secrets::migrate_env(home, vault),
            None => Err(format!(
                "cannot open the vault ({}); the env file is unchanged",
                self.trust().vault_error.clone().unwrap_or_default()
            )),
        };
        match result {
            Ok(moved) => {
                for (var, name) in moved {
                    self.record_secret(
                        Ok(format!("moved {var} from the env file into the vault as {name} and scrubbed it from the file")),
                        &name,
                        "env file",
                    );
                }
            }
            Err(e) => self.record(Err(e), "env_file"),
        }
    }

    /// Audits every repair, adds one report line per repair (or "nothing to change"), and
    /// hands back the open store and vault for the checks that follow.
    pub fn finish(
        mut self,
        settings: Option<&Settings>,
        report: &mut Report,
    ) -> Option<TrustState> {
        if self.applied.is_empty() {
            report.pass("fix", "nothing to change");
            return self.trust;
        }
        let audit_settings = settings.map(|s| s.audit.clone()).unwrap_or_default();
        let audited = self.audit(&audit_settings);
        for a in &self.applied {
            match &a.change {
                Ok(what) => report.pass("fix", what.clone()),
                Err(what) => report.fail(
                    "fix",
                    what.clone(),
                    "repair it by hand as described, then run `kafclaw doctor` again",
                ),
            }
        }
        if let Err(e) = audited {
            report.fail(
                "fix_audit",
                format!("the repairs above could not be written to the audit log: {e}"),
                "`kafclaw audit verify`, then `kafclaw audit repair` if the log is torn",
            );
        }
        self.trust
    }

    fn audit(
        &mut self,
        audit_settings: &kafclaw_actors::audit::AuditSettings,
    ) -> Result<(), String> {
        let mut log = match self.log.take() {
            Some(log) => log,
            None => self.open_log(audit_settings)?,
        };
        let actor = checks::cli_actor();
        for a in &self.applied {
            let data = match (&a.change, a.kind) {
                (Ok(_), AuditKind::SecretChanged) => {
                    json!({"action": "set", "name": a.subject, "from": a.from})
                }
                (Ok(what), _) => json!({"fixed": what}),
                (Err(what), _) => json!({"failed": what}),
            };
            log.append(a.kind, &actor, &a.subject, &data)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The home's audit log, opened with its key (created in the vault when missing).
    fn open_log(
        &mut self,
        audit_settings: &kafclaw_actors::audit::AuditSettings,
    ) -> Result<AuditLog, String> {
        let key = match &self.trust().vault {
            Some(vault) => vault
                .get_or_create_random(AUDIT_KEY_NAME, 32)
                .map_err(|e| e.to_string())?,
            None => {
                return Err(format!(
                    "the vault is unavailable ({})",
                    self.trust().vault_error.clone().unwrap_or_default()
                ))
            }
        };
        let bytes: [u8; 32] = key
            .expose()
            .try_into()
            .map_err(|_| "the audit key is not 32 bytes".to_string())?;
        let recorded = RecordedHead::for_home(self.home, self.trust().db.as_ref())
            .map_err(|e| e.to_string())?;
        AuditLog::open_recorded(
            &self.home.audit_dir(),
            AuditKey::from_bytes(bytes),
            audit_settings,
            recorded,
        )
        .map_err(|e| e.to_string())
    }
}
