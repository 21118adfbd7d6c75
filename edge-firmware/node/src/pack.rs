//! Turns queued samples into one SenML-CBOR pack with `mekong_schema::encode_pack`.
//!
//! Times go out in whole seconds: nodes sample every 10 s or more, and integer times are one
//! to three bytes of CBOR where a fractional one is nine.
//!
//! - **Clock set**: the base time `bt` is the newest sample's time and each record's `t` is
//!   its (zero or negative) offset from it. The platform acknowledges a pack by naming its
//!   newest reading time, which is then exactly `bt × 1000`: the node knows it before sending.
//! - **Clock not set yet**: no `bt`; each `t` is the sample's age at packing time, negated
//!   (RFC 8428 relative time), which the platform resolves against its time of receipt. The
//!   node cannot predict the time the acknowledgement will name, so it keeps at most one
//!   such pack in flight and takes any acknowledgement as that pack's ([`crate::outbox`]).
//!   The first acknowledgement sets the clock, and later packs are absolute.
//!
//! The time in the pack is fixed when the pack is made; a resend sends the same bytes, so
//! the platform sees the same readings at the same times and stores them once.

use mekong_schema::senml::{encode_pack, Base, EncodeError, Reading};

use crate::clock::Clock;
use crate::sample::{Metric, Sample};

/// The most records one pack carries (samples plus the `dropped` report).
pub const MAX_RECORDS: usize = 24;

/// What a freshly encoded pack is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packed {
    /// Bytes written.
    pub len: usize,
    /// The newest reading time as the platform will resolve it (epoch ms), when the clock
    /// was set; `None` for a pack with relative times.
    pub up_to_ms: Option<i64>,
    /// Records in the pack (what the acknowledgement's `readings` will say).
    pub records: u16,
}

