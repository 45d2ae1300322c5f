//! Legitimate throughput during an authentication-failure storm (issue 7).
//!
//! Run (the gateway must listen on loopback with an admin token configured):
//!
//! ```text
//! KAFCLAW_GATEWAY_AUTH_TOKEN=… cargo run --release -p kafclaw-actors --example auth_storm -- \
//!     --url http://127.0.0.1:18791/api/v1/status --connections 16 --storm-connections 16 --duration 10
//! ```
//!
//! Options: `--url URL` (default `http://127.0.0.1:18791/api/v1/status`), `--token T` (else the
//! environment variable `KAFCLAW_GATEWAY_AUTH_TOKEN`), `--connections N` legitimate connections
//! (16), `--storm-connections M` attacking connections (16), `--duration SECONDS` per phase (10),
//! `--legit-ip IP` (`127.0.0.2`), `--storm-ip IP` (`127.0.0.1`), `--threads N` (tokio workers, 2).
//!
//! Phase 1: N connections bound to the legitimate source address send authenticated GETs back
//! to back for D seconds. Phase 2: the same legitimate load while M connections bound to the
//! storm source address send the same GET with a wrong token as fast as they can. After
//! `security.auth_lockout.max_failures` failures the storm's address is locked out and gets 429
//! instead of 401 (both counted). Each connection is one task with its own keep-alive client.
//! Printed: legitimate requests/s alone and under the storm, their ratio (goal ≥ 0.8), latency
//! percentiles of the legitimate requests, and the storm's rate by status.

#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to run.
struct Options {
    url: String,
    token: String,
    connections: usize,
    storm_connections: usize,
    duration: Duration,
    legit_ip: IpAddr,
    storm_ip: IpAddr,
    threads: usize,
}

/// One connection's tallies, by outcome.
#[derive(Default)]
struct Tally {
    ok: u64,
    unauthorized: u64,
    locked_out: u64,
    other: u64,
    errors: u64,
    latencies: Vec<Duration>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.ok += other.ok;
        self.unauthorized += other.unauthorized;
        self.locked_out += other.locked_out;
        self.other += other.other;
        self.errors += other.errors;
        self.latencies.extend(other.latencies);
    }

    fn total(&self) -> u64 {
        self.ok + self.unauthorized + self.locked_out + self.other + self.errors
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("auth_storm: {problem}");
    eprintln!(
        "usage: auth_storm [--url URL] [--token T | env KAFCLAW_GATEWAY_AUTH_TOKEN] \
         [--connections N] [--storm-connections M] [--duration SECONDS] \
         [--legit-ip IP] [--storm-ip IP] [--threads N]"
    );
    ExitCode::from(2)
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        url: "http://127.0.0.1:18791/api/v1/status".into(),
        token: std::env::var("KAFCLAW_GATEWAY_AUTH_TOKEN").unwrap_or_default(),
        connections: 16,
        storm_connections: 16,
        duration: Duration::from_secs(10),
        legit_ip: IpAddr::from([127, 0, 0, 2]),
        storm_ip: IpAddr::from([127, 0, 0, 1]),
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
        let ip = |v: String| {
            v.parse::<IpAddr>()
                .map_err(|_| format!("{flag} must be an IP address, got {v:?}"))
        };
        match flag.as_str() {
            "--url" => options.url = value()?,
            "--token" => options.token = value()?,
            "--connections" => options.connections = number(value()?)? as usize,
            "--storm-connections" => options.storm_connections = number(value()?)? as usize,
            "--duration" => options.duration = Duration::from_secs(number(value()?)?),
            "--legit-ip" => options.legit_ip = ip(value()?)?,
            "--storm-ip" => options.storm_ip = ip(value()?)?,
            "--threads" => options.threads = number(value()?)? as usize,
            "-h" | "--help" => return Err("help".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if options.token.is_empty() {
        return Err("no token: pass --token or set KAFCLAW_GATEWAY_AUTH_TOKEN".into());
    }
    if options.legit_ip == options.storm_ip {
        return Err("--legit-ip and --storm-ip must differ".into());
    }
    Ok(options)
}

/// One connection from `source`: GETs with `Authorization: Bearer {token}` until `deadline`.
async fn connection(
    url: Arc<str>,
    source: IpAddr,
    authorization: Arc<str>,
    label: &'static str,
    index: usize,
    deadline: Instant,
) -> Tally {
    let client = match reqwest::Client::builder()
        .local_address(source)
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(30))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            eprintln!("{label} {index}: cannot build a client: {error}");
            return Tally::default();
        }
    };
    let mut tally = Tally::default();
    while Instant::now() < deadline {
        let started = Instant::now();
        let sent = client
            .get(&*url)
            .header("Authorization", &*authorization)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                // Read the (small) answer so that the connection is reused.
                let _ = response.bytes().await;
                tally.latencies.push(started.elapsed());
                match status {
                    200 => tally.ok += 1,
                    401 => tally.unauthorized += 1,
                    429 => tally.locked_out += 1,
                    other => {
                        tally.other += 1;
                        if tally.other <= 3 {
                            eprintln!("{label} {index}: unexpected status {other}");
                        }
                    }
                }
            }
            Err(error) => {
                tally.errors += 1;
                if tally.errors <= 3 {
                    eprintln!("{label} {index}: {}", error.without_url());
                }
            }
        }
    }
    tally
}

