//! Which series an export reads, in which order, and about how many readings it will write.

use std::collections::BTreeSet;

use mekong_store::{Store, ValueKind};

use crate::Query;

/// One series to export, with what every row of it repeats.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub device: String,
    pub kind: String,
    pub metric: String,
    pub unit: Option<String>,
    pub value_kind: ValueKind,
    /// Readings of the series in the range: exact when the series lies wholly inside it,
    /// else its count scaled by the share of its time span inside (for progress only).
    pub estimate: u64,
}

/// The series that `query` selects, by device id then metric name (the store's order): the
/// mirror of metadata answers this without reading a point.
pub(crate) fn plan(store: &Store, query: &Query) -> Vec<Planned> {
    let devices: BTreeSet<&str> = query.devices.iter().map(String::as_str).collect();
    let metrics: BTreeSet<&str> = query.metrics.iter().map(String::as_str).collect();
    let mut plan = Vec::new();
    for device in store.devices(query.kind.as_deref()) {
        if !devices.is_empty() && !devices.contains(device.id.as_str()) {
            continue;
        }
        for series in store.series_of(&device.id).unwrap_or_default() {
            if !metrics.is_empty() && !metrics.contains(series.metric.as_str()) {
                continue;
            }
            if series.count == 0 || series.last_ms < query.from_ms || series.first_ms >= query.to_ms {
                continue;
            }
            let estimate = estimate(series.count, series.first_ms, series.last_ms, query.from_ms, query.to_ms);
            plan.push(Planned {
                device: device.id.clone(),
                kind: device.kind.clone(),
                metric: series.metric,
                unit: series.unit,
                value_kind: series.value_kind,
                estimate,
            });
        }
    }
    plan
}

/// `count` readings spread over `[first, last]`, of which `[from, to)` takes its share.
fn estimate(count: u64, first: i64, last: i64, from: i64, to: i64) -> u64 {
    if from <= first && last < to {
        return count;
    }
    let span = (i128::from(last) - i128::from(first)).max(1);
    let inside = (i128::from(last.min(to)) - i128::from(first.max(from))).max(0);
    (count as f64 * (inside as f64 / span as f64)).ceil() as u64
}

#[cfg(test)]
mod tests {
    use super::estimate;

    #[test]
    fn estimates_are_exact_inside_and_shares_outside() {
        assert_eq!(estimate(100, 10, 20, 0, 100), 100);
        assert_eq!(estimate(100, 10, 20, 10, 21), 100);
        assert_eq!(estimate(100, 0, 100, 0, 50), 50);
        assert_eq!(estimate(100, 0, 100, 200, 300), 0);
        assert_eq!(estimate(1, 5, 5, 0, 5), 0);
    }
}
