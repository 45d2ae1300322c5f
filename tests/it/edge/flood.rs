//! Issue 11 §4: bodies have a whole-body deadline, an unread body is never drained, and a
//! flood of slow bodies or connections leaves `/healthz` and authenticated requests
//! answering within a second.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;

use super::{connect_from, read_answer};
use crate::harness::{Gateway, Options, TOKEN};

/// Writes one byte every `every` on a clone of `stream` until a write fails.
fn trickle(stream: &TcpStream, every: Duration, byte: &'static [u8]) {
    let mut writer = stream.try_clone().unwrap();
    std::thread::spawn(move || loop {
        std::thread::sleep(every);
        if writer.write_all(byte).is_err() {
            break;
        }
    });
}

/// True when the peer closes `stream` within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
        if start.elapsed() > within {
            return false;
        }
    }
}

#[test]
fn a_body_that_does_not_arrive_in_time_is_408_and_the_connection_closes() {
    let gw = Gateway::start(
        Options::default()
            .token()
            .env("KAFCLAW_GATEWAY_BODY_TIMEOUT_SECONDS", "1"),
    );
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let cases = [
        ("whatsapp webhook", &gw.gateway, "/webhooks/whatsapp", ""),
        ("bridge webhook", &gw.gateway, "/webhooks/bridge/any", ""),
        ("authenticated chat", &gw.gateway, "/chat", auth.as_str()),
        (
            "authenticated control",
            &gw.dashboard,
            "/api/v1/admin/control",
            auth.as_str(),
        ),
    ];
    for (case, addr, path, auth) in cases {
        for framing in [
            "content-length: 100000\r\n",
            "transfer-encoding: chunked\r\n",
        ] {
            let mut stream = TcpStream::connect(addr).unwrap();
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}content-type: application/json\r\n{framing}\r\n"
            );
            stream.write_all(head.as_bytes()).unwrap();
            let started = Instant::now();
            if framing.starts_with("content-length") {
                trickle(&stream, Duration::from_millis(200), b"{");
            } else {
                trickle(&stream, Duration::from_millis(200), b"1\r\n{\r\n");
            }
            let answer =
                read_answer(&mut stream).unwrap_or_else(|| panic!("{case} {framing}: no answer"));
            let took = started.elapsed();
            assert_eq!(answer.status, 408, "{case} {framing}: {answer:?}");
            assert_eq!(answer.body, r#"{"error":"request body timeout"}"#);
            assert!(answer.head.contains("connection: close"), "{answer:?}");
            assert!(
                took >= Duration::from_millis(900) && took < Duration::from_secs(3),
                "{case} {framing}: answered after {took:?}"
            );
            assert!(
                closed_within(&mut stream, Duration::from_secs(3)),
                "{case} {framing}: the connection stays open"
            );
        }
    }
}

#[test]
fn an_unread_body_is_not_drained_after_an_early_answer() {
    let gw = Gateway::start(Options::default().token());
    for (path, auth) in [
        ("/chat", "Authorization: Bearer wrong\r\n"),
        ("/chat", ""),
        ("/no/such/route", ""),
    ] {
        for framing in [
            "content-length: 100000\r\n",
            "transfer-encoding: chunked\r\n",
        ] {
            let mut stream = TcpStream::connect(&gw.gateway).unwrap();
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\n{auth}content-type: application/json\r\n{framing}\r\n",
                gw.gateway
            );
            stream.write_all(head.as_bytes()).unwrap();
            let chunk: &'static [u8] = if framing.starts_with("content") {
                b"x"
            } else {
                b"1\r\nx\r\n"
            };
            trickle(&stream, Duration::from_millis(100), chunk);
            let answer = read_answer(&mut stream).expect("an early answer");
            assert!(answer.status == 401 || answer.status == 404, "{answer:?}");
            assert!(answer.head.contains("connection: close"), "{answer:?}");
            assert!(
                closed_within(&mut stream, Duration::from_secs(4)),
                "{path} {auth:?} {framing}: the trickled body keeps the connection"
            );
        }
    }
}

