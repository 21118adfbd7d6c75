//! Removing a device and everything stored of it: its series' chunks and rollups, their
//! metadata, the device's metadata and its sequence number, in one atomic batch (its blocks in
//! day files become unreachable at once, and are dropped when the files are next written).

use super::Store;
use crate::{keys, StoreError};

/// What [`Store::remove_device`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    /// Series removed.
    pub series: usize,
    /// Points in them.
    pub points: u64,
    /// Entries deleted from the tree (chunks, blocks, rollups, metadata).
    pub entries: usize,
}

impl Store {
    /// Removes `device` and all it stored; `Ok(None)` if the store does not know it.
    ///
    /// The whole device goes in one atomic batch, under the write lock: a write group of
    /// ingest lands wholly before (and is removed) or wholly after (and is kept, as a device
    /// seen afresh), never half. Its series' blocks in day files are not read again and go
    /// when those files are next written (a later fold of that day, or retention); the series
    /// ids are never given to another series, so that no new series reads them.
    /// Folding and expiry look a series up under the same lock, so they skip a removed one.
    pub fn remove_device(&self, device: &str) -> Result<Option<Removed>, StoreError> {
        let mut state = self.state();
        let known = state.devices.contains_key(device) || state.series.contains_key(device);
        if !known && !state.seqs.contains_key(device) {
            return Ok(None);
        }
        let opened = self.writable_for(&mut state, device)?;
        let mut batch = sled::Batch::default();
        let mut removed = Removed::default();
        for meta in state.series.get(device).into_iter().flat_map(|m| m.values()) {
            for prefix in [keys::POINT, keys::ROLLUP] {
                let mut start = [0u8; 5];
                start[0] = prefix;
                start[1..].copy_from_slice(&meta.id.to_be_bytes());
                for key in opened.tree.scan_prefix(start).keys() {
                    batch.remove(key.map_err(|e| self.fail(opened.generation, &e))?);
                    removed.entries += 1;
                }
            }
            removed.series += 1;
            removed.points += meta.count;
        }
        batch.remove(keys::device(device));
        batch.remove(keys::seq(device));
        removed.entries += 2;
        self.apply(&opened, batch)?;
        self.inner.chunk_removals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        state.series.remove(device);
        state.devices.remove(device);
        state.seqs.remove(device);
        Ok(Some(removed))
    }
}
