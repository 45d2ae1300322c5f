//! Settings (CONTRACT §2): built-in defaults < `~/.kafclaw/config.json` < `~/.config/kafclaw/env`
//! (only names absent from the process environment) < process environment < flags.
//! (Vault-held secrets slot in between the config file and the environment once the vault is
//! open; see `resolve_secrets`.)
//!
//! Owns: reading every layer, remembering where each value came from, validating every value
//! against the key table, collecting unknown keys and variables, and the typed [`Settings`].
//! Must not: open the store or the vault, or print a secret.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::secret::Secret;
use kafclaw_actors::paths::Home;

pub mod keys;
pub mod secret;
pub mod secret_files;
use keys::Kind;

#[cfg(test)]
mod tests;

/// The embedded built-in defaults (`config/default.toml`).
pub const DEFAULTS_TOML: &str = include_str!("../config/default.toml");

/// Where a value came from (named in every validation error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `config/default.toml` compiled into the binary.
    Default,
    /// `~/.kafclaw/config.json`.
    ConfigFile(PathBuf),
    /// `~/.config/kafclaw/env`, with the variable's name.
    EnvFile(PathBuf, String),
    /// The process environment, with the variable's name.
    Env(String),
    /// A command-line flag.
    Flag(&'static str),
    /// The secret vault.
    Vault,
    /// A file named by `<NAME>_FILE` (the container convention), with the variable and the path.
    SecretFile(String, PathBuf),
    /// A systemd credential: `$CREDENTIALS_DIRECTORY/<key>`.
    Credential(PathBuf),
}

impl Origin {
    /// True for the environment's precedence slot: a variable, a `_FILE`, a credential, a
    /// flag (the vault does not override these).
    pub fn is_environment(&self) -> bool {
        matches!(
            self,
            Origin::Env(_)
                | Origin::EnvFile(..)
                | Origin::Flag(_)
                | Origin::SecretFile(..)
                | Origin::Credential(_)
        )
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("built-in default"),
            Origin::ConfigFile(p) => write!(f, "{}", p.display()),
            Origin::EnvFile(p, var) => write!(f, "{var} in {}", p.display()),
            Origin::Env(var) => write!(f, "{var} in the environment"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
            Origin::Vault => f.write_str("the vault"),
            Origin::SecretFile(var, p) => write!(f, "{var} ({})", p.display()),
            Origin::Credential(p) => write!(f, "systemd credential {}", p.display()),
        }
    }
}

impl Origin {
    /// Where the value came from, without the variable's name (for a line that names it
    /// already): `the environment`, `~/.config/kafclaw/env`, …
    pub fn place(&self) -> String {
        match self {
            Origin::EnvFile(p, _) => p.display().to_string(),
            Origin::Env(_) => "the environment".into(),
            other => other.to_string(),
        }
    }
}

/// Why settings could not be loaded: one line, naming the key, the source and what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A value breaks its key's rule.
    #[error("invalid {key} (from {origin}): {problem}")]
    Invalid {
        key: String,
        origin: Origin,
        problem: String,
    },
    /// A file exists but cannot be read or parsed.
    #[error("cannot read {path}: {reason}")]
    File { path: PathBuf, reason: String },
    /// A secret file (`NAME_FILE`, a credential) is refused: the value is never shown.
    #[error("refusing {source_name}: {problem}")]
    SecretFile {
        source_name: String,
        problem: String,
    },
}

/// Something worth a warning that does not stop startup (also reported by `doctor`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettingsWarning {
    /// A config.json key no part of KafClaw reads.
    UnknownKey {
        key: String,
        origin: Origin,
        suggestion: Option<String>,
    },
    /// A `KAFCLAW_*` variable no part of KafClaw reads.
    UnknownEnv {
        var: String,
        origin: Origin,
        suggestion: Option<String>,
    },
    /// A line of the env file that is not `KEY=VALUE` (the content is not repeated: it might
    /// be a secret).
    BadEnvLine { path: PathBuf, line: usize },
    /// A secret variable set to the empty string is treated as unset.
    EmptySecret { key: String, origin: Origin },
}

