//! Tests of the channel domain logic. One `check` helper per area; time is always injected.

use super::*;

fn text_message(id: &str, sender: &str) -> InboundMessage {
    InboundMessage {
        message_id: id.into(),
        sender_id: sender.into(),
        chat_id: sender.into(),
        thread_id: None,
        text: Some(format!("text of {id}")),
        kind: MessageKind::Text,
        timestamp: 1_700_000_000,
        is_group: false,
        mentioned: false,
        reply_to: None,
        content: None,
        attachments: Vec::new(),
    }
}

mod whatsapp_edge {
    use super::super::whatsapp::*;

    #[test]
    fn handshake() {
        #[track_caller]
        fn check(
            mode: Option<&str>,
            token: Option<&str>,
            challenge: Option<&str>,
            expected: Result<&str, HandshakeError>,
        ) {
            let got = verify_handshake(mode, token, challenge, "s3cret-token");
            assert_eq!(got.as_deref().map_err(Clone::clone), expected);
        }
        check(
            Some("subscribe"),
            Some("s3cret-token"),
            Some("1158201444"),
            Ok("1158201444"),
        );
        check(
            Some("subscribe"),
            Some("s3cret-token"),
            Some("a b\u{e9}"),
            Ok("a b\u{e9}"),
        );
        check(
            Some("subscribe"),
            Some("wrong"),
            Some("1"),
            Err(HandshakeError::WrongToken),
        );
        check(
            Some("subscribe"),
            Some("s3cret-token "),
            Some("1"),
            Err(HandshakeError::WrongToken),
        );
        check(
            Some("subscribe"),
            None,
            Some("1"),
            Err(HandshakeError::WrongToken),
        );
        check(
            Some("unsubscribe"),
            Some("s3cret-token"),
            Some("1"),
            Err(HandshakeError::WrongMode),
        );
        check(
            None,
            Some("s3cret-token"),
            Some("1"),
            Err(HandshakeError::WrongMode),
        );
        check(
            Some("subscribe"),
            Some("s3cret-token"),
            None,
            Err(HandshakeError::MissingChallenge),
        );
        assert_eq!(
            verify_handshake(Some("subscribe"), Some(""), Some("1"), ""),
            Err(HandshakeError::NotConfigured)
        );
    }

    const SECRET: &[u8] = b"app-secret";

    #[test]
    fn signature() {
        #[track_caller]
        fn check(
            secret: &[u8],
            body: &[u8],
            header: Option<&str>,
            expected: Result<(), SignatureError>,
        ) {
            assert_eq!(verify_signature(secret, body, header), expected);
        }
        let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        let good = sign_webhook(SECRET, body);
        assert!(good.starts_with("sha256=") && good.len() == 7 + 64);
        check(SECRET, body, Some(&good), Ok(()));
        // Uppercase hex decodes to the same bytes: accepted (documented in the module).
        let upper = format!("sha256={}", good["sha256=".len()..].to_ascii_uppercase());
        check(SECRET, body, Some(&upper), Ok(()));
        check(
            b"other-secret",
            body,
            Some(&good),
            Err(SignatureError::Mismatch),
        );
        let mut changed = body.to_vec();
        changed[3] ^= 1;
        check(SECRET, &changed, Some(&good), Err(SignatureError::Mismatch));
        check(SECRET, body, None, Err(SignatureError::Missing));
        let sha1 = format!("sha1={}", &good["sha256=".len()..][..40]);
        check(
            SECRET,
            body,
            Some(&sha1),
            Err(SignatureError::UnsupportedAlgorithm),
        );
        check(
            SECRET,
            body,
            Some("SHA256=00"),
            Err(SignatureError::UnsupportedAlgorithm),
        );
        check(
            SECRET,
            body,
            Some(&good["sha256=".len()..]),
            Err(SignatureError::Malformed),
        );
        check(SECRET, body, Some("sha256=zz"), Err(SignatureError::BadHex));
        check(
            SECRET,
            body,
            Some("sha256=abc"),
            Err(SignatureError::BadHex),
        );
        check(
            SECRET,
            body,
            Some("sha256=abcd"),
            Err(SignatureError::WrongLength(2)),
        );
        check(b"", body, Some(&good), Err(SignatureError::NotConfigured));
    }

    #[test]
    fn signature_is_over_raw_bytes_with_non_ascii_and_escaped_unicode() {
        // The same JSON value in two encodings: the raw UTF-8 one and the \u-escaped one.
        let raw = "{\"text\":\"Gr\u{fc}\u{df}e \u{1f600}\"}"
            .as_bytes()
            .to_vec();
        let escaped = br#"{"text":"Gr\u00fc\u00dfe \ud83d\ude00"}"#.to_vec();
        let raw_sig = sign_webhook(SECRET, &raw);
        let escaped_sig = sign_webhook(SECRET, &escaped);
        assert_eq!(verify_signature(SECRET, &raw, Some(&raw_sig)), Ok(()));
        assert_eq!(
            verify_signature(SECRET, &escaped, Some(&escaped_sig)),
            Ok(())
        );
        // A re-encoded body (what a parse-then-serialise would produce) does not verify.
        assert_eq!(
            verify_signature(SECRET, &escaped, Some(&raw_sig)),
            Err(SignatureError::Mismatch)
        );
        // Known answer, computed independently (python3 hmac.new(b"app-secret", raw, sha256)).
        assert_eq!(
            raw_sig,
            "sha256=5c04aa72accc6dbb735374f87a070b81ddb38be24d3d245f7583a7ea2649758a"
        );
    }

