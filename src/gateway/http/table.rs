//! The one route table of both listeners (issue 16): every route the gateway serves, with its
//! listener, method, path template and access, and the handler it runs.
//!
//! Owns: [`ENDPOINTS`] and building each listener's resources from it. `docs/openapi.yaml` is
//! checked against this table both ways (`tests/it/openapi.rs`), and no other module registers
//! a route (`tests/it/openapi.rs` scans `src/` for one), so a route added here without its
//! documentation fails the tests, and a route cannot be added anywhere else.
//! Must not: decide access. The access column documents what each handler's extractor
//! (`Authorized<Read>`, `SignedBody`, …) enforces; the system test checks the two agree.

use actix_web::{web, HttpResponse, Route};

use super::error::ApiError;
use super::{dashboard, metrics, posture, routes, webhooks, Limits};

/// Which listener serves a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// `gateway.port`: chat and channel webhooks.
    Gateway,
    /// `gateway.dashboard_port`: the page, `/api/v1/*`, `/metrics`.
    Dashboard,
}

impl Listener {
    /// `gateway` or `dashboard` (the `x-kafclaw-listener` of the OpenAPI document).
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Gateway => "gateway",
            Listener::Dashboard => "dashboard",
        }
    }
}

/// What a caller needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Nothing (health, the page and its assets, which carry no data).
    Public,
    /// Nothing for the minimal answer, a read-capable token for the full one.
    PublicOrRead,
    /// Any valid token.
    AnyToken,
    /// A token with scope `read` (or `admin`).
    Read,
    /// A token with scope `chat` (or `admin`).
    Chat,
    /// A token with scope `admin`.
    Admin,
    /// The WhatsApp webhook's own signature (or handshake token).
    WhatsAppSignature,
    /// A bridge's own HMAC signature.
    BridgeSignature,
}

/// The request methods the gateway serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
}

impl Verb {
    /// `get` or `post` (the OpenAPI operation key).
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
        }
    }
    fn route(self) -> Route {
        match self {
            Verb::Get => web::get(),
            Verb::Post => web::post(),
        }
    }
}

/// Which body cap a route has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyCap {
    /// `gateway.max_body_bytes`.
    Default,
    /// The WhatsApp webhook's larger cap.
    Webhook,
}

/// One route.
pub struct Endpoint {
    /// Its listener.
    pub listener: Listener,
    /// Its method.
    pub verb: Verb,
    /// Its path template, as actix matches it and OpenAPI names it (`{id}`).
    pub path: &'static str,
    /// What a caller needs.
    pub access: Access,
    /// Compiled only with the `test-hooks` feature; never documented.
    pub test_only: bool,
    /// Its body cap.
    pub body: BodyCap,
    /// Attaches the handler.
    handler: fn(Route) -> Route,
}

const fn endpoint(
    listener: Listener,
    verb: Verb,
    path: &'static str,
    access: Access,
    handler: fn(Route) -> Route,
) -> Endpoint {
    Endpoint {
        listener,
        verb,
        path,
        access,
        test_only: false,
        body: BodyCap::Default,
        handler,
    }
}

use Access::*;
use Listener::{Dashboard, Gateway};
use Verb::{Get, Post};

