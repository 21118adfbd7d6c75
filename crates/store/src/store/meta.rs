//! Series and device metadata: their codecs in the tree, and the in-memory mirror rebuilt
//! from them at open.
//!
//! Since format 7 a device's metadata and all of its series' are one entry under the device's
//! key ([`encode_entry`]): a pack costs one metadata entry, where it cost one for the device
//! and one for each of its series. With thousands of devices sending one reading each, every
//! pack in a group is from another device, so this took a single-reading pack from three
//! sled entries (chunk, series, device) to two. Format 6 and before kept each series under
//! its own key; [`migrate_entries`] moves them at open.

use std::collections::{BTreeMap, HashMap};

use crate::codec::{Reader, Writer};
use crate::keys;
use crate::{DeviceInfo, DeviceTally, SeriesInfo, StoreError, ValueKind};

#[derive(Debug, Clone)]
pub(super) struct SeriesMeta {
    pub(super) id: u32,
    pub(super) unit: Option<String>,
    pub(super) first_ms: i64,
    pub(super) last_ms: i64,
    pub(super) count: u64,
    pub(super) last_value: f64,
    /// Every window before this time is folded: one block, and a rollup that matches it.
    /// A write into an earlier window moves it back, in the same batch.
    pub(super) folded_to_ms: i64,
    /// Kept as a byte after the fields above, and only for booleans: a number series' record
    /// is as it was before booleans existed, so a store written before reads as it did.
    pub(super) value_kind: ValueKind,
}

impl SeriesMeta {
    /// As a value of its own, as format 6 kept it (and the tests' reference).
    #[cfg(test)]
    pub(super) fn encode(&self) -> Vec<u8> {
        self.write(Writer::new()).finish()
    }

    /// Its fields, after `w`'s version byte.
    fn write(&self, w: Writer) -> Writer {
        let w = w
            .u32(self.id)
            .opt_str(self.unit.as_deref())
            .i64(self.first_ms)
            .i64(self.last_ms)
            .u64(self.count)
            .f64(self.last_value)
            .i64(self.folded_to_ms);
        match self.value_kind {
            ValueKind::Number => w,
            ValueKind::Boolean => w.u8(1),
        }
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader::new(bytes)?;
        let mut meta = SeriesMeta {
            id: r.u32()?,
            unit: r.opt_str()?,
            first_ms: r.i64()?,
            last_ms: r.i64()?,
            count: r.u64()?,
            last_value: r.f64()?,
            folded_to_ms: r.i64()?,
            value_kind: ValueKind::Number,
        };
        if !r.at_end() {
            meta.value_kind = match r.u8()? {
                1 => ValueKind::Boolean,
                _ => return None,
            };
        }
        r.at_end().then_some(meta)
    }
}

#[derive(Debug, Clone)]
pub(super) struct DeviceMeta {
    pub(super) kind: String,
    pub(super) first_seen_ms: i64,
    pub(super) last_seen_ms: i64,
    pub(super) points: u64,
    pub(super) tally: DeviceTally,
}

impl DeviceMeta {
    /// As a value of its own, as format 6 kept it (and the tests' reference).
    #[cfg(test)]
    pub(super) fn encode(&self) -> Vec<u8> {
        self.write(Writer::new()).finish()
    }

    /// Its fields, after `w`'s version byte.
    fn write(&self, w: Writer) -> Writer {
        let t = &self.tally;
        let mut w = w
            .str(&self.kind)
            .i64(self.first_seen_ms)
            .i64(self.last_seen_ms)
            .u64(self.points)
            .u64(t.packs)
            .u64(t.duplicates)
            .u64(t.seq_gaps)
            .u32(u32::try_from(t.rejected.len()).unwrap_or(u32::MAX));
        for (reason, n) in &t.rejected {
            w = w.str(reason).u64(*n);
        }
        match &t.last_rejection {
            Some((time_ms, reason)) => w.u8(1).i64(*time_ms).str(reason),
            None => w.u8(0),
        }
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader::new(bytes)?;
        let mut meta = DeviceMeta {
            kind: r.str()?,
            first_seen_ms: r.i64()?,
            last_seen_ms: r.i64()?,
            points: r.u64()?,
            tally: DeviceTally::default(),
        };
        // Stores written before the tally existed end here.
        if r.at_end() {
            return Some(meta);
        }
        let t = &mut meta.tally;
        (t.packs, t.duplicates, t.seq_gaps) = (r.u64()?, r.u64()?, r.u64()?);
        for _ in 0..r.u32()? {
            let reason = r.str()?;
            t.rejected.insert(reason, r.u64()?);
        }
        t.last_rejection = match r.u8()? {
            0 => None,
            1 => Some((r.i64()?, r.str()?)),
            _ => return None,
        };
        Some(meta)
    }
}

