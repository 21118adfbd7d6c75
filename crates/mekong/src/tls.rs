//! TLS for MQTT and HTTP: the `[tls]` section, the certificate chain and private key read
//! from PEM files, and their reload while mekong runs.
//!
//! One certificate serves every TLS listener (MQTT 3.1.1, MQTT 5, HTTPS). rustls asks a
//! certificate resolver for it at each handshake; the resolver here hands out whatever was
//! loaded last, so a reload (SIGHUP, or a change of the files' modification time seen by the
//! poll) changes the certificate of every new connection and leaves open connections as
//! they are. A reload that fails (a missing or broken file, a key that does not match the
//! certificate, which is also what a half-done replacement looks like) keeps the certificate
//! in use and logs why, naming the file; no error quotes the key file.
//!
//! TLS 1.2 and 1.3 only, with rustls' ring provider and its default cipher suites. TLS is
//! not a credential: the TLS listeners obey the same loopback-only rule as the plain ones.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::to_hex;

/// `[tls]`: off unless `cert` names a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM: the server's certificate first, then the intermediates.
    /// The empty string means no TLS.
    pub cert: PathBuf,
    /// The private key of that certificate, PEM (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
    /// Serve the HTTP API over TLS (HTTPS) on `api.listen`, instead of plain HTTP.
    pub api: bool,
    /// How often to check the two files' modification times and reload them when they
    /// changed, in seconds; 0 never (SIGHUP still reloads).
    pub reload_every_secs: u64,
    /// CA certificates, PEM, whose client certificates the MQTT TLS listeners accept as a
    /// login: a certificate valid for a registered device's id (as a DNS name) lets in that
    /// device. Empty: none (clients log in with passwords). Read at start.
    pub client_ca: PathBuf,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: PathBuf::new(),
            key: PathBuf::new(),
            api: true,
            reload_every_secs: 60,
            client_ca: PathBuf::new(),
        }
    }
}

impl TlsConfig {
    /// Whether TLS is configured.
    pub fn enabled(&self) -> bool {
        !self.cert.as_os_str().is_empty()
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.cert.as_os_str().is_empty() != self.key.as_os_str().is_empty() {
            bail!("tls.cert and tls.key go together: set both (TLS on) or neither (TLS off)");
        }
        if self.client_certificates() && !self.enabled() {
            bail!("tls.client_ca needs TLS: set tls.cert and tls.key too");
        }
        Ok(())
    }

    /// Whether client certificates are a way to log in to the broker.
    pub fn client_certificates(&self) -> bool {
        !self.client_ca.as_os_str().is_empty()
    }
}

/// The certificate in use, and how to replace it.
#[derive(Debug)]
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    resolver: Arc<Resolver>,
    /// What checks client certificates (`tls.client_ca`), for the MQTT listeners.
    clients: Option<Arc<dyn ClientCertVerifier>>,
}

/// What the listeners' rustls configurations ask for the certificate at each handshake.
#[derive(Debug)]
struct Resolver {
    current: RwLock<Loaded>,
}

/// A certificate and key, loaded together, with the name by which logs and tests know it.
#[derive(Debug, Clone)]
struct Loaded {
    key: Arc<CertifiedKey>,
    fingerprint: String,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner).key))
    }
}

