//! The [`SecretVault`] actor: the gateway's single owner of the [`Vault`].
//!
//! Owns: the messages other actors and the gateway send to the vault. Every operation's file,
//! store and crypto work (fsyncs of the store and the key file) runs on the blocking pool, never
//! on the actor thread the vault shares with other children; each answer is an atomic response,
//! so the vault handles one message at a time, in arrival order, exactly as inline handlers did.
//! A blocking task that panics stops the actor, and the supervisor reopens the vault afresh.
//! Must not: log a value (only names and key ids), or hand out the [`Vault`] itself.

use std::sync::{Arc, Mutex, PoisonError};

use actix::prelude::*;

use super::{KeyRotation, SecretInfo, SecretValue, Vault, VaultError, VaultWarning, VerifyReport};
use crate::paths::Home;
use crate::store::StoreDb;
use crate::supervisor::{Factory, Ping, Pong};

/// The supervised owner of the vault (permanent child of the supervisor).
pub struct SecretVault {
    /// The open vault: key in memory, secrets in the store. Shared only with the one blocking
    /// task running the current message (atomic responses: never two at once).
    vault: Arc<Mutex<Vault>>,
}

impl SecretVault {
    /// An actor over an open vault.
    pub fn new(vault: Vault) -> Self {
        Self {
            vault: Arc::new(Mutex::new(vault)),
        }
    }

    /// Runs `work` on the vault on the blocking pool; the actor takes no other message until
    /// it is done.
    fn blocking<T, F>(&self, work: F) -> AtomicResponse<Self, Result<T, VaultError>>
    where
        T: Send + 'static,
        F: FnOnce(&mut Vault) -> Result<T, VaultError> + Send + 'static,
    {
        let vault = Arc::clone(&self.vault);
        let task = tokio::task::spawn_blocking(move || {
            let mut vault = vault.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut vault)
        });
        AtomicResponse::new(Box::pin(task.into_actor(self).map(
            |joined, _, ctx: &mut Context<Self>| {
                joined.unwrap_or_else(|_| {
                    // Fail closed: a panicked operation may have left the vault half-changed
                    // in memory; the supervisor reopens it from disk.
                    ctx.stop();
                    Err(VaultError::Internal {
                        reason: "a vault operation failed unexpectedly".into(),
                    })
                })
            },
        )))
    }

    /// A supervisor factory: every (re)start opens the vault afresh from `home` and `db`
    /// (creating the key file only when the store holds no secrets) and logs the warnings.
    pub fn factory(home: Home, db: StoreDb, passphrase: Option<SecretValue>) -> Factory<Self> {
        Box::new(move || {
            let (vault, warnings) =
                Vault::open_or_create(&home, &db, passphrase.clone()).map_err(|e| e.to_string())?;
            log_warnings(&warnings);
            Ok(SecretVault::new(vault))
        })
    }
}

/// Logs vault warnings (paths and modes only).
pub fn log_warnings(warnings: &[VaultWarning]) {
    for warning in warnings {
        tracing::warn!(target: "kafclaw::vault", "{warning}");
    }
}

impl Actor for SecretVault {
    type Context = Context<Self>;
}

impl Handler<Ping> for SecretVault {
    type Result = Pong;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Pong {
        Pong
    }
}

#[cfg(any(test, feature = "test-hooks"))]
impl Handler<crate::supervisor::InjectPanic> for SecretVault {
    type Result = ();
    fn handle(&mut self, msg: crate::supervisor::InjectPanic, _: &mut Context<Self>) {
        panic!("injected panic: {}", msg.0);
    }
}

/// Sets a secret from the operator's path (`secrets set`, the admin API): reserved `kafclaw.`
/// names are refused.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), VaultError>")]
pub struct SetSecret {
    /// The secret's name (`[A-Za-z0-9_.:-]{1,128}`).
    pub name: String,
    /// The value to seal.
    pub value: SecretValue,
}

impl Handler<SetSecret> for SecretVault {
    type Result = AtomicResponse<Self, Result<(), VaultError>>;
    fn handle(&mut self, msg: SetSecret, _: &mut Context<Self>) -> Self::Result {
        self.blocking(move |v| v.set_user(&msg.name, msg.value))
    }
}

/// Reads a secret; `None` when it does not exist.
#[derive(Message, Debug)]
#[rtype(result = "Result<Option<SecretValue>, VaultError>")]
pub struct GetSecret {
    /// The secret's name.
    pub name: String,
}

impl Handler<GetSecret> for SecretVault {
    type Result = AtomicResponse<Self, Result<Option<SecretValue>, VaultError>>;
    fn handle(&mut self, msg: GetSecret, _: &mut Context<Self>) -> Self::Result {
        self.blocking(move |v| v.get(&msg.name))
    }
}

