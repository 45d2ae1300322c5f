//! The dashboard page in a real headless Chromium (issue 16): sign in, watch an unknown-sender
//! burst quarantine a channel and release it, approve a tool call and see the turn finish,
//! lock down behind a typed confirmation, refuse a wrong token, disable the buttons for a read
//! token, and show when the gateway stops answering. Every step saves a screenshot under the
//! test's temporary directory and fails if the page logged a CSP violation or a script error.

use std::collections::HashMap;

use reqwest::StatusCode;
use serde_json::json;

use crate::channels::options;
use crate::harness::{client, run, Gateway, Options, TOKEN};
use crate::incidents::send_wa;
use crate::model_server::{self, ModelServer};

mod driver;

use driver::Browser;

/// The page signed in with `token`.
async fn signed_in(gw: &Gateway, dir: &std::path::Path, token: &str) -> Browser {
    let browser = Browser::start(dir).await;
    browser.open(&gw.url("/")).await;
    browser.type_into("#token", token).await;
    browser.click("#sign-in").await;
    browser.visible("#dashboard").await;
    browser
        .until(
            "the first refresh",
            "document.querySelectorAll('#channels-body tr').length > 0",
        )
        .await;
    browser
}

fn channel_state(name: &str) -> String {
    format!("(document.querySelector('#channels-body tr[data-name=\"{name}\"]') || {{dataset: {{}}}}).dataset.state")
}

async fn api_state(gw: &Gateway, name: &str) -> String {
    let channels = gw.get_json("/api/v1/channels").await;
    channels
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .map(|c| c["state"].as_str().unwrap().to_string())
        .unwrap()
}

#[tokio::test]
async fn an_unknown_sender_burst_quarantines_a_channel_the_page_releases_it() {
    let model = ModelServer::start(vec![]);
    model.fallback(model_server::text("hi", 1, 1));
    let mut gw =
        Gateway::start(options(&model).env("KAFCLAW_INCIDENTS_UNKNOWN_SENDERS_PER_CHANNEL", "3"));
    let dir = tempfile::tempdir().unwrap();
    let mut browser = signed_in(&gw, dir.path(), TOKEN).await;
    browser
        .until(
            "running",
            &format!("{} === 'running'", channel_state("whatsapp")),
        )
        .await;
    assert_eq!(browser.text("#scope").await, "scope: admin");
    browser.screenshot("signed-in").await;

    for i in 0..4 {
        send_wa(
            &gw,
            &format!("49170000000{i}"),
            &format!("wamid.burst{i}"),
            "hello?",
        )
        .await;
    }
    browser
        .until(
            "the quarantine",
            &format!("{} === 'quarantined'", channel_state("whatsapp")),
        )
        .await;
    browser
        .visible("article[data-kind=\"unknown_senders\"]")
        .await;
    browser.screenshot("quarantined").await;

    let button = |action: &str| {
        format!("#channels-body tr[data-name=\"whatsapp\"] button[data-action=\"{action}\"]")
    };
    browser.click(&button("observe")).await;
    browser
        .until(
            "observe",
            &format!("{} === 'observe'", channel_state("whatsapp")),
        )
        .await;
    assert_eq!(api_state(&gw, "whatsapp").await, "observe");
    browser.click(&button("full")).await;
    browser
        .until(
            "running again",
            &format!("{} === 'running'", channel_state("whatsapp")),
        )
        .await;
    assert_eq!(api_state(&gw, "whatsapp").await, "running");
    browser.screenshot("released").await;

    // The gateway stops answering: the page says so.
    gw.signal("KILL");
    gw.wait_exit(std::time::Duration::from_secs(10));
    browser.visible("#offline").await;
    assert!(browser.text("#connection").await.contains("not answering"));
    browser.screenshot("offline").await;
    browser.close().await;
}

