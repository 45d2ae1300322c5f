//! Operator commands that act on the trust core: `secrets`, `token`, `audit`.
//! Each goes through a running gateway's control socket when one answers, and otherwise starts
//! the same actors itself (see [`crate::ops`]).

use std::collections::HashMap;
use std::io::Read;

use serde_json::{json, Value};

use kafclaw_actors::audit::{AuditError, RecordedHead, RepairOptions};
use kafclaw_actors::paths::Home;

use crate::cli::{ApprovalsCommand, AuditCommand, PairingCommand, SecretsCommand, TokenCommand};
use crate::envelope::{self, ErrorCode};
use crate::ops::{self, OpError, OpsContext};
use crate::protocol::{self, Answer, Operation};
use crate::settings::Settings;

pub mod skills;

/// Everything a command needs from `main`.
pub struct CommandEnv<'a> {
    /// The KafClaw root.
    pub home: &'a Home,
    /// Loaded settings.
    pub settings: Settings,
    /// The process environment.
    pub env: &'a HashMap<String, String>,
    /// `--json`.
    pub json: bool,
    /// The command's name in the `--json` document (`secrets list`, `admin`, …).
    pub command: String,
    /// `--url` (and `--token`): a remote gateway instead of the local control socket.
    pub remote: Option<crate::remote::RemoteArgs>,
    /// `--token` without `--url`: the contract's older `kafclaw admin … --token T`, which
    /// still reaches this host's dashboard port when no gateway answers on the socket.
    pub local_token: Option<String>,
}

/// `kafclaw secrets …`.
pub fn secrets(cmd: SecretsCommand, ctx: CommandEnv<'_>) -> i32 {
    let op = match cmd {
        SecretsCommand::Set { name } => {
            let mut value = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut value) {
                return envelope::fail(
                    &ctx.command,
                    ctx.json,
                    ErrorCode::Internal,
                    &format!("cannot read the value from stdin: {e}"),
                );
            }
            let value = value.trim_end_matches(['\n', '\r']).to_string();
            Operation::SecretSet { name, value }
        }
        SecretsCommand::List => Operation::SecretList,
        SecretsCommand::Rm { name } => Operation::SecretRm { name },
        SecretsCommand::RotateKey => Operation::SecretRotateKey,
    };
    let (json, command) = (ctx.json, ctx.command.clone());
    finish(run(op, ctx), &command, json, |result| match result {
        Value::Array(items) => {
            if items.is_empty() {
                println!("no secrets");
            }
            for item in items {
                let internal = if item["internal"] == true {
                    "  (internal)"
                } else {
                    ""
                };
                println!(
                    "{}  created {}  updated {}{internal}",
                    item["name"].as_str().unwrap_or_default(),
                    item["created"].as_str().unwrap_or_default(),
                    item["updated"].as_str().unwrap_or_default()
                );
            }
        }
        other if other.get("new_key_id").is_some() => println!(
            "vault key rotated: {} -> {}, {} secrets re-sealed",
            other["old_key_id"].as_str().unwrap_or_default(),
            other["new_key_id"].as_str().unwrap_or_default(),
            other["resealed"]
        ),
        other => println!(
            "secret {}: {}",
            other["name"].as_str().unwrap_or_default(),
            other["action"].as_str().unwrap_or_default()
        ),
    })
}

