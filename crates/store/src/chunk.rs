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
//! more.
//!
//! That is version 4, which ingest writes a few points at a time. Folded blocks (an hour's or
//! a closed day's points, written once each by the upkeep pass) whose values are decimal use
//! version 5, the same header with a code table in place of the Rice parameter
//! (`version 5 | count | mode k | flags | first time | [step] | code lengths | first n`): each
//! further integer `n` is coded as zigzag(n - prediction), where the prediction is the mean of
//! the 32 integers before it carried forward by the slope from the mean of the 32 before those
//! (the previous integer for the first 64 points), in a canonical prefix code built for the
//! block's own residuals (`huffman.rs`; residuals from 255 up as an escape symbol, then their
//! bit length in 6 bits and their bits below the leading one). A reading is a slow signal plus
//! noise: its change from the previous reading carries two samples' noise, its distance from a
//! mean of many about one, and the code fits the residuals' near-even spread where a Rice code
//! wastes up to a bit. On the reference data (`mekong-bench day-blocks`) day blocks take 0.457
//! bytes a point in version 5 against 0.531 in version 4, and decode in half the time. Other
//! modes (raw floats) gain nothing from it, and stay version 4 in any block.
//!
//! Folds write version 6 since. Blocks of version 5 stay as they are (a day file written
//! again copies the blocks of series with no late points) and are still read; a block that
//! late points join is encoded again, in version 6. Version 6 (`version 6 | count | mode k +
//! 16 * flags | first time's day zigzag varint | its ms in the day varint | [step varint] |
//! probability classes | first n | [bits length varint, bits] | rANS stream`) predicts each
//! integer by the least-squares parabola through the 224 before it (fewer at the block's
//! start: [`FitPredictor`]), negates the residual when the prediction lies below the integer
//! it rounds to, and codes the residuals' symbols (as version 5's, escape included) with a
//! static rANS coder whose table is a nibble per symbol (`rans.rs`). The bit stream holds
//! irregular times and escaped residuals only; flag `2` says it is there. On the reference
//! data: 0.4411 bytes a point, against 0.457 in version 5 (parabola 0.0075, the mirrored
//! residuals 0.0019, rANS against whole-bit codes 0.0057, the shorter header 0.0008).
//!
//! A fold of the write log (`store/log.rs`) joins a series' chunks of one window from many
//! write groups. Where each of them says in its header alone where its points start and end (a
//! chunk of regular times) and each starts after the one before ends, it lists them as they
//! are, as version 7 (`version 7 | count varint | chunks varint | (length varint | chunk of
//! version 4)...`), rather than decoding their points and encoding them again: the decoding
//! and encoding were half of the fold's time at fifty readings a pack. A listed chunk keeps
//! its header, so chunks of few points are merged as before ([`LIST_MIN_POINTS`]). Lists are
//! in sled for the open hour only: the upkeep encodes the hour's points as a block.
//!
//! Every read is bounds-checked: a corrupt chunk is an error, never a panic or a large
//! allocation.

use crate::varint::{get_varint, put_varint, unzigzag, zigzag};
use crate::{huffman, rans};

/// Every point of a chunk lies in one window of this many milliseconds (aligned to the epoch),
/// so a range query knows how far before `from` a chunk holding its points can start.
pub const WINDOW_MS: i64 = 3_600_000;

/// The version of chunks that ingest writes, and of hour blocks.
const VERSION: u8 = 4;

/// The version of day blocks whose values are decimal: predicted values, residuals in a
/// prefix code. Written until version 6; still read.
const VERSION_PREDICTED: u8 = 5;

/// The version of day blocks whose values are decimal since: a least-squares parabola's
/// prediction, residuals mirrored by the side of the integer the prediction falls on, in a
/// rANS code.
const VERSION_FITTED: u8 = 6;

/// The version of a fold's chunk that lists ingest chunks (version 4) end to end: [`list`].
const VERSION_LIST: u8 = 7;

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
    [VERSION, VERSION_PREDICTED, VERSION_FITTED, VERSION_LIST].contains(&version).then_some(())?;
    get_varint(&mut rest)
}

/// The first and last time of an ingest chunk (version 4), read from its header alone: known
/// for a chunk of one point or of regular, increasing times; `None` for any other.
pub fn span(bytes: &[u8]) -> Option<(i64, i64)> {
    let (&VERSION, mut rest) = bytes.split_first()? else { return None };
    let count = get_varint(&mut rest)?;
    let (_mode, rest) = rest.split_first()?;
    let (&flags, rest) = rest.split_first()?;
    let (head, mut rest) = rest.split_at_checked(8)?;
    let t0 = i64::from_be_bytes(head.try_into().ok()?);
    match count {
        0 => None,
        1 => Some((t0, t0)),
        _ if flags & REGULAR != 0 => {
            let step = unzigzag(get_varint(&mut rest)?);
            let last = step.checked_mul(i64::try_from(count - 1).ok()?).and_then(|d| t0.checked_add(d))?;
            (step > 0).then_some((t0, last))
        }
        _ => None,
    }
}

/// The fewest points of a chunk that [`list`] lists. A listed chunk keeps its header and
/// length, about 17 bytes, where a merged chunk spends under a byte a point: six chunks of one
/// point take 105 bytes listed and 18 merged, six of fifty regular points 292 listed and 306
/// merged (the merged chunk's times are no longer regular). Few points cost little to decode
/// and encode again.
const LIST_MIN_POINTS: u64 = 8;

/// The ingest chunks `chunks` (version 4), in their order, as one chunk of version 7 that
/// lists them unchanged, for a fold that would otherwise decode and encode their points again;
/// `None` unless each one's [`span`] is known and starts after the one before it ends, so that
/// the list's points are sorted by time, each time once, as every chunk's are, and each holds
/// at least [`LIST_MIN_POINTS`].
pub fn list(chunks: &[&[u8]]) -> Option<Vec<u8>> {
    let mut count = 0u64;
    let mut last = None;
    for chunk in chunks {
        let (first, end) = span(chunk)?;
        if last.is_some_and(|last| first <= last) {
            return None;
        }
        last = Some(end);
        let points = get_varint(&mut &chunk[1..])?;
        if points < LIST_MIN_POINTS {
            return None;
        }
        count = count.checked_add(points)?;
    }
    let mut out = Vec::with_capacity(chunks.iter().map(|c| c.len() + 3).sum::<usize>() + 12);
    out.push(VERSION_LIST);
    put_varint(&mut out, count);
    put_varint(&mut out, chunks.len() as u64);
    for chunk in chunks {
        put_varint(&mut out, chunk.len() as u64);
        out.extend_from_slice(chunk);
    }
    Some(out)
}

/// Decodes a chunk of version 7 (`rest` after its version byte), appending its points to
/// `out`: each listed chunk must be of version 4 and start after the one before ends, and the
/// points must be as many as the header says.
fn decode_list(mut rest: &[u8], out: &mut Vec<(i64, f64)>) -> Option<()> {
    let count = get_varint(&mut rest)?;
    let chunks = get_varint(&mut rest)?;
    let start = out.len();
    for _ in 0..chunks {
        let length = usize::try_from(get_varint(&mut rest)?).ok()?;
        let (chunk, tail) = rest.split_at_checked(length)?;
        rest = tail;
        if chunk.first() != Some(&VERSION) {
            return None;
        }
        let before = out.len();
        let last = out[start..].last().map(|p| p.0);
        decode_into(chunk, out)?;
        match (last, out.get(before)) {
            (_, None) => return None,
            (Some(last), Some(&(first, _))) if first <= last => return None,
            _ => {}
        }
    }
    (rest.is_empty() && (out.len() - start) as u64 == count).then_some(())
}

