//! The audit chain head is recorded apart from the segments (in the store with every group
//! commit, and in `~/.kafclaw/audit.head` at a clean stop): records cut from the end of the
//! log are reported by `audit verify` (exit 1), and neither `audit repair` nor a start
//! silently accepts the shorter chain.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{client, run, Gateway, Options};

/// Runs a gateway with small segments, makes it write a few dozen records, stops it cleanly.
async fn a_home_with_several_segments() -> tempfile::TempDir {
    let mut gw = Gateway::start(
        Options::default()
            .token()
            .env("KAFCLAW_AUDIT_SEGMENT_MAX_BYTES", "4096")
            .env("KAFCLAW_SECURITY_AUTH_LOCKOUT_MAX_FAILURES", "1000")
            .env("KAFCLAW_INCIDENTS_AUTH_FAILURES_PER_IP", "1000")
            .env("KAFCLAW_INCIDENTS_AUTH_FAILURES_GLOBAL", "1000"),
    );
    for _ in 0..40 {
        let status = client()
            .get(gw.url("/api/v1/timeline"))
            .header("Authorization", "Bearer not-the-token")
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401);
    }
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)).code(), Some(0));
    let home = std::mem::replace(&mut gw.home, tempfile::tempdir().unwrap());
    assert!(
        segments(home.path()).len() >= 3,
        "{:?}",
        segments(home.path())
    );
    home
}

