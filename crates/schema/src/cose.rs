//! Signed packs: a SenML pack in a COSE_Mac0 envelope (RFC 9052, section 6.2), keyed by the
//! device's own 32-byte secret, with a sequence number against replays.
//!
//! The envelope is CBOR tag 17 around `[protected, unprotected, payload, tag]`:
//!
//! | item | what |
//! |---|---|
//! | protected | a byte string holding the map `{1: 5, 4: kid, -65537: seq}`, covered by the tag |
//! | unprotected | `{}`, an empty map (nothing in it would be authenticated) |
//! | payload | the SenML-CBOR pack, byte for byte as a plain pack would be sent |
//! | tag | HMAC-SHA256 (alg 5, "HMAC 256/256") over `["MAC0", protected, h'', payload]` |
//!
//! In the protected map, label 1 is the algorithm (always 5), label 4 the key id (`kid`: the
//! device id's bytes, so the tag binds the pack to the device it claims to come from; the
//! platform checks it against the topic), and label -65537 the sequence number, an unsigned
//! integer. -65537 is the first label of the range RFC 9052 (section 3.1) leaves for private
//! use (below -65536), so it cannot clash with a registered header.
//!
//! The platform keeps the highest sequence number it has stored per device and key (the
//! key's [`key_fingerprint`] is stored beside it) and refuses any envelope whose number is not
//! above it, so a captured pack cannot be replayed, not even after a restart. A new key starts
//! a new numbering: the first envelope signed with it is accepted whatever its number. A node therefore seals every transmission with a new number, resends included,
//! and must never reuse one: it keeps its counter in flash, and reserves numbers ahead of use
//! (for example writes `n + 1000` before sending `n`) so that a reset never goes back.
//!
//! **Telling a signed pack from a plain one.** A COSE_Mac0 begins with the byte `0xd1` (tag 17);
//! a SenML pack is a CBOR array and begins with `0x80` to `0x9f`. Only that first byte is
//! looked at, so an envelope must carry the tag (the untagged form would be a four-item array,
//! indistinguishable from a pack of four records).
//!
//! The decoder reads only this fixed shape, with a small CBOR reader of its own: every length
//! is checked against the input before use, indefinite lengths and any other header label are
//! refused, and nothing is allocated. The encoder writes into the caller's buffer;
//! [`MAX_OVERHEAD`] bytes beyond the pack are always enough.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::limits::MAX_DEVICE_ID_LEN;
use crate::senml::cbor::{MAJOR_ARRAY, MAJOR_BYTES, MAJOR_MAP, MAJOR_NEGATIVE, MAJOR_UNSIGNED};

/// The CBOR tag of a COSE_Mac0 (RFC 9052, section 2).
pub const CBOR_TAG: u64 = 17;
/// The first byte of every envelope (tag 17 in its one-byte form); no SenML pack starts so.
pub const FIRST_BYTE: u8 = 0xd1;
/// Header label of the algorithm.
pub const LABEL_ALG: i64 = 1;
/// Header label of the key id.
pub const LABEL_KID: i64 = 4;
/// Header label of the sequence number (private use, RFC 9052 section 3.1).
pub const LABEL_SEQ: i64 = -65537;
/// COSE algorithm "HMAC 256/256": HMAC-SHA256 with the full 32-byte tag (RFC 9053, 3.1).
pub const ALG_HMAC_256_256: i64 = 5;
/// Length of a device key.
pub const KEY_LEN: usize = 32;
/// Length of the tag.
pub const TAG_LEN: usize = 32;
/// Longest key id: a device id.
pub const MAX_KID_LEN: usize = MAX_DEVICE_ID_LEN;

/// Longest protected header: map head, alg, kid (with a two-byte head), seq (label and u64).
const MAX_PROTECTED: usize = 1 + 2 + 1 + 2 + MAX_KID_LEN + 5 + 9;

/// The most bytes an envelope adds to its pack: tag, array head, protected header with its
/// byte-string head, empty map, payload head, tag with its head.
pub const MAX_OVERHEAD: usize = 1 + 1 + 2 + MAX_PROTECTED + 1 + 9 + 2 + TAG_LEN;

/// The MAC_structure's context string and array head, as CBOR: `["MAC0", ...`.
const MAC0_CONTEXT: [u8; 6] = [0x84, 0x64, b'M', b'A', b'C', b'0'];

