//! `mekong-bench soak`: a year (or `--days`) of a city's fleet in one run, on a simulated
//! clock, through the store's real write path and upkeep, sampling the data directory's size
//! and the process's resident memory every simulated day.
//!
//! The series are the reference dataset's (`query.rs`: water levels, PM2.5, vehicle counts in
//! turn), every `--step-secs` seconds. Every series sends a pack of `--points-per-pack`
//! readings as each ends, and the packs of one moment are written as ingest writes them:
//! write groups of at most 2,048 packs (the pipeline's `max_group`), each pack seen at the
//! simulated time it arrives. The upkeep runs as `crates/mekong/src/upkeep.rs` runs it, every
//! `--upkeep-secs` of simulated time: fold the windows that ended `--fold-after-secs` ago,
//! then apply retention (raw points kept `--raw-days`, rollups kept). sled flushes in the
//! background as the server's store does (every 500 ms of real time); the server also flushes
//! every write group before acknowledging it, which a simulated year cannot afford, so the
//! ingest rate here is the store's, without fsync.
//!
//! One JSON line per simulated day (its disk size, resident memory and the day's ingest rate),
//! then a summary line: peak and final disk size and their ratio, the size after
//! `mekong compact` and the peak's ratio to it, peak memory, and the rates. If the simulated
//! clock stops moving for `--stall-secs` of real time, a "soak stalled" line instead, and
//! exit status 2.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mekong_store::{compact, NewPoint, PackWrite, RetentionPolicy, RetentionRule, Store, StoreOptions};
use serde_json::{json, Value};

use crate::harness::{temp_dir, TempDir};
use crate::query::Series;

const DAY_MS: i64 = 86_400_000;

/// Packs per write group: the ingest pipeline's default `max_group`.
const MAX_GROUP: usize = 2048;

/// The simulated year starts here: 2026-01-01T00:00:00Z.
const START_MS: i64 = 1_767_225_600_000;

/// What to simulate (the options of `mekong-bench soak`).
#[derive(Debug, Clone, clap::Args)]
pub struct SoakOptions {
    /// Series in the fleet (the reference fleet has 1,000), kinds in turn.
    #[arg(long, default_value_t = 1000)]
    pub series: usize,
    /// Simulated days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Seconds between two readings of a series; must divide a day.
    #[arg(long, default_value_t = 10)]
    pub step_secs: u32,
    /// Readings per pack: a series sends its readings this many at a time.
    #[arg(long, default_value_t = 6)]
    pub points_per_pack: u32,
    /// Simulated seconds between two upkeep passes (`storage.maintenance_every_secs`).
    #[arg(long, default_value_t = 60)]
    pub upkeep_secs: u32,
    /// A window is folded once it ended this many simulated seconds ago
    /// (`storage.fold_after_secs`).
    #[arg(long, default_value_t = 300)]
    pub fold_after_secs: u32,
    /// Raw points are dropped after this many days (a retention rule for every series).
    #[arg(long, default_value_t = 90)]
    pub raw_days: u32,
    /// Keep the data in this (new) directory instead of a temporary one.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Real seconds without a simulated day's progress after which the soak reports the store
    /// stalled (a JSON line with where it stopped) and exits with status 2.
    #[arg(long, default_value_t = 300)]
    pub stall_secs: u64,
}

/// Watches the simulated clock from another thread: if it has not moved for `stall` of real
/// time, prints where it stopped and ends the process, so that a store that hangs is reported
/// instead of waited for. sled 0.34 has been seen to deadlock under this load (all its threads
/// waiting on its segment accountant), which no error reports.
fn watch_for_stalls(progress: Arc<AtomicI64>, stall: Duration) {
    std::thread::spawn(move || {
        let mut last = (progress.load(Ordering::Relaxed), Instant::now());
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = progress.load(Ordering::Relaxed);
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() >= stall {
                let line = json!({
                    "scenario": "soak stalled",
                    "day": ((now - START_MS) as f64 / DAY_MS as f64 * 1000.0).round() / 1000.0,
                    "seconds_without_progress": last.1.elapsed().as_secs(),
                    "rss_bytes": rss_bytes().unwrap_or(0),
                    "load_average": load_average(),
                });
                println!("{line}");
                std::process::exit(2);
            }
        }
    });
}

