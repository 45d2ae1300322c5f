//! Admin control messages (CONTRACT §3.4) and the incident responder.
//!
//! Owns: validating a control message, auditing it with the caller's name, and applying it
//! without a restart — from `POST /api/v1/admin/control`, from `kafclaw admin …` (control
//! socket), and, for automatic actions, from the incident monitor (`RequestAction`).
//! Must not: hold state of its own; it drives the channels, the tool surface, the lockout and
//! the token registry.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use kafclaw_actors::agent::ToolSurface;
use kafclaw_actors::audit::{AppendRecord, AuditKind};
use kafclaw_actors::channel::{
    AllowSender, BlockSender, ChannelBridge, ChannelState, SetChannelState, UnblockSender,
};
use kafclaw_actors::incident::{
    AcknowledgeIncident, ActionFailed, IncidentAction, IncidentMonitor, OpenIncident,
    RequestAction, ResolveIncident,
};
use kafclaw_actors::paths::Home;
use kafclaw_actors::policy::Restriction;
use kafclaw_actors::store::{StoreDb, TreeName};
use kafclaw_actors::supervisor::Slot;
use kafclaw_actors::token::TokenRegistry;

use crate::http::lockout::Lockout;

/// One control message, tagged by `type`. Unknown types and fields are refused.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlMessage {
    /// Stop handing messages to the agent and sending; keep accepting and storing.
    QuarantineChannel { channel: String, reason: String },
    /// Staged re-enable: `observe` (owners only) or `full` (replays held messages in order).
    ReleaseChannel { channel: String, stage: String },
    /// Turn a channel off at run time (messages are still stored and held).
    DisableChannel { channel: String },
    /// Turn a channel back on (replays held messages).
    EnableChannel { channel: String },
    /// Tighten the tool surface for every sender.
    RestrictTools {
        #[serde(default)]
        max_tier: Option<u8>,
        #[serde(default)]
        deny: Option<Vec<String>>,
    },
    /// Back to the configured tool policy.
    RelaxTools {},
    /// Issue a new admin token; the old one stops after the grace period.
    RotateGatewayToken {
        #[serde(default)]
        grace_seconds: Option<u64>,
    },
    /// Block a sender on a channel (channel access and tools).
    BlockSender { channel: String, sender: String },
    /// Lift a block.
    UnblockSender { channel: String, sender: String },
    /// Allow a sender on a channel at run time.
    AllowSender { channel: String, sender: String },
    /// Consistent copy of the store and the audit log.
    Snapshot {
        #[serde(default)]
        label: Option<String>,
    },
    /// Incident mode: every channel quarantined, tools limited to tier 0.
    Lockdown { reason: String },
    /// Resolve an incident.
    ResolveIncident {
        id: String,
        #[serde(default)]
        note: Option<String>,
    },
    /// Acknowledge an incident.
    AcknowledgeIncident {
        id: String,
        #[serde(default)]
        note: Option<String>,
    },
}

impl ControlMessage {
    /// The `type` string.
    pub fn kind(&self) -> &'static str {
        match self {
            ControlMessage::QuarantineChannel { .. } => "quarantine_channel",
            ControlMessage::ReleaseChannel { .. } => "release_channel",
            ControlMessage::DisableChannel { .. } => "disable_channel",
            ControlMessage::EnableChannel { .. } => "enable_channel",
            ControlMessage::RestrictTools { .. } => "restrict_tools",
            ControlMessage::RelaxTools {} => "relax_tools",
            ControlMessage::RotateGatewayToken { .. } => "rotate_gateway_token",
            ControlMessage::BlockSender { .. } => "block_sender",
            ControlMessage::UnblockSender { .. } => "unblock_sender",
            ControlMessage::AllowSender { .. } => "allow_sender",
            ControlMessage::Snapshot { .. } => "snapshot",
            ControlMessage::Lockdown { .. } => "lockdown",
            ControlMessage::ResolveIncident { .. } => "resolve_incident",
            ControlMessage::AcknowledgeIncident { .. } => "acknowledge_incident",
        }
    }

    /// Whether, in fleet mode, every node must apply it (security state). Snapshots, incident
    /// acknowledgements and token rotation stay on the node that received them.
    pub fn fans_out(&self) -> bool {
        !matches!(
            self,
            ControlMessage::Snapshot { .. }
                | ControlMessage::ResolveIncident { .. }
                | ControlMessage::AcknowledgeIncident { .. }
                | ControlMessage::RotateGatewayToken { .. }
        )
    }
}

