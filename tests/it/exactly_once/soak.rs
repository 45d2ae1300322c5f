//! The crash soak: signed WhatsApp webhooks, bridge messages and `/chat` (with
//! `Idempotency-Key`) against the real binary, `kill -9` at random moments, a restart, and
//! the re-delivery of everything not acknowledged (as Meta and bridges do; some acknowledged
//! ones are re-delivered too). At the end it proves: nothing acknowledged is lost, no model
//! answer that was used is asked for again, no tool call runs twice, no WhatsApp reply is sent
//! twice while status webhooks flow, no two bridge replies for one message carry different
//! `Idempotency-Key`s, and the audit chain verifies after every kill.
//!
//! `cargo test` runs 10 kills. `tests/bench/crash_soak.sh` runs the long one: the environment
//! variables `SOAK_KILLS` (default 10), `SOAK_SEED` (default 12) and `SOAK_WORKERS` (senders
//! per kind: 3 WhatsApp, 2 bridge, 2 `/chat` times this factor; default 1) set it up (read,
//! never set).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use super::fixture::*;
use super::World;
use crate::harness::Gateway;

/// A seeded xorshift generator (reproducible kill moments and traffic).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    WhatsApp,
    Bridge,
    Chat,
}

/// One message the soak sent, and what came of it.
#[derive(Clone, Debug)]
struct Message {
    kind: Kind,
    id: String,
    sender: String,
    text: String,
    acked: bool,
    /// `/chat` replies, one per 200.
    replies: Vec<String>,
}

#[derive(Default)]
struct Ledger {
    messages: Vec<Message>,
    /// Indexes of messages to (re)send, oldest first.
    queue: Vec<usize>,
    next: u64,
}

impl Ledger {
    /// The next message for a worker of `kind` (a re-delivery first).
    fn take(&mut self, kind: Kind, worker: usize) -> usize {
        if let Some(pos) = self
            .queue
            .iter()
            .position(|&i| self.messages[i].kind == kind)
        {
            return self.queue.remove(pos);
        }
        self.next += 1;
        let n = self.next;
        let (id, sender) = match kind {
            Kind::WhatsApp => (format!("wamid.soak.{n}"), OWNERS[worker % 4].to_string()),
            Kind::Bridge => (format!("b.soak.{n}"), format!("U{}", worker % 4 + 1)),
            Kind::Chat => (format!("k.soak.{n}"), format!("soak-{worker}")),
        };
        let tool = if n.is_multiple_of(3) { " tool" } else { "" };
        self.messages.push(Message {
            kind,
            id: id.clone(),
            sender,
            text: format!("soak {id}{tool}"),
            acked: false,
            replies: Vec::new(),
        });
        self.messages.len() - 1
    }
}

/// The figures of a soak.
#[derive(Debug, Default)]
pub struct Figures {
    pub seed: u64,
    pub kills: usize,
    pub acknowledged: usize,
    pub deliveries: u64,
    pub lost: usize,
    pub model_requests: usize,
    pub model_calls_repeated: usize,
    pub model_calls_retried_after_kill: usize,
    pub tool_calls: usize,
    pub tools_repeated: usize,
    pub tools_interrupted: usize,
    pub whatsapp_sends: usize,
    pub whatsapp_sent_twice: usize,
    pub bridge_posts: usize,
    pub bridge_accepted_twice: usize,
    pub bridge_repeats_dropped_by_key: usize,
    pub chat_replies_differ: usize,
    pub audit_verified: usize,
    pub seconds: f64,
}

/// One worker: sends messages of `kind` until `stop`.
async fn worker(
    url: String,
    kind: Kind,
    index: usize,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) {
    while !stop.load(Ordering::SeqCst) {
        let i = ledger.lock().unwrap().take(kind, index);
        let message = ledger.lock().unwrap().messages[i].clone();
        sent.fetch_add(1, Ordering::SeqCst);
        let outcome = match kind {
            Kind::WhatsApp => post_whatsapp(&url, &message.sender, &message.id, &message.text)
                .await
                .map(|s| (s, None)),
            Kind::Bridge => post_bridge(&url, &message.sender, &message.id, &message.text)
                .await
                .map(|s| (s, None)),
            Kind::Chat => post_chat(&url, &message.id, &message.sender, &message.text)
                .await
                .map(|(s, body)| (s, body["reply"].as_str().map(str::to_string))),
        };
        let mut ledger = ledger.lock().unwrap();
        match outcome {
            Ok((StatusCode::OK, reply)) => {
                let m = &mut ledger.messages[i];
                m.acked = true;
                m.replies.extend(reply);
            }
            _ => {
                ledger.queue.push(i);
                if stop.load(Ordering::SeqCst) {
                    return;
                }
            }
        }
    }
}

