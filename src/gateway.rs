//! `kafclaw gateway`: startup checks, the supervision tree, both listeners, graceful shutdown.
//! Startup order lives here, in one function.

use std::net::{TcpListener, ToSocketAddrs};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use actix_web::web;
use tokio::signal::unix::{signal, SignalKind};

use kafclaw_actors::audit::AuditKind;
use kafclaw_actors::channel::dispatch::{Dispatcher, FinishSends};
use kafclaw_actors::paths::Home;
use kafclaw_actors::store::{Flush, RecordEvent, Store};
use kafclaw_actors::supervisor::{RestartPolicy, SupervisionEvent};

use crate::envelope::{self, ErrorCode};
use crate::settings::Settings;
use http::{auth::Authenticator, AppState, Limits};
use kafclaw_actors::incident::ChildFailureSignal;

pub mod admin;
pub mod channels;
pub mod control;
pub mod core;
pub mod http;
pub mod last_verify;
mod remote;
pub mod services;

/// The minimum length of a gateway token (32 random bytes, base64url).
pub const MIN_TOKEN_CHARS: usize = kafclaw_actors::token::MIN_TOKEN_CHARS;

/// Why the gateway refused to start (exit code 2), one line each.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Remote bind without a token.
    #[error("refusing to bind non-loopback host {host} without a gateway auth token: set KAFCLAW_GATEWAY_AUTH_TOKEN (at least {MIN_TOKEN_CHARS} random characters) or bind 127.0.0.1")]
    RemoteWithoutToken { host: String },
    /// Remote bind with a weak token.
    #[error("refusing to bind non-loopback host {host}: KAFCLAW_GATEWAY_AUTH_TOKEN is {len} characters, at least {MIN_TOKEN_CHARS} are required (32 random bytes)")]
    WeakToken { host: String, len: usize },
    /// Root with a remote bind.
    #[error("refusing to run as root (uid 0) with non-loopback host {host}: run as a dedicated user, or pass --allow-root")]
    RootRemote { host: String },
    /// Settings the listeners cannot use (hosts, proxies, a name that does not resolve).
    #[error("{0}")]
    Config(String),
    /// Anything else that stops startup (a port in use, …).
    #[error("{0}")]
    Other(String),
}

impl StartError {
    /// The `--json` error code of this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            StartError::RemoteWithoutToken { .. }
            | StartError::WeakToken { .. }
            | StartError::RootRemote { .. } => ErrorCode::Refused,
            StartError::Config(_) => ErrorCode::Config,
            StartError::Other(_) => ErrorCode::Unavailable,
        }
    }
}

/// A refused start: the one `--json` document on stdout, else one `kafclaw:` line on stderr;
/// answers the exit code (2, see docs/exit-codes.md).
fn refuse(json: bool, code: ErrorCode, message: &str) -> i32 {
    envelope::fail("gateway", json, code, message)
}

/// Checks that must pass before anything is opened or bound.
pub fn preflight(settings: &Settings, is_root: bool, allow_root: bool) -> Result<(), StartError> {
    let gw = &settings.gateway;
    let host = gw.host.clone();
    if gw.is_loopback() {
        if let Some(token) = &gw.auth_token {
            if token.char_len() < MIN_TOKEN_CHARS {
                tracing::warn!(
                    length = token.char_len(),
                    minimum = MIN_TOKEN_CHARS,
                    "the gateway auth token is shorter than 32 random bytes; a remote bind would be refused"
                );
            }
        }
        return Ok(());
    }
    if is_root && !allow_root {
        return Err(StartError::RootRemote { host });
    }
    match &gw.auth_token {
        None => Err(StartError::RemoteWithoutToken { host }),
        Some(token) if token.char_len() < MIN_TOKEN_CHARS => Err(StartError::WeakToken {
            host,
            len: token.char_len(),
        }),
        Some(_) => Ok(()),
    }
}

/// Pending connections the kernel queues per listener (capped by `net.core.somaxconn`).
const LISTEN_BACKLOG: i32 = 4096;

