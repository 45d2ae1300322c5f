//! `kafclaw status` (CONTRACT §8): version, config file, providers (never keys), channels,
//! token usage today, open incidents, the store's size and oldest record kept, audit head —
//! and where each answer came from.
//!
//! Sources, in order: with `--url`, the remote gateway's `GET /api/v1/status` (with a token,
//! see [`crate::remote`]); else the local gateway through its control socket (no token: the
//! socket is the owner's); without a running gateway the store is read directly. The audit
//! head is read from the last segment (unverified; `kafclaw audit verify` checks it).
//! Must not: print a key or token.

use std::collections::HashMap;

use serde_json::Value;

use kafclaw_actors::agent::{utc_today, Budget, UsageTotals};
use kafclaw_actors::paths::Home;
use kafclaw_actors::store::{StoreDb, TreeName};

use crate::checks::{self, Report};
use crate::protocol::{self, Answer, Operation};
use crate::remote::{Remote, RemoteArgs, RemoteError};
use crate::settings::Settings;

/// Runs `kafclaw status`; returns the exit code.
pub fn run(
    home: &Home,
    env: &HashMap<String, String>,
    json: bool,
    remote: Option<&RemoteArgs>,
) -> i32 {
    crate::logging::init("warn", false);
    let mut report = Report::new("status");
    report.pass("version", format!("kafclaw {}", env!("CARGO_PKG_VERSION")));
    let settings = match checks::load_settings(home, env) {
        Ok(s) => s,
        Err(e) => {
            report.fail(
                "config",
                e.to_string(),
                "`kafclaw doctor` names the problem",
            );
            return report.print(json);
        }
    };
    if settings.config_file_found {
        report.pass("config", format!("{} found", home.config_file().display()));
    } else {
        report.pass(
            "config",
            "no config.json: built-in defaults and the environment",
        );
    }
    if settings.provider_configured() {
        let key = if settings.providers.openai.api_key.is_some() {
            "API key set"
        } else {
            "API key from the vault or none"
        };
        report.pass(
            "providers",
            format!(
                "openai-compatible: model {} at {} ({key})",
                settings.providers.openai.model, settings.providers.openai.api_base
            ),
        );
    } else {
        report.warn(
            "providers",
            "no model provider configured",
            "set providers.openai.model and `kafclaw secrets set providers.openai.api_key`",
        );
    }

    sandbox(&settings, &mut report);

    let live = match remote {
        Some(args) => match ask_remote(args, &settings, home, env) {
            Ok(live) => Some(live),
            Err(e) => return crate::envelope::fail("status", json, e.code, &e.message),
        },
        None => ask_local(home, &mut report),
    };
    channels(&settings, live.as_ref().map(|(v, _)| v), &mut report);
    match &live {
        Some((v, from)) => live_rows(v, from, &settings, &mut report),
        None if !report.checks.iter().any(|c| c.name == "source") => {
            store_facts(home, &settings.store.retention_label(), &mut report);
            report.pass(
                "memory",
                format!(
                    "no gateway running; store cache limit {} (store.cache_mib)",
                    mib(settings.store.cache_mib.saturating_mul(1 << 20))
                ),
            );
        }
        None => {}
    }
    // The running gateway's durable head, else the last segment's last record.
    let head = live
        .as_ref()
        .map(|(v, _)| v["audit_head"].clone())
        .filter(|h| h.is_object())
        .unwrap_or_else(|| crate::backup::audit_head(&home.audit_dir()));
    report.pass(
        "audit_head",
        format!(
            "seq {} hash {} (unverified; `kafclaw audit verify`)",
            head["seq"],
            head["hash"].as_str().unwrap_or_default()
        ),
    );
    report.print(json)
}

