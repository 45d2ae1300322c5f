//! The journal's stored form, and a journaled turn resumed at every point it can stop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::*;
use crate::agent::bounds::{Refusal, RefusalReason};
use crate::agent::history::SessionHistory;
use crate::agent::turn::{
    run_journaled_turn, ToolResult, ToolRunner, TurnContext, TurnError, TurnInput, TurnLog,
    Unmetered, INTERRUPTED_RESULT,
};
use crate::provider::test_server::{turn_step, Reply, TestServer};
use crate::provider::{ChatClient, ProviderSettings, ToolCall};
use crate::store::StoreDb;

fn journal() -> TurnJournal {
    TurnJournal::new(StoreDb::temporary().unwrap().state().unwrap())
}

#[test]
fn begin_finish_reuse_and_keys_that_cannot_collide() {
    let j = journal();
    let key = TurnKey::message("whatsapp", "wamid.1");
    assert_eq!(
        j.begin(&key, "s", "whatsapp", "hi", 1_000).unwrap(),
        Resume::Fresh
    );
    assert_eq!(
        j.begin(&key, "s", "whatsapp", "hi", 2_000).unwrap(),
        Resume::Partial(vec![])
    );
    let step = Step::ToolStarted {
        call_id: "c1".into(),
        tool: "list_dir".into(),
    };
    j.record(&key, 0, &step).unwrap();
    assert_eq!(
        j.begin(&key, "s", "whatsapp", "hi", 3_000).unwrap(),
        Resume::Partial(vec![step])
    );
    assert!(matches!(
        j.begin(&key, "s", "whatsapp", "another text", 3_000),
        Err(JournalError::KeyReused)
    ));
    assert!(
        matches!(
            j.begin(&key, "another session", "whatsapp", "hi", 3_000),
            Err(JournalError::KeyReused)
        ),
        "one key never runs in two sessions (their queues would not serialise it)"
    );
    j.finish(&key, "the reply", Usage::default()).unwrap();
    assert!(
        j.steps(&key).unwrap().is_empty(),
        "a finished turn keeps its reply in the header, not its steps"
    );
    assert_eq!(
        j.begin(&key, "s", "whatsapp", "hi", 4_000).unwrap(),
        Resume::Done {
            reply: "the reply".into(),
            usage: Usage::default()
        }
    );
    assert_eq!(j.header(&key).unwrap().unwrap().created_at, 1_000);
    // Components are encoded: ":" and "/" in ids cannot make two turns share a key.
    let pairs = [
        TurnKey::message("a:b", "c"),
        TurnKey::message("a", "b:c"),
        TurnKey::message("a/b", "c"),
        TurnKey::api("a", "b:c"),
        TurnKey::message("a", "b"),
    ];
    for (i, a) in pairs.iter().enumerate() {
        for b in &pairs[i + 1..] {
            assert_ne!(a, b);
        }
        assert!(!a.as_str().contains('/'), "{a:?}");
    }
}

#[test]
fn pruning_removes_old_turns_whole_and_keeps_young_ones() {
    let j = journal();
    for (i, at) in [1_000, 2_000, 9_000].into_iter().enumerate() {
        let key = TurnKey::message("wa", &format!("m{i}"));
        j.begin(&key, "s", "wa", "t", at).unwrap();
        j.record(
            &key,
            0,
            &Step::ToolStarted {
                call_id: "c".into(),
                tool: "x".into(),
            },
        )
        .unwrap();
    }
    assert_eq!(j.oldest_created_at().unwrap(), Some(1_000));
    let mut cursor = None;
    assert_eq!(j.prune(5_000, &mut cursor, 1).unwrap(), (1, true));
    assert_eq!(j.prune(5_000, &mut cursor, 10).unwrap(), (1, false));
    assert_eq!(cursor, None, "a finished pass starts over next time");
    assert_eq!(j.prune(5_000, &mut cursor, 10).unwrap(), (0, false));
    assert_eq!(j.oldest_created_at().unwrap(), Some(9_000));
    for i in 0..2 {
        let key = TurnKey::message("wa", &format!("m{i}"));
        assert!(j.header(&key).unwrap().is_none());
        assert!(
            j.steps(&key).unwrap().is_empty(),
            "steps go with the header"
        );
    }
    assert_eq!(j.steps(&TurnKey::message("wa", "m2")).unwrap().len(), 1);
}