/// Every route of both listeners.
pub static ENDPOINTS: &[Endpoint] = &[
    endpoint(Gateway, Get, "/healthz", Public, |r| r.to(routes::healthz)),
    endpoint(Gateway, Post, "/chat", Chat, |r| r.to(routes::chat)),
    Endpoint {
        body: BodyCap::Webhook,
        ..endpoint(Gateway, Get, "/webhooks/whatsapp", WhatsAppSignature, |r| {
            r.to(webhooks::whatsapp_handshake)
        })
    },
    Endpoint {
        body: BodyCap::Webhook,
        ..endpoint(
            Gateway,
            Post,
            "/webhooks/whatsapp",
            WhatsAppSignature,
            |r| r.to(webhooks::whatsapp_inbound),
        )
    },
    endpoint(
        Gateway,
        Post,
        "/webhooks/bridge/{name}",
        BridgeSignature,
        |r| r.to(webhooks::bridge_inbound),
    ),
    endpoint(Dashboard, Get, "/", Public, |r| r.to(dashboard::page)),
    endpoint(Dashboard, Get, "/assets/app.js", Public, |r| {
        r.to(dashboard::script)
    }),
    endpoint(Dashboard, Get, "/assets/app.css", Public, |r| {
        r.to(dashboard::style)
    }),
    endpoint(Dashboard, Get, "/healthz", Public, |r| {
        r.to(routes::healthz)
    }),
    endpoint(Dashboard, Get, "/api/v1/status", PublicOrRead, |r| {
        r.to(routes::status)
    }),
    endpoint(Dashboard, Get, "/api/v1/auth/verify", AnyToken, |r| {
        r.to(routes::auth_verify)
    }),
    endpoint(Dashboard, Get, "/api/v1/supervisor", Read, |r| {
        r.to(routes::supervisor)
    }),
    endpoint(Dashboard, Get, "/api/v1/timeline", Read, |r| {
        r.to(routes::timeline)
    }),
    endpoint(Dashboard, Get, "/api/v1/audit/head", Read, |r| {
        r.to(routes::audit_head_route)
    }),
    endpoint(Dashboard, Get, "/api/v1/audit/verify", Read, |r| {
        r.to(posture::last_verify)
    }),
    endpoint(Dashboard, Post, "/api/v1/audit/verify", Admin, |r| {
        r.to(posture::verify_now)
    }),
    endpoint(Dashboard, Get, "/api/v1/approvals", Read, |r| {
        r.to(routes::approvals)
    }),
    endpoint(Dashboard, Post, "/api/v1/approvals/{id}", Admin, |r| {
        r.to(routes::decide_approval)
    }),
    endpoint(Dashboard, Get, "/api/v1/channels", Read, |r| {
        r.to(webhooks::channels)
    }),
    endpoint(
        Dashboard,
        Get,
        "/api/v1/channels/{name}/outbox",
        Read,
        |r| r.to(webhooks::outbox),
    ),
    endpoint(Dashboard, Get, "/api/v1/incidents", Read, |r| {
        r.to(routes::incidents)
    }),
    endpoint(Dashboard, Get, "/api/v1/lockouts", Read, |r| {
        r.to(posture::lockouts)
    }),
    endpoint(Dashboard, Get, "/api/v1/tools", Read, |r| {
        r.to(posture::tools)
    }),
    endpoint(Dashboard, Get, "/api/v1/usage", Read, |r| {
        r.to(posture::usage)
    }),
    endpoint(Dashboard, Get, "/metrics", Read, |r| r.to(metrics::metrics)),
    endpoint(Dashboard, Post, "/api/v1/admin/control", Admin, |r| {
        r.to(routes::admin_control)
    }),
    #[cfg(feature = "test-hooks")]
    Endpoint {
        test_only: true,
        ..endpoint(Dashboard, Post, "/api/v1/test/panic/{child}", Admin, |r| {
            r.to(routes::inject_panic)
        })
    },
];

/// The routes of `listener`, one resource per path (in table order), each answering 405 to
/// any other method, then 404 for everything else.
pub fn configure(listener: Listener, limits: &Limits, cfg: &mut web::ServiceConfig) {
    let mut paths: Vec<&'static str> = Vec::new();
    for e in ENDPOINTS.iter().filter(|e| e.listener == listener) {
        if !paths.contains(&e.path) {
            paths.push(e.path);
        }
    }
    for path in paths {
        let mut resource = web::resource(path);
        for e in ENDPOINTS
            .iter()
            .filter(|e| e.listener == listener && e.path == path)
        {
            if e.body == BodyCap::Webhook {
                resource =
                    resource.app_data(web::PayloadConfig::new(limits.webhook_max_body_bytes));
            }
            resource = resource.route((e.handler)(e.verb.route()));
        }
        cfg.service(resource.default_service(web::to(method_not_allowed)));
    }
    cfg.default_service(web::to(not_found));
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}
