//! Audit log tests: real segment files in temporary directories, no mocks.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::{json, Value};

use super::record::Chain;
use super::segment::{list_segments, segment_name};
use super::*;
use crate::fsutil;
use crate::supervisor::{Ping, Pong};

fn key() -> AuditKey {
    AuditKey::from_bytes([7u8; 32])
}

fn other_key() -> AuditKey {
    AuditKey::from_bytes([8u8; 32])
}

fn audit_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    (tmp, dir)
}

fn open(dir: &Path) -> AuditLog {
    AuditLog::open(dir, key(), &AuditSettings::default()).unwrap()
}

fn open_small(dir: &Path, segment_max_bytes: u64) -> AuditLog {
    AuditLog::open(dir, key(), &AuditSettings { segment_max_bytes }).unwrap()
}

/// A log with records 1..=n in one segment.
fn log_with(n: u64) -> (tempfile::TempDir, PathBuf) {
    let (tmp, dir) = audit_dir();
    let mut log = open(&dir);
    for i in 1..=n {
        log.append(
            AuditKind::ToolExecuted,
            "owner",
            "exec",
            &json!({"i": i, "argv": ["ls", "-l"]}),
        )
        .unwrap();
    }
    (tmp, dir)
}

fn segment(dir: &Path, index: u64) -> PathBuf {
    dir.join(segment_name(index))
}

/// Rewrites the lines of segment 1 (each without its newline).
fn edit_lines(dir: &Path, edit: impl FnOnce(&mut Vec<String>)) {
    let path = segment(dir, 1);
    let text = fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    edit(&mut lines);
    let mut out = lines.join("\n");
    out.push('\n');
    fs::write(&path, out).unwrap();
}

fn check(dir: &Path) -> Result<VerifyReport, VerifyError> {
    verify(dir, &key(), None)
}

fn seqs(dir: &Path) -> Vec<u64> {
    let mut out = Vec::new();
    for (_, path) in list_segments(dir).unwrap() {
        for line in fs::read_to_string(path).unwrap().lines() {
            let value: Value = serde_json::from_str(line).unwrap();
            out.push(value["seq"].as_u64().unwrap());
        }
    }
    out
}

/// Polls `condition` until it holds or `limit` passes.
async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    condition()
}

