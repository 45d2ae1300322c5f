//! The `IncidentMonitor` actor: signals in, incidents and action requests out.
//!
//! Owns: the trigger windows, the open and acknowledged incidents (in memory, mirrored in the
//! store), the queue of audit steps not yet durable, and the order "audit, then act, then
//! notify" (see the module doc of [`crate::incident`]).
//! Must not: wait on the webhook, perform an action, or read the clock for a signal (signals
//! carry their own `at`, so tests inject time).
//!
//! Persistence: opening an incident, a re-trigger and every operator change are written to the
//! store at once (operator changes flushed before the reply); smaller evidence changes (one
//! more failure counted on an open incident) are written at most once a second and when the
//! actor stops. Window counts live in memory only: a restarted monitor counts afresh.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use actix::prelude::*;
use serde_json::json;
use time::OffsetDateTime;

use super::messages::{
    AcknowledgeIncident, AuthFailureSignal, ChildFailureSignal, DeniedHighRiskSignal,
    GetMonitorStatus, ListIncidents, MonitorLinks, MonitorStatus, OpenIncident, ResolveIncident,
    TokenUsageSignal, UnknownSenderDropped,
};
use super::notify::WebhookNotifier;
use super::record::{AuditStep, IncidentStore, PendingAudit, MAX_NOTE_CHARS, MAX_SAMPLE_CHARS};
use super::window::{EventWindow, SpikeRule, SubjectMap, TokenBuckets};
use super::{
    system_clock, ActionFailed, Clock, Evidence, Incident, IncidentAction, IncidentError,
    IncidentKind, IncidentSettings, IncidentState, RequestAction, RetryPolicy,
};
use crate::audit::{AppendRecord, AuditError, AuditKind, AuditReceipt};
use crate::executor::HighRiskDenied;
use crate::supervisor::{Ping, Pong};

/// The audit `actor` of everything the monitor decides on its own.
pub const MONITOR_ACTOR: &str = "incident-monitor";
/// Subjects tracked per trigger.
const MAX_SUBJECTS: usize = 4_096;
/// Active incidents at which triggers keyed by a client or a sender (auth failures per IP,
/// high-risk tools per sender) stop opening new ones (unless
/// [`IncidentMonitor::with_max_active`] says otherwise); counted as `incidents_full`. A flood
/// from many addresses cannot grow the table, and the global auth-storm incident (one subject)
/// still opens and acts; the edge's own lockout table keeps locking addresses out.
pub const MAX_ACTIVE_INCIDENTS: usize = 1_024;
/// How often evidence changes of open incidents are written to the store.
const PERSIST_INTERVAL: Duration = Duration::from_secs(1);
/// How long an audit append may take before it counts as failed.
const AUDIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the supervisor side may take to accept an action request.
const ACTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The IP lockout requested unless [`IncidentMonitor::with_lockout_seconds`] says otherwise
/// (the default of `security.auth_lockout.lockout_seconds`).
const DEFAULT_LOCKOUT_SECONDS: u64 = 300;
/// At most this many incidents per [`ListIncidents`].
const MAX_LIST: usize = 1_000;
/// The subject of the global auth-storm incident.
const GLOBAL_SUBJECT: &str = "*";
/// Child names of channel bridges start with this (`channel:whatsapp`).
const CHANNEL_CHILD_PREFIX: &str = "channel:";
/// A crash reason longer than this is cut.
const MAX_REASON_CHARS: usize = 200;
/// A manual incident's subject may be at most this long.
const MAX_SUBJECT_CHARS: usize = 200;

// ---------------------------------------------------------------------------------------
// The actor.

/// Counts signals, opens and updates incidents, audits them and asks for actions.
pub struct IncidentMonitor {
    /// The thresholds.
    settings: IncidentSettings,
    /// The incidents tree.
    store: IncidentStore,
    /// The audit log.
    audit: Recipient<AppendRecord>,
    /// The supervisor side.
    actions: Recipient<RequestAction>,
    /// The webhook, when configured.
    notifier: Option<WebhookNotifier>,
    /// Time for messages that carry none.
    clock: Clock,
    /// The IP lockout to request.
    lockout_seconds: u64,
    /// Auth failures per IP.
    auth_per_ip: SubjectMap<EventWindow>,
    /// Auth failures from every IP.
    auth_global: EventWindow,
    /// Unknown-sender drops per channel.
    unknown_senders: SubjectMap<EventWindow>,
    /// Denied tier-2 attempts per `channel/sender`.
    high_risk: SubjectMap<EventWindow>,
    /// Token usage per channel.
    tokens: SubjectMap<TokenBuckets>,
    /// Open and acknowledged incidents by kind and subject (at most one each, at most
    /// `max_active` opened by triggers).
    active: HashMap<(IncidentKind, String), Incident>,
    /// The bound of `active` for incidents opened by triggers.
    max_active: usize,
    /// Active incidents with evidence changes not yet written to the store.
    dirty: HashSet<(IncidentKind, String)>,
    /// Incident ids whose audit step is owed, oldest first.
    queue: VecDeque<String>,
    /// The owed step of each queued id.
    pending: HashMap<String, PendingAudit>,
    /// Whether an audit step is in flight.
    draining: bool,
    /// Whether the last append failed; cleared by the next message.
    audit_failing: bool,
}

