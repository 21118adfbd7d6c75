//! Tests of the COSE_Mac0 envelope: round trips, tampering, hostile input, and the committed
//! vectors (ours, checked by pycose; and one made by pycose).

use std::vec;
use std::vec::Vec;

use super::*;

const KEY: [u8; KEY_LEN] = golden_key(0);
/// The key of the vector pycose made (`tests/cose_interop.py`).
const PYCOSE_KEY: [u8; KEY_LEN] = golden_key(32);

const fn golden_key(first: u8) -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    let mut i = 0;
    while i < KEY_LEN {
        key[i] = first + i as u8;
        i += 1;
    }
    key
}

fn unhex(hex: &str) -> Vec<u8> {
    let hex = hex.trim();
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

fn hex(bytes: &[u8]) -> std::string::String {
    bytes.iter().map(|b| std::format!("{b:02x}")).collect()
}

fn water_pack() -> Vec<u8> {
    unhex(include_str!("../../fixtures/water-pack.hex"))
}

fn sealed(key: &[u8; KEY_LEN], seq: u64, device: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; payload.len() + MAX_OVERHEAD];
    let n = seal(&mut out, key, seq, device, payload).unwrap();
    out.truncate(n);
    out
}

/// Builds CBOR by hand, for envelopes our encoder would never write.
fn item(major: u8, arg: u64) -> Vec<u8> {
    let mut buf = [0u8; 9];
    encode_head(major, arg, &mut buf).to_vec()
}

fn envelope(protected: &[u8], unprotected: &[u8], payload: &[u8], tag: &[u8]) -> Vec<u8> {
    let mut e = vec![FIRST_BYTE, 0x84];
    e.extend(item(MAJOR_BYTES, protected.len() as u64));
    e.extend(protected);
    e.extend(unprotected);
    e.extend(payload);
    e.extend(tag);
    e
}

fn tag_item() -> Vec<u8> {
    let mut t = item(MAJOR_BYTES, 32);
    t.extend([0u8; 32]);
    t
}

#[test]
fn envelopes_round_trip() {
    let long_id = "a".repeat(MAX_KID_LEN);
    for seq in [0, 1, 23, 24, 255, 256, 65_535, 65_536, u64::from(u32::MAX) + 1, u64::MAX] {
        for device in ["x", "hau-ninh-kieu-01", long_id.as_str()] {
            for len in [0, 23, 24, 255, 256, 70_000] {
                let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                let e = sealed(&KEY, seq, device, &payload);
                assert!(e.len() <= payload.len() + MAX_OVERHEAD);
                assert!(is_sealed(&e));
                let opened = open(&e, &KEY).unwrap();
                assert_eq!(opened, Opened { kid: device.as_bytes(), seq, payload: &payload });
                let parsed = parse(&e).unwrap();
                assert_eq!((parsed.kid(), parsed.seq()), (device.as_bytes(), seq));
            }
        }
    }
}

#[test]
fn the_overhead_bound_is_tight() {
    // The longest kid, the longest seq; a payload whose length needs the eight-byte head
    // cannot be built in a test, so that part of the bound is checked by arithmetic.
    let payload = vec![0u8; 1 << 16];
    let e = sealed(&KEY, u64::MAX, &"a".repeat(MAX_KID_LEN), &payload);
    assert_eq!(e.len() + (9 - 5), payload.len() + MAX_OVERHEAD);
}

#[test]
fn a_wrong_key_fails() {
    let e = sealed(&KEY, 5, "hau-01", &water_pack());
    assert_eq!(open(&e, &PYCOSE_KEY), Err(CoseError::BadTag));
    let mut almost = KEY;
    almost[31] ^= 1;
    assert_eq!(open(&e, &almost), Err(CoseError::BadTag));
}

#[test]
fn changing_any_byte_fails() {
    let pack = water_pack();
    let e = sealed(&KEY, 5, "hau-01", &pack);
    let payload_at = e.len() - TAG_LEN - 2 - pack.len();
    assert_eq!(&e[payload_at..payload_at + pack.len()], pack.as_slice());
    for i in 0..e.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut bad = e.clone();
            bad[i] ^= flip;
            let result = open(&bad, &KEY);
            assert!(result.is_err(), "byte {i} ^ {flip:#x} still opens: {result:?}");
            if (payload_at..payload_at + pack.len()).contains(&i) || i >= e.len() - TAG_LEN {
                assert_eq!(result, Err(CoseError::BadTag), "byte {i}");
            }
        }
    }
}

