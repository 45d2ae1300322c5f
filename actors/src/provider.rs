//! The model provider: an OpenAI-compatible chat-completions client (OpenAI, OpenRouter, vLLM,
//! Ollama's OpenAI endpoint, …) and the conversation types it speaks.
//!
//! Owns: the request and reply shapes ([`wire`]), the HTTP call with its timeout, retries with
//! backoff on 429/5xx/network errors, and errors that are safe to show a chat user.
//! Must not: decide anything about tools or budgets (that is [`crate::agent`]), log or return
//! the API key, or put a provider URL with its query string into an error. Architecture
//! Invariant: no [`ProviderError`] text and no `Debug` output here contains the API key or a
//! URL's query (some providers take `?key=`).

use std::ops::{Add, AddAssign};

use serde::{Deserialize, Serialize};

use crate::vault::SecretValue;

mod client;
mod wire;

pub use client::ChatClient;

#[cfg(test)]
pub(crate) mod test_server;
#[cfg(test)]
mod tests;

/// Default request timeout (seconds) of one provider call.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 60;
/// Default number of retries after the first attempt.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// Default first backoff delay (milliseconds); it doubles on each retry.
pub const DEFAULT_BACKOFF_BASE_MS: u64 = 500;
/// Default cap (seconds) on one wait between attempts, including a provider's `Retry-After`.
pub const DEFAULT_MAX_RETRY_DELAY_SECONDS: u64 = 30;

/// How to reach the model provider (`providers.openai.*` in CONTRACT §2).
#[derive(Clone)]
pub struct ProviderSettings {
    /// Base URL of the OpenAI-compatible API, e.g. `https://api.openai.com/v1`; the client
    /// POSTs to `{api_base}/chat/completions`, keeping any query string (`?key=…`).
    pub api_base: String,
    /// The model name sent with every request.
    pub model: String,
    /// The API key, sent as `Authorization: Bearer <key>` when set (local servers need none).
    pub api_key: Option<SecretValue>,
    /// Timeout of one HTTP attempt, from sending the request to the end of the reply body.
    pub timeout_seconds: u64,
    /// Retries after the first attempt on 429, 5xx and network errors (never on other 4xx).
    pub max_retries: u32,
    /// First backoff delay in milliseconds; retry `n` waits `base × 2^(n-1)` with equal jitter
    /// (between half and all of it; the shared [`crate::backoff::Backoff`]).
    pub backoff_base_ms: u64,
    /// Cap on one wait between attempts, also applied to a provider's `Retry-After`.
    pub max_retry_delay_seconds: u64,
}

impl ProviderSettings {
    /// Settings for `api_base` and `model` with no key and the default timeout and retries.
    pub fn new(api_base: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            api_base: api_base.into(),
            model: model.into(),
            api_key: None,
            timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
            max_retries: DEFAULT_MAX_RETRIES,
            backoff_base_ms: DEFAULT_BACKOFF_BASE_MS,
            max_retry_delay_seconds: DEFAULT_MAX_RETRY_DELAY_SECONDS,
        }
    }

    /// The same settings with `key` as the API key.
    pub fn with_api_key(mut self, key: impl Into<SecretValue>) -> Self {
        self.api_key = Some(key.into());
        self
    }
}

impl std::fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("api_base", &client::url_without_query(&self.api_base))
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("timeout_seconds", &self.timeout_seconds)
            .field("max_retries", &self.max_retries)
            .field("backoff_base_ms", &self.backoff_base_ms)
            .field("max_retry_delay_seconds", &self.max_retry_delay_seconds)
            .finish()
    }
}

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The system prompt.
    System,
    /// The chat user.
    User,
    /// The model.
    Assistant,
    /// A tool's result, answering one tool call.
    Tool,
}

/// One message of a conversation. This is also the form persisted in session history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// The text. `None` for an assistant message that only calls tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Tools the assistant asks to run (assistant messages only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The id of the call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    /// A system message.
    pub fn system(text: impl Into<String>) -> Self {
        Self::text(Role::System, text)
    }
    /// A user message.
    pub fn user(text: impl Into<String>) -> Self {
        Self::text(Role::User, text)
    }
    /// An assistant message with text only.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::text(Role::Assistant, text)
    }
    /// An assistant message calling tools.
    pub fn assistant_tool_calls(content: Option<String>, tool_calls: Vec<ToolCall>) -> Self {
        Self {
            role: Role::Assistant,
            content,
            tool_calls,
            tool_call_id: None,
        }
    }
    /// The result of the tool call `call_id`.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: Role::Tool,
            content: Some(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: Some(call_id.into()),
        }
    }
    fn text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: Some(text.into()),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A tool call requested by the model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id for the call; the `tool` message answering it carries the same id.
    pub id: String,
    /// The tool's name, as in its schema.
    pub name: String,
    /// The arguments as the model sent them: a JSON document in a string, not yet validated
    /// (models do send broken JSON; the tool runner tells the model so).
    pub arguments: String,
}