/// Why a control message failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Invalid input, naming the problem (400).
    #[error("{0}")]
    Invalid(String),
    /// Unknown incident id (404).
    #[error("{0}")]
    NotFound(String),
    /// A component is unavailable or the audit log cannot be written (503).
    #[error("{0}")]
    Unavailable(String),
    /// A message that must reach every node of the fleet while NATS is unreachable (409).
    #[error("{0}")]
    Conflict(String),
}

/// What control messages act on.
#[derive(Clone)]
pub struct ControlContext {
    /// Channels by name.
    pub channels: BTreeMap<String, Slot<ChannelBridge>>,
    /// The runtime tool surface.
    pub surface: ToolSurface,
    /// Gateway tokens.
    pub tokens: TokenRegistry,
    /// The incident monitor.
    pub monitor: Slot<IncidentMonitor>,
    /// Per-IP lockout.
    pub lockout: Arc<Lockout>,
    /// The audit log.
    pub audit: Recipient<AppendRecord>,
    /// The home (snapshots).
    pub home: Home,
    /// The store (snapshots, persisted tool surface).
    pub db: StoreDb,
    /// The fleet (`fleet.enabled`): security changes fan out to every node.
    pub fleet: Option<crate::fleet::Fleet>,
}

const SURFACE_KEY: &str = "tool_surface";

/// The persisted runtime restriction (survives restarts).
#[derive(Serialize, Deserialize, Default)]
struct PersistedSurface {
    max_tier: Option<u8>,
    deny: BTreeSet<String>,
}

/// Restores the runtime tool restriction saved by `restrict_tools`/`lockdown`.
pub fn restore_surface(db: &StoreDb, surface: &ToolSurface) {
    let saved = db
        .tree(TreeName::Settings)
        .ok()
        .and_then(|t| t.get_json::<PersistedSurface>(SURFACE_KEY).ok().flatten());
    if let Some(saved) = saved {
        surface.set_restriction(Restriction {
            max_tier: saved.max_tier,
            denied_tools: saved.deny,
        });
    }
}

