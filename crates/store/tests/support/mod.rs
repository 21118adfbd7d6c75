//! Fixtures of the store's past on-disk formats: a store written by the code of one format,
//! dumped as its sled entries, so that every later version can check that it still opens
//! (and migrates) what that format wrote.
//!
//! A fixture is the list of the sled tree's entries, not sled's own files: sled's segments
//! are mostly empty space (hundreds of KB for a few entries), and the entries are what the
//! store's format is. Files outside sled (day block files) are kept as they are, beside the
//! dump, under `<name>.files/`. To add the fixture of the format the code writes now, run
//! `MEKONG_WRITE_FIXTURES=1 cargo test -p mekong-store --test formats` once and commit
//! `tests/fixtures/format-<N>.*`; every fixture is then checked by [`check_readings`] forever.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use mekong_store::{NewPoint, PackWrite, Store, StoreOptions, ValueKind};

/// The name of sled's tree the store keeps everything in.
const TREE: &str = "timeseries";
const MAGIC: &[u8] = b"MKDUMP1\n";

/// Where the fixtures are.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Options for a small store that flushes only when asked.
pub fn options() -> StoreOptions {
    StoreOptions { cache_capacity_bytes: 8 << 20, flush_every_ms: None, fold_log_every_ms: None }
}

/// The first reading's time: 2026-06-01T00:00:00Z.
pub const T0: i64 = 1_780_272_000_000;
const DAY: i64 = 86_400_000;

/// The series of every fixture: (device, kind, metric, unit, value kind).
pub const SERIES: [(&str, &str, &str, Option<&str>, ValueKind); 4] = [
    ("hau-01", "water", "water_level", Some("m"), ValueKind::Number),
    ("hau-01", "water", "salinity", Some("g/L"), ValueKind::Number),
    ("air-07", "air", "pm2_5", Some("ug/m3"), ValueKind::Number),
    ("pump-3", "pump", "running", None, ValueKind::Boolean),
];

/// Every reading of a fixture, by series index: three days at 30 s, a value that depends on
/// the series and the time only, and some times missing (gaps the codec must keep).
pub fn readings() -> Vec<(usize, i64, f64)> {
    let mut out = Vec::new();
    for s in 0..SERIES.len() {
        for i in 0..(3 * DAY / 30_000) {
            if (i * 7 + s as i64) % 97 == 0 {
                continue;
            }
            let t = T0 + i * 30_000;
            let v = match s {
                0 => 1.0 + ((i * 13) % 500) as f64 / 1000.0,
                1 => ((i * 31 + 7) % 4000) as f64 / 100.0,
                2 => (i % 211) as f64 * 0.1 + 3.25,
                _ => f64::from(u8::from((i / 60) % 2 == 0)),
            };
            out.push((s, t, v));
        }
    }
    out
}

/// Writes [`readings`] the way ingest does (groups of packs, some late, each late group into a
/// day already folded), folds the first two days and the closed hours of the third, and
/// leaves the last hours unfolded, the newest group in the log: every kind of entry a store
/// holds.
pub fn write_readings(store: &Store) {
    let all = readings();
    let (late, on_time): (Vec<&(usize, i64, f64)>, Vec<_>) = all.iter().partition(|r| (r.1 / 30_000) % 50 == 3);
    let write = |batch: &[&(usize, i64, f64)]| {
        let mut packs = Vec::new();
        let points: Vec<Vec<NewPoint<'_>>> = SERIES
            .iter()
            .enumerate()
            .map(|(s, (_, _, metric, unit, kind))| {
                batch
                    .iter()
                    .filter(|r| r.0 == s)
                    .map(|r| NewPoint { metric, unit: *unit, time_ms: r.1, value: r.2, value_kind: *kind })
                    .collect()
            })
            .collect();
        for (s, (device, kind, ..)) in SERIES.iter().enumerate() {
            let seen_ms = batch.iter().map(|r| r.1).max().unwrap_or(T0);
            packs.push(PackWrite { device, kind, seen_ms, points: &points[s], seq: None });
        }
        let written = store.write_packs(&packs).unwrap();
        assert!(written.packs.iter().all(Result::is_ok));
    };
    let mut on_time = on_time;
    on_time.sort_by_key(|r| r.1);
    // The last group is written after every fold, so that a store of format 8 or later is
    // dumped with a record still in its log, as a crash leaves it.
    let last = on_time.len().saturating_sub(64);
    let (on_time, newest) = on_time.split_at(last);
    for group in on_time.chunks(64) {
        write(group);
    }
    store.fold(T0 + 2 * DAY + 20 * 3_600_000, || true).unwrap();
    // Late readings arrive after their days were folded.
    let mut late = late;
    late.sort_by_key(|r| r.1);
    for group in late.chunks(64) {
        write(group);
    }
    store.fold(T0 + DAY, || true).unwrap();
    write(newest);
    store.flush().unwrap();
}

