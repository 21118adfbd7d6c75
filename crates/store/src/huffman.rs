//! A canonical prefix code (Huffman's, limited to [`MAX_LEN`] bits) over byte symbols, built
//! per block from the block's own symbol counts: the entropy stage of day blocks
//! (`chunk.rs`, version 5).
//!
//! Why not a Rice code there: the residuals of a day block's values around their prediction
//! are spread almost evenly over a few units of the sensor's resolution (its noise), and a
//! Rice code spends up to a bit a point more than such a distribution needs; a code built for
//! the block's own counts spends a few hundredths. Every code is at least one bit long, so a
//! block never holds more symbols than it has bits, which bounds what a corrupt count can ask
//! a decoder to allocate.

use crate::chunk::{BitReader, BitWriter};

/// The longest code, in bits: the decoder's table has `2^MAX_LEN` entries.
pub const MAX_LEN: u32 = 12;

/// How many symbols there are: every byte.
pub const SYMBOLS: usize = 256;

/// The code length of each symbol (0 for a symbol that never occurs) that spends the fewest
/// bits on `counts` with no code longer than [`MAX_LEN`]; a lone symbol gets one bit.
pub fn lengths(counts: &[u64; SYMBOLS]) -> [u8; SYMBOLS] {
    let mut weights = *counts;
    loop {
        let lengths = unlimited_lengths(&weights);
        if lengths.iter().all(|&l| u32::from(l) <= MAX_LEN) {
            return lengths;
        }
        // Flattening the counts shortens the longest codes; halving until they fit costs
        // little on real data, where codes past 12 bits carry under 1/4096 of the symbols.
        for w in weights.iter_mut().filter(|w| **w > 0) {
            *w = (*w).div_ceil(2);
        }
    }
}

/// Huffman's code lengths for `counts`, with no limit.
fn unlimited_lengths(counts: &[u64; SYMBOLS]) -> [u8; SYMBOLS] {
    use std::cmp::Reverse;
    let mut lengths = [0u8; SYMBOLS];
    let used: Vec<usize> = (0..SYMBOLS).filter(|&s| counts[s] > 0).collect();
    if let [only] = used[..] {
        lengths[only] = 1;
        return lengths;
    }
    // Nodes: the used symbols first, then the merged pairs; `parent` links each to its pair.
    let mut parent = vec![usize::MAX; 2 * used.len()];
    let mut heap: std::collections::BinaryHeap<Reverse<(u64, usize)>> =
        used.iter().enumerate().map(|(node, &s)| Reverse((counts[s], node))).collect();
    let mut next = used.len();
    while let (Some(Reverse((a, x))), Some(Reverse((b, y)))) = (heap.pop(), heap.pop()) {
        parent[x] = next;
        parent[y] = next;
        heap.push(Reverse((a + b, next)));
        next += 1;
    }
    for (node, &s) in used.iter().enumerate() {
        let (mut depth, mut at) = (0u8, node);
        while parent[at] != usize::MAX {
            at = parent[at];
            depth = depth.saturating_add(1);
        }
        lengths[s] = depth;
    }
    lengths
}

/// The canonical codes of `lengths` (shorter codes first, then by symbol, as DEFLATE's);
/// `None` if the lengths cannot all be given codes (more than a prefix code allows) or one
/// is over [`MAX_LEN`].
pub fn codes(lengths: &[u8; SYMBOLS]) -> Option<[u16; SYMBOLS]> {
    let mut per_length = [0u32; MAX_LEN as usize + 1];
    for &l in lengths {
        *per_length.get_mut(usize::from(l))? += 1;
    }
    per_length[0] = 0;
    // Kraft's inequality, in units of the longest code.
    let space: u32 = (1..=MAX_LEN).map(|l| per_length[l as usize] << (MAX_LEN - l)).sum();
    if space > 1 << MAX_LEN {
        return None;
    }
    let mut next = [0u32; MAX_LEN as usize + 1];
    let mut code = 0u32;
    for l in 1..=MAX_LEN as usize {
        code = (code + per_length[l - 1]) << 1;
        next[l] = code;
    }
    let mut codes = [0u16; SYMBOLS];
    for (s, &l) in lengths.iter().enumerate() {
        if l > 0 {
            codes[s] = next[usize::from(l)] as u16;
            next[usize::from(l)] += 1;
        }
    }
    Some(codes)
}

/// Writes `lengths` compactly: the highest used symbol, then one nibble per symbol up to it.
pub fn write_lengths(out: &mut Vec<u8>, lengths: &[u8; SYMBOLS]) {
    let top = lengths.iter().rposition(|&l| l > 0).unwrap_or(0);
    out.push(top as u8);
    for pair in lengths[..=top].chunks(2) {
        out.push(pair[0] << 4 | pair.get(1).copied().unwrap_or(0));
    }
}

