//! The control socket's request parser (`kafclaw::control::parse_request`).
//!
//! Properties: an accepted operation, serialised and parsed again, is the same operation
//! (its JSON form is a fixed point); a refused line gets one `{"status":"error",
//! "code":"usage"}` answer whose message is one line and never repeats the secret value the
//! line carried.
#![no_main]

use arbitrary::Arbitrary;
use kafclaw::control::parse_request;
use kafclaw::ops::Operation;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const OPS: [&str; 8] = [
    "secret_set",
    "secret_list",
    "secret_rm",
    "token_create",
    "token_revoke",
    "approval_decide",
    "status",
    "lockdown",
];

#[derive(Arbitrary, Debug)]
enum Input<'a> {
    Raw(&'a [u8]),
    Shaped {
        op: u8,
        fields: Vec<(&'a str, &'a str)>,
        secret: &'a str,
        newline: bool,
    },
}

fn structured(input: Input<'_>) {
    let (line, secret) = match input {
        Input::Raw(raw) => (raw.to_vec(), None),
        Input::Shaped {
            op,
            fields,
            secret,
            newline,
        } => {
            let mut object = serde_json::Map::new();
            let op = OPS[usize::from(op) % OPS.len()];
            object.insert("op".into(), Value::from(op));
            for (k, v) in fields.into_iter().take(6) {
                let value = serde_json::from_str(v).unwrap_or_else(|_| Value::from(v));
                object.insert(k.into(), value);
            }
            let secret = format!("fz-secret-{secret}");
            object.insert("value".into(), Value::from(secret.as_str()));
            let mut line = serde_json::to_vec(&object).unwrap();
            if newline {
                line.push(b'\n');
            }
            // Only `secret_set` carries a secret in `value`.
            (line, (op == "secret_set").then_some(secret))
        }
    };
    match parse_request(&line) {
        Ok(op) => {
            let first = serde_json::to_value(&op).expect("an operation serialises");
            let again: Operation = serde_json::from_value(first.clone()).expect("parses back");
            assert_eq!(serde_json::to_value(&again).unwrap(), first);
        }
        Err(answer) => {
            assert_eq!(answer["status"], "error");
            assert_eq!(answer["code"], "usage");
            let message = answer["error"].as_str().expect("an error message");
            assert!(!message.contains('\n'), "{message:?}");
            if let Some(secret) = secret {
                let text = String::from_utf8_lossy(&line);
                // Only meaningful when nothing else in the line carries those bytes.
                if text.matches(secret.as_str()).count() == 1 {
                    assert!(!message.contains(&secret), "{message:?} repeats the secret");
                }
            }
        }
    }
}

/// Raw mode: the bytes are one request line.
fn raw(bytes: &[u8]) {
    structured(Input::Raw(bytes));
}

fuzz_target!(|data: &[u8]| kafclaw_fuzz::two_modes(data, raw, structured));
