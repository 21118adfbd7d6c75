//! The calendar date of a day number: the store names its day files by UTC date, and the
//! crates that write times as text (the API, the export) use the same arithmetic.

/// The proleptic Gregorian (year, month 1-12, day 1-31) of the day `days` after 1970-01-01
/// (H. Hinnant's days-to-civil). Every `i64` time in milliseconds has a day number whose
/// arithmetic here cannot overflow: `|days|` is below 1.1e11.
pub fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Both in range by construction: day 1..=31, month 1..=12.
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::civil_date;

    #[test]
    fn day_numbers_map_to_their_dates() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(-1), (1969, 12, 31));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(20_697), (2026, 9, 1));
        assert_eq!(civil_date(-719_468), (0, 3, 1));
        // The extremes of an i64 of milliseconds neither overflow nor panic.
        let _ = civil_date(i64::MIN.div_euclid(86_400_000));
        let _ = civil_date(i64::MAX.div_euclid(86_400_000));
    }
}
