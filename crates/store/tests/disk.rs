//! Disk use follows the data while the store runs: simulated days of a fleet written in time
//! order through the real write path (a group of packs a simulated minute, flushed as ingest
//! does), folded every simulated hour and expired by a retention rule, with the data
//! directory's size sampled after every pass. At the end of each simulated day a copy of the
//! directory is compacted (`compact`, the offline step the store must not need) and the
//! day's peak is compared with it. Prints a final JSON line; fails if a day's peak exceeds
//! 1.5 times the compacted size, plus [`SLED_FLOOR`].
//!
//! The default run is small (CI); a larger one, for the figure in the README:
//! `MEKONG_DISK_SERIES=100 MEKONG_DISK_DAYS=30 MEKONG_DISK_KEEP_DAYS=7 cargo test --release -p mekong-store --test disk -- --nocapture`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use mekong_store::{NewPoint, PackWrite, RetentionPolicy, RetentionRule, Store, StoreOptions};

/// What sled's log takes whatever little it holds (a few of its 512 KiB segments, written
/// ahead of the data): in a small store it is most of the directory, in a city's it does
/// not matter. The figure in the README is the plain ratio of a larger run.
const SLED_FLOOR: u64 = 4 << 20;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
/// 2026-06-01T00:00:00Z.
const START: i64 = 1_780_272_000_000;

fn env(name: &str, default: i64) -> i64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Bytes of the files under `dir`; a file removed while it is listed (sled's snapshots, a
/// replaced day file) counts as gone.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut total = 0;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        total += if meta.is_dir() { dir_bytes(&entry.path()) } else { meta.len() };
    }
    total
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.metadata().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn the_data_directory_stays_within_one_and_a_half_times_its_compacted_size() {
    let series = env("MEKONG_DISK_SERIES", 12) as usize;
    let days = env("MEKONG_DISK_DAYS", 6);
    let keep_days = env("MEKONG_DISK_KEEP_DAYS", 2);
    let step = env("MEKONG_DISK_STEP_SECS", 10) * 1000;
    let options = StoreOptions { cache_capacity_bytes: 16 << 20, flush_every_ms: Some(500), ..Default::default() };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let policy =
        RetentionPolicy { rules: vec![RetentionRule { raw_ms: Some(keep_days * DAY), ..RetentionRule::default() }] };
    let devices: Vec<String> = (0..series.div_ceil(2)).map(|d| format!("node-{d:04}")).collect();
    let metrics = ["water_level", "temperature"];
    let started = std::time::Instant::now();
    let (mut worst, mut worst_day, mut peak, mut final_compacted, mut points) = (0.0f64, 0, 0u64, 0u64, 0u64);
    let mut over_floor = 0.0f64;
    let mut store = Store::open(&data, &options).unwrap();
    for day in 0..days {
        let mut day_peak = 0u64;
        for minute in 0..24 * 60 {
            let t0 = START + day * DAY + minute * MINUTE;
            let readings: Vec<Vec<NewPoint<'_>>> = (0..series)
                .map(|s| {
                    (0..MINUTE / step)
                        .map(|i| {
                            let t = t0 + i * step;
                            // A slow wave with a millimetre of noise, as a level gauge reads.
                            let n = (t / step) as f64;
                            let v = ((n / 500.0 + s as f64).sin() * 800.0 + (n * 7.0 + s as f64 * 13.0) % 3.0).round();
                            NewPoint {
                                metric: metrics[s % 2],
                                unit: Some("mm"),
                                time_ms: t,
                                value: v / 1000.0,
                                value_kind: Default::default(),
                            }
                        })
                        .collect()
                })
                .collect();
            let packs: Vec<PackWrite<'_>> = (0..series)
                .map(|s| PackWrite {
                    device: &devices[s / 2],
                    kind: "water",
                    seen_ms: t0,
                    points: &readings[s],
                    seq: None,
                })
                .collect();
            let written = store.write_packs(&packs).unwrap();
            points += written.packs.iter().map(|p| p.as_ref().map_or(0, |w| w.stored as u64)).sum::<u64>();
            store.flush().unwrap();
            if minute % 60 == 59 {
                // The upkeep thread's pass: fold what closed 5 minutes ago, then expire.
                let now = t0 + MINUTE;
                store.fold(now - 5 * MINUTE, || true).unwrap();
                store.expire(now, &policy).unwrap();
                day_peak = day_peak.max(dir_bytes(&data));
            }
        }
        // What an offline compaction would make of the directory now, on a copy.
        drop(store);
        let copy = tmp.path().join("copy");
        copy_dir(&data, &copy);
        let compacted = mekong_store::compact(&copy, &options).unwrap().bytes_after;
        std::fs::remove_dir_all(&copy).unwrap();
        store = Store::open(&data, &options).unwrap();
        let ratio = day_peak as f64 / compacted as f64;
        let files = dir_bytes(&data.join("blocks"));
        println!(
            "{{\"day\":{},\"peak_bytes\":{day_peak},\"compacted_bytes\":{compacted},\"ratio\":{ratio:.3},\"day_files_bytes\":{files},\"sled_bytes\":{},\"points_stored\":{points}}}",
            day + 1,
            dir_bytes(&data) - files
        );
        if day > 0 && ratio > worst {
            (worst, worst_day) = (ratio, day + 1);
        }
        over_floor = over_floor.max(day_peak.saturating_sub(SLED_FLOOR) as f64 / compacted as f64);
        peak = peak.max(day_peak);
        final_compacted = compacted;
    }
    let final_bytes = dir_bytes(&data);
    let live = store.point_count();
    println!(
        "{{\"series\":{series},\"days\":{days},\"keep_days\":{keep_days},\"step_s\":{},\"points_written\":{points},\"points_live\":{live},\"peak_bytes\":{peak},\"final_bytes\":{final_bytes},\"final_compacted_bytes\":{final_compacted},\"peak_over_final\":{:.3},\"peak_over_compacted\":{:.3},\"worst_day_peak_over_compacted\":{worst:.3},\"worst_day\":{worst_day},\"worst_past_sled_floor\":{over_floor:.3},\"bytes_per_live_point\":{:.2},\"secs\":{}}}",
        step / 1000,
        peak as f64 / final_bytes as f64,
        peak as f64 / final_compacted as f64,
        final_bytes as f64 / live.max(1) as f64,
        started.elapsed().as_secs()
    );
    assert!(over_floor <= 1.5, "the directory reached {over_floor:.2} times its compacted size, past sled's floor");
}
