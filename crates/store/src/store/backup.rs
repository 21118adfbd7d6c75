//! Backups of a store, taken while it serves: a repository of plain files, incremental
//! because day files never change, each backup checkable and restorable on its own.
//!
//! A repository is a directory that any file copy or `rsync` can ship:
//!
//! ```text
//! files/<YYYY-MM-DD>.<generation>.<hash>.mkb   day files, shared by every backup that holds them
//! backups/<id>/manifest.json                   the backup: its point, its files with their sizes and
//!                                              SHA-256, the readings of each series
//! backups/<id>/sled.entries                    the sled part: every entry of the tree at the point
//! ```
//!
//! A backup's point is one moment of the store: the snapshot holds the store's write lock
//! (the one every sled batch is applied under) while it completes its copy of the tree and
//! notes which day files sled names, so every write group is in it whole or not at all, and
//! every reading acknowledged before the point is in it (an acknowledgement follows the
//! batch). The chunks, most of the tree, are read before the lock is taken (`Store::snapshot`
//! says why that is the same).
//! Folds and retention, which replace and delete day files, wait on the upkeep lock until
//! the named files are hard-linked into a hold directory under the data directory; the copy
//! into the repository reads those links while the store goes on, so a fold never deletes a
//! file a running backup holds. Ingest waits only for the read under the lock (the `pause`
//! of [`BackupReport`]).
//!
//! An incremental backup copies only the day files the repository lacks: a file whose name,
//! length and modification time match one an earlier backup copied is taken as that one.
//! A new backup directory is written as `<id>.partial` and renamed once whole, with the
//! manifest last; a killed backup leaves a partial directory that the next prune deletes.

mod entries;
mod manifest;
mod restore;
mod verify;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use self::manifest::{DayFile, Manifest, SeriesCount, SledPart, Stamp};
use super::meta::series_in;
use super::{days, Store, FORMAT_VERSION};
use crate::{keys, StoreError};
pub use restore::RestoreReport;
pub use verify::VerifyReport;

/// The directory under the data directory where a running backup holds its day files.
const HOLD_DIR: &str = ".backup-hold";

/// Why a backup, a check or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file of the repository or of the data directory cannot be read or written.
    #[error("{path:?}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A file of the repository is not what its manifest says.
    #[error("{path:?}: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// No backup of that id, or none at all.
    #[error("no backup {0} in the repository")]
    NoSuchBackup(String),
    /// Nothing at the repository's path.
    #[error("{0:?} is not a backup repository (no such directory)")]
    NoRepository(PathBuf),
    /// A restore into a directory that holds something.
    #[error("{0:?} is not empty: a restore writes only into an empty (or new) data directory")]
    NotEmpty(PathBuf),
    /// Another backup or prune of the repository is running.
    #[error("the backup repository {0:?} is in use by another backup")]
    Busy(PathBuf),
    /// A check before a restore found damage; nothing was restored.
    #[error("backup {id} is damaged, nothing was restored: {}", problems.join("; "))]
    Verify {
        /// The backup.
        id: String,
        /// What is wrong, each naming its file.
        problems: Vec<String>,
    },
}

impl BackupError {
    fn io(path: &Path, source: std::io::Error) -> BackupError {
        BackupError::Io { path: path.to_owned(), source }
    }
}

/// How to take a backup.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackupOptions {
    /// Copy every day file, even those an earlier backup holds (checks nothing is reused
    /// from a repository that may have been tampered with).
    pub full: bool,
    /// After the backup, keep only this many backups (the newest), and delete the files no
    /// kept backup names.
    pub keep: Option<usize>,
}

/// One backup of a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// Its id, the UTC time of its point (`20261130T071500Z`, with `-2`... if taken twice in
    /// a second); ids sort as their points.
    pub id: String,
    /// Its point, ms since the epoch.
    pub point_ms: i64,
    /// Its day files.
    pub files: usize,
    /// Bytes of its day files and sled part.
    pub bytes: u64,
    /// Readings in it.
    pub readings: u64,
    /// Series in it.
    pub series: usize,
}