    fn envelope(value: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "object": "whatsapp_business_account",
            "entry": [{ "id": "WABA", "changes": [{ "field": "messages", "value": value }] }]
        }))
        .unwrap()
    }

    /// One Meta app signs the webhooks of all its numbers: only this channel's number counts.
    #[test]
    fn changes_for_another_business_number_are_skipped_and_counted() {
        use super::super::whatsapp::parse_webhook_for;
        let change = |number: Option<&str>, id: &str| {
            let mut value = serde_json::json!({
                "messages": [{"from": "4915112345678", "id": id, "timestamp": "1700000000", "type": "text", "text": {"body": "hi"}}],
                "statuses": [{"id": "wamid.OUT1", "status": "sent", "timestamp": "1700000001", "recipient_id": "1"}]
            });
            if let Some(number) = number {
                value["metadata"] = serde_json::json!({"phone_number_id": number});
            }
            serde_json::json!({"field": "messages", "value": value})
        };
        let body = serde_json::to_vec(&serde_json::json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "WABA", "changes": [
                change(Some("123"), "wamid.OURS"),
                change(Some("999"), "wamid.THEIRS"),
                change(None, "wamid.UNNAMED"),
            ]}]
        }))
        .unwrap();
        let batch = parse_webhook_for(&body, Some("123")).unwrap();
        let ids: Vec<_> = batch
            .messages
            .iter()
            .map(|m| m.message.message_id.as_str())
            .collect();
        assert_eq!(ids, ["wamid.OURS", "wamid.UNNAMED"]);
        assert_eq!(batch.statuses.len(), 2);
        assert_eq!(batch.foreign, 2);
        assert_eq!(parse_webhook(&body).unwrap().messages.len(), 3);
    }

    #[test]
    fn parse_shapes() {
        use super::super::MessageKind;
        #[track_caller]
        fn check(
            message: serde_json::Value,
            kind: MessageKind,
            text: Option<&str>,
            reply_to: Option<&str>,
        ) {
            let body = envelope(serde_json::json!({
                "messaging_product": "whatsapp",
                "metadata": { "display_phone_number": "15550001111", "phone_number_id": "PNID" },
                "contacts": [{ "profile": { "name": "Ann" }, "wa_id": "4915112345678" }],
                "messages": [message],
                "unknown_future_field": { "x": 1 }
            }));
            let batch = parse_webhook(&body).unwrap();
            assert_eq!(batch.messages.len(), 1);
            let got = &batch.messages[0];
            assert_eq!(got.phone_number_id, "PNID");
            assert_eq!(got.profile_name.as_deref(), Some("Ann"));
            assert_eq!(got.message.sender_id, "4915112345678");
            assert_eq!(got.message.chat_id, "4915112345678");
            assert_eq!(got.message.message_id, "wamid.ABC");
            assert_eq!(got.message.timestamp, 1_700_000_000);
            assert_eq!(got.message.kind, kind);
            assert_eq!(got.message.text.as_deref(), text);
            assert_eq!(got.message.reply_to.as_deref(), reply_to);
            assert!(!got.message.is_group && !got.message.mentioned);
        }
        let base = |extra: serde_json::Value| {
            let mut m = serde_json::json!({"from": "+49 151 12345678", "id": "wamid.ABC", "timestamp": "1700000000"});
            for (k, v) in extra.as_object().unwrap() {
                m[k] = v.clone();
            }
            m
        };
        check(
            base(serde_json::json!({"type": "text", "text": {"body": "hi \u{1f600}"}})),
            MessageKind::Text,
            Some("hi \u{1f600}"),
            None,
        );
        check(
            base(
                serde_json::json!({"type": "text", "text": {"body": "re"}, "context": {"from": "x", "id": "wamid.PREV"}}),
            ),
            MessageKind::Text,
            Some("re"),
            Some("wamid.PREV"),
        );
        check(
            base(
                serde_json::json!({"type": "image", "image": {"id": "M1", "mime_type": "image/jpeg"}}),
            ),
            MessageKind::Media,
            Some("[image]"),
            None,
        );
        check(
            base(serde_json::json!({"type": "audio", "audio": {"id": "M2"}})),
            MessageKind::Media,
            Some("[audio]"),
            None,
        );
        check(
            base(
                serde_json::json!({"type": "reaction", "reaction": {"message_id": "wamid.X", "emoji": "x"}}),
            ),
            MessageKind::Reaction,
            Some("[reaction x to an earlier message]"),
            None,
        );
        check(
            base(serde_json::json!({"type": "location", "location": {}})),
            MessageKind::Other("location".into()),
            Some("[location]"),
            None,
        );
        // A type this version does not know is kept by name, never refused.
        check(
            base(serde_json::json!({"type": "hologram", "hologram": {"x": 1}})),
            MessageKind::Other("hologram".into()),
            Some("[unknown message type hologram]"),
            None,
        );
        // A text-typed message that nevertheless carries no body is refused.
        let body =
            envelope(serde_json::json!({"messages": [base(serde_json::json!({"type": "text"}))]}));
        assert_eq!(
            parse_webhook(&body),
            Err(ParseError::InvalidField("text.body"))
        );
    }

    #[test]
    fn parse_statuses_and_rejections() {
        let body = envelope(serde_json::json!({
            "metadata": { "phone_number_id": "PNID" },
            "statuses": [
                { "id": "wamid.OUT1", "status": "delivered", "timestamp": "1700000001", "recipient_id": "4915112345678" },
                { "id": "wamid.OUT2", "status": "failed", "timestamp": "1700000002", "recipient_id": "4915112345678",
                  "errors": [{ "code": 131047, "title": "Re-engagement message" }],
                  "biz_opaque_callback_data": "kafclaw-12.1" },
                { "id": "wamid.OUT3", "status": "sent", "timestamp": "1700000003", "recipient_id": "1",
                  "biz_opaque_callback_data": "bad\u{0}data" }
            ]
        }));
        let batch = parse_webhook(&body).unwrap();
        assert!(batch.messages.is_empty());
        assert_eq!(batch.statuses.len(), 3);
        assert_eq!(batch.statuses[0].status, "delivered");
        assert_eq!(batch.statuses[0].callback_data, None);
        assert_eq!(batch.statuses[1].errors[0].code, Some(131047));
        // The reply tag is echoed back; one with control characters is dropped.
        assert_eq!(
            batch.statuses[1].callback_data.as_deref(),
            Some("kafclaw-12.1")
        );
        assert_eq!(batch.statuses[2].callback_data, None);

        assert!(matches!(
            parse_webhook(b"not json"),
            Err(ParseError::Json(_))
        ));
        assert_eq!(
            parse_webhook(br#"{"object":"page","entry":[]}"#),
            Err(ParseError::WrongObject)
        );
        // Other change fields are skipped.
        let other = br#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"account_update","value":{"x":1}}]}]}"#;
        assert_eq!(parse_webhook(other), Ok(WebhookBatch::default()));
        let bad_ts = envelope(
            serde_json::json!({"messages": [{"from": "49151", "id": "wamid.1", "timestamp": "-5", "type": "text", "text": {"body": "x"}}]}),
        );
        assert_eq!(
            parse_webhook(&bad_ts),
            Err(ParseError::InvalidField("timestamp"))
        );
        let no_from = envelope(
            serde_json::json!({"messages": [{"id": "wamid.1", "timestamp": "5", "type": "text", "text": {"body": "x"}}]}),
        );
        assert_eq!(
            parse_webhook(&no_from),
            Err(ParseError::InvalidField("from"))
        );
    }

    #[test]
    fn number_normalisation() {
        #[track_caller]
        fn check(raw: &str, expected: &str) {
            assert_eq!(normalize_number(raw), expected);
        }
        check("+4915112345678", "4915112345678");
        check("4915112345678", "4915112345678");
        check("+49 151-123 456 78", "4915112345678");
        check("(0049) 151/12345678", "004915112345678");
        check("4915112345678@s.whatsapp.net", "4915112345678");
        check("*", "");
        check("", "");
    }

    #[test]
    fn text_splitting() {
        #[track_caller]
        fn check(text: &str, max: usize, expected_lens: &[usize]) {
            let parts = split_text(text, max);
            let lens: Vec<usize> = parts.iter().map(|p| p.chars().count()).collect();
            assert_eq!(lens, expected_lens);
            assert_eq!(parts.concat(), text);
        }
        check("", 4096, &[]);
        check(&"a".repeat(4096), 4096, &[4096]);
        check(&"a".repeat(4097), 4096, &[4096, 1]);
        // 4-byte characters: the limit counts characters, and no character is cut.
        check(&"\u{1f600}".repeat(5000), 4096, &[4096, 904]);
        check(&"\u{e9}".repeat(8192), 4096, &[4096, 4096]);
        check("ab\u{e9}cd", 2, &[2, 2, 1]);
    }

    #[test]
    fn outbound_bodies() {
        let text = format!("{}{}", "x".repeat(4095), "\u{1f600}\u{1f600}");
        let bodies = build_text_messages("+49 151 12345678", &text, Some("wamid.IN"));
        assert_eq!(bodies.len(), 2);
        assert_eq!(bodies[0]["messaging_product"], "whatsapp");
        assert_eq!(bodies[0]["to"], "4915112345678");
        assert_eq!(bodies[0]["type"], "text");
        assert_eq!(bodies[0]["context"]["message_id"], "wamid.IN");
        assert!(bodies[1].get("context").is_none());
        assert_eq!(bodies[1]["text"]["body"], "\u{1f600}");
        assert_eq!(
            messages_url("http://127.0.0.1:9/", "v21.0", "PNID"),
            "http://127.0.0.1:9/v21.0/PNID/messages"
        );
        assert!(build_text_messages("1", "", None).is_empty());
    }
}

mod bridge_protocol {
    use super::super::bridge::*;

    const SECRET: &[u8] = b"bridge-secret";
    const NOW: i64 = 1_700_000_000;

    #[test]
    fn verification() {
        #[track_caller]
        fn check(
            cache: &mut ReplayCache,
            secret: &[u8],
            ts: Option<&str>,
            sig: Option<&str>,
            body: &[u8],
            expected: Result<(), BridgeAuthError>,
        ) {
            assert_eq!(verify_bridge(secret, ts, sig, body, NOW, cache), expected);
        }
        let body = br#"{"message_id":"m1","sender_id":"U1","chat_id":"C1","text":"hi"}"#;
        let sig = |ts: i64, b: &[u8]| sign_bridge(SECRET, ts, b);
        let mut cache = ReplayCache::default();
        let c = &mut cache;
        check(
            c,
            SECRET,
            Some(&NOW.to_string()),
            Some(&sig(NOW, body)),
            body,
            Ok(()),
        );
        check(
            c,
            SECRET,
            Some(&NOW.to_string()),
            Some(&sig(NOW, body)),
            body,
            Err(BridgeAuthError::Replayed),
        );
        let edge = NOW - 300;
        check(
            c,
            SECRET,
            Some(&edge.to_string()),
            Some(&sig(edge, body)),
            body,
            Ok(()),
        );
        let stale = NOW - 301;
        check(
            c,
            SECRET,
            Some(&stale.to_string()),
            Some(&sig(stale, body)),
            body,
            Err(BridgeAuthError::Stale(301)),
        );
        let future = NOW + 301;
        check(
            c,
            SECRET,
            Some(&future.to_string()),
            Some(&sig(future, body)),
            body,
            Err(BridgeAuthError::Future(301)),
        );
        let t1 = NOW + 1;
        check(
            c,
            b"other",
            Some(&t1.to_string()),
            Some(&sig(t1, body)),
            body,
            Err(BridgeAuthError::Mismatch),
        );
        // The timestamp is covered by the MAC.
        check(
            c,
            SECRET,
            Some(&(NOW + 2).to_string()),
            Some(&sig(t1, body)),
            body,
            Err(BridgeAuthError::Mismatch),
        );
        check(
            c,
            SECRET,
            Some(&t1.to_string()),
            Some(&sig(t1, b"other body")),
            body,
            Err(BridgeAuthError::Mismatch),
        );
        check(
            c,
            SECRET,
            None,
            Some(&sig(t1, body)),
            body,
            Err(BridgeAuthError::MissingTimestamp),
        );
        check(
            c,
            SECRET,
            Some("+1700000000"),
            Some(&sig(t1, body)),
            body,
            Err(BridgeAuthError::BadTimestamp),
        );
        check(
            c,
            SECRET,
            Some("1.7e9"),
            Some(&sig(t1, body)),
            body,
            Err(BridgeAuthError::BadTimestamp),
        );
        check(
            c,
            SECRET,
            Some(&t1.to_string()),
            None,
            body,
            Err(BridgeAuthError::MissingSignature),
        );
        let v0 = sig(t1, body).replacen("v1=", "v0=", 1);
        check(
            c,
            SECRET,
            Some(&t1.to_string()),
            Some(&v0),
            body,
            Err(BridgeAuthError::UnsupportedVersion),
        );
        check(
            c,
            SECRET,
            Some(&t1.to_string()),
            Some("v1=xyz0"),
            body,
            Err(BridgeAuthError::BadHex),
        );
        check(
            c,
            SECRET,
            Some(&t1.to_string()),
            Some("v1=00ff"),
            body,
            Err(BridgeAuthError::WrongLength(2)),
        );
        check(
            c,
            b"",
            Some(&t1.to_string()),
            Some(&sig(t1, body)),
            body,
            Err(BridgeAuthError::NotConfigured),
        );
        // Failed attempts are not remembered: the correct delivery still passes.
        check(
            c,
            SECRET,
            Some(&t1.to_string()),
            Some(&sig(t1, body)),
            body,
            Ok(()),
        );
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn replay_cache_evicts_old_entries_and_refuses_when_full() {
        let mut cache = ReplayCache::new(300, 2);
        let deliver = |cache: &mut ReplayCache, ts: i64, now: i64, body: &[u8]| {
            verify_bridge(
                SECRET,
                Some(&ts.to_string()),
                Some(&sign_bridge(SECRET, ts, body)),
                body,
                now,
                cache,
            )
        };
        assert_eq!(deliver(&mut cache, NOW, NOW, b"a"), Ok(()));
        assert_eq!(deliver(&mut cache, NOW, NOW, b"b"), Ok(()));
        assert_eq!(
            deliver(&mut cache, NOW, NOW, b"c"),
            Err(BridgeAuthError::ReplayCacheFull)
        );
        // Once the first entries leave the window, there is room again.
        assert_eq!(deliver(&mut cache, NOW + 301, NOW + 301, b"c"), Ok(()));
        assert_eq!(cache.len(), 1);
    }

    type Fields<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, bool, bool);

