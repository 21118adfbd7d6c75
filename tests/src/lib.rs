//! Harness for mekong's end-to-end tests: a real platform on ephemeral ports and a temporary
//! data directory, real MQTT clients over TCP, and an HTTP client for the API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use mekong::{Config, Platform};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::mpsc;

/// How long any awaited event may take before a test fails.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A port that was free a moment ago (rumqttd cannot report the port it binds, so the tests
/// pick one).
pub fn free_port() -> u16 {
    TcpListener::bind("[::]:0").unwrap().local_addr().unwrap().port()
}

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

/// The `(t_ms, v)` pairs of a points response.
pub fn points_of(body: &Value) -> Vec<(i64, f64)> {
    body["points"]
        .as_array()
        .expect("points array")
        .iter()
        .map(|p| (p["t_ms"].as_i64().expect("t_ms"), p["v"].as_f64().expect("v")))
        .collect()
}

/// GET an absolute URL and its JSON body.
pub async fn get_url(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = http.get(url).timeout(TIMEOUT).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// An MQTT 3.1.1 client that publishes at QoS 1 and waits for each PUBACK.
#[derive(Debug)]
pub struct Sensor {
    client: AsyncClient,
    acks: mpsc::UnboundedReceiver<()>,
    /// Set when the broker closed the connection.
    closed: mpsc::UnboundedReceiver<String>,
    subacks: mpsc::UnboundedReceiver<()>,
    /// Payloads received on subscribed topics (the device's downlink).
    downlinks: mpsc::UnboundedReceiver<Vec<u8>>,
}

impl Sensor {
    /// Connects as `client_id` and waits for the CONNACK.
    pub async fn connect(addr: SocketAddr, client_id: &str) -> Sensor {
        let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_max_packet_size(4 << 20, 4 << 20);
        let (client, mut events) = AsyncClient::new(options, 100);
        let (ack_tx, acks) = mpsc::unbounded_channel();
        let (closed_tx, closed) = mpsc::unbounded_channel();
        let (suback_tx, subacks) = mpsc::unbounded_channel();
        let (down_tx, downlinks) = mpsc::unbounded_channel();
        let (connected_tx, connected) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut connected_tx = Some(connected_tx);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(tx) = connected_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        let _ = ack_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = suback_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = down_tx.send(p.payload.to_vec());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        // Do not reconnect: a test that sees the connection close wants to know.
                        let _ = closed_tx.send(e.to_string());
                        return;
                    }
                }
            }
        });
        tokio::time::timeout(TIMEOUT, connected).await.expect("no CONNACK").unwrap();
        Sensor { client, acks, closed, subacks, downlinks }
    }

    /// Connects as device `id` and subscribes to its downlink topic, waiting for the SUBACK,
    /// so that every downlink the platform sends `id` from then on reaches this client.
    pub async fn device(addr: SocketAddr, id: &str) -> Sensor {
        let mut sensor = Sensor::connect(addr, id).await;
        sensor.client.subscribe(format!("mekong/v1/{id}/down"), QoS::AtMostOnce).await.unwrap();
        tokio::time::timeout(TIMEOUT, sensor.subacks.recv()).await.expect("no SUBACK").expect("connection gone");
        sensor
    }

    /// The next downlink message, decoded.
    pub async fn downlink(&mut self) -> Downlink {
        let payload =
            tokio::time::timeout(TIMEOUT, self.downlinks.recv()).await.expect("no downlink").expect("connection gone");
        decode_downlink(&payload)
    }

    /// A downlink message this client has already received and not yet taken, without
    /// waiting: after a later message has arrived, `None` shows that nothing else came.
    pub fn received_downlink(&mut self) -> Option<Downlink> {
        self.downlinks.try_recv().ok().map(|payload| decode_downlink(&payload))
    }

    /// Publishes `payload` on `topic` at QoS 1 and waits for the broker's PUBACK.
    pub async fn publish(&mut self, topic: &str, payload: Vec<u8>) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
        tokio::select! {
            ack = self.acks.recv() => ack.expect("connection gone before PUBACK"),
            closed = self.closed.recv() => panic!("connection closed before PUBACK: {closed:?}"),
            () = tokio::time::sleep(TIMEOUT) => panic!("no PUBACK"),
        }
    }

    /// Publishes without waiting for the acknowledgement.
    pub async fn publish_nowait(&mut self, topic: &str, payload: Vec<u8>) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    }

    /// Waits for `n` PUBACKs.
    pub async fn wait_acks(&mut self, n: usize) {
        for _ in 0..n {
            tokio::time::timeout(TIMEOUT, self.acks.recv()).await.expect("no PUBACK").expect("connection gone");
        }
    }

    /// Waits until the broker closes the connection; returns the client's error.
    pub async fn closed(&mut self) -> String {
        tokio::time::timeout(TIMEOUT, self.closed.recv()).await.expect("connection stayed open").unwrap_or_default()
    }
}

/// A downlink message, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Downlink {
    /// Stored durably.
    Ack {
        /// Newest reading time of the pack, ms.
        up_to_ms: i64,
        /// Readings of the pack stored.
        readings: u32,
        /// Platform time, ms.
        server_ms: i64,
        /// Sequence number of a signed pack.
        seq: Option<u64>,
    },
    /// Refused.
    Refused {
        /// Reason kind.
        reason: String,
        /// Platform time, ms.
        server_ms: i64,
        /// Sequence number of the refused envelope, when it could be read.
        seq: Option<u64>,
    },
}

/// A downlink payload, decoded and owned.
fn decode_downlink(payload: &[u8]) -> Downlink {
    match mekong_schema::downlink::decode(payload).unwrap() {
        mekong_schema::downlink::Downlink::Ack { up_to_ms, readings, server_ms, seq } => {
            Downlink::Ack { up_to_ms, readings, server_ms, seq }
        }
        mekong_schema::downlink::Downlink::Refused { reason, server_ms, seq } => {
            Downlink::Refused { reason: reason.to_owned(), server_ms, seq }
        }
    }
}

/// Encodes readings `(name, unit, value, time)` as one SenML-CBOR pack with base time `bt`.
pub fn pack(bt: f64, readings: &[(&str, &str, f64, f64)]) -> Vec<u8> {
    let readings: Vec<_> = readings
        .iter()
        .map(|&(name, unit, value, time)| mekong_schema::Reading { name, unit: Some(unit), value, time })
        .collect();
    let mut buf = vec![0u8; 64 + 64 * readings.len()];
    let base = mekong_schema::Base { time: Some(bt), ..Default::default() };
    let n = mekong_schema::encode_pack(&mut buf, &base, &readings).unwrap();
    buf.truncate(n);
    buf
}

/// Seconds since the Unix epoch, whole milliseconds.
pub fn now_secs() -> f64 {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    ms as f64 / 1000.0
}
