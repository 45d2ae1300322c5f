//! `kafclaw status` (CONTRACT §8): version, config file, providers (never keys), channels,
//! token usage today, open incidents, the store's size and oldest record kept, audit head —
//! and where each answer came from.
//!
//! Sources, in order: a running gateway (its control socket answers) is asked for
//! `GET /api/v1/status` on its configured dashboard port, with the gateway token when one is
//! set in the environment, the env file or config.json (the vault is the gateway's while it
//! runs); without a gateway the store is read directly. The audit head is read from the last
//! segment (unverified; `kafclaw audit verify` checks it).
//! Must not: print a key or token.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::Value;

use kafclaw_actors::paths::Home;
use kafclaw_actors::store::{StoreDb, TreeName};

use crate::checks::{self, Report};
use crate::settings::Settings;

/// Runs `kafclaw status`; returns the exit code.
pub fn run(home: &Home, env: &HashMap<String, String>, json: bool) -> i32 {
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

    let running = checks::gateway_running(home);
    let live = if running {
        ask_gateway(&settings)
    } else {
        None
    };
    channels(&settings, live.as_ref(), &mut report);
    match (&live, running) {
        (Some(v), _) => {
            report.pass(
                "source",
                format!(
                    "the running gateway at {}:{} (mode {}, uptime {} s)",
                    settings.gateway.host,
                    settings.gateway.dashboard_port,
                    v["mode"].as_str().unwrap_or("?"),
                    v["uptime_seconds"]
                ),
            );
            report.pass(
                "token_usage_today",
                "0 tokens (no usage reported by the gateway yet)".to_string(),
            );
            match v["open_incidents"].as_u64() {
                Some(0) | None => report.pass("incidents", "no open incident"),
                Some(n) => report.warn(
                    "incidents",
                    format!("{n} open incident(s)"),
                    "`GET /api/v1/incidents`; resolve with `kafclaw admin resolve-incident`",
                ),
            }
            let store = &v["store"];
            report.pass(
                "store",
                store_line(
                    store["size_bytes"].as_u64(),
                    store["oldest_record"].as_str(),
                    settings.store.retention_days,
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
        (None, true) => {
            report.warn(
                "source",
                format!("a gateway runs (control socket answers) but its dashboard did not answer at {}:{} with a read token", settings.gateway.host, settings.gateway.dashboard_port),
                "set KAFCLAW_GATEWAY_AUTH_TOKEN (or a read token) and the dashboard port the gateway uses",
            );
        }
        (None, false) => {
            store_facts(home, settings.store.retention_days, &mut report);
            report.pass(
                "memory",
                format!(
                    "no gateway running; store cache limit {} (store.cache_mib)",
                    mib(settings.store.cache_mib.saturating_mul(1 << 20))
                ),
            );
        }
    }
    let head = crate::backup::audit_head(&home.audit_dir());
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

/// `N MiB on disk, oldest record … (retention R days)`.
fn store_line(size: Option<u64>, oldest: Option<&str>, retention_days: u64) -> String {
    let size = size.map_or("size unknown".to_string(), |b| {
        format!("{:.1} MiB on disk", b as f64 / (1024.0 * 1024.0))
    });
    let oldest = oldest.map_or("no record yet".to_string(), |t| {
        format!("oldest record {t}")
    });
    format!("{size}, {oldest} (retention {retention_days} days)")
}

fn store_facts(home: &Home, retention_days: u64, report: &mut Report) {
    if !home.store_dir().exists() {
        report.pass("source", "no gateway running and no store yet");
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
    let today = kafclaw_actors::clock::now_rfc3339()[..10].to_string();
    let mut tokens = 0u64;
    if let Ok(tree) = db.tree(TreeName::Usage) {
        let _ = tree.for_each(|k, v| {
            let Ok(v) = serde_json::from_slice::<Value>(v) else {
                return true;
            };
            let key = String::from_utf8_lossy(k);
            let day = v["day"].as_str().or(v["date"].as_str()).unwrap_or(&key);
            if day.starts_with(&today) || key.contains(&today) {
                tokens += v["total_tokens"].as_u64().unwrap_or_else(|| {
                    v["prompt_tokens"].as_u64().unwrap_or(0)
                        + v["completion_tokens"].as_u64().unwrap_or(0)
                });
            }
            true
        });
    }
    report.pass(
        "token_usage_today",
        format!("{tokens} tokens ({today}, UTC)"),
    );
    match kafclaw_actors::retention::store_stats(&db) {
        Ok(stats) => report.pass(
            "store",
            store_line(
                Some(stats.size_bytes),
                stats.oldest_record.as_deref(),
                retention_days,
            ),
        ),
        Err(e) => report.warn("store", e.to_string(), "`kafclaw doctor`"),
    }
    let mut open = 0;
    if let Ok(tree) = db.tree(TreeName::Incidents) {
        let _ = tree.for_each(|_, v| {
            if serde_json::from_slice::<Value>(v).is_ok_and(|v| v["state"] == "open") {
                open += 1;
            }
            true
        });
    }
    if open == 0 {
        report.pass("incidents", "no open incident");
    } else {
        report.warn(
            "incidents",
            format!("{open} open incident(s)"),
            "start the gateway and review `GET /api/v1/incidents`",
        );
    }
}

/// `GET /api/v1/status` on the configured dashboard port (loopback when bound to all
/// interfaces); `None` unless it answers 200 with a full (read-scope) body.
fn ask_gateway(settings: &Settings) -> Option<Value> {
    let gw = &settings.gateway;
    let host = match gw.host.as_str() {
        "0.0.0.0" => "127.0.0.1",
        "::" | "[::]" => "::1",
        h => h.trim_start_matches('[').trim_end_matches(']'),
    };
    let addr = (host, gw.dashboard_port).to_socket_addrs().ok()?.next()?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let auth = gw
        .auth_token
        .as_ref()
        .map(|t| format!("Authorization: Bearer {}\r\n", t.expose()))
        .unwrap_or_default();
    let request = format!(
        "GET /api/v1/status HTTP/1.1\r\nHost: {host}:{}\r\n{auth}Connection: close\r\n\r\n",
        gw.dashboard_port
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.take(1 << 20).read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let v: Value = serde_json::from_str(body.trim()).ok()?;
    v.get("mode").is_some().then_some(v)
}
