//! `mekong-bench query`: loads the reference dataset into a store, reports its size on disk,
//! then starts `mekong serve` on it and measures the queries city apps make through the real
//! HTTP API on loopback.
//!
//! The dataset is generated deterministically: series spread over water levels (tide plus
//! noise, 1 mm resolution), PM2.5 (a daily cycle, 0.1 µg/m³) and vehicle counts (integers,
//! rush hours), sampled every `interval` seconds for `days` days and ending an hour before
//! now; plus one water series sampled as often for a whole year, for the one-year query.
//! Points are written as ingest writes them: a few points of every series per write group
//! (one small chunk each), with the closed hours folded as the upkeep thread folds them, so
//! that the size on disk is that of a server that ingested the data live. The size is reported
//! as ingested, and after `mekong compact`, which gives sled's garbage back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use mekong_schema::{encode_pack, Base, Reading};
use mekong_store::{compact, NewPoint, PackWrite, Store, StoreOptions};
use serde_json::{json, Value};

use crate::answers::{self, BucketsByDevice, LatestValues, Points};
use crate::client::Http;
use crate::harness::{free_ports, percentile_ms, temp_dir, TempDir};
use crate::peers::{self, Peer};

/// How often loading prints a progress line.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// What to load and measure (the options of `mekong-bench query`).
#[derive(Debug, Clone, clap::Args)]
pub struct QueryBenchOptions {
    /// Series in the reference dataset (besides one water series of a whole year).
    #[arg(long, default_value_t = 1000)]
    pub series: usize,
    /// Days of data per series (30 is the reference size).
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Seconds between two points of a series; must divide a day.
    #[arg(long, default_value_t = 10)]
    pub interval_secs: u32,
    /// Points of each series per write group, as ingest writes them.
    #[arg(long, default_value_t = 6)]
    pub points_per_write: usize,
    /// Only these kinds (water, air, traffic), comma-separated; default all three in turn.
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// Timed requests per query.
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
    /// sled cache of the server, bytes (the configuration's default).
    #[arg(long, default_value_t = StoreOptions::default().cache_capacity_bytes)]
    pub cache_bytes: u64,
    /// Seconds of wrk on query (a) with 64 connections; 0 skips it.
    #[arg(long, default_value_t = 10)]
    pub wrk_seconds: u32,
    /// Keep the dataset in this (new) directory instead of a temporary one.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A running peer to load the same dataset into and time the same queries against, as
    /// NAME=URL: `victoriametrics=http://127.0.0.1:8428`, `influxdb=http://127.0.0.1:8086`.
    #[arg(long = "peer")]
    pub peers: Vec<String>,
    /// A peer's data directory, as NAME=DIR, to report its size on disk after loading.
    #[arg(long)]
    pub peer_data: Vec<String>,
}

/// One generated series (also the fleet of `soak.rs`).
pub(crate) struct Series {
    pub(crate) device: String,
    pub(crate) kind: &'static str,
    pub(crate) metric: &'static str,
    pub(crate) unit: &'static str,
    index: u64,
}

impl Series {
    pub(crate) fn new(index: usize, kind: &str) -> anyhow::Result<Series> {
        let (kind, metric, unit) = match kind {
            "water" => ("water", "water_level", "cm"),
            "air" => ("air", "pm2_5", "ug/m3"),
            "traffic" => ("traffic", "vehicle_count", "/min"),
            other => bail!("unknown kind {other:?}: water, air or traffic"),
        };
        Ok(Series { device: format!("ref-{kind}-{index:04}"), kind, metric, unit, index: index as u64 })
    }

