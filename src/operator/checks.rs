//! The checks behind `kafclaw doctor`, `kafclaw security …` and `kafclaw backup verify`: one
//! file per area (file modes, bind and token, workspace isolation, plaintext secrets, channels,
//! tool policy, backups) and the report they write into.
//!
//! Owns: reading the home's files and settings and judging them; the small repairs that
//! `doctor --fix` and `security fix --yes` make (each returns a description of what changed).
//! Must not: print a secret value (names and places only), or open the store or the vault
//! while a gateway holds them (sled allows one process per store; see [`TrustState`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use kafclaw_actors::paths::Home;
use kafclaw_actors::store::StoreDb;
use kafclaw_actors::vault::{SecretInfo, Vault};

use crate::protocol::{self, Operation};
use crate::settings::{self, Settings, SettingsError};

pub mod backup;
pub mod bind;
pub mod channels;
pub mod files;
pub mod hard_links;
pub mod isolation;
pub mod report;
pub mod secrets;
pub mod skills;
pub mod tls;
pub mod tools;

#[cfg(test)]
mod tests;

pub use report::{Report, Status};

/// One repair: `Ok(what changed)` or `Err(what could not be changed, and why)`.
pub type Change = Result<String, String>;

/// Loads settings for an operator command (no flags: these commands take none that override).
pub fn load_settings(
    home: &Home,
    env: &HashMap<String, String>,
) -> Result<Settings, SettingsError> {
    settings::load(&settings::Sources {
        home,
        env,
        flags: &settings::FlagOverrides::default(),
    })
}

/// The built-in defaults alone (to compare the configured tool policy with).
pub fn default_settings() -> Option<Settings> {
    let empty = HashMap::new();
    let nowhere = Home::new("/nonexistent/kafclaw-defaults");
    load_settings(&nowhere, &empty).ok()
}

/// True when a gateway answers on `~/.kafclaw/control.sock` (it then holds the store).
pub fn gateway_running(home: &Home) -> bool {
    std::os::unix::net::UnixStream::connect(protocol::socket_path(home)).is_ok()
}

/// True when a gateway runs with `home`, or another process holds its store: a gateway opens
/// the store (sled's exclusive `flock` on `timeline.db/db`) well before its control socket
/// answers, and a command that changes the home in that window (a restore moving the store
/// away under it) would lose what the gateway writes. Asked before a repair or a restore.
pub fn home_in_use(home: &Home) -> bool {
    gateway_running(home) || store_locked(home)
}

/// Whether another open file holds the store's lock (probed, never kept).
fn store_locked(home: &Home) -> bool {
    let Ok(file) = std::fs::File::open(home.store_dir().join("db")) else {
        return false;
    };
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {
            let _ = rustix::fs::flock(&file, rustix::fs::FlockOperation::Unlock);
            false
        }
        Err(e) => e == rustix::io::Errno::WOULDBLOCK,
    }
}

/// The store and the vault as an operator command sees them.
///
/// While a gateway runs it holds the store (sled is single-process): nothing is opened, and
/// the vault's secret names and times are asked over the control socket instead.
pub struct TrustState {
    /// A gateway answers on the control socket.
    pub running: bool,
    /// The store, when opened here.
    pub db: Option<StoreDb>,
    /// Why the store was not opened (None when opened, or when the gateway runs).
    pub store_error: Option<String>,
    /// The vault, when opened here.
    pub vault: Option<Vault>,
    /// Why the vault was not opened.
    pub vault_error: Option<String>,
    /// The vault was not opened because it does not exist yet (no key file, no secrets).
    pub vault_absent: bool,
    /// Names and times of every secret (from the vault here or the running gateway).
    pub secrets: Option<Vec<SecretInfo>>,
    /// Whether an issued token is neither revoked nor expired (from the store here or the
    /// running gateway); `None` when unknown.
    pub tokens_active: Option<bool>,
}

/// How [`TrustState::open`] treats a home where nothing exists yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Create {
    /// Read-only checks: a missing store or key file is reported, not created.
    No,
    /// Repairs: create the state directories, the store and the vault key as the gateway would.
    Yes,
}

impl TrustState {
    /// Opens the store and the vault of `home` (or asks the running gateway for secret names).
    pub fn open(home: &Home, env: &HashMap<String, String>, create: Create) -> TrustState {
        let mut state = TrustState {
            running: gateway_running(home),
            db: None,
            store_error: None,
            vault: None,
            vault_error: None,
            vault_absent: false,
            secrets: None,
            tokens_active: None,
        };
        if state.running {
            if let Ok(Some(protocol::Answer::Ok(list))) =
                protocol::send(home, &Operation::TokenList)
            {
                let now = time::OffsetDateTime::now_utc();
                let live = |at: &Value| {
                    at.as_str()
                        .and_then(kafclaw_actors::clock::parse_rfc3339)
                        .is_none_or(|t| t > now)
                };
                state.tokens_active = list.as_array().map(|tokens| {
                    tokens
                        .iter()
                        .any(|t| live(&t["revoked_at"]) && live(&t["expires_at"]))
                });
            }
            if let Ok(Some(protocol::Answer::Ok(list))) =
                protocol::send(home, &Operation::SecretList)
            {
                state.secrets = serde_json::from_value::<Vec<SecretListEntry>>(list)
                    .ok()
                    .map(|l| l.into_iter().map(SecretListEntry::into_info).collect());
            }
            return state;
        }
        if create == Create::No && !home.store_dir().exists() {
            state.store_error =
                Some("not created yet (the gateway creates it on first start)".into());
            return state;
        }
        if create == Create::Yes {
            if let Err(e) = home.ensure_state_dirs() {
                state.store_error = Some(format!("cannot create the state directories: {e}"));
                return state;
            }
        }
        let db = match StoreDb::open(&home.store_dir()) {
            Ok(db) => db,
            Err(e) => {
                state.store_error = Some(e.to_string());
                return state;
            }
        };
        let passphrase = crate::core::passphrase(env);
        let opened = match create {
            Create::Yes => Vault::open_or_create(home, &db, passphrase),
            Create::No => Vault::open_existing(home, &db, passphrase),
        };
        match opened {
            Ok((vault, warnings)) => {
                kafclaw_actors::vault::log_warnings(&warnings);
                state.secrets = vault.list().ok();
                state.tokens_active = tokens_active(&db, &vault);
                state.vault = Some(vault);
            }
            Err(e) => {
                state.vault_absent =
                    matches!(e, kafclaw_actors::vault::VaultError::KeyFileMissing { .. });
                state.vault_error = Some(e.to_string());
            }
        }
        state.db = Some(db);
        state
    }

