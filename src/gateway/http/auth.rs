//! Authentication (CONTRACT §3.1): strict `Bearer` parsing, constant-time comparison, scopes
//! declared by each route in its handler's signature.
//!
//! A handler that takes `Authorized<Read>` cannot run without a token permitting `read`.
//! Whatever else a protected handler takes from the request (path, query, body) is its second
//! type parameter, `Authorized<Admin, web::Json<Body>>`, extracted only after authentication
//! and the scope check: a wrong token answers 401 whatever the body. The edge's body gate opens
//! here, so a body extractor outside `Authorized` fails closed. Rejections are cheap: no body
//! parsing, no synchronous log write. Local mode trusts only a direct loopback client whose
//! `Host` and `Origin` passed the edge (see `client::Client::is_local`).

use std::marker::PhantomData;
use std::net::IpAddr;
use std::time::Instant;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;
use serde_json::json;
use time::OffsetDateTime;

use kafclaw_actors::audit::AuditKind;
pub use kafclaw_actors::token::Scope;
use kafclaw_actors::token::{TokenCheck, TokenRegistry};

use super::body::BodyGate;
use super::client::Client;
use super::error::ApiError;
use super::lockout::FailureOutcome;
use super::AppState;

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Token name (`env:KAFCLAW_GATEWAY_AUTH_TOKEN`, a scoped token's name) or `local`.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// False in local single-user mode (loopback bind, no token configured).
    pub authenticated: bool,
    /// True the first time this token is seen by this process (audited once).
    pub first_use: bool,
}

/// The credentials the gateway accepts.
pub struct Authenticator {
    /// Scoped tokens and the runbook's shared admin token (keyed hashes only).
    tokens: TokenRegistry,
    /// Loopback bind and no admin token configured: loopback clients need no token while
    /// no other token is active either (see [`Authenticator::local_mode`]).
    tokenless_bind: bool,
}

/// Why a request was not authenticated (for counting and auditing; never the token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization` header where one is required.
    Missing,
    /// Not exactly `Bearer <token>`.
    Malformed,
    /// A well-formed token that matches nothing.
    Unknown,
    /// A token past its expiry.
    Expired { name: String },
    /// A revoked token (or an admin token past its rotation grace period).
    Revoked { name: String },
    /// The `Host` names no host of this listener (refused before authentication).
    Host,
    /// A browser `Origin` that is neither this listener nor listed (refused before
    /// authentication).
    Origin,
    /// A webhook delivery whose signature (`X-Hub-Signature-256`, `X-KafClaw-Signature`) is
    /// missing or wrong.
    Signature,
    /// A WhatsApp handshake with the wrong `hub.verify_token`.
    VerifyToken,
}

impl AuthFailure {
    /// Stable reason string.
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Unknown => "unknown_token",
            AuthFailure::Expired { .. } => "expired_token",
            AuthFailure::Revoked { .. } => "revoked_token",
            AuthFailure::Host => "host",
            AuthFailure::Origin => "origin",
            AuthFailure::Signature => "bad_signature",
            AuthFailure::VerifyToken => "bad_verify_token",
        }
    }
    /// The token's name when it is known (never the token).
    pub fn token_name(&self) -> Option<&str> {
        match self {
            AuthFailure::Expired { name } | AuthFailure::Revoked { name } => Some(name),
            _ => None,
        }
    }
}

impl Authenticator {
    /// Credentials for a gateway bound on a loopback (`loopback_bind`) or remote host.
    /// `admin_configured` says whether the runbook's admin token is set (it is already
    /// loaded into `tokens` as the static admin).
    pub fn new(tokens: TokenRegistry, admin_configured: bool, loopback_bind: bool) -> Self {
        Self {
            tokens,
            tokenless_bind: !admin_configured && loopback_bind,
        }
    }

    /// True when loopback clients need no token: a loopback bind with no admin token
    /// configured and no token active in the registry. Decided per request: once an operator
    /// issues a token (`kafclaw token create`, a gateway-token rotation) the gateway is no
    /// longer "without a token", and a tokenless request is refused like any other; revoking
    /// or expiring the last one brings local mode back.
    pub fn local_mode(&self) -> bool {
        self.tokenless_bind && !self.tokens.has_active_tokens(OffsetDateTime::now_utc())
    }

