//! Times in CSV: RFC 3339 in UTC with exactly three fraction digits, written without
//! allocating, since an export writes one per reading.

/// Appends `ms` (since the Unix epoch) as `YYYY-MM-DDTHH:MM:SS.mmmZ`. Years outside 0 to
/// 9999 take ISO 8601's expanded form (a sign and at least five digits), which no stored
/// reading should need.
pub fn push_rfc3339(out: &mut Vec<u8>, ms: i64) {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = mekong_store::civil_date(days);
    let (year, month, day) = (i128::from(year), i128::from(month), i128::from(day));
    if (0..=9999).contains(&year) {
        digits(out, year, 4);
    } else {
        out.push(if year < 0 { b'-' } else { b'+' });
        let abs = year.abs();
        digits(out, abs, abs.to_string().len().max(5));
    }
    out.push(b'-');
    digits(out, month, 2);
    out.push(b'-');
    digits(out, day, 2);
    out.push(b'T');
    let in_day = i128::from(in_day);
    digits(out, in_day / 3_600_000, 2);
    out.push(b':');
    digits(out, in_day / 60_000 % 60, 2);
    out.push(b':');
    digits(out, in_day / 1_000 % 60, 2);
    out.push(b'.');
    digits(out, in_day % 1_000, 3);
    out.push(b'Z');
}

/// `v` (not negative) in `width` decimal digits, zero-padded.
fn digits(out: &mut Vec<u8>, mut v: i128, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    fn check(ms: i64, expected: &str) {
        let mut out = Vec::new();
        push_rfc3339(&mut out, ms);
        assert_eq!(String::from_utf8(out).unwrap(), expected, "{ms}");
    }

    #[test]
    fn known_times() {
        check(0, "1970-01-01T00:00:00.000Z");
        check(-1, "1969-12-31T23:59:59.999Z");
        check(1_790_000_000_123, "2026-09-21T14:13:20.123Z");
        check(951_782_400_000, "2000-02-29T00:00:00.000Z");
        check(253_402_300_800_000, "+10000-01-01T00:00:00.000Z");
        check(-62_167_219_200_001, "-00001-12-31T23:59:59.999Z");
    }

    #[test]
    fn agrees_with_the_time_crate_over_four_centuries() {
        // A prime step walks every day of a 400-year cycle and many times of day.
        let mut ms: i64 = -12_622_780_800_000 + 7;
        while ms < 12_622_780_800_000 {
            let dt = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
            let parsed = OffsetDateTime::parse(&text(ms), &Rfc3339).unwrap();
            assert_eq!(parsed, dt, "{ms}");
            ms += 3_600_000 * 24 + 1_234_567;
        }
    }

    fn text(ms: i64) -> String {
        let mut out = Vec::new();
        push_rfc3339(&mut out, ms);
        String::from_utf8(out).unwrap()
    }
}
