//! `mekong bench ingest`: how many readings per second mekong makes durable, end to end over
//! real MQTT connections, next to what the embedded broker alone allows (the ingest path
//! reduced to a counter) and, optionally, an external broker with a counting subscriber.
//!
//! Every scenario starts its own platform on fresh ports and a fresh data directory, connects
//! one MQTT connection per simulated device, lets the load run for a warm-up, then counts for
//! the measured seconds: at the store (readings flushed to disk), at the link (publishes
//! counted), or at the external subscriber. Each scenario prints a JSON line; the last line
//! holds them all and the ratios.

mod load;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mekong_ingest::Stats;
use rumqttc::QoS;
use serde_json::{json, Value};

pub use load::{Load, LoadOptions};

use crate::{Config, Platform};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Device counts to run (each is one MQTT connection).
    pub devices: Vec<usize>,
    /// Readings per pack to run.
    pub readings: Vec<usize>,
    /// Seconds measured per scenario.
    pub seconds: f64,
    /// Seconds of load before measuring.
    pub warmup: f64,
    /// Unacknowledged publishes per connection.
    pub window: usize,
    /// An external broker to measure the same load against.
    pub peer: Option<SocketAddr>,
    /// Total packs per second for the acknowledgement latency at moderate load.
    pub moderate_rate: f64,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Open files this process may have, from /proc (no libc needed).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

enum Target {
    Mekong { count_only: bool, rate: Option<f64> },
    Peer(SocketAddr),
}

struct Measured {
    packs_per_s: f64,
    readings_per_s: f64,
    ack_latency_us: Vec<u32>,
    resends: u64,
    lost: u64,
}

fn percentile_ms(sorted: &[u32], p: f64) -> Option<f64> {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len().checked_sub(1)?);
    Some(f64::from(sorted[i]) / 1000.0)
}

async fn measure(
    target: Target,
    devices: usize,
    rpp: usize,
    opts: &BenchOptions,
    n: usize,
) -> anyhow::Result<Measured> {
    let data = tempfile_dir()?;
    let (addr, platform, stats): (SocketAddr, Option<Platform>, Option<Arc<Stats>>) = match &target {
        Target::Mekong { count_only, .. } => {
            let mut config = Config::default();
            config.broker.listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            config.broker.listen_v5 = None;
            config.api.listen = SocketAddr::from(([127, 0, 0, 1], 0));
            config.storage.data_dir = data.path.clone();
            let count_only = *count_only;
            let platform = Platform::start_with(&config, |p| p.count_only = count_only).await?;
            let stats = platform.stats();
            (config.broker.listen, Some(platform), Some(stats))
        }
        Target::Peer(addr) => (*addr, None, None),
    };
    let rate = match target {
        Target::Mekong { rate, .. } => rate,
        Target::Peer(_) => None,
    };
    let load_opts = LoadOptions {
        addr,
        devices,
        readings_per_pack: rpp,
        window: opts.window,
        rate,
        downlinks: matches!(target, Target::Mekong { count_only: false, .. }),
        prefix: format!("bench{n}-"),
    };
    let load = Load::start(load_opts).await?;
    let subscriber = match target {
        Target::Peer(addr) => {
            Some(load::CountingSubscriber::start(addr, QoS::AtMostOnce, Arc::clone(&load.counters)).await?)
        }
        Target::Mekong { .. } => None,
    };
    tokio::time::sleep(Duration::from_secs_f64(opts.warmup)).await;

    let count = |stats: &Option<Arc<Stats>>, count_only: bool| -> u64 {
        match stats {
            Some(s) if count_only => s.accepted(),
            Some(s) => s.durable_readings(),
            None => 0,
        }
    };
    let count_only = matches!(target, Target::Mekong { count_only: true, .. });
    let started = Instant::now();
    let before = count(&stats, count_only);
    load.counters.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(opts.seconds)).await;
    load.counters.measuring.store(false, Ordering::Relaxed);
    let after = count(&stats, count_only);
    let elapsed = started.elapsed().as_secs_f64();

    let (packs_per_s, readings_per_s) = match (&subscriber, count_only) {
        (Some(sub), _) => {
            let packs = sub.received.load(Ordering::Relaxed) as f64 / elapsed;
            (packs, packs * rpp as f64)
        }
        (None, true) => {
            let packs = (after - before) as f64 / elapsed;
            (packs, packs * rpp as f64)
        }
        (None, false) => {
            let readings = (after - before) as f64 / elapsed;
            (readings / rpp as f64, readings)
        }
    };
    let mut ack_latency_us = std::mem::take(&mut *load.counters.ack_latency_us.lock().await);
    ack_latency_us.sort_unstable();
    let resends = load.counters.resends.load(Ordering::Relaxed);
    let lost = stats.as_ref().map_or(0, |s| s.lost());
    load.stop().await?;
    if let Some(sub) = subscriber {
        sub.stop();
    }
    if let Some(platform) = platform {
        platform.shutdown().await?;
    }
    Ok(Measured { packs_per_s, readings_per_s, ack_latency_us, resends, lost })
}