    /// The token registry (for the control operations).
    pub fn tokens(&self) -> &TokenRegistry {
        &self.tokens
    }

    /// Authenticates one request from its `Authorization` headers; `local_client` says the
    /// request came straight from this host (a loopback peer, no forwarding header).
    pub fn authenticate(
        &self,
        authorization: &[&[u8]],
        local_client: bool,
    ) -> Result<Principal, AuthFailure> {
        match authorization {
            [] => {
                if local_client && self.local_mode() {
                    Ok(Principal {
                        name: "local".into(),
                        scope: Scope::Admin,
                        authenticated: false,
                        first_use: false,
                    })
                } else {
                    Err(AuthFailure::Missing)
                }
            }
            [value] => {
                let token = parse_bearer(value).ok_or(AuthFailure::Malformed)?;
                match self.tokens.verify_bytes(token, OffsetDateTime::now_utc()) {
                    TokenCheck::Valid {
                        name,
                        scope,
                        first_use,
                    } => Ok(Principal {
                        name: name.to_string(),
                        scope,
                        authenticated: true,
                        first_use,
                    }),
                    TokenCheck::Unknown => Err(AuthFailure::Unknown),
                    TokenCheck::Expired { name } => Err(AuthFailure::Expired {
                        name: name.to_string(),
                    }),
                    TokenCheck::Revoked { name } => Err(AuthFailure::Revoked {
                        name: name.to_string(),
                    }),
                }
            }
            _ => Err(AuthFailure::Malformed),
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

/// Extractor: the caller, authenticated and permitted for `S`, and then `T` (the handler's
/// path, query or body: nothing of it is parsed before the caller is known).
pub struct Authorized<S: RequiredScope, T = ()> {
    /// Who is calling.
    pub principal: Principal,
    /// What the handler takes from the request besides the caller.
    pub input: T,
    _scope: PhantomData<S>,
}

/// Extractor: any valid credential (or local mode); `None` when no header was sent and local
/// mode does not apply. A header that is present but wrong is still a 401.
pub struct MaybeAuthorized(pub Option<Principal>);

/// Authenticates a request: lockout first (a locked-out IP is refused even with a correct
/// token), then the credential. A failure is counted and audited before the 401 goes out.
async fn authenticate(req: HttpRequest) -> Result<Principal, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::internal("application state missing"))?;
    let resolved = req.extensions().get::<Client>().cloned();
    let ip: Option<IpAddr> = resolved
        .as_ref()
        .map(|c| c.addr)
        .or_else(|| req.peer_addr().map(|a| a.ip()));
    let local_client = resolved.as_ref().is_some_and(Client::is_local);
    let relayed_peer = resolved
        .as_ref()
        .filter(|c| c.relayed)
        .map(|c| c.peer.to_string());
    if let Some(ip) = ip {
        if let Some(left) = state.control.lockout.check(ip, Instant::now()) {
            return Err(ApiError::LockedOut {
                retry_after_seconds: left.as_secs().max(1),
            });
        }
    }
    let headers: Vec<&[u8]> = req
        .headers()
        .get_all(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .collect();
    match state.auth.authenticate(&headers, local_client) {
        Ok(principal) => {
            if principal.first_use {
                // Informational: the request does not wait for it.
                let state = state.clone();
                let name = principal.name.clone();
                let client = ip.map(|i| i.to_string()).unwrap_or_default();
                actix_web::rt::spawn(async move {
                    let _ = state
                        .audit(
                            AuditKind::TokenFirstUsed,
                            &name,
                            &name,
                            json!({"client": client}),
                        )
                        .await;
                });
            }
            Ok(principal)
        }
        Err(failure) => Err(refused(&req, &state, ip, relayed_peer, failure).await),
    }
}

/// The client of `req` and, when it came through a trusted proxy, the proxy.
fn client_of(req: &HttpRequest) -> (Option<IpAddr>, Option<String>) {
    let resolved = req.extensions().get::<Client>().cloned();
    let ip = resolved
        .as_ref()
        .map(|c| c.addr)
        .or_else(|| req.peer_addr().map(|a| a.ip()));
    let relayed = resolved.filter(|c| c.relayed).map(|c| c.peer.to_string());
    (ip, relayed)
}

/// A webhook's credential (its signature, the handshake token) checked like a token: a
/// locked-out client is refused first (429), a wrong one is counted toward the lockout,
/// signalled and audited (throttled) like a wrong token, and answered 401.
pub async fn check_webhook_credential(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    verdict: Result<(), AuthFailure>,
) -> Result<(), ApiError> {
    let (ip, relayed) = client_of(req);
    if let Some(ip) = ip {
        if let Some(left) = state.control.lockout.check(ip, Instant::now()) {
            return Err(ApiError::LockedOut {
                retry_after_seconds: left.as_secs().max(1),
            });
        }
    }
    match verdict {
        Ok(()) => Ok(()),
        Err(failure) => Err(refused(req, state, ip, relayed, failure).await),
    }
}

/// One refused credential: counted (locally, and fleet-wide), logged (sampled), signalled to
/// the incident monitor and audited (throttled); the 401 to answer.
async fn refused(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    ip: Option<IpAddr>,
    relayed_peer: Option<String>,
    failure: AuthFailure,
) -> ApiError {
    let client = ip.map(|i| i.to_string()).unwrap_or_default();
    // Count before any await, so concurrent failures from one IP cannot slip past the
    // threshold while earlier ones are still being audited.
    let outcome = ip.map(|ip| state.control.lockout.record_failure(ip, Instant::now()));
    // Fleet mode: the same failure counts fleet-wide; a fleet-wide lockout applies
    // here at once and reaches the other nodes through the bucket.
    if let (Some(fleet), Some(ip)) = (state.control.fleet.clone(), ip) {
        let state = state.clone();
        actix_rt::spawn(async move {
            match fleet.count_auth_failure(ip).await {
                Ok(Some(left)) if state.control.lockout.check(ip, Instant::now()).is_none() => {
                    let client = super::client::ClientKey::of(ip).to_string();
                    let data =
                        json!({"client": client, "lockout_seconds": left.as_secs(), "fleet": true});
                    let _ = state
                        .audit(AuditKind::AuthLockedOut, &client, "fleet", data)
                        .await;
                    state.control.lockout.lock(ip, left, Instant::now());
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "fleet auth-failure count"),
            }
        });
    }
    state.note_auth_failure(&client, req.path(), &failure);
    // The monitor counts per key (an IPv6 client by its /64) and acts on that address.
    let key = ip.map(|i| super::client::ClientKey::of(i).representative().to_string());
    kafclaw_actors::incident::offer_signal(state.signals.try_send(
        kafclaw_actors::incident::AuthFailureSignal {
            ip: key.unwrap_or_default(),
            at: OffsetDateTime::now_utc(),
        },
    ));
    let mut data = json!({
        "client": client,
        "route": req.path(),
        "reason": failure.as_str(),
        "token_name": failure.token_name(),
    });
    if let Some(relay) = relayed_peer {
        data["peer"] = json!(relay);
    }
    // Denying is the safe direction: the 401 goes out even if the audit log fails, and
    // once its record is written in chain order, without waiting for the fsync.
    let _ = state
        .audit_refusal(AuditKind::AuthFailed, &client, req.path(), data)
        .await;
    if let Some(FailureOutcome::LockedOut { retry_after }) = outcome {
        tracing::warn!(client = %client, seconds = retry_after.as_secs(), "client locked out after repeated authentication failures");
        let _ = state
            .audit_refusal(
                AuditKind::AuthLockedOut,
                &client,
                req.path(),
                json!({"client": client, "lockout_seconds": retry_after.as_secs()}),
            )
            .await;
    }
    ApiError::Unauthorized
}

impl<S: RequiredScope, T: FromRequest + 'static> FromRequest for Authorized<S, T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        // Taken now, read only once the caller is known to be allowed.
        let mut payload = payload.take();
        Box::pin(async move {
            let principal = authorize::<S>(&req).await?;
            BodyGate::open(&req);
            let input = T::from_request(&req, &mut payload)
                .await
                .map_err(Into::into)?;
            Ok(Authorized {
                principal,
                input,
                _scope: PhantomData,
            })
        })
    }
}