/// The first byte of a device's entry since format 7. Entries of format 6 and before begin with
/// the codec's version, 1, so each reads as what it is.
const ENTRY: u8 = 2;

/// Bytes of an entry beside its series and the device's kind: the device's fixed fields and
/// a tally with a few reasons of refusal.
const ENTRY_ROOM: usize = 160;

/// Bytes of a series in an entry: its metric's name, unit and fixed fields.
const SERIES_ROOM: usize = 96;

/// A device's entry: its metadata, when it has any, then its series' metadata, each with its
/// metric. (A device with series has metadata in every store this code wrote; the option
/// keeps whatever an older store held.)
pub(super) fn encode_entry<'a>(
    device: Option<&DeviceMeta>,
    series: impl ExactSizeIterator<Item = (&'a str, &'a SeriesMeta)>,
) -> Vec<u8> {
    // The metadata written in place, into a buffer about the entry's size. With a buffer of
    // its own for each, grown field by field and then copied, the ingest thread took a tenth
    // longer over a single-reading pack (`mekong-bench pipeline`: 5.09 against 4.60 µs).
    let kind = device.map_or(0, |d| d.kind.len());
    let room = SERIES_ROOM.saturating_mul(series.len()).saturating_add(ENTRY_ROOM + kind).min(1 << 16);
    let w = Writer::tagged(ENTRY, room);
    let mut w = match device {
        Some(d) => w.u8(1).nested(|w| d.write(w)),
        None => w.u8(0),
    };
    w = w.u32(u32::try_from(series.len()).unwrap_or(u32::MAX));
    for (metric, meta) in series {
        w = w.str(metric).nested(|w| meta.write(w));
    }
    w.finish()
}

/// What a device's entry holds: its metadata, if any, and its series' by metric.
pub(super) type Entry = (Option<DeviceMeta>, Vec<(String, SeriesMeta)>);

/// The metadata and series of a device's entry; `None` if it is not one (or is corrupt).
pub(super) fn decode_entry(bytes: &[u8]) -> Option<Entry> {
    let mut r = Reader::tagged(bytes, ENTRY)?;
    let device = match r.u8()? {
        0 => None,
        1 => Some(DeviceMeta::decode(r.bytes()?)?),
        _ => return None,
    };
    let n = r.u32()?;
    // Each series takes at least 7 bytes: a bound on what a corrupt count may reserve.
    let mut series = Vec::with_capacity((n as usize).min(bytes.len() / 7));
    for _ in 0..n {
        let metric = r.str()?;
        series.push((metric, SeriesMeta::decode(r.bytes()?)?));
    }
    r.at_end().then_some((device, series))
}

/// Whether `value`, under a device's key, is a format-7 entry.
pub(super) fn is_entry(value: &[u8]) -> bool {
    value.first() == Some(&ENTRY)
}

/// The series whose metadata a tree entry holds, with their device and metric: a device's
/// entry (format 7), or a series' own entry (format 6 and before); empty for any other key.
/// `None` if the entry is one of those but cannot be read.
pub(super) fn series_in(key: &[u8], value: &[u8]) -> Option<Vec<(String, String, SeriesMeta)>> {
    match key.first() {
        Some(&keys::DEVICE) => {
            let device = keys::parse_device(key)?;
            if !is_entry(value) {
                return Some(Vec::new());
            }
            let (_, series) = decode_entry(value)?;
            Some(series.into_iter().map(|(metric, meta)| (device.to_owned(), metric, meta)).collect())
        }
        Some(&keys::SERIES) => {
            let (device, metric) = keys::parse_series(key)?;
            Some(vec![(device.to_owned(), metric.to_owned(), SeriesMeta::decode(value)?)])
        }
        _ => Some(Vec::new()),
    }
}

/// The mirror's maps by device id: hashed, as every pack looks its device up several times
/// (a BTreeMap of 10,000 ids was a tenth of the ingest thread in string comparisons); the
/// listings sort what they return.
pub(super) type ByDevice<V> = HashMap<String, V, ahash::RandomState>;