/// A temporary directory removed on drop (the store is flushed and closed before).
struct TempDir {
    path: std::path::PathBuf,
}

fn tempfile_dir() -> anyhow::Result<TempDir> {
    let path = std::env::temp_dir().join(format!("mekong-bench-{}-{}", std::process::id(), free_port()?));
    std::fs::create_dir_all(&path)?;
    Ok(TempDir { path })
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn line(scenario: &str, devices: usize, rpp: usize, m: &Measured) -> Value {
    let mut v = json!({
        "scenario": scenario,
        "devices": devices,
        "readings_per_pack": rpp,
        "packs_per_s": m.packs_per_s.round(),
        "readings_per_s": m.readings_per_s.round(),
    });
    if !m.ack_latency_us.is_empty() {
        v["ack_p50_ms"] = json!(percentile_ms(&m.ack_latency_us, 0.50));
        v["ack_p99_ms"] = json!(percentile_ms(&m.ack_latency_us, 0.99));
        v["acks_timed"] = json!(m.ack_latency_us.len());
        v["resends"] = json!(m.resends);
        v["lost_at_broker"] = json!(m.lost);
    }
    v
}

/// Runs every scenario and returns the summary (also printed, one line per scenario).
pub async fn ingest(opts: BenchOptions) -> anyhow::Result<Value> {
    let most = opts.devices.iter().copied().max().unwrap_or(0) as u64;
    if let Some(limit) = open_file_limit() {
        // Both ends of every connection live in this process.
        if limit < 2 * most + 512 {
            bail!(
                "{most} devices need about {} open files and the limit is {limit}: run `ulimit -n 65536` first",
                2 * most + 512
            );
        }
    }
    let mut results = Vec::new();
    let mut ratios = Vec::new();
    let mut n = 0;
    for &devices in &opts.devices {
        for &rpp in &opts.readings {
            n += 1;
            let ceiling = measure(Target::Mekong { count_only: true, rate: None }, devices, rpp, &opts, n)
                .await
                .with_context(|| format!("ceiling, {devices} devices, {rpp} readings per pack"))?;
            let row = line("broker_only_counter", devices, rpp, &ceiling);
            println!("{row}");
            results.push(row);
            n += 1;
            let full = measure(Target::Mekong { count_only: false, rate: None }, devices, rpp, &opts, n)
                .await
                .with_context(|| format!("mekong, {devices} devices, {rpp} readings per pack"))?;
            let row = line("mekong_durable", devices, rpp, &full);
            println!("{row}");
            results.push(row);
            let mut ratio = json!({
                "devices": devices,
                "readings_per_pack": rpp,
                "durable_over_broker_only": (full.readings_per_s / ceiling.readings_per_s * 1000.0).round() / 1000.0,
            });
            if let Some(peer) = opts.peer {
                n += 1;
                let external = measure(Target::Peer(peer), devices, rpp, &opts, n)
                    .await
                    .with_context(|| format!("peer {peer}, {devices} devices, {rpp} readings per pack"))?;
                let row = line("peer_broker_counter", devices, rpp, &external);
                println!("{row}");
                results.push(row);
                ratio["durable_over_peer"] =
                    json!((full.readings_per_s / external.readings_per_s * 1000.0).round() / 1000.0);
            }
            ratios.push(ratio);
        }
    }
    n += 1;
    let devices = 100;
    let moderate = measure(
        Target::Mekong { count_only: false, rate: Some(opts.moderate_rate / devices as f64) },
        devices,
        1,
        &opts,
        n,
    )
    .await
    .context("moderate load")?;
    let row = line("mekong_durable_moderate", devices, 1, &moderate);
    println!("{row}");
    results.push(row);
    Ok(json!({
        "bench": "ingest",
        "seconds": opts.seconds,
        "window": opts.window,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "results": results,
        "ratios": ratios,
    }))
}
