//! The chat-completions wire format (OpenAI-compatible): the exact JSON sent and received.
//!
//! Owns: the shapes of `POST {api_base}/chat/completions` and its reply, and their conversion
//! from and to the domain types of [`super`]. Tolerant when reading (null content, arguments
//! sent as an object instead of a string, missing ids or usage), strict when writing.
//! Must not: know about HTTP, retries or secrets.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ChatRequest, Message, Role, ToolCall, ToolChoice, Usage};

/// The request body.
#[derive(Debug, Serialize)]
pub(super) struct WireRequest<'a> {
    /// The configured model name.
    pub model: &'a str,
    /// The conversation, oldest first.
    pub messages: Vec<WireMessage<'a>>,
    /// Function schemas, omitted when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Value>,
    /// `"auto"` or `"none"`, only sent along with tools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<&'static str>,
}

/// One message as sent.
#[derive(Debug, Serialize)]
pub(super) struct WireMessage<'a> {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: Role,
    /// The text; omitted for an assistant message that only calls tools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    /// The tool calls of an assistant message.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<WireToolCallOut<'a>>,
    /// The call a `tool` message answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<&'a str>,
}

/// A tool call as sent back in the history.
#[derive(Debug, Serialize)]
pub(super) struct WireToolCallOut<'a> {
    /// The provider's call id.
    pub id: &'a str,
    /// Always `"function"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The function and its arguments.
    pub function: WireFunctionOut<'a>,
}

/// The function part of a sent tool call.
#[derive(Debug, Serialize)]
pub(super) struct WireFunctionOut<'a> {
    /// The tool name.
    pub name: &'a str,
    /// The arguments, a JSON document as a string.
    pub arguments: &'a str,
}

impl<'a> WireRequest<'a> {
    /// The body for `request` against `model`.
    pub fn new(model: &'a str, request: &'a ChatRequest) -> Self {
        let messages = request.messages.iter().map(WireMessage::from).collect();
        let tools: Vec<Value> = request.tools.iter().map(normalize_tool_schema).collect();
        let tool_choice = if tools.is_empty() {
            None
        } else {
            Some(match request.tool_choice {
                ToolChoice::Auto => "auto",
                ToolChoice::None => "none",
            })
        };
        Self {
            model,
            messages,
            tools,
            tool_choice,
        }
    }
}

impl<'a> From<&'a Message> for WireMessage<'a> {
    fn from(message: &'a Message) -> Self {
        Self {
            role: message.role,
            content: message.content.as_deref(),
            tool_calls: message
                .tool_calls
                .iter()
                .map(|call| WireToolCallOut {
                    id: &call.id,
                    kind: "function",
                    function: WireFunctionOut {
                        name: &call.name,
                        arguments: &call.arguments,
                    },
                })
                .collect(),
            tool_call_id: message.tool_call_id.as_deref(),
        }
    }
}

/// Accepts a schema either in the full form `{"type":"function","function":{…}}` or as the bare
/// function object `{"name","description","parameters"}`, and returns the full form.
pub(super) fn normalize_tool_schema(schema: &Value) -> Value {
    if schema.get("function").is_some() {
        schema.clone()
    } else {
        serde_json::json!({ "type": "function", "function": schema })
    }
}

/// The reply body (only the parts we use).
#[derive(Debug, Deserialize)]
pub(super) struct WireResponse {
    /// The choices; we use the first.
    #[serde(default)]
    pub choices: Vec<WireChoice>,
    /// Token counts, when the provider reports them.
    #[serde(default)]
    pub usage: Option<WireUsage>,
}

/// One choice.
#[derive(Debug, Deserialize)]
pub(super) struct WireChoice {
    /// The assistant's message.
    pub message: WireMessageIn,
    /// Why generation stopped (`stop`, `tool_calls`, `length`, …).
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// The assistant's message as received.
#[derive(Debug, Deserialize)]
pub(super) struct WireMessageIn {
    /// The text, often null when the model calls tools.
    #[serde(default)]
    pub content: Option<String>,
    /// The tool calls, absent or null when there are none.
    #[serde(default)]
    pub tool_calls: Option<Vec<WireToolCallIn>>,
}

/// A tool call as received.
#[derive(Debug, Deserialize)]
pub(super) struct WireToolCallIn {
    /// The call id (some local servers omit it; we then make one up).
    #[serde(default)]
    pub id: Option<String>,
    /// The function and its arguments.
    pub function: WireFunctionIn,
}

/// The function part of a received tool call.
#[derive(Debug, Deserialize)]
pub(super) struct WireFunctionIn {
    /// The tool name.
    pub name: String,
    /// A JSON string per the protocol; some servers send the object itself.
    #[serde(default)]
    pub arguments: Option<Value>,
}

/// Token counts as received.
#[derive(Debug, Default, Deserialize)]
pub(super) struct WireUsage {
    /// Tokens of the prompt.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Tokens of the completion.
    #[serde(default)]
    pub completion_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(usage: WireUsage) -> Self {
        Usage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        }
    }
}

impl WireMessageIn {
    /// The domain message (role `assistant`).
    pub fn into_message(self) -> Message {
        let tool_calls = self
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(index, call)| ToolCall {
                id: call
                    .id
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(|| format!("call_{index}")),
                name: call.function.name,
                arguments: match call.function.arguments {
                    None | Some(Value::Null) => "{}".to_owned(),
                    Some(Value::String(text)) => text,
                    Some(other) => other.to_string(),
                },
            })
            .collect();
        Message {
            role: Role::Assistant,
            content: self.content,
            tool_calls,
            tool_call_id: None,
        }
    }
}
