//! The store itself: open, write a device's points atomically, and read devices, series,
//! ranges and latest values.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::SystemTime;

use crate::codec::{Reader, Writer};
use crate::{chunk, keys, rollup};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error (I/O, or a corrupt database).
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    /// A metadata entry in the tree cannot be read.
    #[error("corrupt metadata under key {0:02x?}")]
    Corrupt(Vec<u8>),
    /// The store cannot write: a write or flush failed (a full disk, an I/O error), and the
    /// database has not been opened again yet. Nothing written since the last successful
    /// flush is durable; the store opens the database afresh at the next write once
    /// [`Store::health`]'s back-off has passed.
    #[error("store cannot write: {cause}")]
    Unavailable {
        /// When the failure began.
        since: SystemTime,
        /// The error that began it.
        cause: String,
    },
    /// Every series id is taken.
    #[error("no series ids left")]
    SeriesIdsExhausted,
    /// A file of the data directory cannot be read or moved.
    #[error("data directory: {0}")]
    Io(#[from] std::io::Error),
    /// A compaction stopped between moving the old directory away and the new one in.
    #[error(
        "an interrupted compaction left the data in {old:?} (old) and {compacted:?} (compacted): run the compaction \
         again to finish it, or move {old:?} back"
    )]
    InterruptedCompaction {
        /// The directory before compaction.
        old: std::path::PathBuf,
        /// The compacted copy.
        compacted: std::path::PathBuf,
    },
    /// The data directory holds another store format.
    #[error("the data directory holds store format {0:?}, this mekong reads format {FORMAT_VERSION}")]
    Format(Option<Vec<u8>>),
}

/// The layout written by this version (1: one entry per point; 2: chunks of varint deltas and
/// raw values; 3: Gorilla-compressed chunks; 4: decimal values, folded blocks and rollups; 5: day
/// blocks, Rice-coded values, regular times, a day of rollups per entry).
const FORMAT_VERSION: u8 = 5;

/// The sled tree everything lives in.
const TREE: &str = "timeseries";

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// sled's page cache, in bytes (sled's own default is 1 GiB).
    pub cache_capacity_bytes: u64,
    /// How often sled flushes to disk in the background, in ms; `None` flushes only on
    /// [`Store::flush`].
    pub flush_every_ms: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { cache_capacity_bytes: 64 * 1024 * 1024, flush_every_ms: Some(500) }
    }
}

/// A point to write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NewPoint<'a> {
    /// Metric name (the series within the device).
    pub metric: &'a str,
    /// Unit, if the reading gave one.
    pub unit: Option<&'a str>,
    /// Time in ms since the Unix epoch.
    pub time_ms: i64,
    /// The value.
    pub value: f64,
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

/// Changes of a group of packs not yet applied.
#[derive(Debug, Default)]
struct Staged<'a> {
    /// New points by series id, with their times for duplicate checks.
    points: HashMap<u32, Vec<(i64, f64)>>,
    times: HashMap<u32, HashSet<i64>>,
    /// Times already on disk, by (series id, window), read once per group for late points.
    on_disk: HashMap<(u32, i64), HashSet<i64>>,
    series: HashMap<(&'a str, &'a str), SeriesMeta>,
    devices: HashMap<&'a str, DeviceMeta>,
    seqs: HashMap<&'a str, (u64, [u8; 8])>,
    next_series_id: Option<u32>,
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
}

#[derive(Debug, Clone)]
struct SeriesMeta {
    id: u32,
    unit: Option<String>,
    first_ms: i64,
    last_ms: i64,
    count: u64,
    last_value: f64,
    /// Every window before this time is folded: one block, and a rollup that matches it.
    /// A write into an earlier window moves it back, in the same batch.
    folded_to_ms: i64,
}

impl SeriesMeta {
    fn encode(&self) -> Vec<u8> {
        Writer::new()
            .u32(self.id)
            .opt_str(self.unit.as_deref())
            .i64(self.first_ms)
            .i64(self.last_ms)
            .u64(self.count)
            .f64(self.last_value)
            .i64(self.folded_to_ms)
            .finish()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader::new(bytes)?;
        Some(SeriesMeta {
            id: r.u32()?,
            unit: r.opt_str()?,
            first_ms: r.i64()?,
            last_ms: r.i64()?,
            count: r.u64()?,
            last_value: r.f64()?,
            folded_to_ms: r.i64()?,
        })
    }
}

#[derive(Debug, Clone)]
struct DeviceMeta {
    kind: String,
    first_seen_ms: i64,
    last_seen_ms: i64,
    points: u64,
}

