use std::time::Duration;

use super::*;

/// A child that counts pings and panics on command.
struct Worker;

impl Actor for Worker {
    type Context = Context<Self>;
}

impl Handler<Ping> for Worker {
    type Result = Pong;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Pong {
        Pong
    }
}

impl Handler<InjectPanic> for Worker {
    type Result = ();
    fn handle(&mut self, msg: InjectPanic, _: &mut Context<Self>) {
        panic!("injected: {}", msg.0);
    }
}

fn fast(max_restarts: u32) -> SupervisorSettings {
    SupervisorSettings {
        max_restarts,
        window_seconds: 60,
        initial_backoff_ms: 5,
        max_backoff_ms: 50,
    }
}

async fn next_event(rx: &mut mpsc::UnboundedReceiver<SupervisionEvent>) -> SupervisionEvent {
    tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .expect("an event within 1 s")
        .expect("supervisor alive")
}

#[actix_rt::test]
async fn a_panicking_child_is_replaced_by_a_working_one_within_a_second() {
    let mut builder = SupervisorBuilder::new(fast(5));
    let slot = builder.child("worker", RestartPolicy::Permanent, Box::new(|| Ok(Worker)));
    let (supervisor, mut events) = builder.start().unwrap();
    let first = slot.addr().unwrap();
    first.do_send(InjectPanic("boom".into()));

    let failed = next_event(&mut events).await;
    assert!(matches!(failed, SupervisionEvent::ChildFailed { ref name, .. } if name == "worker"));
    let restarted = next_event(&mut events).await;
    assert_eq!(
        restarted,
        SupervisionEvent::ChildRestarted {
            name: "worker".into(),
            restarts: 1
        }
    );
    let fresh = slot.addr().unwrap();
    assert!(!first.connected(), "the panicked instance is gone");
    assert!(
        matches!(fresh.send(Ping).await, Ok(Pong)),
        "the slot reaches the fresh child"
    );

    let tree = supervisor.send(GetSupervisionTree).await.unwrap();
    assert_eq!(tree.root.children[0].restarts, 1);
    assert_eq!(tree.root.children[0].state, ChildState::Running);
    assert!(tree.unhealthy().is_empty());
}

#[actix_rt::test]
async fn a_permanent_child_that_keeps_failing_exhausts_its_budget() {
    let mut builder = SupervisorBuilder::new(fast(2));
    let slot = builder.child("audit", RestartPolicy::Permanent, Box::new(|| Ok(Worker)));
    let (supervisor, mut events) = builder.start().unwrap();
    let mut gave_up = None;
    for _ in 0..3 {
        slot.addr().unwrap().do_send(InjectPanic("again".into()));
        loop {
            match next_event(&mut events).await {
                SupervisionEvent::ChildRestarted { .. } => break,
                SupervisionEvent::GaveUp { name, policy, .. } => {
                    gave_up = Some((name, policy));
                    break;
                }
                SupervisionEvent::ChildFailed { .. } => {}
            }
        }
    }
    assert_eq!(gave_up, Some(("audit".into(), RestartPolicy::Permanent)));
    let tree = supervisor.send(GetSupervisionTree).await.unwrap();
    assert_eq!(tree.root.children[0].state, ChildState::Failed);
    assert_eq!(tree.unhealthy(), vec!["audit".to_string()]);
}

#[actix_rt::test]
async fn the_health_board_follows_the_tree_without_a_message() {
    let mut builder = SupervisorBuilder::new(fast(0));
    let board = builder.health();
    let slot = builder.child("audit", RestartPolicy::Permanent, Box::new(|| Ok(Worker)));
    let (supervisor, mut events) = builder.start().unwrap();
    assert!(board.failing().is_empty(), "healthy from the start");
    slot.addr().unwrap().do_send(InjectPanic("gone".into()));
    loop {
        if let SupervisionEvent::GaveUp { .. } = next_event(&mut events).await {
            break;
        }
    }
    // Written in the same step as the give-up: read without a message.
    assert_eq!(board.failing(), vec!["audit".to_string()]);
    let tree = supervisor.send(GetSupervisionTree).await.unwrap();
    assert_eq!(board.failing(), tree.unhealthy());
}

#[test]
fn the_health_board_names_the_supervisor_when_it_stopped_or_stopped_beating() {
    let board = HealthBoard::new(Duration::from_secs(60));
    board.publish(vec!["audit".into()]);
    board.beat();
    assert_eq!(board.failing(), vec!["audit".to_string()]);
    board.publish(Vec::new());
    assert!(board.failing().is_empty());
    board.stopped();
    board.beat();
    assert_eq!(
        board.failing(),
        vec!["supervisor".to_string()],
        "a stopped supervisor stays stopped"
    );

    let stuck = HealthBoard::new(Duration::from_millis(1));
    stuck.beat();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while stuck.failing().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "a silent heartbeat goes stale"
        );
        std::thread::yield_now();
    }
    assert_eq!(stuck.failing(), vec!["supervisor".to_string()]);
}