type HmacSha256 = Hmac<Sha256>;

/// Why an envelope cannot be written or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CoseError {
    /// The output buffer is too small.
    #[error("output buffer too small")]
    BufferFull,
    /// The key id is longer than a device id may be.
    #[error("key id is longer than {MAX_KID_LEN} bytes")]
    KidTooLong,
    /// The input does not start with CBOR tag 17.
    #[error("not a cose_mac0 envelope (no cbor tag 17)")]
    NotMac0,
    /// The input ends inside the envelope.
    #[error("truncated envelope")]
    Truncated,
    /// The envelope is well-formed CBOR up to here but not of the expected shape.
    #[error("invalid envelope: {0}")]
    Malformed(&'static str),
    /// Bytes follow the envelope.
    #[error("trailing bytes after the envelope")]
    TrailingBytes,
    /// The tag does not match: another key, or altered bytes.
    #[error("tag does not verify")]
    BadTag,
}

/// Length of a [`key_fingerprint`].
pub const FINGERPRINT_LEN: usize = 8;

/// Names a key without revealing it: the first 8 bytes of SHA-256 of the key. The platform
/// stores it beside a device's last sequence number, so that a new key (which starts a new
/// numbering) is told from the old one after a restart.
pub fn key_fingerprint(key: &[u8; KEY_LEN]) -> [u8; FINGERPRINT_LEN] {
    use sha2::Digest;
    let digest = Sha256::digest(key);
    let mut fingerprint = [0u8; FINGERPRINT_LEN];
    fingerprint.copy_from_slice(&digest[..FINGERPRINT_LEN]);
    fingerprint
}

/// Whether `payload` is an envelope rather than a plain pack (see the module documentation).
pub fn is_sealed(payload: &[u8]) -> bool {
    payload.first() == Some(&FIRST_BYTE)
}

/// Seals `payload` (a SenML-CBOR pack) for `device_id` with sequence number `seq`, writes the
/// envelope into `out` and returns its length (at most `payload.len() + MAX_OVERHEAD`).
pub fn seal(
    out: &mut [u8],
    key: &[u8; KEY_LEN],
    seq: u64,
    device_id: &str,
    payload: &[u8],
) -> Result<usize, CoseError> {
    let kid = device_id.as_bytes();
    if kid.len() > MAX_KID_LEN {
        return Err(CoseError::KidTooLong);
    }
    let mut protected_buf = [0u8; MAX_PROTECTED];
    let mut p = Writer { out: &mut protected_buf, pos: 0 };
    // Labels in the order of RFC 8949's deterministic encoding (by encoded bytes): 1, 4, -65537.
    p.head(MAJOR_MAP, 3)?;
    p.int(LABEL_ALG)?;
    p.int(ALG_HMAC_256_256)?;
    p.int(LABEL_KID)?;
    p.head(MAJOR_BYTES, kid.len() as u64)?;
    p.bytes(kid)?;
    p.int(LABEL_SEQ)?;
    p.head(MAJOR_UNSIGNED, seq)?;
    let protected_len = p.pos;
    let protected = &protected_buf[..protected_len];

    let mut w = Writer { out, pos: 0 };
    w.bytes(&[FIRST_BYTE])?;
    w.head(MAJOR_ARRAY, 4)?;
    w.head(MAJOR_BYTES, protected.len() as u64)?;
    w.bytes(protected)?;
    w.head(MAJOR_MAP, 0)?;
    w.head(MAJOR_BYTES, payload.len() as u64)?;
    w.bytes(payload)?;
    let tag = mac(key, protected, payload).finalize().into_bytes();
    w.head(MAJOR_BYTES, TAG_LEN as u64)?;
    w.bytes(&tag)?;
    Ok(w.pos)
}

/// A parsed envelope whose tag is not yet checked: enough to find the key and to check the
/// key id and sequence number. The payload is only handed out by [`Mac0::verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac0<'a> {
    kid: &'a [u8],
    seq: u64,
    protected: &'a [u8],
    payload: &'a [u8],
    tag: &'a [u8],
}

