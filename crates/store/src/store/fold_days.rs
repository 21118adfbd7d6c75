//! Folded hours into day files: folding the closed hours of a day (all of it once it has
//! closed, and its late points) into the day's file, dropping expired series from files, and
//! moving the day blocks of a format-5 store out of sled at open.
//!
//! Each of these builds the new file without the state lock (a day of a city's series takes
//! a while to encode, and ingest should not wait for it), then takes the lock for the sled
//! batch that names the file (`days.rs` says why that order is safe across a crash). A late
//! point written into the day in between goes to sled as a chunk, after the file's points in
//! reads; its series' folded mark was moved back by the write, so the day is folded again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, MutexGuard};

use super::days::crash_point;
use super::maintenance::hourly;
use super::meta::{SeriesMeta, State};
use super::{FoldReport, Opened, Store};
use crate::{chunk, dayfile, keys, rollup, ExpireReport, StoreError};

/// A day file written and synced, and the sled batch that makes it count.
pub(super) struct Built {
    day: i64,
    generation: Option<u64>,
    replaces: Option<u64>,
    batch: sled::Batch,
}

impl Store {
    fn upkeep(&self) -> MutexGuard<'_, ()> {
        self.inner.upkeep.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Folds the windows of day `day` before `end` (the whole day once it has closed), of
    /// every series, into the day's file: the file's blocks so far and the chunks of those
    /// windows in sled, as one file; the chunks go, the day's rollups are written from the
    /// same points.
    pub(super) fn fold_day(&self, day: i64, end: i64, report: &mut FoldReport) -> Result<(), StoreError> {
        let _upkeep = self.upkeep();
        let opened = self.current()?;
        // The file is built from the tree's chunks: what was logged before now goes in.
        self.fold_log_in(&opened)?;
        let live = self.series_ids();
        let mut counts = FoldReport::default();
        let upto = end.min(day.saturating_add(chunk::DAY_MS));
        let Some(built) = build_day(&opened, day, upto, &live, "fold", &mut counts)? else {
            return Ok(());
        };
        let mut state = self.state();
        if self.commit(&opened, &mut state, built, "fold", |_| {})? {
            report.days += counts.days;
            report.hours += counts.hours;
            report.chunks_in += counts.chunks_in;
            report.points += counts.points;
        }
        Ok(())
    }

    fn series_ids(&self) -> BTreeSet<u32> {
        live_series(&self.state())
    }

    /// Applies `built`'s batch (and whatever `also` adds to it, under the state lock), makes
    /// its file the day's, flushes, then deletes the file it replaces. False if the opening
    /// changed since the file was built: then nothing is applied and the file is deleted.
    fn commit(
        &self,
        built_in: &Arc<Opened>,
        state: &mut MutexGuard<'_, State>,
        mut built: Built,
        what: &str,
        also: impl FnOnce(&mut sled::Batch),
    ) -> Result<bool, StoreError> {
        let opened = self.writable(state)?;
        if !Arc::ptr_eq(&opened, built_in) {
            if let Some(g) = built.generation {
                built_in.days.remove(built.day, g);
            }
            return Ok(false);
        }
        also(&mut built.batch);
        let batch = built.batch;
        opened.days.switch(built.day, built.generation, || self.apply(&opened, batch))?;
        crash_point(what, "applied");
        self.flush()?;
        if let Some(old) = built.replaces {
            opened.days.remove(built.day, old);
        }
        Ok(true)
    }

