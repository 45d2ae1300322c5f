//! The tool executor: policy decision, audit, and confined execution of the agent's tools.
//!
//! Owns: the [`ToolExecutor`] actor and its messages, the `exec` checker (`command`, `rules`,
//! `launchers`, `paths`, `git`, `check`), the sandbox (the only code in KafClaw that spawns a
//! process, and its Landlock confinement), the file tools, and `skill_run` (`skill`: a skill's
//! entry, prepared and audited by the root crate's [`SkillHost`], run here).
//! Must not: run anything through a shell; run a tool whose decision is not durably audited;
//! put a tool's output, a file's content or the child's environment in the audit log.
//!
//! One call, in order: the policy decides ([`crate::policy::decide`]); for a call that is not
//! denied, the tool's own checks run (the command checker, the path confinement), so a refused
//! argument becomes a denial and an approval is never asked for a command that could not run;
//! the decision is appended to the audit log with `send().await` (an append error fails
//! closed: nothing runs, the caller gets an error); a denied tier-2 call is signalled as
//! [`HighRiskDenied`]; an allowed call runs (blocking file work on the blocking pool, the
//! child process asynchronously, so a slow command never holds the actor); the execution is
//! audited; only then does the result go back.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::audit::{AppendRecord, AuditError, AuditKind};
use crate::paths::Home;
use crate::policy::{
    self, Decision, DenyReason, PolicyInput, PolicySettings, Restriction, SenderKind, Tool,
};
use crate::supervisor::{Ping, Pong};

mod check;
mod command;
mod files;
mod git;
mod launchers;
mod paths;
mod rules;
mod sandbox;
mod skill;

pub use check::{CheckedCommand, CommandChecker};
pub use command::{split as split_command, Denial, MAX_ARGS, MAX_COMMAND_BYTES};
pub use files::{DirEntryInfo, FileLimits, FileToolError, FileTools, WriteReport};
pub use launchers::{
    classify, classify_name, refused as refused_launchers, RefusedProgram, Verdict,
};
pub use paths::{resolve_existing_prefix, Confinement, SecretRule};
pub use rules::{
    AllowList, AllowListWarning, AllowedProgram, ProgramRule, DEFAULT_ALLOW, FIXED_PATH,
};
pub use sandbox::{
    kernel_support, run as run_sandboxed, Captured, ChildAccess, ExecReport, ExitState, KernelJail,
    KernelSupport, LandlockUnavailable, SandboxError, SandboxLimits, SandboxMode, SandboxStatus,
};

pub use skill::{
    container_argv, credential_env, runtime_client_env, HostFuture, SkillCaller, SkillCredential,
    SkillHost, SkillIsolation, SkillPlan, RUNTIME_CLIENT_ENV,
};

#[cfg(test)]
mod adversarial;
#[cfg(test)]
mod tests;

/// `tools.exec.*` plus the file tools' caps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecSettings {
    /// Programs `exec` may run, as bare names.
    pub allow: Vec<String>,
    /// Wall-clock limit of one command.
    pub timeout_seconds: u64,
    /// Whether paths must resolve inside the workspace or the work repo.
    pub restrict_workspace: bool,
    /// Bytes kept from each of stdout and stderr.
    pub max_output_bytes: usize,
    /// `RLIMIT_CPU` of the child, seconds.
    pub cpu_seconds: u64,
    /// `RLIMIT_FSIZE` of the child, bytes.
    pub max_file_size_bytes: u64,
    /// `RLIMIT_NOFILE` of the child.
    pub max_open_files: u64,
    /// `RLIMIT_NPROC` of the child (not applied as root).
    pub max_processes: u64,
    /// `RLIMIT_DATA` of the child, bytes (its heap; 1 GiB).
    pub max_memory_bytes: u64,
    /// The largest file `read_file`/`edit_file` handles, bytes.
    pub max_read_bytes: u64,
    /// The largest content `write_file`/`edit_file` writes, bytes.
    pub max_write_bytes: usize,
    /// `tools.exec.sandbox`: kernel confinement of every child (Landlock).
    pub sandbox: SandboxMode,
}

