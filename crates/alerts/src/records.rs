//! The alert engine's durable records in the store's record spaces, and [`Notice`], the JSON
//! of a change that history, MQTT and webhooks carry.
//!
//! | space | key | value |
//! |---|---|---|
//! | `alerts.state` | rule, `0x00`, device | the (rule, device)'s last change and how far it has evaluated |
//! | `alerts.history` | sequence number (u64 BE) | the change ([`Notice`]) |
//! | `alerts.outbox` | webhook name, `0x00`, sequence number (u64 BE) | the change still to deliver there |
//! | `alerts.rules` | rule id | a rule added through the API ([`RuleSpec`]) |

use serde::{Deserialize, Serialize};

use crate::engine::Saved;

/// Space of the (rule, device) states.
pub const STATE: &str = "alerts.state";
/// Space of the history.
pub const HISTORY: &str = "alerts.history";
/// Space of the webhooks' outboxes.
pub const OUTBOX: &str = "alerts.outbox";
/// Space of the rules added through the API.
pub const RULES: &str = "alerts.rules";

/// One change of an alert, as kept in the history and sent on MQTT and to webhooks (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    /// Its sequence number: one more for every change, across restarts.
    pub seq: u64,
    /// The rule.
    pub rule: String,
    /// The device.
    pub device: String,
    /// The metric (empty for a stale rule without one).
    pub metric: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// Reading time of the change, in ms since the epoch.
    pub at_ms: i64,
    /// The reading that made it, if one did.
    pub value: Option<f64>,
    /// `warning` or `critical`.
    pub severity: String,
    /// What a person reads.
    pub message: String,
}

impl Notice {
    /// Whether it is a firing.
    pub fn firing(&self) -> bool {
        self.state == "firing"
    }
}

/// A (rule, device)'s record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StateRecord {
    pub metric: String,
    pub firing: bool,
    pub since_ms: i64,
    pub value: Option<f64>,
    pub message: String,
    pub reached_ms: i64,
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_ms: Option<i64>,
}

impl StateRecord {
    pub fn new(saved: &Saved, seq: u64) -> StateRecord {
        StateRecord {
            metric: saved.metric.clone(),
            firing: saved.firing,
            since_ms: saved.since_ms,
            value: saved.value,
            message: saved.message.clone(),
            reached_ms: saved.reached_ms,
            seq,
            period_ms: saved.period_ms,
        }
    }

    pub fn saved(&self) -> Saved {
        Saved {
            metric: self.metric.clone(),
            firing: self.firing,
            since_ms: self.since_ms,
            value: self.value,
            message: self.message.clone(),
            reached_ms: self.reached_ms,
            period_ms: self.period_ms,
        }
    }
}

/// The key of (rule, device) in [`STATE`].
pub fn state_key(rule: &str, device: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(rule.len() + 1 + device.len());
    k.extend_from_slice(rule.as_bytes());
    k.push(0);
    k.extend_from_slice(device.as_bytes());
    k
}

/// (rule, device) of a [`STATE`] key.
pub fn parse_state_key(key: &[u8]) -> Option<(&str, &str)> {
    std::str::from_utf8(key).ok()?.split_once('\0')
}

/// The prefix of webhook `name`'s outbox entries.
pub fn outbox_prefix(name: &str) -> Vec<u8> {
    let mut k = name.as_bytes().to_vec();
    k.push(0);
    k
}

/// The key of change `seq` in webhook `name`'s outbox.
pub fn outbox_key(name: &str, seq: u64) -> Vec<u8> {
    let mut k = outbox_prefix(name);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn keys_round_trip_and_outboxes_sort_by_sequence() {
        assert_eq!(parse_state_key(&state_key("flood", "hau-01")), Some(("flood", "hau-01")));
        assert!(outbox_key("ops", 255) < outbox_key("ops", 256));
        assert!(outbox_key("ops", u64::MAX).starts_with(&outbox_prefix("ops")));
        assert!(!outbox_key("ops2", 1).starts_with(&outbox_prefix("ops")));
    }
}
