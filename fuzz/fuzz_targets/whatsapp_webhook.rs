//! The WhatsApp webhook edge: the signature check and the body parser.
//!
//! Properties: a body signed with the secret verifies (either hex case), and an arbitrary
//! header verifies only when it is exactly `sha256=` + the right MAC (either case, surrounding
//! whitespace trimmed); a parsed batch only holds what the parser promises (a digits-only
//! sender, clean ids, text within the bound), and parsing is deterministic.
#![no_main]

use arbitrary::Arbitrary;
use hmac::{KeyInit, Mac};
use kafclaw_actors::channel::whatsapp::{parse_webhook, sign_webhook, verify_signature};
use kafclaw_actors::channel::MAX_TEXT_BYTES;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    secret: &'a [u8],
    header: Option<&'a str>,
    body: &'a [u8],
}

fn clean_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 256 && !id.chars().any(char::is_control)
}

fn structured(input: Input<'_>) {
    let Input {
        secret,
        header,
        body,
    } = input;
    if !secret.is_empty() {
        let signed = sign_webhook(secret, body);
        assert!(verify_signature(secret, body, Some(&signed)).is_ok());
        let upper = format!("sha256={}", signed["sha256=".len()..].to_ascii_uppercase());
        assert!(verify_signature(secret, body, Some(&upper)).is_ok());
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        let right = hex::encode(mac.finalize().into_bytes());
        let accepted = verify_signature(secret, body, header).is_ok();
        let expected = header.is_some_and(|h| {
            h.trim()
                .strip_prefix("sha256=")
                .is_some_and(|hex| hex.eq_ignore_ascii_case(&right))
        });
        assert_eq!(accepted, expected, "header {header:?}");
    } else {
        assert!(verify_signature(secret, body, header).is_err());
    }
    let parsed = parse_webhook(body);
    if let Ok(batch) = &parsed {
        for inbound in &batch.messages {
            let m = &inbound.message;
            assert!(!m.sender_id.is_empty());
            assert!(m.sender_id.bytes().all(|b| b.is_ascii_digit()));
            assert!(clean_id(&m.message_id), "{:?}", m.message_id);
            assert!(m.text.as_ref().is_some_and(|t| t.len() <= MAX_TEXT_BYTES));
            assert!(m.reply_to.as_deref().is_none_or(clean_id));
            assert!(m.timestamp >= 0);
        }
        for status in &batch.statuses {
            assert!(clean_id(&status.message_id));
            assert!(status.status.chars().count() <= 32);
            assert!(status.recipient_id.bytes().all(|b| b.is_ascii_digit()));
        }
    }
    assert_eq!(parse_webhook(body).ok(), parsed.ok());
}

/// Raw mode: the bytes are a webhook body, signed with a fixed secret.
fn raw(body: &[u8]) {
    let secret = b"fuzz-app-secret";
    let header = sign_webhook(secret, body);
    structured(Input {
        secret,
        header: Some(&header),
        body,
    });
}

fuzz_target!(|data: &[u8]| kafclaw_fuzz::two_modes(data, raw, structured));
