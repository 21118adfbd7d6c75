//! The store: its openings of the sled database, the failure of one and the next, and the
//! lock over the in-memory mirror. The write and read paths are in `write` and `read`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use self::days::crash_point;
use self::meta::{load_state, migrate_entries, State};
use crate::{keys, DiskSpace, Flushed, Generation, Health, StoreError};

/// The layout written by this version (1: one entry per point; 2: chunks of varint deltas and
/// raw values; 3: Gorilla-compressed chunks; 4: decimal values, folded blocks and rollups; 5: day
/// blocks, Rice-coded values, regular times, a day of rollups per entry; 6: closed days in day
/// files outside sled; 7: a device's series metadata in the device's entry; 8: write groups
/// logged as one entry each and folded later, `store/log.rs`; 9: a fold's chunks that list
/// ingest chunks as they are, chunk version 7). Stores of format 5 to 8 are migrated at open.
pub(crate) const FORMAT_VERSION: u8 = 9;

/// The format migrated at open: its day blocks move from sled into day files.
const FORMAT_DAY_BLOCKS_IN_SLED: u8 = 5;

/// The format with day files and a sled entry per series' metadata, migrated at open: each
/// device's series move into its entry ([`meta::migrate_entries`]).
const FORMAT_DAY_FILES: u8 = 6;

/// The format with a device's series in its entry and no log: it needs no change but the
/// format's number, as it has no records to fold.
const FORMAT_ENTRIES: u8 = 7;

/// The format with the write log, whose chunks are all of the versions format 9 reads: it
/// needs no change but the format's number. An older mekong refuses a store of format 9 at
/// its opening rather than failing to read its listed chunks.
const FORMAT_LOG: u8 = 8;

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
    /// How often the store's own thread folds the write log into the tree, in ms (sooner
    /// when much is logged); `None` starts no thread: the log is folded when it holds
    /// 128 MiB, and by the upkeep and every other write that needs the tree whole (`log.rs`).
    pub fold_log_every_ms: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_capacity_bytes: 64 * 1024 * 1024,
            flush_every_ms: Some(500),
            fold_log_every_ms: Some(2000),
        }
    }
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
    /// The day files sled names.
    days: days::Days,
    /// The write groups logged and not yet folded into the tree.
    log: log::Log,
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

impl Failure {
    /// What a write gets while this failure lasts.
    fn error(&self) -> StoreError {
        StoreError::Unavailable { since: self.since, cause: self.cause.clone() }
    }
}

