//! The node's wall clock: uptime plus an offset learnt from the platform.
//!
//! A node has no battery-backed clock. Every downlink carries the platform's time
//! (`server_ms`); the node sets `offset = server_ms - uptime` on each one, so its clock is
//! the platform's, late by the downlink's latency (milliseconds; readings are sent to the
//! second).
//!
//! Before the first downlink the node does not know the date, so it sends no readings: it
//! keeps sampling (by uptime) and sends a small hello pack to get a downlink
//! ([`crate::pack::encode_hello`]); readings are packed only with a [`Synced`] clock, so
//! every reading goes out with an absolute time fixed once, when it is packed.

use mekong_schema::limits::MIN_TIME_SECS;

/// Uptime-to-epoch conversion.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    offset_ms: Option<i64>,
}

impl Clock {
    /// A clock that does not know the date yet.
    pub const fn new() -> Self {
        Self { offset_ms: None }
    }

    /// Takes the platform's time from a downlink received at `uptime_ms`. A time before
    /// 2000 (a platform with a broken clock) is ignored: the platform would refuse readings
    /// stamped with it anyway.
    pub fn set(&mut self, server_ms: i64, uptime_ms: u64) -> bool {
        if (server_ms as f64) < MIN_TIME_SECS * 1000.0 {
            return false;
        }
        let Ok(up) = i64::try_from(uptime_ms) else { return false };
        self.offset_ms = Some(server_ms - up);
        true
    }

    /// Whether the date is known.
    pub fn is_set(&self) -> bool {
        self.offset_ms.is_some()
    }

    /// Epoch milliseconds at `uptime_ms`, once the date is known.
    pub fn epoch_ms(&self, uptime_ms: u64) -> Option<i64> {
        self.synced().map(|s| s.epoch_ms(uptime_ms))
    }

    /// The clock, if the date is known: what packing readings needs.
    pub fn synced(&self) -> Option<Synced> {
        self.offset_ms.map(|offset_ms| Synced { offset_ms })
    }
}

/// A clock that knows the date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    offset_ms: i64,
}

impl Synced {
    /// Epoch milliseconds at `uptime_ms`.
    pub fn epoch_ms(&self, uptime_ms: u64) -> i64 {
        self.offset_ms.saturating_add(i64::try_from(uptime_ms).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platform_time_sets_the_clock() {
        let mut c = Clock::new();
        assert_eq!(c.epoch_ms(5_000), None);
        assert!(!c.set(12_345, 1_000), "1970 is no date");
        assert!(c.set(1_790_000_000_000, 60_000));
        assert_eq!(c.epoch_ms(61_500), Some(1_790_000_001_500));
        assert_eq!(c.epoch_ms(0), Some(1_789_999_940_000), "readings taken before the first ack");
    }
}
