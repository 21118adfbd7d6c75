//! Upkeep the store does when asked, in the background: folding the chunks of a closed
//! window into one block with its rollup, and dropping what the retention policy no longer
//! keeps.
//!
//! Ingest writes one small chunk per series and write group, so a series sampled every 10 s
//! gains hundreds of chunks an hour; each costs a key and sled's bookkeeping. Folding rewrites
//! a window's chunks as one block (the same codec, one header, one key) and writes the
//! window's rollup from it, in one atomic batch with the series' folded mark. Both passes take
//! the write lock one window (or one batch of deletions) at a time, so ingest waits for at most
//! that much work.

use super::*;

/// How long the series of some kind or metric are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionRule {
    /// Device kind the rule applies to; `None` for any.
    pub kind: Option<String>,
    /// Metric the rule applies to; `None` for any.
    pub metric: Option<String>,
    /// Raw points older than this many ms are dropped (a whole window at a time, once it is
    /// folded); `None` keeps them.
    pub raw_ms: Option<i64>,
    /// Rollups older than this many ms are dropped; `None` keeps them.
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
    /// Windows folded (each now one block with a rollup).
    pub windows: u64,
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
    /// Rollups dropped.
    pub rollups: u64,
}

/// Deletions per batch while expiring, so that one pass never holds the lock for long.
const EXPIRE_BATCH: usize = 1_000;

impl Store {
    /// Folds every window, of every series, that ends at or before `before_ms` and is not
    /// folded yet. Pass a time a little before now, so that points still arriving for the
    /// current window do not reopen it at once (they would be folded again next time).
    /// `keep_going` is asked before each series; false ends the pass early (at shutdown), and
    /// the next pass goes on from there.
    pub fn fold(&self, before_ms: i64, mut keep_going: impl FnMut() -> bool) -> Result<FoldReport, StoreError> {
        let mut report = FoldReport::default();
        for (device, metric) in self.series_names() {
            if !keep_going() {
                break;
            }
            while self.fold_next(&device, &metric, before_ms, &mut report)? {}
        }
        Ok(report)
    }

    fn series_names(&self) -> Vec<(String, String)> {
        let state = self.state();
        state.series.iter().flat_map(|(d, s)| s.keys().map(move |m| (d.clone(), m.clone()))).collect()
    }

    /// Folds the first window of one series at or after its folded mark that ends by
    /// `before_ms`, or moves the mark up to `before_ms`'s window when there is none; false once
    /// nothing is left to do.
    fn fold_next(
        &self,
        device: &str,
        metric: &str,
        before_ms: i64,
        report: &mut FoldReport,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        let Some(mut meta) = state.series.get(device).and_then(|s| s.get(metric)).cloned() else {
            return Ok(false);
        };
        let id = meta.id;
        let end = chunk::window_start(before_ms);
        if meta.folded_to_ms >= end {
            return Ok(false);
        }
        let next = self.inner.tree.range(keys::chunk_from(id, meta.folded_to_ms)..keys::chunk_from(id, end)).next();
        let window = match next {
            None => None,
            Some(entry) => {
                let (key, _) = entry?;
                let (_, first_ms) = keys::parse_chunk(&key).ok_or_else(|| StoreError::Corrupt(key.to_vec()))?;
                Some(chunk::window_start(first_ms))
            }
        };
        let mut batch = sled::Batch::default();
        match window {
            None => meta.folded_to_ms = end,
            Some(window) => {
                self.fold_window(id, window, &mut batch, report)?;
                meta.folded_to_ms = window.saturating_add(chunk::WINDOW_MS);
            }
        }
        batch.insert(keys::series(device, metric), meta.encode());
        self.inner.tree.apply_batch(batch)?;
        let folded_to_ms = meta.folded_to_ms;
        if let Some(m) = state.series.get_mut(device).and_then(|s| s.get_mut(metric)) {
            m.folded_to_ms = folded_to_ms;
        }
        Ok(window.is_some())
    }