fn bind(host: &str, port: u16, key: &str) -> Result<TcpListener, StartError> {
    let host_for_bind = host.trim_start_matches('[').trim_end_matches(']');
    let addr = (host_for_bind, port)
        .to_socket_addrs()
        .map_err(|e| StartError::Config(format!("cannot resolve gateway.host {host}: {e}")))?
        .next()
        .ok_or_else(|| StartError::Config(format!("gateway.host {host} resolves to nothing")))?;
    let listener = TcpListener::bind(addr)
        .map_err(|e| StartError::Other(format!("cannot bind {addr} ({key}): {e}")))?;
    // std listens with a backlog of 128: a burst of connections (a flood that is refused at
    // once) would fill it and make every other client's SYN wait for a retransmit.
    rustix::net::listen(&listener, LISTEN_BACKLOG)
        .map_err(|e| StartError::Other(format!("cannot listen on {addr} ({key}): {e}")))?;
    Ok(listener)
}

/// Runs the gateway until SIGINT/SIGTERM (exit 0) or a permanent child is given up on (exit 1).
/// A refused start answers 2, in the `--json` document when `json` is set.
pub fn run(
    home: Home,
    mut settings: Settings,
    env: &std::collections::HashMap<String, String>,
    allow_root: bool,
    json: bool,
) -> i32 {
    let is_root = rustix::process::geteuid().is_root();
    // Said once per start (the preflight below runs twice: before and after the vault).
    if is_root {
        tracing::warn!("RUNNING AS ROOT (uid 0). KafClaw should run as a dedicated unprivileged user; `kafclaw security check` fails on this.");
    }
    // Refuse an unsafe bind before touching anything; the vault may still supply the token,
    // so a missing token is checked again once the core is open.
    if let Err(e @ StartError::RootRemote { .. }) = preflight(&settings, is_root, allow_root) {
        return refuse(json, e.code(), &e.to_string());
    }
    // The same verdict as `security check`'s isolation rows, before anything is created.
    if let Err(line) = crate::checks::isolation::preflight(&home, &settings, env) {
        return refuse(json, ErrorCode::Refused, &line);
    }
    let core = match crate::core::open(&home, &mut settings, env) {
        Ok(core) => core,
        Err(e) => return refuse(json, ErrorCode::Unavailable, &e.to_string()),
    };
    if let Err(e) = preflight(&settings, is_root, allow_root) {
        return refuse(json, e.code(), &e.to_string());
    }
    // The token rules first (their message names the token), then the TLS mode.
    let listening = match http::tls::preflight(&settings.gateway) {
        Ok(listening) => listening,
        Err(e) => return refuse(json, ErrorCode::Refused, &e),
    };
    let system = actix_rt::System::new();
    let passphrase = crate::core::passphrase(env);
    let tls = match listening {
        http::tls::Listening::Native(store) => Some(store),
        http::tls::Listening::Plain => None,
    };
    let code = system.block_on(serve(home, settings, core, passphrase, tls, json));
    // Actors spawned but never polled (an early refusal) run their `started` on drop, outside
    // the runtime, and panic there; one more turn of the runtime starts them inside it.
    system.block_on(actix_rt::task::yield_now());
    code
}

/// Binds both listeners (before anything is started, so a taken port costs nothing) and
/// prepares the limits of the edge; the error is one line.
fn listen(settings: &Settings) -> Result<(TcpListener, TcpListener, Limits), StartError> {
    let gw = &settings.gateway;
    let allowed_hosts = http::host::HostPattern::parse_all(&gw.allowed_hosts)
        .map_err(|e| StartError::Config(format!("gateway.allowed_hosts: {e}")))?;
    let trusted_proxies = http::client::TrustedProxies::parse(&gw.trusted_proxies)
        .map_err(|e| StartError::Config(format!("gateway.trusted_proxies: {e}")))?;
    if !gw.is_loopback() && gw.allowed_hosts.is_empty() {
        tracing::warn!(host = %gw.host, "gateway.allowed_hosts is empty: requests that name this gateway by a DNS name (a reverse proxy, channel webhooks) are refused with 421; only its IP address and the loopback names are answered");
    }
    let gateway = bind(&gw.host, gw.port, "gateway.port")?;
    let dashboard = bind(&gw.host, gw.dashboard_port, "gateway.dashboard_port")?;
    let workers = match gw.workers {
        0 => std::thread::available_parallelism()
            .map(|n| n.get().min(4))
            .unwrap_or(1),
        n => n,
    };
    // The dashboard serves an operator, not the traffic: one thread unless a count is named.
    let dashboard_workers = match gw.workers {
        0 => 1,
        n => n,
    };
    let lockout = &settings.security.auth_lockout;
    let limits = Limits {
        max_body_bytes: gw.max_body_bytes,
        webhook_max_body_bytes: gw.webhook_max_body_bytes,
        request_timeout: Duration::from_secs(gw.request_timeout_seconds),
        max_connections: gw.max_connections,
        workers,
        dashboard_workers,
        body_timeout: Duration::from_secs(gw.body_timeout_seconds),
        max_connections_per_ip: gw.max_connections_per_ip,
        max_unauthenticated_bodies: gw.max_unauthenticated_bodies,
        allowed_hosts,
        trusted_proxies: std::sync::Arc::new(trusted_proxies),
        // As many audited refusals per client as failures before a lockout, and five times
        // that from everyone, per lockout window.
        refusal_audits: (
            lockout.max_failures.max(1),
            lockout.max_failures.max(1).saturating_mul(5),
        ),
        refusal_window: Duration::from_secs(lockout.window_seconds.max(1)),
    };
    Ok((gateway, dashboard, limits))
}