impl DeviceMeta {
    fn encode(&self) -> Vec<u8> {
        Writer::new().str(&self.kind).i64(self.first_seen_ms).i64(self.last_seen_ms).u64(self.points).finish()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader::new(bytes)?;
        Some(DeviceMeta { kind: r.str()?, first_seen_ms: r.i64()?, last_seen_ms: r.i64()?, points: r.u64()? })
    }
}

/// In-memory mirror of the metadata key spaces. BTreeMaps keep listings sorted.
#[derive(Debug, Default)]
struct State {
    devices: BTreeMap<String, DeviceMeta>,
    /// device -> metric -> series
    series: BTreeMap<String, BTreeMap<String, SeriesMeta>>,
    /// device -> highest sequence number stored in its current numbering, and that numbering
    seqs: HashMap<String, (u64, [u8; 8])>,
    next_series_id: u32,
}

impl State {
    fn meta(&self, device: &str, metric: &str) -> Option<&SeriesMeta> {
        self.series.get(device).and_then(|s| s.get(metric))
    }
}

/// The store's verdict on one pack of a [`Store::write_packs`]: the pack itself cannot be
/// stored, whatever the state of the disk. A failure to write is a [`StoreError`] instead,
/// so that a caller cannot mistake the platform's trouble for the pack's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackRefused {
    /// A point's unit differs from the unit of its series.
    #[error("series {metric} is in {expected}, not {got}")]
    UnitMismatch {
        /// The metric.
        metric: String,
        /// The series' unit.
        expected: String,
        /// The point's unit.
        got: String,
    },
}

