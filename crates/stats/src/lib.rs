//! What the ingest path has done since start: counters for the API and metrics, refusals per
//! device, and the bounded log of recent rejections. (A device's lasting counts, which
//! survive restarts, are kept by the store with its metadata.)
//!
//! A crate of its own so that the query service reads them without depending on the broker:
//! the ingest path writes (`record_*`), the API and metrics read (`snapshot`, `device`,
//! `rejections`).
#![warn(missing_docs)]

mod forward;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use mekong_schema::Reason;

pub use forward::{ForwardSnapshot, ForwardStats};

/// Per-device counters stop growing in number past this many devices: the counts of further
/// devices go to [`OTHER_DEVICES`], so a flood of made-up ids cannot grow memory without bound.
pub const MAX_TRACKED_DEVICES: usize = 100_000;
/// Counter key for publishes whose topic holds no valid device id.
pub const INVALID_DEVICE: &str = "(invalid)";
/// Counter key for devices beyond [`MAX_TRACKED_DEVICES`].
pub const OTHER_DEVICES: &str = "(other)";
/// Bytes of the payload kept in a rejection entry.
pub const HEAD_BYTES: usize = 32;
/// Characters of the topic kept in a rejection entry.
pub const TOPIC_CHARS: usize = 128;

/// One refused publish.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectionEntry {
    /// Time of receipt, ms since the epoch.
    pub time_ms: i64,
    /// The topic (at most [`TOPIC_CHARS`] characters, invalid UTF-8 replaced).
    pub topic: String,
    /// The device id, when the topic holds a valid one.
    pub device: Option<String>,
    /// The reason kind.
    pub kind: Reason,
    /// The reason, for people.
    pub reason: String,
    /// Payload size in bytes.
    pub payload_len: usize,
    /// The first [`HEAD_BYTES`] bytes of the payload.
    pub head: Vec<u8>,
}

/// What the broker refused one MQTT identity after it logged in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccessRefusals {
    /// Publishes on a topic outside its lane (dropped, never stored).
    pub publishes: u64,
    /// Subscriptions to a filter outside its lane (answered with a failure code).
    pub subscriptions: u64,
}

/// A consistent copy of the global counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Publishes the ingest path received.
    pub received: u64,
    /// Packs accepted and stored.
    pub accepted: u64,
    /// Readings stored (new points).
    pub readings: u64,
    /// Readings that were already stored.
    pub duplicates: u64,
    /// Publishes refused.
    pub rejected: u64,
    /// Refusals by reason kind.
    pub rejected_by_kind: BTreeMap<&'static str, u64>,
    /// Publishes the broker skipped because the ingest path fell behind its log.
    pub lost: u64,
    /// Packs that passed every check but that the store could not write (a full disk):
    /// not answered, so that their devices resend them.
    pub deferred: u64,
    /// Answers (acknowledgements, and refusals that rest on stored data) not sent because
    /// the flush that would have made their packs' store state durable failed.
    pub withheld: u64,
    /// Packs whose readings are flushed to disk.
    pub durable_packs: u64,
    /// Readings (new points) flushed to disk.
    pub durable_readings: u64,
    /// Store flushes (each covers a group of packs).
    pub flushes: u64,
    /// Time spent in those flushes, microseconds.
    pub flush_micros: u64,
    /// Acknowledgements and refusals published on downlink topics.
    pub downlinks: u64,
    /// When these counters started (the process's start), ms since the epoch.
    pub started_ms: i64,
    /// When messages were last lost, ms since the epoch.
    pub last_lost_ms: Option<i64>,
    /// When the store's upkeep last finished a pass, ms since the epoch.
    pub last_upkeep_ms: Option<i64>,
    /// MQTT connections refused at CONNECT, by reason.
    pub connects_refused: BTreeMap<&'static str, u64>,
    /// Publishes and subscriptions the broker refused, by identity (`anonymous` for
    /// clients without credentials).
    pub access_refused: BTreeMap<String, AccessRefusals>,
    /// The feed to the upstream broker, if it is on.
    pub forward: Option<ForwardSnapshot>,
}

#[derive(Debug)]
struct Inner {
    log: VecDeque<RejectionEntry>,
    capacity: usize,
    by_kind: BTreeMap<Reason, u64>,
    /// Refusals per device id, including ids the store does not know.
    devices: HashMap<String, u64>,
    connects_refused: BTreeMap<&'static str, u64>,
    // Keyed by registry identities and `anonymous` only, so bounded by the registry.
    access_refused: BTreeMap<String, AccessRefusals>,
}

