//! `mekong-bench`: the whole-system benchmarks, apart from the product. `ingest` measures
//! readings made durable over MQTT next to what the embedded broker alone allows; `query`
//! measures the store's size on disk and the API's latency over the reference dataset. Each
//! starts the `mekong` binary as a child process and prints one JSON line per step, then a
//! summary line.

mod broker_only;
mod harness;
mod ingest;
mod load;
mod query;

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
    },
    /// Size on disk and query latency over the reference dataset, through the HTTP API.
    Query(query::QueryBenchOptions),
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
        Command::Ingest { devices, readings, seconds, warmup, window, peer, moderate_rate } => {
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
            let opts = ingest::BenchOptions { devices, readings, seconds, warmup, window, peer, moderate_rate, mekong };
            let summary = runtime()?.block_on(ingest::ingest(opts))?;
            println!("{summary}");
            Ok(())
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
