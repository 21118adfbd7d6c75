//! The feed to the regional data centre: mekong forwards every pack it accepts to an upstream
//! MQTT broker (any broker: Mosquitto, EMQX), store-and-forward.
//!
//! **Durable source.** The ingest path writes one outbox record per accepted pack (its new
//! readings, those already stored left out) in the pack's own store batch
//! ([`mekong_ingest::Outbox`], implemented by [`outbox::Queue`]): so a pack is acknowledged
//! to its device if and only if its record is on disk. Records are numbered by a sequence
//! number that grows by one per pack, across restarts. The acknowledgement thread tells the
//! queue once a flush made them durable; the sender reads only those, so nothing a crash
//! could take back is ever forwarded.
//!
//! **Sender** ([`sender`]): one MQTT 5 connection, each pack published at QoS 1 (or 2) on
//! `<prefix>/<kind>/<device>` as SenML-CBOR or SenML-JSON (the schema crate's encoders), with
//! its sequence number in the user property `mekong-seq`. Once the upstream acknowledges a
//! pack (PUBACK, or PUBCOMP at QoS 2) and every pack before it, the sender removes their
//! records and moves its durable position in one flushed batch. At most `max_in_flight`
//! packs are published beyond the durable position, so a crash or a reconnect resends at
//! most that many packs, each with the same sequence number: a consumer that keeps the last
//! number it took per origin sees every reading exactly once.
//!
//! **Outages.** While the upstream is down the outbox grows; the sender reconnects with
//! capped back-off and catches up at `max_packs_per_sec`. Past `max_outbox_bytes` the oldest
//! packs not yet sent are dropped from the outbox (never from the store), counted and
//! logged with their sequence numbers and times, so that the data centre can fetch that span
//! through the API or an export: the city's own store never stops taking readings because
//! the data centre is away.
#![warn(missing_docs)]

pub mod outbox;
pub mod sender;

use std::sync::Arc;
use std::time::Duration;

use mekong_ingest::SharedOutbox;
use mekong_stats::Stats;
use mekong_store::{Store, StoreError};
use rumqttc::tokio_rustls::rustls::ClientConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use outbox::Queue;

/// Why the forwarder cannot start or go on.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// An outbox record cannot be read.
    #[error("outbox record {seq} is corrupt: {what}")]
    Corrupt {
        /// Its sequence number (0 for the position or a key).
        seq: u64,
        /// What is wrong.
        what: &'static str,
    },
    /// An option is out of range.
    #[error("invalid option: {0}")]
    Config(String),
}

/// The forwarded form of a pack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// SenML-CBOR (`application/senml+cbor`).
    #[default]
    Cbor,
    /// SenML-JSON (`application/senml+json`).
    Json,
}

impl Format {
    /// The MQTT 5 content type of a payload.
    pub const fn content_type(self) -> &'static str {
        match self {
            Format::Cbor => "application/senml+cbor",
            Format::Json => "application/senml+json",
        }
    }
}

/// The upstream broker's password: never printed (its `Debug` says `<redacted>`).
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where and how to forward.
#[derive(Clone)]
pub struct ForwardOptions {
    /// The upstream broker's host name or address.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// TLS to the upstream (the binary builds it, with the configured CA); `None`: plain TCP.
    pub tls: Option<Arc<ClientConfig>>,
    /// MQTT user name, if the upstream asks for one.
    pub username: Option<String>,
    /// Its password.
    pub password: Option<Password>,
    /// MQTT client id; also the origin a consumer tells apart two mekongs by.
    pub client_id: String,
    /// Topics are `<topic_prefix>/<kind>/<device>`.
    pub topic_prefix: String,
    /// SenML-CBOR or SenML-JSON.
    pub format: Format,
    /// 1 or 2.
    pub qos: u8,
    /// Packs published and not yet in the durable position, at most (1 to 65,535).
    pub max_in_flight: u16,
    /// Packs published per second at most, when catching up (0: no limit).
    pub max_packs_per_sec: u32,
    /// The outbox's bytes at most; beyond, the oldest packs not yet sent are dropped.
    pub max_outbox_bytes: u64,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// The first wait before a reconnect; it doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// The longest wait before a reconnect.
    pub reconnect_max: Duration,
}

impl std::fmt::Debug for ForwardOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .field("username", &self.username)
            .field("password", &self.password)
            .field("client_id", &self.client_id)
            .field("topic_prefix", &self.topic_prefix)
            .field("format", &self.format)
            .field("qos", &self.qos)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_packs_per_sec", &self.max_packs_per_sec)
            .field("max_outbox_bytes", &self.max_outbox_bytes)
            .finish_non_exhaustive()
    }
}

