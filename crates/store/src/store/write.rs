//! The write path: a group of packs staged against the mirror, then one atomic sled batch.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::log::Due;
use super::meta::{DeviceMeta, SeriesMeta, State};
use super::read::scan_chunks;
use super::{Opened, Store};
use crate::{
    chunk, keys, DeviceTally, GroupRecord, NewPoint, PackRefused, PackWrite, RefusalWrite, StoreError, WriteError,
    WriteSummary, Written,
};

/// The staging's maps and sets: ahash, randomly keyed like std's SipHash (a crafted pack cannot
/// aim at collisions) and cheaper for these small keys. With SipHash, hashing and rehashing
/// took about an eighth of the ingest thread at 50 readings per pack (README, "The PUBACK as
/// the acknowledgement").
type Map<K, V> = HashMap<K, V, ahash::RandomState>;
type Set<T> = HashSet<T, ahash::RandomState>;

/// Whether two points of a pack go to the same series with the same unit and kind. The
/// ingest pipeline shares one name between a pack's readings of a series, so the names are
/// mostly the same string, which is told without comparing its bytes; an empty string never
/// reaches `memcmp`, which takes a hundred times longer for no bytes at a dangling address
/// than for a few (the schema crate's `Bases::empty`), and the store's callers are not all the
/// decoder.
fn same_series(a: &NewPoint<'_>, b: &NewPoint<'_>) -> bool {
    fn same(a: &str, b: &str) -> bool {
        a.len() == b.len() && (a.is_empty() || std::ptr::eq(a.as_ptr(), b.as_ptr()) || a == b)
    }
    let units = match (a.unit, b.unit) {
        (Some(x), Some(y)) => same(x, y),
        (x, y) => x.is_none() && y.is_none(),
    };
    a.value_kind == b.value_kind && units && same(a.metric, b.metric)
}

/// Sorts a group's points by (series, time), each pair once in the group. They were staged
/// pack after pack, so they come in ascending runs, a pack's points of a series each: when
/// the runs, put in order by their first points, do not overlap (packs from many devices, or
/// a device's packs one after the other), they are laid end to end rather than the points
/// sorted one by one; otherwise the points are sorted.
fn sort_points(points: &mut Vec<(u32, i64, f64)>) {
    let key = |p: &(u32, i64, f64)| (p.0, p.1);
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    let mut start = 0;
    for i in 1..=points.len() {
        // A run is one series: runs of several, ascending by chance, would overlap others.
        if i == points.len() || points[i].0 != points[i - 1].0 || points[i].1 <= points[i - 1].1 {
            runs.push(start..i);
            start = i;
        }
    }
    let laid_in_order = |runs: &[std::ops::Range<usize>]| {
        runs.windows(2).all(|w| key(&points[w[0].end - 1]) < key(&points[w[1].start]))
    };
    // Already in order, as a group is when its packs come by ascending series: nothing moves.
    if laid_in_order(&runs) {
        return;
    }
    runs.sort_unstable_by_key(|r| key(&points[r.start]));
    if laid_in_order(&runs) {
        let mut sorted = Vec::with_capacity(points.len());
        for run in runs {
            sorted.extend_from_slice(&points[run]);
        }
        *points = sorted;
    } else {
        points.sort_unstable_by_key(key);
    }
}

/// Packs with at most this many points check a late point against the pack's earlier points
/// by a scan, not a set: most packs are small, and a set costs an allocation.
const SCAN_PACK_POINTS: usize = 16;

/// Changes of a group of packs not yet applied.
///
/// A group from many devices (one pack each, as with thousands of connected nodes) stages
/// thousands of series with a point or two each, so the group keeps its points in one list
/// and its (series, time) pairs in one set rather than a list and a set per series: two
/// allocations that grow, not two per series.
#[derive(Debug, Default)]
struct Staged<'a> {
    /// New points (series id, time, value), in the order staged; sorted when written.
    points: Vec<(u32, i64, f64)>,
    /// The (series id, time) of every point in `points`, for duplicate checks: made at the
    /// group's first late point (see `Store::stage`), and kept up from then on.
    times: Option<Set<(u32, i64)>>,
    /// Times already on disk, by (series id, window), read once per group for late points.
    on_disk: Map<(u32, i64), Set<i64>>,
    series: Map<(&'a str, &'a str), SeriesMeta>,
    devices: Map<&'a str, DeviceMeta>,
    seqs: Map<&'a str, (u64, [u8; 8])>,
    next_series_id: Option<u32>,
}

