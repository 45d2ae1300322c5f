//! The supervision tree of permanent children, started in one place for the gateway and for
//! operator commands that run without a gateway.

use kafclaw_actors::audit::{AuditChainer, AuditKey};
use kafclaw_actors::paths::Home;
use kafclaw_actors::store::{Store, StoreDb};
use kafclaw_actors::supervisor::{
    RestartPolicy, Slot, SupervisionEvent, Supervisor, SupervisorBuilder,
};
use kafclaw_actors::vault::{SecretValue, SecretVault, Vault};
use tokio::sync::mpsc;

use crate::settings::Settings;

/// The running permanent children.
pub struct Services {
    /// The supervisor.
    pub supervisor: actix::Addr<Supervisor>,
    /// Supervision events (restarts, give-ups).
    pub events: mpsc::UnboundedReceiver<SupervisionEvent>,
    /// The store actor.
    pub store: Slot<Store>,
    /// The vault actor.
    pub vault: Slot<SecretVault>,
    /// The audit chainer.
    pub audit: Slot<AuditChainer>,
}

/// Starts store, vault and audit chainer under a supervisor (inside an actix system).
/// `vault` is the already-open vault for the first instance; restarts reopen it.
pub fn start(
    home: &Home,
    settings: &Settings,
    db: StoreDb,
    vault: Vault,
    passphrase: Option<SecretValue>,
    audit_key: AuditKey,
) -> Result<Services, String> {
    let mut tree = SupervisorBuilder::new(settings.supervisor.clone());

    let store_db = db.clone();
    let store = tree.child(
        "store",
        RestartPolicy::Permanent,
        Box::new(move || Store::new(store_db.clone()).map_err(|e| e.to_string())),
    );

    let first_vault = std::sync::Mutex::new(Some(vault));
    let reopen = SecretVault::factory(home.clone(), db.clone(), passphrase);
    let vault = tree.child(
        "vault",
        RestartPolicy::Permanent,
        Box::new(move || {
            let first = first_vault.lock().unwrap_or_else(|p| p.into_inner()).take();
            match first {
                Some(vault) => Ok(SecretVault::new(vault)),
                None => reopen(),
            }
        }),
    );

    let audit_dir = home.audit_dir();
    let audit_settings = settings.audit.clone();
    let audit = tree.child(
        "audit",
        RestartPolicy::Permanent,
        Box::new(move || {
            AuditChainer::open(&audit_dir, audit_key.clone(), &audit_settings)
                .map_err(|e| e.to_string())
        }),
    );

    let (supervisor, events) = tree.start()?;
    Ok(Services {
        supervisor,
        events,
        store,
        vault,
        audit,
    })
}
