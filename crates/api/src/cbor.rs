//! A minimal CBOR writer (RFC 8949) for the compact answers: maps, arrays, text, integers,
//! floats, booleans and null, each in its preferred (shortest) serialization.
//!
//! The API writes CBOR of one known shape (`routes::series`' columnar points), so a writer of
//! a few dozen lines does what a serde format would, without a second CBOR library beside the
//! wire contract's (which only `mekong-schema` may use). Floats take the shortest width that
//! holds the value exactly (half, single or double, RFC 8949 section 4.2.2), so an integer
//! count costs 3 bytes and a reading to the tenth 9: every value reads back bit for bit.

/// CBOR bytes being written.
#[derive(Debug, Default)]
pub struct Writer {
    /// What has been written so far.
    pub out: Vec<u8>,
}

impl Writer {
    /// A writer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Writer {
        Writer { out: Vec::with_capacity(capacity) }
    }

    /// A head: major type `major` with argument `n`, in the fewest bytes.
    fn head(&mut self, major: u8, n: u64) {
        let major = major << 5;
        if n < 24 {
            self.out.push(major | n as u8);
        } else if let Ok(n) = u8::try_from(n) {
            self.out.extend_from_slice(&[major | 24, n]);
        } else if let Ok(n) = u16::try_from(n) {
            self.out.push(major | 25);
            self.out.extend_from_slice(&n.to_be_bytes());
        } else if let Ok(n) = u32::try_from(n) {
            self.out.push(major | 26);
            self.out.extend_from_slice(&n.to_be_bytes());
        } else {
            self.out.push(major | 27);
            self.out.extend_from_slice(&n.to_be_bytes());
        }
    }

    /// A map of `entries` key/value pairs follows.
    pub fn map(&mut self, entries: usize) {
        self.head(5, entries as u64);
    }

    /// An array of `items` items follows.
    pub fn array(&mut self, items: usize) {
        self.head(4, items as u64);
    }

    /// A text string.
    pub fn text(&mut self, s: &str) {
        self.head(3, s.len() as u64);
        self.out.extend_from_slice(s.as_bytes());
    }

    /// An integer: major type 0 at or above zero, 1 below (-1 - n).
    pub fn int(&mut self, v: i64) {
        match u64::try_from(v) {
            Ok(n) => self.head(0, n),
            // -1 - v, which cannot overflow for a negative v.
            Err(_) => self.head(1, !(v as u64)),
        }
    }

    /// A float in the shortest width that holds it exactly.
    pub fn float(&mut self, v: f64) {
        let single = v as f32;
        if f64::from(single).to_bits() != v.to_bits() && !v.is_nan() {
            self.out.push(0xfb);
            self.out.extend_from_slice(&v.to_bits().to_be_bytes());
        } else if let Some(half) = half_bits(single) {
            self.out.push(0xf9);
            self.out.extend_from_slice(&half.to_be_bytes());
        } else {
            self.out.push(0xfa);
            self.out.extend_from_slice(&single.to_bits().to_be_bytes());
        }
    }

    /// `true` or `false`.
    pub fn bool(&mut self, v: bool) {
        self.out.push(if v { 0xf5 } else { 0xf4 });
    }

    /// `null`.
    pub fn null(&mut self) {
        self.out.push(0xf6);
    }

    /// `v` as text, or `null`.
    pub fn opt_text(&mut self, v: Option<&str>) {
        match v {
            Some(s) => self.text(s),
            None => self.null(),
        }
    }

    /// `v` as an integer, or `null`.
    pub fn opt_int(&mut self, v: Option<i64>) {
        match v {
            Some(n) => self.int(n),
            None => self.null(),
        }
    }
}

/// `v`'s IEEE 754 half-precision bits, when a half holds it exactly: zeros, infinities, NaN
/// (as the canonical quiet NaN) and normal halves; subnormal halves are written wider, which
/// is still exact.
fn half_bits(v: f32) -> Option<u16> {
    let bits = v.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exponent = ((bits >> 23) & 0xff) as i32;
    let mantissa = bits & 0x7f_ffff;
    match exponent {
        0 if mantissa == 0 => Some(sign),
        0xff if mantissa == 0 => Some(sign | 0x7c00),
        0xff => Some(0x7e00),
        _ => {
            let unbiased = exponent - 127;
            if (-14..=15).contains(&unbiased) && mantissa & 0x1fff == 0 {
                Some(sign | (((unbiased + 15) as u16) << 10) | (mantissa >> 13) as u16)
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(write: impl FnOnce(&mut Writer), hex: &str) {
        let mut w = Writer::default();
        write(&mut w);
        let got: String = w.out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, hex);
    }

    /// The examples of RFC 8949 appendix A.
    #[test]
    fn encodes_as_rfc_8949_appendix_a() {
        check(|w| w.int(0), "00");
        check(|w| w.int(23), "17");
        check(|w| w.int(24), "1818");
        check(|w| w.int(1000), "1903e8");
        check(|w| w.int(1_000_000), "1a000f4240");
        check(|w| w.int(1_000_000_000_000), "1b000000e8d4a51000");
        check(|w| w.int(-1), "20");
        check(|w| w.int(-1000), "3903e7");
        check(|w| w.int(i64::MIN), "3b7fffffffffffffff");
        check(|w| w.float(0.0), "f90000");
        check(|w| w.float(-0.0), "f98000");
        check(|w| w.float(1.0), "f93c00");
        check(|w| w.float(1.1), "fb3ff199999999999a");
        check(|w| w.float(1.5), "f93e00");
        check(|w| w.float(65504.0), "f97bff");
        check(|w| w.float(100000.0), "fa47c35000");
        check(|w| w.float(3.4028234663852886e+38), "fa7f7fffff");
        check(|w| w.float(1.0e+300), "fb7e37e43c8800759c");
        check(|w| w.float(-4.0), "f9c400");
        check(|w| w.float(-4.1), "fbc010666666666666");
        check(|w| w.float(f64::INFINITY), "f97c00");
        check(|w| w.float(f64::NAN), "f97e00");
        check(|w| w.float(f64::NEG_INFINITY), "f9fc00");
        check(|w| w.bool(false), "f4");
        check(|w| w.null(), "f6");
        check(|w| w.text("IETF"), "6449455446");
        check(
            |w| {
                w.map(2);
                w.text("a");
                w.int(1);
                w.text("b");
                w.array(2);
                w.int(2);
                w.int(3);
            },
            "a26161016162820203",
        );
    }

    #[test]
    fn a_float_is_written_in_a_width_that_holds_it_exactly() {
        // 2^-14 is the least normal half; 2^-24 (a subnormal half) is written as a single.
        check(|w| w.float(6.103515625e-05), "f90400");
        check(|w| w.float(5.960464477539063e-08), "fa33800000");
        check(|w| w.float(182.5), "f959b4");
        check(|w| w.float(250.3), "fb406f49999999999a");
        check(|w| w.float(0.1f32.into()), "fa3dcccccd");
    }
}
