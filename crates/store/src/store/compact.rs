//! Offline compaction: copy the live entries of a store into a fresh sled directory and put it
//! in the old one's place.
//!
//! sled (0.34) writes a log: every write appends, and a page rewritten leaves its old copy
//! behind. Its cleaner moves live pages out of segments that are mostly garbage, and freed
//! segments are reused, but the file shrinks only when its last segments are free, which a
//! busy store rarely sees. So the directory stays at its largest size, however much folding
//! and retention delete. A copy written in key order holds only live entries, packed; that is
//! the one way sled offers to give the space back, and it needs the store closed (sled locks
//! its directory).
//!
//! The day files are outside sled and never change: they are hard-linked into the copy.
//!
//! The swap is two renames: `data` → `data.old`, then `data.compacting` → `data`. If the
//! process dies between them, [`Store::open`] refuses to start on an empty directory and says
//! what to do, and the next compaction finishes the swap.

use std::path::{Path, PathBuf};

use super::{days, open_db, Store, StoreError, StoreOptions, TREE};

/// Entries copied per batch.
const BATCH: usize = 10_000;

/// What a compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Bytes of the directory before.
    pub bytes_before: u64,
    /// Bytes after.
    pub bytes_after: u64,
    /// Entries copied.
    pub entries: u64,
    /// Bytes of their keys and values, and of the day files, without sled's own.
    pub entry_bytes: u64,
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

/// Fails if a compaction of `path` stopped between its two renames.
pub(crate) fn check_not_interrupted(path: &Path) -> Result<(), StoreError> {
    let old = sibling(path, ".old");
    if !path.exists() && old.exists() {
        return Err(StoreError::InterruptedCompaction { old, compacted: sibling(path, ".compacting") });
    }
    Ok(())
}

/// Compacts the store in `path`, which must not be open. Needs as much free space as the
/// live data.
pub fn compact(path: &Path, options: &StoreOptions) -> Result<CompactReport, StoreError> {
    compact_with_progress(path, options, |_| {})
}

/// [`compact`], calling `progress` after every batch of entries copied with what was copied
/// so far (`entries`, `entry_bytes`; `bytes_before` is the directory's size before), so that
/// a command can show how far a long compaction has come.
pub fn compact_with_progress(
    path: &Path,
    options: &StoreOptions,
    mut progress: impl FnMut(&CompactReport),
) -> Result<CompactReport, StoreError> {
    let (old, fresh) = (sibling(path, ".old"), sibling(path, ".compacting"));
    if !path.exists() && old.exists() && fresh.exists() {
        // The last compaction copied everything and stopped between the renames.
        std::fs::rename(&fresh, path)?;
    }
    // Opening checks the format and leaves the store as a valid one, its log folded; nothing
    // writes to it here, so no thread of its own need fold the log while the tree is copied.
    let store = Store::open(path, &StoreOptions { fold_log_every_ms: None, ..options.clone() })?;
    store.flush()?;
    let bytes_before = dir_bytes(path)?;
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh)?;
    }
    let (entries, mut entry_bytes) = {
        let db = open_db(&sled::Config::new().path(&fresh).cache_capacity(options.cache_capacity_bytes))?;
        let tree = db.open_tree(TREE)?;
        let (mut entries, mut entry_bytes) = (0u64, 0u64);
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for entry in store.current()?.tree.iter() {
            let (key, value) = entry?;
            entry_bytes += (key.len() + value.len()) as u64;
            batch.insert(key, value);
            in_batch += 1;
            entries += 1;
            if in_batch == BATCH {
                tree.apply_batch(std::mem::take(&mut batch))?;
                in_batch = 0;
                progress(&CompactReport { bytes_before, bytes_after: 0, entries, entry_bytes });
            }
        }
        tree.apply_batch(batch)?;
        db.flush()?;
        (entries, entry_bytes)
    };
    // The day files are compact already and never change: linked, not copied, so the old
    // directory stays whole until the swap.
    let files = path.join(days::DIR);
    if files.exists() {
        std::fs::create_dir_all(fresh.join(days::DIR))?;
        for entry in std::fs::read_dir(&files)? {
            let entry = entry?;
            std::fs::hard_link(entry.path(), fresh.join(days::DIR).join(entry.file_name()))?;
            entry_bytes += entry.metadata()?.len();
        }
    }
    drop(store);
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    std::fs::rename(path, &old)?;
    std::fs::rename(&fresh, path)?;
    std::fs::remove_dir_all(&old)?;
    Ok(CompactReport { bytes_before, bytes_after: dir_bytes(path)?, entries, entry_bytes })
}

/// Bytes of the files under `dir`, as their lengths say.
fn dir_bytes(dir: &Path) -> Result<u64, StoreError> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { dir_bytes(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}