/// Reads what [`write_lengths`] wrote from the front of `input`, advancing it.
pub fn read_lengths(input: &mut &[u8]) -> Option<[u8; SYMBOLS]> {
    let (&top, rest) = input.split_first()?;
    let (packed, rest) = rest.split_at_checked(usize::from(top) / 2 + 1)?;
    *input = rest;
    let mut lengths = [0u8; SYMBOLS];
    for (i, &b) in packed.iter().enumerate() {
        lengths[2 * i] = b >> 4;
        if let Some(l) = lengths.get_mut(2 * i + 1) {
            *l = b & 0x0f;
        }
    }
    Some(lengths)
}

/// Writes symbols with the codes of some lengths.
pub struct Encoder {
    lengths: [u8; SYMBOLS],
    codes: [u16; SYMBOLS],
}

impl Encoder {
    /// The encoder for `lengths` as [`lengths`] made them; `None` if they are not a code.
    pub fn new(lengths: &[u8; SYMBOLS]) -> Option<Encoder> {
        Some(Encoder { lengths: *lengths, codes: codes(lengths)? })
    }

    /// Appends `symbol`'s code; the symbol must have a length.
    pub fn put(&self, bits: &mut BitWriter, symbol: u8) {
        let s = usize::from(symbol);
        bits.put(u64::from(self.codes[s]), u32::from(self.lengths[s]));
    }
}

/// Reads symbols through a table of every [`MAX_LEN`]-bit prefix.
pub struct Decoder {
    /// Per prefix: the symbol (high byte) and its code's length (low bits); 0 where no code
    /// starts the prefix.
    table: Vec<u16>,
}

impl Decoder {
    /// The decoder for `lengths`; `None` if they are not a prefix code.
    pub fn new(lengths: &[u8; SYMBOLS]) -> Option<Decoder> {
        let codes = codes(lengths)?;
        let mut table = vec![0u16; 1 << MAX_LEN];
        for (s, (&l, &code)) in lengths.iter().zip(&codes).enumerate() {
            if l == 0 {
                continue;
            }
            let shift = MAX_LEN - u32::from(l);
            let start = usize::from(code) << shift;
            table.get_mut(start..start + (1 << shift))?.fill((s as u16) << 8 | u16::from(l));
        }
        Some(Decoder { table })
    }

    /// Reads one symbol; `None` past the end or on bits that start no code.
    pub fn get(&self, bits: &mut BitReader<'_>) -> Option<u8> {
        let entry = *self.table.get(bits.peek(MAX_LEN) as usize)?;
        let length = u32::from(entry & 0xff);
        if length == 0 {
            return None;
        }
        bits.skip(length)?;
        Some((entry >> 8) as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kraft(lengths: &[u8; SYMBOLS]) -> f64 {
        lengths.iter().filter(|&&l| l > 0).map(|&l| 0.5f64.powi(i32::from(l))).sum()
    }

    #[test]
    fn lengths_are_huffman_s_and_complete() {
        let mut counts = [0u64; SYMBOLS];
        counts[..4].copy_from_slice(&[8, 4, 2, 2]);
        let lengths = lengths(&counts);
        assert_eq!(&lengths[..5], &[1, 2, 3, 3, 0]);
        assert_eq!(kraft(&lengths), 1.0);
        let mut one = [0u64; SYMBOLS];
        one[7] = 100;
        assert_eq!(super::lengths(&one)[7], 1, "a lone symbol still takes a bit");
    }

    #[test]
    fn skewed_counts_are_limited_to_max_len() {
        // Fibonacci counts give Huffman codes one bit longer per symbol.
        let mut counts = [0u64; SYMBOLS];
        let (mut a, mut b) = (1u64, 1u64);
        for c in counts.iter_mut().take(40) {
            *c = a;
            (a, b) = (b, a + b);
        }
        let lengths = lengths(&counts);
        assert!(lengths.iter().all(|&l| u32::from(l) <= MAX_LEN));
        assert!(lengths[..40].iter().all(|&l| l > 0));
        assert!(kraft(&lengths) <= 1.0);
    }

    #[test]
    fn lengths_round_trip_and_over_full_codes_are_refused() {
        let mut counts = [0u64; SYMBOLS];
        for (i, c) in counts.iter_mut().enumerate() {
            *c = (i as u64 * 7919) % 1000 + 1;
        }
        let lengths = lengths(&counts);
        let mut out = Vec::new();
        write_lengths(&mut out, &lengths);
        let mut input = &out[..];
        assert_eq!(read_lengths(&mut input), Some(lengths));
        assert!(input.is_empty());
        let mut over = [0u8; SYMBOLS];
        over[..3].fill(1);
        assert!(codes(&over).is_none());
        assert!(Decoder::new(&over).is_none());
    }
}
