//! Chunks: the points of one series written together, in one sled value, compressed.
//!
//! sled copies a leaf node on every insert, so one entry per point costs more the more points
//! a leaf holds; one entry per (series, write group, time window) costs one insert for many
//! points. A chunk holds the points of one series within one [`WINDOW_MS`] window (or, once
//! folded, one UTC day), sorted by time, each time at most once. Chunks of one series may
//! overlap in time (late data arrives in later groups), but never share a time: the store
//! checks before it writes.
//!
//! The encoding follows Facebook's Gorilla (Pelkonen et al., VLDB 2015), adapted to
//! millisecond times and to decimal sensor values: after a header (`version u8 | count varint
//! | mode u8 | flags u8 | first time i64 BE | [step varint] | [rice u8] | first value`), a bit
//! stream holds, per further point, its time (unless the times are regular) and the change of
//! its value.
//!
//! - time: when every step between times is the same (flag `1`, regular sampling), the step is
//!   in the header and the stream holds no time bits; else zigzag(delta - previous delta) as
//!   `0` (zero), `10` + 7 bits, `110` + 12 bits, `1110` + 20 bits, or `1111` + 64 bits;
//! - value, mode `k` in 0..=6 (every value of the chunk is exactly `n / 10^k` for an integer
//!   `n`, as readings of a sensor with a fixed resolution are): the first `n` as a zigzag
//!   varint, then zigzag(n - previous n) in a Rice code whose parameter (in the header) is the
//!   one that makes this chunk smallest: the quotient in unary (`1`s ended by a `0`, or 16 `1`s
//!   then the raw 64-bit number), then the parameter's count of low bits;
//! - value, mode `0xff` (anything else): the first value as f64 BE, then Gorilla's XOR: `0`
//!   when equal to the previous value; else `1`, then `0` + the meaningful bits when they fit
//!   in the previous window of leading and trailing zeros, or `1` + 5 bits of leading zeros +
//!   6 bits of meaningful length (0 for 64) + the meaningful bits.
//!
//! Why the decimal mode: a water level at 1 mm resolution (1.234 m) is not a short binary
//! fraction, so XOR-ing two neighbouring levels leaves some 50 meaningful bits, 7 bytes a
//! point; as integers of millimetres they differ by a few units, under a byte. Mode `k` is
//! chosen only when dividing back gives every value bit for bit, so both modes are lossless.
//!
//! Why Rice codes: noisy sensor values change by a few units of their resolution from one
//! sample to the next, spread evenly rather than mostly zero; a Rice code with the right
//! parameter spends about two bits above the entropy of such changes, fixed prefix classes
//! more. Every read is bounds-checked: a corrupt chunk is an error, never a panic or a large
//! allocation.

use crate::varint::{get_varint, put_varint, unzigzag, zigzag};

/// Every point of a chunk lies in one window of this many milliseconds (aligned to the epoch),
/// so a range query knows how far before `from` a chunk holding its points can start.
pub const WINDOW_MS: i64 = 3_600_000;

const VERSION: u8 = 4;

/// Value mode: values are raw `f64`s, XOR-ed with the previous one.
const MODE_XOR: u8 = 0xff;

/// The largest decimal scale tried: values with at most this many decimals are stored as
/// integers.
pub const MAX_DECIMALS: u8 = 6;

/// A closed day's windows are folded into one block: blocks of that size are where sled's
/// overhead per entry stops mattering (see `store/maintenance.rs`).
pub const DAY_MS: i64 = 24 * WINDOW_MS;

/// The start of the UTC day holding `t_ms`.
pub fn day_start(t_ms: i64) -> i64 {
    t_ms.div_euclid(DAY_MS).saturating_mul(DAY_MS)
}

/// The start of the window holding `t_ms`.
pub fn window_start(t_ms: i64) -> i64 {
    t_ms.div_euclid(WINDOW_MS).saturating_mul(WINDOW_MS)
}

/// The number of points of an encoded chunk, read from its header alone.
pub fn count(bytes: &[u8]) -> Option<u64> {
    let (&version, mut rest) = bytes.split_first()?;
    (version == VERSION).then_some(())?;
    get_varint(&mut rest)
}