impl Default for ExecSettings {
    fn default() -> Self {
        let limits = SandboxLimits::default();
        let files = FileLimits::default();
        Self {
            allow: DEFAULT_ALLOW.iter().map(|s| s.to_string()).collect(),
            timeout_seconds: limits.timeout.as_secs(),
            restrict_workspace: true,
            max_output_bytes: limits.max_output_bytes,
            cpu_seconds: limits.cpu_seconds,
            max_file_size_bytes: limits.file_size_bytes,
            max_open_files: limits.open_files,
            max_processes: limits.processes,
            max_memory_bytes: limits.memory_bytes,
            max_read_bytes: files.max_read_bytes,
            max_write_bytes: files.max_write_bytes,
            sandbox: SandboxMode::default(),
        }
    }
}

impl ExecSettings {
    /// The sandbox limits these settings describe.
    pub fn sandbox_limits(&self) -> SandboxLimits {
        SandboxLimits {
            timeout: Duration::from_secs(self.timeout_seconds.max(1)),
            max_output_bytes: self.max_output_bytes,
            cpu_seconds: self.cpu_seconds.max(1),
            file_size_bytes: self.max_file_size_bytes,
            open_files: self.max_open_files.max(16),
            processes: self.max_processes.max(1),
            // Below 16 MiB not even a small program starts.
            memory_bytes: self.max_memory_bytes.max(16 * 1024 * 1024),
        }
    }

    /// The file tools' caps these settings describe.
    pub fn file_limits(&self) -> FileLimits {
        FileLimits {
            max_read_bytes: self.max_read_bytes,
            max_write_bytes: self.max_write_bytes,
            ..FileLimits::default()
        }
    }
}

/// Runs one tool call for the agent.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<ToolOutcome, ExecutorError>")]
pub struct ExecuteTool {
    /// The model's tool-call id (echoed back, recorded).
    pub call_id: String,
    /// The tool's name as the model called it.
    pub tool: String,
    /// The arguments as the model sent them.
    pub arguments: Value,
    /// The sender's kind.
    pub sender: SenderKind,
    /// The sender's id (the audit record's actor).
    pub sender_id: String,
    /// The channel the message came from.
    pub channel: String,
    /// The agent session.
    pub session: String,
    /// The runtime restriction in force.
    pub restriction: Restriction,
    /// Whether the sender is blocked.
    pub sender_blocked: bool,
    /// Set when an operator approved exactly this call (the approval's id): a `NeedsApproval`
    /// decision then runs. A denial stays a denial.
    pub approved_by: Option<String>,
}

/// A denied tier-2 call: a signal for the incident monitor (CONTRACT §6, repeated high-risk
/// tool attempts).
#[derive(Message, Clone, Debug, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct HighRiskDenied {
    /// The sender's id.
    pub sender_id: String,
    /// The sender's kind.
    pub sender: SenderKind,
    /// The channel.
    pub channel: String,
    /// The agent session.
    pub session: String,
    /// The tool.
    pub tool: String,
    /// Why it was denied.
    pub reason: String,
}

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    /// The tool ran and succeeded (for `exec`: it ran; see the exit status in the content).
    Completed,
    /// The tool ran and failed (file not found, `old_text` ambiguous, spawn error, …).
    Failed,
    /// The call was denied; nothing ran.
    Denied,
    /// The call waits for an operator's approval; nothing ran yet.
    ApprovalRequired,
}

/// The result of one call, as handed back to the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ToolOutcome {
    /// The model's tool-call id.
    pub call_id: String,
    /// The tool's name.
    pub tool: String,
    /// How the call ended.
    pub status: OutcomeStatus,
    /// The text for the model.
    pub content: String,
    /// For `exec` commands that ran: the exit status.
    pub exit: Option<ExitState>,
}

