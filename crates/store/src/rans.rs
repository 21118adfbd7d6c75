//! A static range-asymmetric-numeral-system (rANS) coder over byte symbols, with a table of
//! rounded probabilities built per block: the entropy stage of day blocks of version 6
//! (`chunk.rs`).
//!
//! Why not the prefix code of version 5 (`huffman.rs`): a prefix code spends a whole number
//! of bits on each symbol, and a day block's residuals are spread nearly evenly over a few
//! units (7 for a water level at 1 mm), where whole bits waste about 0.05 of a bit a point.
//! rANS spends the fraction a symbol's probability says, with one table lookup, a multiply
//! and at most a byte read per symbol to decode (Duda, "Asymmetric numeral systems", 2013;
//! the byte-wise form of Giesen's `ryg_rans`). Its table costs what the prefix code's
//! lengths cost: a nibble per symbol, here a probability class in half-bit steps.
//!
//! The state is 32 bits, kept in `[LOWER, LOWER << 8)`; the encoder codes symbols from the
//! last to the first and writes its final state ahead of the bytes it shifted out, so the
//! decoder reads forwards from the start and must end in the state the encoder started
//! from, with every byte read: a check on the whole stream. No symbol's probability is over
//! 15/16, so every symbol costs at least 0.09 bit.

/// How many symbols there are: every byte.
pub const SYMBOLS: usize = 256;

/// Probabilities are in units of `2^-PRECISION`.
const PRECISION: u32 = 12;

/// The sum of a table's frequencies.
const TOTAL: u32 = 1 << PRECISION;

/// The largest frequency of one symbol: 15/16 of the total.
const MOST: u32 = TOTAL - TOTAL / 16;

/// The state's lower bound; the encoder starts and the decoder ends there.
const LOWER: u32 = 1 << 23;

/// The weight of probability class `q` (1 to 15), relative to class 1: `2^((q - 1) / 2)`
/// times 16, rounded. Class 0 is a symbol that does not occur.
const WEIGHTS: [u32; 16] = [0, 16, 23, 32, 45, 64, 91, 128, 181, 256, 362, 512, 724, 1024, 1448, 2048];

/// The probability class of each symbol for `counts`: the most frequent symbol is class 15,
/// and each half bit less probable is one class less, down to 1. A table needs two symbols
/// (none may take the whole total): if fewer occur, symbols 0 and 1 are given classes. Only
/// the encoder computes classes (in floating point: the table is written, never recomputed).
pub fn classes(counts: &[u64; SYMBOLS]) -> [u8; SYMBOLS] {
    let most = counts.iter().copied().max().unwrap_or(0);
    let mut classes = [0u8; SYMBOLS];
    for (class, &count) in classes.iter_mut().zip(counts) {
        if count > 0 {
            // Half bits below the most frequent, rounded: 2 * log2(most / count).
            let halves = (2.0 * (most as f64 / count as f64).log2()).round();
            *class = (15.0 - halves).clamp(1.0, 15.0) as u8;
        }
    }
    for s in [0, 1] {
        if classes.iter().filter(|&&c| c > 0).count() < 2 && classes[s] == 0 {
            classes[s] = 1;
        }
    }
    classes
}

/// Writes `classes` compactly: the highest used symbol, then one nibble per symbol up to it.
pub fn write_classes(out: &mut Vec<u8>, classes: &[u8; SYMBOLS]) {
    let top = classes.iter().rposition(|&l| l > 0).unwrap_or(0);
    out.push(top as u8);
    for pair in classes[..=top].chunks(2) {
        out.push(pair[0] << 4 | pair.get(1).copied().unwrap_or(0));
    }
}

/// Reads what [`write_classes`] wrote from the front of `input`, advancing it.
pub fn read_classes(input: &mut &[u8]) -> Option<[u8; SYMBOLS]> {
    let (&top, rest) = input.split_first()?;
    let (packed, rest) = rest.split_at_checked(usize::from(top) / 2 + 1)?;
    *input = rest;
    let mut classes = [0u8; SYMBOLS];
    for (i, &b) in packed.iter().enumerate() {
        classes[2 * i] = b >> 4;
        if let Some(c) = classes.get_mut(2 * i + 1) {
            *c = b & 0x0f;
        }
    }
    Some(classes)
}

