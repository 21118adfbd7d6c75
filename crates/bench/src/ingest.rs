//! `mekong-bench ingest`: how many readings per second mekong makes durable, end to end over
//! real MQTT connections, next to what the embedded broker alone allows (the ingest path
//! reduced to a counter) and, optionally, an external broker with a counting subscriber.
//!
//! Every scenario starts its own server as a child process on fresh ports: `mekong serve` on a
//! fresh data directory, or, for the broker alone, this binary's hidden `broker-only` command
//! (`broker_only.rs`). It connects one MQTT connection per simulated device, lets the load run
//! for a warm-up, then counts for the measured seconds: at the store (readings flushed to
//! disk, from `/v1/stats`), at the link (publishes counted by `broker-only`), or at the
//! external subscriber. Each scenario prints a JSON line; the last line holds them all and
//! the ratios. With `--tls`, durable ingest runs over TLS too (MQTT 3.1.1 on mekong's TLS
//! listener), and the ratio of the two is in the summary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rumqttc::QoS;
use serde_json::{json, Value};

use crate::generators::Generator;
use crate::harness::{self, free_ports, get_json, percentile_ms, temp_dir, wait_answering, TempDir};
use crate::load::{self, Acks, LoadOptions, Model, Resend};
use crate::tls::BenchTls;

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
    /// Unacknowledged publishes per connection; `None` for 1,600 over all connections (so
    /// 16 each with 100 devices, 1 each with 10,000).
    pub window: Option<usize>,
    /// An external broker to measure the same load against.
    pub peer: Option<SocketAddr>,
    /// Total packs per second for the acknowledgement latency at moderate load.
    pub moderate_rate: f64,
    /// The `mekong` binary.
    pub mekong: PathBuf,
    /// Also measure durable ingest over TLS.
    pub tls: bool,
    /// Which scenarios to run.
    pub scenarios: Vec<Scenario>,
    /// Devices per load process: more devices than this are split over child processes,
    /// each within its open-file limit.
    pub per_process: usize,
    /// The acknowledgements the devices ask for: one durable run (and city run) for each, in
    /// this order.
    pub acks: Vec<Acks>,
    /// How the devices resend: each with each of `acks`, resend outermost.
    pub resend: Vec<Resend>,
}

impl BenchOptions {
    /// The device models of the durable runs, in order.
    fn models(&self) -> Vec<Model> {
        let resends = if self.resend.is_empty() { vec![Resend::default()] } else { self.resend.clone() };
        let acks = if self.acks.is_empty() { vec![Acks::default()] } else { self.acks.clone() };
        resends.iter().flat_map(|&resend| acks.iter().map(move |&acks| Model { acks, resend })).collect()
    }
}

/// A kind of load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// As fast as the window allows, against the broker alone (and a peer, if given).
    Full,
    /// The city load: every device sends one pack every [`CITY_PERIOD`], the fleet's packs
    /// spread evenly over it; durable only, with acknowledgement times and losses.
    City,
}

/// How often each device sends a pack under the city load.
pub const CITY_PERIOD: Duration = Duration::from_secs(10);

/// How long, after the window, the city load waits for the acknowledgements of the packs
/// sent in it before it counts the missing ones: its devices resend after
/// [`load::RESEND_AFTER`] (backed off: 5 to 7.5 s, then 10 to 15 s), and check every tick
/// of their period.
const CITY_GRACE: Duration = Duration::from_secs(20);

/// Open files this process may have, from /proc (no libc needed).
pub(crate) fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

enum Target<'a> {
    Mekong { broker_only: bool, rate: Option<f64>, tls: Option<&'a BenchTls>, spread: bool, model: Model },
    Peer(SocketAddr),
}

