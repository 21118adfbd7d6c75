//! The node's identity, read from its config page in flash: one image for the whole fleet,
//! one page per node.
//!
//! The page holds the blob `mekong device provision` writes, decoded here by
//! `mekong_schema::provision::decode` (the one definition of its layout, CRC-32 included), so
//! the platform's tool and the firmware cannot disagree. This module only adds what a board
//! needs on top: a console message per failure, and one more way to be unprovisioned.

use mekong_schema::provision::{decode, ProvisionError, BLOB_LEN};

pub use mekong_schema::provision::{MqttPassword, Periods, Provision};

/// Why the config page cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// Nothing was ever written to the page.
    Unprovisioned,
    /// The schema's decoder refused the page.
    Bad(ProvisionError),
}

impl ConfigError {
    /// What the console prints, for the technician.
    pub fn message(&self) -> &'static str {
        match self {
            Self::Unprovisioned | Self::Bad(ProvisionError::Unprovisioned) => {
                "unprovisioned: the config page is empty; write the blob of `mekong device provision` to it"
            }
            Self::Bad(ProvisionError::Corrupt) => "config page corrupt: CRC mismatch; write the blob again",
            Self::Bad(ProvisionError::Truncated) => "config page corrupt: shorter than a blob",
            Self::Bad(ProvisionError::BadMagic) => {
                "config page: not a mekong blob (no MKNC magic); write the blob of `mekong device provision`"
            }
            Self::Bad(ProvisionError::NoPassword) => {
                "config page format 1 predates MQTT passwords: provision the node again with `mekong device provision` \
                 and write the new page"
            }
            Self::Bad(ProvisionError::UnsupportedVersion(_)) => {
                "config page written for another firmware version; provision again with this platform's mekong"
            }
            Self::Bad(ProvisionError::Invalid(what)) => what,
            Self::Bad(ProvisionError::BufferFull) => "config page: cannot be read",
        }
    }
}

/// Reads the config page (the blob at its start; the rest of the page is ignored).
///
/// An all-zero blob is unprovisioned too: erased flash reads 0xFF, which the schema's decoder
/// reports as such, but QEMU's memory where no config page was loaded reads 0, and a blank
/// page should say "unprovisioned" there rather than "bad magic".
pub fn read(page: &[u8]) -> Result<Provision<'_>, ConfigError> {
    if page.get(..BLOB_LEN).is_some_and(|b| b.iter().all(|&x| x == 0)) {
        return Err(ConfigError::Unprovisioned);
    }
    decode(page).map_err(|e| match e {
        ProvisionError::Unprovisioned => ConfigError::Unprovisioned,
        e => ConfigError::Bad(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mekong_schema::provision::encode;
    use mekong_schema::DeviceKind;

    fn sample() -> Provision<'static> {
        Provision {
            device_id: "hau-01",
            kind: DeviceKind::Water,
            key: [7; 32],
            broker_host: "mqtt.cantho.example",
            broker_port: 1883,
            period_secs: Periods { air: 0, water: 60, traffic: 0 },
            password: MqttPassword([0x5a; 32]),
        }
    }

    fn unhex(hex: &str) -> std::vec::Vec<u8> {
        let hex: std::string::String = hex.split_whitespace().collect();
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn a_blob_of_the_schema_is_read_and_blank_pages_are_unprovisioned() {
        let mut page = [0xFFu8; 1024];
        assert_eq!(read(&page), Err(ConfigError::Unprovisioned), "erased flash");
        assert_eq!(read(&[0u8; 1024]), Err(ConfigError::Unprovisioned), "QEMU's empty memory");
        let n = encode(&sample(), &mut page).unwrap();
        assert_eq!(n, BLOB_LEN);
        assert_eq!(read(&page), Ok(sample()), "the rest of the page is ignored");
    }

    /// The fixture the platform's tests pin: the firmware reads the very bytes they check.
    #[test]
    fn the_schema_fixture_is_read() {
        let bytes = unhex(include_str!("../../../crates/schema/fixtures/node-config.hex"));
        let p = read(&bytes).unwrap();
        assert_eq!(p.device_id, "hau-ninh-kieu-01");
        assert_eq!(p.password.to_hex()[..4], *b"c0c1", "the password");
    }

    /// A page written before passwords (the schema's format-1 fixture) stops the node with
    /// what to do.
    #[test]
    fn a_page_without_a_password_says_to_provision_again() {
        let mut page = [0xFFu8; 1024];
        let v1 = unhex(include_str!("../../../crates/schema/fixtures/node-config-v1.hex"));
        page[..v1.len()].copy_from_slice(&v1);
        let e = read(&page).unwrap_err();
        assert_eq!(e, ConfigError::Bad(ProvisionError::NoPassword));
        assert!(e.message().contains("predates MQTT passwords: provision the node again"), "{}", e.message());
    }

    #[test]
    fn damaged_pages_are_refused_with_a_message() {
        let mut blob = [0u8; BLOB_LEN];
        encode(&sample(), &mut blob).unwrap();
        for i in 8..BLOB_LEN {
            let mut b = blob;
            b[i] ^= 0x01;
            assert_eq!(read(&b), Err(ConfigError::Bad(ProvisionError::Corrupt)), "byte {i}");
        }
        let mut half = [0xFFu8; BLOB_LEN];
        half[..90].copy_from_slice(&blob[..90]);
        let e = read(&half).unwrap_err();
        assert_eq!(e, ConfigError::Bad(ProvisionError::Corrupt));
        assert!(e.message().starts_with("config page corrupt"));
        let mut other = blob;
        other[..4].copy_from_slice(b"ELF\x7f");
        assert!(read(&other).unwrap_err().message().contains("magic"));
    }
}
