//! The signature of the platform's alert webhooks: `X-Mekong-Signature: sha256=<hex>`, the
//! HMAC-SHA256 with the webhook's secret of the `X-Mekong-Timestamp` header's value (Unix
//! seconds, in decimal), a `.`, and the body as sent. The timestamp is signed so that a
//! receiver can refuse an old request replayed.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-mekong-signature";
/// The header that carries the time of the attempt, Unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-mekong-timestamp";
/// The header that carries the change's sequence number (the same on every attempt).
pub const DELIVERY_HEADER: &str = "x-mekong-delivery";

/// Length of [`signature`]'s text: `sha256=` and 64 hex digits.
pub const SIGNATURE_LEN: usize = 7 + 64;

/// The value of the signature header for `body` sent at `timestamp`, written into `out`
/// (ASCII). HMAC takes a secret of any length.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8], out: &mut [u8; SIGNATURE_LEN]) {
    // A key of any length is accepted (longer than a block, it is hashed first).
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return,
    };
    let mut digits = [0u8; 20];
    let mut n = digits.len();
    let mut t = timestamp;
    loop {
        n -= 1;
        digits[n] = b'0' + (t % 10) as u8;
        t /= 10;
        if t == 0 {
            break;
        }
    }
    mac.update(&digits[n..]);
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    out[..7].copy_from_slice(b"sha256=");
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in tag.iter().enumerate() {
        out[7 + 2 * i] = HEX[usize::from(b >> 4)];
        out[8 + 2 * i] = HEX[usize::from(b & 0x0f)];
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn signs_timestamp_dot_body_as_an_independent_hmac_does() {
        // Python: hmac.new(b"Jefe", b"1790000000." + b"{}", hashlib.sha256).hexdigest()
        let mut out = [0u8; SIGNATURE_LEN];
        signature(b"Jefe", 1_790_000_000, b"{}", &mut out);
        let text = core::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("sha256="));
        let mut other = [0u8; SIGNATURE_LEN];
        signature(b"Jefe", 1_790_000_001, b"{}", &mut other);
        assert_ne!(out, other);
        let mut zero = [0u8; SIGNATURE_LEN];
        signature(b"Jefe", 0, b"{}", &mut zero);
        assert_ne!(zero, out);
        assert_eq!(text, EXPECTED);
    }

    const EXPECTED: &str = "sha256=d927a7192cf1342cbb06dac01a2b72995b9dec4d36dbae00ea48c5671b3f9751";
}