/// What [`Repository::backup`] did.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// The backup.
    pub backup: BackupSummary,
    /// Day files copied into the repository by this backup.
    pub copied_files: usize,
    /// Bytes copied (day files and the sled part).
    pub copied_bytes: u64,
    /// Day files an earlier backup had copied already.
    pub reused_files: usize,
    /// How long the store's writes were held (the read of the sled part).
    pub pause: Duration,
    /// The whole backup, start to end.
    pub took: Duration,
    /// What the retention after it deleted, if [`BackupOptions::keep`] asked for it.
    pub pruned: Option<PruneReport>,
}

/// What [`Repository::prune`] deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// The backups deleted, and unfinished ones.
    pub backups: Vec<String>,
    /// Day files no kept backup names.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// A backup repository: a directory of plain files (see the module documentation).
#[derive(Debug, Clone)]
pub struct Repository {
    dir: PathBuf,
}

/// The repository's lock, held while a backup or prune writes (exclusive) or a check or
/// restore reads (shared).
struct Lock(File);

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs2::FileExt::unlock(&self.0);
    }
}

impl Repository {
    /// The repository in `dir` (created by the first backup).
    pub fn new(dir: impl Into<PathBuf>) -> Repository {
        Repository { dir: dir.into() }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn files(&self) -> PathBuf {
        self.dir.join("files")
    }

    fn backups(&self) -> PathBuf {
        self.dir.join("backups")
    }

    fn lock(&self, exclusive: bool) -> Result<Lock, BackupError> {
        let path = self.dir.join(".lock");
        let io = |e| BackupError::io(&path, e);
        if exclusive {
            std::fs::create_dir_all(&self.dir).map_err(|e| BackupError::io(&self.dir, e))?;
        } else if !self.dir.is_dir() {
            return Err(BackupError::NoRepository(self.dir.clone()));
        }
        let file = File::options().create(true).append(true).open(&path).map_err(io)?;
        let locked = match exclusive {
            true => fs2::FileExt::try_lock_exclusive(&file),
            false => fs2::FileExt::try_lock_shared(&file),
        };
        match locked {
            Ok(()) => Ok(Lock(file)),
            Err(e) if e.kind() == fs2::lock_contended_error().kind() => Err(BackupError::Busy(self.dir.clone())),
            Err(e) => Err(io(e)),
        }
    }

    /// The complete backups, oldest first.
    pub fn list(&self) -> Result<Vec<BackupSummary>, BackupError> {
        Ok(self.manifests()?.iter().map(summary).collect())
    }

    fn manifests(&self) -> Result<Vec<Manifest>, BackupError> {
        let dir = self.backups();
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| BackupError::io(&dir, e))? {
            let entry = entry.map_err(|e| BackupError::io(&dir, e))?;
            let path = entry.path().join(manifest::FILE);
            if entry.file_name().to_string_lossy().ends_with(".partial") || !path.exists() {
                continue;
            }
            out.push(Manifest::read(&path)?);
        }
        out.sort_by(|a, b| (a.point_ms, &a.id).cmp(&(b.point_ms, &b.id)));
        Ok(out)
    }

    /// The manifest of backup `id`, or of the newest backup.
    fn manifest(&self, id: Option<&str>) -> Result<Manifest, BackupError> {
        match id {
            Some(id) => {
                let valid = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                let path = self.backups().join(id).join(manifest::FILE);
                if !valid || !path.exists() {
                    return Err(BackupError::NoSuchBackup(id.to_owned()));
                }
                Manifest::read(&path)
            }
            None => self.manifests()?.pop().ok_or_else(|| BackupError::NoSuchBackup("(none yet)".into())),
        }
    }