#[test]
fn round_trip_appends_and_verifies() {
    let (_tmp, dir) = audit_dir();
    let mut log = open(&dir);
    assert_eq!(
        log.head(),
        AuditHead {
            seq: 0,
            hash: GENESIS_PREV.to_string()
        }
    );
    let first = log
        .append(
            AuditKind::GatewayStarted,
            "system",
            "gateway",
            &json!({"z": 1, "a": {"y": [true, null, 1.5], "b": "é\n\"/"}}),
        )
        .unwrap();
    let second = log
        .append(AuditKind::AuthFailed, "10.0.0.9", "/api", &json!(null))
        .unwrap();
    assert_eq!((first.seq, second.seq), (1, 2));
    assert_eq!(log.head().hash, second.hash);

    let text = fs::read_to_string(segment(&dir, 1)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(text.ends_with('\n'));
    let record: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(record["seq"], 1);
    assert_eq!(record["kind"], "gateway.started");
    assert_eq!(record["actor"], "system");
    assert_eq!(record["subject"], "gateway");
    assert_eq!(record["data"]["a"]["b"], "é\n\"/");
    assert_eq!(record["prev"], GENESIS_PREV);
    assert_eq!(record["hash"], first.hash.as_str());
    assert!(crate::clock::parse_rfc3339(record["ts"].as_str().unwrap()).is_some());
    assert!(lines[0].starts_with("{\"seq\":1,\"ts\":\"",));
    assert!(lines[0].contains(r#","kind":"gateway.started","actor":"system","subject":"gateway","data":{"a":{"b":"é\n\"/","y":[true,null,1.5]},"z":1},"prev":""#));
    let second_record: Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(second_record["prev"], first.hash.as_str());

    let report = check(&dir).unwrap();
    assert_eq!(report.records, 2);
    assert_eq!(report.head_seq, 2);
    assert_eq!(report.head_hash, second.hash);
    assert_eq!(report.bytes, text.len() as u64);
}

/// The documented rule reproduces the stored hash two ways: from the record's fields via
/// `serde_json` of a struct in field order, and by splicing the stored line.
#[test]
fn canonical_bytes_are_reproducible_from_the_documented_rule() {
    #[derive(serde::Serialize)]
    struct Unsealed<'a> {
        seq: u64,
        ts: &'a str,
        kind: &'a str,
        actor: &'a str,
        subject: &'a str,
        data: &'a Value,
        prev: &'a str,
    }
    let (_tmp, dir) = log_with(3);
    let text = fs::read_to_string(segment(&dir, 1)).unwrap();
    for line in text.lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        // `serde_json::Value` objects keep keys sorted (no `preserve_order` here), which is
        // exactly the canonical order of `data`.
        let unsealed = Unsealed {
            seq: record["seq"].as_u64().unwrap(),
            ts: record["ts"].as_str().unwrap(),
            kind: record["kind"].as_str().unwrap(),
            actor: record["actor"].as_str().unwrap(),
            subject: record["subject"].as_str().unwrap(),
            data: &record["data"],
            prev: record["prev"].as_str().unwrap(),
        };
        let canonical = serde_json::to_vec(&unsealed).unwrap();
        let from_fields = blake3::keyed_hash(&[7u8; 32], &canonical);
        assert_eq!(
            from_fields.to_hex().as_str(),
            record["hash"].as_str().unwrap()
        );

        let spliced = format!("{}}}", &line[..line.len() - 75]);
        assert_eq!(spliced.as_bytes(), canonical.as_slice());
    }
}

#[test]
fn edited_field_is_a_hash_mismatch() {
    let (_tmp, dir) = log_with(10);
    edit_lines(&dir, |lines| {
        lines[4] = lines[4].replace("\"actor\":\"owner\"", "\"actor\":\"intruder\"");
    });
    assert_eq!(check(&dir), Err(VerifyError::HashMismatch { seq: 5 }));
}

#[test]
fn edited_data_is_a_hash_mismatch() {
    let (_tmp, dir) = log_with(10);
    edit_lines(&dir, |lines| {
        lines[6] = lines[6].replace("\"-l\"", "\"-la\"");
    });
    assert_eq!(check(&dir), Err(VerifyError::HashMismatch { seq: 7 }));
}

#[test]
fn deleted_record_is_reported_missing() {
    let (_tmp, dir) = log_with(10);
    edit_lines(&dir, |lines| {
        lines.remove(4);
    });
    assert_eq!(check(&dir), Err(VerifyError::Missing { seq: 5, found: 6 }));
}

#[test]
fn reordered_record_is_reported() {
    let (_tmp, dir) = log_with(10);
    edit_lines(&dir, |lines| lines.swap(4, 5));
    assert_eq!(check(&dir), Err(VerifyError::Reordered { seq: 5 }));

    let (_tmp, dir) = log_with(10);
    edit_lines(&dir, |lines| {
        let moved = lines.remove(2);
        lines.push(moved);
    });
    assert_eq!(check(&dir), Err(VerifyError::Reordered { seq: 3 }));
}

#[test]
fn duplicated_record_is_reported() {
    let (_tmp, dir) = log_with(5);
    edit_lines(&dir, |lines| {
        let copy = lines[1].clone();
        lines.push(copy);
    });
    assert_eq!(check(&dir), Err(VerifyError::Reordered { seq: 2 }));
}

#[test]
fn edited_prev_breaks_the_chain() {
    let (_tmp, dir) = log_with(10);
    edit_lines(&dir, |lines| {
        let record: Value = serde_json::from_str(&lines[7]).unwrap();
        let prev = record["prev"].as_str().unwrap().to_string();
        lines[7] = lines[7].replace(&prev, &"ab".repeat(32));
    });
    assert_eq!(check(&dir), Err(VerifyError::ChainBroken { seq: 8 }));
}

#[test]
fn forged_record_without_the_key_is_a_hash_mismatch() {
    let (_tmp, dir) = log_with(10);
    let head = check(&dir).unwrap();
    // A forger who knows the format and the head, but not the key.
    let mut prev = [0u8; 32];
    hex::decode_to_slice(&head.head_hash, &mut prev).unwrap();
    let mut forger = Chain::new(other_key(), head.head_seq, prev);
    let mut line = Vec::new();
    forger
        .seal(
            "2026-01-01T00:00:00Z",
            AuditKind::TokenCreated,
            "owner",
            "backdoor",
            &json!({}),
            &mut line,
        )
        .unwrap();
    let mut file = fsutil::open_private_append(&segment(&dir, 1)).unwrap();
    file.write_all(&line).unwrap();
    assert_eq!(check(&dir), Err(VerifyError::HashMismatch { seq: 11 }));
}

#[test]
fn wrong_key_fails_verify_and_open() {
    let (_tmp, dir) = log_with(3);
    assert_eq!(
        verify(&dir, &other_key(), None),
        Err(VerifyError::HashMismatch { seq: 1 })
    );
    let opened = AuditLog::open(&dir, other_key(), &AuditSettings::default());
    assert!(matches!(opened, Err(AuditError::KeyMismatch { seq: 3 })));
}

#[test]
fn truncated_tail_is_reported_truncated() {
    let (_tmp, dir) = log_with(10);
    let path = segment(&dir, 1);
    let len = fs::metadata(&path).unwrap().len();
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len - 40).unwrap();
    assert_eq!(check(&dir), Err(VerifyError::Truncated { after_seq: 9 }));
}

