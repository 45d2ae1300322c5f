//! `kafclaw healthcheck`: exit 0 when the gateway port's `GET /healthz` answers 200 within
//! 2 s, 1 otherwise. For container `HEALTHCHECK`s (the image has no curl) and scripts.
//!
//! Owns: the probe. It connects to the configured listener (an unspecified bind address such
//! as `0.0.0.0` is probed on loopback) with HTTP/1.1. With `gateway.tls.mode = native` it
//! speaks TLS and trusts exactly the certificate in `gateway.tls.cert_file` (the leaf must be
//! byte-equal; no name check, no CA): a probe of our own listener needs no public trust, and
//! a certificate renewed on disk but not yet reloaded (SIGHUP) shows up as unhealthy.
//! Must not: send a token, or follow anything the answer says.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use crate::checks::Report;
use crate::http::tls;
use crate::settings::{GatewaySettings, Settings, TlsMode};

/// How long the whole probe may take.
const DEADLINE: Duration = Duration::from_secs(2);

/// Runs the probe; returns the exit code.
pub fn run(settings: &Settings, json: bool) -> i32 {
    let mut report = Report::new("healthcheck");
    let gw = &settings.gateway;
    let scheme = if gw.tls.mode == TlsMode::Native {
        "https"
    } else {
        "http"
    };
    match probe(gw, DEADLINE) {
        Ok((addr, 200)) => report.pass("healthz", format!("{scheme}://{addr}/healthz answered 200")),
        Ok((addr, status)) => report.fail(
            "healthz",
            format!("{scheme}://{addr}/healthz answered {status}"),
            "a permanent child is not running: see `kafclaw status` and the gateway's log",
        ),
        Err(e) => report.fail(
            "healthz",
            format!("{scheme} probe of port {}: {e}", gw.port),
            "is the gateway running with the same settings (gateway.host, gateway.port, gateway.tls.*)?",
        ),
    }
    report.print(json)
}

/// The address to probe: the configured host, with an unspecified address on loopback.
fn target(gw: &GatewaySettings) -> Result<SocketAddr, String> {
    let bare = gw.host.trim_start_matches('[').trim_end_matches(']');
    let ip = match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Ok(IpAddr::V6(v6)) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        Ok(ip) => ip,
        Err(_) => {
            return (bare, gw.port)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve {bare}: {e}"))?
                .next()
                .ok_or_else(|| format!("{bare} resolves to nothing"))
        }
    };
    Ok(SocketAddr::new(ip, gw.port))
}

/// Sends `GET /healthz`; returns the address and the status code.
fn probe(gw: &GatewaySettings, deadline: Duration) -> Result<(SocketAddr, u16), String> {
    let started = Instant::now();
    let addr = target(gw)?;
    let left = || {
        deadline
            .checked_sub(started.elapsed())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no answer within {} s", deadline.as_secs()))
    };
    let tcp = TcpStream::connect_timeout(&addr, left()?).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(left()?))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(left()?))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kafclaw-healthcheck\r\nConnection: close\r\n\r\n"
    );
    let head = if gw.tls.mode == TlsMode::Native {
        let config = tls::pinned::client_config(&gw.tls.cert_file)?;
        let name = ServerName::IpAddress(addr.ip().into());
        let conn = rustls::ClientConnection::new(Arc::new(config), name)
            .map_err(|e| format!("tls: {e}"))?;
        exchange(rustls::StreamOwned::new(conn, tcp), &request)?
    } else {
        exchange(tcp, &request)?
    };
    status_of(&head).map(|status| (addr, status))
}

fn exchange(mut stream: impl Read + Write, request: &str) -> Result<String, String> {
    stream
        .write_all(request.as_bytes())
        .and_then(|_| stream.flush())
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The status code of an HTTP/1.x status line.
fn status_of(head: &str) -> Result<u16, String> {
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(v), Some(Ok(code))) if v.starts_with("HTTP/1.") => Ok(code),
        _ => Err("the answer is not HTTP/1.1".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::status_of;

    #[test]
    fn status_lines() {
        assert_eq!(status_of("HTTP/1.1 200 OK\r\n"), Ok(200));
        assert_eq!(status_of("HTTP/1.0 503 Service Unavailable\r\n"), Ok(503));
        assert!(status_of("SSH-2.0-OpenSSH\r\n").is_err());
        assert!(status_of("").is_err());
    }
}