    /// Takes a backup of `store`, which may be serving: see the module documentation.
    pub fn backup(&self, store: &Store, options: &BackupOptions) -> Result<BackupReport, BackupError> {
        let started = Instant::now();
        let _lock = self.lock(true)?;
        for dir in [self.files(), self.backups()] {
            std::fs::create_dir_all(&dir).map_err(|e| BackupError::io(&dir, e))?;
        }
        // What earlier backups copied, by store name and stamp.
        let mut known: HashMap<(String, Stamp), DayFile> = HashMap::new();
        if !options.full {
            for m in self.manifests()? {
                for f in m.files {
                    if let Some(stamp) = f.stamp {
                        known.insert((f.name.clone(), stamp), f);
                    }
                }
            }
        }
        let snapshot = store.snapshot()?;
        let mut id = backup_id(snapshot.point_ms);
        let mut n = 1;
        while self.backups().join(&id).exists() || self.backups().join(format!("{id}.partial")).exists() {
            n += 1;
            id = format!("{}-{n}", backup_id(snapshot.point_ms));
        }
        let partial = self.backups().join(format!("{id}.partial"));
        std::fs::create_dir_all(&partial).map_err(|e| BackupError::io(&partial, e))?;
        let result = self.write_backup(&id, &partial, &snapshot, &known);
        let (manifest, copied_files, copied_bytes) = match result {
            Ok(done) => done,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&partial);
                return Err(e);
            }
        };
        let reused_files = manifest.files.len() - copied_files;
        let pause = snapshot.pause;
        drop(snapshot);
        let pruned = match options.keep {
            Some(keep) => Some(self.prune_locked(keep)?),
            None => None,
        };
        let took = started.elapsed();
        tracing::info!(
            backup = %id, files = manifest.files.len(), copied_files, copied_bytes, pause_ms = pause.as_millis() as u64,
            took_ms = took.as_millis() as u64, "backup taken"
        );
        Ok(BackupReport { backup: summary(&manifest), copied_files, copied_bytes, reused_files, pause, took, pruned })
    }

    /// Writes the backup `id` of `snapshot` into `partial`, then renames it into place.
    fn write_backup(
        &self,
        id: &str,
        partial: &Path,
        snapshot: &Snapshot,
        known: &HashMap<(String, Stamp), DayFile>,
    ) -> Result<(Manifest, usize, u64), BackupError> {
        let sled_path = partial.join(manifest::SLED);
        let io = |e| BackupError::io(&sled_path, e);
        let file = File::create(&sled_path).map_err(io)?;
        let (written, out) = entries::write(BufWriter::with_capacity(1 << 20, file), &snapshot.entries).map_err(io)?;
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        let mut copied_bytes = written.bytes;
        let sled = SledPart { bytes: written.bytes, sha256: written.sha256, entries: snapshot.entries.len() as u64 };

        let mut files = Vec::with_capacity(snapshot.files.len());
        let mut copied_files = 0;
        for (name, held) in &snapshot.files {
            let meta = std::fs::metadata(held).map_err(|e| BackupError::io(held, e))?;
            let stamp = Stamp { len: meta.len(), modified_ns: modified_ns(&meta) };
            if let Some(f) = known.get(&(name.clone(), stamp)) {
                let there = std::fs::metadata(self.files().join(&f.stored)).map(|m| m.len());
                if there.ok() == Some(f.bytes) {
                    files.push(f.clone());
                    continue;
                }
            }
            let (stored, bytes, sha256) = self.copy_in(name, held)?;
            copied_files += 1;
            copied_bytes += bytes;
            files.push(DayFile { name: name.clone(), stored, bytes, sha256, stamp: Some(stamp) });
        }
        sync_dir(&self.files())?;

        let mut series = Vec::new();
        for (key, value) in &snapshot.entries {
            let held = series_in(key, value).ok_or_else(|| StoreError::Corrupt(key.to_vec()))?;
            for (device, metric, meta) in held {
                series.push(SeriesCount { device, metric, id: meta.id, count: meta.count });
            }
        }
        let manifest = Manifest {
            format: manifest::FORMAT,
            id: id.to_owned(),
            point_ms: snapshot.point_ms,
            store_format: FORMAT_VERSION,
            sled,
            files,
            series,
        };
        let path = partial.join(manifest::FILE);
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| BackupError::Damaged { path: path.clone(), reason: e.to_string() })?;
        write_synced(&path, &json)?;
        sync_dir(partial)?;
        let done = self.backups().join(id);
        std::fs::rename(partial, &done).map_err(|e| BackupError::io(&done, e))?;
        sync_dir(&self.backups())?;
        Ok((manifest, copied_files, copied_bytes))
    }

    /// Copies the day file `held` (named `name` in the store) into `files/`, under its name and
    /// hash; returns its name there, bytes and SHA-256.
    fn copy_in(&self, name: &str, held: &Path) -> Result<(String, u64, String), BackupError> {
        let tmp = self.files().join(format!(".{name}.tmp"));
        let (bytes, sha256) = copy_hashing(held, &tmp)?;
        let stem = name.strip_suffix(".mkb").unwrap_or(name);
        let stored = format!("{stem}.{}.mkb", &sha256[..16]);
        let path = self.files().join(&stored);
        if path.exists() {
            // The same content, copied by a backup that did not know this stamp (a full one).
            std::fs::remove_file(&tmp).map_err(|e| BackupError::io(&tmp, e))?;
        } else {
            std::fs::rename(&tmp, &path).map_err(|e| BackupError::io(&path, e))?;
        }
        Ok((stored, bytes, sha256))
    }

    /// Keeps the newest `keep` backups (at least one) and deletes the others, unfinished ones,
    /// and the day files no kept backup names.
    pub fn prune(&self, keep: usize) -> Result<PruneReport, BackupError> {
        let _lock = self.lock(true)?;
        self.prune_locked(keep)
    }

    fn prune_locked(&self, keep: usize) -> Result<PruneReport, BackupError> {
        let keep = keep.max(1);
        let mut report = PruneReport::default();
        let manifests = self.manifests()?;
        let cut = manifests.len().saturating_sub(keep);
        let dir = self.backups();
        for m in &manifests[..cut] {
            let path = dir.join(&m.id);
            std::fs::remove_dir_all(&path).map_err(|e| BackupError::io(&path, e))?;
            report.backups.push(m.id.clone());
        }
        if dir.is_dir() {
            for entry in std::fs::read_dir(&dir).map_err(|e| BackupError::io(&dir, e))? {
                let entry = entry.map_err(|e| BackupError::io(&dir, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".partial") {
                    std::fs::remove_dir_all(entry.path()).map_err(|e| BackupError::io(&entry.path(), e))?;
                    report.backups.push(name);
                }
            }
        }
        let named: std::collections::HashSet<&str> =
            manifests[cut..].iter().flat_map(|m| m.files.iter().map(|f| f.stored.as_str())).collect();
        let files = self.files();
        if files.is_dir() {
            for entry in std::fs::read_dir(&files).map_err(|e| BackupError::io(&files, e))? {
                let entry = entry.map_err(|e| BackupError::io(&files, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if named.contains(name.as_str()) {
                    continue;
                }
                let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
                std::fs::remove_file(entry.path()).map_err(|e| BackupError::io(&entry.path(), e))?;
                report.files += 1;
                report.bytes += bytes;
            }
        }
        Ok(report)
    }
}

fn summary(m: &Manifest) -> BackupSummary {
    BackupSummary {
        id: m.id.clone(),
        point_ms: m.point_ms,
        files: m.files.len(),
        bytes: m.bytes(),
        readings: m.readings(),
        series: m.series.len(),
    }
}

/// `YYYYMMDDTHHMMSSZ` of `ms`.
fn backup_id(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, mo, d) = crate::civil_date(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!("{y:04}{mo:02}{d:02}T{:02}{:02}{:02}Z", s / 3600, s / 60 % 60, s % 60)
}

fn modified_ns(meta: &std::fs::Metadata) -> u128 {
    meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos())
}

/// Copies `from` to `to`, synced; returns its bytes and SHA-256.
fn copy_hashing(from: &Path, to: &Path) -> Result<(u64, String), BackupError> {
    let mut src = File::open(from).map_err(|e| BackupError::io(from, e))?;
    let mut dst = File::create(to).map_err(|e| BackupError::io(to, e))?;
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(|e| BackupError::io(from, e))?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(|e| BackupError::io(to, e))?;
        bytes += n as u64;
    }
    dst.sync_all().map_err(|e| BackupError::io(to, e))?;
    Ok((bytes, entries::hex(&sha.finalize())))
}

