//! The local control socket `~/.kafclaw/control.sock`: how operator commands reach a running
//! gateway (sled allows one process per store, so `kafclaw secrets set` or `kafclaw token revoke`
//! cannot open the store while the gateway holds it).
//!
//! Authentication is the file system plus the kernel: the socket is created 0600 inside the
//! 0700 state directory, and every connection's peer uid (SO_PEERCRED) must equal the
//! gateway's own uid. Requests are JSON [`Operation`]s; secret values travel in the body only.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use kafclaw_actors::paths::Home;

use crate::http::AppState;
use crate::ops::{self, OpError, Operation, OpsContext};

/// The socket's path.
pub fn socket_path(home: &Home) -> PathBuf {
    home.state_dir().join("control.sock")
}

/// Removes the socket file (on shutdown).
pub fn remove_socket(home: &Home) {
    let _ = std::fs::remove_file(socket_path(home));
}

/// The peer's uid, recorded per connection.
#[derive(Clone, Copy)]
struct PeerUid(Option<u32>);

/// Starts the control server. A stale socket file (no listener) is replaced; a live one means
/// another gateway owns this home, which the store lock has already ruled out.
pub fn serve(home: &Home, state: web::Data<AppState>) -> std::io::Result<Server> {
    let path = socket_path(home);
    if path.exists() {
        std::fs::remove_file(&path)?;
    }
    let own_uid = rustix::process::geteuid().as_raw();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::JsonConfig::default().limit(1 << 20))
            .route("/v1/op", web::post().to(operation))
    })
    .workers(1)
    .disable_signals()
    .on_connect(|conn, ext| {
        let uid = conn
            .downcast_ref::<actix_web::rt::net::UnixStream>()
            .and_then(|s| s.peer_cred().ok())
            .map(|c| c.uid());
        ext.insert(PeerUid(uid));
    })
    .bind_uds(&path)?
    .run();
    tracing::debug!(path = %path.display(), uid = own_uid, "control socket open");
    Ok(server)
}

async fn operation(
    req: HttpRequest,
    state: web::Data<AppState>,
    op: web::Json<Operation>,
) -> HttpResponse {
    let own = rustix::process::geteuid().as_raw();
    let peer = req.conn_data::<PeerUid>().and_then(|p| p.0);
    if peer != Some(own) {
        tracing::warn!(?peer, "control socket connection from another uid refused");
        return HttpResponse::Forbidden().json(json!({"error": "forbidden"}));
    }
    let ctx = OpsContext {
        vault: state.vault.clone(),
        audit: state.audit.clone(),
        tokens: state.auth.tokens().clone(),
        actor: format!("cli:uid={own}"),
        audit_dir: state.audit_dir.clone(),
        audit_key: state.audit_key.clone(),
    };
    match ops::execute(op.into_inner(), &ctx).await {
        Ok(result) => HttpResponse::Ok().json(json!({"ok": true, "result": result})),
        Err(OpError::Invalid(e)) => HttpResponse::BadRequest().json(json!({"error": e})),
        Err(OpError::Failed(e)) => HttpResponse::Conflict().json(json!({"error": e})),
        Err(OpError::Unavailable(e)) => {
            HttpResponse::ServiceUnavailable().json(json!({"error": e}))
        }
    }
}

/// The answer of a running gateway to one operation.
pub enum Answer {
    /// Done; the result.
    Ok(Value),
    /// A check failed (exit 1).
    Failed(String),
    /// Refused or could not be done (exit 2).
    Error(String),
}

/// Client side: sends `op` to a running gateway. `Ok(None)` when no gateway listens.
pub fn send(home: &Home, op: &Operation) -> Result<Option<Answer>, String> {
    let path = socket_path(home);
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(format!("cannot reach the gateway's control socket: {e}")),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let body = serde_json::to_vec(op).map_err(|e| e.to_string())?;
    let head = format!(
        "POST /v1/op HTTP/1.1\r\nHost: kafclaw\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|_| stream.write_all(&body))
        .map_err(|e| format!("cannot talk to the gateway: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("cannot read the gateway's answer: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("malformed answer from the gateway")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("malformed answer from the gateway")?;
    let value: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let error = value["error"]
        .as_str()
        .unwrap_or("request failed")
        .to_string();
    Ok(Some(match status {
        200 => Answer::Ok(value["result"].clone()),
        409 => Answer::Failed(error),
        _ => Answer::Error(error),
    }))
}
