//! Backups on real stores in temporary directories: chains of incremental backups restored
//! and read back against a model, damage found by name, retention, and backups taken while
//! writers and folds run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::*;
use crate::{chunk, NewPoint, StoreOptions};

const DAY: i64 = chunk::DAY_MS;
const HOUR: i64 = 3_600_000;
/// A UTC midnight.
const D0: i64 = 1_789_948_800_000;

type Model = BTreeMap<(String, String), BTreeMap<i64, f64>>;

fn open(dir: &Path) -> Store {
    Store::open(dir, &StoreOptions { cache_capacity_bytes: 8 << 20, flush_every_ms: None, fold_log_every_ms: None })
        .unwrap()
}

/// Writes a reading every `step` ms of `[from, to)` for each of three devices and two
/// metrics, into the store and the model.
fn write(store: &Store, model: &mut Model, from: i64, to: i64, step: i64) {
    for device in ["hau-01", "hau-02", "kien-07"] {
        for metric in ["water_level", "temperature"] {
            let points: Vec<NewPoint<'_>> = (0..)
                .map(|i| from + i * step)
                .take_while(|&t| t < to)
                .map(|t| NewPoint {
                    metric,
                    unit: Some("cm"),
                    time_ms: t,
                    value: (t / 1000 % 977) as f64 / 4.0 + device.len() as f64,
                    value_kind: Default::default(),
                })
                .collect();
            for group in points.chunks(500) {
                store.write(device, "water", to, group).unwrap();
                let series = model.entry((device.into(), metric.into())).or_default();
                for p in group {
                    series.entry(p.time_ms).or_insert(p.value);
                }
            }
        }
    }
    store.flush().unwrap();
}

/// Every reading of the store, as the model holds them.
fn read_all(store: &Store, model: &Model) -> Model {
    model
        .keys()
        .map(|(device, metric)| {
            let points = store.points(device, metric, i64::MIN, i64::MAX, usize::MAX).unwrap().unwrap_or_default();
            ((device.clone(), metric.clone()), points.iter().map(|p| (p.time_ms, p.value)).collect())
        })
        .collect()
}

fn restored(repo: &Repository, id: Option<&str>) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    repo.restore(id, &data).unwrap();
    let store = open(&data);
    (dir, store)
}

fn files_in(repo: &Repository) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo.dir().join("files"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_chain_of_incremental_backups_restores_every_reading_and_copies_only_new_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("data"));
    let repo = Repository::new(dir.path().join("repo"));
    let mut model = Model::new();
    let mut models = Vec::new();

    // Two closed days in files, and an open hour in sled.
    write(&store, &mut model, D0, D0 + 2 * DAY, 60_000);
    store.fold(D0 + 2 * DAY, || true).unwrap();
    write(&store, &mut model, D0 + 2 * DAY, D0 + 2 * DAY + HOUR / 2, 10_000);
    let full = repo.backup(&store, &BackupOptions::default()).unwrap();
    assert_eq!((full.copied_files, full.reused_files), (2, 0));
    models.push((full.backup.id.clone(), model.clone()));

    // A third day, and late points into the first: two new files, one old one reused.
    write(&store, &mut model, D0 + 2 * DAY + HOUR / 2, D0 + 3 * DAY, 60_000);
    write(&store, &mut model, D0 + 30_000, D0 + 90_000, 60_000);
    store.fold(D0 + 3 * DAY, || true).unwrap();
    let first = repo.backup(&store, &BackupOptions::default()).unwrap();
    assert_eq!((first.copied_files, first.reused_files), (2, 1));
    models.push((first.backup.id.clone(), model.clone()));

    // Only the open hour changed: no day file copied.
    write(&store, &mut model, D0 + 3 * DAY, D0 + 3 * DAY + HOUR / 3, 5_000);
    let second = repo.backup(&store, &BackupOptions::default()).unwrap();
    assert_eq!((second.copied_files, second.reused_files), (0, 3));
    assert!(second.copied_bytes < second.backup.bytes, "{} of {}", second.copied_bytes, second.backup.bytes);
    models.push((second.backup.id.clone(), model.clone()));

    // The open day's hours folded into its file, and a new day.
    write(&store, &mut model, D0 + 3 * DAY + HOUR / 3, D0 + 4 * DAY + HOUR, 30_000);
    store.fold(D0 + 4 * DAY, || true).unwrap();
    let third = repo.backup(&store, &BackupOptions::default()).unwrap();
    assert_eq!((third.copied_files, third.reused_files), (1, 3));
    models.push((third.backup.id.clone(), model.clone()));

    let ids: Vec<String> = repo.list().unwrap().into_iter().map(|b| b.id).collect();
    assert_eq!(ids, models.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>());
    assert_eq!(files_in(&repo).len(), 2 + 2 + 1);
    for (id, expected) in &models {
        let report = repo.verify(Some(id)).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let readings: u64 = expected.values().map(|s| s.len() as u64).sum();
        assert_eq!(report.readings, readings);
        let (_dir, back) = restored(&repo, Some(id));
        assert_eq!(&read_all(&back, expected), expected, "backup {id}");
        assert_eq!(
            back.series("hau-01", "water_level").unwrap().count as usize,
            expected[&("hau-01".into(), "water_level".into())].len()
        );
    }
    // The newest by default; the restored store goes on taking writes and folding.
    let (_dir, back) = restored(&repo, None);
    write(&back, &mut model, D0 + 4 * DAY + HOUR, D0 + 4 * DAY + 2 * HOUR, 60_000);
    back.fold(D0 + 5 * DAY, || true).unwrap();
    assert_eq!(read_all(&back, &model), model);
}