/// One line: how exec children are confined on this machine (`tools.exec.sandbox`).
fn sandbox(settings: &Settings, report: &mut Report) {
    use kafclaw_actors::executor::{kernel_support, SandboxStatus};
    let mode = checks::tools::sandbox_mode(settings);
    match SandboxStatus::decide(mode, kernel_support()) {
        Ok(status @ SandboxStatus::Landlock { .. }) => {
            report.pass("exec_sandbox", status.to_string())
        }
        Ok(status) => report.warn(
            "exec_sandbox",
            status.to_string(),
            "`kafclaw security check` explains the exec sandbox",
        ),
        Err(e) => report.fail(
            "exec_sandbox",
            e.to_string(),
            "set tools.exec.sandbox to auto, or run on a kernel with Landlock",
        ),
    }
}

fn channels(settings: &Settings, live: Option<&Value>, report: &mut Report) {
    let mut names = Vec::new();
    let ch = &settings.channels;
    if ch["whatsapp"].is_object() {
        let on = ch["whatsapp"]["enabled"] == Value::Bool(true);
        names.push(format!(
            "whatsapp ({})",
            if on { "enabled" } else { "disabled" }
        ));
    }
    if let Some(bridges) = ch["bridges"].as_object() {
        for (name, b) in bridges {
            let on = b["enabled"] != Value::Bool(false);
            names.push(format!(
                "bridge {name} ({})",
                if on { "enabled" } else { "disabled" }
            ));
        }
    }
    if let Some(states) = live
        .and_then(|v| v["channels"].as_array())
        .filter(|a| !a.is_empty())
    {
        let live: Vec<String> = states
            .iter()
            .map(|c| {
                format!(
                    "{}: {}",
                    c["name"].as_str().unwrap_or("?"),
                    c["state"].as_str().unwrap_or("?")
                )
            })
            .collect();
        report.pass("channels", live.join(", "));
    } else if names.is_empty() {
        report.pass("channels", "none configured");
    } else {
        report.pass("channels", names.join(", "));
    }
}

/// `RSS N MiB, store cache limit C MiB` (the gateway's resident memory and `store.cache_mib`).
fn memory_line(resident: Option<u64>, cache_limit: Option<u64>) -> String {
    let rss = resident.map_or("RSS unknown".to_string(), |b| format!("RSS {}", mib(b)));
    let cache = cache_limit.map_or("store cache limit unknown".to_string(), |b| {
        format!("store cache limit {}", mib(b))
    });
    format!("{rss}, {cache}")
}

/// `12.3 MiB`.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// `N MiB on disk, oldest record … (retention 30 days)`.
fn store_line(size: Option<u64>, oldest: Option<&str>, retention: &str) -> String {
    let size = size.map_or("size unknown".to_string(), |b| {
        format!("{:.1} MiB on disk", b as f64 / (1024.0 * 1024.0))
    });
    let oldest = oldest.map_or("no record yet".to_string(), |t| {
        format!("oldest record {t}")
    });
    format!("{size}, {oldest} (retention {retention})")
}

fn store_facts(home: &Home, retention: &str, report: &mut Report) {
    if !home.store_dir().exists() {
        report.pass("source", "no gateway running and no store yet");
        report.pass("token_usage_today", "0 tokens today (no store yet)");
        report.pass("incidents", "no open incident");
        return;
    }
    let db = match StoreDb::open(&home.store_dir()) {
        Ok(db) => db,
        Err(e) => {
            report.warn("source", e.to_string(), "`kafclaw doctor`");
            return;
        }
    };
    report.pass(
        "source",
        format!(
            "the store at {} (no gateway running)",
            home.store_dir().display()
        ),
    );
    match Budget::new(&db, Default::default()).and_then(|b| b.usage_on(utc_today())) {
        Ok(totals) => report.pass("token_usage_today", usage_line(&totals)),
        Err(e) => report.warn("token_usage_today", e.to_string(), "`kafclaw doctor`"),
    }
    match kafclaw_actors::retention::store_stats(&db) {
        Ok(stats) => report.pass(
            "store",
            store_line(
                Some(stats.size_bytes),
                stats.oldest_record.as_deref(),
                retention,
            ),
        ),
        Err(e) => report.warn("store", e.to_string(), "`kafclaw doctor`"),
    }
    // Not resolved = open or acknowledged, as the gateway counts them.
    let mut open: Vec<Value> = Vec::new();
    if let Ok(tree) = db.tree(TreeName::Incidents) {
        let _ = tree.for_each(|_, v| {
            if let Ok(v) = serde_json::from_slice::<Value>(v) {
                if v["state"].is_string() && v["state"] != "resolved" {
                    open.push(v);
                }
            }
            true
        });
    }
    if open.is_empty() {
        report.pass("incidents", "no open incident");
    } else {
        let n = open.len();
        open.sort_by(|a, b| b["opened_at"].as_str().cmp(&a["opened_at"].as_str()));
        open.truncate(20);
        report.warn(
            "incidents",
            format!("{n} open incident(s){}", incident_list(&Value::from(open))),
            "start the gateway and review `GET /api/v1/incidents`; resolve with `kafclaw admin resolve-incident --id ID`",
        );
    }
}

