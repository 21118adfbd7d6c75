//! The node's identity, read from its config page in flash: one image for the whole fleet,
//! one page per node.
//!
//! The blob format is being defined as `mekong_schema::provision` (magic `b"MKNC"`, version,
//! device id, kind, 32-byte key, broker host and port, sampling periods, CRC-32). Until it
//! lands, [`decode`] here reads this temporary layout, little-endian, 180 bytes:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `MKNC` |
//! | 4 | 1 | version, 1 |
//! | 5 | 1 | kind: 0 traffic, 1 water, 2 air, 3 unknown (`DeviceKind::ALL` order) |
//! | 6 | 1 | device id length |
//! | 7 | 1 | broker host length |
//! | 8 | 64 | device id, zero padded |
//! | 72 | 32 | key |
//! | 104 | 64 | broker host, zero padded |
//! | 168 | 2 | broker port |
//! | 170 | 2 × 3 | sampling periods in seconds: air, water, traffic (0: sensor not fitted) |
//! | 176 | 4 | CRC-32 (IEEE) of bytes 0 to 175 |
//!
//! `scripts/provision.py` writes it. [`read`] is the one function the board calls: when the
//! schema's decoder lands, its body becomes a call to `mekong_schema::provision::decode` and
//! a conversion into [`Provision`].

use mekong_schema::topic::is_valid_device_id;
use mekong_schema::DeviceKind;

use crate::crc::crc32;

/// Length of the blob.
pub const BLOB_LEN: usize = 180;
const MAGIC: &[u8; 4] = b"MKNC";
const VERSION: u8 = 1;
const ID_CAP: usize = 64;
const HOST_CAP: usize = 64;

/// Sampling periods, seconds; 0 means the sensor is not fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Periods {
    /// Particulate sensor.
    pub air_s: u16,
    /// Water-level transducer.
    pub water_s: u16,
    /// Traffic counting window.
    pub traffic_s: u16,
}

/// A node's identity and settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provision<'a> {
    /// Device id, `[a-z0-9-]{1,64}`: the topic is `mekong/v1/{device_id}/up`.
    pub device_id: &'a str,
    /// Station kind.
    pub kind: DeviceKind,
    /// Key for sealing packs (COSE_Mac0).
    pub key: &'a [u8; 32],
    /// Broker host name or address (for a modem that dials it; QEMU's bridge ignores it).
    pub broker_host: &'a str,
    /// Broker port, 1883 for MQTT 3.1.1.
    pub broker_port: u16,
    /// Sampling periods.
    pub periods: Periods,
}

/// Why the config page cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvisionError {
    /// The page is erased (all 0xFF): this node was never provisioned.
    Unprovisioned,
    /// The page is written but its CRC does not match: a failed or partial write.
    Corrupt,
    /// A layout version this firmware does not read.
    Version(u8),
    /// The CRC matches but a field is invalid (not our magic, bad device id, ...).
    Invalid(&'static str),
}

impl ProvisionError {
    /// What the console prints, for the technician.
    pub fn message(&self) -> &'static str {
        match self {
            Self::Unprovisioned => "unprovisioned: the config page is empty; write node.bin to it (see README)",
            Self::Corrupt => "config page corrupt: CRC mismatch; write node.bin again",
            Self::Version(_) => "config page written for another firmware version",
            Self::Invalid(what) => what,
        }
    }
}

/// Reads the config page. The seam for `mekong_schema::provision::decode`.
///
/// A page of zeros is unprovisioned too: erased flash reads 0xFF, but QEMU's memory where
/// no config page was loaded reads 0.
pub fn read(page: &[u8]) -> Result<Provision<'_>, ProvisionError> {
    if page.get(..BLOB_LEN).is_some_and(|b| b.iter().all(|&x| x == 0)) {
        return Err(ProvisionError::Unprovisioned);
    }
    decode(page)
}

