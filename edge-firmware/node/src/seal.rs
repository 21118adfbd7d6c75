//! The seam where a pack gets signed before it is published.
//!
//! Signing is COSE_Mac0 (RFC 9052) from the schema crate, being written in the `cose`
//! branch. Until it lands, [`Unsigned`] passes the pack through, and the platform accepts
//! plain SenML-CBOR. Plugging in the real one is one `impl Sealer` that calls the schema
//! crate with the node's 32-byte key; nothing else in the node changes, because the outbox
//! keeps and resends the sealed bytes, so a resend carries the same sequence number and tag.

/// Why a pack could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    /// The output buffer is too small for the sealed pack.
    BufferFull,
}

/// Wraps an encoded pack for the wire.
pub trait Sealer {
    /// Seals `pack`, the `seq`-th pack this node ever made, into `out` and returns its length.
    fn seal(&mut self, seq: u64, pack: &[u8], out: &mut [u8]) -> Result<usize, SealError>;

    /// Bytes the sealing adds at most, so the encoder leaves room for them.
    fn overhead(&self) -> usize;
}

/// No signature: the pack goes out as it is.
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
