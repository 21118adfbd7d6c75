//! The log of write groups: each group is one sled entry, folded later into chunks and entries.
//!
//! A group of a thousand single-reading packs from a thousand devices used to be two thousand
//! sled inserts (a chunk and a device entry each), in leaves all over the tree: at 10,000
//! devices sled's tree descent, page linking and splits were 62 % of the ingest thread. Now
//! the group is one record under `0x08 | record number`, one sled insert per 7 KiB piece,
//! whose value lists the inserts the group stands for (its chunks, device entries, sequence
//! numbers and next series id). A fold, on the store's own thread every
//! [`crate::StoreOptions::fold_log_every_ms`] (sooner when much is logged), applies the inserts
//! of every record logged since the last one as one batch that also deletes those records. It
//! merges the chunks of one series and hour window into one (listing them as they are where
//! they follow one another, [`chunk::list`]) and keeps the newest of each entry, so a device
//! that sent ten packs since the last fold costs one chunk and one entry, not twenty.
//!
//! Until folded, a record's chunks are also held here in memory, keyed as they will be in the
//! tree, and every read of chunks ([`super::read::scan_chunks`]) takes them with the tree's;
//! the metadata is in the mirror already. A fold applies its batch and drops what it folded
//! from memory while holding `applying` for writing, and a read holds it for reading from its
//! look at memory to the end of its look at the tree, so it sees every chunk once.
//!
//! Invariant: whatever writes the tree's chunks, device entries or sequence numbers other than
//! a fold, or reads chunks from the tree alone, first folds the log (or, for one device, the
//! log if it holds an entry of that device) under the state lock ([`Store::writable`],
//! [`Store::writable_for`]); as no record is logged while that lock is held, its batch is
//! never older than a record still to fold.
//!
//! A fold is applied in slices ([`FOLD_SLICE`]), the records' deletions in the last one, so a
//! crash can leave part of a fold in the tree and all its records in the log; the opening
//! applies what the log holds again before it reads anything ([`fold_at_open`]), and that
//! ends where the whole fold would have. A merged chunk is written under the key of the first
//! of the chunks it merges, which is the smallest (its first point is the window's first):
//! applying the records again writes that key back as it was logged, and the other chunks
//! beside it, so each point is in the tree once. Entries are the newest of each key, which
//! applying the records in their order writes too.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::Duration;

use super::{Opened, Store};
use crate::{chunk, keys, varint, StoreError};

/// Bytes of unfolded chunks and entries at which the background fold starts early.
const FOLD_EARLY_BYTES: usize = 32 << 20;

/// Bytes of unfolded chunks and entries at which a writer folds itself: a bound on memory if
/// the background fold cannot keep up (or the store is used without it).
const FOLD_NOW_BYTES: usize = 128 << 20;

/// The most bytes of a record's piece, an entry of its own in the tree. sled writes a value,
/// or a leaf (of up to 16 entries), of over 128 KiB (a quarter of its 512 KiB log segment) as
/// a file of its own, and a group of 2,048 packs of 50 readings is about 2 MB: 16 pieces
/// stay under that.
const PIECE_BYTES: usize = 7 << 10;

/// The most inserts and removals in one batch of a fold. sled applies a batch under a lock
/// that every other write of the process waits for, and no flush completes past a batch under
/// way; a fold of a city's devices is tens of thousands of inserts, so it is applied in slices
/// of this many, and the ingest thread's writes and flushes go in between (see the module
/// documentation for why a fold cut short by a crash loses nothing).
const FOLD_SLICE: usize = 2048;

/// The first byte of a record's value: the version of its layout.
const RECORD_VERSION: u8 = 1;

/// A chunk key.
pub(super) type ChunkKey = [u8; 21];

/// What the records logged and not yet folded hold.
#[derive(Debug, Default)]
struct Pending {
    /// Their chunks.
    chunks: BTreeMap<ChunkKey, sled::IVec>,
    /// Their other inserts, the newest of each key only: a later record's entry was made
    /// from a mirror that had the earlier one's changes. Hashed with ahash, randomly keyed
    /// as the staging's maps are (`write.rs`): with SipHash, finding a device's entry here
    /// took about a twentieth of the ingest thread at one reading per pack.
    entries: HashMap<Vec<u8>, Vec<u8>, ahash::RandomState>,
    /// Their keys.
    records: Vec<[u8; 9]>,
    /// The bytes of `chunks` and `entries`.
    bytes: usize,
}