/// The smallest number of decimals `k` such that every value is exactly `n / 10^k` for an
/// integer `n` below 2^53, and those integers in `ints`; `None` (and `ints` cleared) if there
/// is none up to [`MAX_DECIMALS`]. The decimals and the integers in one pass per `k`: the
/// encoders need both, and scaling every value twice, through libm's `round`, was a fifth of
/// encoding an ingest chunk of fifty points (README, "The ingest thread alone").
pub fn decimals(values: impl Iterator<Item = f64> + Clone, ints: &mut Vec<i64>) -> Option<u8> {
    'k: for k in 0..=MAX_DECIMALS {
        let scale = scale_of(k);
        ints.clear();
        for v in values.clone() {
            let Some(n) = scaled(v, scale) else { continue 'k };
            ints.push(n);
        }
        return Some(k);
    }
    ints.clear();
    None
}

/// `10^k`.
pub fn scale_of(k: u8) -> f64 {
    10f64.powi(i32::from(k))
}

/// `v * scale` as an integer, if dividing that integer by `scale` gives back `v` bit for bit.
pub fn scaled(v: f64, scale: f64) -> Option<i64> {
    let n = round_below_2_53(v * scale)?;
    // Compared through the integer, as the decoder computes it: -0.0 does not survive that.
    ((n as f64 / scale).to_bits() == v.to_bits()).then_some(n)
}

/// `x` rounded to the nearest integer, halves away from zero (as [`f64::round`]), if that is
/// below 2^53 in magnitude; `None` otherwise, and for NaN and the infinities. `f64::round` is a
/// call into libm on x86-64's baseline, whose SSE2 has no such rounding instruction.
fn round_below_2_53(x: f64) -> Option<i64> {
    // Below 2^53 every truncation and fraction is exact; at 2^53 and above, every double is
    // an integer already, and too large. Not less: also NaN.
    if x.abs().partial_cmp(&9_007_199_254_740_992.0) != Some(std::cmp::Ordering::Less) {
        return None;
    }
    let whole = x as i64;
    let fraction = x - whole as f64;
    let n = if fraction >= 0.5 {
        whole + 1
    } else if fraction <= -0.5 {
        whole - 1
    } else {
        whole
    };
    // x just under 2^53 is an integer (doubles there are a whole unit apart), so no rounding
    // reaches 2^53.
    Some(n)
}

/// Header flag: every delta of the chunk's times is the same, written once; no time bits.
const REGULAR: u8 = 1;

/// Header flag of version 6: a bit stream (irregular times, escaped residuals) precedes the
/// residuals' symbols, its length in bytes ahead of it. Without it, there are no such bits.
const BITS: u8 = 2;

/// Longest unary quotient of a Rice code before the escape (a raw 64-bit value).
const RICE_ESCAPE: u64 = 16;

/// The Rice parameter that codes `values` in the fewest bits (the smallest such, on a tie).
fn rice_parameter(values: &[u64]) -> u8 {
    let cost = |k: u32| -> u64 {
        values.iter().map(|&z| if z >> k >= RICE_ESCAPE { RICE_ESCAPE + 64 } else { u64::from(k) + 1 + (z >> k) }).sum()
    };
    // Past the bit length of the largest value every quotient is 0, so each larger parameter
    // costs a bit a value more: the search stops there, rather than trying all 41 for the
    // few small deltas of an ingest chunk.
    let widest = values.iter().max().map_or(0, |&z| u64::BITS - z.leading_zeros());
    (0..=widest.min(40)).min_by_key(|&k| cost(k)).unwrap_or(0) as u8
}

/// Encodes points sorted by time, with distinct times, as a chunk of version 4: what ingest
/// writes, a few points at a time.
pub fn encode(points: &[(i64, f64)]) -> Vec<u8> {
    encode_as(points, VERSION)
}

/// Encodes the points of a folded block, an hour's or a day's (sorted by time, with distinct
/// times), in the smallest form: version 5 when the values are decimal, else version 4 as
/// [`encode`]. Folds write blocks once each, away from ingest's path, so the block's code is
/// worth building.
pub fn encode_block(points: &[(i64, f64)]) -> Vec<u8> {
    encode_as(points, VERSION_FITTED)
}

/// Encodes a block as version 5 did (mean-based prediction) where it applies: what stores
/// written before version 6 hold, kept for the tests that they still decode and for
/// `mekong-bench day-blocks`' comparison.
#[cfg(any(test, feature = "fuzzing"))]
pub fn encode_block_v5(points: &[(i64, f64)]) -> Vec<u8> {
    encode_as(points, VERSION_PREDICTED)
}