impl std::fmt::Debug for IncidentMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncidentMonitor")
            .field("active", &self.active.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// What a signal amounts to, once its window has been consulted.
struct Observation {
    kind: IncidentKind,
    subject: String,
    at: OffsetDateTime,
    /// Added to the evidence of an open incident.
    sample: Option<String>,
    /// Added to the count of an open incident.
    increment: u64,
    /// Set when the trigger fired.
    fired: Option<Firing>,
}

/// A trigger fired: the evidence of a new incident and what to ask for.
struct Firing {
    evidence: Evidence,
    actions: Vec<IncidentAction>,
}

/// Cuts an id to 128 characters and replaces control characters, so that no text or
/// terminal escape ends up in evidence, logs or the audit log.
fn clean_id(raw: &str) -> String {
    clean(raw, MAX_SAMPLE_CHARS)
}

fn clean(raw: &str, max: usize) -> String {
    raw.chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn flatten<T>(sent: Result<Result<T, AuditError>, MailboxError>) -> Result<T, AuditError> {
    match sent {
        Ok(result) => result,
        Err(_) => Err(AuditError::Unavailable),
    }
}

/// The audit record of one step of one incident: ids, counts and actions, never text.
fn audit_record(
    incident: &Incident,
    step: AuditStep,
    actor: &str,
    change: &str,
    actions: &[IncidentAction],
    note_added: bool,
) -> AppendRecord {
    AppendRecord {
        kind: match step {
            AuditStep::Opened => AuditKind::IncidentOpened,
            AuditStep::Updated => AuditKind::IncidentUpdated,
        },
        actor: actor.to_string(),
        subject: incident.subject.clone(),
        data: json!({
            "incident": incident.id,
            "kind": incident.kind.as_str(),
            "subject": incident.subject,
            "state": incident.state.as_str(),
            "change": change,
            "count": incident.evidence.count,
            "window_seconds": incident.evidence.window_seconds,
            "actions": actions,
            "note_added": note_added,
        }),
    }
}

impl IncidentMonitor {
    /// A monitor over the incidents tree of `db`, reloading open and acknowledged incidents
    /// and owed audit steps (the supervisor's factory calls this for a fresh instance).
    ///
    /// Fails on invalid settings, a store error, or a webhook URL without a key.
    pub fn new(
        settings: IncidentSettings,
        db: &crate::store::StoreDb,
        links: MonitorLinks,
    ) -> Result<Self, IncidentError> {
        settings.validate()?;
        let store = IncidentStore::open(db)?;
        let notifier = match (&settings.webhook_url, links.webhook_key) {
            (None, _) => None,
            (Some(_), None) => return Err(IncidentError::WebhookKeyMissing),
            (Some(url), Some(key)) => Some(WebhookNotifier::new(url, key)?),
        };
        let mut active = HashMap::new();
        for incident in store.active()? {
            active.insert((incident.kind, incident.subject.clone()), incident);
        }
        let mut queue = VecDeque::new();
        let mut pending = HashMap::new();
        for (id, step) in store.pending()? {
            queue.push_back(id.clone());
            pending.insert(id, step);
        }
        Ok(Self {
            settings,
            store,
            audit: links.audit,
            actions: links.actions,
            notifier,
            clock: system_clock(),
            lockout_seconds: DEFAULT_LOCKOUT_SECONDS,
            auth_per_ip: SubjectMap::new(MAX_SUBJECTS),
            auth_global: EventWindow::default(),
            unknown_senders: SubjectMap::new(MAX_SUBJECTS),
            high_risk: SubjectMap::new(MAX_SUBJECTS),
            tokens: SubjectMap::new(MAX_SUBJECTS),
            active,
            max_active: MAX_ACTIVE_INCIDENTS,
            dirty: HashSet::new(),
            queue,
            pending,
            draining: false,
            audit_failing: false,
        })
    }

    /// The same monitor reading time for operator commands from `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The same monitor keeping at most `max` trigger-opened incidents active.
    pub fn with_max_active(mut self, max: usize) -> Self {
        self.max_active = max.max(1);
        self
    }

    /// The same monitor requesting IP lockouts of `seconds` (wire it to
    /// `security.auth_lockout.lockout_seconds`; default 300).
    pub fn with_lockout_seconds(mut self, seconds: u64) -> Self {
        self.lockout_seconds = seconds;
        self
    }

    /// The same monitor retrying the webhook with `retry`.
    pub fn with_notify_retry(mut self, retry: RetryPolicy) -> Self {
        self.notifier = self.notifier.map(|n| n.with_retry(retry));
        self
    }

    // -- signals ------------------------------------------------------------------------

    fn auth_failure(&mut self, ip: &str, at: OffsetDateTime, ctx: &mut Context<Self>) {
        let ip = clean_id(ip);
        let window = self.settings.auth_failures_window_seconds;
        let fired = self.auth_per_ip.entry(&ip, at).record(
            at,
            Some(&ip),
            window,
            self.settings.auth_failures_per_ip,
        );
        let lockout = IncidentAction::LockoutIp {
            ip: ip.clone(),
            seconds: self.lockout_seconds,
        };
        self.observe(
            Observation {
                kind: IncidentKind::AuthFailures,
                subject: ip.clone(),
                at,
                sample: Some(ip.clone()),
                increment: 1,
                fired: fired.map(|f| Firing {
                    evidence: evidence(f.count, window, f.first_seen, f.last_seen, f.samples),
                    actions: vec![lockout],
                }),
            },
            ctx,
        );
        let fired =
            self.auth_global
                .record(at, Some(&ip), window, self.settings.auth_failures_global);
        self.observe(
            Observation {
                kind: IncidentKind::AuthStorm,
                subject: GLOBAL_SUBJECT.to_string(),
                at,
                sample: Some(ip),
                increment: 1,
                fired: fired.map(|f| Firing {
                    evidence: evidence(f.count, window, f.first_seen, f.last_seen, f.samples),
                    actions: vec![IncidentAction::None],
                }),
            },
            ctx,
        );
    }

    fn unknown_sender(&mut self, msg: UnknownSenderDropped, ctx: &mut Context<Self>) {
        let channel = clean_id(&msg.channel);
        let sender = clean_id(&msg.sender);
        let window = self.settings.unknown_senders_window_seconds;
        let threshold = self.settings.unknown_senders_per_channel;
        let fired = self.unknown_senders.entry(&channel, msg.at).record(
            msg.at,
            Some(&sender),
            window,
            threshold,
        );
        let reason = format!("{threshold} messages from unknown senders within {window} s");
        self.observe(
            Observation {
                kind: IncidentKind::UnknownSenders,
                subject: channel.clone(),
                at: msg.at,
                sample: Some(sender),
                increment: 1,
                fired: fired.map(|f| Firing {
                    evidence: evidence(f.count, window, f.first_seen, f.last_seen, f.samples),
                    actions: vec![IncidentAction::QuarantineChannel { channel, reason }],
                }),
            },
            ctx,
        );
    }

    fn denied_high_risk(&mut self, msg: DeniedHighRiskSignal, ctx: &mut Context<Self>) {
        let channel = clean_id(&msg.channel);
        let sender = clean_id(&msg.sender);
        let tool = clean_id(&msg.tool);
        let subject = format!("{channel}/{sender}");
        let window = self.settings.denied_high_risk_window_seconds;
        let fired = self.high_risk.entry(&subject, msg.at).record(
            msg.at,
            Some(&tool),
            window,
            self.settings.denied_high_risk_per_sender,
        );
        let actions = vec![
            IncidentAction::BlockSender {
                channel: channel.clone(),
                sender: sender.clone(),
            },
            IncidentAction::RestrictSender {
                channel,
                sender,
                max_tier: 0,
            },
        ];
        self.observe(
            Observation {
                kind: IncidentKind::HighRiskTools,
                subject,
                at: msg.at,
                sample: Some(tool),
                increment: 1,
                fired: fired.map(|f| Firing {
                    evidence: evidence(f.count, window, f.first_seen, f.last_seen, f.samples),
                    actions,
                }),
            },
            ctx,
        );
    }

    fn token_usage(&mut self, msg: TokenUsageSignal, ctx: &mut Context<Self>) {
        let channel = clean_id(&msg.channel);
        let rule = SpikeRule {
            window_seconds: self.settings.token_spike_window_seconds,
            factor: self.settings.token_spike_factor,
            min_tokens: self.settings.token_spike_min_tokens,
        };
        let spike = self
            .tokens
            .entry(&channel, msg.at)
            .record(msg.at, msg.tokens, rule);
        let fired = spike.map(|s| {
            let reason = format!(
                "token spike: {} tokens within {} s, above {} x the hourly average of {} per {} s",
                s.recent, rule.window_seconds, rule.factor, s.baseline, rule.window_seconds
            );
            let mut found = evidence(
                s.recent,
                rule.window_seconds,
                s.first_seen,
                s.last_seen,
                Vec::new(),
            );
            found.baseline = Some(s.baseline);
            Firing {
                evidence: found,
                actions: vec![IncidentAction::QuarantineChannel {
                    channel: channel.clone(),
                    reason,
                }],
            }
        });
        self.observe(
            Observation {
                kind: IncidentKind::TokenSpike,
                subject: channel,
                at: msg.at,
                sample: None,
                increment: msg.tokens,
                fired,
            },
            ctx,
        );
    }

    fn child_failure(&mut self, msg: ChildFailureSignal, ctx: &mut Context<Self>) {
        if !msg.gave_up {
            return; // restarts within the budget are the supervisor's business
        }
        let child = clean_id(&msg.child);
        let reason = clean(&msg.reason, MAX_REASON_CHARS);
        let action = match child.strip_prefix(CHANNEL_CHILD_PREFIX) {
            Some(channel) if !channel.is_empty() => IncidentAction::QuarantineChannel {
                channel: channel.to_string(),
                reason: format!("crash loop: {reason}"),
            },
            // A permanent child: the process is stopping; the incident is the record.
            _ => IncidentAction::None,
        };
        self.observe(
            Observation {
                kind: IncidentKind::CrashLoop,
                subject: child.clone(),
                at: msg.at,
                sample: Some(child.clone()),
                increment: 1,
                fired: Some(Firing {
                    evidence: evidence(1, 0, msg.at, msg.at, vec![child]),
                    actions: vec![action],
                }),
            },
            ctx,
        );
    }

    /// Applies one observation: grows an active incident's evidence, re-triggers it, or opens
    /// a new one; then makes sure the audit queue is moving.
    fn observe(&mut self, seen: Observation, ctx: &mut Context<Self>) {
        let key = (seen.kind, seen.subject);
        if let Some(incident) = self.active.get_mut(&key) {
            let evidence = &mut incident.evidence;
            evidence.count = evidence.count.saturating_add(seen.increment);
            evidence.last_seen = evidence.last_seen.max(seen.at);
            if let Some(sample) = &seen.sample {
                evidence.add_sample(sample);
            }
            incident.updated_at = incident.updated_at.max(seen.at);
            match seen.fired {
                Some(firing) => {
                    if firing.evidence.baseline.is_some() {
                        incident.evidence.baseline = firing.evidence.baseline;
                    }
                    let id = incident.id.clone();
                    self.enqueue(
                        &key,
                        &id,
                        PendingAudit {
                            step: AuditStep::Updated,
                            actions: firing.actions,
                            notify: false,
                        },
                    );
                }
                None => {
                    self.dirty.insert(key);
                }
            }
        } else if seen.fired.is_some() && self.at_bound(key.0) {
            tracing::warn!(
                kind = key.0.as_str(),
                active = self.active.len(),
                "incident not opened: the monitor keeps at most this many active incidents"
            );
            crate::metrics::metrics().incident_signal_dropped("incidents_full");
        } else if let Some(firing) = seen.fired {
            let id = self.store.new_id().unwrap_or_else(|error| {
                tracing::error!(%error, "cannot allocate an incident id; using a random one");
                let mut random = [0u8; 8];
                let _ = getrandom::fill(&mut random);
                format!("inc-r{}", hex::encode(random))
            });
            let incident = Incident {
                id: id.clone(),
                kind: key.0,
                subject: key.1.clone(),
                state: IncidentState::Open,
                opened_at: seen.at,
                updated_at: seen.at,
                evidence: firing.evidence,
                actions: Vec::new(),
                notes: Vec::new(),
            };
            tracing::warn!(
                incident = %id,
                kind = key.0.as_str(),
                subject = %key.1,
                count = incident.evidence.count,
                "incident opened"
            );
            self.active.insert(key.clone(), incident);
            self.enqueue(
                &key,
                &id,
                PendingAudit {
                    step: AuditStep::Opened,
                    actions: firing.actions,
                    notify: true,
                },
            );
        }
        self.kick(ctx);
    }

    /// Whether a new incident of `kind` must not open: kinds keyed by a client or a sender (an
    /// open set) stop at `max_active` active incidents; the others are keyed by configured
    /// names (channels, children) or one global subject, so they are bounded already.
    fn at_bound(&self, kind: IncidentKind) -> bool {
        matches!(
            kind,
            IncidentKind::AuthFailures | IncidentKind::HighRiskTools
        ) && self.active.len() >= self.max_active
    }

    /// Queues an audit step for the active incident `key` and stores it with its marker.
    fn enqueue(&mut self, key: &(IncidentKind, String), id: &str, step: PendingAudit) {
        let merged = match self.pending.remove(id) {
            Some(earlier) => earlier.merge(step),
            None => {
                self.queue.push_back(id.to_string());
                step
            }
        };
        if let Some(incident) = self.active.get(key) {
            if let Err(error) = self.store.put_with_pending(incident, &merged) {
                tracing::error!(incident = %id, %error, "cannot store the incident; kept in memory");
                self.dirty.insert(key.clone());
            } else {
                self.dirty.remove(key);
            }
        }
        self.pending.insert(id.to_string(), merged);
    }

    /// A message arrived: retry a failed audit step and keep the queue moving.
    fn kick(&mut self, ctx: &mut Context<Self>) {
        self.audit_failing = false;
        self.drain(ctx);
    }

    /// The incident with this id: the active copy if there is one, else the stored one.
    fn find(&self, id: &str) -> Result<Option<Incident>, IncidentError> {
        if let Some(incident) = self.active.values().find(|i| i.id == id) {
            return Ok(Some(incident.clone()));
        }
        Ok(self.store.get(id)?)
    }

    /// Starts the next owed audit step unless one is in flight or the last one failed.
    fn drain(&mut self, ctx: &mut Context<Self>) {
        if self.draining || self.audit_failing {
            return;
        }
        while let Some(id) = self.queue.pop_front() {
            let Some(step) = self.pending.remove(&id) else {
                continue;
            };
            let incident = match self.find(&id) {
                Ok(Some(incident)) => incident,
                Ok(None) => {
                    tracing::error!(incident = %id, "owed audit step for an unknown incident dropped");
                    let _ = self.store.clear_pending(&id);
                    continue;
                }
                Err(error) => {
                    tracing::error!(incident = %id, %error, "cannot read the incident; retried later");
                    self.queue.push_front(id.clone());
                    self.pending.insert(id, step);
                    return;
                }
            };
            let change = match step.step {
                AuditStep::Opened => "opened",
                AuditStep::Updated => "retriggered",
            };
            let record = audit_record(
                &incident,
                step.step,
                MONITOR_ACTOR,
                change,
                &step.actions,
                false,
            );
            self.draining = true;
            let audit = self.audit.clone();
            ctx.spawn(
                fut::wrap_future(async move { audit.send(record).timeout(AUDIT_TIMEOUT).await })
                    .map(move |sent, act: &mut Self, ctx| {
                        act.audited(id, step, flatten(sent), ctx)
                    }),
            );
            return;
        }
    }

    /// The audit step of `id` is durable (or failed): request its actions, or put it back.
    fn audited(
        &mut self,
        id: String,
        step: PendingAudit,
        result: Result<AuditReceipt, AuditError>,
        ctx: &mut Context<Self>,
    ) {
        if let Err(error) = result {
            tracing::error!(
                incident = %id,
                %error,
                "cannot audit the incident; no action is requested until the audit log takes it \
                 (retried on the next signal)"
            );
            self.draining = false;
            self.audit_failing = true;
            let merged = match self.pending.remove(&id) {
                Some(later) => step.merge(later),
                None => step,
            };
            if let Err(error) = self.store.put_pending(&id, &merged) {
                tracing::error!(incident = %id, %error, "cannot store the owed audit step");
            }
            self.queue.retain(|queued| *queued != id);
            self.queue.push_front(id.clone());
            self.pending.insert(id, merged);
            return;
        }
        let kind = match self.find(&id) {
            Ok(found) => found.map(|i| i.kind),
            Err(error) => {
                tracing::error!(incident = %id, %error, "cannot read the incident to act on it");
                None
            }
        };
        if let (AuditStep::Opened, Some(kind)) = (step.step, kind) {
            crate::metrics::metrics().incident_opened(kind.as_str());
        }
        let requests: Vec<RequestAction> = step
            .actions
            .iter()
            .filter(|a| **a != IncidentAction::None)
            .filter_map(|action| {
                Some(RequestAction {
                    incident_id: id.clone(),
                    kind: kind?,
                    action: action.clone(),
                })
            })
            .collect();
        let recipient = self.actions.clone();
        ctx.spawn(
            fut::wrap_future(async move {
                let mut outcomes = Vec::with_capacity(requests.len());
                for request in requests {
                    let action = request.action.clone();
                    let outcome = match recipient.send(request).timeout(ACTION_TIMEOUT).await {
                        Ok(result) => result,
                        Err(error) => Err(ActionFailed {
                            reason: format!("supervisor unavailable: {error}"),
                        }),
                    };
                    outcomes.push((action, outcome));
                }
                outcomes
            })
            .map(move |outcomes, act: &mut Self, ctx| act.acted(id, step, outcomes, ctx)),
        );
    }

    /// The actions of `id` were requested: record their outcome, notify a new incident, clear
    /// the owed step and move on to the next one.
    fn acted(
        &mut self,
        id: String,
        step: PendingAudit,
        outcomes: Vec<(IncidentAction, Result<(), ActionFailed>)>,
        ctx: &mut Context<Self>,
    ) {
        let mut lines = Vec::new();
        for action in &step.actions {
            if *action == IncidentAction::None {
                lines.push("none (incident only)".to_string());
            }
        }
        for (action, outcome) in outcomes {
            match outcome {
                Ok(()) => lines.push(action.describe()),
                Err(error) => {
                    tracing::error!(incident = %id, action = %action.describe(), %error, "requested action failed");
                    lines.push(format!("{} (failed: {})", action.describe(), error.reason));
                }
            }
        }
        let updated = match self.active.values_mut().find(|i| i.id == id) {
            Some(incident) => {
                for line in lines {
                    incident.add_action(line);
                }
                Some(incident.clone())
            }
            // Resolved in the meantime: record the outcome on the stored copy.
            None => match self.store.get(&id) {
                Ok(Some(mut incident)) => {
                    for line in lines {
                        incident.add_action(line);
                    }
                    Some(incident)
                }
                _ => None,
            },
        };
        if let Some(incident) = &updated {
            if let Err(error) = self.store.put(incident) {
                tracing::error!(incident = %id, %error, "cannot store the incident's actions");
            } else {
                self.dirty
                    .remove(&(incident.kind, incident.subject.clone()));
            }
            if step.notify {
                if let Some(notifier) = &self.notifier {
                    notifier.notify(incident, self.settings.owner.as_deref());
                }
            }
        }
        if !self.pending.contains_key(&id) {
            if let Err(error) = self.store.clear_pending(&id) {
                tracing::error!(incident = %id, %error, "cannot clear the owed audit step");
            }
        }
        self.draining = false;
        self.drain(ctx);
    }

    /// Writes the evidence changes of active incidents.
    fn persist_dirty(&mut self) {
        for key in std::mem::take(&mut self.dirty) {
            if let Some(incident) = self.active.get(&key) {
                if let Err(error) = self.store.put(incident) {
                    tracing::error!(incident = %incident.id, %error, "cannot store the incident");
                    self.dirty.insert(key);
                }
            }
        }
    }

    /// Makes an operator change (already audited) the current state.
    fn apply(&mut self, incident: &Incident) -> Result<(), IncidentError> {
        let key = (incident.kind, incident.subject.clone());
        if incident.state.is_active() {
            self.active.insert(key.clone(), incident.clone());
        } else if self.active.get(&key).is_some_and(|i| i.id == incident.id) {
            self.active.remove(&key);
        }
        self.dirty.remove(&key);
        self.store.put(incident)?;
        Ok(())
    }

    /// Acknowledge or resolve: audit first, then apply, flush and answer.
    fn change_state(
        &mut self,
        id: String,
        note: Option<String>,
        actor: String,
        target: IncidentState,
    ) -> AtomicResponse<Self, Result<Incident, IncidentError>> {
        let now = (self.clock)();
        let prepared = self.find(&id).and_then(|found| {
            let mut incident =
                found.ok_or_else(|| IncidentError::UnknownIncident { id: clean_id(&id) })?;
            if incident.state == IncidentState::Resolved {
                return Err(IncidentError::AlreadyResolved { id: incident.id });
            }
            incident.state = target;
            incident.updated_at = now;
            if let Some(text) = note.as_deref().filter(|t| !t.trim().is_empty()) {
                incident.add_note(now, &clean_id(&actor), text);
            }
            Ok(incident)
        });
        let incident = match prepared {
            Ok(incident) => incident,
            Err(error) => return AtomicResponse::new(Box::pin(fut::ready(Err(error)))),
        };
        let note_added = note.is_some_and(|t| !t.trim().is_empty());
        let record = audit_record(
            &incident,
            AuditStep::Updated,
            &clean_id(&actor),
            target.as_str(),
            &[],
            note_added,
        );
        self.audited_change(record, incident, false)
    }

    /// Appends `record`; once durable applies `incident`, flushes, notifies if asked, answers.
    fn audited_change(
        &mut self,
        record: AppendRecord,
        incident: Incident,
        notify: bool,
    ) -> AtomicResponse<Self, Result<Incident, IncidentError>> {
        let audit = self.audit.clone();
        let store = self.store.clone();
        AtomicResponse::new(Box::pin(
            fut::wrap_future(async move { audit.send(record).timeout(AUDIT_TIMEOUT).await })
                .map(move |sent, act: &mut Self, _| {
                    flatten(sent)?;
                    act.apply(&incident)?;
                    if notify {
                        crate::metrics::metrics().incident_opened(incident.kind.as_str());
                        if let Some(notifier) = &act.notifier {
                            notifier.notify(&incident, act.settings.owner.as_deref());
                        }
                    }
                    Ok(incident)
                })
                .then(move |applied: Result<Incident, IncidentError>, _, _| {
                    fut::wrap_future(async move {
                        let incident = applied?;
                        store.flush().await?;
                        Ok(incident)
                    })
                }),
        ))
    }
}

fn evidence(
    count: u64,
    window_seconds: u64,
    first_seen: OffsetDateTime,
    last_seen: OffsetDateTime,
    sample_ids: Vec<String>,
) -> Evidence {
    Evidence {
        count,
        window_seconds,
        first_seen,
        last_seen,
        sample_ids,
        baseline: None,
    }
}

impl Actor for IncidentMonitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Senders use `try_send` (see [`super::signal`]): a full mailbox drops, never queues.
        ctx.set_mailbox_capacity(super::SIGNAL_MAILBOX);
        ctx.run_interval(PERSIST_INTERVAL, |this, _| this.persist_dirty());
        // Steps owed by an earlier instance (or process) go out now.
        self.drain(ctx);
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        self.persist_dirty();
        Running::Stop
    }
}

