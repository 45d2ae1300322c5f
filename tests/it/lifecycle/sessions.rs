//! `/chat` session keys are bound to the calling principal: the same `session` string from two
//! tokens names two conversations, and the response still says what the caller sent.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use super::{chat_with, create_token, messages_text};
use crate::harness::{Gateway, Options, TOKEN};
use crate::model_server::{self, ModelServer};

const TURN: Duration = Duration::from_secs(10);

fn with_model(server: &ModelServer) -> Options {
    Options::default()
        .token()
        .env("KAFCLAW_PROVIDERS_OPENAI_API_BASE", &server.base)
        .env("KAFCLAW_PROVIDERS_OPENAI_MODEL", "test-model")
        .env("KAFCLAW_PROVIDERS_OPENAI_MAX_RETRIES", "0")
}

/// Two chat tokens (`alice`, `bob`) and a gateway over the model server.
fn two_callers(server: &ModelServer) -> (Gateway, String, String) {
    let home = tempfile::tempdir().unwrap();
    let alice = create_token(home.path(), "chat", "alice");
    let bob = create_token(home.path(), "chat", "bob");
    (Gateway::start_in(home, with_model(server)), alice, bob)
}

/// Alice says a secret in `alice_session` (`None`: her default session); then bob, naming
/// `bob_session`, must not see it, and his response names the session he sent.
async fn check_isolated(alice_session: Option<&str>, bob_session: &str) {
    let server = ModelServer::start(vec![]);
    server.fallback(model_server::text("noted", 1, 1));
    let (gw, alice, bob) = two_callers(&server);
    let mut first = json!({"message": "alice-secret-4711"});
    if let Some(session) = alice_session {
        first["session"] = json!(session);
    }
    let (status, body) = chat_with(&gw, &alice, first, TURN).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = chat_with(
        &gw,
        &bob,
        json!({"message": "what did you hear?", "session": bob_session}),
        TURN,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["session"], bob_session,
        "the caller's own name comes back"
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    let history = messages_text(&seen[1]);
    assert!(
        !history.contains("alice-secret-4711") && !history.contains("noted"),
        "bob's turn ({bob_session:?}) saw alice's session ({alice_session:?}): {history}"
    );
}

#[tokio::test]
async fn two_chat_tokens_naming_the_same_session_get_two_sessions() {
    check_isolated(Some("shared"), "shared").await;
}

#[tokio::test]
async fn a_chat_token_naming_another_callers_default_session_gets_its_own() {
    // Alice's default session is named after her token; bob naming it gets an empty one.
    check_isolated(None, "alice").await;
}

#[tokio::test]
async fn a_session_name_that_spells_another_principal_gets_its_own() {
    for (alice, bob) in [
        ("x", "alice:x"),
        ("x", "api:alice:x"),
        ("x", "alice%3Ax"),
        ("a:b", "a:b"),
    ] {
        check_isolated(Some(alice), bob).await;
    }
}

#[tokio::test]
async fn the_admin_token_and_a_chat_token_do_not_share_a_session() {
    let server = ModelServer::start(vec![]);
    server.fallback(model_server::text("noted", 1, 1));
    let (gw, alice, _) = two_callers(&server);
    let (status, _) = chat_with(
        &gw,
        TOKEN,
        json!({"message": "admin-secret-99", "session": "ops"}),
        TURN,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = chat_with(
        &gw,
        &alice,
        json!({"message": "hi", "session": "ops"}),
        TURN,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!messages_text(&server.seen()[1]).contains("admin-secret-99"));
}

#[tokio::test]
async fn the_same_token_keeps_its_session() {
    let server = ModelServer::start(vec![]);
    server.fallback(model_server::text("noted", 1, 1));
    let (gw, alice, _) = two_callers(&server);
    for message in ["remember-me-123", "and now?"] {
        let (status, body) = chat_with(
            &gw,
            &alice,
            json!({"message": message, "session": "mine"}),
            TURN,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["session"], "mine");
    }
    assert!(messages_text(&server.seen()[1]).contains("remember-me-123"));
    // Without a session name, a token's turns share its default session too.
    for message in ["default-one", "default-two"] {
        chat_with(&gw, &alice, json!({"message": message}), TURN).await;
    }
    let seen = server.seen();
    assert!(messages_text(&seen[3]).contains("default-one"));
    assert!(!messages_text(&seen[3]).contains("remember-me-123"));
}

#[tokio::test]
async fn the_query_string_form_is_bound_to_the_principal_too() {
    let server = ModelServer::start(vec![]);
    server.fallback(model_server::text("noted", 1, 1));
    let (gw, alice, bob) = two_callers(&server);
    let post = |token: String, query: &'static str| {
        crate::harness::client()
            .post(format!("{}?{query}", gw.gw_url("/chat")))
            .header("Authorization", format!("Bearer {token}"))
            .send()
    };
    let res = post(alice, "message=alice-secret-77&session=q")
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = post(bob, "message=hello&session=q").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["session"], "q");
    assert!(!messages_text(&server.seen()[1]).contains("alice-secret-77"));
}
