//! The whole platform in one process: store, broker and ingest thread, HTTP service; started
//! from a [`Config`] and shut down in order (stop taking requests, drain ingest, flush).

use std::net::{SocketAddr, TcpListener as StdTcpListener};

use anyhow::Context;
use mekong_api::AppState;
use mekong_ingest::Ingest;
use mekong_store::Store;
use socket2::{Domain, Socket, Type};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Config;
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
    http_stop: oneshot::Sender<()>,
    http: JoinHandle<std::io::Result<()>>,
}

impl Platform {
    /// Opens the store, starts the broker and the ingest thread, and serves HTTP.
    pub async fn start(config: &Config) -> anyhow::Result<Platform> {
        let data_dir = config.storage.data_dir.clone();
        let store = Store::open(&data_dir, &config.store_options()).with_context(|| {
            format!("cannot open the store in {} (is another mekong using it?)", data_dir.display())
        })?;
        let broker = config.broker.clone();
        let pipeline = config.pipeline_options()?;
        let ingest = {
            let store = store.clone();
            let broker = broker.clone();
            tokio::task::spawn_blocking(move || Ingest::start(&broker, pipeline, store)).await??
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
            Some(Upkeep::start(store.clone(), options).context("cannot start the upkeep thread")?)
        };

        let listener = bind_dual_stack(config.api.listen)
            .with_context(|| format!("cannot listen for http on {}", config.api.listen))?;
        let http_addr = listener.local_addr()?;
        let app = mekong_api::router(AppState { store: store.clone(), stats: ingest.stats() });
        let (http_stop, stopped) = oneshot::channel::<()>();
        let http = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(mqtt = %broker.listen, mqtt5 = ?broker.listen_v5, http = %http_addr, data = %data_dir.display(), "mekong is up");
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

    /// Stops serving HTTP, stops the ingest thread after what it holds, and flushes the
    /// store. The broker's listeners live until the process exits (rumqttd cannot stop them).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.http_stop.send(());
        match self.http.await {
            Ok(result) => result.context("http server failed")?,
            Err(e) => tracing::error!(error = %e, "http server task failed"),
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
