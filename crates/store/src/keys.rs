//! Key layout of the one sled tree: see the crate documentation for the table.

/// The key of the store's format version.
pub const FORMAT: &[u8] = b"\x00format";
/// The key of the number of times the store was opened (the high bits of chunk ids).
pub const EPOCH: &[u8] = b"\x00epoch";
/// First byte of a chunk key (points).
pub const POINT: u8 = 0x01;
/// First byte of a series metadata key: format 6 and before only (since 7 a series' metadata
/// is in its device's entry).
pub const SERIES: u8 = 0x02;
/// First byte of a device's entry: its metadata and, since format 7, its series'.
pub const DEVICE: u8 = 0x03;
/// First byte of an hourly rollup key.
pub const ROLLUP: u8 = 0x04;
/// First byte of a device's sequence number key.
pub const SEQ: u8 = 0x05;
/// First byte of a record key (other crates' small durable records: [`crate::RecordWrite`]).
pub const RECORD: u8 = 0x06;
/// First byte of the key that names a closed day's file (`store/days.rs`).
pub const DAY_FILE: u8 = 0x07;
/// First byte of a write group's record in the log, not yet folded (`store/log.rs`).
pub const LOG: u8 = 0x08;
/// The key of the next series id: ids are never reused, as a removed series' block may still
/// be in a day file until that file is next rewritten.
pub const NEXT_SERIES: &[u8] = b"\x00series";
/// The days a migration has switched to day files and not yet cleaned out of sled (their
/// chunks and rollups): big-endian day starts, 8 bytes each. Absent when none is left.
pub const MIGRATING: &[u8] = b"\x00migrating";

/// Time in ms as 8 bytes whose unsigned order is the signed order of the times.
pub fn time_bytes(t_ms: i64) -> [u8; 8] {
    ((t_ms as u64) ^ (1 << 63)).to_be_bytes()
}

/// Inverse of [`time_bytes`].
pub fn time_from_bytes(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

/// The key of a chunk: series, time of its first point, and a unique chunk id (two chunks of
/// a series may start at the same time).
pub fn chunk(series: u32, first_ms: i64, id: u64) -> [u8; 21] {
    let mut k = [0u8; 21];
    k[0] = POINT;
    k[1..5].copy_from_slice(&series.to_be_bytes());
    k[5..13].copy_from_slice(&time_bytes(first_ms));
    k[13..].copy_from_slice(&id.to_be_bytes());
    k
}

/// The smallest chunk key of `series` starting at or after `first_ms`.
pub fn chunk_from(series: u32, first_ms: i64) -> [u8; 21] {
    chunk(series, first_ms, 0)
}

/// Set in the id of a chunk that holds a whole day (a day block); other chunks hold points of
/// one hour window only.
pub const DAY_BLOCK: u64 = 1 << 63;

/// Whether a chunk key is a day block's.
pub fn is_day_block(key: &[u8]) -> bool {
    key.len() == 21 && key[13] & 0x80 != 0
}

/// Splits a chunk key into series id and first time.
pub fn parse_chunk(key: &[u8]) -> Option<(u32, i64)> {
    if key.len() != 21 || key[0] != POINT {
        return None;
    }
    let series = u32::from_be_bytes(key[1..5].try_into().ok()?);
    let t = time_from_bytes(key[5..13].try_into().ok()?);
    Some((series, t))
}

/// The key of the rollups of series `series` for the day starting at `start_ms`.
pub fn rollup(series: u32, start_ms: i64) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[0] = ROLLUP;
    k[1..5].copy_from_slice(&series.to_be_bytes());
    k[5..13].copy_from_slice(&time_bytes(start_ms));
    k
}

/// The key naming the file of the day starting at `start_ms`.
pub fn day_file(start_ms: i64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = DAY_FILE;
    k[1..].copy_from_slice(&time_bytes(start_ms));
    k
}

/// The day start of a day file key.
pub fn parse_day_file(key: &[u8]) -> Option<i64> {
    match key.split_first() {
        Some((&DAY_FILE, t)) => Some(time_from_bytes(t.try_into().ok()?)),
        _ => None,
    }
}

