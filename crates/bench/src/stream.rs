//! `mekong-bench stream`: what following the live stream (`/v1/stream`) costs ingest, and how
//! long a reading takes from its pack's publish to a stream client.
//!
//! One `mekong serve` child process. First, ingest at full speed, durable, with no stream
//! client and with `--clients` clients that follow everything, alternating for `--rounds`
//! rounds in one run, so that the machine's drift does not pass for a cost; the ratio of the
//! medians is the figure. Each client is a plain HTTP/1.1 connection in this process that
//! reads and counts the bytes as fast as they come, and follows one device of the load (as
//! an app that shows a station), or with `--follow-all` everything. Then a steady `--rate` packs per second,
//! time-stamped by the wall clock, with one client that parses every event: the latency from
//! a pack's making to its readings event, next to the device's own acknowledgement latency.
//!
//! The full-speed load stamps its readings from the wall clock on (each device runs ahead of
//! it, a millisecond per reading), so that the store's upkeep has no closed hour to fold
//! while the phases run. With `--backlog` they start a day back, as `mekong-bench ingest`'s
//! do: every reading is then late for an hour that closed long ago, and each upkeep pass
//! (every minute) folds everything received so far into the day's file again, a cost that
//! grows through the run and lands in whichever phase it meets.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use crate::harness::{cpu_seconds, data_lines, open_stream, percentile_ms};
use crate::ingest::Server;
use crate::load::{Load, LoadOptions};

/// What to measure.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Devices, one MQTT connection each.
    pub devices: usize,
    /// Readings per pack.
    pub readings: usize,
    /// Stream clients in the "with" phases.
    pub clients: usize,
    /// Each client follows everything, rather than one device of the load.
    pub follow_all: bool,
    /// The full-speed load's readings start a day back (a backlog the upkeep folds), rather
    /// than at the wall clock.
    pub backlog: bool,
    /// Seconds measured per phase.
    pub seconds: f64,
    /// Seconds of load before the first phase.
    pub warmup: f64,
    /// Pairs of phases (without clients, with them).
    pub rounds: usize,
    /// Packs per second, over all devices, for the latency.
    pub rate: f64,
    /// The `mekong` binary.
    pub mekong: PathBuf,
}

/// Followers of the stream that read everything and count it.
struct Clients {
    stop: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
    tasks: tokio::task::JoinSet<anyhow::Result<()>>,
}

impl Clients {
    /// `n` clients; client `i` follows `follow(i)` (a query string).
    async fn open(server: &Server, n: usize, follow: impl Fn(usize) -> String) -> anyhow::Result<Clients> {
        let (stop, bytes) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let mut stream = open_stream(server.http, &follow(i)).await?;
            let (stop, bytes) = (Arc::clone(&stop), Arc::clone(&bytes));
            tasks.spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
                        Ok(Ok(0)) => bail!("the server ended a stream"),
                        Ok(Ok(n)) => {
                            bytes.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        Ok(Err(e)) => return Err(e.into()),
                        Err(_) => {}
                    }
                }
                Ok(())
            });
        }
        wait_clients(server, n as u64).await?;
        Ok(Clients { stop, bytes, tasks })
    }

    async fn close(mut self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        while let Some(done) = self.tasks.join_next().await {
            done.context("stream client task failed")??;
        }
        Ok(self.bytes.load(Ordering::Relaxed))
    }
}

