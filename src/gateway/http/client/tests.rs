use super::*;
use actix_web::http::header::{HeaderName, HeaderValue};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

fn proxies(entries: &[&str]) -> TrustedProxies {
    TrustedProxies::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
}

#[test]
fn keys_are_ipv4_addresses_and_ipv6_slash_64s() {
    let cases = [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::1", "::/64"),
    ];
    for (addr, key) in cases {
        assert_eq!(ClientKey::of(ip(addr)).to_string(), key, "{addr}");
    }
    assert_eq!(
        ClientKey::of(ip("2001:db8:1:2::1")),
        ClientKey::of(ip("2001:db8:1:2:aaaa::9"))
    );
    assert_ne!(
        ClientKey::of(ip("2001:db8:1:2::1")),
        ClientKey::of(ip("2001:db8:1:3::1"))
    );
    assert_eq!(
        ClientKey::of(ClientKey::of(ip("2001:db8:1:2::1")).representative()),
        ClientKey::of(ip("2001:db8:1:2::1")),
        "the representative address has the same key"
    );
}

#[test]
fn trusted_proxy_entries_are_validated() {
    for good in [
        "10.0.0.0/8",
        "127.0.0.1",
        "2001:db8::/32",
        "::1",
        " 192.168.1.0/24 ",
    ] {
        assert!(parse_cidr(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "10.0.0.0/33",
        "10.0.0.1/8",
        "example.com",
        "10.0.0.0/",
        "*",
    ] {
        assert!(parse_cidr(bad).is_err(), "{bad}");
    }
    let err = TrustedProxies::parse(&["10.0.0.0/8".into(), "nope".into()]).unwrap_err();
    assert!(err.contains("\"nope\""), "{err}");
}

/// (peer, headers, trusted proxies, expected client address, relayed)
type Case<'a> = (
    &'a str,
    &'a [(&'a str, &'a str)],
    &'a [&'a str],
    &'a str,
    bool,
);

#[test]
fn only_a_trusted_peer_sets_the_client_address() {
    #[rustfmt::skip]
    let cases: &[Case] = &[
        // Untrusted peers: every forwarding header is ignored.
        ("203.0.113.9", &[("x-forwarded-for", "198.51.100.1")], &[], "203.0.113.9", false),
        ("203.0.113.9", &[("forwarded", "for=198.51.100.1")], &["10.0.0.0/8"], "203.0.113.9", false),
        ("127.0.0.1", &[("x-forwarded-for", "198.51.100.1")], &["10.0.0.0/8"], "127.0.0.1", false),
        // A trusted peer: the right-most address that is not a trusted proxy.
        ("10.0.0.2", &[("x-forwarded-for", "198.51.100.1")], &["10.0.0.0/8"], "198.51.100.1", true),
        ("10.0.0.2", &[("x-forwarded-for", "6.6.6.6, 198.51.100.1")], &["10.0.0.0/8"], "198.51.100.1", true),
        ("10.0.0.2", &[("x-forwarded-for", "6.6.6.6, 198.51.100.1, 10.0.0.3")], &["10.0.0.0/8"], "198.51.100.1", true),
        ("10.0.0.2", &[("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "198.51.100.1")], &["10.0.0.0/8"], "198.51.100.1", true),
        ("10.0.0.2", &[("x-forwarded-for", "198.51.100.1:4711")], &["10.0.0.0/8"], "198.51.100.1", true),
        ("10.0.0.2", &[("x-forwarded-for", "[2001:db8::5]:4711")], &["10.0.0.0/8"], "2001:db8::5", true),
        ("10.0.0.2", &[("x-forwarded-for", "2001:db8::5")], &["10.0.0.0/8"], "2001:db8::5", true),
        ("::ffff:10.0.0.2", &[("x-forwarded-for", "::ffff:198.51.100.1")], &["10.0.0.0/8"], "198.51.100.1", true),
        // Garbage or `unknown` at the right: the proxy that wrote it is the client.
        ("10.0.0.2", &[("x-forwarded-for", "198.51.100.1, garbage")], &["10.0.0.0/8"], "10.0.0.2", false),
        ("10.0.0.2", &[("x-forwarded-for", "198.51.100.1, unknown, 10.0.0.3")], &["10.0.0.0/8"], "10.0.0.3", true),
        ("10.0.0.2", &[("x-forwarded-for", "")], &["10.0.0.0/8"], "10.0.0.2", false),
        // Only proxies in the chain: the left-most.
        ("10.0.0.2", &[("x-forwarded-for", "10.0.0.7, 10.0.0.3")], &["10.0.0.0/8"], "10.0.0.7", true),
        // Forwarded (RFC 7239) when there is no X-Forwarded-For.
        ("10.0.0.2", &[("forwarded", "for=198.51.100.1;proto=https")], &["10.0.0.0/8"], "198.51.100.1", true),
        ("10.0.0.2", &[("forwarded", "for=6.6.6.6, For=\"[2001:db8:cafe::17]:4711\"")], &["10.0.0.0/8"], "2001:db8:cafe::17", true),
        ("10.0.0.2", &[("forwarded", "proto=https;for=\"198.51.100.1:80\";by=10.0.0.2")], &["10.0.0.0/8"], "198.51.100.1", true),
        ("10.0.0.2", &[("forwarded", "for=_hidden")], &["10.0.0.0/8"], "10.0.0.2", false),
        ("10.0.0.2", &[("forwarded", "for=\"1.2.3.4")], &["10.0.0.0/8"], "10.0.0.2", false),
        // Both: X-Forwarded-For wins (a client's own Forwarded is often passed through).
        ("10.0.0.2", &[("forwarded", "for=6.6.6.6"), ("x-forwarded-for", "198.51.100.1")], &["10.0.0.0/8"], "198.51.100.1", true),
        // A trusted IPv6 proxy network.
        ("2001:db8::1", &[("x-forwarded-for", "198.51.100.1")], &["2001:db8::/32"], "198.51.100.1", true),
    ];
    for (peer, pairs, trusted, expected, relayed) in cases {
        let client = Client::resolve(ip(peer), &headers(pairs), &proxies(trusted));
        assert_eq!(client.addr, ip(expected), "{peer} {pairs:?} {trusted:?}");
        assert_eq!(client.relayed, *relayed, "{peer} {pairs:?} {trusted:?}");
    }
}

#[test]
fn a_forwarded_request_is_never_local() {
    let none = proxies(&[]);
    assert!(Client::resolve(ip("127.0.0.1"), &headers(&[]), &none).is_local());
    assert!(Client::resolve(ip("::1"), &headers(&[]), &none).is_local());
    assert!(!Client::resolve(ip("10.0.0.1"), &headers(&[]), &none).is_local());
    for name in ["x-forwarded-for", "forwarded", "x-real-ip"] {
        let client = Client::resolve(ip("127.0.0.1"), &headers(&[(name, "127.0.0.1")]), &none);
        assert!(!client.is_local(), "{name}");
    }
    let trusted = proxies(&["127.0.0.1"]);
    let relayed = Client::resolve(
        ip("127.0.0.1"),
        &headers(&[("x-forwarded-for", "198.51.100.1")]),
        &trusted,
    );
    assert!(!relayed.is_local());
    assert_eq!(relayed.addr, ip("198.51.100.1"));
}