/// In-memory mirror of the metadata key spaces.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) devices: ByDevice<DeviceMeta>,
    /// device -> metric -> series (a device's metrics sorted)
    pub(super) series: ByDevice<BTreeMap<String, SeriesMeta>>,
    /// device -> highest sequence number stored in its current numbering, and that numbering
    pub(super) seqs: HashMap<String, (u64, [u8; 8])>,
    pub(super) next_series_id: u32,
}

impl State {
    pub(super) fn meta(&self, device: &str, metric: &str) -> Option<&SeriesMeta> {
        self.series.get(device).and_then(|s| s.get(metric))
    }

    /// A series read from the tree at open, whichever format held it: the next series id
    /// stays above every one in use.
    fn load_series(&mut self, device: &str, metric: String, meta: SeriesMeta) {
        self.next_series_id = self.next_series_id.max(meta.id.saturating_add(1));
        self.series.entry(device.to_owned()).or_default().insert(metric, meta);
    }

    /// The entry of `device` as it is about to become: `meta` (or the mirror's metadata when
    /// `None`), and the mirror's series, each replaced by its metadata in `changed` (metric,
    /// metadata; a few) where that has it, and those of `changed` the mirror has not yet.
    pub(super) fn entry(&self, device: &str, meta: Option<&DeviceMeta>, changed: &[(&str, &SeriesMeta)]) -> Vec<u8> {
        let meta = meta.or_else(|| self.devices.get(device));
        let known = self.series.get(device);
        let mut series: Vec<(&str, &SeriesMeta)> = Vec::with_capacity(known.map_or(0, BTreeMap::len) + changed.len());
        for (metric, m) in known.into_iter().flatten() {
            let m = changed.iter().find(|c| c.0 == metric).map_or(m, |c| c.1);
            series.push((metric, m));
        }
        for &(metric, m) in changed {
            if !known.is_some_and(|k| k.contains_key(metric)) {
                series.push((metric, m));
            }
        }
        encode_entry(meta, series.into_iter())
    }
}

pub(super) fn device_info(state: &State, id: &str, d: &DeviceMeta) -> DeviceInfo {
    DeviceInfo {
        id: id.to_owned(),
        kind: d.kind.clone(),
        first_seen_ms: d.first_seen_ms,
        last_seen_ms: d.last_seen_ms,
        points: d.points,
        series: state.series.get(id).map_or(0, BTreeMap::len),
        tally: d.tally.clone(),
    }
}

pub(super) fn series_info(device: &str, metric: &str, m: &SeriesMeta) -> SeriesInfo {
    SeriesInfo {
        device: device.to_owned(),
        metric: metric.to_owned(),
        unit: m.unit.clone(),
        first_ms: m.first_ms,
        last_ms: m.last_ms,
        count: m.count,
        last_value: m.last_value,
        value_kind: m.value_kind,
    }
}

pub(super) fn load_state(tree: &sled::Tree) -> Result<State, StoreError> {
    let mut state = State::default();
    for entry in tree.scan_prefix([keys::DEVICE]) {
        let (key, value) = entry?;
        let corrupt = || StoreError::Corrupt(key.to_vec());
        let id = keys::parse_device(&key).ok_or_else(corrupt)?;
        if !is_entry(&value) {
            // Format 6 and before: the device alone, its series under their own keys below.
            let meta = DeviceMeta::decode(&value).ok_or_else(corrupt)?;
            state.devices.insert(id.to_owned(), meta);
            continue;
        }
        let (meta, series) = decode_entry(&value).ok_or_else(corrupt)?;
        if let Some(meta) = meta {
            state.devices.insert(id.to_owned(), meta);
        }
        for (metric, meta) in series {
            state.load_series(id, metric, meta);
        }
    }
    // Format 6 and before only.
    for entry in tree.scan_prefix([keys::SERIES]) {
        let (key, value) = entry?;
        let corrupt = || StoreError::Corrupt(key.to_vec());
        let (device, metric) = keys::parse_series(&key).ok_or_else(corrupt)?;
        let meta = SeriesMeta::decode(&value).ok_or_else(corrupt)?;
        state.load_series(device, metric.to_owned(), meta);
    }
    if let Some(next) = tree.get(keys::NEXT_SERIES)? {
        let next = next.as_ref().try_into().map(u32::from_be_bytes);
        let next = next.map_err(|_| StoreError::Corrupt(keys::NEXT_SERIES.to_vec()))?;
        state.next_series_id = state.next_series_id.max(next);
    }
    for entry in tree.scan_prefix([keys::SEQ]) {
        let (key, value) = entry?;
        let corrupt = || StoreError::Corrupt(key.to_vec());
        let device = keys::parse_device(&key).ok_or_else(corrupt)?;
        // The number (u64 BE), then the numbering's id.
        let (number, id) = value.split_at_checked(8).filter(|(_, id)| id.len() == 8).ok_or_else(corrupt)?;
        let seq = number.try_into().map(u64::from_be_bytes).map_err(|_| corrupt())?;
        let id = id.try_into().map_err(|_| corrupt())?;
        state.seqs.insert(device.to_owned(), (seq, id));
    }
    Ok(state)
}