    #[test]
    fn body_parsing() {
        #[track_caller]
        fn check(body: &str, expected: Result<Fields<'_>, BridgeParseError>) {
            let got = parse_bridge_message(body.as_bytes(), NOW).map(|m| {
                assert_eq!(m.timestamp, NOW);
                (
                    m.message_id,
                    m.sender_id,
                    m.chat_id,
                    m.thread_id,
                    m.is_group,
                    m.mentioned,
                )
            });
            let expected = expected.map(|(a, b, c, d, e, f)| {
                (
                    a.to_string(),
                    b.to_string(),
                    c.to_string(),
                    d.map(String::from),
                    e,
                    f,
                )
            });
            assert_eq!(got, expected);
        }
        check(
            r#"{"message_id":"m1","sender_id":"U1","chat_id":"C1","text":"hi","extra":1}"#,
            Ok(("m1", "U1", "C1", None, false, false)),
        );
        check(
            r#"{"message_id":"m1","sender_id":"U1","chat_id":"C1","thread_id":"T:1","text":"","is_group":true,"mentioned":true}"#,
            Ok(("m1", "U1", "C1", Some("T:1"), true, true)),
        );
        check(
            r#"{"sender_id":"U1","chat_id":"C1","text":"x"}"#,
            Err(BridgeParseError::InvalidField("message_id")),
        );
        check(
            r#"{"message_id":"","sender_id":"U1","chat_id":"C1","text":"x"}"#,
            Err(BridgeParseError::InvalidField("message_id")),
        );
        check(
            r#"{"message_id":"m","sender_id":"U\n1","chat_id":"C1","text":"x"}"#,
            Err(BridgeParseError::InvalidField("sender_id")),
        );
        check(
            r#"{"message_id":"m","sender_id":"U1","chat_id":"C1"}"#,
            Err(BridgeParseError::InvalidField("text")),
        );
        let long_id = format!(
            r#"{{"message_id":"{}","sender_id":"U1","chat_id":"C1","text":"x"}}"#,
            "m".repeat(257)
        );
        check(&long_id, Err(BridgeParseError::InvalidField("message_id")));
        assert!(matches!(
            parse_bridge_message(b"[1,2]", NOW),
            Err(BridgeParseError::Json(_))
        ));
    }
}

mod access_policy {
    use super::super::access::*;
    use super::super::{ChannelKind, SessionScope};
    use super::text_message;

    fn policy(unknown: UnknownSenders, require_mention: bool) -> ChannelPolicy {
        ChannelPolicy {
            owner_ids: vec!["+49 151 00000001".into(), "OWNER".into()],
            allowlist: vec!["4915100000002".into(), "Friend".into()],
            denylist: vec!["+4915100000003".into(), "Enemy".into()],
            unknown_senders: unknown,
            require_mention,
            session_scope: SessionScope::Room,
        }
    }

    #[test]
    fn matrix() {
        use Access::*;
        use DropReason::*;
        use UnknownSenders::{Deny as PDeny, Open as POpen, Pairing as PPairing};
        #[track_caller]
        fn check(
            kind: ChannelKind,
            unknown: UnknownSenders,
            mention_rule: bool,
            sender: &str,
            group: bool,
            mentioned: bool,
            expected: Access,
        ) {
            let mut message = text_message("m", sender);
            message.is_group = group;
            message.mentioned = mentioned;
            let runtime = RuntimeLists::default();
            assert_eq!(evaluate(kind, &policy(unknown, mention_rule), &runtime, &message), expected, "{kind:?} {unknown:?} mention={mention_rule} {sender} group={group} mentioned={mentioned}");
        }
        let wa = ChannelKind::Whatsapp;
        let br = ChannelKind::Bridge;
        for unknown in [PDeny, PPairing, POpen] {
            // Owners (number written differently), allow-listed, deny-listed: the policy does not matter.
            check(wa, unknown, false, "4915100000001", false, false, Owner);
            check(
                wa,
                unknown,
                false,
                "+49-151-000000-02",
                false,
                false,
                Allowed,
            );
            check(
                wa,
                unknown,
                false,
                "4915100000003",
                false,
                false,
                Drop(Denylisted),
            );
            check(br, unknown, false, "OWNER", false, false, Owner);
            check(br, unknown, false, "Friend", false, false, Allowed);
            check(br, unknown, false, "Enemy", false, false, Drop(Denylisted));
            // Bridge ids are case-sensitive.
            check(
                br,
                unknown,
                false,
                "owner",
                false,
                false,
                evaluate_unknown(unknown, false),
            );
            check(
                br,
                unknown,
                false,
                "enemy",
                false,
                false,
                evaluate_unknown(unknown, false),
            );
            // Groups with a mention requirement.
            check(
                wa,
                unknown,
                true,
                "4915100000001",
                true,
                false,
                MentionRequired,
            );
            check(wa, unknown, true, "4915100000001", true, true, Owner);
            check(
                wa,
                unknown,
                true,
                "4915100000002",
                true,
                false,
                MentionRequired,
            );
            check(
                wa,
                unknown,
                true,
                "4915100000003",
                true,
                false,
                Drop(Denylisted),
            );
            check(
                wa,
                unknown,
                true,
                "4915199999999",
                true,
                true,
                evaluate_unknown(unknown, true),
            );
            // Without the requirement, group messages are evaluated like direct ones.
            check(wa, unknown, false, "4915100000002", true, false, Allowed);
            check(
                wa,
                unknown,
                false,
                "4915199999999",
                false,
                false,
                evaluate_unknown(unknown, false),
            );
            check(wa, unknown, false, "", false, false, Drop(MissingSender));
            check(
                wa,
                unknown,
                false,
                "no digits",
                false,
                false,
                Drop(MissingSender),
            );
        }
        fn evaluate_unknown(unknown: UnknownSenders, group: bool) -> Access {
            match (unknown, group) {
                (PDeny, _) => Drop(UnknownSender),
                (PPairing, false) => NeedsPairing,
                (PPairing, true) => Drop(PairingNeedsDirectChat),
                (POpen, _) => Allowed,
            }
        }
    }

    #[test]
    fn runtime_lists_and_wildcard() {
        let kind = ChannelKind::Whatsapp;
        let policy = policy(UnknownSenders::Deny, false);
        let mut runtime = RuntimeLists::default();
        let stranger = text_message("m", "+49 151 99");
        assert_eq!(
            evaluate(kind, &policy, &runtime, &stranger),
            Access::Drop(DropReason::UnknownSender)
        );
        runtime.allow(kind, "4915199");
        assert_eq!(
            evaluate(kind, &policy, &runtime, &stranger),
            Access::Allowed
        );
        runtime.block(kind, "+4915199");
        assert_eq!(
            evaluate(kind, &policy, &runtime, &stranger),
            Access::Drop(DropReason::Denylisted)
        );
        runtime.unblock(kind, "4915199");
        assert_eq!(
            evaluate(kind, &policy, &runtime, &stranger),
            Access::Drop(DropReason::UnknownSender)
        );
        // A blocked owner is dropped (denylist > owner); unblocking a configured entry does nothing.
        runtime.block(kind, "4915100000001");
        assert_eq!(
            evaluate(kind, &policy, &runtime, &text_message("m", "4915100000001")),
            Access::Drop(DropReason::Denylisted)
        );
        runtime.unblock(kind, "4915100000003");
        assert_eq!(
            evaluate(kind, &policy, &runtime, &text_message("m", "4915100000003")),
            Access::Drop(DropReason::Denylisted)
        );
        let open = ChannelPolicy {
            allowlist: vec!["*".into()],
            ..ChannelPolicy::default()
        };
        assert_eq!(
            evaluate(kind, &open, &RuntimeLists::default(), &stranger),
            Access::Allowed
        );
    }

    #[test]
    fn defaults_and_warnings() {
        let parsed: ChannelPolicy =
            serde_json::from_str(r#"{"owner_ids":["1"],"secret":"ignored"}"#).unwrap();
        assert_eq!(parsed.unknown_senders, UnknownSenders::Deny);
        assert_eq!(parsed.session_scope, SessionScope::Room);
        assert!(!parsed.require_mention);
        assert!(policy_warnings(ChannelKind::Whatsapp, &parsed).is_empty());

        #[track_caller]
        fn check(policy: ChannelPolicy, expected_fragments: &[&str]) {
            let warnings = policy_warnings(ChannelKind::Whatsapp, &policy);
            assert_eq!(warnings.len(), expected_fragments.len(), "{warnings:?}");
            for (warning, fragment) in warnings.iter().zip(expected_fragments) {
                assert!(warning.contains(fragment), "{warning} lacks {fragment}");
            }
        }
        check(
            ChannelPolicy {
                unknown_senders: UnknownSenders::Open,
                ..Default::default()
            },
            &["open", "require_mention"],
        );
        check(
            ChannelPolicy {
                unknown_senders: UnknownSenders::Open,
                require_mention: true,
                ..Default::default()
            },
            &["open"],
        );
        check(
            ChannelPolicy {
                allowlist: vec!["*".into()],
                ..Default::default()
            },
            &["\"*\""],
        );
        check(
            ChannelPolicy {
                denylist: vec!["*".into()],
                ..Default::default()
            },
            &["only has a meaning"],
        );
        check(
            ChannelPolicy {
                allowlist: vec!["alice".into()],
                ..Default::default()
            },
            &["matches no sender"],
        );
        check(
            ChannelPolicy {
                owner_ids: vec!["+491".into()],
                denylist: vec!["491".into()],
                ..Default::default()
            },
            &["also on the denylist"],
        );
    }
}

mod session_keys {
    use super::super::session::*;
    use proptest::prelude::*;