/// A running flood: what the checks wait for and how to stop it.
struct Flood {
    stop: Arc<AtomicBool>,
    /// Connections that have sent their head at least once.
    opened: Arc<AtomicUsize>,
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A slow-body flood: `connections` connections (spread over `sources`) announcing a
/// 100 kB webhook body and sending one byte a second, all opened at once; a connection that
/// is closed is opened again after two to four seconds (spread, so the flood does not turn
/// into bursts of requests).
fn flood(addr: &str, sources: Vec<String>, connections: usize) -> Flood {
    let stop = Arc::new(AtomicBool::new(false));
    let holding = Arc::new(AtomicUsize::new(0));
    let target: SocketAddr = addr.parse().unwrap();
    let head = format!(
        "POST /webhooks/whatsapp HTTP/1.1\r\nHost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{{"
    );
    let (stop_flag, count) = (stop.clone(), holding.clone());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut tasks = Vec::new();
            for i in 0..connections {
                let source: std::net::IpAddr = sources[i % sources.len()].parse().unwrap();
                let (stop, count, head) = (stop_flag.clone(), count.clone(), head.clone());
                let pause = Duration::from_millis(2000 + (i as u64 * 7919) % 2000);
                tasks.push(tokio::spawn(async move {
                    let mut first = true;
                    while !stop.load(Ordering::Relaxed) {
                        let socket = tokio::net::TcpSocket::new_v4().unwrap();
                        socket.bind(SocketAddr::new(source, 0)).unwrap();
                        let connect =
                            tokio::time::timeout(Duration::from_secs(2), socket.connect(target));
                        if let Ok(Ok(mut stream)) = connect.await {
                            if stream.write_all(head.as_bytes()).await.is_ok() {
                                if std::mem::take(&mut first) {
                                    count.fetch_add(1, Ordering::Relaxed);
                                }
                                while !stop.load(Ordering::Relaxed) {
                                    tokio::time::sleep(Duration::from_secs(1)).await;
                                    if stream.write_all(b" ").await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        tokio::time::sleep(pause).await;
                    }
                }));
            }
            for task in tasks {
                let _ = task.await;
            }
        });
    });
    Flood {
        stop,
        opened: holding,
    }
}