/// Shared between the ingest thread and the query API.
#[derive(Debug)]
pub struct Stats {
    received: AtomicU64,
    accepted: AtomicU64,
    readings: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    lost: AtomicU64,
    deferred: AtomicU64,
    withheld: AtomicU64,
    durable_packs: AtomicU64,
    durable_readings: AtomicU64,
    flushes: AtomicU64,
    flush_micros: AtomicU64,
    downlinks: AtomicU64,
    started_ms: i64,
    /// When messages were last lost, ms since the epoch; 0: never.
    last_lost_ms: AtomicI64,
    /// When the store's upkeep last finished a pass, ms since the epoch; 0: never.
    last_upkeep_ms: AtomicI64,
    /// The feed to the upstream broker, written by the forwarder.
    pub forward: ForwardStats,
    inner: Mutex<Inner>,
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Stats {
    /// Empty counters and a rejection log that keeps the `capacity` most recent entries.
    pub fn new(capacity: usize) -> Stats {
        Stats {
            received: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            readings: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            deferred: AtomicU64::new(0),
            withheld: AtomicU64::new(0),
            durable_packs: AtomicU64::new(0),
            durable_readings: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            flush_micros: AtomicU64::new(0),
            downlinks: AtomicU64::new(0),
            started_ms: now_ms(),
            last_lost_ms: AtomicI64::new(0),
            last_upkeep_ms: AtomicI64::new(0),
            forward: ForwardStats::default(),
            inner: Mutex::new(Inner {
                log: VecDeque::with_capacity(capacity.min(4096)),
                capacity,
                by_kind: BTreeMap::new(),
                devices: HashMap::new(),
                connects_refused: BTreeMap::new(),
                access_refused: BTreeMap::new(),
            }),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every update below leaves the maps consistent between statements.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A flush that made `packs` packs and `readings` new readings durable, in `micros`.
    pub fn record_flush(&self, packs: u64, readings: u64, micros: u64) {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.flush_micros.fetch_add(micros, Ordering::Relaxed);
        self.durable_packs.fetch_add(packs, Ordering::Relaxed);
        self.durable_readings.fetch_add(readings, Ordering::Relaxed);
    }

    /// Downlinks published.
    pub fn record_downlinks(&self, n: u64) {
        self.downlinks.fetch_add(n, Ordering::Relaxed);
    }

    /// A publish received.
    pub fn record_received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    /// A pack accepted: new readings and duplicates.
    pub fn record_accepted(&self, readings: usize, duplicates: usize) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.readings.fetch_add(readings as u64, Ordering::Relaxed);
        self.duplicates.fetch_add(duplicates as u64, Ordering::Relaxed);
    }

    /// A refused publish, counted and kept in the log.
    pub fn record_rejection(&self, entry: RejectionEntry) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.inner();
        *inner.by_kind.entry(entry.kind).or_default() += 1;
        *inner.device_entry(entry.device.as_deref().unwrap_or(INVALID_DEVICE)) += 1;
        if inner.capacity == 0 {
            return;
        }
        if inner.log.len() == inner.capacity {
            inner.log.pop_front();
        }
        inner.log.push_back(entry);
    }

    /// A pack the store could not write, left unanswered.
    pub fn record_deferred(&self) {
        self.deferred.fetch_add(1, Ordering::Relaxed);
    }

    /// Answers held back because their flush failed.
    pub fn record_withheld(&self, answers: u64) {
        self.withheld.fetch_add(answers, Ordering::Relaxed);
    }

    /// Messages the broker skipped.
    pub fn record_lost(&self, messages: u64) {
        self.lost.fetch_add(messages, Ordering::Relaxed);
        self.last_lost_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// A pass of the store's upkeep (folding, retention) finished.
    pub fn record_upkeep_pass(&self) {
        self.last_upkeep_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// An MQTT connection refused at CONNECT, for `reason` (a fixed label).
    pub fn record_connect_refused(&self, reason: &'static str) {
        *self.inner().connects_refused.entry(reason).or_default() += 1;
    }

    /// A publish (`subscription` false) or a subscription refused to `identity`.
    pub fn record_access_refused(&self, identity: &str, subscription: bool) {
        let mut inner = self.inner();
        let entry = match inner.access_refused.get_mut(identity) {
            Some(entry) => entry,
            None => inner.access_refused.entry(identity.to_owned()).or_default(),
        };
        match subscription {
            true => entry.subscriptions += 1,
            false => entry.publishes += 1,
        }
    }

    /// The global counters.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.inner();
        Snapshot {
            received: self.received.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            readings: self.readings.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            rejected_by_kind: inner.by_kind.iter().map(|(k, n)| (k.as_str(), *n)).collect(),
            lost: self.lost.load(Ordering::Relaxed),
            deferred: self.deferred.load(Ordering::Relaxed),
            withheld: self.withheld.load(Ordering::Relaxed),
            durable_packs: self.durable_packs.load(Ordering::Relaxed),
            durable_readings: self.durable_readings.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
            flush_micros: self.flush_micros.load(Ordering::Relaxed),
            downlinks: self.downlinks.load(Ordering::Relaxed),
            started_ms: self.started_ms,
            last_lost_ms: Some(self.last_lost_ms.load(Ordering::Relaxed)).filter(|&t| t > 0),
            last_upkeep_ms: Some(self.last_upkeep_ms.load(Ordering::Relaxed)).filter(|&t| t > 0),
            connects_refused: inner.connects_refused.clone(),
            access_refused: inner.access_refused.clone(),
            forward: self.forward.snapshot(),
        }
    }

    /// Publishes of one device refused since start (zero if none).
    pub fn device_rejected(&self, id: &str) -> u64 {
        self.inner().devices.get(id).copied().unwrap_or_default()
    }

    /// Up to `limit` most recent rejections, newest first, optionally of one device only.
    pub fn rejections(&self, device: Option<&str>, limit: usize) -> Vec<RejectionEntry> {
        let inner = self.inner();
        inner
            .log
            .iter()
            .rev()
            .filter(|e| device.is_none_or(|d| e.device.as_deref() == Some(d)))
            .take(limit)
            .cloned()
            .collect()
    }
}

impl Inner {
    fn device_entry(&mut self, device: &str) -> &mut u64 {
        let key = if self.devices.contains_key(device) || self.devices.len() < MAX_TRACKED_DEVICES {
            device
        } else {
            OTHER_DEVICES
        };
        self.devices.entry(key.to_owned()).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(device: Option<&str>, n: i64) -> RejectionEntry {
        RejectionEntry {
            time_ms: n,
            topic: "t".into(),
            device: device.map(Into::into),
            kind: Reason::Truncated,
            reason: "r".into(),
            payload_len: 0,
            head: vec![],
        }
    }

    #[test]
    fn the_log_keeps_the_newest_entries_up_to_its_capacity() {
        let stats = Stats::new(3);
        for n in 0..5 {
            stats.record_rejection(entry(Some("a"), n));
        }
        let times: Vec<_> = stats.rejections(None, 10).iter().map(|e| e.time_ms).collect();
        assert_eq!(times, [4, 3, 2]);
        assert_eq!(stats.snapshot().rejected, 5);
        assert_eq!(stats.device_rejected("a"), 5);
        assert_eq!(stats.snapshot().rejected_by_kind.get("truncated"), Some(&5));
    }

    #[test]
    fn rejections_filter_by_device_and_invalid_ids_have_their_own_counter() {
        let stats = Stats::new(10);
        stats.record_rejection(entry(Some("a"), 1));
        stats.record_rejection(entry(None, 2));
        stats.record_rejection(entry(Some("b"), 3));
        assert_eq!(stats.rejections(Some("a"), 10).len(), 1);
        assert_eq!(stats.rejections(None, 2).len(), 2);
        assert_eq!(stats.device_rejected(INVALID_DEVICE), 1);
    }

    #[test]
    fn broker_refusals_are_counted_by_reason_and_identity() {
        let stats = Stats::new(0);
        stats.record_connect_refused("bad_credentials");
        stats.record_connect_refused("bad_credentials");
        stats.record_access_refused("gw-1", false);
        stats.record_access_refused("gw-1", true);
        stats.record_access_refused("gw-1", true);
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.connects_refused.get("bad_credentials"), Some(&2));
        assert_eq!(snapshot.access_refused.get("gw-1"), Some(&AccessRefusals { publishes: 1, subscriptions: 2 }));
    }

    #[test]
    fn per_device_counters_are_bounded() {
        let stats = Stats::new(0);
        for i in 0..MAX_TRACKED_DEVICES + 10 {
            stats.record_rejection(entry(Some(&format!("d{i}")), 0));
        }
        assert_eq!(stats.device_rejected(OTHER_DEVICES), 10);
        assert_eq!(stats.inner().devices.len(), MAX_TRACKED_DEVICES + 1);
        assert_eq!(stats.snapshot().rejected, (MAX_TRACKED_DEVICES + 10) as u64);
    }
}
