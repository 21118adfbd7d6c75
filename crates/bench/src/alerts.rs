//! `mekong-bench alerts`: the latency of an alert, from the publish of the reading that
//! crosses a threshold to the webhook's receipt of the change, under a background load.
//!
//! `mekong serve` runs as a child process with one rule (`water_level` above 1000, cleared
//! below 900, no hold) and one webhook to a receiver in this process (axum on loopback). The
//! background load ([`crate::load`]) publishes packs of readings far below the threshold at the
//! given rate. One probe device publishes, every `every` ms, a reading alternately above and
//! below: each is one change (firing, then resolved), and its latency is the time from the
//! probe's PUBLISH being written to the receiver getting the webhook whose `at_ms` is that
//! reading's time, and the same to a client of `/v1/stream?events=alerts` that reads the
//! change's event. Prints a JSON line.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bytes::BytesMut;
use mekong_schema::{encode_pack, Base, Reading};
use rumqttc::{Packet, Publish, QoS};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{data_lines, free_ports, get_json, open_stream, percentile_ms, temp_dir, wait_answering};
use crate::load::{self, Load, LoadOptions};

/// What to measure.
#[derive(Debug, Clone)]
pub struct AlertBenchOptions {
    /// Background packs per second, over all devices.
    pub rate: f64,
    /// Background devices.
    pub devices: usize,
    /// Alert changes to time.
    pub changes: usize,
    /// Time between two of the probe's readings.
    pub every: Duration,
    /// The `mekong` binary.
    pub mekong: std::path::PathBuf,
}

/// The receiver's record: reading time of a change to the time it arrived.
type Arrivals = Arc<Mutex<HashMap<i64, Instant>>>;