#[test]
fn malformed_line_is_reported_after_the_last_good_record() {
    let (_tmp, dir) = log_with(4);
    edit_lines(&dir, |lines| {
        lines[2] = "{\"seq\":3,\"nonsense\":true}".to_string()
    });
    assert!(matches!(
        check(&dir),
        Err(VerifyError::Malformed { after_seq: 2, .. })
    ));
}

#[test]
fn seq_is_gapless_across_rotation_and_reopen() {
    let (_tmp, dir) = audit_dir();
    {
        let mut log = open_small(&dir, 700);
        for i in 0..20 {
            log.append(
                AuditKind::ConfigWarning,
                "system",
                "config",
                &json!({ "i": i }),
            )
            .unwrap();
        }
    }
    {
        let mut log = open_small(&dir, 700);
        assert_eq!(log.head().seq, 20);
        for i in 0..20 {
            let receipt = log
                .append(
                    AuditKind::ConfigWarning,
                    "system",
                    "config",
                    &json!({ "i": i }),
                )
                .unwrap();
            assert_eq!(receipt.seq, 21 + i);
        }
    }
    let segments = list_segments(&dir).unwrap();
    assert!(
        segments.len() > 5,
        "tiny segments rotate: {}",
        segments.len()
    );
    let indexes: Vec<u64> = segments.iter().map(|(i, _)| *i).collect();
    assert_eq!(indexes, (1..=segments.len() as u64).collect::<Vec<_>>());
    assert_eq!(seqs(&dir), (1..=40).collect::<Vec<_>>());
    let report = check(&dir).unwrap();
    assert_eq!((report.records, report.head_seq), (40, 40));
}

#[test]
fn removed_middle_segment_is_reported() {
    let (_tmp, dir) = audit_dir();
    let mut log = open_small(&dir, 600);
    for i in 0..12 {
        log.append(
            AuditKind::ConfigWarning,
            "system",
            "config",
            &json!({ "i": i }),
        )
        .unwrap();
    }
    let segments = list_segments(&dir).unwrap();
    assert!(segments.len() >= 3);
    let last_of_first = fs::read_to_string(&segments[0].1).unwrap().lines().count() as u64;
    fs::remove_file(&segments[1].1).unwrap();
    assert_eq!(
        check(&dir),
        Err(VerifyError::SegmentMissing {
            name: "audit-000002.jsonl".to_string(),
            after_seq: last_of_first,
        })
    );
}

#[test]
fn removed_first_segment_is_reported() {
    let (_tmp, dir) = audit_dir();
    let mut log = open_small(&dir, 600);
    for i in 0..8 {
        log.append(
            AuditKind::ConfigWarning,
            "system",
            "config",
            &json!({ "i": i }),
        )
        .unwrap();
    }
    fs::remove_file(segment(&dir, 1)).unwrap();
    assert_eq!(
        check(&dir),
        Err(VerifyError::SegmentMissing {
            name: "audit-000001.jsonl".to_string(),
            after_seq: 0,
        })
    );
}

