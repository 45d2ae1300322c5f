//! Native TLS on both listeners (`gateway.tls.mode = native`) and the TLS-mode start-up rules.
//!
//! Owns: loading the PEM certificate chain and private key (the key file must have no group or
//! other permission bits), the rustls server configuration (ring provider only, TLS 1.3 and
//! 1.2, no client certificates), and the certificate swap behind [`CertStore`]: a SIGHUP
//! reload replaces the certified key for NEW handshakes while open connections keep the
//! session they negotiated. The mode rules: a non-loopback bind needs `native` or `proxy`,
//! `proxy` needs `gateway.trusted_proxies`, `native` needs both files.
//! Must not: log or return key material, or leave the old certificate out of service when a
//! reload fails.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use zeroize::Zeroizing;

use crate::settings::{GatewaySettings, TlsMode};

pub mod pinned;

/// The crypto provider of every TLS endpoint of the process: ring (no aws-lc, no OpenSSL).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What the start-up rules decided.
pub enum Listening {
    /// Plain HTTP on loopback (`off`), or behind a proxy (`proxy`).
    Plain,
    /// Both listeners speak TLS with this certificate.
    Native(Arc<CertStore>),
}

/// Applies the `gateway.tls.*` rules before anything is opened; the error is one line.
pub fn preflight(gw: &GatewaySettings) -> Result<Listening, String> {
    match gw.tls.mode {
        TlsMode::Off if !gw.is_loopback() => Err(format!(
            "refusing to bind non-loopback host {} with gateway.tls.mode = off: a bearer token in clear text protects nothing; set gateway.tls.mode = native (with gateway.tls.cert_file and gateway.tls.key_file) or proxy (with gateway.trusted_proxies), or bind 127.0.0.1",
            gw.host
        )),
        TlsMode::Off => Ok(Listening::Plain),
        TlsMode::Proxy if gw.trusted_proxies.is_empty() => Err(
            "gateway.tls.mode = proxy requires gateway.trusted_proxies: the addresses of the TLS-terminating proxy (e.g. 127.0.0.1/32), the only peers allowed to name the client".to_string(),
        ),
        TlsMode::Proxy => Ok(Listening::Plain),
        TlsMode::Native => {
            let cert = required(&gw.tls.cert_file, "gateway.tls.cert_file")?;
            let key = required(&gw.tls.key_file, "gateway.tls.key_file")?;
            CertStore::open(cert, key).map(|store| Listening::Native(Arc::new(store)))
        }
    }
}

fn required(value: &str, key: &str) -> Result<PathBuf, String> {
    if value.trim().is_empty() {
        return Err(format!(
            "gateway.tls.mode = native requires {key} (a PEM file)"
        ));
    }
    Ok(PathBuf::from(value.trim()))
}

/// The certificate both listeners present, swappable at run time.
#[derive(Debug)]
pub struct CertStore {
    /// `gateway.tls.cert_file`.
    cert_file: PathBuf,
    /// `gateway.tls.key_file`.
    key_file: PathBuf,
    /// What new handshakes get.
    current: RwLock<Arc<CertifiedKey>>,
}

/// A certificate now in service (for the audit record; no key material).
#[derive(Clone, Debug)]
pub struct Loaded {
    /// BLAKE3 of the leaf certificate's DER, hex.
    pub leaf_blake3: String,
    /// Certificates in the chain.
    pub chain_len: usize,
}

/// A certificate and key read from disk, not yet in service.
pub struct Prepared {
    key: CertifiedKey,
    /// What it is (for the audit record).
    pub loaded: Loaded,
}

impl CertStore {
    /// Loads both files; the error names the file and what is wrong with it.
    pub fn open(cert_file: PathBuf, key_file: PathBuf) -> Result<Self, String> {
        let key = load(&cert_file, &key_file)?;
        Ok(Self {
            cert_file,
            key_file,
            current: RwLock::new(Arc::new(key)),
        })
    }

    /// Re-reads both files (the same checks as at start); nothing changes until
    /// [`CertStore::install`], so a failure leaves the old certificate in service.
    pub fn prepare(&self) -> Result<Prepared, String> {
        let key = load(&self.cert_file, &self.key_file)?;
        let loaded = describe(&key);
        Ok(Prepared { key, loaded })
    }

    /// Puts a prepared certificate in service for new handshakes; open connections keep theirs.
    pub fn install(&self, prepared: Prepared) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(prepared.key);
    }

    /// The certificate in service.
    pub fn loaded(&self) -> Loaded {
        describe(&self.current())
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The rustls configuration of both listeners (TLS 1.3 and 1.2, no client certificates).
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, String> {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("cannot configure TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        Ok(config)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn describe(key: &CertifiedKey) -> Loaded {
    Loaded {
        leaf_blake3: key
            .cert
            .first()
            .map(|c| blake3::hash(c.as_ref()).to_hex().to_string())
            .unwrap_or_default(),
        chain_len: key.cert.len(),
    }
}

/// The certificate chain of `cert_file` (leaf first).
pub fn read_chain(cert_file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = cert_file.display();
    let pem = std::fs::read(cert_file)
        .map_err(|e| format!("cannot read gateway.tls.cert_file {shown}: {e}"))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!("gateway.tls.cert_file {shown} is not a PEM certificate chain: {e}")
        })?;
    if chain.is_empty() {
        return Err(format!(
            "gateway.tls.cert_file {shown} holds no PEM certificate"
        ));
    }
    Ok(chain)
}

fn load(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, String> {
    let chain = read_chain(cert_file)?;
    let key = read_key(key_file)?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        format!(
            "gateway.tls.key_file {} does not fit gateway.tls.cert_file {}: {e}",
            key_file.display(),
            cert_file.display()
        )
    })
}

/// Reads the private key, refusing a file that group or others may access.
fn read_key(key_file: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let shown = key_file.display();
    let meta = std::fs::metadata(key_file)
        .map_err(|e| format!("cannot read gateway.tls.key_file {shown}: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "refusing gateway.tls.key_file {shown}: mode {mode:04o} lets group or others access the private key; chmod 600 {shown}"
        ));
    }
    let pem = Zeroizing::new(
        std::fs::read(key_file)
            .map_err(|e| format!("cannot read gateway.tls.key_file {shown}: {e}"))?,
    );
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        format!("gateway.tls.key_file {shown} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")
    })
}