    #[test]
    fn format_and_adversarial_ids() {
        #[track_caller]
        fn check(
            scope: SessionScope,
            parts: (&str, &str, &str, Option<&str>, &str),
            expected: &str,
        ) {
            let (channel, account, chat, thread, sender) = parts;
            assert_eq!(
                session_key(scope, channel, account, chat, thread, sender),
                expected
            );
        }
        use SessionScope::*;
        check(
            Room,
            ("whatsapp", "PN1", "4915", None, "4915"),
            "room:whatsapp:PN1:4915",
        );
        check(
            Thread,
            ("slack", "acme", "C1", Some("T1"), "U1"),
            "thread:slack:acme:C1:T1",
        );
        check(
            Thread,
            ("slack", "acme", "C1", None, "U1"),
            "thread:slack:acme:C1:~",
        );
        check(
            Thread,
            ("slack", "acme", "C1", Some("~"), "U1"),
            "thread:slack:acme:C1:%7E",
        );
        check(
            User,
            ("slack", "acme", "C1", None, "U1"),
            "user:slack:acme:U1",
        );
        check(
            Account,
            ("slack", "acme", "C1", None, "U1"),
            "account:slack:acme",
        );
        check(
            Channel,
            ("slack", "acme", "C1", None, "U1"),
            "channel:slack",
        );
        // The Go original's collision: `a:b_c` vs `a_b:c`.
        check(Room, ("a", "b_c", "x", None, ""), "room:a:b_c:x");
        check(Room, ("a_b", "c", "x", None, ""), "room:a_b:c:x");
        check(
            Room,
            ("a:b", "", "x/y|%", None, ""),
            "room:a%3Ab::x%2Fy%7C%25",
        );
        let keys = [
            session_key(Room, "a:b", "c", "d", None, ""),
            session_key(Room, "a", "b:c", "d", None, ""),
            session_key(Room, "a", "b", "c:d", None, ""),
            session_key(Thread, "a", "b", "c", Some(""), ""),
            session_key(Thread, "a", "b", "c", None, ""),
            session_key(User, "a", "b", "c", None, "c"),
            session_key(Account, "a", "b:c", "", None, ""),
            session_key(Channel, "a:b:c", "", "", None, ""),
        ];
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:?}");
    }

    fn scope() -> impl Strategy<Value = SessionScope> {
        prop::sample::select(vec![
            SessionScope::Room,
            SessionScope::Thread,
            SessionScope::User,
            SessionScope::Account,
            SessionScope::Channel,
        ])
    }

    fn id() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec![
                'a', 'B', '0', ':', '/', '|', '%', '~', '_', '-', '.', ' ', '\u{e9}', '3', 'A',
            ]),
            0..5,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    type Input = (SessionScope, String, String, String, Option<String>, String);

    fn input() -> impl Strategy<Value = Input> {
        (scope(), id(), id(), id(), prop::option::of(id()), id())
    }

    fn key_of(i: &Input) -> String {
        session_key(i.0, &i.1, &i.2, &i.3, i.4.as_deref(), &i.5)
    }

    /// The components that the scope puts into the key.
    fn relevant(i: &Input) -> SessionKeyParts {
        let scope = i.0;
        let uses_account = scope != SessionScope::Channel;
        let uses_chat = matches!(scope, SessionScope::Room | SessionScope::Thread);
        SessionKeyParts {
            scope,
            channel: i.1.clone(),
            account: uses_account.then(|| i.2.clone()),
            chat_id: uses_chat.then(|| i.3.clone()),
            thread_id: (scope == SessionScope::Thread).then(|| i.4.clone()),
            sender_id: (scope == SessionScope::User).then(|| i.5.clone()),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn keys_decode_to_their_inputs(i in input()) {
            prop_assert_eq!(decode_session_key(&key_of(&i)), Some(relevant(&i)));
        }

        #[test]
        fn distinct_inputs_never_collide(a in input(), b in input()) {
            prop_assert_eq!(key_of(&a) == key_of(&b), relevant(&a) == relevant(&b));
        }
    }
}

mod pairing_codes {
    use super::super::pairing::*;
    use crate::store::{StoreDb, TreeName};

    const NOW: i64 = 1_700_000_000;

    fn pairing(db: &StoreDb) -> Pairing {
        Pairing::new(
            db.tree(TreeName::Channels).unwrap(),
            PairingSettings::default(),
        )
    }

    fn issued(outcome: PairingRequest) -> PendingPairing {
        match outcome {
            PairingRequest::Issued(p) => p,
            other => panic!("expected a new code, got {other:?}"),
        }
    }

    #[test]
    fn codes_are_from_the_alphabet_and_opaque_in_debug() {
        for _ in 0..50 {
            let code = PairingCode::generate().unwrap();
            assert_eq!(code.expose().len(), CODE_LEN);
            assert!(code.expose().bytes().all(|b| ALPHABET.contains(&b)));
            assert!(!format!("{code:?}").contains(code.expose()));
            assert!(code.matches(&format!(" {} ", code.expose().to_ascii_lowercase())));
        }
    }

    #[test]
    fn same_sender_same_code_limit_and_expiry() {
        let db = StoreDb::temporary().unwrap();
        let p = pairing(&db);
        let first = issued(p.request("wa", "491", "491", NOW).unwrap());
        assert_eq!(
            p.request("wa", "491", "491", NOW + 10).unwrap(),
            PairingRequest::Existing(first.clone())
        );
        issued(p.request("wa", "492", "492", NOW).unwrap());
        issued(p.request("wa", "493", "493", NOW).unwrap());
        // Full: a fourth sender is refused, nobody is evicted.
        assert_eq!(
            p.request("wa", "494", "494", NOW).unwrap(),
            PairingRequest::Full
        );
        // Another channel has its own limit.
        issued(p.request("other", "494", "494", NOW).unwrap());
        assert_eq!(p.pending(Some("wa"), NOW).unwrap().len(), 3);
        assert_eq!(p.pending(None, NOW).unwrap().len(), 4);
        // After the TTL the entries expire and make room; the same sender gets a new code.
        let later = NOW + 3600;
        assert!(p.pending(Some("wa"), later).unwrap().is_empty());
        let again = issued(p.request("wa", "491", "491", later).unwrap());
        assert_eq!(again.expires_at, later + 3600);
    }

    #[test]
    fn approve_deny_and_expired() {
        let db = StoreDb::temporary().unwrap();
        let p = pairing(&db);
        let a = issued(p.request("wa", "491", "491", NOW).unwrap());
        let b = issued(p.request("wa", "492", "492", NOW).unwrap());
        assert!(matches!(
            p.approve("other", a.code.expose(), NOW),
            Err(PairingError::UnknownCode)
        ));
        assert!(matches!(
            p.approve("wa", "ZZZZZZZZ", NOW),
            Err(PairingError::UnknownCode)
        ));
        let approved = p
            .approve("wa", &a.code.expose().to_ascii_lowercase(), NOW + 5)
            .unwrap();
        assert_eq!(approved.sender_id, "491");
        // One-time: the code is gone.
        assert!(matches!(
            p.approve("wa", a.code.expose(), NOW + 6),
            Err(PairingError::UnknownCode)
        ));
        assert!(matches!(
            p.deny("wa", b.code.expose(), NOW + 3600),
            Err(PairingError::Expired)
        ));
        assert!(p.pending(Some("wa"), NOW).unwrap().is_empty());
        let c = issued(p.request("wa", "493", "493", NOW).unwrap());
        assert_eq!(p.deny("wa", c.code.expose(), NOW).unwrap().sender_id, "493");
        assert!(p.pending(None, NOW).unwrap().is_empty());
    }
}

mod durable_inbox {
    use super::super::inbox::*;
    use super::super::SenderKind;
    use super::text_message;
    use crate::store::{StoreDb, TreeName};

    fn pending() -> NewEntry {
        NewEntry {
            state: InboxState::Pending,
            sender_kind: Some(SenderKind::External),
            session_key: Some("room:wa:p:1".into()),
            reason: None,
        }
    }