/// Runs load against `gw` for `duration`, then tells the workers to stop (their requests in
/// flight go on: a kill right after this lands among them). Await the handles.
async fn load(
    gw: &Gateway,
    ledger: &Arc<Mutex<Ledger>>,
    duration: Duration,
    sent: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let url = format!("http://{}", gw.gateway);
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let factor = env_number("SOAK_WORKERS", 1).max(1) as usize;
    for (kind, workers) in [(Kind::WhatsApp, 3), (Kind::Bridge, 2), (Kind::Chat, 2)] {
        let workers = workers * factor;
        for index in 0..workers {
            tasks.push(tokio::spawn(worker(
                url.clone(),
                kind,
                index,
                ledger.clone(),
                stop.clone(),
                sent.clone(),
            )));
        }
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::SeqCst);
    tasks
}

async fn finished(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

/// Re-delivers a random few acknowledged messages (providers do).
fn redeliver_some(ledger: &Arc<Mutex<Ledger>>, rng: &mut Rng) {
    let mut ledger = ledger.lock().unwrap();
    let acked: Vec<usize> = (0..ledger.messages.len())
        .filter(|&i| ledger.messages[i].acked && ledger.messages[i].kind != Kind::Chat)
        .collect();
    for _ in 0..acked.len() / 20 {
        let i = acked[rng.below(acked.len() as u64) as usize];
        if !ledger.queue.contains(&i) {
            ledger.queue.push(i);
        }
    }
}

pub async fn run(kills: usize, seed: u64) -> Figures {
    let started = Instant::now();
    let world = World::new();
    world.behavior.lock().unwrap().jitter_ms = 25;
    let mut rng = Rng(seed.max(1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let sent = Arc::new(AtomicU64::new(0));
    let options = || world.options(3);
    let mut figures = Figures {
        seed,
        kills,
        ..Figures::default()
    };
    let mut gw = world.start(options());
    for _ in 0..kills {
        let duration = Duration::from_millis(200 + rng.below(1_300));
        let workers = load(&gw, &ledger, duration, &sent).await;
        gw.signal("KILL");
        gw.wait_exit(Duration::from_secs(20));
        finished(workers).await;
        gw = world.restart(&mut gw, options());
        figures.audit_verified += 1;
        redeliver_some(&ledger, &mut rng);
    }
    // Last round: deliver everything still unacknowledged, then let the replies drain.
    let deadline = Instant::now() + Duration::from_secs(40);
    while !ledger.lock().unwrap().queue.is_empty() {
        assert!(Instant::now() < deadline, "deliveries never acknowledged");
        let workers = load(&gw, &ledger, Duration::from_millis(300), &sent).await;
        finished(workers).await;
    }
    let answered = |world: &World, ledger: &Ledger| {
        let (graph, bridge) = (graph_sends(&world.graph), bridge_posts(&world.receiver));
        ledger
            .messages
            .iter()
            .filter(|m| m.acked)
            .all(|m| match m.kind {
                Kind::WhatsApp => graph.contains_key(&m.id),
                Kind::Bridge => bridge.contains_key(&m.id),
                Kind::Chat => !m.replies.is_empty(),
            })
    };
    let drain = Instant::now() + Duration::from_secs(30);
    while !answered(&world, &ledger.lock().unwrap()) && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A moment more for anything that would go out twice.
    tokio::time::sleep(Duration::from_secs(4)).await;
    figures.deliveries = sent.load(Ordering::SeqCst);
    let home = gw.home.path().to_path_buf();
    let ledger = ledger.lock().unwrap();
    tally(&world, &ledger, &home, &mut figures);
    figures.seconds = started.elapsed().as_secs_f64();
    drop(gw);
    figures
}

/// Counts everything the soak proves.
fn tally(world: &World, ledger: &Ledger, home: &std::path::Path, figures: &mut Figures) {
    let graph = graph_sends(&world.graph);
    let bridge = bridge_posts(&world.receiver);
    let acked: Vec<&Message> = ledger.messages.iter().filter(|m| m.acked).collect();
    figures.acknowledged = acked.len();
    let mut used: HashMap<String, Vec<usize>> = HashMap::new();
    for m in &acked {
        let replies: Vec<String> = match m.kind {
            Kind::WhatsApp => graph
                .get(&m.id)
                .map(|s| s.iter().map(|r| r.1.clone()).collect()),
            Kind::Bridge => bridge
                .get(&m.id)
                .map(|s| s.iter().map(|r| r.1.clone()).collect()),
            Kind::Chat => Some(m.replies.clone()),
        }
        .unwrap_or_default();
        if replies.is_empty() {
            figures.lost += 1;
        }
        if m.kind == Kind::Chat && replies.iter().collect::<HashSet<_>>().len() > 1 {
            figures.chat_replies_differ += 1;
        }
        used.entry(m.text.clone())
            .or_default()
            .extend(replies.iter().filter_map(|r| nonce(r)));
    }
    // Model calls. Every answer names its request (`call-n`, `#n`). An answer was acted on
    // when its tool call was decided (audited before it runs), when the next step's request
    // carries it, or when it was sent as the reply. For every (message, step) only the last
    // request may have been acted on: an earlier one acted on means the model was asked again
    // for an answer the gateway had already used (what a turn re-run from scratch does).
    let steps = model_steps(&world.model);
    let seen = world.model.seen();
    figures.model_requests = seen.len();
    let decisions = tool_decisions(home);
    let decided: HashSet<usize> = decisions.keys().filter_map(|id| nonce(id)).collect();
    for ((text, step), requests) in &steps {
        figures.model_calls_retried_after_kill += requests.len() - 1;
        let carried: HashSet<usize> = steps
            .get(&(text.clone(), step + 1))
            .into_iter()
            .flatten()
            .filter_map(|&n| {
                let messages = seen[n].body["messages"].as_array()?.clone();
                let call = messages
                    .iter()
                    .rev()
                    .find_map(|m| m["tool_calls"][0]["id"].as_str().map(str::to_string))?;
                nonce(&call)
            })
            .collect();
        let replied: HashSet<usize> = used.get(text).into_iter().flatten().copied().collect();
        let acted = |n: &usize| decided.contains(n) || carried.contains(n) || replied.contains(n);
        let earlier = &requests[..requests.len().saturating_sub(1)];
        figures.model_calls_repeated += earlier.iter().filter(|n| acted(n)).count();
        // Tools: one execution per message (a re-run would decide a second call id) …
        let ran = requests.iter().filter(|n| decided.contains(n)).count();
        figures.tools_repeated += ran.saturating_sub(1);
    }
    // … and one decision per call id.
    figures.tool_calls = decisions.len();
    figures.tools_repeated += decisions.values().map(|n| n - 1).sum::<usize>();
    figures.tools_interrupted = audit_kind(home, "tool.interrupted").len();
    // WhatsApp: one tag per message, sent once.
    for sends in graph.values() {
        // Any second send for one message, whatever its tag.
        figures.whatsapp_sends += sends.len();
        figures.whatsapp_sent_twice += sends.len() - 1;
    }
    // Bridges: a receiver honouring Idempotency-Key accepts each distinct key once.
    for posts in bridge.values() {
        figures.bridge_posts += posts.len();
        let keys: HashSet<&str> = posts.iter().map(|(k, _)| k.as_str()).collect();
        figures.bridge_accepted_twice += keys.len() - 1;
        figures.bridge_repeats_dropped_by_key += posts.len() - keys.len();
    }
}

pub fn print(figures: &Figures) {
    println!(
        "crash soak: seed {} kills {} in {:.1} s; deliveries sent {} (incl. re-deliveries, \
         {:.0}/s), acknowledged {}, lost {}; model requests {}, repeated {}, retried after a kill {}; \
         tool calls {}, repeated {}, interrupted {}; whatsapp sends {}, sent twice {}; bridge \
         posts {}, accepted twice {}, repeats dropped by key {}; chat replies differing {}; \
         audit verified after {} kills",
        figures.seed,
        figures.kills,
        figures.seconds,
        figures.deliveries,
        figures.deliveries as f64 / figures.seconds.max(0.001),
        figures.acknowledged,
        figures.lost,
        figures.model_requests,
        figures.model_calls_repeated,
        figures.model_calls_retried_after_kill,
        figures.tool_calls,
        figures.tools_repeated,
        figures.tools_interrupted,
        figures.whatsapp_sends,
        figures.whatsapp_sent_twice,
        figures.bridge_posts,
        figures.bridge_accepted_twice,
        figures.bridge_repeats_dropped_by_key,
        figures.chat_replies_differ,
        figures.audit_verified,
    );
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test]
async fn random_kills_under_load_lose_nothing_and_repeat_nothing() {
    let kills = env_number("SOAK_KILLS", 10) as usize;
    let seed = env_number("SOAK_SEED", 12);
    let figures = run(kills, seed).await;
    print(&figures);
    assert!(figures.acknowledged > 0);
    assert_eq!(figures.audit_verified, kills);
    assert_eq!(figures.lost, 0, "{figures:?}");
    assert_eq!(figures.model_calls_repeated, 0, "{figures:?}");
    assert_eq!(figures.tools_repeated, 0, "{figures:?}");
    assert_eq!(figures.whatsapp_sent_twice, 0, "{figures:?}");
    assert_eq!(figures.bridge_accepted_twice, 0, "{figures:?}");
    assert_eq!(figures.chat_replies_differ, 0, "{figures:?}");
}
