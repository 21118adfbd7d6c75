//! Upkeep the store does when asked, in the background: folding the chunks of closed hours
//! into their day's file with their rollups, and dropping what the retention policy no longer
//! keeps.
//!
//! Ingest writes one small chunk per series and write group, so a series sampled every 10 s
//! gains hundreds of chunks an hour; each costs a key and sled's bookkeeping, and sled never
//! gives back the space of what it deleted. Folding moves the chunks of the closed hours of a
//! day, of every series, into one day file outside sled (`fold_days.rs`, `days.rs`): one block
//! per series, written again as more hours close and once more when the day has closed, with
//! the rollups of its hours from the same points. So sled only ever holds the open hour's
//! chunks, late points and the small metadata, and the data directory follows the data. The
//! marks (`folded_to_ms`) move per series under the write lock; the files are built without
//! it, and deletions of expired chunks go a batch at a time, so ingest waits for little.

use std::collections::{BTreeSet, HashMap};

use super::read::scan_chunks;
use super::{Opened, Store};
use crate::{chunk, keys, Bucket, StoreError};

/// How long the series of some kind or metric are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionRule {
    /// Device kind the rule applies to; `None` for any.
    pub kind: Option<String>,
    /// Metric the rule applies to; `None` for any.
    pub metric: Option<String>,
    /// Raw points older than this many ms are dropped (a whole UTC day at a time, once it is
    /// folded); `None` keeps them.
    pub raw_ms: Option<i64>,
    /// Rollups older than this many ms are dropped (a whole UTC day at a time); `None` keeps
    /// them.
    pub rollups_ms: Option<i64>,
}

/// The retention rules; the first rule matching a series applies to it, and a series no rule
/// matches is kept whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Rules, most specific first.
    pub rules: Vec<RetentionRule>,
}

impl RetentionPolicy {
    /// The rule for a series of device kind `kind` and metric `metric`.
    pub fn rule_for(&self, kind: &str, metric: &str) -> Option<&RetentionRule> {
        self.rules
            .iter()
            .find(|r| r.kind.as_deref().is_none_or(|k| k == kind) && r.metric.as_deref().is_none_or(|m| m == metric))
    }
}

/// What a fold pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FoldReport {
    /// Files of days still open written with the hours that closed.
    pub hours: u64,
    /// Files of closed days written.
    pub days: u64,
    /// Chunks read from those windows.
    pub chunks_in: u64,
    /// Points in those windows.
    pub points: u64,
}

/// What an expiry pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpireReport {
    /// Blocks dropped.
    pub blocks: u64,
    /// Points in those blocks.
    pub points: u64,
    /// Days of rollups dropped.
    pub rollups: u64,
}

/// The keys of some chunks, and their points.
type Chunks = (Vec<sled::IVec>, Vec<(i64, f64)>);

/// Deletions per batch while expiring, so that one pass never holds the lock for long.
const EXPIRE_BATCH: usize = 1_000;

impl Store {
    /// Folds every window, of every series, that ends at or before `before_ms` and is not
    /// folded yet into its day's file (all series of the day at once; a day still open holds
    /// the hours that have closed, and is written again as more close). Pass a time a little
    /// before now, so that points still arriving for the current window do not reopen it at
    /// once (they would be folded again next time). `keep_going` is asked before each series and day; false
    /// ends the pass early (at shutdown), and the next pass goes on from there.
    pub fn fold(&self, before_ms: i64, mut keep_going: impl FnMut() -> bool) -> Result<FoldReport, StoreError> {
        let mut report = FoldReport::default();
        // Each round moves the series' marks up to their first day with chunks to fold, then
        // folds those days; a backlog of n days takes n rounds.
        loop {
            let mut pending = BTreeSet::new();
            for (device, metric) in self.series_names() {
                if !keep_going() {
                    return Ok(report);
                }
                if let Some(day) = self.fold_next(&device, &metric, before_ms)? {
                    pending.insert(day);
                }
            }
            let files_before = report.days + report.hours;
            for &day in &pending {
                if !keep_going() {
                    return Ok(report);
                }
                self.fold_day(day, chunk::window_start(before_ms), &mut report)?;
            }
            // After folding, one more round moves the marks past what was folded.
            if pending.is_empty() || report.days + report.hours == files_before {
                return Ok(report);
            }
        }
    }

    fn series_names(&self) -> Vec<(String, String)> {
        let state = self.state();
        state.series.iter().flat_map(|(d, s)| s.keys().map(move |m| (d.clone(), m.clone()))).collect()
    }