/// How long a starting fleet node waits for NATS and the control stream before it serves
/// degraded.
const FLEET_CATCH_UP: Duration = Duration::from_secs(5);

async fn serve(
    home: Home,
    settings: Settings,
    core: crate::core::Core,
    passphrase: Option<kafclaw_actors::vault::SecretValue>,
    tls: Option<std::sync::Arc<http::tls::CertStore>>,
    json: bool,
) -> i32 {
    let started = Instant::now();
    let (gateway_listener, dashboard_listener, limits) = match listen(&settings) {
        Ok(bound) => bound,
        Err(e) => return refuse(json, e.code(), &e.to_string()),
    };
    for dir in [settings.workspace(&home), settings.work_repo(&home)] {
        if let Err(e) = kafclaw_actors::fsutil::create_private_dir(&dir) {
            let message = format!("cannot create {}: {e}", dir.display());
            return refuse(json, ErrorCode::Internal, &message);
        }
    }
    // Fleet mode: the NATS connection comes up in the background (unreachable = degraded).
    let fleet = if settings.fleet.enabled {
        let lockout = &settings.security.auth_lockout;
        let policy = http::lockout::LockoutPolicy {
            max_failures: lockout.max_failures,
            window: Duration::from_secs(lockout.window_seconds),
            lockout: Duration::from_secs(lockout.lockout_seconds),
        };
        match crate::fleet::connect(&settings.fleet, policy, &core.db).await {
            Ok(fleet) => Some(fleet),
            Err(e) => {
                eprintln!("kafclaw: {e}");
                return 2;
            }
        }
    } else {
        None
    };
    let services = match crate::services::start(&home, &settings, core, passphrase, fleet) {
        Ok(services) => services,
        Err(e) => return refuse(json, ErrorCode::Unavailable, &e.to_string()),
    };
    let crate::services::Services {
        supervisor,
        health,
        mut events,
        db,
        store,
        vault,
        audit,
        audit_key,
        audit_sink: _,
        audit_head,
        approvals,
        agent,
        tokens,
        monitor,
        signals,
        channel_settings,
        control,
        drain,
        dispatchers,
        skills_status,
    } = services;
    let channel_edge = crate::channels::ChannelEdge::new(&channel_settings, &control.channels);

    let gw = &settings.gateway;
    let (gateway_addr, dashboard_addr) = match (
        gateway_listener.local_addr(),
        dashboard_listener.local_addr(),
    ) {
        (Ok(g), Ok(d)) => (g, d),
        _ => {
            let message = "cannot read the bound addresses";
            return refuse(json, ErrorCode::Internal, message);
        }
    };

    let mode = match (gw.is_loopback(), gw.auth_token.is_some()) {
        (true, false) => "local",
        (true, true) => "loopback",
        (false, _) => "remote",
    };
    let state = web::Data::new(AppState {
        version: env!("CARGO_PKG_VERSION"),
        started,
        auth: Authenticator::new(tokens.clone(), gw.auth_token.is_some(), gw.is_loopback()),
        supervisor: supervisor.clone(),
        health,
        store: store.clone(),
        cors_origins: gw.cors_origins.clone(),
        mode,
        provider_configured: settings.provider_configured(),
        skills: skills_status.clone(),
        auth_failures: AtomicU64::new(0),
        audit: audit.clone(),
        space: crate::http::space::SpaceGuard::new(&home, settings.store.min_free_mib),
        vault: vault.clone(),
        audit_dir: home.audit_dir(),
        audit_key: audit_key.clone(),
        approvals: approvals.clone(),
        agent: agent.clone(),
        channels: channel_edge,
        monitor: monitor.clone(),
        signals: signals.clone(),
        control: control.clone(),
        status_cache: Default::default(),
        chat_slots: std::sync::Arc::new(tokio::sync::Semaphore::new(gw.max_concurrent_chats)),
        home: home.clone(),
        db: db.clone(),
        tool_policy: serde_json::from_value(settings.tools["policy"].clone()).unwrap_or_default(),
    });

    // Nothing is served before the start is on the record.
    let started_record = state
        .audit(
            AuditKind::GatewayStarted,
            "system",
            "gateway",
            serde_json::json!({
                "gateway": gateway_addr.to_string(),
                "dashboard": dashboard_addr.to_string(),
                "mode": mode,
                "tls": gw.tls.mode.as_str(),
                "version": env!("CARGO_PKG_VERSION"),
            }),
        )
        .await;
    if started_record.is_err() {
        let message = "cannot write the audit log; refusing to start";
        return refuse(json, ErrorCode::Unavailable, message);
    }
    if !settings.provider_configured() && !channel_settings.names().is_empty() {
        tracing::warn!("channels are enabled but no model provider is configured: messages are stored and acknowledged, not answered");
    }
    for warning in &settings.warnings {
        tracing::warn!(%warning, "configuration");
        let _ = state
            .audit(
                AuditKind::ConfigWarning,
                "system",
                "config",
                serde_json::json!({"warning": warning.to_string()}),
            )
            .await;
    }

    // A node that was down applies the control messages it missed before anyone can reach it.
    if let Some(fleet) = &control.fleet {
        match fleet.catch_up(FLEET_CATCH_UP).await {
            Ok(()) => tracing::info!(
                node = fleet.node_id(),
                applied = fleet.applied_seq(),
                "fleet control stream applied"
            ),
            Err(e) => tracing::warn!(
                node = fleet.node_id(),
                "fleet degraded at start ({e}): serving with this node's own state; the control stream is applied when NATS returns"
            ),
        }
    }
    if let Err(e) = crate::control::serve(&home, state.clone()) {
        let message = format!("cannot open the control socket: {e}");
        return refuse(json, ErrorCode::Unavailable, &message);
    }
    let (gateway_server, dashboard_server) = match http::serve(
        state.clone(),
        &limits,
        gateway_listener,
        dashboard_listener,
        tls.as_ref(),
    ) {
        Ok(servers) => servers,
        Err(e) => {
            let message = format!("cannot start the listeners: {e}");
            return refuse(json, ErrorCode::Internal, &message);
        }
    };
    let handles = [gateway_server.handle(), dashboard_server.handle()];
    actix_rt::spawn(gateway_server);
    actix_rt::spawn(dashboard_server);

    record(
        &store,
        "gateway.started",
        serde_json::json!({
            "gateway": gateway_addr.to_string(),
            "dashboard": dashboard_addr.to_string(),
            "mode": mode,
        }),
    )
    .await;
    // Signals are caught before anyone is told we are ready, so a SIGTERM right after the
    // ready line still shuts down gracefully.
    let (mut sigint, mut sigterm, mut sighup) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(i), Ok(t), Ok(h)) => (i, t, h),
        _ => {
            let message = "cannot install signal handlers";
            return refuse(json, ErrorCode::Internal, message);
        }
    };
    tracing::info!(gateway = %gateway_addr, dashboard = %dashboard_addr, mode, "ready");
    // `https://` in front of both addresses only when the listeners speak TLS themselves.
    let scheme = if tls.is_some() { "https://" } else { "" };
    println!("ready gateway={scheme}{gateway_addr} dashboard={scheme}{dashboard_addr}");
    for removed in crate::backup::started(&home) {
        tracing::info!(path = %removed.display(), "restored home started: pre-restore copy removed");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    remote::notify_ready();
    remote::spawn_watchdog(supervisor.clone());

    let mut persist_tokens = tokio::time::interval(Duration::from_secs(60));
    persist_tokens.tick().await;
    let exit_code = loop {
        tokio::select! {
            _ = sigint.recv() => break 0,
            _ = sigterm.recv() => break 0,
            _ = sighup.recv() => remote::reload(tls.as_ref(), &state).await,
            _ = persist_tokens.tick() => {
                if let Err(e) = tokens.persist_last_used().await {
                    tracing::warn!(error = %e, "cannot persist token last-use times");
                }
            }
            event = events.recv() => match event {
                Some(SupervisionEvent::GaveUp { name, policy: RestartPolicy::Permanent, reason }) => {
                    tracing::error!(child = %name, %reason, "a permanent child cannot be kept alive; stopping (exit 1)");
                    break 1;
                }
                Some(SupervisionEvent::ChildFailed { name, reason }) => {
                    kafclaw_actors::incident::offer_signal(signals.try_send(ChildFailureSignal { child: name.clone(), reason: reason.clone(), gave_up: false, at: time::OffsetDateTime::now_utc() }));
                    let data = serde_json::json!({"child": name, "reason": reason});
                    let _ = state.audit(AuditKind::SupervisorChildFailed, "supervisor", &name, data).await;
                }
                Some(SupervisionEvent::GaveUp { name, policy: RestartPolicy::Quarantine, reason }) => {
                    tracing::error!(child = %name, %reason, "restart budget exhausted; quarantined");
                    kafclaw_actors::incident::offer_signal(signals.try_send(ChildFailureSignal { child: name, reason, gave_up: true, at: time::OffsetDateTime::now_utc() }));
                }
                Some(other) => tracing::debug!(?other, "supervision event"),
                None => break 1,
            },
        }
    };

    tracing::info!(exit_code, "shutting down");
    remote::notify_stopping();
    let stop = Stop {
        began: tokio::time::Instant::now(),
        grace: Duration::from_secs(gw.shutdown_grace_seconds),
    };
    if exit_code == 0 {
        let work = Draining {
            listeners: &handles,
            drain: &drain,
            dispatchers: &dispatchers,
        };
        work.finish(stop.drain_deadline(), &mut sigint, &mut sigterm)
            .await;
    } else {
        drain.close();
        futures_util::future::join_all(handles.iter().map(|h| h.stop(false))).await;
    }
    let finished = Finishing {
        home: &home,
        tokens: &tokens,
        store: &store,
        state: &state,
        audit: &audit,
        audit_head: &audit_head,
        db: &db,
    };
    // The final records and flushes fit in the same bound: the contract's exit within it.
    match tokio::time::timeout_at(stop.hard_deadline(), finished.run(exit_code)).await {
        Ok(code) => code,
        Err(_) => {
            tracing::error!("the final audit record and flushes did not finish within gateway.shutdown_grace_seconds");
            1
        }
    }
}

