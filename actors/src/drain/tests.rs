use std::time::Duration;

use super::*;

#[tokio::test]
async fn idle_waits_for_every_guard_and_a_closed_gate_starts_nothing() {
    let drain = Drain::new();
    drain.idle().await; // nothing in flight: at once
    let first = drain.begin().expect("open");
    let second = drain.clone().begin().expect("clones share the gate");
    assert_eq!(drain.active(), 2);
    drain.close();
    assert!(drain.is_closed());
    assert!(drain.begin().is_none(), "closed: no new work");
    let waiter = tokio::spawn({
        let drain = drain.clone();
        async move { drain.idle().await }
    });
    drop(first);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiter.is_finished(), "one guard is still alive");
    drop(second);
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("idle resolves once the last guard is dropped")
        .unwrap();
    assert_eq!(drain.active(), 0);
}

#[tokio::test]
async fn guards_dropped_on_other_threads_wake_the_waiter() {
    let drain = Drain::new();
    let guards: Vec<Work> = (0..64).map(|_| drain.begin().unwrap()).collect();
    drain.close();
    let threads: Vec<_> = guards
        .into_iter()
        .map(|guard| std::thread::spawn(move || drop(guard)))
        .collect();
    tokio::time::timeout(Duration::from_secs(5), drain.idle())
        .await
        .expect("idle");
    for thread in threads {
        thread.join().unwrap();
    }
}

#[tokio::test]
async fn an_open_gate_can_go_idle_and_busy_again() {
    let drain = Drain::new();
    drop(drain.begin().unwrap());
    drain.idle().await;
    let again = drain.begin();
    assert!(again.is_some());
    assert_eq!(drain.active(), 1);
}