/// One opening's log; see the module documentation.
#[derive(Debug, Default)]
pub(super) struct Log {
    pending: Mutex<Pending>,
    /// One fold at a time.
    folding: Mutex<()>,
    /// Written by a fold while it applies and forgets, read across a read's two looks.
    applying: RwLock<()>,
    /// Records made by this opening, the low bits of their numbers.
    records_made: AtomicU64,
    /// The inserts of a slice of a fold; 0 for [`FOLD_SLICE`] (tests make it small).
    pub(super) slice: std::sync::atomic::AtomicUsize,
    /// For tests: a fold stops, as if the process had died, after this many slices (0: never).
    #[cfg(test)]
    pub(super) test_crash_after: std::sync::atomic::AtomicUsize,
}

/// What a writer hands the log: one group's inserts.
#[derive(Debug, Default)]
pub(super) struct Record {
    pub(super) chunks: Vec<(ChunkKey, Vec<u8>)>,
    pub(super) entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Record {
    /// The record's values in the tree, none if it has no insert: each a version, a count,
    /// then each insert as key and value, both length-prefixed, cut where a piece would pass
    /// [`PIECE_BYTES`] (an insert is never cut). Pieces are logged in one batch, so they are
    /// folded like records of their own.
    pub(super) fn encode(&self) -> Vec<Vec<u8>> {
        let mut pieces = Vec::new();
        let mut body = Vec::with_capacity(PIECE_BYTES);
        let mut count = 0u64;
        let finish = |body: &[u8], count: u64| {
            let mut out = Vec::with_capacity(body.len() + 11);
            out.push(RECORD_VERSION);
            varint::put_varint(&mut out, count);
            out.extend_from_slice(body);
            out
        };
        let chunks = self.chunks.iter().map(|(k, v)| (&k[..], &v[..]));
        for (key, value) in chunks.chain(self.entries.iter().map(|(k, v)| (&k[..], &v[..]))) {
            // 20: room for the two lengths and the piece's version and count, as varints.
            if count > 0 && body.len() + key.len() + value.len() + 20 > PIECE_BYTES {
                pieces.push(finish(&body, count));
                body.clear();
                count = 0;
            }
            varint::put_varint(&mut body, key.len() as u64);
            body.extend_from_slice(key);
            varint::put_varint(&mut body, value.len() as u64);
            body.extend_from_slice(value);
            count += 1;
        }
        if count > 0 {
            pieces.push(finish(&body, count));
        }
        pieces
    }
}

/// The inserts of a record's value, in order; `None` if it is malformed.
fn decode(mut value: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let (&version, rest) = value.split_first()?;
    if version != RECORD_VERSION {
        return None;
    }
    value = rest;
    let n = varint::get_varint(&mut value)?;
    let mut out = Vec::with_capacity(usize::try_from(n).ok()?.min(value.len()));
    for _ in 0..n {
        let mut field = || {
            let len = usize::try_from(varint::get_varint(&mut value)?).ok()?;
            let (field, rest) = value.split_at_checked(len)?;
            value = rest;
            Some(field)
        };
        let key = field()?;
        let val = field()?;
        out.push((key, val));
    }
    value.is_empty().then_some(out)
}

/// [`decode`], for the fuzz target (`mekong_store::fuzzing`).
#[cfg(feature = "fuzzing")]
pub fn decode_record(value: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    decode(value)
}

/// `inserts` encoded as a record's pieces, for the fuzz target (`mekong_store::fuzzing`).
#[cfg(feature = "fuzzing")]
pub fn encode_record(inserts: &[(&[u8], &[u8])]) -> Vec<Vec<u8>> {
    let entries = inserts.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
    Record { chunks: Vec::new(), entries }.encode()
}

/// The most bytes of a record's piece that holds more than one insert.
#[cfg(feature = "fuzzing")]
pub const MAX_PIECE_BYTES: usize = PIECE_BYTES;

/// The key of record `number`.
fn record_key(number: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = keys::LOG;
    k[1..].copy_from_slice(&number.to_be_bytes());
    k
}

impl Log {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key of the next record of the opening of `epoch` (chunk ids' high bits): records
    /// sort in the order logged, across openings too.
    pub(super) fn next_key(&self, epoch: u64) -> [u8; 9] {
        record_key(epoch | (self.records_made.fetch_add(1, Ordering::Relaxed) & ((1 << 40) - 1)))
    }

    /// Adds `record`, logged under `keys` in the tree just now, to what the next fold takes;
    /// says how soon a fold is due, by the bytes now pending.
    pub(super) fn add(&self, keys: Vec<[u8; 9]>, record: Record) -> Due {
        let mut guard = self.pending();
        let pending = &mut *guard;
        for (k, v) in record.chunks {
            pending.bytes += k.len() + v.len();
            pending.chunks.insert(k, v.into());
        }
        for (k, v) in record.entries {
            let added = v.len();
            let replaced = match pending.entries.entry(k) {
                Entry::Occupied(mut e) => std::mem::replace(e.get_mut(), v).len(),
                Entry::Vacant(e) => {
                    pending.bytes += e.key().len();
                    e.insert(v);
                    0
                }
            };
            pending.bytes = (pending.bytes + added).saturating_sub(replaced);
        }
        pending.records.extend(keys);
        match pending.bytes {
            b if b >= FOLD_NOW_BYTES => Due::Now,
            b if b >= FOLD_EARLY_BYTES => Due::Soon,
            _ => Due::Later,
        }
    }

    /// Held by a read from its look at the unfolded chunks to the end of its look at the tree.
    pub(super) fn reading(&self) -> RwLockReadGuard<'_, ()> {
        self.applying.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The unfolded chunks with keys in `range`, in key order; call with [`Log::reading`] held.
    pub(super) fn chunks(&self, range: std::ops::Range<ChunkKey>) -> Vec<(ChunkKey, sled::IVec)> {
        self.pending().chunks.range(range).map(|(k, v)| (*k, v.clone())).collect()
    }

    /// For tests: fails a fold before its slice `n`, as if the process had died there
    /// ([`Log::test_crash_after`]); never otherwise.
    fn crash_before(&self, n: usize) -> Result<(), StoreError> {
        #[cfg(test)]
        if n > 0 && n == self.test_crash_after.load(Ordering::Relaxed) {
            return Err(StoreError::Corrupt(b"test: a crash in the middle of a fold".to_vec()));
        }
        #[cfg(not(test))]
        let _ = n;
        Ok(())
    }

    /// Records and bytes not yet folded.
    pub(super) fn size(&self) -> (usize, usize) {
        let pending = self.pending();
        (pending.records.len(), pending.bytes)
    }
}

/// How soon the log wants a fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Due {
    /// At the background fold's next turn.
    Later,
    /// Wake the background fold.
    Soon,
    /// Fold before the next write.
    Now,
}

/// What a fold did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LogFold {
    /// Records folded.
    pub records: usize,
    /// Chunks written into the tree, after merging those of one series and window.
    pub chunks: usize,
    /// Other entries written (device entries, sequence numbers, the next series id).
    pub entries: usize,
}

