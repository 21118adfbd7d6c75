//! The outbox: one record per accepted pack in the store's record space `forward.outbox`,
//! written by the ingest path in the pack's own batch, and the forwarder's durable position.
//!
//! | space | key | value |
//! |---|---|---|
//! | `forward.outbox` | sequence number (u64 BE) | the pack's new readings ([`encode`]) |
//! | `forward.position` | `acked` | the sequence number up to which every pack is acknowledged upstream (u64 BE) |
//!
//! Sequence numbers grow by one per accepted pack, across restarts: at open the next one is
//! above both the last record and the position, so a number is never given twice, even once
//! the outbox has been emptied. A number whose group failed to write is never used again
//! (a gap, which a consumer must not take for a loss: see the README).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use mekong_feed::{Series, Stored};
use mekong_ingest::Outbox;
use mekong_store::{GroupRecord, RecordWrite, Store};
use tokio::sync::Notify;

use crate::ForwardError;

/// Space of the outbox.
pub const OUTBOX: &str = "forward.outbox";
/// Space of the position.
pub const POSITION: &str = "forward.position";
/// The position's key.
pub const POSITION_KEY: &[u8] = b"acked";

/// Version of the record layout.
const VERSION: u8 = 1;

/// One pack taken out of the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Its sequence number.
    pub seq: u64,
    /// When it was accepted, ms since the epoch.
    pub accepted_ms: i64,
    /// What it added.
    pub pack: Stored,
    /// Its size in the store.
    pub bytes: u64,
}

/// The record of `pack`, accepted at `accepted_ms`: the version, then the time, kind and
/// device, then each metric with its unit, whether it is boolean, and its points.
pub fn encode(pack: &Stored, accepted_ms: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + pack.device.len() + pack.points() * 16 + pack.series.len() * 24);
    out.push(VERSION);
    out.extend_from_slice(&accepted_ms.to_be_bytes());
    text(&mut out, &pack.kind);
    text(&mut out, &pack.device);
    out.extend_from_slice(&(pack.series.len() as u32).to_be_bytes());
    for s in &pack.series {
        text(&mut out, &s.metric);
        match &s.unit {
            Some(unit) => {
                out.push(1);
                text(&mut out, unit);
            }
            None => out.push(0),
        }
        out.push(u8::from(s.boolean));
        out.extend_from_slice(&(s.points.len() as u32).to_be_bytes());
        for (t, v) in &s.points {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&v.to_bits().to_be_bytes());
        }
    }
    out
}

fn text(out: &mut Vec<u8>, s: &str) {
    // Names, units, kinds and device ids are bounded far below 64 KiB by the contract.
    let len = s.len().min(u16::MAX as usize);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..len]);
}

/// Reads a record back; every length is checked against what is left.
pub fn decode(seq: u64, bytes: &[u8]) -> Result<Entry, ForwardError> {
    let corrupt = |what: &'static str| ForwardError::Corrupt { seq, what };
    let mut r = Reader { bytes, pos: 0 };
    if r.take(1).ok_or(corrupt("empty"))? != [VERSION] {
        return Err(corrupt("unknown version"));
    }
    let accepted_ms = r.i64().ok_or(corrupt("time"))?;
    let kind = r.text().ok_or(corrupt("kind"))?;
    let device = r.text().ok_or(corrupt("device"))?;
    let count = r.u32().ok_or(corrupt("series count"))?;
    let mut series = Vec::new();
    for _ in 0..count {
        let metric = r.text().ok_or(corrupt("metric"))?;
        let unit = match r.take(1).ok_or(corrupt("unit flag"))? {
            [0] => None,
            [1] => Some(r.text().ok_or(corrupt("unit"))?),
            _ => return Err(corrupt("unit flag")),
        };
        let boolean = r.take(1).ok_or(corrupt("kind flag"))? != [0];
        let n = r.u32().ok_or(corrupt("point count"))? as usize;
        // 16 bytes a point: a count the record cannot hold is refused before any allocation.
        if n > (bytes.len() - r.pos) / 16 {
            return Err(corrupt("point count"));
        }
        let mut points = Vec::with_capacity(n);
        for _ in 0..n {
            let t = r.i64().ok_or(corrupt("point"))?;
            let v = f64::from_bits(r.i64().ok_or(corrupt("point"))? as u64);
            points.push((t, v));
        }
        series.push(Series { metric, unit, boolean, points });
    }
    if r.pos != bytes.len() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(Entry { seq, accepted_ms, pack: Stored { device, kind, series }, bytes: bytes.len() as u64 })
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len())?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Some(out)
    }

    fn i64(&mut self) -> Option<i64> {
        self.take(8)?.try_into().ok().map(i64::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_be_bytes)
    }

    fn text(&mut self) -> Option<String> {
        let len = self.take(2)?.try_into().ok().map(u16::from_be_bytes)?;
        String::from_utf8(self.take(len as usize)?.to_vec()).ok()
    }
}