/// Why a call could not be handled. The caller must not treat the tool as run or not run
/// with certainty beyond what the variant says.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The audit log refused the record; the tool did not run (decision record) or its
    /// result is withheld (execution record).
    #[error("audit append failed: {0}")]
    AuditFailed(AuditError),
    /// The audit chainer's mailbox is closed.
    #[error("audit log unavailable")]
    AuditUnavailable,
    /// A blocking task of the executor panicked or was cancelled.
    #[error("tool task failed: {0}")]
    TaskFailed(String),
}

/// Why the executor cannot be built (the gateway refuses to start, exit 2, with this line).
#[derive(Debug, thiserror::Error)]
pub enum ExecutorSetupError {
    /// `tools.exec.allow` names programs that start other programs.
    #[error("refusing to start: tools.exec.allow names launchers, programs that start other programs: {}; remove them from tools.exec.allow", launcher_list(.0))]
    Launchers(Vec<RefusedProgram>),
    /// `tools.exec.sandbox = landlock` without kernel support.
    #[error(transparent)]
    Landlock(#[from] LandlockUnavailable),
}

fn launcher_list(refused: &[RefusedProgram]) -> String {
    refused
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The executor actor. Cheap to clone (the state is shared), so a supervisor factory can
/// hand out fresh instances.
#[derive(Clone)]
pub struct ToolExecutor {
    /// Checkers, file tools and limits, shared with in-flight calls.
    inner: Arc<Inner>,
    /// The audit log.
    audit: Recipient<AppendRecord>,
    /// The incident monitor's signal.
    high_risk: Option<Recipient<HighRiskDenied>>,
}

struct Inner {
    checker: CommandChecker,
    files: FileTools,
    limits: SandboxLimits,
    policy: PolicySettings,
    /// The child's `HOME`: the work repo.
    child_home: PathBuf,
    /// What the kernel lets every child touch.
    jail: KernelJail,
    /// How children are confined (for `status` and the start-up line).
    sandbox: SandboxStatus,
    /// The skills tree (`skill_run`); `None` when skills are off.
    skills: Option<Arc<dyn SkillHost>>,
    /// Whose each saved media file is; `None`: no media root to guard.
    media: Option<crate::channel::media::MediaOwners>,
}

/// Where the executor works and what it reports to.
pub struct ExecutorLinks {
    /// The audit log.
    pub audit: Recipient<AppendRecord>,
    /// The incident monitor's signal.
    pub high_risk: Option<Recipient<HighRiskDenied>>,
    /// The skills tree (`skill_run`); `None` when skills are off (the call is then denied).
    pub skills: Option<Arc<dyn SkillHost>>,
    /// Whose each saved media file is: an external sender reads under the media root only the
    /// files of their own session, and never lists it.
    pub media: Option<crate::channel::media::MediaOwners>,
}

impl ToolExecutor {
    /// An executor for `workspace` (read) and `work_repo` (read, write, default working
    /// directory), never touching `home`'s secret paths, its children confined as
    /// `settings.sandbox` and `kernel` say. A launcher on the allow-list or a required
    /// Landlock the kernel lacks is an error; other allow-list names that cannot be resolved
    /// are dropped and returned as warnings.
    pub fn new(
        settings: &ExecSettings,
        policy: PolicySettings,
        roots: (&Path, &Path),
        home: &Home,
        kernel: KernelSupport,
        links: ExecutorLinks,
    ) -> Result<(Self, Vec<AllowListWarning>), ExecutorSetupError> {
        let (workspace, work_repo) = roots;
        let refused = launchers::refused(&settings.allow);
        if !refused.is_empty() {
            return Err(ExecutorSetupError::Launchers(refused));
        }
        let sandbox = SandboxStatus::decide(settings.sandbox, kernel)?;
        let confinement = Confinement::new(workspace, work_repo, home);
        let (checker, warnings) = CommandChecker::new(
            &settings.allow,
            confinement.clone(),
            settings.restrict_workspace,
        );
        let child_home = confinement.work_repo().to_path_buf();
        let jail = KernelJail::new(&sandbox, &confinement);
        let inner = Inner {
            checker,
            files: FileTools::new(confinement, settings.file_limits()),
            limits: settings.sandbox_limits(),
            policy,
            child_home,
            jail,
            sandbox,
            skills: links.skills,
            media: links.media,
        };
        let executor = Self {
            inner: Arc::new(inner),
            audit: links.audit,
            high_risk: links.high_risk,
        };
        Ok((executor, warnings))
    }

    /// The command checker in force.
    pub fn checker(&self) -> &CommandChecker {
        &self.inner.checker
    }

    /// How children are confined.
    pub fn sandbox(&self) -> &SandboxStatus {
        &self.inner.sandbox
    }
}

impl Actor for ToolExecutor {
    type Context = Context<Self>;
}

impl Handler<Ping> for ToolExecutor {
    type Result = Pong;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Pong {
        Pong
    }
}

#[cfg(any(test, feature = "test-hooks"))]
impl Handler<crate::supervisor::InjectPanic> for ToolExecutor {
    type Result = ();
    fn handle(&mut self, msg: crate::supervisor::InjectPanic, _: &mut Context<Self>) {
        panic!("injected panic: {}", msg.0);
    }
}

impl Handler<ExecuteTool> for ToolExecutor {
    type Result = ResponseFuture<Result<ToolOutcome, ExecutorError>>;

    fn handle(&mut self, msg: ExecuteTool, _: &mut Context<Self>) -> Self::Result {
        let inner = Arc::clone(&self.inner);
        let audit = self.audit.clone();
        let high_risk = self.high_risk.clone();
        Box::pin(async move { execute(inner, audit, high_risk, msg).await })
    }
}

/// A call whose arguments passed the tool's own checks.
enum Prepared {
    Exec(CheckedCommand),
    File(FileCall),
    Skill(Box<SkillPlan>),
}

/// A file-tool call; paths as given (resolved again when run).
enum FileCall {
    Read(String),
    List(String),
    Write {
        path: String,
        content: String,
    },
    Edit {
        path: String,
        old_text: String,
        new_text: String,
    },
}

/// Why a call's arguments were refused before anything ran.
enum Refusal {
    Invalid(String),
    Denied(Denial),
    Skill(String),
}

async fn execute(
    inner: Arc<Inner>,
    audit: Recipient<AppendRecord>,
    high_risk: Option<Recipient<HighRiskDenied>>,
    msg: ExecuteTool,
) -> Result<ToolOutcome, ExecutorError> {
    let tool = Tool::from_name(&msg.tool);
    let tier = tool.map(Tool::tier);
    let mut decision = match tool {
        None => Decision::Deny(DenyReason::UnknownTool),
        Some(t) => policy::decide(&PolicyInput {
            sender: msg.sender,
            channel: &msg.channel,
            tool: &msg.tool,
            tier: t.tier(),
            restriction: &msg.restriction,
            sender_blocked: msg.sender_blocked,
            settings: &inner.policy,
        }),
    };

    if decision == Decision::NeedsApproval && msg.approved_by.is_some() {
        decision = Decision::Allow;
    }

    let mut detail: Option<String> = None;
    let mut prepared = None;
    if let (Some(t), false) = (tool, matches!(decision, Decision::Deny(_))) {
        let args = msg.arguments.clone();
        let checked = Arc::clone(&inner);
        let (sender, session) = (msg.sender, msg.session.clone());
        let result = tokio::task::spawn_blocking(move || {
            let prepared = prepare(&checked, t, &args)?;
            media_scope(&checked, sender, &session, &prepared)?;
            Ok(prepared)
        })
        .await
        .map_err(|e| ExecutorError::TaskFailed(e.to_string()))?;
        match result {
            Ok(p) => prepared = Some(p),
            Err(Refusal::Invalid(why)) => {
                decision = Decision::Deny(DenyReason::InvalidArguments);
                detail = Some(why);
            }
            Err(Refusal::Denied(denial)) => {
                decision = Decision::Deny(DenyReason::ArgumentsRefused);
                detail = Some(denial.to_string());
            }
            Err(Refusal::Skill(why)) => {
                decision = Decision::Deny(DenyReason::ArgumentsRefused);
                detail = Some(why);
            }
        }
    }

    let reason = match &decision {
        Decision::Deny(r) => Some(match &detail {
            Some(d) => format!("{r}: {d}"),
            None => r.to_string(),
        }),
        _ => None,
    };
    let mut data = json!({
        "call_id": msg.call_id,
        "channel": msg.channel,
        "session": msg.session,
        "sender_kind": msg.sender.as_str(),
        "tool": msg.tool,
        "tier": tier,
        "decision": decision.as_str(),
        "reason": reason,
        "approved_by": msg.approved_by,
    });
    describe_prepared(&mut data, prepared.as_ref());
    append(&audit, AuditKind::ToolDecided, &msg, data).await?;
    crate::metrics::metrics().tool_decision(&msg.tool, decision.as_str());

    let outcome = |status, content: String| ToolOutcome {
        call_id: msg.call_id.clone(),
        tool: msg.tool.clone(),
        status,
        content,
        exit: None,
    };
    match decision {
        Decision::Deny(why) => {
            let reason = reason.unwrap_or_default();
            // An owner stopped by the operator's own restriction is not a high-risk attempt:
            // counting it would block the owner's sender after a lockdown is lifted.
            let operator_restricted = msg.sender == SenderKind::Owner
                && matches!(why, DenyReason::AboveRestriction { .. });
            if tier == Some(2) && !operator_restricted {
                let signal = HighRiskDenied {
                    sender_id: msg.sender_id.clone(),
                    sender: msg.sender,
                    channel: msg.channel.clone(),
                    session: msg.session.clone(),
                    tool: msg.tool.clone(),
                    reason: reason.clone(),
                };
                let delivered = match &high_risk {
                    Some(recipient) => recipient.send(signal).await.is_ok(),
                    None => false,
                };
                if !delivered {
                    tracing::warn!(tool = %msg.tool, "incident monitor unavailable; high-risk denial not signalled");
                }
            }
            Ok(outcome(OutcomeStatus::Denied, format!("denied: {reason}")))
        }
        Decision::NeedsApproval => Ok(outcome(
            OutcomeStatus::ApprovalRequired,
            format!(
                "tool {} (tier {}) requires an operator's approval",
                msg.tool,
                tier.unwrap_or_default()
            ),
        )),
        Decision::Allow => {
            let Some(prepared) = prepared else {
                return Err(ExecutorError::TaskFailed(
                    "allowed call was not prepared".into(),
                ));
            };
            let (mut result, record) = match prepared {
                Prepared::Skill(plan) => run_skill(&inner, &msg, *plan).await?,
                other => run(&inner, other).await?,
            };
            let mut data = record;
            if let Some(map) = data.as_object_mut() {
                map.insert("call_id".into(), json!(msg.call_id));
                map.insert("status".into(), json!(result.status));
            }
            append(&audit, AuditKind::ToolExecuted, &msg, data).await?;
            result.call_id = msg.call_id.clone();
            result.tool = msg.tool.clone();
            Ok(result)
        }
    }
}

async fn append(
    audit: &Recipient<AppendRecord>,
    kind: AuditKind,
    msg: &ExecuteTool,
    data: Value,
) -> Result<(), ExecutorError> {
    let record = AppendRecord {
        kind,
        actor: msg.sender_id.clone(),
        subject: msg.tool.clone(),
        data,
    };
    match audit.send(record).await {
        Ok(Ok(_receipt)) => Ok(()),
        Ok(Err(e)) => Err(ExecutorError::AuditFailed(e)),
        Err(_mailbox) => Err(ExecutorError::AuditUnavailable),
    }
}

fn str_arg(args: &Value, name: &str) -> Result<String, Refusal> {
    match args.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Refusal::Invalid(format!("{name} must be a string"))),
        None => Err(Refusal::Invalid(format!("missing {name}"))),
    }
}