/// Encodes `points` as `version` (4, 5 or 6), falling back to 4 for values that are not
/// decimal.
fn encode_as(points: &[(i64, f64)], version: u8) -> Vec<u8> {
    // What the value stream codes per further point, zigzagged: the change of the scaled
    // integer (version 4), or its difference from the prediction (version 5).
    let mut ints = Vec::with_capacity(points.len());
    let decimals = decimals(points.iter().map(|p| p.1), &mut ints);
    let version = if decimals.is_some() { version } else { VERSION };
    let predicted = version != VERSION;
    let mut out = Vec::with_capacity(32 + points.len() * 2);
    out.push(version);
    put_varint(&mut out, points.len() as u64);
    let Some(&(t0, v0)) = points.first() else {
        return out;
    };
    let step = points.get(1).map_or(0, |p| p.0.wrapping_sub(t0));
    let regular = points.windows(2).all(|w| w[1].0.wrapping_sub(w[0].0) == step);
    let coded: Vec<u64> = if predicted {
        let mut predictor = Prediction::new(version, ints[0]);
        ints[1..]
            .iter()
            .map(|&n| {
                let z = zigzag(predictor.residual(n));
                predictor.push(n);
                z
            })
            .collect()
    } else {
        ints.windows(2).map(|w| zigzag(w[1].wrapping_sub(w[0]))).collect()
    };
    let fitted = version == VERSION_FITTED && predicted;
    // Where version 6's mode and flags go: BITS is set there once the bits are written.
    let flags_at = out.len();
    let flags = if regular { REGULAR } else { 0 };
    if fitted {
        // Mode and flags in one byte; the first time as its day and its time in the day
        // (3 bytes for a block that starts a day, where the ms since 1970 take 6); the step,
        // positive in sorted times, unzigzagged.
        out.push(decimals.unwrap_or(0) | flags << 4);
        put_varint(&mut out, zigzag(t0.div_euclid(DAY_MS)));
        put_varint(&mut out, t0.rem_euclid(DAY_MS) as u64);
        if regular {
            put_varint(&mut out, step as u64);
        }
    } else {
        out.push(decimals.unwrap_or(MODE_XOR));
        out.push(flags);
        out.extend_from_slice(&t0.to_be_bytes());
        if regular {
            put_varint(&mut out, zigzag(step));
        }
    }
    // Only version 4 codes its values with a Rice code; the others' parameter goes unused.
    let rice = if predicted { 0 } else { rice_parameter(&coded) };
    let (mut huffman, mut ranged) = (None, None);
    if let Some(&n0) = ints.first() {
        if predicted {
            let mut counts = [0u64; huffman::SYMBOLS];
            for &z in &coded {
                counts[symbol_of(z)] += 1;
            }
            if version == VERSION_FITTED {
                let classes = rans::classes(&counts);
                rans::write_classes(&mut out, &classes);
                ranged = rans::Encoder::new(&classes);
                if ranged.is_none() {
                    // Not met by any table `classes` makes; version 5 codes any residuals.
                    return encode_as(points, VERSION_PREDICTED);
                }
            } else {
                let lengths = huffman::lengths(&counts);
                huffman::write_lengths(&mut out, &lengths);
                huffman = huffman::Encoder::new(&lengths);
            }
        } else {
            out.push(rice);
        }
        put_varint(&mut out, zigzag(n0));
    } else {
        out.extend_from_slice(&v0.to_bits().to_be_bytes());
    }
    // Version 6 codes the residuals' symbols apart, after the bits (times, escaped residuals).
    let mut symbols = Vec::new();
    let mut bits = BitWriter::new(if ranged.is_some() { Vec::new() } else { std::mem::take(&mut out) });
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
        if predicted {
            let z = coded[i];
            let symbol = symbol_of(z);
            match &huffman {
                Some(code) => code.put(&mut bits, symbol as u8),
                None => symbols.push(symbol as u8),
            }
            if symbol == ESCAPE {
                // The bit length of z (at least 8), then its bits below the leading one.
                let length = 64 - z.leading_zeros();
                bits.put(u64::from(length - 1), 6);
                bits.put(z, length - 1);
            }
            continue;
        }
        if decimals.is_some() {
            let z = coded[i];
            let q = z >> rice;
            if q >= RICE_ESCAPE {
                bits.put(u64::MAX, RICE_ESCAPE as u32);
                bits.put(z, 64);
            } else if q as u32 + 1 + u32::from(rice) <= 32 {
                // The quotient's ones, its zero and the remainder in one put, as a narrow
                // parameter and a short quotient nearly always allow: the same bits.
                let remainder = z & ((1u64 << rice) - 1);
                bits.put(((((1u64 << q) - 1) << 1) << rice) | remainder, q as u32 + 1 + u32::from(rice));
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
    let stream = bits.finish();
    let Some(ranged) = ranged else {
        return stream;
    };
    if !stream.is_empty() {
        out[flags_at] |= BITS << 4;
        put_varint(&mut out, stream.len() as u64);
        out.extend_from_slice(&stream);
    }
    ranged.encode(&symbols, &mut out);
    out
}

/// Version 5's symbol for a zigzagged residual: itself below [`ESCAPE`], else the escape.
fn symbol_of(z: u64) -> usize {
    z.min(ESCAPE as u64) as usize
}

/// The symbol of version 5's code after which a residual follows in full.
const ESCAPE: usize = 255;

/// Points a version 5 prediction looks back over, in two halves of this many.
const LOOKBACK: usize = 32;

/// Version 5's prediction of a decimal series' next integer from the ones before it: the mean
/// of the last [`LOOKBACK`] points, carried forward by the slope between that mean and the
/// one of the [`LOOKBACK`] before (before there are that many, the last point).
///
/// Sensor readings are a slow signal plus noise that is nearly independent from one sample
/// to the next. The change from the previous reading carries the noise of two samples; the
/// distance from a mean of many carries the noise of one, which on the reference data makes
/// the residuals 0.7 bits a point cheaper than the changes.
struct Predictor {
    /// The last `2 * LOOKBACK` integers, by index modulo its length (0 before the first).
    ring: [i64; 2 * LOOKBACK],
    /// How many integers were pushed.
    pushed: usize,
    /// The sum of the last `LOOKBACK` integers, and of the `LOOKBACK` before them.
    recent: i64,
    older: i64,
}

impl Predictor {
    fn new(first: i64) -> Predictor {
        let mut predictor = Predictor { ring: [0; 2 * LOOKBACK], pushed: 0, recent: 0, older: 0 };
        predictor.push(first);
        predictor
    }

    /// The prediction of the next integer.
    fn predict(&self) -> i64 {
        if self.pushed < 2 * LOOKBACK {
            return self.ring[(self.pushed + 2 * LOOKBACK - 1) % (2 * LOOKBACK)];
        }
        // The recent mean sits (LOOKBACK - 1) / 2 points back from the last, so the next point
        // is (LOOKBACK + 1) / 2 slopes past it; the slope is the difference of the two means
        // over LOOKBACK points. In i128, rounded to nearest: no overflow whatever the sums.
        let w = LOOKBACK as i128;
        let (recent, older) = (i128::from(self.recent), i128::from(self.older));
        let numerator = 2 * recent * w + (recent - older) * (w + 1);
        let denominator = 2 * w * w;
        let predicted = (numerator + denominator / 2).div_euclid(denominator);
        predicted.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    /// Takes in the next integer (below 2^53 in magnitude, so that the sums cannot overflow).
    fn push(&mut self, n: i64) {
        let slot = self.pushed % (2 * LOOKBACK);
        let middle = (self.pushed + LOOKBACK) % (2 * LOOKBACK);
        // ring[slot] is the integer 2 * LOOKBACK back, ring[middle] the one LOOKBACK back.
        self.recent = self.recent.wrapping_add(n).wrapping_sub(self.ring[middle]);
        self.older = self.older.wrapping_add(self.ring[middle]).wrapping_sub(self.ring[slot]);
        self.ring[slot] = n;
        self.pushed += 1;
    }
}

/// The prediction of a predicted block's version: version 5's means or version 6's fit.
enum Prediction {
    Means(Box<Predictor>),
    Fit(Box<FitPredictor>),
}

impl Prediction {
    /// The prediction for `version` (5 or 6), after the block's first integer.
    fn new(version: u8, first: i64) -> Prediction {
        if version == VERSION_FITTED {
            Prediction::Fit(Box::new(FitPredictor::new(first)))
        } else {
            Prediction::Means(Box::new(Predictor::new(first)))
        }
    }

    /// What the block codes for the next integer `n`: its distance from the prediction,
    /// negated in version 6 when the prediction lies below the integer it rounds to.
    fn residual(&self, n: i64) -> i64 {
        match self {
            Prediction::Means(p) => n.wrapping_sub(p.predict()),
            Prediction::Fit(p) => {
                let (rounded, below) = p.predict();
                let d = n.wrapping_sub(rounded);
                if below {
                    d.wrapping_neg()
                } else {
                    d
                }
            }
        }
    }

    /// The next integer from what [`Prediction::residual`] gave for it.
    fn integer(&self, residual: i64) -> i64 {
        match self {
            Prediction::Means(p) => p.predict().wrapping_add(residual),
            Prediction::Fit(p) => {
                let (rounded, below) = p.predict();
                rounded.wrapping_add(if below { residual.wrapping_neg() } else { residual })
            }
        }
    }

    /// Takes in the next integer (below 2^53 in magnitude).
    fn push(&mut self, n: i64) {
        match self {
            Prediction::Means(p) => p.push(n),
            Prediction::Fit(p) => p.push(n),
        }
    }
}

/// Points version 6's fit looks back over, at most.
const FIT_WINDOW: usize = 224;

/// Below this many points before, version 6 predicts the last one; below [`FIT_CURVED`], it
/// extends a straight line fitted to them.
const FIT_LINE: usize = 6;

/// From this many points before, version 6's fit is a parabola.
const FIT_CURVED: usize = 48;

/// Fractional bits of version 6's fixed-point weights and predictions.
const FIT_FRACTION: u32 = 48;

/// Version 6's weights of the sums of `lag^k * n` (k = 0, 1, 2) by the number of points in the
/// window (0 to [`FIT_WINDOW`]), in fixed point: the fit's value at lag 0 is the first row of
/// the normal equations' adjugate times the sums, over their determinant. Computed once, in
/// integers (floored), so that every machine predicts alike; a multiplication per sum then
/// stands for a 128-bit division per point.
fn fit_weights() -> &'static [[i128; 3]] {
    static WEIGHTS: std::sync::OnceLock<Vec<[i128; 3]>> = std::sync::OnceLock::new();
    WEIGHTS.get_or_init(|| {
        (0..=FIT_WINDOW)
            .map(|m| {
                if m < FIT_LINE {
                    return [0; 3];
                }
                // Power sums of the lags 1..=m.
                let k = m as i128;
                let p1 = k * (k + 1) / 2;
                let p2 = k * (k + 1) * (2 * k + 1) / 6;
                let (row, determinant) = if m < FIT_CURVED {
                    ([p2, -p1, 0], k * p2 - p1 * p1)
                } else {
                    let p3 = p1 * p1;
                    let p4 = k * (k + 1) * (2 * k + 1) * (3 * k * k + 3 * k - 1) / 30;
                    let row = [p2 * p4 - p3 * p3, p2 * p3 - p1 * p4, p1 * p3 - p2 * p2];
                    (row, k * row[0] + p1 * row[1] + p2 * row[2])
                };
                row.map(|c| (c << FIT_FRACTION).div_euclid(determinant))
            })
            .collect()
    })
}

/// Version 6's prediction of a decimal series' next integer: the value at the next point of
/// the least-squares parabola through the last [`FIT_WINDOW`] integers (through fewer at a
/// block's start: a line, or the last point), in integer arithmetic (fixed point with
/// [`FIT_FRACTION`] bits), so that encoder and decoder agree to the bit on any machine.
///
/// A mean, carried forward by a slope (version 5), follows a tide's curve only over a few
/// dozen points before the curve bends it off; a parabola follows it over a few hundred,
/// and the more points the prediction averages, the less of their noise it carries. On the
/// reference data that takes 0.0075 bytes a point off the residuals' entropy. The prediction
/// is a rational number; where it falls below the integer it rounds to, the residual is
/// negated, so that the code sees every residual from the same side of the prediction: an
/// integer 0.3 below the prediction is then as likely as one 0.3 above it was (0.0019 bytes a
/// point).
struct FitPredictor {
    /// The last [`FIT_WINDOW`] integers, by push index modulo the window.
    ring: [i64; FIT_WINDOW],
    /// How many integers were pushed.
    pushed: usize,
    /// Sums over the window of `lag^k * n` for k = 0, 1, 2, the last integer at lag 1.
    sums: [i128; 3],
}

impl FitPredictor {
    fn new(first: i64) -> FitPredictor {
        let mut predictor = FitPredictor { ring: [0; FIT_WINDOW], pushed: 0, sums: [0; 3] };
        predictor.push(first);
        predictor
    }

    /// The prediction rounded to the nearest integer (halves up), and whether the
    /// prediction lies below that integer.
    fn predict(&self) -> (i64, bool) {
        if self.pushed < FIT_LINE {
            return (self.ring[(self.pushed + FIT_WINDOW - 1) % FIT_WINDOW], false);
        }
        let Some(weights) = fit_weights().get(self.pushed.min(FIT_WINDOW)) else {
            return (0, false);
        };
        let [s0, s1, s2] = self.sums;
        let fixed = weights[0]
            .wrapping_mul(s0)
            .wrapping_add(weights[1].wrapping_mul(s1))
            .wrapping_add(weights[2].wrapping_mul(s2));
        let rounded = fixed.wrapping_add(1 << (FIT_FRACTION - 1)) >> FIT_FRACTION;
        let below = fixed & ((1 << FIT_FRACTION) - 1) >= 1 << (FIT_FRACTION - 1);
        (rounded.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64, below)
    }

    /// Takes in the next integer: every lag grows by one, the oldest leaves the window.
    fn push(&mut self, n: i64) {
        let slot = self.pushed % FIT_WINDOW;
        // The integer at lag FIT_WINDOW, which leaves (0 while the window is filling).
        let out = i128::from(if self.pushed >= FIT_WINDOW { self.ring[slot] } else { 0 });
        let (n, w) = (i128::from(n), FIT_WINDOW as i128);
        let [s0, s1, s2] = self.sums;
        // sum (lag + 1)^k * n over the lags 1..w-1, plus the new integer at lag 1.
        let kept0 = s0.wrapping_sub(out);
        let kept1 = s1.wrapping_sub(out.wrapping_mul(w));
        let kept2 = s2.wrapping_sub(out.wrapping_mul(w * w));
        self.sums = [
            kept0.wrapping_add(n),
            kept1.wrapping_add(kept0).wrapping_add(n),
            kept2.wrapping_add(kept1.wrapping_mul(2)).wrapping_add(kept0).wrapping_add(n),
        ];
        self.ring[slot] = n as i64;
        self.pushed += 1;
    }
}

/// How a chunk's values are coded, as its header says.
enum ValueCode<'a> {
    /// Gorilla's XOR of the raw bits.
    Xor,
    /// Decimal integers, their changes in a Rice code of this parameter (version 4).
    Rice { scale: f64, rice: u32 },
    /// Decimal integers, their differences from the prediction in a prefix code (version 5)
    /// or a rANS stream (version 6).
    Predicted { scale: f64, code: Symbols<'a>, predictor: Prediction },
}

/// Where a predicted block's residual symbols are read from.
enum Symbols<'a> {
    /// Version 5: a prefix code, in the bit stream.
    Prefix(huffman::Decoder),
    /// Version 6: a rANS stream of their own.
    Ranged(rans::Stream<'a>),
}

/// Decodes a chunk of any version, appending its points to `out`; `None` if it is
/// malformed.
pub fn decode_into(bytes: &[u8], out: &mut Vec<(i64, f64)>) -> Option<()> {
    let (&version, mut rest) = bytes.split_first()?;
    if version == VERSION_LIST {
        return decode_list(rest, out);
    }
    if version != VERSION && version != VERSION_PREDICTED && version != VERSION_FITTED {
        return None;
    }
    let count = get_varint(&mut rest)?;
    if count == 0 {
        return rest.is_empty().then_some(());
    }
    let fitted = version == VERSION_FITTED;
    let (mode, flags, t0, step, mut rest) = if fitted {
        let (&byte, mut rest) = rest.split_first()?;
        let (mode, flags) = (byte & 0x0f, byte >> 4);
        if flags & !(REGULAR | BITS) != 0 {
            return None;
        }
        let day = unzigzag(get_varint(&mut rest)?);
        let t0 = day.wrapping_mul(DAY_MS).wrapping_add(get_varint(&mut rest)? as i64);
        let step = if flags & REGULAR != 0 { get_varint(&mut rest)? as i64 } else { 0 };
        (mode, flags, t0, step, rest)
    } else {
        let (&mode, rest) = rest.split_first()?;
        let (&flags, rest) = rest.split_first()?;
        if flags & !REGULAR != 0 {
            return None;
        }
        let (head, mut rest) = rest.split_at_checked(8)?;
        let t0 = i64::from_be_bytes(head.try_into().ok()?);
        let step = if flags & REGULAR != 0 { unzigzag(get_varint(&mut rest)?) } else { 0 };
        (mode, flags, t0, step, rest)
    };
    let regular = flags & REGULAR != 0;
    let scale = match mode {
        MODE_XOR if version == VERSION => None,
        k if k <= MAX_DECIMALS => Some(scale_of(k)),
        _ => return None,
    };
    // Version 6's symbol table, ahead of the points; its stream borrows it.
    let ranged = match (scale, version) {
        (Some(_), VERSION_FITTED) => Some(rans::Decoder::new(&rans::read_classes(&mut rest)?)?),
        _ => None,
    };
    let (mut values, mut prev_n, v0) = match scale {
        Some(scale) => {
            let (lengths, rice) = if version == VERSION_PREDICTED {
                (Some(huffman::read_lengths(&mut rest)?), 0)
            } else {
                let rice = if version == VERSION {
                    let (&rice, tail) = rest.split_first()?;
                    rest = tail;
                    rice
                } else {
                    0
                };
                if rice > 40 {
                    return None;
                }
                (None, u32::from(rice))
            };
            let n = unzigzag(get_varint(&mut rest)?);
            if n.unsigned_abs() >= 1 << 53 {
                return None;
            }
            let code = match (lengths, &ranged) {
                (Some(lengths), _) => Some(Symbols::Prefix(huffman::Decoder::new(&lengths)?)),
                (None, Some(decoder)) => {
                    // The bits (times, escaped residuals), then the symbols' stream.
                    let length = if flags & BITS != 0 { usize::try_from(get_varint(&mut rest)?).ok()? } else { 0 };
                    let (bits, symbols) = rest.split_at_checked(length)?;
                    rest = bits;
                    Some(Symbols::Ranged(decoder.start(symbols)?))
                }
                (None, None) => None,
            };
            let code = match code {
                Some(code) => ValueCode::Predicted { scale, code, predictor: Prediction::new(version, n) },
                None => ValueCode::Rice { scale, rice },
            };
            (code, n, (n as f64) / scale)
        }
        None => {
            let (head, tail) = rest.split_at_checked(8)?;
            rest = tail;
            (ValueCode::Xor, 0, f64::from_bits(u64::from_be_bytes(head.try_into().ok()?)))
        }
    };
    let stream = rest;
    // Every further point takes at least one bit of the stream, or (version 6) a tenth of a
    // bit of the symbols' stream: a count the bytes cannot hold is corrupt, and no memory is
    // reserved for it.
    let most = match &values {
        ValueCode::Predicted { code: Symbols::Ranged(symbols), .. } => (symbols.remaining() as u64 + 4) * 8 * 11,
        _ => stream.len() as u64 * 8,
    };
    if count - 1 > most {
        return None;
    }
    // At most a point per bit of the block reserved: a count that is a lie costs no more.
    out.reserve(count.min(bytes.len() as u64 * 8) as usize);
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
        let (n, scale) = match &mut values {
            ValueCode::Xor => {
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
                continue;
            }
            ValueCode::Rice { scale, rice } => {
                let mut q = 0;
                while q < RICE_ESCAPE && bits.get(1)? == 1 {
                    q += 1;
                }
                let z = if q == RICE_ESCAPE { bits.get(64)? } else { q << *rice | bits.get(*rice)? };
                (prev_n.wrapping_add(unzigzag(z)), *scale)
            }
            ValueCode::Predicted { scale, code, predictor } => {
                let symbol = usize::from(match code {
                    Symbols::Prefix(code) => code.get(&mut bits)?,
                    Symbols::Ranged(stream) => stream.get()?,
                });
                let z = if symbol == ESCAPE {
                    let length = bits.get(6)? as u32 + 1;
                    1u64.checked_shl(length - 1)? | bits.get(length - 1)?
                } else {
                    symbol as u64
                };
                let n = predictor.integer(unzigzag(z));
                // Checked before it joins the predictor's sums, which it must not overflow.
                if n.unsigned_abs() >= 1 << 53 {
                    return None;
                }
                predictor.push(n);
                (n, *scale)
            }
        };
        // An integer the encoder cannot have written is corrupt.
        if n.unsigned_abs() >= 1 << 53 {
            return None;
        }
        out.push((t, (n as f64) / scale));
        prev_n = n;
    }
    let symbols_done = match &values {
        ValueCode::Predicted { code: Symbols::Ranged(symbols), .. } => symbols.is_done(),
        _ => true,
    };
    (bits.is_done() && symbols_done).then_some(())
}

/// Appends bits, most significant first, to a byte vector.
pub(crate) struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    used: u32,
}