/// Serializes the read-persist-apply of the runtime restriction: persisting awaits the blocking
/// pool, and two control messages must not interleave there (the later one would overwrite
/// the earlier one's change). One gateway per process, so one lock per process.
static SURFACE_WRITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Saves `restriction` durably (store write and fsync on the blocking pool, never on the
/// actor thread the control handlers share).
async fn persist_surface(db: &StoreDb, restriction: &Restriction) -> Result<(), ControlError> {
    let (db, restriction) = (db.clone(), restriction.clone());
    tokio::task::spawn_blocking(move || persist_surface_blocking(&db, &restriction))
        .await
        .map_err(|_| ControlError::Unavailable("saving the tool restriction failed".into()))?
}

fn persist_surface_blocking(db: &StoreDb, restriction: &Restriction) -> Result<(), ControlError> {
    let tree = db
        .tree(TreeName::Settings)
        .map_err(|e| ControlError::Unavailable(e.to_string()))?;
    tree.put_json(
        SURFACE_KEY,
        &PersistedSurface {
            max_tier: restriction.max_tier,
            deny: restriction.denied_tools.clone(),
        },
    )
    .map_err(|e| ControlError::Unavailable(e.to_string()))?;
    db.flush_blocking()
        .map_err(|e| ControlError::Unavailable(e.to_string()))
}

impl ControlContext {
    fn channel(&self, name: &str) -> Result<Addr<ChannelBridge>, ControlError> {
        let slot = self
            .channels
            .get(name)
            .ok_or_else(|| ControlError::Invalid(format!("unknown channel: {name}")))?;
        slot.addr()
            .ok_or_else(|| ControlError::Unavailable(format!("channel {name} is not running")))
    }

    async fn set_state(
        &self,
        channel: &str,
        state: ChannelState,
        reason: Option<String>,
        actor: &str,
    ) -> Result<Value, ControlError> {
        let info = self
            .channel(channel)?
            .send(SetChannelState {
                state,
                reason,
                actor: actor.to_string(),
            })
            .await
            .map_err(|_| ControlError::Unavailable(format!("channel {channel} is not running")))?
            .map_err(|e| ControlError::Unavailable(e.to_string()))?;
        Ok(json!({"channel": info.name, "state": info.state, "since": info.since}))
    }

    /// Sends a sender-list change (block, unblock, allow) to a channel.
    async fn sender_change<M>(&self, channel: &str, msg: M) -> Result<(), ControlError>
    where
        M: Message<Result = Result<(), kafclaw_actors::channel::ChannelError>> + Send + 'static,
        ChannelBridge: Handler<M>,
    {
        self.channel(channel)?
            .send(msg)
            .await
            .map_err(|_| ControlError::Unavailable("channel unavailable".into()))?
            .map_err(|e| ControlError::Unavailable(e.to_string()))
    }

    fn monitor(&self) -> Result<Addr<IncidentMonitor>, ControlError> {
        self.monitor
            .addr()
            .ok_or_else(|| ControlError::Unavailable("incident monitor unavailable".into()))
    }
}

fn require(field: &str, value: &str) -> Result<(), ControlError> {
    if value.trim().is_empty() {
        Err(ControlError::Invalid(format!("{field} is required")))
    } else {
        Ok(())
    }
}

fn validate(msg: &ControlMessage, ctx: &ControlContext) -> Result<(), ControlError> {
    let known = |c: &str| {
        require("channel", c)?;
        if ctx.channels.contains_key(c) {
            Ok(())
        } else {
            Err(ControlError::Invalid(format!("unknown channel: {c}")))
        }
    };
    match msg {
        ControlMessage::QuarantineChannel { channel, reason } => {
            known(channel)?;
            require("reason", reason)
        }
        ControlMessage::ReleaseChannel { channel, stage } => {
            known(channel)?;
            match stage.as_str() {
                "observe" | "full" => Ok(()),
                _ => Err(ControlError::Invalid(
                    "stage must be observe or full".into(),
                )),
            }
        }
        ControlMessage::DisableChannel { channel } | ControlMessage::EnableChannel { channel } => {
            known(channel)
        }
        ControlMessage::RestrictTools { max_tier, deny } => {
            if max_tier.is_none() && deny.as_ref().is_none_or(Vec::is_empty) {
                return Err(ControlError::Invalid(
                    "restrict_tools needs max_tier and/or deny".into(),
                ));
            }
            if max_tier.is_some_and(|t| t > 2) {
                return Err(ControlError::Invalid("max_tier must be 0, 1 or 2".into()));
            }
            for tool in deny.iter().flatten() {
                if kafclaw_actors::policy::Tool::from_name(tool).is_none() {
                    return Err(ControlError::Invalid(format!(
                        "unknown tool in deny: {tool}"
                    )));
                }
            }
            Ok(())
        }
        ControlMessage::RelaxTools {} => Ok(()),
        ControlMessage::RotateGatewayToken { grace_seconds } => {
            if grace_seconds.is_some_and(|g| g > 7 * 86_400) {
                return Err(ControlError::Invalid(
                    "grace_seconds must be at most 604800".into(),
                ));
            }
            Ok(())
        }
        ControlMessage::BlockSender { channel, sender }
        | ControlMessage::UnblockSender { channel, sender }
        | ControlMessage::AllowSender { channel, sender } => {
            known(channel)?;
            require("sender", sender)
        }
        ControlMessage::Snapshot { label } => match label {
            Some(l)
                if l.len() > 32
                    || !l
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
            {
                Err(ControlError::Invalid(
                    "label must be at most 32 of a-z, 0-9 and -".into(),
                ))
            }
            _ => Ok(()),
        },
        ControlMessage::Lockdown { reason } => require("reason", reason),
        ControlMessage::ResolveIncident { id, .. }
        | ControlMessage::AcknowledgeIncident { id, .. } => require("id", id),
    }
}

/// Validates, audits (with the caller's name) and applies one control message: the record is
/// durable before anything acts on it. In fleet mode a message that
/// [fans out](ControlMessage::fans_out) is audited with its origin and envelope id, then
/// published to the control stream (409 while NATS is unreachable; a publish that fails after
/// the record is audited again as `skipped`) and applied here; the other nodes apply it from
/// the stream ([`apply_from_fleet`]).
pub async fn apply(
    msg: ControlMessage,
    actor: &str,
    ctx: &ControlContext,
) -> Result<Value, ControlError> {
    validate(&msg, ctx)?;
    let mut data = serde_json::to_value(&msg).unwrap_or(Value::Null);
    let fleet = ctx.fleet.as_ref().filter(|_| msg.fans_out());
    let mut envelope_id = None;
    if let Some(fleet) = fleet {
        if let Some(reason) = fleet.degraded_reason() {
            return Err(ControlError::Conflict(format!(
                "fleet degraded ({reason}): {} must reach every node and was not applied",
                msg.kind()
            )));
        }
        let id = crate::fleet::Fleet::new_control_id().map_err(ControlError::Unavailable)?;
        data["origin"] = Value::from(fleet.node_id());
        data["id"] = Value::from(id.as_str());
        envelope_id = Some(id);
    }
    let record = |data: Value| AppendRecord {
        kind: AuditKind::ControlApplied,
        actor: actor.to_string(),
        subject: msg.kind().to_string(),
        data,
    };
    if !matches!(ctx.audit.send(record(data.clone())).await, Ok(Ok(_))) {
        return Err(ControlError::Unavailable(
            "audit log unavailable; nothing was applied".into(),
        ));
    }
    if let (Some(fleet), Some(id)) = (fleet, envelope_id) {
        if let Err(e) = fleet.publish_control(id, &msg, actor).await {
            let reason = format!("fleet: {} was not published ({e})", msg.kind());
            data["skipped"] = Value::from(reason.as_str());
            // Best effort: the caller is told either way, and no node applied it.
            let _ = ctx.audit.send(record(data)).await;
            return Err(ControlError::Conflict(format!(
                "{reason} and was not applied"
            )));
        }
    }
    execute(msg, actor, ctx).await
}

/// Applies a control message another node accepted (from the control stream, in order):
/// audited here with its origin node and stream sequence, then applied. A message this node
/// cannot apply (a channel it does not run) is audited and skipped. With the audit log down it
/// is an error, so the follower stops before this sequence and tries it again; a lockdown is
/// applied all the same (fail closed), and audited when it is tried again.
pub async fn apply_from_fleet(
    envelope: crate::fleet::ControlEnvelope,
    seq: u64,
    unauthenticated: Option<String>,
    ctx: &ControlContext,
) -> Result<(), String> {
    let crate::fleet::ControlEnvelope {
        id,
        origin,
        actor,
        message,
        ..
    } = envelope;
    // A message no node vouches for is recorded by a fixed-size summary: whoever can publish
    // on the stream must not be able to write what it likes, at any length, into every node's
    // audit log.
    let forged = unauthenticated.is_some();
    let clip = |s: &str| -> String { s.chars().take(64).collect() };
    let mut data = if forged {
        json!({"kind": message.kind()})
    } else {
        serde_json::to_value(&message).unwrap_or(Value::Null)
    };
    let actor = if forged { clip(&actor) } else { actor };
    data["origin"] = Value::from(if forged {
        clip(&origin)
    } else {
        origin.clone()
    });
    data["id"] = Value::from(if forged { clip(&id) } else { id.clone() });
    data["seq"] = Value::from(seq);
    // Only the kinds that fan out are ever published by a node; anything else on the stream
    // (a snapshot, an incident resolution, a token rotation) was put there by someone else.
    let skipped = if let Some(reason) = unauthenticated {
        Some(reason)
    } else if message.fans_out() {
        validate(&message, ctx).err().map(|e| e.to_string())
    } else {
        Some(format!(
            "{} never fans out; not applied from the fleet stream",
            message.kind()
        ))
    };
    if let Some(reason) = &skipped {
        data["skipped"] = Value::from(reason.as_str());
    }
    let record = AppendRecord {
        kind: AuditKind::ControlApplied,
        actor: actor.clone(),
        subject: message.kind().to_string(),
        data,
    };
    if !matches!(ctx.audit.send(record).await, Ok(Ok(_))) {
        tracing::error!(seq, %origin, "audit log unavailable for a fleet control message");
        if matches!(message, ControlMessage::Lockdown { .. }) && skipped.is_none() {
            let _ = execute(message, &actor, ctx).await;
        }
        return Err(format!(
            "audit log unavailable; control message {seq} is tried again"
        ));
    }
    if skipped.is_some() {
        return Ok(());
    }
    if let Err(e) = execute(message, &actor, ctx).await {
        tracing::warn!(seq, %origin, error = %e, "fleet control message not applied");
    }
    Ok(())
}

/// Carries out a validated, audited control message.
async fn execute(
    msg: ControlMessage,
    actor: &str,
    ctx: &ControlContext,
) -> Result<Value, ControlError> {
    match msg {
        ControlMessage::QuarantineChannel { channel, reason } => {
            ctx.set_state(&channel, ChannelState::Quarantined, Some(reason), actor)
                .await
        }
        ControlMessage::ReleaseChannel { channel, stage } => {
            let state = if stage == "observe" {
                ChannelState::Observe
            } else {
                ChannelState::Running
            };
            ctx.set_state(&channel, state, Some(format!("released: {stage}")), actor)
                .await
        }
        ControlMessage::DisableChannel { channel } => {
            ctx.set_state(
                &channel,
                ChannelState::Disabled,
                Some("disabled".into()),
                actor,
            )
            .await
        }
        ControlMessage::EnableChannel { channel } => {
            ctx.set_state(
                &channel,
                ChannelState::Running,
                Some("enabled".into()),
                actor,
            )
            .await
        }
        ControlMessage::RestrictTools { max_tier, deny } => {
            let _writes = SURFACE_WRITES.lock().await;
            let mut restriction = ctx.surface.restriction();
            if let Some(t) = max_tier {
                restriction.max_tier = Some(restriction.max_tier.map_or(t, |m| m.min(t)));
            }
            restriction.denied_tools.extend(deny.unwrap_or_default());
            persist_surface(&ctx.db, &restriction).await?;
            ctx.surface.set_restriction(restriction.clone());
            Ok(json!({"max_tier": restriction.max_tier, "deny": restriction.denied_tools}))
        }
        ControlMessage::RelaxTools {} => {
            let _writes = SURFACE_WRITES.lock().await;
            let restriction = Restriction::default();
            persist_surface(&ctx.db, &restriction).await?;
            ctx.surface.set_restriction(restriction);
            Ok(json!({"max_tier": null, "deny": []}))
        }
        ControlMessage::RotateGatewayToken { grace_seconds } => {
            let grace = Duration::from_secs(grace_seconds.unwrap_or(0));
            let rotation = ctx
                .tokens
                .rotate_admin(grace)
                .await
                .map_err(|e| ControlError::Unavailable(e.to_string()))?;
            let data = json!({
                "name": rotation.issued.record.name,
                "superseded": rotation.superseded,
                "old_valid_until": kafclaw_actors::clock::to_rfc3339(rotation.old_valid_until),
            });
            let _ = ctx
                .audit
                .send(AppendRecord {
                    kind: AuditKind::TokenRotated,
                    actor: actor.to_string(),
                    subject: rotation.issued.record.name.clone(),
                    data: data.clone(),
                })
                .await;
            let mut result = data;
            result["token"] = Value::from(rotation.issued.token.expose());
            Ok(result)
        }
        ControlMessage::BlockSender { channel, sender } => {
            let block = BlockSender {
                sender: sender.clone(),
            };
            ctx.sender_change(&channel, block).await?;
            ctx.surface.set_blocked(&channel, &sender, true);
            Ok(json!({"channel": channel, "sender": sender, "blocked": true}))
        }
        ControlMessage::UnblockSender { channel, sender } => {
            let unblock = UnblockSender {
                sender: sender.clone(),
            };
            ctx.sender_change(&channel, unblock).await?;
            ctx.surface.set_blocked(&channel, &sender, false);
            ctx.surface.set_sender_tier(&channel, &sender, None);
            Ok(json!({"channel": channel, "sender": sender, "blocked": false}))
        }
        ControlMessage::AllowSender { channel, sender } => {
            let allow = AllowSender {
                sender: sender.clone(),
            };
            ctx.sender_change(&channel, allow).await?;
            Ok(json!({"channel": channel, "sender": sender, "allowed": true}))
        }
        ControlMessage::Snapshot { label } => {
            let home = ctx.home.clone();
            let db = ctx.db.clone();
            let info = tokio::task::spawn_blocking(move || {
                kafclaw_actors::incident::create_snapshot(
                    &home,
                    &db,
                    label.as_deref(),
                    time::OffsetDateTime::now_utc(),
                )
            })
            .await
            .map_err(|_| ControlError::Unavailable("the snapshot was interrupted".into()))?
            .map_err(|e| ControlError::Unavailable(e.to_string()))?;
            Ok(json!({
                "path": info.path,
                "manifest": info.manifest_path,
                "files": info.files.len(),
                "audit_head": info.audit_head,
            }))
        }
        ControlMessage::Lockdown { reason } => {
            let writes = SURFACE_WRITES.lock().await;
            let restriction = Restriction {
                max_tier: Some(0),
                ..ctx.surface.restriction()
            };
            persist_surface(&ctx.db, &restriction).await?;
            ctx.surface.set_restriction(restriction);
            drop(writes);
            let mut quarantined = Vec::new();
            for name in ctx.channels.keys() {
                if ctx
                    .set_state(
                        name,
                        ChannelState::Quarantined,
                        Some(format!("lockdown: {reason}")),
                        actor,
                    )
                    .await
                    .is_ok()
                {
                    quarantined.push(name.clone());
                }
            }
            let incident = match ctx.monitor() {
                Ok(monitor) => monitor
                    .send(OpenIncident {
                        subject: "lockdown".into(),
                        reason: reason.clone(),
                        actor: actor.to_string(),
                    })
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|i| i.id),
                Err(_) => None,
            };
            Ok(json!({"quarantined": quarantined, "max_tier": 0, "incident": incident}))
        }
        ControlMessage::ResolveIncident { id, note } => {
            let incident = ctx
                .monitor()?
                .send(ResolveIncident {
                    id,
                    note,
                    actor: actor.to_string(),
                })
                .await
                .map_err(|_| ControlError::Unavailable("incident monitor unavailable".into()))?
                .map_err(incident_error)?;
            Ok(json!(incident))
        }
        ControlMessage::AcknowledgeIncident { id, note } => {
            let incident = ctx
                .monitor()?
                .send(AcknowledgeIncident {
                    id,
                    note,
                    actor: actor.to_string(),
                })
                .await
                .map_err(|_| ControlError::Unavailable("incident monitor unavailable".into()))?
                .map_err(incident_error)?;
            Ok(json!(incident))
        }
    }
}