/// The media root holds every conversation's files side by side: an external sender may read
/// there only a file saved for their own session, and may not list it (the names are other
/// senders' message ids). Owners are not limited.
fn media_scope(
    inner: &Inner,
    sender: SenderKind,
    session: &str,
    prepared: &Prepared,
) -> Result<(), Refusal> {
    let (Some(media), SenderKind::External) = (&inner.media, sender) else {
        return Ok(());
    };
    let (raw, listing) = match prepared {
        Prepared::File(FileCall::Read(path)) => (path, false),
        Prepared::File(FileCall::List(path)) => (path, true),
        _ => return Ok(()),
    };
    let path = inner.files.resolve_read(raw).map_err(Refusal::Denied)?;
    if !media.covers(&path) {
        return Ok(());
    }
    if listing {
        return Err(Refusal::Skill(
            "the media directory holds every conversation's files; an external sender cannot list it".into(),
        ));
    }
    match media.owner(&path) {
        Some(owner) if owner == session => Ok(()),
        _ => Err(Refusal::Skill(
            "this media file belongs to another conversation".into(),
        )),
    }
}

fn prepare(inner: &Inner, tool: Tool, args: &Value) -> Result<Prepared, Refusal> {
    if !args.is_object() {
        return Err(Refusal::Invalid("arguments must be a JSON object".into()));
    }
    let denied = Refusal::Denied;
    match tool {
        Tool::Exec => {
            let command = str_arg(args, "command")?;
            let working_dir = match args.get("working_dir") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(Refusal::Invalid("working_dir must be a string".into())),
            };
            inner
                .checker
                .check(&command, working_dir.as_deref())
                .map(Prepared::Exec)
                .map_err(denied)
        }
        Tool::ReadFile => {
            let path = str_arg(args, "path")?;
            inner.files.resolve_read(&path).map_err(denied)?;
            Ok(Prepared::File(FileCall::Read(path)))
        }
        Tool::ListDir => {
            let path = str_arg(args, "path")?;
            inner.files.resolve_read(&path).map_err(denied)?;
            Ok(Prepared::File(FileCall::List(path)))
        }
        Tool::WriteFile => {
            let path = str_arg(args, "path")?;
            let content = str_arg(args, "content")?;
            inner.files.resolve_write(&path).map_err(denied)?;
            Ok(Prepared::File(FileCall::Write { path, content }))
        }
        Tool::SkillRun => {
            let skill = str_arg(args, "skill")?;
            let skill_args = match args.get("args") {
                None | Some(Value::Null) => json!({}),
                Some(v @ Value::Object(_)) => v.clone(),
                Some(_) => return Err(Refusal::Invalid("args must be an object".into())),
            };
            let host = inner
                .skills
                .as_ref()
                .ok_or_else(|| Refusal::Skill("skills are off (skills.enabled)".into()))?;
            host.prepare(&skill, &skill_args)
                .map(|plan| Prepared::Skill(Box::new(plan)))
                .map_err(Refusal::Skill)
        }
        Tool::EditFile => {
            let path = str_arg(args, "path")?;
            let old_text = str_arg(args, "old_text")?;
            let new_text = str_arg(args, "new_text")?;
            inner.files.resolve_write(&path).map_err(denied)?;
            Ok(Prepared::File(FileCall::Edit {
                path,
                old_text,
                new_text,
            }))
        }
    }
}

