//! Authentication (CONTRACT §3.1): strict `Bearer` parsing, constant-time comparison, scopes
//! declared by each route in its handler's signature.
//!
//! A handler that takes `Authorized<Read>` cannot run without a token permitting `read`;
//! the check runs before any body is read. Rejections are cheap: no body parsing, no
//! synchronous log write.

use std::future::{ready, Ready};
use std::marker::PhantomData;
use std::net::IpAddr;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};

use super::error::ApiError;
use super::AppState;
use crate::secret::Secret;

/// What a credential may do. `admin` permits everything; `read` the GET endpoints and
/// `/metrics`; `chat` only `POST /chat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everything.
    Admin,
    /// Read-only endpoints.
    Read,
    /// `POST /chat` only.
    Chat,
}

impl Scope {
    /// Whether a credential with `self` may use a route requiring `required`.
    pub fn permits(self, required: Scope) -> bool {
        self == Scope::Admin || self == required
    }
    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Read => "read",
            Scope::Chat => "chat",
        }
    }
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Token name (`env:KAFCLAW_GATEWAY_AUTH_TOKEN`, a scoped token's name) or `local`.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// False in local single-user mode (loopback bind, no token configured).
    pub authenticated: bool,
}

/// The credentials the gateway accepts.
pub struct Authenticator {
    /// The runbook's shared admin token, if configured.
    admin_token: Option<Secret>,
    /// Loopback bind and no token configured: loopback clients need no token.
    local_mode: bool,
}

/// Why a request was not authenticated (for counting and auditing; never the token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization` header where one is required.
    Missing,
    /// Not exactly `Bearer <token>`.
    Malformed,
    /// A well-formed token that matches nothing.
    Unknown,
}

impl AuthFailure {
    /// Stable reason string.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Unknown => "unknown_token",
        }
    }
}

impl Authenticator {
    /// Credentials for a gateway bound on a loopback (`loopback_bind`) or remote host.
    pub fn new(admin_token: Option<Secret>, loopback_bind: bool) -> Self {
        let local_mode = admin_token.is_none() && loopback_bind;
        Self {
            admin_token,
            local_mode,
        }
    }

    /// True when loopback clients need no token.
    pub fn local_mode(&self) -> bool {
        self.local_mode
    }

    /// Authenticates one request from its `Authorization` headers and peer address.
    pub fn authenticate(
        &self,
        authorization: &[&[u8]],
        peer: Option<IpAddr>,
    ) -> Result<Principal, AuthFailure> {
        match authorization {
            [] => {
                if self.local_mode && peer.is_some_and(|ip| ip.is_loopback()) {
                    Ok(Principal {
                        name: "local".into(),
                        scope: Scope::Admin,
                        authenticated: false,
                    })
                } else {
                    Err(AuthFailure::Missing)
                }
            }
            [value] => {
                let token = parse_bearer(value).ok_or(AuthFailure::Malformed)?;
                self.verify(token)
            }
            _ => Err(AuthFailure::Malformed),
        }
    }

    fn verify(&self, token: &[u8]) -> Result<Principal, AuthFailure> {
        match &self.admin_token {
            Some(admin) if admin.ct_eq(token) => Ok(Principal {
                name: "env:KAFCLAW_GATEWAY_AUTH_TOKEN".into(),
                scope: Scope::Admin,
                authenticated: true,
            }),
            _ => Err(AuthFailure::Unknown),
        }
    }
}

/// `Bearer <token>`: scheme case-insensitive, exactly one space, a non-empty token of visible
/// ASCII without spaces. Anything else is malformed.
pub fn parse_bearer(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let token = &value[SCHEME.len()..];
    token.iter().all(|b| b.is_ascii_graphic()).then_some(token)
}

/// A route's required scope, as a type.
pub trait RequiredScope {
    /// The scope.
    const SCOPE: Scope;
}
/// Marker: the route needs `read`.
pub struct Read;
/// Marker: the route needs `admin`.
pub struct Admin;
/// Marker: the route needs `chat`.
pub struct Chat;
impl RequiredScope for Read {
    const SCOPE: Scope = Scope::Read;
}
impl RequiredScope for Admin {
    const SCOPE: Scope = Scope::Admin;
}
impl RequiredScope for Chat {
    const SCOPE: Scope = Scope::Chat;
}