/// Splits a rollup key into series id and day start.
pub fn parse_rollup(key: &[u8]) -> Option<(u32, i64)> {
    if key.len() != 13 || key[0] != ROLLUP {
        return None;
    }
    let series = u32::from_be_bytes(key[1..5].try_into().ok()?);
    Some((series, time_from_bytes(key[5..13].try_into().ok()?)))
}

/// The key of a device's entry.
pub fn device(device: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + device.len());
    k.push(DEVICE);
    k.extend_from_slice(device.as_bytes());
    k
}

/// The key of a device's sequence number.
pub fn seq(device: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + device.len());
    k.push(SEQ);
    k.extend_from_slice(device.as_bytes());
    k
}

/// The prefix of every record of `space`: `0x06 | space | 0x00`. A space never holds a NUL
/// byte, so no space's prefix is a prefix of another's.
pub fn record_space(space: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + space.len());
    k.push(RECORD);
    k.extend_from_slice(space.as_bytes());
    k.push(0);
    k
}

/// The key of record `key` in `space`.
pub fn record(space: &str, key: &[u8]) -> Vec<u8> {
    let mut k = record_space(space);
    k.extend_from_slice(key);
    k
}

/// The device id of a device metadata key (or of a sequence number key: the same shape).
pub fn parse_device(key: &[u8]) -> Option<&str> {
    match key.split_first() {
        Some((&DEVICE | &SEQ, id)) => std::str::from_utf8(id).ok(),
        _ => None,
    }
}

/// The device id and metric of a series metadata key (format 6 and before).
pub fn parse_series(key: &[u8]) -> Option<(&str, &str)> {
    match key.split_first() {
        Some((&SERIES, name)) => std::str::from_utf8(name).ok()?.split_once('\0'),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key format 6 and before gave a series' metadata.
    fn series(device: &str, metric: &str) -> Vec<u8> {
        [&[SERIES], device.as_bytes(), &[0], metric.as_bytes()].concat()
    }

    #[test]
    fn time_order_is_byte_order() {
        let times = [i64::MIN, -1_000, -1, 0, 1, 946_684_800_000, 1_790_000_000_123, i64::MAX];
        for pair in times.windows(2) {
            assert!(time_bytes(pair[0]) < time_bytes(pair[1]), "{pair:?}");
        }
        for t in times {
            assert_eq!(time_from_bytes(time_bytes(t)), t);
        }
    }

    #[test]
    fn chunk_keys_round_trip_and_sort_by_series_then_time_then_id() {
        assert_eq!(parse_chunk(&chunk(7, -5, 3)), Some((7, -5)));
        assert!(chunk(1, i64::MAX, u64::MAX) < chunk(2, i64::MIN, 0));
        assert!(chunk(1, 10, 9) < chunk(1, 11, 0));
        assert!(chunk_from(1, 10) <= chunk(1, 10, 0));
        assert_eq!(parse_chunk(&[POINT, 0, 0]), None);
        assert!(is_day_block(&chunk(1, 2, DAY_BLOCK | 5)) && !is_day_block(&chunk(1, 2, 5)));
        assert_eq!(parse_rollup(&rollup(9, -3_600_000)), Some((9, -3_600_000)));
        assert!(rollup(1, i64::MAX) < rollup(2, i64::MIN));
        assert_eq!(parse_rollup(&chunk(1, 2, 3)), None);
        assert_eq!(parse_day_file(&day_file(-86_400_000)), Some(-86_400_000));
        assert_eq!(parse_day_file(&rollup(1, 2)), None);
    }

    #[test]
    fn metadata_keys_round_trip() {
        assert_eq!(parse_device(&device("hau-01")), Some("hau-01"));
        assert_eq!(parse_device(&seq("hau-01")), Some("hau-01"));
        assert_eq!(parse_series(&series("hau-01", "water_level")), Some(("hau-01", "water_level")));
        assert_eq!(parse_device(&series("hau-01", "water_level")), None);
        assert_eq!(parse_series(&device("hau-01")), None);
        assert_eq!(parse_device(&[DEVICE, 0xff]), None);
        assert_eq!(parse_device(&[]), None);
    }

    #[test]
    fn record_spaces_do_not_overlap() {
        assert_eq!(record("alert", b"k"), b"\x06alert\x00k");
        assert!(!record("alerts", b"").starts_with(&record_space("alert")));
        assert!(record("alert", b"\xff\xff").starts_with(&record_space("alert")));
    }
}
