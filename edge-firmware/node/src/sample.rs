//! What a node measures: a metric, a value and the uptime at which it was taken.
//!
//! Names and units are the contract's well-known metrics (`mekong_schema::metrics`), looked
//! up there rather than repeated here, so the node can never drift from what the platform
//! expects.

use mekong_schema::metrics::WELL_KNOWN;

/// The metrics this firmware reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// PM2.5, µg/m³ (air).
    Pm2_5,
    /// PM10, µg/m³ (air).
    Pm10,
    /// Water level, cm (water).
    WaterLevel,
    /// Vehicles per minute (traffic).
    VehicleCount,
    /// Mean speed, km/h (traffic).
    Speed,
    /// Readings the node dropped because its outbox was full, since the last report (count).
    /// Not a well-known metric of the schema; the contract accepts any valid name.
    Dropped,
    /// Seconds since boot, in the hello pack a node sends before it knows the date (s).
    Uptime,
}

impl Metric {
    /// The SenML record name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pm2_5 => "pm2_5",
            Self::Pm10 => "pm10",
            Self::WaterLevel => "water_level",
            Self::VehicleCount => "vehicle_count",
            Self::Speed => "speed",
            Self::Dropped => "dropped",
            Self::Uptime => "uptime",
        }
    }

    /// The SenML unit: the schema's for a well-known metric, `count` (RFC 8428 section 12.1)
    /// for the node's own, `s` for its uptime.
    pub fn unit(self) -> &'static str {
        if let Self::Uptime = self {
            return "s";
        }
        WELL_KNOWN.iter().find(|m| m.name == self.name()).map_or("count", |m| m.unit)
    }
}

/// One measurement waiting to be sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// What was measured.
    pub metric: Metric,
    /// The value in the metric's unit.
    pub value: f64,
    /// Milliseconds since boot when it was measured; made absolute only when packed, with
    /// the clock as it is then (see [`crate::clock`]).
    pub at_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_the_schemas_well_known_ones() {
        for m in [Metric::Pm2_5, Metric::Pm10, Metric::WaterLevel, Metric::VehicleCount, Metric::Speed] {
            assert!(WELL_KNOWN.iter().any(|w| w.name == m.name()), "{m:?}");
        }
        assert_eq!(Metric::WaterLevel.unit(), "cm");
        assert_eq!(Metric::VehicleCount.unit(), "/min");
        assert_eq!(Metric::Pm2_5.unit(), "ug/m3");
        assert_eq!(Metric::Dropped.unit(), "count");
        assert_eq!(Metric::Uptime.unit(), "s");
    }
}
