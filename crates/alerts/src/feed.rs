//! The engine and the live feed: [`Alerts::observer`] is the feed's observer (each flushed round's
//! packs, on the acknowledgement thread), and [`FeedAlerts`] puts every change on the feed
//! (the API's `/v1/stream`).

use std::sync::{Arc, Weak};

use mekong_feed::{AlertChange, AlertState, Feed, Observer, Stored};

use crate::service::Inner;
use crate::{Alerts, Live, Notice};

/// The engine as the feed's observer ([`Alerts::observer`]), held weakly.
pub(crate) struct Observing(pub(crate) Weak<Inner>);

impl Observer for Observing {
    fn stored(&self, packs: &[Arc<Stored>]) {
        let Some(inner) = self.0.upgrade() else { return };
        Alerts::from_inner(inner).observe_round(packs.iter().map(|pack| {
            let series = pack.series.iter().map(|s| (s.metric.as_str(), s.points.as_slice()));
            (pack.device.as_str(), pack.kind.as_str(), series)
        }));
    }
}

/// Every change, on the feed, as an [`mekong_feed::Event::Alert`].
#[derive(Debug)]
pub struct FeedAlerts(pub Feed);

impl Live for FeedAlerts {
    fn change(&self, notice: &Notice) {
        self.0.publish_alert(AlertChange {
            rule: notice.rule.clone(),
            device: notice.device.clone(),
            metric: notice.metric.clone(),
            state: if notice.firing() { AlertState::Firing } else { AlertState::Resolved },
            at_ms: notice.at_ms,
            value: notice.value,
            severity: notice.severity.clone(),
            message: notice.message.clone(),
        });
    }
}
