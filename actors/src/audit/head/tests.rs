//! The recorded head: written by every commit, compared by open, verify and repair. Real
//! segment files and a real (temporary) store.

use std::fs;
use std::path::{Path, PathBuf};

use actix::prelude::*;
use serde_json::json;

use super::super::segment::{list_segments, segment_name};
use super::super::*;
use super::RecordedHead;
use crate::store::StoreDb;

fn key() -> AuditKey {
    AuditKey::from_bytes([7u8; 32])
}

/// A home-like layout: `audit/`, `audit.head` and a store, all in one temporary directory.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    head_file: PathBuf,
    db: StoreDb,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let head_file = tmp.path().join("audit.head");
        let db = StoreDb::open(&tmp.path().join("timeline.db")).unwrap();
        Self {
            _tmp: tmp,
            dir,
            head_file,
            db,
        }
    }

    fn recorded(&self) -> RecordedHead {
        RecordedHead::new(self.head_file.clone(), Some(&self.db)).unwrap()
    }

    fn file_only(&self) -> RecordedHead {
        RecordedHead::new(self.head_file.clone(), None).unwrap()
    }

    fn open(&self, segment_max_bytes: u64) -> Result<AuditLog, AuditError> {
        AuditLog::open_recorded(
            &self.dir,
            key(),
            &AuditSettings { segment_max_bytes },
            self.recorded(),
        )
    }

    /// Appends `n` records through a recorded log.
    fn append(&self, n: u64, segment_max_bytes: u64) -> AuditHead {
        let mut log = self.open(segment_max_bytes).unwrap();
        for i in 0..n {
            log.append(AuditKind::ToolDecided, "owner", "exec", &json!({"i": i}))
                .unwrap();
        }
        log.head()
    }

    fn verify(&self, from: Option<u64>) -> Result<VerifyReport, VerifyError> {
        let recorded = self.recorded().read().unwrap();
        verify_against(&self.dir, &key(), from, recorded.as_ref())
    }

    fn segments(&self) -> Vec<PathBuf> {
        list_segments(&self.dir)
            .unwrap()
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }

    fn repair(&self, accept_missing: bool) -> Result<RepairReport, AuditError> {
        repair(
            &self.dir,
            &key(),
            &AuditSettings::default(),
            &RepairOptions {
                recorded: Some(self.recorded()),
                accept_missing,
            },
        )
    }
}

