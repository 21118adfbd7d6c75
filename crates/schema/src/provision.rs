//! The node's configuration blob: what `mekong device provision` writes and a node reads from
//! its configuration flash page at boot (device id, kind, key, broker, sampling periods, MQTT
//! password).
//!
//! A fixed little-endian layout of [`BLOB_LEN`] bytes, so that it fits any flash page and a
//! node can read it without a parser:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `MKNC` |
//! | 4 | 2 | bytes covered by the CRC (u16), which is also the CRC's offset: 210 |
//! | 6 | 1 | format version: 2 |
//! | 7 | 1 | kind: 1 traffic, 2 water, 3 air |
//! | 8 | 1 | device id length (1 to 64) |
//! | 9 | 64 | device id, zero-padded |
//! | 73 | 32 | the device's key for COSE_Mac0 ([`crate::cose`]) |
//! | 105 | 1 | broker host length (1 to 64) |
//! | 106 | 64 | broker host (name or address, UTF-8), zero-padded |
//! | 170 | 2 | broker port (u16) |
//! | 172 | 2 | air sampling period, seconds (u16); 0: no such sensor |
//! | 174 | 2 | water sampling period, seconds (u16); 0: no such sensor |
//! | 176 | 2 | traffic sampling period, seconds (u16); 0: no such sensor |
//! | 178 | 32 | the node's MQTT password ([`MqttPassword`]) |
//! | 210 | 4 | CRC-32 (IEEE, as zlib's `crc32`) of bytes 0 to 209 (u32) |
//!
//! Version 1 was the same layout without the password (CRC at 178). Its blobs are refused
//! ([`ProvisionError::NoPassword`]): a node without a password cannot log in to a broker that
//! checks them, and only a new provisioning run can give it one (the registry keeps the
//! password's digest, never the password).
//!
//! [`decode`] tells an erased page (all `0xff`: never provisioned) from a damaged one (bad
//! CRC: [`ProvisionError::Corrupt`]). The CRC is checked before the version is looked at, at
//! the offset the blob itself states, so that an older or later version with another length
//! is reported as such rather than as corrupt.

use core::fmt;

use crate::cose::KEY_LEN;
use crate::limits::MAX_DEVICE_ID_LEN;
use crate::topic::is_valid_device_id;
use crate::DeviceKind;

/// The first four bytes of a blob.
pub const MAGIC: [u8; 4] = *b"MKNC";
/// The layout this module writes and reads.
pub const FORMAT_VERSION: u8 = 2;
/// Longest broker host name.
pub const MAX_HOST_LEN: usize = 64;
/// Length of a blob of this version, CRC included.
pub const BLOB_LEN: usize = CRC_AT + 4;

/// Bytes of a node's MQTT password.
pub const PASSWORD_LEN: usize = 32;

const CRC_AT: usize = 210;
/// Magic, CRC offset, version, kind: what is read before the CRC is checked.
const HEADER_LEN: usize = 8;
const ID_AT: usize = 8;
const KEY_AT: usize = 73;
const HOST_AT: usize = 105;
const PORT_AT: usize = 170;
const PERIODS_AT: usize = 172;
const PASSWORD_AT: usize = 178;

/// A node's MQTT password: 32 random bytes drawn by `mekong device provision`. On the wire it
/// is their 64 lowercase hex digits ([`MqttPassword::to_hex`]): what the node sends in
/// CONNECT, and what the registry's `password_sha256` is the SHA-256 of. Text rather than
/// raw bytes because MQTT brokers (rumqttd among them) and most clients take a password as a
/// UTF-8 string. Its `Debug` output shows nothing of it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MqttPassword(pub [u8; PASSWORD_LEN]);

impl MqttPassword {
    /// The password as a client presents it: 64 lowercase hex digits (ASCII).
    pub fn to_hex(&self) -> [u8; 2 * PASSWORD_LEN] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 2 * PASSWORD_LEN];
        for (pair, byte) in text.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0x0f)];
        }
        text
    }
}

impl fmt::Debug for MqttPassword {
    // The password stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MqttPassword(secret)")
    }
}

/// Sampling period of each sensor a node may carry, in seconds; 0 means the node has no such
/// sensor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Periods {
    /// Air-quality sensor.
    pub air: u16,
    /// Water level and quality probe.
    pub water: u16,
    /// Traffic counter.
    pub traffic: u16,
}

