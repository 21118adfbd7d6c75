//! `mekong simulate`: a fleet of realistic Can Tho stations publishing SenML-CBOR over MQTT,
//! so that a newcomer sees data at once and tests have lifelike input.
//!
//! Values are pure functions of (device, time) plus a seeded noise source, so two runs with the
//! same seed publish the same readings. Shapes follow the field notes on Can Tho: a mixed, mostly
//! semi-diurnal tide on the Hau river (two highs a day, about 1.8 m range), traffic and PM2.5
//! that peak around 07:00 and 17:00 local time (UTC+7), temperature 24 to 35 Cel.

use std::f64::consts::{PI, TAU};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use mekong_schema::downlink::{self, Downlink, Topic};
use mekong_schema::topic::Uplink;
use mekong_schema::{encode_pack, Base, DeviceKind, Reading};
use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS};
use tokio::sync::watch;

/// What the fleet's readings follow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scenario {
    /// Everyday Can Tho: tides, rush hours, daily cycles.
    #[default]
    Normal,
    /// A high tide and a rain event, compressed into about three minutes from the start of
    /// the run: the water stations' level rises from 230 cm to about 325 cm and falls back
    /// ([`flood_level`]), and the air stations report the rain (`rainfall`, mm per reading).
    /// It crosses the example rules of `config/mekong.toml`: `hau-rising` fires at about
    /// +30 s and clears at about +150 s; `hau-flood` (above 300 cm for 60 s) fires at about
    /// +115 s and clears (below 290 cm for 30 s) at about +160 s.
    Flood,
}

/// The flood scenario's water level `e` seconds into the run, in cm: a high tide (230 cm,
/// +50 cm over 160 s) and the surge of a rain event on top of it (+45 cm over 128 s, from
/// +24 s).
pub fn flood_level(e: f64) -> f64 {
    let bump = |from: f64, len: f64| if (from..=from + len).contains(&e) { (PI * (e - from) / len).sin() } else { 0.0 };
    230.0 + 50.0 * bump(0.0, 160.0) + 45.0 * bump(24.0, 128.0)
}

/// The flood scenario's rain intensity `e` seconds into the run, in mm/h: a tropical
/// downpour of up to 60 mm/h from +10 s to +150 s.
pub fn flood_rain(e: f64) -> f64 {
    if (10.0..=150.0).contains(&e) {
        60.0 * (PI * (e - 10.0) / 140.0).sin()
    } else {
        0.0
    }
}

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
    /// How long to wait at the end for the platform's answers to the last packs.
    pub answer_timeout: Duration,
    /// Show progress on standard error: a line rewritten in place on a terminal, a plain
    /// line every few seconds otherwise.
    pub progress: bool,
    /// What the readings follow.
    pub scenario: Scenario,
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
            answer_timeout: Duration::from_secs(30),
            progress: false,
            scenario: Scenario::Normal,
        }
    }
}

/// What was published, and what became of it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SimReport {
    /// Packs published.
    pub packs: u64,
    /// Packs the platform acknowledged on the downlink: stored durably.
    pub stored: u64,
    /// Packs the platform refused.
    pub refused: u64,
    /// Readings the platform stored as new points.
    pub readings: u64,
    /// Payload bytes published.
    pub bytes: u64,
}

impl SimReport {
    /// Packs with no answer from the platform (yet).
    pub fn unanswered(&self) -> u64 {
        self.packs.saturating_sub(self.stored + self.refused)
    }
}

/// Backlog packs a station keeps waiting for their answers at most.
const WINDOW: u64 = 16;

/// Counts shared by the stations, for the progress line.
#[derive(Debug, Default)]
struct Progress {
    packs: AtomicU64,
    stored: AtomicU64,
    refused: AtomicU64,
}

impl Progress {
    fn line(&self) -> String {
        let (packs, stored, refused) = (
            self.packs.load(Ordering::Relaxed),
            self.stored.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        );
        format!(
            "{packs} packs sent, {stored} stored, {refused} refused, {} waiting",
            packs.saturating_sub(stored + refused)
        )
    }
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
    /// The flood scenario's start (seconds since the epoch) and the time between readings.
    flood: Option<(f64, f64)>,
}

