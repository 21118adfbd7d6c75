//! Fuzzes the downlink decoder (`mekong_schema::downlink::decode`), which a node runs on
//! every message the platform sends it.
//!
//! Properties: no panic; a reason is at most `MAX_REASON_LEN` bytes, borrowed from the input;
//! and a message it accepts encodes again (`Downlink::encode`) to bytes that decode to the
//! same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mekong_schema::downlink::{self, Downlink, MAX_REASON_LEN};

fuzz_target!(|input: &[u8]| {
    let Ok(msg) = downlink::decode(input) else { return };
    if let Downlink::Refused { reason, .. } = msg {
        assert!(reason.len() <= MAX_REASON_LEN);
        let (start, end) = (input.as_ptr() as usize, input.as_ptr() as usize + input.len());
        assert!(
            reason.is_empty() || (reason.as_ptr() as usize >= start && reason.as_ptr() as usize + reason.len() <= end)
        );
    }
    // The longest message: a map head, six labels, three 9-byte integers, a 9-byte sequence
    // number and a reason of MAX_REASON_LEN bytes with its head.
    let mut out = [0u8; 1 + 6 + 3 * 9 + 9 + 2 + MAX_REASON_LEN];
    let n = msg.encode(&mut out).expect("a decoded downlink encodes");
    assert_eq!(downlink::decode(&out[..n]).expect("an encoded downlink decodes"), msg);
});