/// Checks that `store` holds exactly [`readings`], each once, with its value bit for bit.
pub fn check_readings(store: &Store) {
    let all = readings();
    for (s, (device, _, metric, unit, kind)) in SERIES.iter().enumerate() {
        let expected: Vec<(i64, u64)> = all.iter().filter(|r| r.0 == s).map(|r| (r.1, r.2.to_bits())).collect();
        let got = store.points(device, metric, i64::MIN, i64::MAX, usize::MAX).unwrap().unwrap();
        let got: Vec<(i64, u64)> = got.iter().map(|p| (p.time_ms, p.value.to_bits())).collect();
        assert_eq!(got.len(), expected.len(), "{device}/{metric}");
        assert!(got == expected, "{device}/{metric}: readings differ");
        let info = store.series(device, metric).unwrap();
        assert_eq!((info.count, info.unit.as_deref(), info.value_kind), (expected.len() as u64, *unit, *kind));
        // Daily aggregates (from rollups where folded) agree with the readings.
        let days = store.aggregate(device, metric, T0, T0 + 3 * DAY, DAY).unwrap().unwrap();
        let counts: Vec<u64> = days.iter().map(|b| b.count).collect();
        let want: Vec<u64> = (0..3)
            .map(|d| expected.iter().filter(|r| r.0 >= T0 + d * DAY && r.0 < T0 + (d + 1) * DAY).count() as u64)
            .collect();
        assert_eq!(counts, want, "{device}/{metric}: daily counts");
    }
}

/// Dumps the sled tree of the store in `dir` (closed) to `out`.
pub fn dump(dir: &Path, out: &Path) {
    let db = sled::Config::new().path(dir).open().unwrap();
    let tree = db.open_tree(TREE).unwrap();
    let mut bytes = MAGIC.to_vec();
    for entry in tree.iter() {
        let (k, v) = entry.unwrap();
        for part in [&k, &v] {
            bytes.extend_from_slice(&(part.len() as u32).to_be_bytes());
            bytes.extend_from_slice(part);
        }
    }
    std::fs::write(out, bytes).unwrap();
    let files = dir.join("blocks");
    if files.exists() {
        let target = out.with_extension("files");
        std::fs::create_dir_all(&target).unwrap();
        for f in std::fs::read_dir(&files).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), target.join(f.file_name())).unwrap();
        }
    }
}

/// Restores the dump `from` as a store in `dir`, as that format's code left it.
pub fn restore(from: &Path, dir: &Path) {
    let bytes = std::fs::read(from).unwrap();
    let mut rest = bytes.strip_prefix(MAGIC).expect("a dump");
    let db = sled::Config::new().path(dir).open().unwrap();
    let tree = db.open_tree(TREE).unwrap();
    let take = |rest: &mut &[u8]| -> Vec<u8> {
        let (len, tail) = rest.split_at(4);
        let len = u32::from_be_bytes(len.try_into().unwrap()) as usize;
        let (part, tail) = tail.split_at(len);
        *rest = tail;
        part.to_vec()
    };
    while !rest.is_empty() {
        let k = take(&mut rest);
        let v = take(&mut rest);
        tree.insert(k, v).unwrap();
    }
    db.flush().unwrap();
    let files = from.with_extension("files");
    if files.exists() {
        std::fs::create_dir_all(dir.join("blocks")).unwrap();
        for f in std::fs::read_dir(&files).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), dir.join("blocks").join(f.file_name())).unwrap();
        }
    }
}

/// Writes the fixture of the format this code writes, as `format-<format>.dump`.
pub fn write_fixture(format: u8) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), &options()).unwrap();
        write_readings(&store);
        check_readings(&store);
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    dump(dir.path(), &fixtures().join(format!("format-{format}.dump")));
}