fn drop_last_lines(path: &Path, n: usize) {
    let text = fs::read_to_string(path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.truncate(lines.len() - n);
    let kept: String = lines.iter().map(|l| format!("{l}\n")).collect();
    fs::write(path, kept).unwrap();
}

fn last_seq(path: &Path) -> u64 {
    let text = fs::read_to_string(path).unwrap();
    let line = text.lines().last().unwrap();
    serde_json::from_str::<serde_json::Value>(line).unwrap()["seq"]
        .as_u64()
        .unwrap()
}

#[test]
fn every_append_records_the_head_in_the_store() {
    let f = Fixture::new();
    assert_eq!(f.recorded().read().unwrap(), None);
    let head = f.append(5, 64 << 20);
    assert_eq!(f.recorded().read().unwrap(), Some(head.clone()));
    assert_eq!(f.verify(None).unwrap().head_seq, 5);
    assert!(
        !f.head_file.exists(),
        "the file is written at a clean stop only"
    );
    f.recorded().write_file(&head).unwrap();
    assert_eq!(crate::fsutil::mode_of(&f.head_file).unwrap(), 0o600);
    assert_eq!(f.file_only().read().unwrap(), Some(head));
}

#[actix_rt::test]
async fn the_chainer_records_every_batchs_head_before_answering() {
    let f = Fixture::new();
    let chainer =
        AuditChainer::open_recorded(&f.dir, key(), &AuditSettings::default(), f.recorded())
            .unwrap()
            .start();
    for round in 0..3 {
        let sends: Vec<_> = (0..50)
            .map(|i| {
                chainer.send(AppendRecord {
                    kind: AuditKind::AuthFailed,
                    actor: "10.0.0.1".into(),
                    subject: "/x".into(),
                    data: json!({"i": i, "round": round}),
                })
            })
            .collect();
        let mut last = 0;
        for send in sends {
            last = last.max(send.await.unwrap().unwrap().seq);
        }
        // Once the last sender has its receipt, the store already names that record.
        let recorded = f.recorded().read().unwrap().unwrap();
        assert_eq!(recorded.seq, last);
        assert_eq!(recorded, chainer.send(GetHead).await.unwrap());
    }
}

#[test]
fn opening_a_log_cut_short_of_its_recorded_head_is_refused() {
    let f = Fixture::new();
    f.append(6, 64 << 20);
    let segment = f.segments()[0].clone();
    for (cut, after) in [(1, 5), (2, 4), (6, 0)] {
        let kept = fs::read(&segment).unwrap();
        drop_last_lines(&segment, cut);
        match f.open(64 << 20) {
            Err(AuditError::TailMissing {
                after_seq,
                recorded_seq: 6,
            }) => assert_eq!(after_seq, after),
            other => panic!("cut {cut}: expected a missing tail, got {other:?}"),
        }
        let refused =
            AuditChainer::open_recorded(&f.dir, key(), &AuditSettings::default(), f.recorded());
        assert!(matches!(refused, Err(AuditError::TailMissing { .. })));
        fs::write(&segment, kept).unwrap();
    }
    fs::remove_file(&segment).unwrap();
    let error = f.open(64 << 20).err().unwrap();
    assert!(
        error
            .to_string()
            .contains("records after seq 0 are missing")
            && error.to_string().contains("--accept-missing"),
        "{error}"
    );
    // The log alone (a copy without its home) still opens: nothing to compare with.
    assert!(AuditLog::open(&f.dir, key(), &AuditSettings::default()).is_ok());
}

#[test]
fn a_tail_rewritten_to_the_recorded_seq_is_refused() {
    let f = Fixture::new();
    f.append(4, 64 << 20);
    let segment = f.segments()[0].clone();
    // Replace record 4 by another record 4, validly chained and keyed.
    drop_last_lines(&segment, 1);
    let mut log = AuditLog::open(&f.dir, key(), &AuditSettings::default()).unwrap();
    log.append(
        AuditKind::ToolDecided,
        "owner",
        "exec",
        &json!({"forged": true}),
    )
    .unwrap();
    assert!(matches!(
        f.open(64 << 20),
        Err(AuditError::HeadMismatch { seq: 4 })
    ));
    assert_eq!(f.verify(None), Err(VerifyError::HeadMismatch { seq: 4 }));
    assert!(matches!(
        f.repair(false),
        Err(AuditError::HeadMismatch { seq: 4 })
    ));
}

#[test]
fn verify_reports_every_kind_of_cut_tail() {
    let fresh = || {
        let f = Fixture::new();
        f.append(30, 1024);
        assert!(f.segments().len() >= 3, "{:?}", f.segments());
        f
    };
    let f = fresh();
    assert_eq!(f.verify(None).unwrap().head_seq, 30);
    assert_eq!(f.verify(Some(10)).unwrap().head_seq, 30);

    let missing = |after_seq| {
        Err(VerifyError::TailMissing {
            after_seq,
            recorded_seq: 30,
        })
    };
    for n in [1, 2] {
        let f = fresh();
        drop_last_lines(f.segments().last().unwrap(), n);
        assert_eq!(f.verify(None), missing(30 - n as u64));
        assert_eq!(f.verify(Some(3)), missing(30 - n as u64));
    }
    let f = fresh();
    let segments = f.segments();
    let before = last_seq(&segments[segments.len() - 2]);
    fs::write(segments.last().unwrap(), "").unwrap();
    assert_eq!(f.verify(None), missing(before));
    let f = fresh();
    fs::remove_file(f.segments().last().unwrap()).unwrap();
    assert_eq!(f.verify(None), missing(before));
    let f = fresh();
    for segment in f.segments() {
        fs::remove_file(segment).unwrap();
    }
    assert_eq!(f.verify(None), missing(0));
    // `--from` a record the cut took: the cut is what is reported.
    assert_eq!(f.verify(Some(29)), missing(0));
    let message = f.verify(None).unwrap_err().to_string();
    assert!(
        message.starts_with("records after seq 0 are missing"),
        "{message}"
    );
}

#[test]
fn a_recorded_head_that_lags_the_log_still_verifies_but_must_match() {
    let f = Fixture::new();
    f.append(3, 64 << 20);
    let lagging = f.recorded().read().unwrap().unwrap();
    f.append(2, 64 << 20);
    // The store may lag after a crash; the file from an older clean stop does.
    f.file_only().write_file(&lagging).unwrap();
    let lagging_only = f.file_only().read().unwrap();
    assert_eq!(
        verify_against(&f.dir, &key(), None, lagging_only.as_ref())
            .unwrap()
            .head_seq,
        5
    );
    // The later of the two counts.
    assert_eq!(f.recorded().read().unwrap().unwrap().seq, 5);
    let wrong = AuditHead {
        seq: 2,
        hash: "ab".repeat(32),
    };
    assert_eq!(
        verify_against(&f.dir, &key(), None, Some(&wrong)),
        Err(VerifyError::HeadMismatch { seq: 2 })
    );
    let malformed = AuditHead {
        seq: 2,
        hash: "zz".into(),
    };
    assert_eq!(
        verify_against(&f.dir, &key(), None, Some(&malformed)),
        Err(VerifyError::HeadMalformed)
    );
}

#[test]
fn an_unreadable_head_fails_closed() {
    let f = Fixture::new();
    f.append(2, 64 << 20);
    fs::write(&f.head_file, "{not json").unwrap();
    assert!(matches!(
        f.recorded().read(),
        Err(AuditError::HeadUnreadable { .. })
    ));
    assert!(matches!(
        f.open(64 << 20),
        Err(AuditError::HeadUnreadable { .. })
    ));
    fs::write(&f.head_file, r#"{"seq":2,"hash":"short"}"#).unwrap();
    assert!(matches!(
        f.recorded().read(),
        Err(AuditError::HeadUnreadable { .. })
    ));
}

#[test]
fn repair_refuses_a_cut_chain_and_changes_nothing() {
    let f = Fixture::new();
    f.append(6, 64 << 20);
    let segment = f.segments()[0].clone();
    drop_last_lines(&segment, 2);
    for torn in [false, true] {
        if torn {
            let mut text = fs::read(&segment).unwrap();
            text.extend_from_slice(b"{\"seq\":5,\"ts\":\"20");
            fs::write(&segment, text).unwrap();
        }
        let before = fs::read(&segment).unwrap();
        match f.repair(false) {
            Err(AuditError::TailMissing {
                after_seq: 4,
                recorded_seq: 6,
            }) => {}
            other => panic!("torn={torn}: expected a refusal, got {other:?}"),
        }
        assert_eq!(fs::read(&segment).unwrap(), before, "torn={torn}");
    }
}

#[test]
fn an_accepted_cut_is_recorded_and_the_chain_goes_on() {
    let f = Fixture::new();
    f.append(6, 64 << 20);
    let recorded = f.recorded().read().unwrap().unwrap();
    f.recorded().write_file(&recorded).unwrap();
    let segment = f.segments()[0].clone();
    drop_last_lines(&segment, 2);
    let mut text = fs::read(&segment).unwrap();
    text.extend_from_slice(b"{\"seq\":5,\"ts\":\"20");
    fs::write(&segment, text).unwrap();

    let report = f.repair(true).unwrap();
    assert_eq!(
        report.missing,
        Some(Missing {
            after_seq: 4,
            recorded_seq: 6
        })
    );
    assert!(report.bytes_cut > 0);
    let record = report.record.unwrap();
    assert_eq!(record.seq, 5);
    let line = fs::read_to_string(&segment).unwrap();
    let last: serde_json::Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
    assert_eq!(last["kind"], "audit.repaired");
    assert_eq!(last["data"]["missing_after_seq"], 4);
    assert_eq!(last["data"]["recorded_head_seq"], 6);
    assert_eq!(last["data"]["recorded_head_hash"], recorded.hash);
    // Both records of the head moved to the repair record, so the log opens and verifies.
    let moved = AuditHead {
        seq: 5,
        hash: record.hash,
    };
    assert_eq!(f.recorded().read().unwrap(), Some(moved.clone()));
    assert_eq!(f.file_only().read().unwrap(), Some(moved));
    assert_eq!(f.verify(None).unwrap().head_seq, 5);
    assert_eq!(f.append(1, 64 << 20).seq, 6);
    assert_eq!(
        f.repair(false).unwrap().segment,
        None,
        "nothing left to repair"
    );
}

#[test]
fn a_torn_tail_alone_is_repaired_without_the_flag_and_recorded() {
    let f = Fixture::new();
    f.append(3, 64 << 20);
    let segment = f.dir.join(segment_name(1));
    let mut text = fs::read(&segment).unwrap();
    text.extend_from_slice(b"{\"seq\":4,\"ts\":\"20");
    fs::write(&segment, text).unwrap();
    let report = f.repair(false).unwrap();
    assert_eq!(report.missing, None);
    assert_eq!(report.record.map(|r| r.seq), Some(4));
    assert_eq!(f.recorded().read().unwrap().unwrap().seq, 4);
    assert_eq!(f.verify(None).unwrap().head_seq, 4);
}

/// The chain of `n` records in a plain (unrecorded) log in `dir`, with the head after each.
fn chain(dir: &Path, n: u64) -> Vec<AuditHead> {
    let mut log = AuditLog::open(dir, key(), &AuditSettings::default()).unwrap();
    (0..n)
        .map(|i| {
            log.append(AuditKind::ToolDecided, "owner", "exec", &json!({"i": i}))
                .unwrap();
            log.head()
        })
        .collect()
}

#[test]
fn every_retained_anchor_is_checked_so_a_newer_anchor_of_a_rewritten_log_does_not_cover_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (original, rewritten) = (tmp.path().join("a"), tmp.path().join("b"));
    let heads = chain(&original, 10);
    let anchored = |seqs: &[u64]| -> Vec<AuditHead> {
        seqs.iter()
            .map(|s| heads[*s as usize - 1].clone())
            .collect()
    };
    assert_eq!(
        verify_anchored(&original, &key(), None, None, &anchored(&[3, 6, 10, 6]))
            .unwrap()
            .head_seq,
        10
    );

    // Root (who has the key) keeps records 1..=4, writes new ones after them and gets the
    // new head anchored: the older anchors still name the original records 6 and 10.
    fs::create_dir_all(&rewritten).unwrap();
    let segment = segment_name(1);
    let kept: String = fs::read_to_string(original.join(&segment))
        .unwrap()
        .lines()
        .take(4)
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(rewritten.join(&segment), kept).unwrap();
    let forged = chain(&rewritten, 8);
    let newest = forged.last().unwrap().clone();
    assert_eq!(newest.seq, 12);
    let mut anchors = anchored(&[3, 6, 10]);
    anchors.push(newest.clone());
    assert_eq!(
        verify_anchored(&rewritten, &key(), None, None, &anchors),
        Err(VerifyError::AnchorMismatch { seq: 6 })
    );
    // Only anchors from before the rewritten records: nothing to contradict.
    assert!(verify_anchored(&rewritten, &key(), None, None, &[heads[2].clone(), newest]).is_ok());
    // Anchors before `--from` are not checked.
    assert!(verify_anchored(&rewritten, &key(), Some(7), None, &anchored(&[6])).is_ok());
    // Two anchors for one record with different hashes.
    let forged_six = forged[1].clone();
    assert_eq!(forged_six.seq, 6);
    assert_eq!(
        verify_anchored(
            &original,
            &key(),
            None,
            None,
            &[heads[5].clone(), forged_six]
        ),
        Err(VerifyError::AnchorsDisagree { seq: 6 })
    );

    // A cut below an anchor, whatever the newest anchor says.
    let cut: String = fs::read_to_string(original.join(&segment))
        .unwrap()
        .lines()
        .take(5)
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(original.join(&segment), cut).unwrap();
    let error = verify_anchored(&original, &key(), None, None, &anchored(&[3, 6, 5])).unwrap_err();
    assert_eq!(
        error,
        VerifyError::AnchorMissing {
            after_seq: 5,
            anchored_seq: 6
        }
    );
    assert!(error.to_string().contains("the fleet anchored record 6"));
    let malformed = AuditHead {
        seq: 2,
        hash: "zz".into(),
    };
    assert_eq!(
        verify_anchored(&original, &key(), None, None, &[malformed]),
        Err(VerifyError::AnchorMalformed)
    );
}