#[test]
fn truncated_envelopes_are_errors() {
    let e = sealed(&KEY, 70_000, "hau-01", &water_pack());
    for n in 0..e.len() {
        assert_eq!(open(&e[..n], &KEY), Err(CoseError::Truncated), "cut at {n}");
    }
    let mut longer = e.clone();
    longer.push(0);
    assert_eq!(open(&longer, &KEY), Err(CoseError::TrailingBytes));
}

#[test]
fn plain_packs_are_not_envelopes() {
    let pack = water_pack();
    assert!(!is_sealed(&pack));
    assert!(!is_sealed(&[]));
    assert_eq!(parse(&pack), Err(CoseError::NotMac0));
    // The same envelope without its tag is a four-item array, which is a pack's shape.
    let e = sealed(&KEY, 1, "hau-01", &pack);
    assert_eq!(parse(&e[1..]), Err(CoseError::NotMac0));
}

#[test]
fn envelopes_of_another_shape_are_refused() {
    let empty = item(MAJOR_BYTES, 0);
    let kid = [item(MAJOR_BYTES, 2), b"ab".to_vec()].concat();
    let header = |entries: &[(i64, Vec<u8>)]| {
        let mut h = item(MAJOR_MAP, entries.len() as u64);
        for (label, value) in entries {
            h.extend(if *label >= 0 {
                item(MAJOR_UNSIGNED, *label as u64)
            } else {
                item(MAJOR_NEGATIVE, !*label as u64)
            });
            h.extend(value);
        }
        h
    };
    let good = [(LABEL_ALG, item(MAJOR_UNSIGNED, 5)), (LABEL_KID, kid.clone()), (LABEL_SEQ, item(MAJOR_UNSIGNED, 9))];
    let e = envelope(&header(&good), &[0xa0], &empty, &tag_item());
    let parsed = parse(&e).unwrap();
    assert_eq!((parsed.kid(), parsed.seq()), (&b"ab"[..], 9));
    // Any order of the three labels is read.
    let reordered = [good[2].clone(), good[0].clone(), good[1].clone()];
    assert!(parse(&envelope(&header(&reordered), &[0xa0], &empty, &tag_item())).is_ok());

    let malformed = |protected: Vec<u8>, unprotected: &[u8], payload: &[u8], tag: &[u8]| {
        let e = envelope(&protected, unprotected, payload, tag);
        match parse(&e) {
            Err(CoseError::Malformed(why)) => why,
            other => panic!("{} parsed as {other:?}", hex(&e)),
        }
    };
    let hs256 = [(LABEL_ALG, item(MAJOR_UNSIGNED, 6)), good[1].clone(), good[2].clone()];
    assert!(malformed(header(&hs256), &[0xa0], &empty, &tag_item()).contains("algorithm"));
    let twice = [good[0].clone(), good[1].clone(), good[1].clone()];
    assert!(malformed(header(&twice), &[0xa0], &empty, &tag_item()).contains("repeated"));
    let unknown = [good[0].clone(), good[1].clone(), (-65538, item(MAJOR_UNSIGNED, 1))];
    assert!(malformed(header(&unknown), &[0xa0], &empty, &tag_item()).contains("unknown"));
    let no_seq = [good[0].clone(), good[1].clone()];
    assert!(malformed(header(&no_seq), &[0xa0], &empty, &tag_item()).contains("alg, kid and seq"));
    let negative_seq = [good[0].clone(), good[1].clone(), (LABEL_SEQ, item(MAJOR_NEGATIVE, 0))];
    assert!(malformed(header(&negative_seq), &[0xa0], &empty, &tag_item()).contains("sequence"));
    let text_kid = [good[0].clone(), (LABEL_KID, vec![0x62, b'a', b'b']), good[2].clone()];
    assert!(malformed(header(&text_kid), &[0xa0], &empty, &tag_item()).contains("kid"));
    let mut trailing = header(&good);
    trailing.push(0);
    assert!(malformed(trailing, &[0xa0], &empty, &tag_item()).contains("trailing"));
    // Unprotected headers would not be authenticated: there must be none.
    let kid_outside = [item(MAJOR_MAP, 1), item(MAJOR_UNSIGNED, 4), kid.clone()].concat();
    assert!(malformed(header(&good), &kid_outside, &empty, &tag_item()).contains("unprotected"));
    // A detached payload (nil) is not accepted.
    assert!(malformed(header(&good), &[0xa0], &[0xf6], &tag_item()).contains("payload"));
    let short_tag = [item(MAJOR_BYTES, 16), vec![0; 16]].concat();
    assert!(malformed(header(&good), &[0xa0], &empty, &short_tag).contains("32 bytes"));
    // Indefinite lengths and reserved heads.
    let mut indefinite = envelope(&header(&good), &[0xa0], &empty, &tag_item());
    indefinite[1] = 0x9f;
    assert!(matches!(parse(&indefinite), Err(CoseError::Malformed(_))));
    let long_kid = [item(MAJOR_BYTES, 65), vec![b'a'; 65]].concat();
    let too_long = [good[0].clone(), (LABEL_KID, long_kid), good[2].clone()];
    assert_eq!(parse(&envelope(&header(&too_long), &[0xa0], &empty, &tag_item())), Err(CoseError::KidTooLong));
}