impl ForwardOptions {
    /// Plain MQTT to `host:port`, the defaults otherwise.
    pub fn new(host: impl Into<String>, port: u16) -> ForwardOptions {
        ForwardOptions {
            host: host.into(),
            port,
            tls: None,
            username: None,
            password: None,
            client_id: "mekong-forward".into(),
            topic_prefix: "mekong".into(),
            format: Format::Cbor,
            qos: 1,
            max_in_flight: 256,
            max_packs_per_sec: 0,
            max_outbox_bytes: 1 << 30,
            keep_alive: Duration::from_secs(30),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(30),
        }
    }

    /// Checks what the types alone cannot; the message names the option.
    pub fn validate(&self) -> Result<(), ForwardError> {
        let bad = |m: &str| Err(ForwardError::Config(m.to_owned()));
        if self.host.is_empty() {
            return bad("host must be set");
        }
        if self.port == 0 {
            return bad("port must be set");
        }
        if !(1..=2).contains(&self.qos) {
            return bad("qos must be 1 or 2 (qos 0 cannot be store-and-forward)");
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight must be at least 1");
        }
        if self.topic_prefix.is_empty()
            || self.topic_prefix.ends_with('/')
            || self.topic_prefix.contains(['+', '#', '\0'])
        {
            return bad("topic_prefix must be a topic without wildcards and without a trailing /");
        }
        if self.client_id.is_empty() {
            return bad("client_id must be set");
        }
        if self.password.is_some() && self.username.is_none() {
            return bad("a password needs a username");
        }
        if self.reconnect_min.is_zero() || self.reconnect_max < self.reconnect_min {
            return bad("reconnect_min must be above zero and at most reconnect_max");
        }
        Ok(())
    }
}

/// The forwarder: its outbox (open before ingest starts, so that every accepted pack is
/// recorded), then its sender.
#[derive(Debug)]
pub struct Forward {
    store: Store,
    options: ForwardOptions,
    queue: Arc<Queue>,
    found: outbox::Found,
    running: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

impl Forward {
    /// Opens the outbox in `store`: reads the position and sizes up what is queued.
    pub fn open(store: Store, options: ForwardOptions) -> Result<Forward, ForwardError> {
        options.validate()?;
        let (queue, found) = Queue::open(&store)?;
        Ok(Forward { store, options, queue: Arc::new(queue), found, running: None })
    }

    /// The hook the ingest path writes the outbox through.
    pub fn outbox(&self) -> SharedOutbox {
        SharedOutbox(Arc::clone(&self.queue) as Arc<dyn mekong_ingest::Outbox>)
    }

    /// Starts the sender on `runtime`, counting into `stats`.
    pub fn start(&mut self, stats: Arc<Stats>, runtime: &tokio::runtime::Handle) {
        if self.running.is_some() {
            return;
        }
        let (packs, bytes) = self.queue.queued();
        stats.forward.start(packs, bytes, self.found.position);
        tracing::info!(
            upstream = %format!("{}:{}", self.options.host, self.options.port),
            tls = self.options.tls.is_some(),
            position = self.found.position,
            queued = packs,
            queued_bytes = bytes,
            "forwarding accepted packs upstream"
        );
        let (stop, stopped) = watch::channel(false);
        let sender = sender::Sender::new(
            self.store.clone(),
            self.options.clone(),
            Arc::clone(&self.queue),
            stats,
            self.found.position,
        );
        self.running = Some((stop, runtime.spawn(sender.run(stopped))));
    }

    /// Stops the sender after it has written its position.
    pub async fn shutdown(mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(true);
            if let Err(e) = task.await {
                tracing::error!(error = %e, "the forwarder's task failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn options_are_checked_and_never_show_the_password() {
        let mut o = ForwardOptions::new("mqtt.region.example", 8883);
        o.username = Some("cantho".into());
        o.password = Some(Password("hunter2-but-longer".into()));
        o.validate().unwrap();
        assert!(!format!("{o:?}").contains("hunter2"), "{o:?}");
        for (broken, what) in [
            (ForwardOptions { qos: 0, ..o.clone() }, "qos"),
            (ForwardOptions { max_in_flight: 0, ..o.clone() }, "max_in_flight"),
            (ForwardOptions { topic_prefix: "a/#".into(), ..o.clone() }, "topic_prefix"),
            (ForwardOptions { topic_prefix: "a/".into(), ..o.clone() }, "topic_prefix"),
            (ForwardOptions { username: None, ..o.clone() }, "password"),
            (ForwardOptions { host: String::new(), ..o.clone() }, "host"),
        ] {
            let e = broken.validate().unwrap_err().to_string();
            assert!(e.contains(what) && !e.contains("hunter2"), "{e}");
        }
    }
}
