//! `mekong simulate`: a fleet of realistic Can Tho stations publishing SenML-CBOR over MQTT,
//! so that a newcomer sees data at once and tests have lifelike input.
//!
//! Values are pure functions of (device, time) plus a seeded noise source, so two runs with the
//! same seed publish the same readings. Shapes follow the field notes on Can Tho: a mixed, mostly
//! semi-diurnal tide on the Hau river (two highs a day, about 1.8 m range), traffic and PM2.5
//! that peak around 07:00 and 17:00 local time (UTC+7), temperature 24 to 35 Cel.

use std::f64::consts::TAU;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use mekong_schema::topic::Uplink;
use mekong_schema::{encode_pack, Base, DeviceKind, Reading};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Number of stations, spread over the three kinds.
    pub devices: usize,
    /// Time between two readings of one station.
    pub interval: Duration,
    /// How long to publish live readings; `None` for ever.
    pub duration: Option<Duration>,
    /// Backlog to send first, in packs of up to `batch` timestamps: the past this long.
    pub history: Duration,
    /// Timestamps per backlog pack.
    pub batch: usize,
    /// Prefix of the device ids (`sim-` gives `sim-water-000`).
    pub prefix: String,
    /// Noise seed.
    pub seed: u64,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            host: "localhost".into(),
            port: 1883,
            devices: 12,
            interval: Duration::from_secs(10),
            duration: None,
            history: Duration::ZERO,
            batch: 50,
            prefix: "sim-".into(),
            seed: 1,
        }
    }
}

/// What was published.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SimReport {
    /// Packs published and acknowledged (PUBACK) by the broker.
    pub packs: u64,
    /// Readings in those packs.
    pub readings: u64,
    /// Payload bytes of those packs.
    pub bytes: u64,
}

/// One simulated station.
#[derive(Debug, Clone)]
pub struct Station {
    /// Device id.
    pub id: String,
    /// Its kind.
    pub kind: DeviceKind,
    phase: f64,
    scale: f64,
    noise: Noise,
}

