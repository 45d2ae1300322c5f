use super::*;

fn policy(max_failures: u32, window: u64, lockout: u64) -> LockoutPolicy {
    LockoutPolicy {
        max_failures,
        window: Duration::from_secs(window),
        lockout: Duration::from_secs(lockout),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn locks_out_after_max_failures_in_window_and_expires() {
    let lockout = Lockout::new(policy(3, 60, 300));
    let client = ip("10.0.0.1");
    let other = ip("10.0.0.2");
    let t0 = Instant::now();
    assert_eq!(
        lockout.record_failure(client, t0),
        FailureOutcome::Counted {
            failures_in_window: 1
        }
    );
    lockout.record_failure(client, t0 + Duration::from_secs(1));
    assert!(lockout.check(client, t0 + Duration::from_secs(1)).is_none());
    assert!(matches!(
        lockout.record_failure(client, t0 + Duration::from_secs(2)),
        FailureOutcome::LockedOut { .. }
    ));
    let left = lockout.check(client, t0 + Duration::from_secs(2)).unwrap();
    assert_eq!(left, Duration::from_secs(300));
    assert!(
        lockout.check(other, t0).is_none(),
        "other clients are unaffected"
    );
    assert!(lockout
        .check(client, t0 + Duration::from_secs(303))
        .is_none());
}

#[test]
fn failures_outside_the_window_do_not_count() {
    let lockout = Lockout::new(policy(2, 10, 30));
    let client = ip("::1");
    let t0 = Instant::now();
    lockout.record_failure(client, t0);
    assert_eq!(
        lockout.record_failure(client, t0 + Duration::from_secs(11)),
        FailureOutcome::Counted {
            failures_in_window: 1
        }
    );
}

#[test]
fn an_ipv6_client_is_counted_by_its_slash_64() {
    let lockout = Lockout::new(policy(3, 60, 300));
    let t0 = Instant::now();
    lockout.record_failure(ip("2001:db8:1:2::1"), t0);
    lockout.record_failure(ip("2001:db8:1:2::2"), t0);
    let third = lockout.record_failure(ip("2001:db8:1:2:ffff::3"), t0);
    assert!(matches!(third, FailureOutcome::LockedOut { .. }));
    assert!(lockout.check(ip("2001:db8:1:2::abcd"), t0).is_some());
    assert!(lockout.check(ip("2001:db8:1:3::1"), t0).is_none());
    // IPv4-mapped is the IPv4 client.
    lockout.lock(ip("::ffff:192.0.2.1"), Duration::from_secs(5), t0);
    assert!(lockout.check(ip("192.0.2.1"), t0).is_some());
}

#[test]
fn the_table_is_bounded_and_a_flood_of_new_keys_evicts_counts_never_a_lockout() {
    let lockout = Lockout::with_capacity(policy(2, 60, 300), 100);
    let t0 = Instant::now();
    let (first, counted) = (ip("10.9.9.9"), ip("10.8.8.8"));
    lockout.lock(first, Duration::from_secs(300), t0);
    lockout.record_failure(counted, t0);
    for i in 0..10_000u32 {
        let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + i));
        lockout.record_failure(addr, t0);
        assert!(lockout.len() <= 100);
    }
    assert_eq!(lockout.len(), 100);
    assert!(
        lockout.check(first, t0).is_some(),
        "a flood of new keys unlocked a locked-out client"
    );
    // The oldest count was evicted: one more failure of that key starts over.
    assert_eq!(
        lockout.record_failure(counted, t0),
        FailureOutcome::Counted {
            failures_in_window: 1
        }
    );
    // The newest keys are still counted.
    let newest = IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + 9_999));
    assert!(matches!(
        lockout.record_failure(newest, t0),
        FailureOutcome::LockedOut { .. }
    ));
}

/// A deterministic pseudo-random walk over many clients: the table never exceeds its
/// capacity and its map and insertion order agree (checked by `len`).
#[test]
fn random_failures_keep_the_table_consistent() {
    let capacity = 64;
    let lockout = Lockout::with_capacity(policy(3, 10, 20), capacity);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let t0 = Instant::now();
    for step in 0..50_000u64 {
        let r = next();
        let client = if r.is_multiple_of(2) {
            IpAddr::V4(std::net::Ipv4Addr::from((r >> 8) as u32 % 200))
        } else {
            IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(r >> 16 & 0xff) << 64 | 7,
            ))
        };
        let now = t0 + Duration::from_millis(step * 3);
        lockout.record_failure(client, now);
        assert!(lockout.len() <= capacity);
    }
}