#[actix_rt::test]
async fn a_quarantinable_child_is_quarantined_not_fatal() {
    let mut builder = SupervisorBuilder::new(fast(0));
    let slot = builder.child(
        "channel:whatsapp",
        RestartPolicy::Quarantine,
        Box::new(|| Ok(Worker)),
    );
    let (supervisor, mut events) = builder.start().unwrap();
    slot.addr()
        .unwrap()
        .do_send(InjectPanic("bad payload".into()));
    let _failed = next_event(&mut events).await;
    let gave_up = next_event(&mut events).await;
    assert!(matches!(
        gave_up,
        SupervisionEvent::GaveUp { policy: RestartPolicy::Quarantine, ref reason, .. } if reason.contains("panicked")
    ));
    let tree = supervisor.send(GetSupervisionTree).await.unwrap();
    assert_eq!(tree.root.children[0].state, ChildState::Quarantined);
    assert!(
        tree.unhealthy().is_empty(),
        "a quarantined channel does not fail /healthz"
    );
}

#[actix_rt::test]
async fn a_reported_failure_counts_against_the_budget() {
    let mut builder = SupervisorBuilder::new(fast(5));
    let _slot = builder.child("vault", RestartPolicy::Permanent, Box::new(|| Ok(Worker)));
    let (supervisor, mut events) = builder.start().unwrap();
    supervisor.do_send(ReportFailure {
        name: "vault".into(),
        reason: "key file unreadable".into(),
    });
    assert!(
        matches!(next_event(&mut events).await, SupervisionEvent::ChildFailed { ref reason, .. } if reason == "key file unreadable")
    );
    assert!(matches!(
        next_event(&mut events).await,
        SupervisionEvent::ChildRestarted { .. }
    ));
}

#[test]
fn backoff_doubles_with_jitter_and_is_capped() {
    let s = fast(5);
    // Equal jitter: between half and all of 5 ms · 2^(n-1), never above the 50 ms cap.
    for (failures, full) in [(1, 5), (2, 10), (3, 20), (30, 50)] {
        for _ in 0..32 {
            let delay = s.backoff(failures).as_millis() as u64;
            assert!(
                (full - full / 2..=full).contains(&delay),
                "{failures} failures: {delay} ms"
            );
        }
    }
}

/// A target that blocks its own thread on command, so its mailbox fills.
struct Stuck {
    delivered: Arc<std::sync::atomic::AtomicUsize>,
}

impl Actor for Stuck {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4);
    }
}

/// Blocks the target's thread until the sender side of `release` is dropped.
#[derive(Message)]
#[rtype(result = "()")]
struct Block {
    blocked: Arc<std::sync::atomic::AtomicBool>,
    release: std::sync::mpsc::Receiver<()>,
}

impl Handler<Block> for Stuck {
    type Result = ();
    fn handle(&mut self, msg: Block, _: &mut Context<Self>) {
        msg.blocked.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = msg.release.recv();
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Signal;

impl Handler<Signal> for Stuck {
    type Result = ();
    fn handle(&mut self, _: Signal, _: &mut Context<Self>) {
        self.delivered
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

static FULL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[actix_rt::test]
async fn a_forwarder_drops_and_reports_what_a_full_target_cannot_take() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let delivered = Arc::new(AtomicUsize::new(0));
    let arbiter = actix::Arbiter::new();
    let target = {
        let delivered = delivered.clone();
        Stuck::start_in_arbiter(&arbiter.handle(), move |_| Stuck { delivered })
    };
    let blocked = Arc::new(AtomicBool::new(false));
    let (release, gate) = std::sync::mpsc::channel();
    target.do_send(Block {
        blocked: blocked.clone(),
        release: gate,
    });
    until("the target to block", || blocked.load(Ordering::SeqCst)).await;

    let forward = Forward::new(Slot::with(target))
        .with_capacity(64)
        .on_drop(|why| {
            assert_eq!(why, Undelivered::Full);
            FULL.fetch_add(1, Ordering::SeqCst);
        })
        .start();
    let sent = 50;
    for _ in 0..sent {
        forward.try_send(Signal).unwrap();
    }
    until("the forwarder to hand on or drop every signal", || {
        FULL.load(Ordering::SeqCst) >= sent - 8
    })
    .await;
    drop(release);
    let dropped = FULL.load(Ordering::SeqCst);
    until("the target to take what it queued", || {
        delivered.load(Ordering::SeqCst) + dropped >= sent
    })
    .await;
    // What reached the target is bounded by its mailbox (4, plus one per sender handle).
    assert!(delivered.load(Ordering::SeqCst) <= 6, "{delivered:?}");
    arbiter.stop();
}
