//! WhatsApp messages beyond plain text (issue 19), end to end: Meta-shaped webhook payloads
//! into the real binary, checked by what the model server receives, what the Graph stand-in
//! is asked, and what lands on disk. The one local test server plays the model provider and
//! the Graph API (media lookups, downloads, sends) at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use kafclaw_actors::channel::bridge::sign_bridge;
use kafclaw_actors::channel::whatsapp::sign_webhook;

use crate::channels::{post_wa, APP_SECRET, BRIDGE_SECRET, OWNER};
use crate::harness::{client, Gateway, Options};
use crate::model_server::{self, ModelServer, Recorded, Reply, Seen};

/// The bytes of the test image, and its checksum.
const JPEG: &str = "not really a jpeg, but bytes all the same";
const UNSUPPORTED_REPLY: &str = "Only text, please.";
/// Downloads of `MEDIA_FLAKY` so far (one test uses it).
static FLAKY_DOWNLOADS: AtomicUsize = AtomicUsize::new(0);

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn sha_b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
}

/// A media object the Graph stand-in serves: (id, MIME type, body, download delay).
fn media_of(id: &str) -> Option<(&'static str, String, Duration)> {
    Some(match id {
        "MEDIA_OK" | "MEDIA_BADSHA" => ("image/jpeg", JPEG.to_string(), Duration::ZERO),
        "MEDIA_BIG" => ("image/png", "x".repeat(5000), Duration::ZERO),
        "MEDIA_SH" => ("application/x-sh", "echo pwned".into(), Duration::ZERO),
        "MEDIA_HANG" => ("image/jpeg", JPEG.to_string(), Duration::from_secs(30)),
        "MEDIA_DOC" => ("application/pdf", "%PDF-1.4 test".into(), Duration::ZERO),
        "MEDIA_FLAKY" => ("image/jpeg", JPEG.to_string(), Duration::ZERO),
        _ => return None,
    })
}

/// The Graph API and the model in one: media lookups and downloads by id, message sends, and
/// chat completions answered `ok`.
fn graph_and_model(_: usize, request: &Recorded) -> Option<Reply> {
    let path = request.target.split('?').next().unwrap_or_default();
    if path.ends_with("/chat/completions") {
        return Some(model_server::text("ok", 3, 2));
    }
    if path.ends_with("/messages") {
        return Some(model_server::ok(
            json!({"messaging_product": "whatsapp", "messages": [{"id": "wamid.out"}]}),
        ));
    }
    if let Some(id) = path.strip_prefix("/download/") {
        let (mime, body, delay) = media_of(id)?;
        // The first download of the flaky file fails for a passing reason.
        if id == "MEDIA_FLAKY" && FLAKY_DOWNLOADS.fetch_add(1, Ordering::SeqCst) == 0 {
            return Some(model_server::status(503));
        }
        let mut reply = model_server::ok(json!({})).with_delay(delay);
        reply.headers = vec![("Content-Type".into(), mime.into())];
        reply.body = body;
        return Some(reply);
    }
    if let Some(id) = path.strip_prefix("/v21.0/") {
        let (mime, body, _) = media_of(id)?;
        let host = request.header("host").unwrap_or_default();
        let mut object = json!({
            "messaging_product": "whatsapp",
            "url": format!("http://{host}/download/{id}"),
            "mime_type": mime,
            "sha256": sha_hex(body.as_bytes()),
            "id": id,
        });
        if id != "MEDIA_BIG" {
            // The oversize file does not announce its size: the cap holds while reading.
            object["file_size"] = json!(body.len());
        }
        return Some(model_server::ok(object));
    }
    Some(model_server::status(404))
}

