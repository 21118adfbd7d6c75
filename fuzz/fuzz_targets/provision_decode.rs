//! Fuzzes the node's configuration blob reader (`mekong_schema::provision::decode`), which a
//! node runs on its flash page at every boot.
//!
//! Properties: no panic; a blob it accepts has fields within their bounds, and encodes again
//! (with `provision::encode`) to a blob that decodes to the same configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mekong_schema::limits::MAX_DEVICE_ID_LEN;
use mekong_schema::provision::{self, BLOB_LEN, MAX_HOST_LEN};

fuzz_target!(|page: &[u8]| {
    let Ok(p) = provision::decode(page) else { return };
    assert!(page.len() >= BLOB_LEN);
    assert!((1..=MAX_DEVICE_ID_LEN).contains(&p.device_id.len()));
    assert!((1..=MAX_HOST_LEN).contains(&p.broker_host.len()));
    let mut out = [0u8; BLOB_LEN];
    let n = provision::encode(&p, &mut out).expect("a decoded configuration encodes");
    assert_eq!(n, BLOB_LEN);
    assert_eq!(provision::decode(&out), Ok(p));
    // The same blob cut short is reported as cut short, not as damaged.
    assert_eq!(provision::decode(&out[..BLOB_LEN - 1]).err(), Some(provision::ProvisionError::Truncated));
});
