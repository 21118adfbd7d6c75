//! The whole platform in one process: store, broker and ingest thread, HTTP service, and the
//! TLS certificate they serve; started from a [`Config`] and shut down in order (stop taking
//! requests, drain ingest, flush).

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::Arc;

use anyhow::Context;
use axum::http::HeaderValue;
use mekong_api::auth::Access;
use mekong_api::directory::Directory;
use mekong_api::health::HealthOptions;
use mekong_api::{AppState, Feed};
use mekong_ingest::broker::BrokerTls;
use mekong_ingest::{BrokerOptions, Ingest};
use mekong_store::Store;
use socket2::{Domain, Socket, Type};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::exposure::Exposure;
use crate::https::TlsListener;
use crate::registrar::{BrokerAccess, FileRegistrar};
use crate::tls::Tls;
use crate::upkeep::{Upkeep, UpkeepOptions};

/// How long a shutdown waits for HTTP clients to finish what they asked (a CSV export, a
/// client that stopped reading) before it goes on without them.
const HTTP_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// A running platform.
#[derive(Debug)]
pub struct Platform {
    /// MQTT 3.1.1 listener.
    pub mqtt_addr: SocketAddr,
    /// MQTT 5 listener, if on.
    pub mqtt5_addr: Option<SocketAddr>,
    /// MQTT 3.1.1 over TLS, if served.
    pub mqtt_tls_addr: Option<SocketAddr>,
    /// MQTT 5 over TLS, if served.
    pub mqtt5_tls_addr: Option<SocketAddr>,
    /// HTTP listener (the actual port when the configuration said 0).
    pub http_addr: SocketAddr,
    /// Whether the HTTP listener serves TLS (HTTPS).
    pub https: bool,
    tls: Option<Arc<Tls>>,
    tls_watch: Option<JoinHandle<()>>,
    store: Store,
    directory: Directory,
    ingest: Ingest,
    alerts: mekong_alerts::Alerts,
    forward: Option<mekong_forward::Forward>,
    upkeep: Option<Upkeep>,
    backups: Option<crate::backup::Scheduler>,
    http_stop: watch::Sender<bool>,
    http: Vec<JoinHandle<std::io::Result<()>>>,
}