impl Handler<AuthFailureSignal> for IncidentMonitor {
    type Result = ();
    fn handle(&mut self, msg: AuthFailureSignal, ctx: &mut Context<Self>) {
        self.auth_failure(&msg.ip, msg.at, ctx);
    }
}

impl Handler<UnknownSenderDropped> for IncidentMonitor {
    type Result = ();
    fn handle(&mut self, msg: UnknownSenderDropped, ctx: &mut Context<Self>) {
        self.unknown_sender(msg, ctx);
    }
}

/// The channel actor's own signal, so channels can be wired to the monitor directly.
impl Handler<crate::channel::UnknownSenderDropped> for IncidentMonitor {
    type Result = ();
    fn handle(&mut self, msg: crate::channel::UnknownSenderDropped, ctx: &mut Context<Self>) {
        let signal = UnknownSenderDropped {
            channel: msg.channel,
            sender: msg.sender_id,
            at: (self.clock)(),
        };
        self.unknown_sender(signal, ctx);
    }
}

impl Handler<DeniedHighRiskSignal> for IncidentMonitor {
    type Result = ();
    fn handle(&mut self, msg: DeniedHighRiskSignal, ctx: &mut Context<Self>) {
        self.denied_high_risk(msg, ctx);
    }
}

/// The executor's own signal, so it can be wired to the monitor directly (time: the clock).
impl Handler<HighRiskDenied> for IncidentMonitor {
    type Result = ();
    fn handle(&mut self, msg: HighRiskDenied, ctx: &mut Context<Self>) {
        let signal = DeniedHighRiskSignal {
            channel: msg.channel,
            sender: msg.sender_id,
            tool: msg.tool,
            at: (self.clock)(),
        };
        self.denied_high_risk(signal, ctx);
    }
}

