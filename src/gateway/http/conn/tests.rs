use super::*;

#[test]
fn the_refusal_is_one_complete_response() {
    let text = std::str::from_utf8(REFUSAL).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.contains(&format!("content-length: {}", body.len())));
    assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
}

#[test]
fn counts_per_key_and_gives_slots_back() {
    let limit = ConnectionLimit::new(2, Arc::default());
    let a: SocketAddr = "127.0.0.2:1000".parse().unwrap();
    let a2: SocketAddr = "127.0.0.2:1001".parse().unwrap();
    let b: SocketAddr = "[2001:db8:1:2::9]:1000".parse().unwrap();
    let b2: SocketAddr = "[2001:db8:1:2::10]:1000".parse().unwrap();
    let key_a = ClientKey::of(a.ip());
    let first = limit.admit(a);
    let second = limit.admit(a2);
    assert!(!first.1 && !second.1);
    let third = limit.admit(a);
    assert!(third.1, "over the cap");
    assert_eq!(limit.open(&key_a), 2);
    drop(first);
    assert_eq!(limit.open(&key_a), 1);
    assert!(!limit.admit(a).1, "a slot came back");
    let v6 = [limit.admit(b), limit.admit(b2)];
    assert!(v6.iter().all(|(_, refused)| !refused));
    assert!(limit.admit(b).1, "one /64 is one client");
    drop(v6);
    drop(second);
    assert_eq!(limit.open(&ClientKey::of(b.ip())), 0);
}

#[test]
fn trusted_proxies_and_a_zero_cap_are_not_counted() {
    let proxies = TrustedProxies::parse(&["10.0.0.0/8".into()]).unwrap();
    let limit = ConnectionLimit::new(1, Arc::new(proxies));
    let proxy: SocketAddr = "10.0.0.5:1".parse().unwrap();
    let held: Vec<_> = (0..5).map(|_| limit.admit(proxy)).collect();
    assert!(held
        .iter()
        .all(|(slot, refused)| slot.is_none() && !refused));
    let open = ConnectionLimit::new(0, Arc::default());
    let held: Vec<_> = (0..5).map(|_| open.admit(proxy)).collect();
    assert!(held.iter().all(|(_, refused)| !refused));
}