/// The error of `failure`, or one beginning now with `cause` if there is none.
fn unavailable(failure: Option<&Failure>, cause: &str) -> StoreError {
    failure
        .map_or_else(|| StoreError::Unavailable { since: SystemTime::now(), cause: cause.to_owned() }, Failure::error)
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
    /// Held by whatever writes day files (a fold of a closed day, retention), which build
    /// their file without the state lock: one at a time.
    upkeep: Mutex<()>,
    /// While a backup reads the chunks without the state lock: the keys of the chunks written
    /// since it began (`backup.rs`). Changed only under the state lock.
    journal: Mutex<Option<Vec<Vec<u8>>>>,
    /// Batches that deleted chunks outside the upkeep lock (retention of points, a device's
    /// removal): a backup that sees this change reads the chunks again under the state lock.
    chunk_removals: AtomicU64,
    /// Wakes the thread that folds the log (`log.rs`).
    wake: Arc<log::Wake>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.wake.close();
    }
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
        backup::clear_holds(path)?;
        let (opened, state) = open_generation(path, options, Generation(1))?;
        let inner = Inner {
            path: path.to_owned(),
            options: options.clone(),
            opened: RwLock::new(Some(Arc::new(opened))),
            state: Mutex::new(state),
            failure: Mutex::new(None),
            generations: AtomicU64::new(1),
            upkeep: Mutex::new(()),
            journal: Mutex::new(None),
            chunk_removals: AtomicU64::new(0),
            wake: Arc::new(log::Wake::default()),
        };
        let inner = Arc::new(inner);
        if let Some(ms) = options.fold_log_every_ms {
            log::start(Arc::downgrade(&inner), Arc::clone(&inner.wake), Duration::from_millis(ms.max(1)))?;
        }
        Ok(Store { inner })
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
        unavailable(self.failure().as_ref(), "reopening")
    }

    /// [`Store::writable_to_log`], with the log folded: for whatever writes the tree other than
    /// through the log, or reads its chunks alone (`log.rs`'s invariant). As the caller holds
    /// the state lock, no record is logged until its own batch is applied.
    fn writable(&self, state: &mut State) -> Result<Arc<Opened>, StoreError> {
        let opened = self.writable_to_log(state)?;
        self.fold_log_in(&opened)?;
        Ok(opened)
    }

    /// [`Store::writable`] for a write that touches one device only (its entry, its series'
    /// chunks): the log is folded only if it holds something of that device.
    fn writable_for(&self, state: &mut State, device: &str) -> Result<Arc<Opened>, StoreError> {
        let opened = self.writable_to_log(state)?;
        self.fold_log_for(&opened, device)?;
        Ok(opened)
    }

    /// The opening to write to, with the state lock held by the caller: the current one,
    /// unless it failed; then a new one, once the back-off allows it (the mirror in `state`
    /// is reloaded from what is on disk, as nothing since the last good flush can be
    /// trusted). Fails with [`StoreError::Unavailable`] until a new opening is had.
    fn writable_to_log(&self, state: &mut State) -> Result<Arc<Opened>, StoreError> {
        let current = self.inner.opened.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut failure = self.failure();
        let f = match (&current, &mut *failure) {
            (Some(opened), None) => return Ok(Arc::clone(opened)),
            (Some(opened), Some(f)) if f.generation < opened.generation => return Ok(Arc::clone(opened)),
            (_, Some(f)) => f,
            // No opening and no failure cannot happen: an opening is removed only for a failure.
            (None, None) => return Err(unavailable(None, "no opening")),
        };
        let now = std::time::Instant::now();
        if now < f.next_reopen {
            return Err(f.error());
        }
        f.reopens += 1;
        f.next_reopen = now + f.backoff;
        f.backoff = (f.backoff * 2).min(REOPEN_BACKOFF_MAX);
        // Dropping the failed opening ends reads of points too, until a new one is had: only
        // when the disk takes a write again.
        if current.is_some() {
            if let Err(e) = probe_space(&self.inner.path) {
                tracing::debug!(error = %e, "no room on the store's disk yet");
                return Err(f.error());
            }
        }
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
                Err(unavailable(failure.as_ref(), &e.to_string()))
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
        unavailable(failure.as_ref(), &error.to_string())
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

    /// The space left on the filesystem of the store's directory; `None` if the system
    /// cannot tell.
    pub fn disk_space(&self) -> Option<DiskSpace> {
        let free = fs2::available_space(&self.inner.path).ok()?;
        let total = fs2::total_space(&self.inner.path).ok()?;
        Some(DiskSpace { free, total })
    }

    /// Whether the store can write; see [`Health`].
    pub fn health(&self) -> Health {
        match &*self.failure() {
            None => Health::Writable,
            Some(f) => Health::Failing { since: f.since, cause: f.cause.clone(), reopens: f.reopens },
        }
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
}

/// Bytes [`probe_space`] writes: two of sled's 512 KiB log segments, what a new opening may
/// need before its first flush.
const PROBE_BYTES: usize = 1 << 20;

/// Whether the disk of `dir` takes a write of [`PROBE_BYTES`] again, synced; the probe file is
/// removed either way.
fn probe_space(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(".mekong-space-probe");
    let written = std::fs::File::create(&path).and_then(|mut file| {
        file.write_all(&vec![0u8; PROBE_BYTES])?;
        file.sync_all()
    });
    let removed = std::fs::remove_file(&path);
    written.and(removed)
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
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(StoreError::Locked(config.path.clone()));
                }
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
    let format = match tree.get(keys::FORMAT)? {
        None if tree.is_empty() => {
            tree.insert(keys::FORMAT, &[FORMAT_VERSION])?;
            FORMAT_VERSION
        }
        Some(v)
            if v.len() == 1
                && [FORMAT_VERSION, FORMAT_LOG, FORMAT_ENTRIES, FORMAT_DAY_FILES, FORMAT_DAY_BLOCKS_IN_SLED]
                    .contains(&v[0]) =>
        {
            v[0]
        }
        other => return Err(StoreError::Format(other.map(|v| v.to_vec()))),
    };
    // Before the metadata is read: the entries of the records left are newer than the tree's.
    log::fold_at_open(&tree)?;
    let state = load_state(&tree)?;
    let days = days::Days::load(path, &tree)?;
    // Chunk ids are (opening, count) rather than sled's generate_id, so that they stay
    // unique in a compacted copy of the tree, which starts sled's counter afresh. The new
    // epoch is in the log before any chunk that uses it, and sled recovers a prefix of its
    // log, so a chunk never survives a crash without its epoch.
    let epoch = match tree.get(keys::EPOCH)? {
        None => 0,
        Some(v) => u32::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt(keys::EPOCH.to_vec()))?),
    };
    let next = epoch.checked_add(1).ok_or_else(|| StoreError::Corrupt(keys::EPOCH.to_vec()))?;
    let opened = Opened {
        db,
        tree,
        generation,
        epoch: u64::from(next) << 40,
        chunks_made: AtomicU64::new(0),
        days,
        log: log::Log::default(),
    };
    // Before anything else is written to sled, so that a migration that fails leaves the
    // store as the older mekong left it (the epoch included). Each step is whole or not at all.
    if format == FORMAT_DAY_BLOCKS_IN_SLED {
        fold_days::migrate(&opened, &state, FORMAT_DAY_BLOCKS_IN_SLED, FORMAT_DAY_FILES)?;
    }
    if format <= FORMAT_DAY_FILES {
        migrate_entries(&opened.tree, &state, FORMAT_VERSION)
            .map_err(|source| StoreError::Migration { from: FORMAT_DAY_FILES, source: Box::new(source) })?;
        crash_point("migrate", "entries");
    } else if format == FORMAT_ENTRIES || format == FORMAT_LOG {
        opened.tree.insert(keys::FORMAT, &[FORMAT_VERSION])?;
    }
    opened.tree.insert(keys::EPOCH, &next.to_be_bytes())?;
    fold_days::finish_migration(&opened, &state)?;
    Ok((opened, state))
}

pub mod backup;
pub(crate) mod compact;
mod days;
mod fold_days;
mod log;
mod maintenance;
mod meta;
mod read;
mod records;
mod remove;
mod write;
pub use compact::{compact, compact_with_progress, CompactReport};
pub use log::LogFold;
#[cfg(feature = "fuzzing")]
pub use log::{decode_record, encode_record, MAX_PIECE_BYTES};
pub use maintenance::{ExpireReport, FoldReport, RetentionPolicy, RetentionRule};
pub use records::Record;
pub use remove::Removed;

#[cfg(test)]
mod tests;