#[test]
fn a_resumed_turn_appends_its_history_once() {
    let history = SessionHistory::new(&StoreDb::temporary().unwrap(), 40).unwrap();
    let messages = [Message::user("q"), Message::assistant("a")];
    history.append_turn("s", Some("m:wa:1"), &messages).unwrap();
    history.append_turn("s", Some("m:wa:1"), &messages).unwrap();
    assert_eq!(history.load("s").unwrap().len(), 2);
    history.append_turn("s", Some("m:wa:2"), &messages).unwrap();
    history.append_turn("s", None, &messages).unwrap();
    assert_eq!(history.load("s").unwrap().len(), 6);
}

/// Model answers naming their request: `call-n` for the first step of a `tool` text, else
/// `answer #n`.
async fn model() -> TestServer {
    TestServer::start(|n, request| {
        let (text, step) = turn_step(&request.json()).unwrap_or_default();
        if text.contains("tool") && step == 0 {
            Reply::tool_calls(
                &[
                    (&format!("call-{n}-a"), "list_dir", "{}"),
                    (&format!("call-{n}-b"), "read_file", "{}"),
                ],
                10,
                5,
            )
        } else {
            Reply::text(&format!("answer #{n}"), 10, 5)
        }
    })
    .await
}

fn client(server: &TestServer) -> ChatClient {
    let mut settings = ProviderSettings::new(server.base_url(), "m");
    settings.max_retries = 0;
    ChatClient::new(settings).unwrap()
}

#[derive(Default)]
struct Tools {
    runs: Mutex<Vec<String>>,
    /// Every audited refusal: (reason, refused call ids).
    refusals: Mutex<Vec<(RefusalReason, Vec<String>)>>,
}

impl ToolRunner for Tools {
    async fn run(&self, call: ToolCall) -> ToolResult {
        self.runs.lock().unwrap().push(call.id.clone());
        ToolResult::output(format!("ran {}", call.id))
    }
    async fn refused(&self, refusal: &Refusal<'_>) -> Result<(), String> {
        let ids = refusal.calls.iter().map(|c| c.id.clone()).collect();
        self.refusals.lock().unwrap().push((refusal.reason, ids));
        Ok(())
    }
}

/// An in-memory journal that can stop the turn after `stop_after` steps were written.
#[derive(Default)]
struct MemoryLog {
    steps: Mutex<Vec<Step>>,
    syncs: AtomicUsize,
    interrupted: Mutex<Vec<String>>,
    audit_fails: bool,
}

impl TurnLog for MemoryLog {
    fn record(&self, step: Step) -> Result<(), crate::store::StoreError> {
        self.steps.lock().unwrap().push(step);
        Ok(())
    }
    async fn sync(&self) -> Result<(), crate::store::StoreError> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn interrupted(&self, call: &ToolCall) -> Result<(), String> {
        if self.audit_fails {
            return Err("audit down".into());
        }
        self.interrupted.lock().unwrap().push(call.id.clone());
        Ok(())
    }
}

fn input(text: &str, replay: Vec<Step>) -> TurnInput {
    TurnInput {
        history: Vec::new(),
        user_text: text.into(),
        tool_schemas: vec![
            serde_json::json!({"type": "function", "function": {"name": "list_dir"}}),
        ],
        replay,
    }
}

fn ctx() -> TurnContext {
    TurnContext::new("s", "alice", "whatsapp", "t")
}