/// Runs the soak; the summary line.
pub fn soak(opts: SoakOptions) -> anyhow::Result<Value> {
    if opts.step_secs == 0 || 86_400 % opts.step_secs != 0 {
        bail!("--step-secs must divide a day");
    }
    if opts.series == 0 || opts.days == 0 {
        bail!("--series and --days must be at least 1");
    }
    let kinds = ["water", "air", "traffic"];
    let series: Vec<Series> =
        (0..opts.series).map(|i| Series::new(i, kinds[i % kinds.len()])).collect::<anyhow::Result<_>>()?;
    let (_temp, dir): (Option<TempDir>, PathBuf) = match &opts.data_dir {
        Some(dir) => {
            if dir.exists() {
                bail!("{} exists: the soak starts from an empty directory", dir.display());
            }
            (None, dir.clone())
        }
        None => {
            let temp = temp_dir()?;
            let dir = temp.path.join("data");
            (Some(temp), dir)
        }
    };
    let store_options = StoreOptions { flush_every_ms: Some(500), ..StoreOptions::default() };
    let store = Store::open(&dir, &store_options).with_context(|| format!("cannot open {}", dir.display()))?;
    let retention = RetentionPolicy {
        rules: vec![RetentionRule {
            kind: None,
            metric: None,
            raw_ms: Some(i64::from(opts.raw_days) * DAY_MS),
            rollups_ms: None,
        }],
    };
    let load_before = load_average();
    let step = i64::from(opts.step_secs) * 1000;
    let pack_span = step * i64::from(opts.points_per_pack.max(1));
    let upkeep_every = i64::from(opts.upkeep_secs.max(1)) * 1000;
    let fold_after = i64::from(opts.fold_after_secs) * 1000;
    let end_ms = START_MS + i64::from(opts.days) * DAY_MS;
    let started = Instant::now();
    let mut samples = Samples::default();
    let (mut points, mut day_points, mut day_started) = (0u64, 0u64, Instant::now());
    let mut next_upkeep = START_MS + upkeep_every;
    let mut next_sample = START_MS + DAY_MS;
    let mut buffers: Vec<Vec<NewPoint<'_>>> = vec![Vec::new(); series.len()];
    let mut t = START_MS;
    let progress = Arc::new(AtomicI64::new(t));
    watch_for_stalls(Arc::clone(&progress), Duration::from_secs(opts.stall_secs.max(1)));
    while t < end_ms {
        progress.store(t, Ordering::Relaxed);
        let now = (t + pack_span).min(end_ms);
        for (s, buffer) in series.iter().zip(&mut buffers) {
            buffer.clear();
            buffer.extend((t..now).step_by(step as usize).map(|at| NewPoint {
                metric: s.metric,
                unit: Some(s.unit),
                time_ms: at,
                value: s.value(at),
                value_kind: Default::default(),
            }));
            day_points += buffer.len() as u64;
        }
        let packs: Vec<PackWrite<'_>> = series
            .iter()
            .zip(&buffers)
            .map(|(s, b)| PackWrite { device: &s.device, kind: s.kind, seen_ms: now, points: b, seq: None })
            .collect();
        for group in packs.chunks(MAX_GROUP) {
            for result in store.write_packs(group)?.packs {
                result?;
            }
        }
        t = now;
        while next_upkeep <= t {
            // As the upkeep thread's pass: fold, then expire, at the pass's own time.
            store.fold(next_upkeep - fold_after, || true)?;
            store.expire(next_upkeep, &retention)?;
            next_upkeep += upkeep_every;
        }
        if t >= next_sample || t >= end_ms {
            points += day_points;
            let seconds = day_started.elapsed().as_secs_f64();
            let line = samples.take(&dir, (t - START_MS) as f64 / DAY_MS as f64, points, day_points, seconds)?;
            println!("{line}");
            (day_points, day_started) = (0, Instant::now());
            next_sample += DAY_MS;
        }
    }
    store.flush()?;
    let live_points = store.point_count();
    drop(store);
    let seconds = started.elapsed().as_secs_f64();
    let final_disk = dir_size(&dir)?;
    if final_disk > samples.peak_disk {
        (samples.peak_disk, samples.peak_disk_day) = (final_disk, f64::from(opts.days));
    }
    let compacted = compact(&dir, &store_options)?;
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { (a as f64 / b as f64 * 1000.0).round() / 1000.0 };
    let rates = &samples.rates;
    let mean = |r: &[f64]| if r.is_empty() { 0.0 } else { r.iter().sum::<f64>() / r.len() as f64 };
    let tenth = rates.len().div_ceil(10);
    Ok(json!({
        "scenario": "soak summary",
        "series": opts.series,
        "days": opts.days,
        "step_secs": opts.step_secs,
        "points_per_pack": opts.points_per_pack,
        "raw_days": opts.raw_days,
        "points_written": points,
        "points_live": live_points,
        "seconds": (seconds * 10.0).round() / 10.0,
        "points_per_s": (points as f64 / seconds).round(),
        "points_per_s_first_tenth": mean(&rates[..tenth]).round(),
        "points_per_s_last_tenth": mean(&rates[rates.len() - tenth..]).round(),
        "points_per_s_slowest_day": rates.iter().copied().fold(f64::INFINITY, f64::min).round(),
        "peak_disk_bytes": samples.peak_disk,
        "peak_disk_day": samples.peak_disk_day,
        "final_disk_bytes": final_disk,
        "peak_over_final": ratio(samples.peak_disk, final_disk),
        "compacted_disk_bytes": compacted.bytes_after,
        "peak_over_compacted": ratio(samples.peak_disk, compacted.bytes_after),
        "compacted_bytes_per_live_point": ratio(compacted.bytes_after, live_points),
        "peak_rss_bytes": samples.peak_rss,
        "final_rss_bytes": samples.last_rss,
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }))
}

