//! [`ChatClient`]: one POST to `{api_base}/chat/completions`, with timeout, retries and backoff.
//!
//! Owns: the HTTP attempt, the retry decision (429, 5xx and network errors are retried; other
//! 4xx and timeouts are not), `Retry-After`, bounded reads of reply bodies, and scrubbing every
//! error text (the key is redacted, URL queries are cut, nothing is longer than a line).
//! Must not: log or return the key, or a URL with its query.

use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use zeroize::Zeroizing;

use super::wire::{WireRequest, WireResponse};
use super::{ChatRequest, ChatResponse, ProviderError, ProviderSettings, Usage};
use crate::backoff::Backoff;

/// Largest reply body accepted from the provider.
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// Largest error body read for a provider's error message.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// Longest provider detail or low-level reason kept in an error.
const MAX_DETAIL_CHARS: usize = 200;
/// Upper bound on the connect timeout (the request timeout may be longer).
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for one OpenAI-compatible endpoint. Cheap to clone (the connection pool is shared);
/// safe to use from many tasks at once.
#[derive(Clone)]
pub struct ChatClient {
    /// The pooled HTTP client, with the request timeout set.
    http: reqwest::Client,
    /// `{api_base}/chat/completions`, query string kept.
    endpoint: Url,
    /// The settings, kept for the model name, retry policy and to scrub the key from errors.
    settings: ProviderSettings,
    /// `Bearer <key>`, marked sensitive so that `http`'s own debug output hides it.
    authorization: Option<HeaderValue>,
}

impl std::fmt::Debug for ChatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatClient")
            .field("endpoint", &display_url(&self.endpoint))
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// One failed attempt and whether another may follow.
struct Failure {
    /// The error to return if no attempt follows.
    error: ProviderError,
    /// Whether the failure is transient (429, 5xx, network).
    retryable: bool,
    /// The provider's `Retry-After`, in seconds, when it sent one.
    retry_after: Option<u64>,
}

impl ChatClient {
    /// A client for `settings`. Fails on an `api_base` that is not an http(s) URL, a zero
    /// timeout, or a key that cannot be sent in a header.
    pub fn new(settings: ProviderSettings) -> Result<Self, ProviderError> {
        let invalid = |reason: &str| ProviderError::InvalidSettings {
            reason: reason.to_owned(),
        };
        let mut endpoint = Url::parse(settings.api_base.trim())
            .map_err(|e| invalid(&format!("api_base is not a URL ({e})")))?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host_str().is_none() {
            return Err(invalid("api_base must be an http or https URL with a host"));
        }
        let path = format!("{}/chat/completions", endpoint.path().trim_end_matches('/'));
        endpoint.set_path(&path);
        endpoint.set_fragment(None);
        if settings.model.trim().is_empty() {
            return Err(invalid("the model name is empty"));
        }
        if settings.timeout_seconds == 0 {
            return Err(invalid("timeout_seconds must be at least 1"));
        }

        let authorization = match &settings.api_key {
            None => None,
            Some(key) => {
                let key = key
                    .expose_str()
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| invalid("the API key is empty or not text"))?;
                let bearer = Zeroizing::new(format!("Bearer {key}"));
                let mut value = HeaderValue::from_str(&bearer).map_err(|_| {
                    invalid("the API key contains characters not allowed in a header")
                })?;
                value.set_sensitive(true);
                Some(value)
            }
        };

        let timeout = Duration::from_secs(settings.timeout_seconds);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("kafclaw/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| invalid(&format!("cannot build the HTTP client ({})", innermost(&e))))?;

        Ok(Self {
            http,
            endpoint,
            settings,
            authorization,
        })
    }

    /// The model name requests are sent with.
    pub fn model(&self) -> &str {
        &self.settings.model
    }

    /// The endpoint without its query string (for status pages and logs).
    pub fn endpoint_for_display(&self) -> String {
        display_url(&self.endpoint)
    }

