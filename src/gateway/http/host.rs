//! Which names a listener answers to (issue 11 §3): the `Host` check that runs before
//! authentication, and the same rule applied to a browser's `Origin`.
//!
//! A listener answers to `localhost`, `127.0.0.1`, `[::1]` and the IP literal of the local
//! address the connection arrived on, each with the listener's own port, plus every entry of
//! `gateway.allowed_hosts` (`name` = any port, `name:port` = that port). A DNS-rebinding page
//! can make a browser send only its own name as `Host`, never one of these.
//! Owns: parsing of authorities (host names, IP literals, ports) and the allow rule.
//! Must not: consult `X-Forwarded-Host`/`Forwarded: host=` (a client could set them), or
//! accept anything it cannot parse.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::client::canonical;

#[cfg(test)]
mod tests;

/// The longest host name accepted (RFC 1035).
const MAX_NAME: usize = 253;

/// The host part of an authority, normalised (lower case, no trailing dot, canonical IPs).
#[derive(Clone, Debug, PartialEq, Eq)]
enum HostName {
    Ip(IpAddr),
    Name(String),
}

/// `host[:port]` as a request names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authority {
    host: HostName,
    port: Option<u16>,
}

impl Authority {
    /// Parses a `Host` value (or the authority of an absolute-form target). `None` for an
    /// empty value, userinfo, a bad port, or a character no host name has.
    pub fn parse(value: &str) -> Option<Self> {
        if value.is_empty() || value.len() > MAX_NAME + 8 {
            return None;
        }
        let (host, port) = if let Some(rest) = value.strip_prefix('[') {
            let (inside, after) = rest.split_once(']')?;
            let ip = inside.parse::<Ipv6Addr>().ok()?;
            let port = match after {
                "" => None,
                p => Some(port(p.strip_prefix(':')?)?),
            };
            (HostName::Ip(canonical(IpAddr::V6(ip))), port)
        } else {
            let (host, port) = match value.rsplit_once(':') {
                Some((h, p)) => (h, Some(port(p)?)),
                None => (value, None),
            };
            (name_or_ipv4(host)?, port)
        };
        Some(Authority { host, port })
    }
}

fn port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A dotted IPv4 literal or a DNS name (letters, digits, `-`, `_`, `.`); one trailing dot
/// is dropped, case is folded.
fn name_or_ipv4(host: &str) -> Option<HostName> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > MAX_NAME {
        return None;
    }
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return Some(HostName::Ip(IpAddr::V4(ip)));
    }
    let valid = host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    valid.then(|| HostName::Name(host.to_ascii_lowercase()))
}

/// One `gateway.allowed_hosts` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPattern {
    host: HostName,
    /// `None`: any port.
    port: Option<u16>,
}

impl HostPattern {
    /// `kafclaw.example.com`, `kafclaw.example.com:443`, `192.0.2.10`, `[2001:db8::1]:8443`.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let trimmed = entry.trim();
        Authority::parse(trimmed)
            .map(|a| HostPattern {
                host: a.host,
                port: a.port,
            })
            .ok_or_else(|| {
                format!("{entry:?} is not a host name, IP address, or one of those with :port (no scheme, path or wildcard)")
            })
    }

    /// Parses every entry; the error names the first bad one.
    pub fn parse_all(entries: &[String]) -> Result<Vec<Self>, String> {
        entries.iter().map(|e| Self::parse(e)).collect()
    }
}

/// The names one listener answers to.
#[derive(Clone, Debug, Default)]
pub struct AllowedHosts {
    /// `gateway.allowed_hosts`.
    extra: Vec<HostPattern>,
}

/// The port a `Host` without one means (plain HTTP).
pub const DEFAULT_PORT: u16 = 80;

impl AllowedHosts {
    /// The loopback names and the local address, plus `extra`.
    pub fn new(extra: Vec<HostPattern>) -> Self {
        Self { extra }
    }

    /// True when `authority` names the listener the connection to `local` arrived on.
    /// `default_port` is what a missing port means (80 for `http`, 443 for `https`).
    pub fn allows(&self, authority: &Authority, default_port: u16, local: SocketAddr) -> bool {
        let port = authority.port.unwrap_or(default_port);
        let own_port = port == local.port();
        let builtin = match &authority.host {
            HostName::Name(name) => name == "localhost",
            HostName::Ip(ip) => {
                *ip == IpAddr::from([127, 0, 0, 1])
                    || *ip == IpAddr::V6(Ipv6Addr::LOCALHOST)
                    || *ip == canonical(local.ip())
            }
        };
        if builtin && own_port {
            return true;
        }
        self.extra
            .iter()
            .any(|p| p.host == authority.host && p.port.is_none_or(|p| p == port))
    }

    /// True when the `Host` header value names this listener.
    pub fn allows_host(&self, value: &str, local: SocketAddr) -> bool {
        Authority::parse(value).is_some_and(|a| self.allows(&a, DEFAULT_PORT, local))
    }

    /// True when a browser `Origin` (`scheme://host[:port]`) is this listener itself.
    pub fn allows_origin(&self, origin: &str, local: SocketAddr) -> bool {
        parse_origin(origin).is_some_and(|(a, default_port)| self.allows(&a, default_port, local))
    }
}

/// `http://host[:port]` or `https://host[:port]` (nothing after the authority) and the port
/// its scheme implies.
fn parse_origin(origin: &str) -> Option<(Authority, u16)> {
    let (scheme, rest) = origin.split_once("://")?;
    let default_port = if scheme.eq_ignore_ascii_case("http") {
        80
    } else if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        return None;
    };
    if rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    Authority::parse(rest).map(|a| (a, default_port))
}