/// A node's configuration. Strings borrow from the blob they were decoded from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Provision<'a> {
    /// The device id: `[a-z0-9-]{1,64}`, as in its topics.
    pub device_id: &'a str,
    /// What the node is: traffic, water or air (never unknown).
    pub kind: DeviceKind,
    /// The key its packs are sealed with.
    pub key: [u8; KEY_LEN],
    /// The broker's host name or address, 1 to [`MAX_HOST_LEN`] bytes.
    pub broker_host: &'a str,
    /// The broker's MQTT port.
    pub broker_port: u16,
    /// Sampling periods.
    pub period_secs: Periods,
    /// The password it logs in to the broker with (username and client id: the device id).
    pub password: MqttPassword,
}

impl fmt::Debug for Provision<'_> {
    // The key and the password stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provision")
            .field("device_id", &self.device_id)
            .field("kind", &self.kind)
            .field("key", &"(secret)")
            .field("broker_host", &self.broker_host)
            .field("broker_port", &self.broker_port)
            .field("period_secs", &self.period_secs)
            .field("password", &self.password)
            .finish()
    }
}

/// Why a blob cannot be written or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    /// The output buffer is shorter than [`BLOB_LEN`].
    #[error("output buffer too small")]
    BufferFull,
    /// A field is out of its bounds (named in the message).
    #[error("invalid node configuration: {0}")]
    Invalid(&'static str),
    /// The page is all `0xff`: erased flash, the node was never provisioned.
    #[error("node is not provisioned (erased flash)")]
    Unprovisioned,
    /// The page is shorter than the blob it starts (and than [`BLOB_LEN`]).
    #[error("node configuration is truncated")]
    Truncated,
    /// The page does not start with `MKNC`.
    #[error("no node configuration (bad magic)")]
    BadMagic,
    /// The CRC does not match, or the stated length is impossible: the page is damaged.
    #[error("node configuration is corrupt (crc mismatch)")]
    Corrupt,
    /// A version-1 blob: written before nodes had MQTT passwords, so this node cannot log in.
    #[error(
        "node configuration format 1 predates MQTT passwords: provision the node again with `mekong device provision`"
    )]
    NoPassword,
    /// A layout this version does not know.
    #[error("node configuration format {0} is not supported")]
    UnsupportedVersion(u8),
}

const fn kind_byte(kind: DeviceKind) -> Option<u8> {
    match kind {
        DeviceKind::Traffic => Some(1),
        DeviceKind::Water => Some(2),
        DeviceKind::Air => Some(3),
        DeviceKind::Unknown => None,
    }
}

const fn kind_of(byte: u8) -> Option<DeviceKind> {
    match byte {
        1 => Some(DeviceKind::Traffic),
        2 => Some(DeviceKind::Water),
        3 => Some(DeviceKind::Air),
        _ => None,
    }
}