    #[test]
    fn duplicates_are_stored_once_also_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("timeline.db");
        let first = {
            let db = StoreDb::open(&path).unwrap();
            let inbox = Inbox::new(&db).unwrap();
            let Accepted::New(seq) = inbox
                .accept("wa", &text_message("wamid.1", "491"), pending(), 1)
                .unwrap()
            else {
                panic!("first delivery must be new")
            };
            assert_eq!(
                inbox
                    .accept("wa", &text_message("wamid.1", "491"), pending(), 2)
                    .unwrap(),
                Accepted::Duplicate(seq)
            );
            // The same message id on another channel is another message.
            assert!(matches!(
                inbox
                    .accept("bridge", &text_message("wamid.1", "491"), pending(), 2)
                    .unwrap(),
                Accepted::New(_)
            ));
            db.flush_blocking().unwrap();
            seq
        };
        let db = StoreDb::open(&path).unwrap();
        let inbox = Inbox::new(&db).unwrap();
        assert_eq!(
            inbox
                .accept("wa", &text_message("wamid.1", "491"), pending(), 3)
                .unwrap(),
            Accepted::Duplicate(first)
        );
        let Accepted::New(next) = inbox
            .accept("wa", &text_message("wamid.2", "491"), pending(), 3)
            .unwrap()
        else {
            panic!("a new id must be new")
        };
        assert!(next > first, "sequence numbers grow across restarts");
        assert_eq!(inbox.pending("wa").unwrap().len(), 2);
    }

    #[test]
    fn claim_done_recover_hold_release() {
        let db = StoreDb::temporary().unwrap();
        db.next_id().unwrap(); // so that the first message's seq is above 0
        let inbox = Inbox::new(&db).unwrap();
        let mut seqs = Vec::new();
        for i in 0..4 {
            match inbox
                .accept("wa", &text_message(&format!("m{i}"), "491"), pending(), 1)
                .unwrap()
            {
                Accepted::New(seq) => seqs.push(seq),
                Accepted::Duplicate(_) => panic!("unexpected duplicate"),
            }
        }
        assert_eq!(inbox.next_pending("wa").unwrap().unwrap().seq, seqs[0]);
        // Only durable (≤ up_to) messages are claimed.
        assert_eq!(inbox.claim_next("wa", seqs[0] - 1).unwrap(), None);
        let claimed = inbox.claim_next("wa", u64::MAX).unwrap().unwrap();
        assert_eq!(
            (claimed.seq, claimed.state),
            (seqs[0], InboxState::Processing)
        );
        assert!(inbox.mark_done("wa", seqs[0]).unwrap());
        assert!(
            !inbox.mark_done("wa", seqs[0]).unwrap(),
            "mark_done is idempotent"
        );
        // A claim left open by a crash comes back as pending, in order.
        assert_eq!(
            inbox.claim_next("wa", u64::MAX).unwrap().unwrap().seq,
            seqs[1]
        );
        assert_eq!(inbox.recover("wa").unwrap(), 1);
        assert_eq!(inbox.next_pending("wa").unwrap().unwrap().seq, seqs[1]);
        // Hold everything, release in order.
        assert_eq!(inbox.hold_pending("wa", |_| true).unwrap(), 3);
        assert_eq!(inbox.claim_next("wa", u64::MAX).unwrap(), None);
        let held: Vec<u64> = inbox.held("wa").unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(held, seqs[1..]);
        assert_eq!(inbox.release_held("wa", |_| true).unwrap(), 3);
        let order: Vec<u64> =
            std::iter::from_fn(|| inbox.claim_next("wa", u64::MAX).unwrap().map(|r| r.seq))
                .collect();
        assert_eq!(order, seqs[1..]);
        assert_eq!(
            inbox.counts("wa").unwrap(),
            InboxCounts {
                pending: 0,
                held: 0,
                processing: 3
            }
        );
    }

    #[test]
    fn a_plain_text_is_stored_once_and_other_content_kept() {
        // A WhatsApp text arrives as `text` plus `content: Text { body }` with the same body:
        // the record keeps the text once (no content reads as plain text). Other content is
        // kept, and a text whose content differs from it is not touched.
        use super::super::content::Content;
        let db = StoreDb::temporary().unwrap();
        let inbox = Inbox::new(&db).unwrap();
        let body = "a body that must be stored once 0123456789";
        let mut plain = text_message("t1", "491");
        plain.text = Some(body.into());
        plain.content = Some(Content::Text { body: body.into() });
        let Accepted::New(seq) = inbox.accept("wa", &plain, pending(), 1).unwrap() else {
            panic!("new")
        };
        let stored = inbox.get("wa", seq).unwrap().unwrap();
        assert_eq!(stored.message.text.as_deref(), Some(body));
        assert_eq!(stored.message.content, None);
        let raw = db.tree(TreeName::Channels).unwrap();
        let mut copies = 0;
        raw.for_each(|_, v| {
            copies += v
                .windows(body.len())
                .filter(|w| *w == body.as_bytes())
                .count();
            true
        })
        .unwrap();
        assert_eq!(copies, 1, "the body is on disk once");

        let mut located = text_message("t2", "491");
        located.content = Some(Content::Location {
            latitude: None,
            longitude: None,
            name: Some("here".into()),
            address: None,
        });
        let Accepted::New(seq) = inbox.accept("wa", &located, pending(), 1).unwrap() else {
            panic!("new")
        };
        assert_eq!(
            inbox.get("wa", seq).unwrap().unwrap().message.content,
            located.content
        );
        let mut differs = text_message("t3", "491");
        differs.content = Some(Content::Text {
            body: "another body".into(),
        });
        let Accepted::New(seq) = inbox.accept("wa", &differs, pending(), 1).unwrap() else {
            panic!("new")
        };
        assert_eq!(
            inbox.get("wa", seq).unwrap().unwrap().message.content,
            differs.content
        );
    }

    #[test]
    fn claims_walk_a_backlog_longer_than_one_page_in_order() {
        // claim_next reads the pending index a page at a time: a backlog of several pages,
        // with messages already claimed or done out of order, is still claimed oldest first,
        // and the durable bound (`up_to`) still stops it inside a later page.
        let db = StoreDb::temporary().unwrap();
        let inbox = Inbox::new(&db).unwrap();
        let seqs: Vec<u64> = (0..53)
            .map(|i| {
                match inbox
                    .accept("wa", &text_message(&format!("b{i}"), "491"), pending(), 1)
                    .unwrap()
                {
                    Accepted::New(seq) => seq,
                    Accepted::Duplicate(_) => panic!("unexpected duplicate"),
                }
            })
            .collect();
        let up_to = seqs[40];
        let claimed: Vec<u64> =
            std::iter::from_fn(|| inbox.claim_next("wa", up_to).unwrap().map(|r| r.seq)).collect();
        assert_eq!(claimed, seqs[..=40]);
        assert_eq!(inbox.next_pending("wa").unwrap().unwrap().seq, seqs[41]);
        let rest: Vec<u64> =
            std::iter::from_fn(|| inbox.claim_next("wa", u64::MAX).unwrap().map(|r| r.seq))
                .collect();
        assert_eq!(rest, seqs[41..]);
        assert_eq!(inbox.counts("wa").unwrap().processing, 53);
    }

    #[test]
    fn claims_page_past_stale_index_entries_in_order() {
        // The claim reads the pending index a page at a time: entries whose record is gone
        // (or no longer pending) fill more than one page and are stepped over, in order.
        let db = StoreDb::temporary().unwrap();
        for _ in 0..100 {
            db.next_id().unwrap();
        }
        let inbox = Inbox::new(&db).unwrap();
        let state = db.state().unwrap();
        for seq in 1..=70u64 {
            let key = format!("inbox/wa/i/pending/{seq:020}");
            state
                .put(crate::store::Space::Inbox, key.as_bytes(), b"")
                .unwrap();
        }
        let mut seqs = Vec::new();
        for i in 0..3 {
            match inbox
                .accept("wa", &text_message(&format!("m{i}"), "491"), pending(), 1)
                .unwrap()
            {
                Accepted::New(seq) => seqs.push(seq),
                Accepted::Duplicate(_) => panic!("unexpected duplicate"),
            }
        }
        assert_eq!(inbox.claim_next("wa", seqs[0] - 1).unwrap(), None);
        let order: Vec<u64> =
            std::iter::from_fn(|| inbox.claim_next("wa", u64::MAX).unwrap().map(|r| r.seq))
                .collect();
        assert_eq!(order, seqs);
        assert_eq!(inbox.next_pending("wa").unwrap(), None);
    }

    #[test]
    fn dropped_messages_keep_no_text() {
        let db = StoreDb::temporary().unwrap();
        let inbox = Inbox::new(&db).unwrap();
        let entry = NewEntry {
            state: InboxState::Dropped,
            sender_kind: None,
            session_key: None,
            reason: Some("unknown_sender".into()),
        };
        let Accepted::New(seq) = inbox
            .accept("wa", &text_message("m", "499"), entry, 1)
            .unwrap()
        else {
            panic!("new")
        };
        let record = inbox.get("wa", seq).unwrap().unwrap();
        assert_eq!(record.message.text, None);
        assert_eq!(inbox.counts("wa").unwrap(), InboxCounts::default());
    }

    #[test]
    fn a_claimed_message_is_prepared_once_and_found_by_its_id() {
        let db = StoreDb::temporary().unwrap();
        let inbox = Inbox::new(&db).unwrap();
        let Accepted::New(seq) = inbox
            .accept("wa", &text_message("m1", "499"), pending(), 1)
            .unwrap()
        else {
            panic!("new")
        };
        let mut prepared = text_message("m1", "499");
        prepared.text = Some("text of m1\n[attachment unavailable: x]".into());
        assert!(
            !inbox.set_prepared("wa", seq, &prepared).unwrap(),
            "only a claimed message is prepared"
        );
        inbox.claim_next("wa", seq).unwrap().unwrap();
        assert!(inbox.set_prepared("wa", seq, &prepared).unwrap());
        let mut again = prepared.clone();
        again.text = Some("another text".into());
        assert!(
            !inbox.set_prepared("wa", seq, &again).unwrap(),
            "the first preparation stays"
        );
        let found = inbox.find("wa", "m1").unwrap().unwrap();
        assert!(found.prepared);
        assert_eq!(found.message.text, prepared.text);
        // A hand-over after a restart carries the prepared text.
        inbox.recover("wa").unwrap();
        let claimed = inbox.claim_next("wa", seq).unwrap().unwrap();
        assert_eq!(
            (claimed.prepared, claimed.message.text),
            (true, prepared.text)
        );
        assert!(inbox.find("wa", "other").unwrap().is_none());
    }
}

mod durable_outbox {
    use std::time::Duration;

    use super::super::outbox::*;
    use crate::store::StoreDb;

    fn message() -> OutboundMessage {
        OutboundMessage {
            to: "491".into(),
            text: "reply".into(),
            reply_to: None,
            session: None,
        }
    }

    fn transient(retry_after: Option<u64>) -> AttemptResult {
        AttemptResult::Transient {
            retry_after: retry_after.map(Duration::from_secs),
            reason: "http status 503".into(),
        }
    }