impl fmt::Display for SettingsWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hint = |s: &Option<String>| {
            s.as_ref()
                .map(|s| format!(" (did you mean {s}?)"))
                .unwrap_or_default()
        };
        match self {
            SettingsWarning::UnknownKey {
                key,
                origin,
                suggestion,
            } => write!(f, "unknown key {key} in {origin}{}", hint(suggestion)),
            SettingsWarning::UnknownEnv {
                var,
                origin,
                suggestion,
            } => write!(
                f,
                "unknown variable {var} in {}{}",
                origin.place(),
                hint(suggestion)
            ),
            SettingsWarning::BadEnvLine { path, line } => {
                write!(
                    f,
                    "{} line {line} is not KEY=VALUE; ignored",
                    path.display()
                )
            }
            SettingsWarning::EmptySecret { key, origin } => {
                write!(
                    f,
                    "{key} is set to an empty value ({origin}); treated as unset"
                )
            }
        }
    }
}

/// Values given on the command line (highest precedence).
#[derive(Clone, Debug, Default)]
pub struct FlagOverrides {
    /// `--host`.
    pub host: Option<String>,
    /// `--port`.
    pub port: Option<u16>,
    /// `--dashboard-port`.
    pub dashboard_port: Option<u16>,
    /// `--log-format`.
    pub log_format: Option<String>,
}

/// Everything `load` reads besides the files under the home.
pub struct Sources<'a> {
    /// The KafClaw root.
    pub home: &'a Home,
    /// The process environment (tests pass their own map; they never mutate the real one).
    pub env: &'a HashMap<String, String>,
    /// Command-line overrides.
    pub flags: &'a FlagOverrides,
}

/// The typed settings, deserialized once and sliced per component. `Debug` prints every
/// field, with the values of secret keys in the raw JSON trees (`channels`, `tools`,
/// `incidents`) replaced by `"[redacted]"`.
#[derive(Clone, Deserialize)]
pub struct Settings {
    /// The HTTP gateway.
    pub gateway: GatewaySettings,
    /// The model provider.
    pub providers: ProvidersSettings,
    /// The agent loop.
    pub model: ModelSettings,
    /// Daily token budgets (0 = no limit).
    pub budgets: BudgetsSettings,
    /// Tools (kept as JSON until the executor consumes its slice).
    pub tools: Value,
    /// Workspace and work repo.
    pub paths: PathsSettings,
    /// Restart budget.
    pub supervisor: kafclaw_actors::supervisor::SupervisorSettings,
    /// Lockout and token age.
    pub security: SecuritySettings,
    /// Audit segments.
    pub audit: kafclaw_actors::audit::AuditSettings,
    /// What the store keeps.
    pub store: StoreSettings,
    /// Logging.
    pub log: LogSettings,
    /// Channels (typed by `crate::channels`).
    #[serde(default)]
    pub channels: Value,
    /// Incident thresholds (typed by `kafclaw_actors::incident::IncidentSettings`).
    #[serde(default)]
    pub incidents: Value,
    /// Fleet mode (NATS JetStream).
    pub fleet: FleetSettings,
    /// Where each key's value came from.
    #[serde(skip)]
    pub origins: BTreeMap<String, Origin>,
    /// Warnings collected while loading.
    #[serde(skip)]
    pub warnings: Vec<SettingsWarning>,
    /// Whether `~/.kafclaw/config.json` exists.
    #[serde(skip)]
    pub config_file_found: bool,
    /// Every validated non-secret value as one JSON tree (secret keys are left out), for the operator
    /// checks that read keys no component has a typed slice for (`backup.*`,
    /// `incidents.owner`, `log.retention_days`).
    #[serde(skip)]
    pub tree: Value,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("gateway", &self.gateway)
            .field("providers", &self.providers)
            .field("model", &self.model)
            .field("budgets", &self.budgets)
            .field("tools", &redacted("tools", &self.tools))
            .field("paths", &self.paths)
            .field("supervisor", &self.supervisor)
            .field("security", &self.security)
            .field("audit", &self.audit)
            .field("store", &self.store)
            .field("log", &self.log)
            .field("channels", &redacted("channels", &self.channels))
            .field("incidents", &redacted("incidents", &self.incidents))
            .field("fleet", &self.fleet)
            .field("origins", &self.origins)
            .field("warnings", &self.warnings)
            .field("config_file_found", &self.config_file_found)
            .field("tree", &redacted("", &self.tree))
            .finish()
    }
}

