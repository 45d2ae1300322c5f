//! Fleet mode (issue 18, docs/fleet.md): several gateways share security state over NATS
//! JetStream — one control stream every node applies, and the audit heads anchored off the host.
//!
//! Owns: the NATS connection (`fleet.*` settings), creating the streams and buckets when
//! missing, publishing control messages, the supervised watcher that applies the control stream
//! in order (from the last sequence this node applied, persisted in the store), and the
//! `connected`/`degraded` verdict.
//! Must not: decide what a control message does (`crate::admin` does, in one place), or run at
//! all with `fleet.enabled = false`.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use async_nats::jetstream::{self, consumer, kv, stream};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use kafclaw_actors::audit::{AppendRecord, AuditChainer, AuditHead, AuditKind, GetHead};
use kafclaw_actors::store::{StoreDb, TreeName};
use kafclaw_actors::supervisor::{Ping, Pong, Slot};

use crate::admin::{ControlContext, ControlMessage};
use crate::http::client::ClientKey;
use crate::http::lockout::LockoutPolicy;
use crate::settings::FleetSettings;

/// The control stream: every fanned-out control message, in order.
pub const CONTROL_STREAM: &str = "KAFCLAW_CONTROL";
/// Its subject.
pub const CONTROL_SUBJECT: &str = "kafclaw.control";
/// The largest control message (an envelope is well under 1 KiB; a reason is capped far below).
const MAX_CONTROL_BYTES: usize = 64 * 1024;

/// The anchors stream: each node's audit head, on `kafclaw.anchors.<node>`.
pub const ANCHOR_STREAM: &str = "KAFCLAW_ANCHORS";
/// The anchors' subject prefix.
pub const ANCHOR_SUBJECT_PREFIX: &str = "kafclaw.anchors";
/// The KV bucket of auth failures per client key (fleet-wide lockout).
pub const AUTH_FAILURES_BUCKET: &str = "kafclaw_auth_failures";
/// The stream of single auth failures (one empty message each, kept for the lockout window).
pub const AUTH_FAILURE_STREAM: &str = "KAFCLAW_AUTH_FAILURES";
/// Its subjects: `kafclaw.auth_failures.<client key>`.
pub const AUTH_FAILURE_SUBJECT_PREFIX: &str = "kafclaw.auth_failures";
/// The KV bucket of the fleet's roster: one entry per node, put every few seconds.
pub const NODES_BUCKET: &str = "kafclaw_nodes";
/// How often a node puts its roster entry (and reads everyone's).
const HEARTBEAT: Duration = Duration::from_secs(2);
/// A node not seen for this long is listed as stale.
const STALE_AFTER: Duration = Duration::from_secs(10);
/// How long the bucket keeps a node that stopped putting its entry.
const ROSTER_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// The store key of the last control sequence this node applied.
const APPLIED_KEY: &str = "fleet_control_seq";
/// How long a publish may take before the fan-out is refused.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(3);

/// One control message on the control stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlEnvelope {
    /// A random id (also the `Nats-Msg-Id`: a repeated publish is stored once).
    pub id: String,
    /// The node that accepted it.
    pub origin: String,
    /// Who sent it there (token name or `cli:uid=…`).
    pub actor: String,
    /// The message itself.
    pub message: ControlMessage,
    /// When the origin issued it (Unix seconds), under the MAC: a copy of an old envelope
    /// published again is far older than its stream timestamp and is not applied.
    #[serde(default)]
    pub issued_at: i64,
}

/// How much older than its stream timestamp an authenticated envelope may be (the origin
/// publishes within [`PUBLISH_TIMEOUT`] of issuing it; a replay is older).
const CONTROL_MAX_AGE_SECONDS: i64 = 60;

/// A handle on the fleet connection (cheap to clone).
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: String,
    lockout: LockoutPolicy,
    /// The auth-failure bucket, once created.
    failures: Mutex<Option<kv::Store>>,
    /// The stream of single auth failures, once created (its count is read per failure).
    failure_events: Mutex<Option<stream::Stream>>,
    /// The roster bucket, once created.
    nodes_bucket: Mutex<Option<kv::Store>>,
    /// Every node's last roster entry as this node last read it, by node id.
    roster: Mutex<BTreeMap<String, NodeEntry>>,
    replicas: usize,
    anchor_every_records: u64,
    anchor_every_seconds: u64,
    client: async_nats::Client,
    js: jetstream::Context,
    /// The streams and buckets exist (checked once per connection).
    ready: AtomicBool,
    /// The last control sequence applied here.
    applied: AtomicU64,
    /// Wakes whoever waits for the watcher (the catch-up before the listeners open).
    applied_tx: tokio::sync::watch::Sender<u64>,
    /// Ids of control messages this process published and applied itself.
    own: Mutex<HashSet<String>>,
    /// The key control messages are authenticated with (`fleet.control_key`), derived.
    control_mac: Option<ControlMac>,
    /// Set at a stop: the loops return (dropping their NATS consumers inside the runtime).
    stopping: AtomicBool,
    /// Loops still running.
    loops: AtomicUsize,
}

/// Counts a running loop while it lives.
struct LoopGuard(Fleet);

impl LoopGuard {
    fn new(fleet: &Fleet) -> Self {
        fleet.inner.loops.fetch_add(1, Ordering::SeqCst);
        Self(fleet.clone())
    }
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        self.0.inner.loops.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("node_id", &self.inner.node_id)
            .finish_non_exhaustive()
    }
}

