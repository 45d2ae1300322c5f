//! Tool approvals (CONTRACT §3.3, §4): a tool call above the sender's limit becomes a request
//! that an operator answers out of band; only the asking session's turn waits, and it times
//! out as denied.
//!
//! Owns: the `Approvals` tree (pending and decided requests), the waiting turns, the timeout.
//! Must not: run a tool (the executor does, with `approved_by` set), or decide without
//! auditing: a decision is appended to the audit log before the waiting turn learns of it.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::audit::{AppendRecord, AuditKind};
use crate::store::{KvTree, StoreDb, StoreError, TreeName};
use crate::supervisor::{Ping, Pong};

#[cfg(test)]
mod tests;

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    /// Waiting for an operator.
    Pending,
    /// Approved; the call ran (or was handed back to run).
    Approved,
    /// Denied by an operator.
    Denied,
    /// Nobody answered in time, or the process restarted while it waited: denied.
    Expired,
}

/// One approval request (`GET /api/v1/approvals`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// Opaque id (`ap-…`).
    pub id: String,
    /// The tool.
    pub tool: String,
    /// Its tier.
    pub tier: u8,
    /// The arguments as the model sent them (shown to the operator who decides).
    pub arguments: Value,
    /// Who asked.
    pub sender_id: String,
    /// The channel.
    pub channel: String,
    /// The agent session.
    pub session: String,
    /// The message's trace.
    pub trace_id: String,
    /// State.
    pub state: ApprovalState,
    /// When it was asked (RFC 3339).
    pub created_at: String,
    /// When it was decided.
    pub decided_at: Option<String>,
    /// Who decided (token name, `cli:uid=…`, `timeout`).
    pub decided_by: Option<String>,
    /// When it times out as denied.
    pub expires_at: String,
}

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// No pending request with that id.
    #[error("no pending approval with id {0}")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The decision could not be audited, so it was not applied.
    #[error("the decision could not be written to the audit log; nothing was applied")]
    AuditFailed,
    /// As many requests as the actor keeps are already waiting; this one is refused (the
    /// tool call is denied).
    #[error("too many approvals are waiting ({0}); the request is refused")]
    TooMany(usize),
}

/// Approval requests waiting at once, at most (unless [`Approvals::with_max_waiting`] says
/// otherwise): one more is refused, never queued.
pub const MAX_WAITING: usize = 256;

/// Asks for an approval; answered when an operator decides or the request times out.
#[derive(Message, Debug)]
#[rtype(result = "Result<ApprovalOutcome, ApprovalError>")]
pub struct RequestApproval {
    /// Tool name.
    pub tool: String,
    /// Tool tier.
    pub tier: u8,
    /// Arguments.
    pub arguments: Value,
    /// Sender id.
    pub sender_id: String,
    /// Channel.
    pub channel: String,
    /// Session.
    pub session: String,
    /// Trace id.
    pub trace_id: String,
}

/// The answer to a [`RequestApproval`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApprovalOutcome {
    /// Run it (pass the id as `approved_by`).
    Approved { id: String, by: String },
    /// Do not run it.
    Denied { id: String, by: String },
    /// Nobody answered in time (or the process restarted).
    Expired { id: String },
}

/// Pending requests, oldest first.
#[derive(Message, Debug)]
#[rtype(result = "Result<Vec<ApprovalRecord>, ApprovalError>")]
pub struct ListApprovals;

/// An operator's decision.
#[derive(Message, Debug)]
#[rtype(result = "Result<ApprovalRecord, ApprovalError>")]
pub struct DecideApproval {
    /// The request's id.
    pub id: String,
    /// Approve or deny.
    pub approved: bool,
    /// Who decides (audited).
    pub actor: String,
}

/// The actor of the withdrawals made by [`WithdrawForTurn`] (audited as `approval.decided`).
pub const RESTRICTION_ACTOR: &str = "restriction";

