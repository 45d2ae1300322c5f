//! Turn overhead of the agent against a local, instant chat-completions server.
//!
//! Run: `cargo run --release -p kafclaw-actors --example agent_bench [turns]`
//!
//! One turn is what the gateway's agent does per message, minus the actor hop: load the
//! session's history from the store, assemble the system prompt from the workspace, run the
//! turn (budget check, model call, usage record, tool round when scripted), append the new
//! messages to the history. Reported per scenario and concurrency (1 and 32 sessions):
//! turns per second, turn latency, and overhead = turn latency − time inside the provider
//! client (so the HTTP round trip to the instant server is excluded from "overhead" and shown
//! on its own as "model").

#![forbid(unsafe_code)]

#[path = "../src/provider/test_server.rs"]
mod test_server;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafclaw_actors::agent::{
    run_turn, system_prompt, Budget, BudgetSettings, SenderKind, SessionHistory, ToolResult,
    ToolRunner, TurnContext,
};
use kafclaw_actors::provider::{ChatClient, ProviderSettings, ToolCall};
use kafclaw_actors::store::StoreDb;
use test_server::{Reply, TestServer};

/// Answers every tool call at once.
struct InstantTools;

impl ToolRunner for InstantTools {
    async fn run(&self, call: ToolCall) -> ToolResult {
        ToolResult::output(format!("{} ok", call.name))
    }
    async fn refused(&self, _: &kafclaw_actors::agent::Refusal<'_>) -> Result<(), String> {
        Ok(())
    }
}

/// Everything one turn needs, shared by all sessions.
struct Bench {
    client: ChatClient,
    history: SessionHistory,
    budget: Budget,
    workspace: PathBuf,
    schemas: Vec<serde_json::Value>,
}

/// Per-turn measurements.
#[derive(Default)]
struct Samples {
    latency: Vec<Duration>,
    overhead: Vec<Duration>,
    model: Vec<Duration>,
}

impl Bench {
    async fn turn(&self, session: &str, n: usize) -> (Duration, Duration) {
        let started = Instant::now();
        let stored = self.history.load(session).expect("history load");
        let mut ctx = TurnContext::new(session, "bench-sender", "bench", format!("trace-{n}"));
        ctx.system_prompt = Some(system_prompt(&self.workspace, SenderKind::Owner, "bench"));
        let outcome = run_turn(
            &self.client,
            &InstantTools,
            &self.budget,
            &ctx,
            stored,
            format!("message {n}"),
            self.schemas.clone(),
        )
        .await
        .expect("turn");
        self.history
            .append(session, &outcome.new_messages)
            .expect("history append");
        let latency = started.elapsed();
        let model: Duration = outcome.model_calls.iter().map(|c| c.elapsed).sum();
        (latency, model)
    }
}

async fn run(bench: Arc<Bench>, sessions: usize, turns: usize, label: &str) {
    let per_session = turns / sessions;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..sessions {
        let bench = Arc::clone(&bench);
        let session = format!("{label}-{sessions}-{s}");
        tasks.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            for n in 0..per_session {
                let (latency, model) = bench.turn(&session, n).await;
                samples.latency.push(latency);
                samples.model.push(model);
                samples.overhead.push(latency.saturating_sub(model));
            }
            samples
        }));
    }
    let mut all = Samples::default();
    for task in tasks {
        let samples = task.await.expect("session task");
        all.latency.extend(samples.latency);
        all.overhead.extend(samples.overhead);
        all.model.extend(samples.model);
    }
    let wall = started.elapsed();
    let done = all.latency.len();
    println!(
        "{label:<9} sessions={sessions:<3} turns={done:<6} {:>8.0} turns/s  latency p50={} p99={}  model p50={} p99={}  overhead p50={} p99={}",
        done as f64 / wall.as_secs_f64(),
        ms(percentile(&mut all.latency, 50.0)),
        ms(percentile(&mut all.latency, 99.0)),
        ms(percentile(&mut all.model, 50.0)),
        ms(percentile(&mut all.model, 99.0)),
        ms(percentile(&mut all.overhead, 50.0)),
        ms(percentile(&mut all.overhead, 99.0)),
    );
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3}ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let turns: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3200);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let workspace = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            workspace.path().join("SOUL.md"),
            "Calm, brief, careful.\n".repeat(40),
        )
        .expect("SOUL.md");
        std::fs::write(workspace.path().join("IDENTITY.md"), "Name: Claw\n").expect("IDENTITY.md");
        let db = StoreDb::temporary().expect("store");
        let schemas = vec![serde_json::json!({"type": "function", "function": {
            "name": "read_file", "description": "read a file",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}
        }})];

        for (label, tool_round) in [("plain", false), ("tool", true)] {
            // Instant model: with a tool round, a request ending in the user's message asks for
            // one tool call and the one after the tool result answers.
            let server = TestServer::start(move |_, request| {
                let asks_tool = tool_round
                    && request.json()["messages"]
                        .as_array()
                        .and_then(|m| m.last())
                        .is_some_and(|m| m["role"] == "user");
                if asks_tool {
                    Reply::tool_calls(&[("call_1", "read_file", r#"{"path":"a"}"#)], 100, 10)
                } else {
                    Reply::text("ok", 100, 10)
                }
            })
            .await;
            let mut settings =
                ProviderSettings::new(server.base_url(), "bench-model").with_api_key("sk-bench");
            settings.max_retries = 0;
            let bench = Arc::new(Bench {
                client: ChatClient::new(settings).expect("client"),
                history: SessionHistory::new(&db, 40).expect("history"),
                budget: Budget::new(
                    &db,
                    BudgetSettings {
                        daily_tokens: Some(u64::MAX),
                        per_channel: Some(u64::MAX),
                        per_sender: Some(u64::MAX),
                    },
                )
                .expect("budget"),
                workspace: workspace.path().to_path_buf(),
                schemas: schemas.clone(),
            });
            // Warm-up: connections, history filled to its bound.
            run(Arc::clone(&bench), 1, 50, "warmup").await;
            for sessions in [1usize, 32] {
                run(Arc::clone(&bench), sessions, turns, label).await;
            }
        }
    });
}
