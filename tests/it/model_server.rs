//! Local HTTP stand-ins for the model provider, the Graph API and bridge receivers, all the one
//! test server of `kafclaw-actors` (`actors/src/provider/test_server.rs`), run on a thread of
//! its own so that a test blocking its own runtime (waiting for a process) never stalls it.
//! Records every request it receives.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

#[path = "../../actors/src/provider/test_server.rs"]
mod test_server;

pub use test_server::{turn_step, Recorded, Reply};

/// One recorded request, as the tests read it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub authorization: Option<String>,
    pub body: serde_json::Value,
    pub raw: Recorded,
}

type Pick = dyn Fn(usize, &Recorded) -> Option<Reply> + Send + Sync;

#[derive(Default)]
struct Shared {
    script: VecDeque<Reply>,
    fallback: Option<Reply>,
    seen: Vec<Seen>,
}

pub struct ModelServer {
    /// `http://127.0.0.1:PORT/v1`.
    pub base: String,
    shared: Arc<Mutex<Shared>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A text answer with usage.
pub fn text(content: &str, prompt: u64, completion: u64) -> Reply {
    Reply::text(content, prompt, completion)
}

/// A tool call answer (call id `call_1`).
pub fn tool_call(name: &str, arguments: serde_json::Value) -> Reply {
    Reply::tool_calls(&[("call_1", name, &arguments.to_string())], 10, 5)
}

/// A 200 JSON answer.
pub fn ok(body: serde_json::Value) -> Reply {
    Reply::json(200, body)
}

/// An error status.
pub fn status(code: u16) -> Reply {
    Reply::error(code, "scripted failure")
}

impl ModelServer {
    /// Answers with `script` in order, then with the fallback (or a fixed text).
    pub fn start(script: Vec<Reply>) -> ModelServer {
        Self::serve(script, Arc::new(|_, _| None))
    }

    /// Answers request `n` with `pick(n, request)` (the script and fallback when it says
    /// `None`).
    pub fn start_with(
        pick: impl Fn(usize, &Recorded) -> Option<Reply> + Send + Sync + 'static,
    ) -> ModelServer {
        Self::serve(Vec::new(), Arc::new(pick))
    }

    fn serve(script: Vec<Reply>, pick: Arc<Pick>) -> ModelServer {
        let shared = Arc::new(Mutex::new(Shared {
            script: script.into(),
            ..Default::default()
        }));
        let state = shared.clone();
        let (base_tx, base_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let server = test_server::TestServer::start(move |n, request| {
                    let mut shared = state.lock().unwrap();
                    shared.seen.push(Seen {
                        path: request.target.clone(),
                        authorization: request.header("authorization").map(str::to_string),
                        body: request.json(),
                        raw: request.clone(),
                    });
                    if let Some(reply) = pick(n, request) {
                        return reply;
                    }
                    shared
                        .script
                        .pop_front()
                        .or_else(|| shared.fallback.clone())
                        .unwrap_or_else(|| text("(no scripted reply)", 1, 1))
                })
                .await;
                let _ = base_tx.send(server.base_url());
                let _ = stopped.await;
            });
        });
        let base = base_rx.recv().unwrap();
        ModelServer {
            base,
            shared,
            stop: Some(stop),
        }
    }

    /// The answer once the script is used up.
    pub fn fallback(&self, reply: Reply) {
        self.shared.lock().unwrap().fallback = Some(reply);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().unwrap().seen.clone()
    }

    /// `http://127.0.0.1:PORT` (without `/v1`).
    pub fn origin(&self) -> String {
        self.base.trim_end_matches("/v1").to_string()
    }
}
