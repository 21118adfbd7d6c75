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
}