/// The readings of a record, read without decoding its points (for counting what is dropped).
pub fn readings(bytes: &[u8]) -> u64 {
    decode(0, bytes).map(|e| e.pack.points() as u64).unwrap_or(0)
}

/// The outbox shared by the ingest path (which stages records) and the sender (which reads
/// them once durable and removes them once acknowledged).
#[derive(Debug)]
pub struct Queue {
    /// The next sequence number to give.
    next_seq: AtomicU64,
    /// The highest sequence number known to be on disk.
    durable: AtomicU64,
    /// Packs in the outbox and their bytes (staged ones counted once durable).
    queued_packs: AtomicU64,
    queued_bytes: AtomicU64,
    /// (sequence number, bytes) of records staged but not yet known durable.
    staged: Mutex<Vec<(u64, u64)>>,
    /// Wakes the sender when records become durable.
    pub(crate) wake: Notify,
}

/// What [`Queue::open`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// The durable position: every pack up to it was acknowledged upstream.
    pub position: u64,
    /// Packs in the outbox.
    pub packs: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Records read at a time when the outbox is scanned at open.
const SCAN_PAGE: usize = 4096;

impl Queue {
    /// Reads the position and sizes up the outbox, a page at a time.
    pub fn open(store: &Store) -> Result<(Queue, Found), ForwardError> {
        let position = read_position(store)?;
        let (mut packs, mut bytes, mut last) = (0u64, 0u64, position);
        let mut from = 0u64;
        loop {
            let page = store.scan_records_from(OUTBOX, &from.to_be_bytes(), SCAN_PAGE)?;
            for (key, value) in &page {
                let seq = seq_of(key)?;
                packs += 1;
                bytes += value.len() as u64;
                last = last.max(seq);
                from = seq.saturating_add(1);
            }
            if page.len() < SCAN_PAGE {
                break;
            }
        }
        let queue = Queue {
            next_seq: AtomicU64::new(last + 1),
            durable: AtomicU64::new(last),
            queued_packs: AtomicU64::new(packs),
            queued_bytes: AtomicU64::new(bytes),
            staged: Mutex::new(Vec::new()),
            wake: Notify::new(),
        };
        Ok((queue, Found { position, packs, bytes }))
    }

    /// The highest sequence number on disk.
    pub fn durable_upto(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Packs and bytes in the outbox.
    pub fn queued(&self) -> (u64, u64) {
        (self.queued_packs.load(Ordering::Relaxed), self.queued_bytes.load(Ordering::Relaxed))
    }

    /// `packs` of `bytes` left the outbox.
    pub(crate) fn removed(&self, packs: u64, bytes: u64) {
        let sub = |a: &AtomicU64, n: u64| {
            let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(n)));
        };
        sub(&self.queued_packs, packs);
        sub(&self.queued_bytes, bytes);
    }
}

impl Outbox for Queue {
    fn stage(&self, packs: &[&Stored], now_ms: i64) -> (Vec<GroupRecord>, Option<u64>) {
        let mut records = Vec::with_capacity(packs.len());
        let mut staged = self.staged.lock().unwrap_or_else(|e| e.into_inner());
        let mut mark = None;
        for pack in packs {
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            let value = encode(pack, now_ms);
            staged.push((seq, value.len() as u64));
            records.push((OUTBOX, seq.to_be_bytes().to_vec(), value));
            mark = Some(seq);
        }
        (records, mark)
    }

