//! The store's day files on disk (`<data dir>/blocks/<YYYY-MM-DD>.<generation>.mkb`, format
//! in `dayfile.rs`): which file holds each closed day, their indexes cached in memory, and the
//! writing and replacing of a file so that a crash at any moment loses nothing.
//!
//! sled names the file of each day (key `0x07`, day: the file's generation), and only a file
//! sled names counts. A new file is written under a temporary name, synced, renamed into
//! place, and its directory synced; then one sled batch names it and deletes what it absorbed
//! (the day's chunks, or another file's expired series); sled is flushed; only then is the
//! file it replaces deleted. Killed before the batch, the new file is a stray that the next
//! opening deletes (the chunks are still in sled); killed after, the old one is. So every
//! point is in exactly one place that sled's state points to, whatever moment the kill comes.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use crate::dayfile::{self, Index};
use crate::{keys, StoreError};

/// The directory of the day files, under the data directory.
pub(crate) const DIR: &str = "blocks";

/// Day files whose index and handle stay open; older ones are opened again when read.
const CACHE: usize = 64;

/// One day file, open, with its index.
#[derive(Debug)]
pub(crate) struct OpenDay {
    path: PathBuf,
    file: File,
    index: Index,
}

impl OpenDay {
    /// The block of series `id`, checked against its checksum; `None` if the file has none.
    pub(crate) fn block(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(entry) = self.index.get(id) else { return Ok(None) };
        dayfile::read_block(&self.file, entry).map(Some).map_err(|reason| self.corrupt(reason))
    }

    /// The series the file holds, ascending.
    pub(crate) fn series(&self) -> impl Iterator<Item = u32> + '_ {
        self.index.entries.iter().map(|e| e.series)
    }

    /// The error for a block of this file that cannot be read.
    pub(crate) fn corrupt(&self, reason: impl Into<String>) -> StoreError {
        StoreError::DayFile { file: self.path.clone(), reason: reason.into() }
    }
}

/// The day files of one opening of the store.
#[derive(Debug)]
pub(crate) struct Days {
    dir: PathBuf,
    /// Day start -> generation of its file. Readers hold it for reading while they read a
    /// day's file and chunks; a change of file holds it for writing while its sled batch is
    /// applied, so that no reader sees the batch without the file or the file without it.
    files: RwLock<BTreeMap<i64, u64>>,
    /// Most recently used last.
    cache: Mutex<Vec<(i64, u64, Arc<OpenDay>)>>,
}

