//! How long `/healthz` takes while city-wide aggregates keep the query service busy.
//!
//! ```text
//! cargo run --release -p mekong-api --example healthz_under_load -- [--devices 200]
//!     [--hours 24] [--workers <cores>] [--aggregators 4] [--seconds 10]
//!     [--probe-every-ms 10] [--probe /healthz] [--load <path>]
//! ```
//!
//! Writes `devices` water series of `hours` hours at one point per 10 s into a sled store in a
//! temporary directory, and serves `mekong_api::router` on loopback from a multi-threaded
//! runtime of `workers` threads (the binary's runtime has one per core). Then, for `seconds`:
//! `aggregators` clients each ask, one request after the other,
//! `/v1/aggregate?metric=water_level&step=15m` over the whole range, which decodes every point
//! (a 15-minute step is not whole hours, so no rollup can serve it), while a probe asks
//! `/healthz` (or the path given as `--probe`), `probe_every_ms` after each answer, and times
//! each request from its sending. Before that, `/healthz`, `/v1/devices` and `/v1/latest` are
//! timed with nothing else running. `--load` replaces the aggregate with another request
//! (such as `/v1/latest`, whose cost grows with the fleet). The last line printed is the JSON
//! of the figures. `docs/api-blocking.md` has the figures and how to run it against older
//! handlers (the example uses only `router` and `AppState`).

use std::error::Error;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mekong_api::auth::Access;
use mekong_api::{router, AppState};
use mekong_stats::Stats;
use mekong_store::{NewPoint, Store, StoreOptions};
use serde_json::{json, Value};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

const INTERVAL_MS: i64 = 10_000;
const HOUR_MS: i64 = 3_600_000;
/// A whole UTC day (2026-09-21), so that the buckets line up with days and hours.
const START_MS: i64 = 1_790_035_200_000;

struct Options {
    devices: usize,
    hours: i64,
    workers: usize,
    aggregators: usize,
    seconds: u64,
    probe_every_ms: u64,
    probe: String,
    load: Option<String>,
}

fn options() -> Result<Options> {
    let mut o = Options {
        devices: 200,
        hours: 24,
        workers: std::thread::available_parallelism().map_or(1, usize::from),
        aggregators: 4,
        seconds: 10,
        probe_every_ms: 10,
        probe: "/healthz".to_owned(),
        load: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(name) = args.next() {
        let value = args.next().ok_or_else(|| format!("{name} needs a value"))?;
        let n = || value.parse::<u64>().map_err(|_| format!("{name}: not a whole number: {value:?}"));
        match name.as_str() {
            "--devices" => o.devices = n()? as usize,
            "--hours" => o.hours = n()? as i64,
            "--workers" => o.workers = (n()? as usize).max(1),
            "--aggregators" => o.aggregators = n()? as usize,
            "--seconds" => o.seconds = n()?,
            "--probe-every-ms" => o.probe_every_ms = n()?.max(1),
            "--probe" => o.probe = value,
            "--load" => o.load = Some(value),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    Ok(o)
}

/// Each device's series, written an hour at a time (one chunk per hour, as the upkeep leaves a
/// folded hour), with values of 1 mm resolution as a water gauge sends them.
fn load(store: &Store, o: &Options) -> Result<u64> {
    let mut points = 0;
    for d in 0..o.devices {
        let device = format!("gauge-{d:04}");
        for hour in 0..o.hours {
            let from = START_MS + hour * HOUR_MS;
            let batch: Vec<_> = (from..from + HOUR_MS)
                .step_by(INTERVAL_MS as usize)
                .map(|t| NewPoint {
                    metric: "water_level",
                    unit: Some("cm"),
                    time_ms: t,
                    value: 250.0 + ((t / INTERVAL_MS + d as i64) % 900) as f64 / 10.0,
                    value_kind: Default::default(),
                })
                .collect();
            points += store.write(&device, "water", from, &batch)?.stored as u64;
        }
    }
    store.flush()?;
    Ok(points)
}

/// A minimal HTTP/1.1 client on one kept-alive connection, so that a timing holds the
/// server's work and loopback rather than a client library's.
struct Http {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Http {
    fn connect(addr: SocketAddr) -> Result<Http> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Http { reader: BufReader::new(stream.try_clone()?), writer: stream })
    }

    /// GETs `path`, which must answer 200; returns the body's length.
    fn get(&mut self, path: &str) -> Result<usize> {
        write!(self.writer, "GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n")?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
        let mut length = None;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err("connection closed in the headers".into());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = Some(value.trim().parse::<usize>()?);
                }
            }
        }
        let mut body = vec![0; length.ok_or("response without content-length")?];
        self.reader.read_exact(&mut body)?;
        if status != "200" {
            return Err(format!("GET {path}: {status} {}", String::from_utf8_lossy(&body)).into());
        }
        Ok(body.len())
    }
}

