//! The integer codings the chunk and rollup formats share: LEB128 varints, and zigzag to
//! give small negative numbers short varints.

/// Maps signed to unsigned so that small magnitudes, of either sign, are small.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The inverse of [`zigzag`].
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads an unsigned LEB128 varint from the front of `input` and advances it; `None` if it
/// is cut short or longer than 64 bits allow.
pub fn get_varint(input: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = input.split_first()?;
        *input = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_the_edges() {
        for v in [0i64, 1, -1, 63, -64, 64, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(v)), v);
            let mut out = Vec::new();
            put_varint(&mut out, zigzag(v));
            let mut input = &out[..];
            assert_eq!(get_varint(&mut input), Some(zigzag(v)));
            assert!(input.is_empty());
        }
        assert_eq!(zigzag(-1), 1);
        let mut cut: &[u8] = &[0x80, 0x80];
        assert_eq!(get_varint(&mut cut), None);
        let mut too_long: &[u8] = &[0xff; 11];
        assert_eq!(get_varint(&mut too_long), None);
    }
}
