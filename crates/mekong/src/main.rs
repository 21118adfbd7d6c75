//! The `mekong` command: `serve` runs the platform, `simulate` publishes a realistic fleet,
//! `device provision` registers a node and writes its configuration, `print-config` shows the
//! defaults, `check-config` validates a file.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mekong::config::parse_key_hex;
use mekong::provision::{provision, ProvisionOptions, SensorPeriods};
use mekong::simulate::{self, SimOptions};
use mekong::token;
use mekong::{Config, Platform};
use mekong_api::auth::Scope;
use mekong_ingest::DeviceKey;
use mekong_schema::DeviceKind;

/// Sensor ingestion for city infrastructure: SenML-CBOR over MQTT in, time series in sled,
/// HTTP/JSON out.
#[derive(Debug, Parser)]
#[command(name = "mekong", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the configuration is read from when --config is not given; a missing default file
/// means the built-in defaults.
const DEFAULT_CONFIG: &str = "config/mekong.toml";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the platform: MQTT broker, ingest, store and HTTP API.
    Serve {
        /// Configuration file (default: config/mekong.toml if it exists, else built-in defaults).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also run the fleet simulator against the embedded broker.
        #[arg(long)]
        demo: bool,
    },
    /// Publish readings from a simulated fleet of water, traffic and air stations.
    Simulate {
        /// Broker address, host:port.
        #[arg(long, default_value = "localhost:1883")]
        broker: String,
        /// Number of stations (kinds rotate water, traffic, air).
        #[arg(long, default_value_t = 12)]
        devices: usize,
        /// Seconds between readings of one station.
        #[arg(long, default_value_t = 10.0)]
        interval: f64,
        /// Seconds to publish live readings (default: until interrupted).
        #[arg(long)]
        duration: Option<f64>,
        /// Seconds of backlog to send first, in batched packs.
        #[arg(long, default_value_t = 0.0)]
        history: f64,
        /// Timestamps per backlog pack.
        #[arg(long, default_value_t = 50)]
        batch: usize,
        /// Device id prefix.
        #[arg(long, default_value = "sim-")]
        prefix: String,
        /// Noise seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Give the store's unused disk space back: copy its live data into a fresh directory and
    /// swap it in. mekong must be stopped (the store is locked while it runs).
    Compact {
        /// Configuration file naming the data directory (default as for serve).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Manage edge nodes.
    Device {
        #[command(subcommand)]
        what: DeviceCommand,
    },
    /// Manage the HTTP API's bearer tokens (kept as digests in the registry file).
    Token {
        #[command(subcommand)]
        what: TokenCommand,
    },
    /// Print the default configuration as TOML.
    PrintConfig,
    /// Load and check a configuration (with environment overrides), then print it.
    CheckConfig {
        /// Configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Add a node (or give it a new key) in the registry file, and write the configuration
    /// blob to flash into its configuration page.
    Provision {
        /// The device id, [a-z0-9-]{1,64}.
        device_id: String,
        /// What the node measures.
        #[arg(long, value_parser = ["water", "traffic", "air"])]
        kind: String,
        /// The node's key as 64 hex digits (default: a new random key). A key on the command
        /// line ends up in the shell's history; prefer the default.
        #[arg(long)]
        key_hex: Option<String>,
        /// The broker as the node will reach it, host:port.
        #[arg(long, default_value = "localhost:1883")]
        broker: String,
        /// Seconds between two readings of the node's sensor (the one its kind names).
        #[arg(long, default_value_t = 60)]
        period_secs: u16,
        /// Seconds between two readings of the air-quality sensor (PMS5003), for a mixed
        /// station; 0 turns it off (default: --period-secs for an air node, else off).
        #[arg(long)]
        air_secs: Option<u16>,
        /// Seconds between two readings of the water-level probe (Modbus), as --air-secs.
        #[arg(long)]
        water_secs: Option<u16>,
        /// Seconds between two readings of the traffic loop, as --air-secs.
        #[arg(long)]
        traffic_secs: Option<u16>,
        /// The registry file (created if missing).
        #[arg(long, default_value = mekong::config::DEFAULT_REGISTRY)]
        registry: PathBuf,
        /// Where to write the node's configuration (default: node-<device-id>.bin).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it once; only its SHA-256 digest is kept. `mekong serve`
    /// reads tokens at start.
    Create {
        /// Who holds it (shown in logs): 1 to 64 of a-z, A-Z, 0-9, '-', '_', '.'.
        name: String,
        /// `read` for data; `admin` also for the rejection log and whatever changes state.
        #[arg(long, value_parser = ["read", "admin"], default_value = "read")]
        scope: String,
        /// The registry file (created if missing).
        #[arg(long, default_value = mekong::config::DEFAULT_REGISTRY)]
        registry: PathBuf,
    },
    /// List the tokens: names and scopes.
    List {
        /// The registry file.
        #[arg(long, default_value = mekong::config::DEFAULT_REGISTRY)]
        registry: PathBuf,
    },
    /// Revoke a token by name (at the next start of `mekong serve`).
    Revoke {
        /// Its name.
        name: String,
        /// The registry file.
        #[arg(long, default_value = mekong::config::DEFAULT_REGISTRY)]
        registry: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Device {
            what:
                DeviceCommand::Provision {
                    device_id,
                    kind,
                    key_hex,
                    broker,
                    period_secs,
                    air_secs,
                    water_secs,
                    traffic_secs,
                    registry,
                    out,
                },
        } => {
            let (host, port) = split_host_port(&broker).context("--broker must be host:port")?;
            let opts = ProvisionOptions {
                out: out.unwrap_or_else(|| PathBuf::from(format!("node-{device_id}.bin"))),
                kind: DeviceKind::parse(&kind).with_context(|| format!("unknown kind {kind:?}"))?,
                key: key_hex
                    .map(|hex| parse_key_hex(&hex).map(DeviceKey).context("--key-hex must be 64 hex digits"))
                    .transpose()?,
                broker_host: host,
                broker_port: port,
                period_secs,
                sensors: SensorPeriods { air: air_secs, water: water_secs, traffic: traffic_secs },
                registry,
                device_id,
            };
            let done = provision(&opts)?;
            println!(
                "{} {} ({}) in {}; node configuration ({} bytes) in {}; both files hold the key (mode 0600)",
                if done.added { "added" } else { "updated" },
                opts.device_id,
                kind,
                opts.registry.display(),
                done.blob_bytes,
                opts.out.display(),
            );
            Ok(())
        }
        Command::Token { what } => token_command(what),
        Command::PrintConfig => {
            print!("{}", toml::to_string(&Config::default())?);
            Ok(())
        }
        Command::CheckConfig { config } => {
            let config = Config::load(&config, true, std::env::vars())?;
            let identities = config.identities()?;
            let exposure = mekong::exposure::Exposure::decide(&config, !identities.tokens.is_empty())?;
            // The certificate and key must load, and the TLS listeners obey the exposure.
            let tls = config.tls.enabled().then(|| mekong::tls::Tls::load(&config.tls)).transpose()?;
            mekong::platform::broker_options(exposure.broker(&config), tls.as_ref())?;
            print!("{}", toml::to_string(&config)?);
            Ok(())
        }
        Command::Compact { config } => {
            let config = load_config(config)?;
            let dir = &config.storage.data_dir;
            let report = mekong_store::compact(dir, &config.store_options())
                .with_context(|| format!("cannot compact the store in {}", dir.display()))?;
            println!(
                "{}: {} entries, {} bytes before, {} after",
                dir.display(),
                report.entries,
                report.bytes_before,
                report.bytes_after
            );
            Ok(())
        }
        Command::Serve { config, demo } => {
            let config = load_config(config)?;
            init_logging(&config.log.filter);
            runtime()?.block_on(serve(config, demo))
        }
        Command::Simulate { broker, devices, interval, duration, history, batch, prefix, seed } => {
            init_logging("info");
            let (host, port) = split_host_port(&broker).context("--broker must be host:port")?;
            let opts = SimOptions {
                host,
                port,
                devices,
                interval: secs(interval, "--interval")?,
                duration: duration.map(|d| secs(d, "--duration")).transpose()?,
                history: secs(history, "--history")?,
                batch,
                prefix,
                seed,
            };
            runtime()?.block_on(async {
                tokio::select! {
                    report = simulate::run(opts) => {
                        let report = report?;
                        println!(
                            "{{\"packs\":{},\"readings\":{},\"bytes\":{}}}",
                            report.packs, report.readings, report.bytes
                        );
                        Ok(())
                    }
                    _ = shutdown_signal() => Ok(()),
                }
            })
        }
    }
}

/// `host:port`, `[v6]:port` or `v6-address:port`, with the brackets taken off.
fn split_host_port(addr: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = addr.rsplit_once(':').context("no port")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        anyhow::bail!("no host");
    }
    Ok((host.to_owned(), port.parse().context("bad port")?))
}

fn secs(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).with_context(|| format!("{flag} must be a non-negative number of seconds"))
}

/// The configuration from `--config`, else from the default file if it exists, else the
/// built-in defaults; environment overrides apply in every case.
fn load_config(path: Option<PathBuf>) -> anyhow::Result<Config> {
    let (path, required) = match path {
        Some(path) => (path, true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    Config::load(&path, required, std::env::vars())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours for a terminal only: a log file or journal gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).init();
}

async fn serve(config: Config, demo: bool) -> anyhow::Result<()> {
    // Taken before start, so that a SIGHUP from the moment the certificate is served reloads
    // it rather than ending the process. Only with TLS on: otherwise SIGHUP keeps its default.
    #[cfg(unix)]
    let hangups = match config.tls.enabled() {
        true => Some(
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("cannot listen for SIGHUP (certificate reload)")?,
        ),
        false => None,
    };
    #[cfg(not(unix))]
    let hangups: Option<()> = None;
    let platform = Platform::start(&config).await?;
    let simulator = demo.then(|| {
        let opts = SimOptions {
            host: mekong_ingest::broker::connectable(platform.mqtt_addr).ip().to_string(),
            port: platform.mqtt_addr.port(),
            history: Duration::from_secs(3600),
            ..SimOptions::default()
        };
        tracing::info!(devices = opts.devices, "demo: simulating a fleet with an hour of backlog");
        tokio::spawn(simulate::run(opts))
    });
    tokio::select! {
        () = shutdown_signal() => {}
        () = reload_on_hangup(&platform, hangups) => {}
    }
    tracing::info!("shutting down");
    if let Some(simulator) = simulator {
        simulator.abort();
    }
    platform.shutdown().await
}

fn token_command(what: TokenCommand) -> anyhow::Result<()> {
    match what {
        TokenCommand::Create { name, scope, registry } => {
            let scope = Scope::parse(&scope).with_context(|| format!("unknown scope {scope:?}"))?;
            let secret = token::create(&registry, &name, scope)?;
            eprintln!(
                "token {name:?} ({}) added to {}; it is shown once, here, and kept nowhere; restart mekong serve \
                 to use it",
                scope.as_str(),
                registry.display()
            );
            println!("{secret}");
        }
        TokenCommand::List { registry } => {
            for (name, scope) in token::list(&registry)? {
                println!("{name}\t{}", scope.as_str());
            }
        }
        TokenCommand::Revoke { name, registry } => {
            if !token::revoke(&registry, &name)? {
                anyhow::bail!("no token named {name:?} in {}", registry.display());
            }
            eprintln!("token {name:?} revoked in {}; restart mekong serve to apply", registry.display());
        }
    }
    Ok(())
}

/// Reloads the TLS certificate at every SIGHUP, forever; never resolves.
#[cfg(unix)]
async fn reload_on_hangup(platform: &Platform, hangups: Option<tokio::signal::unix::Signal>) {
    if let Some(mut hangups) = hangups {
        while hangups.recv().await.is_some() {
            match platform.reload_tls() {
                Ok(sha256) => tracing::info!(sha256 = sha256.as_deref(), "SIGHUP: tls certificate loaded"),
                Err(e) => tracing::error!(
                    error = format!("{e:#}"),
                    "SIGHUP: cannot load the new tls certificate; the one in use stays"
                ),
            }
        }
    }
    std::future::pending::<()>().await;
}

/// No SIGHUP off Unix: the files' poll reloads the certificate.
#[cfg(not(unix))]
async fn reload_on_hangup(_platform: &Platform, _hangups: Option<()>) {
    std::future::pending::<()>().await;
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