    /// The value at `t_ms`: a function of the series and the time alone, so that the data
    /// are the same whatever order they are written in.
    pub(crate) fn value(&self, t_ms: i64) -> f64 {
        let noise = unit_noise(self.index, t_ms);
        let phase = (self.index % 97) as f64 / 97.0 * std::f64::consts::TAU;
        let t = t_ms as f64 / 1000.0;
        let day = (t / 86_400.0).fract() * std::f64::consts::TAU;
        match self.kind {
            "water" => {
                // Semi-diurnal tide (12.42 h) and a daily component, in mm, plus ±3 mm of noise.
                let tide = 900.0 * (t / 44_712.0 * std::f64::consts::TAU + phase).sin();
                let mm = 2_500.0 + tide + 250.0 * (day + phase / 2.0).sin() + (noise * 7.0 - 3.5);
                mm.round() / 10.0
            }
            "air" => {
                let tenths = 350.0 - 150.0 * (day + phase / 5.0).cos() + noise * 60.0 - 30.0;
                tenths.round().max(0.0) / 10.0
            }
            _ => {
                // Vehicles per minute, with rush hours at 07:30 and 17:30 in Can Tho (UTC+7).
                let hour = ((t / 3_600.0) + 7.0).rem_euclid(24.0);
                let rush = (-((hour - 7.5) / 1.2).powi(2)).exp() + (-((hour - 17.5) / 1.5).powi(2)).exp();
                let rate = 4.0 + 40.0 * rush + (self.index % 7) as f64;
                (rate + (noise - 0.5) * 2.0 * rate.sqrt()).round().max(0.0)
            }
        }
    }
}

/// A number in [0, 1) from (series, time), by splitmix64.
fn unit_noise(series: u64, t_ms: i64) -> f64 {
    let mut z = series.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (t_ms as u64);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

struct Loaded {
    points: u64,
    cbor_bytes: u64,
    seconds: f64,
    start_ms: i64,
    end_ms: i64,
    year_start_ms: i64,
}

/// Writes the dataset in time order, folding every closed hour as the server would.
fn load(store: &Store, series: &[Series], year: &Series, opts: &QueryBenchOptions) -> anyhow::Result<Loaded> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    // Whole UTC days, so that the year aggregated by day is 365 buckets, ending at least an
    // hour ago, so that every window is closed.
    let end_ms = (now - HOUR_MS) - (now - HOUR_MS).rem_euclid(DAY_MS);
    let start_ms = end_ms - i64::from(opts.days) * DAY_MS;
    let year_start_ms = end_ms - 365 * DAY_MS;
    let step = i64::from(opts.interval_secs) * 1000;
    let per_write = opts.points_per_write.max(1) as i64;
    let started = Instant::now();
    let mut last_line = started;
    let (mut points, mut cbor_bytes) = (0u64, 0u64);
    let mut buffers: Vec<Vec<NewPoint<'_>>> = Vec::new();
    let mut cbor = [0u8; 2048];
    let mut readings = Vec::new();
    let mut next_fold = year_start_ms + HOUR_MS;
    let mut t = year_start_ms;
    while t < end_ms {
        let group_end = (t + per_write * step).min(end_ms);
        let active: Vec<&Series> =
            std::iter::once(year).chain(series.iter().filter(|_| group_end > start_ms)).collect();
        buffers.resize_with(active.len(), Vec::new);
        for (s, buffer) in active.iter().zip(&mut buffers) {
            buffer.clear();
            let first = if s.index == year.index { t } else { t.max(start_ms) };
            let mut at = first;
            while at < group_end {
                buffer.push(NewPoint {
                    metric: s.metric,
                    unit: Some(s.unit),
                    time_ms: at,
                    value: s.value(at),
                    value_kind: Default::default(),
                });
                at += step;
            }
            // The same readings as a device would send them: one SenML-CBOR pack.
            readings.clear();
            readings.extend(buffer.iter().map(|p| Reading {
                name: s.metric,
                unit: None,
                value: p.value,
                time: (p.time_ms - first) as f64 / 1000.0,
            }));
            let base = Base { name: None, time: Some(first as f64 / 1000.0), unit: Some(s.unit) };
            cbor_bytes += encode_pack(&mut cbor, &base, &readings)? as u64;
            points += buffer.len() as u64;
        }
        let packs: Vec<PackWrite<'_>> = active
            .iter()
            .zip(&buffers)
            .filter(|(_, b)| !b.is_empty())
            .map(|(s, b)| PackWrite { device: &s.device, kind: s.kind, seen_ms: group_end, points: b, seq: None })
            .collect();
        for result in store.write_packs(&packs)?.packs {
            result?;
        }
        t = group_end;
        if t >= next_fold {
            store.fold(t, || true)?;
            next_fold = t - t.rem_euclid(HOUR_MS) + HOUR_MS;
            // One line every few seconds, however many days the dataset has.
            if last_line.elapsed() >= PROGRESS_EVERY {
                last_line = Instant::now();
                let days_left = (end_ms - t) / DAY_MS;
                eprintln!("loading: {points} points, {days_left} days left, {:.0} s", started.elapsed().as_secs_f64());
            }
        }
    }
    store.fold(end_ms + HOUR_MS, || true)?;
    store.flush()?;
    Ok(Loaded { points, cbor_bytes, seconds: started.elapsed().as_secs_f64(), start_ms, end_ms, year_start_ms })
}