/// Adds what the decision was about (argv and cwd, or the path) — never contents.
fn describe_prepared(data: &mut Value, prepared: Option<&Prepared>) {
    let Some(map) = data.as_object_mut() else {
        return;
    };
    match prepared {
        Some(Prepared::Exec(c)) => {
            map.insert("argv".into(), json!(c.argv));
            map.insert("cwd".into(), json!(c.cwd));
        }
        Some(Prepared::Skill(plan)) => {
            map.insert("skill".into(), plan.describe());
        }
        Some(Prepared::File(
            FileCall::Read(p)
            | FileCall::List(p)
            | FileCall::Write { path: p, .. }
            | FileCall::Edit { path: p, .. },
        )) => {
            map.insert("path".into(), json!(p));
        }
        None => {}
    }
}

/// Runs a prepared call; returns the outcome and the execution record's data.
async fn run(
    inner: &Arc<Inner>,
    prepared: Prepared,
) -> Result<(ToolOutcome, Value), ExecutorError> {
    let outcome = |status, content, exit| ToolOutcome {
        call_id: String::new(),
        tool: String::new(),
        status,
        content,
        exit,
    };
    let call = match prepared {
        Prepared::File(call) => call,
        Prepared::Skill(_) => {
            return Err(ExecutorError::TaskFailed(
                "a skill run is not a file call".into(),
            ))
        }
        Prepared::Exec(command) => {
            return Ok(
                match sandbox::run(&command, &inner.child_home, &inner.jail, &inner.limits).await {
                    Ok(report) => {
                        let record = json!({
                            "argv": command.argv,
                            "cwd": command.cwd,
                            "exit": report.status,
                            "duration_ms": u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
                            "timed_out": report.timed_out,
                            "stdout_bytes": report.stdout.total_bytes,
                            "stderr_bytes": report.stderr.total_bytes,
                            "stdout_truncated": report.stdout.truncated,
                            "stderr_truncated": report.stderr.truncated,
                        });
                        let content = format_exec(&report, inner.limits.timeout);
                        (
                            outcome(OutcomeStatus::Completed, content, Some(report.status)),
                            record,
                        )
                    }
                    Err(e) => {
                        let record = json!({ "argv": command.argv, "cwd": command.cwd, "error": e.to_string() });
                        (
                            outcome(OutcomeStatus::Failed, format!("error: {e}"), None),
                            record,
                        )
                    }
                },
            )
        }
    };
    let shared = Arc::clone(inner);
    tokio::task::spawn_blocking(move || {
        let files = &shared.files;
        let (result, path): (Result<(String, Value), FileToolError>, String) = match call {
            FileCall::Read(path) => (
                files.read_file(&path).map(|text| {
                    let bytes = text.len();
                    (text, json!({ "bytes": bytes }))
                }),
                path,
            ),
            FileCall::List(path) => (
                files.list_dir(&path).map(|entries| {
                    let count = entries.len();
                    (format_listing(&entries), json!({ "entries": count }))
                }),
                path,
            ),
            FileCall::Write { path, content } => (
                files.write_file(&path, &content).map(|w| {
                    (
                        format!("wrote {} bytes to {}", w.bytes, w.path),
                        json!({ "bytes": w.bytes }),
                    )
                }),
                path,
            ),
            FileCall::Edit {
                path,
                old_text,
                new_text,
            } => (
                files.edit_file(&path, &old_text, &new_text).map(|w| {
                    (
                        format!("edited {} ({} bytes)", w.path, w.bytes),
                        json!({ "bytes": w.bytes }),
                    )
                }),
                path,
            ),
        };
        match result {
            Ok((content, mut record)) => {
                if let Some(map) = record.as_object_mut() {
                    map.insert("path".into(), json!(path));
                }
                (outcome(OutcomeStatus::Completed, content, None), record)
            }
            Err(e) => {
                let record = json!({ "path": path, "error": e.to_string() });
                (
                    outcome(OutcomeStatus::Failed, format!("error: {e}"), None),
                    record,
                )
            }
        }
    })
    .await
    .map_err(|e| ExecutorError::TaskFailed(e.to_string()))
}

