//! The store's crash test: a child process (this test binary, run again) writes days of
//! readings through the real write path, folding closed days into day files and dropping old
//! ones by retention as the days pass, and is killed: at a named point of writing a day file
//! (the test-only crash points of feature `crash-points`, which abort the process), or by
//! SIGKILL at a random moment. The store is then opened again: every reading the child saw
//! acknowledged (written and flushed) must be there exactly once with its first value, and no
//! stray file may be left. The same holds for a format-5 store killed while it is migrated.
//!
//! `MEKONG_STORE_CRASH_RUNS` sets the number of random-SIGKILL runs (default 3).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use mekong_store::{NewPoint, PackWrite, RetentionPolicy, RetentionRule, Store, StoreOptions};

/// Set to the data directory in the child process.
const CHILD_DIR: &str = "MEKONG_STORE_CRASH_CHILD";
const CRASH_AT: &str = "MEKONG_STORE_CRASH_AT";

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// 2026-06-01T00:00:00Z.
const START: i64 = 1_780_272_000_000;
/// Days the workload writes.
const DAYS: i64 = 6;
/// Raw points of the water series are kept this long.
const KEEP: i64 = 3 * DAY;
const SERIES: [(&str, &str, &str); 3] = [("w1", "water", "level"), ("w1", "water", "flow"), ("a1", "air", "pm2_5")];

/// The value a reading of series `s` at `t` is first written with; a resend carries another.
fn value(s: usize, t: i64) -> f64 {
    ((t / 60_000) % 1000 + s as i64 * 7) as f64 / 10.0
}

fn options() -> StoreOptions {
    StoreOptions { cache_capacity_bytes: 8 << 20, flush_every_ms: None, fold_log_every_ms: None }
}

/// Writes the workload into the store in `dir`: an hour of readings at a time (a minute
/// apart), and every fifth hour a resend of an earlier hour (late points into a day that may
/// be in its file by then: duplicates, plus the readings of it that were left out the first
/// time); folds and expires as the simulated clock passes. `ack` is told every reading once
/// it is durable.
fn workload(dir: &Path, mut ack: impl FnMut(usize, i64)) {
    let store = Store::open(dir, &options()).unwrap();
    let policy = RetentionPolicy {
        rules: vec![RetentionRule { kind: Some("water".into()), raw_ms: Some(KEEP), ..RetentionRule::default() }],
    };
    // A minute left out of every hour the first time: the resend brings it, late.
    let skipped = |hour: i64, t: i64| (t - START) / 60_000 % 60 == (hour * 7) % 60;
    for hour in 0..DAYS * 24 {
        let now = START + (hour + 1) * HOUR;
        let times = (0..60).map(|m| START + hour * HOUR + m * 60_000);
        write_hour(&store, &times.filter(|&t| !skipped(hour, t)).map(|t| (t, false)).collect::<Vec<_>>(), &mut ack);
        if hour % 5 == 4 {
            let back = hour - 4 - (hour * 11) % 30;
            if back >= 0 {
                let times = (0..60).map(|m| START + back * HOUR + m * 60_000);
                write_hour(&store, &times.map(|t| (t, !skipped(back, t))).collect::<Vec<_>>(), &mut ack);
            }
        }
        store.fold(now - 5 * 60_000, || true).unwrap();
        if hour % 24 == 23 {
            store.expire(now, &policy).unwrap();
        }
    }
}

/// Writes readings at `times` of every series in one group, then flushes and acknowledges
/// them. A resend (`true` with its time) of a stored reading carries a value other than the
/// first, which must not stay.
fn write_hour(store: &Store, times: &[(i64, bool)], ack: &mut impl FnMut(usize, i64)) {
    let points: Vec<Vec<NewPoint<'_>>> = SERIES
        .iter()
        .enumerate()
        .map(|(s, (_, _, metric))| {
            times
                .iter()
                .map(|&(t, resend)| NewPoint {
                    metric,
                    unit: Some("u"),
                    time_ms: t,
                    value: if resend { value(s, t) + 1000.0 } else { value(s, t) },
                    value_kind: Default::default(),
                })
                .collect()
        })
        .collect();
    let packs: Vec<PackWrite<'_>> = SERIES
        .iter()
        .enumerate()
        .map(|(s, (device, kind, _))| PackWrite { device, kind, seen_ms: times[0].0, points: &points[s], seq: None })
        .collect();
    let written = store.write_packs(&packs).unwrap();
    store.flush().unwrap();
    for s in 0..SERIES.len() {
        for &(t, resend) in times {
            if !resend {
                ack(s, t);
            }
        }
    }
    let resent = times.iter().filter(|t| t.1).count() * SERIES.len();
    assert!(written.duplicates.len() >= resent, "a resend was stored again");
}

/// In the child process, runs the workload and prints each acknowledgement; otherwise runs
/// it in this process and checks the store after it, with nothing killed.
#[test]
fn child() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        workload(Path::new(&dir), |s, t| println!("ack {s} {t}"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut acked = Vec::new();
    workload(dir.path(), |s, t| acked.push((s, t)));
    let reading = check(dir.path(), &acked);
    assert!(reading > 3 * 24 * 60, "the last days are all there");
}

/// Runs the child on `dir` with `crash_at` armed (none: killed after `kill_after`), and
/// returns the readings it acknowledged.
fn run_child(dir: &Path, crash_at: Option<&str>, kill_after: Option<Duration>) -> (Vec<(usize, i64)>, bool) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["child", "--exact", "--nocapture", "--test-threads=1"]).env(CHILD_DIR, dir);
    if let Some(point) = crash_at {
        command.env(CRASH_AT, point);
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut parts = line.split(' ');
            if parts.next() != Some("ack") {
                continue;
            }
            let (Some(s), Some(t), None) = (parts.next(), parts.next(), parts.next()) else { continue };
            if let (Ok(s), Ok(t)) = (s.parse(), t.parse()) {
                acked.push((s, t));
            }
        }
        acked
    });
    if let Some(after) = kill_after {
        std::thread::sleep(after);
        // SIGKILL; if it has finished already, the run checks a clean end instead.
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    (reader.join().unwrap(), status.success())
}

