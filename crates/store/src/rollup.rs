//! Rollups: the aggregates of one series over each hour, kept beside its blocks so that a long
//! range aggregated by hour or day reads one entry a day instead of every point.
//!
//! Rollups are written when windows are folded (see `store/maintenance.rs`), from the folded
//! points, and kept in one entry per series and UTC day: a version byte, then per hour that
//! has points `hour u8 | k u8 | count varint | min | max | first value | last value | sum f64 BE
//! | first time | last time`. With `k` in 0..=6 every one of min, max, first and last is
//! exactly `n / 10^k` and is written as zigzag varint `n` (two bytes for a water level in
//! millimetres); with `k = 0xff` they are f64 BE. Times are varint ms after the hour's start.
//! About 25 bytes an hour for sensor data: small entries cost sled several times their size,
//! so a day's worth shares one.

use crate::chunk;
use crate::types::{Bucket, Point};
use crate::varint::{get_varint, put_varint, unzigzag, zigzag};

const VERSION: u8 = 2;
const RAW: u8 = 0xff;

/// Encodes the hourly buckets of one day, sorted by start, starting at `day_ms`.
pub fn encode(day_ms: i64, buckets: &[Bucket]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + buckets.len() * 28);
    out.push(VERSION);
    let mut ints = Vec::with_capacity(4);
    for b in buckets {
        out.push(((b.start_ms - day_ms) / chunk::WINDOW_MS) as u8);
        let values = [b.min, b.max, b.first.value, b.last.value];
        let k = chunk::decimals(values.iter().copied(), &mut ints);
        out.push(k.unwrap_or(RAW));
        put_varint(&mut out, b.count);
        match k {
            Some(_) => {
                for &n in &ints {
                    put_varint(&mut out, zigzag(n));
                }
            }
            None => {
                for v in values {
                    out.extend_from_slice(&v.to_bits().to_be_bytes());
                }
            }
        }
        out.extend_from_slice(&b.sum.to_bits().to_be_bytes());
        for p in [b.first, b.last] {
            put_varint(&mut out, p.time_ms.wrapping_sub(b.start_ms) as u64);
        }
    }
    out
}

/// Decodes the rollups of the day starting at `day_ms`, appending them to `out` in hour
/// order; `None` if the entry is malformed.
pub fn decode(day_ms: i64, bytes: &[u8], out: &mut Vec<Bucket>) -> Option<()> {
    let (&version, mut rest) = bytes.split_first()?;
    if version != VERSION {
        return None;
    }
    let mut last_hour = None;
    while let Some((&hour, tail)) = rest.split_first() {
        rest = tail;
        if hour >= 24 || last_hour.is_some_and(|h| h >= hour) {
            return None;
        }
        last_hour = Some(hour);
        let (&k, tail) = rest.split_first()?;
        rest = tail;
        let count = get_varint(&mut rest)?;
        let mut values = [0.0; 4];
        match k {
            RAW => {
                for v in &mut values {
                    *v = take_f64(&mut rest)?;
                }
            }
            k if k <= chunk::MAX_DECIMALS => {
                let scale = chunk::scale_of(k);
                for v in &mut values {
                    *v = unzigzag(get_varint(&mut rest)?) as f64 / scale;
                }
            }
            _ => return None,
        }
        let sum = take_f64(&mut rest)?;
        // The day comes from the entry's key: a damaged key can put it anywhere, and an hour
        // past the end of time is as corrupt as a bad byte (found by fuzz/rollup_decode).
        let start_ms = day_ms.checked_add(i64::from(hour) * chunk::WINDOW_MS)?;
        let first_ms = start_ms.wrapping_add(get_varint(&mut rest)? as i64);
        let last_ms = start_ms.wrapping_add(get_varint(&mut rest)? as i64);
        if count == 0 {
            return None;
        }
        out.push(Bucket {
            start_ms,
            count,
            min: values[0],
            max: values[1],
            sum,
            first: Point { time_ms: first_ms, value: values[2] },
            last: Point { time_ms: last_ms, value: values[3] },
        });
    }
    Some(())
}

