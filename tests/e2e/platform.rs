//! The platform under test, in this process: the real broker, store and HTTP server on
//! ephemeral ports and a temporary data directory, and an HTTP client for its API.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mekong::{Config, Platform};
use mekong_tests::{free_ports, get_url, TIMEOUT};
use serde_json::Value;

/// The defaults, on ephemeral ports and `data_dir`, with every listener on `[::]`.
pub fn config(data_dir: &Path) -> Config {
    let mut c = Config::default();
    let [mqtt, mqtt5] = free_ports();
    c.broker.listen = SocketAddr::from(([0u16; 8], mqtt));
    c.broker.listen_v5 = Some(SocketAddr::from(([0u16; 8], mqtt5)));
    c.api.listen = SocketAddr::from(([0u16; 8], 0));
    c.storage.data_dir = data_dir.to_owned();
    c
}

/// A running platform and an HTTP client for it.
#[derive(Debug)]
pub struct Running {
    /// The platform.
    pub platform: Platform,
    http: reqwest::Client,
    base: String,
}

/// Everything the platforms of this test process logged (mekong's crates at debug level),
/// so that a test can check that no secret it used appears in any log line.
pub fn logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap()).into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&buffer);
        let filter = "info,rumqttd=off,mekong=debug,mekong_api=debug,mekong_ingest=debug,mekong_store=debug";
        // Another subscriber may be set already (a test binary has one process): then
        // nothing is captured, and tests that read the logs see that they are empty.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false)
            .with_writer(move || Capture(Arc::clone(&writer)))
            .try_init();
        buffer
    })
}

/// A log writer into the shared buffer.
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts the platform, its logs captured ([`logs`]).
pub async fn start(config: &Config) -> Running {
    log_buffer();
    let platform = Platform::start(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", platform.http_addr.port());
    Running { platform, http: reqwest::Client::new(), base }
}

/// Starts the platform with its API on HTTPS, and a client that trusts the CA `ca_pem` and
/// reaches the API as `localhost` (the name the test certificates bear).
pub async fn start_https(config: &Config, ca_pem: &str) -> Running {
    log_buffer();
    let platform = Platform::start(config).await.unwrap();
    assert!(platform.https, "the API does not serve https");
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    let http = reqwest::Client::builder().use_rustls_tls().tls_built_in_root_certs(false).add_root_certificate(ca);
    let base = format!("https://localhost:{}", platform.http_addr.port());
    Running { platform, http: http.build().unwrap(), base }
}

impl Running {
    /// MQTT 3.1.1 address on IPv4 loopback.
    pub fn mqtt(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.platform.mqtt_addr.port()))
    }

    /// MQTT 5 address on IPv4 loopback.
    pub fn mqtt5(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.platform.mqtt5_addr.unwrap().port()))
    }

    /// MQTT 3.1.1 over TLS: its port.
    pub fn mqtt_tls_port(&self) -> u16 {
        self.platform.mqtt_tls_addr.unwrap().port()
    }

    /// MQTT 5 over TLS: its port.
    pub fn mqtt5_tls_port(&self) -> u16 {
        self.platform.mqtt5_tls_addr.unwrap().port()
    }

    /// GET `path` (with query) and the JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        get_url(&self.http, &format!("{}{path}", self.base)).await
    }

    /// Sends `method` to `path` with an optional JSON body; the status and the JSON body
    /// (null when there is none).
    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).timeout(TIMEOUT);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GET `path`, which must answer 200, and its body as text.
    pub async fn text(&self, path: &str) -> String {
        let response = self.http.get(format!("{}{path}", self.base)).timeout(TIMEOUT).send().await.unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.text().await.unwrap()
    }

    /// GET `path`, which must answer 200, and its JSON body.
    pub async fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Waits until `GET /v1/stats` satisfies `done`, and returns it.
    pub async fn wait_stats(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let stats = self.json("/v1/stats").await;
            if done(&stats) {
                return stats;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}; stats: {stats}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the ingest path has handled (accepted or refused) `n` publishes in all.
    pub async fn wait_handled(&self, n: u64) -> Value {
        self.wait_stats(&format!("{n} publishes handled"), |s| {
            s["accepted"].as_u64().unwrap() + s["rejected"].as_u64().unwrap() >= n
        })
        .await
    }

    /// Stops the platform and flushes its store.
    pub async fn stop(self) {
        self.platform.shutdown().await.unwrap();
    }
}