/// A full run's journal, for cutting at every point.
async fn full_journal(server: &TestServer) -> Vec<Step> {
    let log = MemoryLog::default();
    let tools = Tools::default();
    let outcome = run_journaled_turn(
        &client(server),
        &tools,
        &Unmetered,
        &log,
        &ctx(),
        input("do tool", vec![]),
    )
    .await
    .unwrap();
    assert_eq!(outcome.reply, "answer #1");
    let steps = log.steps.into_inner().unwrap();
    // model, started a, result a, started b, result b, model.
    assert_eq!(steps.len(), 6, "{steps:?}");
    steps
}

#[tokio::test]
async fn a_resumed_turn_never_asks_a_journaled_answer_again_nor_reruns_a_tool() {
    let server = model().await;
    let steps = full_journal(&server).await;
    assert_eq!(server.request_count(), 2);
    // Cut the journal after every step and resume from there.
    for cut in 0..=steps.len() {
        let server = model().await;
        let log = MemoryLog::default();
        let tools = Tools::default();
        let replay = steps[..cut].to_vec();
        let outcome = run_journaled_turn(
            &client(&server),
            &tools,
            &Unmetered,
            &log,
            &ctx(),
            input("do tool", replay),
        )
        .await
        .unwrap();
        let asked = server.request_count();
        let ran = tools.runs.lock().unwrap().clone();
        let interrupted = log.interrupted.lock().unwrap().clone();
        match cut {
            // Nothing journaled: the whole turn.
            0 => assert_eq!(
                (asked, ran.len(), interrupted.len()),
                (2, 2, 0),
                "cut {cut}"
            ),
            // The first answer journaled: no model call for it, both tools run once.
            1 => assert_eq!(
                (asked, ran, interrupted.len()),
                (1, vec!["call-0-a".to_string(), "call-0-b".into()], 0),
                "cut {cut}"
            ),
            // Tool a started, no result: interrupted, not run; b runs.
            2 => assert_eq!(
                (asked, ran, interrupted),
                (
                    1,
                    vec!["call-0-b".to_string()],
                    vec!["call-0-a".to_string()]
                ),
                "cut {cut}"
            ),
            3 => assert_eq!(
                (asked, ran, interrupted.len()),
                (1, vec!["call-0-b".to_string()], 0),
                "cut {cut}"
            ),
            4 => assert_eq!(
                (asked, ran.len(), interrupted),
                (1, 0, vec!["call-0-b".to_string()]),
                "cut {cut}"
            ),
            5 => assert_eq!(
                (asked, ran.len(), interrupted.len()),
                (1, 0, 0),
                "cut {cut}"
            ),
            // Everything journaled: the reply without a model call or a tool.
            _ => {
                assert_eq!(
                    (asked, ran.len(), interrupted.len()),
                    (0, 0, 0),
                    "cut {cut}"
                );
                assert_eq!(outcome.reply, "answer #1");
            }
        }
        if cut == 2 || cut == 4 {
            let tool_messages: Vec<_> = outcome
                .new_messages
                .iter()
                .filter(|m| m.role == crate::provider::Role::Tool)
                .map(|m| m.content.clone().unwrap_or_default())
                .collect();
            assert!(
                tool_messages.iter().any(|c| c == INTERRUPTED_RESULT),
                "{tool_messages:?}"
            );
        }
        // The resumed run journals only what it added.
        let added = log.steps.lock().unwrap().len();
        assert_eq!(cut + added, 6, "cut {cut}");
    }
}

