//! Series and device metadata: their codecs in the tree, and the in-memory mirror rebuilt
//! from them at open.

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
    pub(super) fn encode(&self) -> Vec<u8> {
        let w = Writer::new()
            .u32(self.id)
            .opt_str(self.unit.as_deref())
            .i64(self.first_ms)
            .i64(self.last_ms)
            .u64(self.count)
            .f64(self.last_value)
            .i64(self.folded_to_ms);
        match self.value_kind {
            ValueKind::Number => w.finish(),
            ValueKind::Boolean => w.u8(1).finish(),
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
    pub(super) fn encode(&self) -> Vec<u8> {
        let t = &self.tally;
        let mut w = Writer::new()
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
            Some((time_ms, reason)) => w.u8(1).i64(*time_ms).str(reason).finish(),
            None => w.u8(0).finish(),
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

/// In-memory mirror of the metadata key spaces. BTreeMaps keep listings sorted.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) devices: BTreeMap<String, DeviceMeta>,
    /// device -> metric -> series
    pub(super) series: BTreeMap<String, BTreeMap<String, SeriesMeta>>,
    /// device -> highest sequence number stored in its current numbering, and that numbering
    pub(super) seqs: HashMap<String, (u64, [u8; 8])>,
    pub(super) next_series_id: u32,
}

impl State {
    pub(super) fn meta(&self, device: &str, metric: &str) -> Option<&SeriesMeta> {
        self.series.get(device).and_then(|s| s.get(metric))
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
        let meta = DeviceMeta::decode(&value).ok_or_else(corrupt)?;
        state.devices.insert(id.to_owned(), meta);
    }
    for entry in tree.scan_prefix([keys::SERIES]) {
        let (key, value) = entry?;
        let corrupt = || StoreError::Corrupt(key.to_vec());
        let (device, metric) = keys::parse_series(&key).ok_or_else(corrupt)?;
        let meta = SeriesMeta::decode(&value).ok_or_else(corrupt)?;
        state.next_series_id = state.next_series_id.max(meta.id.saturating_add(1));
        state.series.entry(device.to_owned()).or_default().insert(metric.to_owned(), meta);
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