/// Today's tokens as one line: `15 tokens today (12 prompt, 3 completion, 1 model call;
/// 2026-01-02 UTC)`. Each model call is counted once (the store keeps it under the day, the
/// channel, the sender and the session; only the day's total is read).
fn usage_line(totals: &UsageTotals) -> String {
    format!(
        "{} tokens today ({} prompt, {} completion, {} model call(s); {} UTC)",
        totals.total,
        totals.prompt_tokens,
        totals.completion_tokens,
        totals.calls,
        utc_today()
    )
}

/// The local gateway's full status over its control socket; `None` (and the store is read)
/// when no gateway runs. A gateway that answers with an error is reported as the source.
fn ask_local(home: &Home, report: &mut Report) -> Option<(Value, String)> {
    match protocol::send(home, &Operation::Status) {
        Ok(Some(Answer::Ok(v))) => {
            Some((v, "the running gateway through its control socket".into()))
        }
        Ok(None) => None,
        Ok(Some(Answer::Failed(e) | Answer::Error(_, e))) | Err(e) => {
            report.warn(
                "source",
                format!("a gateway runs with this home but its status could not be read: {e}"),
                "`kafclaw doctor`; restart the gateway if it does not answer",
            );
            None
        }
    }
}

/// `GET /api/v1/status` of the remote gateway at `--url`, with a read-capable token.
fn ask_remote(
    args: &RemoteArgs,
    settings: &Settings,
    home: &Home,
    env: &HashMap<String, String>,
) -> Result<(Value, String), RemoteError> {
    let v = Remote::resolve(&args.url, args.token.as_deref(), settings, home, env)?
        .get("/api/v1/status")?;
    if v.get("mode").is_none() {
        return Err(RemoteError {
            code: crate::envelope::ErrorCode::Refused,
            message: format!(
                "{} answered without its full status: the token lacks read scope",
                args.url
            ),
        });
    }
    Ok((v, format!("the gateway at {}", args.url)))
}