fn options(server: &ModelServer, whatsapp: Value) -> Options {
    let mut options = crate::channels::options(server);
    let mut config: Value = serde_json::from_str(options.config_json.as_deref().unwrap()).unwrap();
    config["channels"]["whatsapp"]["graph_base"] = json!(server.origin());
    config["channels"]["whatsapp"]["unsupported_reply"] = json!(UNSUPPORTED_REPLY);
    config["channels"]["whatsapp"]["media"] =
        json!({"max_bytes": 4096, "timeout_seconds": 2, "retries": 0});
    for (key, value) in whatsapp.as_object().unwrap() {
        config["channels"]["whatsapp"][key] = value.clone();
    }
    config["channels"]["bridges"]["slack"]["outbound_url"] =
        json!(format!("{}/out", server.origin()));
    options.config_json = Some(config.to_string());
    options
}

/// A delivery of one message (`fields` merged into the message object) from `from`.
fn delivery(from: &str, id: &str, fields: Value) -> String {
    let mut message = json!({"from": from, "id": id, "timestamp": "1700000000"});
    for (key, value) in fields.as_object().unwrap() {
        message[key] = value.clone();
    }
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "e1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": "1234567890"},
            "contacts": [{"profile": {"name": "Test"}, "wa_id": from}],
            "messages": [message]
        }}]}]
    })
    .to_string()
}

async fn post(gw: &Gateway, body: &str) {
    let sig = sign_webhook(APP_SECRET.as_bytes(), body.as_bytes());
    assert_eq!(
        post_wa(gw, body, Some(sig)).await,
        reqwest::StatusCode::OK,
        "{body}"
    );
}

fn model_calls(server: &ModelServer) -> Vec<Seen> {
    server
        .seen()
        .into_iter()
        .filter(|s| s.path.ends_with("/chat/completions"))
        .collect()
}

