//! A real, scriptable HTTP/1.1 server on `127.0.0.1:0` that speaks just enough of the
//! chat-completions protocol for tests and the `agent_bench` example.
//!
//! Owns: accepting connections (keep-alive, one task per connection), recording every request
//! (method, path with query, headers, body) and answering each with the reply a responder
//! picks (status, headers, body, optional delay); and [`turn_step`], which names the turn and
//! step a chat-completions request belongs to, so tests can count model calls per message.
//! Must not: be compiled into the library (it is `cfg(test)` here and `#[path]`-included by the
//! example and by the system tests, `tests/it/model_server.rs`, which run it on its own
//! thread): it uses nothing of the crate so that all of them share this one server.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One scripted answer.
#[derive(Clone, Debug)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Extra headers (`Content-Length` and `Connection` are added).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
    /// How long to wait before answering (a slow model).
    pub delay: Duration,
}

impl Reply {
    /// A reply with `status` and a JSON body.
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    /// A 200 chat completion with text `content` and the given usage.
    pub fn text(content: &str, prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self::json(
            200,
            serde_json::json!({
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop"
                }],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens
                }
            }),
        )
    }

    /// A 200 chat completion calling tools: `(id, name, arguments JSON string)` each.
    pub fn tool_calls(
        calls: &[(&str, &str, &str)],
        prompt_tokens: u64,
        completion_tokens: u64,
    ) -> Self {
        let calls: Vec<_> = calls
            .iter()
            .map(|(id, name, arguments)| {
                serde_json::json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments}
                })
            })
            .collect();
        Self::json(
            200,
            serde_json::json!({
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": null, "tool_calls": calls},
                    "finish_reason": "tool_calls"
                }],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
            }),
        )
    }

    /// An error status with an OpenAI-style error body.
    pub fn error(status: u16, message: &str) -> Self {
        Self::json(
            status,
            serde_json::json!({"error": {"message": message, "type": "test_error"}}),
        )
    }

    /// The same reply with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The same reply, sent after `delay`.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// `POST`, …
    pub method: String,
    /// The request target: path and query.
    pub target: String,
    /// Header names (lower-cased) and values.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// The turn and step a chat-completions request body belongs to: the text of its last user
/// message (the message being answered) and how many assistant messages follow it (0 for the
/// first model call of the turn, 1 after the first tool round, …). `None` for a body without a
/// user message.
pub fn turn_step(body: &serde_json::Value) -> Option<(String, usize)> {
    let messages = body.get("messages")?.as_array()?;
    let last_user = messages.iter().rposition(|m| m["role"] == "user")?;
    let text = messages[last_user]["content"].as_str()?.to_string();
    let step = messages[last_user..]
        .iter()
        .filter(|m| m["role"] == "assistant")
        .count();
    Some((text, step))
}

type Responder = dyn Fn(usize, &Recorded) -> Reply + Send + Sync;

/// The running server; stops when dropped.
pub struct TestServer {
    /// Where it listens.
    addr: SocketAddr,
    /// Every request so far, in arrival order.
    recorded: Arc<Mutex<Vec<Recorded>>>,
    /// The accept loop.
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// Starts a server whose answer to request number `n` (0-based) is `responder(n, request)`.
    pub async fn start(
        responder: impl Fn(usize, &Recorded) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let recorded: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let responder: Arc<Responder> = Arc::new(responder);
        let task = {
            let recorded = Arc::clone(&recorded);
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve(stream, Arc::clone(&recorded), Arc::clone(&responder)));
                }
            })
        };
        Self {
            addr,
            recorded,
            task,
        }
    }

    /// Answers requests with `replies` in order; once they are used up, with 500
    /// `script exhausted`.
    pub async fn scripted(replies: Vec<Reply>) -> Self {
        let queue = Mutex::new(VecDeque::from(replies));
        Self::start(move |_, _| {
            queue
                .lock()
                .expect("script lock")
                .pop_front()
                .unwrap_or_else(|| Reply::error(500, "script exhausted"))
        })
        .await
    }

    /// Answers every request with `reply`.
    pub async fn repeating(reply: Reply) -> Self {
        Self::start(move |_, _| reply.clone()).await
    }

    /// The OpenAI-style base URL, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.recorded.lock().expect("recorded lock").clone()
    }

    /// How many requests arrived.
    pub fn request_count(&self) -> usize {
        self.recorded.lock().expect("recorded lock").len()
    }
}

/// Serves one keep-alive connection until the client closes it.
async fn serve(
    mut stream: TcpStream,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    responder: Arc<Responder>,
) {
    let mut buffer: Vec<u8> = Vec::with_capacity(8192);
    loop {
        let Some(request) = read_request(&mut stream, &mut buffer).await else {
            return;
        };
        let reply = {
            let mut all = recorded.lock().expect("recorded lock");
            let index = all.len();
            all.push(request.clone());
            drop(all);
            responder(index, &request)
        };
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
        for (name, value) in &reply.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: keep-alive\r\n\r\n",
            reply.body.len()
        ));
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(reply.body.as_bytes());
        if stream.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

/// Reads one request (head and `Content-Length` body) from `stream`; `None` on EOF or error.
async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Recorded> {
    let head_end = loop {
        if let Some(i) = find(buffer, b"\r\n\r\n") {
            break i;
        }
        if !fill(stream, buffer).await {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let body_start = head_end + 4;
    while buffer.len() < body_start + length {
        if !fill(stream, buffer).await {
            return None;
        }
    }
    let body = buffer[body_start..body_start + length].to_vec();
    buffer.drain(..body_start + length);
    Some(Recorded {
        method,
        target,
        headers,
        body,
    })
}

async fn fill(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buffer.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
