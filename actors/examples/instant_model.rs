//! A standalone, instant chat-completions server for end-to-end benchmarks (issue 6).
//!
//! Run: `cargo run --release -p kafclaw-actors --example instant_model -- [PORT] [--threads N]`
//!
//! Listens on `127.0.0.1:PORT` (default 0 = any free port) and prints
//! `listening http://127.0.0.1:PORT/v1` on stdout once it accepts connections. Every `POST`
//! (whatever the path) gets the same 200 chat completion: the text `ok` with usage
//! (12 prompt + 3 completion tokens). Keep-alive HTTP/1.1, one task per connection,
//! `Content-Length` bodies only (what the gateway's client and wrk send).
//!
//! It records its own service time per POST — from the moment the whole request is in memory to
//! the moment the reply is written to the socket — in a 1 µs-resolution histogram:
//! `GET /stats` answers `{"requests":n,"p50_us":…,"p99_us":…,"max_us":…}` and `GET /stats?reset`
//! does the same and then clears the histogram. Any other GET gets 404.
//!
//! `--threads N` sets the tokio worker threads (default 1, to leave the cores of a small machine
//! to the process under test).

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Histogram buckets: one per microsecond up to this bound, the last one holds everything above.
const BUCKETS: usize = 20_000;

/// Service-time histogram, shared by every connection.
struct Stats {
    buckets: Vec<AtomicU64>,
    max_us: AtomicU64,
}

impl Stats {
    fn new() -> Self {
        Self {
            buckets: (0..=BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max_us: AtomicU64::new(0),
        }
    }

    fn record(&self, micros: u64) {
        let index = (micros as usize).min(BUCKETS);
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(micros, Ordering::Relaxed);
    }

    /// The summary as JSON; clears the histogram when `reset`.
    fn summary(&self, reset: bool) -> String {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| {
                if reset {
                    b.swap(0, Ordering::Relaxed)
                } else {
                    b.load(Ordering::Relaxed)
                }
            })
            .collect();
        let max = if reset {
            self.max_us.swap(0, Ordering::Relaxed)
        } else {
            self.max_us.load(Ordering::Relaxed)
        };
        let total: u64 = counts.iter().sum();
        let percentile = |p: f64| -> u64 {
            if total == 0 {
                return 0;
            }
            let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (micros, count) in counts.iter().enumerate() {
                seen += count;
                if seen >= rank {
                    return micros as u64;
                }
            }
            BUCKETS as u64
        };
        serde_json::json!({
            "requests": total,
            "p50_us": percentile(50.0),
            "p99_us": percentile(99.0),
            "max_us": max,
        })
        .to_string()
    }
}

/// The fixed answer to every POST, head and body, built once.
fn completion_reply() -> Vec<u8> {
    let body = serde_json::json!({
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": "bench",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "ok"},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    })
    .to_string();
    response(200, "OK", &body)
}

fn response(status: u16, reason: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: keep-alive\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One parsed request head: method, target, body length, where the body starts.
struct Head {
    post: bool,
    target: String,
    length: usize,
    body_start: usize,
}

fn parse_head(buffer: &[u8]) -> Option<Head> {
    let end = memchr::memmem::find(buffer, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buffer[..end]);
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default();
    let target = request_line.next().unwrap_or_default().to_owned();
    let length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    Some(Head {
        post: method == "POST",
        target,
        length,
        body_start: end + 4,
    })
}

/// Serves one keep-alive connection until the peer closes it.
async fn serve(mut stream: TcpStream, reply: Arc<Vec<u8>>, stats: Arc<Stats>) {
    let mut buffer: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Read until one whole request (head and body) is buffered.
        let head = loop {
            if let Some(head) = parse_head(&buffer) {
                if buffer.len() >= head.body_start + head.length {
                    break head;
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let started = Instant::now();
        buffer.drain(..head.body_start + head.length);
        let written = if head.post {
            let written = stream.write_all(&reply).await;
            stats.record(started.elapsed().as_micros() as u64);
            written
        } else if head.target == "/stats" || head.target.starts_with("/stats?") {
            let summary = stats.summary(head.target.contains("reset"));
            stream.write_all(&response(200, "OK", &summary)).await
        } else {
            let body = r#"{"error":{"message":"POST only","type":"bench"}}"#;
            stream.write_all(&response(404, "Not Found", body)).await
        };
        if written.is_err() {
            return;
        }
    }
}

fn main() -> ExitCode {
    let mut port: u16 = 0;
    let mut threads: usize = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let parsed = match arg.as_str() {
            "--threads" => args
                .next()
                .and_then(|v| v.parse().ok())
                .filter(|n| *n > 0)
                .map(|n| threads = n),
            other => other.parse().ok().map(|p| port = p),
        };
        if parsed.is_none() {
            eprintln!("usage: instant_model [PORT] [--threads N]   (bad argument {arg:?})");
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("instant_model: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("instant_model: cannot listen on 127.0.0.1:{port}: {error}");
                return ExitCode::FAILURE;
            }
        };
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(error) => {
                eprintln!("instant_model: {error}");
                return ExitCode::FAILURE;
            }
        };
        println!("listening http://{addr}/v1");
        let reply = Arc::new(completion_reply());
        let stats = Arc::new(Stats::new());
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve(stream, Arc::clone(&reply), Arc::clone(&stats)));
                }
                Err(error) => eprintln!("instant_model: accept: {error}"),
            }
        }
    })
}