    /// The `updated` time of secret `name`, if the vault holds it.
    pub fn secret_updated(&self, name: &str) -> Option<&str> {
        self.secrets
            .as_ref()?
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.updated.as_str())
    }

    /// True when the vault holds `name`.
    pub fn has_secret(&self, name: &str) -> bool {
        self.secret_updated(name).is_some()
    }
}

/// Whether an issued token is active, read from the store (`None` when the token key is not
/// in the vault yet: then no token was ever issued here, or it cannot be told).
fn tokens_active(db: &StoreDb, vault: &Vault) -> Option<bool> {
    let key = vault.get(crate::core::TOKEN_HASH_KEY_NAME).ok()??;
    let key: [u8; 32] = key.expose().try_into().ok()?;
    let key = kafclaw_actors::token::TokenHashKey::from_bytes(key);
    let registry = kafclaw_actors::token::TokenRegistry::open(db, key).ok()?;
    // No static admin is loaded here: only issued tokens count.
    Some(registry.has_active_tokens(time::OffsetDateTime::now_utc()))
}

/// One entry of the `secrets list` answer of a running gateway.
#[derive(serde::Deserialize)]
struct SecretListEntry {
    name: String,
    created: String,
    updated: String,
    #[serde(default)]
    internal: bool,
}

impl SecretListEntry {
    fn into_info(self) -> SecretInfo {
        SecretInfo {
            name: self.name,
            created: self.created,
            updated: self.updated,
            internal: self.internal,
        }
    }
}

/// `path` relative to the KafClaw root (`.kafclaw/config.json`), or absolute when outside it.
pub fn shown(home: &Home, path: &Path) -> String {
    path.strip_prefix(home.root())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.display().to_string())
}

/// Reads `~/.kafclaw/config.json` as a JSON object (None when absent or not an object).
pub fn read_config_json(home: &Home) -> Option<serde_json::Map<String, Value>> {
    let text = std::fs::read_to_string(home.config_file()).ok()?;
    match serde_json::from_str(&text).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Writes `~/.kafclaw/config.json` atomically (0600), pretty-printed, keeping every key.
pub fn write_config_json(
    home: &Home,
    config: &serde_json::Map<String, Value>,
) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(config).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    kafclaw_actors::fsutil::write_atomic(&home.config_file(), &bytes)
}

/// The value at a dotted path of a JSON tree.
pub fn at<'a>(tree: &'a Value, key: &str) -> &'a Value {
    key.split('.').fold(tree, |node, part| &node[part])
}

/// A path made absolute against the current directory and cleaned of `.` and `..` (symlinks
/// resolved as far as the path exists).
pub fn resolve(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    // Canonicalize the longest existing prefix, then append the rest lexically.
    let mut existing = absolute.clone();
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = existing.canonicalize() {
            let mut out = canonical;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return lexical_clean(&out);
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => return lexical_clean(&absolute),
        }
    }
}

fn lexical_clean(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// True when a variable holds a credential: a settings key of kind secret, or any other name
/// containing TOKEN, SECRET, PASSWORD, API_KEY, ACCESS_KEY, PRIVATE_KEY or CLIENT_SECRET
/// (`KAFCLAW_SECURITY_TOKEN_MAX_AGE_DAYS` is a number, not a credential).
pub fn sensitive_var(var: &str) -> bool {
    use crate::settings::keys;
    use crate::settings::secret_files;
    // `NAME_FILE` holds the path of a secret file, not the secret.
    if secret_files::secret_key_of_file_var(var).is_some()
        || var == secret_files::PASSPHRASE_FILE_ENV
    {
        return false;
    }
    if let Some(key) = keys::key_for_env(var) {
        return keys::lookup(&key).is_some_and(|s| s.kind == keys::Kind::Secret);
    }
    sensitive_name(var)
}

/// The vault name a sensitive variable moves to: its settings key when it names one
/// (`KAFCLAW_GATEWAY_AUTH_TOKEN` → `gateway.auth_token`), else the variable's name.
pub fn vault_name_for(var: &str) -> String {
    crate::settings::keys::key_for_env(var).unwrap_or_else(|| var.to_string())
}

/// True when a name contains one of the credential markers.
pub fn sensitive_name(var: &str) -> bool {
    const MARKERS: &[&str] = &[
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "API_KEY",
        "ACCESS_KEY",
        "PRIVATE_KEY",
        "CLIENT_SECRET",
    ];
    let upper = var.to_ascii_uppercase();
    MARKERS.iter().any(|m| upper.contains(m))
}

/// The actor named in audit records written by operator commands.
pub fn cli_actor() -> String {
    format!("cli:uid={}", rustix::process::geteuid().as_raw())
}