/// `kafclaw token …`.
pub fn token(cmd: TokenCommand, ctx: CommandEnv<'_>) -> i32 {
    let op = match cmd {
        TokenCommand::Create { scope, ttl, name } => Operation::TokenCreate { scope, ttl, name },
        TokenCommand::List => Operation::TokenList,
        TokenCommand::Revoke { name } => Operation::TokenRevoke { name },
    };
    let (json, command) = (ctx.json, ctx.command.clone());
    finish(run(op, ctx), &command, json, |result| match result {
        Value::Array(items) => {
            if items.is_empty() {
                println!("no tokens");
            }
            for t in items {
                let state = if t["revoked_at"].is_string() {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{}  scope={}  created={}  expires={}  last_used={}  {state}",
                    t["name"].as_str().unwrap_or_default(),
                    t["scope"].as_str().unwrap_or_default(),
                    t["created_at"].as_str().unwrap_or_default(),
                    t["expires_at"].as_str().unwrap_or("never"),
                    t["last_used_at"].as_str().unwrap_or("never"),
                );
            }
        }
        other if other.get("token").is_some() => {
            println!("{}", other["token"].as_str().unwrap_or_default());
            eprintln!(
                "token {} (scope {}) created; it is shown once and stored only as a keyed hash",
                other["name"].as_str().unwrap_or_default(),
                other["scope"].as_str().unwrap_or_default()
            );
        }
        other => println!(
            "token {} revoked",
            other["name"].as_str().unwrap_or_default()
        ),
    })
}

/// `kafclaw approvals …`: only meaningful against a running gateway (a waiting turn lives
/// there), so without one the pending list is empty and decisions find nothing.
pub fn approvals(cmd: ApprovalsCommand, ctx: CommandEnv<'_>) -> i32 {
    let op = match cmd {
        ApprovalsCommand::List => Operation::ApprovalList,
        ApprovalsCommand::Approve { id } => Operation::ApprovalDecide { id, approved: true },
        ApprovalsCommand::Deny { id } => Operation::ApprovalDecide {
            id,
            approved: false,
        },
    };
    let (json, command) = (ctx.json, ctx.command.clone());
    finish(run(op, ctx), &command, json, |result| match result {
        Value::Array(items) => {
            if items.is_empty() {
                println!("no pending approvals");
            }
            for a in items {
                println!(
                    "{}  tool={} tier={} sender={} channel={} expires={}  args={}",
                    a["id"].as_str().unwrap_or_default(),
                    a["tool"].as_str().unwrap_or_default(),
                    a["tier"],
                    a["sender_id"].as_str().unwrap_or_default(),
                    a["channel"].as_str().unwrap_or_default(),
                    a["expires_at"].as_str().unwrap_or_default(),
                    a["arguments"]
                );
            }
        }
        other => println!(
            "{} {}",
            other["id"].as_str().unwrap_or_default(),
            other["state"].as_str().unwrap_or_default()
        ),
    })
}

/// `kafclaw pairing …`: pending codes live in the running gateway's channels, so without one
/// this refuses (exit 2) instead of starting actors of its own. Codes are printed for the
/// operator (they are needed to approve) and go nowhere else.
pub fn pairing(cmd: PairingCommand, ctx: CommandEnv<'_>) -> i32 {
    let op = match cmd {
        PairingCommand::Pending { channel } => Operation::PairingPending { channel },
        PairingCommand::Approve { channel, code } => Operation::PairingApprove { channel, code },
        PairingCommand::Deny { channel, code } => Operation::PairingDeny { channel, code },
    };
    let outcome = match protocol::send(ctx.home, &op) {
        Ok(Some(answer)) => answer.into(),
        Ok(None) => Outcome::Error(ErrorCode::Unavailable, ops::NEEDS_GATEWAY.into()),
        Err(e) => Outcome::Error(ErrorCode::Unavailable, e),
    };
    finish(outcome, &ctx.command, ctx.json, |result| {
        if let Some(pending) = result["pending"].as_array() {
            if pending.is_empty() {
                println!("no pending pairing requests");
            }
            for p in pending {
                println!(
                    "{}  sender={}  code={}  expires={}",
                    p["channel"].as_str().unwrap_or_default(),
                    p["sender_id"].as_str().unwrap_or_default(),
                    p["code"].as_str().unwrap_or_default(),
                    p["expires_at"].as_str().unwrap_or_default(),
                );
            }
            for name in result["unavailable"].as_array().into_iter().flatten() {
                eprintln!(
                    "kafclaw: channel {} is not running; its requests are not listed",
                    name.as_str().unwrap_or_default()
                );
            }
        } else {
            println!(
                "{} {} on {}",
                result["sender_id"].as_str().unwrap_or_default(),
                result["decision"].as_str().unwrap_or_default(),
                result["channel"].as_str().unwrap_or_default(),
            );
        }
    })
}