    #[test]
    fn classification() {
        #[track_caller]
        fn check(status: u16, retry_after: Option<&str>, expected: AttemptResult) {
            assert_eq!(classify_http(status, retry_after), expected);
        }
        check(200, None, AttemptResult::Sent);
        check(201, Some("5"), AttemptResult::Sent);
        check(
            429,
            Some("7"),
            AttemptResult::Transient {
                retry_after: Some(Duration::from_secs(7)),
                reason: "http status 429".into(),
            },
        );
        check(
            429,
            Some("Wed, 21 Oct 2015 07:28:00 GMT"),
            AttemptResult::Transient {
                retry_after: None,
                reason: "http status 429".into(),
            },
        );
        check(
            500,
            None,
            AttemptResult::Transient {
                retry_after: None,
                reason: "http status 500".into(),
            },
        );
        check(
            503,
            Some(" 2 "),
            AttemptResult::Transient {
                retry_after: Some(Duration::from_secs(2)),
                reason: "http status 503".into(),
            },
        );
        check(
            408,
            None,
            AttemptResult::Transient {
                retry_after: None,
                reason: "http status 408".into(),
            },
        );
        check(
            400,
            None,
            AttemptResult::Terminal {
                code: None,
                status: Some(400),
                reason: "http status 400".into(),
            },
        );
        check(
            401,
            Some("3"),
            AttemptResult::Terminal {
                code: None,
                status: Some(401),
                reason: "http status 401".into(),
            },
        );
        check(
            302,
            None,
            AttemptResult::Terminal {
                code: None,
                status: Some(302),
                reason: "http status 302".into(),
            },
        );
        assert!(matches!(
            classify_network_error("connection refused"),
            AttemptResult::Transient {
                retry_after: None,
                ..
            }
        ));
    }

    #[test]
    fn backoff_schedule() {
        #[track_caller]
        fn check(attempt: u32, random: u64, expected_ms: u64) {
            assert_eq!(Backoff::default().delay_ms(attempt, random), expected_ms);
        }
        // d = min(300 s, 1 s · 2^(n-1)), jitter in [d/2, d].
        check(1, 0, 500);
        check(1, u64::MAX, 500 + u64::MAX % 501);
        check(1, 500, 1_000);
        check(2, 0, 1_000);
        check(3, 0, 2_000);
        check(9, 0, 128_000);
        check(10, 0, 150_000);
        check(40, 0, 150_000);
        check(40, 150_000, 300_000);
    }

    const LEASE: i64 = 30_000;

    /// Starts the next attempt on `id` at `now` (it must be the next due) and returns its
    /// number.
    #[track_caller]
    fn start(outbox: &Outbox, id: u64, now: i64) -> u32 {
        let taken = outbox.take_due(None, now, 1, &[], LEASE).unwrap();
        let record = taken.iter().find(|r| r.id == id).expect("due");
        assert_eq!(record.state, OutboxState::Sending);
        record.attempts
    }

    #[test]
    fn retries_respect_retry_after_and_give_up() {
        let db = StoreDb::temporary().unwrap();
        let outbox = Outbox::new(&db, Backoff::default())
            .unwrap()
            .with_random(|| 0);
        let t0 = 1_700_000_000_000;
        let id = outbox.enqueue("wa", message(), 1, t0).unwrap().id();
        assert_eq!(start(&outbox, id, t0), 1);
        // Sending: not due again until the resend wait runs out, then a new attempt.
        assert!(outbox
            .take_due(None, t0 + 1, 10, &[], LEASE)
            .unwrap()
            .is_empty());
        assert_eq!(start(&outbox, id, t0 + LEASE), 2);
        // The answer to the superseded attempt 1 is not recorded.
        assert!(matches!(
            outbox.record_attempt(id, 1, AttemptResult::Sent, 1, t0),
            Err(OutboxError::Finished(_))
        ));

        let r = outbox
            .record_attempt(id, 2, transient(None), 0, t0)
            .unwrap();
        assert_eq!(
            (r.attempts, r.next_attempt_at, &r.state),
            (2, t0 + 1_000, &OutboxState::Queued)
        );
        assert!(outbox
            .take_due(None, t0 + 999, 10, &[], LEASE)
            .unwrap()
            .is_empty());
        // Retry-After beats a shorter backoff.
        assert_eq!(start(&outbox, id, t0 + 1_000), 3);
        let r = outbox
            .record_attempt(id, 3, transient(Some(30)), 0, t0)
            .unwrap();
        assert_eq!(r.next_attempt_at, t0 + 30_000);
        assert!(outbox
            .take_due(None, t0 + 29_999, 10, &[], LEASE)
            .unwrap()
            .is_empty());
        assert!(outbox
            .take_due(Some("other"), t0 + 30_000, 10, &[], LEASE)
            .unwrap()
            .is_empty());
        assert!(
            outbox
                .take_due(Some("wa"), t0 + 30_000, 10, &[id], LEASE)
                .unwrap()
                .is_empty(),
            "an attempt in flight is not started twice"
        );
        assert_eq!(start(&outbox, id, t0 + 30_000), 4);
        // … and is capped at an hour.
        let r = outbox
            .record_attempt(id, 4, transient(Some(86_400)), 0, t0)
            .unwrap();
        assert_eq!(r.next_attempt_at, t0 + 3_600_000);
        for attempt in 5..10 {
            assert_eq!(start(&outbox, id, i64::MAX / 4), attempt);
            let r = outbox
                .record_attempt(id, attempt, transient(None), 0, t0)
                .unwrap();
            assert_eq!(r.attempts, attempt);
            assert_eq!(r.state, OutboxState::Queued);
        }
        assert_eq!(start(&outbox, id, i64::MAX / 4), 10);
        let r = outbox
            .record_attempt(id, 10, transient(None), 0, t0)
            .unwrap();
        assert_eq!(r.attempts, 10);
        assert!(
            matches!(&r.state, OutboxState::Failed { status: None, reason, .. } if reason.starts_with("gave up after 10 attempts"))
        );
        assert!(outbox
            .take_due(None, i64::MAX / 2, 10, &[], LEASE)
            .unwrap()
            .is_empty());
        assert!(matches!(
            outbox.record_attempt(id, 10, AttemptResult::Sent, 1, t0),
            Err(OutboxError::Finished(_))
        ));
    }

    #[test]
    fn terminal_and_sent() {
        let db = StoreDb::temporary().unwrap();
        let outbox = Outbox::new(&db, Backoff::default()).unwrap();
        let a = outbox.enqueue("wa", message(), 1, 0).unwrap().id();
        let b = outbox.enqueue("wa", message(), 1, 0).unwrap().id();
        assert_eq!(outbox.queued("wa").unwrap().len(), 2);
        assert!(
            matches!(
                outbox.record_attempt(a, 1, AttemptResult::Sent, 1, 0),
                Err(OutboxError::Finished(_))
            ),
            "an answer without a recorded attempt is refused"
        );
        start(&outbox, a, 0);
        let r = outbox
            .record_attempt(a, 1, classify_http(400, None), 0, 0)
            .unwrap();
        assert_eq!(
            r.state,
            OutboxState::Failed {
                status: Some(400),
                code: None,
                reason: "http status 400".into()
            }
        );
        start(&outbox, b, 0);
        assert_eq!(
            outbox
                .record_attempt(b, 1, classify_http(200, None), 1, 0)
                .unwrap()
                .state,
            OutboxState::Sent
        );
        assert!(outbox.queued("wa").unwrap().is_empty());
        assert!(outbox
            .take_due(None, 1_000_000, 10, &[], LEASE)
            .unwrap()
            .is_empty());
        assert!(matches!(
            outbox.record_attempt(999_999, 1, AttemptResult::Sent, 1, 0),
            Err(OutboxError::UnknownId(_))
        ));
    }
}

mod bridge_actor {
    use std::sync::{Arc, Mutex};

    use actix::prelude::*;

    use super::super::access::{ChannelPolicy, UnknownSenders};
    use super::super::outbox::Backoff;
    use super::super::pairing::PairingSettings;
    use super::super::*;
    use super::text_message;
    use crate::audit::{AppendRecord, AuditError, AuditKind, AuditReceipt};
    use crate::store::StoreDb;

    const NOW: i64 = 1_700_000_000;
    const OWNER: &str = "4915100000001";
    const FRIEND: &str = "4915100000002";

    /// Records what the agent was handed.
    #[derive(Default)]
    struct FakeAgent {
        got: Vec<DeliverToAgent>,
    }
    impl Actor for FakeAgent {
        type Context = Context<Self>;
    }
    impl Handler<DeliverToAgent> for FakeAgent {
        type Result = Result<(), DeliveryRefused>;
        fn handle(&mut self, msg: DeliverToAgent, _: &mut Context<Self>) -> Self::Result {
            self.got.push(msg);
            Ok(())
        }
    }
    /// Answered after every earlier delivery (one mailbox, in order).
    #[derive(Message)]
    #[rtype(result = "Vec<String>")]
    struct Delivered;
    impl Handler<Delivered> for FakeAgent {
        type Result = MessageResult<Delivered>;
        fn handle(&mut self, _: Delivered, _: &mut Context<Self>) -> Self::Result {
            MessageResult(self.got.iter().map(|d| d.message_id.clone()).collect())
        }
    }

    /// Keeps audit records in memory.
    struct FakeAudit(Arc<Mutex<Vec<AppendRecord>>>);
    impl Actor for FakeAudit {
        type Context = Context<Self>;
    }
    impl Handler<AppendRecord> for FakeAudit {
        type Result = Result<AuditReceipt, AuditError>;
        fn handle(&mut self, msg: AppendRecord, _: &mut Context<Self>) -> Self::Result {
            let mut records = self.0.lock().unwrap();
            records.push(msg);
            Ok(AuditReceipt {
                seq: records.len() as u64,
                hash: String::new(),
            })
        }
    }