/// The smallest number of decimals `k` such that every value is exactly `n / 10^k` for an
/// integer `n` below 2^53; `None` if there is none up to [`MAX_DECIMALS`].
fn decimals(points: &[(i64, f64)]) -> Option<u8> {
    decimals_of(points.iter().map(|p| p.1))
}

/// [`decimals`] of any values.
pub fn decimals_of(values: impl Iterator<Item = f64> + Clone) -> Option<u8> {
    (0..=MAX_DECIMALS).find(|&k| {
        let scale = scale_of(k);
        values.clone().all(|v| scaled(v, scale).is_some())
    })
}

/// `10^k`.
pub fn scale_of(k: u8) -> f64 {
    10f64.powi(i32::from(k))
}

/// `v * scale` as an integer, if dividing that integer by `scale` gives back `v` bit for bit.
pub fn scaled(v: f64, scale: f64) -> Option<i64> {
    let n = (v * scale).round();
    // Also false for NaN and the infinities.
    if n.abs().partial_cmp(&9_007_199_254_740_992.0) != Some(std::cmp::Ordering::Less) {
        return None;
    }
    // Compared through the integer, as the decoder computes it: -0.0 does not survive that.
    let n = n as i64;
    ((n as f64 / scale).to_bits() == v.to_bits()).then_some(n)
}

/// Header flag: every delta of the chunk's times is the same, written once; no time bits.
const REGULAR: u8 = 1;

/// Longest unary quotient of a Rice code before the escape (a raw 64-bit value).
const RICE_ESCAPE: u64 = 16;

/// The Rice parameter that codes `values` in the fewest bits.
fn rice_parameter(values: &[u64]) -> u8 {
    let cost = |k: u32| -> u64 {
        values.iter().map(|&z| if z >> k >= RICE_ESCAPE { RICE_ESCAPE + 64 } else { u64::from(k) + 1 + (z >> k) }).sum()
    };
    (0..=40u32).min_by_key(|&k| cost(k)).unwrap_or(0) as u8
}