impl Handler<TokenUsageSignal> for IncidentMonitor {
    type Result = ();
    fn handle(&mut self, msg: TokenUsageSignal, ctx: &mut Context<Self>) {
        self.token_usage(msg, ctx);
    }
}

impl Handler<ChildFailureSignal> for IncidentMonitor {
    type Result = ();
    fn handle(&mut self, msg: ChildFailureSignal, ctx: &mut Context<Self>) {
        self.child_failure(msg, ctx);
    }
}

impl Handler<ListIncidents> for IncidentMonitor {
    type Result = Result<Vec<Incident>, IncidentError>;
    fn handle(&mut self, msg: ListIncidents, ctx: &mut Context<Self>) -> Self::Result {
        self.kick(ctx);
        self.persist_dirty();
        let limit = msg.limit.unwrap_or(MAX_LIST).min(MAX_LIST);
        let mut list = self.store.list(msg.state, limit)?;
        // The in-memory copy is the freshest (a failed store write leaves it only there).
        for incident in &mut list {
            if let Some(current) = self.active.values().find(|i| i.id == incident.id) {
                *incident = current.clone();
            }
        }
        Ok(list)
    }
}

impl Handler<AcknowledgeIncident> for IncidentMonitor {
    type Result = AtomicResponse<Self, Result<Incident, IncidentError>>;
    fn handle(&mut self, msg: AcknowledgeIncident, ctx: &mut Context<Self>) -> Self::Result {
        self.kick(ctx);
        self.change_state(msg.id, msg.note, msg.actor, IncidentState::Acknowledged)
    }
}