/// Waits until the model has been called `n` times; answers the calls.
async fn wait_calls(server: &ModelServer, n: usize) -> Vec<Seen> {
    let start = Instant::now();
    loop {
        let calls = model_calls(server);
        if calls.len() >= n {
            return calls;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the model saw {} calls, expected {n}",
            calls.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `pred` holds for the requests seen so far.
async fn wait_seen(server: &ModelServer, what: &str, pred: impl Fn(&[Seen]) -> bool) {
    let start = Instant::now();
    while !pred(&server.seen()) {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "never saw {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The user messages of one model call, oldest first.
fn user_texts(call: &Seen) -> Vec<String> {
    call.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn last_user(call: &Seen) -> String {
    user_texts(call).pop().unwrap_or_default()
}

#[tokio::test]
async fn every_message_type_reaches_the_model_as_typed_text() {
    let server = ModelServer::start_with(graph_and_model);
    let gw = Gateway::start(options(&server, json!({})));
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!({"type": "text", "text": {"body": "hello there"}}),
            vec!["hello there"],
        ),
        (
            json!({"type": "image", "image": {"caption": "look at this", "mime_type": "image/jpeg",
                "sha256": sha_b64(JPEG.as_bytes()), "id": "MEDIA_OK"}}),
            vec!["[image] look at this", "[attachment image/jpeg, 41 bytes: "],
        ),
        (
            json!({"type": "video", "video": {"caption": "a clip", "mime_type": "video/mp4",
                "sha256": sha_b64(b"v"), "id": "NOPE"}}),
            vec!["[video] a clip", "[attachment unavailable: "],
        ),
        (
            json!({"type": "audio", "audio": {"mime_type": "audio/ogg; codecs=opus",
                "sha256": sha_b64(b"a"), "id": "NOPE", "voice": true}}),
            vec!["[audio]", "[attachment unavailable: "],
        ),
        (
            json!({"type": "document", "document": {"caption": "the report", "filename": "report.pdf",
                "mime_type": "application/pdf", "sha256": sha_hex(b"%PDF-1.4 test"), "id": "MEDIA_DOC"}}),
            vec![
                "[document] report.pdf the report",
                "[attachment application/pdf, 13 bytes: ",
            ],
        ),
        (
            json!({"type": "sticker", "sticker": {"mime_type": "image/webp", "sha256": sha_b64(b"s"),
                "id": "NOPE", "animated": false}}),
            vec!["[sticker]"],
        ),
        (
            json!({"type": "location", "location": {"latitude": 52.520008, "longitude": 13.404954,
                "name": "Berlin", "address": "Mitte"}}),
            vec!["[location] Berlin, Mitte (52.52, 13.40)"],
        ),
        (
            json!({"type": "contacts", "contacts": [{"name": {"formatted_name": "Jane Doe", "first_name": "Jane"},
                "phones": [{"phone": "+49 151 1234", "wa_id": "491511234", "type": "CELL"}]}]}),
            vec!["[contacts] Jane Doe (+49 151 1234)"],
        ),
        (
            json!({"type": "interactive", "context": {"from": "15550000000", "id": "wamid.ours1"},
                "interactive": {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes please"}}}),
            vec![
                "[button reply] Yes please",
                "[in reply to an earlier message]",
            ],
        ),
        (
            json!({"type": "interactive", "interactive": {"type": "list_reply",
                "list_reply": {"id": "row-1", "title": "Option A", "description": "the first"}}}),
            vec!["[list reply] Option A (the first)"],
        ),
        (
            json!({"type": "interactive", "interactive": {"type": "nfm_reply",
                "nfm_reply": {"name": "flow", "body": "Sent", "response_json": "{\"size\":\"L\"}"}}}),
            vec!["[form reply] flow Sent {\"size\":\"L\"}"],
        ),
        (
            json!({"type": "button", "button": {"payload": "STOP", "text": "Stop promotions"}}),
            vec!["[quick reply] Stop promotions"],
        ),
        (
            json!({"type": "order", "order": {"catalog_id": "cat-1", "text": "soon please",
                "product_items": [{"product_retailer_id": "sku-9", "quantity": 2, "item_price": 9.5, "currency": "EUR"}]}}),
            vec!["[order] 1 item(s) from catalog cat-1: sku-9 x2 at 9.5 EUR. soon please"],
        ),
        (
            json!({"type": "text", "text": {"body": "about that"}, "context": {"from": OWNER, "id": "wamid.t0"}}),
            vec!["about that", "[in reply to: \"hello there\"]"],
        ),
    ];
    for (n, (fields, expected)) in cases.iter().enumerate() {
        post(
            &gw,
            &delivery(OWNER, &format!("wamid.t{n}"), fields.clone()),
        )
        .await;
        let calls = wait_calls(&server, n + 1).await;
        let seen = last_user(&calls[n]);
        for part in expected {
            assert!(seen.contains(part), "case {n}: {part:?} not in {seen:?}");
        }
    }
    // No media was fetched from anywhere but the Graph stand-in, and never by a URL.
    let media_id = |s: &Seen| s.path.starts_with("/v21.0/") && !s.path.ends_with("/messages");
    assert!(server.seen().iter().filter(|s| media_id(s)).count() >= 5);
}

#[tokio::test]
async fn reactions_and_system_events_are_noted_without_a_model_call() {
    let server = ModelServer::start_with(graph_and_model);
    let gw = Gateway::start(options(&server, json!({})));
    post(
        &gw,
        &delivery(
            OWNER,
            "wamid.r0",
            json!({"type": "text", "text": {"body": "first"}}),
        ),
    )
    .await;
    wait_calls(&server, 1).await;
    post(
        &gw,
        &delivery(
            OWNER,
            "wamid.r1",
            json!({"type": "reaction", "reaction": {"message_id": "wamid.r0", "emoji": "😀"}}),
        ),
    )
    .await;
    post(
        &gw,
        &delivery(OWNER, "wamid.r2", json!({"type": "system", "system": {"body": "User A changed from 4915112345678 to 4915187654321",
            "new_wa_id": "4915187654321", "type": "user_changed_number"}})),
    )
    .await;
    post(
        &gw,
        &delivery(
            OWNER,
            "wamid.r3",
            json!({"type": "text", "text": {"body": "second"}}),
        ),
    )
    .await;
    let calls = wait_calls(&server, 2).await;
    let texts = user_texts(&calls[1]);
    assert_eq!(texts.last().unwrap(), "second", "{texts:?}");
    assert!(
        texts
            .iter()
            .any(|t| t.contains("[reaction 😀 to an earlier message]")
                && t.contains("[reacted to: \"first\"]")),
        "the reaction is in the session: {texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("[system user_changed_number] User A changed")),
        "the system event is in the session: {texts:?}"
    );
    assert_eq!(
        model_calls(&server).len(),
        2,
        "no model call for the reaction or the event"
    );
    // …and on the timeline.
    let timeline: Value = client()
        .get(gw.url("/api/v1/timeline?limit=100"))
        .header("Authorization", format!("Bearer {}", crate::harness::TOKEN))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let noted = timeline
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "message.inbound" && e["data"]["model_call"] == false)
        .count();
    assert_eq!(noted, 2, "{timeline}");
}

#[tokio::test]
async fn reactions_get_a_turn_when_configured() {
    let server = ModelServer::start_with(graph_and_model);
    let gw = Gateway::start(options(&server, json!({"react_to_reactions": true})));
    post(
        &gw,
        &delivery(
            OWNER,
            "wamid.rr1",
            json!({"type": "reaction", "reaction": {"message_id": "wamid.gone", "emoji": "👍"}}),
        ),
    )
    .await;
    let calls = wait_calls(&server, 1).await;
    assert_eq!(last_user(&calls[0]), "[reaction 👍 to an earlier message]");
}

#[tokio::test]
async fn unsupported_and_unknown_types_get_one_polite_reply_across_redeliveries() {
    let server = ModelServer::start_with(graph_and_model);
    let gw = Gateway::start(options(&server, json!({})));
    let unsupported = delivery(
        OWNER,
        "wamid.u1",
        json!({"type": "unsupported", "errors": [{"code": 131051, "title": "Message type unknown",
            "message": "Message type unknown", "error_data": {"details": "Message type is currently not supported."}}]}),
    );
    let unknown = delivery(
        OWNER,
        "wamid.u2",
        json!({"type": "hologram", "hologram": {"depth": 3}}),
    );
    for body in [&unsupported, &unknown, &unsupported, &unknown] {
        post(&gw, body).await;
    }
    post(
        &gw,
        &delivery(
            OWNER,
            "wamid.u3",
            json!({"type": "text", "text": {"body": "plain"}}),
        ),
    )
    .await;
    let polite = |seen: &[Seen]| {
        seen.iter()
            .filter(|s| {
                s.path.ends_with("/messages") && s.body["text"]["body"] == UNSUPPORTED_REPLY
            })
            .count()
    };
    wait_seen(&server, "two polite replies and the answer", |seen| {
        polite(seen) >= 2
            && seen
                .iter()
                .any(|s| s.path.ends_with("/messages") && s.body["text"]["body"] == "ok")
    })
    .await;
    let calls = wait_calls(&server, 1).await;
    assert_eq!(calls.len(), 1, "only the text reached the model");
    assert_eq!(last_user(&calls[0]), "plain");
    let seen = server.seen();
    assert_eq!(
        polite(&seen),
        2,
        "one reply per message, redeliveries included"
    );
    let contexts: Vec<&Value> = seen
        .iter()
        .filter(|s| s.path.ends_with("/messages") && s.body["text"]["body"] == UNSUPPORTED_REPLY)
        .map(|s| &s.body["context"]["message_id"])
        .collect();
    assert_eq!(contexts, [&json!("wamid.u1"), &json!("wamid.u2")]);
}

#[tokio::test]
async fn mixed_deliveries_are_acknowledged_and_every_entry_is_read() {
    let server = ModelServer::start_with(graph_and_model);
    let gw = Gateway::start(options(&server, json!({})));
    let value = |id: &str, text: &str| {
        json!({"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": "1234567890"},
            "messages": [{"from": OWNER, "id": id, "timestamp": "1700000000", "type": "text", "text": {"body": text}}],
            "statuses": [{"id": "wamid.out", "status": "sent", "timestamp": "1700000001", "recipient_id": OWNER},
                {"id": "wamid.out2", "status": "failed", "timestamp": "1700000002", "recipient_id": OWNER,
                 "errors": [{"code": 131026, "title": "Message undeliverable"}]}]})
    };
    let body = json!({
        "object": "whatsapp_business_account",
        "entry": [
            {"id": "e1", "changes": [{"field": "messages", "value": value("wamid.m1", "one")},
                {"field": "account_update", "value": {"phone_number": "15550000000", "event": "VERIFIED_ACCOUNT"}}]},
            {"id": "e2", "changes": [{"field": "messages", "value": value("wamid.m2", "two")}]}
        ]
    })
    .to_string();
    post(&gw, &body).await;
    let calls = wait_calls(&server, 2).await;
    let mut seen: Vec<String> = calls.iter().map(last_user).collect();
    seen.sort();
    assert_eq!(seen, ["one", "two"]);
}

#[tokio::test]
async fn media_is_saved_0600_under_the_workspace_and_checked() {
    let server = ModelServer::start_with(graph_and_model);
    let gw = Gateway::start(options(&server, json!({})));
    let image = |id: &str, media: &str, sha: String, mime: &str| {
        delivery(
            OWNER,
            id,
            json!({"type": "image", "image": {"caption": id, "mime_type": mime, "sha256": sha, "id": media}}),
        )
    };
    let cases = [
        (
            image(
                "wamid.ok",
                "MEDIA_OK",
                sha_b64(JPEG.as_bytes()),
                "image/jpeg",
            ),
            "[attachment image/jpeg, 41 bytes: ",
        ),
        (
            image(
                "wamid.badsha",
                "MEDIA_BADSHA",
                sha_b64(b"other"),
                "image/jpeg",
            ),
            "[attachment unavailable: media checksum does not match]",
        ),
        (
            image("wamid.big", "MEDIA_BIG", sha_b64(b"x"), "image/png"),
            "[attachment unavailable: media is larger than 4096 bytes]",
        ),
        (
            image("wamid.sh", "MEDIA_SH", sha_b64(b"echo pwned"), "image/jpeg"),
            "[attachment unavailable: media type application/x-sh is not allowed]",
        ),
        (
            image(
                "wamid.hang",
                "MEDIA_HANG",
                sha_b64(JPEG.as_bytes()),
                "image/jpeg",
            ),
            "[attachment unavailable: media download timed out]",
        ),
    ];
    for (n, (body, expected)) in cases.iter().enumerate() {
        post(&gw, body).await;
        let calls = wait_calls(&server, n + 1).await;
        let seen = last_user(&calls[n]);
        assert!(
            seen.contains(expected),
            "case {n}: {expected:?} not in {seen:?}"
        );
    }
    let dir = gw.home_path().join(".kafclaw/workspace/media/whatsapp");
    let saved = dir.join("wamid.ok.jpg");
    assert_eq!(std::fs::read_to_string(&saved).unwrap(), JPEG);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{saved:?}");
    let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["wamid.ok.jpg"], "nothing else was kept");
    let first = model_calls(&server)[0].clone();
    assert!(last_user(&first).contains(&saved.display().to_string()));
    // The disallowed type was refused on the Graph answer: its bytes were never downloaded.
    assert!(!server.seen().iter().any(|s| s.path == "/download/MEDIA_SH"));
    // The token went to the Graph stand-in only, as a bearer token.
    assert!(server
        .seen()
        .iter()
        .filter(|s| s.path.starts_with("/v21.0/") || s.path.starts_with("/download/"))
        .all(|s| s.authorization.as_deref() == Some("Bearer graph-access-token")));
}

#[tokio::test]
async fn a_refused_sender_triggers_no_download() {
    let server = ModelServer::start_with(graph_and_model);
    let gw = Gateway::start(options(&server, json!({})));
    post(
        &gw,
        &delivery(
            "4915100000000",
            "wamid.stranger",
            json!({"type": "image", "image": {"mime_type": "image/jpeg", "sha256": sha_b64(JPEG.as_bytes()), "id": "MEDIA_OK"}}),
        ),
    )
    .await;
    // The owner's message after it is handed on; the stranger's was dropped before.
    post(
        &gw,
        &delivery(
            OWNER,
            "wamid.after",
            json!({"type": "text", "text": {"body": "after"}}),
        ),
    )
    .await;
    wait_calls(&server, 1).await;
    assert!(
        !server
            .seen()
            .iter()
            .any(|s| s.path.starts_with("/v21.0/MEDIA") || s.path.starts_with("/download/")),
        "nothing was fetched for a refused sender"
    );
    assert!(!gw
        .home_path()
        .join(".kafclaw/workspace/media/whatsapp")
        .exists());
}

/// A signed delivery of `body` to the `slack` bridge, ready to send.
fn post_bridge(gw: &Gateway, body: Value) -> reqwest::RequestBuilder {
    let body = body.to_string();
    let now = kafclaw_actors::clock::unix_now();
    let sig = sign_bridge(BRIDGE_SECRET.as_bytes(), now, body.as_bytes());
    client()
        .post(gw.gw_url("/webhooks/bridge/slack"))
        .header("X-KafClaw-Timestamp", now.to_string())
        .header("X-KafClaw-Signature", sig)
        .header("content-type", "application/json")
        .body(body)
}

#[tokio::test]
async fn bridge_attachments_and_reply_to_reach_the_model() {
    use base64::Engine;
    let server = ModelServer::start_with(graph_and_model);
    let gw = Gateway::start(options(&server, json!({})));
    let send = |body: Value| post_bridge(&gw, body).send();
    let status = send(
        json!({"message_id": "b1", "sender_id": "U-OWNER", "chat_id": "C1", "text": "the plan"}),
    )
    .await
    .unwrap()
    .status();
    assert_eq!(status, reqwest::StatusCode::OK);
    wait_calls(&server, 1).await;
    let inline = base64::engine::general_purpose::STANDARD.encode("notes in a file");
    let status = send(
        json!({"message_id": "b2", "sender_id": "U-OWNER", "chat_id": "C1",
        "text": "see attached", "reply_to": "b1",
        "attachments": [
            {"name": "notes.txt", "mime_type": "text/plain", "size": 15, "data": inline},
            {"name": "far.txt", "mime_type": "text/plain", "url": "http://203.0.113.9/far.txt"}
        ]}),
    )
    .await
    .unwrap()
    .status();
    assert_eq!(status, reqwest::StatusCode::OK);
    let calls = wait_calls(&server, 2).await;
    let seen = last_user(&calls[1]);
    for part in [
        "see attached",
        "[in reply to: \"the plan\"]",
        "notes.txt: [attachment text/plain, 15 bytes: ",
        "far.txt: [attachment unavailable: media url is not on an allowed host]",
    ] {
        assert!(seen.contains(part), "{part:?} not in {seen:?}");
    }
    let saved = gw.home_path().join(".kafclaw/workspace/media/slack/b2.txt");
    assert_eq!(std::fs::read_to_string(saved).unwrap(), "notes in a file");
}

#[tokio::test]
async fn a_failed_download_leaves_the_message_processed_and_is_retried_in_the_background() {
    let server = ModelServer::start_with(graph_and_model);
    let gw = Gateway::start(options(
        &server,
        json!({"media": {"max_bytes": 4096, "timeout_seconds": 2, "retries": 2}}),
    ));
    post(
        &gw,
        &delivery(
            OWNER,
            "wamid.flaky",
            json!({"type": "image", "image": {"mime_type": "image/jpeg", "sha256": sha_b64(JPEG.as_bytes()), "id": "MEDIA_FLAKY"}}),
        ),
    )
    .await;
    let calls = wait_calls(&server, 1).await;
    let seen = last_user(&calls[0]);
    assert!(
        seen.contains("[attachment unavailable: media download answered http 503]"),
        "{seen}"
    );
    // The reply to it went out with WhatsApp's reply context.
    wait_seen(&server, "the answer", |seen| {
        seen.iter().any(|s| {
            s.path.ends_with("/messages")
                && s.body["text"]["body"] == "ok"
                && s.body["context"]["message_id"] == "wamid.flaky"
        })
    })
    .await;
    let saved = gw
        .home_path()
        .join(".kafclaw/workspace/media/whatsapp/wamid.flaky.jpg");
    let start = Instant::now();
    while !saved.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the background retry never saved the file"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(std::fs::read_to_string(&saved).unwrap(), JPEG);
    assert_eq!(
        FLAKY_DOWNLOADS.load(Ordering::SeqCst),
        2,
        "retried once, then done"
    );
    assert_eq!(
        model_calls(&server).len(),
        1,
        "the message was processed once"
    );
}

/// Model calls and message sends of [`graph_numbering_sends`] so far (one test uses them).
static NUMBERED_CALLS: AtomicUsize = AtomicUsize::new(0);
static NUMBERED_SENDS: AtomicUsize = AtomicUsize::new(0);

/// The model answers `answer N` to its Nth call; the Graph stand-in gives the first send the id
/// `wamid.sent1` in its answer and the later ones no id (their id comes by receipt).
fn graph_numbering_sends(_: usize, request: &Recorded) -> Option<Reply> {
    let path = request.target.split('?').next().unwrap_or_default();
    if path.ends_with("/chat/completions") {
        let n = NUMBERED_CALLS.fetch_add(1, Ordering::SeqCst) + 1;
        return Some(model_server::text(&format!("answer {n}"), 3, 2));
    }
    if path.ends_with("/messages") {
        let n = NUMBERED_SENDS.fetch_add(1, Ordering::SeqCst) + 1;
        return Some(model_server::ok(if n == 1 {
            json!({"messaging_product": "whatsapp", "messages": [{"id": "wamid.sent1"}]})
        } else {
            json!({"messaging_product": "whatsapp"})
        }));
    }
    Some(model_server::status(404))
}

#[tokio::test]
async fn a_reply_to_one_of_our_messages_quotes_our_text() {
    let server = ModelServer::start_with(graph_numbering_sends);
    let gw = Gateway::start(options(&server, json!({})));
    let text = |body: &str| json!({"type": "text", "text": {"body": body}});
    let sends = |seen: &[Seen]| -> Vec<Value> {
        seen.iter()
            .filter(|s| s.path.ends_with("/messages"))
            .map(|s| s.body.clone())
            .collect()
    };
    post(&gw, &delivery(OWNER, "wamid.q1", text("hello there"))).await;
    wait_seen(&server, "the first reply sent", |s| sends(s).len() == 1).await;

    // Meta's send answer named our first reply `wamid.sent1`.
    let mut reply = text("why that?");
    reply["context"] = json!({"from": "15550000000", "id": "wamid.sent1"});
    post(&gw, &delivery(OWNER, "wamid.q2", reply)).await;
    let calls = wait_calls(&server, 2).await;
    let seen = last_user(&calls[1]);
    assert!(
        seen.contains("why that?") && seen.contains("[in reply to: \"answer 1\"]"),
        "{seen:?}"
    );
    wait_seen(&server, "the second reply sent", |s| sends(s).len() == 2).await;

    // The second reply's id comes only with its status webhook, which echoes our tag.
    let tag = sends(&server.seen())[1]["biz_opaque_callback_data"].clone();
    let status = json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "e1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": "1234567890"},
            "statuses": [{"id": "wamid.byreceipt", "status": "delivered", "timestamp": "1700000005",
                "recipient_id": OWNER, "biz_opaque_callback_data": tag}]
        }}]}]
    })
    .to_string();
    post(&gw, &status).await;
    let mut reply = text("and this?");
    reply["context"] = json!({"from": "15550000000", "id": "wamid.byreceipt"});
    post(&gw, &delivery(OWNER, "wamid.q3", reply)).await;
    let calls = wait_calls(&server, 3).await;
    let seen = last_user(&calls[2]);
    assert!(seen.contains("[in reply to: \"answer 2\"]"), "{seen:?}");

    // An id we never sent (or another account's message) is not quoted.
    let mut reply = text("and that?");
    reply["context"] = json!({"from": "15550000000", "id": "wamid.sent9"});
    post(&gw, &delivery(OWNER, "wamid.q4", reply)).await;
    let calls = wait_calls(&server, 4).await;
    let seen = last_user(&calls[3]);
    assert!(
        seen.contains("[in reply to an earlier message]"),
        "{seen:?}"
    );
}