impl Station {
    /// The `index`-th station of a fleet: kinds rotate water, traffic, air.
    pub fn new(prefix: &str, index: usize, seed: u64) -> Station {
        let kind = [DeviceKind::Water, DeviceKind::Traffic, DeviceKind::Air][index % 3];
        let mut noise = Noise::new(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let phase = noise.uniform() * TAU;
        let scale = 0.7 + 0.6 * noise.uniform();
        Station { id: format!("{prefix}{}-{:03}", kind.as_str(), index), kind, phase, scale, noise }
    }

    /// The readings at `t` (seconds since the epoch): (metric, unit, value).
    pub fn sample(&mut self, t: f64) -> Vec<(&'static str, &'static str, f64)> {
        let hour = ((t / 3600.0) + 7.0).rem_euclid(24.0); // Indochina Time, UTC+7
        let rush = (-((hour - 7.5) / 1.2).powi(2)).exp() + (-((hour - 17.5) / 1.5).powi(2)).exp();
        let day = if (6.0..22.0).contains(&hour) { 1.0 } else { 0.25 };
        let n = &mut self.noise;
        match self.kind {
            DeviceKind::Water => {
                // M2 (12.42 h) and K1 (23.93 h) constituents: two unequal highs a day.
                let m2 = (TAU * t / 44_712.0 + self.phase).cos();
                let k1 = (TAU * t / 86_164.0 + self.phase / 2.0).cos();
                let level = 150.0 * self.scale + 70.0 * m2 + 25.0 * k1 + n.gauss() * 0.5;
                let salinity = (0.4 + 1.2 * self.scale * (m2 + 1.0) / 2.0 + n.gauss() * 0.02).max(0.0);
                let turbidity = (45.0 + 20.0 * (1.0 - m2).abs() + n.gauss() * 2.0).max(0.0);
                vec![
                    ("water_level", "cm", round(level, 1)),
                    ("salinity", "ppt", round(salinity, 2)),
                    ("turbidity", "NTU", round(turbidity, 1)),
                ]
            }
            DeviceKind::Traffic => {
                let per_min = (self.scale * 160.0 * (0.15 * day + 0.85 * rush) + n.gauss() * 6.0).max(0.0).round();
                let occupancy = (per_min / 2.2 + n.gauss()).clamp(0.0, 100.0);
                let speed = (48.0 - 0.45 * occupancy + n.gauss() * 2.0).max(3.0);
                vec![
                    ("vehicle_count", "/min", per_min),
                    ("speed", "km/h", round(speed, 1)),
                    ("occupancy", "%", round(occupancy, 1)),
                ]
            }
            DeviceKind::Air | DeviceKind::Unknown => {
                let pm25 = (14.0 * self.scale + 30.0 * rush + n.gauss() * 2.5).max(1.0);
                let pm10 = pm25 * 1.6 + n.gauss().abs() * 4.0;
                let warm = (TAU * (hour - 9.0) / 24.0).sin();
                vec![
                    ("pm2_5", "ug/m3", round(pm25, 1)),
                    ("pm10", "ug/m3", round(pm10, 1)),
                    ("temperature", "Cel", round(29.5 + 5.0 * warm + n.gauss() * 0.2, 2)),
                    ("humidity", "%RH", round((80.0 - 14.0 * warm + n.gauss()).clamp(0.0, 100.0), 1)),
                ]
            }
        }
    }

    /// One pack with the readings at each of `times` (seconds since the epoch), and the
    /// number of readings in it.
    pub fn pack(&mut self, times: &[f64]) -> anyhow::Result<(Vec<u8>, u64)> {
        let base_time = times.first().copied().unwrap_or(0.0);
        let mut samples = Vec::new();
        for &t in times {
            for (name, unit, value) in self.sample(t) {
                samples.push((name, unit, value, t - base_time));
            }
        }
        let readings: Vec<Reading<'_>> =
            samples.iter().map(|&(name, unit, value, time)| Reading { name, unit: Some(unit), value, time }).collect();
        let mut buf = vec![0u8; 64 + readings.len() * 48];
        let n = encode_pack(&mut buf, &Base { time: Some(base_time), ..Base::default() }, &readings)?;
        buf.truncate(n);
        Ok((buf, readings.len() as u64))
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// xorshift64* with a Box-Muller normal: small, seeded, good enough for sensor noise.
#[derive(Debug, Clone)]
struct Noise(u64);

impl Noise {
    fn new(seed: u64) -> Self {
        Noise(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn gauss(&mut self) -> f64 {
        let u = self.uniform().max(f64::MIN_POSITIVE);
        (-2.0 * u.ln()).sqrt() * (TAU * self.uniform()).cos()
    }
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Runs the fleet: every station on its own MQTT connection, the backlog first, then live
/// readings every interval until the duration is over. Returns what the broker acknowledged.
pub async fn run(opts: SimOptions) -> anyhow::Result<SimReport> {
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..opts.devices {
        let opts = opts.clone();
        tasks.spawn(async move { run_station(Station::new(&opts.prefix, index, opts.seed), &opts).await });
    }
    let mut report = SimReport::default();
    while let Some(result) = tasks.join_next().await {
        let r = result.context("station task failed")??;
        report.packs += r.packs;
        report.readings += r.readings;
        report.bytes += r.bytes;
    }
    Ok(report)
}

async fn run_station(mut station: Station, opts: &SimOptions) -> anyhow::Result<SimReport> {
    let mut mqtt = MqttOptions::new(station.id.clone(), opts.host.clone(), opts.port);
    mqtt.set_keep_alive(Duration::from_secs(30));
    mqtt.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(mqtt, 64);
    let topic = Uplink(&station.id).to_string();
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel();
    let id = station.id.clone();
    let driver = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    if acked_tx.send(()).is_err() {
                        return Ok(());
                    }
                }
                Ok(Event::Incoming(Packet::Disconnect)) => return Ok(()),
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(anyhow::anyhow!("station {id}: mqtt: {e}")),
            }
        }
    });

    let step = opts.interval.as_secs_f64().max(0.001);
    // (readings, bytes) per pack in publish order; the broker acknowledges a connection's
    // QoS 1 publishes in order, so the first `acked` entries are the acknowledged ones.
    let mut sent: Vec<(u64, u64)> = Vec::new();
    let mut acked = 0usize;
    let now = now_secs();
    let backlog: Vec<f64> = {
        let count = (opts.history.as_secs_f64() / step) as usize;
        (0..count).map(|i| ((now - opts.history.as_secs_f64() + i as f64 * step) * 1000.0).round() / 1000.0).collect()
    };
    for chunk in backlog.chunks(opts.batch.max(1)) {
        let (pack, readings) = station.pack(chunk)?;
        sent.push((readings, pack.len() as u64));
        client.publish(&topic, QoS::AtLeastOnce, false, pack).await?;
    }
    let started = tokio::time::Instant::now();
    // Readings of one station never share a millisecond, even at a 1 ms interval.
    let mut last_t = backlog.last().copied().unwrap_or(f64::MIN);
    let mut ticker = tokio::time::interval(opts.interval.max(Duration::from_millis(1)));
    // When the machine cannot keep up, publish late rather than in a burst of equal times.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if opts.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let t = ((now_secs() * 1000.0).round() / 1000.0).max(last_t + 0.001);
        last_t = t;
        let (pack, readings) = station.pack(&[t])?;
        sent.push((readings, pack.len() as u64));
        client.publish(&topic, QoS::AtLeastOnce, false, pack).await?;
        while acked_rx.try_recv().is_ok() {
            acked += 1;
        }
    }
    while acked < sent.len() && acked_rx.recv().await.is_some() {
        acked += 1;
    }
    let acked_packs = &sent[..acked.min(sent.len())];
    let report = SimReport {
        packs: acked_packs.len() as u64,
        readings: acked_packs.iter().map(|s| s.0).sum(),
        bytes: acked_packs.iter().map(|s| s.1).sum(),
    };
    client.disconnect().await?;
    driver.await.context("mqtt driver task failed")??;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOON_ICT: f64 = 1_790_000_000.0 - 8000.0 - 7.0 * 3600.0; // 2026-09-21 12:00 UTC+7