    struct Monitor(Arc<Mutex<Vec<UnknownSenderDropped>>>);
    impl Actor for Monitor {
        type Context = Context<Self>;
    }
    impl Handler<UnknownSenderDropped> for Monitor {
        type Result = ();
        fn handle(&mut self, msg: UnknownSenderDropped, _: &mut Context<Self>) {
            self.0.lock().unwrap().push(msg);
        }
    }

    struct Harness {
        db: StoreDb,
        agent: Addr<FakeAgent>,
        audit: Arc<Mutex<Vec<AppendRecord>>>,
        signals: Arc<Mutex<Vec<UnknownSenderDropped>>>,
        links: ChannelLinks,
    }

    fn config(unknown: UnknownSenders) -> ChannelConfig {
        ChannelConfig {
            name: "whatsapp".into(),
            kind: ChannelKind::Whatsapp,
            account: "PNID".into(),
            policy: ChannelPolicy {
                owner_ids: vec![format!("+{OWNER}")],
                allowlist: vec![FRIEND.into()],
                unknown_senders: unknown,
                ..ChannelPolicy::default()
            },
            pairing: PairingSettings::default(),
            backoff: Backoff::default(),
            resend_after: std::time::Duration::from_secs(30),
            messages: Default::default(),
            backlog: Default::default(),
        }
    }

    fn harness(db: StoreDb) -> Harness {
        let agent = FakeAgent::default().start();
        let audit = Arc::new(Mutex::new(Vec::new()));
        let signals = Arc::new(Mutex::new(Vec::new()));
        let links = ChannelLinks {
            agent: agent.clone().recipient(),
            audit: FakeAudit(audit.clone()).start().recipient(),
            unknown_senders: Some(Monitor(signals.clone()).start().recipient()),
            drain: Default::default(),
            media: None,
        };
        Harness {
            db,
            agent,
            audit,
            signals,
            links,
        }
    }

    impl Harness {
        fn start(&self, unknown: UnknownSenders) -> Addr<ChannelBridge> {
            ChannelBridge::with_clock(config(unknown), &self.db, self.links.clone(), || NOW)
                .unwrap()
                .start()
        }
        async fn delivered(&self) -> Vec<String> {
            self.agent.send(Delivered).await.unwrap()
        }
    }

    async fn accept(bridge: &Addr<ChannelBridge>, id: &str, sender: &str) -> InboundOutcome {
        bridge
            .send(AcceptInbound {
                message: text_message(id, sender),
            })
            .await
            .unwrap()
            .unwrap()
    }

    async fn set_state(bridge: &Addr<ChannelBridge>, state: ChannelState) -> ChannelInfo {
        bridge
            .send(SetChannelState {
                state,
                reason: Some("test".into()),
                actor: "admin".into(),
            })
            .await
            .unwrap()
            .unwrap()
    }