/// A client from `source` that opens a new connection for every request.
fn fresh_client(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// Asserts that `/healthz` on both ports and an authenticated request answer within a second,
/// ten times over five seconds, from `source` on new connections.
async fn keeps_answering(gw: &Gateway, source: &str, what: &str) {
    let client = fresh_client(source);
    let bearer = format!("Bearer {TOKEN}");
    for round in 0..10 {
        let checks = [
            client.get(gw.gw_url("/healthz")),
            client.get(gw.url("/healthz")),
            client
                .get(gw.url("/api/v1/auth/verify"))
                .header("Authorization", &bearer),
            client
                .post(gw.gw_url("/chat"))
                .header("Authorization", &bearer)
                .json(&serde_json::json!({"message": "hi"})),
        ];
        for check in checks {
            let started = Instant::now();
            let answer = tokio::time::timeout(Duration::from_secs(1), check.send()).await;
            let status = match answer {
                Ok(Ok(res)) => res.status(),
                other => panic!("{what}, round {round}: no answer within 1 s ({other:?})"),
            };
            assert!(
                status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
                "{what}, round {round}: {status} after {:?}",
                started.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until every flood connection was opened once, and the burst of their first requests
/// has been answered: the checks measure the flood, not the burst of its start.
async fn wait_for_flood(flood: &Flood, connections: usize) {
    // A gateway that stops accepting never lets them all open: then check after 15 s.
    let deadline = Instant::now() + Duration::from_secs(15);
    while flood.opened.load(Ordering::Relaxed) < connections * 9 / 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        flood.opened.load(Ordering::Relaxed) >= 100,
        "the flood did not start"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
}

fn flood_options() -> Options {
    // One worker: 1024 connection slots, so the test means the same on every machine.
    Options::default()
        .token()
        .env("KAFCLAW_GATEWAY_WORKERS", "1")
}

#[tokio::test]
async fn a_slow_body_flood_from_one_client_leaves_the_gateway_answering() {
    let gw = Gateway::start(flood_options());
    let flood = flood(&gw.gateway, vec!["127.0.0.2".into()], 2000);
    wait_for_flood(&flood, 2000).await;
    keeps_answering(&gw, "127.0.0.1", "flood from 127.0.0.2").await;
}

#[tokio::test]
async fn a_slow_body_flood_from_many_clients_leaves_the_gateway_answering() {
    let gw = Gateway::start(flood_options());
    let sources: Vec<String> = (1..=100).map(|i| format!("127.0.3.{i}")).collect();
    let flood = flood(&gw.gateway, sources, 2000);
    wait_for_flood(&flood, 2000).await;
    keeps_answering(&gw, "127.0.0.1", "flood from 100 clients").await;
}

/// The flood comes from the checker's own address: a connection it opened before keeps
/// answering, a new connection from it gets an answer at once (503 while the flood holds the
/// cap, not a hang), and every other client is served.
#[tokio::test]
async fn a_flood_from_the_checkers_own_address() {
    let gw = Gateway::start(flood_options());
    let requests = [
        format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", gw.gateway),
        super::request(
            "POST",
            "/chat",
            &[
                &format!("Host: {}", gw.gateway),
                &format!("Authorization: Bearer {TOKEN}"),
            ],
            r#"{"message":"hi"}"#,
        ),
    ];
    let mut kept = connect_from("127.0.0.5", &gw.gateway);
    for request in &requests {
        kept.write_all(request.as_bytes()).unwrap();
        let answer = read_answer(&mut kept).unwrap();
        assert!(answer.status == 200 || answer.status == 503, "{answer:?}");
    }

    let flood = flood(&gw.gateway, vec!["127.0.0.5".into()], 2000);
    wait_for_flood(&flood, 2000).await;
    keeps_answering(
        &gw,
        "127.0.0.6",
        "flood from 127.0.0.5, checked from 127.0.0.6",
    )
    .await;
    for _ in 0..5 {
        for request in &requests {
            let started = Instant::now();
            kept.write_all(request.as_bytes()).unwrap();
            let answer = read_answer(&mut kept).expect("the kept connection answers");
            assert!(answer.status == 200 || answer.status == 503, "{answer:?}");
            assert!(started.elapsed() < Duration::from_secs(1));
        }
        let started = Instant::now();
        let mut fresh = connect_from("127.0.0.5", &gw.gateway);
        let _ = fresh.write_all(requests[0].as_bytes());
        let answer = read_answer(&mut fresh);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "an answer, not a hang"
        );
        if let Some(answer) = answer {
            assert!(answer.status == 200 || answer.status == 503, "{answer:?}");
            if answer.status == 503 {
                assert_eq!(
                    answer.body,
                    r#"{"error":"too many connections from client"}"#
                );
            }
        }
    }
    drop(flood);
}

#[test]
fn connections_over_the_per_client_cap_are_refused_and_slots_come_back() {
    let gw = Gateway::start(Options::default().env("KAFCLAW_GATEWAY_MAX_CONNECTIONS_PER_IP", "4"));
    let healthz = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", gw.gateway);
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| connect_from("127.0.0.7", &gw.gateway))
        .collect();
    for stream in &mut held {
        stream.write_all(healthz.as_bytes()).unwrap();
        assert_eq!(read_answer(stream).unwrap().status, 200);
    }
    let mut over = connect_from("127.0.0.7", &gw.gateway);
    let refused = read_answer(&mut over).expect("a 503 before any request");
    assert_eq!(refused.status, 503);
    assert!(refused.head.contains("connection: close"));
    assert!(closed_within(&mut over, Duration::from_secs(2)));
    // Other clients, and the dashboard listener, have their own counts.
    let mut other = connect_from("127.0.0.8", &gw.gateway);
    other.write_all(healthz.as_bytes()).unwrap();
    assert_eq!(read_answer(&mut other).unwrap().status, 200);
    let mut dashboard = connect_from("127.0.0.7", &gw.dashboard);
    let dash_healthz = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", gw.dashboard);
    dashboard.write_all(dash_healthz.as_bytes()).unwrap();
    assert_eq!(read_answer(&mut dashboard).unwrap().status, 200);
    // A closed connection gives its slot back.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = connect_from("127.0.0.7", &gw.gateway);
        let _ = again.write_all(healthz.as_bytes());
        if read_answer(&mut again).is_some_and(|a| a.status == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "the slot did not come back");
        std::thread::sleep(Duration::from_millis(50));
    }
}
