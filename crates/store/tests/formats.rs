//! Every on-disk format the store ever wrote opens with this code, and reads back every
//! reading: one fixture per format under `tests/fixtures/` (see `support/mod.rs` for how they
//! are made and how to add one).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{check_readings, fixtures, options, restore};

/// The format this code writes (`FORMAT_VERSION` in `src/store.rs`).
const CURRENT: u8 = 6;

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
        // Closed days are in day files once opened by this code, whatever the format was.
        let files = std::fs::read_dir(dir.path().join("blocks")).map_or(0, |d| d.count());
        assert_eq!(files, 2, "{path:?}: the two folded days' files");
        // And once more, as the store left it (migrated, if it was an older format).
        let store = mekong_store::Store::open(dir.path(), &options()).unwrap();
        check_readings(&store);
    }
    assert!(seen.iter().any(|n| n == "format-5.dump"), "fixtures found: {seen:?}");
}