/// The time budget of a stop: `gateway.shutdown_grace_seconds` from the signal to the exit.
struct Stop {
    /// When the stop began (the signal).
    began: tokio::time::Instant,
    /// `gateway.shutdown_grace_seconds`.
    grace: Duration,
}

impl Stop {
    /// In-flight work is waited for until here; the rest of the grace is kept for the final
    /// audit record and flushes (a tenth of it, between 250 ms and 1 s).
    fn drain_deadline(&self) -> tokio::time::Instant {
        let reserve = (self.grace / 10).clamp(Duration::from_millis(250), Duration::from_secs(1));
        self.began + self.grace.saturating_sub(reserve)
    }

    /// The process exits by here.
    fn hard_deadline(&self) -> tokio::time::Instant {
        self.began + self.grace
    }
}

/// What a graceful stop waits for.
struct Draining<'a> {
    /// Both HTTP servers.
    listeners: &'a [actix_web::dev::ServerHandle],
    /// The gate of turns and channel hand-overs.
    drain: &'a kafclaw_actors::drain::Drain,
    /// Every channel's dispatcher.
    dispatchers: &'a [kafclaw_actors::supervisor::Slot<Dispatcher>],
}

impl Draining<'_> {
    /// Stops accepting (listeners closed, no new turn or channel hand-over), then waits until
    /// the turns, tool runs and HTTP requests in flight are done and the dispatchers have sent
    /// what those turns queued, or until `deadline`, or a second signal. What did not finish
    /// stays durable: its channel message is still in the inbox for the next start.
    async fn finish(
        &self,
        deadline: tokio::time::Instant,
        sigint: &mut tokio::signal::unix::Signal,
        sigterm: &mut tokio::signal::unix::Signal,
    ) {
        self.drain.close();
        let listeners = futures_util::future::join_all(self.listeners.iter().map(|h| h.stop(true)));
        let work = async {
            self.drain.idle().await;
            // Mailboxes are FIFO: the `DispatchNow` of every finished turn is handled first.
            let finishing = self
                .dispatchers
                .iter()
                .filter_map(|slot| slot.addr())
                .map(|addr| addr.send(FinishSends));
            futures_util::future::join_all(finishing).await;
        };
        let everything = futures_util::future::join(listeners, work);
        let finished = tokio::select! {
            done = tokio::time::timeout_at(deadline, everything) => done.is_ok(),
            _ = sigint.recv() => false,
            _ = sigterm.recv() => false,
        };
        if finished {
            tracing::info!("in-flight work finished");
            return;
        }
        tracing::warn!(
            in_flight = self.drain.active(),
            "in-flight work did not finish in time; unfinished channel messages stay in the inbox for the next start"
        );
        let forced = futures_util::future::join_all(self.listeners.iter().map(|h| h.stop(false)));
        let _ = tokio::time::timeout(Duration::from_millis(100), forced).await;
    }
}

