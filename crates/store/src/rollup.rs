//! Rollups: the aggregates of one series over one window, kept beside its block so that a
//! long range aggregated by hour or day reads one entry per hour instead of every point.
//!
//! A rollup is written when a window is folded into its block (see `store/maintenance.rs`),
//! from that block's points, and holds `count varint | min | max | sum (f64 BE) | first time
//! (varint ms after the window start) | first value | last time (varint) | last value`:
//! about 50 bytes an hour.

use crate::chunk::{get_varint, put_varint};
use crate::store::{Bucket, Point};

const VERSION: u8 = 1;

/// Encodes the aggregates of a window starting at `bucket.start_ms`.
pub fn encode(bucket: &Bucket) -> Vec<u8> {
    let mut out = Vec::with_capacity(56);
    out.push(VERSION);
    put_varint(&mut out, bucket.count);
    for v in [bucket.min, bucket.max, bucket.sum] {
        out.extend_from_slice(&v.to_bits().to_be_bytes());
    }
    for p in [bucket.first, bucket.last] {
        put_varint(&mut out, p.time_ms.wrapping_sub(bucket.start_ms) as u64);
        out.extend_from_slice(&p.value.to_bits().to_be_bytes());
    }
    out
}

/// Decodes the rollup of the window starting at `start_ms`; `None` if it is malformed.
pub fn decode(start_ms: i64, bytes: &[u8]) -> Option<Bucket> {
    let (&version, mut rest) = bytes.split_first()?;
    if version != VERSION {
        return None;
    }
    let count = get_varint(&mut rest)?;
    let mut f64s = [0.0; 3];
    for v in &mut f64s {
        *v = take_f64(&mut rest)?;
    }
    let mut points = [Point { time_ms: 0, value: 0.0 }; 2];
    for p in &mut points {
        p.time_ms = start_ms.wrapping_add(get_varint(&mut rest)? as i64);
        p.value = take_f64(&mut rest)?;
    }
    (rest.is_empty() && count > 0).then_some(Bucket {
        start_ms,
        count,
        min: f64s[0],
        max: f64s[1],
        sum: f64s[2],
        first: points[0],
        last: points[1],
    })
}

fn take_f64(input: &mut &[u8]) -> Option<f64> {
    let (head, rest) = input.split_at_checked(8)?;
    *input = rest;
    Some(f64::from_bits(u64::from_be_bytes(head.try_into().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollups_round_trip_and_refuse_garbage() {
        let mut b = Bucket::new(3_600_000, 3_600_010, 1.5);
        b.add(7_199_999, -2.25);
        b.add(3_600_500, 9.0);
        let bytes = encode(&b);
        assert_eq!(decode(3_600_000, &bytes), Some(b));
        for cut in 0..bytes.len() {
            assert_eq!(decode(3_600_000, &bytes[..cut]), None, "cut at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(decode(3_600_000, &trailing), None);
        assert!(bytes.len() <= 50, "{} bytes", bytes.len());
    }
}
