//! The TLS mode in force (`gateway.tls.mode`, issue 13): a non-loopback bind without TLS
//! fails (the bearer token would travel in clear text), `proxy` needs trusted proxies, and
//! `native` needs a certificate and a private key the gateway would accept (0600 key).
//! Also where each secret came from (`doctor`), never its value.

use super::Report;
use crate::http::tls::CertStore;
use crate::settings::keys::{self, Kind};
use crate::settings::secret_files;
use crate::settings::{Settings, TlsMode};

/// The `tls` row.
pub fn check(settings: &Settings, report: &mut Report) {
    let gw = &settings.gateway;
    let remedy = "set gateway.tls.mode = native with gateway.tls.cert_file and gateway.tls.key_file (0600), or proxy behind a TLS-terminating proxy listed in gateway.trusted_proxies (see deploy/compose.yaml)";
    match gw.tls.mode {
        TlsMode::Off if gw.is_loopback() => report.pass(
            "tls",
            format!("gateway.tls.mode = off: plain HTTP on loopback host {}", gw.host),
        ),
        TlsMode::Off => report.fail(
            "tls",
            format!("non-loopback host {} without TLS (gateway.tls.mode = off): the token travels in clear text; the gateway refuses to start so", gw.host),
            remedy,
        ),
        TlsMode::Proxy if gw.trusted_proxies.is_empty() => report.fail(
            "tls",
            "gateway.tls.mode = proxy without gateway.trusted_proxies: the gateway refuses to start so",
            remedy,
        ),
        TlsMode::Proxy => report.pass(
            "tls",
            format!(
                "gateway.tls.mode = proxy: TLS terminated by a proxy at {}",
                gw.trusted_proxies.join(", ")
            ),
        ),
        TlsMode::Native => {
            let opened = CertStore::open(
                gw.tls.cert_file.clone().into(),
                gw.tls.key_file.clone().into(),
            );
            match opened {
                Ok(store) => report.pass(
                    "tls",
                    format!(
                        "gateway.tls.mode = native: TLS 1.2+ on both listeners with {} ({} certificate(s), leaf blake3 {})",
                        gw.tls.cert_file,
                        store.loaded().chain_len,
                        &store.loaded().leaf_blake3[..16]
                    ),
                ),
                Err(e) => report.fail("tls", e, remedy),
            }
        }
    }
}

/// One `secret_source:<key>` row per secret that has a value: where it came from.
pub fn secret_sources(settings: &Settings, report: &mut Report) {
    for (key, origin) in &settings.origins {
        let secret = keys::lookup(key).is_some_and(|spec| spec.kind == Kind::Secret);
        if !secret {
            continue;
        }
        report.pass(
            format!("secret_source:{key}"),
            format!("{key} from {}", secret_files::describe(origin)),
        );
    }
}
