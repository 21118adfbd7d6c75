//! TLS for the benchmarks: a CA and a server certificate for `localhost` made for the run
//! (rcgen, ECDSA P-256, as a small city deployment would use), written into the run's
//! temporary directory for `mekong serve`, and the devices' rustls client configuration,
//! which trusts that CA only.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::client::Resumption;
use rustls::{ClientConfig, RootCertStore};

use crate::harness::{temp_dir, TempDir};

/// The server's certificate and key files, and what the devices trust.
#[derive(Debug)]
pub struct BenchTls {
    /// The chain file: server certificate, then the CA's.
    pub cert: PathBuf,
    /// The server's key file.
    pub key: PathBuf,
    /// The devices' configuration.
    pub client: Arc<ClientConfig>,
    _dir: TempDir,
}

impl BenchTls {
    /// A new CA and server certificate. Devices never resume a session: every connection
    /// is a full handshake, as after a restart of the server (the worst case).
    pub fn new() -> anyhow::Result<BenchTls> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "mekong-bench CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca_key = KeyPair::generate()?;
        let ca = ca_params.self_signed(&ca_key)?;
        let mut params = CertificateParams::new(["localhost", "127.0.0.1"].map(String::from))?;
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca, &ca_key)?;

        let dir = temp_dir()?;
        let (cert_path, key_path) = (dir.path.join("server.crt"), dir.path.join("server.key"));
        std::fs::write(&cert_path, cert.pem() + &ca.pem()).context("cannot write the certificate")?;
        std::fs::write(&key_path, key.serialize_pem()).context("cannot write the key")?;

        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone())?;
        let mut client = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.resumption = Resumption::disabled();
        Ok(BenchTls { cert: cert_path, key: key_path, client: Arc::new(client), _dir: dir })
    }
}