/// Denies the pending requests of one turn for one tool because the operator's runtime restriction
/// (`lockdown`, `restrict_tools`) now forbids them: the waiting turn goes on at once instead of
/// waiting for an approval nobody may give. Each is audited like an operator's denial, with
/// the actor [`RESTRICTION_ACTOR`]. Answers how many were withdrawn.
#[derive(Message, Debug)]
#[rtype(result = "Result<usize, ApprovalError>")]
pub struct WithdrawForTurn {
    /// The turn's trace id.
    pub trace_id: String,
    /// The tool whose requests are withdrawn.
    pub tool: String,
}

/// How long a request past its timeout waits for a decision already being audited.
const DECIDING_GRACE: Duration = Duration::from_secs(10);

/// The approvals actor (permanent child).
pub struct Approvals {
    db: StoreDb,
    tree: KvTree,
    audit: Recipient<AppendRecord>,
    timeout: Duration,
    /// The turns waiting for a decision, by request id (at most `max_waiting`).
    waiting: HashMap<String, oneshot::Sender<ApprovalOutcome>>,
    /// The bound of `waiting`.
    max_waiting: usize,
    /// Requests whose decision (or expiry) is being audited: a second decision gets
    /// `NotFound` before anything is audited, and the timeout waits for the first.
    deciding: std::collections::HashSet<String>,
}

/// The `approval.decided` record of `pending` decided by `actor`.
fn decided_record(pending: &ApprovalRecord, actor: &str, approved: bool) -> AppendRecord {
    AppendRecord {
        kind: AuditKind::ApprovalDecided,
        actor: actor.to_string(),
        subject: pending.tool.clone(),
        data: json!({
            "id": pending.id,
            "tool": pending.tool,
            "tier": pending.tier,
            "approved": approved,
            "sender_id": pending.sender_id,
            "channel": pending.channel,
            "session": pending.session,
        }),
    }
}

impl Approvals {
    /// Opens the approvals tree; requests left pending by an earlier process are expired
    /// (nobody waits for them any more).
    pub fn new(
        db: StoreDb,
        audit: Recipient<AppendRecord>,
        timeout: Duration,
    ) -> Result<Self, ApprovalError> {
        let tree = db.tree(TreeName::Approvals)?;
        let now = crate::clock::now_rfc3339();
        for (key, value) in tree.scan_prefix("ap-")? {
            if let Ok(mut record) = serde_json::from_slice::<ApprovalRecord>(&value) {
                if record.state == ApprovalState::Pending {
                    record.state = ApprovalState::Expired;
                    record.decided_at = Some(now.clone());
                    record.decided_by = Some("restart".into());
                    tree.put_json(&key, &record)?;
                }
            }
        }
        db.flush_blocking()?;
        Ok(Self {
            db,
            tree,
            audit,
            timeout,
            waiting: HashMap::new(),
            max_waiting: MAX_WAITING,
            deciding: std::collections::HashSet::new(),
        })
    }

    /// The same actor keeping at most `max` requests waiting.
    pub fn with_max_waiting(mut self, max: usize) -> Self {
        self.max_waiting = max.max(1);
        self
    }

    fn pending(&self) -> Result<Vec<ApprovalRecord>, ApprovalError> {
        let mut out = Vec::new();
        for (_, value) in self.tree.scan_prefix("ap-")? {
            if let Ok(record) = serde_json::from_slice::<ApprovalRecord>(&value) {
                if record.state == ApprovalState::Pending {
                    out.push(record);
                }
            }
        }
        Ok(out)
    }

