//! Record spaces: small durable records of other crates, under their own key prefix, written
//! as one atomic batch and flushed before the write returns.

use super::Store;
use crate::{keys, Flushed, RecordWrite, StoreError};

/// A record read back: its key within its space, and its value.
pub type Record = (Vec<u8>, Vec<u8>);

pub(super) fn check(space: &str) -> Result<(), StoreError> {
    match space.is_empty() || space.contains('\0') {
        true => Err(StoreError::RecordSpace(space.to_owned())),
        false => Ok(()),
    }
}

impl Store {
    /// Applies `writes` in one atomic sled batch and flushes it: when this returns `Ok`, every
    /// write is on disk, and after a crash either all of them are or none. Respects the
    /// store's openings like a write of points: a failed opening is opened afresh (after its
    /// back-off) and a write that fails marks it failed.
    pub fn write_records(&self, writes: &[RecordWrite<'_>]) -> Result<Flushed, StoreError> {
        let mut batch = sled::Batch::default();
        for write in writes {
            match *write {
                RecordWrite::Put { space, key, value } => {
                    check(space)?;
                    batch.insert(keys::record(space, key), value);
                }
                RecordWrite::Delete { space, key } => {
                    check(space)?;
                    batch.remove(keys::record(space, key));
                }
            }
        }
        let generation = {
            let mut state = self.state();
            let opened = self.writable_to_log(&mut state)?;
            self.apply(&opened, batch)?;
            opened.generation
        };
        let flushed = self.flush()?;
        match flushed.generation == generation {
            true => Ok(flushed),
            // The opening written to failed before the flush: the batch may be lost.
            false => Err(self.unavailable()),
        }
    }

    /// Every record of `space`, as (key, value), in the byte order of the keys.
    pub fn scan_records(&self, space: &str) -> Result<Vec<Record>, StoreError> {
        self.scan_records_from(space, &[], usize::MAX)
    }

    /// At most `limit` records of `space` whose key is `from` or after, in key order.
    pub fn scan_records_from(&self, space: &str, from: &[u8], limit: usize) -> Result<Vec<Record>, StoreError> {
        check(space)?;
        let prefix = keys::record_space(space);
        let tree = self.current()?.tree.clone();
        let mut out = Vec::new();
        for entry in tree.range(keys::record(space, from)..) {
            let (key, value) = entry?;
            if out.len() >= limit || !key.starts_with(&prefix) {
                break;
            }
            out.push((key[prefix.len()..].to_vec(), value.to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use crate::{compact, NewPoint, PackWrite, RecordWrite, Store, StoreError, StoreOptions, ValueKind};

    #[test]
    fn records_of_a_group_are_written_in_its_batch_from_what_its_packs_became() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let store = Store::open(&path, &StoreOptions::default()).unwrap();
        let p = |t| NewPoint { metric: "m", unit: Some("cm"), time_ms: t, value: 1.0, value_kind: ValueKind::Number };
        let first = [p(1_000), p(2_000)];
        let other_unit = [NewPoint { unit: Some("m"), ..p(3_000) }];
        let again = [p(2_000), p(4_000)];
        let pack = |points| PackWrite { device: "d", kind: "k", seen_ms: 5_000, points, seq: None };
        let mut seen = Vec::new();
        store
            .write_group_with(&[pack(&first), pack(&other_unit), pack(&again)], &[], |results, duplicates| {
                seen = results.iter().map(|r| r.as_ref().map(|s| s.stored).ok()).collect();
                seen.push(Some(duplicates.len()));
                vec![("t.outbox", b"1".to_vec(), vec![duplicates.len() as u8])]
            })
            .unwrap();
        assert_eq!(seen, [Some(2), None, Some(1), Some(1)]);
        assert!(matches!(
            store.write_group_with(&[pack(&[p(9_000)])], &[], |_, _| vec![("", Vec::new(), Vec::new())]),
            Err(StoreError::RecordSpace(_))
        ));
        store.flush().unwrap();
        drop(store);
        let store = Store::open(&path, &StoreOptions::default()).unwrap();
        assert_eq!(store.scan_records("t.outbox").unwrap(), vec![(b"1".to_vec(), vec![1])]);
        // The refused group wrote nothing, not even its points.
        assert_eq!(store.point_count(), 3);
    }

    #[test]
    fn records_survive_a_reopen_and_a_compaction_and_spaces_stay_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let options = StoreOptions::default();
        {
            let store = Store::open(&path, &options).unwrap();
            store
                .write_records(&[
                    RecordWrite::Put { space: "a", key: b"2", value: b"two" },
                    RecordWrite::Put { space: "a", key: b"1", value: b"one" },
                    RecordWrite::Put { space: "ab", key: b"1", value: b"other" },
                    RecordWrite::Put { space: "a", key: b"3", value: b"three" },
                ])
                .unwrap();
            store.write_records(&[RecordWrite::Delete { space: "a", key: b"3" }]).unwrap();
            assert!(matches!(
                store.write_records(&[RecordWrite::Put { space: "a\0b", key: b"", value: b"" }]),
                Err(StoreError::RecordSpace(_))
            ));
            assert_eq!(store.scan_records_from("a", b"2", 10).unwrap(), vec![(b"2".to_vec(), b"two".to_vec())]);
            assert_eq!(store.scan_records_from("a", b"", 1).unwrap().len(), 1);
        }
        compact(&path, &options).unwrap();
        let store = Store::open(&path, &options).unwrap();
        let a = store.scan_records("a").unwrap();
        assert_eq!(a, vec![(b"1".to_vec(), b"one".to_vec()), (b"2".to_vec(), b"two".to_vec())]);
        assert_eq!(store.scan_records("ab").unwrap(), vec![(b"1".to_vec(), b"other".to_vec())]);
        assert!(store.scan_records("b").unwrap().is_empty());
    }
}
