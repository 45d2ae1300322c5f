//! The local control socket `~/.kafclaw/control.sock`: how operator commands reach a running
//! gateway (sled allows one process per store, so `kafclaw secrets set` or `kafclaw token revoke`
//! cannot open the store while the gateway holds it).
//!
//! Authentication is the file system plus the kernel: the socket is created 0600 (umask 077)
//! inside the 0700 state directory, and every connection's peer uid (SO_PEERCRED) must equal the
//! gateway's own uid. The uid is not enough (exec children and skill entries run as it, and
//! before Landlock ABI 9 the kernel does not keep a confined child off a named socket): every
//! request also carries the control cookie the gateway writes at start to
//! `~/.kafclaw/control.cookie` (0600, a path no tool and no confined child may read; removed on
//! stop), compared in constant time. The protocol is one JSON [`Operation`] line in (with the
//! `cookie` field), one JSON answer line out; secret values travel in that line only, never in
//! argv or a URL.
//!
//! This module is the gateway's side; the operation types and the client that commands use
//! live in [`crate::protocol`], which depends on nothing here (so commands, checks and backups
//! can ask a running gateway without depending on the operations it runs).
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections are served at once (one more is answered
//! `{"status":"error","code":"busy",…}` and closed, and the client retries for a while), and
//! the request line must arrive within [`READ_DEADLINE`] (else `{"status":"error",
//! "code":"timeout",…}` and close), so silent clients cannot hold the socket.

use std::time::Duration;

use actix_web::web;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use kafclaw_actors::paths::Home;

use crate::envelope::ErrorCode;
use crate::http::AppState;
use crate::ops::{self, OpError, OpsContext};
use crate::protocol::Operation;

/// Longest accepted request line (a secret value travels in it).
const MAX_LINE: usize = 1 << 20;
/// How long a connection may take to send its request line (the CLI sends it at once).
pub const READ_DEADLINE: Duration = Duration::from_secs(5);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// How long writing an answer may take (a client that never reads is dropped).
const WRITE_DEADLINE: Duration = Duration::from_secs(10);

// The client side (and the old paths of its names): `crate::protocol`.
pub use crate::protocol::{send, socket_path, Answer};

/// Removes the socket file and the control cookie (on shutdown).
pub fn remove_socket(home: &Home) {
    let _ = std::fs::remove_file(socket_path(home));
    let _ = std::fs::remove_file(home.control_cookie());
}

/// The control cookie of this run: 32 random bytes, hex.
type Cookie = std::sync::Arc<zeroize::Zeroizing<String>>;

/// Writes a fresh control cookie (0600 from creation, replaced atomically) for this run.
fn new_cookie(home: &Home) -> std::io::Result<Cookie> {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut()).map_err(|e| std::io::Error::other(e.to_string()))?;
    let cookie = zeroize::Zeroizing::new(hex::encode(bytes.as_ref()));
    kafclaw_actors::fsutil::write_atomic(&home.control_cookie(), cookie.as_bytes())?;
    Ok(std::sync::Arc::new(cookie))
}

/// Whether the request line carries this run's cookie (compared in constant time).
fn carries_cookie(line: &[u8], cookie: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Carried {
        cookie: Option<String>,
    }
    let Ok(Carried {
        cookie: Some(carried),
    }) = serde_json::from_slice::<Carried>(line)
    else {
        return false;
    };
    let carried = zeroize::Zeroizing::new(carried);
    use subtle::ConstantTimeEq;
    carried.len() == cookie.len() && bool::from(carried.as_bytes().ct_eq(cookie.as_bytes()))
}

/// Binds the socket and serves it on the current actix system until the process stops.
/// A stale socket file is replaced (the store lock already rules out a second gateway). The
/// control cookie is written before the socket exists.
pub fn serve(home: &Home, state: web::Data<AppState>) -> std::io::Result<()> {
    let path = socket_path(home);
    if path.exists() {
        std::fs::remove_file(&path)?;
    }
    let cookie = new_cookie(home)?;
    let listener = UnixListener::bind(&path)?;
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    actix_web::rt::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let (state, cookie) = (state.clone(), cookie.clone());
                        actix_web::rt::spawn(async move {
                            handle(stream, state, &cookie).await;
                            drop(slot);
                        });
                    }
                    Err(_) => {
                        actix_web::rt::spawn(refuse_busy(stream));
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(())
}

/// Reads one request line (as received, with or without its `\n`) into an [`Operation`], or
/// the error answer the client gets. Public for the `fuzz/` crate's `control_message` target.
pub fn parse_request(line: &[u8]) -> Result<Operation, Value> {
    if line.len() > MAX_LINE {
        return Err(error_line(ErrorCode::Usage.as_str(), "request too large"));
    }
    serde_json::from_slice::<Operation>(line).map_err(|e| {
        // serde's message repeats parts of the request (an unknown operation name): its
        // control characters are escaped so the answer stays one clean line.
        let message: String = format!("invalid request: {e}")
            .chars()
            .flat_map(|c| {
                let escaped: Vec<char> = if c.is_control() {
                    c.escape_default().collect()
                } else {
                    vec![c]
                };
                escaped
            })
            .collect();
        error_line(ErrorCode::Usage.as_str(), &message)
    })
}

