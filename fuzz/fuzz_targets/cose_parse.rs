//! Fuzzes the COSE_Mac0 envelope reader (`mekong_schema::cose::parse` and `open`), which
//! reads every signed uplink before its tag is checked.
//!
//! Properties: no panic; what `parse` hands out lies within the input and within the
//! contract's bounds (key id at most `MAX_KID_LEN` bytes); an envelope `parse` accepts, with
//! a key id that is a device id, sealed again with the same key id, number and payload,
//! parses to the same fields and opens with the key it was sealed with; and a wrong key
//! never opens it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mekong_schema::cose::{self, CoseError, KEY_LEN, MAX_KID_LEN, MAX_OVERHEAD};

fn within(input: &[u8], s: &[u8]) -> bool {
    let (start, end) = (input.as_ptr() as usize, input.as_ptr() as usize + input.len());
    s.is_empty() || (s.as_ptr() as usize >= start && s.as_ptr() as usize + s.len() <= end)
}

fuzz_target!(|input: &[u8]| {
    let key = [0x5a; KEY_LEN];
    // The tag of fuzzed input is almost never right; opening must fail cleanly, or succeed
    // only with a tag that is right for this key.
    if let Ok(opened) = cose::open(input, &key) {
        assert!(within(input, opened.payload));
    }
    let Ok(mac0) = cose::parse(input) else { return };
    assert!(mac0.kid().len() <= MAX_KID_LEN);
    assert!(within(input, mac0.kid()));
    let Ok(kid) = core::str::from_utf8(mac0.kid()) else { return };
    // The payload only comes out of `verify` (by design), and fuzzed tags are almost never
    // right: without it, the round trip seals the input itself as the payload.
    let payload = match mac0.verify(&key) {
        Ok(payload) => payload,
        Err(CoseError::BadTag) => input,
        Err(e) => panic!("verify failed with {e:?}, not a tag mismatch"),
    };
    let mut out = vec![0u8; payload.len() + MAX_OVERHEAD];
    let n = cose::seal(&mut out, &key, mac0.seq(), kid, payload).expect("a parsed kid seals");
    let again = cose::parse(&out[..n]).expect("a sealed envelope parses");
    assert_eq!((again.kid(), again.seq()), (mac0.kid(), mac0.seq()));
    let opened = cose::open(&out[..n], &key).expect("a sealed envelope opens with its key");
    assert_eq!(opened.payload, payload);
    assert_eq!(cose::open(&out[..n], &[0xa5; KEY_LEN]).err(), Some(CoseError::BadTag));
});
