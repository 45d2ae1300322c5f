//! Opening the trust core shared by the gateway and the offline operator commands: the store,
//! the vault (and through it the audit key and the token-hash key), the token registry, and
//! the resolution of secret settings (process env > vault > config file).
//!
//! Must not: bind a socket or start an actor system (callers do that).

use std::collections::HashMap;

use kafclaw_actors::audit::AuditKey;
use kafclaw_actors::paths::Home;
use kafclaw_actors::store::StoreDb;
use kafclaw_actors::token::{TokenHashKey, TokenRegistry};
use kafclaw_actors::vault::{self, SecretValue, Vault, AUDIT_KEY_NAME};

use crate::secret::Secret;
use crate::settings::{Origin, Settings};

/// The vault name of the key that turns tokens into their stored keyed hashes.
pub const TOKEN_HASH_KEY_NAME: &str = "kafclaw.token_hash_key";

/// The vault name of the key that signs incident webhook notifications.
pub const INCIDENT_WEBHOOK_KEY_NAME: &str = "kafclaw.incident_webhook_key";

/// The environment variable holding the vault passphrase (process environment only: an env
/// file would sit on the same disk as the key it protects).
pub const PASSPHRASE_ENV: &str = "KAFCLAW_VAULT_PASSPHRASE";

/// Secret settings that the vault may hold, by their settings key (also their vault name).
pub const VAULT_SECRET_KEYS: &[&str] = &[
    "gateway.auth_token",
    "providers.openai.api_key",
    "channels.whatsapp.verify_token",
    "channels.whatsapp.app_secret",
    "channels.whatsapp.access_token",
    "fleet.credentials",
    "fleet.control_key",
];

/// The opened core.
pub struct Core {
    /// The store.
    pub db: StoreDb,
    /// The vault (hand it to the first `SecretVault` instance).
    pub vault: Vault,
    /// The audit chain key (from the vault).
    pub audit_key: AuditKey,
    /// Tokens (keyed hashes), with the runbook's admin token loaded as the static admin.
    pub tokens: TokenRegistry,
    /// The key that signs incident notifications (from the vault).
    pub webhook_key: [u8; 32],
}

/// Why the core could not be opened (one line, for stderr; exit 2).
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The store is locked by a running gateway.
    #[error("{0} (is a kafclaw gateway running with this home?)")]
    Store(String),
    /// The vault could not be opened.
    #[error("{0}")]
    Vault(String),
    /// The token registry could not be loaded.
    #[error("cannot load the token table: {0}")]
    Tokens(String),
}

/// The vault passphrase from the process environment, if any.
pub fn passphrase(env: &HashMap<String, String>) -> Option<SecretValue> {
    // A refused file already stopped `settings::load`; here it only reads.
    crate::settings::secret_files::passphrase(env, PASSPHRASE_ENV)
        .ok()
        .flatten()
        .filter(|p| !p.is_empty())
        .map(|p| SecretValue::from(p.as_str()))
}

/// Opens the store, the vault and the token registry, and resolves secret settings.
pub fn open(
    home: &Home,
    settings: &mut Settings,
    env: &HashMap<String, String>,
) -> Result<Core, CoreError> {
    home.ensure_state_dirs()
        .map_err(|e| CoreError::Store(format!("cannot create the state directories: {e}")))?;
    let cache_bytes = settings.store.cache_mib.saturating_mul(1024 * 1024);
    let db = StoreDb::open_with_cache(&home.store_dir(), cache_bytes)
        .map_err(|e| CoreError::Store(e.to_string()))?;
    let (vault, warnings) = Vault::open_or_create(home, &db, passphrase(env))
        .map_err(|e| CoreError::Vault(e.to_string()))?;
    vault::log_warnings(&warnings);
    resolve_secrets(settings, &vault)?;
    let audit_key = key32(&vault, AUDIT_KEY_NAME).map(AuditKey::from_bytes)?;
    let token_key = key32(&vault, TOKEN_HASH_KEY_NAME).map(TokenHashKey::from_bytes)?;
    let webhook_key = key32(&vault, INCIDENT_WEBHOOK_KEY_NAME)?;
    let tokens =
        TokenRegistry::open(&db, token_key).map_err(|e| CoreError::Tokens(e.to_string()))?;
    tokens.set_static_admin(settings.gateway.auth_token.as_ref().map(Secret::expose));
    Ok(Core {
        db,
        vault,
        audit_key,
        tokens,
        webhook_key,
    })
}

fn key32(vault: &Vault, name: &str) -> Result<[u8; 32], CoreError> {
    let value = vault
        .get_or_create_random(name, 32)
        .map_err(|e| CoreError::Vault(e.to_string()))?;
    value
        .expose()
        .try_into()
        .map_err(|_| CoreError::Vault(format!("vault entry {name} is not 32 bytes")))
}

/// Process env (and the env file, and flags) > vault > config file: a vault value replaces a
/// secret that came from config.json or is unset, never one set in the environment.
pub fn resolve_secrets(settings: &mut Settings, vault: &Vault) -> Result<(), CoreError> {
    let bridge_keys: Vec<String> = settings.channels["bridges"]
        .as_object()
        .map(|b| {
            b.keys()
                .map(|name| format!("channels.bridges.{name}.secret"))
                .collect()
        })
        .unwrap_or_default();
    let keys = VAULT_SECRET_KEYS
        .iter()
        .map(|k| k.to_string())
        .chain(bridge_keys);
    for key in keys {
        let key = key.as_str();
        let from_env = settings.origin(key).is_environment();
        if from_env {
            continue;
        }
        let Some(value) = vault
            .get(key)
            .map_err(|e| CoreError::Vault(e.to_string()))?
        else {
            continue;
        };
        let Some(text) = value.expose_str() else {
            tracing::warn!(secret = key, "vault value is not UTF-8; ignored");
            continue;
        };
        let secret = Secret::new(text);
        match key {
            "gateway.auth_token" => settings.gateway.auth_token = Some(secret),
            "providers.openai.api_key" => settings.providers.openai.api_key = Some(secret),
            "fleet.credentials" => settings.fleet.credentials = Some(secret),
            "fleet.control_key" => settings.fleet.control_key = Some(secret),
            other => {
                // Channel secrets stay in the JSON slice until the channels consume them.
                let path: Vec<&str> = other.split('.').skip(1).collect();
                if !settings.channels.is_object() {
                    settings.channels = serde_json::json!({});
                }
                let mut node = &mut settings.channels;
                for part in &path[..path.len().saturating_sub(1)] {
                    if !node[*part].is_object() {
                        node[*part] = serde_json::json!({});
                    }
                    node = &mut node[*part];
                }
                if let Some(field) = path.last() {
                    node[*field] = serde_json::Value::from(text);
                }
            }
        }
        settings.origins.insert(key.to_string(), Origin::Vault);
    }
    Ok(())
}
