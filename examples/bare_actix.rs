//! The ceiling of `scripts/bench`: a bare actix-web server with the gateway's server settings
//! and nothing else (no supervisor, no store, no audit, no edge middleware).
//!
//! `cargo run --release --example bare_actix -- [--port P] [--dashboard-port Q]` listens on
//! 127.0.0.1 (ports 0 by default) and prints `ready gateway=ADDR dashboard=ADDR` on stdout,
//! like `kafclaw gateway`, so the benchmark starts both the same way. Routes, on both listeners:
//!
//! - `GET /healthz`: 200 `{"status":"ok"}`;
//! - `GET /api/v1/status`: 200 with `Authorization: Bearer $BARE_TOKEN` (compared in constant
//!   time), else 401;
//! - `POST /webhooks/whatsapp`: 200 when `X-Hub-Signature-256` is the HMAC of the body under
//!   `$BARE_APP_SECRET` — the gateway's own `verify_signature` — else 401; nothing is stored.
//!
//! Server settings as `src/http.rs` applies them: workers = min(cores, 4) (or
//! `KAFCLAW_GATEWAY_WORKERS`), 1024 connections per worker, 5 s request head timeout, 1 s
//! disconnect timeout, 30 s keep-alive, 8 s shutdown timeout, 3 MiB webhook body cap.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use subtle::ConstantTimeEq;

struct Secrets {
    token: Vec<u8>,
    app_secret: Vec<u8>,
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"ok"}"#)
}

async fn status(req: HttpRequest, secrets: web::Data<Secrets>) -> HttpResponse {
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let ok = !secrets.token.is_empty() && bool::from(presented.as_bytes().ct_eq(&secrets.token));
    if ok {
        HttpResponse::Ok()
            .content_type("application/json")
            .body(r#"{"status":"ok","uptime_seconds":0}"#)
    } else {
        HttpResponse::Unauthorized()
            .content_type("application/json")
            .body(r#"{"error":"unauthorized"}"#)
    }
}

async fn webhook(req: HttpRequest, body: web::Bytes, secrets: web::Data<Secrets>) -> HttpResponse {
    let header = req
        .headers()
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    match kafclaw_actors::channel::whatsapp::verify_signature(&secrets.app_secret, &body, header) {
        Ok(()) => HttpResponse::Ok().body("ok"),
        Err(_) => HttpResponse::Unauthorized().finish(),
    }
}

fn port_arg(args: &[String], name: &str) -> u16 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let gateway = TcpListener::bind(("127.0.0.1", port_arg(&args, "--port")))?;
    let dashboard = TcpListener::bind(("127.0.0.1", port_arg(&args, "--dashboard-port")))?;
    let env = |name: &str| std::env::var(name).unwrap_or_default().into_bytes();
    let secrets = web::Data::new(Secrets {
        token: env("BARE_TOKEN"),
        app_secret: env("BARE_APP_SECRET"),
    });
    let workers = std::env::var("KAFCLAW_GATEWAY_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .filter(|w| *w > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get().min(4))
                .unwrap_or(1)
        });
    let ready = format!(
        "ready gateway={} dashboard={}",
        gateway.local_addr()?,
        dashboard.local_addr()?
    );
    let server = HttpServer::new(move || {
        App::new()
            .app_data(secrets.clone())
            .app_data(web::PayloadConfig::new(3 * 1024 * 1024))
            .route("/healthz", web::get().to(healthz))
            .route("/api/v1/status", web::get().to(status))
            .route("/webhooks/whatsapp", web::post().to(webhook))
    })
    .workers(workers)
    .max_connections(1024)
    .client_request_timeout(Duration::from_secs(5))
    .client_disconnect_timeout(Duration::from_secs(1))
    .keep_alive(Duration::from_secs(30))
    .shutdown_timeout(8)
    .listen(gateway)?
    .listen(dashboard)?
    .run();
    println!("{ready}");
    server.await
}