fn incident_error(e: kafclaw_actors::incident::IncidentError) -> ControlError {
    use kafclaw_actors::incident::IncidentError as E;
    match e {
        E::UnknownIncident { .. } => ControlError::NotFound(e.to_string()),
        E::AlreadyResolved { .. } | E::InvalidInput { .. } => ControlError::Invalid(e.to_string()),
        other => ControlError::Unavailable(other.to_string()),
    }
}

/// Carries out the incident monitor's automatic actions (the monitor audited them first).
pub struct Responder {
    ctx: ControlContext,
}

impl Responder {
    /// A responder over the control context.
    pub fn new(ctx: ControlContext) -> Self {
        Self { ctx }
    }
}

impl Actor for Responder {
    type Context = Context<Self>;
}

impl Handler<RequestAction> for Responder {
    type Result = ResponseFuture<Result<(), ActionFailed>>;

    fn handle(&mut self, msg: RequestAction, _: &mut Context<Self>) -> Self::Result {
        let ctx = self.ctx.clone();
        Box::pin(async move {
            let actor = kafclaw_actors::incident::MONITOR_ACTOR;
            let fail = |e: ControlError| ActionFailed {
                reason: e.to_string(),
            };
            tracing::warn!(incident = %msg.incident_id, action = ?msg.action, "incident action");
            match msg.action {
                IncidentAction::LockoutIp { ip, seconds } => {
                    if let Ok(ip) = ip.parse::<IpAddr>() {
                        ctx.lockout
                            .lock(ip, Duration::from_secs(seconds), Instant::now());
                    }
                    Ok(())
                }
                IncidentAction::QuarantineChannel { channel, reason } => {
                    if !ctx.channels.contains_key(&channel) {
                        return Ok(());
                    }
                    match ctx.channel(&channel) {
                        Ok(_) => ctx
                            .set_state(&channel, ChannelState::Quarantined, Some(reason), actor)
                            .await
                            .map(|_| ())
                            .map_err(fail),
                        // The actor is gone (crash loop): record the state so the channel
                        // comes back quarantined, with its reason, after a restart.
                        Err(_) => kafclaw_actors::channel::persist_state(
                            &ctx.db,
                            &channel,
                            ChannelState::Quarantined,
                            Some(reason),
                        )
                        .map_err(|e| ActionFailed {
                            reason: e.to_string(),
                        }),
                    }
                }
                IncidentAction::BlockSender { channel, sender } => {
                    ctx.surface.set_blocked(&channel, &sender, true);
                    if let Ok(addr) = ctx.channel(&channel) {
                        let _ = addr.send(BlockSender { sender }).await;
                    }
                    Ok(())
                }
                IncidentAction::RestrictSender {
                    channel,
                    sender,
                    max_tier,
                } => {
                    ctx.surface
                        .set_sender_tier(&channel, &sender, Some(max_tier));
                    Ok(())
                }
                IncidentAction::None => Ok(()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafclaw_actors::audit::{AuditError, AuditReceipt};

    /// An audit log whose appends fail (a full disk).
    struct FailingAudit;
    impl Actor for FailingAudit {
        type Context = Context<Self>;
    }
    impl Handler<AppendRecord> for FailingAudit {
        type Result = Result<AuditReceipt, AuditError>;
        fn handle(&mut self, _: AppendRecord, _: &mut Context<Self>) -> Self::Result {
            Err(AuditError::Write("disk full".into()))
        }
    }

    #[actix_rt::test]
    async fn nothing_is_applied_when_the_control_message_cannot_be_audited() {
        let dir = tempfile::tempdir().unwrap();
        let db = StoreDb::temporary().unwrap();
        let tokens = TokenRegistry::open(
            &db,
            kafclaw_actors::token::TokenHashKey::from_bytes([1; 32]),
        )
        .unwrap();
        let ctx = ControlContext {
            channels: BTreeMap::new(),
            surface: ToolSurface::default(),
            tokens,
            monitor: Slot::default(),
            lockout: Arc::new(Lockout::new(crate::http::lockout::LockoutPolicy {
                max_failures: 10,
                window: Duration::from_secs(60),
                lockout: Duration::from_secs(300),
            })),
            audit: FailingAudit.start().recipient(),
            home: Home::new(dir.path()),
            db: db.clone(),
            fleet: None,
        };
        let restrict = ControlMessage::RestrictTools {
            max_tier: Some(0),
            deny: None,
        };
        let err = apply(restrict, "admin", &ctx).await.unwrap_err();
        assert!(matches!(err, ControlError::Unavailable(_)), "{err}");
        assert_eq!(
            ctx.surface.restriction(),
            Restriction::default(),
            "not applied"
        );
        let saved = db
            .tree(TreeName::Settings)
            .unwrap()
            .get(SURFACE_KEY)
            .unwrap();
        assert!(saved.is_none(), "nothing persisted");

        let rotate = ControlMessage::RotateGatewayToken {
            grace_seconds: None,
        };
        assert!(apply(rotate, "admin", &ctx).await.is_err());
        assert!(ctx.tokens.list().unwrap().is_empty(), "no token was issued");
    }
}