impl Tls {
    /// Loads the certificate and key that `config` names; the error names the file and why.
    pub fn load(config: &TlsConfig) -> anyhow::Result<Tls> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = load(&config.cert, &config.key, &provider)?;
        let clients = match config.client_certificates() {
            true => Some(client_verifier(&config.client_ca, &provider)?),
            false => None,
        };
        Ok(Tls {
            cert: config.cert.clone(),
            key: config.key.clone(),
            provider,
            resolver: Arc::new(Resolver { current: RwLock::new(loaded) }),
            clients,
        })
    }

    /// The SHA-256 fingerprint of the server certificate in use, as hex digits (what
    /// `openssl x509 -fingerprint -sha256` prints, without the colons).
    pub fn fingerprint(&self) -> String {
        self.resolver.current.read().unwrap_or_else(PoisonError::into_inner).fingerprint.clone()
    }

    /// A rustls configuration that serves the current certificate, whatever it is at each
    /// handshake: TLS 1.3 and 1.2, and `alpn` offered. With `client_certificates` (the
    /// MQTT listeners) and `tls.client_ca` set, it asks clients for a certificate and
    /// verifies one that comes against those CAs; a client without one goes on (it logs in
    /// with a password). The API never asks: a browser would prompt its user.
    pub fn server_config(&self, alpn: &[&[u8]], client_certificates: bool) -> anyhow::Result<Arc<ServerConfig>> {
        let builder = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("rustls refused TLS 1.2 and 1.3")?;
        let builder = match (&self.clients, client_certificates) {
            (Some(verifier), true) => builder.with_client_cert_verifier(Arc::clone(verifier)),
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::clone(&self.resolver) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// Reads the files again and, if they hold a good certificate and its key, serves it
    /// from the next handshake on; otherwise keeps the one in use. Returns the fingerprint
    /// of the certificate now served.
    pub fn reload(&self) -> anyhow::Result<String> {
        let loaded = load(&self.cert, &self.key, &self.provider)?;
        let fingerprint = loaded.fingerprint.clone();
        *self.resolver.current.write().unwrap_or_else(PoisonError::into_inner) = loaded;
        Ok(fingerprint)
    }

    /// [`Tls::reload`], with its outcome logged: the new fingerprint, or the error (which
    /// names the file) and that the old certificate stays.
    fn reload_logged(&self, why: &str) -> bool {
        match self.reload() {
            Ok(fingerprint) => {
                tracing::info!(why, cert = %self.cert.display(), sha256 = %fingerprint, "tls certificate loaded");
                true
            }
            Err(e) => {
                tracing::error!(
                    why,
                    error = format!("{e:#}"),
                    sha256 = %self.fingerprint(),
                    "cannot load the new tls certificate; the one in use stays"
                );
                false
            }
        }
    }

    /// Checks the files' modification times every `every` and reloads when either changed,
    /// until the task is aborted. A change that does not load is reported once, not at every
    /// check; the next change is tried again.
    pub fn watch(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut seen = self.stamps();
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let now = self.stamps();
                if now != seen {
                    seen = now;
                    self.reload_logged("the files changed");
                }
            }
        })
    }

    /// What the poll compares: each file's modification time and length (`None` while it
    /// cannot be read, as in the middle of a replacement).
    fn stamps(&self) -> [Option<(SystemTime, u64)>; 2] {
        let stamp = |path: &Path| std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
        [stamp(&self.cert), stamp(&self.key)]
    }
}

/// The chain and key of two PEM files, checked to belong together.
/// The verifier of client certificates issued by the CAs in `path` (PEM); clients without
/// a certificate are let through to the password check.
fn client_verifier(path: &Path, provider: &Arc<CryptoProvider>) -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
    let what = || format!("tls.client_ca {}", path.display());
    let mut roots = RootCertStore::empty();
    for ca in read_chain(path).with_context(what)? {
        roots.add(ca).with_context(|| format!("{}: not a CA certificate rustls can use", what()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .allow_unauthenticated()
        .build()
        .with_context(what)?;
    Ok(verifier)
}

fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> anyhow::Result<Loaded> {
    let chain = read_chain(cert).with_context(|| format!("tls.cert {}", cert.display()))?;
    let fingerprint = chain.first().map(|leaf| to_hex(&Sha256::digest(leaf))).unwrap_or_default();
    let private = read_key(key).with_context(|| format!("tls.key {}", key.display()))?;
    let signing = provider.key_provider.load_private_key(private).map_err(|_| {
        anyhow::anyhow!("tls.key {}: not a key rustls can sign with (RSA, ECDSA P-256/P-384 or Ed25519)", key.display())
    })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => bail!(
            "tls.key {} does not belong to the certificate in tls.cert {} (replace both files, key last)",
            key.display(),
            cert.display()
        ),
        Err(e) => bail!("tls.cert {}: the first certificate cannot be read: {e}", cert.display()),
    }
    Ok(Loaded { key: Arc::new(certified), fingerprint })
}

pub(crate) fn read_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(e, "CERTIFICATE"))?;
    if chain.is_empty() {
        bail!("no CERTIFICATE section in the file");
    }
    Ok(chain)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| pem_error(e, "PRIVATE KEY (PKCS#8), RSA PRIVATE KEY or EC PRIVATE KEY"))
}

/// Why a PEM file could not be read. Only the I/O error and the kind of failure: a PEM
/// error's own text may quote a line of the file, which in a key file is key material.
fn pem_error(e: pem::Error, wanted: &str) -> anyhow::Error {
    match e {
        pem::Error::Io(e) => anyhow::Error::new(e),
        pem::Error::NoItemsFound => anyhow::anyhow!("no {wanted} section in the file"),
        _ => anyhow::anyhow!("not a well-formed PEM file (a section is cut short or its base64 is damaged)"),
    }
}