#[test]
fn from_verifies_the_rest_of_the_chain() {
    let (_tmp, dir) = audit_dir();
    let mut log = open_small(&dir, 600);
    for i in 0..30 {
        log.append(
            AuditKind::ConfigWarning,
            "system",
            "config",
            &json!({ "i": i }),
        )
        .unwrap();
    }
    let full = check(&dir).unwrap();
    let tail = verify(&dir, &key(), Some(17)).unwrap();
    assert_eq!(tail.records, 14);
    assert_eq!((tail.head_seq, &tail.head_hash), (30, &full.head_hash));
    assert_eq!(verify(&dir, &key(), Some(1)).unwrap(), full);

    // Segments before the start may be gone (retention); the rest still verifies.
    let first_segment_records = fs::read_to_string(segment(&dir, 1))
        .unwrap()
        .lines()
        .count();
    fs::remove_file(segment(&dir, 1)).unwrap();
    assert!(verify(&dir, &key(), Some(first_segment_records as u64 + 1)).is_ok());
    assert_eq!(
        verify(&dir, &key(), Some(31)),
        Err(VerifyError::FromNotFound {
            from: 31,
            head_seq: 30
        })
    );
}

#[test]
fn torn_tail_refuses_append_and_repair_fixes_it() {
    let (_tmp, dir) = log_with(5);
    let path = segment(&dir, 1);
    let mut file = fsutil::open_private_append(&path).unwrap();
    let torn: &[u8] = b"{\"seq\":6,\"ts\":\"2026-";
    file.write_all(torn).unwrap();
    drop(file);

    assert_eq!(check(&dir), Err(VerifyError::Truncated { after_seq: 5 }));
    let refused = AuditLog::open(&dir, key(), &AuditSettings::default());
    match refused {
        Err(error @ AuditError::TornTail { bytes, .. }) if bytes == torn.len() as u64 => {
            assert!(
                error.to_string().contains("kafclaw audit repair"),
                "{error}"
            );
        }
        other => panic!("expected a torn tail, got {other:?}"),
    }
    let refused = AuditChainer::open(&dir, key(), &AuditSettings::default());
    assert!(matches!(refused, Err(AuditError::TornTail { .. })));

    let report = repair(
        &dir,
        &key(),
        &AuditSettings::default(),
        &RepairOptions::default(),
    )
    .unwrap();
    assert_eq!(report.segment.as_deref(), Some("audit-000001.jsonl"));
    assert_eq!(report.bytes_cut, torn.len() as u64);
    assert!(!report.newline_restored);
    assert_eq!(report.record.as_ref().map(|r| r.seq), Some(6));

    let verified = check(&dir).unwrap();
    assert_eq!(verified.head_seq, 6);
    let text = fs::read_to_string(&path).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["kind"], "audit.repaired");
    assert_eq!(last["data"]["bytes_cut"], torn.len() as u64);

    // Nothing left to repair: nothing changes.
    let again = repair(
        &dir,
        &key(),
        &AuditSettings::default(),
        &RepairOptions::default(),
    )
    .unwrap();
    assert_eq!(again.segment, None);
    assert_eq!(check(&dir).unwrap(), verified);
    let mut log = open(&dir);
    assert_eq!(
        log.append(AuditKind::GatewayStarted, "system", "gateway", &json!({}))
            .unwrap()
            .seq,
        7
    );
}

/// A process killed mid-write: complete records, then part of the next one's line.
#[test]
fn kill_during_appends_is_truncated_then_repaired() {
    let (_tmp, dir) = log_with(3);
    let head = check(&dir).unwrap();
    let mut prev = [0u8; 32];
    hex::decode_to_slice(&head.head_hash, &mut prev).unwrap();
    // What the killed writer had produced: records 4 and 5 of a batch.
    let mut chain = Chain::new(key(), head.head_seq, prev);
    let mut batch = Vec::new();
    for subject in ["a", "b"] {
        chain
            .seal(
                "2026-01-01T00:00:00Z",
                AuditKind::ToolDecided,
                "owner",
                subject,
                &json!({"decision": "allow"}),
                &mut batch,
            )
            .unwrap();
    }
    let first_line_len = batch.iter().position(|&b| b == b'\n').unwrap() + 1;
    let cut = first_line_len + 30;
    let mut file = fsutil::open_private_append(&segment(&dir, 1)).unwrap();
    file.write_all(&batch[..cut]).unwrap();
    drop(file);

    assert_eq!(check(&dir), Err(VerifyError::Truncated { after_seq: 4 }));
    let report = repair(
        &dir,
        &key(),
        &AuditSettings::default(),
        &RepairOptions::default(),
    )
    .unwrap();
    assert_eq!(report.bytes_cut, 30);
    assert_eq!(report.record.map(|r| r.seq), Some(5));
    let verified = check(&dir).unwrap();
    assert_eq!((verified.records, verified.head_seq), (5, 5));
}