fn segments(home: &Path) -> Vec<PathBuf> {
    let mut list: Vec<PathBuf> = std::fs::read_dir(home.join(".kafclaw/audit"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    list.sort();
    list
}

/// A copy of a whole home (store, audit log, vault key).
fn copy_home(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    copy_tree(from, to.path());
    to
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn seq_of(line: &str) -> u64 {
    serde_json::from_str::<Value>(line).unwrap()["seq"]
        .as_u64()
        .unwrap()
}

/// Rewrites `path` without its last `n` lines (whole records, newline included).
fn drop_last_records(path: &Path, n: usize) {
    let mut kept = lines(path);
    kept.truncate(kept.len() - n);
    let text: String = kept.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// The last seq in every segment but the newest.
fn last_seq_before_newest(home: &Path) -> u64 {
    let all = segments(home);
    seq_of(lines(&all[all.len() - 2]).last().unwrap())
}

fn kafclaw(home: &Path, args: &[&str]) -> (i32, String, String) {
    run(home, &HashMap::new(), args)
}

#[track_caller]
fn assert_missing_after(home: &Path, seq: u64) {
    for args in [
        &["audit", "verify"][..],
        &["audit", "verify", "--from", "2"][..],
    ] {
        let (code, out, err) = kafclaw(home, args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        let expected = format!("records after seq {seq} are missing");
        assert!(
            out.contains(&expected),
            "{args:?}: wanted {expected:?} in {out}{err}"
        );
    }
    let (code, out, _) = kafclaw(home, &["audit", "verify", "--json"]);
    assert_eq!(code, 1);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ok"], false, "{out}");
}

#[tokio::test]
async fn whole_records_cut_from_the_end_are_reported() {
    let original = a_home_with_several_segments().await;
    let (code, out, err) = kafclaw(original.path(), &["audit", "verify"]);
    assert_eq!(code, 0, "a clean run verifies: {out}{err}");
    assert!(out.starts_with("ok "), "{out}");
    let (code, out, _) = kafclaw(original.path(), &["audit", "verify", "--from", "3"]);
    assert_eq!(code, 0, "--from still works: {out}");

    let newest = |home: &Path| segments(home).last().unwrap().clone();
    let head_seq = seq_of(lines(&newest(original.path())).last().unwrap());

    for n in [1, 2] {
        let home = copy_home(original.path());
        drop_last_records(&newest(home.path()), n);
        assert_missing_after(home.path(), head_seq - n as u64);
    }

    let home = copy_home(original.path());
    let before = last_seq_before_newest(home.path());
    std::fs::write(newest(home.path()), "").unwrap();
    assert_missing_after(home.path(), before);

    let home = copy_home(original.path());
    let before = last_seq_before_newest(home.path());
    std::fs::remove_file(newest(home.path())).unwrap();
    assert_missing_after(home.path(), before);

    let home = copy_home(original.path());
    for segment in segments(home.path()) {
        std::fs::remove_file(segment).unwrap();
    }
    assert_missing_after(home.path(), 0);
}

#[tokio::test]
async fn the_head_file_catches_a_cut_tail_when_the_store_is_older() {
    // The store was put back from an older copy: the head written at the clean stop still
    // says how far the chain went.
    let original = a_home_with_several_segments().await;
    let older_store = copy_home(&original.path().join(".kafclaw/timeline.db"));
    let mut gw = Gateway::start_in(copy_home(original.path()), Options::default().token());
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)).code(), Some(0));
    let home = gw.home_path();
    let head_file = home.join(".kafclaw/audit.head");
    let recorded: Value = serde_json::from_str(&std::fs::read_to_string(&head_file).unwrap())
        .expect("a clean stop writes the head file");
    let newest = segments(&home).last().unwrap().clone();
    let seq = recorded["seq"].as_u64().unwrap();
    assert_eq!(seq, seq_of(lines(&newest).last().unwrap()));
    assert_eq!(
        recorded.as_object().unwrap().len(),
        2,
        "seq and hash only: {recorded}"
    );
    let store = home.join(".kafclaw/timeline.db");
    std::fs::remove_dir_all(&store).unwrap();
    std::fs::create_dir_all(&store).unwrap();
    copy_tree(older_store.path(), &store);
    drop_last_records(&newest, 1);
    let (code, out, err) = kafclaw(&home, &["audit", "verify"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!("records after seq {} are missing", seq - 1)),
        "{out}{err}"
    );
}

#[tokio::test]
async fn a_tail_cut_while_the_gateway_runs_is_reported_through_the_control_socket() {
    let mut gw = Gateway::start(Options::default().token());
    for _ in 0..5 {
        client()
            .get(gw.url("/api/v1/timeline"))
            .header("Authorization", "Bearer not-the-token")
            .send()
            .await
            .unwrap();
    }
    let segment = gw.home_path().join(".kafclaw/audit/audit-000001.jsonl");
    let head_seq = seq_of(lines(&segment).last().unwrap());
    let (code, out, err) = kafclaw(&gw.home_path(), &["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    drop_last_records(&segment, 2);
    let (code, out, err) = kafclaw(&gw.home_path(), &["audit", "verify"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!("records after seq {} are missing", head_seq - 2)),
        "{out}{err}"
    );
    gw.signal("TERM");
    gw.wait_exit(Duration::from_secs(10));
}

#[tokio::test]
async fn a_cut_chain_is_not_continued_by_a_start_or_accepted_by_repair() {
    let original = a_home_with_several_segments().await;
    let home = copy_home(original.path());
    let newest = segments(home.path()).last().unwrap().clone();
    let head_seq = seq_of(lines(&newest).last().unwrap());
    drop_last_records(&newest, 2);
    // A torn line after the cut: repair must not treat "cut the torn line" as the whole story.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap();
    file.write_all(b"{\"seq\":").unwrap();
    drop(file);
    let before = std::fs::read(&newest).unwrap();

    let (code, out, err) = kafclaw(
        home.path(),
        &["gateway", "--port", "0", "--dashboard-port", "0"],
    );
    assert_eq!(code, 2, "a start on a cut chain is refused: {out}{err}");
    let (code, out, err) = kafclaw(home.path(), &["audit", "repair"]);
    assert_ne!(code, 0, "{out}{err}");
    let said = format!("{out}{err}");
    assert!(
        said.contains(&format!("records after seq {} are missing", head_seq - 2))
            && said.contains("--accept-missing"),
        "{said}"
    );
    assert_eq!(
        std::fs::read(&newest).unwrap(),
        before,
        "nothing was changed"
    );

    let (code, out, err) = kafclaw(home.path(), &["audit", "repair", "--accept-missing"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = kafclaw(home.path(), &["audit", "verify"]);
    assert_eq!(code, 0, "the accepted cut verifies: {out}{err}");
    let text = lines(segments(home.path()).last().unwrap()).join("\n");
    let repaired: Value = serde_json::from_str(
        text.lines()
            .rev()
            .find(|l| l.contains("\"audit.repaired\""))
            .expect("the acceptance is on the record"),
    )
    .unwrap();
    assert_eq!(
        repaired["data"]["missing_after_seq"],
        head_seq - 2,
        "{repaired}"
    );
    assert_eq!(
        repaired["data"]["recorded_head_seq"], head_seq,
        "{repaired}"
    );
    let gw = Gateway::start_in(home, Options::default().token());
    let (code, out, err) = kafclaw(&gw.home_path(), &["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test]
async fn repair_without_a_cut_needs_no_flag() {
    let original = a_home_with_several_segments().await;
    let home = copy_home(original.path());
    let (code, out, err) = kafclaw(home.path(), &["audit", "repair"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("nothing to repair"), "{out}");
    let (code, out, _) = kafclaw(home.path(), &["audit", "repair", "--accept-missing"]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing to repair"), "{out}");
}