impl Platform {
    /// Opens the store, starts the broker and the ingest thread, and serves HTTP.
    pub async fn start(config: &Config) -> anyhow::Result<Platform> {
        let identities = config.identities()?;
        let exposure = Exposure::decide(config, &identities)?;
        tracing::info!(
            registry = %config.registry.path.display(),
            devices = identities.devices.len(),
            keyed = identities.devices.keyed(),
            mqtt_identities = identities.mqtt.len(),
            api_tokens = identities.tokens.len(),
            "registry loaded"
        );
        let policy = exposure.policy(&identities)?;
        let data_dir = config.storage.data_dir.clone();
        let store = Store::open(&data_dir, &config.store_options())
            .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
        tracing::info!(
            data = %data_dir.display(),
            devices = store.device_count(),
            series = store.series_count(),
            points = store.point_count(),
            "store opened"
        );
        let tls = match config.tls.enabled() {
            true => Some(Arc::new(Tls::load(&config.tls)?)),
            false => None,
        };
        let broker = broker_options(exposure.broker(config), tls.as_deref())?;
        let access = match identities.tokens.is_empty() {
            true => Access::anonymous(),
            false => Access::tokens(identities.tokens, config.security.metrics_open),
        };
        let profiles = identities.profiles;
        let mut pipeline = config.pipeline_options(identities.devices);
        // The outbox is open before ingest starts, so that every accepted pack is in it.
        let mut forward = match config.forward.options()? {
            Some(options) => Some(
                mekong_forward::Forward::open(store.clone(), options)
                    .context("cannot open the upstream feed's outbox")?,
            ),
            None => None,
        };
        pipeline.outbox = forward.as_ref().map(mekong_forward::Forward::outbox);
        // The engine loads its states and observes the feed before ingest starts, so that
        // it sees every pack made durable.
        let alerts =
            mekong_alerts::Alerts::start(store.clone(), config.alerts.options()?, &tokio::runtime::Handle::current())
                .context("cannot start the alert engine")?;
        let feed = Feed::with_hold(mekong_feed::DEFAULT_WINDOW, mekong_feed::DEFAULT_HOLD);
        feed.set_observer(alerts.observer());
        alerts.add_live(Arc::new(mekong_alerts::FeedAlerts(feed.clone())), false);
        let ingest = {
            let (store, broker, feed) = (store.clone(), broker.clone(), feed.clone());
            tokio::task::spawn_blocking(move || Ingest::start(&broker, policy, pipeline, store, feed)).await??
        };
        if let Some(forward) = &mut forward {
            forward.start(ingest.stats(), &tokio::runtime::Handle::current());
        }
        if let Some(publisher) = ingest.publisher() {
            alerts.add_live(Arc::new(crate::alerts::MqttAlerts(publisher)), true);
        }

        let s = &config.storage;
        let upkeep = if s.maintenance_every_secs == 0 {
            None
        } else {
            let options = UpkeepOptions {
                every: std::time::Duration::from_secs(s.maintenance_every_secs),
                fold_after: std::time::Duration::from_secs(s.fold_after_secs),
                retention: config.retention_policy(),
            };
            Some(Upkeep::start(store.clone(), options, ingest.stats()).context("cannot start the upkeep thread")?)
        };
        let b = &config.backup;
        let backups = match (b.repository(), b.every_secs) {
            (Some(repository), every) if every > 0 => Some(
                crate::backup::Scheduler::start(
                    store.clone(),
                    repository,
                    std::time::Duration::from_secs(every),
                    b.keep(),
                )
                .context("cannot start the backup thread")?,
            ),
            _ => None,
        };

        let listen = exposure.http_addresses(config.api.listen)?;
        let mut listeners = Vec::with_capacity(listen.len());
        for addr in listen {
            let listener = match listeners.first().map(|l: &tokio::net::TcpListener| l.local_addr()) {
                // A port picked by the system for the first address serves the others too.
                Some(Ok(first)) if addr.port() == 0 => SocketAddr::new(addr.ip(), first.port()),
                _ => addr,
            };
            listeners.push(bind_dual_stack(listener).with_context(|| format!("cannot listen for http on {listener}"))?);
        }
        let http_addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr()).collect::<Result<_, _>>()?;
        let http_addr = http_addrs.first().copied().context("no http listener")?;
        let cors_origins = config
            .security
            .cors_origins
            .iter()
            .map(|o| HeaderValue::from_str(o).with_context(|| format!("security.cors_origins: {o:?}")))
            .collect::<anyhow::Result<_>>()?;
        let health = HealthOptions {
            min_free_bytes: config.storage.min_free_bytes,
            upkeep_every: upkeep.is_some().then(|| std::time::Duration::from_secs(s.maintenance_every_secs)),
            ..HealthOptions::default()
        };
        let directory = Directory::new(profiles);
        let state = AppState {
            store: store.clone(),
            stats: ingest.stats(),
            access: Arc::new(access),
            cors_origins,
            health,
            directory: directory.clone(),
            registrar: Some(Arc::new(FileRegistrar::new(
                config.registry.path.clone(),
                directory.clone(),
                ingest.registry(),
                ingest.guard().map(|guard| BrokerAccess { guard, exposure }),
            ))),
            alerts: Some(alerts.clone()),
            feed: ingest.feed(),
            backups: b.repository().map(|repository| Arc::new(mekong_api::Backups { repository, keep: b.keep() })),
        };
        let app = mekong_api::router(state);
        // Beside the API, not inside it: the API crate knows nothing of the page, and the
        // page's routes (`/`, `/dashboard/...`) are none of the API's.
        let app = match config.dashboard.enabled {
            true => app.merge(mekong_dashboard::router(&config.dashboard).context("in [dashboard]")?),
            false => app,
        };
        let (http_stop, stopped) = watch::channel(false);
        let https = match (&tls, config.tls.api) {
            // axum serves HTTP/1.1 only.
            (Some(tls), true) => Some(tls.server_config(&[b"http/1.1"], false)?),
            _ => None,
        };
        let mut http = Vec::with_capacity(listeners.len());
        for listener in listeners {
            http.push(match &https {
                Some(config) => serve(TlsListener::new(listener, Arc::clone(config))?, app.clone(), stopped.clone()),
                None => serve(listener, app.clone(), stopped.clone()),
            });
        }
        let tls_watch = match (&tls, config.tls.reload_every_secs) {
            (Some(tls), secs) if secs > 0 => Some(Arc::clone(tls).watch(std::time::Duration::from_secs(secs))),
            _ => None,
        };
        tracing::info!(
            mqtt = %join(&broker.bound_addresses()),
            http = %join(&http_addrs),
            https = https.is_some(),
            tls_sha256 = tls.as_ref().map(|t| t.fingerprint()),
            data = %data_dir.display(),
            "mekong is up"
        );
        let served = |addr: Option<SocketAddr>| addr.filter(|_| tls.is_some());
        Ok(Platform {
            mqtt_addr: broker.listen,
            mqtt5_addr: broker.listen_v5,
            mqtt_tls_addr: served(broker.listen_tls),
            mqtt5_tls_addr: served(broker.listen_v5_tls),
            http_addr,
            https: https.is_some(),
            tls,
            tls_watch,
            store,
            directory,
            ingest,
            alerts,
            forward,
            upkeep,
            backups,
            http_stop,
            http,
        })
    }

    /// The store it serves (a handle: cheap to clone).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// What the API says of each registered device (a handle: cheap to clone).
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Reads the TLS certificate and key files again and serves them to new connections
    /// (SIGHUP does this); `Ok(None)` without TLS. On an error (which names the file) the
    /// certificate in use stays. Returns the SHA-256 fingerprint of the certificate served.
    pub fn reload_tls(&self) -> anyhow::Result<Option<String>> {
        self.tls.as_ref().map(|tls| tls.reload()).transpose()
    }

    /// Stops serving HTTP, stops the ingest thread after what it holds, and flushes the
    /// store. The broker's listeners live until the process exits (rumqttd cannot stop them).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        if let Some(watch) = self.tls_watch {
            watch.abort();
        }
        // Streams end first, so that their clients do not hold up the graceful shutdown;
        // a client that still does not let go (it stopped reading) is cut off after a while.
        self.ingest.feed().close();
        let _ = self.http_stop.send(true);
        let deadline = tokio::time::Instant::now() + HTTP_DRAIN;
        for mut server in self.http {
            match tokio::time::timeout_at(deadline, &mut server).await {
                Ok(Ok(result)) => result.context("http server failed")?,
                Ok(Err(e)) => tracing::error!(error = %e, "http server task failed"),
                Err(_) => {
                    server.abort();
                    tracing::warn!(wait = ?HTTP_DRAIN, "http connections still open at shutdown are closed with the process");
                }
            }
        }
        let ingest = self.ingest;
        tokio::task::spawn_blocking(move || ingest.shutdown()).await?;
        // After ingest: its last groups are in the outbox; the sender writes its position.
        if let Some(forward) = self.forward {
            forward.shutdown().await;
        }
        // After ingest: no reading comes any more; how far each rule has evaluated is saved.
        let alerts = self.alerts;
        tokio::task::spawn_blocking(move || alerts.stop()).await?;
        if let Some(upkeep) = self.upkeep {
            tokio::task::spawn_blocking(move || upkeep.stop()).await?;
        }
        if let Some(backups) = self.backups {
            tokio::task::spawn_blocking(move || backups.stop()).await?;
        }
        let store = self.store;
        let flushed = tokio::task::spawn_blocking(move || store.flush())
            .await?
            .context("last flush failed: readings not acknowledged stay with their devices")?;
        tracing::info!(bytes = flushed.bytes, "store flushed; mekong stopped");
        Ok(())
    }
}

/// The broker's options with the TLS listeners' configuration, when TLS is on; checked
/// again with it, since the TLS listeners obey the loopback-only rule too.
pub fn broker_options(options: BrokerOptions, tls: Option<&Tls>) -> anyhow::Result<BrokerOptions> {
    // MQTT over TLS has no ALPN name that clients send.
    let tls = tls.map(|tls| tls.server_config(&[], true)).transpose()?.map(BrokerTls);
    let options = BrokerOptions { tls, ..options };
    options.validate().context("in [broker]")?;
    Ok(options)
}

/// Serves `app` on `listener` until `stopped` says stop.
fn serve<L>(listener: L, app: axum::Router, mut stopped: watch::Receiver<bool>) -> JoinHandle<std::io::Result<()>>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await
    })
}

/// A listener that takes IPv4 as well as IPv6 when given an IPv6 address (`[::]`), whatever
/// the system's `bindv6only` default.
fn bind_dual_stack(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    tokio::net::TcpListener::from_std(StdTcpListener::from(socket))
}

/// Addresses as one log field: `127.0.0.1:1883 [::1]:1883`.
fn join(addrs: &[SocketAddr]) -> String {
    addrs.iter().map(SocketAddr::to_string).collect::<Vec<_>>().join(" ")
}