impl<'a> Mac0<'a> {
    /// The key id (the device id's bytes), unauthenticated until verified.
    pub fn kid(&self) -> &'a [u8] {
        self.kid
    }

    /// The sequence number, unauthenticated until verified.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Checks the tag with `key` in constant time and returns the payload.
    pub fn verify(&self, key: &[u8; KEY_LEN]) -> Result<&'a [u8], CoseError> {
        mac(key, self.protected, self.payload).verify_slice(self.tag).map_err(|_| CoseError::BadTag)?;
        Ok(self.payload)
    }
}

/// A verified envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened<'a> {
    /// The key id (the device id's bytes).
    pub kid: &'a [u8],
    /// The sequence number.
    pub seq: u64,
    /// The pack, borrowed from the input.
    pub payload: &'a [u8],
}

/// Reads an envelope without checking its tag (see [`Mac0::verify`]).
pub fn parse(input: &[u8]) -> Result<Mac0<'_>, CoseError> {
    match input.first() {
        None => return Err(CoseError::Truncated),
        Some(&FIRST_BYTE) => {}
        Some(_) => return Err(CoseError::NotMac0),
    }
    let mut r = Reader { input, pos: 1 };
    if r.head()? != (MAJOR_ARRAY, 4) {
        return Err(CoseError::Malformed("expected an array of four items"));
    }
    let protected = r.bstr("the protected header must be a byte string")?;
    if r.head()? != (MAJOR_MAP, 0) {
        return Err(CoseError::Malformed("the unprotected header must be an empty map"));
    }
    let payload = r.bstr("the payload must be a byte string (detached payloads are not accepted)")?;
    let tag = r.bstr("the tag must be a byte string")?;
    if tag.len() != TAG_LEN {
        return Err(CoseError::Malformed("the tag must be 32 bytes"));
    }
    if r.pos != input.len() {
        return Err(CoseError::TrailingBytes);
    }

    let mut h = Reader { input: protected, pos: 0 };
    if h.head()? != (MAJOR_MAP, 3) {
        return Err(CoseError::Malformed("the protected header must hold alg, kid and seq only"));
    }
    let (mut alg, mut kid, mut seq) = (None, None, None);
    for _ in 0..3 {
        let label = h.int()?;
        let slot_taken = match label {
            LABEL_ALG => alg.replace(h.int()?).is_some(),
            LABEL_KID => kid.replace(h.bstr("the kid must be a byte string")?).is_some(),
            LABEL_SEQ => seq.replace(h.uint("the sequence number must be an unsigned integer")?).is_some(),
            _ => return Err(CoseError::Malformed("unknown protected header label")),
        };
        if slot_taken {
            return Err(CoseError::Malformed("repeated protected header label"));
        }
    }
    if h.pos != protected.len() {
        return Err(CoseError::Malformed("trailing bytes in the protected header"));
    }
    if alg != Some(ALG_HMAC_256_256) {
        return Err(CoseError::Malformed("algorithm is not hmac 256/256 (5)"));
    }
    let (Some(kid), Some(seq)) = (kid, seq) else {
        return Err(CoseError::Malformed("the protected header must hold alg, kid and seq only"));
    };
    if kid.len() > MAX_KID_LEN {
        return Err(CoseError::KidTooLong);
    }
    Ok(Mac0 { kid, seq, protected, payload, tag })
}

/// Reads an envelope and checks its tag with `key`.
pub fn open<'a>(input: &'a [u8], key: &[u8; KEY_LEN]) -> Result<Opened<'a>, CoseError> {
    let mac0 = parse(input)?;
    let payload = mac0.verify(key)?;
    Ok(Opened { kid: mac0.kid, seq: mac0.seq, payload })
}

/// The HMAC over the MAC_structure `["MAC0", protected, h'', payload]` (RFC 9052, section 6.3),
/// fed piece by piece so that it needs no buffer.
fn mac(key: &[u8; KEY_LEN], protected: &[u8], payload: &[u8]) -> HmacSha256 {
    // HMAC pads a key shorter than the hash's block with zeros (RFC 2104), so padding it here
    // gives the same MAC through the constructor that cannot fail.
    let mut block = [0u8; 64];
    block[..KEY_LEN].copy_from_slice(key);
    let mut mac = <HmacSha256 as hmac::digest::KeyInit>::new(&block.into());
    let mut head = [0u8; 9];
    mac.update(&MAC0_CONTEXT);
    mac.update(encode_head(MAJOR_BYTES, protected.len() as u64, &mut head));
    mac.update(protected);
    mac.update(encode_head(MAJOR_BYTES, 0, &mut head)); // external_aad: empty
    mac.update(encode_head(MAJOR_BYTES, payload.len() as u64, &mut head));
    mac.update(payload);
    mac
}

