use std::time::{Duration, Instant};

use super::test_server::{Reply, TestServer};
use super::*;

const KEY: &str = "sk-test-SECRET-4242";

fn settings_for(base_url: &str) -> ProviderSettings {
    let mut settings = ProviderSettings::new(base_url, "test-model").with_api_key(KEY);
    settings.backoff_base_ms = 1;
    settings.max_retry_delay_seconds = 5;
    settings.timeout_seconds = 10;
    settings
}

fn client(server: &TestServer) -> ChatClient {
    ChatClient::new(settings_for(&server.base_url())).unwrap()
}

fn hello() -> ChatRequest {
    ChatRequest {
        messages: vec![Message::system("be brief"), Message::user("hello")],
        ..Default::default()
    }
}

/// Neither the key nor anything after a `?` of the endpoint may be in `text` (`Debug` output
/// may show the endpoint without its query).
fn assert_no_secret(text: &str) {
    assert!(!text.contains(KEY), "key leaked: {text}");
    assert!(!text.contains("SECRET"), "key part leaked: {text}");
    assert!(!text.contains("key="), "url query leaked: {text}");
}

/// An error for a user: no secret and no provider URL at all.
fn assert_clean(text: &str) {
    assert_no_secret(text);
    assert!(!text.contains("127.0.0.1"), "provider url leaked: {text}");
}

#[tokio::test]
async fn plain_reply_parses_content_and_usage_and_sends_the_protocol_shape() {
    let server = TestServer::scripted(vec![Reply::text("hi there", 12, 3)]).await;
    let response = client(&server).complete(&hello()).await.unwrap();
    assert_eq!(response.message, Message::assistant("hi there"));
    assert_eq!(
        response.usage,
        Usage {
            prompt_tokens: 12,
            completion_tokens: 3
        }
    );
    assert!(response.usage_reported);
    assert_eq!(response.finish_reason.as_deref(), Some("stop"));

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.target, "/v1/chat/completions");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.json(),
        serde_json::json!({
            "model": "test-model",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hello"}
            ]
        }),
        "no tools and no tool_choice when none are offered"
    );
}