/// Runs a skill's entry: its start audited (and its pins checked) by the host first, its
/// finish after; credential values masked in what the model sees.
async fn run_skill(
    inner: &Arc<Inner>,
    msg: &ExecuteTool,
    plan: SkillPlan,
) -> Result<(ToolOutcome, Value), ExecutorError> {
    let outcome = |status, content, exit| ToolOutcome {
        call_id: String::new(),
        tool: String::new(),
        status,
        content,
        exit,
    };
    let Some(host) = inner.skills.clone() else {
        return Err(ExecutorError::TaskFailed("skills are off".into()));
    };
    let caller = SkillCaller {
        call_id: msg.call_id.clone(),
        sender_id: msg.sender_id.clone(),
        channel: msg.channel.clone(),
        session: msg.session.clone(),
    };
    let mut record = plan.describe();
    let credentials = match host.begin(&plan, &caller).await {
        Ok(c) => c,
        Err(e) => {
            record["error"] = json!(e);
            return Ok((
                outcome(OutcomeStatus::Failed, format!("error: {e}"), None),
                record,
            ));
        }
    };
    let work_repo = inner.child_home.clone();
    let result = skill::run(&plan, &credentials, &work_repo, &inner.jail, &inner.limits).await;
    let (result, finished) = match result {
        Ok(report) => {
            let finished = json!({
                "exit": report.status,
                "duration_ms": u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
                "timed_out": report.timed_out,
                "stdout_bytes": report.stdout.total_bytes,
                "stderr_bytes": report.stderr.total_bytes,
                "stdout_truncated": report.stdout.truncated,
                "stderr_truncated": report.stderr.truncated,
            });
            let content = skill::mask(format_exec(&report, inner.limits.timeout), &credentials);
            (
                outcome(OutcomeStatus::Completed, content, Some(report.status)),
                finished,
            )
        }
        Err(e) => {
            let e = skill::mask(e.to_string(), &credentials);
            (
                outcome(OutcomeStatus::Failed, format!("error: {e}"), None),
                json!({ "error": e }),
            )
        }
    };
    drop(credentials);
    if let Err(e) = host.finish(&plan, &caller, finished.clone()).await {
        tracing::error!(skill = %plan.skill, error = %e, "skill run finished but not audited");
    }
    if let (Some(map), Some(add)) = (record.as_object_mut(), finished.as_object()) {
        map.extend(add.clone());
    }
    Ok((result, record))
}