#[tokio::test]
async fn steps_are_durable_before_the_action_that_depends_on_them() {
    /// Fails the test when a tool runs before its start was synced.
    struct Checked<'a> {
        log: &'a MemoryLog,
    }
    impl ToolRunner for Checked<'_> {
        async fn run(&self, call: ToolCall) -> ToolResult {
            let steps = self.log.steps.lock().unwrap().len();
            // model + (started[, result, started]) … each start synced right away.
            assert!(
                self.log.syncs.load(Ordering::SeqCst) >= steps.div_ceil(2),
                "{steps}"
            );
            ToolResult::output(call.id)
        }
        async fn refused(&self, _: &Refusal<'_>) -> Result<(), String> {
            Ok(())
        }
    }
    let server = model().await;
    let log = MemoryLog::default();
    run_journaled_turn(
        &client(&server),
        &Checked { log: &log },
        &Unmetered,
        &log,
        &ctx(),
        input("do tool", vec![]),
    )
    .await
    .unwrap();
    // Model answer, start a, start b, results before the second model call; the final answer
    // is synced by the caller with the turn's conclusion.
    assert_eq!(log.syncs.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn an_interruption_that_cannot_be_audited_stops_the_turn() {
    let server = model().await;
    let steps = full_journal(&server).await;
    let server = model().await;
    let log = MemoryLog {
        audit_fails: true,
        ..Default::default()
    };
    let tools = Tools::default();
    let result = run_journaled_turn(
        &client(&server),
        &tools,
        &Unmetered,
        &log,
        &ctx(),
        input("do tool", steps[..2].to_vec()),
    )
    .await;
    assert!(
        matches!(result, Err(TurnError::AuditUnavailable(_))),
        "{result:?}"
    );
    assert!(tools.runs.lock().unwrap().is_empty());
    assert_eq!(server.request_count(), 0);
}

#[tokio::test]
async fn a_journal_that_does_not_fit_the_turn_is_refused() {
    let server = model().await;
    let replay = vec![Step::ToolStarted {
        call_id: "x".into(),
        tool: "y".into(),
    }];
    let result = run_journaled_turn(
        &client(&server),
        &Tools::default(),
        &Unmetered,
        &MemoryLog::default(),
        &ctx(),
        input("do tool", replay),
    )
    .await;
    assert!(
        matches!(result, Err(TurnError::JournalMismatch)),
        "{result:?}"
    );
    assert_eq!(server.request_count(), 0);
}

/// Model answers: the first step of a `many` text asks for five calls, then a text.
async fn many_calls_model() -> TestServer {
    TestServer::start(|n, request| {
        let (text, step) = turn_step(&request.json()).unwrap_or_default();
        if text.contains("many") && step == 0 {
            let ids: Vec<String> = (0..5).map(|i| format!("c{i}")).collect();
            let calls: Vec<(&str, &str, &str)> = ids
                .iter()
                .map(|id| (id.as_str(), "list_dir", "{}"))
                .collect();
            Reply::tool_calls(&calls, 10, 5)
        } else {
            Reply::text(&format!("answer #{n}"), 10, 5)
        }
    })
    .await
}

fn capped_ctx() -> TurnContext {
    let mut ctx = ctx();
    ctx.max_tool_calls_per_round = 2;
    ctx
}

#[tokio::test]
async fn refused_calls_are_journaled_and_a_resumed_turn_never_runs_them() {
    let server = many_calls_model().await;
    let log = MemoryLog::default();
    let tools = Tools::default();
    let outcome = run_journaled_turn(
        &client(&server),
        &tools,
        &Unmetered,
        &log,
        &capped_ctx(),
        input("many", vec![]),
    )
    .await
    .unwrap();
    assert_eq!(*tools.runs.lock().unwrap(), ["c0", "c1"]);
    let refusals = tools.refusals.lock().unwrap().clone();
    assert_eq!(
        refusals,
        [(
            RefusalReason::MaxToolCallsPerRound,
            vec!["c2".to_string(), "c3".into(), "c4".into()]
        )]
    );
    let results: Vec<String> = outcome
        .new_messages
        .iter()
        .filter(|m| m.role == crate::provider::Role::Tool)
        .map(|m| m.content.clone().unwrap_or_default())
        .collect();
    assert_eq!(results.len(), 5);
    assert!(results[2..].iter().all(|r| r.starts_with("refused:")));
    let steps = log.steps.into_inner().unwrap();
    // model, (started, result) × 2, refused × 3, model.
    assert_eq!(steps.len(), 9, "{steps:?}");
    assert!(matches!(&steps[5], Step::ToolRefused { call_id, .. } if call_id == "c2"));

    for cut in 0..=steps.len() {
        let server = many_calls_model().await;
        let tools = Tools::default();
        let outcome = run_journaled_turn(
            &client(&server),
            &tools,
            &Unmetered,
            &MemoryLog::default(),
            &capped_ctx(),
            input("many", steps[..cut].to_vec()),
        )
        .await
        .unwrap();
        let ran = tools.runs.lock().unwrap().clone();
        assert!(
            ran.iter().all(|id| id == "c0" || id == "c1"),
            "cut {cut}: {ran:?}"
        );
        let audited = tools.refusals.lock().unwrap().len();
        // Refusals not yet journaled are audited again (at least once); journaled ones not.
        assert_eq!(audited, usize::from(cut < 8), "cut {cut}");
        let refused = outcome
            .new_messages
            .iter()
            .filter(|m| {
                m.content
                    .as_deref()
                    .is_some_and(|c| c.starts_with("refused:"))
            })
            .count();
        assert_eq!(refused, 3, "cut {cut}");
    }

    // A journal whose refusals the bounds would not make now (the cap was raised since) is
    // still obeyed: the refused calls stay refused.
    let server = many_calls_model().await;
    let tools = Tools::default();
    let mut raised = ctx();
    raised.max_tool_calls_per_round = 32;
    run_journaled_turn(
        &client(&server),
        &tools,
        &Unmetered,
        &MemoryLog::default(),
        &raised,
        input("many", steps[..8].to_vec()),
    )
    .await
    .unwrap();
    assert!(tools.runs.lock().unwrap().is_empty());
    assert!(tools.refusals.lock().unwrap().is_empty());
}

#[tokio::test]
async fn spent_tool_time_refuses_the_rest_and_ends_the_turn_even_when_resumed() {
    /// Each call takes 300 ms (the tool's own work, not a wait for readiness).
    #[derive(Default)]
    struct Slow {
        inner: Tools,
    }
    impl ToolRunner for Slow {
        async fn run(&self, call: ToolCall) -> ToolResult {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            self.inner.run(call).await
        }
        async fn refused(&self, refusal: &Refusal<'_>) -> Result<(), String> {
            self.inner.refused(refusal).await
        }
    }
    let mut ctx = ctx();
    ctx.max_turn_time = std::time::Duration::from_millis(500);
    let server = many_calls_model().await;
    let log = MemoryLog::default();
    let tools = Slow::default();
    let outcome = run_journaled_turn(
        &client(&server),
        &tools,
        &Unmetered,
        &log,
        &ctx,
        input("many", vec![]),
    )
    .await
    .unwrap();
    assert_eq!(*tools.inner.runs.lock().unwrap(), ["c0", "c1"]);
    let refusals = tools.inner.refusals.lock().unwrap().clone();
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].0, RefusalReason::MaxTurnSeconds);
    assert_eq!(refusals[0].1.len(), 3);
    assert!(outcome.limit_hit);
    assert!(
        outcome.reply.contains("seconds of tool time"),
        "{}",
        outcome.reply
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].json()["tool_choice"], "none");

    // Resumed after both results were journaled but before the refusals were: the journaled
    // tool time decides the same way, so nothing runs again.
    let steps = log.steps.into_inner().unwrap();
    let server = many_calls_model().await;
    let tools = Slow::default();
    let outcome = run_journaled_turn(
        &client(&server),
        &tools,
        &Unmetered,
        &MemoryLog::default(),
        &ctx,
        input("many", steps[..5].to_vec()),
    )
    .await
    .unwrap();
    assert!(tools.inner.runs.lock().unwrap().is_empty());
    assert_eq!(tools.inner.refusals.lock().unwrap()[0].1.len(), 3);
    assert!(outcome.limit_hit);
}