    /// Sends `request` and returns the model's answer, retrying transient failures with
    /// exponential backoff (or the provider's `Retry-After`, capped) up to `max_retries` times.
    pub async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let body =
            serde_json::to_vec(&WireRequest::new(&self.settings.model, request)).map_err(|e| {
                ProviderError::InvalidSettings {
                    reason: format!("the request cannot be encoded ({e})"),
                }
            })?;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let failure = match self.attempt(&body, attempt).await {
                Ok(response) => return Ok(response),
                Err(failure) => failure,
            };
            if !failure.retryable || attempt > self.settings.max_retries {
                tracing::warn!(attempt, error = %failure.error, "model provider call failed");
                return Err(failure.error);
            }
            let delay = self.retry_delay(attempt, failure.retry_after);
            tracing::info!(
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %failure.error,
                "model provider call failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One HTTP attempt.
    async fn attempt(&self, body: &[u8], attempt: u32) -> Result<ChatResponse, Failure> {
        let mut request = self
            .http
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| self.transport_failure(&e, attempt))?;

        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let error_body = read_capped(&mut response, MAX_ERROR_BODY_BYTES)
                .await
                .map(|(bytes, _)| bytes)
                .unwrap_or_default();
            return Err(self.status_failure(status, &error_body, retry_after, attempt));
        }

        let (bytes, complete) = read_capped(&mut response, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| self.transport_failure(&e, attempt))?;
        if !complete {
            return Err(Failure {
                error: ProviderError::InvalidResponse {
                    reason: format!("the reply is larger than {MAX_RESPONSE_BYTES} bytes"),
                },
                retryable: false,
                retry_after: None,
            });
        }
        self.parse_reply(body, &bytes).map_err(|error| Failure {
            error,
            retryable: false,
            retry_after: None,
        })
    }

    fn parse_reply(
        &self,
        request_body: &[u8],
        bytes: &[u8],
    ) -> Result<ChatResponse, ProviderError> {
        let wire: WireResponse =
            serde_json::from_slice(bytes).map_err(|e| ProviderError::InvalidResponse {
                reason: self.scrub(&e.to_string()),
            })?;
        let usage_reported = wire.usage.is_some();
        let Some(choice) = wire.choices.into_iter().next() else {
            return Err(ProviderError::InvalidResponse {
                reason: "it has no choices".to_owned(),
            });
        };
        let message = choice.message.into_message();
        let usage = match wire.usage {
            Some(usage) => Usage::from(usage),
            None => {
                // Budgets must count something even when a server reports nothing.
                let reply_bytes = message.content.as_deref().map_or(0, str::len)
                    + message
                        .tool_calls
                        .iter()
                        .map(|c| c.name.len() + c.arguments.len())
                        .sum::<usize>();
                tracing::warn!("model provider reported no token usage; estimating");
                Usage {
                    prompt_tokens: (request_body.len() / 4) as u64,
                    completion_tokens: (reply_bytes / 4) as u64,
                }
            }
        };
        Ok(ChatResponse {
            message,
            usage,
            usage_reported,
            finish_reason: choice.finish_reason,
        })
    }

    fn status_failure(
        &self,
        status: StatusCode,
        body: &[u8],
        retry_after: Option<u64>,
        attempts: u32,
    ) -> Failure {
        let code = status.as_u16();
        let (error, retryable) = if status == StatusCode::TOO_MANY_REQUESTS {
            (ProviderError::RateLimited { attempts }, true)
        } else if status.is_server_error() {
            (
                ProviderError::ServerError {
                    status: code,
                    attempts,
                },
                true,
            )
        } else if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            // Never echo the provider's message here: some quote part of the key back.
            (ProviderError::Unauthorized { status: code }, false)
        } else {
            (
                ProviderError::Rejected {
                    status: code,
                    detail: self.scrub(&provider_error_message(body)),
                },
                false,
            )
        };
        Failure {
            error,
            retryable,
            retry_after: if retryable { retry_after } else { None },
        }
    }

    fn transport_failure(&self, error: &reqwest::Error, attempts: u32) -> Failure {
        if error.is_timeout() && !error.is_connect() {
            return Failure {
                error: ProviderError::TimedOut {
                    seconds: self.settings.timeout_seconds,
                },
                retryable: false,
                retry_after: None,
            };
        }
        let what = if error.is_connect() {
            "connection failed"
        } else if error.is_body() || error.is_decode() {
            "the reply was cut off"
        } else {
            "request failed"
        };
        Failure {
            error: ProviderError::Unreachable {
                reason: self.scrub(&format!("{what}: {}", innermost(error))),
                attempts,
            },
            retryable: true,
            retry_after: None,
        }
    }

    /// The wait before retry number `retry` (1-based).
    fn retry_delay(&self, retry: u32, retry_after: Option<u64>) -> Duration {
        let cap = Duration::from_secs(self.settings.max_retry_delay_seconds);
        let delay = match retry_after {
            Some(seconds) => Duration::from_secs(seconds),
            None => Backoff::new(
                self.settings.backoff_base_ms,
                self.settings.max_retry_delay_seconds.saturating_mul(1_000),
                self.settings.max_retries.saturating_add(1),
            )
            .delay(retry),
        };
        delay.min(cap)
    }

    /// `text` made safe for a user: the key redacted, URL queries cut, one short line.
    fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        if let Some(key) = self.settings.api_key.as_ref().and_then(|k| k.expose_str()) {
            let key = key.trim();
            if !key.is_empty() {
                text = text.replace(key, "[redacted]");
            }
        }
        scrub_text(&text)
    }
}

