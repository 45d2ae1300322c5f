//! A gateway on another host (`--url`): the only place an operator command needs a token.
//! Local commands reach the local gateway through the control socket ([`crate::protocol`]),
//! which the kernel already restricts to the owner; a remote one is asked over its HTTP API
//! with a bearer token from `--token`, `KAFCLAW_GATEWAY_AUTH_TOKEN` (or its env file / config
//! value), or the local vault's `gateway.auth_token`. An `https://` URL trusts exactly the
//! certificate in `gateway.tls.cert_file` (pinned, as `kafclaw healthcheck` does).
//!
//! Owns: finding that token and sending one request. Must not: print, log or put the token in
//! an error (errors name the URL and the HTTP status only).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use kafclaw_actors::paths::Home;

use crate::envelope::ErrorCode;
use crate::secret::Secret;
use crate::settings::Settings;

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// `--url` and `--token` as given on the command line.
#[derive(Clone)]
pub struct RemoteArgs {
    /// The remote gateway's dashboard/admin base URL.
    pub url: String,
    /// `--token`, when given.
    pub token: Option<String>,
}

impl std::fmt::Debug for RemoteArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteArgs")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A remote gateway and the token to show it.
pub struct Remote {
    /// The dashboard/admin base URL, without a trailing `/`.
    base: String,
    /// The bearer token.
    token: Secret,
    /// For an `https://` URL: a client that trusts exactly `gateway.tls.cert_file`.
    tls: Option<rustls::ClientConfig>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Why a remote request did not succeed: a code for the envelope and one line.
#[derive(Debug)]
pub struct RemoteError {
    /// The envelope's error code.
    pub code: ErrorCode,
    /// What happened (never the token).
    pub message: String,
}

impl RemoteError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl Remote {
    /// The remote at `url` with the first token found: `flag`, the settings' (environment,
    /// env file, config.json), then the vault of `home` (when no local gateway holds it).
    pub fn resolve(
        url: &str,
        flag: Option<&str>,
        settings: &Settings,
        home: &Home,
        env: &HashMap<String, String>,
    ) -> Result<Remote, RemoteError> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(RemoteError::new(
                ErrorCode::Usage,
                format!("--url must start with http:// or https://, got {base}"),
            ));
        }
        let token = flag
            .filter(|t| !t.is_empty())
            .map(|t| Secret::new(t.to_string()))
            .or_else(|| settings.gateway.auth_token.clone())
            .or_else(|| vault_token(home, env))
            .ok_or_else(|| {
                RemoteError::new(
                    ErrorCode::Usage,
                    "a remote gateway (--url) needs a token: --token, KAFCLAW_GATEWAY_AUTH_TOKEN, or `kafclaw secrets set gateway.auth_token`",
                )
            })?;
        let tls = if base.starts_with("https://") {
            Some(pinned_tls(settings)?)
        } else {
            None
        };
        Ok(Remote { base, token, tls })
    }

    /// `GET path`; the JSON body of a 2xx answer.
    pub fn get(&self, path: &str) -> Result<Value, RemoteError> {
        self.send(reqwest::Method::GET, path, None)
    }

    /// `POST path` with a JSON `body`; the JSON body of a 2xx answer.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, RemoteError> {
        self.send(reqwest::Method::POST, path, Some(body))
    }

    fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, RemoteError> {
        let url = format!("{}{path}", self.base);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| RemoteError::new(ErrorCode::Internal, e.to_string()))?;
        runtime.block_on(async {
            let mut builder = reqwest::Client::builder().timeout(TIMEOUT);
            if let Some(config) = &self.tls {
                builder = builder.use_preconfigured_tls(config.clone());
            }
            let client = builder
                .build()
                .map_err(|e| RemoteError::new(ErrorCode::Internal, e.to_string()))?;
            let mut request = client
                .request(method, &url)
                .bearer_auth(self.token.expose());
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.map_err(|_| {
                RemoteError::new(
                    ErrorCode::Unavailable,
                    format!("cannot reach the gateway at {url}"),
                )
            })?;
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if status.is_success() {
                return Ok(body);
            }
            let code = match status.as_u16() {
                401 | 403 | 400 | 404 | 409 | 422 => ErrorCode::Refused,
                _ => ErrorCode::Unavailable,
            };
            Err(RemoteError::new(
                code,
                format!(
                    "{} from {url}: {}",
                    status.as_u16(),
                    body["error"].as_str().unwrap_or("request failed")
                ),
            ))
        })
    }
}

/// The TLS client for an `https://` remote: it trusts exactly the certificate named by
/// `gateway.tls.cert_file` (the gateway's own, copied to the operator's machine), no system
/// roots; without one the request is refused rather than sent unverified.
fn pinned_tls(settings: &Settings) -> Result<rustls::ClientConfig, RemoteError> {
    let cert_file = &settings.gateway.tls.cert_file;
    if cert_file.is_empty() {
        return Err(RemoteError::new(
            ErrorCode::Usage,
            "an https:// --url needs the gateway's certificate to trust: set gateway.tls.cert_file (KAFCLAW_GATEWAY_TLS_CERT_FILE) to a copy of it",
        ));
    }
    crate::http::tls::pinned::client_config(cert_file)
        .map_err(|e| RemoteError::new(ErrorCode::Config, e))
}

/// `gateway.auth_token` from the local vault, when it exists and no local gateway holds it.
fn vault_token(home: &Home, env: &HashMap<String, String>) -> Option<Secret> {
    let state = crate::checks::TrustState::open(home, env, crate::checks::Create::No);
    let value = state.vault?.get("gateway.auth_token").ok()??;
    value.expose_str().map(|t| Secret::new(t.to_string()))
}