    /// Lets the bridge's spawned hand-over futures and the agent's answers run.
    /// (Claims are synced before the hand-over: wait, with a deadline, until nothing is
    /// pending or processing.)
    async fn settle(bridge: &Addr<ChannelBridge>, h: &Harness) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let info = bridge.send(GetChannelInfo).await.unwrap().unwrap();
            if info.queue.pending == 0 && info.queue.processing == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "messages never settled: {:?}",
                info.queue
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let delivered = h.delivered().await;
        let _ = bridge.send(GetChannelInfo).await;
        delivered
    }

    /// An agent that answers only when the test lets it (one permit per answer).
    struct GatedAgent {
        gate: Arc<tokio::sync::Semaphore>,
        got: Arc<std::sync::atomic::AtomicUsize>,
    }
    impl Actor for GatedAgent {
        type Context = Context<Self>;
    }
    impl Handler<DeliverToAgent> for GatedAgent {
        type Result = ResponseFuture<Result<(), DeliveryRefused>>;
        fn handle(&mut self, _: DeliverToAgent, _: &mut Context<Self>) -> Self::Result {
            self.got.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let gate = self.gate.clone();
            Box::pin(async move {
                gate.acquire().await.unwrap().forget();
                Ok(())
            })
        }
    }

    #[actix_rt::test]
    async fn a_slow_agent_is_handed_at_most_max_awaiting_messages_and_the_rest_wait_on_disk() {
        use super::super::actor::MAX_AWAITING;
        let mut h = harness(StoreDb::temporary().unwrap());
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let got = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        h.links.agent = GatedAgent {
            gate: gate.clone(),
            got: got.clone(),
        }
        .start()
        .recipient();
        let bridge = h.start(UnknownSenders::Deny);
        let total = MAX_AWAITING + 72;
        for n in 0..total {
            accept(&bridge, &format!("m{n}"), OWNER).await;
        }
        let handed = || got.load(std::sync::atomic::Ordering::SeqCst);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while handed() < MAX_AWAITING {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} handed",
                handed()
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // More arrivals pump again, but nothing more is handed while none is answered.
        accept(&bridge, "late", OWNER).await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(handed(), MAX_AWAITING);
        let info = bridge.send(GetChannelInfo).await.unwrap().unwrap();
        assert_eq!(info.queue.pending, total + 1 - MAX_AWAITING);
        // Answers free places: every message is handed on, in the end, exactly once.
        gate.add_permits(total + 1);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let info = bridge.send(GetChannelInfo).await.unwrap().unwrap();
            if info.queue.pending == 0 && info.queue.processing == 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{:?}", info.queue);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(handed(), total + 1);
    }

    #[actix_rt::test]
    async fn running_admits_dedupes_and_drops_unknown_senders_with_an_audit() {
        let h = harness(StoreDb::temporary().unwrap());
        let bridge = h.start(UnknownSenders::Deny);
        assert!(matches!(
            accept(&bridge, "m1", OWNER).await,
            InboundOutcome::Accepted { held: false, .. }
        ));
        assert_eq!(
            accept(&bridge, "m1", OWNER).await,
            InboundOutcome::Duplicate
        );
        assert!(matches!(
            accept(&bridge, "m2", &format!("+{FRIEND}")).await,
            InboundOutcome::Accepted { held: false, .. }
        ));
        assert_eq!(
            accept(&bridge, "m3", "4915199999999").await,
            InboundOutcome::Dropped {
                reason: "unknown_sender".into()
            }
        );
        assert_eq!(
            accept(&bridge, "m3", "4915199999999").await,
            InboundOutcome::Duplicate
        );
        assert_eq!(settle(&bridge, &h).await, ["m1", "m2"]);

        let audit = h.audit.lock().unwrap().clone();
        assert_eq!(audit.len(), 1, "one audit record for one dropped message");
        assert_eq!(audit[0].kind, AuditKind::ChannelDropped);
        assert_eq!(audit[0].data["sender"], "4915199999999");
        assert_eq!(audit[0].data["reason"], "unknown_sender");
        assert!(
            !audit[0].data.to_string().contains("text of"),
            "never the text"
        );
        assert_eq!(
            h.signals.lock().unwrap().clone(),
            [UnknownSenderDropped {
                channel: "whatsapp".into(),
                sender_id: "4915199999999".into()
            }]
        );
        let info = bridge.send(GetChannelInfo).await.unwrap().unwrap();
        assert_eq!((info.inbound_total, info.unknown_senders_total), (3, 1));
        assert_eq!(info.queue, super::super::inbox::InboxCounts::default());
        assert_eq!(info.state, ChannelState::Running);
    }

    #[actix_rt::test]
    async fn quarantine_holds_observe_admits_owners_and_release_replays_in_order_once() {
        let h = harness(StoreDb::temporary().unwrap());
        let bridge = h.start(UnknownSenders::Deny);
        let info = set_state(&bridge, ChannelState::Quarantined).await;
        assert_eq!(info.state, ChannelState::Quarantined);
        assert_eq!(info.reason.as_deref(), Some("test"));
        for (id, sender) in [("q1", FRIEND), ("q2", OWNER), ("q3", FRIEND)] {
            assert!(matches!(
                accept(&bridge, id, sender).await,
                InboundOutcome::Accepted { held: true, .. }
            ));
        }
        assert!(
            settle(&bridge, &h).await.is_empty(),
            "nothing is handed on while quarantined"
        );
        assert_eq!(
            bridge
                .send(GetChannelInfo)
                .await
                .unwrap()
                .unwrap()
                .queue
                .held,
            3
        );

        // Observe: the held owner message goes through, new owner messages too, others held.
        set_state(&bridge, ChannelState::Observe).await;
        assert!(matches!(
            accept(&bridge, "o1", OWNER).await,
            InboundOutcome::Accepted { held: false, .. }
        ));
        assert!(matches!(
            accept(&bridge, "o2", FRIEND).await,
            InboundOutcome::Accepted { held: true, .. }
        ));
        assert_eq!(settle(&bridge, &h).await, ["q2", "o1"]);

        // Full release: the held external messages, in arrival order, once each.
        set_state(&bridge, ChannelState::Running).await;
        assert_eq!(settle(&bridge, &h).await, ["q2", "o1", "q1", "q3", "o2"]);
        set_state(&bridge, ChannelState::Running).await;
        assert_eq!(
            settle(&bridge, &h).await.len(),
            5,
            "a second release replays nothing"
        );
        let states: Vec<_> = h
            .audit
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.kind == AuditKind::ChannelStateChanged)
            .map(|r| r.data["to"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(states, ["quarantined", "observe", "running", "running"]);
    }

    #[actix_rt::test]
    async fn disabled_holds_and_sends_nothing() {
        let h = harness(StoreDb::temporary().unwrap());
        let bridge = h.start(UnknownSenders::Deny);
        bridge
            .send(EnqueueReply {
                message: super::super::outbox::OutboundMessage {
                    to: OWNER.into(),
                    text: "r".into(),
                    reply_to: None,
                    session: None,
                },
            })
            .await
            .unwrap()
            .unwrap();
        set_state(&bridge, ChannelState::Disabled).await;
        assert!(matches!(
            accept(&bridge, "d1", OWNER).await,
            InboundOutcome::Accepted { held: true, .. }
        ));
        let due = bridge
            .send(TakeDueReplies {
                now_ms: NOW * 1000,
                limit: 10,
                exclude: Vec::new(),
            })
            .await
            .unwrap()
            .unwrap();
        assert!(due.is_empty(), "a disabled channel sends nothing");
        set_state(&bridge, ChannelState::Running).await;
        assert_eq!(settle(&bridge, &h).await, ["d1"]);
        let due = bridge
            .send(TakeDueReplies {
                now_ms: NOW * 1000,
                limit: 10,
                exclude: Vec::new(),
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(due.len(), 1);
        let sent = bridge
            .send(RecordDelivery {
                id: due[0].id,
                attempt: due[0].attempts,
                result: super::super::outbox::AttemptResult::Sent,
                parts_accepted: 1,
                provider_ids: Vec::new(),
                now_ms: NOW * 1000,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sent.state, super::super::outbox::OutboxState::Sent);
    }

    #[test]
    fn state_lists_and_unprocessed_messages_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("timeline.db");
        // First process: its runtime (and every actor holding the store) is gone afterwards.
        System::new().block_on(async {
            let h = harness(StoreDb::open(&path).unwrap());
            let bridge = h.start(UnknownSenders::Deny);
            set_state(&bridge, ChannelState::Quarantined).await;
            bridge
                .send(BlockSender {
                    sender: format!("+{FRIEND}"),
                })
                .await
                .unwrap()
                .unwrap();
            bridge
                .send(AllowSender {
                    sender: "4915177777777".into(),
                })
                .await
                .unwrap()
                .unwrap();
            assert!(matches!(
                accept(&bridge, "r1", OWNER).await,
                InboundOutcome::Accepted { held: true, .. }
            ));
            assert_eq!(
                accept(&bridge, "r2", FRIEND).await,
                InboundOutcome::Dropped {
                    reason: "denylisted".into()
                }
            );
            // A fresh instance over the same store (what the supervisor does after a crash).
            let again = h.start(UnknownSenders::Deny);
            let info = again.send(GetChannelInfo).await.unwrap().unwrap();
            assert_eq!(
                (info.state, info.queue.held),
                (ChannelState::Quarantined, 1)
            );
        });
        // Second process over the reopened store: nothing accepted is lost, nothing doubled.
        System::new().block_on(async {
            let h = harness(StoreDb::open(&path).unwrap());
            let bridge = h.start(UnknownSenders::Deny);
            let info = bridge.send(GetChannelInfo).await.unwrap().unwrap();
            assert_eq!(info.state, ChannelState::Quarantined);
            assert_eq!(
                accept(&bridge, "r1", OWNER).await,
                InboundOutcome::Duplicate
            );
            assert_eq!(
                accept(&bridge, "r3", FRIEND).await,
                InboundOutcome::Dropped {
                    reason: "denylisted".into()
                }
            );
            assert!(matches!(
                accept(&bridge, "r4", "4915177777777").await,
                InboundOutcome::Accepted { held: true, .. }
            ));
            set_state(&bridge, ChannelState::Running).await;
            assert_eq!(settle(&bridge, &h).await, ["r1", "r4"]);
        });
    }

    /// Messages handed over but not confirmed before a crash are handed over again after it.
    #[test]
    fn claimed_but_unconfirmed_messages_are_handed_on_again_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("timeline.db");
        {
            // A crash between the 200 and the agent's answer: the message is `processing`.
            let db = StoreDb::open(&path).unwrap();
            let inbox = super::super::inbox::Inbox::new(&db).unwrap();
            let entry = super::super::inbox::NewEntry {
                state: super::super::inbox::InboxState::Pending,
                sender_kind: Some(SenderKind::Owner),
                session_key: Some("room:whatsapp:PNID:1".into()),
                reason: None,
            };
            inbox
                .accept("whatsapp", &text_message("k1", OWNER), entry, NOW)
                .unwrap();
            assert!(inbox.claim_next("whatsapp", u64::MAX).unwrap().is_some());
            db.flush_blocking().unwrap();
        }
        System::new().block_on(async {
            let h = harness(StoreDb::open(&path).unwrap());
            let bridge = h.start(UnknownSenders::Deny);
            assert_eq!(settle(&bridge, &h).await, ["k1"]);
            assert_eq!(
                accept(&bridge, "k1", OWNER).await,
                InboundOutcome::Duplicate
            );
            let info = bridge.send(GetChannelInfo).await.unwrap().unwrap();
            assert_eq!(info.queue, super::super::inbox::InboxCounts::default());
        });
    }

    #[actix_rt::test]
    async fn pairing_issues_one_code_and_approval_admits_the_sender() {
        let h = harness(StoreDb::temporary().unwrap());
        let bridge = h.start(UnknownSenders::Pairing);
        let stranger = "4915188888888";
        assert_eq!(
            accept(&bridge, "p1", stranger).await,
            InboundOutcome::Dropped {
                reason: "pairing_required".into()
            }
        );
        assert_eq!(
            accept(&bridge, "p2", stranger).await,
            InboundOutcome::Dropped {
                reason: "pairing_required".into()
            }
        );
        let pending = bridge.send(ListPairing).await.unwrap().unwrap();
        assert_eq!(pending.len(), 1);
        let code = pending[0].code.expose().to_string();
        // The code went to the sender through the outbox, once; it is in no audit record.
        let due = bridge
            .send(TakeDueReplies {
                now_ms: NOW * 1000,
                limit: 10,
                exclude: Vec::new(),
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(due.len(), 1);
        assert!(due[0].message.text.contains(&code));
        assert_eq!(due[0].message.to, stranger);
        assert!(!h
            .audit
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.data.to_string().contains(&code)));

        let wrong = bridge
            .send(ApprovePairing {
                code: "AAAAAAAA".into(),
                actor: "cli".into(),
            })
            .await
            .unwrap();
        assert!(matches!(wrong, Err(ChannelError::Pairing(_))));
        let approved = bridge
            .send(ApprovePairing {
                code,
                actor: "cli".into(),
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(approved, stranger);
        assert!(matches!(
            accept(&bridge, "p3", stranger).await,
            InboundOutcome::Accepted { held: false, .. }
        ));
        assert_eq!(settle(&bridge, &h).await, ["p3"]);
        let kinds: Vec<_> = h.audit.lock().unwrap().iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [AuditKind::PairingRequested, AuditKind::PairingDecided]
        );
        assert!(
            h.signals.lock().unwrap().is_empty(),
            "pairing requests are not incident signals"
        );
    }

    #[actix_rt::test]
    async fn media_is_recorded_but_not_handed_on() {
        let h = harness(StoreDb::temporary().unwrap());
        let bridge = h.start(UnknownSenders::Deny);
        let mut image = text_message("img", OWNER);
        image.kind = MessageKind::Media;
        image.text = None;
        assert!(matches!(
            bridge
                .send(AcceptInbound { message: image })
                .await
                .unwrap()
                .unwrap(),
            InboundOutcome::Accepted { .. }
        ));
        assert!(matches!(
            accept(&bridge, "t", OWNER).await,
            InboundOutcome::Accepted { .. }
        ));
        assert_eq!(settle(&bridge, &h).await, ["t"]);
    }
}

mod bridge_actor_fail_closed {
    use actix::prelude::*;

    use super::super::access::UnknownSenders;
    use super::super::*;
    use super::text_message;
    use crate::audit::{AppendRecord, AuditError, AuditReceipt};
    use crate::store::StoreDb;

    struct DeadAudit;
    impl Actor for DeadAudit {
        type Context = Context<Self>;
    }
    impl Handler<AppendRecord> for DeadAudit {
        type Result = Result<AuditReceipt, AuditError>;
        fn handle(&mut self, _: AppendRecord, _: &mut Context<Self>) -> Self::Result {
            Err(AuditError::Unavailable)
        }
    }
    struct NoAgent;
    impl Actor for NoAgent {
        type Context = Context<Self>;
    }
    impl Handler<DeliverToAgent> for NoAgent {
        type Result = Result<(), DeliveryRefused>;
        fn handle(&mut self, _: DeliverToAgent, _: &mut Context<Self>) -> Self::Result {
            Ok(())
        }
    }

    #[actix_rt::test]
    async fn a_drop_that_cannot_be_audited_is_not_acknowledged_nor_stored() {
        let db = StoreDb::temporary().unwrap();
        let links = ChannelLinks {
            agent: NoAgent.start().recipient(),
            audit: DeadAudit.start().recipient(),
            unknown_senders: None,
            drain: Default::default(),
            media: None,
        };
        for unknown in [UnknownSenders::Deny, UnknownSenders::Pairing] {
            let config = ChannelConfig {
                name: format!("wa-{unknown:?}"),
                kind: ChannelKind::Whatsapp,
                account: "PNID".into(),
                policy: super::super::access::ChannelPolicy {
                    unknown_senders: unknown,
                    ..Default::default()
                },
                pairing: Default::default(),
                backoff: Default::default(),
                resend_after: std::time::Duration::from_secs(30),
                messages: Default::default(),
                backlog: Default::default(),
            };
            let bridge = ChannelBridge::with_clock(config, &db, links.clone(), || 1_700_000_000)
                .unwrap()
                .start();
            for _ in 0..2 {
                let answer = bridge
                    .send(AcceptInbound {
                        message: text_message("x1", "4915199"),
                    })
                    .await
                    .unwrap();
                assert!(matches!(answer, Err(ChannelError::Audit(_))), "{answer:?}");
            }
            assert!(
                bridge.send(ListPairing).await.unwrap().unwrap().is_empty(),
                "no code left behind"
            );
            let due = bridge
                .send(TakeDueReplies {
                    now_ms: i64::MAX / 2,
                    limit: 10,
                    exclude: Vec::new(),
                })
                .await
                .unwrap()
                .unwrap();
            assert!(due.is_empty());
        }
    }
}