impl Store {
    /// Folds every record logged so far into the tree, as the store's own thread does every
    /// [`crate::StoreOptions::fold_log_every_ms`]; what it folded.
    pub fn fold_log(&self) -> Result<LogFold, StoreError> {
        let opened = self.current()?;
        self.fold_log_in(&opened)
    }

    /// Records and bytes logged and not yet folded.
    pub fn log_size(&self) -> (usize, usize) {
        self.current().map_or((0, 0), |o| o.log.size())
    }

    /// [`Store::fold_log`] in `opened`.
    pub(super) fn fold_log_in(&self, opened: &Opened) -> Result<LogFold, StoreError> {
        let one = opened.log.folding.lock().unwrap_or_else(|e| e.into_inner());
        self.fold_log_held(opened, &one)
    }

    /// Folds the log if it holds an entry of `device` (and so maybe chunks of its series):
    /// what a write of that device's entry, or a read of its series' chunks in the tree
    /// alone, needs first. Called with the state lock held, so that nothing of the device is
    /// logged until the caller's batch is applied.
    pub(super) fn fold_log_for(&self, opened: &Opened, device: &str) -> Result<(), StoreError> {
        // Held first: a fold under way has taken the entries but not yet applied its chunks.
        let one = opened.log.folding.lock().unwrap_or_else(|e| e.into_inner());
        let held = {
            let pending = opened.log.pending();
            [keys::device(device), keys::seq(device)].iter().any(|k| pending.entries.contains_key(k))
        };
        if held {
            self.fold_log_held(opened, &one)?;
        }
        Ok(())
    }

