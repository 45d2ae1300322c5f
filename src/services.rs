//! The supervision tree of permanent children, started in one place for the gateway and for
//! operator commands that run without a gateway.

use std::time::Duration;

use actix::Actor;
use kafclaw_actors::approval::Approvals;
use kafclaw_actors::audit::{AppendRecord, AuditChainer, AuditKey, AuditRelay};
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
    /// Tool approvals.
    pub approvals: Slot<Approvals>,
    /// Appends to the current audit chainer (survives chainer restarts).
    pub audit_sink: actix::Recipient<AppendRecord>,
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

    let relay = AuditRelay::new(audit.clone())
        .start()
        .recipient::<AppendRecord>();
    let approvals_db = db.clone();
    let approvals_audit = relay.clone();
    let timeout = Duration::from_secs(
        settings.tools["policy"]["approval_timeout_seconds"]
            .as_u64()
            .unwrap_or(120),
    );
    let approvals = tree.child(
        "approvals",
        RestartPolicy::Permanent,
        Box::new(move || {
            Approvals::new(approvals_db.clone(), approvals_audit.clone(), timeout)
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
        approvals,
        audit_sink: relay,
    })
}