/// Extractor: the caller, authenticated and permitted for `S`.
pub struct Authorized<S: RequiredScope> {
    /// Who is calling.
    pub principal: Principal,
    _scope: PhantomData<S>,
}

/// Extractor: any valid credential (or local mode); `None` when no header was sent and local
/// mode does not apply. A header that is present but wrong is still a 401.
pub struct MaybeAuthorized(pub Option<Principal>);

fn authenticate(req: &HttpRequest) -> Result<Principal, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::internal("application state missing"))?;
    let headers: Vec<&[u8]> = req
        .headers()
        .get_all(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .collect();
    let peer = req.peer_addr().map(|a| a.ip());
    state.auth.authenticate(&headers, peer).map_err(|failure| {
        state.auth_failed(req, failure);
        ApiError::Unauthorized
    })
}

impl<S: RequiredScope> FromRequest for Authorized<S> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req).and_then(|principal| {
            if principal.scope.permits(S::SCOPE) {
                Ok(Authorized {
                    principal,
                    _scope: PhantomData,
                })
            } else {
                tracing::warn!(
                    token = %principal.name,
                    required = S::SCOPE.as_str(),
                    path = %req.path(),
                    "scope denied"
                );
                Err(ApiError::Forbidden {
                    required: S::SCOPE.as_str(),
                })
            }
        }))
    }
}

impl FromRequest for MaybeAuthorized {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let has_header = req.headers().contains_key(header::AUTHORIZATION);
        ready(match authenticate(req) {
            Ok(p) => Ok(MaybeAuthorized(Some(p))),
            Err(_) if !has_header => Ok(MaybeAuthorized(None)),
            Err(e) => Err(e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing_is_strict() {
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (b"Bearer abc", Some(b"abc")),
            (b"bearer abc", Some(b"abc")),
            (b"BEARER abc", Some(b"abc")),
            (b"Bearer  abc", None),
            (b"Bearer abc ", None),
            (b"Bearer", None),
            (b"Bearer ", None),
            (b"abc", None),
            (b"Basic abc", None),
            (b"Bearer\tabc", None),
            (b"Token abc", None),
            (b"Bearer a\xffb", None),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse_bearer(input),
                *expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn local_mode_only_for_loopback_peers_without_a_configured_token() {
        let local = Authenticator::new(None, true);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let remote: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(local.authenticate(&[], Some(lo)).is_ok());
        assert_eq!(
            local.authenticate(&[], Some(remote)),
            Err(AuthFailure::Missing)
        );
        assert_eq!(
            local.authenticate(&[b"Bearer wrong"], Some(lo)),
            Err(AuthFailure::Unknown),
            "a presented token must verify even in local mode"
        );

        let token = "t".repeat(43);
        let guarded = Authenticator::new(Some(Secret::new(token.clone())), true);
        assert_eq!(
            guarded.authenticate(&[], Some(lo)),
            Err(AuthFailure::Missing)
        );
        let header = format!("Bearer {token}");
        assert_eq!(
            guarded
                .authenticate(&[header.as_bytes()], Some(lo))
                .unwrap()
                .scope,
            Scope::Admin
        );
        assert_eq!(
            guarded.authenticate(&[token.as_bytes()], Some(lo)),
            Err(AuthFailure::Malformed)
        );
        assert_eq!(
            guarded.authenticate(&[header.as_bytes(), header.as_bytes()], Some(lo)),
            Err(AuthFailure::Malformed),
            "two Authorization headers are refused"
        );
    }

    #[test]
    fn scopes() {
        for (have, need, ok) in [
            (Scope::Admin, Scope::Read, true),
            (Scope::Admin, Scope::Chat, true),
            (Scope::Admin, Scope::Admin, true),
            (Scope::Read, Scope::Read, true),
            (Scope::Read, Scope::Chat, false),
            (Scope::Read, Scope::Admin, false),
            (Scope::Chat, Scope::Chat, true),
            (Scope::Chat, Scope::Read, false),
        ] {
            assert_eq!(have.permits(need), ok, "{have:?} for {need:?}");
        }
    }
}
