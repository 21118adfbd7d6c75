//! Shared by the process-level tests: a `mekong serve` child process, and simulated devices
//! that keep every pack until the platform acknowledges it on their downlink, as the
//! firmware does. The MQTT clients, packs, ports and HTTP reads are mekong-tests' (a
//! dev-dependency), the same as the end-to-end suite's.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mekong_schema::downlink::{self, Downlink};
use mekong_tests::{free_ports, get_url, pack, Sensor, TIMEOUT};

/// How long a device may take to have every pack acknowledged once it resends: the overload
/// test's devices resend a flood's worth, two packs at a time.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);

/// Request queue of a device under load: deep enough that a publish every millisecond
/// rarely finds it full (a refused pack stays pending and is resent).
const LOAD_QUEUE: usize = 1024;

/// The MQTT address of a server on this machine.
fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
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
        let (status, body) = get_url(http, &format!("http://127.0.0.1:{}/v1/stats", self.http)).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// A failing test must not leave a server behind.
impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `mekong serve` on `data` with fresh ports and `env` as extra configuration, not started.
fn serve_command(data: &Path, env: &[(&str, &str)]) -> (Command, u16, u16) {
    let [mqtt, http] = free_ports();
    let mut command = Command::new(env!("CARGO_BIN_EXE_mekong"));
    command
        .arg("serve")
        .arg("--config")
        .arg("/dev/null")
        .env("MEKONG__STORAGE__DATA_DIR", data)
        .env("MEKONG__BROKER__LISTEN", format!("127.0.0.1:{mqtt}"))
        .env("MEKONG__BROKER__LISTEN_V5", "")
        .env("MEKONG__API__LISTEN", format!("127.0.0.1:{http}"))
        .env("RUST_LOG", "error")
        .envs(env.iter().copied())
        .stderr(Stdio::inherit());
    (command, mqtt, http)
}

/// Starts `mekong serve` on `data` with fresh ports, and `env` as extra configuration.
pub fn spawn_server(data: &Path, env: &[(&str, &str)]) -> Server {
    let (mut command, mqtt, http) = serve_command(data, env);
    let child = command.stdout(Stdio::null()).spawn().expect("start mekong serve");
    Server { child, mqtt, http }
}

