//! The embedded MQTT broker and the ingest path: from a publish on `mekong/v1/{id}/up` to
//! points in the store.
//!
//! rumqttd runs inside the process. The ingest path is an in-process link to it (not a TCP
//! client): a dedicated thread receives every publish under `mekong/#`, checks the topic and
//! size, decodes the SenML-CBOR pack with `mekong-schema`, and writes the readings of the pack
//! to the store in one atomic batch. A pack is accepted whole or refused whole, and every
//! refusal is counted per device and kept, with its reason, in a bounded log ([`stats`]).
//!
//! The link subscribes at QoS 0, and the broker acknowledges a device's QoS 1 publish before
//! the link has read it. If the link falls behind by more than the broker's per-filter log
//! (segment size x segment count), rumqttd skips the unread messages. The pipeline sees the
//! gap in the log offsets and counts the skipped messages as lost ([`stats::Stats::lost`]),
//! so that nothing is lost silently.
#![warn(missing_docs)]

pub mod broker;
mod pipeline;
pub mod registry;
pub mod stats;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use mekong_store::Store;

pub use broker::BrokerOptions;
pub use pipeline::{Accepted, Pipeline, PipelineOptions, Rejection};
pub use registry::Registry;
pub use stats::Stats;

/// Why the ingest side could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A broker option is out of range.
    #[error("invalid broker option: {0}")]
    Config(String),
    /// A listener address cannot be bound.
    #[error("cannot listen for mqtt on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The broker did not accept connections in time.
    #[error("mqtt broker is not accepting connections on {0}")]
    NotListening(std::net::SocketAddr),
    /// The in-process link to the broker failed.
    #[error("broker link: {0}")]
    Link(String),
    /// A thread could not be started.
    #[error("cannot start thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// The running broker and ingest thread.
#[derive(Debug)]
pub struct Ingest {
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

impl Ingest {
    /// Starts the broker with `broker` options and the ingest thread writing to `store`;
    /// returns once the broker accepts MQTT connections.
    pub fn start(broker: &BrokerOptions, pipeline: PipelineOptions, store: Store) -> Result<Ingest, IngestError> {
        let stats = Arc::new(Stats::new(pipeline.rejection_log_capacity));
        let link = broker::start(broker)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut pipeline = Pipeline::new(pipeline, store, Arc::clone(&stats));
        let worker = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("mekong-ingest".into())
                .spawn(move || pipeline::run(link, &mut pipeline, &stop))?
        };
        broker::wait_listening(broker)?;
        Ok(Ingest { stats, stop, worker: Some(worker) })
    }

    /// Counters and the rejection log, shared with the query API.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Stops the ingest thread after the message in hand. rumqttd offers no way to stop its
    /// listeners, so they live until the process exits; publishes after this are not stored.
    pub fn shutdown(mut self) {
        self.stop_worker();
    }

    fn stop_worker(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(worker) = self.worker.take() {
            if worker.join().is_err() {
                tracing::error!("ingest thread panicked");
            }
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.stop_worker();
    }
}
