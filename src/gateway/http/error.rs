//! The one error type at the HTTP edge: maps failures to a status and a generic JSON body.
//! Detail goes to `tracing`; a body never carries a secret, a stack trace or a host path.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No valid credentials (401 + `WWW-Authenticate: Bearer`).
    #[error("unauthorized")]
    Unauthorized,
    /// Valid credentials without the route's scope.
    #[error("forbidden")]
    Forbidden { required: &'static str },
    /// The client is locked out after repeated failures.
    #[error("too many failed authentications")]
    LockedOut { retry_after_seconds: u64 },
    /// The request is malformed; the message says what is wrong (no secrets, no paths).
    #[error("{0}")]
    BadRequest(String),
    /// No such route or object.
    #[error("not found")]
    NotFound,
    /// The route exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The body is over the cap.
    #[error("payload too large")]
    PayloadTooLarge,
    /// A browser origin that is not in `gateway.cors_origins`.
    #[error("origin not allowed")]
    OriginNotAllowed,
    /// The `Host` names no host this listener answers to (421).
    #[error("misdirected request")]
    MisdirectedRequest,
    /// The body did not arrive within `gateway.body_timeout_seconds` (408, then close).
    #[error("request body timeout")]
    BodyTimeout,
    /// The client already has `gateway.max_connections_per_ip` connections open (503).
    #[error("too many connections from client")]
    TooManyConnections,
    /// `gateway.max_concurrent_chats` turns are in progress (503 + `Retry-After: 1`).
    #[error("too many chat turns in progress")]
    TooManyChats,
    /// A dependency is not available (no provider, a child down); the message is generic.
    #[error("{0}")]
    Unavailable(String),
    /// The state directory's file system is short of `store.min_free_mib` (503 +
    /// `Retry-After: 30`): new work is refused until space returns.
    #[error("the disk is full; retry later")]
    DiskFull,
    /// The channel's unfinished messages are at `store.max_pending` (503 + `Retry-After: 5`):
    /// nothing was stored, the sender delivers again.
    #[error("too many messages waiting; retry later")]
    BacklogFull,
    /// The request conflicts with the node's state (a fleet control message while the fleet
    /// is degraded, 409); the message says why.
    #[error("{0}")]
    Conflict(String),
    /// A token budget is used up; the message says which limit.
    #[error("{0}")]
    BudgetExceeded(String),
    /// An upstream (the model provider) failed; the message is clean (no keys, no URLs).
    #[error("{0}")]
    BadGateway(String),
    /// Anything else; the detail is logged, the body says only "internal error".
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// An internal error whose detail is logged, never returned.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        ApiError::Internal(detail.to_string())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } | ApiError::OriginNotAllowed => StatusCode::FORBIDDEN,
            ApiError::MisdirectedRequest => StatusCode::MISDIRECTED_REQUEST,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooManyConnections | ApiError::TooManyChats => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::LockedOut { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) | ApiError::DiskFull | ApiError::BacklogFull => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::BudgetExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        let body = match self {
            ApiError::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
                json!({"error": "unauthorized"})
            }
            ApiError::Forbidden { required } => {
                json!({"error": "forbidden", "required_scope": required})
            }
            ApiError::LockedOut {
                retry_after_seconds,
            } => {
                response.insert_header((header::RETRY_AFTER, retry_after_seconds.to_string()));
                json!({"error": "too many failed authentications"})
            }
            ApiError::BodyTimeout => {
                response.force_close();
                json!({"error": "request body timeout"})
            }
            ApiError::TooManyConnections => {
                response.force_close();
                response.insert_header((header::RETRY_AFTER, "1"));
                json!({"error": "too many connections from client"})
            }
            ApiError::TooManyChats => {
                response.insert_header((header::RETRY_AFTER, "1"));
                json!({"error": "too many chat turns in progress"})
            }
            ApiError::DiskFull => {
                response.insert_header((header::RETRY_AFTER, "30"));
                json!({"error": self.to_string()})
            }
            ApiError::BacklogFull => {
                response.insert_header((header::RETRY_AFTER, "5"));
                json!({"error": self.to_string()})
            }
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "request failed");
                json!({"error": "internal error"})
            }
            other => json!({"error": other.to_string()}),
        };
        response.json(body)
    }
}

/// A JSON error response for a status produced outside our handlers.
pub fn json_for_status(status: StatusCode) -> HttpResponse {
    let error = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        StatusCode::NOT_FOUND => ApiError::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::UNAUTHORIZED => ApiError::Unauthorized,
        StatusCode::REQUEST_TIMEOUT => ApiError::BodyTimeout,
        s if s.is_server_error() => {
            return HttpResponse::build(s).json(json!({"error": "internal error"}))
        }
        s => {
            let reason = s
                .canonical_reason()
                .unwrap_or("bad request")
                .to_ascii_lowercase();
            return HttpResponse::build(s).json(json!({ "error": reason }));
        }
    };
    error.error_response()
}
