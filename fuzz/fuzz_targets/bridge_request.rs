//! The bridge edge: the signature/timestamp check, the replay cache and the body parser.
//!
//! Properties: a body signed with the secret inside the replay window verifies once and is
//! refused as a replay after; an arbitrary pair of headers verifies only when the timestamp is
//! unix seconds inside the window and the signature is `v1=` + the MAC over
//! `timestamp.body` (never twice); a parsed message carries clean ids, text within the bound
//! and the verified timestamp, and parsing is deterministic.
#![no_main]

use arbitrary::Arbitrary;
use hmac::{KeyInit, Mac};
use kafclaw_actors::channel::bridge::{
    parse_bridge_message, sign_bridge, verify_bridge, BridgeAuthError, ReplayCache,
    REPLAY_WINDOW_SECONDS,
};
use kafclaw_actors::channel::MAX_TEXT_BYTES;
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_800_000_000;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    secret: &'a [u8],
    skew: i16,
    timestamp: Option<&'a str>,
    signature: Option<&'a str>,
    body: &'a [u8],
}

fn clean_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 256 && !id.chars().any(char::is_control)
}

fn structured(input: Input<'_>) {
    let Input {
        secret,
        skew,
        timestamp,
        signature,
        body,
    } = input;
    let mut cache = ReplayCache::default();
    if secret.is_empty() {
        assert_eq!(
            verify_bridge(secret, timestamp, signature, body, NOW, &mut cache),
            Err(BridgeAuthError::NotConfigured)
        );
        return;
    }
    // Signed by us at NOW + skew: accepted iff inside the window, and only once.
    let ts = NOW + i64::from(skew);
    let signed = sign_bridge(secret, ts, body);
    let ts_text = ts.to_string();
    let first = verify_bridge(secret, Some(&ts_text), Some(&signed), body, NOW, &mut cache);
    let inside = (ts - NOW).abs() <= REPLAY_WINDOW_SECONDS;
    assert_eq!(first.is_ok(), inside, "{first:?}");
    if inside {
        let again = verify_bridge(secret, Some(&ts_text), Some(&signed), body, NOW, &mut cache);
        assert_eq!(again, Err(BridgeAuthError::Replayed));
    }
    // Arbitrary headers.
    let mut cache = ReplayCache::default();
    let accepted = verify_bridge(secret, timestamp, signature, body, NOW, &mut cache).is_ok();
    let expected = match (timestamp, signature) {
        (Some(t), Some(s))
            if !t.is_empty() && t.len() <= 12 && t.bytes().all(|b| b.is_ascii_digit()) =>
        {
            let value: i64 = t.parse().unwrap();
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
            mac.update(t.as_bytes());
            mac.update(b".");
            mac.update(body);
            let right = hex::encode(mac.finalize().into_bytes());
            (value - NOW).abs() <= REPLAY_WINDOW_SECONDS
                && s.trim()
                    .strip_prefix("v1=")
                    .is_some_and(|hex| hex.eq_ignore_ascii_case(&right))
        }
        _ => false,
    };
    assert_eq!(accepted, expected, "{timestamp:?} {signature:?}");
    if accepted {
        assert_eq!(
            verify_bridge(secret, timestamp, signature, body, NOW, &mut cache),
            Err(BridgeAuthError::Replayed)
        );
    }
    let parsed = parse_bridge_message(body, ts);
    if let Ok(message) = &parsed {
        assert!(clean_id(&message.message_id));
        assert!(clean_id(&message.sender_id));
        assert!(clean_id(&message.chat_id));
        assert!(message.thread_id.as_deref().is_none_or(clean_id));
        assert!(message.reply_to.as_deref().is_none_or(clean_id));
        assert!(message
            .text
            .as_ref()
            .is_some_and(|t| t.len() <= MAX_TEXT_BYTES));
        assert_eq!(message.timestamp, ts);
    }
    assert_eq!(parse_bridge_message(body, ts).ok(), parsed.ok());
}

/// Raw mode: the bytes are a bridge body, signed with a fixed secret at `NOW`.
fn raw(body: &[u8]) {
    let secret = b"fuzz-bridge-secret";
    let signature = sign_bridge(secret, NOW, body);
    let timestamp = NOW.to_string();
    structured(Input {
        secret,
        skew: 0,
        timestamp: Some(&timestamp),
        signature: Some(&signature),
        body,
    });
}

fuzz_target!(|data: &[u8]| kafclaw_fuzz::two_modes(data, raw, structured));