impl BitWriter {
    fn new(out: Vec<u8>) -> Self {
        BitWriter { out, acc: 0, used: 0 }
    }

    /// Appends the low `n` bits of `v` (n <= 64). Inlined, for the few bits a point of an
    /// ingest chunk takes: as a call, it was 71 instructions a point (callgrind,
    /// `mekong-bench pipeline --readings 50`).
    #[inline(always)]
    pub(crate) fn put(&mut self, v: u64, n: u32) {
        if n > 32 {
            self.put_wide(v, n);
            return;
        }
        // With `used` below 8 between calls, `acc` holds at most 39 bits; and no bits at all
        // (n = 0) leave it as it is.
        let v = v & ((1u64 << n) - 1);
        self.acc = (self.acc << n) | v;
        self.used += n;
        while self.used >= 8 {
            self.used -= 8;
            self.out.push((self.acc >> self.used) as u8);
        }
        self.acc &= (1u64 << self.used) - 1;
    }

    /// [`BitWriter::put`] of more than 32 bits, in two halves.
    #[inline(never)]
    fn put_wide(&mut self, v: u64, n: u32) {
        self.put(v >> 32, n - 32);
        self.put(v & 0xffff_ffff, 32);
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
pub(crate) struct BitReader<'a> {
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
        let v = (self.word() << (self.pos % 8)) >> (64 - n);
        self.pos = end;
        Some(v)
    }