impl Days {
    /// The day files sled names in `tree`, for the data directory `data`. Files of the
    /// directory sled does not name (a new file whose batch never landed, an old one not
    /// deleted yet, a temporary file) are deleted; a file sled names that is missing is an
    /// error.
    pub(crate) fn load(data: &Path, tree: &sled::Tree) -> Result<Days, StoreError> {
        let dir = data.join(DIR);
        let mut files = BTreeMap::new();
        for entry in tree.scan_prefix([keys::DAY_FILE]) {
            let (key, value) = entry?;
            let corrupt = || StoreError::Corrupt(key.to_vec());
            let day = keys::parse_day_file(&key).ok_or_else(corrupt)?;
            let generation = value.as_ref().try_into().map(u64::from_be_bytes).map_err(|_| corrupt())?;
            files.insert(day, generation);
        }
        let expected: HashSet<String> = files.iter().map(|(&d, &g)| file_name(d, g)).collect();
        if dir.exists() {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if expected.contains(&name) {
                    continue;
                }
                if name.ends_with(".mkb") || name.ends_with(".mkb.tmp") {
                    tracing::info!(file = %name, "removing a day file the store does not use (left by an interrupted fold)");
                    std::fs::remove_file(entry.path())?;
                } else {
                    tracing::warn!(file = %name, "unknown file among the day files, left alone");
                }
            }
        }
        for name in &expected {
            let path = dir.join(name);
            if !path.exists() {
                return Err(StoreError::DayFile { file: path, reason: "missing".into() });
            }
        }
        Ok(Days { dir, files: RwLock::new(files), cache: Mutex::new(Vec::new()) })
    }

    /// The days that have a file, and their generations; hold it while reading them.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, BTreeMap<i64, u64>> {
        self.files.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The generation of day `day`'s file, if it has one.
    pub(crate) fn generation(&self, day: i64) -> Option<u64> {
        self.read().get(&day).copied()
    }

    /// Day `day`'s file of generation `generation`, open.
    pub(crate) fn open(&self, day: i64, generation: u64) -> Result<Arc<OpenDay>, StoreError> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = cache.iter().position(|(d, g, _)| *d == day && *g == generation) {
            let hit = cache.remove(at);
            let open = Arc::clone(&hit.2);
            cache.push(hit);
            return Ok(open);
        }
        drop(cache);
        let path = self.dir.join(file_name(day, generation));
        let corrupt = |reason: String| StoreError::DayFile { file: path.clone(), reason };
        let file = File::open(&path).map_err(|e| corrupt(e.to_string()))?;
        let len = file.metadata().map_err(|e| corrupt(e.to_string()))?.len();
        let index = dayfile::read_index(&file, len).map_err(corrupt)?;
        if index.day_ms != day {
            return Err(corrupt(format!("holds day {} instead of {day}", index.day_ms)));
        }
        let open = Arc::new(OpenDay { path, file, index });
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|(d, _, _)| *d != day);
        if cache.len() >= CACHE {
            cache.remove(0);
        }
        cache.push((day, generation, Arc::clone(&open)));
        Ok(open)
    }

    /// Writes `bytes` as day `day`'s file of generation `generation`: a temporary file,
    /// synced, renamed into place, the directory synced. `what` names the operation for the
    /// test-only crash points.
    pub(crate) fn write(&self, day: i64, generation: u64, bytes: &[u8], what: &str) -> Result<(), StoreError> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(file_name(day, generation));
        let mut tmp_name = path.clone().into_os_string();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let written = (|| {
            let mut file = File::create(&tmp)?;
            if crash_armed(what, "partial") {
                file.write_all(&bytes[..bytes.len() / 2])?;
                file.sync_all()?;
                crash_point(what, "partial");
            }
            file.write_all(bytes)?;
            file.sync_all()?;
            drop(file);
            std::fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        })();
        if let Err(e) = written {
            // A full disk, most likely: what was written of it goes, the chunks stay in sled.
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
        crash_point(what, "renamed");
        Ok(())
    }

    /// Applies `commit` (the sled batch that names the new file, or none) with every reader
    /// kept out, and makes day `day`'s file the one of `generation` (none if `None`) for them.
    pub(crate) fn switch(
        &self,
        day: i64,
        generation: Option<u64>,
        commit: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut files = self.files.write().unwrap_or_else(|e| e.into_inner());
        commit()?;
        match generation {
            Some(g) => files.insert(day, g),
            None => files.remove(&day),
        };
        Ok(())
    }

    /// [`Days::switch`] for many days at once, with one commit: each `(day, generation)` of
    /// `files` becomes the day's file.
    pub(crate) fn switch_all(
        &self,
        files: &[(i64, u64)],
        commit: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut map = self.files.write().unwrap_or_else(|e| e.into_inner());
        commit()?;
        map.extend(files.iter().copied());
        Ok(())
    }

    /// Deletes day `day`'s file of `generation`, once sled no longer names it and that is on
    /// disk. A failure only leaves a stray that the next opening deletes.
    pub(crate) fn remove(&self, day: i64, generation: u64) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).retain(|(d, g, _)| (*d, *g) != (day, generation));
        let path = self.dir.join(file_name(day, generation));
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(file = %path.display(), error = %e, "cannot delete a replaced day file; the next opening will");
        }
    }
}

/// `<YYYY-MM-DD>.<generation>.mkb`, the UTC date of the day starting at `day_ms`.
pub(super) fn file_name(day_ms: i64, generation: u64) -> String {
    let (y, m, d) = crate::civil_date(day_ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}-{d:02}.{generation}.mkb")
}

/// Whether the test-only crash point `what:at` is armed (feature `crash-points`, environment
/// variable `MEKONG_STORE_CRASH_AT`); never in a build without the feature.
fn crash_armed(what: &str, at: &str) -> bool {
    #[cfg(feature = "crash-points")]
    {
        std::env::var("MEKONG_STORE_CRASH_AT").is_ok_and(|v| v == format!("{what}:{at}"))
    }
    #[cfg(not(feature = "crash-points"))]
    {
        let _ = (what, at);
        false
    }
}

/// Test-only: ends the process at once, as SIGKILL would, if the crash point `what:at` is
/// armed ([`crash_armed`]).
pub(crate) fn crash_point(what: &str, at: &str) {
    if crash_armed(what, at) {
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::file_name;

    #[test]
    fn file_names_are_utc_dates() {
        assert_eq!(file_name(0, 1), "1970-01-01.1.mkb");
        assert_eq!(file_name(1_780_272_000_000, 7), "2026-06-01.7.mkb");
        assert_eq!(file_name(951_782_400_000, 2), "2000-02-29.2.mkb");
        assert_eq!(file_name(-86_400_000, 1), "1969-12-31.1.mkb");
    }
}