/// The `p` quantile of `micros` (sorted), in ms.
fn quantile_ms(sorted: &[u64], p: f64) -> Option<f64> {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len().checked_sub(1)?);
    Some(sorted[i] as f64 / 1000.0)
}

fn summary(mut micros: Vec<u64>) -> Value {
    micros.sort_unstable();
    json!({
        "n": micros.len(),
        "p50_ms": quantile_ms(&micros, 0.5),
        "p99_ms": quantile_ms(&micros, 0.99),
        "max_ms": micros.last().map(|&m| m as f64 / 1000.0),
    })
}

/// `n` requests one after the other, each timed from its sending.
fn time_closed(addr: SocketAddr, path: &str, n: usize) -> Result<Value> {
    let mut http = Http::connect(addr)?;
    let mut micros = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        http.get(path)?;
        micros.push(started.elapsed().as_micros() as u64);
    }
    Ok(summary(micros))
}

/// GETs `path` until `length` has passed, `pause` after each answer, each timed from its
/// sending. A stall is one long sample, not many: the figures say how long a request waits,
/// not how many a steady caller would have queued.
fn probe(addr: SocketAddr, path: &str, pause: Duration, length: Duration) -> Result<Value> {
    let mut http = Http::connect(addr)?;
    let end = Instant::now() + length;
    let mut micros = Vec::new();
    while Instant::now() < end {
        let started = Instant::now();
        http.get(path)?;
        micros.push(started.elapsed().as_micros() as u64);
        // Pacing a load generator, not waiting for an event.
        std::thread::sleep(pause);
    }
    Ok(summary(micros))
}

fn main() -> Result<()> {
    let o = options()?;
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), &StoreOptions::default())?;
    let loading = Instant::now();
    let points = load(&store, &o)?;
    eprintln!("loaded {points} points of {} series in {:.1} s", o.devices, loading.elapsed().as_secs_f64());

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(o.workers).enable_all().build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))))?;
    let addr = listener.local_addr()?;
    let access = Arc::new(Access::anonymous());
    let app = router(AppState {
        store,
        stats: Arc::new(Stats::new(100)),
        access,
        cors_origins: Vec::new(),
        health: Default::default(),
        directory: Default::default(),
        registrar: None,
        alerts: None,
        feed: mekong_api::Feed::new(16),
        backups: None,
    });
    let server = runtime.spawn(async move { axum::serve(listener, app).await });

    let unloaded = json!({
        "healthz": time_closed(addr, "/healthz", 1000)?,
        "devices": time_closed(addr, "/v1/devices", 200)?,
        "latest": time_closed(addr, "/v1/latest", 200)?,
    });

    let to_ms = START_MS + o.hours * HOUR_MS;
    let heavy =
        o.load.clone().unwrap_or(format!("/v1/aggregate?metric=water_level&from={START_MS}&to={to_ms}&step=15m"));
    let stop = Arc::new(AtomicBool::new(false));
    let aggregators: Vec<_> = (0..o.aggregators)
        .map(|_| {
            let (heavy, stop) = (heavy.clone(), Arc::clone(&stop));
            std::thread::spawn(move || -> Result<(Vec<u64>, usize)> {
                let mut http = Http::connect(addr)?;
                let (mut micros, mut bytes) = (Vec::new(), 0);
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    bytes = http.get(&heavy)?;
                    micros.push(started.elapsed().as_micros() as u64);
                }
                Ok((micros, bytes))
            })
        })
        .collect();
    let loaded = probe(addr, &o.probe, Duration::from_millis(o.probe_every_ms), Duration::from_secs(o.seconds));
    stop.store(true, Ordering::Relaxed);
    let (mut aggregate_micros, mut aggregate_bytes) = (Vec::new(), 0);
    for a in aggregators {
        let (micros, bytes) = a.join().map_err(|_| "an aggregator panicked")??;
        aggregate_micros.extend(micros);
        aggregate_bytes = bytes;
    }
    server.abort();

    let figures = json!({
        "devices": o.devices,
        "points": points,
        "workers": o.workers,
        "aggregators": o.aggregators,
        "seconds": o.seconds,
        "unloaded": unloaded,
        "loaded": {
            "probe": o.probe,
            "probed": loaded?,
            "load": heavy,
            "loads": summary(aggregate_micros),
            "load_response_bytes": aggregate_bytes,
        },
    });
    println!("{figures}");
    Ok(())
}