    /// [`Store::fold_log_in`], with `folding` held.
    fn fold_log_held(&self, opened: &Opened, _folding: &MutexGuard<'_, ()>) -> Result<LogFold, StoreError> {
        let log = &opened.log;
        // What is logged from here on waits for the next fold.
        let (records, chunks, entries) = {
            let mut pending = log.pending();
            let chunks: Vec<(ChunkKey, sled::IVec)> = pending.chunks.iter().map(|(k, v)| (*k, v.clone())).collect();
            let entries = std::mem::take(&mut pending.entries);
            let entry_bytes: usize = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
            pending.bytes = pending.bytes.saturating_sub(entry_bytes);
            (std::mem::take(&mut pending.records), chunks, entries)
        };
        if records.is_empty() {
            return Ok(LogFold::default());
        }
        let mut fold = LogFold { records: records.len(), entries: entries.len(), ..LogFold::default() };
        let slice = match log.slice.load(Ordering::Relaxed) {
            0 => FOLD_SLICE,
            n => n,
        };
        let mut batches = Slices { batches: vec![sled::Batch::default()], in_last: 0, slice };
        for (key, value) in entries {
            batches.insert(key, value);
        }
        let mut written = Vec::new();
        let mut points = Vec::new();
        let same_window = |a: &(ChunkKey, sled::IVec), b: &(ChunkKey, sled::IVec)| {
            let (sa, ta) = keys::parse_chunk(&a.0).unwrap_or_default();
            let (sb, tb) = keys::parse_chunk(&b.0).unwrap_or_default();
            sa == sb && chunk::window_start(ta) == chunk::window_start(tb)
        };
        for window in chunks.chunk_by(same_window) {
            let [(key, value)] = window else {
                // The first chunk's key, the window's smallest: see the module documentation.
                let key = window[0].0;
                // Chunks that follow one another, as a device's packs mostly do, are listed
                // as they are: decoding and encoding their points was half of a fold.
                let values: Vec<&[u8]> = window.iter().map(|(_, v)| &v[..]).collect();
                if let Some(listed) = chunk::list(&values) {
                    batches.insert(key.as_slice(), listed);
                    written.push(key);
                    continue;
                }
                // Points of one (series, time) are logged once (writes check the unfolded
                // chunks too), so the merged chunk holds each of them once.
                points.clear();
                for (key, value) in window {
                    chunk::decode_into(value, &mut points).ok_or_else(|| StoreError::Corrupt(key.to_vec()))?;
                }
                points.sort_unstable_by_key(|p| p.0);
                batches.insert(key.as_slice(), chunk::encode(&points));
                written.push(key);
                continue;
            };
            batches.insert(key.as_slice(), value.clone());
            written.push(*key);
        }
        fold.chunks = written.len();
        let _applying = log.applying.write().unwrap_or_else(|e| e.into_inner());
        let mut journal = self.inner.journal.lock().unwrap_or_else(|e| e.into_inner());
        let mut batches = batches.batches;
        // The last batch (there is always one) deletes the records.
        if let Some(last) = batches.last_mut() {
            for record in &records {
                last.remove(record);
            }
        }
        for (n, batch) in batches.into_iter().enumerate() {
            log.crash_before(n)?;
            self.apply(opened, batch)?;
        }
        if let Some(journal) = journal.as_mut() {
            journal.extend(written.iter().map(|k| k.to_vec()));
        }
        drop(journal);
        let mut pending = log.pending();
        for (key, value) in &chunks {
            pending.chunks.remove(key);
            pending.bytes = pending.bytes.saturating_sub(key.len() + value.len());
        }
        Ok(fold)
    }
}

/// A fold's inserts, cut into batches of at most `slice` ([`FOLD_SLICE`]).
struct Slices {
    batches: Vec<sled::Batch>,
    /// Inserts in the last batch.
    in_last: usize,
    slice: usize,
}

impl Slices {
    fn insert(&mut self, key: impl Into<sled::IVec>, value: impl Into<sled::IVec>) {
        if self.in_last >= self.slice || self.batches.is_empty() {
            self.batches.push(sled::Batch::default());
            self.in_last = 0;
        }
        if let Some(last) = self.batches.last_mut() {
            last.insert(key, value);
            self.in_last += 1;
        }
    }
}