/// `value` (found at `path`) with every leaf whose key is a secret in the key table, or is
/// not in the key table at all, replaced by `"[redacted]"` (fail closed: a key the table
/// does not know is not known to be public).
fn redacted(path: &str, value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), redacted(&child_key(path, k), v)))
                .collect(),
        ),
        leaf => match keys::lookup(path) {
            Some(spec) if spec.kind != Kind::Secret => leaf.clone(),
            _ => Value::String("[redacted]".into()),
        },
    }
}

/// `gateway.*`.
#[derive(Clone, Debug, Deserialize)]
pub struct GatewaySettings {
    /// Interface of both listeners.
    pub host: String,
    /// Gateway port.
    pub port: u16,
    /// Dashboard/admin port.
    pub dashboard_port: u16,
    /// The shared admin token of the runbook.
    #[serde(default)]
    pub auth_token: Option<Secret>,
    /// Allowed browser origins.
    pub cors_origins: Vec<String>,
    /// Body cap.
    pub max_body_bytes: usize,
    /// WhatsApp webhook body cap.
    pub webhook_max_body_bytes: usize,
    /// Request head timeout.
    pub request_timeout_seconds: u64,
    /// Connection cap per worker.
    pub max_connections: usize,
    /// Workers per listener (0 = automatic).
    pub workers: usize,
    /// Names (besides loopback and the local address) both listeners answer to.
    pub allowed_hosts: Vec<String>,
    /// Peers allowed to report the client address (`Forwarded`, `X-Forwarded-For`).
    pub trusted_proxies: Vec<String>,
    /// Deadline for a whole request body.
    pub body_timeout_seconds: u64,
    /// `/chat` turns in progress at once on the gateway port; one more gets 503.
    pub max_concurrent_chats: usize,
    /// Open connections per client (IPv4 address, IPv6 /64) on each listener; 0 = no cap.
    pub max_connections_per_ip: usize,
    /// Bodies read at once before authentication (webhooks), per listener.
    pub max_unauthenticated_bodies: usize,
    /// How long SIGTERM/SIGINT waits for in-flight turns, tool runs and reply sends before the
    /// process exits anyway (what did not finish stays in the inbox).
    pub shutdown_grace_seconds: u64,
    /// How clients reach the listeners over TLS.
    pub tls: TlsSettings,
}

/// `gateway.tls.*`.
#[derive(Clone, Debug, Deserialize)]
pub struct TlsSettings {
    /// `native`, `proxy` or `off`.
    pub mode: TlsMode,
    /// PEM certificate chain (mode `native`).
    pub cert_file: String,
    /// PEM private key (mode `native`, 0600).
    pub key_file: String,
}

/// `gateway.tls.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Both listeners terminate TLS themselves.
    Native,
    /// A TLS-terminating proxy (one of `gateway.trusted_proxies`) is in front.
    Proxy,
    /// Plain HTTP (loopback binds only).
    Off,
}

impl TlsMode {
    /// The settings word.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Native => "native",
            TlsMode::Proxy => "proxy",
            TlsMode::Off => "off",
        }
    }
}

impl GatewaySettings {
    /// True when `host` is loopback (`127.0.0.0/8`, `::1`, `localhost`).
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.host)
    }
}

/// True for `127.0.0.0/8`, `::1` and `localhost`.
pub fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `providers.*`.
#[derive(Clone, Debug, Deserialize)]
pub struct ProvidersSettings {
    /// The OpenAI-compatible provider.
    pub openai: OpenAiSettings,
}

