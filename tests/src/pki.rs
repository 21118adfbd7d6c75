//! Test certificates and TLS clients: a CA of the test's own and server certificates it
//! signs for `localhost`, `127.0.0.1` and `::1`, written as PEM files into a temporary
//! directory (made with rcgen, ring as rustls); rustls client configurations that trust that
//! CA (and present a device's client certificate it signs); and the server certificate a
//! TLS listener presents to a new connection.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// A CA, and the files of the server certificates it issued.
pub struct TestPki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A server certificate written out: where its chain and key are, and its DER.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The chain file (server certificate, then the CA's).
    pub cert: PathBuf,
    /// The key file.
    pub key: PathBuf,
    /// The server certificate, DER, as a client sees it in the handshake.
    pub der: Vec<u8>,
    /// The chain, PEM, as written.
    pub cert_pem: String,
    /// The key, PEM, for tests that look for it where it must not be.
    pub key_pem: String,
}

impl TestPki {
    /// A new CA, its certificate written to `ca.pem` in a new temporary directory.
    pub fn new() -> TestPki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "mekong test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        TestPki { dir, ca, ca_key }
    }

    /// The CA's certificate file (for `mosquitto_pub --cafile`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A new server certificate and key (a new key pair each time), written to
    /// `{name}.crt` and `{name}.key`, replacing what was there.
    pub fn issue(&self, name: &str) -> Issued {
        let mut params = CertificateParams::new(["localhost", "127.0.0.1", "::1"].map(String::from)).unwrap();
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let issued = Issued {
            cert: self.dir.path().join(format!("{name}.crt")),
            key: self.dir.path().join(format!("{name}.key")),
            der: cert.der().to_vec(),
            cert_pem: cert.pem() + &self.ca.pem(),
            key_pem: key.serialize_pem(),
        };
        // Written beside and renamed over, as a certificate manager does: a reader never
        // sees half a file.
        for (path, text) in [(&issued.key, &issued.key_pem), (&issued.cert, &issued.cert_pem)] {
            let part = path.with_extension("part");
            std::fs::write(&part, text).unwrap();
            std::fs::rename(&part, path).unwrap();
        }
        issued
    }

    /// A rustls client configuration that trusts this CA only (TLS 1.2 and 1.3, ring).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// A rustls client configuration that trusts this CA and presents a client certificate
    /// it signs for `device` (its DNS name, as mekong reads a device's certificate).
    pub fn device_config(&self, device: &str) -> Arc<ClientConfig> {
        let mut params = CertificateParams::new(vec![device.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, device);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let private = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![cert.der().clone()], private)
            .unwrap();
        Arc::new(config)
    }

    /// The CA's certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki").field("dir", &self.dir.path()).finish_non_exhaustive()
    }
}

impl Default for TestPki {
    fn default() -> Self {
        TestPki::new()
    }
}

/// A TLS connection to `addr` (verified as `localhost` against `config`'s roots), open
/// after its handshake.
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
}

/// The server certificate (DER) that a new TLS connection to `addr` is shown.
pub async fn served_certificate(addr: SocketAddr, config: Arc<ClientConfig>) -> Vec<u8> {
    let stream = tls_connect(addr, config).await.unwrap();
    let (_, session) = stream.get_ref();
    let chain: &[CertificateDer<'_>] = session.peer_certificates().unwrap();
    chain[0].to_vec()
}
