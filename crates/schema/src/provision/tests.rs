//! Tests of the node configuration blob: round trips, erased and damaged pages, bounds.

use std::vec::Vec;

use super::*;

fn node() -> Provision<'static> {
    Provision {
        device_id: "hau-ninh-kieu-01",
        kind: DeviceKind::Water,
        key: core::array::from_fn(|i| i as u8),
        broker_host: "mekong.cantho.example",
        broker_port: 1883,
        period_secs: Periods { air: 0, water: 60, traffic: 0 },
    }
}

fn blob(p: &Provision<'_>) -> [u8; BLOB_LEN] {
    let mut out = [0u8; BLOB_LEN];
    assert_eq!(encode(p, &mut out), Ok(BLOB_LEN));
    out
}

/// Rewrites the CRC after a deliberate change, so that a field check is what fails.
fn reseal(b: &mut [u8]) {
    let crc = crc32(&b[..CRC_AT]);
    b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn blobs_round_trip() {
    let long_id = "a".repeat(MAX_DEVICE_ID_LEN);
    let long_host = "h".repeat(MAX_HOST_LEN);
    let cases = [
        node(),
        Provision {
            device_id: &long_id,
            kind: DeviceKind::Air,
            key: [0xff; KEY_LEN],
            broker_host: &long_host,
            broker_port: u16::MAX,
            period_secs: Periods { air: u16::MAX, water: 1, traffic: 300 },
        },
        Provision { device_id: "x", kind: DeviceKind::Traffic, broker_host: "[::1]", ..node() },
    ];
    for p in cases {
        assert_eq!(decode(&blob(&p)), Ok(p));
    }
    // A flash page is longer than the blob; what follows it does not matter.
    let mut page = [0xffu8; 1024];
    page[..BLOB_LEN].copy_from_slice(&blob(&node()));
    assert_eq!(decode(&page), Ok(node()));
    const { assert!(BLOB_LEN <= 1024) };
}

#[test]
fn an_erased_page_is_unprovisioned() {
    assert_eq!(decode(&[0xff; 1024]), Err(ProvisionError::Unprovisioned));
    assert_eq!(decode(&[0xff; BLOB_LEN]), Err(ProvisionError::Unprovisioned));
    assert_eq!(decode(&[0x00; 1024]), Err(ProvisionError::BadMagic));
    // Power lost while writing: the start is there, the rest still erased.
    let mut half = [0xffu8; 1024];
    half[..100].copy_from_slice(&blob(&node())[..100]);
    assert_eq!(decode(&half), Err(ProvisionError::Corrupt));
}

#[test]
fn a_changed_byte_is_caught() {
    let good = blob(&node());
    for i in 0..BLOB_LEN {
        for flip in [0x01, 0x80, 0xff] {
            let mut bad = good;
            bad[i] ^= flip;
            let expected = if i < 4 { ProvisionError::BadMagic } else { ProvisionError::Corrupt };
            assert_eq!(decode(&bad), Err(expected), "byte {i} ^ {flip:#x}");
        }
    }
}

#[test]
fn short_pages_are_truncated() {
    let good = blob(&node());
    for n in 0..BLOB_LEN {
        assert_eq!(decode(&good[..n]), Err(ProvisionError::Truncated), "{n} bytes");
    }
}

#[test]
fn fields_out_of_bounds_are_not_written() {
    let mut out = [0u8; BLOB_LEN];
    let too_long = "a".repeat(MAX_DEVICE_ID_LEN + 1);
    let invalid = |p: Provision<'_>| matches!(encode(&p, &mut [0u8; BLOB_LEN]), Err(ProvisionError::Invalid(_)));
    assert!(invalid(Provision { device_id: &too_long, ..node() }));
    assert!(invalid(Provision { device_id: "", ..node() }));
    assert!(invalid(Provision { device_id: "Hau_01", ..node() }));
    assert!(invalid(Provision { kind: DeviceKind::Unknown, ..node() }));
    assert!(invalid(Provision { broker_host: "", ..node() }));
    assert!(invalid(Provision { broker_host: &"h".repeat(MAX_HOST_LEN + 1), ..node() }));
    assert_eq!(encode(&node(), &mut out[..BLOB_LEN - 1]), Err(ProvisionError::BufferFull));
}

#[test]
fn fields_out_of_bounds_are_not_read_even_with_a_good_crc() {
    let good = blob(&node());
    let patched = |at: usize, byte: u8| {
        let mut b = good;
        b[at] = byte;
        reseal(&mut b);
        decode(&b).err()
    };
    assert_eq!(patched(6, 2), Some(ProvisionError::UnsupportedVersion(2)));
    assert!(matches!(patched(7, 0), Some(ProvisionError::Invalid(_))), "kind 0");
    assert!(matches!(patched(7, 9), Some(ProvisionError::Invalid(_))), "kind 9");
    assert!(matches!(patched(ID_AT, 0), Some(ProvisionError::Invalid(_))), "empty id");
    assert!(matches!(patched(ID_AT, 65), Some(ProvisionError::Invalid(_))), "id over 64");
    assert!(matches!(patched(ID_AT + 1, b'A'), Some(ProvisionError::Invalid(_))), "id not a-z");
    assert!(matches!(patched(HOST_AT, 65), Some(ProvisionError::Invalid(_))), "host over 64");
    assert!(matches!(patched(HOST_AT + 1, 0xc3), Some(ProvisionError::Invalid(_))), "host not utf-8");
    // A length that points elsewhere, with a CRC that matches there.
    let mut other = good;
    other[4..6].copy_from_slice(&100u16.to_le_bytes());
    let crc = crc32(&other[..100]);
    other[100..104].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(decode(&other), Err(ProvisionError::Invalid(_))));
}

#[test]
fn the_crc_is_zlibs() {
    // The standard check values of CRC-32/ISO-HDLC (what zlib.crc32 computes).
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    assert_eq!(crc32(b"The quick brown fox jumps over the lazy dog"), 0x414f_a339);
    assert_eq!(crc32(b""), 0);
}

#[test]
fn debug_output_keeps_the_key_secret() {
    let shown = std::format!("{:?}", node());
    assert!(shown.contains("hau-ninh-kieu-01") && shown.contains("(secret)"), "{shown}");
    assert!(!shown.contains("31"), "{shown}");
}

/// The layout in the module documentation, byte for byte; firmware tests can use the fixture.
#[test]
fn golden_blob_matches_the_fixture() {
    let hex: std::string::String = blob(&node()).iter().map(|b| std::format!("{b:02x}")).collect();
    assert_eq!(hex, include_str!("../../fixtures/node-config.hex").trim());
    let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    assert_eq!(&bytes[..8], b"MKNC\xb2\x00\x01\x02");
}
