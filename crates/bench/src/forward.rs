//! `mekong-bench forward`: the feed to an upstream broker (the regional data centre) under a
//! steady load: the lag from a pack's publish to its arrival at a subscriber of a local
//! Mosquitto, then an outage of that Mosquitto while the load goes on, and the rate at which
//! mekong catches up once it is back.
//!
//! Mosquitto (the `mosquitto` binary) runs as a child process on a free loopback port, with
//! persistence, so that the subscriber's session outlives the outage. `mekong serve` runs as
//! a child with `[forward]` pointed at it. The load ([`crate::load`]) times each pack by the
//! wall clock, so a pack's lag is the subscriber's clock at arrival minus the time of its
//! first reading (ms resolution). The catch-up runs from Mosquitto's restart until the
//! outbox holds no more than the in-flight window; its rate is the packs the upstream
//! acknowledged over that time (`forward.sent_packs` in `/v1/stats`), the load included.
//! Prints a JSON line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use mekong_schema::senml::{self, DecodeOptions, Record};
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::{json, Value};

use crate::harness::{free_ports, get_json, percentile_ms, temp_dir, wait_answering, TempDir};
use crate::load::{Load, LoadOptions};

/// What to measure.
#[derive(Debug, Clone)]
pub struct ForwardBenchOptions {
    /// Packs per second, over all devices.
    pub rate: f64,
    /// Devices, one MQTT connection each.
    pub devices: usize,
    /// Readings per pack.
    pub readings: usize,
    /// Seconds of steady load over which the lag is measured.
    pub seconds: f64,
    /// Seconds the upstream is away.
    pub outage: f64,
    /// `forward.max_packs_per_sec` (0: no limit).
    pub max_packs_per_sec: u32,
    /// `forward.max_in_flight`.
    pub max_in_flight: u16,
    /// The `mosquitto` binary.
    pub mosquitto: PathBuf,
    /// The `mekong` binary.
    pub mekong: PathBuf,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Mosquitto as a child process.
struct Mosquitto {
    binary: PathBuf,
    config: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Mosquitto {
    async fn start(&mut self) -> anyhow::Result<()> {
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            if Instant::now() > deadline {
                bail!("mosquitto did not listen on {}", self.port);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// SIGTERM (it saves its sessions), and wait.
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

/// What the subscriber has seen: lags (ms) of packs that arrived while `recording`, and all
/// packs counted.
#[derive(Debug, Default)]
struct Seen {
    recording: bool,
    lags_us: Vec<u32>,
    packs: u64,
}

/// The data centre's subscriber, with a lasting session.
fn subscribe(port: u16, seen: Arc<Mutex<Seen>>) -> tokio::task::JoinHandle<()> {
    let mut options = MqttOptions::new("bench-region", "127.0.0.1", port);
    options.set_clean_start(false);
    options.set_session_expiry_interval(Some(3600));
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) if !ack.session_present => {
                    let _ = client.subscribe("bench/#", QoS::AtLeastOnce).await;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let arrived = now_ms();
                    let mut first = None;
                    let opts = DecodeOptions { now: arrived as f64 / 1000.0, max_records: 100_000 };
                    let _ = senml::decode(&p.payload, opts, &mut |r: Record<'_>| {
                        first.get_or_insert((r.time * 1000.0).round() as i64);
                        Ok(())
                    });
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    seen.packs += 1;
                    if let (true, Some(t)) = (seen.recording, first) {
                        let lag_us = u32::try_from((arrived - t).max(0).saturating_mul(1000)).unwrap_or(u32::MAX);
                        seen.lags_us.push(lag_us);
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
}

/// Runs the benchmark and returns its JSON line.
pub async fn forward(opts: ForwardBenchOptions) -> anyhow::Result<Value> {
    let dir = temp_dir()?;
    let [mqtt, http, upstream] = free_ports()?;
    let config = dir.path.join("mosquitto.conf");
    std::fs::write(
        &config,
        format!(
            "listener {upstream} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
             max_queued_messages 0\nlog_dest none\n",
            dir.path.display()
        ),
    )?;
    let mut mosquitto = Mosquitto { binary: opts.mosquitto.clone(), config, port: upstream, child: None };
    mosquitto.start().await?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let subscriber = subscribe(upstream, Arc::clone(&seen));
    let mut child = start_mekong(&opts, &dir, mqtt, http, upstream)?;
    let result = measure(&opts, &mut mosquitto, &seen, mqtt, http).await;
    let _ = child.kill();
    let _ = child.wait();
    subscriber.abort();
    result
}

fn start_mekong(
    opts: &ForwardBenchOptions,
    dir: &TempDir,
    mqtt: u16,
    http: u16,
    upstream: u16,
) -> anyhow::Result<Child> {
    Command::new(&opts.mekong)
        .args(["serve", "--config", "/dev/null"])
        .env("MEKONG__STORAGE__DATA_DIR", dir.path.join("data"))
        .env("MEKONG__BROKER__LISTEN", format!("127.0.0.1:{mqtt}"))
        .env("MEKONG__BROKER__LISTEN_V5", "")
        .env("MEKONG__API__LISTEN", format!("127.0.0.1:{http}"))
        .env("MEKONG__FORWARD__ENABLED", "true")
        .env("MEKONG__FORWARD__HOST", "127.0.0.1")
        .env("MEKONG__FORWARD__PORT", upstream.to_string())
        .env("MEKONG__FORWARD__TOPIC_PREFIX", "bench")
        .env("MEKONG__FORWARD__MAX_IN_FLIGHT", opts.max_in_flight.to_string())
        .env("MEKONG__FORWARD__MAX_PACKS_PER_SEC", opts.max_packs_per_sec.to_string())
        .env("MEKONG__FORWARD__RECONNECT_MAX_SECS", "1")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start mekong serve")
}

/// `forward.<key>` of `/v1/stats`.
async fn forward_stat(http: SocketAddr, key: &str) -> anyhow::Result<u64> {
    get_json(http, "/v1/stats").await?["forward"][key]
        .as_u64()
        .with_context(|| format!("no forward.{key} in /v1/stats"))
}

async fn measure(
    opts: &ForwardBenchOptions,
    mosquitto: &mut Mosquitto,
    seen: &Arc<Mutex<Seen>>,
    mqtt: u16,
    http: u16,
) -> anyhow::Result<Value> {
    let (mqtt, http) = (SocketAddr::from(([127, 0, 0, 1], mqtt)), SocketAddr::from(([127, 0, 0, 1], http)));
    wait_answering(http, "/v1/stats", Duration::from_secs(30), "mekong serve").await?;
    let devices = opts.devices.max(1);
    let load = Load::start(LoadOptions {
        addr: mqtt,
        devices,
        readings_per_pack: opts.readings.max(1),
        window: 16,
        rate: Some(opts.rate / devices as f64),
        downlinks: true,
        prefix: "fwd-".into(),
        tls: None,
        wall_clock: true,
        spread: None,
    })
    .await?;
    // The load settles, then the lag is recorded.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = get_json(http, "/v1/stats").await?;
    seen.lock().unwrap_or_else(|e| e.into_inner()).recording = true;
    tokio::time::sleep(Duration::from_secs_f64(opts.seconds)).await;
    let (mut lags, arrived) = {
        let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
        s.recording = false;
        (std::mem::take(&mut s.lags_us), s.packs)
    };
    let after = get_json(http, "/v1/stats").await?;
    lags.sort_unstable();
    let durable = |v: &Value| v["durable_packs"].as_u64().unwrap_or(0);
    let steady_packs_per_s = (durable(&after) - durable(&before)) as f64 / opts.seconds;

    // The outage: the load goes on, the outbox grows.
    mosquitto.stop();
    let outage_started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(opts.outage)).await;
    let backlog = forward_stat(http, "queued_packs").await?;
    let backlog_bytes = forward_stat(http, "queued_bytes").await?;
    let sent_before = forward_stat(http, "sent_packs").await?;
    mosquitto.start().await?;
    let restarted = Instant::now();
    let outage_secs = outage_started.elapsed().as_secs_f64();
    // Caught up: no more than the window left in the outbox.
    let limit = Duration::from_secs_f64(opts.outage * 20.0 + 60.0);
    let caught_up = loop {
        let queued = forward_stat(http, "queued_packs").await?;
        if queued <= u64::from(opts.max_in_flight) {
            break restarted.elapsed();
        }
        if restarted.elapsed() > limit {
            bail!("not caught up after {:?}: {queued} packs still queued", limit);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let sent_after = forward_stat(http, "sent_packs").await?;
    let stats = get_json(http, "/v1/stats").await?;
    load.stop().await?;
    let catchup_packs = sent_after - sent_before;
    Ok(json!({
        "bench": "forward",
        "load_packs_per_s": steady_packs_per_s.round(),
        "readings_per_pack": opts.readings.max(1),
        "devices": devices,
        "lag_packs": lags.len(),
        "lag_ms": {
            "p50": percentile_ms(&lags, 0.50),
            "p99": percentile_ms(&lags, 0.99),
            "max": lags.last().map(|&us| f64::from(us) / 1000.0),
        },
        "packs_arrived_before_outage": arrived,
        "outage_s": (outage_secs * 10.0).round() / 10.0,
        "backlog_packs": backlog,
        "backlog_bytes": backlog_bytes,
        "catchup_s": (caught_up.as_secs_f64() * 10.0).round() / 10.0,
        "catchup_packs_per_s": (catchup_packs as f64 / caught_up.as_secs_f64()).round(),
        "max_packs_per_sec": opts.max_packs_per_sec,
        "max_in_flight": opts.max_in_flight,
        "resent_packs": stats["forward"]["resent_packs"],
        "dropped_packs": stats["forward"]["dropped_packs"],
    }))
}
