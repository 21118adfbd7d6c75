//! The platform under test, in this process: the real broker, store and HTTP server on
//! ephemeral ports and a temporary data directory, and an HTTP client for its API.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mekong::{Config, Platform};
use mekong_tests::{free_port, get_url, TIMEOUT};
use serde_json::Value;

/// The defaults, on ephemeral ports and `data_dir`, with every listener on `[::]`.
pub fn config(data_dir: &Path) -> Config {
    let mut c = Config::default();
    c.broker.listen = SocketAddr::from(([0u16; 8], free_port()));
    c.broker.listen_v5 = Some(SocketAddr::from(([0u16; 8], free_port())));
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

/// Starts the platform.
pub async fn start(config: &Config) -> Running {
    let platform = Platform::start(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", platform.http_addr.port());
    Running { platform, http: reqwest::Client::new(), base }
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

    /// GET `path` (with query) and the JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        get_url(&self.http, &format!("{}{path}", self.base)).await
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