/// `providers.openai.*`.
#[derive(Clone, Debug, Deserialize)]
pub struct OpenAiSettings {
    /// Endpoint base URL.
    pub api_base: String,
    /// Model name; empty = not configured.
    pub model: String,
    /// API key.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Request timeout.
    pub timeout_seconds: u64,
    /// Retries on 429/5xx/network errors.
    pub max_retries: u32,
}

/// `budgets.*`: tokens per UTC day, 0 = no limit.
#[derive(Clone, Debug, Deserialize)]
pub struct BudgetsSettings {
    /// All turns together.
    pub daily_tokens: u64,
    /// Per channel.
    pub channel_daily_tokens: u64,
    /// Per sender within a channel.
    pub sender_daily_tokens: u64,
}

/// `model.*`.
#[derive(Clone, Debug, Deserialize)]
pub struct ModelSettings {
    /// Tool rounds per message.
    pub max_tool_iterations: u32,
    /// Tool calls run per model answer; the rest are refused (and audited).
    pub max_tool_calls_per_round: u32,
    /// Total tool wall time of one turn, seconds; then the remaining calls are refused.
    pub max_turn_seconds: u64,
    /// History length per session.
    pub history_messages: u32,
}

/// `store.*`.
#[derive(Clone, Debug, Deserialize)]
pub struct StoreSettings {
    /// Days finished records are kept (de-duplication keys at least 7).
    pub retention_days: u64,
    /// When not 0, minutes finished records are kept, in place of `retention_days`.
    pub retention_minutes: u64,
    /// MiB of the store's page cache (sled's `cache_capacity`): the store's memory bound.
    pub cache_mib: u64,
    /// MiB kept free on the state directory's file system: below it new work is refused (503)
    /// so what was acknowledged can still be written. 0 turns the guard off.
    pub min_free_mib: u64,
    /// Unfinished messages (pending, held, processing) a channel keeps before its webhook
    /// answers 503 + `Retry-After` (nothing is stored; the sender delivers again).
    pub max_pending: u64,
}

impl StoreSettings {
    /// How long finished records are kept: `retention_minutes` when set, else
    /// `retention_days` (at least one day).
    pub fn retention(&self) -> std::time::Duration {
        if self.retention_minutes > 0 {
            std::time::Duration::from_secs(self.retention_minutes.saturating_mul(60))
        } else {
            std::time::Duration::from_secs(self.retention_days.max(1).saturating_mul(86_400))
        }
    }

    /// The retention as `status` states it (`30 days`, `5 minutes`).
    pub fn retention_label(&self) -> String {
        match self.retention_minutes {
            0 => format!("{} days", self.retention_days.max(1)),
            1 => "1 minute".to_string(),
            m => format!("{m} minutes"),
        }
    }
}

/// `fleet.*`: several gateways sharing security state over NATS JetStream (docs/fleet.md).
#[derive(Clone, Debug, Deserialize)]
pub struct FleetSettings {
    /// Off by default: no NATS code runs.
    pub enabled: bool,
    /// The NATS servers (`nats://host:port` or `tls://host:port`).
    pub nats_urls: Vec<String>,
    /// This node's name in the fleet (empty = the host name).
    pub node_id: String,
    /// A NATS token or an nkey seed (`SU…`).
    #[serde(default)]
    pub credentials: Option<Secret>,
    /// The key every node authenticates control messages with (the same on every node):
    /// a message on the control stream without its valid MAC is audited and never applied.
    #[serde(default)]
    pub control_key: Option<Secret>,
    /// A PEM CA file the NATS servers' certificates are checked against (empty = none).
    pub tls_ca_file: String,
    /// Replicas of every stream and bucket (1 or 3).
    pub stream_replicas: u64,
    /// The audit head is anchored after this many records …
    pub anchor_every_records: u64,
    /// … or this many seconds, whichever comes first.
    pub anchor_every_seconds: u64,
}

impl FleetSettings {
    /// `fleet.node_id`, or the host name when it is empty.
    pub fn node_id(&self) -> String {
        let configured = self.node_id.trim();
        if !configured.is_empty() {
            return configured.to_string();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "localhost".to_string())
    }
}

