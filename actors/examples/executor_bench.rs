//! Throughput of the tool policy and of `exec`, end to end, against a bare spawn.
//!
//! `cargo run --release -p kafclaw-actors --example executor_bench`

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use actix::prelude::*;
use kafclaw_actors::audit::{AppendRecord, AuditError, AuditReceipt};
use kafclaw_actors::executor::{
    kernel_support, run_sandboxed, ExecSettings, ExecuteTool, ExecutorLinks, HighRiskDenied,
    KernelJail, OutcomeStatus, SandboxMode, SandboxStatus, ToolExecutor,
};
use kafclaw_actors::paths::Home;
use kafclaw_actors::policy::{decide, PolicyInput, PolicySettings, Restriction, SenderKind};

/// An audit log that accepts everything at once (the chainer's cost is not measured here).
struct NullAudit;
impl Actor for NullAudit {
    type Context = Context<Self>;
}
impl Handler<AppendRecord> for NullAudit {
    type Result = Result<AuditReceipt, AuditError>;
    fn handle(&mut self, _: AppendRecord, _: &mut Context<Self>) -> Self::Result {
        Ok(AuditReceipt {
            seq: 0,
            hash: String::new(),
        })
    }
}
struct NullSignals;
impl Actor for NullSignals {
    type Context = Context<Self>;
}
impl Handler<HighRiskDenied> for NullSignals {
    type Result = ();
    fn handle(&mut self, _: HighRiskDenied, _: &mut Context<Self>) {}
}

fn per_second(n: u64, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

#[actix_rt::main]
async fn main() {
    // Policy decisions.
    let settings = PolicySettings::default();
    let restriction = Restriction {
        max_tier: Some(1),
        denied_tools: ["list_dir".to_string()]
            .into_iter()
            .collect::<BTreeSet<_>>(),
    };
    let tools = [("read_file", 0u8), ("write_file", 1), ("exec", 2)];
    let n = 10_000_000u64;
    let started = Instant::now();
    let mut allowed = 0u64;
    for i in 0..n {
        let (tool, tier) = tools[(i % 3) as usize];
        let input = PolicyInput {
            sender: if i.is_multiple_of(2) {
                SenderKind::Owner
            } else {
                SenderKind::External
            },
            channel: "whatsapp",
            tool: black_box(tool),
            tier: black_box(tier),
            restriction: &restriction,
            sender_blocked: black_box(false),
            settings: &settings,
        };
        if matches!(
            decide(black_box(&input)),
            kafclaw_actors::policy::Decision::Allow
        ) {
            allowed += 1;
        }
    }
    let elapsed = started.elapsed();
    println!(
        "policy decide:            {:>12.0} decisions/s ({n} in {:?}, {allowed} allowed)",
        per_second(n, elapsed),
        elapsed
    );

    let dir = tempfile::tempdir().expect("temporary directory");
    let home = Home::new(dir.path());
    home.ensure_state_dirs().expect("state dirs");
    let workspace = home.default_workspace();
    let work_repo = home.default_work_repo();
    std::fs::create_dir_all(&workspace).expect("workspace");
    std::fs::create_dir_all(&work_repo).expect("work repo");
    let (executor, _) = ToolExecutor::new(
        &ExecSettings::default(),
        PolicySettings::default(),
        (&workspace, &work_repo),
        &home,
        kernel_support(),
        ExecutorLinks {
            audit: NullAudit.start().recipient(),
            high_risk: Some(NullSignals.start().recipient()),
            skills: None,
            media: None,
        },
    )
    .expect("the default allow-list holds no launcher");
    let jail = KernelJail::new(
        &SandboxStatus::decide(SandboxMode::Auto, kernel_support()).expect("auto always decides"),
        executor.checker().confinement(),
    );
    let checker = executor.checker().clone();

    // The checker alone.
    let n = 100_000u64;
    let started = Instant::now();
    for _ in 0..n {
        black_box(checker.check(black_box("echo hello world"), None).is_ok());
    }
    let elapsed = started.elapsed();
    println!(
        "exec check (echo):        {:>12.0} checks/s",
        per_second(n, elapsed)
    );

    // The sandbox alone, then the actor end to end, then a bare spawn.
    let n = 2_000u64;
    let checked = checker.check("echo hello", None).expect("echo is allowed");
    let limits = ExecSettings::default().sandbox_limits();
    let started = Instant::now();
    for _ in 0..n {
        let report = run_sandboxed(&checked, &work_repo, &jail, &limits)
            .await
            .expect("echo runs");
        black_box(report);
    }
    let sandbox = per_second(n, started.elapsed());
    println!(
        "sandbox run (echo):       {sandbox:>12.0} runs/s (kernel jail: {})",
        jail.enforces()
    );
    let open = KernelJail::unconfined(&work_repo);
    let started = Instant::now();
    for _ in 0..n {
        let report = run_sandboxed(&checked, &work_repo, &open, &limits)
            .await
            .expect("echo runs");
        black_box(report);
    }
    let unconfined = per_second(n, started.elapsed());
    println!("sandbox run, no Landlock: {unconfined:>12.0} runs/s");

    let addr = executor.start();
    let started = Instant::now();
    for i in 0..n {
        let outcome = addr
            .send(ExecuteTool {
                call_id: i.to_string(),
                tool: "exec".into(),
                arguments: serde_json::json!({"command": "echo hello"}),
                sender: SenderKind::Owner,
                sender_id: "bench".into(),
                channel: "cli".into(),
                session: "bench".into(),
                restriction: Restriction::default(),
                sender_blocked: false,
                approved_by: None,
            })
            .await
            .expect("mailbox open")
            .expect("audited");
        assert_eq!(outcome.status, OutcomeStatus::Completed);
    }
    let actor = per_second(n, started.elapsed());
    println!("ExecuteTool e2e (echo):   {actor:>12.0} calls/s (policy + check + 2 audit sends + sandbox)");

    let started = Instant::now();
    for _ in 0..n {
        let out = std::process::Command::new("/bin/echo")
            .arg("hello")
            .output()
            .expect("echo runs");
        black_box(out);
    }
    let bare = per_second(n, started.elapsed());
    println!("bare std spawn /bin/echo: {bare:>12.0} runs/s");
    println!("ExecuteTool / bare spawn: {:.2}x", actor / bare);
}