    /// The next `n` bits (n <= 56) without reading them, as if zero bits followed the end.
    pub(crate) fn peek(&self, n: u32) -> u64 {
        (self.word() << (self.pos % 8)) >> (64 - n)
    }

    /// The eight bytes from the one `pos` is in, big-endian, as if zero bytes followed the end.
    #[inline(always)]
    fn word(&self) -> u64 {
        let first = self.pos / 8;
        let mut word = [0u8; 8];
        match self.bytes.get(first..first + 8) {
            // Eight bytes, a length the compiler knows: one load. The copy of what is left
            // near the end is a call to memcpy; when every read made it, decoding an ingest
            // chunk took a fifth to a third longer (`mekong-bench day-blocks`, version 4).
            Some(eight) => word.copy_from_slice(eight),
            None => {
                let left = self.bytes.get(first..).unwrap_or_default();
                word[..left.len()].copy_from_slice(left);
            }
        }
        u64::from_be_bytes(word)
    }

    /// Passes over `n` bits; `None` past the end.
    pub(crate) fn skip(&mut self, n: u32) -> Option<()> {
        let end = self.pos + n as usize;
        (end <= self.bytes.len() * 8).then(|| self.pos = end)
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

    /// The length and FNV-1a hash of version 5's block of the first 100 points of
    /// `water_day(10_000, 0)`, as the encoder of version 5 wrote it (taken from the code before
    /// version 6).
    const OLD_LEN: usize = 69;
    const OLD_HASH: u64 = 9_612_472_828_522_554_850;

    /// Checks that `bytes` decode to `points` bit for bit, and that the header counts them.
    fn check(bytes: &[u8], points: &[(i64, f64)]) {
        let mut out = Vec::new();
        decode_into(bytes, &mut out).unwrap_or_else(|| panic!("decode failed for {points:?}"));
        assert_eq!(out.len(), points.len());
        for (a, b) in out.iter().zip(points) {
            assert_eq!((a.0, a.1.to_bits()), (b.0, b.1.to_bits()), "in {points:?}");
        }
        assert_eq!(count(bytes), Some(points.len() as u64));
    }

    /// Round-trips `points` through every encoder (chunks, blocks, and the blocks of version
    /// 5 that older stores hold); the sizes of the chunk and of the block.
    fn round_trips(points: &[(i64, f64)]) -> (usize, usize) {
        let (chunk, block, old) = (encode(points), encode_block(points), encode_block_v5(points));
        check(&chunk, points);
        check(&block, points);
        check(&old, points);
        assert_eq!(chunk[0], VERSION);
        let decimal = decimals(points.iter().map(|p| p.1), &mut Vec::new()).is_some();
        assert_eq!(block[0], if decimal { VERSION_FITTED } else { VERSION }, "block version for {points:?}");
        assert_eq!(old[0], if decimal { VERSION_PREDICTED } else { VERSION }, "old block version for {points:?}");
        (chunk.len(), block.len())
    }

    fn round_trip(points: &[(i64, f64)]) -> usize {
        round_trips(points).0
    }

    #[test]
    fn the_rice_parameter_is_the_one_a_search_of_all_would_pick() {
        let everyone = |values: &[u64]| {
            let cost = |k: u32| -> u64 {
                values
                    .iter()
                    .map(|&z| if z >> k >= RICE_ESCAPE { RICE_ESCAPE + 64 } else { u64::from(k) + 1 + (z >> k) })
                    .sum()
            };
            (0..=40u32).min_by_key(|&k| cost(k)).unwrap_or(0) as u8
        };
        let mut next = crate::xorshift(29);
        for round in 0..2_000u64 {
            // Values of every width, a few of them far larger than the rest (escapes).
            let width = next() % 65;
            let values: Vec<u64> = (0..next() % 60)
                .map(|_| {
                    let z = if width == 0 { 0 } else { next() >> (64 - width) };
                    if next().is_multiple_of(16) {
                        next()
                    } else {
                        z
                    }
                })
                .collect();
            assert_eq!(rice_parameter(&values), everyone(&values), "round {round}: {values:?}");
        }
        assert_eq!(rice_parameter(&[]), 0);
    }

    #[test]
    fn rounding_and_decimals_are_those_of_f64_round() {
        let reference = |x: f64| {
            let n = x.round();
            (n.abs() < 9_007_199_254_740_992.0).then_some(n as i64)
        };
        let edges = [
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            2.5,
            -2.5,
            0.499_999_999_999_999_94,
            -0.499_999_999_999_999_94,
            4_503_599_627_370_495.5,
            -4_503_599_627_370_495.5,
            9_007_199_254_740_991.0,
            9_007_199_254_740_992.0,
            -9_007_199_254_740_992.0,
            1e300,
            f64::MIN_POSITIVE,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ];
        for x in edges {
            assert_eq!(round_below_2_53(x), reference(x), "{x}");
        }
        let mut next = crate::xorshift(41);
        for _ in 0..200_000 {
            // Any double, and decimals of every scale as sensors send them.
            let any = f64::from_bits(next());
            let decimal = (next() % 2_000_000) as f64 / scale_of((next() % 8) as u8) - 1_000.0;
            let half = ((next() % 1_000_000) as f64 + 0.5) * if next().is_multiple_of(2) { 1.0 } else { -1.0 };
            for x in [any, decimal, half, decimal * 1e6] {
                assert_eq!(round_below_2_53(x), reference(x), "{x:e}");
            }
        }
        // The encoders' pass finds the decimals and the integers that trying each `k` on every
        // value with `scaled`, and scaling them again, find.
        let mut ints = Vec::new();
        for round in 0..2_000 {
            let k = (next() % 9) as u8;
            let points: Vec<(i64, f64)> = (0..next() % 40)
                .map(|i| (i as i64, (next() % 100_000) as f64 / scale_of(k) - if round % 3 == 0 { 50.0 } else { 0.0 }))
                .collect();
            let want = (0..=MAX_DECIMALS).find(|&k| points.iter().all(|p| scaled(p.1, scale_of(k)).is_some()));
            assert_eq!(decimals(points.iter().map(|p| p.1), &mut ints), want, "{points:?}");
            let scaled_all: Vec<i64> = match want {
                Some(k) => points.iter().map(|p| scaled(p.1, scale_of(k)).unwrap_or(i64::MIN)).collect(),
                None => Vec::new(),
            };
            assert_eq!(ints, scaled_all);
        }
    }

    /// A day of water levels at 1 mm resolution (in m), tide plus ±3 mm of noise, every
    /// `step_ms`, with `jitter_ms` of jitter on each time.
    fn water_day(step_ms: i64, jitter_ms: u64) -> Vec<(i64, f64)> {
        let mut next = crate::xorshift(11);
        let day = 1_790_035_200_000 - 1_790_035_200_000 % DAY_MS;
        (0..DAY_MS / step_ms)
            .map(|i| {
                let t = day + i * step_ms + if jitter_ms > 0 { (next() % jitter_ms) as i64 } else { 0 };
                let tide = 900.0 * (i as f64 * step_ms as f64 / 44_712_000.0 * std::f64::consts::TAU).sin();
                let mm = (2_500.0 + tide).round() as i64 + (next() % 7) as i64 - 3;
                (t, mm as f64 / 1_000.0)
            })
            .collect()
    }

    #[test]
    fn chunks_round_trip_bit_for_bit() {
        round_trip(&[]);
        round_trip(&[(1_790_000_000_000, 1.5)]);
        round_trip(&[(1_790_000_000_000, 1.5), (1_790_000_000_001, -0.0), (1_790_000_010_000, f64::MAX)]);
        round_trip(&[(i64::MIN, f64::NAN), (-1, f64::INFINITY), (0, f64::MIN_POSITIVE), (i64::MAX, 0.0)]);
        round_trip(&[(0, f64::NEG_INFINITY), (1, -0.0), (2, 0.0)]);
        round_trip(&[(0, 9_007_199_254_740_991.0), (1, -9_007_199_254_740_991.0), (2, 0.0), (3, 1.0)]);
        let mut next = crate::xorshift(7);
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
        assert_eq!(decimals([1.234, 1.5, -3.0].into_iter(), &mut Vec::new()), Some(3));
        assert_eq!(decimals([12.0, -7.0].into_iter(), &mut Vec::new()), Some(0));
        assert_eq!(decimals([0.1 + 0.2].into_iter(), &mut Vec::new()), None, "0.30000000000000004 has 17 decimals");
        assert_eq!(decimals([-0.0].into_iter(), &mut Vec::new()), None);
        assert_eq!(decimals([f64::NAN].into_iter(), &mut Vec::new()), None);
        assert_eq!(decimals([1e300].into_iter(), &mut Vec::new()), None);
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
    fn decimal_blocks_round_trip_whatever_their_residuals() {
        let mut next = crate::xorshift(19);
        for _ in 0..300 {
            let n = (next() % 300) as usize;
            let k = (next() % 4) as i32;
            let mut t = 1_790_000_000_000 + (next() % 1000) as i64;
            let mut level = (next() % 10_000) as i64 - 5_000;
            let points: Vec<(i64, f64)> = (0..n)
                .map(|_| {
                    t += if next().is_multiple_of(8) { 1 + (next() % 100_000) as i64 } else { 10_000 };
                    level += match next() % 16 {
                        // Jumps past the code's 254 symbols, up to the largest integer kept.
                        0 => (next() % (1 << 40)) as i64 - (1 << 39),
                        1 => (next() % 2_000) as i64 - 1_000,
                        _ => (next() % 9) as i64 - 4,
                    };
                    level = level.clamp(-(1 << 52), 1 << 52);
                    (t, level as f64 / 10f64.powi(k))
                })
                .collect();
            round_trips(&points);
        }
        // Constant values: one bit a point, like the Rice code's zero.
        let flat: Vec<(i64, f64)> = (0..8_640).map(|i| (i * 10_000, 21.5)).collect();
        let (_, block) = round_trips(&flat);
        assert!(block <= 8_640 / 8 + 32, "{block} bytes");
    }

    #[test]
    fn fitted_blocks_round_trip_adversarial_values() {
        let day = 1_790_035_200_000;
        let at = |values: &[f64]| -> Vec<(i64, f64)> {
            values.iter().enumerate().map(|(i, &v)| (day + i as i64 * 10_000, v)).collect()
        };
        // A single point, two, constant values (one symbol: the table's second is unused).
        for values in [&[21.5][..], &[21.5, 21.6], &[-3.0; 5_000], &[0.0; 300]] {
            let (_, block) = round_trips(&at(values));
            assert!(block <= 24 + values.len() / 80, "{block} bytes for {} points", values.len());
        }
        // First times at the ends of i64 and before 1970 (the header splits them into day and
        // time of day), irregular and regular.
        round_trips(&[(i64::MIN, 1.0), (i64::MIN + 1, 2.5), (-1, 3.0), (i64::MAX, -4.0)]);
        round_trips(&[(i64::MAX - 20_000, 1.0), (i64::MAX - 10_000, 2.0), (i64::MAX, 3.0)]);
        round_trips(&(0..50).map(|i| (-86_400_001 + i * 10_000, f64::from(i as i32))).collect::<Vec<_>>());
        // Alternating between two levels, far apart, and between the largest integers kept.
        let alternating: Vec<f64> = (0..3_000).map(|i| if i % 2 == 0 { 12.5 } else { -7_000.25 }).collect();
        round_trips(&at(&alternating));
        let extremes: Vec<f64> =
            (0..500).map(|i| if i % 3 == 0 { 9_007_199_254_740_991.0 } else { -9_007_199_254_740_991.0 }).collect();
        round_trips(&at(&extremes));
        // Mixed decimals (the block's scale is the most any value needs), huge jumps, and every
        // residual symbol up to the escape, with irregular times.
        let mut next = crate::xorshift(23);
        for round in 0..200 {
            let n = 1 + (next() % 2_000) as usize;
            let mut t = day + (next() % 1_000) as i64;
            let points: Vec<(i64, f64)> = (0..n)
                .map(|i| {
                    t += if round % 2 == 0 { 10_000 } else { 1 + (next() % 30_000) as i64 };
                    let v = match next() % 8 {
                        0 => (next() % 1_000_000) as f64 / 1_000.0,
                        1 => -((next() % (1 << 52)) as f64),
                        2 => (next() % 100) as f64 / 10.0,
                        3 => i as f64 * 0.25,
                        _ => ((i as f64 / 50.0).sin() * 500.0).round() + (next() % 7) as f64,
                    };
                    (t, v)
                })
                .collect();
            round_trips(&points);
        }
    }

    #[test]
    fn blocks_of_version_5_still_decode() {
        // Bytes as version 5 wrote them (water levels at 1 mm, every 10 s), pinned: a store
        // written before version 6 holds such blocks.
        let points = water_day(10_000, 0);
        let old = encode_block_v5(&points[..100]);
        let mut hasher = 0xcbf2_9ce4_8422_2325u64;
        for &b in &old {
            hasher = (hasher ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        assert_eq!((old.len(), hasher), (OLD_LEN, OLD_HASH), "version 5's bytes changed");
        check(&old, &points[..100]);
    }

    #[test]
    fn day_blocks_are_smaller_than_chunks_of_the_same_points() {
        // Regular times, jittered times, and a large count (a point a second).
        for (step, jitter, most) in [(10_000, 0, 0.42), (10_000, 50, 2.0), (1_000, 0, 0.42)] {
            let points = water_day(step, jitter);
            let (chunk, block) = round_trips(&points);
            let per_point = block as f64 / points.len() as f64;
            assert!(block < chunk, "{block} bytes, chunk {chunk}, step {step} jitter {jitter}");
            assert!(per_point < most, "{per_point} bytes a point, step {step} jitter {jitter}");
        }
    }

    #[test]
    fn corrupt_blocks_are_refused() {
        let points = water_day(10_000, 0);
        let mut out = Vec::new();
        for (good, version) in
            [(encode_block_v5(&points[..400]), VERSION_PREDICTED), (encode_block(&points[..400]), VERSION_FITTED)]
        {
            assert_eq!(good[0], version);
            for cut in 0..good.len() {
                assert!(decode_into(&good[..cut], &mut out).is_none(), "cut at {cut}");
            }
            let mut trailing = good.clone();
            trailing.push(0x80);
            assert!(decode_into(&trailing, &mut out).is_none());
            // Predicted blocks have no XOR mode.
            let mut xor = good.clone();
            xor[3] = MODE_XOR;
            assert!(decode_into(&xor, &mut out).is_none());
            // A count of 2^32 - 1 in place of 400: refused, with memory for the bytes' worth.
            let mut lying = vec![version, 0xff, 0xff, 0xff, 0xff, 0x0f];
            lying.extend_from_slice(&good[3..]);
            let mut fresh = Vec::new();
            assert!(decode_into(&lying, &mut fresh).is_none());
            assert!(fresh.capacity() <= lying.len() * 8, "{} reserved", fresh.capacity());
        }
        // Version 6's flags: an unknown one is refused.
        let mut flags = encode_block(&points[..400]);
        flags[3] |= 0x40;
        assert!(decode_into(&flags, &mut out).is_none());
        // A count past what the stream's bits can hold, with no memory reserved for it.
        let mut huge = vec![VERSION_PREDICTED, 0xff, 0xff, 0xff, 0xff, 0x0f, 3, REGULAR];
        huge.extend_from_slice(&[0; 8]);
        huge.extend_from_slice(&[20, 0, 0x11, 0]);
        huge.extend_from_slice(&[0; 16]);
        assert!(decode_into(&huge, &mut out).is_none());
        // Over-full code lengths (three codes of one bit), then a valid rest.
        let mut over = vec![VERSION_PREDICTED, 3, 0, REGULAR];
        over.extend_from_slice(&0i64.to_be_bytes());
        over.extend_from_slice(&[20, 2, 0x11, 0x10, 0, 0]);
        assert!(decode_into(&over, &mut out).is_none());
        // The same with lengths that are a code: decodes.
        let mut fine = over.clone();
        fine[13..16].copy_from_slice(&[1, 0x11, 0]);
        fine.truncate(fine.len() - 1);
        assert!(decode_into(&fine, &mut out).is_some(), "{fine:?}");
        // An escaped residual that takes an integer past 2^53.
        let mut big = vec![VERSION_PREDICTED, 2, 0, REGULAR];
        big.extend_from_slice(&0i64.to_be_bytes());
        big.push(20);
        big.push(255);
        big.extend_from_slice(&[0; 127]);
        big.push(0x01);
        big.push(0);
        // Symbol 255 has the only code, one bit (0); then length 64 (6 bits 63) and 63 ones.
        big.extend_from_slice(&[0b0111_1111, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfc]);
        assert!(decode_into(&big, &mut out).is_none());
    }

    #[test]
    fn windows_are_aligned_hours() {
        assert_eq!(window_start(1_790_000_000_000), 1_789_999_200_000);
        assert_eq!(window_start(-1), -WINDOW_MS);
        assert_eq!(window_start(0), 0);
    }

    /// Points `n` apart by `step` ms from `t0`, decimal values.
    fn run(t0: i64, n: i64, step: i64) -> Vec<(i64, f64)> {
        (0..n).map(|i| (t0 + i * step, 1.5 + (i % 7) as f64 * 0.25)).collect()
    }

    #[test]
    fn chunks_that_follow_one_another_are_listed_as_they_are_and_decode_to_all_their_points() {
        let runs = [run(1_000, 50, 1), run(1_050, 8, 1), run(2_000, 9, 500), run(9_000, 8, 1)];
        let chunks: Vec<Vec<u8>> = runs.iter().map(|r| encode(r)).collect();
        let spans: Vec<_> = chunks.iter().map(|c| span(c)).collect();
        assert_eq!(spans, [Some((1_000, 1_049)), Some((1_050, 1_057)), Some((2_000, 6_000)), Some((9_000, 9_007))]);
        assert_eq!(span(&encode(&run(7, 1, 1))), Some((7, 7)));
        let slices: Vec<&[u8]> = chunks.iter().map(|c| &c[..]).collect();
        let listed = list(&slices).expect("the chunks follow one another");
        assert_eq!(listed[0], VERSION_LIST);
        let all: Vec<(i64, f64)> = runs.concat();
        check(&listed, &all);
        // Appended after points a caller already holds, as the log's fold decodes a window.
        let mut out = vec![(5_000_000, 1.0)];
        decode_into(&listed, &mut out).unwrap();
        assert_eq!(out.len(), all.len() + 1);
        // One chunk alone is a list too (the fold lists two or more).
        check(&list(&slices[..1]).unwrap(), &runs[0]);
    }

    #[test]
    fn chunks_that_overlap_or_whose_span_the_header_does_not_tell_are_not_listed() {
        let regular = encode(&run(1_000, 10, 10));
        // Irregular times: where the points end is in the bit stream only.
        let irregular: Vec<(i64, f64)> = (0..10).map(|i| (2_000 + i * i, 1.0)).collect();
        let irregular = encode(&irregular);
        assert_eq!(span(&irregular), None);
        assert_eq!(list(&[&regular, &irregular]), None);
        // Fewer points than are worth their header: merged.
        assert!(list(&[&regular, &encode(&run(2_000, 8, 1))]).is_some());
        assert_eq!(list(&[&regular, &encode(&run(2_000, 7, 1))]), None);
        // Overlapping, touching, or out of order.
        for other in [run(1_050, 10, 10), run(1_090, 10, 1), run(0, 10, 1)] {
            assert_eq!(list(&[&regular, &encode(&other)]), None, "{other:?}");
        }
        // Not an ingest chunk: a block, a list, an empty chunk.
        let block = encode_block(&run(3_000, 300, 10));
        let listed = list(&[&regular]).unwrap();
        for other in [&block[..], &listed[..], &encode(&[])[..]] {
            assert_eq!(span(other), None);
            assert_eq!(list(&[&regular, other]), None);
        }
    }

    #[test]
    fn a_list_that_breaks_its_rules_is_refused() {
        let (a, b) = (encode(&run(1_000, 8, 10)), encode(&run(2_000, 8, 10)));
        let listed = list(&[&a, &b]).unwrap();
        for cut in 0..listed.len() {
            assert!(decode_into(&listed[..cut], &mut Vec::new()).is_none(), "cut at {cut}");
        }
        let mut padded = listed.clone();
        padded.push(0);
        assert!(decode_into(&padded, &mut Vec::new()).is_none());
        // Written by hand: (count, chunks listed) and the chunks.
        let by_hand = |count: u64, chunks: &[&[u8]]| {
            let mut out = vec![VERSION_LIST];
            put_varint(&mut out, count);
            put_varint(&mut out, chunks.len() as u64);
            for c in chunks {
                put_varint(&mut out, c.len() as u64);
                out.extend_from_slice(c);
            }
            out
        };
        assert!(decode_into(&by_hand(16, &[&a, &b]), &mut Vec::new()).is_some());
        // A count that is not the points', chunks out of order, a chunk listed in a list, a
        // block, an empty chunk.
        let block = encode_block(&run(3_000, 8, 10));
        let bad = [
            by_hand(17, &[&a, &b]),
            by_hand(16, &[&b, &a]),
            by_hand(16, &[&a, &a]),
            by_hand(16, &[&a, &list(&[&b]).unwrap()]),
            by_hand(16, &[&a, &block]),
            by_hand(8, &[&a, &encode(&[])]),
        ];
        for (i, bytes) in bad.iter().enumerate() {
            assert!(decode_into(bytes, &mut Vec::new()).is_none(), "case {i}");
        }
    }
}
