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
