//! The [`SecretVault`] actor: the gateway's single owner of the [`Vault`].
//!
//! Owns: the messages other actors and the gateway send to the vault. The operations are small,
//! so their file, store and crypto work runs inline in the handlers.
//! Must not: log a value (only names and key ids), or hand out the [`Vault`] itself.

use actix::prelude::*;

use super::{KeyRotation, SecretInfo, SecretValue, Vault, VaultError, VaultWarning, VerifyReport};
use crate::paths::Home;
use crate::store::StoreDb;
use crate::supervisor::{Factory, Ping, Pong};

/// The supervised owner of the vault (permanent child of the supervisor).
pub struct SecretVault {
    /// The open vault: key in memory, secrets in the store.
    vault: Vault,
}

impl SecretVault {
    /// An actor over an open vault.
    pub fn new(vault: Vault) -> Self {
        Self { vault }
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
    type Result = Result<(), VaultError>;
    fn handle(&mut self, msg: SetSecret, _: &mut Context<Self>) -> Self::Result {
        self.vault.set_user(&msg.name, msg.value)
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
    type Result = Result<Option<SecretValue>, VaultError>;
    fn handle(&mut self, msg: GetSecret, _: &mut Context<Self>) -> Self::Result {
        self.vault.get(&msg.name)
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
    type Result = Result<bool, VaultError>;
    fn handle(&mut self, msg: RemoveSecret, _: &mut Context<Self>) -> Self::Result {
        self.vault.remove_user(&msg.name)
    }
}

/// Lists every secret's name and timestamps (never a value).
#[derive(Message, Debug)]
#[rtype(result = "Result<Vec<SecretInfo>, VaultError>")]
pub struct ListSecrets;

impl Handler<ListSecrets> for SecretVault {
    type Result = Result<Vec<SecretInfo>, VaultError>;
    fn handle(&mut self, _: ListSecrets, _: &mut Context<Self>) -> Self::Result {
        self.vault.list()
    }
}

/// Rotates the vault key crash-safely, resealing every secret.
#[derive(Message, Debug)]
#[rtype(result = "Result<KeyRotation, VaultError>")]
pub struct RotateKey;

impl Handler<RotateKey> for SecretVault {
    type Result = Result<KeyRotation, VaultError>;
    fn handle(&mut self, _: RotateKey, _: &mut Context<Self>) -> Self::Result {
        let rotation = self.vault.rotate_key()?;
        tracing::info!(
            target: "kafclaw::vault",
            old_key_id = %rotation.old_key_id,
            new_key_id = %rotation.new_key_id,
            resealed = rotation.resealed,
            "vault key rotated"
        );
        Ok(rotation)
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
    type Result = Result<usize, VaultError>;
    fn handle(&mut self, msg: ImportSecrets, _: &mut Context<Self>) -> Self::Result {
        self.vault.import(msg.entries)
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
    type Result = Result<SecretValue, VaultError>;
    fn handle(&mut self, msg: GetOrCreateRandom, _: &mut Context<Self>) -> Self::Result {
        self.vault.get_or_create_random(&msg.name, msg.len)
    }
}

/// Opens every secret and reports each outcome by name (`security audit --deep`).
#[derive(Message, Debug)]
#[rtype(result = "Result<VerifyReport, VaultError>")]
pub struct VerifySecrets;

impl Handler<VerifySecrets> for SecretVault {
    type Result = Result<VerifyReport, VaultError>;
    fn handle(&mut self, _: VerifySecrets, _: &mut Context<Self>) -> Self::Result {
        self.vault.verify_all()
    }
}
