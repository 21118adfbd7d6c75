//! The read path: devices, series and latest values from the mirror; ranges and aggregates
//! from chunks, blocks and rollups.

use std::collections::BTreeMap;

use super::meta::{device_info, series_info, DeviceMeta};
use super::{Opened, Store};
use crate::{chunk, keys, rollup, Bucket, DeviceInfo, LatestValue, Point, SeriesInfo, StoreError};

impl Store {
    /// All devices, sorted by id, optionally only those of one kind.
    pub fn devices(&self, kind: Option<&str>) -> Vec<DeviceInfo> {
        let state = self.state();
        let mut out: Vec<DeviceInfo> = state
            .devices
            .iter()
            .filter(|(_, d)| kind.is_none_or(|k| d.kind == k))
            .map(|(id, d)| device_info(&state, id, d))
            .collect();
        out.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// How many devices the store knows, without copying them.
    pub fn device_count(&self) -> usize {
        self.state().devices.len()
    }

    /// How many series the store holds.
    pub fn series_count(&self) -> usize {
        self.state().series.values().map(BTreeMap::len).sum()
    }

    /// One device.
    pub fn device(&self, id: &str) -> Option<DeviceInfo> {
        let state = self.state();
        state.devices.get(id).map(|d| device_info(&state, id, d))
    }

    /// `f` of the kind stored for device `id`, without copying the rest of its metadata (the
    /// ingest path asks this of every pack from an unregistered device).
    pub fn with_device_kind<T>(&self, id: &str, f: impl FnOnce(&str) -> T) -> Option<T> {
        self.state().devices.get(id).map(|d| f(&d.kind))
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
        scan_chunks(&*self.current()?, id, from_ms, to_ms, visit)
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
        let mut out: Vec<String> = state
            .devices
            .iter()
            .filter(|(id, d)| {
                kind.is_none_or(|k| d.kind == k) && state.series.get(*id).is_some_and(|s| s.contains_key(metric))
            })
            .map(|(id, _)| id.clone())
            .collect();
        out.sort_unstable();
        out
    }

    /// The latest value of every series, optionally only of devices of one kind, sorted by
    /// device then metric.
    pub fn latest(&self, kind: Option<&str>) -> Vec<LatestValue> {
        let state = self.state();
        let mut out = Vec::new();
        let mut devices: Vec<(&String, &DeviceMeta)> =
            state.devices.iter().filter(|(_, d)| kind.is_none_or(|k| d.kind == k)).collect();
        devices.sort_unstable_by_key(|(id, _)| *id);
        for (device, d) in devices {
            for (metric, m) in state.series.get(device).into_iter().flatten() {
                out.push(LatestValue {
                    device: device.clone(),
                    kind: d.kind.clone(),
                    metric: metric.clone(),
                    unit: m.unit.clone(),
                    time_ms: m.last_ms,
                    value: m.last_value,
                    value_kind: m.value_kind,
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

/// Visits the blocks of series `id` that can hold points in `[from_ms, to_ms)`, from day
/// files, sled's chunks and the log's unfolded chunks alike, in order of their first time (a
/// day file's block counts as starting at its day's start, before the late chunks of that
/// day), with their points (not yet cut to the range). `visit` returns false to stop.
pub(super) fn scan_chunks(
    opened: &Opened,
    id: u32,
    from_ms: i64,
    to_ms: i64,
    mut visit: impl FnMut(i64, &[(i64, f64)]) -> bool,
) -> Result<(), StoreError> {
    // A chunk holding a point at or after `from` starts no later than the point itself,
    // and no earlier than that point's window, or its day for a day block.
    let mut decoded = Vec::new();
    let window = chunk::window_start(from_ms);
    let first_day = chunk::day_start(from_ms);
    // Held to the end, so that a fold moving chunks into a file is seen wholly or not at all.
    let files = opened.days.read();
    let mut days = files.range(first_day..to_ms).map(|(&d, &g)| (d, g)).peekable();
    let range = keys::chunk_from(id, first_day)..keys::chunk_from(id, to_ms);
    // Held to the end too, for the same reason, for a fold of the log.
    let _reading = opened.log.reading();
    let mut unfolded = opened.log.chunks(range.clone()).into_iter();
    let mut tree = opened.tree.range(range);
    let (mut in_tree, mut in_log) = (tree.next().transpose()?, unfolded.next());
    // The tree's chunks and the log's, in key order (no key is in both).
    loop {
        let from_log = match (&in_tree, &in_log) {
            (Some((t, _)), Some((l, _))) => l[..] < t[..],
            (None, Some(_)) => true,
            (_, None) => false,
        };
        let (key, value) = if from_log {
            let Some((key, value)) = in_log.take() else { break };
            in_log = unfolded.next();
            (sled::IVec::from(&key[..]), value)
        } else {
            let Some(entry) = in_tree.take() else { break };
            in_tree = tree.next().transpose()?;
            entry
        };
        let Some((_, first_ms)) = keys::parse_chunk(&key) else {
            return Err(StoreError::Corrupt(key.to_vec()));
        };
        while let Some((day, generation)) = days.next_if(|&(day, _)| day <= first_ms) {
            if !visit_day(opened, id, day, generation, &mut decoded, &mut visit)? {
                return Ok(());
            }
        }
        if first_ms < window && !keys::is_day_block(&key) {
            continue;
        }
        decoded.clear();
        chunk::decode_into(&value, &mut decoded).ok_or_else(|| StoreError::Corrupt(key.to_vec()))?;
        if !visit(first_ms, &decoded) {
            return Ok(());
        }
    }
    for (day, generation) in days {
        if !visit_day(opened, id, day, generation, &mut decoded, &mut visit)? {
            break;
        }
    }
    Ok(())
}

/// Visits the block of series `id` in day `day`'s file, if it has one; what `visit` says.
fn visit_day(
    opened: &Opened,
    id: u32,
    day: i64,
    generation: u64,
    decoded: &mut Vec<(i64, f64)>,
    visit: &mut impl FnMut(i64, &[(i64, f64)]) -> bool,
) -> Result<bool, StoreError> {
    let file = opened.days.open(day, generation)?;
    let Some(block) = file.block(id)? else { return Ok(true) };
    decoded.clear();
    chunk::decode_into(&block, decoded)
        .ok_or_else(|| file.corrupt(format!("block of series {id} cannot be decoded")))?;
    Ok(visit(day, decoded))
}
