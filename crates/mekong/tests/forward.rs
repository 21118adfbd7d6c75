//! The feed to the regional data centre against a real Mosquitto started here: devices
//! publish under load while the upstream broker is stopped and started again, and while
//! mekong is killed with SIGKILL and restarted on the same data directory (three times); a
//! subscriber on the upstream broker must receive every acknowledged reading, exactly once
//! once packs are told apart by their sequence number (`mekong-seq`), and nothing else.
//!
//! Needs the `mosquitto` broker (apt package `mosquitto`, installed by `.ci/run`); without it
//! the test says it is skipped, unless `MEKONG_REQUIRE_MOSQUITTO` is set, as in CI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{connect, drain, load, spawn_server, stored, wait_healthy, Device};
use mekong_schema::senml::{self, DecodeOptions, Record, Value};
use mekong_tests::free_ports;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";
/// How long everything may take to arrive upstream once the devices are done.
const ARRIVAL: Duration = Duration::from_secs(60);
/// mekong's window of packs beyond its durable position.
const IN_FLIGHT: u64 = 64;

/// Whether Mosquitto's broker is here; CI installs it and sets `MEKONG_REQUIRE_MOSQUITTO=1`,
/// so that there a missing broker fails the test.
fn mosquitto_here() -> bool {
    let here = Path::new(MOSQUITTO).exists();
    if !here {
        assert!(std::env::var_os("MEKONG_REQUIRE_MOSQUITTO").is_none(), "{MOSQUITTO} is not installed");
        eprintln!("SKIPPED: the mosquitto broker is not installed (apt-get install mosquitto)");
    }
    here
}