fn take_f64(input: &mut &[u8]) -> Option<f64> {
    let (head, rest) = input.split_at_checked(8)?;
    *input = rest;
    Some(f64::from_bits(u64::from_be_bytes(head.try_into().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 1_790_035_200_000 - 1_790_035_200_000 % chunk::DAY_MS;

    fn bucket(hour: i64, points: &[(i64, f64)]) -> Bucket {
        let start = DAY + hour * chunk::WINDOW_MS;
        let mut b = Bucket::new(start, start + points[0].0, points[0].1);
        for &(t, v) in &points[1..] {
            b.add(start + t, v);
        }
        b
    }

    /// Same buckets, every float to the bit (`==` would take -0.0 for 0.0).
    fn assert_bit_for_bit(decoded: &[Bucket], written: &[Bucket]) {
        assert_eq!(decoded.len(), written.len(), "{decoded:?}");
        for (a, b) in decoded.iter().zip(written) {
            assert_eq!(
                (a.start_ms, a.count, a.first.time_ms, a.last.time_ms),
                (b.start_ms, b.count, b.first.time_ms, b.last.time_ms)
            );
            let bits = |b: &Bucket| [b.min, b.max, b.sum, b.first.value, b.last.value].map(f64::to_bits);
            assert_eq!(bits(a), bits(b), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn rollups_round_trip_bit_for_bit_and_refuse_garbage() {
        let buckets = [
            bucket(0, &[(10, 153.4), (3_599_999, 151.2), (500, 160.0)]),
            bucket(7, &[(0, 0.1 + 0.2), (1, -0.0)]),
            bucket(23, &[(42, 12.0)]),
        ];
        let bytes = encode(DAY, &buckets);
        let mut out = Vec::new();
        assert_eq!(decode(DAY, &bytes, &mut out), Some(()));
        assert_bit_for_bit(&out, &buckets);

        // An entry is the version byte and one record per hour, so a cut right after a
        // record is a valid entry of the hours before it; a cut anywhere else leaves a record
        // short of its last byte (a varint's, which ends the record) and must be refused.
        let ends: Vec<usize> = (0..=buckets.len()).map(|n| encode(DAY, &buckets[..n]).len()).collect();
        assert_eq!(ends.last(), Some(&bytes.len()));
        for cut in 0..bytes.len() {
            let mut out = Vec::new();
            let decoded = decode(DAY, &bytes[..cut], &mut out);
            match ends.iter().position(|&end| end == cut) {
                Some(hours) => {
                    assert_eq!(decoded, Some(()), "cut at {cut}, after {hours} hours");
                    assert_bit_for_bit(&out, &buckets[..hours]);
                }
                None => assert_eq!(decoded, None, "cut at {cut}, inside a record: {out:?}"),
            }
        }
        let mut out = Vec::new();
        assert_eq!(decode(DAY, &[VERSION, 24, 0, 1], &mut out), None, "hour 24");
        assert_eq!(decode(DAY, &[9], &mut out), None, "another version");
        // A day so late that its hours overflow: the fuzzer's input (fuzz/rollup_decode),
        // minimised; it panicked on the overflow before.
        let crash = [
            0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf8, 0x02, 0x04, 0x00, 0x00, 0x00, 0x00, 0x1a, 0x00, 0x00, 0x00,
            0x1a, 0x00, 0x00, 0x1a, 0x00, 0x00,
        ];
        let (day, entry) = crash.split_at(8);
        let day = i64::from_be_bytes(day.try_into().unwrap());
        assert_eq!(decode(day, entry, &mut out), None, "hour 4 of a day 8 ms before the end of time");
        // Decimal hours take about 25 bytes.
        let one = encode(DAY, &buckets[..1]);
        assert!(one.len() <= 30, "{} bytes", one.len());
    }
}