/// Runs `count` connections from `source` until `deadline`; their summed tally.
fn spawn_load(
    options: &Options,
    source: IpAddr,
    token: &str,
    label: &'static str,
    count: usize,
    deadline: Instant,
) -> Vec<tokio::task::JoinHandle<Tally>> {
    let url: Arc<str> = options.url.as_str().into();
    let authorization: Arc<str> = format!("Bearer {token}").into();
    (0..count)
        .map(|index| {
            tokio::spawn(connection(
                Arc::clone(&url),
                source,
                Arc::clone(&authorization),
                label,
                index,
                deadline,
            ))
        })
        .collect()
}

async fn join(tasks: Vec<tokio::task::JoinHandle<Tally>>) -> Tally {
    let mut total = Tally::default();
    for task in tasks {
        if let Ok(tally) = task.await {
            total.add(tally);
        }
    }
    total
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Prints one phase's legitimate load; returns its 200s per second.
fn report_legit(label: &str, tally: &mut Tally, seconds: f64) -> f64 {
    tally.latencies.sort_unstable();
    let rate = tally.ok as f64 / seconds;
    println!(
        "{label:<22} {rate:>9.0} req/s (200: {}, 401: {}, 429: {}, other: {}, errors: {})   \
         latency p50 {:.2} ms  p99 {:.2} ms",
        tally.ok,
        tally.unauthorized,
        tally.locked_out,
        tally.other,
        tally.errors,
        ms(percentile(&tally.latencies, 50.0)),
        ms(percentile(&tally.latencies, 99.0)),
    );
    rate
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
            eprintln!("auth_storm: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "auth_storm: {} legitimate connections from {}, {} storm connections from {}, {} s per phase, {}",
        options.connections,
        options.legit_ip,
        options.storm_connections,
        options.storm_ip,
        options.duration.as_secs(),
        options.url
    );
    let wrong_token = "kc_wrong-token-for-the-auth-storm-benchmark-000000";
    let (mut alone, alone_s, mut under, mut storm, storm_s) = runtime.block_on(async {
        // Phase 1: the legitimate load alone.
        let started = Instant::now();
        let tasks = spawn_load(
            &options,
            options.legit_ip,
            &options.token,
            "legit",
            options.connections,
            started + options.duration,
        );
        let alone = join(tasks).await;
        let alone_s = started.elapsed().as_secs_f64();

        // Phase 2: the same load with the storm running alongside.
        let started = Instant::now();
        let deadline = started + options.duration;
        let storm_tasks = spawn_load(
            &options,
            options.storm_ip,
            wrong_token,
            "storm",
            options.storm_connections,
            deadline,
        );
        let legit_tasks = spawn_load(
            &options,
            options.legit_ip,
            &options.token,
            "legit",
            options.connections,
            deadline,
        );
        let under = join(legit_tasks).await;
        let storm = join(storm_tasks).await;
        let storm_s = started.elapsed().as_secs_f64();
        (alone, alone_s, under, storm, storm_s)
    });
    let alone_rate = report_legit("legit alone:", &mut alone, alone_s);
    let under_rate = report_legit("legit under storm:", &mut under, storm_s);
    storm.latencies.sort_unstable();
    println!(
        "{:<22} {:>9.0} req/s (401: {}, 429: {}, 200: {}, other: {}, errors: {})   latency p50 {:.2} ms  p99 {:.2} ms",
        "storm (bad token):",
        storm.total() as f64 / storm_s,
        storm.unauthorized,
        storm.locked_out,
        storm.ok,
        storm.other,
        storm.errors,
        ms(percentile(&storm.latencies, 50.0)),
        ms(percentile(&storm.latencies, 99.0)),
    );
    let ratio = if alone_rate > 0.0 {
        under_rate / alone_rate
    } else {
        0.0
    };
    println!("ratio legit under storm / alone: {ratio:.2}   (goal >= 0.8)");
    if alone.ok == 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