/// The frequencies (summing to `2^PRECISION`) and their running sums that `classes` stand
/// for, the same on both sides: each class's weight scaled down to the total, at least 1,
/// the rounding's remainder given to the first of the most frequent symbols, and what that
/// symbol has past 15/16 of the total to the next most frequent; `None` if fewer than two
/// symbols are used, or the remainder leaves the first less than 1.
fn frequencies(classes: &[u8; SYMBOLS]) -> Option<([u32; SYMBOLS], [u32; SYMBOLS])> {
    let weight = |c: u8| WEIGHTS.get(usize::from(c)).copied().unwrap_or(0);
    let sum: u32 = classes.iter().map(|&c| weight(c)).sum();
    if sum == 0 {
        return None;
    }
    let mut freqs = [0u32; SYMBOLS];
    for (f, &c) in freqs.iter_mut().zip(classes) {
        if c > 0 {
            *f = (weight(c) * TOTAL / sum).max(1);
        }
    }
    let given: u32 = freqs.iter().sum();
    let by_frequency = |freqs: &[u32; SYMBOLS], skip: usize| {
        (0..SYMBOLS).filter(|&s| s != skip && freqs[s] > 0).max_by_key(|&s| (freqs[s], std::cmp::Reverse(s)))
    };
    let largest = by_frequency(&freqs, SYMBOLS)?;
    let next = by_frequency(&freqs, largest)?;
    let adjusted = i64::from(freqs[largest]) + i64::from(TOTAL) - i64::from(given);
    if adjusted < 1 {
        return None;
    }
    let excess = (adjusted - i64::from(MOST)).max(0) as u32;
    freqs[largest] = (adjusted as u32).min(MOST);
    freqs[next] += excess;
    let mut starts = [0u32; SYMBOLS];
    let mut at = 0;
    for (start, &f) in starts.iter_mut().zip(&freqs) {
        *start = at;
        at += f;
    }
    Some((freqs, starts))
}

/// Codes symbols with the frequencies of some classes.
pub struct Encoder {
    freqs: [u32; SYMBOLS],
    starts: [u32; SYMBOLS],
}

impl Encoder {
    /// The encoder for `classes` as [`classes`] made them; `None` if they are not a table.
    pub fn new(classes: &[u8; SYMBOLS]) -> Option<Encoder> {
        let (freqs, starts) = frequencies(classes)?;
        Some(Encoder { freqs, starts })
    }

    /// Appends the code of `symbols` (each with a class) to `out`: the bytes the decoder
    /// reads, first to last.
    pub fn encode(&self, symbols: &[u8], out: &mut Vec<u8>) {
        // Bytes in the order the decoder reads them backwards: reversed at the end.
        let mut bytes = Vec::with_capacity(symbols.len() / 2 + 8);
        let mut x = LOWER;
        for &s in symbols.iter().rev() {
            let (f, start) = (self.freqs[usize::from(s)].max(1), self.starts[usize::from(s)]);
            // The largest state that, coded, stays below LOWER << 8.
            let limit = ((LOWER >> PRECISION) << 8) * f;
            while x >= limit {
                bytes.push(x as u8);
                x >>= 8;
            }
            x = ((x / f) << PRECISION) + x % f + start;
        }
        bytes.extend_from_slice(&x.to_le_bytes());
        out.extend(bytes.iter().rev());
    }
}

/// Reads symbols coded with the frequencies of some classes.
pub struct Decoder {
    freqs: [u32; SYMBOLS],
    starts: [u32; SYMBOLS],
    /// The symbol of each slot of the total.
    slots: Vec<u8>,
}

impl Decoder {
    /// The decoder for `classes`; `None` if they are not a table.
    pub fn new(classes: &[u8; SYMBOLS]) -> Option<Decoder> {
        let (freqs, starts) = frequencies(classes)?;
        let mut slots = vec![0u8; TOTAL as usize];
        for s in 0..SYMBOLS {
            let start = starts[s] as usize;
            slots.get_mut(start..start + freqs[s] as usize)?.fill(s as u8);
        }
        Some(Decoder { freqs, starts, slots })
    }