/// Opens the store in `dir` and checks it against `acked`: every acknowledged reading once,
/// with its first value (water readings may be gone by retention once old enough), nothing
/// else but readings of the workload with their first values, and no stray day file. Then
/// folds and expires once more and checks again. Returns the readings found.
fn check(dir: &Path, acked: &[(usize, i64)]) -> usize {
    let latest = acked.iter().map(|a| a.1).max().unwrap_or(START);
    // The newest cutoff an expiry may have used: the child's clock runs at most an hour or
    // two ahead of the last reading it acknowledged.
    let expired_before = (latest + 2 * HOUR - KEEP).div_euclid(DAY) * DAY;
    let mut found = 0;
    for pass in 0..2 {
        found = 0;
        let store = Store::open(dir, &options()).unwrap();
        for (s, (device, kind, metric)) in SERIES.iter().enumerate() {
            let Some(points) = store.points(device, metric, i64::MIN, i64::MAX, usize::MAX).unwrap() else {
                assert!(acked.iter().all(|a| a.0 != s), "series {metric} lost");
                continue;
            };
            let mut times = BTreeMap::new();
            for p in &points {
                assert!(times.insert(p.time_ms, p.value).is_none(), "pass {pass}: {metric} at {} twice", p.time_ms);
                assert_eq!(p.value, value(s, p.time_ms), "pass {pass}: {metric} at {} has a resent value", p.time_ms);
            }
            for &(_, t) in acked.iter().filter(|a| a.0 == s) {
                let may_be_expired = *kind == "water" && t < expired_before;
                assert!(times.contains_key(&t) || may_be_expired, "pass {pass}: acknowledged {metric} at {t} lost");
            }
            assert_eq!(store.series(device, metric).unwrap().count, points.len() as u64, "pass {pass}: {metric} count");
            found += points.len();
        }
        // Every file is one the store uses: one per day, none temporary.
        let mut dates = Vec::new();
        for entry in std::fs::read_dir(dir.join("blocks")).into_iter().flatten() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(name.ends_with(".mkb"), "stray file {name}");
            dates.push(name.split('.').next().unwrap().to_owned());
        }
        let n = dates.len();
        dates.dedup();
        assert_eq!(dates.len(), n, "two files of one day: {dates:?}");
        store.fold(latest + 2 * DAY, || true).unwrap();
        drop(store);
    }
    found
}

#[test]
fn every_acknowledged_reading_survives_a_crash_at_each_point_of_writing_a_day_file() {
    for point in ["fold:partial", "fold:renamed", "fold:applied", "expire:partial", "expire:renamed", "expire:applied"]
    {
        let dir = tempfile::tempdir().unwrap();
        let (acked, clean) = run_child(dir.path(), Some(point), None);
        assert!(!clean, "{point}: the child never reached it");
        assert!(!acked.is_empty(), "{point}: nothing acknowledged");
        if point.ends_with(":partial") {
            let tmp = std::fs::read_dir(dir.path().join("blocks")).unwrap().flatten();
            assert!(
                tmp.into_iter().any(|e| e.file_name().to_string_lossy().ends_with(".tmp")),
                "{point}: no temp file"
            );
        }
        let found = check(dir.path(), &acked);
        println!("{{\"crash_at\":\"{point}\",\"acknowledged\":{},\"found\":{found}}}", acked.len());
    }
}

#[test]
fn every_acknowledged_reading_survives_sigkill_at_random_moments() {
    let runs: usize = std::env::var("MEKONG_STORE_CRASH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let mut seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64 | 1;
    for run in 0..runs {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let dir = tempfile::tempdir().unwrap();
        // The whole workload takes some 0.5 to 2 s: most kills land inside it.
        let after = Duration::from_millis(150 + seed % 500);
        let (acked, clean) = run_child(dir.path(), None, Some(after));
        let found = check(dir.path(), &acked);
        println!(
            "{{\"crash_run\":{},\"killed_after_ms\":{},\"finished_first\":{clean},\"acknowledged\":{},\"found\":{found}}}",
            run + 1,
            after.as_millis(),
            acked.len()
        );
    }
}

/// The child of [`a_format_5_store_killed_while_migrated_opens_whole`]: opens the store.
#[test]
fn migrating_child() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        let _ = Store::open(Path::new(&dir), &support::options());
        return;
    }
    // In this process: a format-5 store opens and migrates whole.
    let dir = tempfile::tempdir().unwrap();
    support::restore(&support::fixtures().join("format-5.dump"), dir.path());
    support::check_readings(&Store::open(dir.path(), &support::options()).unwrap());
}

#[test]
fn a_format_5_store_killed_while_migrated_opens_whole() {
    for point in ["migrate:partial", "migrate:renamed", "migrate:applied", "migrate:entries", "migrate:cleaned"] {
        let dir = tempfile::tempdir().unwrap();
        support::restore(&support::fixtures().join("format-5.dump"), dir.path());
        let status = Command::new(std::env::current_exe().unwrap())
            .args(["migrating_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .env(CRASH_AT, point)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "{point}: the migration never reached it");
        let store = Store::open(dir.path(), &support::options()).unwrap();
        support::check_readings(&store);
    }
}