    /// Drops from the day files the blocks of the series whose raw points end at `limits`
    /// (series id -> the end of its expired days): a file goes when none of its series is
    /// left, else it is written again without them.
    pub(super) fn expire_files(
        &self,
        limits: &HashMap<u32, i64>,
        report: &mut ExpireReport,
        touched: &mut BTreeSet<(String, String)>,
    ) -> Result<(), StoreError> {
        let Some(&latest) = limits.values().max() else { return Ok(()) };
        let _upkeep = self.upkeep();
        let opened = self.current()?;
        // Only days that end by the latest limit can hold an expired block.
        let last_day = latest.saturating_sub(chunk::DAY_MS);
        let days: Vec<(i64, u64)> = opened.days.read().range(..=last_day).map(|(&d, &g)| (d, g)).collect();
        for (day, generation) in days {
            let end = day.saturating_add(chunk::DAY_MS);
            let file = opened.days.open(day, generation)?;
            let expired: BTreeSet<u32> = file.series().filter(|id| limits.get(id).is_some_and(|&l| l >= end)).collect();
            if expired.is_empty() {
                continue;
            }
            let live = self.series_ids();
            let mut keep = Vec::new();
            let mut dropped: HashMap<u32, u64> = HashMap::new();
            for id in file.series() {
                if expired.contains(&id) {
                    let block = file.block(id)?.unwrap_or_default();
                    let n = chunk::count(&block)
                        .ok_or_else(|| file.corrupt(format!("block of series {id} is malformed")))?;
                    dropped.insert(id, n);
                } else if live.contains(&id) {
                    keep.extend(file.block(id)?.map(|b| (id, b)));
                }
            }
            let mut batch = sled::Batch::default();
            let next = if keep.is_empty() {
                batch.remove(&keys::day_file(day));
                None
            } else {
                let g = generation.saturating_add(1);
                opened.days.write(day, g, &dayfile::encode(day, &keep), "expire")?;
                batch.insert(&keys::day_file(day), &g.to_be_bytes());
                Some(g)
            };
            let built = Built { day, generation: next, replaces: Some(generation), batch };
            let mut state = self.state();
            // The counts of the series and devices whose blocks go, in the same batch.
            let mut series = BTreeMap::new();
            let mut devices = BTreeMap::new();
            for (device, metrics) in &state.series {
                for (metric, meta) in metrics {
                    let Some(&n) = dropped.get(&meta.id) else { continue };
                    let mut meta = meta.clone();
                    meta.count = meta.count.saturating_sub(n);
                    series.insert((device.clone(), metric.clone()), meta);
                    if let Some(mut d) = devices.get(device).or_else(|| state.devices.get(device)).cloned() {
                        d.points = d.points.saturating_sub(n);
                        devices.insert(device.clone(), d);
                    }
                }
            }
            // One entry per device whose series lost points (`series` is sorted by device).
            let listed: Vec<(&String, &str, &SeriesMeta)> =
                series.iter().map(|((d, m), meta)| (d, m.as_str(), meta)).collect();
            let mut entries = Vec::with_capacity(devices.len());
            for of_device in listed.chunk_by(|a, b| a.0 == b.0) {
                let device = of_device[0].0;
                let changed: Vec<(&str, &SeriesMeta)> = of_device.iter().map(|c| (c.1, c.2)).collect();
                entries.push((keys::device(device), state.entry(device, devices.get(device), &changed)));
            }
            let applied = self.commit(&opened, &mut state, built, "expire", |batch| {
                for (key, entry) in entries {
                    batch.insert(key, entry);
                }
            })?;
            if !applied {
                return Ok(());
            }
            for ((device, metric), meta) in series {
                state.series.entry(device.clone()).or_default().insert(metric.clone(), meta);
                touched.insert((device, metric));
            }
            state.devices.extend(devices);
            report.blocks += dropped.len() as u64;
            report.points += dropped.values().sum::<u64>();
        }
        Ok(())
    }
}

/// Writes the file of day `day` holding every series of `live` that has points in it before
/// `end` (in its file so far, or in sled's chunks), and returns the batch that makes it count:
/// the chunks deleted, the day's rollups of the series that had chunks. `None` when there are
/// no such chunks in sled: the file is already all of it.
fn build_day(
    opened: &Opened,
    day: i64,
    end: i64,
    live: &BTreeSet<u32>,
    what: &str,
    report: &mut FoldReport,
) -> Result<Option<Built>, StoreError> {
    let old_generation = opened.days.generation(day);
    let old = old_generation.map(|g| opened.days.open(day, g)).transpose()?;
    let Some((blocks, mut batch)) = gather_day(opened, day, end, live, old.as_deref(), report)? else {
        return Ok(None);
    };
    let generation = old_generation.map_or(1, |g| g.saturating_add(1));
    opened.days.write(day, generation, &dayfile::encode(day, &blocks), what)?;
    batch.insert(&keys::day_file(day), &generation.to_be_bytes());
    if end < day.saturating_add(chunk::DAY_MS) {
        report.hours += 1;
    } else {
        report.days += 1;
    }
    Ok(Some(Built { day, generation: Some(generation), replaces: old_generation, batch }))
}

/// The blocks of day `day`'s file, every series of `live` that has points in it before `end`
/// (in `old`, the day's file so far, or in sled's chunks), and the batch that goes with them:
/// the chunks deleted, the day's rollups of the series that had chunks. `None` when there are
/// no such chunks in sled: the file is already all of it.
fn gather_day(
    opened: &Opened,
    day: i64,
    end: i64,
    live: &BTreeSet<u32>,
    old: Option<&super::days::OpenDay>,
    report: &mut FoldReport,
) -> Result<Option<Blocks>, StoreError> {
    let mut blocks = Vec::new();
    let mut batch = sled::Batch::default();
    let mut points = Vec::new();
    for &id in live {
        let (chunks, new) = Store::chunks_in(opened, id, day, end)?;
        let in_file = match &old {
            Some(file) => file.block(id)?,
            None => None,
        };
        if chunks.is_empty() {
            // Copied as it is: the file's blocks need no decoding when nothing came late.
            blocks.extend(in_file.map(|b| (id, b)));
            continue;
        }
        points.clear();
        if let (Some(file), Some(block)) = (&old, &in_file) {
            chunk::decode_into(block, &mut points)
                .ok_or_else(|| file.corrupt(format!("block of series {id} cannot be decoded")))?;
        }
        // The file's points first: a sort that keeps their order keeps the first value of a
        // time that would be in both (writes never let that happen).
        points.extend(new);
        points.sort_by_key(|p| p.0);
        points.dedup_by_key(|p| p.0);
        blocks.push((id, chunk::encode_block(&points)));
        batch.insert(&keys::rollup(id, day), rollup::encode(day, &hourly(&points)));
        for key in &chunks {
            batch.remove(key.as_ref());
        }
        report.chunks_in += chunks.len() as u64;
        report.points += points.len() as u64;
    }
    if report.chunks_in == 0 {
        return Ok(None);
    }
    Ok(Some((blocks, batch)))
}

