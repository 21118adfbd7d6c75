//! Fuzzes the store's chunk decoder (`chunk::decode_into`, through `mekong_store::fuzzing`),
//! which reads every chunk of points back from disk, in every version (4: ingest's chunks;
//! 5: folded blocks with predicted values in a prefix code; 6: folded blocks predicted by a
//! fitted parabola, residuals in a rANS stream; 7: a fold's list of ingest chunks): a damaged
//! file must give an error, never a panic or an allocation its bytes cannot justify.
//!
//! Properties: no panic; the header's count (`chunk::count`) is the number of points
//! decoded; no chunk yields more points than it has bits (plus the first point), or, in
//! version 6, whose symbols cost at least 0.09 bit each, 11 times that; and the decoded
//! points, encoded again by every encoder (`encode`, `encode_block`, `encode_block_v5`),
//! decode to the same points, bit for bit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mekong_store::fuzzing::{chunk_count, decode_chunk, encode_block, encode_block_v5, encode_chunk};

fn bits(points: &[(i64, f64)]) -> Vec<(i64, u64)> {
    points.iter().map(|&(t, v)| (t, v.to_bits())).collect()
}

fuzz_target!(|input: &[u8]| {
    let mut points = Vec::new();
    let Some(()) = decode_chunk(input, &mut points) else { return };
    let per_bit = if input.first() == Some(&6) { 11 } else { 1 };
    assert!(points.len() as u64 <= input.len() as u64 * 8 * per_bit + 1);
    assert_eq!(chunk_count(input), Some(points.len() as u64));
    for again in [encode_chunk(&points), encode_block(&points), encode_block_v5(&points)] {
        let mut decoded = Vec::new();
        decode_chunk(&again, &mut decoded).expect("an encoded chunk decodes");
        assert_eq!(bits(&decoded), bits(&points));
    }
});
