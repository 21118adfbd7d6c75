//! What the feed to the upstream broker (the regional data centre) has done: written by the
//! forwarder, read by `/v1/stats` and `/metrics`.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// The forwarder's counters and gauges; all zero, and `enabled` false, when it is off.
#[derive(Debug, Default)]
pub struct ForwardStats {
    enabled: AtomicBool,
    connected: AtomicBool,
    queued_packs: AtomicU64,
    queued_bytes: AtomicU64,
    sent_packs: AtomicU64,
    sent_readings: AtomicU64,
    resent_packs: AtomicU64,
    errors: AtomicU64,
    dropped_packs: AtomicU64,
    dropped_readings: AtomicU64,
    position: AtomicU64,
    lag_ms: AtomicI64,
}

/// The forwarder's figures at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardSnapshot {
    /// Whether connected to the upstream broker now.
    pub connected: bool,
    /// Packs in the outbox: accepted, not yet acknowledged by the upstream broker.
    pub queued_packs: u64,
    /// Their bytes in the store.
    pub queued_bytes: u64,
    /// Packs the upstream broker acknowledged (PUBACK) since start.
    pub sent_packs: u64,
    /// Their readings.
    pub sent_readings: u64,
    /// Packs published again after a reconnect (the consumer may see them twice).
    pub resent_packs: u64,
    /// Connection and publish errors since start.
    pub errors: u64,
    /// Packs dropped from a full outbox, never forwarded, since start.
    pub dropped_packs: u64,
    /// Their readings.
    pub dropped_readings: u64,
    /// Sequence number of the last pack acknowledged upstream, in order.
    pub position: u64,
    /// From acceptance to the upstream's acknowledgement of the last pack acknowledged, ms.
    pub lag_ms: i64,
}

impl ForwardStats {
    /// Marks the forwarder as running, with `queued` packs of `bytes` found in its outbox.
    pub fn start(&self, queued: u64, bytes: u64, position: u64) {
        self.enabled.store(true, Ordering::Relaxed);
        self.set_queued(queued, bytes, position);
    }

    /// Whether connected to the upstream broker.
    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }

    /// The outbox holds `packs` packs of `bytes`, and every pack up to `position` is
    /// acknowledged upstream and out of it.
    pub fn set_queued(&self, packs: u64, bytes: u64, position: u64) {
        self.queued_packs.store(packs, Ordering::Relaxed);
        self.queued_bytes.store(bytes, Ordering::Relaxed);
        self.position.fetch_max(position, Ordering::Relaxed);
    }

    /// The upstream acknowledged a pack of `readings` accepted `lag_ms` ago; `position` is the
    /// sequence number up to which every pack is acknowledged.
    pub fn record_sent(&self, readings: u64, lag_ms: i64, position: u64) {
        self.sent_packs.fetch_add(1, Ordering::Relaxed);
        self.sent_readings.fetch_add(readings, Ordering::Relaxed);
        self.lag_ms.store(lag_ms, Ordering::Relaxed);
        self.position.fetch_max(position, Ordering::Relaxed);
    }

    /// `packs` published again on a new connection.
    pub fn record_resent(&self, packs: u64) {
        self.resent_packs.fetch_add(packs, Ordering::Relaxed);
    }

    /// A connection or publish error.
    pub fn record_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// `packs` of `readings` dropped from a full outbox.
    pub fn record_dropped(&self, packs: u64, readings: u64) {
        self.dropped_packs.fetch_add(packs, Ordering::Relaxed);
        self.dropped_readings.fetch_add(readings, Ordering::Relaxed);
    }

    /// The figures now; `None` when the forwarder is off.
    pub fn snapshot(&self) -> Option<ForwardSnapshot> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.enabled.load(Ordering::Relaxed).then(|| ForwardSnapshot {
            connected: self.connected.load(Ordering::Relaxed),
            queued_packs: get(&self.queued_packs),
            queued_bytes: get(&self.queued_bytes),
            sent_packs: get(&self.sent_packs),
            sent_readings: get(&self.sent_readings),
            resent_packs: get(&self.resent_packs),
            errors: get(&self.errors),
            dropped_packs: get(&self.dropped_packs),
            dropped_readings: get(&self.dropped_readings),
            position: get(&self.position),
            lag_ms: self.lag_ms.load(Ordering::Relaxed),
        })
    }
}
