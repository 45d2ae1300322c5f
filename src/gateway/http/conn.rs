//! Connections per client on one listener (`gateway.max_connections_per_ip`, issue 11 §4).
//!
//! Owns: the count of open connections per [`ClientKey`] (an IPv4 address, an IPv6 /64) and
//! the `on_connect` hook that takes one slot per accepted connection and gives it back when the
//! connection closes. A connection over the cap is answered 503 and closed at once, before any
//! byte of it is read, so it holds neither a worker's connection slot nor a body slot.
//! A connection from a `gateway.trusted_proxies` peer is not counted: it carries many clients.
//! Must not: do more than O(1) work under the lock, or block.

use std::any::Any;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;

use super::client::{canonical, ClientKey, TrustedProxies};

#[cfg(test)]
mod tests;

/// What the edge knows about a connection (in its extensions).
#[derive(Debug)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The local address the connection arrived on (its port is the listener's).
    pub local: SocketAddr,
    /// True when the connection was over the cap (answered and shut down in `on_connect`).
    pub refused: bool,
    /// The counted slot; `None` when not counted.
    _slot: Option<ConnSlot>,
}

type Counts = Arc<Mutex<HashMap<ClientKey, usize>>>;

/// One counted connection; dropping it gives the slot back.
#[derive(Debug)]
struct ConnSlot {
    key: ClientKey,
    counts: Counts,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// The per-client connection cap of one listener.
#[derive(Clone)]
pub struct ConnectionLimit {
    per_client: usize,
    proxies: Arc<TrustedProxies>,
    counts: Counts,
}

/// What an over-cap connection gets before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 44\r\nretry-after: 1\r\nconnection: close\r\n\r\n{\"error\":\"too many connections from client\"}";

impl ConnectionLimit {
    /// At most `per_client` open connections per client key (0 = no cap).
    pub fn new(per_client: usize, proxies: Arc<TrustedProxies>) -> Self {
        Self {
            per_client,
            proxies,
            counts: Arc::default(),
        }
    }

    /// Open connections of `key` (for tests and metrics).
    pub fn open(&self, key: &ClientKey) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(key).copied().unwrap_or(0)
    }

    /// The `HttpServer::on_connect` hook.
    pub fn on_connect(&self, io: &dyn Any, ext: &mut Extensions) {
        let (stream, plain) = match io.downcast_ref::<TcpStream>() {
            Some(stream) => (stream, true),
            None => match io.downcast_ref::<TlsStream<TcpStream>>() {
                Some(tls) => (tls.get_ref().0, false),
                None => return,
            },
        };
        let (Ok(peer), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else {
            return;
        };
        let (slot, refused) = self.admit(peer);
        // Over TLS the handshake is done: the edge answers the 503 inside the session.
        if refused && plain {
            // Best effort, straight to the socket (the stream is not polled yet): the answer
            // fits one segment; then neither side reads or writes.
            let _ = rustix::io::write(stream, REFUSAL);
            let _ = rustix::net::shutdown(stream, rustix::net::Shutdown::Both);
        }
        ext.insert(ConnInfo {
            peer,
            local,
            refused,
            _slot: slot,
        });
    }

    /// Takes a slot for a connection from `peer`: `(slot, refused)`.
    fn admit(&self, peer: SocketAddr) -> (Option<ConnSlot>, bool) {
        let ip = canonical(peer.ip());
        if self.per_client == 0 || self.proxies.contains(ip) {
            return (None, false);
        }
        let key = ClientKey::of(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(key).or_insert(0);
        if *n >= self.per_client {
            return (None, true);
        }
        *n += 1;
        drop(counts);
        let slot = ConnSlot {
            key,
            counts: self.counts.clone(),
        };
        (Some(slot), false)
    }
}
