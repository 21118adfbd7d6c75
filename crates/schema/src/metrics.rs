//! The well-known metric names of the city's stations and the kind of station each implies.
//!
//! A device's kind normally comes from the device registry; for a device that is not
//! registered, the platform infers it from the first well-known metric it reports.

/// The kind of station a device is; apps filter the city map by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// Traffic counters on roads, bridges and junctions.
    Traffic,
    /// Water level, flow and quality probes on rivers and canals.
    Water,
    /// Air-quality and weather stations.
    Air,
    /// A device whose kind is not registered and cannot be inferred.
    Unknown,
}

impl DeviceKind {
    /// Every kind, in a stable order.
    pub const ALL: [DeviceKind; 4] = [Self::Traffic, Self::Water, Self::Air, Self::Unknown];

    /// The kind's name as it appears in the API and the configuration.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Traffic => "traffic",
            Self::Water => "water",
            Self::Air => "air",
            Self::Unknown => "unknown",
        }
    }

    /// Parses a kind's name; `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The kind implied by a well-known metric name, if any.
    pub fn of_metric(metric: &str) -> Option<Self> {
        WELL_KNOWN.iter().find(|m| m.name == metric).map(|m| m.kind)
    }
}

/// A metric that the city's stations report.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// SenML record name.
    pub name: &'static str,
    /// SenML unit (RFC 8428 section 12 or the SenML units registry).
    pub unit: &'static str,
    /// The station kind that reports it.
    pub kind: DeviceKind,
}

const fn m(name: &'static str, unit: &'static str, kind: DeviceKind) -> Metric {
    Metric { name, unit, kind }
}

/// The metrics the simulator and the firmware use; other names are accepted too.
pub const WELL_KNOWN: &[Metric] = &[
    m("vehicle_count", "/min", DeviceKind::Traffic),
    m("speed", "km/h", DeviceKind::Traffic),
    m("occupancy", "%", DeviceKind::Traffic),
    m("water_level", "cm", DeviceKind::Water),
    m("flow", "m3/s", DeviceKind::Water),
    m("salinity", "ppt", DeviceKind::Water),
    m("turbidity", "NTU", DeviceKind::Water),
    m("ph", "pH", DeviceKind::Water),
    m("water_temp", "Cel", DeviceKind::Water),
    m("pm2_5", "ug/m3", DeviceKind::Air),
    m("pm10", "ug/m3", DeviceKind::Air),
    m("temperature", "Cel", DeviceKind::Air),
    m("humidity", "%RH", DeviceKind::Air),
    m("rainfall", "mm", DeviceKind::Air),
    m("noise", "dB", DeviceKind::Air),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in DeviceKind::ALL {
            assert_eq!(DeviceKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(DeviceKind::parse("Water"), None);
    }

    #[test]
    fn well_known_metrics_imply_their_kind() {
        assert_eq!(DeviceKind::of_metric("water_level"), Some(DeviceKind::Water));
        assert_eq!(DeviceKind::of_metric("pm2_5"), Some(DeviceKind::Air));
        assert_eq!(DeviceKind::of_metric("vehicle_count"), Some(DeviceKind::Traffic));
        assert_eq!(DeviceKind::of_metric("voltage"), None);
    }
}