#[test]
fn torn_line_that_is_a_whole_record_gets_its_newline_back() {
    let (_tmp, dir) = log_with(2);
    let path = segment(&dir, 1);
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    assert_eq!(check(&dir), Err(VerifyError::Truncated { after_seq: 1 }));
    let report = repair(
        &dir,
        &key(),
        &AuditSettings::default(),
        &RepairOptions::default(),
    )
    .unwrap();
    assert!(report.newline_restored);
    assert_eq!(report.bytes_cut, 0);
    assert_eq!(report.record.map(|r| r.seq), Some(3));
    assert_eq!(check(&dir).unwrap().head_seq, 3);
}

#[test]
fn files_and_dir_are_private() {
    let (_tmp, dir) = audit_dir();
    let mut log = open_small(&dir, 300);
    for _ in 0..5 {
        log.append(
            AuditKind::SecretChanged,
            "cli",
            "providers.openai.api_key",
            &json!({}),
        )
        .unwrap();
    }
    assert_eq!(fsutil::mode_of(&dir).unwrap(), 0o700);
    let segments = list_segments(&dir).unwrap();
    assert!(segments.len() > 1);
    for (_, path) in segments {
        assert_eq!(fsutil::mode_of(&path).unwrap(), 0o600, "{}", path.display());
    }
}

#[test]
fn key_debug_is_opaque() {
    assert_eq!(format!("{:?}", key()), "AuditKey(..)");
}

#[test]
fn settings_default_and_deserialize() {
    assert_eq!(AuditSettings::default().segment_max_bytes, 64 * 1024 * 1024);
    let parsed: AuditSettings = serde_json::from_str("{}").unwrap();
    assert_eq!(parsed, AuditSettings::default());
    let parsed: AuditSettings = serde_json::from_str("{\"segment_max_bytes\": 1024}").unwrap();
    assert_eq!(parsed.segment_max_bytes, 1024);
    assert!(serde_json::from_str::<AuditSettings>("{\"segment_max_byte\": 1}").is_err());
}

#[actix_rt::test]
async fn chainer_answers_with_durable_receipts_and_head() {
    let (_tmp, dir) = audit_dir();
    let addr = AuditChainer::open(&dir, key(), &AuditSettings::default())
        .unwrap()
        .start();
    let empty = addr.send(GetHead).await.unwrap();
    assert_eq!((empty.seq, empty.hash.as_str()), (0, GENESIS_PREV));
    assert!(matches!(addr.send(Ping).await, Ok(Pong)));
    let mut last = None;
    for i in 0..5 {
        let receipt = addr
            .send(AppendRecord {
                kind: AuditKind::ControlApplied,
                actor: "admin".into(),
                subject: "lockdown".into(),
                data: json!({ "i": i }),
            })
            .await
            .unwrap()
            .unwrap();
        // Durable: it is on disk before the answer.
        assert_eq!(seqs(&dir).last(), Some(&receipt.seq));
        last = Some(receipt);
    }
    let last = last.unwrap();
    let head = addr.send(GetHead).await.unwrap();
    assert_eq!((head.seq, head.hash), (last.seq, last.hash.clone()));
    assert_eq!(check(&dir).unwrap().head_hash, last.hash);
}