    fn durable(&self, mark: u64) {
        {
            let mut staged = self.staged.lock().unwrap_or_else(|e| e.into_inner());
            // Records staged below the mark by a group whose write failed are counted too
            // (rare: a failed disk); the sender's scan finds nothing for them.
            let done = staged.partition_point(|&(seq, _)| seq <= mark);
            for (_, bytes) in staged.drain(..done) {
                self.queued_packs.fetch_add(1, Ordering::Relaxed);
                self.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
        }
        self.durable.fetch_max(mark, Ordering::AcqRel);
        self.wake.notify_one();
    }
}

/// The sequence number of an outbox key.
pub(crate) fn seq_of(key: &[u8]) -> Result<u64, ForwardError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| ForwardError::Corrupt { seq: 0, what: "outbox key" })?;
    Ok(u64::from_be_bytes(bytes))
}

/// The durable position (0: nothing forwarded yet).
pub fn read_position(store: &Store) -> Result<u64, ForwardError> {
    let found = store.scan_records_from(POSITION, POSITION_KEY, 1)?;
    match found.first() {
        Some((key, value)) if key == POSITION_KEY => {
            let bytes: [u8; 8] =
                value.as_slice().try_into().map_err(|_| ForwardError::Corrupt { seq: 0, what: "position" })?;
            Ok(u64::from_be_bytes(bytes))
        }
        _ => Ok(0),
    }
}

/// At most `limit` records from sequence number `from` up to `upto`, in order.
pub fn read(store: &Store, from: u64, upto: u64, limit: usize) -> Result<Vec<Entry>, ForwardError> {
    let mut out = Vec::new();
    for (key, value) in store.scan_records_from(OUTBOX, &from.to_be_bytes(), limit)? {
        let seq = seq_of(&key)?;
        if seq > upto {
            break;
        }
        out.push(decode(seq, &value)?);
    }
    Ok(out)
}

/// Removes the records `seqs` and, with them in one flushed batch, sets the position to
/// `position` (if given).
pub fn remove(store: &Store, seqs: &[u64], position: Option<u64>) -> Result<(), ForwardError> {
    let keys: Vec<[u8; 8]> = seqs.iter().map(|s| s.to_be_bytes()).collect();
    let value = position.map(u64::to_be_bytes);
    let mut writes: Vec<RecordWrite<'_>> =
        keys.iter().map(|key| RecordWrite::Delete { space: OUTBOX, key: key.as_slice() }).collect();
    if let Some(value) = &value {
        writes.push(RecordWrite::Put { space: POSITION, key: POSITION_KEY, value: value.as_slice() });
    }
    store.write_records(&writes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn pack() -> Stored {
        Stored {
            device: "pump-7".into(),
            kind: "water".into(),
            series: vec![
                Series {
                    metric: "water_level".into(),
                    unit: Some("cm".into()),
                    boolean: false,
                    points: vec![(1, 2.5), (2, -0.0)],
                },
                Series { metric: "pump_on".into(), unit: None, boolean: true, points: vec![(3, 1.0)] },
            ],
        }
    }

    #[test]
    fn records_read_back_exactly_and_every_truncation_is_refused() {
        let bytes = encode(&pack(), 1_790_000_000_123);
        let entry = decode(9, &bytes).unwrap();
        assert_eq!(entry.pack, pack());
        assert_eq!((entry.seq, entry.accepted_ms, entry.bytes), (9, 1_790_000_000_123, bytes.len() as u64));
        for cut in 0..bytes.len() {
            assert!(decode(9, &bytes[..cut]).is_err(), "a record cut at {cut} bytes was read");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(9, &longer).is_err());
    }

    #[test]
    fn sequence_numbers_continue_above_the_position_once_the_outbox_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &mekong_store::StoreOptions::default()).unwrap();
        let (queue, found) = Queue::open(&store).unwrap();
        assert_eq!(found, Found { position: 0, packs: 0, bytes: 0 });
        let p = pack();
        let (records, mark) = queue.stage(&[&p, &p], 5);
        assert_eq!(mark, Some(2));
        let writes: Vec<_> = records
            .iter()
            .map(|(space, key, value)| RecordWrite::Put { space, key: key.as_slice(), value: value.as_slice() })
            .collect();
        store.write_records(&writes).unwrap();
        Outbox::durable(&queue, 2);
        assert_eq!(queue.queued().0, 2);
        assert_eq!(read(&store, 0, 1, 10).unwrap().len(), 1);
        remove(&store, &[1, 2], Some(2)).unwrap();
        drop(queue);
        let (queue, found) = Queue::open(&store).unwrap();
        assert_eq!(found, Found { position: 2, packs: 0, bytes: 0 });
        assert_eq!(queue.stage(&[&p], 6).1, Some(3));
    }
}