/// The final steps of a stop, after the drain.
struct Finishing<'a> {
    home: &'a Home,
    tokens: &'a kafclaw_actors::token::TokenRegistry,
    store: &'a kafclaw_actors::supervisor::Slot<Store>,
    state: &'a web::Data<AppState>,
    audit: &'a kafclaw_actors::supervisor::Slot<kafclaw_actors::audit::AuditChainer>,
    audit_head: &'a kafclaw_actors::audit::RecordedHead,
    db: &'a kafclaw_actors::store::StoreDb,
}

impl Finishing<'_> {
    /// Last-use times, the `gateway.stopped` records, the head file, the store flush.
    async fn run(&self, exit_code: i32) -> i32 {
        crate::control::remove_socket(self.home);
        if let Err(e) = self.tokens.persist_last_used().await {
            tracing::warn!(error = %e, "cannot persist token last-use times");
        }
        let data = serde_json::json!({"exit_code": exit_code});
        record(self.store, "gateway.stopped", data.clone()).await;
        let _ = self
            .state
            .audit(AuditKind::GatewayStopped, "system", "gateway", data)
            .await;
        write_head_file(self.audit, self.audit_head).await;
        if let Some(fleet) = &self.state.control.fleet {
            fleet.shutdown(Duration::from_secs(2)).await;
        }
        if let Some(addr) = self.store.addr() {
            let _ = addr.send(Flush).await;
        }
        if let Err(e) = self.db.flush().await {
            tracing::error!(error = %e, "final store flush failed");
            return 1;
        }
        exit_code
    }
}