struct Measured {
    packs_per_s: f64,
    readings_per_s: f64,
    ack_latency_us: Vec<u32>,
    resends: u64,
    lost: u64,
    /// Resident memory of the platform process at the end of the window, MiB.
    rss_mib: Option<f64>,
    /// Its resident memory before the devices connected, MiB.
    rss_start_mib: Option<f64>,
    /// The server's CPU over the window: cores busy on average, and µs per pack counted.
    cpu: Option<(f64, Option<f64>)>,
    /// The same for the load generator: its child processes, or this whole process when the
    /// devices run here (with the subscriber that counts for a peer broker).
    load_cpu: Option<(f64, Option<f64>)>,
    /// Unacknowledged publishes per connection.
    window: usize,
    /// City load: packs first sent in the window, and of those the ones not acknowledged
    /// within the grace after it.
    unacknowledged: Option<(u64, u64)>,
    /// What the devices did that the contract leaves to them.
    model: Model,
    /// Downlinks that acknowledged packs, received in the window.
    ack_downlinks: u64,
    /// Packs counted in the window (made durable, or counted by the broker).
    packs_counted: f64,
}

/// The server of a scenario, a child process on fresh ports: `mekong serve` on a fresh data
/// directory, or the broker alone with a counter (`mekong-bench broker-only`). It runs in its
/// own process so that its memory can be read apart from the load generator's, and so that
/// the connections' two ends do not share one open-file limit.
pub(crate) struct Server {
    child: Child,
    /// Where devices connect: the TLS listener with TLS.
    pub(crate) mqtt: SocketAddr,
    pub(crate) http: SocketAddr,
    _data: Option<TempDir>,
}

impl Server {
    /// Starts the server; with `tls`, `mekong serve` serves MQTT 3.1.1 over TLS with its
    /// certificate too (the API stays plain HTTP, for the counters), and devices connect there.
    pub(crate) async fn start(
        mekong: &std::path::Path,
        broker_only: bool,
        tls: Option<&BenchTls>,
    ) -> anyhow::Result<Server> {
        Server::start_with(mekong, broker_only, tls, None).await
    }

    /// [`Server::start`], `mekong serve` reading its registry from `registry` if given (its
    /// MQTT identities make the broker check every login).
    pub(crate) async fn start_with(
        mekong: &std::path::Path,
        broker_only: bool,
        tls: Option<&BenchTls>,
        registry: Option<&std::path::Path>,
    ) -> anyhow::Result<Server> {
        let [mqtt, http, mqtts] = free_ports()?.map(|port| SocketAddr::from(([127, 0, 0, 1], port)));
        let (mut command, data) = if broker_only {
            let mut command = Command::new(std::env::current_exe().context("cannot find the mekong-bench binary")?);
            command.args(["broker-only", "--listen", &mqtt.to_string(), "--stats", &http.to_string()]);
            (command, None)
        } else {
            let data = temp_dir()?;
            let mut command = Command::new(mekong);
            command
                .args(["serve", "--config", "/dev/null"])
                .env("MEKONG__STORAGE__DATA_DIR", &data.path)
                .env("MEKONG__BROKER__LISTEN", mqtt.to_string())
                .env("MEKONG__BROKER__LISTEN_V5", "")
                .env("MEKONG__API__LISTEN", http.to_string())
                .env("MEKONG__BROKER__LISTEN_TLS", "")
                .env("MEKONG__BROKER__LISTEN_V5_TLS", "");
            if let Some(registry) = registry {
                command.env("MEKONG__REGISTRY__PATH", registry);
            }
            if let Some(tls) = tls {
                command
                    .env("MEKONG__TLS__CERT", &tls.cert)
                    .env("MEKONG__TLS__KEY", &tls.key)
                    .env("MEKONG__TLS__API", "false")
                    .env("MEKONG__BROKER__LISTEN_TLS", mqtts.to_string());
            }
            (command, Some(data))
        };
        let mqtt = if tls.is_some() { mqtts } else { mqtt };
        command.env("RUST_LOG", "error").stdout(Stdio::null());
        let what = if broker_only { "mekong-bench broker-only" } else { "mekong serve" };
        let child = command.spawn().with_context(|| format!("cannot start {what}"))?;
        let server = Server { child, mqtt, http, _data: data };
        wait_answering(http, "/v1/stats", Duration::from_secs(30), what).await?;
        Ok(server)
    }

    /// `GET /v1/stats` (the broker-only server answers any path with its count).
    pub(crate) async fn stats(&self) -> anyhow::Result<Value> {
        get_json(self.http, "/v1/stats").await
    }

    /// CPU time the server has used, in seconds.
    pub(crate) fn cpu_seconds(&self) -> Option<f64> {
        harness::cpu_seconds(&self.child.id().to_string())
    }