    #[test]
    fn the_tide_has_two_highs_a_day_and_a_realistic_range() {
        let mut s = Station::new("t-", 0, 7);
        // Ten days every five minutes.
        let levels: Vec<f64> = (0..10 * 288).map(|i| s.sample(NOON_ICT + i as f64 * 300.0)[0].2).collect();
        let max = levels.iter().cloned().fold(f64::MIN, f64::max);
        let min = levels.iter().cloned().fold(f64::MAX, f64::min);
        assert!((100.0..=250.0).contains(&(max - min)), "range {} cm", max - min);
        // A high water is the (first) highest level within two hours either side.
        let highs = (24..levels.len() - 24)
            .filter(|&i| {
                let window = &levels[i - 24..=i + 24];
                let top = window.iter().cloned().fold(f64::MIN, f64::max);
                window.iter().position(|&l| l == top) == Some(24)
            })
            .count();
        // 240 h / 12.42 h = 19.3 semi-diurnal highs, minus those too close to the ends.
        assert!((18..=20).contains(&highs), "{highs} highs in ten days");
    }

    #[test]
    fn traffic_peaks_at_rush_hour_and_counts_are_whole() {
        let mut s = Station::new("t-", 1, 7);
        let at = |s: &mut Station, hour_ict: f64| s.sample(NOON_ICT + (hour_ict - 12.0) * 3600.0);
        let rush = at(&mut s, 7.5)[0].2;
        let night = at(&mut s, 3.0)[0].2;
        assert!(rush > 3.0 * night.max(1.0), "rush {rush} night {night}");
        assert_eq!(rush.fract(), 0.0);
    }

    #[test]
    fn the_same_seed_gives_the_same_readings() {
        let a = Station::new("t-", 2, 9).sample(NOON_ICT);
        let b = Station::new("t-", 2, 9).sample(NOON_ICT);
        assert_eq!(a, b);
        let c = Station::new("t-", 2, 10).sample(NOON_ICT);
        assert_ne!(a, c);
    }

    #[test]
    fn packs_carry_every_reading() {
        let mut s = Station::new("t-", 2, 9);
        let (pack, readings) = s.pack(&[NOON_ICT, NOON_ICT + 10.0]).unwrap();
        assert_eq!(readings, 8);
        let mut n = 0;
        let opts = mekong_schema::senml::DecodeOptions { now: NOON_ICT, max_records: 100 };
        mekong_schema::decode_pack(&pack, opts, &mut |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 8);
    }
}