#[test]
fn lengths_beyond_the_input_are_truncations() {
    // A protected header that claims 2^64 - 1 bytes, and one that claims 2^32 - 1.
    assert_eq!(
        parse(&[0xd1, 0x84, 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xa0]),
        Err(CoseError::Truncated)
    );
    assert_eq!(parse(&[0xd1, 0x84, 0x5a, 0xff, 0xff, 0xff, 0xff, 0xa0]), Err(CoseError::Truncated));
}

/// xorshift64*: a fixed, dependency-free stream of test bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_and_corrupted_input_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let valid = sealed(&KEY, 42, "hau-01", &water_pack());
    for round in 0..100_000 {
        let input: Vec<u8> = if round % 2 == 0 {
            // Noise behind the right first byte, so that the reader gets past it.
            let len = (rng.next() % 160) as usize;
            core::iter::once(FIRST_BYTE).chain((0..len).map(|_| rng.next() as u8)).collect()
        } else {
            let mut bad = valid.clone();
            for _ in 0..1 + rng.next() % 4 {
                let i = (rng.next() as usize) % bad.len();
                bad[i] = rng.next() as u8;
            }
            bad.truncate(bad.len() - (rng.next() % 3) as usize);
            bad
        };
        // Only a change that leaves every authenticated byte as it was may still open.
        if let Ok(opened) = open(&input, &KEY) {
            assert_eq!((opened.seq, opened.payload), (42, water_pack().as_slice()));
        }
    }
}

#[test]
fn sealing_into_a_small_buffer_is_an_error() {
    let pack = water_pack();
    let e = sealed(&KEY, 3, "hau-01", &pack);
    for n in 0..e.len() {
        assert_eq!(seal(&mut vec![0u8; n], &KEY, 3, "hau-01", &pack), Err(CoseError::BufferFull), "buffer of {n}");
    }
    assert_eq!(seal(&mut [0u8; 512], &KEY, 3, &"a".repeat(MAX_KID_LEN + 1), &pack), Err(CoseError::KidTooLong));
}

/// The envelope shown in the README: the README's water pack, sealed for `hau-ninh-kieu-01`
/// with sequence number 1 and the key 00 01 02 .. 1f. `tests/cose_interop.py` checks it with
/// pycose.
#[test]
fn golden_envelope_matches_the_fixture() {
    let e = sealed(&KEY, 1, "hau-ninh-kieu-01", &water_pack());
    assert_eq!(hex(&e), include_str!("../../fixtures/signed-water-pack.hex").trim());
}

/// An envelope made by pycose (`tests/cose_interop.py make`), so that our reader is checked
/// against an independent writer even where Python is not installed.
#[test]
fn an_envelope_made_by_pycose_opens() {
    let e = unhex(include_str!("../../fixtures/pycose-mac0.hex"));
    let opened = open(&e, &PYCOSE_KEY).unwrap();
    assert_eq!(opened, Opened { kid: b"pycose-node-07", seq: 4_294_967_296, payload: &water_pack() });
    assert_eq!(open(&e, &KEY), Err(CoseError::BadTag));
}

/// The fingerprint is SHA-256's first 8 bytes (checked against Python's hashlib:
/// `hashlib.sha256(bytes(range(32))).hexdigest()[:16]`), and tells keys apart.
#[test]
fn a_key_fingerprint_is_the_head_of_its_sha256() {
    assert_eq!(hex(&key_fingerprint(&KEY)), "630dcd2966c43366");
    assert_ne!(key_fingerprint(&KEY), key_fingerprint(&PYCOSE_KEY));
}