async fn record(
    store: &kafclaw_actors::supervisor::Slot<Store>,
    kind: &str,
    data: serde_json::Value,
) {
    let Some(addr) = store.addr() else { return };
    let result = addr
        .send(RecordEvent {
            trace_id: String::new(),
            kind: kind.into(),
            sender: None,
            channel: None,
            data,
        })
        .await;
    if !matches!(result, Ok(Ok(_))) {
        tracing::error!(kind, "cannot record a timeline event");
    }
}

/// Writes the chain's durable head to `~/.kafclaw/audit.head` (a clean stop): cutting records
/// from the segments afterwards is then visible even without the store.
async fn write_head_file(
    audit: &kafclaw_actors::supervisor::Slot<kafclaw_actors::audit::AuditChainer>,
    recorded: &kafclaw_actors::audit::RecordedHead,
) {
    let Some(addr) = audit.addr() else {
        tracing::error!("the audit chainer is not running; the head file is not written");
        return;
    };
    match addr.send(kafclaw_actors::audit::GetHead).await {
        Ok(head) => {
            if let Err(e) = recorded.write_file(&head) {
                tracing::error!(error = %e, "cannot write the audit head file");
            }
        }
        Err(_) => tracing::error!("the audit chainer is not running; the head file is not written"),
    }
}
