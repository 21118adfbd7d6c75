//! Times at the API boundary: RFC 3339 or epoch milliseconds in, both out.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::ApiError;

/// Parses a query parameter that is either epoch milliseconds (`1790000000000`) or an RFC 3339
/// time (`2026-09-21T12:00:00Z`, `2026-09-21T19:00:00.250+07:00`); finer than a millisecond
/// is cut off.
pub fn parse(name: &str, value: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    let dt = OffsetDateTime::parse(value, &Rfc3339).map_err(|_| {
        ApiError::BadRequest(format!("{name}: expected an RFC 3339 time or epoch milliseconds, got {value:?}"))
    })?;
    i64::try_from(dt.unix_timestamp_nanos().div_euclid(1_000_000))
        .map_err(|_| ApiError::BadRequest(format!("{name}: time out of range")))
}

/// Parses a bucket step: a whole number with a unit (`500ms`, `30s`, `15m`, `1h`, `1d`,
/// `7d`), or plain milliseconds.
pub fn parse_step(value: &str) -> Result<i64, ApiError> {
    let bad =
        || ApiError::BadRequest(format!("step must be a positive duration such as 1m, 15m, 1h or 1d, got {value:?}"));
    let split = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let n: i64 = digits.parse().map_err(|_| bad())?;
    let unit_ms = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    match n.checked_mul(unit_ms) {
        Some(ms) if ms > 0 => Ok(ms),
        _ => Err(bad()),
    }
}

/// Formats epoch milliseconds as RFC 3339 in UTC with exactly three fraction digits.
pub fn format(ms: i64) -> String {
    let mut buf = [0u8; 24];
    match write_rfc3339(ms, &mut buf) {
        Some(s) => s.to_owned(),
        None => format_any_year(ms),
    }
}

/// Appends [`format`]'s text to `out`, without allocating for the years 0 to 9999.
pub fn push(out: &mut String, ms: i64) {
    let mut buf = [0u8; 24];
    match write_rfc3339(ms, &mut buf) {
        Some(s) => out.push_str(s),
        None => out.push_str(&format_any_year(ms)),
    }
}

/// A time that serializes as [`format`] does, without allocating: a day of raw points holds
/// thousands of them.
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339Ms(pub i64);

impl serde::Serialize for Rfc3339Ms {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 24];
        match write_rfc3339(self.0, &mut buf) {
            Some(s) => serializer.serialize_str(s),
            None => serializer.serialize_str(&format_any_year(self.0)),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` into `buf` by calendar arithmetic (H. Hinnant's days-to-civil);
/// `None` outside the years 0 to 9999.
fn write_rfc3339(ms: i64, buf: &mut [u8; 24]) -> Option<&str> {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = mekong_store::civil_date(days);
    let (month, day) = (i64::from(month), i64::from(day));
    if !(0..=9999).contains(&year) {
        return None;
    }
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, in_day / 3_600_000);
    put(14, 2, in_day / 60_000 % 60);
    put(17, 2, in_day / 1_000 % 60);
    put(20, 3, in_day % 1_000);
    for (at, c) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':'), (19, b'.'), (23, b'Z')] {
        buf[at] = c;
    }
    std::str::from_utf8(buf).ok()
}

/// [`format`] for any year the `time` crate knows (signed, more than four digits).
fn format_any_year(ms: i64) -> String {
    let Ok(dt) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return String::new();
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: i64) {
        assert_eq!(parse("from", input).unwrap(), expected, "{input}");
    }

    #[test]
    fn parses_both_forms() {
        check("1790000000000", 1_790_000_000_000);
        check("-5", -5);
        check("2026-09-21T14:13:20Z", 1_790_000_000_000);
        check("2026-09-21T21:13:20.250+07:00", 1_790_000_000_250);
        check("2026-09-21T14:13:20.2509Z", 1_790_000_000_250);
        check("1969-12-31T23:59:59.999Z", -1);
        assert!(parse("from", "yesterday").is_err());
        assert!(parse("from", "2026-09-21").is_err());
    }

    #[test]
    fn steps() {
        for (input, ms) in
            [("500ms", 500), ("30s", 30_000), ("15m", 900_000), ("1h", 3_600_000), ("1d", 86_400_000), ("250", 250)]
        {
            assert_eq!(parse_step(input).unwrap(), ms, "{input}");
        }
        for bad in ["", "0m", "-1h", "1w", "h", "1.5h", "99999999999999999d"] {
            assert!(parse_step(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_with_milliseconds_in_utc() {
        assert_eq!(format(1_790_000_000_000), "2026-09-21T14:13:20.000Z");
        assert_eq!(format(1_790_000_000_007), "2026-09-21T14:13:20.007Z");
        assert_eq!(parse("t", &format(1_234_567_890_123)).unwrap(), 1_234_567_890_123);
    }

    #[test]
    fn calendar_arithmetic_agrees_with_the_time_crate() {
        let mut seed = 0x1234_5678_9abc_def0_u64;
        let mut times = vec![0, -1, 86_399_999, 951_782_400_000, 4_107_542_400_000, -62_167_219_200_000];
        times.extend([253_402_300_799_999, 253_402_300_800_000, -62_167_219_200_001, i64::MIN, i64::MAX]);
        for _ in 0..100_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Year 0 to past 9999, with leap days and the ends of months in it.
            times.push((seed % 320_000_000_000_000) as i64 - 62_167_219_200_000);
        }
        for ms in times {
            let mut buf = [0u8; 24];
            let fast = write_rfc3339(ms, &mut buf).map(str::to_owned);
            let slow = format_any_year(ms);
            match fast {
                Some(fast) => assert_eq!(fast, slow, "{ms}"),
                None => {
                    let year = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).map(|d| d.year());
                    assert!(year.is_err() || year.is_ok_and(|y| !(0..=9999).contains(&y)), "{ms}: {slow}");
                }
            }
        }
    }
}
