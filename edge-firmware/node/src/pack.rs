//! Turns queued samples into one SenML-CBOR pack with `mekong_schema::encode_pack`.
//!
//! Every pack of readings says that the node reads lists of acknowledgements (the first
//! record's `"mekong_dl": 2`, `mekong_schema::downlink::VERSION_LABEL`): a backlog's packs
//! are then acknowledged in one downlink per flush of the platform, not one each. The hello
//! does not say so: it is alone in flight.
//!
//! Times go out in whole seconds: nodes sample every few seconds or more, and integer times
//! are one to three bytes of CBOR where a fractional one is nine.
//!
//! Readings are packed only once the clock is set ([`Synced`]): the base time `bt` is the
//! newest sample's time and each record's `t` its (zero or negative) offset from it. A
//! reading's time is fixed when it is packed, and the pack's plain bytes are kept as they are
//! until the platform answers, so every send of it names the same readings at the same
//! times and the platform stores each once. The acknowledgement names the newest reading
//! time, which is then exactly `bt × 1000`.
//!
//! Before the clock is set the node sends a **hello** instead ([`encode_hello`]): a single
//! `uptime` record without a time, which the platform stores at its time of receipt. Its
//! value is taken when it is sent (each send is a new measurement, encoded again), so even a
//! hello stored twice is two true readings. No sensor reading ever goes out with a time
//! relative to receipt, which a resend would store again at a later, wrong time.

use mekong_schema::downlink::VERSION_LIST;
use mekong_schema::senml::{encode_pack, encode_pack_with_downlink, Base, EncodeError, Reading};

use crate::clock::Synced;
use crate::sample::{Metric, Sample};

/// The most records one pack carries (samples plus the `dropped` report).
pub const MAX_RECORDS: usize = 24;

/// What a freshly encoded pack is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packed {
    /// Bytes written.
    pub len: usize,
    /// The newest reading time as the platform will resolve it (epoch ms).
    pub up_to_ms: i64,
    /// Records in the pack (what the acknowledgement's `readings` will say).
    pub records: u16,
}

/// Epoch milliseconds, rounded to the whole second, that a sample taken at `at_ms` (uptime)
/// goes out with when packed with `clock`: what the platform will store.
pub fn time_ms(clock: &Synced, at_ms: u64) -> i64 {
    secs(clock.epoch_ms(at_ms)) * 1000
}

fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) >= 500)
}

/// Encodes `samples` (oldest first, at most [`MAX_RECORDS`] - 1) taken by uptime, plus a
/// `dropped` record when `dropped > 0`, with absolute times from `clock`.
pub fn encode(samples: &[Sample], dropped: u32, clock: &Synced, out: &mut [u8]) -> Result<Packed, EncodeError> {
    let newest_up = samples.iter().map(|s| s.at_ms).max().unwrap_or(0);
    let base = secs(clock.epoch_ms(newest_up));
    let time_of = |at_ms: u64| (secs(clock.epoch_ms(at_ms)) - base) as f64;
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
            time: 0.0,
        };
        let _ = readings.push(r);
    }
    // The first record's unit becomes the base unit: a backlog of one sensor then names its
    // unit once.
    let unit = readings.first().and_then(|r| r.unit);
    let base_fields = Base { name: None, time: Some(base as f64), unit };
    let len = encode_pack_with_downlink(out, &base_fields, &readings, VERSION_LIST)?;
    Ok(Packed { len, up_to_ms: base * 1000, records: readings.len() as u16 })
}