/// Moves a store of format 6 (or before) to format 7: every device's metadata and its
/// series' into one entry, the series' own keys gone, and the format set, in one batch, so
/// that a failure leaves the store as it was. `state` is the mirror [`load_state`] read from
/// the old layout.
pub(super) fn migrate_entries(tree: &sled::Tree, state: &State, to: u8) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    let devices: std::collections::BTreeSet<&String> = state.devices.keys().chain(state.series.keys()).collect();
    for device in &devices {
        batch.insert(keys::device(device), state.entry(device, None, &[]));
    }
    for key in tree.scan_prefix([keys::SERIES]).keys() {
        batch.remove(key?);
    }
    batch.insert(keys::FORMAT, &[to]);
    tree.apply_batch(batch)?;
    tracing::info!(devices = devices.len(), "moved each device's series metadata into the device's entry");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_metadata_keeps_its_value_kind_and_reads_records_written_before_it() {
        let meta = SeriesMeta {
            id: 3,
            unit: Some("cm".into()),
            first_ms: 10,
            last_ms: 20,
            count: 2,
            last_value: 1.5,
            folded_to_ms: 0,
            value_kind: ValueKind::Number,
        };
        // As the store wrote every series before booleans: the same bytes, read the same.
        let old = Writer::new().u32(3).opt_str(Some("cm")).i64(10).i64(20).u64(2).f64(1.5).i64(0).finish();
        assert_eq!(meta.encode(), old);
        let back = SeriesMeta::decode(&old).unwrap();
        assert_eq!((back.id, back.unit.as_deref(), back.count, back.last_value), (3, Some("cm"), 2, 1.5));
        assert_eq!(back.value_kind, ValueKind::Number);

        let pump = SeriesMeta { unit: None, last_value: 1.0, value_kind: ValueKind::Boolean, ..meta };
        let back = SeriesMeta::decode(&pump.encode()).unwrap();
        assert_eq!((back.value_kind, back.last_value, back.unit), (ValueKind::Boolean, 1.0, None));
        // A kind this code does not know, or bytes after it, are corrupt, not a number series.
        let mut unknown = old.clone();
        unknown.push(2);
        assert!(SeriesMeta::decode(&unknown).is_none());
        let mut trailing = pump.encode();
        trailing.push(0);
        assert!(SeriesMeta::decode(&trailing).is_none());
    }

    fn series(id: u32, count: u64) -> SeriesMeta {
        SeriesMeta {
            id,
            unit: Some("cm".into()),
            first_ms: 1,
            last_ms: 2,
            count,
            last_value: 0.5,
            folded_to_ms: 0,
            value_kind: ValueKind::Number,
        }
    }

    #[test]
    fn a_device_entry_holds_its_series_and_is_read_whole_or_refused() {
        let meta = DeviceMeta {
            kind: "water".into(),
            first_seen_ms: 1,
            last_seen_ms: 2,
            points: 3,
            tally: DeviceTally::default(),
        };
        let (a, b) = (series(1, 2), series(2, 1));
        let entry = encode_entry(Some(&meta), [("level", &a), ("salinity", &b)].into_iter());
        assert!(is_entry(&entry) && !is_entry(&meta.encode()), "format 6's device value is not an entry");
        let (back, listed) = decode_entry(&entry).unwrap();
        assert_eq!(back.map(|m| (m.kind, m.points)), Some(("water".into(), 3)));
        let listed: Vec<(String, u32, u64)> = listed.into_iter().map(|(m, s)| (m, s.id, s.count)).collect();
        assert_eq!(listed, [("level".into(), 1, 2), ("salinity".into(), 2, 1)]);
        // The metadata written in place is what format 7 has always held: each value apart,
        // length-prefixed.
        let mut tallied = meta.clone();
        tallied.tally.rejected.insert("bad_cbor".into(), 4);
        tallied.tally.last_rejection = Some((9, "bad_cbor".into()));
        let apart = Writer::tagged(ENTRY, 0)
            .u8(1)
            .bytes(&tallied.encode())
            .u32(2)
            .str("level")
            .bytes(&a.encode())
            .str("salinity")
            .bytes(&b.encode())
            .finish();
        assert_eq!(encode_entry(Some(&tallied), [("level", &a), ("salinity", &b)].into_iter()), apart);
        let bare = encode_entry(None, std::iter::empty());
        assert!(matches!(decode_entry(&bare), Some((None, v)) if v.is_empty()));
        // Every cut of an entry, and a byte after it, is refused rather than read short.
        for end in 0..entry.len() {
            assert!(decode_entry(&entry[..end]).is_none(), "cut at {end}");
        }
        let mut longer = entry.clone();
        longer.push(0);
        assert!(decode_entry(&longer).is_none());
        // A count that claims more series than the bytes hold.
        let mut lying = encode_entry(None, std::iter::empty());
        lying.truncate(lying.len() - 4);
        lying.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_entry(&lying).is_none());
        // Under its device's key an entry lists its series; a series' own key (format 6) too.
        let found = series_in(&keys::device("hau-01"), &entry).unwrap();
        assert_eq!(
            found.iter().map(|s| (s.0.as_str(), s.1.as_str())).collect::<Vec<_>>(),
            [("hau-01", "level"), ("hau-01", "salinity")]
        );
        let old_key = [&[keys::SERIES][..], b"hau-01\0level"].concat();
        assert_eq!(series_in(&old_key, &a.encode()).unwrap()[0].2.count, 2);
        assert!(series_in(&keys::device("hau-01"), &meta.encode()).unwrap().is_empty());
        assert!(series_in(&keys::device("hau-01"), &entry[..9]).is_none());
    }

    #[test]
    fn an_entry_about_to_be_written_merges_the_changed_series_into_the_mirrors() {
        let mut state = State::default();
        state.series.entry("hau-01".into()).or_default().insert("level".into(), series(1, 5));
        state.series.entry("hau-01".into()).or_default().insert("salinity".into(), series(2, 7));
        let (level, rain) = (series(1, 6), series(3, 1));
        let entry = state.entry("hau-01", None, &[("level", &level), ("rain", &rain)]);
        let (meta, listed) = decode_entry(&entry).unwrap();
        assert!(meta.is_none());
        let mut counts: Vec<(String, u64)> = listed.into_iter().map(|(m, s)| (m, s.count)).collect();
        counts.sort();
        assert_eq!(counts, [("level".into(), 6), ("rain".into(), 1), ("salinity".into(), 7)]);
    }

    #[test]
    fn device_metadata_round_trips_and_reads_the_layout_before_the_tally() {
        let mut tally = DeviceTally { packs: 7, duplicates: 2, seq_gaps: 1, ..DeviceTally::default() };
        tally.rejected.insert("unsigned".into(), 3);
        tally.rejected.insert("too_large".into(), 1);
        tally.last_rejection = Some((1_700_000_000_000, "unsigned".into()));
        let meta = DeviceMeta { kind: "water".into(), first_seen_ms: 1, last_seen_ms: 2, points: 40, tally };
        let back = DeviceMeta::decode(&meta.encode()).unwrap();
        assert_eq!((back.kind.as_str(), back.points, &back.tally), ("water", 40, &meta.tally));

        // As the store wrote a device before the tally: its counts start at zero.
        let old = Writer::new().str("air").i64(5).i64(6).u64(9).finish();
        let back = DeviceMeta::decode(&old).unwrap();
        assert_eq!(
            (back.kind.as_str(), back.first_seen_ms, back.points, back.tally),
            ("air", 5, 9, DeviceTally::default())
        );
        // A tally cut short is corrupt, not zero.
        let cut = &meta.encode()[..old.len() + 4];
        assert!(DeviceMeta::decode(cut).is_none());
    }
}