/// Starts `mekong serve` as [`spawn_server`] does, with `args` after `serve` and its log
/// filter from the configuration (`RUST_LOG` unset), and hands over its log lines (stdout)
/// as they come.
pub fn spawn_logging_server(
    data: &Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> (Server, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (mut command, mqtt, http) = serve_command(data, env);
    let mut child =
        command.args(args).env_remove("RUST_LOG").stdout(Stdio::piped()).spawn().expect("start mekong serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (Server { child, mqtt, http }, lines)
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
        let senml: Vec<_> = readings.iter().map(|&(t, v)| ("water_level", "cm", v, (t - t0) as f64 / 1000.0)).collect();
        let buf = pack(t0 as f64 / 1000.0, &senml);
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

/// Connects as `device`, subscribed to its downlink, with a request queue for `load`.
pub async fn connect(device: &Device, port: u16) -> Sensor {
    Sensor::device_queued(local(port), &device.id, LOAD_QUEUE).await
}

/// Publishes a new pack every `period` through `sensor` (connected as `device`) until the
/// connection dies (the kill) or `until`.
pub async fn load(mut device: Device, mut sensor: Sensor, period: Duration, until: Option<Instant>) -> Device {
    let topic = format!("mekong/v1/{}/up", device.id);
    let mut ticker = tokio::time::interval(period);
    loop {
        if until.is_some_and(|u| Instant::now() >= u) {
            sensor.disconnect().await;
            return device;
        }
        tokio::select! {
            payload = sensor.downlink_payload() => match payload {
                Some(payload) => device.on_downlink(&payload),
                None => return device,
            },
            _ = ticker.tick() => {
                let pack = device.next_pack();
                device.published += 1;
                // A full request queue leaves the pack pending: it is resent later.
                let _queued = sensor.try_publish(&topic, pack);
            }
        }
    }
}

/// [`load`] until the connection dies, and at each change of `marks` sends what is
/// acknowledged at that moment (device id, reading time -> value) to `snapshots`: a test can
/// then act (a backup) knowing exactly which readings were acknowledged before it.
pub async fn load_marked(
    mut device: Device,
    mut sensor: Sensor,
    period: Duration,
    mut marks: tokio::sync::watch::Receiver<u32>,
    snapshots: tokio::sync::mpsc::UnboundedSender<(String, BTreeMap<i64, f64>)>,
) -> Device {
    let topic = format!("mekong/v1/{}/up", device.id);
    let mut ticker = tokio::time::interval(period);
    let mut marking = true;
    loop {
        tokio::select! {
            payload = sensor.downlink_payload() => match payload {
                Some(payload) => device.on_downlink(&payload),
                None => return device,
            },
            changed = marks.changed(), if marking => match changed {
                Ok(()) => { let _ = snapshots.send((device.id.clone(), device.acked.clone())); }
                Err(_) => marking = false,
            },
            _ = ticker.tick() => {
                let pack = device.next_pack();
                device.published += 1;
                let _queued = sensor.try_publish(&topic, pack);
            }
        }
    }
}

/// Publishes `packs` new packs through `sensor` (connected as `device`) as fast as its
/// connection takes them, and hands both back, still connected. The packs are made before
/// the first is sent, so that sending costs the device next to nothing, while the platform
/// decodes and stores each: whatever the machine, the platform is the slower side.
///
/// It does not disconnect: a client that writes DISCONNECT and closes can make the broker's
/// next write fail, and the broker then drops the connection with publishes still unread in
/// its socket. They were never acknowledged, so that is MQTT's rule and no loss, but it would
/// blur the count of what the broker took; the caller disconnects once the platform has
/// taken every publish.
pub async fn flood(mut device: Device, sensor: Sensor, packs: usize) -> (Device, Sensor) {
    let topic = format!("mekong/v1/{}/up", device.id);
    let payloads: Vec<Vec<u8>> = (0..packs).map(|_| device.next_pack()).collect();
    for payload in payloads {
        device.published += 1;
        while !sensor.try_publish(&topic, payload.clone()) {
            tokio::task::yield_now().await;
        }
    }
    (device, sensor)
}

/// Resends every unacknowledged pack, oldest first and `window` at a time (as a node would),
/// until all are acknowledged. A pack whose acknowledgement does not come within a second is
/// resent. It disconnects once every pack is acknowledged: a resend still unread then is of a
/// pack already stored.
pub async fn drain(mut device: Device, port: u16, window: usize) -> Device {
    let mut sensor = connect(&device, port).await;
    let topic = format!("mekong/v1/{}/up", device.id);
    let deadline = Instant::now() + DRAIN_DEADLINE;
    while !device.pending.is_empty() {
        assert!(Instant::now() < deadline, "{}: {} packs never acknowledged", device.id, device.pending.len());
        let batch: Vec<i64> = device.pending.keys().take(window).copied().collect();
        for key in &batch {
            sensor.publish_nowait(&topic, device.pending[key].0.clone()).await;
            device.published += 1;
        }
        let round = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(round);
        loop {
            tokio::select! {
                payload = sensor.downlink_payload() => {
                    let payload = payload.unwrap_or_else(|| panic!("{}: connection failed while draining", device.id));
                    device.on_downlink(&payload);
                    if batch.iter().all(|k| !device.pending.contains_key(k)) { break; }
                }
                () = &mut round => break,
            }
        }
    }
    sensor.disconnect().await;
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
        let (status, body) = get_url(http, &url).await;
        assert_eq!(status, 200, "{body}");
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