/// Encodes points sorted by time, with distinct times.
pub fn encode(points: &[(i64, f64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + points.len() * 2);
    out.push(VERSION);
    put_varint(&mut out, points.len() as u64);
    let Some(&(t0, v0)) = points.first() else {
        return out;
    };
    let decimals = decimals(points);
    let step = points.get(1).map_or(0, |p| p.0.wrapping_sub(t0));
    let regular = points.windows(2).all(|w| w[1].0.wrapping_sub(w[0].0) == step);
    let scale = decimals.map(scale_of);
    // Changes of the scaled integers, zigzagged, for the Rice parameter.
    let changes: Vec<u64> = match scale {
        Some(scale) => points
            .windows(2)
            .map(|w| zigzag(scaled(w[1].1, scale).unwrap_or(0).wrapping_sub(scaled(w[0].1, scale).unwrap_or(0))))
            .collect(),
        None => Vec::new(),
    };
    let rice = rice_parameter(&changes);
    out.push(decimals.unwrap_or(MODE_XOR));
    out.push(if regular { REGULAR } else { 0 });
    out.extend_from_slice(&t0.to_be_bytes());
    if regular {
        put_varint(&mut out, zigzag(step));
    }
    match scale {
        Some(scale) => {
            out.push(rice);
            put_varint(&mut out, zigzag(scaled(v0, scale).unwrap_or(0)));
        }
        None => out.extend_from_slice(&v0.to_bits().to_be_bytes()),
    }
    let mut bits = BitWriter::new(out);
    let (mut prev_t, mut prev_delta, mut prev_v) = (t0, 0i64, v0.to_bits());
    let (mut lead, mut trail) = (u32::MAX, 0u32);
    for (i, &(t, v)) in points[1..].iter().enumerate() {
        if !regular {
            let delta = t.wrapping_sub(prev_t);
            match zigzag(delta.wrapping_sub(prev_delta)) {
                0 => bits.put(0, 1),
                d if d < 1 << 7 => bits.put(0b10 << 7 | d, 9),
                d if d < 1 << 12 => bits.put(0b110 << 12 | d, 15),
                d if d < 1 << 20 => bits.put(0b1110 << 20 | d, 24),
                d => {
                    bits.put(0b1111, 4);
                    bits.put(d, 64);
                }
            }
            (prev_t, prev_delta) = (t, delta);
        }
        if scale.is_some() {
            let z = changes[i];
            let q = z >> rice;
            if q >= RICE_ESCAPE {
                bits.put(u64::MAX, RICE_ESCAPE as u32);
                bits.put(z, 64);
            } else {
                bits.put(((1u64 << q) - 1) << 1, q as u32 + 1);
                bits.put(z, u32::from(rice));
            }
            continue;
        }
        let x = v.to_bits() ^ prev_v;
        if x == 0 {
            bits.put(0, 1);
        } else {
            let (l, tr) = (x.leading_zeros().min(31), x.trailing_zeros());
            if lead != u32::MAX && l >= lead && tr >= trail {
                let len = 64 - lead - trail;
                bits.put(0b10, 2);
                bits.put(x >> trail, len);
            } else {
                let len = 64 - l - tr;
                bits.put(0b11, 2);
                bits.put(u64::from(l), 5);
                bits.put(u64::from(len & 63), 6);
                bits.put(x >> tr, len);
                (lead, trail) = (l, tr);
            }
        }
        prev_v = v.to_bits();
    }
    bits.finish()
}

/// Decodes a chunk, appending its points to `out`; `None` if it is malformed.
pub fn decode_into(bytes: &[u8], out: &mut Vec<(i64, f64)>) -> Option<()> {
    let (&version, mut rest) = bytes.split_first()?;
    if version != VERSION {
        return None;
    }
    let count = get_varint(&mut rest)?;
    if count == 0 {
        return rest.is_empty().then_some(());
    }
    let (&mode, rest) = rest.split_first()?;
    let (&flags, rest) = rest.split_first()?;
    if flags & !REGULAR != 0 {
        return None;
    }
    let regular = flags & REGULAR != 0;
    let (head, mut rest) = rest.split_at_checked(8)?;
    let t0 = i64::from_be_bytes(head.try_into().ok()?);
    let step = if regular { unzigzag(get_varint(&mut rest)?) } else { 0 };
    let scale = match mode {
        MODE_XOR => None,
        k if k <= MAX_DECIMALS => Some(scale_of(k)),
        _ => return None,
    };
    let (rice, mut prev_n, v0) = match scale {
        Some(scale) => {
            let (&rice, tail) = rest.split_first()?;
            rest = tail;
            if rice > 40 {
                return None;
            }
            let n = unzigzag(get_varint(&mut rest)?);
            (u32::from(rice), n, (n as f64) / scale)
        }
        None => {
            let (head, tail) = rest.split_at_checked(8)?;
            rest = tail;
            (0, 0, f64::from_bits(u64::from_be_bytes(head.try_into().ok()?)))
        }
    };
    let stream = rest;
    // Every further point takes at least one bit: a count the bytes cannot hold is corrupt,
    // and no memory is reserved for it.
    if count - 1 > stream.len() as u64 * 8 {
        return None;
    }
    out.reserve(count as usize);
    out.push((t0, v0));
    let mut bits = BitReader::new(stream);
    let (mut prev_t, mut prev_delta, mut prev_v) = (t0, 0i64, v0.to_bits());
    let (mut lead, mut trail) = (u32::MAX, 0u32);
    for i in 1..count {
        let t = if regular {
            t0.wrapping_add(step.wrapping_mul(i as i64))
        } else {
            let dod = if bits.get(1)? == 0 {
                0
            } else if bits.get(1)? == 0 {
                bits.get(7)?
            } else if bits.get(1)? == 0 {
                bits.get(12)?
            } else if bits.get(1)? == 0 {
                bits.get(20)?
            } else {
                bits.get(64)?
            };
            let delta = prev_delta.wrapping_add(unzigzag(dod));
            let t = prev_t.wrapping_add(delta);
            (prev_t, prev_delta) = (t, delta);
            t
        };
        if let Some(scale) = scale {
            let mut q = 0;
            while q < RICE_ESCAPE && bits.get(1)? == 1 {
                q += 1;
            }
            let z = if q == RICE_ESCAPE { bits.get(64)? } else { q << rice | bits.get(rice)? };
            let n = prev_n.wrapping_add(unzigzag(z));
            // An integer the encoder cannot have written is corrupt.
            if n.unsigned_abs() >= 1 << 53 {
                return None;
            }
            out.push((t, (n as f64) / scale));
            prev_n = n;
            continue;
        }
        let v = if bits.get(1)? == 0 {
            prev_v
        } else if bits.get(1)? == 0 {
            if lead == u32::MAX {
                return None;
            }
            prev_v ^ (bits.get(64 - lead - trail)? << trail)
        } else {
            let l = bits.get(5)? as u32;
            let len = match bits.get(6)? as u32 {
                0 => 64,
                n => n,
            };
            if l + len > 64 {
                return None;
            }
            (lead, trail) = (l, 64 - l - len);
            prev_v ^ (bits.get(len)? << trail)
        };
        out.push((t, f64::from_bits(v)));
        prev_v = v;
    }
    bits.is_done().then_some(())
}

/// Appends bits, most significant first, to a byte vector.
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    used: u32,
}

