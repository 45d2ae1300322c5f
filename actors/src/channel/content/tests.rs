//! Parsing and rendering of every message type: one `check(type, message, rendering, handling)`.

use serde_json::json;

use super::*;

#[track_caller]
fn check(kind: &str, message: Value, rendering: &str, handling: Handling) {
    let content = Content::from_wire(kind, &message);
    assert_eq!(content.render(), rendering, "{content:?}");
    assert_eq!(content.handling(false), handling, "{content:?}");
    // The stored form reads back as the same content.
    let stored = serde_json::to_value(&content).unwrap();
    assert_eq!(serde_json::from_value::<Content>(stored).unwrap(), content);
}

#[test]
fn every_type_renders_with_its_name() {
    check(
        "text",
        json!({"text": {"body": "hi"}}),
        "hi",
        Handling::Turn,
    );
    check(
        "image",
        json!({"image": {"caption": "look at this", "id": "M1", "sha256": "x", "mime_type": "image/jpeg"}}),
        "[image] look at this",
        Handling::Turn,
    );
    check(
        "sticker",
        json!({"sticker": {"id": "M2"}}),
        "[sticker]",
        Handling::Turn,
    );
    check(
        "document",
        json!({"document": {"filename": "a.pdf", "id": "M3"}}),
        "[document] a.pdf",
        Handling::Turn,
    );
    check(
        "location",
        json!({"location": {"latitude": 52.52, "longitude": 13.4, "name": "Berlin", "address": "Mitte"}}),
        "[location] Berlin, Mitte (52.52, 13.40)",
        Handling::Turn,
    );
    check(
        "location",
        json!({"location": {"latitude": "48.1", "longitude": "11.58"}}),
        "[location] (48.10, 11.58)",
        Handling::Turn,
    );
    check(
        "contacts",
        json!({"contacts": [{"name": {"first_name": "Jo"}, "phones": [{"wa_id": "4912"}]}, {"name": {}}]}),
        "[contacts] Jo (4912); unnamed",
        Handling::Turn,
    );
    check(
        "interactive",
        json!({"interactive": {"type": "button_reply", "button_reply": {"id": "b1", "title": "Yes please"}}}),
        "[button reply] Yes please",
        Handling::Turn,
    );
    check(
        "interactive",
        json!({"interactive": {"type": "list_reply", "list_reply": {"id": "r1"}}}),
        "[list reply] r1",
        Handling::Turn,
    );
    check(
        "interactive",
        json!({"interactive": {"type": "call_permission_reply", "call_permission_reply": {}}}),
        "[interactive reply: call_permission_reply]",
        Handling::Turn,
    );
    check(
        "button",
        json!({"button": {"payload": "P", "text": "Yes"}}),
        "[quick reply] Yes",
        Handling::Turn,
    );
    check(
        "reaction",
        json!({"reaction": {"message_id": "wamid.1", "emoji": "😀"}}),
        "[reaction 😀 to an earlier message]",
        Handling::Note,
    );
    check(
        "reaction",
        json!({"reaction": {"message_id": "wamid.1", "emoji": ""}}),
        "[reaction removed from an earlier message]",
        Handling::Note,
    );
    check(
        "order",
        json!({"order": {"product_items": []}}),
        "[order] 0 item(s)",
        Handling::Turn,
    );
    check(
        "system",
        json!({"system": {"type": "user_changed_number", "new_wa_id": "4915"}}),
        "[system user_changed_number] new number 4915",
        Handling::Note,
    );
    check(
        "unsupported",
        json!({"errors": [{"code": 131051, "title": "Message type unknown"}]}),
        "[unsupported message, error 131051]",
        Handling::Unsupported,
    );
    check(
        "future\u{7}type",
        json!({}),
        "[unknown message type futuretype]",
        Handling::Unsupported,
    );
}

#[test]
fn shapes_that_do_not_fit_never_fail() {
    // Wrong types inside a known object keep what they can.
    check(
        "image",
        json!({"image": {"caption": 7, "id": ["x"]}}),
        "[image]",
        Handling::Turn,
    );
    check(
        "location",
        json!({"location": "here"}),
        "[location]",
        Handling::Turn,
    );
    check(
        "interactive",
        json!({}),
        "[interactive reply: ]",
        Handling::Turn,
    );
    // A media id with control characters is not used.
    let content = Content::from_wire("audio", &json!({"audio": {"id": "a\u{0}b"}}));
    assert_eq!(content.media().and_then(|(_, m)| m.id.clone()), None);
    // Reactions get a turn when configured.
    let reaction = Content::from_wire("reaction", &json!({"reaction": {"emoji": "👍"}}));
    assert_eq!(reaction.handling(true), Handling::Turn);
}
