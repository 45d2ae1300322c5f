//! The supervision tree, started in one place (startup order lives here) for the gateway and
//! for operator commands that run without a gateway.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Recipient};
use tokio::sync::mpsc;

use kafclaw_actors::agent::{
    Agent, AgentLinks, AgentRouter, AgentSettings, Budget, BudgetSettings, SessionHistory,
    ToolSurface, TurnJournal,
};
use kafclaw_actors::approval::Approvals;
use kafclaw_actors::audit::{AppendRecord, AuditChainer, AuditKey, AuditRelay, RecordedHead};
use kafclaw_actors::channel::dispatch::{http_client, DispatchTarget, Dispatcher};
use kafclaw_actors::channel::media::{GraphSource, MediaFetcher, MediaOwners, MediaSettings};
use kafclaw_actors::channel::outbox::Backoff;
use kafclaw_actors::channel::pairing::PairingSettings;
use kafclaw_actors::channel::{
    ChannelBridge, ChannelConfig, ChannelKind, ChannelLinks, MessageOptions,
};
use kafclaw_actors::drain::Drain;
use kafclaw_actors::executor::{
    kernel_support, ExecSettings, ExecutorLinks, SandboxStatus, ToolExecutor,
};
use kafclaw_actors::incident::{IncidentMonitor, MonitorLinks, WebhookKey};
use kafclaw_actors::paths::Home;
use kafclaw_actors::policy::PolicySettings;
use kafclaw_actors::provider::{ChatClient, ProviderSettings};
use kafclaw_actors::retention::{Pruner, RetentionSettings};
use kafclaw_actors::store::{Store, StoreDb};
use kafclaw_actors::supervisor::{
    Forward, HealthBoard, RestartPolicy, Slot, SupervisionEvent, Supervisor, SupervisorBuilder,
};
use kafclaw_actors::token::TokenRegistry;
use kafclaw_actors::vault::{SecretValue, SecretVault};

use crate::admin::{ControlContext, Responder};
use crate::channels::ChannelsSettings;
use crate::core::Core;
use crate::http::lockout::{Lockout, LockoutPolicy};
use crate::settings::Settings;

/// The running tree and the handles the edge needs.
pub struct Services {
    /// The supervisor.
    pub supervisor: Addr<Supervisor>,
    /// What the supervisor publishes for `/healthz`.
    pub health: HealthBoard,
    /// Supervision events (restarts, give-ups).
    pub events: mpsc::UnboundedReceiver<SupervisionEvent>,
    /// The store handle.
    pub db: StoreDb,
    /// The store actor.
    pub store: Slot<Store>,
    /// The vault actor.
    pub vault: Slot<SecretVault>,
    /// The audit chainer.
    pub audit: Slot<AuditChainer>,
    /// The audit chain key.
    pub audit_key: AuditKey,
    /// Appends to the current audit chainer (survives chainer restarts).
    pub audit_sink: Recipient<AppendRecord>,
    /// The audit head recorded apart from the segments (the head file is written at a clean
    /// stop).
    pub audit_head: RecordedHead,
    /// Tool approvals.
    pub approvals: Slot<Approvals>,
    /// The agent.
    pub agent: Slot<Agent>,
    /// Gateway tokens.
    pub tokens: TokenRegistry,
    /// The incident monitor.
    pub monitor: Slot<IncidentMonitor>,
    /// Signals to the current incident monitor (survives its restarts).
    pub signals: Addr<Forward<IncidentMonitor>>,
    /// The channel settings (secrets for the webhook edge).
    pub channel_settings: ChannelsSettings,
    /// What control messages act on (channels, tool surface, lockout, tokens, …).
    pub control: ControlContext,
    /// The stop gate of the agent's turns and the channels' hand-overs.
    pub drain: Drain,
    /// Every channel's dispatcher (told to finish its sends at a stop).
    pub dispatchers: Vec<Slot<Dispatcher>>,
    /// The skills row of the status (`skills.runtime_isolation` as resolved at start).
    pub skills_status: serde_json::Value,
}

