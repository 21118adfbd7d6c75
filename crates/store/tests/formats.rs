//! Every on-disk format the store ever wrote opens with this code, and reads back every
//! reading: one fixture per format under `tests/fixtures/` (see `support/mod.rs` for how they
//! are made and how to add one).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use support::{check_readings, fixtures, options, restore};

/// The format this code writes (`FORMAT_VERSION` in `src/store.rs`).
const CURRENT: u8 = 9;

#[test]
fn every_format_fixture_opens_and_reads_every_reading() {
    if std::env::var_os("MEKONG_WRITE_FIXTURES").is_some() {
        support::write_fixture(CURRENT);
    }
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "dump") {
            continue;
        }
        seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
        let dir = tempfile::tempdir().unwrap();
        restore(&path, dir.path());
        let store = mekong_store::Store::open(dir.path(), &options()).unwrap();
        check_readings(&store);
        drop(store);
        // Closed days are in day files once opened by this code, whatever the format was: the
        // two folded days' files a migration from format 5 writes, or the files a later format
        // had already (the open day's too).
        let files = std::fs::read_dir(dir.path().join("blocks")).map_or(0, |d| d.count());
        let had = std::fs::read_dir(path.with_extension("files")).map_or(2, |d| d.count());
        assert_eq!(files, had, "{path:?}: the day files");
        // And once more, as the store left it (migrated, if it was an older format).
        let store = mekong_store::Store::open(dir.path(), &options()).unwrap();
        check_readings(&store);
        drop(store);
        // Migrated whole: this format, and no series metadata under its own key (format 6
        // and before), since each device's entry holds its series'.
        let (entries, _) = contents(dir.path());
        let format = entries.iter().find(|(k, _)| k == b"\x00format").map(|(_, v)| v.clone());
        assert_eq!(format, Some(vec![CURRENT]), "{path:?}");
        assert!(!entries.iter().any(|(k, _)| k[0] == 0x02), "{path:?}: series entries left");
        // The log was folded at the opening (a fixture of format 8 or later holds a record).
        assert!(!entries.iter().any(|(k, _)| k[0] == 0x08), "{path:?}: records left in the log");
    }
    for format in 5..=CURRENT {
        assert!(seen.iter().any(|n| *n == format!("format-{format}.dump")), "fixtures found: {seen:?}");
    }
}

/// A store's sled entries and the names of its day files.
type Contents = (Vec<(Vec<u8>, Vec<u8>)>, Vec<String>);

/// sled's database in `dir`, once whoever had it open has let go of its lock file: a store
/// that failed to open, or sled dropped just before, releases it when its last thread ends.
fn open_sled(dir: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::Config::new().path(dir).open() {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline && e.to_string().contains("could not acquire lock") => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Every sled entry of the store in `dir` (closed), and the names of the files beside it.
fn contents(dir: &Path) -> Contents {
    let db = open_sled(dir);
    let tree = db.open_tree("timeseries").unwrap();
    let entries = tree.iter().map(|e| e.unwrap()).map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
    let files = std::fs::read_dir(dir.join("blocks"))
        .map(|d| d.map(|f| f.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    (entries, files)
}

#[test]
fn a_migration_that_fails_leaves_the_old_store_as_it_was_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    restore(&fixtures().join("format-5.dump"), dir.path());
    // The last day block of the last day is damaged: the first day's file is written by
    // then, so the failure has something to undo.
    {
        let db = open_sled(dir.path());
        let tree = db.open_tree("timeseries").unwrap();
        let day_block = |k: &[u8]| k.len() == 21 && k[0] == 0x01 && k[13] & 0x80 != 0;
        let last =
            tree.iter().keys().map(|k| k.unwrap()).filter(|k| day_block(k)).max_by_key(|k| k[5..13].to_vec()).unwrap();
        tree.insert(last, &[0xff, 0x00, 0x13][..]).unwrap();
        db.flush().unwrap();
    }
    let before = contents(dir.path());
    assert!(before.1.is_empty(), "a format-5 store has no day files");

    let err = mekong_store::Store::open(dir.path(), &options()).unwrap_err();
    let said = err.to_string();
    assert!(matches!(err, mekong_store::StoreError::Migration { from: 5, .. }), "{err:?}");
    assert!(said.contains("from format 5") && said.contains("left as it was"), "{said}");
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(!cause.is_empty(), "the error says why: {err:?}");

    // Nothing changed: every sled entry as before, byte for byte, and no file left behind.
    assert!(contents(dir.path()) == before, "the old store changed");
    // And it fails the same way again, without harm.
    assert!(mekong_store::Store::open(dir.path(), &options()).is_err());
    assert!(contents(dir.path()) == before, "the old store changed at the second try");
}
