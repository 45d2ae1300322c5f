use super::*;

async fn store() -> (tempfile::TempDir, Addr<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let db = StoreDb::open(&dir.path().join("timeline.db")).unwrap();
    (dir, Store::new(db).unwrap().start())
}

fn event(trace: &str, sender: Option<&str>) -> RecordEvent {
    RecordEvent {
        trace_id: trace.into(),
        kind: "test".into(),
        sender: sender.map(String::from),
        channel: None,
        data: serde_json::json!({}),
    }
}

#[actix_rt::test]
async fn timeline_is_newest_first_and_filters() {
    let (_dir, store) = store().await;
    for i in 0..5 {
        let sender = if i % 2 == 0 { "alice" } else { "bob" };
        store
            .send(event(&format!("t{i}"), Some(sender)))
            .await
            .unwrap()
            .unwrap();
    }
    let all = store
        .send(GetTimeline(TimelineQuery::default()))
        .await
        .unwrap()
        .unwrap();
    let traces: Vec<_> = all.iter().map(|e| e.trace_id.as_str()).collect();
    assert_eq!(traces, ["t4", "t3", "t2", "t1", "t0"]);

    let alice = store
        .send(GetTimeline(TimelineQuery {
            sender: Some("alice".into()),
            limit: Some(2),
            ..Default::default()
        }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(alice.len(), 2);
    assert!(alice.iter().all(|e| e.sender.as_deref() == Some("alice")));

    let older = store
        .send(GetTimeline(TimelineQuery {
            before: Some(all[1].id.clone()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(older.first().unwrap().trace_id, "t2");

    let one = store
        .send(GetTimeline(TimelineQuery {
            trace_id: Some("t3".into()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one.len(), 1);
}

#[test]
fn store_dir_is_created_private_and_batches_are_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("timeline.db");
    let db = StoreDb::open(&path).unwrap();
    assert_eq!(crate::fsutil::mode_of(&path).unwrap(), 0o700);
    let tree = db.tree(TreeName::Settings).unwrap();
    let mut batch = KvBatch::default();
    batch.insert("a", "1");
    batch.insert("b", "2");
    tree.apply(batch).unwrap();
    assert_eq!(tree.len(), 2);
    assert!(!tree.insert_new("a", "3").unwrap());
    assert_eq!(tree.get("a").unwrap().unwrap(), b"1");
}

#[test]
fn export_copies_every_tree() {
    let dir = tempfile::tempdir().unwrap();
    let db = StoreDb::open(&dir.path().join("a")).unwrap();
    db.tree(TreeName::Tokens).unwrap().insert("k", "v").unwrap();
    db.export_to(&dir.path().join("b")).unwrap();
    drop(db);
    let copy = StoreDb::open(&dir.path().join("b")).unwrap();
    assert_eq!(
        copy.tree(TreeName::Tokens)
            .unwrap()
            .get("k")
            .unwrap()
            .unwrap(),
        b"v"
    );
}

#[actix_rt::test]
async fn concurrent_flushes_share_fsyncs_and_all_complete() {
    let dir = tempfile::tempdir().unwrap();
    let db = StoreDb::open(&dir.path().join("timeline.db")).unwrap();
    let tree = db.tree(TreeName::Channels).unwrap();
    let mut tasks = Vec::new();
    for i in 0..64u32 {
        let db = db.clone();
        let tree = tree.clone();
        tasks.push(actix_rt::spawn(async move {
            tree.insert(i.to_be_bytes(), b"v").unwrap();
            db.flush().await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    drop(tree);
    drop(db);
    let reopened = StoreDb::open(&dir.path().join("timeline.db")).unwrap();
    assert_eq!(reopened.tree(TreeName::Channels).unwrap().len(), 64);
}

mod seam {
    use crate::store::{Batch, Space, StoreDb, Swap};

    fn keys(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<String> {
        pairs
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    #[test]
    fn operations_are_per_space_and_scans_stay_inside_their_prefix() {
        let db = StoreDb::temporary().unwrap();
        let state = db.state().unwrap();
        for key in ["a/1", "a/2", "a/3", "ab/1", "b/1"] {
            state.put(Space::Journal, key.as_bytes(), b"v").unwrap();
        }
        state.put(Space::History, b"a/9", b"other space").unwrap();
        let all = state.scan(Space::Journal, b"a/", None, 10).unwrap();
        assert_eq!(keys(&all), ["a/1", "a/2", "a/3"]);
        let after = state.scan(Space::Journal, b"a/", Some(b"a/1"), 1).unwrap();
        assert_eq!(keys(&after), ["a/2"]);
        // A cursor below the prefix starts at the prefix; one past it finds nothing.
        assert_eq!(
            keys(&state.scan(Space::Journal, b"a/", Some(b"0"), 10).unwrap()).len(),
            3
        );
        assert!(state
            .scan(Space::Journal, b"a/", Some(b"a/\xff"), 10)
            .unwrap()
            .is_empty());
        let back = state.scan_back(Space::Journal, b"a/", None, 2).unwrap();
        assert_eq!(keys(&back), ["a/3", "a/2"]);
        let before = state
            .scan_back(Space::Journal, b"a/", Some(b"a/2"), 10)
            .unwrap();
        assert_eq!(keys(&before), ["a/1"]);
        let beyond = state
            .scan_back(Space::Journal, b"a/", Some(b"zzz"), 10)
            .unwrap();
        assert_eq!(keys(&beyond), ["a/3", "a/2", "a/1"]);
        assert_eq!(
            keys(&state.scan_back(Space::Journal, b"\xff", None, 10).unwrap()).len(),
            0
        );
        assert_eq!(
            state.get(Space::History, b"a/9").unwrap().as_deref(),
            Some(&b"other space"[..])
        );
    }

    #[test]
    fn compare_and_swap_and_batches() {
        let db = StoreDb::temporary().unwrap();
        let state = db.state().unwrap();
        let s = Space::Outbox;
        assert_eq!(
            state.compare_and_swap(s, b"k", None, Some(b"1")).unwrap(),
            Swap::Done
        );
        assert_eq!(
            state.compare_and_swap(s, b"k", None, Some(b"2")).unwrap(),
            Swap::Conflict(Some(b"1".to_vec()))
        );
        assert_eq!(
            state.compare_and_swap(s, b"k", Some(b"1"), None).unwrap(),
            Swap::Done
        );
        assert_eq!(state.get(s, b"k").unwrap(), None);
        let mut batch = Batch::default();
        batch.put("x", "1");
        batch.put("y", "2");
        batch.delete("x");
        state.apply(s, batch).unwrap();
        assert_eq!(state.get(s, b"x").unwrap(), None);
        assert_eq!(state.get(s, b"y").unwrap().as_deref(), Some(&b"2"[..]));
        let (a, b) = (state.next_id().unwrap(), state.next_id().unwrap());
        assert!(b > a);
        // sled reports what it has written out: flush first, or a loaded machine may still
        // show 0 bytes.
        db.flush_blocking().unwrap();
        assert!(state.size_bytes().unwrap() > 0);
    }

    #[actix_rt::test]
    async fn a_synced_write_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("timeline.db");
        {
            let db = StoreDb::open(&path).unwrap();
            let state = db.state().unwrap();
            state.put(Space::Inbox, b"claim", b"processing").unwrap();
            state.sync().await.unwrap();
        }
        let db = StoreDb::open(&path).unwrap();
        assert_eq!(
            db.state()
                .unwrap()
                .get(Space::Inbox, b"claim")
                .unwrap()
                .as_deref(),
            Some(&b"processing"[..])
        );
    }
}

/// Polls until no write is left uncovered and no deferred flush is pending (deadline 5 s).
fn wait_until_clean(db: &StoreDb) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while db.idle.dirty.load(Ordering::SeqCst) || db.idle.scheduled.load(Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < deadline,
            "the unflushed write was never flushed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The mark is cleared as the deferred flush starts; it holds `busy` until it is done
    // (without this, an explicit flush raced the deferred one and found bytes to write).
    drop(db.idle.busy.lock().unwrap());
}

#[actix_rt::test]
async fn a_write_nobody_flushes_is_flushed_by_itself_then_the_store_stays_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let db = StoreDb::open(&dir.path().join("timeline.db")).unwrap();
    let tree = db.tree(TreeName::Usage).unwrap();
    tree.insert(b"k", b"v").unwrap();
    assert!(db.idle.scheduled.load(Ordering::SeqCst));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while db.idle.dirty.load(Ordering::SeqCst) || db.idle.scheduled.load(Ordering::SeqCst) {
        assert!(std::time::Instant::now() < deadline, "never flushed");
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    // The mark is cleared as the deferred flush starts; it holds `busy` until it is done.
    drop(db.idle.busy.lock().unwrap());
    // The deferred flush covered the write: nothing is left for an explicit one.
    assert_eq!(db.db.flush().unwrap(), 0);
}

#[test]
fn a_write_outside_a_runtime_is_flushed_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let db = StoreDb::open(&dir.path().join("timeline.db")).unwrap();
    let tree = db.tree(TreeName::Usage).unwrap();
    tree.insert(b"k", b"v").unwrap();
    wait_until_clean(&db);
    assert_eq!(db.db.flush().unwrap(), 0);
}

#[test]
fn an_explicit_flush_leaves_no_deferred_flush_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let db = StoreDb::open(&dir.path().join("timeline.db")).unwrap();
    let tree = db.tree(TreeName::Usage).unwrap();
    tree.insert(b"k", b"v").unwrap();
    db.flush_blocking().unwrap();
    assert!(!db.idle.dirty.load(Ordering::SeqCst));
    wait_until_clean(&db);
}

#[test]
fn an_open_store_runs_no_periodic_flusher_thread() {
    let dir = tempfile::tempdir().unwrap();
    let _db = StoreDb::open(&dir.path().join("timeline.db")).unwrap();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let comm = std::fs::read_to_string(task.unwrap().path().join("comm")).unwrap_or_default();
        assert_ne!(
            comm.trim(),
            "log flusher",
            "sled's flusher fsyncs even when idle"
        );
    }
}

#[test]
fn a_dropped_store_is_closed_even_while_its_deferred_flush_runs() {
    // The deferred flush wakes IDLE_FLUSH_AFTER after the first write; dropping the store
    // around that moment must still release the directory's lock by the time drop returns.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("timeline.db");
    for offset_ms in [-4i64, -2, 0, 1, 2, 4, 8] {
        let db = StoreDb::open(&path).unwrap();
        let tree = db.tree(TreeName::Settings).unwrap();
        tree.insert(b"k", vec![0u8; 64 * 1024]).unwrap();
        drop(tree);
        let wait = IDLE_FLUSH_AFTER.as_millis() as i64 + offset_ms;
        std::thread::sleep(Duration::from_millis(wait as u64));
        drop(db);
        StoreDb::open(&path).unwrap_or_else(|e| panic!("reopen at {offset_ms:+} ms: {e}"));
    }
}

#[test]
fn a_store_released_a_moment_after_it_is_asked_for_opens_and_one_held_is_refused_clearly() {
    // sled releases its directory lock from its own threads after the last handle drops:
    // an open that races that release waits for it instead of failing.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("timeline.db");
    let held = StoreDb::open(&path).unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
    });
    let reopened = StoreDb::open(&path);
    release.join().unwrap();
    let reopened = reopened.unwrap_or_else(|e| panic!("reopen while being released: {e}"));

    // A lock that stays held is refused after the bounded wait, saying why.
    let started = std::time::Instant::now();
    let error = StoreDb::open(&path).unwrap_err().to_string();
    assert!(started.elapsed() >= LOCK_WAIT, "{:?}", started.elapsed());
    assert!(started.elapsed() < LOCK_WAIT * 3, "{:?}", started.elapsed());
    assert!(error.contains("locked by another process"), "{error}");
    assert!(!error.contains('\n'), "{error}");
    drop(reopened);
}