    /// Moves the folded mark of one series up to `before_ms`'s window when it has no chunks
    /// to fold before it (then `None`), else up to the day of the first such chunks, which
    /// goes into its day file with every other series' ([`Store::fold_day`]).
    fn fold_next(&self, device: &str, metric: &str, before_ms: i64) -> Result<Option<i64>, StoreError> {
        let mut state = self.state();
        let opened = self.writable_for(&mut state, device)?;
        let Some(mut meta) = state.meta(device, metric).cloned() else {
            return Ok(None);
        };
        let id = meta.id;
        let end = chunk::window_start(before_ms);
        if meta.folded_to_ms >= end {
            return Ok(None);
        }
        let next = opened.tree.range(keys::chunk_from(id, meta.folded_to_ms)..keys::chunk_from(id, end)).next();
        let window = match next {
            None => None,
            Some(entry) => {
                let (key, _) = entry?;
                let (_, first_ms) = keys::parse_chunk(&key).ok_or_else(|| StoreError::Corrupt(key.to_vec()))?;
                Some(chunk::window_start(first_ms))
            }
        };
        let mut batch = sled::Batch::default();
        let next = match window {
            None => {
                meta.folded_to_ms = end;
                None
            }
            Some(window) => {
                // Nothing lies between the mark and that day but folded windows.
                let day = chunk::day_start(window);
                if meta.folded_to_ms >= day {
                    return Ok(Some(day));
                }
                meta.folded_to_ms = day;
                Some(day)
            }
        };
        batch.insert(keys::device(device), state.entry(device, None, &[(metric, &meta)]));
        self.apply(&opened, batch)?;
        let folded_to_ms = meta.folded_to_ms;
        if let Some(m) = state.series.get_mut(device).and_then(|s| s.get_mut(metric)) {
            m.folded_to_ms = folded_to_ms;
        }
        Ok(next)
    }

    /// The chunks of series `id` whose first time is in `[from_ms, to_ms)`, and their points
    /// sorted by time, each time once.
    pub(super) fn chunks_in(opened: &Opened, id: u32, from_ms: i64, to_ms: i64) -> Result<Chunks, StoreError> {
        let mut chunks = Vec::new();
        let mut points: Vec<(i64, u64, f64)> = Vec::new();
        let mut decoded = Vec::new();
        for entry in opened.tree.range(keys::chunk_from(id, from_ms)..keys::chunk_from(id, to_ms)) {
            let (key, value) = entry?;
            let chunk_id = key.get(13..21).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
            let chunk_id = chunk_id.ok_or_else(|| StoreError::Corrupt(key.to_vec()))? & !keys::DAY_BLOCK;
            decoded.clear();
            chunk::decode_into(&value, &mut decoded).ok_or_else(|| StoreError::Corrupt(key.to_vec()))?;
            points.extend(decoded.iter().map(|&(t, v)| (t, chunk_id, v)));
            chunks.push(key);
        }
        // Writes never store a time twice, but if a time were there twice the first written
        // (the lower chunk id) would be the one every read has returned so far.
        points.sort_unstable_by_key(|p| (p.0, p.1));
        points.dedup_by_key(|p| p.0);
        Ok((chunks, points.into_iter().map(|(t, _, v)| (t, v)).collect()))
    }

    /// Drops, for every series a rule of `policy` applies to, the folded days of raw points
    /// that ended more than the rule's `raw_ms` before `now_ms`, and the days of rollups older
    /// than its `rollups_ms`. A day not folded yet is kept until it is, so its rollups exist
    /// first. A day file goes once every series in it is dropped, and is rewritten without
    /// the dropped ones before that.
    pub fn expire(&self, now_ms: i64, policy: &RetentionPolicy) -> Result<ExpireReport, StoreError> {
        let mut report = ExpireReport::default();
        // Series id -> the end of the days of raw points it drops.
        let mut limits = HashMap::new();
        let mut touched = BTreeSet::new();
        for (device, metric) in self.series_names() {
            let rule = {
                let state = self.state();
                let Some(kind) = state.devices.get(&device).map(|d| d.kind.clone()) else { continue };
                match policy.rule_for(&kind, &metric) {
                    Some(rule) => rule.clone(),
                    None => continue,
                }
            };
            if let Some(raw_ms) = rule.raw_ms {
                let cutoff = chunk::day_start(now_ms.saturating_sub(raw_ms));
                while self.expire_points(&device, &metric, cutoff, &mut report, &mut touched)? {}
                let state = self.state();
                if let Some(m) = state.meta(&device, &metric) {
                    // Whole days only, and only folded ones.
                    limits.insert(m.id, cutoff.min(chunk::day_start(m.folded_to_ms)));
                }
            }
            if let Some(rollups_ms) = rule.rollups_ms {
                let cutoff = chunk::day_start(now_ms.saturating_sub(rollups_ms));
                while self.expire_rollups(&device, &metric, cutoff, &mut report)? {}
            }
        }
        self.expire_files(&limits, &mut report, &mut touched)?;
        for (device, metric) in touched {
            self.refresh_first(&device, &metric)?;
        }
        Ok(report)
    }

