//! The supervision tree of permanent children, started in one place for the gateway and for
//! operator commands that run without a gateway.

use std::time::Duration;

use actix::Actor;
use std::collections::HashMap;

use kafclaw_actors::agent::{
    Agent, AgentLinks, AgentRouter, AgentSettings, Budget, BudgetSettings, SessionHistory,
    ToolSurface,
};
use kafclaw_actors::approval::Approvals;
use kafclaw_actors::audit::{AppendRecord, AuditChainer, AuditKey, AuditRelay};
use kafclaw_actors::channel::outbox::Backoff;
use kafclaw_actors::channel::pairing::PairingSettings;
use kafclaw_actors::channel::{ChannelBridge, ChannelConfig, ChannelKind, ChannelLinks};
use kafclaw_actors::executor::{ExecSettings, ToolExecutor};
use kafclaw_actors::paths::Home;
use kafclaw_actors::policy::PolicySettings;
use kafclaw_actors::provider::{ChatClient, ProviderSettings};
use kafclaw_actors::store::{Store, StoreDb};
use kafclaw_actors::supervisor::{
    RestartPolicy, Slot, SupervisionEvent, Supervisor, SupervisorBuilder,
};
use kafclaw_actors::vault::{SecretValue, SecretVault, Vault};
use tokio::sync::mpsc;

use crate::channels::ChannelsSettings;
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
    /// The tool executor.
    pub executor: Slot<ToolExecutor>,
    /// The agent.
    pub agent: Slot<Agent>,
    /// The runtime tool surface (restrictions, blocks) shared with the admin side.
    pub surface: ToolSurface,
    /// The channel settings (secrets for the webhook edge).
    pub channel_settings: ChannelsSettings,
    /// Every channel by name.
    pub channels: std::collections::BTreeMap<String, Slot<ChannelBridge>>,
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

    let exec_settings: ExecSettings = serde_json::from_value(settings.tools["exec"].clone())
        .map_err(|e| format!("tools.exec: {e}"))?;
    let policy: PolicySettings = serde_json::from_value(settings.tools["policy"].clone())
        .map_err(|e| format!("tools.policy: {e}"))?;
    let workspace = settings.workspace(home);
    let work_repo = settings.work_repo(home);
    let (probe, warnings) = ToolExecutor::new(
        &exec_settings,
        policy.clone(),
        &workspace,
        &work_repo,
        home,
        relay.clone(),
        None,
    );
    drop(probe);
    for warning in warnings {
        tracing::warn!(?warning, "tools.exec.allow: program not usable");
    }
    let executor_home = home.clone();
    let executor_audit = relay.clone();
    let executor_workspace = workspace.clone();
    let executor = tree.child(
        "executor",
        RestartPolicy::Permanent,
        Box::new(move || {
            Ok(ToolExecutor::new(
                &exec_settings,
                policy.clone(),
                &executor_workspace,
                &work_repo,
                &executor_home,
                executor_audit.clone(),
                None,
            )
            .0)
        }),
    );

    let client = provider_client(settings)?;
    let history = SessionHistory::new(&db, settings.model.history_messages as usize)
        .map_err(|e| e.to_string())?;
    let limit = |n: u64| (n > 0).then_some(n);
    let budget = Budget::new(
        &db,
        BudgetSettings {
            daily_tokens: limit(settings.budgets.daily_tokens),
            per_channel: limit(settings.budgets.channel_daily_tokens),
            per_sender: limit(settings.budgets.sender_daily_tokens),
        },
    )
    .map_err(|e| e.to_string())?;
    let surface = ToolSurface::default();
    let links = AgentLinks {
        executor: executor.clone(),
        approvals: approvals.clone(),
        store: store.clone(),
        surface: surface.clone(),
    };
    let agent_settings = AgentSettings {
        max_tool_iterations: settings.model.max_tool_iterations,
        workspace,
    };
    let agent = tree.child(
        "agent",
        RestartPolicy::Permanent,
        Box::new(move || {
            Ok(Agent::new(
                client.clone(),
                history.clone(),
                budget.clone(),
                links.clone(),
                agent_settings.clone(),
            ))
        }),
    );

    let channel_settings = ChannelsSettings::from_settings(settings)?;
    let mut channel_slots: HashMap<String, Slot<ChannelBridge>> = HashMap::new();
    for name in channel_settings.names() {
        channel_slots.insert(name, Slot::default());
    }
    let router = AgentRouter::new(agent.clone(), channel_slots.clone()).start();
    let mut configs: Vec<ChannelConfig> = Vec::new();
    if let Some(wa) = &channel_settings.whatsapp {
        configs.push(ChannelConfig {
            name: "whatsapp".into(),
            kind: ChannelKind::Whatsapp,
            account: wa.phone_number_id.clone(),
            policy: wa.policy.clone(),
            pairing: PairingSettings::default(),
            backoff: Backoff::default(),
        });
    }
    for (name, bridge) in &channel_settings.bridges {
        configs.push(ChannelConfig {
            name: name.clone(),
            kind: ChannelKind::Bridge,
            account: name.clone(),
            policy: bridge.policy.clone(),
            pairing: PairingSettings::default(),
            backoff: Backoff::default(),
        });
    }
    for config in configs {
        let slot = channel_slots.get(&config.name).cloned().unwrap_or_default();
        let links = ChannelLinks {
            agent: router.clone().recipient(),
            audit: relay.clone(),
            unknown_senders: None,
        };
        let channel_db = db.clone();
        let name = format!("channel:{}", config.name);
        tree.child_in(
            slot,
            &name,
            RestartPolicy::Quarantine,
            Box::new(move || {
                ChannelBridge::new(config.clone(), &channel_db, links.clone())
                    .map_err(|e| e.to_string())
            }),
        );
    }

    let (supervisor, events) = tree.start()?;
    Ok(Services {
        supervisor,
        events,
        store,
        vault,
        audit,
        approvals,
        audit_sink: relay,
        executor,
        agent,
        surface,
        channel_settings,
        channels: channel_slots.into_iter().collect(),
    })
}

/// The model provider's client, or `None` when no model is configured.
fn provider_client(settings: &Settings) -> Result<Option<ChatClient>, String> {
    let openai = &settings.providers.openai;
    if openai.model.is_empty() {
        return Ok(None);
    }
    let mut provider = ProviderSettings::new(&openai.api_base, &openai.model);
    provider.timeout_seconds = openai.timeout_seconds;
    provider.max_retries = openai.max_retries;
    if let Some(key) = &openai.api_key {
        provider = provider.with_api_key(key.expose());
    }
    ChatClient::new(provider)
        .map(Some)
        .map_err(|e| format!("providers.openai: {e}"))
}