#[tokio::test]
async fn an_approval_is_decided_on_the_page_and_the_turn_finishes() {
    let model = ModelServer::start(vec![
        model_server::tool_call("exec", json!({"command": "echo 'from the dashboard'"})),
        model_server::text("ran it", 1, 1),
    ]);
    let gw = Gateway::start(
        Options::default()
            .token()
            .env("KAFCLAW_PROVIDERS_OPENAI_API_BASE", &model.base)
            .env("KAFCLAW_PROVIDERS_OPENAI_MODEL", "test-model")
            .env("KAFCLAW_TOOLS_POLICY_MAX_TIER_OWNER", "1"),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut browser = Browser::start(dir.path()).await;
    browser.open(&gw.url("/")).await;
    browser.type_into("#token", TOKEN).await;
    browser.click("#sign-in").await;
    browser.visible("#dashboard").await;

    let chat = tokio::spawn({
        let url = gw.gw_url("/chat");
        async move {
            let res = client()
                .post(url)
                .header("Authorization", format!("Bearer {TOKEN}"))
                .json(&json!({"message": "run it"}))
                .send()
                .await
                .unwrap();
            (res.status(), res.json::<serde_json::Value>().await.unwrap())
        }
    });
    let row = browser.visible("#approvals-body tr").await;
    let text = row.text().await.unwrap();
    assert!(
        text.contains(r#"["echo","from the dashboard"]"#),
        "the exact argv is shown: {text}"
    );
    browser.screenshot("approval-pending").await;
    browser
        .click("#approvals-body tr button[data-action=\"approve\"]")
        .await;
    let (status, body) = chat.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["reply"], "ran it");
    browser
        .until(
            "the list to empty",
            "document.querySelectorAll('#approvals-body tr').length === 0",
        )
        .await;
    browser.screenshot("approval-decided").await;
    browser.close().await;
}

#[tokio::test]
async fn lockdown_needs_the_typed_confirmation_and_quarantines_every_channel() {
    let model = ModelServer::start(vec![]);
    let gw = Gateway::start(options(&model));
    let dir = tempfile::tempdir().unwrap();
    let mut browser = signed_in(&gw, dir.path(), TOKEN).await;
    browser
        .type_into("#lockdown-reason", "suspected token leak")
        .await;
    browser.type_into("#lockdown-confirm", "lockdown").await;
    let button = browser.visible("#lockdown-button").await;
    assert!(
        !button.is_enabled().await.unwrap(),
        "the wrong word does not arm it"
    );
    browser.type_into("#lockdown-confirm", "LOCKDOWN").await;
    browser.click("#lockdown-button").await;
    for name in ["whatsapp", "slack"] {
        browser
            .until(name, &format!("{} === 'quarantined'", channel_state(name)))
            .await;
        assert_eq!(api_state(&gw, name).await, "quarantined");
    }
    browser
        .until(
            "the restriction",
            "document.getElementById('tools-restriction').textContent.includes('max tier 0')",
        )
        .await;
    browser.visible("article[data-kind=\"manual\"]").await;
    browser.screenshot("locked-down").await;
    browser.close().await;
}

#[tokio::test]
async fn a_wrong_token_shows_the_error_and_no_data() {
    let model = ModelServer::start(vec![]);
    let gw = Gateway::start(options(&model));
    let dir = tempfile::tempdir().unwrap();
    let mut browser = Browser::start(dir.path()).await;
    browser.open(&gw.url("/")).await;
    browser
        .type_into("#token", "kc_wrong-token-0123456789abcdefghijklmnopqrstuv")
        .await;
    browser.click("#sign-in").await;
    let error = browser.visible("#login-error").await;
    assert!(error.text().await.unwrap().contains("401"));
    assert!(!browser
        .visible("#login")
        .await
        .text()
        .await
        .unwrap()
        .is_empty());
    browser
        .until("no data", "document.getElementById('dashboard').hidden && document.querySelectorAll('#channels-body tr').length === 0 && !sessionStorage.getItem('kafclaw.token')")
        .await;
    browser.screenshot("wrong-token").await;
    browser.close().await;
}

#[tokio::test]
async fn a_read_token_sees_everything_with_the_buttons_disabled() {
    let model = ModelServer::start(vec![]);
    let home = tempfile::tempdir().unwrap();
    let (code, read, err) = run(
        home.path(),
        &HashMap::new(),
        &["token", "create", "--scope", "read"],
    );
    assert_eq!(code, 0, "{err}");
    let gw = Gateway::start_in(home, options(&model));
    let dir = tempfile::tempdir().unwrap();
    let mut browser = signed_in(&gw, dir.path(), read.trim()).await;
    browser.visible("#read-only").await;
    assert_eq!(browser.text("#scope").await, "scope: read");
    browser
        .until("disabled buttons", "[...document.querySelectorAll('button[data-action]')].length >= 8 && [...document.querySelectorAll('button[data-action]')].every(b => b.disabled)")
        .await;
    browser.type_into("#lockdown-reason", "x").await;
    browser.type_into("#lockdown-confirm", "LOCKDOWN").await;
    assert!(!browser
        .visible("#lockdown-button")
        .await
        .is_enabled()
        .await
        .unwrap());
    assert!(!browser
        .visible("#verify-button")
        .await
        .is_enabled()
        .await
        .unwrap());
    // The data is all there.
    browser
        .until(
            "the supervision tree",
            "document.querySelectorAll('#supervisor-body tr').length > 3",
        )
        .await;
    browser
        .visible("#usage-chart svg rect[data-channel=\"whatsapp\"]")
        .await;
    browser.screenshot("read-only").await;
    browser.close().await;
}