    /// Expires the request `id` (denied) after its timeout, audited first (`approval.decided`
    /// by `timeout`; a denial, so it applies even when the record cannot be written).
    fn expire(
        &mut self,
        id: String,
    ) -> ResponseActFuture<Self, Result<ApprovalOutcome, ApprovalError>> {
        self.waiting.remove(&id);
        let expired = ApprovalOutcome::Expired { id: id.clone() };
        let pending = match self.tree.get_json::<ApprovalRecord>(&id) {
            Ok(Some(r)) if r.state == ApprovalState::Pending => r,
            _ => return fut::ready(Ok(expired)).boxed_local(),
        };
        self.deciding.insert(id.clone());
        let audit = self.audit.clone();
        let record = decided_record(&pending, "timeout", false);
        async move {
            if !matches!(audit.send(record).await, Ok(Ok(_))) {
                tracing::warn!("approval expiry could not be audited; expired anyway");
            }
        }
        .into_actor(self)
        .map(move |(), this, _| {
            this.deciding.remove(&id);
            let _ = this.finish(&id, ApprovalState::Expired, "timeout");
            Ok(expired)
        })
        .boxed_local()
    }

    fn finish(
        &mut self,
        id: &str,
        state: ApprovalState,
        by: &str,
    ) -> Result<ApprovalRecord, ApprovalError> {
        let mut record: ApprovalRecord = self
            .tree
            .get_json(id)?
            .filter(|r: &ApprovalRecord| r.state == ApprovalState::Pending)
            .ok_or_else(|| ApprovalError::NotFound(id.to_string()))?;
        record.state = state;
        record.decided_at = Some(crate::clock::now_rfc3339());
        record.decided_by = Some(by.to_string());
        self.tree.put_json(id, &record)?;
        Ok(record)
    }
}

impl Actor for Approvals {
    type Context = Context<Self>;
}

impl Handler<Ping> for Approvals {
    type Result = Pong;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Pong {
        Pong
    }
}

#[cfg(any(test, feature = "test-hooks"))]
impl Handler<crate::supervisor::InjectPanic> for Approvals {
    type Result = ();
    fn handle(&mut self, msg: crate::supervisor::InjectPanic, _: &mut Context<Self>) {
        panic!("injected panic: {}", msg.0);
    }
}

impl Handler<RequestApproval> for Approvals {
    type Result = ResponseActFuture<Self, Result<ApprovalOutcome, ApprovalError>>;

    fn handle(&mut self, msg: RequestApproval, _: &mut Context<Self>) -> Self::Result {
        let created =
            (|| -> Result<(String, oneshot::Receiver<ApprovalOutcome>), ApprovalError> {
                if self.waiting.len() >= self.max_waiting {
                    return Err(ApprovalError::TooMany(self.max_waiting));
                }
                let id = format!("ap-{:016x}", self.db.next_id()?);
                let now = time::OffsetDateTime::now_utc();
                let record = ApprovalRecord {
                    id: id.clone(),
                    tool: msg.tool,
                    tier: msg.tier,
                    arguments: msg.arguments,
                    sender_id: msg.sender_id,
                    channel: msg.channel,
                    session: msg.session,
                    trace_id: msg.trace_id,
                    state: ApprovalState::Pending,
                    created_at: crate::clock::to_rfc3339(now),
                    decided_at: None,
                    decided_by: None,
                    expires_at: crate::clock::to_rfc3339(now + self.timeout),
                };
                self.tree.put_json(&id, &record)?;
                let (tx, rx) = oneshot::channel();
                self.waiting.insert(id.clone(), tx);
                Ok((id, rx))
            })();
        let (id, rx) = match created {
            Ok(created) => created,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let db = self.db.clone();
        let timeout = self.timeout;
        let wait_id = id.clone();
        Box::pin(
            async move {
                let _ = db.flush().await;
                let mut rx = rx;
                let answer = tokio::time::timeout(timeout, &mut rx).await;
                (answer.ok().and_then(Result::ok), rx)
            }
            .into_actor(self)
            .then(move |(answer, rx), this, _| {
                if let Some(outcome) = answer {
                    return fut::ready(Ok(outcome)).boxed_local();
                }
                if this.deciding.contains(&wait_id) {
                    // A decision came in time and is being audited: it answers (or, if its
                    // audit fails or hangs, the request expires after a grace period).
                    return async move {
                        tokio::time::timeout(DECIDING_GRACE, rx)
                            .await
                            .ok()
                            .and_then(Result::ok)
                    }
                    .into_actor(this)
                    .then(move |answer, this, _| match answer {
                        Some(outcome) => fut::ready(Ok(outcome)).boxed_local(),
                        None => this.expire(wait_id),
                    })
                    .boxed_local();
                }
                this.expire(wait_id)
            }),
        )
    }
}

impl Handler<ListApprovals> for Approvals {
    type Result = Result<Vec<ApprovalRecord>, ApprovalError>;
    fn handle(&mut self, _: ListApprovals, _: &mut Context<Self>) -> Self::Result {
        self.pending()
    }
}

impl Handler<DecideApproval> for Approvals {
    type Result = ResponseActFuture<Self, Result<ApprovalRecord, ApprovalError>>;