/// A CBOR item head in its shortest form (RFC 8949, section 3).
fn encode_head(major: u8, arg: u64, buf: &mut [u8; 9]) -> &[u8] {
    let m = major << 5;
    if arg < 24 {
        buf[0] = m | arg as u8;
        &buf[..1]
    } else if arg <= 0xff {
        buf[0] = m | 24;
        buf[1] = arg as u8;
        &buf[..2]
    } else if arg <= 0xffff {
        buf[0] = m | 25;
        buf[1..3].copy_from_slice(&(arg as u16).to_be_bytes());
        &buf[..3]
    } else if arg <= 0xffff_ffff {
        buf[0] = m | 26;
        buf[1..5].copy_from_slice(&(arg as u32).to_be_bytes());
        &buf[..5]
    } else {
        buf[0] = m | 27;
        buf[1..9].copy_from_slice(&arg.to_be_bytes());
        &buf[..9]
    }
}

struct Writer<'o> {
    out: &'o mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) -> Result<(), CoseError> {
        let end = self.pos.checked_add(b.len()).filter(|&end| end <= self.out.len()).ok_or(CoseError::BufferFull)?;
        self.out[self.pos..end].copy_from_slice(b);
        self.pos = end;
        Ok(())
    }

    fn head(&mut self, major: u8, arg: u64) -> Result<(), CoseError> {
        let mut buf = [0u8; 9];
        self.bytes(encode_head(major, arg, &mut buf))
    }

    fn int(&mut self, n: i64) -> Result<(), CoseError> {
        if n >= 0 {
            self.head(MAJOR_UNSIGNED, n as u64)
        } else {
            // CBOR stores a negative n as -1 - n, which is !n in two's complement.
            self.head(MAJOR_NEGATIVE, !n as u64)
        }
    }
}

/// Reads CBOR heads and byte strings; every read is checked against the input's end.
struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CoseError> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.input.len()).ok_or(CoseError::Truncated)?;
        let bytes = &self.input[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// Major type and argument of the next item; indefinite lengths and the reserved
    /// additional-information values are refused.
    fn head(&mut self) -> Result<(u8, u64), CoseError> {
        let first = self.take(1)?[0];
        let (major, info) = (first >> 5, first & 0x1f);
        let arg = match info {
            0..=23 => u64::from(info),
            24 => u64::from(self.take(1)?[0]),
            25 => self.take(2)?.iter().fold(0, |a, &b| (a << 8) | u64::from(b)),
            26 => self.take(4)?.iter().fold(0, |a, &b| (a << 8) | u64::from(b)),
            27 => self.take(8)?.iter().fold(0, |a, &b| (a << 8) | u64::from(b)),
            _ => return Err(CoseError::Malformed("indefinite length or reserved cbor header")),
        };
        Ok((major, arg))
    }

    /// A byte string; `not_bstr` is the error when the item is something else.
    fn bstr(&mut self, not_bstr: &'static str) -> Result<&'a [u8], CoseError> {
        match self.head()? {
            // A length beyond usize cannot fit in the input either.
            (MAJOR_BYTES, len) => self.take(usize::try_from(len).map_err(|_| CoseError::Truncated)?),
            _ => Err(CoseError::Malformed(not_bstr)),
        }
    }

    fn uint(&mut self, not_uint: &'static str) -> Result<u64, CoseError> {
        match self.head()? {
            (MAJOR_UNSIGNED, n) => Ok(n),
            _ => Err(CoseError::Malformed(not_uint)),
        }
    }

    fn int(&mut self) -> Result<i64, CoseError> {
        let out_of_range = CoseError::Malformed("integer out of range");
        match self.head()? {
            (MAJOR_UNSIGNED, n) => i64::try_from(n).map_err(|_| out_of_range),
            // -1 - n, for n up to i64::MAX, is at least i64::MIN.
            (MAJOR_NEGATIVE, n) => i64::try_from(n).map(|n| -1 - n).map_err(|_| out_of_range),
            _ => Err(CoseError::Malformed("expected an integer")),
        }
    }
}

#[cfg(test)]
mod tests;