    /// Adds to `batch` what makes `window` of series `id` one block with its rollup.
    fn fold_window(
        &self,
        id: u32,
        window: i64,
        batch: &mut sled::Batch,
        report: &mut FoldReport,
    ) -> Result<(), StoreError> {
        let end = window.saturating_add(chunk::WINDOW_MS);
        let mut chunks = Vec::new();
        let mut points: Vec<(i64, u64, f64)> = Vec::new();
        let mut decoded = Vec::new();
        for entry in self.inner.tree.range(keys::chunk_from(id, window)..keys::chunk_from(id, end)) {
            let (key, value) = entry?;
            let chunk_id = key.get(13..21).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
            let chunk_id = chunk_id.ok_or_else(|| StoreError::Corrupt(key.to_vec()))?;
            decoded.clear();
            chunk::decode_into(&value, &mut decoded).ok_or_else(|| StoreError::Corrupt(key.to_vec()))?;
            points.extend(decoded.iter().map(|&(t, v)| (t, chunk_id, v)));
            chunks.push(key);
        }
        // Writes never store a time twice, but if a time were there twice the first written
        // (the lower chunk id) would be the one every read has returned so far.
        points.sort_unstable_by_key(|p| (p.0, p.1));
        points.dedup_by_key(|p| p.0);
        let Some(&(t0, _, v0)) = points.first() else {
            return Ok(());
        };
        let mut rollup = Bucket::new(window, t0, v0);
        for &(t, _, v) in &points[1..] {
            rollup.add(t, v);
        }
        if chunks.len() > 1 {
            let block: Vec<(i64, f64)> = points.iter().map(|&(t, _, v)| (t, v)).collect();
            for key in &chunks {
                batch.remove(key.as_ref());
            }
            batch.insert(&keys::chunk(id, t0, self.chunk_id()), chunk::encode(&block));
        }
        batch.insert(&keys::rollup(id, window), rollup::encode(&rollup));
        report.windows += 1;
        report.chunks_in += chunks.len() as u64;
        report.points += points.len() as u64;
        Ok(())
    }

    /// Drops, for every series a rule of `policy` applies to, the folded windows of raw points
    /// that ended more than the rule's `raw_ms` before `now_ms`, and the rollups older than its
    /// `rollups_ms`. A window not folded yet is kept until it is, so its rollup exists first.
    pub fn expire(&self, now_ms: i64, policy: &RetentionPolicy) -> Result<ExpireReport, StoreError> {
        let mut report = ExpireReport::default();
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
                let cutoff = chunk::window_start(now_ms.saturating_sub(raw_ms));
                while self.expire_points(&device, &metric, cutoff, &mut report)? {}
            }
            if let Some(rollups_ms) = rule.rollups_ms {
                let cutoff = chunk::window_start(now_ms.saturating_sub(rollups_ms));
                while self.expire_rollups(&device, &metric, cutoff, &mut report)? {}
            }
        }
        Ok(report)
    }

    /// Drops up to [`EXPIRE_BATCH`] blocks of one series before `cutoff` (and before its folded
    /// mark); true if there may be more.
    fn expire_points(
        &self,
        device: &str,
        metric: &str,
        cutoff: i64,
        report: &mut ExpireReport,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        let Some(mut meta) = state.series.get(device).and_then(|s| s.get(metric)).cloned() else {
            return Ok(false);
        };
        let id = meta.id;
        let limit = cutoff.min(meta.folded_to_ms);
        let mut batch = sled::Batch::default();
        let (mut blocks, mut points) = (0usize, 0u64);
        for entry in self.inner.tree.range(keys::chunk_from(id, i64::MIN)..keys::chunk_from(id, limit)) {
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
        let after = self.inner.tree.range(keys::chunk_from(id, limit)..keys::chunk_from(id, i64::MAX)).next();
        let first_after = match after {
            None => None,
            Some(entry) => {
                let (key, _) = entry?;
                keys::parse_chunk(&key).map(|(_, first_ms)| first_ms)
            }
        };
        // The first point left is in the first chunk left, except when older blocks remain
        // (this pass stopped at its batch size): then the next pass sets it.
        if blocks < EXPIRE_BATCH {
            meta.first_ms = first_after.unwrap_or(meta.last_ms);
        }
        batch.insert(keys::series(device, metric), meta.encode());
        let device_meta = state.devices.get(device).cloned().map(|mut d| {
            d.points = d.points.saturating_sub(points);
            d
        });
        if let Some(d) = &device_meta {
            batch.insert(keys::device(device), d.encode());
        }
        self.inner.tree.apply_batch(batch)?;
        if let Some(d) = device_meta {
            state.devices.insert(device.to_owned(), d);
        }
        state.series.entry(device.to_owned()).or_default().insert(metric.to_owned(), meta);
        report.blocks += blocks as u64;
        report.points += points;
        Ok(blocks == EXPIRE_BATCH)
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
        let state = self.state();
        let Some(id) = state.series.get(device).and_then(|s| s.get(metric)).map(|m| m.id) else {
            return Ok(false);
        };
        let mut batch = sled::Batch::default();
        let mut n = 0usize;
        for entry in self.inner.tree.range(keys::rollup(id, i64::MIN)..keys::rollup(id, cutoff)).take(EXPIRE_BATCH) {
            let (key, _) = entry?;
            batch.remove(key);
            n += 1;
        }
        self.inner.tree.apply_batch(batch)?;
        report.rollups += n as u64;
        Ok(n == EXPIRE_BATCH)
    }
}
