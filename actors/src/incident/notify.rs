//! The incident webhook: a signed JSON POST for each new incident, retried with backoff.
//!
//! Owns: the body (`{"event":"incident.opened","owner":…,"incident":{…}}`), the signature
//! (`X-KafClaw-Timestamp: <unix seconds>`, `X-KafClaw-Signature: v1=<hex HMAC-SHA256(key,
//! "{timestamp}.{body}")>`, the same scheme as the bridge channels, computed afresh for every
//! attempt), and the retry loop, which runs in a spawned task so the monitor never waits on it.
//! Must not: log the URL (chat webhooks carry a credential in it) or the key, or follow a
//! redirect (a signed body goes where it was configured to go, or nowhere).

use std::fmt;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::Incident;
use crate::clock;

type HmacSha256 = Hmac<Sha256>;

/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The 32-byte secret that signs webhook bodies (held in the vault by the gateway).
/// Wiped from memory when dropped; its `Debug` never shows the bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct WebhookKey([u8; 32]);

impl WebhookKey {
    /// Wraps key bytes. The caller should wipe its own copy.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookKey(..)")
    }
}

/// When to try again: the first attempt, then `retries` more after `initial_delay`, doubling
/// up to `max_delay` (default: 5 retries, 1 s → 2 → 4 → 8 → 16 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first one.
    pub retries: u32,
    /// The wait before the first retry.
    pub initial_delay: Duration,
    /// The longest wait.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 5,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(16),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based).
    fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.initial_delay
            .saturating_mul(factor)
            .min(self.max_delay)
    }
}

/// Why a notification was not delivered. Never contains the URL or the key.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The configured URL is not an http(s) URL with a host.
    #[error("invalid webhook url: {reason}")]
    InvalidUrl {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The HTTP client could not be built, or the body encoded.
    #[error("webhook client failed: {0}")]
    Client(String),
    /// The receiver refused the request with a status that retrying cannot fix.
    #[error("webhook receiver refused the notification with status {status}")]
    Rejected {
        /// The HTTP status.
        status: u16,
    },
    /// Every attempt failed.
    #[error("webhook notification failed after {attempts} attempts: {last}")]
    GaveUp {
        /// How many attempts were made.
        attempts: u32,
        /// The last failure (a status or a transport error, without the URL).
        last: String,
    },
}

/// Checks that `url` is an absolute http or https URL with a host.
pub(crate) fn parse_webhook_url(url: &str) -> Result<reqwest::Url, NotifyError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| NotifyError::InvalidUrl {
        reason: "not a url",
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(NotifyError::InvalidUrl {
            reason: "the scheme must be http or https",
        });
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(NotifyError::InvalidUrl { reason: "no host" });
    }
    Ok(parsed)
}

/// Sends signed incident notifications to one URL.
#[derive(Clone)]
pub struct WebhookNotifier {
    /// The HTTP client (no redirects, a timeout per attempt).
    client: reqwest::Client,
    /// Where to POST.
    url: reqwest::Url,
    /// The signing key.
    key: WebhookKey,
    /// When to retry.
    retry: RetryPolicy,
}

impl fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookNotifier")
            .field("url", &"<not shown>")
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl WebhookNotifier {
    /// A notifier POSTing to `url`, signing with `key`, retrying with [`RetryPolicy::default`].
    pub fn new(url: &str, key: WebhookKey) -> Result<Self, NotifyError> {
        let url = parse_webhook_url(url)?;
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| NotifyError::Client(e.without_url().to_string()))?;
        Ok(Self {
            client,
            url,
            key,
            retry: RetryPolicy::default(),
        })
    }

    /// The same notifier with another retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The `X-KafClaw-Signature` value for `body` sent at `timestamp` (unix seconds):
    /// `v1=` + hex HMAC-SHA256 of `"{timestamp}.{body}"`.
    pub fn signature(key: &WebhookKey, timestamp: i64, body: &[u8]) -> String {
        // HMAC takes keys of any length; a 32-byte key is never refused.
        let Ok(mut mac) = HmacSha256::new_from_slice(&key.0) else {
            return String::from("v1=");
        };
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    /// The JSON body announcing a new incident.
    pub fn body(incident: &Incident, owner: Option<&str>) -> Result<Vec<u8>, NotifyError> {
        serde_json::to_vec(&json!({
            "event": "incident.opened",
            "owner": owner,
            "incident": incident,
        }))
        .map_err(|e| NotifyError::Client(e.to_string()))
    }

    /// POSTs `body` until a 2xx answer, retrying network errors, 408, 429 and 5xx with
    /// backoff; returns how many attempts it took. Any other status ends it at once.
    pub async fn deliver(&self, body: &[u8]) -> Result<u32, NotifyError> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let timestamp = clock::unix_now();
            let sent = self
                .client
                .post(self.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("X-KafClaw-Timestamp", timestamp.to_string())
                .header(
                    "X-KafClaw-Signature",
                    Self::signature(&self.key, timestamp, body),
                )
                .body(body.to_vec())
                .send()
                .await;
            let failure = match sent {
                Ok(response) if response.status().is_success() => return Ok(attempt),
                Ok(response) => {
                    let status = response.status();
                    let retryable = status.is_server_error()
                        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                        || status == reqwest::StatusCode::REQUEST_TIMEOUT;
                    if !retryable {
                        return Err(NotifyError::Rejected {
                            status: status.as_u16(),
                        });
                    }
                    format!("status {}", status.as_u16())
                }
                Err(error) => error.without_url().to_string(),
            };
            if attempt > self.retry.retries {
                return Err(NotifyError::GaveUp {
                    attempts: attempt,
                    last: failure,
                });
            }
            tracing::warn!(attempt, %failure, "incident webhook attempt failed; retrying");
            tokio::time::sleep(self.retry.delay(attempt)).await;
        }
    }

    /// Sends the notification for a new incident from a spawned task (the caller never waits);
    /// the outcome is logged and returned through the handle.
    pub fn notify(
        &self,
        incident: &Incident,
        owner: Option<&str>,
    ) -> tokio::task::JoinHandle<Result<u32, NotifyError>> {
        let body = Self::body(incident, owner);
        let this = self.clone();
        let id = incident.id.clone();
        tokio::spawn(async move {
            let outcome = match body {
                Ok(body) => this.deliver(&body).await,
                Err(error) => Err(error),
            };
            match &outcome {
                Ok(attempts) => {
                    tracing::info!(incident = %id, attempts, "incident webhook delivered")
                }
                Err(error) => {
                    tracing::error!(incident = %id, %error, "incident webhook not delivered")
                }
            }
            outcome
        })
    }
}