/// Writes `p` into `out` (at least [`BLOB_LEN`] bytes) and returns [`BLOB_LEN`].
pub fn encode(p: &Provision<'_>, out: &mut [u8]) -> Result<usize, ProvisionError> {
    if !is_valid_device_id(p.device_id) {
        return Err(ProvisionError::Invalid("device id must be 1 to 64 characters of a-z, 0-9 and '-'"));
    }
    let kind = kind_byte(p.kind).ok_or(ProvisionError::Invalid("kind must be traffic, water or air"))?;
    let host = p.broker_host.as_bytes();
    if host.is_empty() || host.len() > MAX_HOST_LEN {
        return Err(ProvisionError::Invalid("broker host must be 1 to 64 bytes"));
    }
    let out = out.get_mut(..BLOB_LEN).ok_or(ProvisionError::BufferFull)?;
    out.fill(0);
    out[..4].copy_from_slice(&MAGIC);
    out[4..6].copy_from_slice(&(CRC_AT as u16).to_le_bytes());
    out[6] = FORMAT_VERSION;
    out[7] = kind;
    out[ID_AT] = p.device_id.len() as u8;
    out[ID_AT + 1..ID_AT + 1 + p.device_id.len()].copy_from_slice(p.device_id.as_bytes());
    out[KEY_AT..KEY_AT + KEY_LEN].copy_from_slice(&p.key);
    out[HOST_AT] = host.len() as u8;
    out[HOST_AT + 1..HOST_AT + 1 + host.len()].copy_from_slice(host);
    out[PORT_AT..PORT_AT + 2].copy_from_slice(&p.broker_port.to_le_bytes());
    let periods = [p.period_secs.air, p.period_secs.water, p.period_secs.traffic];
    for (i, period) in periods.iter().enumerate() {
        out[PERIODS_AT + 2 * i..PERIODS_AT + 2 * i + 2].copy_from_slice(&period.to_le_bytes());
    }
    out[PASSWORD_AT..PASSWORD_AT + PASSWORD_LEN].copy_from_slice(&p.password.0);
    let crc = crc32(&out[..CRC_AT]);
    out[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    Ok(BLOB_LEN)
}

/// Reads a blob from the start of `page` (a flash page may be longer; the rest is ignored).
pub fn decode(page: &[u8]) -> Result<Provision<'_>, ProvisionError> {
    let header = page.get(..HEADER_LEN).ok_or(ProvisionError::Truncated)?;
    if header[..4] != MAGIC {
        let erased = page.iter().take(BLOB_LEN).all(|&b| b == 0xff);
        return Err(if erased { ProvisionError::Unprovisioned } else { ProvisionError::BadMagic });
    }
    let crc_at = usize::from(u16::from_le_bytes([header[4], header[5]]));
    if crc_at < HEADER_LEN {
        return Err(ProvisionError::Corrupt);
    }
    let Some(stored) = page.get(crc_at..crc_at + 4) else {
        // A page that could hold this version's blob but not the one it states: the stated
        // length is damaged. A shorter input (a file, not a flash page) was cut short.
        return Err(if page.len() < BLOB_LEN { ProvisionError::Truncated } else { ProvisionError::Corrupt });
    };
    if crc32(&page[..crc_at]).to_le_bytes() != stored {
        return Err(ProvisionError::Corrupt);
    }
    match header[6] {
        FORMAT_VERSION => {}
        1 => return Err(ProvisionError::NoPassword),
        other => return Err(ProvisionError::UnsupportedVersion(other)),
    }
    if crc_at != CRC_AT {
        // The CRC matched, so the writer meant this length: not a version-2 layout.
        return Err(ProvisionError::Invalid("length does not match format version 2"));
    }
    let kind = kind_of(header[7]).ok_or(ProvisionError::Invalid("unknown kind"))?;
    let device_id = text(page, ID_AT, MAX_DEVICE_ID_LEN)
        .filter(|id| is_valid_device_id(id))
        .ok_or(ProvisionError::Invalid("device id must be 1 to 64 characters of a-z, 0-9 and '-'"))?;
    let broker_host = text(page, HOST_AT, MAX_HOST_LEN)
        .ok_or(ProvisionError::Invalid("broker host must be 1 to 64 bytes of utf-8"))?;
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&page[KEY_AT..KEY_AT + KEY_LEN]);
    let mut password = [0u8; PASSWORD_LEN];
    password.copy_from_slice(&page[PASSWORD_AT..PASSWORD_AT + PASSWORD_LEN]);
    let u16_at = |at: usize| u16::from_le_bytes([page[at], page[at + 1]]);
    Ok(Provision {
        device_id,
        kind,
        key,
        broker_host,
        broker_port: u16_at(PORT_AT),
        period_secs: Periods {
            air: u16_at(PERIODS_AT),
            water: u16_at(PERIODS_AT + 2),
            traffic: u16_at(PERIODS_AT + 4),
        },
        password: MqttPassword(password),
    })
}

/// The length-prefixed string at `at` (length byte, then up to `max` bytes), if non-empty UTF-8.
fn text(page: &[u8], at: usize, max: usize) -> Option<&str> {
    let len = usize::from(*page.get(at)?);
    if len == 0 || len > max {
        return None;
    }
    core::str::from_utf8(page.get(at + 1..at + 1 + len)?).ok()
}

/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`), bit by bit. Written here rather than
/// taken from `crc32fast` (already in the server's tree through sled): a node checks one
/// 214-byte blob at boot, where speed does not matter, and crc32fast's slice-by-16 tables
/// would cost 16 KiB of flash.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            // Shift out one bit; where it was set, fold in the reflected polynomial.
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

#[cfg(test)]
mod tests;
