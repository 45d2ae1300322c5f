//! The incident record and its tree in the store.
//!
//! Owns: the [`Incident`] shape (what `GET /api/v1/incidents` shows), its lifecycle states, and
//! the layout of `TreeName::Incidents`: `incident/<id>` → the incident as JSON, and
//! `pending/<id>` → the audit step (and actions) not yet durably audited for it.
//! Must not: hold message text or secrets (evidence is counts, times and short ids), or decide
//! when an incident opens (that is the monitor).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::IncidentAction;
use crate::store::{KvBatch, KvTree, StoreDb, StoreError, TreeName};

/// At most this many sample ids are kept in an incident's evidence.
pub const MAX_SAMPLE_IDS: usize = 10;
/// A sample id longer than this many characters is cut (ids are short; text is not an id).
pub(crate) const MAX_SAMPLE_CHARS: usize = 128;
/// An operator note longer than this many characters is cut.
pub(crate) const MAX_NOTE_CHARS: usize = 1_000;
/// At most this many notes are kept (the oldest ones go first).
pub(crate) const MAX_NOTES: usize = 50;
/// At most this many entries are kept in `actions` (the oldest ones go first).
pub(crate) const MAX_ACTIONS: usize = 50;

const INCIDENT_PREFIX: &str = "incident/";
const PENDING_PREFIX: &str = "pending/";

/// What kind of trigger opened an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// Repeated auth failures from one IP.
    AuthFailures,
    /// Repeated auth failures from all IPs together.
    AuthStorm,
    /// Many dropped messages from unknown senders on one channel.
    UnknownSenders,
    /// Repeated denied tier-2 tool attempts by one sender.
    HighRiskTools,
    /// A channel's token usage far above its usual rate.
    TokenSpike,
    /// A channel bridge exhausted its restart budget.
    CrashLoop,
    /// Opened by an operator (`lockdown`).
    Manual,
}

impl IncidentKind {
    /// The stable string form.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::AuthFailures => "auth_failures",
            IncidentKind::AuthStorm => "auth_storm",
            IncidentKind::UnknownSenders => "unknown_senders",
            IncidentKind::HighRiskTools => "high_risk_tools",
            IncidentKind::TokenSpike => "token_spike",
            IncidentKind::CrashLoop => "crash_loop",
            IncidentKind::Manual => "manual",
        }
    }
}

/// Where an incident stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    /// Nobody has looked at it yet.
    Open,
    /// An operator has seen it; it still collects evidence.
    Acknowledged,
    /// Closed. A new trigger of the same kind and subject opens a new incident.
    Resolved,
}

impl IncidentState {
    /// The stable string form.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Acknowledged => "acknowledged",
            IncidentState::Resolved => "resolved",
        }
    }
    /// Open or acknowledged: further signals update it instead of opening a new one.
    pub fn is_active(self) -> bool {
        !matches!(self, IncidentState::Resolved)
    }
}

/// Why the monitor believes something is wrong: counts, times and ids, never content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Signals attributed to the incident (for a token spike: tokens).
    pub count: u64,
    /// The trigger's window.
    pub window_seconds: u64,
    /// The first signal of the window that opened it.
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    /// The latest signal.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// Up to [`MAX_SAMPLE_IDS`] distinct ids: IPs, sender ids, tool names, child names.
    pub sample_ids: Vec<String>,
    /// For a token spike: the trailing hourly average per window it was compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<u64>,
}

impl Evidence {
    /// Adds a sample id unless it is already there or the list is full.
    pub(crate) fn add_sample(&mut self, id: &str) {
        if self.sample_ids.len() < MAX_SAMPLE_IDS && !self.sample_ids.iter().any(|s| s == id) {
            self.sample_ids.push(id.to_string());
        }
    }
}

/// An operator's (or the monitor's) remark on an incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who: a token name, `cli`, or [`super::MONITOR_ACTOR`].
    pub actor: String,
    /// What (at most 1000 characters).
    pub text: String,
}

/// One incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// Opaque id (`inc-` + 16 hex digits, increasing with time).
    pub id: String,
    /// The trigger.
    pub kind: IncidentKind,
    /// What it is about: an IP, a channel, `channel/sender`, `*` for the global storm.
    pub subject: String,
    /// Where it stands.
    pub state: IncidentState,
    /// When it opened.
    #[serde(with = "time::serde::rfc3339")]
    pub opened_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Why.
    pub evidence: Evidence,
    /// The actions requested for it, each with its outcome.
    pub actions: Vec<String>,
    /// Remarks, oldest first.
    pub notes: Vec<Note>,
}

impl Incident {
    /// Appends a note, cut to 1000 characters, dropping the oldest beyond 50.
    pub(crate) fn add_note(&mut self, at: OffsetDateTime, actor: &str, text: &str) {
        self.notes.push(Note {
            at,
            actor: actor.to_string(),
            text: text.chars().take(MAX_NOTE_CHARS).collect(),
        });
        if self.notes.len() > MAX_NOTES {
            let excess = self.notes.len() - MAX_NOTES;
            self.notes.drain(..excess);
        }
    }