impl Handler<ResolveIncident> for IncidentMonitor {
    type Result = AtomicResponse<Self, Result<Incident, IncidentError>>;
    fn handle(&mut self, msg: ResolveIncident, ctx: &mut Context<Self>) -> Self::Result {
        self.kick(ctx);
        self.change_state(msg.id, msg.note, msg.actor, IncidentState::Resolved)
    }
}

impl Handler<OpenIncident> for IncidentMonitor {
    type Result = AtomicResponse<Self, Result<Incident, IncidentError>>;
    fn handle(&mut self, msg: OpenIncident, ctx: &mut Context<Self>) -> Self::Result {
        self.kick(ctx);
        let subject = msg.subject.trim();
        if subject.is_empty() || subject.chars().count() > MAX_SUBJECT_CHARS {
            return AtomicResponse::new(Box::pin(fut::ready(Err(IncidentError::InvalidInput {
                field: "subject",
                reason: "must be 1 to 200 characters",
            }))));
        }
        if msg.reason.chars().count() > MAX_NOTE_CHARS {
            return AtomicResponse::new(Box::pin(fut::ready(Err(IncidentError::InvalidInput {
                field: "reason",
                reason: "must be at most 1000 characters",
            }))));
        }
        let subject = clean(subject, MAX_SUBJECT_CHARS);
        let actor = clean_id(&msg.actor);
        let now = (self.clock)();
        let key = (IncidentKind::Manual, subject.clone());
        let (incident, step) = match self.active.get(&key) {
            Some(open) => {
                let mut incident = open.clone();
                incident.evidence.count = incident.evidence.count.saturating_add(1);
                incident.evidence.last_seen = now;
                incident.updated_at = now;
                incident.add_note(now, &actor, &msg.reason);
                (incident, AuditStep::Updated)
            }
            None => {
                let id = match self.store.new_id() {
                    Ok(id) => id,
                    Err(error) => {
                        return AtomicResponse::new(Box::pin(fut::ready(Err(error.into()))))
                    }
                };
                let mut incident = Incident {
                    id,
                    kind: IncidentKind::Manual,
                    subject,
                    state: IncidentState::Open,
                    opened_at: now,
                    updated_at: now,
                    evidence: evidence(1, 0, now, now, Vec::new()),
                    actions: Vec::new(),
                    notes: Vec::new(),
                };
                incident.add_note(now, &actor, &msg.reason);
                (incident, AuditStep::Opened)
            }
        };
        let change = match step {
            AuditStep::Opened => "opened",
            AuditStep::Updated => "reopened_by_operator",
        };
        let record = audit_record(&incident, step, &actor, change, &[], true);
        self.audited_change(record, incident, step == AuditStep::Opened)
    }
}

impl Handler<GetMonitorStatus> for IncidentMonitor {
    type Result = MonitorStatus;
    fn handle(&mut self, _: GetMonitorStatus, _: &mut Context<Self>) -> MonitorStatus {
        MonitorStatus {
            active_incidents: self.active.len(),
            pending_audits: self.pending.len(),
            audit_in_flight: self.draining,
            audit_failing: self.audit_failing,
            tracked_subjects: self.auth_per_ip.len()
                + self.unknown_senders.len()
                + self.high_risk.len()
                + self.tokens.len(),
        }
    }
}

impl Handler<Ping> for IncidentMonitor {
    type Result = Pong;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Pong {
        Pong
    }
}

#[cfg(any(test, feature = "test-hooks"))]
impl Handler<crate::supervisor::InjectPanic> for IncidentMonitor {
    type Result = ();
    fn handle(&mut self, msg: crate::supervisor::InjectPanic, _: &mut Context<Self>) {
        panic!("injected panic: {}", msg.0);
    }
}
