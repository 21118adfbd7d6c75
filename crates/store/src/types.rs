//! The values the store takes and gives: points, packs to write, buckets, what a write or
//! flush did, and the store's health.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::PackRefused;
#[cfg(doc)]
use crate::Store;

/// A point to write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NewPoint<'a> {
    /// Metric name (the series within the device).
    pub metric: &'a str,
    /// Unit, if the reading gave one.
    pub unit: Option<&'a str>,
    /// Time in ms since the Unix epoch.
    pub time_ms: i64,
    /// The value (a boolean as 0.0 or 1.0).
    pub value: f64,
    /// What the value is: fixed for a series by its first point, like its unit.
    pub value_kind: ValueKind,
}

/// What the values of a series are. Booleans (SenML `vb`) are stored as 0.0 and 1.0 in the
/// same chunks as numbers (a run of equal values costs almost nothing), and the series'
/// metadata says to read them back as booleans.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// Numbers (SenML `v`, `s`).
    #[default]
    Number,
    /// Booleans (SenML `vb`): a pump running, a flood gate open.
    Boolean,
}

impl ValueKind {
    /// Its name in the API: `number` or `boolean`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ValueKind::Number => "number",
            ValueKind::Boolean => "boolean",
        }
    }
}

/// A stored point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Time in ms since the Unix epoch.
    pub time_ms: i64,
    /// The value.
    pub value: f64,
}

/// The points of one pack, for [`Store::write_packs`].
#[derive(Debug, Clone, Copy)]
pub struct PackWrite<'a> {
    /// The device that sent them.
    pub device: &'a str,
    /// The device's kind.
    pub kind: &'a str,
    /// Time of receipt, ms since the epoch.
    pub seen_ms: i64,
    /// The points.
    pub points: &'a [NewPoint<'a>],
    /// A sequence number the pack carried, with the 8-byte id of the numbering it belongs to
    /// (opaque here; ingest names the key the pack was signed with): stored for the device in
    /// the same batch as the points, so that a pack and its number are durable together.
    /// Within one numbering the highest number stored is kept; a number of another numbering
    /// replaces it ([`Store::device_seq_with_id`]).
    pub seq: Option<(u64, [u8; 8])>,
}

/// The aggregates of one bucket of a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Start of the bucket, ms since the epoch.
    pub start_ms: i64,
    /// Points in the bucket.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Sum of the values.
    pub sum: f64,
    /// The earliest point.
    pub first: Point,
    /// The latest point.
    pub last: Point,
}

impl Bucket {
    pub(crate) fn new(start_ms: i64, t: i64, v: f64) -> Self {
        let p = Point { time_ms: t, value: v };
        Bucket { start_ms, count: 1, min: v, max: v, sum: v, first: p, last: p }
    }

    pub(crate) fn add(&mut self, t: i64, v: f64) {
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v;
        // Chunks overlap when data came late: first and last go by time, not by order seen.
        if t < self.first.time_ms {
            self.first = Point { time_ms: t, value: v };
        }
        if t > self.last.time_ms {
            self.last = Point { time_ms: t, value: v };
        }
    }

    /// Adds the aggregates of `other`, a bucket of other points.
    pub(crate) fn merge(&mut self, other: &Bucket) {
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        if other.first.time_ms < self.first.time_ms {
            self.first = other.first;
        }
        if other.last.time_ms > self.last.time_ms {
            self.last = other.last;
        }
    }