impl Store {
    /// Writes the points of one device in one atomic batch; see [`Store::write_packs`].
    pub fn write(
        &self,
        device: &str,
        kind: &str,
        seen_ms: i64,
        points: &[NewPoint<'_>],
    ) -> Result<WriteSummary, WriteError> {
        let mut written = self.write_packs(&[PackWrite { device, kind, seen_ms, points, seq: None }])?;
        Ok(written.packs.pop().unwrap_or(Ok(WriteSummary::default()))?)
    }

    /// Writes a group of packs in one atomic sled batch: one sled write, and one set of
    /// metadata updates, however many packs. Each pack records that its device was seen at
    /// `seen_ms` with kind `kind`. Points whose (series, time) is already stored, or repeated
    /// within the group, are left as first written and counted as duplicates.
    ///
    /// A pack whose unit differs from its series' unit is left out whole, with its
    /// [`PackRefused`] in the result; the others are written. A failure to write fails the
    /// whole group with a [`StoreError`]: nothing of it is stored, and no pack is refused.
    /// The packs are durable once a flush of the returned [`Generation`] returns.
    pub fn write_packs(&self, packs: &[PackWrite<'_>]) -> Result<Written, StoreError> {
        self.write_group(packs, &[])
    }

    /// [`Store::write_packs`], and in the same batch the refusals of the group counted in
    /// their devices' tallies ([`crate::DeviceTally`]); a refusal of a device the store does
    /// not know (nor learns in this group) is left out, so that made-up ids cannot grow the
    /// store.
    pub fn write_group<'a>(
        &self,
        packs: &[PackWrite<'a>],
        refusals: &[RefusalWrite<'a>],
    ) -> Result<Written, StoreError> {
        self.write_group_with(packs, refusals, |_, _| Vec::new())
    }

    /// [`Store::write_group`], and in the same atomic batch the records that `records` makes
    /// from what the group's packs became (each pack's result, and the (pack, point) indexes
    /// of the points already stored), so that another crate's record of an accepted pack (the
    /// forwarder's outbox) is durable exactly when the pack is. A record in a space that is
    /// not valid fails the group as [`StoreError::RecordSpace`], before anything is written.
    pub fn write_group_with<'a>(
        &self,
        packs: &[PackWrite<'a>],
        refusals: &[RefusalWrite<'a>],
        records: impl FnOnce(&[Result<WriteSummary, PackRefused>], &[(usize, usize)]) -> Vec<GroupRecord>,
    ) -> Result<Written, StoreError> {
        let mut state = self.state();
        let opened = self.writable_to_log(&mut state)?;
        // Room for the whole group at once: grown from nothing, the lists and maps were copied
        // and rehashed several times a group.
        let mut group = Staged {
            points: Vec::with_capacity(packs.iter().map(|p| p.points.len()).sum()),
            series: Map::with_capacity_and_hasher(packs.len(), Default::default()),
            devices: Map::with_capacity_and_hasher(packs.len(), Default::default()),
            ..Staged::default()
        };
        let mut results = Vec::with_capacity(packs.len());
        let mut duplicates = Vec::new();
        for (index, pack) in packs.iter().enumerate() {
            let before = duplicates.len();
            let result = self.stage(&opened, &state, &mut group, pack, (index, &mut duplicates))?;
            if let Err(refused) = &result {
                duplicates.truncate(before);
                let refusal = RefusalWrite { device: pack.device, reason: refused.label(), time_ms: pack.seen_ms };
                tally_refusal(&state, &mut group, &refusal);
            }
            results.push(result);
        }
        for refusal in refusals {
            tally_refusal(&state, &mut group, refusal);
        }
        // The group's inserts go to the log as one record (`log.rs`), the other crates' records
        // beside it in the same batch.
        let mut record = super::log::Record::default();
        // (series, time) is unique in the group: duplicates were left out when staged.
        sort_points(&mut group.points);
        let mut window_points: Vec<(i64, f64)> = Vec::new();
        let same_chunk = |a: &(u32, i64, f64), b: &(u32, i64, f64)| {
            a.0 == b.0 && chunk::window_start(a.1) == chunk::window_start(b.1)
        };
        for window in group.points.chunk_by(same_chunk) {
            window_points.clear();
            window_points.extend(window.iter().map(|&(_, t, v)| (t, v)));
            let key = keys::chunk(window[0].0, window[0].1, opened.chunk_id());
            record.chunks.push((key, chunk::encode(&window_points)));
        }
        if let Some(next) = group.next_series_id.filter(|&n| n != state.next_series_id) {
            record.entries.push((keys::NEXT_SERIES.to_vec(), next.to_be_bytes().to_vec()));
        }
        // One entry per device: its metadata and its series' (every staged series' device is
        // staged too). The staged series sorted by device give each device its changes.
        let mut changed: Vec<(&str, &str, &SeriesMeta)> = group.series.iter().map(|(&(d, m), s)| (d, m, s)).collect();
        changed.sort_unstable_by_key(|c| c.0);
        let mut staged: Vec<(&str, &SeriesMeta)> = Vec::new();
        for (device, meta) in &group.devices {
            staged.clear();
            let at = changed.partition_point(|c| c.0 < *device);
            staged.extend(changed[at..].iter().take_while(|c| c.0 == *device).map(|c| (c.1, c.2)));
            record.entries.push((keys::device(device), state.entry(device, Some(meta), &staged)));
        }
        for series in changed.chunk_by(|a, b| a.0 == b.0).filter(|s| !group.devices.contains_key(s[0].0)) {
            staged.clear();
            staged.extend(series.iter().map(|c| (c.1, c.2)));
            record.entries.push((keys::device(series[0].0), state.entry(series[0].0, None, &staged)));
        }
        for (device, (seq, id)) in &group.seqs {
            let mut value = [0u8; 16];
            value[..8].copy_from_slice(&seq.to_be_bytes());
            value[8..].copy_from_slice(id);
            record.entries.push((keys::seq(device), value.to_vec()));
        }
        let mut batch = sled::Batch::default();
        for (space, key, value) in records(&results, &duplicates) {
            super::records::check(space)?;
            batch.insert(keys::record(space, &key), value);
        }
        let mut logged = Vec::new();
        for piece in record.encode() {
            let key = opened.log.next_key(opened.epoch);
            batch.insert(&key, piece);
            logged.push(key);
        }
        self.apply(&opened, batch)?;
        match opened.log.add(logged, record) {
            Due::Later => {}
            Due::Soon => self.inner.wake.due(),
            Due::Now => {
                self.fold_log_in(&opened)?;
            }
        }

        if let Some(next) = group.next_series_id {
            state.next_series_id = next;
        }
        // Known devices and series (nearly all, in a steady fleet) are updated in place: no
        // key is copied for them.
        for (device, meta) in group.devices {
            match state.devices.get_mut(device) {
                Some(known) => *known = meta,
                None => {
                    state.devices.insert(device.to_owned(), meta);
                }
            }
        }
        for ((device, metric), meta) in group.series {
            if !state.series.contains_key(device) {
                state.series.insert(device.to_owned(), BTreeMap::new());
            }
            let Some(metrics) = state.series.get_mut(device) else { continue };
            match metrics.get_mut(metric) {
                Some(known) => *known = meta,
                None => {
                    metrics.insert(metric.to_owned(), meta);
                }
            }
        }
        for (device, seq) in group.seqs {
            match state.seqs.get_mut(device) {
                Some(known) => *known = seq,
                None => {
                    state.seqs.insert(device.to_owned(), seq);
                }
            }
        }
        Ok(Written { generation: opened.generation, packs: results, duplicates })
    }

    /// Adds one pack to `group`, or leaves the group as it was and returns the pack's error.
    fn stage<'p>(
        &self,
        opened: &Opened,
        state: &State,
        group: &mut Staged<'p>,
        pack: &PackWrite<'p>,
        (index, duplicates): (usize, &mut Vec<(usize, usize)>),
    ) -> Result<Result<WriteSummary, PackRefused>, StoreError> {
        let mut summary = WriteSummary::default();
        let mut series: BTreeMap<&'p str, SeriesMeta> = BTreeMap::new();
        let mut points: Vec<(u32, i64, f64)> = Vec::with_capacity(pack.points.len());
        // The pack's own (series, time) pairs, made at its first late point past
        // SCAN_PACK_POINTS, as the group's are.
        let mut here: Option<Set<(u32, i64)>> = None;
        let mut next_id = group.next_series_id.unwrap_or(state.next_series_id);

        // A pack's points come in runs of one series (most packs are one run): a run's series
        // is found, and its unit and kind checked, once.
        let mut first_at = 0;
        for run in pack.points.chunk_by(|a, b| same_series(a, b)) {
            let p = &run[0];
            let meta = match series.entry(p.metric) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let known = group
                        .series
                        .get(&(pack.device, p.metric))
                        .or_else(|| state.series.get(pack.device).and_then(|s| s.get(p.metric)))
                        .cloned();
                    let meta = match known {
                        Some(meta) => meta,
                        None => {
                            let id = next_id;
                            next_id = next_id.checked_add(1).ok_or(StoreError::SeriesIdsExhausted)?;
                            SeriesMeta {
                                id,
                                unit: None,
                                first_ms: p.time_ms,
                                last_ms: p.time_ms,
                                count: 0,
                                last_value: p.value,
                                folded_to_ms: chunk::window_start(p.time_ms),
                                value_kind: p.value_kind,
                            }
                        }
                    };
                    e.insert(meta)
                }
            };
            if meta.value_kind != p.value_kind {
                return Ok(Err(PackRefused::ValueKindMismatch {
                    metric: p.metric.to_owned(),
                    expected: meta.value_kind.as_str(),
                    got: p.value_kind.as_str(),
                }));
            }
            match (&meta.unit, p.unit) {
                (Some(expected), Some(got)) if expected != got => {
                    return Ok(Err(PackRefused::UnitMismatch {
                        metric: p.metric.to_owned(),
                        expected: expected.clone(),
                        got: got.to_owned(),
                    }));
                }
                (None, Some(got)) => meta.unit = Some(got.to_owned()),
                _ => {}
            }
            let id = meta.id;
            let run_at = first_at;
            first_at += run.len();
            for (at, p) in (run_at..).zip(run) {
                let key = (id, p.time_ms);
                // `last_ms` is the newest time the series has, on disk, in the group and in
                // this pack so far (each staged point moves it), so a point after it is new:
                // nearly every point of a live sensor. Only a late point is looked up in the
                // group's and the pack's points, and on disk.
                let late = meta.count > 0 && p.time_ms <= meta.last_ms;
                if late {
                    let in_group = group
                        .times
                        .get_or_insert_with(|| group.points.iter().map(|&(s, t, _)| (s, t)).collect())
                        .contains(&key);
                    let in_pack = match &mut here {
                        None if points.len() <= SCAN_PACK_POINTS => points.iter().any(|&(s, t, _)| (s, t) == key),
                        here => {
                            here.get_or_insert_with(|| points.iter().map(|&(s, t, _)| (s, t)).collect()).contains(&key)
                        }
                    };
                    if in_group
                        || in_pack
                        || stored_times(opened, &mut group.on_disk, id, p.time_ms)?.contains(&p.time_ms)
                    {
                        summary.duplicates += 1;
                        duplicates.push((index, at));
                        continue;
                    }
                }
                if let Some(here) = &mut here {
                    here.insert(key);
                }
                points.push((id, p.time_ms, p.value));
                summary.stored += 1;
                // A late point reopens its window: its block and rollup no longer hold
                // everything.
                meta.folded_to_ms = meta.folded_to_ms.min(chunk::window_start(p.time_ms));
                if meta.count == 0 || p.time_ms < meta.first_ms {
                    meta.first_ms = p.time_ms;
                }
                if meta.count == 0 || p.time_ms > meta.last_ms {
                    meta.last_ms = p.time_ms;
                    meta.last_value = p.value;
                }
                meta.count += 1;
            }
        }

        let mut device = match group.devices.get(pack.device).or_else(|| state.devices.get(pack.device)) {
            Some(d) => DeviceMeta {
                kind: pack.kind.to_owned(),
                first_seen_ms: d.first_seen_ms,
                last_seen_ms: d.last_seen_ms.max(pack.seen_ms),
                points: d.points + summary.stored as u64,
                tally: d.tally.clone(),
            },
            None => DeviceMeta {
                kind: pack.kind.to_owned(),
                first_seen_ms: pack.seen_ms,
                last_seen_ms: pack.seen_ms,
                points: summary.stored as u64,
                tally: DeviceTally::default(),
            },
        };
        device.tally.packs += 1;
        device.tally.duplicates += summary.duplicates as u64;
        if let Some((seq, id)) = pack.seq {
            let stored = group.seqs.get(pack.device).or_else(|| state.seqs.get(pack.device));
            let kept = match stored {
                Some(&(s, stored_id)) if stored_id == id => {
                    // Numbers skipped since the last one stored: packs that never came.
                    if seq > s.saturating_add(1) {
                        device.tally.seq_gaps += 1;
                    }
                    s.max(seq)
                }
                _ => seq,
            };
            group.seqs.insert(pack.device, (kept, id));
        }
        group.devices.insert(pack.device, device);
        for (metric, meta) in series {
            group.series.insert((pack.device, metric), meta);
        }
        if let Some(times) = &mut group.times {
            times.extend(points.iter().map(|&(id, t, _)| (id, t)));
        }
        group.points.extend(points);
        group.next_series_id = Some(next_id);
        Ok(Ok(summary))
    }
}

/// Counts `refusal` in its device's tally, if the store knows the device.
fn tally_refusal<'a>(state: &State, group: &mut Staged<'a>, refusal: &RefusalWrite<'a>) {
    let Some(known) = group.devices.get(refusal.device).or_else(|| state.devices.get(refusal.device)) else {
        return;
    };
    let mut meta = known.clone();
    let tally = &mut meta.tally;
    *tally.rejected.entry(refusal.reason.to_owned()).or_default() += 1;
    if tally.last_rejection.as_ref().is_none_or(|(t, _)| *t <= refusal.time_ms) {
        tally.last_rejection = Some((refusal.time_ms, refusal.reason.to_owned()));
    }
    group.devices.insert(refusal.device, meta);
}