fn format_listing(entries: &[DirEntryInfo]) -> String {
    let mut out = String::new();
    for e in entries {
        if e.is_symlink {
            out.push_str(&format!("[LINK] {}\n", e.name));
        } else if e.is_dir {
            out.push_str(&format!("[DIR]  {}/\n", e.name));
        } else {
            out.push_str(&format!("[FILE] {} ({} bytes)\n", e.name, e.size));
        }
    }
    if out.is_empty() {
        out.push_str("(empty directory)");
    }
    out
}

/// The text the model sees for a command that ran.
pub fn format_exec(report: &ExecReport, timeout: Duration) -> String {
    let mut out = String::from_utf8_lossy(&report.stdout.bytes).into_owned();
    if report.stdout.truncated {
        out.push_str(&format!(
            "\n[stdout truncated: {} of {} bytes shown]",
            report.stdout.bytes.len(),
            report.stdout.total_bytes
        ));
    }
    if report.stderr.total_bytes > 0 {
        out.push_str("\nSTDERR:\n");
        out.push_str(&String::from_utf8_lossy(&report.stderr.bytes));
        if report.stderr.truncated {
            out.push_str(&format!(
                "\n[stderr truncated: {} of {} bytes shown]",
                report.stderr.bytes.len(),
                report.stderr.total_bytes
            ));
        }
    }
    if report.timed_out {
        out.push_str(&format!(
            "\ntimed out after {} s; the command was killed",
            timeout.as_secs()
        ));
    } else {
        match report.status {
            ExitState::Code(0) => {}
            ExitState::Code(code) => out.push_str(&format!("\nexit code: {code}")),
            ExitState::Signal(signal) => out.push_str(&format!("\nkilled by signal {signal}")),
        }
    }
    if out.is_empty() {
        out.push_str("(no output)");
    }
    out
}