#[actix_rt::test]
async fn group_commit_under_eight_concurrent_writers() {
    let (_tmp, dir) = audit_dir();
    let addr = AuditChainer::open(&dir, key(), &AuditSettings::default())
        .unwrap()
        .start();
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let addr = addr.clone();
        tasks.push(actix_rt::spawn(async move {
            let mut seqs = Vec::with_capacity(500);
            for i in 0..500 {
                let receipt = addr
                    .send(AppendRecord {
                        kind: AuditKind::ToolExecuted,
                        actor: format!("writer-{writer}"),
                        subject: "exec".into(),
                        data: json!({ "i": i }),
                    })
                    .await
                    .unwrap()
                    .unwrap();
                seqs.push(receipt.seq);
            }
            seqs
        }));
    }
    let mut all = HashSet::new();
    for task in tasks {
        let seqs = task.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one writer's records stay in order"
        );
        for seq in seqs {
            assert!(all.insert(seq), "seq {seq} handed out twice");
        }
    }
    assert_eq!(all, (1..=4000).collect::<HashSet<u64>>());
    let report = check(&dir).unwrap();
    assert_eq!((report.records, report.head_seq), (4000, 4000));
    assert_eq!(seqs(&dir), (1..=4000).collect::<Vec<_>>());
}

#[actix_rt::test]
async fn a_closed_loop_of_eight_writers_fills_each_batch_with_eight_records() {
    let (_tmp, dir) = audit_dir();
    let addr = AuditChainer::open(&dir, key(), &AuditSettings::default())
        .unwrap()
        .start();
    let (writers, each) = (8u64, 200u64);
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let addr = addr.clone();
        tasks.push(actix_rt::spawn(async move {
            for i in 0..each {
                addr.send(AppendRecord {
                    kind: AuditKind::ToolExecuted,
                    actor: format!("writer-{writer}"),
                    subject: "exec".into(),
                    data: json!({ "i": i }),
                })
                .await
                .unwrap()
                .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let batches = addr.send(super::chainer::GetBatches).await.unwrap();
    // Each sender waits for its record before sending the next, so at best every batch holds
    // one record of each writer. Alternating short and long batches would need ~2x this.
    let ideal = writers * each / writers;
    assert!(
        batches <= ideal + ideal / 4,
        "{batches} fsyncs for {} records from {writers} writers (ideal {ideal})",
        writers * each
    );
    assert_eq!(check(&dir).unwrap().records, writers * each);
}

#[actix_rt::test]
async fn chainer_fails_closed_and_stops_on_a_write_error() {
    let (_tmp, dir) = audit_dir();
    fsutil::create_private_dir(&dir).unwrap();
    // Every write to /dev/full fails with "no space left on device".
    std::os::unix::fs::symlink("/dev/full", segment(&dir, 1)).unwrap();
    let addr = AuditChainer::open(&dir, key(), &AuditSettings::default())
        .unwrap()
        .start();
    let appends: Vec<_> = (0..4)
        .map(|i| {
            addr.send(AppendRecord {
                kind: AuditKind::AuthFailed,
                actor: "10.0.0.1".into(),
                subject: "/api".into(),
                data: json!({ "i": i }),
            })
        })
        .collect();
    for append in appends {
        match append.await {
            Ok(Err(AuditError::Write(_))) | Err(MailboxError::Closed) => {}
            other => panic!("a failed write must never be acknowledged: {other:?}"),
        }
    }
    assert!(
        eventually(Duration::from_secs(5), || !addr.connected()).await,
        "the chainer stops so the supervisor restarts it"
    );
}

#[actix_rt::test]
async fn a_refusal_is_answered_once_written_in_chain_order_between_durable_appends() {
    let (_tmp, dir) = audit_dir();
    let addr = AuditChainer::open(&dir, key(), &AuditSettings::default())
        .unwrap()
        .start();
    let record = |kind, i: u64| AppendRecord {
        kind,
        actor: "10.0.0.1".into(),
        subject: "/api/v1/status".into(),
        data: json!({ "i": i }),
    };
    let mut answered = Vec::new();
    for i in 0..6u64 {
        let receipt = if i % 2 == 0 {
            addr.send(AppendWritten(record(AuditKind::AuthFailed, i)))
                .await
        } else {
            addr.send(record(AuditKind::ControlApplied, i)).await
        }
        .unwrap()
        .unwrap();
        // Written (readable by `kafclaw audit` and tests) when answered, in seq order.
        assert_eq!(seqs(&dir).last(), Some(&receipt.seq));
        answered.push(receipt.seq);
    }
    assert_eq!(answered, (1..=6).collect::<Vec<_>>());
    // Many refusals at once share batches with durable appends; the chain stays whole.
    let refusals: Vec<_> = (0..50)
        .map(|i| addr.send(AppendWritten(record(AuditKind::AuthFailed, 100 + i))))
        .collect();
    let durable = addr.send(record(AuditKind::ControlApplied, 999));
    for refusal in refusals {
        refusal.await.unwrap().unwrap();
    }
    let last = durable.await.unwrap().unwrap();
    assert_eq!(last.seq, 57);
    let head = addr.send(GetHead).await.unwrap();
    assert_eq!(
        head.seq, 57,
        "the durable head covers the refusals before it"
    );
    let report = check(&dir).unwrap();
    assert_eq!((report.records, report.head_seq), (57, 57));
}

#[actix_rt::test]
async fn a_refusal_is_never_acknowledged_when_its_write_fails() {
    let (_tmp, dir) = audit_dir();
    fsutil::create_private_dir(&dir).unwrap();
    std::os::unix::fs::symlink("/dev/full", segment(&dir, 1)).unwrap();
    let addr = AuditChainer::open(&dir, key(), &AuditSettings::default())
        .unwrap()
        .start();
    let refused = addr
        .send(AppendWritten(AppendRecord {
            kind: AuditKind::AuthFailed,
            actor: "10.0.0.1".into(),
            subject: "/api".into(),
            data: json!({}),
        }))
        .await;
    assert!(
        matches!(
            refused,
            Ok(Err(AuditError::Write(_))) | Err(MailboxError::Closed)
        ),
        "{refused:?}"
    );
}

/// Writes records 1..=n straight into segment 1 (no fsync per record), for big logs.
fn write_chain(dir: &Path, n: u64) {
    fsutil::create_private_dir(dir).unwrap();
    let mut chain = Chain::new(key(), 0, [0u8; 32]);
    let mut bytes = Vec::new();
    for i in 0..n {
        chain
            .seal(
                "2026-01-01T00:00:00Z",
                AuditKind::ToolDecided,
                "owner",
                "exec",
                &json!({ "i": i }),
                &mut bytes,
            )
            .unwrap();
    }
    fsutil::create_private_new(&segment(dir, 1))
        .unwrap()
        .write_all(&bytes)
        .unwrap();
}

/// Big chunks have their hashes checked on several threads; the first problem in line order
/// must still be the one reported.
#[test]
fn first_problem_wins_in_chunks_checked_in_parallel() {
    let (_tmp, dir) = audit_dir();
    write_chain(&dir, 5000);
    assert_eq!(check(&dir).unwrap().records, 5000);

    edit_lines(&dir, |lines| {
        lines[4499] = lines[4499].replace("\"owner\"", "\"0wner\"");
    });
    assert_eq!(check(&dir), Err(VerifyError::HashMismatch { seq: 4500 }));

    // An altered record early on is reported before a later gap, and vice versa.
    edit_lines(&dir, |lines| {
        lines[99] = lines[99].replace("\"owner\"", "\"0wner\"");
        lines.remove(3000);
    });
    assert_eq!(check(&dir), Err(VerifyError::HashMismatch { seq: 100 }));
    let (_tmp, dir) = audit_dir();
    write_chain(&dir, 5000);
    edit_lines(&dir, |lines| {
        lines.remove(99);
        lines[3000] = lines[3000].replace("\"owner\"", "\"0wner\"");
    });
    assert_eq!(
        check(&dir),
        Err(VerifyError::Missing {
            seq: 100,
            found: 101
        })
    );
}

#[test]
fn hex_digits_decode_only_in_lowercase() {
    use super::record::decode_hex32;
    let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
    let digits = hex::encode(bytes);
    assert_eq!(decode_hex32(digits.as_bytes()), Some(bytes));
    assert_eq!(decode_hex32(digits.to_uppercase().as_bytes()), None);
    assert_eq!(decode_hex32(&digits.as_bytes()[..62]), None);
    let mut bad = digits.into_bytes();
    bad[17] = b'g';
    assert_eq!(decode_hex32(&bad), None);
}
