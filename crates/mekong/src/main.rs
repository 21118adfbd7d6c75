//! The `mekong` command: `serve` runs the platform, `simulate` publishes a realistic fleet,
//! `device provision` registers a node and writes its configuration, `backup` and `restore`
//! keep the store safe, `print-config` shows the defaults, `check-config` validates a file.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mekong::config::{parse_key_hex, LogFormat, ServiceDirs, DEFAULT_CONFIG};
use mekong::provision::{provision, ProvisionOptions, SensorPeriods};
use mekong::simulate::{self, SimOptions};
use mekong::{identity, token};
use mekong::{Config, Platform};
use mekong_api::auth::Scope;
use mekong_ingest::access::Role;
use mekong_ingest::DeviceKey;
use mekong_schema::DeviceKind;

/// glibc's malloc cost a third of the server's CPU under load (README, "What is measured").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sensor ingestion for city infrastructure: SenML-CBOR over MQTT in, time series in sled,
/// HTTP/JSON out.
#[derive(Debug, Parser)]
#[command(name = "mekong", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the platform: MQTT broker, ingest, store and HTTP API.
    Serve {
        /// Configuration file (default: config/mekong.toml, or mekong.toml in
        /// $CONFIGURATION_DIRECTORY when systemd sets it, if it exists, else built-in defaults).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also run the fleet simulator against the embedded broker.
        #[arg(long)]
        demo: bool,
        /// How log lines are written (default: log.format in the configuration, `text`).
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
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
        /// Device id prefix (default `sim-`, and `flood-` for the flood scenario, so that its
        /// stations do not share series with a normal run).
        #[arg(long)]
        prefix: Option<String>,
        /// What the readings follow: `normal`, or `flood` (a high tide and a rain event that
        /// cross the example alert rules of config/mekong.toml within about three minutes).
        #[arg(long, value_enum, default_value_t = ScenarioArg::Normal)]
        scenario: ScenarioArg,
        /// Noise seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Seconds to wait at the end for the platform's answers (acknowledgements of stored
        /// packs, or refusals) to the last packs.
        #[arg(long, default_value_t = 30.0)]
        answer_timeout: f64,
    },
    /// Give the store's unused disk space back: copy its live data into a fresh directory and
    /// swap it in. mekong must be stopped (the store is locked while it runs).
    Compact {
        /// Configuration file naming the data directory (default as for serve).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Export the readings of a time range as CSV or Parquet: from the data directory when
    /// mekong is stopped (the store is locked while it runs), or with --url through a running
    /// mekong's API, with an admin token in $MEKONG_TOKEN.
    Export {
        /// Start of the range (inclusive): RFC 3339 or epoch milliseconds.
        #[arg(long)]
        from: String,
        /// End of the range (exclusive): RFC 3339 or epoch milliseconds.
        #[arg(long)]
        to: String,
        /// Only devices of this kind.
        #[arg(long, value_parser = ["water", "traffic", "air", "unknown"])]
        kind: Option<String>,
        /// Only these devices (repeat, or separate with commas).
        #[arg(long, value_delimiter = ',')]
        device: Vec<String>,
        /// Only these metrics (repeat, or separate with commas).
        #[arg(long, value_delimiter = ',')]
        metric: Vec<String>,
        /// `csv` (RFC 4180, a header row) or `parquet` (zstd).
        #[arg(long, value_parser = ["csv", "parquet"], default_value = "csv")]
        format: String,
        /// The file to write (`-`: standard output); written as FILE.partial, renamed once whole.
        #[arg(long, short)]
        output: PathBuf,
        /// A running mekong's API, e.g. http://localhost:8080 (token in $MEKONG_TOKEN).
        #[arg(long, conflicts_with_all = ["config", "data_dir"])]
        url: Option<String>,
        /// Configuration file naming the data directory (default as for serve).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data directory (default: storage.data_dir of the configuration).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Back up the store into a repository of plain files (README, Backups): from the data
    /// directory when mekong is stopped, or with --url through a running mekong's API (admin
    /// token in $MEKONG_TOKEN), which writes into its `[backup] dir`. Incremental: only day
    /// files the repository lacks are copied.
    #[command(args_conflicts_with_subcommands = true)]
    Backup {
        #[command(subcommand)]
        what: Option<BackupCommand>,
        #[command(flatten)]
        take: BackupArgs,
    },
    /// Restore a backup into an empty (or new) data directory; mekong then opens it as usual.
    Restore {
        /// The backup repository.
        #[arg(long)]
        from: PathBuf,
        /// The backup's id (default: the newest; `mekong backup list DIR` shows them).
        #[arg(long)]
        backup: Option<String>,
        /// Configuration file naming the data directory (default as for serve).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data directory (default: storage.data_dir of the configuration).
        #[arg(long)]
        data_dir: Option<PathBuf>,
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
    /// The broker's gateway and app identities (devices get theirs from `device provision`).
    Identity {
        #[command(subcommand)]
        what: IdentityCommand,
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

#[derive(Debug, clap::Args)]
struct BackupArgs {
    /// The backup repository (a directory, created if need be).
    #[arg(long, required_unless_present = "url")]
    to: Option<PathBuf>,
    /// Copy every day file, even those the repository holds already.
    #[arg(long)]
    full: bool,
    /// Then keep only this many backups (the newest), deleting the files only older ones hold.
    #[arg(long)]
    keep: Option<usize>,
    /// A running mekong's API, e.g. http://localhost:8080 (admin token in $MEKONG_TOKEN); it
    /// backs up into its own `[backup] dir`, with its `keep`.
    #[arg(long, conflicts_with_all = ["to", "config", "data_dir", "keep"])]
    url: Option<String>,
    /// Configuration file naming the data directory (default as for serve).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The data directory (default: storage.data_dir of the configuration).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum BackupCommand {
    /// Check a backup without restoring it: every file's size and SHA-256, every block
    /// decoded, the readings of each series counted against the manifest. Fails, naming each
    /// damaged file, unless the backup is whole.
    Verify {
        /// The backup repository.
        dir: PathBuf,
        /// The backup's id (default: the newest).
        #[arg(long)]
        backup: Option<String>,
    },
    /// List the backups of a repository, oldest first.
    List {
        /// The backup repository.
        dir: PathBuf,
    },
    /// Keep the newest backups and delete the others and the day files only they hold.
    Prune {
        /// The backup repository.
        dir: PathBuf,
        /// How many to keep (at least 1).
        #[arg(long)]
        keep: usize,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Add a node (or give it a new key and MQTT password) in the registry file, and write the
    /// configuration blob to flash into its configuration page. Every run draws a new password
    /// (kept in the blob; the registry keeps its SHA-256): a node provisioned again must get the
    /// new blob, its old one no longer logs in.
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
        #[command(flatten)]
        registry: RegistryArg,
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
        #[command(flatten)]
        registry: RegistryArg,
    },
    /// List the tokens: names and scopes.
    List {
        #[command(flatten)]
        registry: RegistryArg,
    },
    /// Revoke a token by name (at the next start of `mekong serve`).
    Revoke {
        /// Its name.
        name: String,
        #[command(flatten)]
        registry: RegistryArg,
    },
}

/// The registry file, for every command that reads or edits it.
#[derive(Debug, clap::Args)]
struct RegistryArg {
    /// The registry file (created by a command that adds to it).
    #[arg(long = "registry", value_name = "FILE", default_value = mekong::config::DEFAULT_REGISTRY)]
    path: PathBuf,
}

/// `--scenario` of `mekong simulate`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ScenarioArg {
    /// Everyday Can Tho.
    Normal,
    /// A high tide and a rain event that cross the example alert rules.
    Flood,
}

#[derive(Debug, Subcommand)]
enum IdentityCommand {
    /// Add a gateway, which publishes for the devices it lists, and print its MQTT password
    /// once; only its SHA-256 digest is kept. `mekong serve` reads identities at start.
    Gateway {
        /// Its name, which is also its MQTT username and client id: [a-z0-9-]{1,64}, unique
        /// among devices, gateways and apps.
        name: String,
        /// A device it publishes for (and reads the downlink of); repeat for each.
        #[arg(long = "device", required = true)]
        devices: Vec<String>,
        #[command(flatten)]
        registry: RegistryArg,
    },
    /// Add an app, which may only subscribe, within the filters it is granted, and print its
    /// MQTT password once. It connects with its name as username, and as client id its name
    /// or its name, ':' and anything (one session per client id).
    App {
        /// Its name: [a-z0-9-]{1,64}, unique among devices, gateways and apps.
        name: String,
        /// A topic filter it may subscribe to (or to any narrower one), such as
        /// mekong/v1/+/up; repeat for each.
        #[arg(long = "subscribe", required = true)]
        filters: Vec<String>,
        #[command(flatten)]
        registry: RegistryArg,
    },
    /// List every MQTT identity: name, role, and the devices or filters it may use.
    List {
        #[command(flatten)]
        registry: RegistryArg,
    },
    /// Remove a gateway or app (at the next start of `mekong serve`). To give one a new
    /// password, revoke it and add it again.
    Revoke {
        /// Its name.
        name: String,
        #[command(flatten)]
        registry: RegistryArg,
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
                registry: registry.path,
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
            // The password itself is in the blob only; say what the new one means.
            if done.added {
                println!("the node's MQTT password is in the configuration only (the registry keeps its SHA-256)");
            } else {
                println!(
                    "new key and MQTT password: once `mekong serve` runs with this registry, the node's previous \
                     configuration no longer logs in to the broker; write this one to the node"
                );
            }
            println!("restart `mekong serve` with this registry (registry.path) so that it knows the node");
            Ok(())
        }
        Command::Token { what } => token_command(what),
        Command::Identity { what } => identity_command(what),
        Command::PrintConfig => {
            print!("{}", toml::to_string(&Config::default())?);
            Ok(())
        }
        Command::CheckConfig { config } => {
            let config = Config::load(&config, true, std::env::vars())?;
            let identities = config.identities()?;
            let exposure = mekong::exposure::Exposure::decide(&config, &identities)?;
            // The certificate and key must load, and the TLS listeners obey the exposure.
            let tls = config.tls.enabled().then(|| mekong::tls::Tls::load(&config.tls)).transpose()?;
            mekong::platform::broker_options(exposure.broker(&config), tls.as_ref())?;
            print!("{}", toml::to_string(&config)?);
            Ok(())
        }
        Command::Compact { config } => {
            let config = load_config(config)?;
            let dir = &config.storage.data_dir;
            // A line every few seconds on a large store, so that a long copy is seen to move.
            let mut last_line = std::time::Instant::now();
            let progress = |so_far: &mekong_store::CompactReport| {
                if last_line.elapsed() >= Duration::from_secs(5) {
                    last_line = std::time::Instant::now();
                    eprintln!(
                        "compacting: {} entries ({} MiB of live data) copied; the store takes {} MiB on disk now",
                        so_far.entries,
                        so_far.entry_bytes >> 20,
                        so_far.bytes_before >> 20
                    );
                }
            };
            let report = mekong_store::compact_with_progress(dir, &config.store_options(), progress)
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
        Command::Export { from, to, kind, device, metric, format, output, url, config, data_dir } => {
            let time =
                |name: &str, value: &str| mekong_api::time::parse(name, value).map_err(|e| anyhow::anyhow!("--{e}"));
            let query = mekong_export::Query {
                from_ms: time("from", &from)?,
                to_ms: time("to", &to)?,
                kind,
                devices: device,
                metrics: metric,
            };
            if query.from_ms >= query.to_ms {
                anyhow::bail!("--from ({from}) must be before --to ({to})");
            }
            let format = mekong_export::Format::parse(&format).context("--format must be csv or parquet")?;
            let output = mekong::export::Output::new(&output);
            match url {
                Some(url) => runtime()?.block_on(mekong::export::remote(&url, &query, format, &output)),
                None => {
                    let config = load_config(config)?;
                    let dir = data_dir.unwrap_or_else(|| config.storage.data_dir.clone());
                    mekong::export::local(&dir, &config.store_options(), query, format, &output)
                }
            }
        }
        Command::Backup { what: Some(what), .. } => match what {
            BackupCommand::Verify { dir, backup } => mekong::backup::verify(&dir, backup.as_deref()),
            BackupCommand::List { dir } => mekong::backup::list(&dir),
            BackupCommand::Prune { dir, keep } => mekong::backup::prune(&dir, keep),
        },
        Command::Backup { what: None, take } => match (take.url, take.to) {
            (Some(url), _) => runtime()?.block_on(mekong::backup::remote(&url, take.full)).map(drop),
            (None, Some(to)) => {
                let config = load_config(take.config)?;
                let dir = take.data_dir.unwrap_or_else(|| config.storage.data_dir.clone());
                let options = mekong_store::backup::BackupOptions { full: take.full, keep: take.keep };
                mekong::backup::local(&dir, &config.store_options(), &to, &options).map(drop)
            }
            (None, None) => anyhow::bail!("say where: --to DIR, or --url of a running mekong"),
        },
        Command::Restore { from, backup, config, data_dir } => {
            let config = load_config(config)?;
            let dir = data_dir.unwrap_or_else(|| config.storage.data_dir.clone());
            mekong::backup::restore(&from, backup.as_deref(), &dir)
        }
        Command::Serve { config, demo, log_format } => {
            let config = load_config(config)?;
            init_logging(&config.log.filter, log_format.unwrap_or(config.log.format));
            runtime()?.block_on(serve(config, demo))
        }
        Command::Simulate {
            broker,
            devices,
            interval,
            duration,
            history,
            batch,
            prefix,
            scenario,
            seed,
            answer_timeout,
        } => {
            let scenario = match scenario {
                ScenarioArg::Normal => simulate::Scenario::Normal,
                ScenarioArg::Flood => simulate::Scenario::Flood,
            };
            let prefix = prefix
                .unwrap_or_else(|| if scenario == simulate::Scenario::Flood { "flood-" } else { "sim-" }.to_owned());
            init_logging("info", LogFormat::Text);
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
                answer_timeout: secs(answer_timeout, "--answer-timeout")?,
                progress: true,
                scenario,
            };
            runtime()?.block_on(async {
                let (stop_tx, stop) = tokio::sync::watch::channel(false);
                // Ctrl-C or SIGTERM ends the live readings; the answers are still awaited.
                let signals = shutdown_signals()?;
                let signal = tokio::spawn(async move {
                    signals.await;
                    let _ = stop_tx.send(true);
                });
                let report = simulate::run(opts, stop).await;
                signal.abort();
                let report = report?;
                println!(
                    "{{\"packs\":{},\"stored\":{},\"refused\":{},\"unanswered\":{},\"readings\":{},\"bytes\":{}}}",
                    report.packs,
                    report.stored,
                    report.refused,
                    report.unanswered(),
                    report.readings,
                    report.bytes
                );
                if report.unanswered() > 0 {
                    anyhow::bail!(
                        "{} packs had no answer from the platform within {answer_timeout} s (--answer-timeout)",
                        report.unanswered()
                    );
                }
                Ok(())
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

/// The configuration from `--config`, else from the default file (in systemd's configuration
/// directory under the service) if it exists, else the built-in defaults; environment
/// overrides apply in every case.
fn load_config(path: Option<PathBuf>) -> anyhow::Result<Config> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let (path, required) = match path {
        Some(path) => (path, true),
        None => (ServiceDirs::from_env(&env).config_file(), false),
    };
    Config::load(&path, required, env)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Text => {
            // Colours for a terminal only: a log file or journal gets plain text.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
            builder.with_ansi(ansi).init();
        }
    }
}

async fn serve(config: Config, demo: bool) -> anyhow::Result<()> {
    // Listened for before the start, which can take a while (a large log to fold, a slow
    // disk): a SIGTERM from systemd in that time waits for it and stops in order, rather than
    // killing the process.
    let stop = shutdown_signals()?;
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
        let mut opts = SimOptions {
            host: mekong_ingest::broker::connectable(platform.mqtt_addr).ip().to_string(),
            port: platform.mqtt_addr.port(),
            history: Duration::from_secs(3600),
            ..SimOptions::default()
        };
        // A demo run on a directory that holds an earlier one goes on from its newest reading
        // rather than sending the last hour again, which would interleave a second stream of
        // values into every series.
        opts.history = simulate::backlog_after(platform.store(), &opts);
        simulate::place_fleet(platform.directory(), &opts);
        tracing::info!(
            devices = opts.devices,
            backlog_secs = opts.history.as_secs(),
            "demo: simulating a fleet, the backlog first"
        );
        tokio::spawn(simulate::run(opts, tokio::sync::watch::channel(false).1))
    });
    tokio::select! {
        () = stop => {}
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
            let registry = registry.path;
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
            for (name, scope) in token::list(&registry.path)? {
                println!("{name}\t{}", scope.as_str());
            }
        }
        TokenCommand::Revoke { name, registry: RegistryArg { path: registry } } => {
            if !token::revoke(&registry, &name)? {
                anyhow::bail!("no token named {name:?} in {}", registry.display());
            }
            eprintln!("token {name:?} revoked in {}; restart mekong serve to apply", registry.display());
        }
    }
    Ok(())
}

fn identity_command(what: IdentityCommand) -> anyhow::Result<()> {
    let (name, role, registry) = match what {
        IdentityCommand::Gateway { name, devices, registry } => (name, Role::Gateway { devices }, registry.path),
        IdentityCommand::App { name, filters, registry } => (name, Role::App { filters }, registry.path),
        IdentityCommand::List { registry } => {
            for (name, role, lane) in identity::list(&registry.path)? {
                println!("{name}\t{role}\t{}", lane.join(" "));
            }
            return Ok(());
        }
        IdentityCommand::Revoke { name, registry: RegistryArg { path: registry } } => {
            if !identity::revoke(&registry, &name)? {
                anyhow::bail!("no gateway or app named {name:?} in {}", registry.display());
            }
            eprintln!("{name:?} revoked in {}; restart mekong serve to apply", registry.display());
            return Ok(());
        }
    };
    let password = identity::create(&registry, &name, &role)?;
    eprintln!(
        "{} {name:?} added to {}; its MQTT password (username {name:?}) is shown once, here, and kept nowhere; \
         restart mekong serve to use it",
        role.as_str(),
        registry.display()
    );
    println!("{password}");
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

/// Resolves on SIGINT or SIGTERM, listened for from the call on (not from the first poll, as
/// `tokio::signal::ctrl_c` is).
#[cfg(unix)]
fn shutdown_signals() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signals() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    })
}
