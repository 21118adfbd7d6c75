//! The embedded MQTT broker and the ingest path: from a publish on `mekong/v1/{id}/up` to
//! points in the store, and an acknowledgement on `mekong/v1/{id}/down` once they are on disk.
//!
//! rumqttd runs inside the process. The ingest path is an in-process link to it (not a TCP
//! client). The ingest thread (`worker`) takes every publish on `mekong/v1/+/up` that the link
//! holds as one group; the [`Pipeline`] checks topic and size, decodes each
//! SenML-CBOR pack with `mekong-schema`, and writes the readings of all accepted packs to the
//! store in one atomic batch. A pack is accepted whole or refused whole, and every refusal is
//! counted per device and kept, with its reason, in a bounded log ([`mekong_stats`]). The
//! acknowledgement thread (`ack`) then flushes the store once for every group stored since
//! its last flush (group commit) and only then acknowledges each pack to its device.
//!
//! When the store cannot write (a full disk), the packs of a group are deferred
//! ([`Outcome::Deferred`]): not stored, not refused, not answered, so devices resend them. The
//! store opens its database afresh by itself once writes may succeed again; acknowledgements
//! need a flush of the very store generation their packs were written to.
//!
//! The link subscribes at QoS 0 and holds the PUBACKs of the devices' QoS 1 uplinks (vendored
//! rumqttd, patch 24): the acknowledgement thread releases each with the pack's answer, so a
//! device's PUBACK, too, says that its pack is on disk. If the link falls behind by more than
//! the broker's per-filter log (segment size x segment count), rumqttd skips the unread
//! messages. The ingest thread (`worker`) sees the gap in the log offsets and counts the
//! skipped messages as lost (`lost` in [`Stats`]), so that nothing is lost silently; they get
//! no PUBACK.
#![warn(missing_docs)]

pub mod access;
mod ack;
pub mod broker;
pub mod guard;
mod outbox;
mod pipeline;
mod refusal_log;
pub mod registry;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use mekong_feed::Feed;
use mekong_store::Store;

pub use access::Policy;
pub use broker::BrokerOptions;
use guard::Guard;
pub use mekong_stats::Stats;
pub use outbox::{Outbox, SharedOutbox};
pub use pipeline::{Accepted, Handled, Outcome, Pipeline, PipelineOptions, Rejection};
pub use registry::{DeviceKey, Registry, SharedRegistry};

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Groups stored but not yet flushed that may wait for the acknowledgement thread; beyond
/// this the ingest thread waits, and the broker's log absorbs the difference.
const PENDING_GROUPS: usize = 64;

/// Why the ingest side could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A broker or ingest option is out of range.
    #[error("invalid option: {0}")]
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

/// The running broker, ingest thread and acknowledgement thread.
#[derive(Debug)]
pub struct Ingest {
    stats: Arc<Stats>,
    guard: Option<Guard>,
    feed: Feed,
    registry: SharedRegistry,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    publisher: Option<Publisher>,
}

/// The platform's own publishes into the broker (alert states), through an in-process link
/// of their own; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    tx: Arc<std::sync::Mutex<rumqttd::local::LinkTx>>,
    // Kept so that the broker keeps the link's connection; nothing is read from it (the
    // link subscribes to nothing).
    _rx: Arc<rumqttd::local::LinkRx>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Publisher")
    }
}

impl Publisher {
    /// Publishes `payload` on `topic`, retained (QoS 0): the broker keeps it for every later
    /// subscriber (vendored rumqttd, patch 21); an empty payload removes it.
    pub fn publish_retained(&self, topic: String, payload: Vec<u8>) -> Result<(), IngestError> {
        let mut tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        tx.publish_retained(topic, payload).map(|_| ()).map_err(|e| IngestError::Link(e.to_string()))
    }
}

impl Ingest {
    /// Starts the broker with `broker` options (every client checked against `policy`, if
    /// there is one), the ingest thread writing to `store` and the acknowledgement thread,
    /// which puts what it makes durable on `feed` (whose observer, set before, sees every
    /// pack); returns once the broker accepts MQTT connections.
    pub fn start(
        broker: &BrokerOptions,
        policy: Option<Policy>,
        pipeline: PipelineOptions,
        store: Store,
        feed: Feed,
    ) -> Result<Ingest, IngestError> {
        let stats = Arc::new(Stats::new(pipeline.rejection_log_capacity));
        let guard = policy.map(|policy| Guard::new(policy, Arc::clone(&stats)));
        let (tx, rx, publisher) = broker::start_links(broker, guard.as_ref(), true, true)?;
        let publisher =
            publisher.map(|(tx, rx)| Publisher { tx: Arc::new(std::sync::Mutex::new(tx)), _rx: Arc::new(rx) });
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledge = pipeline.acknowledge;
        let outbox = pipeline.outbox.clone();
        let (groups_tx, groups_rx) = std::sync::mpsc::sync_channel(PENDING_GROUPS);
        let acker = {
            let (store, stats, feed) = (store.clone(), Arc::clone(&stats), feed.clone());
            std::thread::Builder::new()
                .name("mekong-ack".into())
                .spawn(move || ack::run(groups_rx, tx, store, stats, feed, acknowledge, outbox))?
        };
        let mut pipeline = Pipeline::new(pipeline, store, Arc::clone(&stats));
        let registry = pipeline.registry_handle();
        let worker = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("mekong-ingest".into())
                .spawn(move || worker::run(rx, &mut pipeline, &stop, &groups_tx))?
        };
        let ingest = Ingest { stats, guard, feed, registry, stop, threads: vec![worker, acker], publisher };
        broker::wait_listening(broker)?;
        Ok(ingest)
    }

    /// The handle that replaces the ingest thread's registry while it runs.
    pub fn registry(&self) -> SharedRegistry {
        self.registry.clone()
    }

    /// The platform's own publisher into the broker.
    pub fn publisher(&self) -> Option<Publisher> {
        self.publisher.clone()
    }

    /// The broker's gatekeeper, whose policy can be replaced while it runs; `None` when the
    /// broker was started without a policy.
    pub fn guard(&self) -> Option<Guard> {
        self.guard.clone()
    }

    /// Counters and the rejection log, shared with the query API.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// The readings once durable, for the alert engine and the API's stream.
    pub fn feed(&self) -> Feed {
        self.feed.clone()
    }

    /// Stops the ingest thread after what the link holds, then the acknowledgement thread
    /// after its last flush. rumqttd offers no way to stop its listeners, so they live until
    /// the process exits; publishes after this are not stored.
    pub fn shutdown(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The ingest thread first: when it returns, the acknowledgement thread drains and ends.
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("an ingest thread panicked");
            }
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.stop_threads();
    }
}