/// Encodes `samples` (oldest first, at most [`MAX_RECORDS`] - 1) taken by uptime, plus a
/// `dropped` record when `dropped > 0`, as of uptime `now_ms`.
pub fn encode(
    samples: &[Sample],
    dropped: u32,
    clock: &Clock,
    now_ms: u64,
    out: &mut [u8],
) -> Result<Packed, EncodeError> {
    let secs = |ms: i64| ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) >= 500);
    let newest_up = samples.iter().map(|s| s.at_ms).max().unwrap_or(now_ms);
    let base_secs = clock.epoch_ms(newest_up).map(secs);
    let time_of = |at_ms: u64| -> f64 {
        match (base_secs, clock.epoch_ms(at_ms)) {
            (Some(base), Some(at)) => (secs(at) - base) as f64,
            // Relative: the sample's age in whole seconds, as a negative time.
            _ => -(secs(i64::try_from(now_ms.saturating_sub(at_ms)).unwrap_or(i64::MAX)) as f64),
        }
    };
    let mut readings: heapless::Vec<Reading<'static>, MAX_RECORDS> = heapless::Vec::new();
    for s in samples.iter().take(MAX_RECORDS - 1) {
        let r = Reading { name: s.metric.name(), unit: Some(s.metric.unit()), value: s.value, time: time_of(s.at_ms) };
        // Capacity is MAX_RECORDS and we take at most MAX_RECORDS - 1.
        let _ = readings.push(r);
    }
    if dropped > 0 {
        let r = Reading {
            name: Metric::Dropped.name(),
            unit: Some(Metric::Dropped.unit()),
            value: f64::from(dropped),
            time: time_of(newest_up),
        };
        let _ = readings.push(r);
    }
    // The first record's unit becomes the base unit: a backlog of one sensor then names its
    // unit once.
    let base = Base { name: None, time: base_secs.map(|s| s as f64), unit: readings.first().and_then(|r| r.unit) };
    let len = encode_pack(out, &base, &readings)?;
    Ok(Packed { len, up_to_ms: base_secs.map(|s| s * 1000), records: readings.len() as u16 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mekong_schema::senml::{decode_pack, DecodeOptions, Value};
    use std::vec::Vec;

    fn s(metric: Metric, value: f64, at_ms: u64) -> Sample {
        Sample { metric, value, at_ms }
    }

    fn decode(bytes: &[u8], now: f64) -> Vec<(std::string::String, f64, f64)> {
        let mut out = Vec::new();
        let opts = DecodeOptions { now, max_records: 4096 };
        decode_pack(bytes, opts, &mut |r| {
            let mut name = [0u8; 64];
            let Value::Number(v) = r.value else { panic!("not a number") };
            out.push((r.name_into(&mut name).into(), v, r.time));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn a_backlog_with_the_clock_set_decodes_to_absolute_times() {
        let mut clock = Clock::new();
        clock.set(1_790_000_000_000, 100_000);
        let samples = [
            s(Metric::WaterLevel, 182.5, 40_000),
            s(Metric::WaterLevel, 184.0, 100_000),
            s(Metric::WaterLevel, 185.5, 160_400),
        ];
        let mut buf = [0u8; 256];
        let p = encode(&samples, 0, &clock, 170_000, &mut buf).unwrap();
        assert_eq!(p.records, 3);
        assert_eq!(p.up_to_ms, Some(1_790_000_060_000), "newest: 160.4 s uptime rounds to +60 s");
        let got = decode(&buf[..p.len], 1_790_000_100.0);
        assert_eq!(
            got,
            [
                ("water_level".into(), 182.5, 1_789_999_940.0),
                ("water_level".into(), 184.0, 1_790_000_000.0),
                ("water_level".into(), 185.5, 1_790_000_060.0),
            ]
        );
        // One base unit, integer times: 3 readings in well under 25 bytes each.
        assert!(p.len < 75, "{}", p.len);
    }

    #[test]
    fn without_a_clock_times_are_relative_to_receipt() {
        let samples = [s(Metric::Pm2_5, 35.0, 10_000), s(Metric::Pm10, 48.0, 10_000), s(Metric::Pm2_5, 37.0, 40_000)];
        let mut buf = [0u8; 256];
        let p = encode(&samples, 2, &Clock::new(), 45_000, &mut buf).unwrap();
        assert_eq!(p.up_to_ms, None);
        assert_eq!(p.records, 4);
        let got = decode(&buf[..p.len], 1_790_000_000.0);
        assert_eq!(
            got,
            [
                ("pm2_5".into(), 35.0, 1_789_999_965.0),
                ("pm10".into(), 48.0, 1_789_999_965.0),
                ("pm2_5".into(), 37.0, 1_789_999_995.0),
                ("dropped".into(), 2.0, 1_789_999_995.0),
            ]
        );
    }

    #[test]
    fn a_full_pack_fits_the_outbox_slot() {
        let mut clock = Clock::new();
        clock.set(1_790_000_000_000, 0);
        let samples: Vec<Sample> = (0..MAX_RECORDS as u64 - 1)
            .map(|i| s(if i % 2 == 0 { Metric::VehicleCount } else { Metric::Speed }, 27.3 + i as f64, i * 60_000))
            .collect();
        let mut buf = [0u8; crate::outbox::PACK_BYTES];
        let p = encode(&samples, 1_000, &clock, 2_000_000, &mut buf).unwrap();
        assert_eq!(p.records as usize, MAX_RECORDS);
    }

    /// The figure in README.md: a minute of a mixed station (PM every 10 s, level every
    /// 10 s, traffic every 30 s), as SenML-CBOR and as the same records in SenML-JSON.
    #[test]
    fn typical_pack_against_senml_json() {
        let mut clock = Clock::new();
        clock.set(1_790_000_000_000, 0);
        let mut samples = Vec::new();
        for i in 1..=6u64 {
            samples.push(s(Metric::Pm2_5, 30.0 + i as f64, i * 10_000));
            samples.push(s(Metric::Pm10, 45.0 + i as f64, i * 10_000));
            samples.push(s(Metric::WaterLevel, 182.0 + i as f64 / 10.0, i * 10_000));
            if i % 3 == 0 {
                samples.push(s(Metric::VehicleCount, 42.0, i * 10_000));
                samples.push(s(Metric::Speed, 31.5, i * 10_000));
            }
        }
        let mut buf = [0u8; 1024];
        let p = encode(&samples, 0, &clock, 60_000, &mut buf).unwrap();
        let newest = 1_790_000_060i64;
        let mut json = std::string::String::from("[");
        for (i, x) in samples.iter().enumerate() {
            let t = (1_790_000_000_000 + x.at_ms as i64) / 1000 - newest;
            let mut rec = std::vec::Vec::new();
            if i == 0 {
                rec.push(std::format!("\"bt\":{newest},\"bu\":\"{}\"", x.metric.unit()));
            }
            rec.push(std::format!("\"n\":\"{}\"", x.metric.name()));
            if i > 0 && x.metric.unit() != samples[0].metric.unit() {
                rec.push(std::format!("\"u\":\"{}\"", x.metric.unit()));
            }
            rec.push(std::format!("\"v\":{}", x.value));
            if t != 0 {
                rec.push(std::format!("\"t\":{t}"));
            }
            json.push_str(&std::format!("{}{{{}}}", if i > 0 { "," } else { "" }, rec.join(",")));
        }
        json.push(']');
        std::println!(
            "{} readings: SenML-CBOR {} bytes ({:.1} per reading), SenML-JSON {} bytes ({:.1} per reading)",
            samples.len(),
            p.len,
            p.len as f64 / samples.len() as f64,
            json.len(),
            json.len() as f64 / samples.len() as f64
        );
        assert!(p.len * 10 < json.len() * 6, "CBOR should be well under 60 % of JSON");
    }
}