/// Cuts the query (and fragment) from every URL-like token of `text`, replaces control
/// characters by spaces and shortens it to [`MAX_DETAIL_CHARS`].
pub(super) fn scrub_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_DETAIL_CHARS + 4));
    let mut in_url_query = false;
    let mut chars = 0usize;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("http://") || rest.starts_with("https://") {
            in_url_query = false;
        }
        if c.is_whitespace() || matches!(c, '"' | '\'' | ')' | '>' | ',') {
            in_url_query = false;
        } else if c == '?' || c == '#' {
            // A '?' or '#' inside a URL-like token starts its query: drop until the token ends.
            if token_is_url(text, text.len() - rest.len()) {
                in_url_query = true;
            }
        }
        rest = &rest[c.len_utf8()..];
        if in_url_query {
            continue;
        }
        if chars == MAX_DETAIL_CHARS {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
        chars += 1;
    }
    out.trim().to_owned()
}

/// Whether the token around byte `at` of `text` (delimited by whitespace or quotes) starts
/// like a URL.
fn token_is_url(text: &str, at: usize) -> bool {
    let start = text[..at]
        .rfind(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '(' | '<' | ','))
        .map_or(0, |i| i + 1);
    text[start..at].contains("://")
}

/// `url` as scheme, host, port and path: no credentials, query or fragment.
fn display_url(url: &Url) -> String {
    let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(url.path());
    shown
}

/// `api_base` without query or credentials, for `Debug` of the settings.
pub(super) fn url_without_query(api_base: &str) -> String {
    match Url::parse(api_base.trim()) {
        Ok(url) => display_url(&url),
        Err(_) => "<invalid url>".to_owned(),
    }
}

/// The provider's own error message from an error body (`{"error":{"message":…}}`,
/// `{"error":"…"}` or `{"message":…}`); empty when the body is not such JSON (an HTML page is
/// never echoed).
fn provider_error_message(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return String::new();
    };
    let message = value
        .pointer("/error/message")
        .or_else(|| value.get("error"))
        .or_else(|| value.get("message"))
        .and_then(|m| m.as_str());
    message.unwrap_or_default().to_owned()
}

/// The innermost cause of `error`, without the URL reqwest puts in its own message.
fn innermost(error: &reqwest::Error) -> String {
    let Some(mut cause) = std::error::Error::source(error) else {
        // No source: reqwest's own message, stripped of the URL it may carry.
        let mut text = error.to_string();
        if let Some(url) = error.url() {
            text = text.replace(url.as_str(), "");
        }
        return text;
    };
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Reads up to `cap` bytes of the body; the flag is false when the body was longer.
async fn read_capped(
    response: &mut reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if bytes.len() + chunk.len() > cap {
            return Ok((bytes, false));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((bytes, true))
}
