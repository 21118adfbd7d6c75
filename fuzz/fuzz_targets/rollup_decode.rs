//! Fuzzes the store's rollup decoder (`rollup::decode`, through `mekong_store::fuzzing`),
//! which reads a day's hourly aggregates back from disk. The day comes from the entry's key,
//! so it is fuzzed too (the first 8 bytes).
//!
//! Properties: no panic; at most one bucket per hour of the day, in order, each holding at
//! least one point; and the buckets, encoded again, decode to the same buckets, bit for bit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mekong_store::fuzzing::{decode_rollup, encode_rollup};
use mekong_store::Bucket;

fn bits(buckets: &[Bucket]) -> Vec<[u64; 9]> {
    buckets
        .iter()
        .map(|b| {
            [
                b.start_ms as u64,
                b.count,
                b.min.to_bits(),
                b.max.to_bits(),
                b.sum.to_bits(),
                b.first.time_ms as u64,
                b.first.value.to_bits(),
                b.last.time_ms as u64,
                b.last.value.to_bits(),
            ]
        })
        .collect()
}

fuzz_target!(|input: &[u8]| {
    let Some((day, bytes)) = input.split_first_chunk::<8>() else { return };
    let day_ms = i64::from_be_bytes(*day);
    let mut buckets = Vec::new();
    let Some(()) = decode_rollup(day_ms, bytes, &mut buckets) else { return };
    assert!(buckets.len() <= 24);
    assert!(buckets.windows(2).all(|w| w[0].start_ms < w[1].start_ms));
    assert!(buckets.iter().all(|b| b.count > 0));
    let again = encode_rollup(day_ms, &buckets);
    let mut decoded = Vec::new();
    decode_rollup(day_ms, &again, &mut decoded).expect("encoded rollups decode");
    assert_eq!(bits(&decoded), bits(&buckets));
});
