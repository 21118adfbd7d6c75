//! The whole platform in one process: store, broker and ingest thread, HTTP service; started
//! from a [`Config`] and shut down in order (stop taking requests, drain ingest, flush).

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::Arc;

use anyhow::Context;
use axum::http::HeaderValue;
use mekong_api::auth::Access;
use mekong_api::health::HealthOptions;
use mekong_api::AppState;
use mekong_ingest::Ingest;
use mekong_store::Store;
use socket2::{Domain, Socket, Type};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::exposure::Exposure;
use crate::upkeep::{Upkeep, UpkeepOptions};

/// A running platform.
#[derive(Debug)]
pub struct Platform {
    /// MQTT 3.1.1 listener.
    pub mqtt_addr: SocketAddr,
    /// MQTT 5 listener, if on.
    pub mqtt5_addr: Option<SocketAddr>,
    /// HTTP listener (the actual port when the configuration said 0).
    pub http_addr: SocketAddr,
    store: Store,
    ingest: Ingest,
    upkeep: Option<Upkeep>,
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
        let broker = exposure.broker(config);
        let access = match identities.tokens.is_empty() {
            true => Access::anonymous(),
            false => Access::tokens(identities.tokens, config.security.metrics_open),
        };
        let pipeline = config.pipeline_options(identities.devices);
        let ingest = {
            let store = store.clone();
            let broker = broker.clone();
            tokio::task::spawn_blocking(move || Ingest::start(&broker, policy, pipeline, store)).await??
        };

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
        let state =
            AppState { store: store.clone(), stats: ingest.stats(), access: Arc::new(access), cors_origins, health };
        let app = mekong_api::router(state);
        let (http_stop, stopped) = watch::channel(false);
        let servers = listeners.into_iter().map(|listener| {
            let (app, mut stopped) = (app.clone(), stopped.clone());
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    })
                    .await
            })
        });
        let http: Vec<JoinHandle<std::io::Result<()>>> = servers.collect();
        tracing::info!(
            mqtt = %join(&broker.bound_addresses()),
            http = %join(&http_addrs),
            data = %data_dir.display(),
            "mekong is up"
        );
        Ok(Platform {
            mqtt_addr: broker.listen,
            mqtt5_addr: broker.listen_v5,
            http_addr,
            store,
            ingest,
            upkeep,
            http_stop,
            http,
        })
    }

    /// The store it serves (a handle: cheap to clone).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stops serving HTTP, stops the ingest thread after what it holds, and flushes the
    /// store. The broker's listeners live until the process exits (rumqttd cannot stop them).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.http_stop.send(true);
        for server in self.http {
            match server.await {
                Ok(result) => result.context("http server failed")?,
                Err(e) => tracing::error!(error = %e, "http server task failed"),
            }
        }
        let ingest = self.ingest;
        tokio::task::spawn_blocking(move || ingest.shutdown()).await?;
        if let Some(upkeep) = self.upkeep {
            tokio::task::spawn_blocking(move || upkeep.stop()).await?;
        }
        let store = self.store;
        let flushed = tokio::task::spawn_blocking(move || store.flush())
            .await?
            .context("last flush failed: readings not acknowledged stay with their devices")?;
        tracing::info!(bytes = flushed.bytes, "store flushed; mekong stopped");
        Ok(())
    }
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
