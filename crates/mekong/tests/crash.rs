//! The crash test: the platform runs as its own process under steady load, is killed with
//! SIGKILL at a random moment, and restarts on the same data directory. Every reading
//! acknowledged before the kill must be there exactly once, and the devices' resends after
//! the restart must create no duplicates.
//!
//! `MEKONG_CRASH_RUNS` sets the number of kill-and-restart runs (default 3; CI uses the
//! default, a longer soak sets more).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mekong_schema::downlink::{self, Downlink};
use mekong_schema::{encode_pack, Base, Reading};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

const DEVICES: usize = 4;
const READINGS_PER_PACK: usize = 5;
const TIMEOUT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Server {
    child: Child,
    mqtt: u16,
    http: u16,
}

impl Server {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A failing test must not leave a server behind.
impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_server(data: &Path) -> Server {
    let (mqtt, http) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_mekong"))
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

async fn wait_healthy(http: &reqwest::Client, port: u16) {
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
struct Device {
    id: String,
    next_ms: i64,
    /// newest reading time of the pack -> (payload, its readings)
    pending: BTreeMap<i64, Pack>,
    /// reading time -> value, of every acknowledged reading
    acked: BTreeMap<i64, f64>,
    /// acknowledged before the platform was last killed
    acked_before_kill: usize,
}

impl Device {
    fn new(index: usize) -> Device {
        let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        Device {
            id: format!("crash-{index}"),
            next_ms: start - 3_600_000,
            pending: BTreeMap::new(),
            acked: BTreeMap::new(),
            acked_before_kill: 0,
        }
    }

    fn next_pack(&mut self) -> Vec<u8> {
        let t0 = self.next_ms;
        let readings: Vec<(i64, f64)> =
            (0..READINGS_PER_PACK as i64).map(|j| (t0 + j, ((t0 + j) % 10_000) as f64 / 10.0)).collect();
        self.next_ms += READINGS_PER_PACK as i64;
        let senml: Vec<Reading<'_>> = readings
            .iter()
            .map(|&(t, v)| Reading { name: "water_level", unit: Some("cm"), value: v, time: (t - t0) as f64 / 1000.0 })
            .collect();
        let mut buf = vec![0u8; 512];
        let n = encode_pack(&mut buf, &Base { time: Some(t0 as f64 / 1000.0), ..Base::default() }, &senml).unwrap();
        buf.truncate(n);
        self.pending.insert(t0 + READINGS_PER_PACK as i64 - 1, (buf.clone(), readings));
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

/// Publishes a new pack every few milliseconds until the connection dies (the kill).
async fn load(mut device: Device, port: u16) -> Device {
    let (client, mut downlinks) = connect(&device, port).await;
    let topic = format!("mekong/v1/{}/up", device.id);
    let mut ticker = tokio::time::interval(Duration::from_millis(3));
    loop {
        tokio::select! {
            payload = downlinks.recv() => match payload {
                Some(payload) => device.on_downlink(&payload),
                None => return device,
            },
            _ = ticker.tick() => {
                let pack = device.next_pack();
                if client.try_publish(&topic, QoS::AtLeastOnce, false, pack).is_err() {
                    // Request queue full: the pack stays pending and is resent later.
                }
            }
        }
    }
}

/// Resends every unacknowledged pack until all are acknowledged.
async fn drain(mut device: Device, port: u16) -> Device {
    let (client, mut downlinks) = connect(&device, port).await;
    let topic = format!("mekong/v1/{}/up", device.id);
    let deadline = Instant::now() + TIMEOUT;
    while !device.pending.is_empty() {
        assert!(Instant::now() < deadline, "{}: {} packs never acknowledged", device.id, device.pending.len());
        for (payload, _) in device.pending.values() {
            client.publish(&topic, QoS::AtLeastOnce, false, payload.clone()).await.unwrap();
        }
        let round = tokio::time::sleep(Duration::from_secs(2));
        tokio::pin!(round);
        loop {
            tokio::select! {
                payload = downlinks.recv() => {
                    let payload = payload.unwrap_or_else(|| panic!("{}: connection failed while draining", device.id));
                    device.on_downlink(&payload);
                    if device.pending.is_empty() { break; }
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
async fn stored(http: &reqwest::Client, port: u16, device: &str) -> Vec<(i64, f64)> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_readings_survive_sigkill_exactly_once() {
    let runs: usize = std::env::var("MEKONG_CRASH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let data = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut devices: Vec<Device> = (0..DEVICES).map(Device::new).collect();
    let mut seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64 | 1;
    let mut server = spawn_server(data.path());
    wait_healthy(&http, server.http).await;

    let mut acked_so_far = 0;
    for run in 0..runs {
        // Steady load, then SIGKILL at a random moment between 0.3 s and 1.5 s.
        let tasks: Vec<_> = devices.drain(..).map(|d| tokio::spawn(load(d, server.mqtt))).collect();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(300 + seed % 1200)).await;
        server.kill();
        for task in tasks {
            let mut device = task.await.unwrap();
            device.acked_before_kill = device.acked.len();
            devices.push(device);
        }
        let acked_before = devices.iter().map(|d| d.acked_before_kill).sum::<usize>() - acked_so_far;
        assert!(acked_before > 0, "run {run}: nothing was acknowledged before the kill");

        server = spawn_server(data.path());
        wait_healthy(&http, server.http).await;
        let tasks: Vec<_> = devices.drain(..).map(|d| tokio::spawn(drain(d, server.mqtt))).collect();
        for task in tasks {
            devices.push(task.await.unwrap());
        }

        let (mut lost, mut duplicates, mut wrong, mut total) = (0, 0, 0, 0);
        for device in &devices {
            let points = stored(&http, server.http, &device.id).await;
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
            // Everything ever sent is acknowledged now, and nothing else is stored.
            assert_eq!(points.len(), device.acked.len(), "{}: stored points vs acknowledged readings", device.id);
            total += device.acked.len();
        }
        acked_so_far = total;
        println!(
            "{{\"crash_run\":{},\"acknowledged_before_kill\":{acked_before},\"acknowledged_total\":{total},\"lost\":{lost},\"duplicates\":{duplicates},\"wrong_values\":{wrong}}}",
            run + 1
        );
        assert_eq!((lost, duplicates, wrong), (0, 0, 0), "run {run}");
    }
    server.kill();
}