/// The times stored for series `id` in the window holding `t_ms`, read once per group.
fn stored_times<'c>(
    opened: &Opened,
    cache: &'c mut Map<(u32, i64), Set<i64>>,
    id: u32,
    t_ms: i64,
) -> Result<&'c Set<i64>, StoreError> {
    let window = chunk::window_start(t_ms);
    match cache.entry((id, window)) {
        std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
        std::collections::hash_map::Entry::Vacant(e) => {
            let mut times = Set::default();
            let end = window.saturating_add(chunk::WINDOW_MS);
            // Day files included: a late point into a closed day is a duplicate of the file's.
            scan_chunks(opened, id, window, end, |_, points| {
                times.extend(points.iter().map(|p| p.0).filter(|&t| t >= window && t < end));
                true
            })?;
            Ok(e.insert(times))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sort_points;

    #[test]
    fn points_staged_in_runs_come_out_sorted_whether_the_runs_overlap_or_not() {
        let mut rng = crate::xorshift(0x2545_f491_4f6c_dd1d);
        let mut next = move |below: u64| rng() % below;
        let (mut laid, mut sorted) = (0, 0);
        for round in 0..400 {
            // Packs of one series each, times ascending from a start: far apart (runs of a
            // series rarely overlap) or close (they often interleave).
            let (starts, spread) = if round % 2 == 0 { (1_000, 1_000_000) } else { (10, 10) };
            let mut points = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for _ in 0..next(12) {
                let series = next(5) as u32;
                let start = next(starts) as i64 * spread;
                for i in 0..1 + next(8) as i64 {
                    let time = start + i * 3;
                    if seen.insert((series, time)) {
                        points.push((series, time, (round * 100) as f64 + i as f64));
                    }
                }
            }
            let mut expected = points.clone();
            expected.sort_unstable_by_key(|p| (p.0, p.1));
            let before = points.clone();
            // Room to spare, so that a sort in place shows in the capacity (below).
            points.reserve(points.len() + 1);
            sort_points(&mut points);
            assert_eq!(points, expected, "round {round}: from {before:?}");
            // Which way it went: runs laid end to end are a new vector, of their length.
            if before != expected {
                if points.capacity() == points.len() {
                    laid += 1;
                } else {
                    sorted += 1;
                }
            }
        }
        assert!(laid > 50 && sorted > 50, "both ways are taken: {laid} laid end to end, {sorted} sorted");
    }
}