impl BitWriter {
    fn new(out: Vec<u8>) -> Self {
        BitWriter { out, acc: 0, used: 0 }
    }

    /// Appends the low `n` bits of `v` (n <= 64).
    fn put(&mut self, v: u64, n: u32) {
        if n > 32 {
            self.put(v >> 32, n - 32);
            self.put(v & 0xffff_ffff, 32);
            return;
        }
        if n == 0 {
            return;
        }
        let v = v & ((1u64 << n) - 1);
        self.acc = (self.acc << n) | v;
        self.used += n;
        while self.used >= 8 {
            self.used -= 8;
            self.out.push((self.acc >> self.used) as u8);
        }
        self.acc &= (1u64 << self.used) - 1;
    }

    /// The bytes, the last one padded with zero bits.
    fn finish(mut self) -> Vec<u8> {
        if self.used > 0 {
            self.out.push((self.acc << (8 - self.used)) as u8);
        }
        self.out
    }
}

/// Reads bits back; every read fails cleanly past the end.
struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, pos: 0 }
    }

    /// Reads `n` bits (n <= 64).
    fn get(&mut self, n: u32) -> Option<u64> {
        if n > 56 {
            let high = self.get(n - 32)?;
            return Some(high << 32 | self.get(32)?);
        }
        if n == 0 {
            return Some(0);
        }
        let end = self.pos + n as usize;
        if end > self.bytes.len() * 8 {
            return None;
        }
        // The (at most 8) bytes holding the bits, big-endian: with a shift of at most 7 and
        // n <= 56 they fit one u64.
        let first = self.pos / 8;
        let mut word = [0u8; 8];
        let available = &self.bytes[first..self.bytes.len().min(first + 8)];
        word[..available.len()].copy_from_slice(available);
        let v = (u64::from_be_bytes(word) << (self.pos % 8)) >> (64 - n);
        self.pos = end;
        Some(v)
    }

    /// Whether only padding (fewer than 8 zero bits) is left.
    fn is_done(&self) -> bool {
        let total = self.bytes.len() * 8;
        total - self.pos < 8 && (self.pos..total).all(|i| self.bytes[i / 8] >> (7 - i % 8) & 1 == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(points: &[(i64, f64)]) -> usize {
        let bytes = encode(points);
        let mut out = Vec::new();
        decode_into(&bytes, &mut out).unwrap_or_else(|| panic!("decode failed for {points:?}"));
        assert_eq!(out.len(), points.len());
        for (a, b) in out.iter().zip(points) {
            assert_eq!((a.0, a.1.to_bits()), (b.0, b.1.to_bits()), "in {points:?}");
        }
        bytes.len()
    }

    #[test]
    fn chunks_round_trip_bit_for_bit() {
        round_trip(&[]);
        round_trip(&[(1_790_000_000_000, 1.5)]);
        round_trip(&[(1_790_000_000_000, 1.5), (1_790_000_000_001, -0.0), (1_790_000_010_000, f64::MAX)]);
        round_trip(&[(i64::MIN, f64::NAN), (-1, f64::INFINITY), (0, f64::MIN_POSITIVE), (i64::MAX, 0.0)]);
        let mut seed: u64 = 7;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..500 {
            let n = (next() % 60) as usize;
            let mut t = 1_790_000_000_000 + (next() % 1000) as i64;
            let points: Vec<(i64, f64)> = (0..n)
                .map(|_| {
                    t += match next() % 4 {
                        0 => 10_000,
                        1 => 1 + (next() % 100) as i64,
                        2 => (next() % 5_000_000) as i64 + 1,
                        _ => (next() >> 1) as i64 % 1_000_000_000_000 + 1,
                    };
                    let v = match next() % 4 {
                        0 => 150.0,
                        1 => (next() % 1000) as f64 / 10.0,
                        2 => f64::from_bits(next()),
                        _ => -((next() % 7) as f64),
                    };
                    (t, v)
                })
                .collect();
            round_trip(&points);
        }
    }

    #[test]
    fn decimal_values_are_stored_as_integers() {
        assert_eq!(decimals(&[(0, 1.234), (1, 1.5), (2, -3.0)]), Some(3));
        assert_eq!(decimals(&[(0, 12.0), (1, -7.0)]), Some(0));
        assert_eq!(decimals(&[(0, 0.1 + 0.2)]), None, "0.30000000000000004 has 17 decimals");
        assert_eq!(decimals(&[(0, -0.0)]), None);
        assert_eq!(decimals(&[(0, f64::NAN)]), None);
        assert_eq!(decimals(&[(0, 1e300)]), None);
        // A day of water levels at 1 mm resolution, tide plus noise, every 10 s: about one
        // byte a point, where XOR-ed floats take several.
        let mut seed = 3u64;
        let points: Vec<(i64, f64)> = (0..360)
            .map(|i| {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let noise = (seed >> 61) as i64 - 4;
                let mm = 1_500 + (800.0 * (i as f64 / 4_464.0 * std::f64::consts::TAU).sin()) as i64 + noise;
                (1_790_000_000_000 + i * 10_000, mm as f64 / 1_000.0)
            })
            .collect();
        let size = round_trip(&points);
        assert!(size < 360, "{size} bytes for 360 points");
    }

    #[test]
    fn regular_samples_take_few_bits() {
        // An hour of a water level every 10 s at 1 mm resolution, slowly rising.
        let points: Vec<(i64, f64)> =
            (0..360).map(|i| (1_790_000_000_000 + i * 10_000, 150.0 + (i / 30) as f64 / 10.0)).collect();
        let size = round_trip(&points);
        assert!(size < 360 * 2, "{size} bytes for 360 points");
    }

    #[test]
    fn corrupt_chunks_are_refused_without_allocating_for_them() {
        let good = encode(&[(5, 1.0), (6, 2.0), (17, 2.5)]);
        let mut out = Vec::new();
        for cut in 0..good.len() {
            assert!(decode_into(&good[..cut], &mut out).is_none(), "cut at {cut}");
        }
        let mut huge_count = vec![VERSION, 0xff, 0xff, 0xff, 0xff, 0x0f, MODE_XOR];
        huge_count.extend_from_slice(&[0; 16]);
        assert!(decode_into(&huge_count, &mut out).is_none());
        let mut trailing = good.clone();
        trailing.push(0xff);
        assert!(decode_into(&trailing, &mut out).is_none());
        assert!(decode_into(&[1, 0], &mut out).is_none(), "another version");
    }

    #[test]
    fn windows_are_aligned_hours() {
        assert_eq!(window_start(1_790_000_000_000), 1_789_999_200_000);
        assert_eq!(window_start(-1), -WINDOW_MS);
        assert_eq!(window_start(0), 0);
    }
}