#[test]
fn verify_names_a_corrupted_and_a_missing_file_and_restore_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("data"));
    let repo = Repository::new(dir.path().join("repo"));
    let mut model = Model::new();
    write(&store, &mut model, D0, D0 + 3 * DAY, 120_000);
    store.fold(D0 + 3 * DAY, || true).unwrap();
    let taken = repo.backup(&store, &BackupOptions::default()).unwrap();
    assert!(repo.verify(None).unwrap().problems.is_empty());

    let files = files_in(&repo);
    let flipped = repo.dir().join("files").join(&files[0]);
    let mut bytes = std::fs::read(&flipped).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&flipped, &bytes).unwrap();
    let missing = repo.dir().join("files").join(&files[2]);
    std::fs::remove_file(&missing).unwrap();

    let report = repo.verify(Some(&taken.backup.id)).unwrap();
    assert!(report.problems[0].contains(&files[0]), "{}", report.problems[0]);
    assert!(report.problems[1].contains(&files[2]), "{}", report.problems[1]);
    // Then the series whose readings those files held: 6 series, a third of each missing.
    assert_eq!(report.problems.len(), 2 + 6, "{:?}", report.problems);
    assert!(report.problems[2..]
        .iter()
        .all(|p| p.contains("720 readings in the backup's files, the manifest says 2160")));

    let target = dir.path().join("restored");
    match repo.restore(None, &target) {
        Err(BackupError::Verify { problems, .. }) => assert_eq!(problems.len(), 8),
        other => panic!("restored a damaged backup: {other:?}"),
    }
    assert!(!target.exists() || std::fs::read_dir(&target).unwrap().next().is_none());

    // The sled part too, and the counts: a manifest that claims one reading more is caught.
    let sled = repo.dir().join("backups").join(&taken.backup.id).join(manifest::SLED);
    let mut bytes = std::fs::read(&sled).unwrap();
    bytes[20] ^= 0x80;
    std::fs::write(&sled, &bytes).unwrap();
    let problems = repo.verify(None).unwrap().problems;
    assert!(problems.iter().any(|p| p.contains("sled.entries")), "{problems:?}");
}

#[test]
fn a_count_that_does_not_match_the_manifest_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("data"));
    let repo = Repository::new(dir.path().join("repo"));
    write(&store, &mut Model::new(), D0, D0 + DAY, 600_000);
    let taken = repo.backup(&store, &BackupOptions::default()).unwrap();
    let path = repo.dir().join("backups").join(&taken.backup.id).join(manifest::FILE);
    let mut m = Manifest::read(&path).unwrap();
    m.series[1].count += 1;
    std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
    let problems = repo.verify(None).unwrap().problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains(&m.series[1].metric), "{problems:?}");
}

#[test]
fn retention_keeps_the_newest_and_deletes_the_files_only_older_ones_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("data"));
    let repo = Repository::new(dir.path().join("repo"));
    let mut model = Model::new();
    let mut ids = Vec::new();
    for day in 0..4 {
        write(&store, &mut model, D0 + day * DAY, D0 + (day + 1) * DAY, 300_000);
        // A late point into day 0 makes a new generation of its file each time.
        write(&store, &mut model, D0 + 1000 * (day + 1), D0 + 1000 * (day + 1) + 1, 1);
        store.fold(D0 + (day + 1) * DAY, || true).unwrap();
        ids.push(repo.backup(&store, &BackupOptions::default()).unwrap().backup.id);
    }
    // Day 0 in four generations, days 1, 2, 3 once each.
    assert_eq!(files_in(&repo).len(), 7);
    let report = repo.prune(2).unwrap();
    assert_eq!(report.backups, ids[..2]);
    assert_eq!(report.files, 2, "the first two generations of day 0");
    assert_eq!(repo.list().unwrap().iter().map(|b| b.id.clone()).collect::<Vec<_>>(), ids[2..]);
    assert_eq!(files_in(&repo).len(), 5);
    for id in &ids[2..] {
        assert!(repo.verify(Some(id)).unwrap().problems.is_empty());
    }
    assert!(matches!(repo.verify(Some(&ids[0])), Err(BackupError::NoSuchBackup(_))));
    // A backup with keep = 1 prunes after itself; an unfinished backup goes too.
    std::fs::create_dir_all(repo.dir().join("backups").join("20000101T000000Z.partial")).unwrap();
    let last = repo.backup(&store, &BackupOptions { full: false, keep: Some(1) }).unwrap();
    let pruned = last.pruned.unwrap();
    assert_eq!(pruned.backups.len(), 3, "{pruned:?}");
    assert_eq!(files_in(&repo).len(), 4);
    let (_dir, back) = restored(&repo, None);
    assert_eq!(read_all(&back, &model), model);
}