/// `paths.*` (empty = the default under `~/.kafclaw`).
#[derive(Clone, Debug, Deserialize)]
pub struct PathsSettings {
    /// Agent workspace.
    pub workspace: String,
    /// Work repo.
    pub work_repo: String,
}

/// `security.*`.
#[derive(Clone, Debug, Deserialize)]
pub struct SecuritySettings {
    /// Auth-failure lockout.
    pub auth_lockout: LockoutSettings,
    /// Token age that `security check` warns about.
    pub token_max_age_days: u64,
}

/// `security.auth_lockout.*`.
#[derive(Clone, Debug, Deserialize)]
pub struct LockoutSettings {
    /// Failures per IP per window before a lockout.
    pub max_failures: u32,
    /// The counting window.
    pub window_seconds: u64,
    /// Lockout duration.
    pub lockout_seconds: u64,
}

/// `log.*`.
#[derive(Clone, Debug, Deserialize)]
pub struct LogSettings {
    /// tracing filter directives.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Settings {
    /// The workspace directory.
    pub fn workspace(&self, home: &Home) -> PathBuf {
        non_empty_path(&self.paths.workspace).unwrap_or_else(|| home.default_workspace())
    }
    /// The work-repo directory.
    pub fn work_repo(&self, home: &Home) -> PathBuf {
        non_empty_path(&self.paths.work_repo).unwrap_or_else(|| home.default_work_repo())
    }
    /// Where `key`'s value came from.
    pub fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }
    /// The incident monitor's settings (empty strings mean unset).
    pub fn incident_settings(&self) -> Result<kafclaw_actors::incident::IncidentSettings, String> {
        let mut value = self.incidents.clone();
        if let Value::Object(map) = &mut value {
            map.retain(|_, v| v.as_str() != Some(""));
        }
        serde_json::from_value(value).map_err(|e| format!("incidents: {e}"))
    }

    /// True when a model provider is configured.
    pub fn provider_configured(&self) -> bool {
        !self.providers.openai.model.is_empty()
    }
}

fn non_empty_path(s: &str) -> Option<PathBuf> {
    (!s.is_empty()).then(|| PathBuf::from(s))
}

/// Reads every layer and returns validated settings, or the first invalid value.
pub fn load(sources: &Sources<'_>) -> Result<Settings, SettingsError> {
    let mut layers = Layers::default();
    layers.add_tree(&parse_defaults()?, &Origin::Default);

    let config_path = sources.home.config_file();
    let config_file_found = config_path.is_file();
    if config_file_found {
        let text = std::fs::read_to_string(&config_path).map_err(|e| SettingsError::File {
            path: config_path.clone(),
            reason: e.to_string(),
        })?;
        let tree: Value = serde_json::from_str(&text).map_err(|e| SettingsError::File {
            path: config_path.clone(),
            reason: format!("not valid JSON: {e}"),
        })?;
        if !tree.is_object() {
            return Err(SettingsError::File {
                path: config_path,
                reason: "the top level must be a JSON object".into(),
            });
        }
        layers.add_tree(&tree, &Origin::ConfigFile(config_path));
    }

    let env_path = sources.home.env_file();
    let file_env = read_env_file(&env_path, &mut layers.warnings)?;
    secret_files::refuse_both(file_env.iter().map(|(k, _)| k.as_str()))?;
    for (var, value) in &file_env {
        if !sources.env.contains_key(var) {
            layers.add_env(var, value, Origin::EnvFile(env_path.clone(), var.clone()));
        }
    }
    if let Some(dir) = sources.env.get(secret_files::CREDENTIALS_DIRECTORY) {
        for (key, value, origin) in secret_files::credentials(Path::new(dir))? {
            layers.set(&key, Value::from(value), origin);
        }
    }
    secret_files::refuse_both(sources.env.keys().map(String::as_str))?;
    // The vault passphrase is no settings key, but its file follows the same rules.
    secret_files::passphrase(sources.env, "KAFCLAW_VAULT_PASSPHRASE")?;
    let mut process_vars: Vec<_> = sources.env.iter().collect();
    process_vars.sort();
    for (var, value) in process_vars {
        layers.add_env(var, value, Origin::Env(var.clone()));
    }
    if let Some(e) = layers.error.take() {
        return Err(e);
    }

    let flags = sources.flags;
    if let Some(host) = &flags.host {
        layers.set(
            "gateway.host",
            Value::from(host.clone()),
            Origin::Flag("--host"),
        );
    }
    if let Some(port) = flags.port {
        layers.set("gateway.port", Value::from(port), Origin::Flag("--port"));
    }
    if let Some(port) = flags.dashboard_port {
        layers.set(
            "gateway.dashboard_port",
            Value::from(port),
            Origin::Flag("--dashboard-port"),
        );
    }
    if let Some(format) = &flags.log_format {
        layers.set(
            "log.format",
            Value::from(format.clone()),
            Origin::Flag("--log-format"),
        );
    }

    layers.into_settings(config_file_found)
}

