//! The audit record layout and the chain verifier.
//!
//! Properties: a record sealed with arbitrary fields is one line that parses as JSON back to
//! exactly those fields (parsed-then-serialised equal), whose fixed-place reading gives the
//! seq, prev and hash it was sealed with, and whose hash verifies; a chain of such records
//! verifies, and flipping any one byte of it makes verification fail; arbitrary bytes read as a
//! line only where the layout's fixed places are; arbitrary bytes as a segment never
//! verify as more records than they hold lines.
#![no_main]

use std::fs;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use kafclaw_actors::audit::fuzzing::{read_line, seal_line};
use kafclaw_actors::audit::{verify, AuditKey, AuditKind};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const KINDS: [AuditKind; 4] = [
    AuditKind::AuthFailed,
    AuditKind::ToolExecuted,
    AuditKind::ConfigWarning,
    AuditKind::GatewayStarted,
];

#[derive(Arbitrary, Debug)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn value(&self, depth: usize) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Int(i) => Value::from(*i),
            Json::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Json::Str(s) => Value::String(s.clone()),
            Json::Array(items) if depth < 8 => {
                Value::Array(items.iter().map(|i| i.value(depth + 1)).collect())
            }
            Json::Object(entries) if depth < 8 => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.value(depth + 1)))
                    .collect(),
            ),
            _ => Value::Null,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Record {
    kind: u8,
    ts: String,
    actor: String,
    subject: String,
    data: Json,
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    key: [u8; 32],
    records: Vec<Record>,
    flip: u16,
    raw: &'a [u8],
}

/// JSON equality, floats within one unit in the last place or so: serde_json's default parser
/// (without `float_roundtrip`) may read the shortest printed form of an `f64` one ulp off.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            // serde_json's default parser is approximate in the last bits, and below
            // f64::MIN_POSITIVE (subnormals) it has fewer bits to be exact in.
            x == y
                || (x - y).abs() <= x.abs().max(y.abs()) * 4.0 * f64::EPSILON
                || (x - y).abs() < f64::MIN_POSITIVE
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn dir() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap().keep())
}

fn structured(input: Input<'_>) {
    let key = AuditKey::from_bytes(input.key);
    let mut chain = Vec::new();
    let (mut seq, mut head) = (0u64, [0u8; 32]);
    for record in input.records.iter().take(8) {
        let kind = KINDS[usize::from(record.kind) % KINDS.len()];
        let data = record.data.value(0);
        let line = seal_line(
            &key,
            seq,
            head,
            &record.ts,
            kind,
            &record.actor,
            &record.subject,
            &data,
        )
        .expect("any JSON value seals");
        assert_eq!(line.last(), Some(&b'\n'));
        let body = &line[..line.len() - 1];
        assert!(!body.contains(&b'\n'), "a record is one line");
        // Parsed then serialised: the JSON reading gives back every field.
        let parsed: Value = serde_json::from_slice(body).expect("a record is JSON");
        assert_eq!(parsed["seq"], Value::from(seq + 1));
        assert_eq!(parsed["ts"], Value::from(record.ts.as_str()));
        assert_eq!(parsed["kind"], Value::from(kind.as_str()));
        assert_eq!(parsed["actor"], Value::from(record.actor.as_str()));
        assert_eq!(parsed["subject"], Value::from(record.subject.as_str()));
        assert!(
            same(&parsed["data"], &data),
            "{:?} != {data:?}",
            parsed["data"]
        );
        assert_eq!(parsed["prev"], Value::from(hex::encode(head)));
        // The fixed-place reading agrees with the JSON one.
        let view = read_line(body, &key).expect("a sealed line reads back");
        assert_eq!(view.seq, seq + 1);
        assert_eq!(view.prev, head);
        assert!(view.hash_ok);
        assert_eq!(parsed["hash"], Value::from(hex::encode(view.hash)));
        seq = view.seq;
        head = view.hash;
        chain.extend_from_slice(&line);
    }
    let dir = dir();
    let segment = dir.join("audit-000001.jsonl");
    if !chain.is_empty() {
        fs::write(&segment, &chain).unwrap();
        let report = verify(dir, &key, None).expect("a sealed chain verifies");
        assert_eq!(report.records, seq);
        assert_eq!(report.head_hash, hex::encode(head));
        let mut tampered = chain.clone();
        let at = usize::from(input.flip) % tampered.len();
        tampered[at] ^= 0x01;
        fs::write(&segment, &tampered).unwrap();
        assert!(
            verify(dir, &key, None).is_err(),
            "byte {at} flipped still verifies"
        );
    }
    // Arbitrary bytes: as one line, and as a whole segment.
    if let Ok(view) = read_line(input.raw, &key) {
        // `,"hash":"` + 64 hex digits + `"}` follow the hashed prefix.
        assert_eq!(view.unsealed_len + 9 + 64 + 2, input.raw.len());
        assert!(input.raw.starts_with(b"{\"seq\":"));
        let hash = format!(",\"hash\":\"{}\"}}", hex::encode(view.hash));
        assert!(input.raw.ends_with(hash.as_bytes()));
    }
    fs::write(&segment, input.raw).unwrap();
    if let Ok(report) = verify(dir, &key, None) {
        let lines = input
            .raw
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count() as u64;
        assert!(report.records <= lines);
        assert!(report.bytes <= input.raw.len() as u64);
    }
}

/// Raw mode: the bytes are a stored line and a whole segment, read with an all-zero key.
fn raw(bytes: &[u8]) {
    structured(Input {
        key: [0; 32],
        records: Vec::new(),
        flip: 0,
        raw: bytes,
    });
}

fuzz_target!(|data: &[u8]| kafclaw_fuzz::two_modes(data, raw, structured));
