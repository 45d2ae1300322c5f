//! The client of a request (issue 11 §4): its address, the key that lockout and the
//! per-client caps count by, and `gateway.trusted_proxies`.
//!
//! Owns: the `ClientKey` rule (an IPv4 address; an IPv6 client by its /64; an IPv4-mapped IPv6
//! address is the IPv4 address) and the one place a forwarding header is believed: only when
//! the TCP peer is a trusted proxy, the client is the right-most address in
//! `X-Forwarded-For` (or, without that header, `Forwarded: for=`) that is not itself a trusted
//! proxy. Must not: read a forwarding header from any other peer, or do I/O.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use actix_web::http::header::HeaderMap;
use ipnet::IpNet;

#[cfg(test)]
mod tests;

/// What lockout, the connection cap and the audit-rate limits count by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// One IPv4 address.
    V4(Ipv4Addr),
    /// The upper 64 bits of an IPv6 address: one customer network gets one key.
    V6(u64),
}

impl ClientKey {
    /// The key of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match canonical(ip) {
            IpAddr::V4(v4) => ClientKey::V4(v4),
            IpAddr::V6(v6) => ClientKey::V6((u128::from(v6) >> 64) as u64),
        }
    }

    /// An address inside the key (the network address of a /64): what incident actions and
    /// `Lockout::lock` accept.
    pub fn representative(&self) -> IpAddr {
        match *self {
            ClientKey::V4(v4) => IpAddr::V4(v4),
            ClientKey::V6(prefix) => IpAddr::V6(Ipv6Addr::from(u128::from(prefix) << 64)),
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::V4(v4) => write!(f, "{v4}"),
            ClientKey::V6(_) => write!(f, "{}/64", self.representative()),
        }
    }
}

/// An IPv4-mapped IPv6 address as IPv4; anything else unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// `gateway.trusted_proxies`: the peers that may tell us who the client is.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses every entry (a CIDR, or one address); the error names the first bad entry.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|e| parse_cidr(e))
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    /// True when `ip` is inside one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// One `gateway.trusted_proxies` entry: `10.0.0.0/8`, `2001:db8::/32`, or a bare address.
pub fn parse_cidr(entry: &str) -> Result<IpNet, String> {
    let entry = entry.trim();
    let parsed = entry
        .parse::<IpNet>()
        .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from));
    match parsed {
        Ok(net) if net.addr() != net.network() => Err(format!(
            "{entry:?} has host bits set; write the network, e.g. {}",
            net.trunc()
        )),
        Ok(net) => Ok(net),
        Err(_) => Err(format!(
            "{entry:?} is not a CIDR (e.g. 10.0.0.0/8, 2001:db8::/32) or an IP address"
        )),
    }
}

/// Who sent a request, as far as the edge can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// The client's address: the peer, or the address a trusted proxy reported.
    pub addr: IpAddr,
    /// The TCP peer.
    pub peer: IpAddr,
    /// True when `addr` came from a trusted proxy's header.
    pub relayed: bool,
    /// True when the request carries any forwarding header (trusted or not): such a request
    /// was relayed by something, so it is never "local" even from a loopback peer.
    pub forwarded: bool,
}

impl Client {
    /// The client of a request from `peer` with `headers`.
    pub fn resolve(peer: IpAddr, headers: &HeaderMap, proxies: &TrustedProxies) -> Self {
        let peer = canonical(peer);
        let forwarded = ["x-forwarded-for", "forwarded", "x-real-ip"]
            .iter()
            .any(|name| headers.contains_key(*name));
        let reported = if proxies.contains(peer) {
            reported_client(headers, proxies)
        } else {
            None
        };
        Client {
            addr: reported.unwrap_or(peer),
            peer,
            relayed: reported.is_some_and(|ip| ip != peer),
            forwarded,
        }
    }

    /// The counting key.
    pub fn key(&self) -> ClientKey {
        ClientKey::of(self.addr)
    }

    /// True for a direct connection from this host (local mode trusts only these).
    pub fn is_local(&self) -> bool {
        self.peer.is_loopback() && !self.forwarded
    }
}

/// The right-most hop a trusted proxy reported that is not itself a trusted proxy.
/// `X-Forwarded-For` is preferred: nearly every proxy sets it, and many pass a client's own
/// `Forwarded` through untouched.
fn reported_client(headers: &HeaderMap, proxies: &TrustedProxies) -> Option<IpAddr> {
    let hops: Vec<Option<IpAddr>> = if headers.contains_key("x-forwarded-for") {
        list_items(headers, "x-forwarded-for")
            .map(parse_node)
            .collect()
    } else {
        list_items(headers, "forwarded")
            .map(|element| forwarded_for(element).and_then(parse_node))
            .collect()
    };
    let mut nearest_trusted = None;
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) if proxies.contains(*ip) => nearest_trusted = Some(canonical(*ip)),
            Some(ip) => return Some(canonical(*ip)),
            // `unknown`, an obfuscated name or garbage: the hop that reported it is the last
            // address we can stand behind.
            None => return nearest_trusted,
        }
    }
    nearest_trusted
}

/// Every comma-separated item of every header line named `name`, in order.
fn list_items<'a>(headers: &'a HeaderMap, name: &'static str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// The `for=` parameter of one `Forwarded` element.
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim())
    })
}

/// A node: `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`, `"[2001:db8::1]:4711"`, `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim();
    let node = node
        .strip_prefix('"')
        .and_then(|n| n.strip_suffix('"'))
        .unwrap_or(node);
    if let Some(rest) = node.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        if !port_ok {
            return None;
        }
        return inside.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    let (host, port) = node.rsplit_once(':')?;
    if !is_port(port) {
        return None;
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}