/// A Mosquitto broker on a loopback port, its sessions and queued messages kept on disk
/// across a stop and a start (SIGTERM makes it save them).
struct Mosquitto {
    config: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Mosquitto {
    fn new(dir: &Path) -> Mosquitto {
        let [port] = free_ports();
        let config = dir.join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
                 max_queued_messages 0\nmax_inflight_messages 0\nlog_dest none\n",
                dir.display()
            ),
        )
        .unwrap();
        Mosquitto { config, port, child: None }
    }

    async fn start(&mut self) {
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen on {}", self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, so that it saves its sessions, and wait for it.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One pack received upstream: its sequence number, device and readings (time ms, value).
#[derive(Debug)]
struct Received {
    seq: u64,
    device: String,
    readings: Vec<(i64, f64)>,
}

/// The regional data centre: an MQTT 5 subscriber with a lasting session, so that what is
/// published while it reconnects waits for it at the broker.
fn subscribe(port: u16) -> tokio::sync::mpsc::UnboundedReceiver<Received> {
    let mut options = MqttOptions::new("regional-dc", "127.0.0.1", port);
    options.set_clean_start(false);
    options.set_session_expiry_interval(Some(3600));
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    if !ack.session_present {
                        client.subscribe("region/cantho/#", QoS::AtLeastOnce).await.unwrap();
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let topic = String::from_utf8(p.topic.to_vec()).unwrap();
                    let seq = p
                        .properties
                        .as_ref()
                        .and_then(|props| props.user_properties.iter().find(|(k, _)| k == "mekong-seq"))
                        .map(|(_, v)| v.parse::<u64>().unwrap())
                        .expect("a forwarded pack without mekong-seq");
                    let device = topic.strip_prefix("region/cantho/water/").expect("topic").to_owned();
                    let mut readings = Vec::new();
                    let opts = DecodeOptions { now: 4_000_000_000.0, max_records: 10_000 };
                    senml::decode(&p.payload, opts, &mut |r: Record<'_>| {
                        assert_eq!(r.base_name, format!("urn:dev:mekong:{device}:"));
                        assert_eq!((r.name, r.unit), ("water_level", Some("cm")));
                        let Value::Number(v) = r.value else { panic!("not a number") };
                        readings.push(((r.time * 1000.0).round() as i64, v));
                        Ok(())
                    })
                    .expect("a forwarded pack that does not decode");
                    if tx.send(Received { seq, device, readings }).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                // The broker is away (the outage): rumqttc reconnects at the next poll.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    rx
}

/// Starts every device's load, a pack every 5 ms, until its connection dies.
async fn start_load(devices: &mut Vec<Device>, mqtt: u16) -> Vec<tokio::task::JoinHandle<Device>> {
    let mut tasks = Vec::new();
    for device in devices.drain(..) {
        let sensor = connect(&device, mqtt).await;
        tasks.push(tokio::spawn(load(device, sensor, Duration::from_millis(5), None)));
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reading_reaches_the_upstream_once_through_an_outage_and_a_sigkill() {
    if !mosquitto_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut upstream = Mosquitto::new(dir.path());
    upstream.start().await;
    let mut received = subscribe(upstream.port);
    let port = upstream.port.to_string();
    let in_flight = IN_FLIGHT.to_string();
    let env = [
        ("MEKONG__FORWARD__ENABLED", "true"),
        ("MEKONG__FORWARD__HOST", "127.0.0.1"),
        ("MEKONG__FORWARD__PORT", port.as_str()),
        ("MEKONG__FORWARD__TOPIC_PREFIX", "region/cantho"),
        ("MEKONG__FORWARD__MAX_IN_FLIGHT", in_flight.as_str()),
        ("MEKONG__FORWARD__RECONNECT_MAX_SECS", "1"),
    ];
    let http = reqwest::Client::new();
    let mut server = spawn_server(&data, &env);
    wait_healthy(&http, server.http).await;
    let mut devices: Vec<Device> = (0..3).map(|i| Device::new("fwd-", i, 4)).collect();

    // Steady load, which runs until mekong is killed (each device stays connected: a device
    // that reconnects at once under the same client id may race its own old session).
    let mut tasks = start_load(&mut devices, server.mqtt).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The upstream goes away for a while, and comes back.
    upstream.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // What was accepted meanwhile waits in the outbox (the gauge follows within a second).
    let deadline = Instant::now() + Duration::from_secs(5);
    let queued = loop {
        let stats = server.stats(&http).await;
        assert_eq!(stats["forward"]["connected"], false, "{stats}");
        let queued = stats["forward"]["queued_packs"].as_u64().unwrap();
        if queued > 0 {
            break queued;
        }
        assert!(Instant::now() < deadline, "nothing queued while upstream was down: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    upstream.start().await;
    tokio::time::sleep(Duration::from_millis(700)).await;

    // Under load, mekong is killed and restarted on the same data directory, twice.
    for _ in 0..2 {
        server.kill();
        for task in tasks {
            devices.push(task.await.unwrap());
        }
        server = spawn_server(&data, &env);
        wait_healthy(&http, server.http).await;
        tasks = start_load(&mut devices, server.mqtt).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    server.kill();
    for task in tasks {
        devices.push(task.await.unwrap());
    }
    server = spawn_server(&data, &env);
    wait_healthy(&http, server.http).await;
    // The devices resend what was never acknowledged.
    let tasks: Vec<_> = devices.drain(..).map(|d| tokio::spawn(drain(d, server.mqtt, 32))).collect();
    for task in tasks {
        devices.push(task.await.unwrap());
    }

    // Every acknowledged reading is stored once (the store's own check) ...
    let mut expected: HashMap<String, BTreeMap<i64, f64>> = HashMap::new();
    for device in &devices {
        assert!(device.pending.is_empty());
        let points = stored(&http, server.http, &device.id).await;
        assert_eq!(points.len(), device.acked.len(), "{}", device.id);
        expected.insert(device.id.clone(), device.acked.clone());
    }
    let total: usize = expected.values().map(BTreeMap::len).sum();

    // ... and arrives upstream: packs told apart by their sequence number, each reading once.
    let mut by_seq: BTreeMap<u64, (String, Vec<(i64, f64)>)> = BTreeMap::new();
    let mut resent_packs = 0u64;
    let mut got: HashMap<String, BTreeMap<i64, f64>> = HashMap::new();
    let mut count = 0usize;
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    while count < total {
        let pack = match tokio::time::timeout_at(deadline, received.recv()).await {
            Ok(Some(pack)) => pack,
            _ => panic!("{count} of {total} readings arrived upstream; stats: {}", server.stats(&http).await),
        };
        if let Some((device, readings)) = by_seq.get(&pack.seq) {
            // A resend: the same pack, to the reading.
            assert_eq!((device, readings), (&pack.device, &pack.readings), "seq {} reused", pack.seq);
            resent_packs += 1;
            continue;
        }
        let readings = got.entry(pack.device.clone()).or_default();
        for &(t, v) in &pack.readings {
            assert!(readings.insert(t, v).is_none(), "{} at {t} arrived in two packs", pack.device);
            count += 1;
        }
        by_seq.insert(pack.seq, (pack.device, pack.readings));
    }
    assert_eq!(got, expected, "readings upstream differ from those acknowledged");
    // A resend is bounded by the window: one reconnect and three kills here.
    assert!(resent_packs <= 4 * IN_FLIGHT, "{resent_packs} packs arrived twice");
    let stats = server.stats(&http).await;
    let forward = &stats["forward"];
    assert_eq!(forward["connected"], true, "{stats}");
    println!(
        "{{\"forward_test_readings\":{total},\"packs\":{},\"resent_packs_seen\":{resent_packs},\"queued_during_outage\":{queued}}}",
        by_seq.len()
    );
    // Nothing else comes: the outbox is empty once everything is acknowledged.
    let deadline = Instant::now() + ARRIVAL;
    loop {
        let stats = server.stats(&http).await;
        if stats["forward"]["queued_packs"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the outbox never emptied: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(300), received.recv()).await {
        assert!(by_seq.contains_key(&extra.seq), "an unexpected pack arrived: {extra:?}");
    }
}