/// Connects to NATS (in the background: an unreachable NATS leaves the node degraded, not
/// down). The error is one line (a bad URL, an unreadable CA file).
pub async fn connect(
    settings: &FleetSettings,
    lockout: LockoutPolicy,
    db: &StoreDb,
) -> Result<Fleet, String> {
    if settings.nats_urls.is_empty() {
        return Err("fleet.enabled needs fleet.nats_urls".into());
    }
    if let Some(key) = &settings.control_key {
        let chars = key.char_len();
        if chars < CONTROL_KEY_MIN_CHARS {
            return Err(format!(
                "fleet.control_key has {chars} characters; at least {CONTROL_KEY_MIN_CHARS} are required"
            ));
        }
    }
    let node_id = settings.node_id();
    let (options, addrs) = connect_options(
        settings,
        async_nats::ConnectOptions::new()
            .name(format!("kafclaw {node_id}"))
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .ping_interval(Duration::from_secs(2))
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((100 * attempts as u64).min(1000))
            }),
    )?;
    let client = options
        .connect(addrs)
        .await
        .map_err(|e| format!("fleet: cannot connect to NATS: {e}"))?;
    let js = jetstream::new(client.clone());
    let applied = load_applied(db);
    let (applied_tx, _) = tokio::sync::watch::channel(applied);
    Ok(Fleet {
        inner: Arc::new(Inner {
            node_id,
            lockout,
            failures: Mutex::new(None),
            failure_events: Mutex::new(None),
            nodes_bucket: Mutex::new(None),
            roster: Mutex::new(BTreeMap::new()),
            replicas: settings.stream_replicas.max(1) as usize,
            anchor_every_records: settings.anchor_every_records.max(1),
            anchor_every_seconds: settings.anchor_every_seconds.max(1),
            client,
            js,
            ready: AtomicBool::new(false),
            applied: AtomicU64::new(applied),
            applied_tx,
            own: Mutex::new(HashSet::new()),
            control_mac: settings.control_key.as_ref().map(ControlMac::new),
            stopping: AtomicBool::new(false),
            loops: AtomicUsize::new(0),
        }),
    })
}

/// The shortest `fleet.control_key` accepted.
pub const CONTROL_KEY_MIN_CHARS: usize = 32;

/// The header carrying a control message's MAC: keyed BLAKE3 of the payload, hex.
pub const CONTROL_MAC_HEADER: &str = "Kafclaw-Control-Mac";

/// `fleet.control_key`, derived into a BLAKE3 key of its own (never the key itself, never
/// shown: no `Debug`).
struct ControlMac([u8; 32]);

impl ControlMac {
    fn new(key: &crate::settings::secret::Secret) -> Self {
        Self(blake3::derive_key(
            "kafclaw 2026 fleet control message mac v1",
            key.expose().as_bytes(),
        ))
    }
    fn tag(&self, payload: &[u8]) -> blake3::Hash {
        blake3::keyed_hash(&self.0, payload)
    }
    /// Whether `presented` (the header's hex) is the payload's MAC; compared in constant time
    /// (`blake3::Hash`'s equality).
    fn verify(&self, payload: &[u8], presented: Option<&str>) -> bool {
        presented
            .and_then(|hex| blake3::Hash::from_hex(hex).ok())
            .is_some_and(|tag| tag == self.tag(payload))
    }
}

/// Why a control message from the stream is not to be applied (with `fleet.control_key` set):
/// no valid MAC, or an authenticated envelope issued long before the stream took it (a replay
/// of an old message); `None` when it may be applied.
fn unauthenticated(
    mac: Option<&ControlMac>,
    message: &async_nats::Message,
    envelope: &ControlEnvelope,
    published: i64,
) -> Option<String> {
    let mac = mac?;
    let presented = message
        .headers
        .as_ref()
        .and_then(|h| h.get(CONTROL_MAC_HEADER))
        .map(|v| v.as_str());
    if !mac.verify(&message.payload, presented) {
        return Some("no valid fleet.control_key MAC; not applied".into());
    }
    let age = published.saturating_sub(envelope.issued_at);
    if age > CONTROL_MAX_AGE_SECONDS {
        return Some(format!(
            "issued {age} s before the stream took it (a replayed message); not applied"
        ));
    }
    None
}

fn load_applied(db: &StoreDb) -> u64 {
    db.tree(TreeName::Settings)
        .ok()
        .and_then(|t| t.get_json::<u64>(APPLIED_KEY).ok().flatten())
        .unwrap_or(0)
}

fn store_applied(db: &StoreDb, seq: u64) -> Result<(), String> {
    let tree = db.tree(TreeName::Settings).map_err(|e| e.to_string())?;
    tree.put_json(APPLIED_KEY, &seq)
        .map_err(|e| e.to_string())?;
    db.flush_blocking().map_err(|e| e.to_string())
}