/// Starts every child under one supervisor (inside an actix system). `core.vault` serves the
/// vault's first instance; restarts reopen it (with `passphrase`).
pub fn start(
    home: &Home,
    settings: &Settings,
    core: Core,
    passphrase: Option<SecretValue>,
    fleet: Option<crate::fleet::Fleet>,
) -> Result<Services, String> {
    let Core {
        db,
        vault,
        audit_key,
        tokens,
        webhook_key,
    } = core;
    let mut tree = SupervisorBuilder::new(settings.supervisor.clone());
    let Trust {
        store,
        vault,
        audit,
        audit_head,
        relay,
        approvals,
        monitor_slot,
        signals,
    } = trust_children(
        &mut tree, home, settings, &db, vault, passphrase, &audit_key,
    )?;

    let (skill_host, skills_status) = skill_host(home, settings, relay.clone(), vault.clone());
    let executor = start_executor(
        &mut tree,
        &db,
        home,
        settings,
        relay.clone(),
        &signals,
        skill_host,
    )?;

    let client = provider_client(settings)?;
    // The inbox, outbox, turn journal and history live behind the storage seam.
    let state = db.state().map_err(|e| e.to_string())?;
    let history = SessionHistory::over(state.clone(), settings.model.history_messages as usize);
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
    crate::admin::restore_surface(&db, &surface);
    let drain = Drain::new();
    let links = AgentLinks {
        executor,
        approvals: approvals.clone(),
        store: store.clone(),
        surface: surface.clone(),
        usage: Some(signals.clone().recipient()),
        drain: drain.clone(),
        journal: Some(TurnJournal::new(state.clone())),
        audit: Some(relay.clone()),
    };
    let agent_settings = AgentSettings {
        max_tool_iterations: settings.model.max_tool_iterations,
        max_tool_calls_per_round: settings.model.max_tool_calls_per_round,
        max_turn_time: std::time::Duration::from_secs(settings.model.max_turn_seconds),
        workspace: settings.workspace(home),
        skills: skill_catalog(home, settings),
        skill_tool: skill_offer(home, settings),
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

    start_pruner(&mut tree, &db, settings, home);

    let mut channel_settings = ChannelsSettings::from_settings(settings)?;
    channel_settings.media_root = settings.workspace(home).join("media");
    let (channels, dispatchers) = start_channels(
        &mut tree,
        &db,
        &channel_settings,
        &agent,
        relay.clone(),
        &signals,
        &drain,
    )?;

    let lockout = &settings.security.auth_lockout;
    let control = ControlContext {
        channels,
        surface,
        tokens: tokens.clone(),
        monitor: monitor_slot.clone(),
        lockout: Arc::new(Lockout::new(LockoutPolicy {
            max_failures: lockout.max_failures,
            window: Duration::from_secs(lockout.window_seconds),
            lockout: Duration::from_secs(lockout.lockout_seconds),
        })),
        audit: relay.clone(),
        home: home.clone(),
        db: db.clone(),
        fleet: fleet.clone(),
    };
    if let Some(fleet) = fleet {
        let control = control.clone();
        let fleet_audit = audit.clone();
        tree.child(
            "fleet",
            RestartPolicy::Permanent,
            Box::new(move || {
                Ok(crate::fleet::FleetWatcher::new(
                    fleet.clone(),
                    control.clone(),
                    fleet_audit.clone(),
                ))
            }),
        );
    }
    let responder = Responder::new(control.clone()).start();
    let incident_settings = settings.incident_settings()?;
    let monitor_db = db.clone();
    let monitor_audit = relay.clone();
    let lockout_seconds = lockout.lockout_seconds;
    tree.child_in(
        monitor_slot.clone(),
        "incidents",
        RestartPolicy::Permanent,
        Box::new(move || {
            let links = MonitorLinks {
                audit: monitor_audit.clone(),
                actions: responder.clone().recipient(),
                webhook_key: Some(WebhookKey::from_bytes(webhook_key)),
            };
            IncidentMonitor::new(incident_settings.clone(), &monitor_db, links)
                .map(|m| m.with_lockout_seconds(lockout_seconds))
                .map_err(|e| e.to_string())
        }),
    );

    let health = tree.health();
    let (supervisor, events) = tree.start()?;
    Ok(Services {
        supervisor,
        health,
        events,
        db,
        store,
        vault,
        audit,
        audit_key,
        audit_sink: relay,
        audit_head,
        approvals,
        agent,
        tokens,
        monitor: monitor_slot,
        signals,
        channel_settings,
        control,
        drain,
        dispatchers,
        skills_status,
    })
}

/// The children every command needs: store, vault, audit chainer (and its relay), approvals,
/// and the forwarder that incident signals go through.
struct Trust {
    store: Slot<Store>,
    vault: Slot<SecretVault>,
    audit: Slot<AuditChainer>,
    audit_head: RecordedHead,
    relay: Recipient<AppendRecord>,
    approvals: Slot<Approvals>,
    monitor_slot: Slot<IncidentMonitor>,
    signals: Addr<Forward<IncidentMonitor>>,
}

fn trust_children(
    tree: &mut SupervisorBuilder,
    home: &Home,
    settings: &Settings,
    db: &StoreDb,
    vault: kafclaw_actors::vault::Vault,
    passphrase: Option<SecretValue>,
    audit_key: &AuditKey,
) -> Result<Trust, String> {
    // The trust core first: store, vault, audit.
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
    let chain_key = audit_key.clone();
    let audit_head = RecordedHead::for_home(home, Some(db)).map_err(|e| e.to_string())?;
    let chain_head = audit_head.clone();
    let audit = tree.child(
        "audit",
        RestartPolicy::Permanent,
        Box::new(move || {
            AuditChainer::open_recorded(
                &audit_dir,
                chain_key.clone(),
                &audit_settings,
                chain_head.clone(),
            )
            .map_err(|e| e.to_string())
        }),
    );
    let relay = AuditRelay::new(audit.clone())
        .start()
        .recipient::<AppendRecord>();

    // Signals reach whichever monitor instance is current.
    let monitor_slot: Slot<IncidentMonitor> = Slot::default();
    let signals = Forward::new(monitor_slot.clone())
        .with_capacity(kafclaw_actors::incident::SIGNAL_MAILBOX)
        .on_drop(kafclaw_actors::incident::signal_dropped)
        .start();

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

    Ok(Trust {
        store,
        vault,
        audit,
        audit_head,
        relay,
        approvals,
        monitor_slot,
        signals,
    })
}

/// The trust core alone, for operator commands run without a gateway: nothing that talks to
/// the outside (no channels, dispatchers, agent or monitor) is started.
pub struct OfflineServices {
    /// The supervisor (keeps the children alive).
    pub supervisor: Addr<Supervisor>,
    /// The store handle.
    pub db: StoreDb,
    /// The vault actor.
    pub vault: Slot<SecretVault>,
    /// The audit chainer.
    pub audit: Slot<AuditChainer>,
    /// The audit chain key.
    pub audit_key: AuditKey,
    /// Tool approvals.
    pub approvals: Slot<Approvals>,
    /// Gateway tokens.
    pub tokens: TokenRegistry,
}

/// Starts the trust core for an offline operator command.
pub fn start_offline(
    home: &Home,
    settings: &Settings,
    core: Core,
    passphrase: Option<SecretValue>,
) -> Result<OfflineServices, String> {
    let Core {
        db,
        vault,
        audit_key,
        tokens,
        webhook_key: _,
    } = core;
    let mut tree = SupervisorBuilder::new(settings.supervisor.clone());
    let trust = trust_children(
        &mut tree, home, settings, &db, vault, passphrase, &audit_key,
    )?;
    let (supervisor, _events) = tree.start()?;
    Ok(OfflineServices {
        supervisor,
        db,
        vault: trust.vault,
        audit: trust.audit,
        audit_key,
        approvals: trust.approvals,
        tokens,
    })
}

fn start_executor(
    tree: &mut SupervisorBuilder,
    db: &StoreDb,
    home: &Home,
    settings: &Settings,
    audit: Recipient<AppendRecord>,
    signals: &Addr<Forward<IncidentMonitor>>,
    skill_host: Option<Arc<dyn kafclaw_actors::executor::SkillHost>>,
) -> Result<Slot<ToolExecutor>, String> {
    let exec_settings: ExecSettings = serde_json::from_value(settings.tools["exec"].clone())
        .map_err(|e| format!("tools.exec: {e}"))?;
    let policy: PolicySettings = serde_json::from_value(settings.tools["policy"].clone())
        .map_err(|e| format!("tools.policy: {e}"))?;
    let workspace = settings.workspace(home);
    let work_repo = settings.work_repo(home);
    let links = ExecutorLinks {
        audit: audit.clone(),
        high_risk: Some(signals.clone().recipient()),
        skills: skill_host,
        media: Some(MediaOwners::new(db, workspace.join("media")).map_err(|e| e.to_string())?),
    };
    let (first, warnings) = ToolExecutor::new(
        &exec_settings,
        policy.clone(),
        (&workspace, &work_repo),
        home,
        kernel_support(),
        links,
    )
    .map_err(|e| e.to_string())?;
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    // Said once, at start: how exec children are confined.
    match first.sandbox() {
        SandboxStatus::Landlock { .. } => {
            tracing::info!(sandbox = %first.sandbox(), "exec sandbox")
        }
        other => tracing::warn!(sandbox = %other, "exec sandbox"),
    }
    // The executor is `Clone`: every (re)start gets a fresh copy of the one built and checked
    // here (programs resolved to absolute paths once, at startup).
    Ok(tree.child(
        "executor",
        RestartPolicy::Permanent,
        Box::new(move || Ok(first.clone())),
    ))
}

/// The background pruner (`store.retention_days`, or `store.retention_minutes` when set).
/// It also removes the saved media files (`workspace/media`) older than the retention.
/// Quarantined, not fatal, if it keeps failing: the gateway serves on with a store that grows.
fn start_pruner(tree: &mut SupervisorBuilder, db: &StoreDb, settings: &Settings, home: &Home) {
    let retention = RetentionSettings::for_retention(settings.store.retention());
    let media_root = settings.workspace(home).join("media");
    let db = db.clone();
    tree.child(
        "retention",
        RestartPolicy::Quarantine,
        Box::new(move || {
            let media = MediaOwners::new(&db, media_root.clone()).map_err(|e| e.to_string())?;
            Ok(Pruner::new(&db, retention.clone())
                .map_err(|e| e.to_string())?
                .with_media(media))
        }),
    );
}

fn start_channels(
    tree: &mut SupervisorBuilder,
    db: &StoreDb,
    settings: &ChannelsSettings,
    agent: &Slot<Agent>,
    audit: Recipient<AppendRecord>,
    signals: &Addr<Forward<IncidentMonitor>>,
    drain: &Drain,
) -> Result<ChannelSlots, String> {
    let media_root = &settings.media_root;
    let mut configs: Vec<(ChannelConfig, DispatchTarget, MediaPlan)> = Vec::new();
    if let Some(wa) = &settings.whatsapp {
        let token = wa.access_token.as_ref().map(|t| t.expose()).unwrap_or("");
        configs.push((
            ChannelConfig {
                name: "whatsapp".into(),
                kind: ChannelKind::Whatsapp,
                account: wa.phone_number_id.clone(),
                policy: wa.policy.clone(),
                pairing: PairingSettings::default(),
                backoff: Backoff::default(),
                resend_after: Duration::from_secs(wa.resend_after_seconds.max(1)),
                messages: MessageOptions {
                    react_to_reactions: wa.react_to_reactions,
                    unsupported_reply: wa.unsupported_reply.clone(),
                    attachment_origin: None,
                },
                backlog: settings.backlog("whatsapp"),
            },
            DispatchTarget::WhatsApp {
                graph_base: wa.graph_base.clone(),
                api_version: wa.api_version.clone(),
                phone_number_id: wa.phone_number_id.clone(),
                access_token: SecretValue::from(token),
            },
            MediaPlan {
                graph: Some(GraphSource {
                    graph_base: wa.graph_base.clone(),
                    api_version: wa.api_version.clone(),
                    access_token: SecretValue::from(token),
                }),
                settings: wa.media.to_settings(),
            },
        ));
    }
    for (name, bridge) in &settings.bridges {
        let secret = bridge.secret.as_ref().map(|t| t.expose()).unwrap_or("");
        configs.push((
            ChannelConfig {
                name: name.clone(),
                kind: ChannelKind::Bridge,
                account: name.clone(),
                policy: bridge.policy.clone(),
                pairing: PairingSettings::default(),
                backoff: Backoff::default(),
                resend_after: Duration::from_secs(bridge.resend_after_seconds.max(1)),
                messages: MessageOptions {
                    attachment_origin: reqwest::Url::parse(&bridge.outbound_url)
                        .ok()
                        .map(|u| u.origin().ascii_serialization()),
                    ..MessageOptions::default()
                },
                backlog: settings.backlog(name),
            },
            DispatchTarget::Bridge {
                outbound_url: bridge.outbound_url.clone(),
                secret: SecretValue::from(secret),
            },
            MediaPlan {
                graph: None,
                settings: MediaSettings::default(),
            },
        ));
    }
    let mut channel_slots: HashMap<String, Slot<ChannelBridge>> = HashMap::new();
    let mut dispatch_slots: HashMap<String, Slot<Dispatcher>> = HashMap::new();
    for (config, _, _) in &configs {
        channel_slots.insert(config.name.clone(), Slot::default());
        dispatch_slots.insert(config.name.clone(), Slot::default());
    }
    let router =
        AgentRouter::new(agent.clone(), channel_slots.clone(), dispatch_slots.clone()).start();
    let http = if configs.is_empty() {
        None
    } else {
        Some(http_client().map_err(|e| e.to_string())?)
    };
    for (config, target, media) in configs {
        let name = config.name.clone();
        let channel_slot = channel_slots.get(&name).cloned().unwrap_or_default();
        let http = http.clone().ok_or("no http client")?;
        let links = ChannelLinks {
            agent: router.clone().recipient(),
            audit: audit.clone(),
            unknown_senders: Some(signals.clone().recipient()),
            drain: drain.clone(),
            media: Some(
                MediaFetcher::new(
                    http.clone(),
                    media.graph,
                    media_root.clone(),
                    media.settings,
                )
                .with_owners(MediaOwners::new(db, media_root.clone()).map_err(|e| e.to_string())?),
            ),
        };
        let channel_db = db.clone();
        tree.child_on_own_thread(
            channel_slot.clone(),
            &format!("channel:{name}"),
            RestartPolicy::Quarantine,
            Box::new(move || {
                ChannelBridge::new(config.clone(), &channel_db, links.clone())
                    .map_err(|e| e.to_string())
            }),
        );
        // Validate the target once, up front: a bad URL or token is a startup error.
        Dispatcher::new(target.clone(), channel_slot.clone(), http.clone())
            .map_err(|e| format!("channel {name}: {e}"))?;
        tree.child_in(
            dispatch_slots.get(&name).cloned().unwrap_or_default(),
            &format!("dispatch:{name}"),
            RestartPolicy::Quarantine,
            Box::new(move || {
                Dispatcher::new(target.clone(), channel_slot.clone(), http.clone())
                    .map_err(|e| e.to_string())
            }),
        );
    }
    Ok((
        channel_slots.into_iter().collect(),
        dispatch_slots.into_values().collect(),
    ))
}

/// Where a channel's media come from and the limits that apply.
struct MediaPlan {
    /// The Graph API (WhatsApp); `None` for bridges.
    graph: Option<GraphSource>,
    /// Limits.
    settings: MediaSettings,
}

/// Every channel bridge by name, and every dispatcher.
type ChannelSlots = (BTreeMap<String, Slot<ChannelBridge>>, Vec<Slot<Dispatcher>>);

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

/// What runs skill entries, when `skills.enabled`, with the isolation decided (and said) once,
/// here; and the status row that reports it.
fn skill_host(
    home: &Home,
    settings: &Settings,
    audit: Recipient<AppendRecord>,
    vault: Slot<SecretVault>,
) -> (
    Option<Arc<dyn kafclaw_actors::executor::SkillHost>>,
    serde_json::Value,
) {
    use crate::skills::run::{Host, Resolved};
    let config = crate::skills::SkillsConfig::of(settings);
    let mode = config.runtime_isolation.as_str();
    if !config.enabled {
        let status = serde_json::json!({
            "enabled": false,
            "runtime_isolation": mode,
            "effective": null,
            "detail": "skills.enabled is false: no skill entry runs",
        });
        return (None, status);
    }
    let resolved = Resolved::decide(mode);
    let detail = resolved.describe(mode);
    match &resolved {
        Resolved::StrictUnusable(_) => tracing::warn!(isolation = %detail, "skills isolation"),
        _ => tracing::info!(isolation = %detail, "skills isolation"),
    }
    let status = serde_json::json!({
        "enabled": true,
        "runtime_isolation": mode,
        "effective": resolved.effective(),
        "runtime": match &resolved {
            Resolved::Strict { runtime, .. } => Some(runtime.clone()),
            _ => None,
        },
        "image": config.strict_image,
        "detail": detail,
    });
    let host = Host::new(
        crate::skills::SkillsDir::of(home),
        mode,
        &config.strict_image,
        resolved,
        audit,
        vault,
    );
    (Some(host), status)
}

/// The skills `skill_run` is offered with, when `skills.enabled`: the enabled ones with an
/// entry, read at each turn.
fn skill_offer(home: &Home, settings: &Settings) -> Option<kafclaw_actors::agent::SkillOffer> {
    if !crate::skills::SkillsConfig::of(settings).enabled {
        return None;
    }
    let dir = crate::skills::SkillsDir::of(home);
    Some(kafclaw_actors::agent::SkillOffer(std::sync::Arc::new(
        move || crate::skills::run::offered(&dir),
    )))
}

/// The skills section of the system prompt, when `skills.enabled`.
fn skill_catalog(home: &Home, settings: &Settings) -> Option<kafclaw_actors::agent::SkillCatalog> {
    let config = crate::skills::SkillsConfig::of(settings);
    if !config.enabled {
        return None;
    }
    let dir = crate::skills::SkillsDir::of(home);
    let all = config.scope == "all";
    Some(kafclaw_actors::agent::SkillCatalog(std::sync::Arc::new(
        move || crate::skills::prompt_section(&dir, all),
    )))
}