#[test]
fn audit_throttle_limits_per_client_and_in_total() {
    let throttle = AuditThrottle::new(3, 5, Duration::from_secs(60));
    let t0 = Instant::now();
    let a = ip("127.0.0.1");
    let b = ip("127.0.0.2");
    let c = ip("127.0.0.3");
    for _ in 0..3 {
        assert_eq!(
            throttle.admit(a, t0),
            AuditDecision::Audit { suppressed: 0 }
        );
    }
    assert_eq!(throttle.admit(a, t0), AuditDecision::Suppress);
    assert_eq!(throttle.admit(a, t0), AuditDecision::Suppress);
    assert_eq!(
        throttle.admit(b, t0),
        AuditDecision::Audit { suppressed: 0 }
    );
    assert_eq!(
        throttle.admit(b, t0),
        AuditDecision::Audit { suppressed: 0 }
    );
    assert_eq!(
        throttle.admit(c, t0),
        AuditDecision::Suppress,
        "total used up"
    );
    // The next window reports what was left out.
    let later = t0 + Duration::from_secs(61);
    assert_eq!(
        throttle.admit(a, later),
        AuditDecision::Audit { suppressed: 2 }
    );
    assert_eq!(
        throttle.admit(c, later),
        AuditDecision::Audit { suppressed: 1 }
    );
}

#[test]
fn active_lists_the_keys_locked_out_now_longest_first() {
    let lockout = Lockout::new(LockoutPolicy {
        max_failures: 2,
        window: Duration::from_secs(60),
        lockout: Duration::from_secs(300),
    });
    let t0 = Instant::now();
    let a: IpAddr = "192.0.2.1".parse().unwrap();
    let b: IpAddr = "2001:db8::1".parse().unwrap();
    let c: IpAddr = "192.0.2.3".parse().unwrap();
    lockout.record_failure(a, t0);
    lockout.record_failure(a, t0);
    lockout.lock(b, Duration::from_secs(900), t0);
    lockout.record_failure(c, t0);
    let active = lockout.active(t0 + Duration::from_secs(1));
    let keys: Vec<String> = active.iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(keys.len(), 2, "{keys:?}: one failure is no lockout");
    assert_eq!(active[0].0, ClientKey::of(b), "longest first");
    assert_eq!(active[1].1, Duration::from_secs(299));
    assert!(lockout.active(t0 + Duration::from_secs(901)).is_empty());
}

/// A full table of lockouts in force drops the expired ones first, then the one ending
/// soonest: never more than its capacity, and the longest lockouts stay.
#[test]
fn a_full_lockout_table_keeps_the_longest_lockouts() {
    let lockout = Lockout::with_capacity(policy(1, 60, 300), 4);
    let t0 = Instant::now();
    let key = |i: u32| IpAddr::V4(std::net::Ipv4Addr::from(0x0c00_0000 + i));
    lockout.lock(key(0), Duration::from_secs(1), t0);
    for i in 1..4 {
        lockout.lock(key(i), Duration::from_secs(100 * u64::from(i)), t0);
    }
    // Record 0 expired: it makes room.
    let t1 = t0 + Duration::from_secs(2);
    lockout.lock(key(9), Duration::from_secs(1000), t1);
    assert_eq!(lockout.active(t1).len(), 4);
    // Full of lockouts in force: the soonest (key 1, 100 s) goes.
    assert!(matches!(
        lockout.record_failure(key(10), t1),
        FailureOutcome::LockedOut { .. }
    ));
    let active: Vec<_> = lockout.active(t1).into_iter().map(|(k, _)| k).collect();
    assert_eq!(active.len(), 4);
    assert!(lockout.check(key(1), t1).is_none());
    for kept in [2, 3, 9, 10] {
        assert!(lockout.check(key(kept), t1).is_some(), "{kept}");
    }
}