impl Fleet {
    /// This node's name.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The NATS client (the anchors, the lockout bucket).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.js
    }

    /// Anchor cadence: (records, seconds).
    pub fn anchor_every(&self) -> (u64, Duration) {
        (
            self.inner.anchor_every_records,
            Duration::from_secs(self.inner.anchor_every_seconds),
        )
    }

    /// Connected to NATS with the streams in place.
    pub fn connected(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
            && self.inner.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Why the node is degraded, or `None` when it is connected.
    pub fn degraded_reason(&self) -> Option<&'static str> {
        match self.inner.client.connection_state() {
            async_nats::connection::State::Connected if self.inner.ready.load(Ordering::SeqCst) => {
                None
            }
            async_nats::connection::State::Connected => Some("the fleet streams are not ready"),
            _ => Some("NATS is unreachable"),
        }
    }

    /// The last control sequence this node applied.
    pub fn applied_seq(&self) -> u64 {
        self.inner.applied.load(Ordering::SeqCst)
    }

    /// `{node_id, state, applied_control_seq}` for status and `/healthz`.
    pub fn status(&self) -> Value {
        json!({
            "node_id": self.inner.node_id,
            "state": if self.connected() { "connected" } else { "degraded" },
            "reason": self.degraded_reason(),
            "applied_control_seq": self.applied_seq(),
        })
    }

    /// `status` plus `nodes`: every node of the roster (`GET /api/v1/status`, `kafclaw status`).
    pub fn status_with_nodes(&self) -> Value {
        let mut status = self.status();
        status["nodes"] = self.nodes();
        status
    }

    /// Creates the streams and buckets when missing (once per connection).
    pub async fn ensure(&self) -> Result<(), String> {
        if self.inner.ready.load(Ordering::SeqCst) {
            return Ok(());
        }
        let js = &self.inner.js;
        let replicas = self.inner.replicas;
        js.get_or_create_stream(stream::Config {
            name: CONTROL_STREAM.into(),
            subjects: vec![CONTROL_SUBJECT.into()],
            num_replicas: replicas,
            duplicate_window: Duration::from_secs(120),
            // The server refuses larger messages; a follower skips them unread too.
            max_message_size: MAX_CONTROL_BYTES as i32,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("fleet: cannot create stream {CONTROL_STREAM}: {e}"))?;
        ensure_anchor_stream(js, replicas).await?;
        let failure_events = js
            .get_or_create_stream(stream::Config {
                name: AUTH_FAILURE_STREAM.into(),
                subjects: vec![format!("{AUTH_FAILURE_SUBJECT_PREFIX}.>")],
                // A failure counts for the lockout window only, and no client keeps more than
                // the threshold's worth (the count only has to reach it).
                max_age: self.inner.lockout.window,
                max_messages_per_subject: i64::from(self.inner.lockout.max_failures.max(1)),
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("fleet: cannot create stream {AUTH_FAILURE_STREAM}: {e}"))?;
        *self
            .inner
            .failure_events
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(failure_events);
        // The bucket's stream laid out as `create_key_value` would, created directly: that call
        // first asks for the account's API level, which a 2.9 server does not report.
        let max_age = self.inner.lockout.window + self.inner.lockout.lockout;
        js.get_or_create_stream(stream::Config {
            name: format!("KV_{AUTH_FAILURES_BUCKET}"),
            subjects: vec![format!("$KV.{AUTH_FAILURES_BUCKET}.>")],
            max_messages_per_subject: 1,
            // A count outlives neither its window nor the lockout it led to.
            max_age,
            duplicate_window: max_age.min(Duration::from_secs(120)),
            allow_rollup: true,
            deny_delete: true,
            // Reads go to the stream's leader: a direct get may be answered by a replica that
            // lags, and a compare-and-set on its revision then fails every retry.
            allow_direct: false,
            discard: stream::DiscardPolicy::New,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("fleet: cannot create bucket {AUTH_FAILURES_BUCKET}: {e}"))?;
        let failures = js
            .get_key_value(AUTH_FAILURES_BUCKET)
            .await
            .map_err(|e| format!("fleet: cannot open bucket {AUTH_FAILURES_BUCKET}: {e}"))?;
        *self
            .inner
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(failures);
        js.get_or_create_stream(stream::Config {
            name: format!("KV_{NODES_BUCKET}"),
            subjects: vec![format!("$KV.{NODES_BUCKET}.>")],
            max_messages_per_subject: 1,
            max_age: ROSTER_MAX_AGE,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("fleet: cannot create bucket {NODES_BUCKET}: {e}"))?;
        let nodes = js
            .get_key_value(NODES_BUCKET)
            .await
            .map_err(|e| format!("fleet: cannot open bucket {NODES_BUCKET}: {e}"))?;
        *self
            .inner
            .nodes_bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(nodes);
        self.inner.ready.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Every node of the roster as this node last read it (sorted by id): id, version, when
    /// last seen and how long ago, its state, the control sequence it applied and its audit
    /// head. This node's own line is current even when NATS is unreachable.
    pub fn nodes(&self) -> Value {
        let now = now_ms();
        let mut roster = self
            .inner
            .roster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let own = self.own_entry(
            roster
                .get(&self.inner.node_id)
                .and_then(|e| e.audit_head.clone()),
        );
        roster.insert(own.node_id.clone(), own);
        Value::Array(
            roster
                .values()
                .map(|e| {
                    let ago = now.saturating_sub(e.last_seen_ms) / 1000;
                    json!({
                        "node_id": e.node_id,
                        "version": e.version,
                        "last_seen": e.last_seen,
                        "seconds_since_seen": ago,
                        "stale": ago >= STALE_AFTER.as_secs(),
                        "state": e.state,
                        "applied_control_seq": e.applied_control_seq,
                        "audit_head": e.audit_head,
                    })
                })
                .collect(),
        )
    }

    fn own_entry(&self, audit_head: Option<AuditHead>) -> NodeEntry {
        NodeEntry {
            node_id: self.inner.node_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            last_seen: kafclaw_actors::clock::now_rfc3339(),
            last_seen_ms: now_ms(),
            state: if self.connected() {
                "connected"
            } else {
                "degraded"
            }
            .to_string(),
            applied_control_seq: self.applied_seq(),
            audit_head,
        }
    }

    fn nodes_bucket(&self) -> Option<kv::Store> {
        self.inner
            .nodes_bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A fresh control envelope id (random; also the `Nats-Msg-Id`), chosen before the
    /// message is audited so the origin's record names what it publishes.
    pub fn new_control_id() -> Result<String, String> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| format!("no randomness: {e}"))?;
        Ok(hex::encode(id))
    }

    /// Publishes a control message accepted here; the stream sequence it got.
    pub async fn publish_control(
        &self,
        id: String,
        message: &ControlMessage,
        actor: &str,
    ) -> Result<u64, String> {
        let envelope = ControlEnvelope {
            id,
            origin: self.inner.node_id.clone(),
            actor: actor.to_string(),
            message: message.clone(),
            issued_at: time::OffsetDateTime::now_utc().unix_timestamp(),
        };
        let payload = serde_json::to_vec(&envelope).map_err(|e| e.to_string())?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", envelope.id.as_str());
        if let Some(mac) = &self.inner.control_mac {
            headers.insert(CONTROL_MAC_HEADER, mac.tag(&payload).to_hex().as_str());
        }
        self.lock_own().insert(envelope.id.clone());
        let publish = async {
            self.inner
                .js
                .publish_with_headers(CONTROL_SUBJECT, headers, payload.into())
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(PUBLISH_TIMEOUT, publish).await {
            Ok(Ok(ack)) => Ok(ack.sequence),
            Ok(Err(e)) => {
                self.lock_own().remove(&envelope.id);
                Err(e)
            }
            Err(_) => {
                self.lock_own().remove(&envelope.id);
                Err("NATS did not acknowledge the publish in time".into())
            }
        }
    }

    fn lock_own(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.inner.own.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sequence of the newest message on the control stream (0 when empty).
    async fn control_head(&self) -> Result<u64, String> {
        let mut stream = self
            .inner
            .js
            .get_stream(CONTROL_STREAM)
            .await
            .map_err(|e| e.to_string())?;
        let info = stream.info().await.map_err(|e| e.to_string())?;
        Ok(info.state.last_sequence)
    }

    /// Waits (at most `deadline`) until everything on the control stream is applied here: a
    /// node that was down applies what it missed before it opens its listeners. NATS
    /// unreachable: returns at once, degraded (the watcher catches up when NATS returns).
    pub async fn catch_up(&self, deadline: Duration) -> Result<(), String> {
        let until = tokio::time::Instant::now() + deadline;
        let mut rx = self.inner.applied_tx.subscribe();
        while !self.connected() {
            if tokio::time::Instant::now() >= until {
                return Err(self.degraded_reason().unwrap_or("degraded").to_string());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let head = self.control_head().await?;
        loop {
            if *rx.borrow_and_update() >= head {
                return Ok(());
            }
            match tokio::time::timeout_at(until, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(format!(
                        "the control stream is not applied yet ({} of {head})",
                        self.applied_seq()
                    ))
                }
            }
        }
    }

    fn stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::SeqCst)
    }

    /// At a stop: ends the watcher's loops (at most `deadline`), so their consumers are
    /// dropped while the runtime still runs.
    pub async fn shutdown(&self, deadline: Duration) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        let until = tokio::time::Instant::now() + deadline;
        while self.inner.loops.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn failures_bucket(&self) -> Option<kv::Store> {
        self.inner
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counts one auth failure of `ip`'s client key fleet-wide; `Some(time left)` when the
    /// fleet-wide count locks it out.
    ///
    /// Each failure is its own message on `KAFCLAW_AUTH_FAILURES` (kept for the lockout
    /// window), so concurrent failures on several nodes are never lost: a compare-and-set on
    /// one counter was, on a 2.9 cluster, won by two nodes at the same revision. The count is
    /// the client's messages in the stream once ours is stored; at the threshold the lockout
    /// is put in the `kafclaw_auth_failures` bucket, which every node watches.
    pub async fn count_auth_failure(&self, ip: IpAddr) -> Result<Option<Duration>, String> {
        let bucket = self
            .failures_bucket()
            .ok_or("the fleet is degraded: auth failures are counted on this node only")?;
        let key = failure_key(ClientKey::of(ip));
        let policy = self.inner.lockout;
        let now = now_ms();
        if let Some(entry) = bucket.entry(&key).await.map_err(|e| e.to_string())? {
            let locked = serde_json::from_slice::<FailureCount>(&entry.value).unwrap_or_default();
            if let Some(left) = locked
                .left(now, policy.lockout)
                .filter(|_| entry.operation == kv::Operation::Put)
                .filter(|_| locked.authentic(&key, self.inner.control_mac.as_ref()))
            {
                return Ok(Some(left));
            }
        }
        let subject = format!("{AUTH_FAILURE_SUBJECT_PREFIX}.{key}");
        self.inner
            .js
            .publish(subject.clone(), Vec::<u8>::new().into())
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let stream = self
            .inner
            .failure_events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or("the fleet is degraded: auth failures are counted on this node only")?;
        let mut subjects = stream
            .info_with_subjects(&subject)
            .await
            .map_err(|e| e.to_string())?;
        let mut failures = 0usize;
        while let Some(entry) = subjects.next().await {
            let (name, count) = entry.map_err(|e| e.to_string())?;
            if name == subject {
                failures = count;
            }
        }
        if failures < policy.max_failures.max(1) as usize {
            return Ok(None);
        }
        let lock = FailureCount {
            failures: u32::try_from(failures).unwrap_or(u32::MAX),
            window_start_ms: now,
            locked_until_ms: Some(now + policy.lockout.as_millis() as u64),
            mac: None,
        }
        .sign(&key, self.inner.control_mac.as_ref());
        let value = serde_json::to_vec(&lock).map_err(|e| e.to_string())?;
        bucket
            .put(&key, value.into())
            .await
            .map_err(|e| e.to_string())?;
        Ok(lock.left(now, policy.lockout))
    }

    fn set_applied(&self, seq: u64) {
        self.inner.applied.store(seq, Ordering::SeqCst);
        self.inner.applied_tx.send_replace(seq);
    }
}

/// Applies the control stream in order (supervised: a restart resumes after the last applied
/// sequence, which survives in the store).
pub struct FleetWatcher {
    fleet: Fleet,
    control: ControlContext,
    audit: Slot<AuditChainer>,
}

impl FleetWatcher {
    /// A watcher over the fleet handle, what control messages act on, and the audit chainer
    /// whose head it anchors.
    pub fn new(fleet: Fleet, control: ControlContext, audit: Slot<AuditChainer>) -> Self {
        Self {
            fleet,
            control,
            audit,
        }
    }
}

impl Actor for FleetWatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let fleet = self.fleet.clone();
        let control = self.control.clone();
        ctx.spawn(watch(fleet.clone(), control.clone()).into_actor(self));
        ctx.spawn(watch_lockouts(fleet.clone(), control).into_actor(self));
        ctx.spawn(heartbeat(fleet.clone(), self.audit.clone()).into_actor(self));
        ctx.spawn(publish_anchors(fleet, self.audit.clone()).into_actor(self));
    }
}

impl Handler<Ping> for FleetWatcher {
    type Result = Pong;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Pong {
        Pong
    }
}

async fn watch(fleet: Fleet, control: ControlContext) {
    let _running = LoopGuard::new(&fleet);
    let mut was_connected = false;
    while !fleet.stopping() {
        if fleet.inner.client.connection_state() != async_nats::connection::State::Connected {
            if was_connected {
                tracing::warn!(node = %fleet.node_id(), "fleet degraded: NATS is unreachable");
                was_connected = false;
            }
            fleet.inner.ready.store(false, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        if let Err(e) = fleet.ensure().await {
            tracing::warn!(error = %e, "fleet degraded");
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        if !was_connected {
            tracing::info!(node = %fleet.node_id(), applied = fleet.applied_seq(), "fleet connected");
            was_connected = true;
        }
        if let Err(e) = follow(&fleet, &control).await {
            tracing::warn!(error = %e, "fleet control stream interrupted");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Follows the control stream from the sequence after the last applied one until it fails.
async fn follow(fleet: &Fleet, control: &ControlContext) -> Result<(), String> {
    let stream = fleet
        .inner
        .js
        .get_stream(CONTROL_STREAM)
        .await
        .map_err(|e| e.to_string())?;
    let start = fleet.applied_seq() + 1;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    while !fleet.stopping() {
        // The stream may be empty: wake up to notice a lost connection.
        let next = tokio::time::timeout(Duration::from_secs(1), messages.next()).await;
        let message = match next {
            Err(_) => {
                if fleet.inner.client.connection_state() != async_nats::connection::State::Connected
                {
                    return Err("NATS is unreachable".into());
                }
                continue;
            }
            Ok(None) => return Err("the consumer ended".into()),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(message))) => message,
        };
        let info = message.info().map_err(|e| e.to_string())?;
        let (seq, published) = (info.stream_sequence, info.published.unix_timestamp());
        if seq <= fleet.applied_seq() {
            continue;
        }
        let parsed = if message.payload.len() > MAX_CONTROL_BYTES {
            Err(format!(
                "{} bytes, over the {MAX_CONTROL_BYTES} a control message may have",
                message.payload.len()
            ))
        } else {
            serde_json::from_slice::<ControlEnvelope>(&message.payload).map_err(|e| e.to_string())
        };
        match parsed {
            Ok(envelope) => {
                let own =
                    envelope.origin == fleet.node_id() && fleet.lock_own().remove(&envelope.id);
                if !own {
                    let mac = fleet.inner.control_mac.as_ref();
                    let forged = unauthenticated(mac, &message, &envelope, published);
                    crate::admin::apply_from_fleet(envelope, seq, forged, control).await?;
                }
            }
            Err(e) => tracing::warn!(seq, error = %e, "fleet: unreadable control message skipped"),
        }
        store_applied(&control.db, seq)?;
        fleet.set_applied(seq);
    }
    Ok(())
}

/// One client key's fleet-wide auth failures (the `kafclaw_auth_failures` bucket's value).
/// With `fleet.control_key` set, `mac` authenticates the value for its bucket key.
#[derive(Debug, Default, Serialize, Deserialize)]
struct FailureCount {
    failures: u32,
    window_start_ms: u64,
    locked_until_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
}

impl FailureCount {
    /// The lockout left at `now_ms`, never more than `max` (the policy's lockout): a value
    /// written by anyone else with access to the bucket cannot lock a client out for longer.
    fn left(&self, now_ms: u64, max: Duration) -> Option<Duration> {
        self.locked_until_ms
            .filter(|until| *until > now_ms)
            .map(|until| Duration::from_millis(until - now_ms).min(max))
    }

    /// What the MAC covers: the bucket key and every field, one line.
    fn mac_input(&self, key: &str) -> Vec<u8> {
        format!(
            "kafclaw auth lockout\n{key}\n{}\n{}\n{}",
            self.failures,
            self.window_start_ms,
            self.locked_until_ms
                .map_or(String::new(), |u| u.to_string())
        )
        .into_bytes()
    }

    fn sign(mut self, key: &str, mac: Option<&ControlMac>) -> Self {
        self.mac = mac.map(|m| m.tag(&self.mac_input(key)).to_hex().to_string());
        self
    }

    /// Whether the value may be trusted: always without a control key, else its MAC verifies.
    fn authentic(&self, key: &str, mac: Option<&ControlMac>) -> bool {
        mac.is_none_or(|m| m.verify(&self.mac_input(key), self.mac.as_deref()))
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A client key as a KV key (`[-/_=.a-zA-Z0-9]`): an IPv4 address as it is, an IPv6 /64 by
/// its network address with `:` as `_`.
fn failure_key(key: ClientKey) -> String {
    key.representative().to_string().replace(':', "_")
}

fn key_ip(key: &str) -> Option<IpAddr> {
    key.replace('_', ":").parse().ok()
}

/// Applies fleet-wide lockouts to this node's table as the bucket changes (audited first).
async fn watch_lockouts(fleet: Fleet, control: ControlContext) {
    let _running = LoopGuard::new(&fleet);
    while !fleet.stopping() {
        let Some(bucket) = fleet.failures_bucket().filter(|_| fleet.connected()) else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut entries = match bucket.watch_with_history(">").await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(error = %e, "fleet: cannot watch the auth-failure bucket");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        while !fleet.stopping() {
            let next = tokio::time::timeout(Duration::from_secs(1), entries.next()).await;
            let entry = match next {
                Err(_) if fleet.connected() => continue,
                Err(_) | Ok(None) | Ok(Some(Err(_))) => break,
                Ok(Some(Ok(entry))) => entry,
            };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            let Some(ip) = key_ip(&entry.key) else {
                continue;
            };
            let Ok(count) = serde_json::from_slice::<FailureCount>(&entry.value) else {
                continue;
            };
            if !count.authentic(&entry.key, fleet.inner.control_mac.as_ref()) {
                tracing::warn!(key = %entry.key, "fleet: a lockout without a valid fleet.control_key MAC ignored");
                continue;
            }
            let Some(left) = count.left(now_ms(), fleet.inner.lockout.lockout) else {
                continue;
            };
            if control.lockout.check(ip, Instant::now()).is_some() {
                continue;
            }
            let client = ClientKey::of(ip).to_string();
            let record = AppendRecord {
                kind: AuditKind::AuthLockedOut,
                actor: client.clone(),
                subject: "fleet".into(),
                data: json!({
                    "client": client,
                    "lockout_seconds": left.as_secs(),
                    "failures": count.failures,
                    "fleet": true,
                }),
            };
            // Refusing is the safe direction: the lockout applies even if the audit fails.
            let _ = control.audit.send(record).await;
            control.lockout.lock(ip, left, Instant::now());
        }
    }
}

/// The most nodes the roster shows (a bucket flooded with keys shows no more).
const MAX_ROSTER: usize = 256;
/// The largest roster entry read (an entry is about 300 bytes).
const MAX_ROSTER_ENTRY_BYTES: usize = 4096;

/// One node's roster entry (the value under its id in the roster bucket).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeEntry {
    node_id: String,
    version: String,
    last_seen: String,
    last_seen_ms: u64,
    state: String,
    applied_control_seq: u64,
    audit_head: Option<AuditHead>,
}

/// The roster entry under bucket key `key`: read only when it is at most
/// [`MAX_ROSTER_ENTRY_BYTES`] and speaks for the node its key names, never for another.
fn roster_entry(key: &str, value: &[u8]) -> Option<NodeEntry> {
    if value.len() > MAX_ROSTER_ENTRY_BYTES {
        return None;
    }
    serde_json::from_slice::<NodeEntry>(value)
        .ok()
        .filter(|entry| subject_token(&entry.node_id) == key)
}

/// Every `HEARTBEAT`: puts this node's roster entry (its audit head asked from the chainer)
/// and reads every node's into the roster `status` shows.
async fn heartbeat(fleet: Fleet, audit: Slot<AuditChainer>) {
    let key = subject_token(fleet.node_id());
    let _running = LoopGuard::new(&fleet);
    while !fleet.stopping() {
        let head = match audit.addr() {
            Some(addr) => addr.send(GetHead).await.ok(),
            None => None,
        };
        let own = fleet.own_entry(head);
        if let Some(bucket) = fleet.nodes_bucket().filter(|_| fleet.connected()) {
            let read = async {
                let value = serde_json::to_vec(&own).map_err(|e| e.to_string())?;
                bucket
                    .put(&key, value.into())
                    .await
                    .map_err(|e| e.to_string())?;
                let mut keys = bucket.keys().await.map_err(|e| e.to_string())?;
                let mut roster = BTreeMap::new();
                while let Some(Ok(k)) = keys.next().await {
                    if roster.len() >= MAX_ROSTER {
                        break;
                    }
                    if let Ok(Some(v)) = bucket.get(&k).await {
                        if let Some(entry) = roster_entry(&k, &v) {
                            roster.insert(entry.node_id.clone(), entry);
                        }
                    }
                }
                Ok::<_, String>(roster)
            };
            match tokio::time::timeout(PUBLISH_TIMEOUT, read).await {
                Ok(Ok(roster)) => {
                    *fleet.inner.roster.lock().unwrap_or_else(|p| p.into_inner()) = roster;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "fleet: roster not updated"),
                Err(_) => tracing::debug!("fleet: roster not updated in time"),
            }
        }
        fleet
            .inner
            .roster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(own.node_id.clone(), own);
        // In short steps, so a stop does not wait for a whole beat.
        let beat = tokio::time::Instant::now();
        while !fleet.stopping() && beat.elapsed() < HEARTBEAT {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The anchors stream's configuration. Every anchor is evidence: an older one is what a newer
/// anchor of a rewritten log cannot cover, so none may be evicted by newer ones (no
/// per-subject cap: a flood of forged anchors must not push the originals out), deleted or
/// purged. No size limit either: the servers' storage bounds it, and a full store refuses new
/// anchors rather than dropping old ones (about 200 bytes each).
fn anchor_stream_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: ANCHOR_STREAM.into(),
        subjects: vec![format!("{ANCHOR_SUBJECT_PREFIX}.*")],
        num_replicas: replicas,
        discard: stream::DiscardPolicy::New,
        deny_delete: true,
        deny_purge: true,
        ..Default::default()
    }
}

/// What is weaker in an anchors stream's configuration than [`anchor_stream_config`], one
/// phrase each (empty when nothing is).
fn anchor_stream_weaknesses(config: &stream::Config) -> Vec<String> {
    let mut weak = Vec::new();
    if config.max_messages_per_subject > 0 {
        weak.push(format!(
            "keeps only {} anchors per node, so newer (forged) ones push the originals out",
            config.max_messages_per_subject
        ));
    }
    if !config.max_age.is_zero() {
        weak.push(format!(
            "drops anchors after {} s",
            config.max_age.as_secs()
        ));
    }
    if (config.max_messages > 0 || config.max_bytes > 0)
        && config.discard != stream::DiscardPolicy::New
    {
        weak.push("drops the oldest anchors when full".into());
    }
    if !config.deny_delete {
        weak.push("allows deleting anchors".into());
    }
    if !config.deny_purge {
        weak.push("allows purging anchors".into());
    }
    if config.allow_rollup {
        weak.push("allows roll-ups, which replace a node's anchors".into());
    }
    weak
}

/// Creates the anchors stream when missing; one created by an older version (which kept 1000
/// anchors per node) is tightened. When the tightening is refused (the node's NATS user may
/// lack the right, as it should), the node says so and goes on: the weaknesses are reported
/// by `kafclaw audit verify --anchored`.
async fn ensure_anchor_stream(js: &jetstream::Context, replicas: usize) -> Result<(), String> {
    let wanted = anchor_stream_config(replicas);
    let mut stream = js
        .get_or_create_stream(wanted.clone())
        .await
        .map_err(|e| format!("fleet: cannot create stream {ANCHOR_STREAM}: {e}"))?;
    let current = stream
        .info()
        .await
        .map_err(|e| format!("fleet: cannot read stream {ANCHOR_STREAM}: {e}"))?
        .config
        .clone();
    if anchor_stream_weaknesses(&current).is_empty() {
        return Ok(());
    }
    let tightened = stream::Config {
        num_replicas: current.num_replicas,
        ..wanted
    };
    if let Err(e) = js.update_stream(&tightened).await {
        tracing::warn!(
            stream = ANCHOR_STREAM,
            error = %e,
            weaknesses = %anchor_stream_weaknesses(&current).join("; "),
            "fleet: the anchors stream could not be tightened"
        );
    }
    Ok(())
}

/// One anchor: a node's audit head as it was published.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Anchor {
    /// The node.
    pub node: String,
    /// The head's sequence number.
    pub seq: u64,
    /// The head's hash (hex).
    pub hash: String,
    /// When it was published (RFC 3339).
    pub at: String,
}

/// The anchors subject of a node (`kafclaw.anchors.<node>`, the id made a subject token).
pub fn anchor_subject(node: &str) -> String {
    format!("{ANCHOR_SUBJECT_PREFIX}.{}", subject_token(node))
}

/// A node id made one NATS subject (and KV key) token: other characters become `_`.
fn subject_token(node: &str) -> String {
    node.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Publishes the audit head every `fleet.anchor_every_records` records or
/// `fleet.anchor_every_seconds` seconds (with new records), whichever comes first.
async fn publish_anchors(fleet: Fleet, audit: Slot<AuditChainer>) {
    let (every_records, every) = fleet.anchor_every();
    let subject = anchor_subject(fleet.node_id());
    let mut anchored = 0u64;
    let mut since = tokio::time::Instant::now();
    let _running = LoopGuard::new(&fleet);
    while !fleet.stopping() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(addr) = audit.addr() else { continue };
        let Ok(head) = addr.send(GetHead).await else {
            continue;
        };
        let due = head.seq > anchored
            && (head.seq - anchored >= every_records || since.elapsed() >= every);
        if !due || !fleet.connected() {
            continue;
        }
        let anchor = Anchor {
            node: fleet.node_id().to_string(),
            seq: head.seq,
            hash: head.hash,
            at: kafclaw_actors::clock::now_rfc3339(),
        };
        let Ok(payload) = serde_json::to_vec(&anchor) else {
            continue;
        };
        let publish = async {
            fleet
                .inner
                .js
                .publish(subject.clone(), payload.into())
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(PUBLISH_TIMEOUT, publish).await {
            Ok(Ok(_)) => {
                anchored = anchor.seq;
                since = tokio::time::Instant::now();
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "fleet: audit anchor not published"),
            Err(_) => tracing::warn!("fleet: audit anchor not acknowledged in time"),
        }
    }
}

/// `base` with the fleet's credentials (an nkey seed `SU…` or a token) and CA file, and the
/// server addresses of `fleet.nats_urls`.
fn connect_options(
    settings: &FleetSettings,
    mut options: async_nats::ConnectOptions,
) -> Result<(async_nats::ConnectOptions, Vec<async_nats::ServerAddr>), String> {
    let mut addrs = Vec::new();
    for url in &settings.nats_urls {
        let addr = url
            .parse::<async_nats::ServerAddr>()
            .map_err(|_| format!("fleet.nats_urls: {url} is not a NATS URL"))?;
        addrs.push(addr);
    }
    if let Some(credentials) = &settings.credentials {
        let value = credentials.expose().to_string();
        options = if value.starts_with("SU") {
            options.nkey(value)
        } else {
            options.token(value)
        };
    }
    if !settings.tls_ca_file.is_empty() {
        let path = std::path::PathBuf::from(&settings.tls_ca_file);
        if !path.is_file() {
            return Err(format!(
                "fleet.tls_ca_file: {} is not a readable file",
                path.display()
            ));
        }
        options = options.add_root_certificates(path).require_tls(true);
    }
    Ok((options, addrs))
}

/// Every anchor of this node the anchors stream holds (for `kafclaw audit verify
/// --anchored`), in stream order, and what is weak in the stream's configuration. Connects once,
/// without retrying.
pub async fn anchors(settings: &FleetSettings) -> Result<Anchors, String> {
    if !settings.enabled || settings.nats_urls.is_empty() {
        return Err("--anchored needs fleet.enabled and fleet.nats_urls".into());
    }
    let (options, addrs) = connect_options(
        settings,
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(3))
            .max_reconnects(Some(1)),
    )?;
    let client = options
        .connect(addrs)
        .await
        .map_err(|e| format!("cannot reach NATS for the anchors: {e}"))?;
    let js = jetstream::new(client);
    let mut stream = js
        .get_stream(ANCHOR_STREAM)
        .await
        .map_err(|e| format!("cannot read stream {ANCHOR_STREAM}: {e}"))?;
    let info = stream
        .info()
        .await
        .map_err(|e| format!("cannot read stream {ANCHOR_STREAM}: {e}"))?;
    let mut found = Anchors {
        heads: Vec::new(),
        unreadable: 0,
        stream_weaknesses: anchor_stream_weaknesses(&info.config),
        stream_created: info.created.to_string(),
    };
    let subject = anchor_subject(&settings.node_id());
    match stream.get_last_raw_message_by_subject(&subject).await {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound
            ) =>
        {
            return Ok(found);
        }
        Err(e) => return Err(format!("cannot read the anchors on {subject}: {e}")),
    }
    let read_error =
        |e: &dyn std::fmt::Display| format!("cannot read the anchors on {subject}: {e}");
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subject.clone(),
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| read_error(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| read_error(&e))?;
    loop {
        let message = match tokio::time::timeout(Duration::from_secs(10), messages.next()).await {
            Err(_) => return Err(read_error(&"no answer from NATS in 10 s")),
            Ok(None) => return Err(read_error(&"the consumer ended")),
            Ok(Some(Err(e))) => return Err(read_error(&e)),
            Ok(Some(Ok(message))) => message,
        };
        match serde_json::from_slice::<Anchor>(&message.payload) {
            Ok(anchor) => found.heads.push(anchor.head()),
            // It vouches for nothing and hides nothing: counted, not trusted.
            Err(_) => found.unreadable += 1,
        }
        if message.info().map_err(|e| read_error(&e))?.pending == 0 {
            return Ok(found);
        }
    }
}

/// What `kafclaw audit verify --anchored` checks the local chain against.
#[derive(Debug, Default)]
pub struct Anchors {
    /// Every readable anchor of this node, in stream order.
    pub heads: Vec<AuditHead>,
    /// Messages on this node's subject that are not anchors.
    pub unreadable: u64,
    /// What in the stream's configuration lets anchors be dropped (empty when nothing).
    pub stream_weaknesses: Vec<String>,
    /// When the stream was created (a stream deleted and created again starts over).
    pub stream_created: String,
}

impl Anchor {
    /// As the head `verify_against` checks the segments against.
    pub fn head(&self) -> AuditHead {
        AuditHead {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }
}

/// Checks the audit segments in `dir` against every fleet anchor: the chain must reach the
/// newest anchored record and carry each anchor's hash at its seq. The error is one line.
pub fn check_anchors(
    dir: &std::path::Path,
    key: &kafclaw_actors::audit::AuditKey,
    anchors: &[AuditHead],
) -> Result<(), String> {
    kafclaw_actors::audit::verify_anchored(dir, key, None, None, anchors)
        .map(|_| ())
        .map_err(|e| {
            format!(
                "the audit log does not match the fleet anchors ({} checked): {e}",
                anchors.len()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lockout value in the shared bucket locks out for at most the policy's lockout, and
    /// with a control key only a value signed for its own key counts.
    #[test]
    fn a_forged_or_endless_lockout_in_the_bucket_is_capped_and_needs_the_mac() {
        let lockout = Duration::from_secs(900);
        let endless = FailureCount {
            failures: 1,
            window_start_ms: 0,
            locked_until_ms: Some(u64::MAX),
            mac: None,
        };
        assert_eq!(endless.left(1_000, lockout), Some(lockout));
        let mac = ControlMac([7u8; 32]);
        assert!(endless.authentic("127.0.0.1", None));
        assert!(!endless.authentic("127.0.0.1", Some(&mac)));
        let signed = endless.sign("127.0.0.1", Some(&mac));
        assert!(signed.authentic("127.0.0.1", Some(&mac)));
        // Moved to another client's key, or with a field changed, it no longer verifies.
        assert!(!signed.authentic("10.0.0.1", Some(&mac)));
        let stretched = FailureCount {
            failures: 99,
            ..signed
        };
        assert!(!stretched.authentic("127.0.0.1", Some(&mac)));
        assert!(!stretched.authentic("127.0.0.1", Some(&ControlMac([8u8; 32]))));
    }

    /// A roster entry speaks only for the node its key names, and a huge one is not read.
    #[test]
    fn a_roster_entry_under_another_nodes_key_or_oversized_is_ignored() {
        let entry = |node: &str, pad: usize| {
            json!({"node_id": node, "version": "x".repeat(pad), "last_seen": "t",
                   "last_seen_ms": 1, "state": "connected", "applied_control_seq": 7,
                   "audit_head": null})
            .to_string()
        };
        assert!(roster_entry("node-a", entry("node-a", 1).as_bytes()).is_some());
        assert!(roster_entry("node_b", entry("node b", 1).as_bytes()).is_some());
        assert!(roster_entry("node-a", entry("victim", 1).as_bytes()).is_none());
        assert!(
            roster_entry("node-a", entry("node-a", MAX_ROSTER_ENTRY_BYTES).as_bytes()).is_none()
        );
        assert!(roster_entry("node-a", b"{not json").is_none());
    }

    #[test]
    fn the_anchors_stream_keeps_every_anchor_and_an_older_one_is_named_weak() {
        assert!(anchor_stream_weaknesses(&anchor_stream_config(3)).is_empty());
        let older = stream::Config {
            max_messages_per_subject: 1000,
            max_age: Duration::from_secs(86_400),
            max_bytes: 1 << 20,
            allow_rollup: true,
            ..Default::default()
        };
        let weak = anchor_stream_weaknesses(&older).join("; ");
        for phrase in [
            "keeps only 1000 anchors per node",
            "drops anchors after 86400 s",
            "drops the oldest anchors when full",
            "allows deleting",
            "allows purging",
            "roll-ups",
        ] {
            assert!(weak.contains(phrase), "{phrase}: {weak}");
        }
    }
}
