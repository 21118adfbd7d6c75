//! MQTT topics of the contract: `mekong/v1/{device_id}/up` for readings from a device.
//!
//! The platform takes a device's identity from the topic alone (the broker's in-process link
//! does not say which client published), so the id rules are strict.

use core::fmt;

use crate::limits::MAX_DEVICE_ID_LEN;

/// Every topic of this contract version starts with this.
pub const PREFIX: &str = "mekong/v1/";

/// The filter of every uplink topic. The platform subscribes to it, so a publish with a
/// malformed device id is seen and refused with a reason. A publish on a topic that matches
/// no subscription (such as `mekong/v1/a/b/up`) is acknowledged and dropped by the broker,
/// and the client stays connected; the device never gets a downlink acknowledgement for it.
pub const UPLINK_FILTER: &str = "mekong/v1/+/up";

/// Why a topic is not a valid uplink topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The topic is not of the form `mekong/v1/{device_id}/up`.
    #[error("topic is not of the form mekong/v1/{{device_id}}/up")]
    NotUplink,
    /// The device id part breaks the id rules.
    #[error("device id must be 1 to 64 characters of a-z, 0-9 and '-'")]
    BadDeviceId,
}

/// Whether `id` is a valid device id: `[a-z0-9-]{1,64}`.
pub fn is_valid_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_DEVICE_ID_LEN
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Returns the device id of an uplink topic.
pub fn parse_uplink(topic: &str) -> Result<&str, TopicError> {
    let rest = topic.strip_prefix(PREFIX).ok_or(TopicError::NotUplink)?;
    let id = rest.strip_suffix("/up").ok_or(TopicError::NotUplink)?;
    if is_valid_device_id(id) {
        Ok(id)
    } else if id.contains('/') {
        Err(TopicError::NotUplink)
    } else {
        Err(TopicError::BadDeviceId)
    }
}

/// Whether a topic is a downlink topic (`mekong/v1/{id}/down`), which the platform itself
/// publishes and the ingest path must not treat as readings.
pub fn is_downlink(topic: &str) -> bool {
    topic.starts_with(PREFIX) && topic.ends_with("/down")
}

/// Returns the device id of a downlink topic (`mekong/v1/{device_id}/down`), if it holds a
/// valid one.
pub fn parse_downlink(topic: &str) -> Option<&str> {
    let id = topic.strip_prefix(PREFIX)?.strip_suffix("/down")?;
    is_valid_device_id(id).then_some(id)
}

/// Formats the uplink topic of a device without allocating.
#[derive(Debug, Clone, Copy)]
pub struct Uplink<'a>(pub &'a str);

impl fmt::Display for Uplink<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}/up", self.0)
    }
}

/// The filter of every alert topic: what an app is granted to follow the platform's alerts.
pub const ALERTS_FILTER: &str = "mekong/v1/alerts/#";

/// Formats the topic of an alert's state, `mekong/v1/alerts/{rule}/{device}`, on which the
/// platform publishes each change retained (never a device: no device's lane reaches it).
#[derive(Debug, Clone, Copy)]
pub struct AlertTopic<'a> {
    /// The rule's id.
    pub rule: &'a str,
    /// The device's id.
    pub device: &'a str,
}

impl fmt::Display for AlertTopic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}alerts/{}/{}", self.rule, self.device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(topic: &str, expected: Result<&str, TopicError>) {
        assert_eq!(parse_uplink(topic), expected, "topic {topic:?}");
    }

    #[test]
    fn uplink_topics() {
        check("mekong/v1/hau-river-01/up", Ok("hau-river-01"));
        check("mekong/v1/a/up", Ok("a"));
        check("mekong/v1/Hau/up", Err(TopicError::BadDeviceId));
        check("mekong/v1/hau_river/up", Err(TopicError::BadDeviceId));
        check("mekong/v1//up", Err(TopicError::BadDeviceId));
        check("mekong/v1/a/b/up", Err(TopicError::NotUplink));
        check("mekong/v1/a/down", Err(TopicError::NotUplink));
        assert_eq!(parse_downlink("mekong/v1/a-1/down"), Some("a-1"));
        for topic in ["mekong/v1/A/down", "mekong/v1/a/b/down", "mekong/v1/+/down", "mekong/v1//down", "mekong/v1/a/up"]
        {
            assert_eq!(parse_downlink(topic), None, "{topic}");
        }
        check("mekong/v2/a/up", Err(TopicError::NotUplink));
        check("other/a/up", Err(TopicError::NotUplink));
    }

    #[test]
    fn device_id_length_is_bounded() {
        let max = "a".repeat(64);
        assert!(is_valid_device_id(&max));
        assert!(!is_valid_device_id(&"a".repeat(65)));
    }

    #[test]
    fn uplink_formats_without_allocating() {
        assert_eq!(std::format!("{}", Uplink("tram-7")), "mekong/v1/tram-7/up");
    }
}