/// Decodes the temporary layout above.
pub fn decode(page: &[u8]) -> Result<Provision<'_>, ProvisionError> {
    let blob: &[u8; BLOB_LEN] = page.get(..BLOB_LEN).and_then(|b| b.try_into().ok()).ok_or(ProvisionError::Corrupt)?;
    if blob.iter().all(|&b| b == 0xFF) {
        return Err(ProvisionError::Unprovisioned);
    }
    let sent = u32::from_le_bytes([blob[176], blob[177], blob[178], blob[179]]);
    if crc32(&blob[..176]) != sent {
        return Err(ProvisionError::Corrupt);
    }
    if &blob[..4] != MAGIC {
        return Err(ProvisionError::Invalid("config page: not a mekong blob (magic)"));
    }
    if blob[4] != VERSION {
        return Err(ProvisionError::Version(blob[4]));
    }
    let kind = *DeviceKind::ALL.get(usize::from(blob[5])).ok_or(ProvisionError::Invalid("config page: bad kind"))?;
    let text = |at: usize, len: u8, cap: usize, what| {
        let len = usize::from(len);
        if len > cap {
            return Err(ProvisionError::Invalid(what));
        }
        core::str::from_utf8(&blob[at..at + len]).map_err(|_| ProvisionError::Invalid(what))
    };
    let device_id = text(8, blob[6], ID_CAP, "config page: bad device id")?;
    if !is_valid_device_id(device_id) {
        return Err(ProvisionError::Invalid("config page: bad device id"));
    }
    let broker_host = text(104, blob[7], HOST_CAP, "config page: bad broker host")?;
    let u16_at = |at: usize| u16::from_le_bytes([blob[at], blob[at + 1]]);
    let key = blob[72..104].try_into().map_err(|_| ProvisionError::Corrupt)?;
    Ok(Provision {
        device_id,
        kind,
        key,
        broker_host,
        broker_port: u16_at(168),
        periods: Periods { air_s: u16_at(170), water_s: u16_at(172), traffic_s: u16_at(174) },
    })
}

/// Writes the temporary layout (tests and host tools; `scripts/provision.py` does the same).
pub fn encode(p: &Provision<'_>) -> Option<[u8; BLOB_LEN]> {
    let mut b = [0u8; BLOB_LEN];
    if p.device_id.len() > ID_CAP || p.broker_host.len() > HOST_CAP {
        return None;
    }
    b[..4].copy_from_slice(MAGIC);
    b[4] = VERSION;
    b[5] = DeviceKind::ALL.iter().position(|k| *k == p.kind)? as u8;
    b[6] = p.device_id.len() as u8;
    b[7] = p.broker_host.len() as u8;
    b[8..8 + p.device_id.len()].copy_from_slice(p.device_id.as_bytes());
    b[72..104].copy_from_slice(p.key);
    b[104..104 + p.broker_host.len()].copy_from_slice(p.broker_host.as_bytes());
    b[168..170].copy_from_slice(&p.broker_port.to_le_bytes());
    b[170..172].copy_from_slice(&p.periods.air_s.to_le_bytes());
    b[172..174].copy_from_slice(&p.periods.water_s.to_le_bytes());
    b[174..176].copy_from_slice(&p.periods.traffic_s.to_le_bytes());
    let crc = crc32(&b[..176]);
    b[176..].copy_from_slice(&crc.to_le_bytes());
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn sample() -> Provision<'static> {
        Provision {
            device_id: "hau-01",
            kind: DeviceKind::Water,
            key: &KEY,
            broker_host: "mqtt.cantho.example",
            broker_port: 1883,
            periods: Periods { air_s: 0, water_s: 60, traffic_s: 0 },
        }
    }

    #[test]
    fn a_blob_round_trips_and_erased_flash_is_unprovisioned() {
        let blob = encode(&sample()).unwrap();
        assert_eq!(read(&blob), Ok(sample()));
        assert_eq!(read(&[0u8; 1024]), Err(ProvisionError::Unprovisioned), "QEMU's empty memory");
        let mut page = [0xFFu8; 1024];
        assert_eq!(read(&page), Err(ProvisionError::Unprovisioned));
        page[..BLOB_LEN].copy_from_slice(&blob);
        assert_eq!(read(&page), Ok(sample()), "the rest of the page is ignored");
    }

    #[test]
    fn damaged_blobs_are_refused() {
        let blob = encode(&sample()).unwrap();
        for i in 0..BLOB_LEN {
            let mut b = blob;
            b[i] ^= 0x01;
            assert_eq!(read(&b), Err(ProvisionError::Corrupt), "byte {i}");
        }
        // A half-written page: the start written, the rest still erased.
        let mut half = [0xFFu8; BLOB_LEN];
        half[..90].copy_from_slice(&blob[..90]);
        assert_eq!(read(&half), Err(ProvisionError::Corrupt));
        let bad_id = encode(&Provision { device_id: "Hau_01", ..sample() }).unwrap();
        assert_eq!(read(&bad_id), Err(ProvisionError::Invalid("config page: bad device id")));
    }
}