impl ToolCall {
    /// The arguments parsed as JSON.
    pub fn parse_arguments(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.arguments)
    }
}

/// Whether the model may call tools in this request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides (`"tool_choice":"auto"`).
    #[default]
    Auto,
    /// The model must answer in text (`"tool_choice":"none"`); the schemas are still sent so
    /// that a history containing tool calls stays valid for every provider.
    None,
}

/// One chat-completions request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatRequest {
    /// The conversation, oldest first (system prompt first when there is one).
    pub messages: Vec<Message>,
    /// Function schemas, either `{"type":"function","function":{…}}` or the bare
    /// `{"name","description","parameters"}` object. Empty: no tools are offered.
    pub tools: Vec<serde_json::Value>,
    /// Whether the model may call tools (only sent when `tools` is not empty).
    pub tool_choice: ToolChoice,
}

/// Token counts of one or more provider calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompts.
    pub prompt_tokens: u64,
    /// Tokens in the completions.
    pub completion_tokens: u64,
}

impl Usage {
    /// Prompt plus completion tokens.
    pub fn total(self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

impl Add for Usage {
    type Output = Usage;
    fn add(self, other: Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.saturating_add(other.prompt_tokens),
            completion_tokens: self
                .completion_tokens
                .saturating_add(other.completion_tokens),
        }
    }
}

impl AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        *self = *self + other;
    }
}

/// The model's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatResponse {
    /// The assistant message: text and/or tool calls.
    pub message: Message,
    /// Token counts of this call.
    pub usage: Usage,
    /// False when the provider reported no usage and `usage` is an estimate (bytes / 4), so
    /// that budgets still count something.
    pub usage_reported: bool,
    /// Why generation stopped (`stop`, `tool_calls`, `length`, …), when given.
    pub finish_reason: Option<String>,
}

/// Why a provider call failed. Every message is safe to show a chat user: no API key, no URL,
/// no stack trace; status codes are included.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The settings cannot be used (bad `api_base`, a key that is not a valid header value).
    #[error("the model provider settings are invalid: {reason}")]
    InvalidSettings {
        /// What is wrong (never the key).
        reason: String,
    },
    /// 401 or 403: the provider refused the credentials. Not retried.
    #[error("the model provider refused the credentials (status {status})")]
    Unauthorized {
        /// The HTTP status.
        status: u16,
    },
    /// Another 4xx (bad request, unknown model, …). Not retried.
    #[error(
        "the model provider rejected the request (status {status}){}",
        detail_suffix(detail)
    )]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The provider's own error message, scrubbed and shortened; empty when it gave none.
        detail: String,
    },
    /// 429 on every attempt.
    #[error("the model provider is rate limiting requests (status 429); gave up after {attempts} attempts")]
    RateLimited {
        /// Attempts made.
        attempts: u32,
    },
    /// 5xx on the last attempt.
    #[error("the model provider failed (status {status}); gave up after {attempts} attempts")]
    ServerError {
        /// The HTTP status of the last attempt.
        status: u16,
        /// Attempts made.
        attempts: u32,
    },
    /// Connection refused, reset, DNS failure, TLS failure, … on the last attempt.
    #[error(
        "the model provider could not be reached ({reason}); gave up after {attempts} attempts"
    )]
    Unreachable {
        /// The low-level cause, scrubbed (no URL).
        reason: String,
        /// Attempts made.
        attempts: u32,
    },
    /// An attempt took longer than the request timeout. Not retried: a model that is this slow
    /// now will not be faster a second later, and the user is already waiting.
    #[error("the model provider did not answer within {seconds} s")]
    TimedOut {
        /// The configured timeout.
        seconds: u64,
    },
    /// A 2xx reply that is not a chat completion (wrong JSON, no choices, too large).
    #[error("the model provider sent a reply that is not a valid chat completion: {reason}")]
    InvalidResponse {
        /// What is wrong, scrubbed and shortened.
        reason: String,
    },
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}