/// What the daily samples have seen so far.
#[derive(Default)]
struct Samples {
    peak_disk: u64,
    peak_disk_day: f64,
    peak_rss: u64,
    last_rss: u64,
    rates: Vec<f64>,
}

impl Samples {
    /// Samples the directory and the memory at simulated day `day`; the JSON line.
    fn take(&mut self, dir: &Path, day: f64, points: u64, day_points: u64, seconds: f64) -> anyhow::Result<Value> {
        let disk = dir_size(dir)?;
        let rss = rss_bytes()?;
        let rate = if seconds > 0.0 { day_points as f64 / seconds } else { 0.0 };
        if disk > self.peak_disk {
            (self.peak_disk, self.peak_disk_day) = (disk, day);
        }
        self.peak_rss = self.peak_rss.max(rss);
        self.last_rss = rss;
        self.rates.push(rate);
        Ok(json!({
            "scenario": "soak day",
            "day": (day * 1000.0).round() / 1000.0,
            "points_written": points,
            "disk_bytes": disk,
            "rss_bytes": rss,
            "points_per_s": rate.round(),
        }))
    }
}

/// The bytes of every file under `dir`.
fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            total += dir_size(&entry.path())?;
        } else if kind.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// This process's resident memory (`VmRSS`), in bytes.
fn rss_bytes() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmRSS in /proc/self/status")?;
    Ok(kib * 1024)
}

/// The 1-minute load average, as `/proc/loadavg` has it (0 where it cannot be read).
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_short_soak_keeps_only_the_retained_days() {
        let temp = temp_dir().unwrap();
        let opts = SoakOptions {
            series: 3,
            days: 4,
            step_secs: 600,
            points_per_pack: 6,
            upkeep_secs: 3600,
            fold_after_secs: 300,
            raw_days: 2,
            data_dir: Some(temp.path.join("data")),
            stall_secs: 300,
        };
        let summary = soak(opts).unwrap();
        // 3 series, 144 points a day each, 4 days written; the last upkeep pass, at the end of
        // day 4, drops the days before day 3 (whole UTC days, 2 days back).
        assert_eq!(summary["points_written"], 3 * 144 * 4);
        assert_eq!(summary["points_live"], 3 * 144 * 2);
        assert!(summary["peak_disk_bytes"].as_u64().unwrap() >= summary["final_disk_bytes"].as_u64().unwrap());
        assert!(summary["peak_rss_bytes"].as_u64().unwrap() > 0);
    }
}
