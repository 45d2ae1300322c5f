//! Load generator for the WhatsApp webhook benchmark (issue 5): signed deliveries accepted per
//! second, with p50/p99 latency.
//!
//! Run (the gateway must be running with `channels.whatsapp.app_secret` set to the same secret):
//!
//! ```text
//! KAFCLAW_LOAD_APP_SECRET=… cargo run --release -p kafclaw-actors --example webhook_load -- \
//!     --url http://127.0.0.1:18790/webhooks/whatsapp --connections 32 --duration 10
//! ```
//!
//! Options: `--url URL` (default `http://127.0.0.1:18790/webhooks/whatsapp`),
//! `--connections N` (32), `--duration SECONDS` (10), `--app-secret S` (else the environment
//! variable `KAFCLAW_LOAD_APP_SECRET`), `--from NUMBER` (the sender, default `15550000001`;
//! make it an owner or allow-listed number to measure admitted messages rather than drops),
//! `--phone-number-id ID` (`109876543210`), `--threads N` (tokio workers, default 2).
//!
//! Each connection is one task with its own keep-alive HTTP/1.1 client (one TCP connection)
//! sending one delivery at a time: a webhook body carrying one text message with a unique
//! `wamid`, signed with `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, body)>`.
//! A 503 with `Retry-After` (the gateway's backlog at `store.max_pending`, or its disk full) is
//! counted apart as `busy`, and that connection waits as a provider would (the `Retry-After`
//! seconds, at most 5) before its next delivery, so a flood paces itself at the rate the
//! gateway sustains. Printed: messages/s accepted (status 200), the busy, other non-200 and
//! error counts, and latency percentiles over every request (successful or not).

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use kafclaw_actors::channel::whatsapp::sign_webhook;

/// What to run.
struct Options {
    url: String,
    connections: usize,
    duration: Duration,
    app_secret: String,
    from: String,
    phone_number_id: String,
    threads: usize,
}

/// One connection's tallies.
#[derive(Default)]
struct Tally {
    ok: u64,
    busy: u64,
    non_ok: u64,
    errors: u64,
    latencies: Vec<Duration>,
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("webhook_load: {problem}");
    eprintln!(
        "usage: webhook_load [--url URL] [--connections N] [--duration SECONDS] \
         [--app-secret S | env KAFCLAW_LOAD_APP_SECRET] [--from NUMBER] \
         [--phone-number-id ID] [--threads N]"
    );
    ExitCode::from(2)
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        url: "http://127.0.0.1:18790/webhooks/whatsapp".into(),
        connections: 32,
        duration: Duration::from_secs(10),
        app_secret: std::env::var("KAFCLAW_LOAD_APP_SECRET").unwrap_or_default(),
        from: "15550000001".into(),
        phone_number_id: "109876543210".into(),
        threads: 2,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(format!("{flag} must be a positive integer, got {v:?}"))
        };
        match flag.as_str() {
            "--url" => options.url = value()?,
            "--connections" => options.connections = number(value()?)? as usize,
            "--duration" => options.duration = Duration::from_secs(number(value()?)?),
            "--app-secret" => options.app_secret = value()?,
            "--from" => options.from = value()?,
            "--phone-number-id" => options.phone_number_id = value()?,
            "--threads" => options.threads = number(value()?)? as usize,
            "-h" | "--help" => return Err("help".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if options.app_secret.is_empty() {
        return Err("no app secret: pass --app-secret or set KAFCLAW_LOAD_APP_SECRET".into());
    }
    Ok(options)
}

/// A webhook delivery with one text message, as the Cloud API sends it.
fn webhook_body(options: &Options, wamid: &str, unix: u64) -> Vec<u8> {
    serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "WABA_ID",
            "changes": [{
                "field": "messages",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {
                        "display_phone_number": "15550000000",
                        "phone_number_id": options.phone_number_id
                    },
                    "contacts": [{"profile": {"name": "Load"}, "wa_id": options.from}],
                    "messages": [{
                        "from": options.from,
                        "id": wamid,
                        "timestamp": unix.to_string(),
                        "type": "text",
                        "text": {"body": "load test message"}
                    }]
                }
            }]
        }]
    })
    .to_string()
    .into_bytes()
}

/// One connection: sends deliveries back to back until `deadline`.
async fn connection(
    options: std::sync::Arc<Options>,
    index: usize,
    run: u64,
    deadline: Instant,
) -> Tally {
    let client = match reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(30))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            eprintln!("connection {index}: cannot build a client: {error}");
            return Tally::default();
        }
    };
    let mut tally = Tally::default();
    let mut n: u64 = 0;
    while Instant::now() < deadline {
        n += 1;
        let wamid = format!("wamid.load.{run}.{index}.{n}");
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let body = webhook_body(&options, &wamid, unix);
        let signature = sign_webhook(options.app_secret.as_bytes(), &body);
        let started = Instant::now();
        let sent = client
            .post(&options.url)
            .header("Content-Type", "application/json")
            .header("X-Hub-Signature-256", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                // Read the (small) answer so that the connection is reused.
                let _ = response.bytes().await;
                tally.latencies.push(started.elapsed());
                if status == reqwest::StatusCode::OK {
                    tally.ok += 1;
                } else if let (reqwest::StatusCode::SERVICE_UNAVAILABLE, Some(seconds)) =
                    (status, retry_after)
                {
                    tally.busy += 1;
                    let wait = Duration::from_secs(seconds.min(5));
                    let until = (Instant::now() + wait).min(deadline);
                    tokio::time::sleep_until(until.into()).await;
                } else {
                    tally.non_ok += 1;
                }
            }
            Err(error) => {
                tally.latencies.push(started.elapsed());
                tally.errors += 1;
                if tally.errors <= 3 {
                    eprintln!("connection {index}: {}", error.without_url());
                }
            }
        }
    }
    tally
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(problem) => return usage(&problem),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("webhook_load: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let options = std::sync::Arc::new(options);
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    println!(
        "webhook_load: {} connections for {} s against {}",
        options.connections,
        options.duration.as_secs(),
        options.url
    );
    let (tally, elapsed) = runtime.block_on(async {
        let started = Instant::now();
        let deadline = started + options.duration;
        let tasks: Vec<_> = (0..options.connections)
            .map(|index| tokio::spawn(connection(options.clone(), index, run, deadline)))
            .collect();
        let mut total = Tally::default();
        for task in tasks {
            if let Ok(tally) = task.await {
                total.ok += tally.ok;
                total.busy += tally.busy;
                total.non_ok += tally.non_ok;
                total.errors += tally.errors;
                total.latencies.extend(tally.latencies);
            }
        }
        (total, started.elapsed())
    });
    let mut latencies = tally.latencies;
    latencies.sort_unstable();
    let seconds = elapsed.as_secs_f64();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "accepted (200): {} in {:.2} s = {:.0} messages/s",
        tally.ok,
        seconds,
        tally.ok as f64 / seconds
    );
    println!(
        "busy (503 + Retry-After): {}   other non-200: {}   errors: {}",
        tally.busy, tally.non_ok, tally.errors
    );
    println!(
        "latency: p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms   ({} requests)",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies.last().copied().unwrap_or_default()),
        latencies.len()
    );
    if tally.ok == 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