async fn receiver(listener: tokio::net::TcpListener, arrivals: Arrivals) -> anyhow::Result<()> {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let arrivals = Arc::clone(&arrivals);
            async move {
                let now = Instant::now();
                if let Ok(notice) = serde_json::from_slice::<Value>(&body) {
                    if let Some(at_ms) = notice["at_ms"].as_i64() {
                        arrivals.lock().unwrap_or_else(|e| e.into_inner()).insert(at_ms, now);
                    }
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    axum::serve(listener, app).await?;
    Ok(())
}

/// A follower of `/v1/stream?events=alerts` that notes when each change's event arrives.
async fn stream_reader(http: SocketAddr, arrivals: Arrivals) -> anyhow::Result<()> {
    let mut stream = open_stream(http, "?events=alerts").await?;
    let (mut buf, mut pending) = (vec![0u8; 16 * 1024], Vec::new());
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let now = Instant::now();
        for data in data_lines(&mut pending, &buf[..n]) {
            if let Ok(event) = serde_json::from_slice::<Value>(&data) {
                if let Some(at_ms) = event["at_ms"].as_i64() {
                    arrivals.lock().unwrap_or_else(|e| e.into_inner()).insert(at_ms, now);
                }
            }
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Runs the benchmark and returns its JSON line.
pub async fn alerts(opts: AlertBenchOptions) -> anyhow::Result<Value> {
    let [mqtt, http] = free_ports()?.map(|port| SocketAddr::from(([127, 0, 0, 1], port)));
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_addr = hook.local_addr()?;
    let arrivals: Arrivals = Arc::default();
    let receiving = tokio::spawn(receiver(hook, Arc::clone(&arrivals)));

    let data = temp_dir()?;
    let config = data.path.join("mekong.toml");
    let secret = data.path.join("webhook.secret");
    std::fs::write(&secret, "mekong-bench-webhook-secret")?;
    std::fs::write(
        &config,
        format!(
            "[alerts]\n\n[[alerts.rule]]\nid = \"bench\"\ntype = \"threshold\"\nmetric = \"water_level\"\nabove = 1000.0\nclear = 900.0\n\n\
             [[alerts.webhook]]\nname = \"bench\"\nurl = \"http://{hook_addr}/hook\"\nsecret_file = {:?}\nretry_min_ms = 50\nretry_max_ms = 1000\n",
            secret.display().to_string()
        ),
    )?;
    let mut child = Command::new(&opts.mekong)
        .args(["serve", "--config"])
        .arg(&config)
        .env("MEKONG__STORAGE__DATA_DIR", data.path.join("data"))
        .env("MEKONG__BROKER__LISTEN", mqtt.to_string())
        .env("MEKONG__BROKER__LISTEN_V5", "")
        .env("MEKONG__API__LISTEN", http.to_string())
        .env("MEKONG__BROKER__LISTEN_TLS", "")
        .env("MEKONG__BROKER__LISTEN_V5_TLS", "")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start mekong serve")?;
    let result = measure(&opts, mqtt, http, &arrivals).await;
    let _ = child.kill();
    let _ = child.wait();
    receiving.abort();
    result
}

async fn measure(
    opts: &AlertBenchOptions,
    mqtt: SocketAddr,
    http: SocketAddr,
    arrivals: &Arrivals,
) -> anyhow::Result<Value> {
    wait_answering(http, "/v1/stats", Duration::from_secs(30), "mekong serve").await?;
    let devices = opts.devices.max(1);
    let load = Load::start(LoadOptions {
        addr: mqtt,
        devices,
        readings_per_pack: 1,
        window: 16,
        rate: Some(opts.rate / devices as f64),
        downlinks: true,
        prefix: "load-".into(),
        tls: None,
        wall_clock: false,
        spread: None,
    })
    .await?;
    // The background load settles first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let streamed: Arrivals = Arc::default();
    let following = tokio::spawn(stream_reader(http, Arc::clone(&streamed)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_json(http, "/v1/stats").await?["stream"]["clients"].as_u64() != Some(1) {
        if Instant::now() > deadline {
            bail!("the stream client did not connect");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = get_json(http, "/v1/stats").await?;
    let started = Instant::now();

    let probe = load::connect_device(mqtt, None, "probe", false).await?;
    let (mut reader, mut writer) = tokio::io::split(probe);
    // PUBACKs are read and dropped, so that the connection never stalls.
    let drain = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while matches!(reader.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    let mut sent: HashMap<i64, Instant> = HashMap::new();
    let mut out = BytesMut::new();
    let mut pack = [0u8; 128];
    let mut last_ms = 0;
    for i in 0..opts.changes {
        let t_ms = now_ms().max(last_ms + 1);
        last_ms = t_ms;
        let value = if i % 2 == 0 { 2000.0 } else { 100.0 };
        let readings = [Reading { name: "water_level", unit: Some("cm"), value, time: 0.0 }];
        let n = encode_pack(&mut pack, &Base { time: Some(t_ms as f64 / 1000.0), ..Base::default() }, &readings)?;
        let mut publish =
            Publish::from_bytes("mekong/v1/probe/up", QoS::AtLeastOnce, bytes::Bytes::copy_from_slice(&pack[..n]));
        publish.pkid = (i % 60_000 + 1) as u16;
        out.clear();
        Packet::Publish(publish).write(&mut out, 1 << 20)?;
        writer.write_all(&out).await?;
        sent.insert(t_ms, Instant::now());
        tokio::time::sleep(opts.every).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let all_in = |a: &Arrivals| a.lock().unwrap_or_else(|e| e.into_inner()).len() >= opts.changes;
    while !(all_in(arrivals) && all_in(&streamed)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    following.abort();
    let elapsed = started.elapsed().as_secs_f64();
    let after = get_json(http, "/v1/stats").await?;
    drain.abort();
    load.stop().await?;
    let latencies = |arrivals: &Arrivals| {
        let arrived = arrivals.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut us: Vec<u32> = sent
            .iter()
            .filter_map(|(t, at)| {
                arrived.get(t).map(|got| u32::try_from(got.duration_since(*at).as_micros()).unwrap_or(u32::MAX))
            })
            .collect();
        us.sort_unstable();
        us
    };
    let latency_us = latencies(arrivals);
    let stream_us = latencies(&streamed);
    let packs =
        after["durable_packs"].as_u64().unwrap_or(0).saturating_sub(before["durable_packs"].as_u64().unwrap_or(0));
    Ok(json!({
        "bench": "alerts",
        "load_packs_per_s": (packs as f64 / elapsed).round(),
        "changes_sent": opts.changes,
        "changes_delivered": latency_us.len(),
        "webhook_latency_ms": {
            "p50": percentile_ms(&latency_us, 0.50),
            "p99": percentile_ms(&latency_us, 0.99),
            "max": latency_us.last().map(|&us| f64::from(us) / 1000.0),
        },
        "changes_streamed": stream_us.len(),
        "stream_latency_ms": {
            "p50": percentile_ms(&stream_us, 0.50),
            "p99": percentile_ms(&stream_us, 0.99),
            "max": stream_us.last().map(|&us| f64::from(us) / 1000.0),
        },
    }))
}