/// Folds the records a crash (or a stop before the last fold) left in `tree`, in one batch
/// that deletes them; before anything reads the tree at an opening. Their chunks keep the keys
/// they were logged with.
pub(super) fn fold_at_open(tree: &sled::Tree) -> Result<usize, StoreError> {
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for entry in tree.scan_prefix([keys::LOG]) {
        let (key, value) = entry?;
        let inserts = decode(&value).ok_or_else(|| StoreError::Corrupt(key.to_vec()))?;
        for (k, v) in inserts {
            // Only the spaces a write group logs: a record cannot reach anything else.
            if !matches!(k.first(), Some(&keys::POINT | &keys::DEVICE | &keys::SEQ)) && k != keys::NEXT_SERIES {
                return Err(StoreError::Corrupt(key.to_vec()));
            }
            batch.insert(k, v);
        }
        batch.remove(key);
        n += 1;
    }
    if n > 0 {
        tree.apply_batch(batch)?;
        tracing::info!(records = n, "folded the write log left by the last run");
    }
    Ok(n)
}

/// The background fold: wakes every [`crate::StoreOptions::fold_log_every_ms`], or when a
/// writer says enough is pending, and folds; ends once the store is dropped.
#[derive(Debug, Default)]
pub(super) struct Wake {
    state: Mutex<WakeState>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct WakeState {
    due: bool,
    closed: bool,
}

impl Wake {
    /// Wakes the background fold.
    pub(super) fn due(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).due = true;
        self.cond.notify_one();
    }

    /// Ends the background fold.
    pub(super) fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.cond.notify_one();
    }

    /// Waits for a wake or `every`; false once closed.
    fn wait(&self, every: Duration) -> bool {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (mut state, _) =
            self.cond.wait_timeout_while(state, every, |s| !s.due && !s.closed).unwrap_or_else(|e| e.into_inner());
        state.due = false;
        !state.closed
    }
}

/// Starts the thread of the background fold of the store `inner` points to.
pub(super) fn start(
    inner: std::sync::Weak<super::Inner>,
    wake: std::sync::Arc<Wake>,
    every: Duration,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("mekong-store-log".into()).spawn(move || {
        while wake.wait(every) {
            let Some(inner) = inner.upgrade() else { return };
            let store = Store { inner };
            if let Err(e) = store.fold_log() {
                // The opening is marked failed by the batch; the next write opens it again
                // and its opening folds what is left.
                tracing::debug!(error = %e, "folding the write log failed");
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_decodes_to_its_inserts_in_order() {
        let record = Record {
            chunks: vec![(keys::chunk(7, 1_000, 3), vec![1, 2, 3])],
            entries: vec![(keys::device("hau-01"), vec![9; 200]), (keys::NEXT_SERIES.to_vec(), vec![0, 0, 0, 8])],
        };
        let pieces = record.encode();
        assert_eq!(pieces.len(), 1);
        let inserts = decode(&pieces[0]).unwrap();
        assert_eq!(inserts.len(), 3);
        assert_eq!(inserts[0], (&keys::chunk(7, 1_000, 3)[..], &[1u8, 2, 3][..]));
        assert_eq!(inserts[1].0, &keys::device("hau-01")[..]);
        assert_eq!(inserts[1].1.len(), 200);
        assert_eq!(inserts[2], (keys::NEXT_SERIES, &[0u8, 0, 0, 8][..]));
    }

    #[test]
    fn a_large_record_is_cut_into_pieces_between_inserts() {
        let chunks: Vec<_> = (0..1_000u32).map(|i| (keys::chunk(i, 0, 1), vec![i as u8; 30])).collect();
        let record = Record { chunks: chunks.clone(), entries: vec![(keys::device("big"), vec![1; 3 * PIECE_BYTES])] };
        let pieces = record.encode();
        assert!(pieces.len() > 5, "{}", pieces.len());
        // Each piece is within the bound but the one holding the insert that alone passes it.
        assert_eq!(pieces.iter().filter(|p| p.len() > PIECE_BYTES).count(), 1);
        let inserts: Vec<_> = pieces.iter().flat_map(|p| decode(p).unwrap()).collect();
        assert_eq!(inserts.len(), 1_001);
        for (got, (key, value)) in inserts.iter().zip(&chunks) {
            assert_eq!(*got, (&key[..], &value[..]));
        }
        assert_eq!(inserts[1_000].1.len(), 3 * PIECE_BYTES);
        assert!(Record::default().encode().is_empty());
    }

    #[test]
    fn a_cut_or_padded_record_is_refused() {
        let record = Record { chunks: vec![(keys::chunk(1, 0, 1), vec![5; 40])], entries: Vec::new() };
        let bytes = record.encode().remove(0);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(decode(&padded).is_none());
        let mut other = bytes;
        other[0] = RECORD_VERSION + 1;
        assert!(decode(&other).is_none());
    }
}
