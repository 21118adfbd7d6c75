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
        password: MqttPassword(core::array::from_fn(|i| 0xc0 + i as u8)),
    }
}

/// Hex text (fixtures) to bytes.
fn unhex(hex: &str) -> Vec<u8> {
    let hex: std::string::String = hex.split_whitespace().collect();
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
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
            password: MqttPassword([0xff; PASSWORD_LEN]),
        },
        Provision {
            device_id: "x",
            kind: DeviceKind::Traffic,
            broker_host: "[::1]",
            password: MqttPassword([0; PASSWORD_LEN]),
            ..node()
        },
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
    assert_eq!(patched(6, 1), Some(ProvisionError::NoPassword));
    assert_eq!(patched(6, 3), Some(ProvisionError::UnsupportedVersion(3)));
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
fn debug_output_keeps_the_key_and_the_password_secret() {
    let shown = std::format!("{:?}", node());
    assert!(shown.contains("hau-ninh-kieu-01") && shown.contains("(secret)"), "{shown}");
    assert!(shown.contains("MqttPassword(secret)"), "{shown}");
    // Neither the key's bytes (0 to 31) nor the password's (0xc0 to 0xdf), in decimal or hex.
    assert!(!shown.contains("31") && !shown.contains("192") && !shown.contains("c0"), "{shown}");
    let text = node().password.to_hex();
    assert!(!shown.contains(core::str::from_utf8(&text).unwrap()), "{shown}");
}

/// The password's text is its bytes as lowercase hex, what CONNECT carries and the registry
/// digests.
#[test]
fn the_password_is_presented_as_lowercase_hex() {
    let password = MqttPassword(core::array::from_fn(|i| (i as u8).wrapping_mul(0x1d).wrapping_add(0x0f)));
    let expected: std::string::String = password.0.iter().map(|b| std::format!("{b:02x}")).collect();
    assert_eq!(core::str::from_utf8(&password.to_hex()), Ok(expected.as_str()));
    assert_eq!(&MqttPassword([0xab; PASSWORD_LEN]).to_hex()[..4], b"abab");
    assert_eq!(MqttPassword([0; PASSWORD_LEN]).to_hex(), [b'0'; 2 * PASSWORD_LEN]);
}

/// The layout in the module documentation, byte for byte; firmware tests can use the fixture.
#[test]
fn golden_blob_matches_the_fixture() {
    let hex: std::string::String = blob(&node()).iter().map(|b| std::format!("{b:02x}")).collect();
    assert_eq!(hex, include_str!("../../fixtures/node-config.hex").trim());
    let bytes = unhex(&hex);
    assert_eq!(&bytes[..8], b"MKNC\xd2\x00\x02\x02");
    assert_eq!(bytes[PASSWORD_AT..PASSWORD_AT + 2], [0xc0, 0xc1]);
}

/// A blob of format 1 (what `mekong device provision` wrote before passwords, kept as a
/// fixture) is refused whole, with what to do, in a flash page as in a file of its own size.
#[test]
fn a_version_1_blob_is_refused_with_what_to_do() {
    let v1 = unhex(include_str!("../../fixtures/node-config-v1.hex"));
    assert_eq!((v1.len(), &v1[4..7]), (182, &[178, 0, 1][..]));
    assert_eq!(decode(&v1), Err(ProvisionError::NoPassword));
    let mut page = [0xffu8; 1024];
    page[..v1.len()].copy_from_slice(&v1);
    let e = decode(&page).unwrap_err();
    assert_eq!(e, ProvisionError::NoPassword);
    assert_eq!(
        std::format!("{e}"),
        "node configuration format 1 predates MQTT passwords: provision the node again with `mekong device provision`"
    );
    // Damaged, it is corrupt like any other blob.
    page[20] ^= 1;
    assert_eq!(decode(&page), Err(ProvisionError::Corrupt));
}

/// A later version with a longer layout is reported as that version, not as corrupt.
#[test]
fn a_later_longer_version_is_reported_as_such() {
    let mut page = [0u8; 1024];
    page[..BLOB_LEN].copy_from_slice(&blob(&node()));
    let crc_at = 300usize;
    page[4..6].copy_from_slice(&(crc_at as u16).to_le_bytes());
    page[6] = 3;
    let crc = crc32(&page[..crc_at]);
    page[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(decode(&page), Err(ProvisionError::UnsupportedVersion(3)));
    // The same blob cut at this version's length: it says more than it holds.
    assert_eq!(decode(&page[..BLOB_LEN - 1]), Err(ProvisionError::Truncated));
}
