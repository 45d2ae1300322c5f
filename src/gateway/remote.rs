//! The gateway's duties towards a remote deployment: the SIGHUP certificate reload and the
//! systemd notifications (readiness once both listeners are bound, the watchdog fed only
//! while every permanent child is healthy).
//!
//! Owns: what a reload does (re-read `gateway.tls.cert_file`/`key_file`, audit
//! `config.reloaded` for success and failure, keep the old certificate on failure) and the
//! watchdog's health probe. Must not: stop the process on a failed reload, or feed the
//! watchdog from a timer alone (a wedged supervisor must get the process restarted).

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;

use kafclaw_actors::audit::AuditKind;
use kafclaw_actors::supervisor::{GetSupervisionTree, Supervisor};

use crate::http::tls::CertStore;
use crate::http::AppState;

/// SIGHUP: re-reads the certificate and key for new connections; open ones keep theirs.
/// Either outcome is audited before it is logged.
pub async fn reload(tls: Option<&Arc<CertStore>>, state: &web::Data<AppState>) {
    let Some(store) = tls else {
        tracing::info!("SIGHUP: nothing to reload (gateway.tls.mode is not native)");
        let data = serde_json::json!({"what": "tls", "ok": true, "changed": false, "reason": "gateway.tls.mode is not native"});
        let _ = state
            .audit(AuditKind::ConfigReloaded, "system", "gateway.tls", data)
            .await;
        return;
    };
    let prepared = match store.prepare() {
        Ok(prepared) => prepared,
        Err(reason) => {
            let data =
                serde_json::json!({"what": "tls", "ok": false, "changed": false, "error": reason});
            let _ = state
                .audit(AuditKind::ConfigReloaded, "system", "gateway.tls", data)
                .await;
            tracing::error!(
                "SIGHUP: TLS reload failed, the previous certificate stays in service: {reason}"
            );
            return;
        }
    };
    let loaded = prepared.loaded.clone();
    let data = serde_json::json!({
        "what": "tls",
        "ok": true,
        "changed": true,
        "leaf_blake3": loaded.leaf_blake3,
        "chain_len": loaded.chain_len,
    });
    // On the record before it is in service; without an audit log the old one stays.
    if state
        .audit(AuditKind::ConfigReloaded, "system", "gateway.tls", data)
        .await
        .is_err()
    {
        tracing::error!(
            "SIGHUP: the audit log is unavailable; the previous certificate stays in service"
        );
        return;
    }
    store.install(prepared);
    tracing::info!(
        leaf_blake3 = %loaded.leaf_blake3,
        "SIGHUP: TLS certificate reloaded; new connections get it"
    );
}

/// Tells systemd (`Type=notify`) that both listeners are bound and serving; a no-op outside
/// systemd (no `NOTIFY_SOCKET`).
pub fn notify_ready() {
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot notify systemd of readiness");
    }
}

/// Tells systemd that the stop has begun.
pub fn notify_stopping() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
}

/// When systemd asked for a watchdog (`WatchdogSec=`), feeds it at half the interval, but only
/// while the supervisor answers within the interval and reports every permanent child
/// running: a wedged or degraded process stops feeding and systemd restarts it.
pub fn spawn_watchdog(supervisor: actix::Addr<Supervisor>) {
    let Some(interval) = watchdog_interval() else {
        return;
    };
    actix_rt::spawn(async move {
        let mut tick = tokio::time::interval(interval / 2);
        loop {
            tick.tick().await;
            let probe = tokio::time::timeout(interval / 2, supervisor.send(GetSupervisionTree));
            match probe.await {
                Ok(Ok(tree)) if tree.unhealthy().is_empty() => {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                }
                Ok(Ok(tree)) => {
                    tracing::warn!(failing = ?tree.unhealthy(), "watchdog not fed: a permanent child is not running");
                }
                _ => tracing::warn!("watchdog not fed: the supervisor did not answer"),
            }
        }
    });
}

/// `WATCHDOG_USEC` when it is meant for this process: `WATCHDOG_PID` unset or ours (as
/// libsystemd's `sd_watchdog_enabled` reads them).
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}
