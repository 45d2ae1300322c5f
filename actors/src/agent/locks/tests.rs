use super::*;

#[test]
fn idle_locks_are_bounded_and_locks_in_use_are_kept() {
    let mut locks = SessionLocks::with_max_idle(8);
    let held: Vec<_> = (0..3).map(|i| locks.get(&format!("busy{i}"))).collect();
    for i in 0..1_000 {
        drop(locks.get(&format!("idle{i}")));
        assert!(locks.len() <= 8 + 2, "{} locks after {i}", locks.len());
    }
    // The locks in use survive every clean-up: a waiting turn still shares its session's.
    for (i, lock) in held.iter().enumerate() {
        assert!(Arc::ptr_eq(lock, &locks.get(&format!("busy{i}"))));
    }
}