fn parse_defaults() -> Result<Value, SettingsError> {
    let built = config::Config::builder()
        .add_source(config::File::from_str(
            DEFAULTS_TOML,
            config::FileFormat::Toml,
        ))
        .build()
        .and_then(|c| c.try_deserialize::<Value>())
        .map_err(|e| SettingsError::File {
            path: PathBuf::from("config/default.toml (built in)"),
            reason: e.to_string(),
        })?;
    Ok(built)
}

/// Parses `KEY=VALUE` lines (`export ` and `#` comments allowed, one pair of quotes stripped).
/// A missing file is empty.
pub fn read_env_file(
    path: &Path,
    warnings: &mut Vec<SettingsWarning>,
) -> Result<Vec<(String, String)>, SettingsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(SettingsError::File {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        match parse_env_line(line) {
            EnvLine::Blank => {}
            EnvLine::Pair(k, v) => out.push((k, v)),
            EnvLine::Bad => warnings.push(SettingsWarning::BadEnvLine {
                path: path.to_path_buf(),
                line: index + 1,
            }),
        }
    }
    Ok(out)
}

/// One line of an env file.
#[derive(Debug, PartialEq, Eq)]
pub enum EnvLine {
    /// Empty or a comment.
    Blank,
    /// `KEY=VALUE`.
    Pair(String, String),
    /// Anything else.
    Bad,
}

/// Parses one env-file line.
pub fn parse_env_line(line: &str) -> EnvLine {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return EnvLine::Blank;
    }
    let body = trimmed
        .strip_prefix("export ")
        .unwrap_or(trimmed)
        .trim_start();
    let Some((key, value)) = body.split_once('=') else {
        return EnvLine::Bad;
    };
    let key = key.trim();
    let valid_key = !key.is_empty()
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !key.as_bytes()[0].is_ascii_digit();
    if !valid_key {
        return EnvLine::Bad;
    }
    let value = value.trim();
    let unquoted = [b'"', b'\'']
        .iter()
        .find_map(|q| {
            let q = *q as char;
            value
                .strip_prefix(q)
                .and_then(|v| v.strip_suffix(q))
                .filter(|_| value.len() >= 2)
        })
        .unwrap_or(value);
    EnvLine::Pair(key.to_string(), unquoted.to_string())
}

/// The flattened layers: dotted key → (value, origin); later layers replace earlier ones.
#[derive(Default)]
struct Layers {
    values: BTreeMap<String, (Value, Origin)>,
    warnings: Vec<SettingsWarning>,
    /// The first refused secret file (reported after the layer is read).
    error: Option<SettingsError>,
}

impl Layers {
    fn add_tree(&mut self, tree: &Value, origin: &Origin) {
        let mut flat = Vec::new();
        flatten("", tree, &mut flat);
        for (key, value) in flat {
            if keys::lookup(&key).is_some() {
                self.set(&key, value, origin.clone());
            } else if keys::alias(&key).is_some() {
                self.set_alias(&key, value, origin.clone());
            } else {
                let suggestion =
                    keys::nearest(&key, keys::KEYS.iter().map(|s| s.key)).map(String::from);
                self.warnings.push(SettingsWarning::UnknownKey {
                    key,
                    origin: origin.clone(),
                    suggestion,
                });
            }
        }
    }