    fn handle(&mut self, msg: DecideApproval, _: &mut Context<Self>) -> Self::Result {
        let pending = match self.tree.get_json::<ApprovalRecord>(&msg.id) {
            // One decision per request: a second one (or one racing the expiry) is refused
            // before anything is audited.
            Ok(Some(r)) if r.state == ApprovalState::Pending && !self.deciding.contains(&r.id) => r,
            Ok(_) => return Box::pin(fut::ready(Err(ApprovalError::NotFound(msg.id)))),
            Err(e) => return Box::pin(fut::ready(Err(e.into()))),
        };
        self.deciding.insert(pending.id.clone());
        let audit = self.audit.clone();
        let record = decided_record(&pending, &msg.actor, msg.approved);
        Box::pin(
            async move { matches!(audit.send(record).await, Ok(Ok(_))) }
                .into_actor(self)
                .map(move |audited, this, _| {
                    this.deciding.remove(&msg.id);
                    if !audited {
                        return Err(ApprovalError::AuditFailed);
                    }
                    let state = if msg.approved {
                        ApprovalState::Approved
                    } else {
                        ApprovalState::Denied
                    };
                    let record = this.finish(&msg.id, state, &msg.actor)?;
                    this.db.flush_blocking()?;
                    if let Some(waiter) = this.waiting.remove(&msg.id) {
                        let outcome = if msg.approved {
                            ApprovalOutcome::Approved {
                                id: msg.id.clone(),
                                by: msg.actor.clone(),
                            }
                        } else {
                            ApprovalOutcome::Denied {
                                id: msg.id.clone(),
                                by: msg.actor.clone(),
                            }
                        };
                        let _ = waiter.send(outcome);
                    }
                    Ok(record)
                }),
        )
    }
}

impl Handler<WithdrawForTurn> for Approvals {
    type Result = ResponseActFuture<Self, Result<usize, ApprovalError>>;

    fn handle(&mut self, msg: WithdrawForTurn, ctx: &mut Context<Self>) -> Self::Result {
        let ids: Vec<String> = match self.pending() {
            Ok(pending) => pending
                .into_iter()
                .filter(|r| {
                    r.trace_id == msg.trace_id
                        && r.tool == msg.tool
                        && self.waiting.contains_key(&r.id)
                })
                .map(|r| r.id)
                .collect(),
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        // The same path as an operator's denial: audited first, then the waiter is answered.
        let me = ctx.address();
        Box::pin(
            async move {
                let mut withdrawn = 0;
                for id in ids {
                    let decision = DecideApproval {
                        id,
                        approved: false,
                        actor: RESTRICTION_ACTOR.to_string(),
                    };
                    match me.send(decision).await {
                        Ok(Ok(_)) => withdrawn += 1,
                        // Decided meanwhile by an operator: nothing left to withdraw.
                        Ok(Err(ApprovalError::NotFound(_))) => {}
                        Ok(Err(e)) => return Err(e),
                        Err(_) => return Err(ApprovalError::AuditFailed),
                    }
                }
                Ok(withdrawn)
            }
            .into_actor(self),
        )
    }
}