/// A day file's blocks by series, and the sled batch that goes with them.
type Blocks = (Vec<(u32, Vec<u8>)>, sled::Batch);

/// Moves the day blocks a format-5 store keeps in sled into day files, in three steps so that
/// a failure before the second leaves the store exactly as the older mekong left it:
/// 1. every day's file is written, sled untouched (a failure deletes them; killed, they are
///    strays sled does not name, which the next opening deletes before it starts again);
/// 2. one batch names every file, lists the days still to clean ([`keys::MIGRATING`]) and
///    sets the format to `to`: the switch, after which the store is of format 6;
/// 3. [`finish_migration`] takes each day's chunks out of sled and writes its rollups.
pub(super) fn migrate(opened: &Opened, state: &State, from: u8, to: u8) -> Result<(), StoreError> {
    let mut days = BTreeSet::new();
    for key in opened.tree.scan_prefix([keys::POINT]).keys() {
        let key = key?;
        if keys::is_day_block(&key) {
            let (_, first_ms) = keys::parse_chunk(&key).ok_or_else(|| StoreError::Corrupt(key.to_vec()))?;
            days.insert(chunk::day_start(first_ms));
        }
    }
    tracing::info!(days = days.len(), from, "moving the store's day blocks into day files");
    let live = live_series(state);
    let mut written: Vec<(i64, u64)> = Vec::new();
    let switched = (|| {
        let mut batch = sled::Batch::default();
        let mut migrating = Vec::with_capacity(days.len() * 8);
        for &day in &days {
            let end = day.saturating_add(chunk::DAY_MS);
            let Some((blocks, _)) = gather_day(opened, day, end, &live, None, &mut FoldReport::default())? else {
                continue;
            };
            opened.days.write(day, MIGRATED, &dayfile::encode(day, &blocks), "migrate")?;
            written.push((day, MIGRATED));
            batch.insert(&keys::day_file(day), &MIGRATED.to_be_bytes());
            migrating.extend_from_slice(&day.to_be_bytes());
        }
        if !migrating.is_empty() {
            batch.insert(keys::MIGRATING, migrating);
        }
        batch.insert(keys::FORMAT, &[to]);
        opened.days.switch_all(&written, || Ok(opened.tree.apply_batch(batch)?))?;
        Ok(opened.db.flush()?)
    })();
    if let Err(source) = switched {
        if opened.tree.get(keys::FORMAT).ok().flatten().is_none_or(|v| v.as_ref() == [from]) {
            for &(day, generation) in &written {
                opened.days.remove(day, generation);
            }
            return Err(StoreError::Migration { from, source: Box::new(source) });
        }
        // The switch is in sled, only its flush failed: the store is of the new format now.
        return Err(source);
    }
    crash_point("migrate", "applied");
    Ok(())
}

/// The generation of every file a migration writes: the first of its day.
const MIGRATED: u64 = 1;

/// Takes out of sled, a day per batch, the chunks and rollups of the days a migration has
/// switched to day files ([`migrate`]'s third step), and writes the days' rollups from the
/// same points. Killed halfway, the next opening goes on from the days still listed: this
/// runs at every opening, before anything reads.
pub(super) fn finish_migration(opened: &Opened, state: &State) -> Result<(), StoreError> {
    let Some(list) = opened.tree.get(keys::MIGRATING)? else { return Ok(()) };
    let corrupt = || StoreError::Corrupt(keys::MIGRATING.to_vec());
    let mut days = Vec::with_capacity(list.len() / 8);
    for bytes in list.chunks(8) {
        days.push(i64::from_be_bytes(bytes.try_into().map_err(|_| corrupt())?));
    }
    let live = live_series(state);
    for (i, &day) in days.iter().enumerate() {
        let end = day.saturating_add(chunk::DAY_MS);
        // The points are gathered as the migration wrote them (not merged with the file that
        // now holds them), so the rollups are the file's.
        let mut batch = match gather_day(opened, day, end, &live, None, &mut FoldReport::default())? {
            Some((_, batch)) => batch,
            None => sled::Batch::default(),
        };
        let rest = &days[i + 1..];
        if rest.is_empty() {
            batch.remove(keys::MIGRATING);
        } else {
            batch.insert(keys::MIGRATING, rest.iter().flat_map(|d| d.to_be_bytes()).collect::<Vec<u8>>());
        }
        opened.tree.apply_batch(batch)?;
        crash_point("migrate", "cleaned");
    }
    opened.db.flush()?;
    Ok(())
}

/// The ids of every series `state` knows.
fn live_series(state: &State) -> BTreeSet<u32> {
    state.series.values().flat_map(|s| s.values().map(|m| m.id)).collect()
}