/// `kafclaw audit …`.
pub fn audit(cmd: AuditCommand, ctx: CommandEnv<'_>) -> i32 {
    match cmd {
        AuditCommand::Verify { from, anchored } => {
            let (json, command) = (ctx.json, ctx.command.clone());
            let anchors = if anchored {
                match anchors_of(&ctx.settings.fleet) {
                    Ok(anchors) => Some(anchors),
                    Err(outcome) => return finish(outcome, &command, json, |_| {}),
                }
            } else {
                None
            };
            let progress = crate::progress::Progress::start(json, "verifying the audit chain");
            let heads = anchors
                .as_ref()
                .map(|a| a.heads.clone())
                .unwrap_or_default();
            let mut outcome = verify(from, heads, ctx);
            progress.finish();
            if let (Outcome::Done(report), Some(anchors)) = (&mut outcome, &anchors) {
                report["anchors_checked"] = json!(anchors.heads.len());
                report["anchors_unreadable"] = json!(anchors.unreadable);
                report["anchor_stream_created"] = json!(anchors.stream_created);
                report["anchor_stream_weaknesses"] = json!(anchors.stream_weaknesses);
            }
            finish(outcome, &command, json, |r| {
                let anchored = match r["anchors_checked"].as_u64() {
                    Some(n) => format!(", matching all {n} fleet anchors of this node"),
                    None => String::new(),
                };
                println!(
                    "ok {} records, head {}{anchored}",
                    r["records"],
                    r["head_hash"].as_str().unwrap_or_default()
                );
                for weakness in r["anchor_stream_weaknesses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    eprintln!(
                        "warning: stream {} {}",
                        crate::fleet::ANCHOR_STREAM,
                        weakness.as_str().unwrap_or_default()
                    );
                }
            })
        }
        AuditCommand::Repair { accept_missing } => repair(ctx, accept_missing),
    }
}

/// `--anchored`: every anchor of this node, read from NATS with the node's fleet settings.
fn anchors_of(fleet: &crate::settings::FleetSettings) -> Result<crate::fleet::Anchors, Outcome> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Outcome::Error(ErrorCode::Internal, e.to_string()))?;
    match runtime.block_on(crate::fleet::anchors(fleet)) {
        Ok(anchors) if anchors.heads.is_empty() => Err(Outcome::Failed(format!(
            "no audit anchor of node {} in the fleet: nothing to verify against",
            fleet.node_id()
        ))),
        Ok(anchors) => Ok(anchors),
        Err(e) => Err(Outcome::Error(ErrorCode::Unavailable, e)),
    }
}

