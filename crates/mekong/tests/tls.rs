//! Certificate rotation as an operator does it: `mekong serve` with TLS, the certificate and
//! key files replaced, SIGHUP; a new connection gets the new certificate, an open one goes on,
//! and a broken file keeps the certificate in use with an error that names the file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use mekong_tests::pki::{served_certificate, TestPki};
use mekong_tests::{free_ports, now_secs, pack, Sensor, TIMEOUT};

/// `mekong serve` with TLS, its log lines (stderr) read as they come.
struct Serve {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    tls: u16,
}

impl Serve {
    fn start(data: &std::path::Path, cert: &std::path::Path, key: &std::path::Path) -> Serve {
        let [mqtt, tls, http] = free_ports();
        let mut child = Command::new(env!("CARGO_BIN_EXE_mekong"))
            .args(["serve", "--config", "/dev/null"])
            .env("MEKONG__STORAGE__DATA_DIR", data)
            .env("MEKONG__BROKER__LISTEN", format!("127.0.0.1:{mqtt}"))
            .env("MEKONG__BROKER__LISTEN_V5", "")
            .env("MEKONG__BROKER__LISTEN_TLS", format!("127.0.0.1:{tls}"))
            .env("MEKONG__BROKER__LISTEN_V5_TLS", "")
            .env("MEKONG__API__LISTEN", format!("127.0.0.1:{http}"))
            .env("MEKONG__TLS__CERT", cert)
            .env("MEKONG__TLS__KEY", key)
            // SIGHUP only: no poll that could reload before the signal.
            .env("MEKONG__TLS__RELOAD_EVERY_SECS", "0")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mekong serve");
        // The log goes to stdout (tracing's fmt writer).
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut serve = Serve { child, lines, seen: Vec::new(), tls };
        serve.wait_line("mekong is up");
        serve
    }

    /// The next log line that contains `needle` (the lines before it are kept for
    /// [`Serve::seen`]).
    fn wait_line(&mut self, needle: &str) -> String {
        loop {
            let line = self.lines.recv_timeout(TIMEOUT).unwrap_or_else(|_| panic!("no log line with {needle:?}"));
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    fn hangup(&self) {
        let status = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    fn tls_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.tls))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_new_certificates_to_new_connections_and_keeps_open_ones() {
    let pki = TestPki::new();
    let first = pki.issue("server");
    let data = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(data.path(), &first.cert, &first.key);
    assert_eq!(served_certificate(serve.tls_addr(), pki.client_config()).await, first.der);
    let mut device = Sensor::connect_tls(serve.tls, "rotating-01", pki.client_config()).await;
    let t = now_secs().floor();
    device.publish("mekong/v1/rotating-01/up", pack(t, &[("water_level", "cm", 10.0, 0.0)])).await;

    // Rotation: both files replaced (renamed over), then SIGHUP.
    let second = pki.issue("server");
    serve.hangup();
    serve.wait_line("SIGHUP: tls certificate loaded");
    assert_eq!(served_certificate(serve.tls_addr(), pki.client_config()).await, second.der);
    // The connection made with the old certificate is still up.
    device.publish("mekong/v1/rotating-01/up", pack(t + 1.0, &[("water_level", "cm", 11.0, 0.0)])).await;

    // A broken certificate: the reload fails with the file named; the certificate stays.
    std::fs::write(&second.cert, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
    serve.hangup();
    let error = serve.wait_line("SIGHUP: cannot load the new tls certificate");
    assert!(error.contains(&second.cert.display().to_string()), "{error}");
    assert_eq!(served_certificate(serve.tls_addr(), pki.client_config()).await, second.der);
    device.publish("mekong/v1/rotating-01/up", pack(t + 2.0, &[("water_level", "cm", 12.0, 0.0)])).await;

    // No line of the log holds key material.
    for key in [&first.key_pem, &second.key_pem] {
        let body = key.lines().nth(1).unwrap();
        assert!(!serve.seen.iter().any(|line| line.contains(body)), "key material in the log");
    }
    device.disconnect().await;
}
