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
pub mod rule;

pub use engine::{Change, Engine, Saved};
pub use rule::{Rule, RuleSpec, Severity};

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
    /// The store failed.
    #[error(transparent)]
    Store(#[from] mekong_store::StoreError),
}
