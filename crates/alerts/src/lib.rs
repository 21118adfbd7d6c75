//! mekong's alert engine: rules evaluated as readings become durable, their states and
//! history kept in the store, every change delivered on the live feed, on MQTT (retained) and
//! to webhooks (signed, retried, in order).
//!
//! [`engine`] is the pure part: per (rule, device) state machines fed in reading-time order.
//! [`Alerts`] runs it in the ingest path's wake (it is the feed's observer, called on the
//! acknowledgement thread with each flushed round's packs), writes each change with its
//! sequence number, state and webhook outbox entries in one atomic store batch, and only then
//! delivers it, so that a restart neither loses an active alert nor fires it twice.
#![warn(missing_docs)]

pub mod engine;
mod feed;
pub mod records;
pub mod rule;
mod service;
pub mod webhook;

pub use engine::{Change, Engine, Saved};
pub use feed::FeedAlerts;
pub use records::Notice;
pub use rule::{Rule, RuleSpec, Severity};
pub use service::{Alerts, AlertsOptions, HistoryQuery, Live, RuleSource, WebhookStatus};
pub use webhook::{Delivery, Secret, WebhookOptions};

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// What can go wrong in the alert engine.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    /// A rule cannot be used.
    #[error("alert rule {id:?}: {why}")]
    Rule {
        /// The rule's id.
        id: String,
        /// What is wrong.
        why: String,
    },
    /// A webhook cannot be used.
    #[error("alert webhook {0}")]
    Webhook(String),
    /// A rule of the config file cannot be changed through the API.
    #[error("alert rule {0:?} comes from the config file: change it there")]
    ReadOnly(String),
    /// A thread could not be started.
    #[error("cannot start the alert clock: {0}")]
    Thread(#[from] std::io::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] mekong_store::StoreError),
}
