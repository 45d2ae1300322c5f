//! The HTTP edge's counters (issue 16): requests by route template, method and status class
//! with a latency histogram, authentication failures by reason, lockouts.
//!
//! Owns: one set of families per process, fed by `http::edge` (every answer of both
//! listeners) and `http::auth` (failures, lockouts).
//! Must not: label by anything a client chooses — a path is its route template (`unmatched`
//! when no route matched), a method outside the standard ones is `other`.

use std::sync::LazyLock;
use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// `{route, method, status_class}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route template (`/api/v1/approvals/{id}`) or `unmatched`.
    pub route: String,
    /// `GET`, `POST`, … or `other`.
    pub method: &'static str,
    /// `2xx` … `5xx`.
    pub status_class: &'static str,
}

/// `{route, method}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The matched route template or `unmatched`.
    pub route: String,
    /// The method or `other`.
    pub method: &'static str,
}

/// `{reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `missing`, `malformed`, `unknown_token`, `expired_token`, `revoked_token`, `host`,
    /// `origin`.
    pub reason: &'static str,
}

/// Upper bounds of the request latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The edge's families (clones share the counts).
#[derive(Clone, Debug)]
pub struct EdgeMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    auth_failures: Family<ReasonLabel, Counter>,
    lockouts: Counter,
}

static METRICS: LazyLock<EdgeMetrics> = LazyLock::new(|| EdgeMetrics {
    requests: Family::default(),
    latency: Family::new_with_constructor(latency_histogram),
    auth_failures: Family::default(),
    lockouts: Counter::default(),
});

/// The process's edge families.
pub fn metrics() -> &'static EdgeMetrics {
    &METRICS
}

/// A method as a label: the standard ones by name, anything else `other`.
pub fn method_label(method: &Method) -> &'static str {
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::PATCH, "PATCH"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    KNOWN
        .iter()
        .find(|(m, _)| m == method)
        .map_or("other", |(_, name)| name)
}

/// `2xx`, `4xx`, …
pub fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

impl EdgeMetrics {
    /// One answered request.
    pub fn request(
        &self,
        route: Option<String>,
        method: &Method,
        status: StatusCode,
        took: Duration,
    ) {
        let route = route.unwrap_or_else(|| "unmatched".to_string());
        let method = method_label(method);
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                method,
                status_class: status_class(status),
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route, method })
            .observe(took.as_secs_f64());
    }

    /// One refused credential (or `Host`/`Origin`), by its reason string.
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// One client key was locked out.
    pub fn lockout(&self) {
        self.lockouts.inc();
    }

    /// Registers the families, with `lockouts_active` client keys locked out now.
    pub fn register(&self, registry: &mut Registry, lockouts_active: usize) {
        registry.register(
            "kafclaw_http_requests",
            "HTTP requests answered, by route template, method and status class",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "kafclaw_http_request_duration",
            "Time from the request head to the answer, by route template and method",
            Unit::Seconds,
            self.latency.clone(),
        );
        registry.register(
            "kafclaw_auth_failure_reasons",
            "Failed authentications and refused Host or Origin headers, by reason",
            self.auth_failures.clone(),
        );
        registry.register(
            "kafclaw_auth_lockouts",
            "Client lockouts started since the process started",
            self.lockouts.clone(),
        );
        let active: Gauge = Gauge::default();
        active.set(i64::try_from(lockouts_active).unwrap_or(i64::MAX));
        registry.register(
            "kafclaw_auth_lockouts_active",
            "Client keys (an IPv4 address, an IPv6 /64) locked out now",
            active,
        );
    }
}
