use super::*;

fn local(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn hosts(entries: &[&str]) -> AllowedHosts {
    let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
    AllowedHosts::new(HostPattern::parse_all(&entries).unwrap())
}

/// `check(allowed_hosts, local address, Host value, expected)`.
fn check(extra: &[&str], at: &str, host: &str, expected: bool) {
    assert_eq!(
        hosts(extra).allows_host(host, local(at)),
        expected,
        "Host {host:?} at {at} with {extra:?}"
    );
}

#[test]
fn loopback_names_with_the_listeners_port() {
    let at = "127.0.0.1:18791";
    for host in [
        "localhost:18791",
        "LOCALHOST:18791",
        "LocalHost.:18791",
        "127.0.0.1:18791",
        "[::1]:18791",
        "[0:0:0:0:0:0:0:1]:18791",
        "[::ffff:127.0.0.1]:18791",
    ] {
        check(&[], at, host, true);
    }
    for host in [
        "localhost:18790",
        "localhost",
        "127.0.0.1",
        "127.0.0.1:80",
        "[::1]",
        "::1",
        "::1:18791",
        "127.0.0.2:18791",
        "127.1:18791",
        "2130706433:18791",
        "0x7f.0.0.1:18791",
        "127.000.000.001:18791",
        "sub.localhost:18791",
        "0.0.0.0:18791",
        "[::]:18791",
        "localhost.evil.example:18791",
    ] {
        check(&[], at, host, false);
    }
}

#[test]
fn rebinding_and_malformed_hosts_are_refused() {
    let at = "127.0.0.1:18791";
    for host in [
        "attacker.example:18791",
        "attacker.example",
        "",
        ":18791",
        "localhost:",
        "localhost:+18791",
        "localhost:018791x",
        "localhost:99999",
        "localhost:187910",
        "user@localhost:18791",
        "user:pw@127.0.0.1:18791",
        "localhost:18791@attacker.example",
        "localhost:18791:18791",
        "localhost 18791",
        "local%68ost:18791",
        "localhost..:18791",
        "[::1:18791",
        "[::1]18791",
        "[localhost]:18791",
        "*.example:18791",
        "http://localhost:18791",
        "localhost/:18791",
    ] {
        check(&[], at, host, false);
    }
}

#[test]
fn the_local_address_literal_is_allowed_for_remote_binds() {
    check(&[], "10.1.2.3:18790", "10.1.2.3:18790", true);
    check(&[], "10.1.2.3:18790", "10.1.2.4:18790", false);
    check(&[], "10.1.2.3:18790", "10.1.2.3:18791", false);
    check(&[], "[2001:db8::5]:18790", "[2001:db8::5]:18790", true);
    check(&[], "[2001:db8::5]:18790", "[2001:DB8:0::5]:18790", true);
    check(&[], "[::ffff:10.1.2.3]:18790", "10.1.2.3:18790", true);
    check(&[], "127.0.0.2:18790", "127.0.0.2:18790", true);
    check(&[], "127.0.0.1:80", "localhost", true);
    check(&[], "127.0.0.1:80", "127.0.0.1", true);
}

#[test]
fn allowed_hosts_entries_with_and_without_a_port() {
    let extra = [
        "kafclaw.example.com",
        "ops.example.com:8443",
        "[2001:db8::1]:443",
        "192.0.2.7",
    ];
    let at = "127.0.0.1:18791";
    for (host, expected) in [
        ("kafclaw.example.com", true),
        ("kafclaw.example.com:443", true),
        ("kafclaw.example.com:18791", true),
        ("KAFCLAW.example.com.:1", true),
        ("evil.kafclaw.example.com", false),
        ("kafclaw.example.com.evil", false),
        ("ops.example.com:8443", true),
        ("ops.example.com", false),
        ("ops.example.com:443", false),
        ("[2001:db8::1]:443", true),
        ("[2001:db8:0:0::1]:443", true),
        ("[2001:db8::1]", false),
        ("192.0.2.7:9", true),
        ("192.0.2.8:9", false),
    ] {
        check(&extra, at, host, expected);
    }
}

#[test]
fn bad_allowed_hosts_entries_are_errors() {
    for good in [
        "a.example",
        "a.example:1",
        "[::1]:2",
        "10.0.0.1",
        "my_host",
        " x.example ",
    ] {
        assert!(HostPattern::parse(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "https://a.example",
        "a.example/path",
        "*.example.com",
        "a.example:",
        "a.example:70000",
        "user@a.example",
        "::1",
        "a b",
    ] {
        let err = HostPattern::parse(bad).unwrap_err();
        assert!(err.contains(&format!("{bad:?}")), "{err}");
    }
}

#[test]
fn origins_are_allowed_hosts_with_the_schemes_port() {
    let at = "127.0.0.1:18791";
    let allowed = hosts(&["ops.example.com"]);
    for (origin, expected) in [
        ("http://127.0.0.1:18791", true),
        ("http://localhost:18791", true),
        ("HTTP://LOCALHOST:18791", true),
        ("http://[::1]:18791", true),
        ("https://ops.example.com", true),
        ("http://ops.example.com:8080", true),
        ("http://127.0.0.1:18790", false),
        ("http://127.0.0.1", false),
        ("http://attacker.example:18791", false),
        ("null", false),
        ("", false),
        ("file://", false),
        ("ftp://127.0.0.1:18791", false),
        ("http://127.0.0.1:18791/", false),
        ("http://user@127.0.0.1:18791", false),
        ("127.0.0.1:18791", false),
        ("chrome-extension://abc", false),
    ] {
        assert_eq!(
            allowed.allows_origin(origin, local(at)),
            expected,
            "Origin {origin:?}"
        );
    }
    let on_80 = hosts(&[]);
    assert!(on_80.allows_origin("http://localhost", local("127.0.0.1:80")));
    assert!(!on_80.allows_origin("https://localhost", local("127.0.0.1:80")));
}
