//! `mekong-bench`: the whole-system benchmarks, apart from the product. `ingest` measures
//! readings made durable over MQTT next to what the embedded broker alone allows (and over
//! TLS); `connect` measures a fleet reconnecting at once, plain and over TLS; `query`
//! measures the store's size on disk and the API's latency over the reference dataset. Each
//! starts the `mekong` binary as a child process and prints one JSON line per step, then a
//! summary line. `alerts` measures an alert's latency from the crossing reading's publish to
//! the webhook, under a background load. `export` times `mekong export` to CSV and Parquet
//! over a dataset directory that `query --data-dir` kept; `backup` times backups of a serving
//! mekong over such a directory, the ingest pause they cause, and a restore.

mod alerts;
mod answers;
mod backup;
mod broker_only;
mod client;
mod connect;
mod day_blocks;
mod export;
mod forward;
mod generators;
mod harness;
mod ingest;
mod load;
mod peers;
mod pipeline;
mod query;
mod soak;
mod stream;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Benchmarks of mekong; each prints one JSON line per scenario and a summary line last.
#[derive(Debug, Parser)]
#[command(name = "mekong-bench", version)]
struct Cli {
    /// The `mekong` binary to measure (default: the one beside this binary, as
    /// `cargo build --release -p mekong -p mekong-bench` leaves it).
    #[arg(long, global = true)]
    mekong: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Readings per second made durable, end to end over MQTT, against the broker alone.
    Ingest {
        /// Device counts (one MQTT connection each), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "100,10000")]
        devices: Vec<usize>,
        /// Readings per pack, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,50")]
        readings: Vec<usize>,
        /// Seconds measured per scenario.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Seconds of load before measuring.
        #[arg(long, default_value_t = 3.0)]
        warmup: f64,
        /// Unacknowledged publishes per connection (default: 1,600 over all connections).
        #[arg(long)]
        window: Option<usize>,
        /// External broker to measure the same load against, as mqtt://host:port.
        #[arg(long)]
        peer: Option<String>,
        /// Total packs per second for the latency at moderate load.
        #[arg(long, default_value_t = 2000.0)]
        moderate_rate: f64,
        /// Also measure durable ingest over TLS (MQTT 3.1.1 on mekong's TLS listener), and
        /// its ratio to plain TCP.
        #[arg(long)]
        tls: bool,
        /// Scenarios, comma-separated: `full` (as fast as the window allows, against the
        /// broker alone) and `city` (every device one pack every 10 s, spread evenly).
        #[arg(long, value_delimiter = ',', default_value = "full")]
        scenario: Vec<ingest::Scenario>,
        /// Devices per load process: more are split over child processes, each within the
        /// open-file limit.
        #[arg(long, default_value_t = 9000)]
        per_process: usize,
        /// The acknowledgements the devices ask for, comma-separated, each a durable run of
        /// its own in this order (repeat them to alternate): `per-pack` (one downlink per
        /// pack, downlink version 1) or `lists` (the packs ask for lists of
        /// acknowledgements, version 2, as the firmware's do).
        #[arg(long, value_delimiter = ',', default_value = "per-pack")]
        acks: Vec<load::Acks>,
        /// How the devices resend an overdue pack, comma-separated like `--acks` (each value
        /// of one runs with each of the other): `backoff` (from 5 s, doubling, with jitter, as
        /// the firmware does from 30 s) or `fixed` (every 5 s, all devices alike).
        #[arg(long, value_delimiter = ',', default_value = "backoff")]
        resend: Vec<load::Resend>,
    },
    /// A fleet reconnecting at once: connections per second, connect times (p50, p99), and
    /// the server memory an idle connection holds; plain TCP, TLS with --tls, and password
    /// logins with --auth.
    Connect {
        /// Devices, one MQTT connection each.
        #[arg(long, default_value_t = 1000)]
        devices: usize,
        /// Times the whole fleet reconnects at once, per scenario (the rate is their median).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Also measure TLS (full handshakes, ECDSA P-256), against plain TCP in the same run.
        #[arg(long)]
        tls: bool,
        /// Also measure logins: every device sends its username and password, which the
        /// broker checks against a registry of all of them, against plain TCP in the same run.
        #[arg(long)]
        auth: bool,
        /// Spread each reconnection of the fleet over this many ms, each device waiting its
        /// firmware jitter (2500: nodes with the firmware's 5 s retry pause); 0: all at once.
        #[arg(long, default_value_t = 0)]
        spread_ms: u64,
    },
    /// Alert latency: from the publish of a reading that crosses a rule's threshold to the
    /// webhook's receipt of the change, p50 and p99, under a background load.
    Alerts {
        /// Background packs per second (one reading each), over all devices.
        #[arg(long, default_value_t = 5000.0)]
        rate: f64,
        /// Background devices, one MQTT connection each.
        #[arg(long, default_value_t = 100)]
        devices: usize,
        /// Alert changes to time (firing and resolved in turn).
        #[arg(long, default_value_t = 200)]
        changes: usize,
        /// Milliseconds between two changes.
        #[arg(long, default_value_t = 100)]
        every_ms: u64,
    },
    /// The feed to an upstream broker (a local Mosquitto): the lag from publish to the
    /// upstream's subscriber at a steady load, then an outage of the upstream under the same
    /// load and the rate at which mekong catches up.
    Forward {
        /// Packs per second, over all devices.
        #[arg(long, default_value_t = 5000.0)]
        rate: f64,
        /// Devices, one MQTT connection each.
        #[arg(long, default_value_t = 100)]
        devices: usize,
        /// Readings per pack.
        #[arg(long, default_value_t = 1)]
        readings: usize,
        /// Seconds of steady load over which the lag is measured.
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        /// Seconds the upstream broker is stopped.
        #[arg(long, default_value_t = 120.0)]
        outage: f64,
        /// `forward.max_packs_per_sec` (0: no limit).
        #[arg(long, default_value_t = 0)]
        max_packs_per_sec: u32,
        /// `forward.max_in_flight`.
        #[arg(long, default_value_t = 256)]
        max_in_flight: u16,
        /// The Mosquitto broker binary.
        #[arg(long, default_value = "/usr/sbin/mosquitto")]
        mosquitto: PathBuf,
    },
    /// What following the live stream costs ingest (full-speed ingest with no stream client
    /// and with --clients, alternating in one run), and the latency from a pack's publish to
    /// a stream client at a steady rate.
    Stream {
        /// Devices, one MQTT connection each.
        #[arg(long, default_value_t = 100)]
        devices: usize,
        /// Readings per pack.
        #[arg(long, default_value_t = 10)]
        readings: usize,
        /// Stream clients, each following one device of the load.
        #[arg(long, default_value_t = 100)]
        clients: usize,
        /// Each client follows everything instead.
        #[arg(long)]
        follow_all: bool,
        /// The full-speed load's readings start a day back (each upkeep pass folds them
        /// again), rather than at the wall clock.
        #[arg(long)]
        backlog: bool,
        /// Seconds measured per phase.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Seconds of load before measuring.
        #[arg(long, default_value_t = 3.0)]
        warmup: f64,
        /// Pairs of phases, without clients and with them.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Packs per second, over all devices, for the latency.
        #[arg(long, default_value_t = 5000.0)]
        rate: f64,
    },
    /// Size on disk and query latency over the reference dataset, through the HTTP API.
    Query(query::QueryBenchOptions),
    /// A simulated year of the reference fleet through the store's write path, folds and
    /// retention: disk size, memory and ingest rate every simulated day.
    Soak(soak::SoakOptions),
    /// The store's day blocks over the reference dataset, codec alone: bytes per point and
    /// decoding time, in the chunk format ingest writes and in the one folds write.
    DayBlocks(day_blocks::DayBlockOptions),
    /// The ingest thread's work on a pack, alone: decoding the load generator's pack,
    /// encoding its chunk, and the pipeline on a store, without broker or load generator.
    Pipeline(pipeline::PipelineBenchOptions),
    /// Export rate of `mekong export` to CSV and Parquet, and Parquet's bytes per reading,
    /// over a dataset directory of `query --data-dir`.
    Export {
        /// The dataset directory (`mekong-bench query --data-dir DIR` makes one).
        #[arg(long)]
        data_dir: PathBuf,
        /// Runs of each format; the fastest is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Backups of a serving mekong over a dataset directory of `query --data-dir`: a full
    /// backup, then load, then an incremental one (time, size, the ingest pause seen by the
    /// devices), then verify and restore times.
    Backup(backup::BackupBenchOptions),
    /// One load process of `ingest`: connects its devices, says `ready`, then measures on
    /// `measure` and reports on `stop` (lines on stdin).
    #[command(hide = true)]
    Load {
        /// The broker.
        #[arg(long)]
        addr: SocketAddr,
        /// Devices of this process.
        #[arg(long)]
        devices: usize,
        /// Device id prefix.
        #[arg(long)]
        prefix: String,
        /// Readings per pack.
        #[arg(long)]
        readings: usize,
        /// Unacknowledged packs per device.
        #[arg(long)]
        window: usize,
        /// Packs per second per device (default: as fast as the window allows).
        #[arg(long)]
        rate: Option<f64>,
        /// Index of this process's first device among all.
        #[arg(long, default_value_t = 0)]
        first: usize,
        /// Spread the packs evenly over one period among this many devices in all.
        #[arg(long)]
        spread_over: Option<usize>,
        /// Subscribe to the downlinks and time the acknowledgements.
        #[arg(long)]
        downlinks: bool,
        /// The acknowledgements the devices ask for.
        #[arg(long, value_enum, default_value = "per-pack")]
        acks: load::Acks,
        /// How the devices resend.
        #[arg(long, value_enum, default_value = "backoff")]
        resend: load::Resend,
    },
    /// The broker-only scenario's server: mekong's embedded broker with its link reduced to a
    /// counter, which `ingest` starts as a child process.
    #[command(hide = true)]
    BrokerOnly {
        /// Where MQTT 3.1.1 clients connect.
        #[arg(long)]
        listen: SocketAddr,
        /// Where the count is served over HTTP.
        #[arg(long)]
        stats: SocketAddr,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Query(opts) => {
            init_logging("warn");
            let mekong = harness::mekong_binary(cli.mekong)?;
            println!("{}", query::query(opts, &mekong)?);
            Ok(())
        }
        Command::DayBlocks(opts) => {
            println!("{}", day_blocks::day_blocks(opts)?);
            Ok(())
        }
        Command::Pipeline(opts) => {
            init_logging("warn");
            println!("{}", pipeline::pipeline(opts)?);
            Ok(())
        }
        Command::Soak(opts) => {
            init_logging("warn");
            println!("{}", soak::soak(opts)?);
            Ok(())
        }
        Command::Backup(opts) => {
            init_logging("warn");
            let mekong = harness::mekong_binary(cli.mekong)?;
            println!("{}", backup::backup(opts, &mekong)?);
            Ok(())
        }
        Command::Export { data_dir, rounds } => {
            let mekong = harness::mekong_binary(cli.mekong)?;
            println!("{}", export::export(&data_dir, rounds, &mekong)?);
            Ok(())
        }
        Command::Connect { devices, rounds, tls, auth, spread_ms } => {
            init_logging("warn");
            let mekong = harness::mekong_binary(cli.mekong)?;
            let spread = std::time::Duration::from_millis(spread_ms);
            let opts = connect::ConnectOptions { devices, rounds: rounds.max(1), tls, auth, spread, mekong };
            let summary = runtime()?.block_on(connect::connect(opts))?;
            println!("{summary}");
            Ok(())
        }
        Command::Ingest {
            devices,
            readings,
            seconds,
            warmup,
            window,
            peer,
            moderate_rate,
            tls,
            scenario,
            per_process,
            acks,
            resend,
        } => {
            init_logging("warn");
            let peer = peer
                .map(|p| {
                    let addr = p.strip_prefix("mqtt://").unwrap_or(&p);
                    std::net::ToSocketAddrs::to_socket_addrs(addr)
                        .ok()
                        .and_then(|mut a| a.next())
                        .with_context(|| format!("--peer {p:?} is not mqtt://host:port"))
                })
                .transpose()?;
            let mekong = harness::mekong_binary(cli.mekong)?;
            let opts = ingest::BenchOptions {
                devices,
                readings,
                seconds,
                warmup,
                window,
                peer,
                moderate_rate,
                mekong,
                tls,
                scenarios: scenario,
                per_process,
                acks,
                resend,
            };
            let summary = runtime()?.block_on(ingest::ingest(opts))?;
            println!("{summary}");
            Ok(())
        }
        Command::Alerts { rate, devices, changes, every_ms } => {
            init_logging("warn");
            let mekong = harness::mekong_binary(cli.mekong)?;
            let every = std::time::Duration::from_millis(every_ms);
            let opts = alerts::AlertBenchOptions { rate, devices, changes, every, mekong };
            println!("{}", runtime()?.block_on(alerts::alerts(opts))?);
            Ok(())
        }
        Command::Forward { rate, devices, readings, seconds, outage, max_packs_per_sec, max_in_flight, mosquitto } => {
            init_logging("warn");
            let mekong = harness::mekong_binary(cli.mekong)?;
            let opts = forward::ForwardBenchOptions {
                rate,
                devices,
                readings,
                seconds,
                outage,
                max_packs_per_sec,
                max_in_flight,
                mosquitto,
                mekong,
            };
            println!("{}", runtime()?.block_on(forward::forward(opts))?);
            Ok(())
        }
        Command::Stream { devices, readings, clients, follow_all, backlog, seconds, warmup, rounds, rate } => {
            init_logging("warn");
            let mekong = harness::mekong_binary(cli.mekong)?;
            let opts = stream::StreamOptions {
                devices,
                readings,
                clients,
                follow_all,
                backlog,
                seconds,
                warmup,
                rounds: rounds.max(1),
                rate,
                mekong,
            };
            println!("{}", runtime()?.block_on(stream::stream(opts))?);
            Ok(())
        }
        Command::Load {
            addr,
            devices,
            prefix,
            readings,
            window,
            rate,
            first,
            spread_over,
            downlinks,
            acks,
            resend,
        } => {
            init_logging("error");
            let opts = load::LoadOptions {
                addr,
                devices,
                readings_per_pack: readings,
                window,
                rate,
                downlinks,
                prefix,
                tls: None,
                wall_clock: false,
                spread: spread_over.map(|all| (first, all)),
            };
            runtime()?.block_on(generators::run_child(opts, load::Model { acks, resend }))
        }
        Command::BrokerOnly { listen, stats } => {
            init_logging("error");
            broker_only::run(listen, stats)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}