    fn add_env(&mut self, var: &str, value: &str, origin: Origin) {
        if !var.starts_with("KAFCLAW_") || keys::SPECIAL_ENV.contains(&var) {
            return;
        }
        let alias = keys::ALIASES
            .iter()
            .find(|(from, _, _)| keys::env_name(from) == var);
        if let Some((from, _, _)) = alias {
            self.set_alias(from, Value::from(value), origin);
            return;
        }
        match keys::key_for_env(var) {
            Some(key) => self.set(&key, Value::from(value), origin),
            None if secret_files::secret_key_of_file_var(var).is_some() => {
                let Some(key) = secret_files::secret_key_of_file_var(var) else {
                    return;
                };
                match secret_files::read(var, Path::new(value)) {
                    Ok(secret) => self.set(
                        &key,
                        Value::from(secret),
                        Origin::SecretFile(var.to_string(), PathBuf::from(value)),
                    ),
                    Err(e) => {
                        self.error.get_or_insert(e);
                    }
                }
            }
            None => {
                let names: Vec<String> = keys::KEYS
                    .iter()
                    .filter(|s| !s.key.contains('*'))
                    .map(|s| keys::env_name(s.key))
                    .collect();
                let suggestion =
                    keys::nearest(var, names.iter().map(String::as_str)).map(String::from);
                self.warnings.push(SettingsWarning::UnknownEnv {
                    var: var.to_string(),
                    origin,
                    suggestion,
                });
            }
        }
    }

    fn set(&mut self, key: &str, value: Value, origin: Origin) {
        self.values.insert(key.to_string(), (value, origin));
    }

    /// Sets the key an alias stands for; a value that is not a duration is kept as it is, so
    /// the key's own check names the problem.
    fn set_alias(&mut self, alias: &str, value: Value, origin: Origin) {
        let Some((key, unit)) = keys::alias(alias) else {
            return;
        };
        let converted = keys::alias_value(&value, unit).unwrap_or(value);
        self.set(key, converted, origin);
    }

    fn into_settings(self, config_file_found: bool) -> Result<Settings, SettingsError> {
        let mut tree = Value::Object(Map::new());
        let mut public = Value::Object(Map::new());
        let mut origins = BTreeMap::new();
        let mut warnings = self.warnings;
        for (key, (raw, origin)) in self.values {
            let Some(spec) = keys::lookup(&key) else {
                continue;
            };
            let checked = match check(spec.kind, &raw) {
                Ok(v) => v,
                Err(problem) => {
                    return Err(SettingsError::Invalid {
                        key,
                        origin,
                        problem,
                    })
                }
            };
            if spec.kind == Kind::Secret && checked.as_str() == Some("") {
                if origin != Origin::Default {
                    warnings.push(SettingsWarning::EmptySecret {
                        key: key.clone(),
                        origin,
                    });
                }
                continue;
            }
            if spec.kind != Kind::Secret {
                insert_path(&mut public, &key, checked.clone());
            }
            insert_path(&mut tree, &key, checked);
            origins.insert(key, origin);
        }
        let mut settings: Settings =
            serde_json::from_value(tree).map_err(|e| SettingsError::Invalid {
                key: "(settings)".into(),
                origin: Origin::Default,
                problem: e.to_string(),
            })?;
        settings.origins = origins;
        settings.warnings = warnings;
        settings.config_file_found = config_file_found;
        settings.tree = public;
        Ok(settings)
    }
}