/// The hello pack: `uptime` in whole seconds at `now_ms`, without a time (the platform's
/// time of receipt). Sent while the node does not know the date, to get a downlink and with
/// it the platform's time.
pub fn encode_hello(now_ms: u64, out: &mut [u8]) -> Result<usize, EncodeError> {
    let r = Reading {
        name: Metric::Uptime.name(),
        unit: Some(Metric::Uptime.unit()),
        value: (now_ms / 1000) as f64,
        time: 0.0,
    };
    encode_pack(out, &Base { name: None, time: None, unit: None }, &[r])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
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

    fn synced(server_ms: i64, uptime_ms: u64) -> Synced {
        let mut c = Clock::new();
        c.set(server_ms, uptime_ms);
        c.synced().unwrap()
    }

    #[test]
    fn a_backlog_with_the_clock_set_decodes_to_absolute_times() {
        let clock = synced(1_790_000_000_000, 100_000);
        let samples = [
            s(Metric::WaterLevel, 182.5, 40_000),
            s(Metric::WaterLevel, 184.0, 100_000),
            s(Metric::WaterLevel, 185.5, 160_400),
        ];
        let mut buf = [0u8; 256];
        let p = encode(&samples, 0, &clock, &mut buf).unwrap();
        assert_eq!(p.records, 3);
        assert_eq!(p.up_to_ms, 1_790_000_060_000, "newest: 160.4 s uptime rounds to +60 s");
        assert_eq!(time_ms(&clock, 160_400), p.up_to_ms);
        let got = decode(&buf[..p.len], 1_790_000_100.0);
        assert_eq!(
            got,
            [
                ("water_level".into(), 182.5, 1_789_999_940.0),
                ("water_level".into(), 184.0, 1_790_000_000.0),
                ("water_level".into(), 185.5, 1_790_000_060.0),
            ]
        );
        // One base unit, integer times: 3 readings in well under 25 bytes each, plus the 11
        // bytes of `"mekong_dl": 2` once per pack.
        assert!(p.len < 75 + 11, "{}", p.len);
    }

    #[test]
    fn samples_taken_before_the_clock_was_set_get_absolute_times_and_a_hello_has_none() {
        // Sampled at 10 s and 40 s of uptime; the first downlink came at 60 s.
        let clock = synced(1_790_000_000_000, 60_000);
        let samples = [s(Metric::Pm2_5, 35.0, 10_000), s(Metric::Pm10, 48.0, 10_000), s(Metric::Pm2_5, 37.0, 40_000)];
        let mut buf = [0u8; 256];
        let p = encode(&samples, 2, &clock, &mut buf).unwrap();
        assert_eq!(p.up_to_ms, 1_789_999_980_000);
        assert_eq!(p.records, 4);
        let got = decode(&buf[..p.len], 1_790_000_000.0);
        assert_eq!(
            got,
            [
                ("pm2_5".into(), 35.0, 1_789_999_950.0),
                ("pm10".into(), 48.0, 1_789_999_950.0),
                ("pm2_5".into(), 37.0, 1_789_999_980.0),
                ("dropped".into(), 2.0, 1_789_999_980.0),
            ]
        );
        // The same bytes decode to the same times whenever they arrive.
        assert_eq!(decode(&buf[..p.len], 1_790_000_900.0), got);

        let n = encode_hello(93_700, &mut buf).unwrap();
        assert_eq!(decode(&buf[..n], 1_790_000_000.0), [("uptime".into(), 93.0, 1_790_000_000.0)], "receipt time");
    }

    #[test]
    fn a_full_pack_fits_the_outbox_slot() {
        let clock = synced(1_790_000_000_000, 0);
        let samples: Vec<Sample> = (0..MAX_RECORDS as u64 - 1)
            .map(|i| s(if i % 2 == 0 { Metric::VehicleCount } else { Metric::Speed }, 27.3 + i as f64, i * 60_000))
            .collect();
        let mut buf = [0u8; crate::outbox::PACK_BYTES];
        let p = encode(&samples, 1_000, &clock, &mut buf).unwrap();
        assert_eq!(p.records as usize, MAX_RECORDS);
    }

    /// The figure in README.md: a minute of a mixed station (PM every 10 s, level every
    /// 10 s, traffic every 30 s), as SenML-CBOR and as the same records in SenML-JSON.
    #[test]
    fn typical_pack_against_senml_json() {
        let clock = synced(1_790_000_000_000, 0);
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
        let p = encode(&samples, 0, &clock, &mut buf).unwrap();
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
