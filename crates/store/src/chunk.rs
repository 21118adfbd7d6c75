//! Chunks: the points of one series written together, in one sled value.
//!
//! sled copies a leaf node on every insert, so one entry per point costs more the more points
//! a leaf holds; one entry per (series, write group, time window) costs one insert for many
//! points. A chunk holds the points of one series within one [`WINDOW_MS`] window, sorted by
//! time, each time at most once:
//!
//! `version u8 | count varint | first time i64 BE | (time delta varint, value f64 BE) * count`
//!
//! with the first delta zero. Chunks of one series may overlap in time (late data arrives in
//! later groups), but never share a (time): the store checks before it writes.

/// Every point of a chunk lies in one window of this many milliseconds (aligned to the epoch),
/// so a range query knows how far before `from` a chunk holding its points can start.
pub const WINDOW_MS: i64 = 3_600_000;

const VERSION: u8 = 1;

/// The start of the window holding `t_ms`.
pub fn window_start(t_ms: i64) -> i64 {
    t_ms.div_euclid(WINDOW_MS).saturating_mul(WINDOW_MS)
}

/// Encodes points sorted by time, with distinct times, all in one window.
pub fn encode(points: &[(i64, f64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + points.len() * 10);
    out.push(VERSION);
    put_varint(&mut out, points.len() as u64);
    let first = points.first().map_or(0, |p| p.0);
    out.extend_from_slice(&first.to_be_bytes());
    let mut prev = first;
    for &(t, v) in points {
        put_varint(&mut out, t.wrapping_sub(prev) as u64);
        out.extend_from_slice(&v.to_bits().to_be_bytes());
        prev = t;
    }
    out
}

/// Decodes a chunk, appending its points to `out`; `None` if it is malformed.
pub fn decode_into(bytes: &[u8], out: &mut Vec<(i64, f64)>) -> Option<()> {
    let (&version, mut rest) = bytes.split_first()?;
    if version != VERSION {
        return None;
    }
    let count = get_varint(&mut rest)?;
    let (first, tail) = rest.split_at_checked(8)?;
    rest = tail;
    let mut t = i64::from_be_bytes(first.try_into().ok()?);
    // A count larger than the bytes could hold is corrupt; do not reserve for it.
    if count > rest.len() as u64 / 9 {
        return None;
    }
    out.reserve(count as usize);
    for _ in 0..count {
        t = t.wrapping_add(get_varint(&mut rest)? as i64);
        let (value, tail) = rest.split_at_checked(8)?;
        rest = tail;
        out.push((t, f64::from_bits(u64::from_be_bytes(value.try_into().ok()?))));
    }
    rest.is_empty().then_some(())
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(input: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = input.split_first()?;
        *input = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip() {
        let points = [(1_790_000_000_000, 1.5), (1_790_000_000_001, -0.0), (1_790_000_010_000, f64::MAX)];
        let mut out = Vec::new();
        decode_into(&encode(&points), &mut out).unwrap();
        assert_eq!(out, points);
        let mut empty = Vec::new();
        decode_into(&encode(&[]), &mut empty).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn corrupt_chunks_are_refused_without_allocating_for_them() {
        let good = encode(&[(5, 1.0), (6, 2.0)]);
        let mut out = Vec::new();
        for cut in 0..good.len() {
            assert!(decode_into(&good[..cut], &mut out).is_none(), "cut at {cut}");
        }
        let mut huge_count = vec![VERSION, 0xff, 0xff, 0xff, 0xff, 0x0f];
        huge_count.extend_from_slice(&[0; 8]);
        assert!(decode_into(&huge_count, &mut out).is_none());
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode_into(&trailing, &mut out).is_none());
    }

    #[test]
    fn windows_are_aligned_hours() {
        assert_eq!(window_start(1_790_000_000_000), 1_789_999_200_000);
        assert_eq!(window_start(-1), -WINDOW_MS);
        assert_eq!(window_start(0), 0);
    }
}
