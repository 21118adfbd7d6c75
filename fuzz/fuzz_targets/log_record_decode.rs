//! Fuzzes the store's write-log record decoder (`store/log.rs`, through
//! `mekong_store::fuzzing`), which reads back at every opening the write groups a crash or a
//! stop left unfolded.
//!
//! Properties: no panic; every insert lies within the input; the inserts, encoded again as a
//! record, come back in pieces that each decode, hold at most the piece bound unless a single
//! insert passes it alone, and together list the same inserts in the same order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mekong_store::fuzzing::{decode_log_record, encode_log_record, LOG_PIECE_BYTES};

fuzz_target!(|input: &[u8]| {
    let Some(inserts) = decode_log_record(input) else { return };
    let total: usize = inserts.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(total <= input.len());
    let pieces = encode_log_record(&inserts);
    assert_eq!(pieces.is_empty(), inserts.is_empty());
    let mut again = Vec::new();
    for piece in &pieces {
        let decoded = decode_log_record(piece).expect("an encoded piece decodes");
        assert!(!decoded.is_empty());
        assert!(
            piece.len() <= LOG_PIECE_BYTES || decoded.len() == 1,
            "{} bytes, {} inserts",
            piece.len(),
            decoded.len()
        );
        again.extend(decoded);
    }
    assert_eq!(again, inserts);
});