/// Verification needs only the key and the files: with no gateway running it does not start
/// the chainer (which refuses to open a torn log — exactly what verify must report).
fn verify(
    from: Option<u64>,
    anchors: Vec<kafclaw_actors::audit::AuditHead>,
    mut ctx: CommandEnv<'_>,
) -> Outcome {
    let operation = Operation::AuditVerify {
        from,
        anchor: None,
        anchors: anchors.clone(),
    };
    match protocol::send(ctx.home, &operation) {
        Ok(Some(answer)) => return answer.into(),
        Err(e) => return Outcome::Error(ErrorCode::Unavailable, e),
        Ok(None) => {}
    }
    let core = match crate::core::open(ctx.home, &mut ctx.settings, ctx.env) {
        Ok(core) => core,
        Err(e) => return Outcome::Error(ErrorCode::Internal, e.to_string()),
    };
    let recorded = match RecordedHead::for_home(ctx.home, Some(&core.db)).and_then(|h| h.read()) {
        Ok(recorded) => recorded,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let dir = ctx.home.audit_dir();
    // The anchors first: they are the evidence kept off this host, so their verdict is told.
    let anchored = match anchors.is_empty() {
        false => crate::fleet::check_anchors(&dir, &core.audit_key, &anchors),
        true => Ok(()),
    };
    let report = anchored.and_then(|()| {
        kafclaw_actors::audit::verify_against(&dir, &core.audit_key, from, recorded.as_ref())
            .map_err(|e| e.to_string())
    });
    let by = format!("cli:uid={}", rustix::process::geteuid().as_raw());
    crate::last_verify::record(&core.db, &crate::last_verify::outcome(&report, &by));
    let report = report.and_then(|r| {
        crate::ops::skill::check_mirror(ctx.home, &dir)
            .map(|n| (r, n))
            .map_err(|e| {
                format!("the audit chain verifies but the skills audit mirror does not: {e}")
            })
    });
    match report {
        Ok((report, mirrored)) => Outcome::Done(serde_json::json!({
            "skills_mirror_lines": mirrored,
            "records": report.records,
            "head_seq": report.head_seq,
            "head_hash": report.head_hash,
            "bytes": report.bytes,
        })),
        Err(e) => Outcome::Failed(e),
    }
}

fn repair(mut ctx: CommandEnv<'_>, accept_missing: bool) -> i32 {
    let (json, command) = (ctx.json, ctx.command.clone());
    let fail = |code, message: String| envelope::fail(&command, json, code, &message);
    if protocol::socket_path(ctx.home).exists()
        && protocol::send(ctx.home, &Operation::SecretList)
            .ok()
            .flatten()
            .is_some()
    {
        return fail(
            ErrorCode::Refused,
            "stop the gateway before repairing the audit log".into(),
        );
    }
    let core = match crate::core::open(ctx.home, &mut ctx.settings, ctx.env) {
        Ok(core) => core,
        Err(e) => return fail(ErrorCode::Internal, e.to_string()),
    };
    let options = match RecordedHead::for_home(ctx.home, Some(&core.db)) {
        Ok(recorded) => RepairOptions {
            recorded: Some(recorded),
            accept_missing,
        },
        Err(e) => return fail(ErrorCode::Internal, e.to_string()),
    };
    let dir = ctx.home.audit_dir();
    let repaired =
        kafclaw_actors::audit::repair(&dir, &core.audit_key, &ctx.settings.audit, &options);
    let flushed = core.db.flush_blocking();
    match (repaired, flushed) {
        (Ok(report), Ok(())) => envelope::succeed(&command, json, repair_json(&report), |_| {
            print_repair(&report)
        }),
        (Ok(_), Err(e)) => fail(
            ErrorCode::Internal,
            format!("the repair is done but the store could not be flushed: {e}"),
        ),
        // A chain short of its recorded head is a finding, not a usage error: exit 1.
        (Err(e @ (AuditError::TailMissing { .. } | AuditError::HeadMismatch { .. })), _) => {
            fail(ErrorCode::Failed, e.to_string())
        }
        (Err(e), _) => fail(ErrorCode::Internal, e.to_string()),
    }
}

fn repair_json(report: &kafclaw_actors::audit::RepairReport) -> Value {
    serde_json::json!({
        "segment": report.segment,
        "bytes_cut": report.bytes_cut,
        "newline_restored": report.newline_restored,
        "record_seq": report.record.as_ref().map(|r| r.seq),
        "missing": report.missing,
    })
}

fn print_repair(report: &kafclaw_actors::audit::RepairReport) {
    let Some(segment) = &report.segment else {
        println!("nothing to repair");
        return;
    };
    println!(
        "repaired {segment}: cut {} bytes; recorded as audit.repaired",
        report.bytes_cut
    );
    if let Some(missing) = report.missing {
        println!(
            "accepted: records after seq {} are missing (the recorded head was record {}); the chain goes on from the repair record",
            missing.after_seq, missing.recorded_seq
        );
    }
}

/// The outcome of an operation: its result, a failed check (exit 1), or an error (exit 2).
pub(crate) enum Outcome {
    Done(Value),
    Failed(String),
    Error(ErrorCode, String),
}

/// Prints `outcome` in the one shape of [`crate::envelope`] (or as text); returns the exit
/// code.
pub(crate) fn finish(
    outcome: Outcome,
    command: &str,
    json: bool,
    human: impl FnOnce(&Value),
) -> i32 {
    match outcome {
        Outcome::Done(value) => envelope::succeed(command, json, value, human),
        Outcome::Failed(message) => envelope::fail(command, json, ErrorCode::Failed, &message),
        Outcome::Error(code, message) => envelope::fail(command, json, code, &message),
    }
}

impl From<Answer> for Outcome {
    fn from(answer: Answer) -> Self {
        match answer {
            Answer::Ok(v) => Outcome::Done(v),
            Answer::Failed(e) => Outcome::Failed(e),
            Answer::Error(code, e) => Outcome::Error(code, e),
        }
    }
}

impl From<crate::remote::RemoteError> for Outcome {
    fn from(e: crate::remote::RemoteError) -> Self {
        Outcome::Error(e.code, e.message)
    }
}

pub(crate) fn run(op: Operation, ctx: CommandEnv<'_>) -> Outcome {
    if let Some(remote) = &ctx.remote {
        return over_http(remote, &op, &ctx);
    }
    match protocol::send(ctx.home, &op) {
        Ok(Some(answer)) => answer.into(),
        Err(e) => Outcome::Error(ErrorCode::Unavailable, e),
        Ok(None) => offline(op, ctx),
    }
}

/// `--url`: the operations a remote gateway's HTTP API offers (approvals, control messages).
fn over_http(remote: &crate::remote::RemoteArgs, op: &Operation, ctx: &CommandEnv<'_>) -> Outcome {
    let remote = match crate::remote::Remote::resolve(
        &remote.url,
        remote.token.as_deref(),
        &ctx.settings,
        ctx.home,
        ctx.env,
    ) {
        Ok(r) => r,
        Err(e) => return e.into(),
    };
    let answer = match op {
        Operation::ApprovalList => remote.get("/api/v1/approvals"),
        Operation::ApprovalDecide { id, approved } => remote.post(
            &format!("/api/v1/approvals/{id}"),
            &serde_json::json!({"approved": approved}),
        ),
        Operation::Control { message } => remote
            .post("/api/v1/admin/control", message)
            .map(|body| body["result"].clone()),
        _ => {
            return Outcome::Error(
                ErrorCode::Usage,
                "this command works on the local home only".into(),
            )
        }
    };
    match answer {
        Ok(v) => Outcome::Done(v),
        Err(e) => e.into(),
    }
}

/// No gateway answers: open the core and run the operation on actors started here.
fn offline(op: Operation, mut ctx: CommandEnv<'_>) -> Outcome {
    let core = match crate::core::open(ctx.home, &mut ctx.settings, ctx.env) {
        Ok(core) => core,
        Err(e) => return Outcome::Error(ErrorCode::Internal, e.to_string()),
    };
    let passphrase = crate::core::passphrase(ctx.env);
    let home = ctx.home.clone();
    let settings = ctx.settings;
    let system = actix_rt::System::new();
    system.block_on(async move {
        let services = match crate::services::start_offline(&home, &settings, core, passphrase) {
            Ok(s) => s,
            Err(e) => return Outcome::Error(ErrorCode::Internal, e),
        };
        let db = services.db.clone();
        let ops_ctx = OpsContext {
            vault: services.vault.clone(),
            audit: services.audit.clone(),
            tokens: services.tokens.clone(),
            actor: format!("cli:uid={}", rustix::process::geteuid().as_raw()),
            approvals: services.approvals.clone(),
            audit_dir: home.audit_dir(),
            audit_key: services.audit_key.clone(),
            home: home.clone(),
            db: db.clone(),
            control: None,
        };
        let result = ops::execute(op, &ops_ctx).await;
        if let Err(e) = db.flush().await {
            return Outcome::Error(ErrorCode::Internal, format!("cannot flush the store: {e}"));
        }
        match result {
            Ok(v) => Outcome::Done(v),
            Err(OpError::Failed(e)) => Outcome::Failed(e),
            Err(OpError::Invalid(e)) => Outcome::Error(ErrorCode::Refused, e),
            Err(OpError::Unavailable(e)) => Outcome::Error(ErrorCode::Unavailable, e),
        }
    })
}

/// `kafclaw admin <type-with-dashes> [--field value …]`: one control message through the
/// running gateway's control socket (owner uid only, no token; the gateway audits it as
/// `cli:uid=N`), or with `--url` through a remote gateway's `POST /api/v1/admin/control`
/// with a token. Values that look like integers are sent as numbers; `--deny a,b` is a list.
pub fn admin(args: Vec<String>, ctx: CommandEnv<'_>) -> i32 {
    let (json, command) = (ctx.json, ctx.command.clone());
    let message = match control_message(&args) {
        Ok(m) => m,
        Err(e) => return envelope::fail(&command, json, ErrorCode::Usage, &e),
    };
    let op = Operation::Control { message };
    let outcome = if ctx.remote.is_some() {
        run(op, ctx)
    } else {
        match protocol::send(ctx.home, &op) {
            Ok(Some(answer)) => answer.into(),
            Ok(None) if ctx.local_token.is_some() => {
                let gw = &ctx.settings.gateway;
                let host = match gw.host.as_str() {
                    "0.0.0.0" | "::" => "127.0.0.1".to_string(),
                    h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
                    h => h.to_string(),
                };
                let scheme = match gw.tls.mode {
                    crate::settings::TlsMode::Native => "https",
                    _ => "http",
                };
                let remote = crate::remote::RemoteArgs {
                    url: format!("{scheme}://{host}:{}", gw.dashboard_port),
                    token: ctx.local_token.clone(),
                };
                over_http(&remote, &op, &ctx)
            }
            Ok(None) => Outcome::Error(
                ErrorCode::Unavailable,
                "no running gateway answers on the control socket (start `kafclaw gateway`, or pass --url for a remote one)".into(),
            ),
            Err(e) => Outcome::Error(ErrorCode::Unavailable, e),
        }
    };
    finish(outcome, &command, json, |result| {
        println!("ok {}", result);
    })
}

/// `<type> [--field value …]` → the control message (`{"type": …, field: value, …}`).
fn control_message(args: &[String]) -> Result<Value, String> {
    let Some((kind, fields)) = args.split_first() else {
        return Err("usage: kafclaw admin <type> [--field value …]".into());
    };
    let mut message = serde_json::Map::new();
    message.insert("type".into(), Value::from(kind.replace('-', "_")));
    let mut rest = fields.iter();
    while let Some(flag) = rest.next() {
        let Some(name) = flag.strip_prefix("--") else {
            return Err(format!("expected --field, got {flag}"));
        };
        let Some(value) = rest.next() else {
            return Err(format!("--{name} needs a value"));
        };
        let name = name.replace('-', "_");
        let value = if name == "deny" {
            Value::from(
                value
                    .split(',')
                    .map(str::trim)
                    .map(String::from)
                    .collect::<Vec<_>>(),
            )
        } else if let Ok(n) = value.parse::<u64>() {
            Value::from(n)
        } else {
            Value::from(value.as_str())
        };
        message.insert(name, value);
    }
    Ok(Value::Object(message))
}