    pub(crate) fn rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kib: f64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
        Some((kib / 1024.0 * 10.0).round() / 10.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn counter(stats: &Value, key: &str) -> u64 {
    stats[key].as_u64().unwrap_or(0)
}

async fn measure(
    target: Target<'_>,
    devices: usize,
    rpp: usize,
    opts: &BenchOptions,
    n: usize,
) -> anyhow::Result<Measured> {
    let (server, addr, rate, broker_only, tls, spread, model) = match target {
        Target::Mekong { broker_only, rate, tls, spread, model } => {
            let server = Server::start(&opts.mekong, broker_only, tls).await?;
            let addr = server.mqtt;
            (Some(server), addr, rate, broker_only, tls, spread, model)
        }
        Target::Peer(addr) => (None, addr, None, false, None, false, Model::default()),
    };
    let load_opts = LoadOptions {
        addr,
        devices,
        readings_per_pack: rpp,
        window: match (opts.window, spread) {
            (Some(w), _) => w,
            // A device of the city load has at most a few packs out: one per period, and
            // those waiting for a resend.
            (None, true) => 4,
            (None, false) => (1600 / devices.max(1)).max(1),
        },
        rate,
        downlinks: server.is_some() && !broker_only,
        prefix: format!("bench{n}-"),
        tls: tls.map(|t| Arc::clone(&t.client)),
        wall_clock: false,
        spread: spread.then_some((0, devices)),
    };
    let window = load_opts.window;
    let rss_start_mib = server.as_ref().and_then(Server::rss_mib);
    let mut load = Generator::start(load_opts, opts.per_process, model).await?;
    let subscriber = match (&server, addr, &load) {
        (None, addr, Generator::Local(load)) => {
            Some(load::CountingSubscriber::start(addr, QoS::AtMostOnce, Arc::clone(&load.counters)).await?)
        }
        (None, _, Generator::Children(_)) => bail!("an external broker is measured with at most --per-process devices"),
        (Some(_), _, _) => None,
    };
    // The city load is steady once every device has sent its first pack.
    let warmup = if spread { opts.warmup.max(CITY_PERIOD.as_secs_f64()) } else { opts.warmup };
    tokio::time::sleep(Duration::from_secs_f64(warmup)).await;

    // What counts: publishes seen by the counter, or readings flushed to disk.
    let key = if broker_only { "counted" } else { "durable_readings" };
    let before = match &server {
        Some(s) => counter(&s.stats().await?, key),
        None => 0,
    };
    let cpu_before = server.as_ref().and_then(Server::cpu_seconds);
    let load_cpu_before = load.cpu_seconds();
    let started = Instant::now();
    load.measure().await?;
    tokio::time::sleep(Duration::from_secs_f64(opts.seconds)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (after, rss_mib) = match &server {
        Some(s) => (counter(&s.stats().await?, key), s.rss_mib()),
        None => (0, None),
    };
    let cpu_s = cpu_before.zip(server.as_ref().and_then(Server::cpu_seconds)).map(|(b, a)| a - b);
    let load_cpu_s = load_cpu_before.zip(load.cpu_seconds()).map(|(b, a)| a - b);
    let tally = load.finish(if spread { CITY_GRACE } else { Duration::ZERO }).await?;
    // Read after the grace, so that a pack the broker dropped in the window is counted.
    let lost = match &server {
        Some(s) => counter(&s.stats().await?, "lost"),
        None => 0,
    };

    let (packs_per_s, readings_per_s) = match (&subscriber, broker_only) {
        (Some(sub), _) => {
            let packs = sub.received.load(Ordering::Relaxed) as f64 / elapsed;
            (packs, packs * rpp as f64)
        }
        (None, true) => {
            let packs = after.saturating_sub(before) as f64 / elapsed;
            (packs, packs * rpp as f64)
        }
        (None, false) => {
            let readings = after.saturating_sub(before) as f64 / elapsed;
            (readings / rpp as f64, readings)
        }
    };
    if let Some(sub) = subscriber {
        sub.stop();
    }
    drop(server);
    // Per pack only when packs were counted: a stalled server has no cost per pack.
    let per_pack = |s: f64| (s / elapsed, (packs_per_s > 0.0).then(|| s * 1e6 / (packs_per_s * elapsed)));
    let cpu = cpu_s.map(per_pack);
    let load_cpu = load_cpu_s.map(per_pack);
    Ok(Measured {
        packs_per_s,
        readings_per_s,
        ack_latency_us: tally.ack_latency_us,
        resends: tally.resends,
        lost,
        rss_mib,
        rss_start_mib,
        cpu,
        load_cpu,
        window,
        unacknowledged: spread.then_some((tally.sent, tally.sent.saturating_sub(tally.acked))),
        model,
        ack_downlinks: tally.ack_downlinks,
        packs_counted: packs_per_s * elapsed,
    })
}

fn line(scenario: &str, devices: usize, rpp: usize, m: &Measured) -> Value {
    let mut v = json!({
        "scenario": scenario,
        "devices": devices,
        "readings_per_pack": rpp,
        "window": m.window,
        "packs_per_s": m.packs_per_s.round(),
        "readings_per_s": m.readings_per_s.round(),
    });
    if !m.ack_latency_us.is_empty() {
        v["ack_p50_ms"] = json!(percentile_ms(&m.ack_latency_us, 0.50));
        v["ack_p99_ms"] = json!(percentile_ms(&m.ack_latency_us, 0.99));
        v["acks_timed"] = json!(m.ack_latency_us.len());
        v["resends"] = json!(m.resends);
        v["lost_at_broker"] = json!(m.lost);
        v["acks"] = json!(m.model.acks.as_str());
        v["resend"] = json!(m.model.resend.as_str());
        v["ack_downlinks"] = json!(m.ack_downlinks);
        if m.packs_counted > 0.0 {
            // Downlinks that freed packs, per pack made durable, both over the window.
            let per = m.ack_downlinks as f64 / m.packs_counted;
            v["downlinks_per_durable_pack"] = json!((per * 1000.0).round() / 1000.0);
        }
    }
    if let Some((sent, unacknowledged)) = m.unacknowledged {
        v["sent_in_window"] = json!(sent);
        v["unacknowledged"] = json!(unacknowledged);
    }
    if let Some(rss) = m.rss_mib {
        v["server_rss_mib"] = json!(rss);
    }
    if let Some(rss) = m.rss_start_mib {
        v["server_rss_start_mib"] = json!(rss);
    }
    if let Some((cores, us_per_pack)) = m.cpu {
        v["server_cpu_cores"] = json!((cores * 100.0).round() / 100.0);
        if let Some(us) = us_per_pack {
            v["server_cpu_us_per_pack"] = json!((us * 10.0).round() / 10.0);
        }
    }
    if let Some((cores, us_per_pack)) = m.load_cpu {
        v["load_cpu_cores"] = json!((cores * 100.0).round() / 100.0);
        if let Some(us) = us_per_pack {
            v["load_cpu_us_per_pack"] = json!((us * 10.0).round() / 10.0);
        }
    }
    v
}

/// Runs one scenario, prints its line and keeps it in `results`.
async fn scenario(
    name: &str,
    target: Target<'_>,
    devices: usize,
    rpp: usize,
    opts: &BenchOptions,
    n: &mut usize,
    results: &mut Vec<Value>,
) -> anyhow::Result<Measured> {
    *n += 1;
    let measured = measure(target, devices, rpp, opts, *n)
        .await
        .with_context(|| format!("{name}, {devices} devices, {rpp} readings per pack"))?;
    let row = line(name, devices, rpp, &measured);
    println!("{row}");
    results.push(row);
    Ok(measured)
}

/// Runs every scenario and returns the summary (also printed, one line per scenario).
pub async fn ingest(opts: BenchOptions) -> anyhow::Result<Value> {
    let most = opts.devices.iter().copied().max().unwrap_or(0).min(opts.per_process.max(1)) as u64;
    if let Some(limit) = open_file_limit() {
        // This process (or each load process) holds the devices' end of every connection;
        // the server the other.
        if limit < most + 512 {
            bail!(
                "{most} devices need about {} open files and the limit is {limit}: raise it with `ulimit -n`, \
                 or lower --per-process",
                most + 512
            );
        }
    }
    let tls = opts.tls.then(BenchTls::new).transpose()?;
    let mut results = Vec::new();
    let mut ratios = Vec::new();
    let mut n = 0;
    let full = opts.scenarios.contains(&Scenario::Full);
    // The broker-only, TLS and moderate runs use the first device model.
    let first = opts.models().first().copied().unwrap_or_default();
    for &devices in &opts.devices {
        for &rpp in &opts.readings {
            if full {
                let ceiling = Target::Mekong { broker_only: true, rate: None, tls: None, spread: false, model: first };
                let ceiling =
                    scenario("broker_only_counter", ceiling, devices, rpp, &opts, &mut n, &mut results).await?;
                let mut durable_rate = None;
                for model in opts.models() {
                    let durable = Target::Mekong { broker_only: false, rate: None, tls: None, spread: false, model };
                    let durable =
                        scenario("mekong_durable", durable, devices, rpp, &opts, &mut n, &mut results).await?;
                    let ratio = (durable.readings_per_s / ceiling.readings_per_s * 1000.0).round() / 1000.0;
                    let mut line = json!({
                        "devices": devices,
                        "readings_per_pack": rpp,
                        "acks": model.acks.as_str(),
                        "resend": model.resend.as_str(),
                        "durable_over_broker_only": ratio,
                    });
                    // The same ratio in the server's CPU a pack, which the load generator's
                    // share of the cores does not move.
                    if let (Some((_, Some(broker))), Some((_, Some(stored)))) = (ceiling.cpu, durable.cpu) {
                        line["server_cpu_broker_only_over_durable"] =
                            json!((broker / stored * 1000.0).round() / 1000.0);
                    }
                    ratios.push(line);
                    durable_rate.get_or_insert(durable.readings_per_s);
                }
                let durable_rate = durable_rate.unwrap_or(0.0);
                let mut ratio = json!({ "devices": devices, "readings_per_pack": rpp });
                if let Some(tls) = &tls {
                    let target =
                        Target::Mekong { broker_only: false, rate: None, tls: Some(tls), spread: false, model: first };
                    let over_tls =
                        scenario("mekong_durable_tls", target, devices, rpp, &opts, &mut n, &mut results).await?;
                    ratio["tls_over_plain"] = json!((over_tls.readings_per_s / durable_rate * 1000.0).round() / 1000.0);
                }
                if let Some(peer) = opts.peer {
                    let peer =
                        scenario("peer_broker_counter", Target::Peer(peer), devices, rpp, &opts, &mut n, &mut results)
                            .await?;
                    ratio["durable_over_peer"] = json!((durable_rate / peer.readings_per_s * 1000.0).round() / 1000.0);
                }
                if tls.is_some() || opts.peer.is_some() {
                    ratios.push(ratio);
                }
            }
            if opts.scenarios.contains(&Scenario::City) {
                let rate = 1.0 / CITY_PERIOD.as_secs_f64();
                for model in opts.models() {
                    let city = Target::Mekong { broker_only: false, rate: Some(rate), tls: None, spread: true, model };
                    scenario("mekong_durable_city", city, devices, rpp, &opts, &mut n, &mut results).await?;
                }
            }
        }
    }
    if full {
        let devices = 100;
        let moderate = Target::Mekong {
            broker_only: false,
            rate: Some(opts.moderate_rate / devices as f64),
            tls: None,
            spread: false,
            model: first,
        };
        scenario("mekong_durable_moderate", moderate, devices, 1, &opts, &mut n, &mut results).await?;
    }
    Ok(json!({
        "bench": "ingest",
        "seconds": opts.seconds,
        "window": opts.window,
        "window_default": "1600 / devices, at least 1; 4 under the city load",
        "tls": opts.tls,
        "scenarios": opts.scenarios.iter().map(|s| format!("{s:?}").to_lowercase()).collect::<Vec<_>>(),
        "per_process": opts.per_process,
        "acks": opts.acks.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        "resend": opts.resend.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "load_average": load_average(),
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "results": results,
        "ratios": ratios,
    }))
}

/// The machine's load averages over 1, 5 and 15 minutes, at the end of the run: the
/// benchmark shares its cores with whatever else runs.
fn load_average() -> Option<Vec<f64>> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().take(3).map(|v| v.parse().ok()).collect()
}