    /// Appends an action line, dropping the oldest beyond 50.
    pub(crate) fn add_action(&mut self, line: String) {
        self.actions.push(line);
        if self.actions.len() > MAX_ACTIONS {
            let excess = self.actions.len() - MAX_ACTIONS;
            self.actions.drain(..excess);
        }
    }
}

/// The audit step an incident still owes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AuditStep {
    /// `incident.opened`.
    Opened,
    /// `incident.updated`.
    Updated,
}

/// What is still to be done for one incident once its audit record is durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PendingAudit {
    /// The record to append.
    pub step: AuditStep,
    /// The actions to request afterwards, in order.
    pub actions: Vec<IncidentAction>,
    /// Whether to send the webhook afterwards (new incidents only).
    pub notify: bool,
}

impl PendingAudit {
    /// Folds a later step into this one: an open stays an open, the latest actions win
    /// (they are the same kind of action, with fresher detail), a notification is kept.
    pub fn merge(self, later: PendingAudit) -> PendingAudit {
        PendingAudit {
            step: if self.step == AuditStep::Opened {
                AuditStep::Opened
            } else {
                later.step
            },
            actions: if later.actions.is_empty() {
                self.actions
            } else {
                later.actions
            },
            notify: self.notify || later.notify,
        }
    }
}

/// The incidents tree.
#[derive(Clone)]
pub(crate) struct IncidentStore {
    db: StoreDb,
    tree: KvTree,
}

fn incident_key(id: &str) -> String {
    format!("{INCIDENT_PREFIX}{id}")
}

fn pending_key(id: &str) -> String {
    format!("{PENDING_PREFIX}{id}")
}

fn corrupt(error: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        tree: TreeName::Incidents.as_str(),
        reason: error.to_string(),
    }
}

impl IncidentStore {
    /// The incidents tree of `db`.
    pub fn open(db: &StoreDb) -> Result<Self, StoreError> {
        Ok(Self {
            db: db.clone(),
            tree: db.tree(TreeName::Incidents)?,
        })
    }

    /// A fresh id, increasing with time (survives restarts).
    pub fn new_id(&self) -> Result<String, StoreError> {
        Ok(format!("inc-{:016x}", self.db.next_id()?))
    }

    /// One incident.
    pub fn get(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        self.tree.get_json(incident_key(id))
    }

    /// Writes an incident.
    pub fn put(&self, incident: &Incident) -> Result<(), StoreError> {
        self.tree.put_json(incident_key(&incident.id), incident)
    }

    /// Writes an incident and its pending audit step in one atomic batch.
    pub fn put_with_pending(
        &self,
        incident: &Incident,
        pending: &PendingAudit,
    ) -> Result<(), StoreError> {
        let mut batch = KvBatch::default();
        batch.insert(
            incident_key(&incident.id),
            serde_json::to_vec(incident).map_err(corrupt)?,
        );
        batch.insert(
            pending_key(&incident.id),
            serde_json::to_vec(pending).map_err(corrupt)?,
        );
        self.tree.apply(batch)
    }

    /// Rewrites the pending audit step of an incident.
    pub fn put_pending(&self, id: &str, pending: &PendingAudit) -> Result<(), StoreError> {
        self.tree.put_json(pending_key(id), pending)
    }

    /// Forgets the pending audit step of an incident (it is durable and acted upon).
    pub fn clear_pending(&self, id: &str) -> Result<(), StoreError> {
        self.tree.remove(pending_key(id))?;
        Ok(())
    }

    /// Every pending audit step, oldest incident first.
    pub fn pending(&self) -> Result<Vec<(String, PendingAudit)>, StoreError> {
        self.tree
            .scan_prefix(PENDING_PREFIX)?
            .into_iter()
            .map(|(key, value)| {
                let id = String::from_utf8_lossy(&key[PENDING_PREFIX.len()..]).into_owned();
                let pending = serde_json::from_slice(&value).map_err(corrupt)?;
                Ok((id, pending))
            })
            .collect()
    }

    /// Incidents, newest first, optionally only those in `state`, at most `limit`.
    pub fn list(
        &self,
        state: Option<IncidentState>,
        limit: usize,
    ) -> Result<Vec<Incident>, StoreError> {
        let mut out = Vec::new();
        for (_, value) in self.tree.scan_prefix(INCIDENT_PREFIX)?.into_iter().rev() {
            if out.len() >= limit {
                break;
            }
            let incident: Incident = serde_json::from_slice(&value).map_err(corrupt)?;
            if state.is_none_or(|s| s == incident.state) {
                out.push(incident);
            }
        }
        Ok(out)
    }

    /// Every open or acknowledged incident.
    pub fn active(&self) -> Result<Vec<Incident>, StoreError> {
        let mut out = Vec::new();
        for (_, value) in self.tree.scan_prefix(INCIDENT_PREFIX)? {
            let incident: Incident = serde_json::from_slice(&value).map_err(corrupt)?;
            if incident.state.is_active() {
                out.push(incident);
            }
        }
        Ok(out)
    }

    /// Makes every write so far durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.tree.flush().await
    }
}
