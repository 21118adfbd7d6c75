//! Refusals in the operator's log: the first refusal of each device and reason in an
//! interval is logged at once, the rest of the interval is summarised in one line per
//! device and reason, so that a misbehaving fleet cannot flood the log and nothing is left
//! out.
//!
//! Pure bookkeeping that returns the lines to log; the ingest thread logs them at `info`
//! (a refusal is news for an operator, not a fault of the platform).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mekong_schema::Reason;

/// At most this many device and reason pairs are tracked in one interval; refusals of
/// further pairs are summarised per reason under [`OTHERS`], so that made-up device ids
/// cannot grow memory or the log.
pub(crate) const MAX_PAIRS: usize = 1000;

/// The device of refusals beyond [`MAX_PAIRS`].
pub(crate) const OTHERS: &str = "(other devices)";

/// The device of a publish whose topic holds no valid device id.
pub(crate) const NO_DEVICE: &str = "(invalid topic)";

/// A line to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line {
    /// The first refusal of a device and reason in this interval.
    First {
        /// The device.
        device: String,
        /// The reason kind.
        reason: Reason,
        /// The reason, for people.
        detail: String,
    },
    /// The refusals of a device and reason after the first one, over an interval.
    More {
        /// The device.
        device: String,
        /// The reason kind.
        reason: Reason,
        /// How many.
        count: u64,
        /// The last one's reason, for people.
        last: String,
        /// Over how long, seconds.
        secs: u64,
    },
}

/// Refusals held back in the current interval.
#[derive(Debug)]
pub(crate) struct RefusalLog {
    interval: Duration,
    started: Instant,
    held: BTreeMap<(String, Reason), (u64, String)>,
}

impl RefusalLog {
    /// An empty log whose first interval starts at `now`, summarising every `interval`.
    pub(crate) fn new(now: Instant, interval: Duration) -> RefusalLog {
        RefusalLog { interval, started: now, held: BTreeMap::new() }
    }

    /// A refusal: the line to log now, if it is the first of its device and reason.
    pub(crate) fn record(&mut self, device: Option<&str>, reason: Reason, detail: &str) -> Option<Line> {
        let device = device.unwrap_or(NO_DEVICE);
        let key = (device.to_owned(), reason);
        if let Some((count, last)) = self.held.get_mut(&key) {
            *count += 1;
            detail.clone_into(last);
            return None;
        }
        if self.held.len() >= MAX_PAIRS {
            let (count, last) = self.held.entry((OTHERS.to_owned(), reason)).or_default();
            *count += 1;
            detail.clone_into(last);
            return None;
        }
        self.held.insert(key, (0, String::new()));
        Some(Line::First { device: device.to_owned(), reason, detail: detail.to_owned() })
    }

    /// Once the interval is over: the summary lines of what was held back, and a new
    /// interval. Before that, nothing.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<Line> {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed < self.interval {
            return Vec::new();
        }
        self.started = now;
        let secs = elapsed.as_secs();
        std::mem::take(&mut self.held)
            .into_iter()
            .filter(|(_, (count, _))| *count > 0)
            .map(|((device, reason), (count, last))| Line::More { device, reason, count, last, secs })
            .collect()
    }
}

/// Logs `line` at `info`.
pub(crate) fn emit(line: &Line) {
    match line {
        Line::First { device, reason, detail } => {
            tracing::info!(device = %device, reason = %reason.as_str(), detail = %detail, "publish refused");
        }
        Line::More { device, reason, count, last, secs } => tracing::info!(
            device = %device,
            reason = %reason.as_str(),
            count,
            last = %last,
            "{count} more publishes refused in the last {secs} s"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(60);

    #[test]
    fn the_first_refusal_is_logged_at_once_and_the_rest_summarised_per_interval() {
        let t0 = Instant::now();
        let mut log = RefusalLog::new(t0, INTERVAL);
        let first = log.record(Some("hau-01"), Reason::Unsigned, "unsigned pack");
        assert!(matches!(first, Some(Line::First { ref device, reason: Reason::Unsigned, .. }) if device == "hau-01"));
        for i in 0..4 {
            assert_eq!(log.record(Some("hau-01"), Reason::Unsigned, &format!("unsigned {i}")), None);
        }
        assert!(log.record(Some("hau-01"), Reason::Truncated, "cut").is_some(), "another reason is news");
        assert!(log.record(None, Reason::BadTopic, "bad").is_some());
        assert_eq!(log.tick(t0 + INTERVAL / 2), [], "nothing before the interval ends");

        let lines = log.tick(t0 + INTERVAL);
        assert_eq!(
            lines,
            [Line::More {
                device: "hau-01".into(),
                reason: Reason::Unsigned,
                count: 4,
                last: "unsigned 3".into(),
                secs: INTERVAL.as_secs()
            }],
            "pairs with nothing held back say nothing"
        );
        // A new interval: the next refusal is news again.
        assert!(log.record(Some("hau-01"), Reason::Unsigned, "again").is_some());
    }

    #[test]
    fn pairs_beyond_the_bound_are_summarised_together() {
        let t0 = Instant::now();
        let mut log = RefusalLog::new(t0, INTERVAL);
        for i in 0..MAX_PAIRS + 5 {
            log.record(Some(&format!("d{i}")), Reason::Unsigned, "x");
        }
        let lines = log.tick(t0 + INTERVAL);
        assert_eq!(lines.len(), 1);
        assert!(matches!(&lines[0], Line::More { device, count: 5, .. } if device == OTHERS));
    }
}