/// Why [`Store::write`] stored nothing: the one pack was refused, or the store failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The pack cannot be stored.
    #[error(transparent)]
    Refused(#[from] PackRefused),
    /// The store cannot write.
    #[error(transparent)]
    Store(#[from] StoreError),
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

/// The first wait before opening a failed database again; it doubles up to
/// [`REOPEN_BACKOFF_MAX`] while the failure lasts, so a disk that stays full costs one
/// opening every few seconds, not one per write group.
const REOPEN_BACKOFF: std::time::Duration = std::time::Duration::from_millis(500);
const REOPEN_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(8);

#[derive(Debug)]
struct Opened {
    db: sled::Db,
    tree: sled::Tree,
    generation: Generation,
    /// This opening's number, in the high bits of every chunk id it makes.
    epoch: u64,
    /// Chunk ids made so far by this opening.
    chunks_made: AtomicU64,
}

impl Opened {
    /// A chunk id no other chunk of this database has.
    fn chunk_id(&self) -> u64 {
        self.epoch | (self.chunks_made.fetch_add(1, Ordering::Relaxed) & ((1 << 40) - 1))
    }
}

#[derive(Debug)]
struct Failure {
    since: SystemTime,
    cause: String,
    /// The generation that failed last: a newer one may be written.
    generation: Generation,
    next_reopen: std::time::Instant,
    backoff: std::time::Duration,
    reopens: u32,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    options: StoreOptions,
    /// The current opening; `None` only while it is being replaced.
    opened: RwLock<Option<Arc<Opened>>>,
    /// Lock order: `state`, then `opened`. Every write holds `state`, so that a new opening
    /// (which reloads it) never interleaves with one.
    state: Mutex<State>,
    failure: Mutex<Option<Failure>>,
    generations: AtomicU64,
}

/// The time-series store. Cheap to clone: clones share one database.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Opens (or creates) the store in directory `path` and loads its metadata.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Store, StoreError> {
        compact::check_not_interrupted(path)?;
        let (opened, state) = open_generation(path, options, Generation(1))?;
        let inner = Inner {
            path: path.to_owned(),
            options: options.clone(),
            opened: RwLock::new(Some(Arc::new(opened))),
            state: Mutex::new(state),
            failure: Mutex::new(None),
            generations: AtomicU64::new(1),
        };
        Ok(Store { inner: Arc::new(inner) })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the mirror half-updated (it is changed
        // only after the batch is applied, by plain assignments), so a poisoned lock is usable.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failure(&self) -> MutexGuard<'_, Option<Failure>> {
        self.inner.failure.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current opening, for reading.
    fn current(&self) -> Result<Arc<Opened>, StoreError> {
        let opened = self.inner.opened.read().unwrap_or_else(|e| e.into_inner()).clone();
        opened.ok_or_else(|| self.unavailable())
    }

    fn unavailable(&self) -> StoreError {
        match &*self.failure() {
            Some(f) => StoreError::Unavailable { since: f.since, cause: f.cause.clone() },
            None => StoreError::Unavailable { since: SystemTime::now(), cause: "reopening".into() },
        }
    }

    /// The opening to write to, with the state lock held by the caller: the current one,
    /// unless it failed; then a new one, once the back-off allows it (the mirror in `state`
    /// is reloaded from what is on disk, as nothing since the last good flush can be
    /// trusted). Fails with [`StoreError::Unavailable`] until a new opening is had.
    fn writable(&self, state: &mut State) -> Result<Arc<Opened>, StoreError> {
        let current = self.inner.opened.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut failure = self.failure();
        let f = match (&current, &mut *failure) {
            (Some(opened), None) => return Ok(Arc::clone(opened)),
            (Some(opened), Some(f)) if f.generation < opened.generation => return Ok(Arc::clone(opened)),
            (_, Some(f)) => f,
            // No opening and no failure cannot happen: an opening is removed only for a failure.
            (None, None) => {
                return Err(StoreError::Unavailable { since: SystemTime::now(), cause: "no opening".into() })
            }
        };
        let now = std::time::Instant::now();
        if now < f.next_reopen {
            return Err(StoreError::Unavailable { since: f.since, cause: f.cause.clone() });
        }
        f.reopens += 1;
        f.next_reopen = now + f.backoff;
        f.backoff = (f.backoff * 2).min(REOPEN_BACKOFF_MAX);
        drop(failure);
        // sled holds its directory lock until every handle of the old opening is gone.
        *self.inner.opened.write().unwrap_or_else(|e| e.into_inner()) = None;
        drop(current);
        let generation = Generation(self.inner.generations.fetch_add(1, Ordering::Relaxed) + 1);
        match open_generation(&self.inner.path, &self.inner.options, generation) {
            Ok((opened, fresh)) => {
                *state = fresh;
                let opened = Arc::new(opened);
                *self.inner.opened.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&opened));
                tracing::info!(generation = generation.0, "store opened again after a failure; writes resume");
                Ok(opened)
            }
            Err(e) => {
                tracing::debug!(error = %e, "store cannot be opened again yet");
                let mut failure = self.failure();
                if let Some(f) = &mut *failure {
                    f.cause = e.to_string();
                }
                Err(StoreError::Unavailable {
                    since: failure.as_ref().map_or_else(SystemTime::now, |f| f.since),
                    cause: e.to_string(),
                })
            }
        }
    }

    /// Notes that a write or flush of `generation` failed: it is not written again. Logged
    /// once per failure, not once per write group.
    fn fail(&self, generation: Generation, error: &sled::Error) -> StoreError {
        let mut failure = self.failure();
        match &mut *failure {
            None => {
                tracing::error!(%error, "store write failed: nothing is acknowledged until the store writes again");
                *failure = Some(Failure {
                    since: SystemTime::now(),
                    cause: error.to_string(),
                    generation,
                    next_reopen: std::time::Instant::now() + REOPEN_BACKOFF,
                    backoff: REOPEN_BACKOFF,
                    reopens: 0,
                });
            }
            Some(f) => {
                tracing::debug!(%error, "store write failed again");
                f.generation = f.generation.max(generation);
                f.cause = error.to_string();
            }
        }
        let f = failure.as_ref().map(|f| (f.since, f.cause.clone()));
        let (since, cause) = f.unwrap_or_else(|| (SystemTime::now(), error.to_string()));
        StoreError::Unavailable { since, cause }
    }

    /// Applies `batch` to `opened`; a failure marks the opening as failed.
    fn apply(&self, opened: &Opened, batch: sled::Batch) -> Result<(), StoreError> {
        opened.tree.apply_batch(batch).map_err(|e| self.fail(opened.generation, &e))
    }

    /// The current opening's generation: the one the metadata read now belongs to; `None`
    /// while the database is being opened again.
    pub fn generation(&self) -> Option<Generation> {
        let opened = self.inner.opened.read().unwrap_or_else(|e| e.into_inner());
        opened.as_ref().map(|o| o.generation)
    }

    /// Whether the store can write; see [`Health`].
    pub fn health(&self) -> Health {
        match &*self.failure() {
            None => Health::Writable,
            Some(f) => Health::Failing { since: f.since, cause: f.cause.clone(), reopens: f.reopens },
        }
    }

    /// Writes the points of one device in one atomic batch; see [`Store::write_packs`].
    pub fn write(
        &self,
        device: &str,
        kind: &str,
        seen_ms: i64,
        points: &[NewPoint<'_>],
    ) -> Result<WriteSummary, WriteError> {
        let mut written = self.write_packs(&[PackWrite { device, kind, seen_ms, points, seq: None }])?;
        Ok(written.packs.pop().unwrap_or(Ok(WriteSummary::default()))?)
    }

    /// Writes a group of packs in one atomic sled batch: one sled write, and one set of
    /// metadata updates, however many packs. Each pack records that its device was seen at
    /// `seen_ms` with kind `kind`. Points whose (series, time) is already stored, or repeated
    /// within the group, are left as first written and counted as duplicates.
    ///
    /// A pack whose unit differs from its series' unit is left out whole, with its
    /// [`PackRefused`] in the result; the others are written. A failure to write fails the
    /// whole group with a [`StoreError`]: nothing of it is stored, and no pack is refused.
    /// The packs are durable once a flush of the returned [`Generation`] returns.
    pub fn write_packs(&self, packs: &[PackWrite<'_>]) -> Result<Written, StoreError> {
        let mut state = self.state();
        let opened = self.writable(&mut state)?;
        let mut group = Staged::default();
        let mut results = Vec::with_capacity(packs.len());
        for pack in packs {
            results.push(self.stage(&opened, &state, &mut group, pack)?);
        }
        let mut batch = sled::Batch::default();
        for (series, points) in &mut group.points {
            points.sort_unstable_by_key(|p| p.0);
            for window in points.chunk_by(|a, b| chunk::window_start(a.0) == chunk::window_start(b.0)) {
                let key = keys::chunk(*series, window[0].0, opened.chunk_id());
                batch.insert(&key, chunk::encode(window));
            }
        }
        for ((device, metric), meta) in &group.series {
            batch.insert(keys::series(device, metric), meta.encode());
        }
        for (device, meta) in &group.devices {
            batch.insert(keys::device(device), meta.encode());
        }
        for (device, (seq, id)) in &group.seqs {
            let mut value = [0u8; 16];
            value[..8].copy_from_slice(&seq.to_be_bytes());
            value[8..].copy_from_slice(id);
            batch.insert(keys::seq(device), &value);
        }
        self.apply(&opened, batch)?;

        if let Some(next) = group.next_series_id {
            state.next_series_id = next;
        }
        for (device, meta) in group.devices {
            state.devices.insert(device.to_owned(), meta);
        }
        for ((device, metric), meta) in group.series {
            state.series.entry(device.to_owned()).or_default().insert(metric.to_owned(), meta);
        }
        for (device, seq) in group.seqs {
            state.seqs.insert(device.to_owned(), seq);
        }
        Ok(Written { generation: opened.generation, packs: results })
    }

    /// Adds one pack to `group`, or leaves the group as it was and returns the pack's error.
    fn stage<'p>(
        &self,
        opened: &Opened,
        state: &State,
        group: &mut Staged<'p>,
        pack: &PackWrite<'p>,
    ) -> Result<Result<WriteSummary, PackRefused>, StoreError> {
        let mut summary = WriteSummary::default();
        let mut series: BTreeMap<&'p str, SeriesMeta> = BTreeMap::new();
        let mut points: Vec<(u32, i64, f64)> = Vec::with_capacity(pack.points.len());
        let mut here: HashSet<(u32, i64)> = HashSet::new();
        let mut next_id = group.next_series_id.unwrap_or(state.next_series_id);

        for p in pack.points {
            let meta = match series.entry(p.metric) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let known = group
                        .series
                        .get(&(pack.device, p.metric))
                        .or_else(|| state.series.get(pack.device).and_then(|s| s.get(p.metric)))
                        .cloned();
                    let meta = match known {
                        Some(meta) => meta,
                        None => {
                            let id = next_id;
                            next_id = next_id.checked_add(1).ok_or(StoreError::SeriesIdsExhausted)?;
                            SeriesMeta {
                                id,
                                unit: None,
                                first_ms: p.time_ms,
                                last_ms: p.time_ms,
                                count: 0,
                                last_value: p.value,
                                folded_to_ms: chunk::window_start(p.time_ms),
                            }
                        }
                    };
                    e.insert(meta)
                }
            };
            match (&meta.unit, p.unit) {
                (Some(expected), Some(got)) if expected != got => {
                    return Ok(Err(PackRefused::UnitMismatch {
                        metric: p.metric.to_owned(),
                        expected: expected.clone(),
                        got: got.to_owned(),
                    }));
                }
                (None, Some(got)) => meta.unit = Some(got.to_owned()),
                _ => {}
            }
            let id = meta.id;
            // A time after the newest one the series has cannot be stored yet; only late
            // points cost a look at the disk.
            let may_exist = meta.count > 0 && p.time_ms <= meta.last_ms;
            if group.times.get(&id).is_some_and(|t| t.contains(&p.time_ms))
                || !here.insert((id, p.time_ms))
                || (may_exist && stored_times(opened, &mut group.on_disk, id, p.time_ms)?.contains(&p.time_ms))
            {
                summary.duplicates += 1;
                continue;
            }
            points.push((id, p.time_ms, p.value));
            summary.stored += 1;
            // A late point reopens its window: its block and rollup no longer hold everything.
            meta.folded_to_ms = meta.folded_to_ms.min(chunk::window_start(p.time_ms));
            if meta.count == 0 || p.time_ms < meta.first_ms {
                meta.first_ms = p.time_ms;
            }
            if meta.count == 0 || p.time_ms > meta.last_ms {
                meta.last_ms = p.time_ms;
                meta.last_value = p.value;
            }
            meta.count += 1;
        }

        let device = match group.devices.get(pack.device).or_else(|| state.devices.get(pack.device)) {
            Some(d) => DeviceMeta {
                kind: pack.kind.to_owned(),
                first_seen_ms: d.first_seen_ms,
                last_seen_ms: d.last_seen_ms.max(pack.seen_ms),
                points: d.points + summary.stored as u64,
            },
            None => DeviceMeta {
                kind: pack.kind.to_owned(),
                first_seen_ms: pack.seen_ms,
                last_seen_ms: pack.seen_ms,
                points: summary.stored as u64,
            },
        };
        group.devices.insert(pack.device, device);
        if let Some((seq, id)) = pack.seq {
            let stored = group.seqs.get(pack.device).or_else(|| state.seqs.get(pack.device));
            let kept = match stored {
                Some(&(s, stored_id)) if stored_id == id => s.max(seq),
                _ => seq,
            };
            group.seqs.insert(pack.device, (kept, id));
        }
        for (metric, meta) in series {
            group.series.insert((pack.device, metric), meta);
        }
        for (id, t, v) in points {
            group.times.entry(id).or_default().insert(t);
            group.points.entry(id).or_default().push((t, v));
        }
        group.next_series_id = Some(next_id);
        Ok(Ok(summary))
    }

    /// Flushes everything written so far to disk. Every write of the returned generation
    /// that returned before this call is durable; writes of an older generation never will
    /// be (that opening failed), and their callers must not report them as stored.
    pub fn flush(&self) -> Result<Flushed, StoreError> {
        let opened = self.current()?;
        let bytes = opened.db.flush().map_err(|e| self.fail(opened.generation, &e))?;
        let mut failure = self.failure();
        if failure.as_ref().is_some_and(|f| f.generation < opened.generation) {
            if let Some(f) = failure.take() {
                let secs = f.since.elapsed().map_or(0, |d| d.as_secs());
                tracing::warn!(secs, reopens = f.reopens, "store writes again after a failure");
            }
        }
        Ok(Flushed { generation: opened.generation, bytes })
    }

    /// All devices, sorted by id, optionally only those of one kind.
    pub fn devices(&self, kind: Option<&str>) -> Vec<DeviceInfo> {
        let state = self.state();
        state
            .devices
            .iter()
            .filter(|(_, d)| kind.is_none_or(|k| d.kind == k))
            .map(|(id, d)| device_info(&state, id, d))
            .collect()
    }

    /// One device.
    pub fn device(&self, id: &str) -> Option<DeviceInfo> {
        let state = self.state();
        state.devices.get(id).map(|d| device_info(&state, id, d))
    }

    /// The highest sequence number stored with a pack of `device` in its current numbering
    /// ([`PackWrite::seq`]).
    pub fn device_seq(&self, device: &str) -> Option<u64> {
        self.state().seqs.get(device).map(|&(seq, _)| seq)
    }

    /// The highest sequence number stored with a pack of `device` and the id of its
    /// numbering.
    pub fn device_seq_with_id(&self, device: &str) -> Option<(u64, [u8; 8])> {
        self.state().seqs.get(device).copied()
    }

    /// The series of one device, sorted by metric; `None` if the device is unknown.
    pub fn series_of(&self, device: &str) -> Option<Vec<SeriesInfo>> {
        let state = self.state();
        state.devices.get(device)?;
        let series = state.series.get(device).into_iter().flatten();
        Some(series.map(|(metric, m)| series_info(device, metric, m)).collect())
    }

    /// One series; `None` if unknown.
    pub fn series(&self, device: &str, metric: &str) -> Option<SeriesInfo> {
        let state = self.state();
        state.series.get(device)?.get(metric).map(|m| series_info(device, metric, m))
    }

    fn series_id(&self, device: &str, metric: &str) -> Option<u32> {
        self.state().meta(device, metric).map(|m| m.id)
    }

    /// [`scan_chunks`] in the current opening.
    fn scan_chunks(
        &self,
        id: u32,
        from_ms: i64,
        to_ms: i64,
        visit: impl FnMut(i64, &[(i64, f64)]) -> bool,
    ) -> Result<(), StoreError> {
        scan_chunks(&self.current()?.tree, id, from_ms, to_ms, visit)
    }

    /// Up to `limit` points of one series with `from_ms <= time < to_ms`, oldest first;
    /// `None` if the series is unknown.
    pub fn points(
        &self,
        device: &str,
        metric: &str,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Option<Vec<Point>>, StoreError> {
        let Some(id) = self.series_id(device, metric) else {
            return Ok(None);
        };
        if from_ms >= to_ms || limit == 0 {
            return Ok(Some(Vec::new()));
        }
        // Chunks come in order of their first time; once `limit` points are found, a chunk
        // that starts after the last of them cannot change the answer.
        let mut found: Vec<(i64, f64)> = Vec::new();
        let mut cutoff = i64::MAX;
        self.scan_chunks(id, from_ms, to_ms, |first_ms, points| {
            if first_ms > cutoff {
                return false;
            }
            found.extend(points.iter().filter(|p| p.0 >= from_ms && p.0 < to_ms));
            if found.len() >= limit {
                found.sort_unstable_by_key(|p| p.0);
                found.truncate(limit);
                cutoff = found[limit - 1].0;
            }
            true
        })?;
        found.sort_unstable_by_key(|p| p.0);
        found.truncate(limit);
        Ok(Some(found.into_iter().map(|(time_ms, value)| Point { time_ms, value }).collect()))
    }

    /// Aggregates of one series over `[from_ms, to_ms)` in buckets of `step_ms`, aligned to
    /// the Unix epoch (a bucket starts at a multiple of `step_ms`); only buckets that hold
    /// points, in time order. `None` if the series is unknown.
    ///
    /// When the step is a whole number of windows (an hour, a day), the folded windows that
    /// lie wholly in the range are read from their rollups (one entry holds a day's hours);
    /// the rest (the ends of the range, and windows not yet folded) from the points. Sums (and means) may
    /// then differ from a sum taken point by point in the last bits, as floating-point
    /// addition depends on its order; every other aggregate is exact.
    pub fn aggregate(
        &self,
        device: &str,
        metric: &str,
        from_ms: i64,
        to_ms: i64,
        step_ms: i64,
    ) -> Result<Option<Vec<Bucket>>, StoreError> {
        let Some((id, folded_to_ms)) = self.folded(device, metric) else {
            return Ok(None);
        };
        let mut buckets: BTreeMap<i64, Bucket> = BTreeMap::new();
        if from_ms >= to_ms || step_ms <= 0 {
            return Ok(Some(Vec::new()));
        }
        let mut raw = |from_ms: i64, to_ms: i64| {
            if from_ms >= to_ms {
                return Ok(());
            }
            self.scan_chunks(id, from_ms, to_ms, |_, points| {
                for &(t, v) in points.iter().filter(|p| p.0 >= from_ms && p.0 < to_ms) {
                    let start = t.div_euclid(step_ms).saturating_mul(step_ms);
                    buckets.entry(start).and_modify(|b| b.add(t, v)).or_insert_with(|| Bucket::new(start, t, v));
                }
                true
            })
        };
        if step_ms % chunk::WINDOW_MS != 0 {
            raw(from_ms, to_ms)?;
            return Ok(Some(buckets.into_values().collect()));
        }
        // Whole windows inside the range and below the folded mark come from rollups.
        let first_whole = chunk::window_start(from_ms.saturating_add(chunk::WINDOW_MS - 1));
        let end_whole = chunk::window_start(to_ms).min(folded_to_ms);
        if first_whole >= end_whole {
            raw(from_ms, to_ms)?;
            return Ok(Some(buckets.into_values().collect()));
        }
        raw(from_ms, first_whole)?;
        raw(end_whole, to_ms)?;
        let mut hours = Vec::new();
        let days = keys::rollup(id, chunk::day_start(first_whole))..keys::rollup(id, end_whole);
        for entry in self.current()?.tree.range(days) {
            let (key, value) = entry?;
            let corrupt = || StoreError::Corrupt(key.to_vec());
            let (_, day) = keys::parse_rollup(&key).ok_or_else(corrupt)?;
            hours.clear();
            rollup::decode(day, &value, &mut hours).ok_or_else(corrupt)?;
            for hour in hours.iter().filter(|h| h.start_ms >= first_whole && h.start_ms < end_whole) {
                let start = hour.start_ms.div_euclid(step_ms).saturating_mul(step_ms);
                buckets
                    .entry(start)
                    .and_modify(|b| b.merge(hour))
                    .or_insert_with(|| Bucket { start_ms: start, ..*hour });
            }
        }
        Ok(Some(buckets.into_values().collect()))
    }

    /// The id and folded mark of a series.
    fn folded(&self, device: &str, metric: &str) -> Option<(u32, i64)> {
        self.state().meta(device, metric).map(|m| (m.id, m.folded_to_ms))
    }

    /// The devices of kind `kind` (any kind if `None`) that have a series `metric`, by id.
    pub fn devices_with(&self, kind: Option<&str>, metric: &str) -> Vec<String> {
        let state = self.state();
        state
            .devices
            .iter()
            .filter(|(id, d)| {
                kind.is_none_or(|k| d.kind == k) && state.series.get(*id).is_some_and(|s| s.contains_key(metric))
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The latest value of every series, optionally only of devices of one kind, sorted by
    /// device then metric.
    pub fn latest(&self, kind: Option<&str>) -> Vec<LatestValue> {
        let state = self.state();
        let mut out = Vec::new();
        for (device, d) in state.devices.iter().filter(|(_, d)| kind.is_none_or(|k| d.kind == k)) {
            for (metric, m) in state.series.get(device).into_iter().flatten() {
                out.push(LatestValue {
                    device: device.clone(),
                    kind: d.kind.clone(),
                    metric: metric.clone(),
                    unit: m.unit.clone(),
                    time_ms: m.last_ms,
                    value: m.last_value,
                });
            }
        }
        out
    }

    /// Total points stored, over all series.
    pub fn point_count(&self) -> u64 {
        self.state().series.values().flat_map(|s| s.values()).map(|m| m.count).sum()
    }
}

/// Visits the chunks of series `id` that can hold points in `[from_ms, to_ms)`, in order
/// of their first time, with their points (not yet cut to the range). `visit` returns
/// false to stop.
fn scan_chunks(
    tree: &sled::Tree,
    id: u32,
    from_ms: i64,
    to_ms: i64,
    mut visit: impl FnMut(i64, &[(i64, f64)]) -> bool,
) -> Result<(), StoreError> {
    // A chunk holding a point at or after `from` starts no later than the point itself,
    // and no earlier than that point's window, or its day for a day block.
    let mut decoded = Vec::new();
    let window = chunk::window_start(from_ms);
    let range = keys::chunk_from(id, chunk::day_start(from_ms))..keys::chunk_from(id, to_ms);
    for entry in tree.range(range) {
        let (key, value) = entry?;
        let Some((_, first_ms)) = keys::parse_chunk(&key) else {
            return Err(StoreError::Corrupt(key.to_vec()));
        };
        if first_ms < window && !keys::is_day_block(&key) {
            continue;
        }
        decoded.clear();
        chunk::decode_into(&value, &mut decoded).ok_or_else(|| StoreError::Corrupt(key.to_vec()))?;
        if !visit(first_ms, &decoded) {
            break;
        }
    }
    Ok(())
}

/// The times stored for series `id` in the window holding `t_ms`, read once per group.
fn stored_times<'c>(
    opened: &Opened,
    cache: &'c mut HashMap<(u32, i64), HashSet<i64>>,
    id: u32,
    t_ms: i64,
) -> Result<&'c HashSet<i64>, StoreError> {
    let window = chunk::window_start(t_ms);
    match cache.entry((id, window)) {
        std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
        std::collections::hash_map::Entry::Vacant(e) => {
            let mut times = HashSet::new();
            let end = window.saturating_add(chunk::WINDOW_MS);
            scan_chunks(&opened.tree, id, window, end, |_, points| {
                times.extend(points.iter().map(|p| p.0).filter(|&t| t >= window && t < end));
                true
            })?;
            Ok(e.insert(times))
        }
    }
}

fn device_info(state: &State, id: &str, d: &DeviceMeta) -> DeviceInfo {
    DeviceInfo {
        id: id.to_owned(),
        kind: d.kind.clone(),
        first_seen_ms: d.first_seen_ms,
        last_seen_ms: d.last_seen_ms,
        points: d.points,
        series: state.series.get(id).map_or(0, BTreeMap::len),
    }
}

fn series_info(device: &str, metric: &str, m: &SeriesMeta) -> SeriesInfo {
    SeriesInfo {
        device: device.to_owned(),
        metric: metric.to_owned(),
        unit: m.unit.clone(),
        first_ms: m.first_ms,
        last_ms: m.last_ms,
        count: m.count,
        last_value: m.last_value,
    }
}

/// How long opening waits for sled's lock on the directory.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens a sled database, waiting up to [`LOCK_WAIT`] for its lock. sled releases its file
/// lock when the last of its threads lets go of the database, which can be a moment after the
/// last handle is dropped (sled's own test builds block on the lock for that reason), and
/// sled gives no event to wait for: a store reopened in the same process right after closing
/// (a restart, a compaction) polls the moment out. Another process holding the directory
/// still gets the error, after the wait.
pub(crate) fn open_db(config: &sled::Config) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            // sled 0.34 reports a held lock only through this message (config.rs).
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

/// Opens the database in `path` as `generation` and loads its metadata.
fn open_generation(path: &Path, options: &StoreOptions, generation: Generation) -> Result<(Opened, State), StoreError> {
    let db = open_db(
        &sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_capacity_bytes)
            .flush_every_ms(options.flush_every_ms),
    )?;
    let tree = db.open_tree(TREE)?;
    match tree.get(keys::FORMAT)? {
        None if tree.is_empty() => {
            tree.insert(keys::FORMAT, &[FORMAT_VERSION])?;
        }
        Some(v) if v.as_ref() == [FORMAT_VERSION] => {}
        other => return Err(StoreError::Format(other.map(|v| v.to_vec()))),
    }
    let state = load_state(&tree)?;
    // Chunk ids are (opening, count) rather than sled's generate_id, so that they stay
    // unique in a compacted copy of the tree, which starts sled's counter afresh. The new
    // epoch is in the log before any chunk that uses it, and sled recovers a prefix of its
    // log, so a chunk never survives a crash without its epoch.
    let epoch = match tree.get(keys::EPOCH)? {
        None => 0,
        Some(v) => u32::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt(keys::EPOCH.to_vec()))?),
    };
    let next = epoch.checked_add(1).ok_or_else(|| StoreError::Corrupt(keys::EPOCH.to_vec()))?;
    tree.insert(keys::EPOCH, &next.to_be_bytes())?;
    let opened = Opened { db, tree, generation, epoch: u64::from(next) << 40, chunks_made: AtomicU64::new(0) };
    Ok((opened, state))
}