/// Authenticates `req` and checks the scope `S`; a denial is audited before the 403.
async fn authorize<S: RequiredScope>(req: &HttpRequest) -> Result<Principal, ApiError> {
    let principal = authenticate(req.clone()).await?;
    if principal.scope.permits(S::SCOPE) {
        return Ok(principal);
    }
    if let Some(state) = req.app_data::<web::Data<AppState>>() {
        let data = json!({"route": req.path(), "scope": principal.scope.as_str(), "required": S::SCOPE.as_str()});
        let _ = state
            .audit(
                AuditKind::AuthScopeDenied,
                &principal.name,
                req.path(),
                data,
            )
            .await;
    }
    Err(ApiError::Forbidden {
        required: S::SCOPE.as_str(),
    })
}

impl FromRequest for MaybeAuthorized {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let has_header = req.headers().contains_key(header::AUTHORIZATION);
            let local = req
                .app_data::<web::Data<AppState>>()
                .is_some_and(|s| s.auth.local_mode())
                && req
                    .extensions()
                    .get::<Client>()
                    .is_some_and(Client::is_local);
            if !has_header && !local {
                return Ok(MaybeAuthorized(None));
            }
            authenticate(req).await.map(|p| MaybeAuthorized(Some(p)))
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

    fn registry(admin: Option<&str>) -> TokenRegistry {
        let db = kafclaw_actors::store::StoreDb::temporary().unwrap();
        let key = kafclaw_actors::token::TokenHashKey::from_bytes([7; 32]);
        let registry = TokenRegistry::open(&db, key).unwrap();
        registry.set_static_admin(admin);
        registry
    }