/// Every conversation's media lie side by side under `workspace/media`: an external sender's
/// agent reads only the files saved for its own session, never another sender's, and cannot
/// list the directory (a hole found by review: one allow-listed sender read another's file).
#[tokio::test]
async fn an_external_sender_reads_its_own_attachment_and_never_anothers() {
    use crate::model_server::{self, ModelServer};
    use base64::Engine;
    let home = tempfile::tempdir().unwrap();
    let media = home.path().join(".kafclaw/workspace/media/slack");
    let path = media.join("a1.txt").display().to_string();
    let server = ModelServer::start(vec![
        model_server::text("noted", 1, 1),
        model_server::tool_call("read_file", json!({ "path": path })),
        model_server::text("done", 1, 1),
        model_server::tool_call("list_dir", json!({"path": media.display().to_string()})),
        model_server::text("done", 1, 1),
        model_server::tool_call("read_file", json!({ "path": path })),
        model_server::text("done", 1, 1),
    ]);
    let mut options = crate::channels::options(&server);
    let mut config: Value = serde_json::from_str(options.config_json.as_deref().unwrap()).unwrap();
    config["channels"]["bridges"]["slack"]["allowlist"] = json!(["U-ALICE", "U-BOB"]);
    options.config_json = Some(config.to_string());
    let gw = Gateway::start_in(home, options);
    let send = |body: Value| post_bridge(&gw, body);
    let secret = base64::engine::general_purpose::STANDARD.encode("alice's passport");
    let bodies = [
        json!({"message_id": "a1", "sender_id": "U-ALICE", "chat_id": "C-ALICE", "text": "my passport",
               "attachments": [{"name": "p.txt", "mime_type": "text/plain", "size": 16, "data": secret}]}),
        json!({"message_id": "b1", "sender_id": "U-BOB", "chat_id": "C-BOB", "text": "read alice's file"}),
        json!({"message_id": "b2", "sender_id": "U-BOB", "chat_id": "C-BOB", "text": "list the media"}),
        json!({"message_id": "a2", "sender_id": "U-ALICE", "chat_id": "C-ALICE", "text": "read mine"}),
    ];
    let mut calls = 1;
    for body in bodies {
        let status = send(body).send().await.unwrap().status();
        assert_eq!(status, reqwest::StatusCode::OK);
        wait_calls(&server, calls).await;
        calls += 2;
    }
    let calls = wait_calls(&server, 7).await;
    let tool_result = |call: &Seen| -> String {
        let messages = call.body["messages"].as_array().unwrap();
        let last = messages.last().unwrap();
        assert_eq!(last["role"], "tool", "{last}");
        last["content"].as_str().unwrap().to_string()
    };
    let bob_read = tool_result(&calls[2]);
    assert!(
        bob_read.starts_with("denied:") && bob_read.contains("another conversation"),
        "{bob_read}"
    );
    assert!(!bob_read.contains("passport"), "{bob_read}");
    let bob_list = tool_result(&calls[4]);
    assert!(bob_list.starts_with("denied:"), "{bob_list}");
    let alice_read = tool_result(&calls[6]);
    assert_eq!(alice_read, "alice's passport");
}
