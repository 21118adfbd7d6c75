//! Shared by the process-level tests: a `mekong serve` child process, and simulated devices
//! that keep every pack until the platform acknowledges it on their downlink, as the
//! firmware does.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mekong_schema::downlink::{self, Downlink};
use mekong_schema::{encode_pack, Base, Reading};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// How long any awaited event may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `mekong serve` child process.
pub struct Server {
    pub child: Child,
    pub mqtt: u16,
    pub http: u16,
}

impl Server {
    /// SIGKILL, and wait for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The highest resident memory the process has had, MiB (VmHWM).
    pub fn peak_rss_mib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kib: u64 = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024)
    }

    /// `GET /v1/stats`.
    pub async fn stats(&self, http: &reqwest::Client) -> serde_json::Value {
        http.get(format!("http://127.0.0.1:{}/v1/stats", self.http)).send().await.unwrap().json().await.unwrap()
    }
}

/// A failing test must not leave a server behind.
impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `mekong serve` on `data` with fresh ports, and `env` as extra configuration.
pub fn spawn_server(data: &Path, env: &[(&str, &str)]) -> Server {
    let (mqtt, http) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_mekong"))
        .envs(env.iter().copied())
        .arg("serve")
        .arg("--config")
        .arg("/dev/null")
        .env("MEKONG__STORAGE__DATA_DIR", data)
        .env("MEKONG__BROKER__LISTEN", format!("127.0.0.1:{mqtt}"))
        .env("MEKONG__BROKER__LISTEN_V5", "")
        .env("MEKONG__API__LISTEN", format!("127.0.0.1:{http}"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start mekong serve");
    Server { child, mqtt, http }
}

/// Waits until the server answers HTTP.
pub async fn wait_healthy(http: &reqwest::Client, port: u16) {
    let deadline = Instant::now() + TIMEOUT;
    while http.get(format!("http://127.0.0.1:{port}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "server did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A pack's payload and its readings (time in ms, value).
type Pack = (Vec<u8>, Vec<(i64, f64)>);

/// What one device has sent, what is acknowledged, and what still waits for an ack.
#[derive(Debug)]
pub struct Device {
    pub id: String,
    readings_per_pack: usize,
    next_ms: i64,
    /// newest reading time of the pack -> (payload, its readings)
    pub pending: BTreeMap<i64, Pack>,
    /// reading time -> value, of every acknowledged reading
    pub acked: BTreeMap<i64, f64>,
    /// acknowledged before the platform was last killed
    pub acked_before_kill: usize,
    /// packs published, resends included
    pub published: u64,
}

impl Device {
    /// Device `{prefix}{index}`, sending `readings_per_pack` readings per pack.
    pub fn new(prefix: &str, index: usize, readings_per_pack: usize) -> Device {
        let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        Device {
            id: format!("{prefix}{index}"),
            readings_per_pack,
            next_ms: start - 3_600_000,
            pending: BTreeMap::new(),
            acked: BTreeMap::new(),
            acked_before_kill: 0,
            published: 0,
        }
    }

    fn next_pack(&mut self) -> Vec<u8> {
        let t0 = self.next_ms;
        let n = self.readings_per_pack as i64;
        let readings: Vec<(i64, f64)> = (0..n).map(|j| (t0 + j, ((t0 + j) % 10_000) as f64 / 10.0)).collect();
        self.next_ms += n;
        let senml: Vec<Reading<'_>> = readings
            .iter()
            .map(|&(t, v)| Reading { name: "water_level", unit: Some("cm"), value: v, time: (t - t0) as f64 / 1000.0 })
            .collect();
        let mut buf = vec![0u8; 64 + 64 * readings.len()];
        let len = encode_pack(&mut buf, &Base { time: Some(t0 as f64 / 1000.0), ..Base::default() }, &senml).unwrap();
        buf.truncate(len);
        self.pending.insert(t0 + n - 1, (buf.clone(), readings));
        buf
    }

    fn on_downlink(&mut self, payload: &[u8]) {
        if let Ok(Downlink::Ack { up_to_ms, .. }) = downlink::decode(payload) {
            if let Some((_, readings)) = self.pending.remove(&up_to_ms) {
                self.acked.extend(readings);
            }
        }
    }
}

/// Connects and drives the connection in its own task (rumqttc's `poll` must not be dropped
/// half-way, so it cannot sit in a `select!` beside a timer). Downlink payloads come out of
/// the channel, which closes when the connection fails.
async fn connect(device: &Device, port: u16) -> (AsyncClient, mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut options = MqttOptions::new(&device.id, "127.0.0.1", port);
    options.set_clean_session(true);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(options, 1024);
    client.subscribe(format!("mekong/v1/{}/down", device.id), QoS::AtMostOnce).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(p.payload.to_vec()).is_err() {
                        return;
                    }
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    (client, rx)
}

/// Publishes a new pack every `period` until the connection dies (the kill) or `until`.
pub async fn load(mut device: Device, port: u16, period: Duration, until: Option<Instant>) -> Device {
    let (client, mut downlinks) = connect(&device, port).await;
    let topic = format!("mekong/v1/{}/up", device.id);
    let mut ticker = tokio::time::interval(period);
    loop {
        if until.is_some_and(|u| Instant::now() >= u) {
            client.disconnect().await.ok();
            return device;
        }
        tokio::select! {
            payload = downlinks.recv() => match payload {
                Some(payload) => device.on_downlink(&payload),
                None => return device,
            },
            _ = ticker.tick() => {
                let pack = device.next_pack();
                device.published += 1;
                if client.try_publish(&topic, QoS::AtLeastOnce, false, pack).is_err() {
                    // Request queue full: the pack stays pending and is resent later.
                }
            }
        }
    }
}

/// Resends every unacknowledged pack, oldest first and `window` at a time (as a node would),
/// until all are acknowledged. A pack whose acknowledgement does not come within a second is
/// resent.
pub async fn drain(mut device: Device, port: u16, window: usize) -> Device {
    let (client, mut downlinks) = connect(&device, port).await;
    let topic = format!("mekong/v1/{}/up", device.id);
    let deadline = Instant::now() + 2 * TIMEOUT;
    while !device.pending.is_empty() {
        assert!(Instant::now() < deadline, "{}: {} packs never acknowledged", device.id, device.pending.len());
        let batch: Vec<i64> = device.pending.keys().take(window).copied().collect();
        for key in &batch {
            let payload = device.pending[key].0.clone();
            client.publish(&topic, QoS::AtLeastOnce, false, payload).await.unwrap();
            device.published += 1;
        }
        let round = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(round);
        loop {
            tokio::select! {
                payload = downlinks.recv() => {
                    let payload = payload.unwrap_or_else(|| panic!("{}: connection failed while draining", device.id));
                    device.on_downlink(&payload);
                    if batch.iter().all(|k| !device.pending.contains_key(k)) { break; }
                }
                () = &mut round => break,
            }
        }
    }
    client.disconnect().await.ok();
    // The connection task ends with the disconnect; the channel closing says so.
    let _ = tokio::time::timeout(Duration::from_secs(1), async { while downlinks.recv().await.is_some() {} }).await;
    device
}

/// Every point of one series, through the API's pages.
pub async fn stored(http: &reqwest::Client, port: u16, device: &str) -> Vec<(i64, f64)> {
    let mut out = Vec::new();
    let mut from = i64::MIN / 2;
    loop {
        let url = format!(
            "http://127.0.0.1:{port}/v1/devices/{device}/series/water_level?from={from}&to=9999999999999&limit=10000"
        );
        let body: serde_json::Value = http.get(url).send().await.unwrap().json().await.unwrap();
        out.extend(
            body["points"].as_array().unwrap().iter().map(|p| (p["t_ms"].as_i64().unwrap(), p["v"].as_f64().unwrap())),
        );
        match body["next_from_ms"].as_i64() {
            Some(next) => from = next,
            None => return out,
        }
    }
}

/// Checks that every acknowledged reading of every device is stored once with its value, and
/// that nothing else is; returns (acknowledged, lost, duplicates, wrong values).
pub async fn verify(http: &reqwest::Client, port: u16, devices: &[Device]) -> (usize, usize, usize, usize) {
    let (mut total, mut lost, mut duplicates, mut wrong) = (0, 0, 0, 0);
    for device in devices {
        let points = stored(http, port, &device.id).await;
        let mut by_time: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        for (t, v) in &points {
            by_time.entry(*t).or_default().push(*v);
        }
        duplicates += by_time.values().filter(|v| v.len() > 1).count();
        for (t, v) in &device.acked {
            match by_time.get(t) {
                None => lost += 1,
                Some(values) if values[0] != *v => wrong += 1,
                Some(_) => {}
            }
        }
        assert_eq!(points.len(), device.acked.len(), "{}: stored points vs acknowledged readings", device.id);
        total += device.acked.len();
    }
    (total, lost, duplicates, wrong)
}