/// The SHA-256 of the file `path`, and its bytes.
fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut src = File::open(path)?;
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            return Ok((bytes, entries::hex(&sha.finalize())));
        }
        sha.update(&buf[..n]);
        bytes += n as u64;
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let io = |e| BackupError::io(path, e);
    let mut file = File::create(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| BackupError::io(dir, e))
}

/// The store at one moment: the entries of its tree, and links to the day files sled named
/// then, which no fold can take away. Dropping it deletes the links.
pub(crate) struct Snapshot {
    entries: Vec<(sled::IVec, sled::IVec)>,
    /// Store name of each day file, and its link in the hold directory.
    files: Vec<(String, PathBuf)>,
    point_ms: i64,
    pause: Duration,
    hold: PathBuf,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.hold) {
            tracing::warn!(dir = %self.hold.display(), error = %e, "cannot delete a backup's hold directory; the next opening will");
        }
    }
}

/// Ends a backup's journal of new chunks however the snapshot ends.
struct Journaling<'a>(&'a Store);

impl Drop for Journaling<'_> {
    fn drop(&mut self) {
        *self.0.inner.journal.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl Store {
    /// The store at this moment, for a backup: see the module documentation.
    ///
    /// The chunks (most of sled's entries while an hour is open) are read without the state
    /// lock, as a chunk never changes once written: it only appears (a write, whose key the
    /// journal notes) or goes (a fold, kept out by the upkeep lock held here; or retention or
    /// a device's removal, which `chunk_removals` counts). Under the state lock, only the
    /// other entries and the journaled chunks are read; if a chunk went meanwhile, or the
    /// database was opened again, the chunks are read again under the lock.
    pub(crate) fn snapshot(&self) -> Result<Snapshot, StoreError> {
        // Upkeep first, as a fold takes it: no chunk is folded away and no file is replaced or
        // deleted until the named ones are linked.
        let _upkeep = self.inner.upkeep.lock().unwrap_or_else(|e| e.into_inner());
        let holds = self.inner.path.join(HOLD_DIR);
        let unique = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let hold = holds.join(format!("{unique}-{}", std::process::id()));
        std::fs::create_dir_all(&hold)?;
        let mut snapshot =
            Snapshot { entries: Vec::new(), files: Vec::new(), point_ms: 0, pause: Duration::ZERO, hold };

        let journaling = Journaling(self);
        let (first, removals) = {
            let mut state = self.state();
            let opened = self.writable(&mut state)?;
            *self.inner.journal.lock().unwrap_or_else(|e| e.into_inner()) = Some(Vec::new());
            (opened, self.inner.chunk_removals.load(Ordering::Relaxed))
        };
        let mut chunks: Vec<(sled::IVec, sled::IVec)> =
            first.tree.scan_prefix([keys::POINT]).collect::<Result<_, _>>()?;

        let named: BTreeMap<i64, u64>;
        let mut others: Vec<(sled::IVec, sled::IVec)>;
        let mut late: Vec<(sled::IVec, sled::IVec)> = Vec::new();
        {
            let mut state = self.state();
            let held = Instant::now();
            let opened = self.writable(&mut state)?;
            snapshot.point_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            let journal = self.inner.journal.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
            drop(journaling);
            let unchanged =
                Arc::ptr_eq(&opened, &first) && self.inner.chunk_removals.load(Ordering::Relaxed) == removals;
            if unchanged {
                for key in journal {
                    if let Some(value) = opened.tree.get(&key)? {
                        late.push((key.into(), value));
                    }
                }
            } else {
                chunks = opened.tree.scan_prefix([keys::POINT]).collect::<Result<_, _>>()?;
            }
            others = opened.tree.range(..[keys::POINT]).collect::<Result<_, _>>()?;
            for entry in opened.tree.range([keys::POINT + 1]..) {
                others.push(entry?);
            }
            named = opened.days.read().clone();
            snapshot.pause = held.elapsed();
        }
        // In key order, as sled holds them: the chunks' space sits between the `0x00` keys and
        // the rest.
        chunks.append(&mut late);
        chunks.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        chunks.dedup_by(|a, b| a.0 == b.0);
        let split = others.partition_point(|(k, _)| k.first().is_some_and(|&b| b < keys::POINT));
        let rest = others.split_off(split);
        snapshot.entries = others;
        snapshot.entries.append(&mut chunks);
        snapshot.entries.extend(rest);

        let blocks = self.inner.path.join(days::DIR);
        for (day, generation) in named {
            let name = days::file_name(day, generation);
            let link = snapshot.hold.join(&name);
            std::fs::hard_link(blocks.join(&name), &link)?;
            snapshot.files.push((name, link));
        }
        Ok(snapshot)
    }
}

/// Deletes the hold directories of backups that a killed process left in the data
/// directory `data`; called when the store is opened, before any backup can run.
pub(crate) fn clear_holds(data: &Path) -> Result<(), StoreError> {
    let holds = data.join(HOLD_DIR);
    if holds.exists() {
        std::fs::remove_dir_all(&holds)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
