//! Signing: every transmission of a pack goes out in a COSE_Mac0 envelope
//! (`mekong_schema::cose`), keyed by the node's provisioned key and carrying a sequence number
//! the node never uses twice.
//!
//! The outbox keeps each pack plain and seals it again, with a fresh number, every time it
//! sends it ([`crate::outbox`]): the platform refuses any envelope whose number is not above
//! the last it stored for the device, so a resend carrying its first number would be refused
//! as `replayed` whenever a later pack overtook it (a lost first copy, with several packs in
//! flight). The readings inside are byte-identical from one send to the next, and the
//! platform stores a (series, time) once, so a resend never stores a reading twice.

use mekong_schema::cose::{self, KEY_LEN, MAX_OVERHEAD};

/// Why a pack could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    /// The output buffer is too small for the sealed pack.
    BufferFull,
    /// The device id is too long to be a key id (cannot happen with a valid config page).
    KeyId,
}

/// Wraps an encoded pack for the wire.
pub trait Sealer {
    /// Seals `pack` with sequence number `seq` into `out` and returns its length.
    fn seal(&mut self, seq: u64, pack: &[u8], out: &mut [u8]) -> Result<usize, SealError>;

    /// Bytes the sealing adds at most.
    fn overhead(&self) -> usize;
}

/// COSE_Mac0 with HMAC-SHA256, as the platform verifies it.
#[derive(Clone, Copy)]
pub struct Mac0<'a> {
    key: [u8; KEY_LEN],
    device_id: &'a str,
}

impl<'a> Mac0<'a> {
    /// A sealer for `device_id` (the key id) with its provisioned `key`.
    pub fn new(key: [u8; KEY_LEN], device_id: &'a str) -> Self {
        Self { key, device_id }
    }
}

impl core::fmt::Debug for Mac0<'_> {
    // The key stays out of logs.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Mac0").field("device_id", &self.device_id).finish_non_exhaustive()
    }
}

impl Sealer for Mac0<'_> {
    fn seal(&mut self, seq: u64, pack: &[u8], out: &mut [u8]) -> Result<usize, SealError> {
        cose::seal(out, &self.key, seq, self.device_id, pack).map_err(|e| match e {
            cose::CoseError::KidTooLong => SealError::KeyId,
            _ => SealError::BufferFull,
        })
    }

    fn overhead(&self) -> usize {
        MAX_OVERHEAD
    }
}

/// No envelope: for a device the platform registered without a key (and for tests that read
/// packs directly).
#[derive(Debug, Default, Clone, Copy)]
pub struct Unsigned;

impl Sealer for Unsigned {
    fn seal(&mut self, _seq: u64, pack: &[u8], out: &mut [u8]) -> Result<usize, SealError> {
        let dst = out.get_mut(..pack.len()).ok_or(SealError::BufferFull)?;
        dst.copy_from_slice(pack);
        Ok(pack.len())
    }

    fn overhead(&self) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_pack_opens_with_the_key_and_names_its_number() {
        let key = [9u8; KEY_LEN];
        let pack = [0x81, 0xa1, 0x02, 0x01];
        let mut out = [0u8; 4 + MAX_OVERHEAD];
        let n = Mac0::new(key, "hau-01").seal(42, &pack, &mut out).unwrap();
        let opened = cose::open(&out[..n], &key).unwrap();
        assert_eq!((opened.payload, opened.seq, opened.kid), (&pack[..], 42, &b"hau-01"[..]));
        assert!(cose::open(&out[..n], &[8u8; KEY_LEN]).is_err(), "another key");
        assert_eq!(Mac0::new(key, "hau-01").seal(1, &pack, &mut out[..20]), Err(SealError::BufferFull));
    }
}
