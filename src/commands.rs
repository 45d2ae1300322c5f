//! Operator commands that act on the trust core: `secrets`, `token`, `audit`.
//! Each goes through a running gateway's control socket when one answers, and otherwise starts
//! the same actors itself (see [`crate::ops`]).

use std::collections::HashMap;
use std::io::Read;

use serde_json::Value;

use kafclaw_actors::audit::{AuditError, RecordedHead, RepairOptions};
use kafclaw_actors::paths::Home;

use crate::cli::{ApprovalsCommand, AuditCommand, PairingCommand, SecretsCommand, TokenCommand};
use crate::control::{self, Answer};
use crate::ops::{self, OpError, Operation, OpsContext};
use crate::settings::Settings;

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
}

/// `kafclaw secrets …`.
pub fn secrets(cmd: SecretsCommand, ctx: CommandEnv<'_>) -> i32 {
    let op = match cmd {
        SecretsCommand::Set { name } => {
            let mut value = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut value) {
                eprintln!("kafclaw: cannot read the value from stdin: {e}");
                return 2;
            }
            let value = value.trim_end_matches(['\n', '\r']).to_string();
            Operation::SecretSet { name, value }
        }
        SecretsCommand::List => Operation::SecretList,
        SecretsCommand::Rm { name } => Operation::SecretRm { name },
        SecretsCommand::RotateKey => Operation::SecretRotateKey,
    };
    let json = ctx.json;
    finish(run(op, ctx), json, |result| match result {
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
    let json = ctx.json;
    finish(run(op, ctx), json, |result| match result {
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
    let json = ctx.json;
    finish(run(op, ctx), json, |result| match result {
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
    let outcome = match control::send(ctx.home, &op) {
        Ok(Some(answer)) => answer.into(),
        Ok(None) => Outcome::Error(ops::NEEDS_GATEWAY.into()),
        Err(e) => Outcome::Error(e),
    };
    finish(outcome, ctx.json, |result| {
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
        AuditCommand::Verify { from } => {
            let json = ctx.json;
            finish(verify(from, ctx), json, |r| {
                println!(
                    "ok {} records, head {}",
                    r["records"],
                    r["head_hash"].as_str().unwrap_or_default()
                )
            })
        }
        AuditCommand::Repair { accept_missing } => repair(ctx, accept_missing),
    }
}

/// Verification needs only the key and the files: with no gateway running it does not start
/// the chainer (which refuses to open a torn log — exactly what verify must report).
fn verify(from: Option<u64>, mut ctx: CommandEnv<'_>) -> Outcome {
    match control::send(ctx.home, &Operation::AuditVerify { from }) {
        Ok(Some(answer)) => return answer.into(),
        Err(e) => return Outcome::Error(e),
        Ok(None) => {}
    }
    let core = match crate::core::open(ctx.home, &mut ctx.settings, ctx.env) {
        Ok(core) => core,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    let recorded = match RecordedHead::for_home(ctx.home, Some(&core.db)).and_then(|h| h.read()) {
        Ok(recorded) => recorded,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let dir = ctx.home.audit_dir();
    let report =
        kafclaw_actors::audit::verify_against(&dir, &core.audit_key, from, recorded.as_ref())
            .map_err(|e| e.to_string());
    let by = format!("cli:uid={}", rustix::process::geteuid().as_raw());
    crate::last_verify::record(&core.db, &crate::last_verify::outcome(&report, &by));
    match report {
        Ok(report) => Outcome::Done(serde_json::json!({
            "records": report.records,
            "head_seq": report.head_seq,
            "head_hash": report.head_hash,
            "bytes": report.bytes,
        })),
        Err(e) => Outcome::Failed(e),
    }
}

fn repair(mut ctx: CommandEnv<'_>, accept_missing: bool) -> i32 {
    if control::socket_path(ctx.home).exists()
        && control::send(ctx.home, &Operation::SecretList)
            .ok()
            .flatten()
            .is_some()
    {
        eprintln!("kafclaw: stop the gateway before repairing the audit log");
        return 2;
    }
    let core = match crate::core::open(ctx.home, &mut ctx.settings, ctx.env) {
        Ok(core) => core,
        Err(e) => {
            eprintln!("kafclaw: {e}");
            return 2;
        }
    };
    let options = match RecordedHead::for_home(ctx.home, Some(&core.db)) {
        Ok(recorded) => RepairOptions {
            recorded: Some(recorded),
            accept_missing,
        },
        Err(e) => {
            eprintln!("kafclaw: {e}");
            return 2;
        }
    };
    let dir = ctx.home.audit_dir();
    let repaired =
        kafclaw_actors::audit::repair(&dir, &core.audit_key, &ctx.settings.audit, &options);
    let flushed = core.db.flush_blocking();
    match (repaired, flushed) {
        (Ok(report), Ok(())) => {
            print_repair(&report, ctx.json);
            0
        }
        (Ok(_), Err(e)) => {
            eprintln!("kafclaw: the repair is done but the store could not be flushed: {e}");
            2
        }
        // A chain short of its recorded head is a finding, not a usage error: exit 1.
        (Err(e @ (AuditError::TailMissing { .. } | AuditError::HeadMismatch { .. })), _) => {
            if ctx.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "error": e.to_string()})
                );
            } else {
                println!("FAIL {e}");
            }
            1
        }
        (Err(e), _) => {
            eprintln!("kafclaw: {e}");
            2
        }
    }
}

fn print_repair(report: &kafclaw_actors::audit::RepairReport, json: bool) {
    if json {
        let value = serde_json::json!({
            "segment": report.segment,
            "bytes_cut": report.bytes_cut,
            "newline_restored": report.newline_restored,
            "record_seq": report.record.as_ref().map(|r| r.seq),
            "missing": report.missing,
        });
        println!("{value}");
        return;
    }
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
enum Outcome {
    Done(Value),
    Failed(String),
    Error(String),
}

fn finish(outcome: Outcome, json: bool, human: impl FnOnce(&Value)) -> i32 {
    match outcome {
        Outcome::Done(value) => {
            if json {
                println!("{value}");
            } else {
                human(&value);
            }
            0
        }
        Outcome::Failed(message) => {
            if json {
                println!("{}", serde_json::json!({"ok": false, "error": message}));
            } else {
                println!("FAIL {message}");
            }
            1
        }
        Outcome::Error(message) => {
            eprintln!("kafclaw: {message}");
            2
        }
    }
}

impl From<Answer> for Outcome {
    fn from(answer: Answer) -> Self {
        match answer {
            Answer::Ok(v) => Outcome::Done(v),
            Answer::Failed(e) => Outcome::Failed(e),
            Answer::Error(e) => Outcome::Error(e),
        }
    }
}

fn run(op: Operation, ctx: CommandEnv<'_>) -> Outcome {
    match control::send(ctx.home, &op) {
        Ok(Some(answer)) => answer.into(),
        Err(e) => Outcome::Error(e),
        Ok(None) => offline(op, ctx),
    }
}

/// No gateway answers: open the core and run the operation on actors started here.
fn offline(op: Operation, mut ctx: CommandEnv<'_>) -> Outcome {
    let core = match crate::core::open(ctx.home, &mut ctx.settings, ctx.env) {
        Ok(core) => core,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    let passphrase = crate::core::passphrase(ctx.env);
    let home = ctx.home.clone();
    let settings = ctx.settings;
    let system = actix_rt::System::new();
    system.block_on(async move {
        let services = match crate::services::start_offline(&home, &settings, core, passphrase) {
            Ok(s) => s,
            Err(e) => return Outcome::Error(e),
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
            return Outcome::Error(format!("cannot flush the store: {e}"));
        }
        match result {
            Ok(v) => Outcome::Done(v),
            Err(OpError::Failed(e)) => Outcome::Failed(e),
            Err(e) => Outcome::Error(e.to_string()),
        }
    })
}

/// `kafclaw admin <type-with-dashes> [--field value …]`: one control message through the
/// running gateway's control socket (owner uid only; the gateway audits it as `cli:uid=N`).
/// Values that look like integers are sent as numbers; `--deny a,b` is a list.
pub fn admin(args: Vec<String>, ctx: CommandEnv<'_>) -> i32 {
    let Some((kind, fields)) = args.split_first() else {
        eprintln!("kafclaw: usage: kafclaw admin <type> [--field value …]");
        return 2;
    };
    let mut message = serde_json::Map::new();
    message.insert("type".into(), Value::from(kind.replace('-', "_")));
    let mut token: Option<String> = None;
    let mut rest = fields.iter();
    while let Some(flag) = rest.next() {
        let Some(name) = flag.strip_prefix("--") else {
            eprintln!("kafclaw: expected --field, got {flag}");
            return 2;
        };
        let Some(value) = rest.next() else {
            eprintln!("kafclaw: --{name} needs a value");
            return 2;
        };
        if name == "token" {
            token = Some(value.clone());
            continue;
        }
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
    let token = token
        .or_else(|| ctx.env.get("KAFCLAW_GATEWAY_AUTH_TOKEN").cloned())
        .filter(|t| !t.is_empty());
    let json = ctx.json;
    let op = Operation::Control {
        message: Value::Object(message),
    };
    // A token (--token or KAFCLAW_GATEWAY_AUTH_TOKEN) sends over HTTP to the dashboard port, as
    // the contract describes; without one, the local control socket (owner uid only) is used.
    let outcome = match token {
        Some(token) => admin_over_http(&ctx.settings, &token, &op),
        None => match control::send(ctx.home, &op) {
            Ok(Some(answer)) => answer.into(),
            Ok(None) => Outcome::Error(
                "no running gateway answers on the control socket (or pass --token)".into(),
            ),
            Err(e) => Outcome::Error(e),
        },
    };
    finish(outcome, json, |result| {
        println!("ok {}", result);
    })
}

/// `POST /api/v1/admin/control` on the configured dashboard port with a bearer token.
fn admin_over_http(settings: &Settings, token: &str, op: &Operation) -> Outcome {
    let Operation::Control { message } = op else {
        return Outcome::Error("not a control message".into());
    };
    let gw = &settings.gateway;
    if gw.dashboard_port == 0 {
        return Outcome::Error("gateway.dashboard_port is 0: use the control socket".into());
    }
    let host = if gw.host == "0.0.0.0" || gw.host == "::" {
        "127.0.0.1".to_string()
    } else if gw.host.contains(':') && !gw.host.starts_with('[') {
        format!("[{}]", gw.host)
    } else {
        gw.host.clone()
    };
    let native = gw.tls.mode == crate::settings::TlsMode::Native;
    let scheme = if native { "https" } else { "http" };
    let url = format!(
        "{scheme}://{host}:{}/api/v1/admin/control",
        gw.dashboard_port
    );
    // Over native TLS the client trusts exactly the gateway's own certificate.
    let tls = if native {
        match crate::http::tls::pinned::client_config(&gw.tls.cert_file) {
            Ok(config) => Some(config),
            Err(e) => return Outcome::Error(e),
        }
    } else {
        None
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    runtime.block_on(async {
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60));
        if let Some(config) = tls {
            builder = builder.use_preconfigured_tls(config);
        }
        let client = match builder.build() {
            Ok(c) => c,
            Err(e) => return Outcome::Error(e.to_string()),
        };
        let response = match client
            .post(&url)
            .bearer_auth(token)
            .json(message)
            .send()
            .await
        {
            Ok(r) => r,
            Err(_) => return Outcome::Error(format!("cannot reach the gateway at {url}")),
        };
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Outcome::Done(body["result"].clone())
        } else {
            Outcome::Error(format!(
                "{}: {}",
                status.as_u16(),
                body["error"].as_str().unwrap_or("request failed")
            ))
        }
    })
}