/// The `fleet` row: this node's state and every node of the roster (id, state, when last
/// seen, the control sequence it applied, its audit head); WARN when this node is degraded or
/// another node is stale or behind on the control stream.
fn fleet_row(fleet: &Value, report: &mut Report) {
    let nodes = fleet["nodes"].as_array().cloned().unwrap_or_default();
    let newest = nodes
        .iter()
        .filter_map(|n| n["applied_control_seq"].as_u64())
        .max()
        .unwrap_or(0);
    let mut trouble = Vec::new();
    let listed: Vec<String> = nodes
        .iter()
        .map(|n| {
            let id = n["node_id"].as_str().unwrap_or("?");
            let seq = n["applied_control_seq"].as_u64().unwrap_or(0);
            if n["stale"] == true {
                trouble.push(format!("{id} not seen for {} s", n["seconds_since_seen"]));
            } else if n["state"] != "connected" {
                trouble.push(format!("{id} is degraded"));
            } else if seq < newest {
                trouble.push(format!("{id} applied control seq {seq} of {newest}"));
            }
            format!(
                "{id} ({}, seen {} s ago, control seq {seq}, audit head {})",
                n["state"].as_str().unwrap_or("?"),
                n["seconds_since_seen"],
                n["audit_head"]["seq"]
            )
        })
        .collect();
    let line = format!(
        "node {} {}; {} node(s): {}",
        fleet["node_id"].as_str().unwrap_or("?"),
        fleet["state"].as_str().unwrap_or("?"),
        nodes.len(),
        listed.join(", ")
    );
    if fleet["state"] != "connected" || !trouble.is_empty() {
        let why = match fleet["reason"].as_str() {
            Some(reason) => std::iter::once(reason.to_string())
                .chain(trouble)
                .collect::<Vec<_>>(),
            None => trouble,
        };
        report.warn(
            "fleet",
            format!("{line} — {}", why.join("; ")),
            "check NATS (`fleet.nats_urls`) and the nodes listed; docs/fleet.md",
        );
    } else {
        report.pass("fleet", line);
    }
}

/// `: inc-1 (manual, subject whatsapp, open), …` for the incidents listed, else nothing.
fn incident_list(listed: &Value) -> String {
    let Some(list) = listed.as_array().filter(|l| !l.is_empty()) else {
        return String::new();
    };
    let items: Vec<String> = list
        .iter()
        .map(|i| {
            format!(
                "{} ({}, subject {}, {} since {})",
                i["id"].as_str().unwrap_or("?"),
                i["kind"].as_str().unwrap_or("?"),
                i["subject"].as_str().unwrap_or("?"),
                i["state"].as_str().unwrap_or("?"),
                i["opened_at"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    format!(": {}", items.join("; "))
}

/// The rows a running gateway answers: where from, today's tokens, open incidents, store.
fn live_rows(v: &Value, from: &str, settings: &Settings, report: &mut Report) {
    report.pass(
        "source",
        format!(
            "{from} (mode {}, uptime {} s)",
            v["mode"].as_str().unwrap_or("?"),
            v["uptime_seconds"]
        ),
    );
    // How skill entries run, as the gateway decided at start (`auto` says which).
    let skills = &v["skills"];
    if let Some(detail) = skills["detail"].as_str() {
        if skills["effective"] == "unavailable" {
            report.warn(
                "skills",
                format!("isolation {detail}"),
                "install docker or podman usable by this user, or set skills.runtime_isolation = auto",
            );
        } else {
            report.pass("skills", format!("isolation {detail}"));
        }
    }
    match serde_json::from_value::<UsageTotals>(v["usage_today"].clone()) {
        Ok(totals) => report.pass("token_usage_today", usage_line(&totals)),
        Err(_) => report.warn(
            "token_usage_today",
            "the gateway did not report today's usage",
            "`GET /api/v1/usage` on the dashboard port",
        ),
    }
    match v["open_incidents"].as_u64() {
        Some(0) => report.pass("incidents", "no open incident"),
        Some(n) => report.warn(
            "incidents",
            format!("{n} open incident(s){}", incident_list(&v["incidents"])),
            "`GET /api/v1/incidents`; resolve with `kafclaw admin resolve-incident --id ID`",
        ),
        None => report.warn(
            "incidents",
            "the incident monitor did not answer",
            "`kafclaw doctor`; the supervisor restarts it",
        ),
    }
    if v["fleet"].is_object() {
        fleet_row(&v["fleet"], report);
    }
    let store = &v["store"];
    report.pass(
        "store",
        store_line(
            store["size_bytes"].as_u64(),
            store["oldest_record"].as_str(),
            &settings.store.retention_label(),
        ),
    );
    report.pass(
        "memory",
        memory_line(
            v["memory"]["resident_bytes"].as_u64(),
            store["cache_limit_bytes"].as_u64(),
        ),
    );
}