impl Station {
    /// The `index`-th station of a fleet: kinds rotate water, traffic, air.
    pub fn new(prefix: &str, index: usize, seed: u64) -> Station {
        let kind = [DeviceKind::Water, DeviceKind::Traffic, DeviceKind::Air][index % 3];
        let mut noise = Noise::new(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let phase = noise.uniform() * TAU;
        let scale = 0.7 + 0.6 * noise.uniform();
        Station { id: format!("{prefix}{}-{:03}", kind.as_str(), index), kind, phase, scale, noise, flood: None }
    }

    /// The station in the flood scenario that starts at `start` (seconds since the epoch),
    /// reading every `interval` seconds.
    pub fn in_flood(self, start: f64, interval: f64) -> Station {
        Station { flood: Some((start, interval)), ..self }
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
                let level = match self.flood {
                    Some((start, _)) => flood_level(t - start) + n.gauss() * 0.5,
                    None => 150.0 * self.scale + 70.0 * m2 + 25.0 * k1 + n.gauss() * 0.5,
                };
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
                let rain = self.flood.map(|(start, interval)| round(flood_rain(t - start) * interval / 3600.0, 2));
                let mut readings = vec![
                    ("pm2_5", "ug/m3", round(pm25, 1)),
                    ("pm10", "ug/m3", round(pm10, 1)),
                    ("temperature", "Cel", round(29.5 + 5.0 * warm + n.gauss() * 0.2, 2)),
                    ("humidity", "%RH", round((80.0 - 14.0 * warm + n.gauss()).clamp(0.0, 100.0), 1)),
                ];
                readings.extend(rain.map(|mm| ("rainfall", "mm", mm)));
                readings
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

/// Where the demo fleet stands: approximate places in Can Tho by kind (not surveyed, good
/// enough for a map), reused a few hundred metres apart when a fleet is larger.
const PLACES: [&[(&str, f64, f64)]; 3] = [
    &[
        ("Ninh Kieu wharf, Hau river", 10.034, 105.788),
        ("Hau river near the Can Tho bridge", 10.038, 105.830),
        ("Can Tho river at Cai Rang", 10.005, 105.749),
        ("Cai Khe canal", 10.046, 105.778),
    ],
    &[
        ("Hoa Binh avenue, city centre", 10.034, 105.780),
        ("30/4 street", 10.022, 105.773),
        ("Can Tho bridge approach", 10.030, 105.818),
        ("Nguyen Van Cu junction", 10.040, 105.760),
    ],
    &[
        ("Street 3/2 near the university", 10.030, 105.771),
        ("Ninh Kieu park", 10.031, 105.789),
        ("Cai Rang market", 10.009, 105.757),
        ("Binh Thuy", 10.060, 105.754),
    ],
];

/// The name and place (lat, lon) of the `index`-th station of a demo fleet.
pub fn place(index: usize) -> (String, f64, f64) {
    let (kind, nth) = (index % 3, index / 3);
    let places = PLACES[kind];
    let (name, lat, lon) = places[nth % places.len()];
    let round = nth / places.len();
    match round {
        0 => (name.to_owned(), lat, lon),
        r => (format!("{name} {}", r + 1), lat + 0.003 * r as f64, lon + 0.003 * r as f64),
    }
}

/// Gives the stations of the fleet `opts` describes a name and a place in `directory`, for
/// the dashboard's map, where the registry says nothing of them. In memory only: the
/// registry file is not written, and an edit through the API, which reloads the registry,
/// drops them.
pub fn place_fleet(directory: &mekong_api::directory::Directory, opts: &SimOptions) {
    let mut profiles = (*directory.snapshot()).clone();
    for index in 0..opts.devices {
        let station = Station::new(&opts.prefix, index, opts.seed);
        let (name, lat, lon) = place(index);
        let Ok(location) = mekong_api::directory::Location::new(lat, lon, None) else { continue };
        let tags = [("demo".to_owned(), "simulated".to_owned())].into();
        if let Ok(profile) = mekong_api::directory::Profile::new(station.kind, Some(name), Some(location), tags) {
            profiles.entry(station.id).or_insert(profile);
        }
    }
    directory.replace(profiles);
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
/// readings every interval until the duration is over, then waits (up to
/// `answer_timeout`) for the platform's answers on the downlinks. Returns what was sent and
/// what the platform made of it: a pack counts as stored once the platform acknowledged it
/// durably on the downlink, not when the broker PUBACKed it.
///
/// `stop` ends the live readings early (Ctrl-C): the stations then wait for the answers to
/// what they sent, and the report counts it all.
pub async fn run(opts: SimOptions, stop: watch::Receiver<bool>) -> anyhow::Result<SimReport> {
    let progress = Arc::new(Progress::default());
    let reporter = opts.progress.then(|| tokio::spawn(report_progress(Arc::clone(&progress))));
    let mut tasks = tokio::task::JoinSet::new();
    let start = now_secs();
    for index in 0..opts.devices {
        let (opts, progress, stop) = (opts.clone(), Arc::clone(&progress), stop.clone());
        let station = Station::new(&opts.prefix, index, opts.seed);
        let station = match opts.scenario {
            Scenario::Normal => station,
            Scenario::Flood => station.in_flood(start, opts.interval.as_secs_f64()),
        };
        tasks.spawn(async move { run_station(station, &opts, &progress, stop).await });
    }
    let mut report = SimReport::default();
    let mut failure = None;
    while let Some(result) = tasks.join_next().await {
        match result.context("station task failed")? {
            Ok(r) => {
                report.packs += r.packs;
                report.stored += r.stored;
                report.refused += r.refused;
                report.readings += r.readings;
                report.bytes += r.bytes;
            }
            // The first failure says why; the others are most likely the same.
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    if let Some(reporter) = reporter {
        reporter.abort();
        eprintln!("\r{}", progress.line());
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// The backlog to send for a fleet of `opts`: `opts.history`, cut to what comes after the
/// newest reading `store` already holds from any of its stations.
pub fn backlog_after(store: &mekong_store::Store, opts: &SimOptions) -> Duration {
    let newest_ms = (0..opts.devices)
        .filter_map(|i| store.series_of(&Station::new(&opts.prefix, i, opts.seed).id))
        .flatten()
        .map(|s| s.last_ms)
        .max();
    let Some(newest_ms) = newest_ms else {
        return opts.history;
    };
    // One interval less, so that the first reading sent comes one interval after it.
    let since = Duration::from_secs_f64((now_secs() - newest_ms as f64 / 1000.0).max(0.0));
    opts.history.min(since.saturating_sub(opts.interval))
}

/// Prints the progress line until aborted.
async fn report_progress(progress: Arc<Progress>) {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let every = if terminal { Duration::from_millis(250) } else { Duration::from_secs(5) };
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if terminal {
            eprint!("\r{}  ", progress.line());
        } else {
            eprintln!("{}", progress.line());
        }
    }
}

/// What a station's connection reports to it.
// One value per downlink, moved once through a channel: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Heard {
    Connected,
    Answer(Downlink<'static>),
    Failed(anyhow::Error),
}

/// The cause of a connection failure in words an operator acts on.
fn explain(e: &ConnectionError, host: &str, port: u16) -> anyhow::Error {
    let cause = match e {
        ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("connection refused by {host}:{port}: is mekong serve running there?")
        }
        ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            format!("no answer from {host}:{port}: check the address and the network")
        }
        ConnectionError::Io(io) if matches!(io.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::Other) => {
            format!("cannot reach {host}:{port} ({io}): is the host name right?")
        }
        ConnectionError::ConnectionRefused(code) => format!(
            "the broker at {host}:{port} refused the connection ({code:?}): it checks logins once MQTT identities \
             exist, and the simulator has none"
        ),
        ConnectionError::NetworkTimeout => format!("no answer from {host}:{port} in time"),
        other => format!("{host}:{port}: {other}"),
    };
    anyhow::anyhow!(cause)
}

async fn run_station(
    mut station: Station,
    opts: &SimOptions,
    progress: &Progress,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<SimReport> {
    let mut mqtt = MqttOptions::new(station.id.clone(), opts.host.clone(), opts.port);
    mqtt.set_keep_alive(Duration::from_secs(30));
    mqtt.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(mqtt, 64);
    let topic = Uplink(&station.id).to_string();
    let (heard_tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let (host, port) = (opts.host.clone(), opts.port);
    let driver = tokio::spawn(async move {
        loop {
            let event = match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => Heard::Connected,
                Ok(Event::Incoming(Packet::Publish(p))) => match downlink::decode(&p.payload) {
                    Ok(Downlink::Ack { up_to_ms, readings, server_ms, seq }) => {
                        Heard::Answer(Downlink::Ack { up_to_ms, readings, server_ms, seq })
                    }
                    Ok(Downlink::Refused { server_ms, seq, .. }) => {
                        Heard::Answer(Downlink::Refused { reason: "", server_ms, seq })
                    }
                    // Lists come only to nodes whose packs ask for them; the simulated
                    // stations send packs of the first version.
                    Ok(Downlink::Acks { .. }) | Err(_) => continue,
                },
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                Ok(_) => continue,
                Err(e) => Heard::Failed(explain(&e, &host, port)),
            };
            let failed = matches!(event, Heard::Failed(_));
            if heard_tx.send(event).is_err() || failed {
                return;
            }
        }
    });
    // Nothing is sent before the broker has let the station in, so that a refused or failed
    // connection is reported with its cause.
    match tokio::time::timeout(Duration::from_secs(10), heard.recv()).await {
        Ok(Some(Heard::Connected)) => {}
        Ok(Some(Heard::Failed(e))) => return Err(e),
        Ok(Some(Heard::Answer(_)) | None) | Err(_) => anyhow::bail!("{}:{}: no CONNACK in 10 s", opts.host, opts.port),
    }
    client.subscribe(Topic(&station.id).to_string(), QoS::AtLeastOnce).await?;

    let mut report = SimReport::default();
    let count = |heard: Heard, report: &mut SimReport| -> anyhow::Result<()> {
        match heard {
            Heard::Answer(Downlink::Ack { readings, .. }) => {
                report.stored += 1;
                report.readings += u64::from(readings);
                progress.stored.fetch_add(1, Ordering::Relaxed);
            }
            Heard::Answer(Downlink::Refused { .. }) => {
                report.refused += 1;
                progress.refused.fetch_add(1, Ordering::Relaxed);
            }
            // Not passed on by the driver above.
            Heard::Answer(Downlink::Acks { .. }) | Heard::Connected => {}
            Heard::Failed(e) => return Err(e),
        }
        Ok(())
    };
    let publish = |pack: Vec<u8>, report: &mut SimReport| {
        report.packs += 1;
        report.bytes += pack.len() as u64;
        progress.packs.fetch_add(1, Ordering::Relaxed);
        client.publish(&topic, QoS::AtLeastOnce, false, pack)
    };

    let step = opts.interval.as_secs_f64().max(0.001);
    let now = now_secs();
    let backlog: Vec<f64> = {
        let count = (opts.history.as_secs_f64() / step) as usize;
        (0..count).map(|i| ((now - opts.history.as_secs_f64() + i as f64 * step) * 1000.0).round() / 1000.0).collect()
    };
    for chunk in backlog.chunks(opts.batch.max(1)) {
        // As a node does: a bounded window of packs waiting for their answers, which also
        // keeps the answers within the broker's bound on each downlink's backlog.
        while report.unanswered() >= WINDOW {
            match tokio::time::timeout(opts.answer_timeout, heard.recv()).await {
                Ok(Some(h)) => count(h, &mut report)?,
                Ok(None) => anyhow::bail!("{}: the connection ended", station.id),
                Err(_) => anyhow::bail!(
                    "{}: no answer from the platform for {} s to {} packs in flight",
                    station.id,
                    opts.answer_timeout.as_secs(),
                    report.unanswered()
                ),
            }
        }
        let (pack, _) = station.pack(chunk)?;
        publish(pack, &mut report).await?;
        while let Ok(h) = heard.try_recv() {
            count(h, &mut report)?;
        }
    }
    let started = tokio::time::Instant::now();
    // Readings of one station never share a millisecond, even at a 1 ms interval.
    let mut last_t = backlog.last().copied().unwrap_or(f64::MIN);
    let mut ticker = tokio::time::interval(opts.interval.max(Duration::from_millis(1)));
    // When the machine cannot keep up, publish late rather than in a burst of equal times.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !*stop.borrow() {
        tokio::select! {
            _ = ticker.tick() => {}
            Ok(()) = stop.changed() => break,
        }
        if opts.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let t = ((now_secs() * 1000.0).round() / 1000.0).max(last_t + 0.001);
        last_t = t;
        let (pack, _) = station.pack(&[t])?;
        publish(pack, &mut report).await?;
        while let Ok(h) = heard.try_recv() {
            count(h, &mut report)?;
        }
    }
    // The answers to the last packs come once they are on disk.
    let deadline = tokio::time::Instant::now() + opts.answer_timeout;
    while report.unanswered() > 0 {
        match tokio::time::timeout_at(deadline, heard.recv()).await {
            Ok(Some(h)) => count(h, &mut report)?,
            Ok(None) | Err(_) => break,
        }
    }
    client.disconnect().await?;
    driver.await.context("mqtt driver task failed")?;
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
    fn the_flood_scenario_crosses_the_example_rules_and_comes_back() {
        let mut water = Station::new("t-", 0, 9).in_flood(NOON_ICT, 5.0);
        let levels: Vec<(f64, f64)> =
            (0..60).map(|i| (i as f64 * 5.0, water.sample(NOON_ICT + i as f64 * 5.0)[0].2)).collect();
        let above: Vec<f64> = levels.iter().filter(|(_, l)| *l > 300.0).map(|(e, _)| *e).collect();
        // Above hau-flood's 300 cm for over 30 s (it fires), then below 290 cm (it clears).
        assert!(above.len() >= 10 && above.last().unwrap() - above[0] >= 60.0, "{levels:?}");
        assert!(levels.iter().all(|(_, l)| *l < 330.0));
        assert!(levels.iter().filter(|(e, _)| *e >= 130.0).all(|(_, l)| *l < 290.0), "{levels:?}");
        let mut air = Station::new("t-", 2, 9).in_flood(NOON_ICT, 5.0);
        let rain = |e: f64, air: &mut Station| air.sample(NOON_ICT + e)[4];
        assert_eq!(rain(80.0, &mut air).0, "rainfall");
        assert!(rain(80.0, &mut air).2 > 0.05 && rain(200.0, &mut air).2 == 0.0);
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

    #[test]
    fn the_demo_fleet_stands_in_can_tho_each_station_in_its_own_place() {
        let places: Vec<_> = (0..30).map(place).collect();
        for (name, lat, lon) in &places {
            assert!((9.95..10.15).contains(lat) && (105.7..105.9).contains(lon), "{name} {lat} {lon}");
        }
        let distinct: std::collections::BTreeSet<_> =
            places.iter().map(|(_, lat, lon)| format!("{lat:.4} {lon:.4}")).collect();
        assert_eq!(distinct.len(), places.len());

        let directory = mekong_api::directory::Directory::default();
        let opts = SimOptions { devices: 4, ..SimOptions::default() };
        place_fleet(&directory, &opts);
        let profiles = directory.snapshot();
        let water = &profiles["sim-water-000"];
        assert_eq!(water.kind, DeviceKind::Water);
        assert_eq!(water.name.as_deref(), Some("Ninh Kieu wharf, Hau river"));
        assert_eq!(profiles.len(), 4);
    }
}