/// `prefix.key`, or `key` at the top.
fn child_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Flattens a JSON tree into `(dotted key, leaf)` pairs.
pub fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) if !map.is_empty() || prefix.is_empty() => {
            for (k, v) in map {
                flatten(&child_key(prefix, k), v, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

fn insert_path(tree: &mut Value, key: &str, value: Value) {
    let mut node = tree;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let Value::Object(map) = node else { return };
        if parts.peek().is_none() {
            map.insert(part.to_string(), value);
            return;
        }
        node = map
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

/// Checks and converts one value; the error says what is allowed (never the secret itself).
fn check(kind: Kind, raw: &Value) -> Result<Value, String> {
    let text = match raw {
        Value::String(s) => Some(s.trim().to_string()),
        _ => None,
    };
    match kind {
        Kind::Str => match raw {
            Value::String(_) => Ok(raw.clone()),
            _ => Err("expected a string".into()),
        },
        Kind::Secret => match raw {
            Value::String(_) => Ok(raw.clone()),
            _ => Err("expected a string (value not shown)".into()),
        },
        Kind::Bool => match (raw, text.as_deref()) {
            (Value::Bool(b), _) => Ok(Value::Bool(*b)),
            (_, Some("true")) => Ok(Value::Bool(true)),
            (_, Some("false")) => Ok(Value::Bool(false)),
            _ => Err(format!(
                "{} is not a boolean; allowed: true, false",
                show(raw)
            )),
        },
        Kind::Port => {
            let allowed = "a port number 0-65535 (0 = any free port)";
            uint(raw, text.as_deref())
                .filter(|n| *n <= 65_535)
                .map(Value::from)
                .ok_or_else(|| format!("{} is not {allowed}", show(raw)))
        }
        Kind::UInt { min, max } => uint(raw, text.as_deref())
            .filter(|n| (min..=max).contains(n))
            .map(Value::from)
            .ok_or_else(|| format!("{} is not an integer {min}-{max}", show(raw))),
        Kind::UIntOneOf(allowed) => uint(raw, text.as_deref())
            .filter(|n| allowed.contains(n))
            .map(Value::from)
            .ok_or_else(|| {
                let words: Vec<String> = allowed.iter().map(u64::to_string).collect();
                format!(
                    "{} is not allowed; allowed: {}",
                    show(raw),
                    words.join(", ")
                )
            }),
        Kind::List => match raw {
            Value::Array(items) if items.iter().all(Value::is_string) => Ok(raw.clone()),
            Value::String(s) => Ok(Value::from(
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect::<Vec<_>>(),
            )),
            _ => Err("expected a list of strings (comma-separated in the environment)".into()),
        },
        Kind::HostList => check_each(check(Kind::List, raw)?, |e| {
            crate::http::host::HostPattern::parse(e).map(|_| ())
        }),
        Kind::CidrList => check_each(check(Kind::List, raw)?, |e| {
            crate::http::client::parse_cidr(e).map(|_| ())
        }),
        Kind::OneOf(words) => match text.as_deref() {
            Some(w) if words.contains(&w) => Ok(Value::from(w)),
            _ => Err(format!(
                "{} is not allowed; allowed: {}",
                show(raw),
                words.join(", ")
            )),
        },
        Kind::Float => {
            let n = match raw {
                Value::Number(n) => n.as_f64(),
                _ => text.as_deref().and_then(|t| t.parse::<f64>().ok()),
            };
            n.filter(|n| n.is_finite() && *n > 0.0)
                .map(Value::from)
                .ok_or_else(|| format!("{} is not a positive number", show(raw)))
        }
        Kind::Url => match text.as_deref() {
            Some("") => Ok(Value::from("")),
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
                Ok(Value::from(u.trim_end_matches('/')))
            }
            _ => Err(format!("{} is not an http:// or https:// URL", show(raw))),
        },
    }
}

/// Checks every entry of a list already checked as `Kind::List`.
fn check_each(list: Value, entry: impl Fn(&str) -> Result<(), String>) -> Result<Value, String> {
    if let Value::Array(items) = &list {
        for item in items.iter().filter_map(Value::as_str) {
            entry(item)?;
        }
    }
    Ok(list)
}

fn uint(raw: &Value, text: Option<&str>) -> Option<u64> {
    match raw {
        Value::Number(n) => n.as_u64(),
        _ => text.and_then(|t| t.parse::<u64>().ok()),
    }
}

fn show(raw: &Value) -> String {
    let s = match raw {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    if s.len() > 40 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(40).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}
