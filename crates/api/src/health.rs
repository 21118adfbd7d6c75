//! What `/healthz` says: the platform's state judged from its figures (store, disk, broker
//! losses, upkeep), as one pure function so that every rule is tested without a server.
//!
//! `failing` means readings are not being stored (the store cannot write): `/healthz`
//! answers 503, so a load balancer or a supervisor notices. `degraded` means mekong still
//! stores and acknowledges readings but something needs an operator before it gets worse:
//! the disk is nearly full, the broker skipped messages recently, or the upkeep (folding,
//! retention) has not finished a pass in a long while. It answers 200, with the reasons.

use std::time::Duration;

use mekong_store::DiskSpace;

/// Thresholds, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthOptions {
    /// Below this many free bytes on the data directory's filesystem: degraded.
    pub min_free_bytes: u64,
    /// Messages lost at the broker this recently: degraded.
    pub lost_window: Duration,
    /// How often the upkeep runs; `None` if it does not. Degraded when no pass finished in
    /// three of these.
    pub upkeep_every: Option<Duration>,
}

impl Default for HealthOptions {
    fn default() -> Self {
        HealthOptions { min_free_bytes: 1 << 30, lost_window: Duration::from_secs(300), upkeep_every: None }
    }
}

/// The overall state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Nothing to report.
    Ok,
    /// Storing, but something needs an operator.
    Degraded,
    /// Not storing readings.
    Failing,
}

impl Status {
    /// Its name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Degraded => "degraded",
            Status::Failing => "failing",
        }
    }
}

/// The figures `/healthz` judges.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// Now, ms since the epoch.
    pub now_ms: i64,
    /// When the process started, ms since the epoch.
    pub started_ms: i64,
    /// The store cannot write, and why.
    pub store_failure: Option<String>,
    /// The data directory's filesystem.
    pub disk: Option<DiskSpace>,
    /// When messages were last lost at the broker.
    pub last_lost_ms: Option<i64>,
    /// When the upkeep last finished a pass.
    pub last_upkeep_ms: Option<i64>,
}

/// One reason for a state other than `ok`: which check, and what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// `store`, `disk`, `broker` or `upkeep`.
    pub check: &'static str,
    /// What it saw, for people.
    pub detail: String,
}

/// Judges `figures` against `options`: the state and every reason for it.
pub fn assess(figures: &Figures, options: &HealthOptions) -> (Status, Vec<Reason>) {
    let mut reasons = Vec::new();
    let mut status = Status::Ok;
    let mut flag = |level: Status, check: &'static str, detail: String| {
        status = status.max(level);
        reasons.push(Reason { check, detail });
    };
    if let Some(cause) = &figures.store_failure {
        flag(Status::Failing, "store", format!("the store cannot write: {cause}"));
    }
    if let Some(disk) = figures.disk.filter(|d| d.free < options.min_free_bytes) {
        flag(
            Status::Degraded,
            "disk",
            format!(
                "{} MiB free of {} MiB, under storage.min_free_bytes ({} MiB)",
                disk.free >> 20,
                disk.total >> 20,
                options.min_free_bytes >> 20
            ),
        );
    }
    let window_ms = i64::try_from(options.lost_window.as_millis()).unwrap_or(i64::MAX);
    if let Some(lost) = figures.last_lost_ms.filter(|&t| figures.now_ms.saturating_sub(t) < window_ms) {
        let ago = figures.now_ms.saturating_sub(lost) / 1000;
        flag(
            Status::Degraded,
            "broker",
            format!("the broker skipped messages {ago} s ago: the ingest path falls behind (see lost in /v1/stats)"),
        );
    }
    if let Some(every) = options.upkeep_every {
        let allowed = i64::try_from(every.as_millis().saturating_mul(3)).unwrap_or(i64::MAX);
        let since = figures.last_upkeep_ms.unwrap_or(figures.started_ms);
        if figures.now_ms.saturating_sub(since) > allowed {
            let secs = figures.now_ms.saturating_sub(since) / 1000;
            let what = if figures.last_upkeep_ms.is_some() {
                "last finished a pass"
            } else {
                "has not finished a pass since start"
            };
            flag(Status::Degraded, "upkeep", format!("the upkeep {what} {secs} s ago, more than three intervals"));
        }
    }
    (status, reasons)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn healthy() -> Figures {
        Figures {
            now_ms: NOW,
            started_ms: NOW - 3_600_000,
            store_failure: None,
            disk: Some(DiskSpace { free: 10 << 30, total: 20 << 30 }),
            last_lost_ms: None,
            last_upkeep_ms: Some(NOW - 30_000),
        }
    }

    fn options() -> HealthOptions {
        HealthOptions { upkeep_every: Some(Duration::from_secs(60)), ..HealthOptions::default() }
    }

    fn checks(figures: &Figures) -> (Status, Vec<&'static str>) {
        let (status, reasons) = assess(figures, &options());
        (status, reasons.iter().map(|r| r.check).collect())
    }

    #[test]
    fn each_check_flags_its_own_trouble() {
        assert_eq!(checks(&healthy()), (Status::Ok, vec![]));
        let low = Figures { disk: Some(DiskSpace { free: 100 << 20, total: 20 << 30 }), ..healthy() };
        assert_eq!(checks(&low), (Status::Degraded, vec!["disk"]));
        let lost = Figures { last_lost_ms: Some(NOW - 10_000), ..healthy() };
        assert_eq!(checks(&lost), (Status::Degraded, vec!["broker"]));
        let lost_long_ago = Figures { last_lost_ms: Some(NOW - 600_000), ..healthy() };
        assert_eq!(checks(&lost_long_ago), (Status::Ok, vec![]));
        let behind = Figures { last_upkeep_ms: Some(NOW - 181_000), ..healthy() };
        assert_eq!(checks(&behind), (Status::Degraded, vec!["upkeep"]));
        let never = Figures { last_upkeep_ms: None, ..healthy() };
        assert_eq!(checks(&never), (Status::Degraded, vec!["upkeep"]));
        let just_started = Figures { last_upkeep_ms: None, started_ms: NOW - 1_000, ..healthy() };
        assert_eq!(checks(&just_started), (Status::Ok, vec![]));
    }

    #[test]
    fn a_store_that_cannot_write_is_failing_whatever_else_holds() {
        let both = Figures {
            store_failure: Some("No space left on device".into()),
            disk: Some(DiskSpace { free: 0, total: 24 << 20 }),
            ..healthy()
        };
        let (status, reasons) = assess(&both, &options());
        assert_eq!(status, Status::Failing);
        assert_eq!(reasons.iter().map(|r| r.check).collect::<Vec<_>>(), ["store", "disk"]);
        assert!(reasons[1].detail.contains("0 MiB free of 24 MiB"), "{}", reasons[1].detail);
        // Without an upkeep, its check says nothing.
        let no_upkeep = HealthOptions { upkeep_every: None, ..options() };
        assert_eq!(assess(&Figures { last_upkeep_ms: None, ..healthy() }, &no_upkeep).0, Status::Ok);
    }
}