    #[test]
    fn local_mode_only_for_loopback_peers_without_a_configured_token() {
        let local = Authenticator::new(registry(None), false, true);
        let lo = true;
        let remote = false;
        assert!(local.authenticate(&[], lo).is_ok());
        assert_eq!(local.authenticate(&[], remote), Err(AuthFailure::Missing));
        assert_eq!(
            local.authenticate(&[b"Bearer wrong"], lo),
            Err(AuthFailure::Unknown),
            "a presented token must verify even in local mode"
        );

        let token = "t".repeat(43);
        let guarded = Authenticator::new(registry(Some(&token)), true, true);
        assert_eq!(guarded.authenticate(&[], lo), Err(AuthFailure::Missing));
        let header = format!("Bearer {token}");
        assert_eq!(
            guarded
                .authenticate(&[header.as_bytes()], lo)
                .unwrap()
                .scope,
            Scope::Admin
        );
        assert_eq!(
            guarded.authenticate(&[token.as_bytes()], lo),
            Err(AuthFailure::Malformed)
        );
        assert_eq!(
            guarded.authenticate(&[header.as_bytes(), header.as_bytes()], lo),
            Err(AuthFailure::Malformed),
            "two Authorization headers are refused"
        );
    }

    #[actix_rt::test]
    async fn an_issued_token_ends_local_mode_and_its_revocation_brings_it_back() {
        let tokens = registry(None);
        let local = Authenticator::new(tokens.clone(), false, true);
        assert!(local.local_mode());
        for scope in [Scope::Read, Scope::Chat, Scope::Admin] {
            let issued = tokens.create(scope, None, None).await.unwrap();
            assert!(!local.local_mode(), "{scope:?}");
            assert_eq!(
                local.authenticate(&[], true),
                Err(AuthFailure::Missing),
                "a tokenless loopback request once a {scope:?} token exists"
            );
            let header = format!("Bearer {}", issued.token.expose());
            assert_eq!(
                local
                    .authenticate(&[header.as_bytes()], true)
                    .unwrap()
                    .scope,
                scope
            );
            tokens.revoke(&issued.record.name).await.unwrap();
        }
        assert!(
            local.local_mode(),
            "every token revoked: no token configured"
        );
        assert!(local.authenticate(&[], true).is_ok());
        let short = tokens
            .create(
                Scope::Read,
                Some(std::time::Duration::from_millis(50)),
                None,
            )
            .await
            .unwrap();
        assert!(!local.local_mode());
        std::thread::sleep(std::time::Duration::from_millis(80));
        assert!(local.local_mode(), "{} expired", short.record.name);
    }
}
