//! Key layout of the one sled tree: see the crate documentation for the table.

/// First byte of a point key.
pub const POINT: u8 = 0x01;
/// First byte of a series metadata key.
pub const SERIES: u8 = 0x02;
/// First byte of a device metadata key.
pub const DEVICE: u8 = 0x03;

/// Time in ms as 8 bytes whose unsigned order is the signed order of the times.
pub fn time_bytes(t_ms: i64) -> [u8; 8] {
    ((t_ms as u64) ^ (1 << 63)).to_be_bytes()
}

/// Inverse of [`time_bytes`].
pub fn time_from_bytes(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

/// The key of one point.
pub fn point(series: u32, t_ms: i64) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[0] = POINT;
    k[1..5].copy_from_slice(&series.to_be_bytes());
    k[5..].copy_from_slice(&time_bytes(t_ms));
    k
}

/// Splits a point key into its series id and time.
pub fn parse_point(key: &[u8]) -> Option<(u32, i64)> {
    if key.len() != 13 || key[0] != POINT {
        return None;
    }
    let series = u32::from_be_bytes(key[1..5].try_into().ok()?);
    let t = time_from_bytes(key[5..13].try_into().ok()?);
    Some((series, t))
}

/// The key of a series' metadata.
pub fn series(device: &str, metric: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + device.len() + metric.len());
    k.push(SERIES);
    k.extend_from_slice(device.as_bytes());
    k.push(0);
    k.extend_from_slice(metric.as_bytes());
    k
}

/// The key of a device's metadata.
pub fn device(device: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + device.len());
    k.push(DEVICE);
    k.extend_from_slice(device.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_order_is_byte_order() {
        let times = [i64::MIN, -1_000, -1, 0, 1, 946_684_800_000, 1_790_000_000_123, i64::MAX];
        for pair in times.windows(2) {
            assert!(time_bytes(pair[0]) < time_bytes(pair[1]), "{pair:?}");
        }
        for t in times {
            assert_eq!(time_from_bytes(time_bytes(t)), t);
        }
    }

    #[test]
    fn point_keys_round_trip_and_sort_by_series_then_time() {
        assert_eq!(parse_point(&point(7, -5)), Some((7, -5)));
        assert!(point(1, i64::MAX) < point(2, i64::MIN));
        assert_eq!(parse_point(&[POINT, 0, 0]), None);
    }
}