    /// Drops up to [`EXPIRE_BATCH`] chunks in sled of one series before `cutoff` (and before
    /// its folded mark): late points and hour blocks of days that have since expired; true if
    /// there may be more.
    fn expire_points(
        &self,
        device: &str,
        metric: &str,
        cutoff: i64,
        report: &mut ExpireReport,
        touched: &mut BTreeSet<(String, String)>,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        let opened = self.writable_for(&mut state, device)?;
        let Some(mut meta) = state.meta(device, metric).cloned() else {
            return Ok(false);
        };
        let id = meta.id;
        let limit = cutoff.min(chunk::day_start(meta.folded_to_ms));
        let mut batch = sled::Batch::default();
        let (mut blocks, mut points) = (0usize, 0u64);
        for entry in opened.tree.range(keys::chunk_from(id, i64::MIN)..keys::chunk_from(id, limit)) {
            if blocks == EXPIRE_BATCH {
                break;
            }
            let (key, value) = entry?;
            points += chunk::count(&value).ok_or_else(|| StoreError::Corrupt(key.to_vec()))?;
            batch.remove(key);
            blocks += 1;
        }
        if blocks == 0 {
            return Ok(false);
        }
        meta.count = meta.count.saturating_sub(points);
        let device_meta = state.devices.get(device).cloned().map(|mut d| {
            d.points = d.points.saturating_sub(points);
            d
        });
        batch.insert(keys::device(device), state.entry(device, device_meta.as_ref(), &[(metric, &meta)]));
        self.apply(&opened, batch)?;
        self.inner.chunk_removals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(d) = device_meta {
            state.devices.insert(device.to_owned(), d);
        }
        state.series.entry(device.to_owned()).or_default().insert(metric.to_owned(), meta);
        touched.insert((device.to_owned(), metric.to_owned()));
        report.blocks += blocks as u64;
        report.points += points;
        Ok(blocks == EXPIRE_BATCH)
    }

    /// Sets the first time of one series to that of its first point left, after expiry.
    fn refresh_first(&self, device: &str, metric: &str) -> Result<(), StoreError> {
        let mut state = self.state();
        let opened = self.writable_for(&mut state, device)?;
        let Some(mut meta) = state.meta(device, metric).cloned() else {
            return Ok(());
        };
        let mut first: Option<i64> = None;
        scan_chunks(&opened, meta.id, i64::MIN, i64::MAX, |first_ms, points| {
            if first.is_some_and(|f| first_ms > f) {
                return false;
            }
            let min = points.iter().map(|p| p.0).min();
            first = match (first, min) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            true
        })?;
        let first_ms = first.unwrap_or(meta.last_ms);
        if first_ms == meta.first_ms {
            return Ok(());
        }
        meta.first_ms = first_ms;
        let mut batch = sled::Batch::default();
        batch.insert(keys::device(device), state.entry(device, None, &[(metric, &meta)]));
        self.apply(&opened, batch)?;
        state.series.entry(device.to_owned()).or_default().insert(metric.to_owned(), meta);
        Ok(())
    }

    /// Drops up to [`EXPIRE_BATCH`] rollups of one series before `cutoff`; true if there may be
    /// more.
    fn expire_rollups(
        &self,
        device: &str,
        metric: &str,
        cutoff: i64,
        report: &mut ExpireReport,
    ) -> Result<bool, StoreError> {
        // Held so that no write or fold of this series runs in between.
        let mut state = self.state();
        let opened = self.writable_to_log(&mut state)?;
        let Some(id) = state.meta(device, metric).map(|m| m.id) else {
            return Ok(false);
        };
        let mut batch = sled::Batch::default();
        let mut n = 0usize;
        for entry in opened.tree.range(keys::rollup(id, i64::MIN)..keys::rollup(id, cutoff)).take(EXPIRE_BATCH) {
            let (key, _) = entry?;
            batch.remove(key);
            n += 1;
        }
        self.apply(&opened, batch)?;
        report.rollups += n as u64;
        Ok(n == EXPIRE_BATCH)
    }
}

/// The hourly buckets of points sorted by time.
pub(super) fn hourly(points: &[(i64, f64)]) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::new();
    for &(t, v) in points {
        let start = chunk::window_start(t);
        match out.last_mut() {
            Some(b) if b.start_ms == start => b.add(t, v),
            _ => out.push(Bucket::new(start, t, v)),
        }
    }
    out
}