/// Waits until the server counts `n` stream clients.
async fn wait_clients(server: &Server, n: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.stats().await?["stream"]["clients"].as_u64() != Some(n) {
        if Instant::now() > deadline {
            bail!("the server did not count {n} stream clients");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// What one phase measured.
struct Phase {
    /// Readings made durable per second.
    rate: f64,
    /// The server's CPU seconds per million of them.
    server_cpu: f64,
    /// This process's (the load generator's and the clients'), per million of them.
    bench_cpu: f64,
}

/// Readings made durable per second over `seconds`, and the CPU seconds per million of them.
async fn durable_rate(server: &Server, seconds: f64) -> anyhow::Result<Phase> {
    let count = |s: &Value| s["durable_readings"].as_u64().unwrap_or(0);
    let before = count(&server.stats().await?);
    let cpu_before = server.cpu_seconds().unwrap_or(0.0);
    let bench_before = cpu_seconds("self").unwrap_or(0.0);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let after = count(&server.stats().await?);
    let cpu = server.cpu_seconds().unwrap_or(0.0) - cpu_before;
    let bench = cpu_seconds("self").unwrap_or(0.0) - bench_before;
    let readings = after.saturating_sub(before) as f64;
    let per_million = |cpu: f64| if readings > 0.0 { cpu / readings * 1e6 } else { 0.0 };
    Ok(Phase {
        rate: readings / started.elapsed().as_secs_f64(),
        server_cpu: per_million(cpu),
        bench_cpu: per_million(bench),
    })
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// Reads one stream for `seconds` and returns, for each readings event, the microseconds
/// from its first reading's time (the moment its pack was made) to its arrival.
async fn latencies(server: &Server, seconds: f64) -> anyhow::Result<Vec<u32>> {
    let mut stream = open_stream(server.http, "").await?;
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < until {
        let n = match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(read) => read?,
            Err(_) => continue,
        };
        if n == 0 {
            bail!("the server ended the stream");
        }
        let arrived = now_us();
        for data in data_lines(&mut pending, &buf[..n]).iter().filter(|d| d.starts_with(b"{\"device\"")) {
            let data = String::from_utf8_lossy(data);
            let t_ms = data
                .split_once("\"t_ms\":")
                .and_then(|(_, rest)| rest.split([',', '}']).next())
                .and_then(|t| t.parse::<i64>().ok())
                .context("a readings event without t_ms")?;
            out.push(u32::try_from((arrived - t_ms * 1000).max(0)).unwrap_or(u32::MAX));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Runs both measurements; returns the summary line.
pub async fn stream(opts: StreamOptions) -> anyhow::Result<Value> {
    let server = Server::start(&opts.mekong, false, None).await?;
    let load_options = |prefix: &str, rate: Option<f64>, wall_clock: bool| LoadOptions {
        addr: server.mqtt,
        devices: opts.devices,
        readings_per_pack: opts.readings,
        window: (1600 / opts.devices.max(1)).max(1),
        rate,
        downlinks: true,
        prefix: prefix.into(),
        tls: None,
        wall_clock,
        spread: None,
    };

    let load = Load::start(load_options("full-", None, !opts.backlog)).await?;
    tokio::time::sleep(Duration::from_secs_f64(opts.warmup)).await;
    let (mut without, mut with) = (Vec::new(), Vec::new());
    let (mut cpu_without, mut cpu_with) = (Vec::new(), Vec::new());
    let (mut bench_without, mut bench_with) = (Vec::new(), Vec::new());
    // The load's device ids (load.rs): the prefix and five digits.
    let devices = opts.devices.max(1);
    let follow = |i: usize| match opts.follow_all {
        true => String::new(),
        false => format!("?device=full-{:05}", i % devices),
    };
    let dropped = |s: &Value| s["stream"]["dropped"].as_u64().unwrap_or(0);
    for round in 0..opts.rounds {
        let alone = durable_rate(&server, opts.seconds).await?;
        let clients = Clients::open(&server, opts.clients, follow).await?;
        let before = dropped(&server.stats().await?);
        let followed = durable_rate(&server, opts.seconds).await?;
        let dropped_now = dropped(&server.stats().await?) - before;
        let bytes = clients.close().await?;
        wait_clients(&server, 0).await?;
        println!(
            "{}",
            json!({"round": round, "readings_per_s_without": alone.rate.round(), "readings_per_s_with": followed.rate.round(),
                   "server_cpu_s_per_million_without": round2(alone.server_cpu),
                   "server_cpu_s_per_million_with": round2(followed.server_cpu),
                   "bench_cpu_s_per_million_without": round2(alone.bench_cpu),
                   "bench_cpu_s_per_million_with": round2(followed.bench_cpu),
                   "clients": opts.clients, "clients_dropped": dropped_now, "stream_mib_read": (bytes as f64 / 1048576.0).round()})
        );
        without.push(alone.rate);
        with.push(followed.rate);
        cpu_without.push(alone.server_cpu);
        cpu_with.push(followed.server_cpu);
        bench_without.push(alone.bench_cpu);
        bench_with.push(followed.bench_cpu);
    }
    load.stop().await?;
    let dropped = dropped(&server.stats().await?);

    let per_device = opts.rate / opts.devices.max(1) as f64;
    let load = Load::start(load_options("steady-", Some(per_device), true)).await?;
    tokio::time::sleep(Duration::from_secs_f64(opts.warmup)).await;
    load.counters.measuring.store(true, Ordering::Relaxed);
    let seen = latencies(&server, opts.seconds).await?;
    load.counters.measuring.store(false, Ordering::Relaxed);
    let mut acks = std::mem::take(&mut *load.counters.ack_latency_us.lock().unwrap_or_else(|e| e.into_inner()));
    acks.sort_unstable();
    load.stop().await?;
    let stats = server.stats().await?;

    let (a, b) = (median(&without), median(&with));
    Ok(json!({
        "summary": "stream",
        "devices": opts.devices,
        "readings_per_pack": opts.readings,
        "clients": opts.clients,
        "clients_follow": if opts.follow_all { "everything" } else { "one device each" },
        "readings_per_s_without_clients": a.round(),
        "readings_per_s_with_clients": b.round(),
        "with_over_without": if a > 0.0 { (b / a * 1000.0).round() / 1000.0 } else { 0.0 },
        "clients_dropped": dropped,
        "readings_from": if opts.backlog { "a day back" } else { "the wall clock" },
        "server_cpu_s_per_million_without": round2(median(&cpu_without)),
        "server_cpu_s_per_million_with": round2(median(&cpu_with)),
        "bench_cpu_s_per_million_without": round2(median(&bench_without)),
        "bench_cpu_s_per_million_with": round2(median(&bench_with)),
        "rate_packs_per_s": opts.rate,
        "events_timed": seen.len(),
        "stream_p50_ms": percentile_ms(&seen, 0.50),
        "stream_p99_ms": percentile_ms(&seen, 0.99),
        "ack_p50_ms": percentile_ms(&acks, 0.50),
        "ack_p99_ms": percentile_ms(&acks, 0.99),
        "lost_at_broker": stats["lost"],
    }))
}