struct Server {
    child: Child,
    http: SocketAddr,
}

impl Server {
    fn start(mekong: &Path, data: &Path, cache_bytes: u64) -> anyhow::Result<Server> {
        let [http, mqtt] = free_ports()?.map(|port| SocketAddr::from(([127, 0, 0, 1], port)));
        let child = Command::new(mekong)
            .args(["serve", "--config", "/dev/null"])
            .env("MEKONG__STORAGE__DATA_DIR", data)
            .env("MEKONG__STORAGE__CACHE_BYTES", cache_bytes.to_string())
            .env("MEKONG__BROKER__LISTEN", mqtt.to_string())
            .env("MEKONG__BROKER__LISTEN_V5", "")
            .env("MEKONG__API__LISTEN", http.to_string())
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start mekong serve")?;
        let server = Server { child, http };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Http::connect(http).and_then(|mut c| c.get("/healthz")).is_err() {
            if Instant::now() > deadline {
                bail!("mekong serve did not come up on {http}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// Resident and peak resident memory, MiB.
    fn memory_mib(&self) -> (Option<f64>, Option<f64>) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let field = |name: &str| -> Option<f64> {
            let kib: f64 = status.lines().find(|l| l.starts_with(name))?.split_whitespace().nth(1)?.parse().ok()?;
            Some((kib / 1024.0 * 10.0).round() / 10.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long the untimed requests before a query's timed ones may take: enough to read every
/// series-day query (a) will ask for, so that no form or server is timed on a colder cache
/// than another; a peer's slow query stops early.
const WARM_UP_BUDGET: Duration = Duration::from_secs(10);

/// How long a query's timed requests may take, after at least [`MIN_RUNS`]: the slowest
/// peer queries take seconds each.
const TIMED_BUDGET: Duration = Duration::from_secs(30);

/// Timed requests of a query, however slow.
const MIN_RUNS: usize = 5;

/// Times up to `requests` GETs (after untimed ones: every path once, within
/// [`WARM_UP_BUDGET`]), each answer checked by `check` after its time is taken; `check` gives
/// the greatest relative difference of a value from what the dataset holds.
fn time_query(
    http: &mut Http,
    requests: usize,
    mut path: impl FnMut(usize) -> String,
    mut check: impl FnMut(usize, &[u8]) -> anyhow::Result<f64>,
) -> anyhow::Result<Value> {
    let warm_up = Instant::now();
    for i in 0..requests {
        http.get(&path(i))?;
        if warm_up.elapsed() > WARM_UP_BUDGET {
            break;
        }
    }
    let mut micros = Vec::with_capacity(requests);
    let mut bytes = 0;
    let mut worst = 0.0_f64;
    let timed = Instant::now();
    for i in 0..requests {
        if i >= MIN_RUNS && timed.elapsed() > TIMED_BUDGET {
            break;
        }
        let path = path(i);
        let started = Instant::now();
        let body = http.get(&path)?;
        micros.push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
        worst = worst.max(check(i, &body).with_context(|| format!("GET {path}"))?);
        bytes = body.len();
    }
    let runs = micros.len();
    micros.sort_unstable();
    Ok(json!({
        "p50_ms": percentile_ms(&micros, 0.5),
        "p99_ms": percentile_ms(&micros, 0.99),
        "runs": runs,
        "response_bytes": bytes,
        "max_rel_diff": worst,
    }))
}

/// The points of `s` in `[from_ms, to_ms)`, as the generator makes them.
fn raw_points(s: &Series, from_ms: i64, to_ms: i64, step_ms: i64) -> Points {
    let first = from_ms + (step_ms - from_ms.rem_euclid(step_ms)) % step_ms;
    (0..).map(|k| first + k * step_ms).take_while(|&t| t < to_ms).map(|t| (t, s.value(t))).collect()
}

/// The buckets of `bucket_ms` of each of `series` over `[from_ms, to_ms)`, by brute force.
fn expected_buckets(series: &[&Series], from_ms: i64, to_ms: i64, step_ms: i64, bucket_ms: i64) -> BucketsByDevice {
    series
        .iter()
        .map(|s| (s.device.clone(), answers::buckets_of(raw_points(s, from_ms, to_ms, step_ms), from_ms, bucket_ms)))
        .collect()
}

/// A tiny deterministic generator for picking series and days.
fn picker(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |n| {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % n.max(1)
    }
}

/// `wrk` on query (a): requests per second and its latency percentiles, or why it did not run.
fn run_wrk(addr: SocketAddr, paths: &[String], seconds: u32, dir: &Path) -> Value {
    let script = dir.join("query-a.lua");
    let list: Vec<String> = paths.iter().map(|p| format!("{p:?}")).collect();
    let lua = format!(
        "local paths = {{{}}}\nrequest = function()\n  return wrk.format(\"GET\", paths[math.random(#paths)])\nend\n",
        list.join(",")
    );
    if let Err(e) = std::fs::write(&script, lua) {
        return json!({ "skipped": format!("cannot write the wrk script: {e}") });
    }
    let output = Command::new("wrk")
        .args(["-t2", "-c64", &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(&script)
        .arg(format!("http://{addr}"))
        .output();
    let output = match output {
        Ok(o) if o.status.success() => o,
        Ok(o) => return json!({ "skipped": format!("wrk failed: {}", String::from_utf8_lossy(&o.stderr)) }),
        Err(e) => return json!({ "skipped": format!("wrk not found ({e}); apt-get install wrk") }),
    };
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let field = |prefix: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(String::from)
    };
    json!({
        "connections": 64,
        "seconds": seconds,
        "requests_per_sec": field("Requests/sec:").and_then(|v| v.parse::<f64>().ok()),
        "p50": field("50%"),
        "p99": field("99%"),
        "non_2xx": field("Non-2xx"),
    })
}

/// Runs the benchmark against the `mekong` binary; prints a JSON line per step and returns
/// the summary.
pub fn query(opts: QueryBenchOptions, mekong: &Path) -> anyhow::Result<Value> {
    if opts.interval_secs == 0 || 86_400 % opts.interval_secs != 0 {
        bail!("--interval-secs must divide a day, got {}", opts.interval_secs);
    }
    let kinds: Vec<String> =
        if opts.kinds.is_empty() { vec!["water".into(), "air".into(), "traffic".into()] } else { opts.kinds.clone() };
    let series: Vec<Series> =
        (0..opts.series).map(|i| Series::new(i, &kinds[i % kinds.len()])).collect::<anyhow::Result<_>>()?;
    let year = Series { device: "ref-year-water".into(), ..Series::new(opts.series, "water")? };
    // Before loading anything: a wrong option should not cost a load.
    let peers = peers::parse_peers(&opts.peers, &opts.peer_data)?;

    let temp: Option<TempDir>;
    let data = match &opts.data_dir {
        Some(dir) => {
            if dir.exists() {
                bail!("{} exists: the benchmark loads a fresh directory", dir.display());
            }
            temp = None;
            dir.clone()
        }
        None => {
            temp = Some(temp_dir()?);
            temp.as_ref().map(|t| t.path.join("data")).context("no temporary directory")?
        }
    };
    let work = temp.as_ref().map_or_else(std::env::temp_dir, |t| t.path.clone());

    let store_options =
        StoreOptions { cache_capacity_bytes: opts.cache_bytes, flush_every_ms: Some(500), ..Default::default() };
    let store = Store::open(&data, &store_options)?;
    let loaded = load(&store, &series, &year, &opts)?;
    drop(store);
    eprintln!("compacting the dataset ({} points), to measure its size on disk", loaded.points);
    let compacted = compact(&data, &store_options)?;
    let per_point = |bytes: u64| (bytes as f64 / loaded.points as f64 * 10000.0).round() / 10000.0;
    let blocks = day_blocks_bytes(&series, &year, &loaded, i64::from(opts.interval_secs) * 1000);
    let day_files = dir_bytes(&data.join("blocks"));
    let dataset = json!({
        "step": "load",
        "series": opts.series,
        "days": opts.days,
        "interval_secs": opts.interval_secs,
        "points_per_write": opts.points_per_write,
        "year_series_points": (loaded.end_ms - loaded.year_start_ms) / (i64::from(opts.interval_secs) * 1000),
        "points": loaded.points,
        "load_secs": (loaded.seconds * 10.0).round() / 10.0,
        "load_points_per_sec": (loaded.points as f64 / loaded.seconds).round(),
        "disk_bytes_as_ingested": compacted.bytes_before,
        "disk_bytes_per_point_as_ingested": per_point(compacted.bytes_before),
        "disk_bytes": compacted.bytes_after,
        "disk_bytes_per_point": per_point(compacted.bytes_after),
        "day_blocks_bytes": blocks,
        "day_blocks_bytes_per_point": per_point(blocks),
        "day_files_bytes": day_files,
        "day_files_bytes_per_point": per_point(day_files),
        "entries": compacted.entries,
        "entry_bytes_per_point": per_point(compacted.entry_bytes),
        "cbor_bytes_per_point": per_point(loaded.cbor_bytes),
        "uncompressed_bytes_per_point": 16,
    });
    println!("{dataset}");

    let step_ms = i64::from(opts.interval_secs) * 1000;
    let mut peer_loads = Vec::new();
    for peer in &peers {
        peer_loads.push(load_peer(peer, &series, &year, &loaded, step_ms)?);
    }

    eprintln!("starting mekong on the dataset, then {} requests per query", opts.requests);
    let server = Server::start(mekong, &data, opts.cache_bytes)?;
    let (rss_after_start, _) = server.memory_mib();
    let mut http = Http::connect(server.http)?;
    let mut pick = picker(42);
    let days = i64::from(opts.days.max(1));

    // The four queries: which series and days each request asks for, and what the dataset
    // says it must answer.
    let a_picks: Vec<(&Series, i64)> = (0..opts.requests)
        .map(|_| (&series[pick(series.len() as u64) as usize], loaded.start_ms + pick(days as u64) as i64 * DAY_MS))
        .collect();
    let a_expected = |i: usize| {
        let (s, from) = a_picks[i];
        raw_points(s, from, from + DAY_MS, step_ms)
    };
    let series_day = |s: &Series, from: i64, format: &str| {
        format!("/v1/devices/{}/series/{}?from={from}&to={}&limit=10000{format}", s.device, s.metric, from + DAY_MS)
    };
    let a_paths: Vec<String> = a_picks.iter().map(|&(s, from)| series_day(s, from, "")).collect();
    let b_expected = expected_buckets(&[&year], loaded.year_start_ms, loaded.end_ms, step_ms, DAY_MS);
    let c_expected: LatestValues = series
        .iter()
        .chain([&year])
        .map(|s| ((s.device.clone(), s.metric.to_owned()), s.value(loaded.end_ms - step_ms)))
        .collect();
    let metric = series[0].metric;
    let metric_series: Vec<&Series> = series.iter().chain([&year]).filter(|s| s.metric == metric).collect();
    let with_metric = metric_series.len();
    let d_days: Vec<i64> = (0..opts.requests).map(|_| loaded.start_ms + pick(days as u64) as i64 * DAY_MS).collect();
    let mut d_expected: HashMap<i64, BucketsByDevice> = HashMap::new();
    for &from in &d_days {
        d_expected
            .entry(from)
            .or_insert_with(|| expected_buckets(&metric_series, from, from + DAY_MS, step_ms, HOUR_MS));
    }

    let a = time_query(
        &mut http,
        opts.requests,
        |i| a_paths[i].clone(),
        |i, body| answers::agree_points(&a_expected(i), &answers::mekong_points(&serde_json::from_slice(body)?)?),
    )?;
    println!("{}", json!({ "step": "query", "query": "a: raw points of one series for one day", "latency": a }));
    let a_columnar = time_query(
        &mut http,
        opts.requests,
        |i| series_day(a_picks[i].0, a_picks[i].1, "&format=columnar"),
        |i, body| answers::agree_points(&a_expected(i), &answers::mekong_columnar(&serde_json::from_slice(body)?)?),
    )?;
    println!(
        "{}",
        json!({ "step": "query", "query": "a: raw points of one series for one day, columnar JSON", "latency": a_columnar })
    );
    // CBOR is read back by the end-to-end tests; here only its shape's first byte is checked.
    let a_cbor = time_query(
        &mut http,
        opts.requests,
        |i| series_day(a_picks[i].0, a_picks[i].1, "&format=cbor"),
        |_, body| if body.first() == Some(&0xa9) { Ok(0.0) } else { bail!("not a CBOR map of 9 entries") },
    )?;
    println!(
        "{}",
        json!({ "step": "query", "query": "a: raw points of one series for one day, CBOR", "latency": a_cbor })
    );

    let year_path = format!(
        "/v1/devices/{}/series/{}/aggregate?from={}&to={}&step=1d",
        year.device, year.metric, loaded.year_start_ms, loaded.end_ms
    );
    let b = time_query(
        &mut http,
        opts.requests,
        |_| year_path.clone(),
        |_, body| answers::agree_buckets(&b_expected, &answers::mekong_buckets(&serde_json::from_slice(body)?)?),
    )?;
    println!("{}", json!({ "step": "query", "query": "b: one series for one year by day", "latency": b }));

    let c = time_query(
        &mut http,
        opts.requests,
        |_| "/v1/latest".into(),
        |_, body| answers::agree_latest(&c_expected, &answers::mekong_latest(&serde_json::from_slice(body)?)?),
    )?;
    println!("{}", json!({ "step": "query", "query": "c: latest value of every series", "latency": c }));

    let d = time_query(
        &mut http,
        opts.requests,
        |i| format!("/v1/aggregate?metric={metric}&from={}&to={}&step=1h", d_days[i], d_days[i] + DAY_MS),
        |i, body| {
            answers::agree_buckets(&d_expected[&d_days[i]], &answers::mekong_buckets(&serde_json::from_slice(body)?)?)
        },
    )?;
    println!(
        "{}",
        json!({ "step": "query", "query": format!("d: {metric} across its {with_metric} series by hour for one day"), "latency": d })
    );
    let (rss_after_queries, _) = server.memory_mib();

    let mekong_p50 = |v: &Value| v["p50_ms"].as_f64();
    let mut peer_results = serde_json::Map::new();
    for (peer, load) in peers.iter().zip(peer_loads) {
        let kind = peer.kind;
        let name = kind.name();
        eprintln!("{name}: {} requests per query", opts.requests);
        let mut http = Http::connect(peer.addr)?;
        let pa = time_query(
            &mut http,
            opts.requests,
            |i| peers::raw_path(kind, a_picks[i].0.metric, &a_picks[i].0.device, a_picks[i].1, a_picks[i].1 + DAY_MS),
            |i, body| answers::agree_points(&a_expected(i), &peers::parse_raw(kind, body)?),
        )?;
        let b_path = peers::buckets_path(
            kind,
            year.metric,
            Some(&year.device),
            loaded.year_start_ms,
            loaded.end_ms,
            "1d",
            DAY_MS,
        );
        let pb = time_query(
            &mut http,
            opts.requests,
            |_| b_path.clone(),
            |_, body| answers::agree_buckets(&b_expected, &peers::parse_buckets(kind, body, DAY_MS)?),
        )?;
        let c_path = peers::latest_path(kind, loaded.end_ms);
        let pc = time_query(
            &mut http,
            opts.requests,
            |_| c_path.clone(),
            |_, body| answers::agree_latest(&c_expected, &peers::parse_latest(kind, body)?),
        )?;
        let pd = time_query(
            &mut http,
            opts.requests,
            |i| peers::buckets_path(kind, metric, None, d_days[i], d_days[i] + DAY_MS, "1h", HOUR_MS),
            |i, body| answers::agree_buckets(&d_expected[&d_days[i]], &peers::parse_buckets(kind, body, HOUR_MS)?),
        )?;
        let ratio = |m: &Value, p: &Value| match (mekong_p50(m), mekong_p50(p)) {
            (Some(m), Some(p)) if p > 0.0 => json!((m / p * 1000.0).round() / 1000.0),
            _ => Value::Null,
        };
        let result = json!({
            "load": load,
            "a_raw_day": pa,
            "b_year_by_day": pb,
            "c_latest_all": pc,
            "d_metric_by_hour": pd,
            "day_blocks_over_peer_disk": match load["disk"]["bytes"].as_u64() {
                Some(peer) if peer > 0 => json!((blocks as f64 / peer as f64 * 10000.0).round() / 10000.0),
                _ => Value::Null,
            },
            "p50_ratio_mekong_over_peer": {
                "a_raw_day": ratio(&a, &pa),
                "a_raw_day_columnar": ratio(&a_columnar, &pa),
                "a_raw_day_cbor": ratio(&a_cbor, &pa),
                "b_year_by_day": ratio(&b, &pb),
                "c_latest_all": ratio(&c, &pc),
                "d_metric_by_hour": ratio(&d, &pd),
            },
        });
        println!("{}", json!({ "step": "peer", "peer": name, "result": result }));
        peer_results.insert(name.to_owned(), result);
    }

    let wrk = if opts.wrk_seconds > 0 { run_wrk(server.http, &a_paths, opts.wrk_seconds, &work) } else { json!(null) };
    let (rss_end, rss_peak) = server.memory_mib();
    if let Some(dir) = &opts.data_dir {
        eprintln!("dataset kept in {}", dir.display());
    }
    Ok(json!({
        "bench": "query",
        "dataset": dataset,
        "a_raw_day": a,
        "a_raw_day_columnar": a_columnar,
        "a_raw_day_cbor": a_cbor,
        "b_year_by_day": b,
        "c_latest_all": c,
        "d_metric_by_hour": d,
        "d_series": with_metric,
        "wrk_a": wrk,
        "cache_bytes": opts.cache_bytes,
        "server_rss_mib": { "after_start": rss_after_start, "after_queries": rss_after_queries, "after_wrk": rss_end, "peak": rss_peak },
        "peers": peer_results,
        "rel_tolerance": answers::REL_TOLERANCE,
    }))
}

/// The bytes of the dataset's day blocks as the store's folds encode them (one block per
/// series and UTC day, `encode_block`), from the same readings the store and the peers are
/// given: what issue 14 compares with a peer's bytes on disk. Without the day files' index
/// and header ([`dir_bytes`] of `blocks/` has them) and without the rollups.
fn day_blocks_bytes(series: &[Series], year: &Series, loaded: &Loaded, step_ms: i64) -> u64 {
    let mut bytes = 0;
    let mut points = Vec::new();
    for (s, from) in std::iter::once((year, loaded.year_start_ms)).chain(series.iter().map(|s| (s, loaded.start_ms))) {
        let mut day = from;
        while day < loaded.end_ms {
            points.clear();
            points.extend((day..(day + DAY_MS).min(loaded.end_ms)).step_by(step_ms as usize).map(|t| (t, s.value(t))));
            bytes += mekong_store::fuzzing::encode_block(&points).len() as u64;
            day += DAY_MS;
        }
    }
    bytes
}

/// Bytes of the files in `dir` (not below it); 0 if it cannot be read.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
        })
        .unwrap_or(0)
}

/// Loads the dataset into `peer`, a series-day at a time, and waits until the peer has it
/// all; then its size on disk, if its directory was given.
fn load_peer(peer: &Peer, series: &[Series], year: &Series, loaded: &Loaded, step_ms: i64) -> anyhow::Result<Value> {
    let name = peer.kind.name();
    eprintln!("loading the dataset into {name} at {}", peer.addr);
    let started = Instant::now();
    let mut loader = peers::Loader::new(peer)?;
    let mut last_line = started;
    for (s, from) in std::iter::once((year, loaded.year_start_ms)).chain(series.iter().map(|s| (s, loaded.start_ms))) {
        let mut day = from;
        while day < loaded.end_ms {
            loader.add(s.metric, &s.device, &raw_points(s, day, (day + DAY_MS).min(loaded.end_ms), step_ms))?;
            day += DAY_MS;
        }
        if last_line.elapsed() >= PROGRESS_EVERY {
            last_line = Instant::now();
            eprintln!("{name}: {} points sent, {:.0} s", loader.points, started.elapsed().as_secs_f64());
        }
    }
    let (points, bytes) = (loader.points, loader.bytes);
    if points != loaded.points {
        bail!("{name}: {points} points generated, but mekong was loaded with {}", loaded.points);
    }
    loader.finish(loaded.year_start_ms, loaded.end_ms, Duration::from_secs(300))?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("{name}: has all {points} points after {seconds:.0} s; its size on disk next");
    let disk = peers::disk(peer, points)?;
    Ok(json!({
        "points": points,
        "request_bytes": bytes,
        "secs": (seconds * 10.0).round() / 10.0,
        "points_per_sec": (points as f64 / seconds).round(),
        "disk": disk,
    }))
}
