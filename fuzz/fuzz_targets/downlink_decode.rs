//! Fuzzes the downlink decoder (`mekong_schema::downlink::decode`), which a node runs on
//! every message the platform sends it.
//!
//! Properties: no panic; a reason is at most `MAX_REASON_LEN` bytes, borrowed from the input;
//! a list of acknowledgements (version 2) names 1 to `MAX_BATCH` packs; and a message it
//! accepts encodes again (`Downlink::encode`) to bytes that decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mekong_schema::downlink::{self, Downlink, MAX_BATCH, MAX_REASON_LEN};

fuzz_target!(|input: &[u8]| {
    let Ok(msg) = downlink::decode(input) else { return };
    if let Downlink::Refused { reason, .. } = msg {
        assert!(reason.len() <= MAX_REASON_LEN);
        let (start, end) = (input.as_ptr() as usize, input.as_ptr() as usize + input.len());
        assert!(
            reason.is_empty() || (reason.as_ptr() as usize >= start && reason.as_ptr() as usize + reason.len() <= end)
        );
    }
    if let Downlink::Acks { acks, .. } = msg {
        assert!((1..=MAX_BATCH).contains(&acks.len()));
    }
    // The longest message: a full list, whose head is a map head, three labels, a 9-byte
    // time and an array head, and each of whose packs is a map head, three labels and
    // integers of 9, 5 and 9 bytes.
    let mut out = [0u8; 1 + 3 + 9 + 1 + MAX_BATCH * (1 + 3 + 9 + 5 + 9)];
    let n = msg.encode(&mut out).expect("a decoded downlink encodes");
    assert_eq!(downlink::decode(&out[..n]).expect("an encoded downlink decodes"), msg);
});