fn error_line(code: &str, error: &str) -> Value {
    json!({"status": "error", "code": code, "error": error})
}

/// One JSON line to a connection beyond [`MAX_CONNECTIONS`], then close.
async fn refuse_busy(stream: UnixStream) {
    tracing::warn!("control socket: too many connections, one refused");
    let answer = error_line("busy", "too many control connections; try again");
    let (_, mut write) = stream.into_split();
    let _ = tokio::time::timeout(WRITE_DEADLINE, answer_to(&mut write, &answer)).await;
}

async fn answer_to(write: &mut tokio::net::unix::OwnedWriteHalf, answer: &Value) {
    let mut bytes = answer.to_string().into_bytes();
    bytes.push(b'\n');
    let _ = write.write_all(&bytes).await;
    let _ = write.shutdown().await;
}

async fn handle(stream: UnixStream, state: web::Data<AppState>, cookie: &str) {
    let own = rustix::process::geteuid().as_raw();
    let peer = stream.peer_cred().ok().map(|c| c.uid());
    let (read, mut write) = stream.into_split();
    let answer = if peer != Some(own) {
        tracing::warn!(?peer, "control socket connection from another uid refused");
        error_line(ErrorCode::Refused.as_str(), "forbidden")
    } else {
        let mut line = Vec::new();
        let mut reader = tokio::io::BufReader::new(read.take(MAX_LINE as u64 + 1));
        let read = tokio::time::timeout(READ_DEADLINE, reader.read_until(b'\n', &mut line)).await;
        match read {
            Err(_) => {
                tracing::warn!("control socket: no request within the deadline, closed");
                error_line("timeout", "no request line within the deadline")
            }
            // The same uid is not enough: an exec child or a skill entry runs as this uid, and
            // before Landlock ABI 9 the kernel does not keep it off a named socket. The cookie
            // lives where those children may not read.
            Ok(Ok(_)) if !carries_cookie(&line, cookie) => {
                tracing::warn!("control socket request without the control cookie refused");
                error_line(
                    ErrorCode::Refused.as_str(),
                    "forbidden: the request did not carry the control cookie (~/.kafclaw/control.cookie)",
                )
            }
            Ok(Ok(_)) => match parse_request(&line) {
                Ok(op) => execute(op, &state, own).await,
                Err(answer) => answer,
            },
            Ok(Err(e)) => {
                json!({"status": "error", "error": format!("cannot read the request: {e}")})
            }
        }
    };
    let _ = tokio::time::timeout(WRITE_DEADLINE, answer_to(&mut write, &answer)).await;
}

async fn execute(op: Operation, state: &AppState, uid: u32) -> Value {
    // `kafclaw status` reads what `GET /api/v1/status` shows a read token, without one: the
    // socket is already the owner's.
    if let Operation::Status = op {
        use crate::http::routes::{full_status, Cache};
        return match full_status(state, Cache::Bypass).await {
            Ok(mut body) => {
                body["incidents"] = open_incidents(state).await;
                json!({"status": "ok", "result": body})
            }
            Err(e) => error_line(ErrorCode::Unavailable.as_str(), &e.to_string()),
        };
    }
    let ctx = OpsContext {
        vault: state.vault.clone(),
        audit: state.audit.clone(),
        tokens: state.auth.tokens().clone(),
        actor: format!("cli:uid={uid}"),
        approvals: state.approvals.clone(),
        audit_dir: state.audit_dir.clone(),
        audit_key: state.audit_key.clone(),
        home: state.home.clone(),
        db: state.db.clone(),
        control: Some(state.control.clone()),
    };
    match ops::execute(op, &ctx).await {
        Ok(result) => json!({"status": "ok", "result": result}),
        Err(OpError::Failed(e)) => json!({"status": "failed", "error": e}),
        Err(OpError::Invalid(e)) => error_line(ErrorCode::Refused.as_str(), &e),
        Err(OpError::Unavailable(e)) => error_line(ErrorCode::Unavailable.as_str(), &e),
    }
}

/// Incidents listed at most in `kafclaw status` (the count says how many are open).
const MAX_LISTED_INCIDENTS: usize = 20;

/// The open (not resolved) incidents, newest first, for `kafclaw status`: id, kind, subject,
/// state and when opened (no evidence). `null` when the monitor does not answer.
async fn open_incidents(state: &AppState) -> Value {
    use kafclaw_actors::incident::{IncidentState, ListIncidents};
    let Some(monitor) = state.monitor.addr() else {
        return Value::Null;
    };
    let listed = monitor
        .send(ListIncidents {
            state: None,
            limit: None,
        })
        .await;
    let Ok(Ok(mut list)) = listed else {
        return Value::Null;
    };
    list.retain(|i| i.state != IncidentState::Resolved);
    list.sort_by_key(|i| std::cmp::Reverse(i.opened_at));
    Value::from(
        list.iter()
            .take(MAX_LISTED_INCIDENTS)
            .map(|i| {
                json!({
                    "id": i.id,
                    "kind": i.kind,
                    "subject": i.subject,
                    "state": i.state,
                    "opened_at": kafclaw_actors::clock::to_rfc3339(i.opened_at),
                })
            })
            .collect::<Vec<_>>(),
    )
}