    /// Starts reading `bytes`; `None` if they cannot hold a state.
    pub fn start<'a>(&'a self, bytes: &'a [u8]) -> Option<Stream<'a>> {
        let (head, rest) = bytes.split_at_checked(4)?;
        let x = u32::from_be_bytes(head.try_into().ok()?);
        (x >= LOWER).then_some(Stream { decoder: self, bytes: rest, x })
    }
}

/// A coded stream being read.
pub struct Stream<'a> {
    decoder: &'a Decoder,
    bytes: &'a [u8],
    x: u32,
}

impl Stream<'_> {
    /// Reads one symbol; `None` if the bytes end first.
    pub fn get(&mut self) -> Option<u8> {
        let slot = self.x & (TOTAL - 1);
        let s = *self.decoder.slots.get(slot as usize)?;
        let (f, start) = (self.decoder.freqs[usize::from(s)], self.decoder.starts[usize::from(s)]);
        self.x = f * (self.x >> PRECISION) + slot - start;
        while self.x < LOWER {
            let (&b, rest) = self.bytes.split_first()?;
            self.bytes = rest;
            self.x = self.x << 8 | u32::from(b);
        }
        Some(s)
    }

    /// How many bytes are left to read.
    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the stream ended where the encoder started: every byte read, in the first
    /// state.
    pub fn is_done(&self) -> bool {
        self.bytes.is_empty() && self.x == LOWER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Codes `symbols` with a table of their own counts and reads them back; the bytes.
    fn round_trip(symbols: &[u8]) -> usize {
        let mut counts = [0u64; SYMBOLS];
        for &s in symbols {
            counts[usize::from(s)] += 1;
        }
        let classes = classes(&counts);
        let mut table = Vec::new();
        write_classes(&mut table, &classes);
        let mut input = &table[..];
        assert_eq!(read_classes(&mut input), Some(classes));
        let mut out = Vec::new();
        Encoder::new(&classes).unwrap().encode(symbols, &mut out);
        let decoder = Decoder::new(&classes).unwrap();
        let mut stream = decoder.start(&out).unwrap();
        for &s in symbols {
            assert_eq!(stream.get(), Some(s));
        }
        assert!(stream.is_done());
        out.len()
    }

    #[test]
    fn symbols_round_trip_in_about_their_entropy() {
        // Seven equally likely symbols: log2(7) = 2.807 bits each.
        let mut seed = 5u64;
        let symbols: Vec<u8> = (0..8_640)
            .map(|_| {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1442695040888963407);
                ((seed >> 33) % 7) as u8
            })
            .collect();
        let bytes = round_trip(&symbols);
        let bits = bytes as f64 * 8.0 / 8_640.0;
        assert!((2.80..2.83).contains(&bits), "{bits} bits a symbol");
        // One symbol only: at least 0.09 bit each, and at most 0.1.
        let bytes = round_trip(&[3; 8_640]);
        assert!((96..=110).contains(&bytes), "{bytes} bytes");
        // Every symbol, some rare; a single one; none.
        let every: Vec<u8> = (0..=255u8).chain(std::iter::repeat_n(0, 5_000)).collect();
        round_trip(&every);
        round_trip(&[200]);
        round_trip(&[]);
    }

    #[test]
    fn frequencies_sum_to_the_total_and_bad_tables_are_refused() {
        let mut classes = [0u8; SYMBOLS];
        classes[..3].copy_from_slice(&[15, 1, 7]);
        let (freqs, starts) = frequencies(&classes).unwrap();
        assert_eq!(freqs.iter().sum::<u32>(), TOTAL);
        assert_eq!(starts[2], freqs[0] + freqs[1]);
        assert!(frequencies(&[0; SYMBOLS]).is_none(), "no symbol");
        let mut one = [0u8; SYMBOLS];
        one[9] = 4;
        assert!(frequencies(&one).is_none(), "one symbol would take the whole total");
        assert!(Decoder::new(&one).is_none());
        // A state below the lower bound, or cut short, is refused.
        let decoder = Decoder::new(&classes).unwrap();
        assert!(decoder.start(&[0, 0, 0, 1]).is_none());
        assert!(decoder.start(&[0x80, 0]).is_none());
    }
}