fn load_state(tree: &sled::Tree) -> Result<State, StoreError> {
    let mut state = State::default();
    for entry in tree.scan_prefix([keys::DEVICE]) {
        let (key, value) = entry?;
        let corrupt = || StoreError::Corrupt(key.to_vec());
        let id = std::str::from_utf8(&key[1..]).map_err(|_| corrupt())?;
        let meta = DeviceMeta::decode(&value).ok_or_else(corrupt)?;
        state.devices.insert(id.to_owned(), meta);
    }
    for entry in tree.scan_prefix([keys::SERIES]) {
        let (key, value) = entry?;
        let corrupt = || StoreError::Corrupt(key.to_vec());
        let name = std::str::from_utf8(&key[1..]).map_err(|_| corrupt())?;
        let (device, metric) = name.split_once('\0').ok_or_else(corrupt)?;
        let meta = SeriesMeta::decode(&value).ok_or_else(corrupt)?;
        state.next_series_id = state.next_series_id.max(meta.id.saturating_add(1));
        state.series.entry(device.to_owned()).or_default().insert(metric.to_owned(), meta);
    }
    for entry in tree.scan_prefix([keys::SEQ]) {
        let (key, value) = entry?;
        let corrupt = || StoreError::Corrupt(key.to_vec());
        let device = std::str::from_utf8(&key[1..]).map_err(|_| corrupt())?;
        // The number (u64 BE), then the numbering's id.
        let (number, id) = value.split_at_checked(8).filter(|(_, id)| id.len() == 8).ok_or_else(corrupt)?;
        let seq = number.try_into().map(u64::from_be_bytes).map_err(|_| corrupt())?;
        let id = id.try_into().map_err(|_| corrupt())?;
        state.seqs.insert(device.to_owned(), (seq, id));
    }
    Ok(state)
}

pub(crate) mod compact;
mod maintenance;
pub use compact::{compact, CompactReport};
pub use maintenance::{ExpireReport, FoldReport, RetentionPolicy, RetentionRule};

#[cfg(test)]
mod tests;