#[test]
fn a_restore_writes_only_into_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("data"));
    let repo = Repository::new(dir.path().join("repo"));
    write(&store, &mut Model::new(), D0, D0 + HOUR, 60_000);
    repo.backup(&store, &BackupOptions::default()).unwrap();
    let target = dir.path().join("full");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("keep-me"), b"x").unwrap();
    assert!(matches!(repo.restore(None, &target), Err(BackupError::NotEmpty(_))));
    assert_eq!(std::fs::read(target.join("keep-me")).unwrap(), b"x");
    assert!(matches!(repo.restore(Some("../x"), &dir.path().join("new")), Err(BackupError::NoSuchBackup(_))));
    let nowhere = Repository::new(dir.path().join("nowhere"));
    assert!(matches!(nowhere.verify(None), Err(BackupError::NoRepository(_))));
    assert!(!dir.path().join("nowhere").exists());
    // The data directory itself is refused: it is not empty.
    assert!(matches!(repo.restore(None, &dir.path().join("data")), Err(BackupError::NotEmpty(_))));
}

/// Writers and folds run while backups are taken: every write acknowledged (written and
/// flushed) before a backup began is in it, once, and the backup checks whole. With the tree
/// read outside the write lock, it failed in 3 of 5 runs here (a group's chunk and its
/// series' count seen apart).
#[test]
fn backups_taken_while_writers_and_folds_run_hold_every_acknowledged_reading_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("data"));
    let repo = Repository::new(dir.path().join("repo"));
    let stop = Arc::new(AtomicBool::new(false));
    // Each writer's acknowledged count: its readings are 0..count at times D0 + i * 60 s.
    let acked: Vec<Arc<std::sync::atomic::AtomicI64>> =
        (0..3).map(|_| Arc::new(std::sync::atomic::AtomicI64::new(0))).collect();
    let mut threads = Vec::new();
    for (w, count) in acked.iter().enumerate() {
        let (store, stop, count) = (store.clone(), Arc::clone(&stop), Arc::clone(count));
        threads.push(std::thread::spawn(move || {
            let device = format!("dev-{w}");
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let points: Vec<NewPoint<'_>> = (i..i + 50)
                    .map(|k| NewPoint {
                        metric: "level",
                        unit: None,
                        time_ms: D0 + k * 60_000,
                        value: k as f64,
                        value_kind: Default::default(),
                    })
                    .collect();
                store.write(&device, "water", D0, &points).unwrap();
                store.flush().unwrap();
                i += 50;
                count.store(i, Ordering::SeqCst);
            }
        }));
    }
    {
        let (store, stop) = (store.clone(), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                store.fold(D0 + 40 * DAY, || true).unwrap();
            }
        }));
    }
    // A device written and removed over and over: chunks that go while a backup reads them.
    {
        let (store, stop) = (store.clone(), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || {
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                let points: Vec<NewPoint<'_>> = (0..20)
                    .map(|i| NewPoint {
                        metric: "level",
                        unit: None,
                        time_ms: D0 + (k * 20 + i) * 1000,
                        value: 1.0,
                        value_kind: Default::default(),
                    })
                    .collect();
                store.write("passing", "water", D0, &points).unwrap();
                if k % 3 == 2 {
                    store.remove_device("passing").unwrap();
                }
                k += 1;
            }
        }));
    }
    let mut taken = Vec::new();
    while taken.len() < 8 {
        let before: Vec<i64> = acked.iter().map(|c| c.load(Ordering::SeqCst)).collect();
        if before.iter().any(|&n| n < 500 * (taken.len() as i64 + 1)) {
            std::thread::yield_now();
            continue;
        }
        let report = repo.backup(&store, &BackupOptions::default()).unwrap();
        taken.push((report.backup.id, before));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    for (id, before) in taken {
        let report = repo.verify(Some(&id)).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let (_dir, back) = restored(&repo, Some(&id));
        for (w, &n) in before.iter().enumerate() {
            let points = back.points(&format!("dev-{w}"), "level", i64::MIN, i64::MAX, usize::MAX).unwrap().unwrap();
            // Whole write groups, each reading once, in order, none missing below the count.
            assert!(points.len() as i64 >= n && points.len() % 50 == 0, "{} < {n}", points.len());
            for (k, p) in points.iter().enumerate() {
                assert_eq!((p.time_ms, p.value), (D0 + k as i64 * 60_000, k as f64));
            }
            assert_eq!(back.series(&format!("dev-{w}"), "level").unwrap().count, points.len() as u64);
        }
    }
}