#[tokio::test]
async fn tool_calls_are_parsed_and_tool_messages_are_sent_back_in_the_protocol_shape() {
    let server = TestServer::scripted(vec![
        Reply::tool_calls(&[("call_1", "read_file", r#"{"path":"a.txt"}"#)], 5, 2),
        // A server that sends the arguments as an object and no id is tolerated.
        Reply::json(
            200,
            serde_json::json!({"choices": [{"message": {"tool_calls": [
                {"function": {"name": "list_dir", "arguments": {"path": "."}}}
            ]}}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}),
        ),
    ])
    .await;
    let client = client(&server);
    let bare_schema = serde_json::json!({"name": "read_file", "description": "d", "parameters": {"type": "object"}});
    let full_schema = serde_json::json!({"type": "function", "function": {"name": "list_dir", "parameters": {"type": "object"}}});
    let mut request = hello();
    request.tools = vec![bare_schema.clone(), full_schema.clone()];
    let first = client.complete(&request).await.unwrap();
    let call = &first.message.tool_calls[0];
    assert_eq!(
        call,
        &ToolCall {
            id: "call_1".into(),
            name: "read_file".into(),
            arguments: r#"{"path":"a.txt"}"#.into()
        }
    );
    assert_eq!(call.parse_arguments().unwrap()["path"], "a.txt");
    assert_eq!(first.message.content, None);

    request.messages.push(first.message.clone());
    request
        .messages
        .push(Message::tool_result("call_1", "file body"));
    request.tool_choice = ToolChoice::None;
    let second = client.complete(&request).await.unwrap();
    assert_eq!(second.message.tool_calls[0].id, "call_0");
    assert_eq!(second.message.tool_calls[0].arguments, r#"{"path":"."}"#);

    let sent = server.requests();
    let body = sent[0].json();
    assert_eq!(body["tool_choice"], "auto");
    assert_eq!(
        body["tools"],
        serde_json::json!([{"type": "function", "function": bare_schema}, full_schema])
    );
    let body = sent[1].json();
    assert_eq!(body["tool_choice"], "none");
    assert_eq!(
        body["messages"][2],
        serde_json::json!({"role": "assistant", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": "{\"path\":\"a.txt\"}"}}
        ]})
    );
    assert_eq!(
        body["messages"][3],
        serde_json::json!({"role": "tool", "content": "file body", "tool_call_id": "call_1"})
    );
}

#[tokio::test]
async fn rate_limit_with_retry_after_is_respected_then_succeeds() {
    let server = TestServer::scripted(vec![
        Reply::error(429, "slow down").with_header("Retry-After", "1"),
        Reply::text("ok", 1, 1),
    ])
    .await;
    let started = Instant::now();
    let response = client(&server).complete(&hello()).await.unwrap();
    assert_eq!(response.message.content.as_deref(), Some("ok"));
    assert_eq!(server.request_count(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited for Retry-After, not the 1 ms backoff"
    );
}

#[tokio::test]
async fn retry_after_is_capped() {
    let server = TestServer::scripted(vec![
        Reply::error(429, "slow down").with_header("Retry-After", "3600"),
        Reply::text("ok", 1, 1),
    ])
    .await;
    let mut settings = settings_for(&server.base_url());
    settings.max_retry_delay_seconds = 0;
    let started = Instant::now();
    ChatClient::new(settings)
        .unwrap()
        .complete(&hello())
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn persistent_server_error_gives_a_clean_error_after_max_retries() {
    let server = TestServer::repeating(Reply::error(500, &format!("boom for key {KEY}"))).await;
    // A provider that takes its key in the query string.
    let mut settings = settings_for(&format!("{}?key={KEY}", server.base_url()));
    settings.max_retries = 3;
    let client = ChatClient::new(settings).unwrap();
    let error = client.complete(&hello()).await.unwrap_err();
    assert_eq!(
        error,
        ProviderError::ServerError {
            status: 500,
            attempts: 4
        }
    );
    assert_eq!(server.request_count(), 4, "one attempt plus three retries");
    assert_eq!(
        server.requests()[0].target,
        format!("/v1/chat/completions?key={KEY}"),
        "the query of api_base is kept for the request"
    );
    let text = error.to_string();
    assert!(text.contains("500"), "{text}");
    assert_clean(&text);
    assert_clean(&format!("{error:?}"));
    assert_no_secret(&format!("{client:?}"));
}

#[tokio::test]
async fn unauthorized_is_not_retried_and_never_echoes_the_provider_message() {
    let server = TestServer::repeating(Reply::error(
        401,
        &format!("Incorrect API key provided: {KEY}"),
    ))
    .await;
    let error = client(&server).complete(&hello()).await.unwrap_err();
    assert_eq!(error, ProviderError::Unauthorized { status: 401 });
    assert_eq!(server.request_count(), 1);
    assert_clean(&error.to_string());
}

#[tokio::test]
async fn other_client_errors_are_not_retried_and_keep_a_scrubbed_detail() {
    let server = TestServer::repeating(Reply::error(
        404,
        &format!("model not found, see https://docs.example/models?key={KEY}&x=1 for {KEY}"),
    ))
    .await;
    let error = client(&server).complete(&hello()).await.unwrap_err();
    assert_eq!(server.request_count(), 1);
    let text = error.to_string();
    assert!(
        text.contains("404") && text.contains("model not found"),
        "{text}"
    );
    assert!(text.contains("https://docs.example/models for"), "{text}");
    assert_clean(&text);
}

#[tokio::test]
async fn unreachable_provider_is_retried_then_reported_without_its_url() {
    // Bind then drop a listener: the port is (almost certainly) closed.
    let port = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut settings = settings_for(&format!("http://127.0.0.1:{port}/v1?key={KEY}"));
    settings.max_retries = 2;
    let error = ChatClient::new(settings)
        .unwrap()
        .complete(&hello())
        .await
        .unwrap_err();
    match &error {
        ProviderError::Unreachable { attempts, .. } => assert_eq!(*attempts, 3),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert_clean(&error.to_string());
}

#[tokio::test]
async fn a_slow_provider_times_out_without_retry() {
    let server =
        TestServer::repeating(Reply::text("late", 1, 1).with_delay(Duration::from_secs(3))).await;
    let mut settings = settings_for(&server.base_url());
    settings.timeout_seconds = 1;
    let error = ChatClient::new(settings)
        .unwrap()
        .complete(&hello())
        .await
        .unwrap_err();
    assert_eq!(error, ProviderError::TimedOut { seconds: 1 });
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn malformed_replies_are_invalid_responses_and_missing_usage_is_estimated() {
    let server = TestServer::scripted(vec![
        Reply::json(200, serde_json::json!({"choices": []})),
        Reply::json(
            200,
            serde_json::json!({"choices": [{"message": {"content": "no usage here"}}]}),
        ),
    ])
    .await;
    let client = client(&server);
    let error = client.complete(&hello()).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::InvalidResponse { .. }),
        "{error:?}"
    );
    let response = client.complete(&hello()).await.unwrap();
    assert!(!response.usage_reported);
    assert!(response.usage.prompt_tokens > 0 && response.usage.completion_tokens > 0);
}

#[test]
fn settings_are_validated_and_debug_never_shows_the_key() {
    let invalid = |settings: ProviderSettings| {
        matches!(
            ChatClient::new(settings),
            Err(ProviderError::InvalidSettings { .. })
        )
    };
    assert!(invalid(ProviderSettings::new("not a url", "m")));
    assert!(invalid(ProviderSettings::new("ftp://host/v1", "m")));
    assert!(invalid(ProviderSettings::new("http://host/v1", " ")));
    assert!(invalid(
        ProviderSettings::new("http://host/v1", "m").with_api_key("bad\nkey")
    ));
    let mut zero = ProviderSettings::new("http://host/v1", "m");
    zero.timeout_seconds = 0;
    assert!(invalid(zero));

    let settings =
        ProviderSettings::new(format!("https://u:{KEY}@host/v1?key={KEY}"), "m").with_api_key(KEY);
    assert_no_secret(&format!("{settings:?}"));
    let client = ChatClient::new(settings).unwrap();
    assert_no_secret(&format!("{client:?}"));
    assert_eq!(
        client.endpoint_for_display(),
        "https://host/v1/chat/completions"
    );
    assert_eq!(client.model(), "m");
}

#[test]
fn scrubbing_cuts_url_queries_and_control_characters() {
    let check = |input: &str, expected: &str| assert_eq!(client::scrub_text(input), expected);
    check("plain", "plain");
    check("see http://h/p?key=abc then", "see http://h/p then");
    check("(https://h/p?key=abc#frag) ok", "(https://h/p) ok");
    check("what? really?", "what? really?");
    check("line\none", "line one");
    let long = "x".repeat(500);
    assert_eq!(client::scrub_text(&long).chars().count(), 201);
}