/// Removes a secret from the operator's path: reserved `kafclaw.` names are refused.
/// Answers whether it existed.
#[derive(Message, Debug)]
#[rtype(result = "Result<bool, VaultError>")]
pub struct RemoveSecret {
    /// The secret's name.
    pub name: String,
}

impl Handler<RemoveSecret> for SecretVault {
    type Result = AtomicResponse<Self, Result<bool, VaultError>>;
    fn handle(&mut self, msg: RemoveSecret, _: &mut Context<Self>) -> Self::Result {
        self.blocking(move |v| v.remove_user(&msg.name))
    }
}

/// Lists every secret's name and timestamps (never a value).
#[derive(Message, Debug)]
#[rtype(result = "Result<Vec<SecretInfo>, VaultError>")]
pub struct ListSecrets;

impl Handler<ListSecrets> for SecretVault {
    type Result = AtomicResponse<Self, Result<Vec<SecretInfo>, VaultError>>;
    fn handle(&mut self, _: ListSecrets, _: &mut Context<Self>) -> Self::Result {
        self.blocking(|v| v.list())
    }
}

/// Rotates the vault key crash-safely, resealing every secret.
#[derive(Message, Debug)]
#[rtype(result = "Result<KeyRotation, VaultError>")]
pub struct RotateKey;

impl Handler<RotateKey> for SecretVault {
    type Result = AtomicResponse<Self, Result<KeyRotation, VaultError>>;
    fn handle(&mut self, _: RotateKey, _: &mut Context<Self>) -> Self::Result {
        self.blocking(|v| {
            let rotation = v.rotate_key()?;
            tracing::info!(
                target: "kafclaw::vault",
                old_key_id = %rotation.old_key_id,
                new_key_id = %rotation.new_key_id,
                resealed = rotation.resealed,
                "vault key rotated"
            );
            Ok(rotation)
        })
    }
}

/// Imports several secrets atomically (all or nothing), e.g. from the operator's env file.
/// Answers how many were written.
#[derive(Message, Debug)]
#[rtype(result = "Result<usize, VaultError>")]
pub struct ImportSecrets {
    /// Name and value pairs; reserved, invalid or duplicate names refuse the whole batch.
    pub entries: Vec<(String, SecretValue)>,
}

impl Handler<ImportSecrets> for SecretVault {
    type Result = AtomicResponse<Self, Result<usize, VaultError>>;
    fn handle(&mut self, msg: ImportSecrets, _: &mut Context<Self>) -> Self::Result {
        self.blocking(move |v| v.import(msg.entries))
    }
}

/// Reads a secret, creating it from random bytes first when absent (the audit key, the
/// token-hash key).
#[derive(Message, Debug)]
#[rtype(result = "Result<SecretValue, VaultError>")]
pub struct GetOrCreateRandom {
    /// The secret's name (usually a reserved `kafclaw.` name).
    pub name: String,
    /// How many random bytes a new value gets (1 to 1024).
    pub len: usize,
}

impl Handler<GetOrCreateRandom> for SecretVault {
    type Result = AtomicResponse<Self, Result<SecretValue, VaultError>>;
    fn handle(&mut self, msg: GetOrCreateRandom, _: &mut Context<Self>) -> Self::Result {
        self.blocking(move |v| v.get_or_create_random(&msg.name, msg.len))
    }
}

/// Opens every secret and reports each outcome by name (`security audit --deep`).
#[derive(Message, Debug)]
#[rtype(result = "Result<VerifyReport, VaultError>")]
pub struct VerifySecrets;

impl Handler<VerifySecrets> for SecretVault {
    type Result = AtomicResponse<Self, Result<VerifyReport, VaultError>>;
    fn handle(&mut self, _: VerifySecrets, _: &mut Context<Self>) -> Self::Result {
        self.blocking(|v| v.verify_all())
    }
}

/// Test-only: runs a closure on the vault the way every operation runs (on the blocking pool,
/// one at a time), so tests can hold an operation open or make it panic.
#[cfg(test)]
pub(crate) struct WithVault(pub Box<dyn FnOnce(&mut Vault) -> bool + Send>);

#[cfg(test)]
impl Message for WithVault {
    type Result = Result<bool, VaultError>;
}

#[cfg(test)]
impl Handler<WithVault> for SecretVault {
    type Result = AtomicResponse<Self, Result<bool, VaultError>>;
    fn handle(&mut self, msg: WithVault, _: &mut Context<Self>) -> Self::Result {
        self.blocking(move |v| Ok((msg.0)(v)))
    }
}
