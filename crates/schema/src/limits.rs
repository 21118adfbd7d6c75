//! Bounds that every accepted reading respects; both sides check them, so a node knows in
//! advance what the platform will refuse.

/// 2000-01-01T00:00:00Z in seconds since the Unix epoch: older readings are refused, since they
/// come from a node whose clock was never set.
pub const MIN_TIME_SECS: f64 = 946_684_800.0;

/// How far ahead of the platform's clock a reading may be (one day), to allow for drifting
/// node clocks without accepting readings from a clock that is wildly wrong.
pub const MAX_FUTURE_SECS: f64 = 86_400.0;

/// Longest resolved record name (base name + name), in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Longest unit, in bytes (the SenML registry's longest is far shorter).
pub const MAX_UNIT_LEN: usize = 16;

/// Longest device id, in bytes.
pub const MAX_DEVICE_ID_LEN: usize = 64;

/// SenML times below this value (2^28 seconds) are relative to the time of receipt
/// (RFC 8428, section 4.5.3).
pub const RELATIVE_TIME_LIMIT: f64 = 268_435_456.0;

/// The highest SenML version this contract understands (RFC 8428: 10).
pub const SENML_VERSION: u64 = 10;