    /// Mean of the values.
    pub fn avg(&self) -> f64 {
        self.sum / self.count as f64
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteSummary {
    /// Points that were new.
    pub stored: usize,
    /// Points whose (series, time) was already stored, and were left as they were.
    pub duplicates: usize,
}

/// What one device has sent, kept with its metadata and written with its packs' batches, so
/// that it survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceTally {
    /// Packs stored.
    pub packs: u64,
    /// Readings that were already stored (resends), left as they were.
    pub duplicates: u64,
    /// Packs whose sequence number skipped at least one after the last one stored in the
    /// same numbering: transmissions that never arrived (or were refused).
    pub seq_gaps: u64,
    /// Publishes refused, by reason kind (the caller's labels).
    pub rejected: BTreeMap<String, u64>,
    /// The last refusal: time of receipt (ms since the epoch) and reason kind.
    pub last_rejection: Option<(i64, String)>,
}

impl DeviceTally {
    /// Publishes refused, all reasons.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// A refused publish of a device, for [`Store::write_group`]: counted in the device's
/// [`DeviceTally`] if the store knows the device.
#[derive(Debug, Clone, Copy)]
pub struct RefusalWrite<'a> {
    /// The device.
    pub device: &'a str,
    /// The reason kind (a short label).
    pub reason: &'a str,
    /// Time of receipt, ms since the epoch.
    pub time_ms: i64,
}

/// A device as the store knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    /// Device id.
    pub id: String,
    /// Its kind (from the registry, or inferred by the caller).
    pub kind: String,
    /// When it was first seen, ms since the epoch (time of receipt).
    pub first_seen_ms: i64,
    /// When it was last seen, ms since the epoch (time of receipt).
    pub last_seen_ms: i64,
    /// Points stored for it, over all its series.
    pub points: u64,
    /// Number of its series.
    pub series: usize,
    /// What it has sent.
    pub tally: DeviceTally,
}

/// A series as the store knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesInfo {
    /// Device id.
    pub device: String,
    /// Metric name.
    pub metric: String,
    /// Unit of its points, if any gave one.
    pub unit: Option<String>,
    /// Earliest point time, ms.
    pub first_ms: i64,
    /// Latest point time, ms.
    pub last_ms: i64,
    /// Number of points.
    pub count: u64,
    /// The value at `last_ms`.
    pub last_value: f64,
    /// What its values are.
    pub value_kind: ValueKind,
}

/// The latest value of one series, with its device's kind, for a city map.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestValue {
    /// Device id.
    pub device: String,
    /// The device's kind.
    pub kind: String,
    /// Metric name.
    pub metric: String,
    /// Unit.
    pub unit: Option<String>,
    /// Time of the latest point, ms.
    pub time_ms: i64,
    /// Its value.
    pub value: f64,
    /// What the series' values are.
    pub value_kind: ValueKind,
}

/// One opening of the sled database. Writes are durable only once a flush of the same
/// generation has returned; a generation whose write or flush failed is never written again
/// (sled keeps failing after an I/O error), and the store opens a new one. The number counts
/// the openings of this `Store` (1 for the first); it is not kept on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(pub u64);

/// What [`Store::write_packs`] did.
#[derive(Debug)]
pub struct Written {
    /// The opening the packs went to: they are durable once [`Store::flush`] returns this
    /// generation (a flush that started after the write).
    pub generation: Generation,
    /// One result per pack, in order.
    pub packs: Vec<Result<WriteSummary, PackRefused>>,
    /// (pack, point) indexes of the points of written packs that were already stored (or
    /// repeated within the group), in order: usually none.
    pub duplicates: Vec<(usize, usize)>,
}

/// What [`Store::flush`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Every write of this generation that returned before the flush began is on disk.
    pub generation: Generation,
    /// Bytes sled wrote.
    pub bytes: usize,
}

/// Whether the store can write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The last write and flush went through.
    Writable,
    /// A write or flush failed, and no flush has succeeded since.
    Failing {
        /// When the failure began.
        since: SystemTime,
        /// The last error.
        cause: String,
        /// Times the database was opened afresh (or tried) since.
        reopens: u32,
    },
}

/// The space of the filesystem that holds the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes the store may still write (available to an unprivileged process).
    pub free: u64,
    /// Bytes the filesystem holds in all.
    pub total: u64,
}

/// One change to a record space, for [`crate::Store::write_records`]: small durable records of
/// other crates (the alert engine's states, history, outboxes and rules) kept in the store's
/// database, so that backups and compaction cover them, and written atomically together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordWrite<'a> {
    /// Sets record `key` of `space` to `value`.
    Put {
        /// The space: a non-empty name without NUL bytes.
        space: &'a str,
        /// The record's key; records of a space are listed in the byte order of their keys.
        key: &'a [u8],
        /// Its value, opaque to the store.
        value: &'a [u8],
    },
    /// Removes record `key` of `space` (nothing if there is none).
    Delete {
        /// The space.
        space: &'a str,
        /// The record's key.
        key: &'a [u8],
    },
}

/// A record another crate writes in the batch of a group of packs, for
/// [`crate::Store::write_group_with`]: (space, key, value), as [`RecordWrite::Put`].
pub type GroupRecord = (&'static str, Vec<u8>, Vec<u8>);
