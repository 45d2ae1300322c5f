use std::sync::Mutex;
use std::time::{Duration, Instant};

use time::macros::date;

use super::budget::{Budget, BudgetExceeded, BudgetLimit, BudgetSettings};
use super::history::{trim, SessionHistory};
use super::turn::{run_turn, ToolResult, ToolRunner, TurnContext, TurnError, Unmetered};
use super::*;
use crate::provider::test_server::{Reply, TestServer};
use crate::provider::{ChatClient, Message, ProviderSettings, Role, ToolCall, Usage};
use crate::store::StoreDb;

const KEY: &str = "sk-agent-SECRET-7777";

fn client(server: &TestServer) -> ChatClient {
    let mut settings = ProviderSettings::new(server.base_url(), "test-model").with_api_key(KEY);
    settings.backoff_base_ms = 1;
    settings.max_retries = 2;
    ChatClient::new(settings).unwrap()
}

fn ctx(session: &str) -> TurnContext {
    let mut ctx = TurnContext::new(session, "alice", "whatsapp", "trace-1");
    ctx.system_prompt = Some("you are a test".into());
    ctx
}

fn schemas() -> Vec<serde_json::Value> {
    vec![
        serde_json::json!({"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}),
        serde_json::json!({"type": "function", "function": {"name": "exec", "parameters": {"type": "object"}}}),
    ]
}

/// Runs every call it gets, except the names in `deny`, and remembers them.
#[derive(Default)]
struct ScriptedTools {
    deny: Vec<&'static str>,
    calls: Mutex<Vec<ToolCall>>,
    /// Every audited refusal: (reason, how many calls).
    refused: Mutex<Vec<(RefusalReason, usize)>>,
}

impl ScriptedTools {
    fn denying(deny: &[&'static str]) -> Self {
        Self {
            deny: deny.to_vec(),
            ..Default::default()
        }
    }
    fn calls(&self) -> Vec<ToolCall> {
        self.calls.lock().unwrap().clone()
    }
}

impl ToolRunner for ScriptedTools {
    async fn run(&self, call: ToolCall) -> ToolResult {
        self.calls.lock().unwrap().push(call.clone());
        if self.deny.contains(&call.name.as_str()) {
            ToolResult::denied("tier 2 tools are not allowed for external senders")
        } else {
            ToolResult::output(format!("output of {} {}", call.name, call.arguments))
        }
    }
    async fn refused(&self, refusal: &Refusal<'_>) -> Result<(), String> {
        self.refused
            .lock()
            .unwrap()
            .push((refusal.reason, refusal.calls.len()));
        Ok(())
    }
}

fn temp_budget(settings: BudgetSettings) -> Budget {
    Budget::new(&StoreDb::temporary().unwrap(), settings).unwrap()
}

#[tokio::test]
async fn plain_reply_returns_text_usage_and_the_messages_to_store() {
    let server = TestServer::scripted(vec![Reply::text("hello alice", 30, 4)]).await;
    let history = vec![
        Message::user("earlier"),
        Message::assistant("earlier answer"),
    ];
    let outcome = run_turn(
        &client(&server),
        &ScriptedTools::default(),
        &Unmetered,
        &ctx("s1"),
        history,
        "hi".into(),
        schemas(),
    )
    .await
    .unwrap();
    assert_eq!(outcome.reply, "hello alice");
    assert_eq!(
        outcome.usage,
        Usage {
            prompt_tokens: 30,
            completion_tokens: 4
        }
    );
    assert_eq!(outcome.iterations, 0);
    assert!(!outcome.limit_hit);
    assert_eq!(
        outcome.new_messages,
        vec![Message::user("hi"), Message::assistant("hello alice")]
    );
    let sent = server.requests()[0].json();
    let roles: Vec<_> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(sent["messages"][0]["content"], "you are a test");
    assert_eq!(sent["tool_choice"], "auto");
}

#[tokio::test]
async fn an_allowed_tool_call_runs_and_its_result_reaches_the_model() {
    let server = TestServer::scripted(vec![
        Reply::tool_calls(&[("call_a", "read_file", r#"{"path":"notes.txt"}"#)], 10, 5),
        Reply::text("the notes say hi", 20, 6),
    ])
    .await;
    let tools = ScriptedTools::default();
    let outcome = run_turn(
        &client(&server),
        &tools,
        &Unmetered,
        &ctx("s1"),
        Vec::new(),
        "read my notes".into(),
        schemas(),
    )
    .await
    .unwrap();
    assert_eq!(outcome.reply, "the notes say hi");
    assert_eq!(outcome.iterations, 1);
    assert_eq!(outcome.usage.total(), 41);
    assert_eq!(outcome.model_calls.len(), 2);
    assert_eq!(outcome.model_calls[0].tool_calls, ["read_file"]);
    assert_eq!(
        tools.calls()[0].parse_arguments().unwrap()["path"],
        "notes.txt"
    );

    let second = server.requests()[1].json();
    let messages = second["messages"].as_array().unwrap();
    assert_eq!(messages[2]["role"], "assistant");
    assert_eq!(messages[2]["tool_calls"][0]["id"], "call_a");
    assert_eq!(
        messages[3],
        serde_json::json!({
            "role": "tool",
            "tool_call_id": "call_a",
            "content": r#"output of read_file {"path":"notes.txt"}"#
        })
    );
    let roles: Vec<Role> = outcome.new_messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [Role::User, Role::Assistant, Role::Tool, Role::Assistant]
    );
}

#[tokio::test]
async fn a_denied_tool_call_is_reported_to_the_model_as_denied() {
    let server = TestServer::scripted(vec![
        Reply::tool_calls(
            &[
                ("call_1", "exec", r#"{"command":"rm -rf /"}"#),
                ("call_2", "read_file", r#"{"path":"a"}"#),
            ],
            10,
            5,
        ),
        Reply::text("I am not allowed to run that", 20, 6),
    ])
    .await;
    let tools = ScriptedTools::denying(&["exec"]);
    let outcome = run_turn(
        &client(&server),
        &tools,
        &Unmetered,
        &ctx("s1"),
        Vec::new(),
        "wipe the disk".into(),
        schemas(),
    )
    .await
    .unwrap();
    let names: Vec<_> = tools.calls().into_iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        ["exec", "read_file"],
        "calls run in the model's order"
    );
    let messages = server.requests()[1].json()["messages"].clone();
    assert_eq!(messages[3]["tool_call_id"], "call_1");
    assert_eq!(
        messages[3]["content"],
        "denied: tier 2 tools are not allowed for external senders"
    );
    assert_eq!(messages[4]["tool_call_id"], "call_2");
    assert_eq!(outcome.reply, "I am not allowed to run that");
}

#[tokio::test]
async fn the_tool_round_limit_forces_a_final_answer_that_says_so() {
    let server =
        TestServer::repeating(Reply::tool_calls(&[("call_x", "read_file", "{}")], 1, 1)).await;
    let tools = ScriptedTools::default();
    let mut ctx = ctx("s1");
    ctx.max_tool_iterations = 3;
    let outcome = run_turn(
        &client(&server),
        &tools,
        &Unmetered,
        &ctx,
        Vec::new(),
        "loop forever".into(),
        schemas(),
    )
    .await
    .unwrap();
    assert_eq!(tools.calls().len(), 3, "exactly max_tool_iterations rounds");
    assert_eq!(outcome.iterations, 3);
    assert!(outcome.limit_hit);
    assert_eq!(
        server.request_count(),
        4,
        "three tool rounds and one final call"
    );
    assert!(outcome.reply.contains("limit"), "{}", outcome.reply);
    assert!(outcome.reply.contains('3'), "{}", outcome.reply);

    let last = server.requests()[3].json();
    assert_eq!(last["tool_choice"], "none");
    assert!(last["messages"][0]["content"]
        .as_str()
        .unwrap()
        .contains("limit of 3 rounds"));
    // user + 3 × (assistant, tool) + final answer; the dropped final tool calls are not stored.
    assert_eq!(outcome.new_messages.len(), 8);
    let last_message = outcome.new_messages.last().unwrap();
    assert_eq!(last_message.role, Role::Assistant);
    assert!(last_message.tool_calls.is_empty());
    assert_eq!(
        last_message.content.as_deref(),
        Some(outcome.reply.as_str())
    );
    assert!(
        outcome.new_messages.iter().all(|m| m.role != Role::System),
        "the limit note is not stored"
    );
}

#[tokio::test]
async fn the_limit_note_creates_a_system_prompt_when_there_is_none() {
    let server = TestServer::scripted(vec![Reply::text("done", 1, 1)]).await;
    let mut ctx = TurnContext::new("s", "alice", "cli", "t");
    ctx.max_tool_iterations = 0;
    let outcome = run_turn(
        &client(&server),
        &ScriptedTools::default(),
        &Unmetered,
        &ctx,
        Vec::new(),
        "hi".into(),
        schemas(),
    )
    .await
    .unwrap();
    assert!(outcome.limit_hit);
    assert!(outcome.reply.starts_with("done\n\n(Stopped after 0 rounds"));
    assert_eq!(outcome.new_messages[0], Message::user("hi"));
    assert_eq!(server.requests()[0].json()["messages"][0]["role"], "system");
}

#[tokio::test]
async fn an_exhausted_budget_makes_no_provider_call() {
    let server = TestServer::repeating(Reply::text("should not be asked", 1, 1)).await;
    let today = utc_today();
    for (settings, expected) in [
        (
            BudgetSettings {
                daily_tokens: Some(100),
                ..Default::default()
            },
            BudgetLimit::Global,
        ),
        (
            BudgetSettings {
                per_channel: Some(100),
                ..Default::default()
            },
            BudgetLimit::Channel("whatsapp".into()),
        ),
        (
            BudgetSettings {
                per_sender: Some(100),
                ..Default::default()
            },
            BudgetLimit::Sender("alice".into()),
        ),
    ] {
        let budget = temp_budget(settings);
        let spent = Usage {
            prompt_tokens: 90,
            completion_tokens: 30,
        };
        budget
            .record("older-session", "whatsapp", "alice", today, spent)
            .unwrap();
        let error = run_turn(
            &client(&server),
            &ScriptedTools::default(),
            &budget,
            &ctx("s1"),
            Vec::new(),
            "hi".into(),
            schemas(),
        )
        .await
        .unwrap_err();
        match &error {
            TurnError::Budget(exceeded) => {
                assert_eq!(
                    exceeded,
                    &BudgetExceeded {
                        limit: expected.clone(),
                        used: 120,
                        limit_value: 100
                    }
                )
            }
            other => panic!("expected a budget error, got {other:?}"),
        }
        assert!(error.to_string().contains("used up"), "{error}");
    }
    assert_eq!(server.request_count(), 0, "no request reached the provider");

    // Another sender and another channel are not limited by alice's counters.
    let budget = temp_budget(BudgetSettings {
        per_channel: Some(100),
        per_sender: Some(100),
        ..Default::default()
    });
    let spent = Usage {
        prompt_tokens: 100,
        completion_tokens: 0,
    };
    budget
        .record("s", "whatsapp", "alice", today, spent)
        .unwrap();
    assert!(budget.check("bridge:slack", "alice", today).is_ok());
    assert!(matches!(
        budget.check("whatsapp", "bob", today),
        Err(BudgetError::Exceeded(BudgetExceeded {
            limit: BudgetLimit::Channel(_),
            ..
        }))
    ));
    assert!(
        budget
            .check("whatsapp", "alice", date!(2000 - 01 - 01))
            .is_ok(),
        "a new day starts from zero"
    );
}

#[tokio::test]
async fn every_call_is_counted_and_the_budget_is_checked_before_each_call() {
    let server = TestServer::scripted(vec![
        Reply::tool_calls(&[("c1", "read_file", "{}")], 70, 40),
        Reply::text("never asked", 1, 1),
    ])
    .await;
    let budget = temp_budget(BudgetSettings {
        daily_tokens: Some(100),
        ..Default::default()
    });
    let error = run_turn(
        &client(&server),
        &ScriptedTools::default(),
        &budget,
        &ctx("s1"),
        Vec::new(),
        "hi".into(),
        schemas(),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, TurnError::Budget(_)), "{error:?}");
    assert_eq!(server.request_count(), 1, "the second call was refused");

    let today = utc_today();
    let expected = budget::UsageTotals {
        prompt_tokens: 70,
        completion_tokens: 40,
        total: 110,
        calls: 1,
    };
    assert_eq!(budget.usage_today().unwrap(), expected);
    assert_eq!(
        budget.usage_by_channel(today).unwrap()["whatsapp"],
        expected
    );
    assert_eq!(
        budget.usage_by_sender(today, "whatsapp").unwrap()["alice"],
        expected
    );
    assert_eq!(budget.usage_of_session(today, "s1").unwrap(), expected);
}

#[test]
fn concurrent_records_lose_no_update() {
    let budget = temp_budget(BudgetSettings::default());
    let today = date!(2026 - 01 - 02);
    std::thread::scope(|scope| {
        for t in 0..4 {
            let budget = budget.clone();
            scope.spawn(move || {
                for _ in 0..50 {
                    let usage = Usage {
                        prompt_tokens: 2,
                        completion_tokens: 1,
                    };
                    budget
                        .record(&format!("s{t}"), &format!("c{}", t % 2), "x", today, usage)
                        .unwrap();
                }
            });
        }
    });
    let totals = budget.usage_on(today).unwrap();
    assert_eq!((totals.total, totals.calls), (600, 200));
    let channels = budget.usage_by_channel(today).unwrap();
    assert_eq!(channels.len(), 2);
    assert_eq!(channels["c0"].total, 300);
}

#[test]
fn budget_messages_say_which_limit_was_hit() {
    let check = |limit: BudgetLimit, expected: &str| {
        let text = BudgetExceeded {
            limit,
            used: 1200,
            limit_value: 1000,
        }
        .to_string();
        assert_eq!(text, expected);
    };
    check(
        BudgetLimit::Global,
        "the daily token budget is used up (1200 of 1000 tokens today, UTC); try again tomorrow",
    );
    check(
        BudgetLimit::Channel("whatsapp".into()),
        "the daily token budget of channel \"whatsapp\" is used up (1200 of 1000 tokens today, UTC); try again tomorrow",
    );
    check(
        BudgetLimit::Sender("+4915".into()),
        "the daily token budget of sender \"+4915\" is used up (1200 of 1000 tokens today, UTC); try again tomorrow",
    );
}

#[tokio::test]
async fn a_provider_failure_is_a_clean_user_facing_error() {
    let server = TestServer::repeating(Reply::error(500, &format!("internal: {KEY}"))).await;
    let mut settings =
        ProviderSettings::new(format!("{}?key={KEY}", server.base_url()), "m").with_api_key(KEY);
    settings.backoff_base_ms = 1;
    settings.max_retries = 1;
    let client = ChatClient::new(settings).unwrap();
    let error = run_turn(
        &client,
        &ScriptedTools::default(),
        &Unmetered,
        &ctx("s1"),
        Vec::new(),
        "hi".into(),
        schemas(),
    )
    .await
    .unwrap_err();
    assert_eq!(server.request_count(), 2);
    let text = error.to_string();
    assert_eq!(
        text,
        "the model could not answer: the model provider failed (status 500); gave up after 2 attempts"
    );
    for shown in [text, format!("{error:?}"), format!("{client:?}")] {
        assert!(!shown.contains(KEY) && !shown.contains("SECRET"), "{shown}");
        assert!(!shown.contains("key="), "{shown}");
    }
}

#[tokio::test]
async fn sessions_run_in_parallel_and_a_slow_model_reply_blocks_no_other_session() {
    let server = TestServer::start(|_, request| {
        let body = String::from_utf8_lossy(&request.body);
        if body.contains("slow question") {
            Reply::text("slow answer", 1, 1).with_delay(Duration::from_millis(1500))
        } else {
            Reply::text("fast answer", 1, 1)
        }
    })
    .await;
    let client = client(&server);
    let tools = ScriptedTools::default();
    let started = Instant::now();
    let slow_ctx = ctx("slow-session");
    let fast_ctx = ctx("fast-session");
    let slow = async {
        let outcome = run_turn(
            &client,
            &tools,
            &Unmetered,
            &slow_ctx,
            Vec::new(),
            "slow question".into(),
            schemas(),
        )
        .await
        .unwrap();
        (outcome.reply, started.elapsed())
    };
    let fast = async {
        // Start second, so that the slow request is already in flight.
        tokio::task::yield_now().await;
        let outcome = run_turn(
            &client,
            &tools,
            &Unmetered,
            &fast_ctx,
            Vec::new(),
            "fast question".into(),
            schemas(),
        )
        .await
        .unwrap();
        (outcome.reply, started.elapsed())
    };
    let ((slow_reply, slow_done), (fast_reply, fast_done)) = tokio::join!(slow, fast);
    assert_eq!(slow_reply, "slow answer");
    assert_eq!(fast_reply, "fast answer");
    assert!(slow_done >= Duration::from_millis(1500));
    assert!(
        fast_done < slow_done && fast_done < Duration::from_millis(1000),
        "fast {fast_done:?}, slow {slow_done:?}"
    );
}

#[test]
fn history_trimming_never_orphans_a_tool_result() {
    let call = |id: &str| ToolCall {
        id: id.into(),
        name: "read_file".into(),
        arguments: "{}".into(),
    };
    let u = Message::user("u");
    let a = Message::assistant("a");
    let calls = Message::assistant_tool_calls(None, vec![call("1"), call("2")]);
    let r1 = Message::tool_result("1", "r1");
    let r2 = Message::tool_result("2", "r2");
    let messages = vec![
        u.clone(),
        calls.clone(),
        r1.clone(),
        r2.clone(),
        a.clone(),
        u.clone(),
        a.clone(),
    ];
    let check = |max: usize, expected: &[Message]| {
        assert_eq!(trim(messages.clone(), max), expected, "max {max}");
    };
    check(10, &messages);
    check(7, &messages);
    check(6, &messages[1..]);
    // Cutting at r1 or r2 would orphan them: the cut moves forward to the next non-tool.
    check(5, &messages[4..]);
    check(4, &messages[4..]);
    check(3, &messages[4..]);
    check(2, &messages[5..]);
    check(1, &messages[6..]);
    assert_eq!(trim(vec![r1.clone(), r2.clone()], 2), Vec::<Message>::new());
}

#[test]
fn history_is_bounded_and_survives_a_reopen_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("timeline.db");
    {
        let db = StoreDb::open(&path).unwrap();
        let history = SessionHistory::new(&db, 40).unwrap();
        for i in 0..30 {
            history
                .append(
                    "whatsapp:room-1",
                    &[
                        Message::user(format!("q{i}")),
                        Message::assistant(format!("a{i}")),
                    ],
                )
                .unwrap();
        }
        history
            .append(
                "other",
                &[Message::system("not stored"), Message::user("x")],
            )
            .unwrap();
        db.flush_blocking().unwrap();
    }
    let db = StoreDb::open(&path).unwrap();
    let history = SessionHistory::new(&db, 40).unwrap();
    let stored = history.load("whatsapp:room-1").unwrap();
    assert_eq!(stored.len(), 40);
    assert_eq!(stored[0], Message::user("q10"));
    assert_eq!(stored[39], Message::assistant("a29"));
    assert_eq!(history.load("other").unwrap(), vec![Message::user("x")]);
    assert!(history.load("unknown").unwrap().is_empty());
    history.clear("other").unwrap();
    assert!(history.load("other").unwrap().is_empty());
}

#[test]
fn a_turn_writes_its_own_messages_only_and_sessions_never_share_keys() {
    use crate::store::Space;
    let db = StoreDb::temporary().unwrap();
    let state = db.state().unwrap();
    let history = SessionHistory::new(&db, 4).unwrap();
    // "a" is a prefix of "a/b": their keys must not meet.
    history.append("a/b", &[Message::user("other")]).unwrap();
    for i in 0..10 {
        history
            .append(
                "a",
                &[
                    Message::user(format!("q{i}")),
                    Message::assistant(format!("a{i}")),
                ],
            )
            .unwrap();
    }
    let keys = |session: &str| -> Vec<Vec<u8>> {
        let prefix = format!("m/{}/", crate::channel::session::encode_component(session));
        state
            .scan(Space::History, prefix.as_bytes(), None, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };
    let before = keys("a");
    assert_eq!(before.len(), 4, "trimmed messages are deleted");
    assert_eq!(history.load("a/b").unwrap(), vec![Message::user("other")]);
    let loaded = history.load("a").unwrap();
    assert_eq!(loaded[0], Message::user("q8"));
    assert_eq!(loaded[3], Message::assistant("a9"));
    // The next turn keeps the two newest keys as they were and adds two: nothing rewritten.
    history
        .append("a", &[Message::user("q10"), Message::assistant("a10")])
        .unwrap();
    let after = keys("a");
    assert_eq!(after[..2], before[2..]);
    assert!(after[2] > before[3]);
    assert_eq!(
        history.load("a").unwrap(),
        vec![
            Message::user("q9"),
            Message::assistant("a9"),
            Message::user("q10"),
            Message::assistant("a10"),
        ]
    );
    history.clear("a").unwrap();
    assert!(keys("a").is_empty());
    assert_eq!(history.load("a/b").unwrap().len(), 1);
}

#[test]
fn a_history_stored_as_one_array_is_read_and_moved_to_per_message_keys() {
    use crate::store::Space;
    let db = StoreDb::temporary().unwrap();
    let state = db.state().unwrap();
    let legacy = vec![
        Message::user("old q"),
        Message::assistant("old a"),
        Message::user("older still q"),
    ];
    state
        .put(
            Space::History,
            b"history/whatsapp:room-1",
            &serde_json::to_vec(&legacy).unwrap(),
        )
        .unwrap();
    let history = SessionHistory::new(&db, 4).unwrap();
    assert_eq!(history.load("whatsapp:room-1").unwrap(), legacy);
    let stored = history
        .append_turn("whatsapp:room-1", Some("t1"), &[Message::user("new q")])
        .unwrap();
    let mut expected = legacy.clone();
    expected.push(Message::user("new q"));
    assert_eq!(stored, expected);
    assert_eq!(history.load("whatsapp:room-1").unwrap(), expected);
    assert!(state
        .get(Space::History, b"history/whatsapp:room-1")
        .unwrap()
        .is_none());
    // Trimming after the move drops the oldest, as before.
    let stored = history
        .append("whatsapp:room-1", &[Message::assistant("new a")])
        .unwrap();
    assert_eq!(stored.len(), 4);
    assert_eq!(stored[0], Message::assistant("old a"));
    // The resumed turn appends nothing twice.
    let again = history
        .append_turn("whatsapp:room-1", Some("t1"), &[Message::user("new q")])
        .unwrap();
    assert_eq!(again, stored);
}

#[tokio::test]
async fn a_turn_continues_from_the_stored_history() {
    let server = TestServer::scripted(vec![
        Reply::tool_calls(&[("c1", "read_file", "{}")], 1, 1),
        Reply::text("first answer", 1, 1),
        Reply::text("second answer", 1, 1),
    ])
    .await;
    let db = StoreDb::temporary().unwrap();
    let history = SessionHistory::new(&db, DEFAULT_HISTORY_MESSAGES).unwrap();
    let client = client(&server);
    let tools = ScriptedTools::default();
    for text in ["one", "two"] {
        let stored = history.load("s").unwrap();
        let outcome = run_turn(
            &client,
            &tools,
            &Unmetered,
            &ctx("s"),
            stored,
            text.into(),
            schemas(),
        )
        .await
        .unwrap();
        history.append("s", &outcome.new_messages).unwrap();
    }
    let third = server.requests()[2].json();
    let roles: Vec<_> = third["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "tool", "assistant", "user"]
    );
    assert_eq!(history.load("s").unwrap().len(), 6);
}

#[test]
fn the_system_prompt_holds_identity_files_and_who_is_asking() {
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("workspace");
    std::fs::create_dir(&workspace).unwrap();
    std::fs::write(workspace.join("SOUL.md"), "I am calm and careful.\n").unwrap();
    std::fs::write(workspace.join("IDENTITY.md"), "Name: Claw\n").unwrap();
    std::fs::write(
        workspace.join("TOOLS.md"),
        "x".repeat(MAX_IDENTITY_FILE_BYTES + 100),
    )
    .unwrap();
    // A symlink out of the workspace is not followed.
    let outside = dir.path().join("secret.txt");
    std::fs::write(&outside, "OUTSIDE-SECRET").unwrap();
    std::os::unix::fs::symlink(&outside, workspace.join("USER.md")).unwrap();
    // A directory with an identity name is skipped.
    std::fs::create_dir(workspace.join("AGENTS.md")).unwrap();

    let owner = system_prompt(&workspace, SenderKind::Owner, "cli");
    assert!(owner.contains("## SOUL.md\n\nI am calm and careful."));
    assert!(owner.contains("## IDENTITY.md\n\nName: Claw"));
    assert!(owner.find("SOUL.md").unwrap() < owner.find("IDENTITY.md").unwrap());
    assert!(!owner.contains("OUTSIDE-SECRET"));
    assert!(!owner.contains("## USER.md"));
    assert!(!owner.contains("## AGENTS.md"));
    assert!(owner.contains("[… truncated]"));
    assert!(owner.len() < 2 * MAX_IDENTITY_FILE_BYTES);
    assert!(owner.contains("from the owner (an internal, trusted sender) on channel \"cli\""));
    assert!(!owner.contains("external sender"));

    let external = system_prompt(&workspace, SenderKind::External, "whatsapp\n");
    assert!(
        external.contains("from an external sender on channel \"whatsapp\", not from the owner")
    );
    assert!(!external.contains("from the owner (an internal"));

    let bare = system_prompt(&dir.path().join("missing"), SenderKind::Owner, "cli");
    assert!(bare.starts_with("You are the KafClaw agent"));
    assert!(bare.contains("## Request context"));
}

#[test]
fn a_turn_future_is_send_so_it_can_be_spawned() {
    fn assert_send<T: Send>(_: &T) {}
    let client = ChatClient::new(ProviderSettings::new("http://127.0.0.1:9/v1", "m")).unwrap();
    let tools = ScriptedTools::default();
    let budget = temp_budget(BudgetSettings::default());
    let gate: &(dyn UsageGate + Send) = &budget;
    let ctx = ctx("s");
    let future = run_turn(
        &client,
        &tools,
        gate,
        &ctx,
        Vec::new(),
        "hi".into(),
        Vec::new(),
    );
    assert_send(&future);
}

mod api_sessions {
    use proptest::prelude::*;

    use super::super::api_session_key;

    #[test]
    fn the_key_is_bound_to_the_principal() {
        let pairs = [
            ("alice", "shared"),
            ("bob", "shared"),
            ("alice", "bob"),
            ("bob", "alice"),
            ("alice", "alice:x"),
            ("alice:x", "y"),
            ("a", "b:c"),
            ("a:b", "c"),
            ("env:KAFCLAW_GATEWAY_AUTH_TOKEN", "ops"),
            ("env", "KAFCLAW_GATEWAY_AUTH_TOKEN:ops"),
            ("local", "x%3Ay"),
            ("local", "x:y"),
        ];
        let keys: std::collections::HashSet<String> =
            pairs.iter().map(|(p, s)| api_session_key(p, s)).collect();
        assert_eq!(keys.len(), pairs.len(), "{keys:?}");
        for key in &keys {
            assert!(key.starts_with("api:"), "{key}");
            assert_eq!(key.matches(':').count(), 2, "two separators only: {key}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn distinct_pairs_never_share_a_key(
            a in ".{0,12}", b in ".{0,12}", c in ".{0,12}", d in ".{0,12}"
        ) {
            prop_assume!((&a, &b) != (&c, &d));
            prop_assert_ne!(api_session_key(&a, &b), api_session_key(&c, &d));
        }
    }
}
