//! The sensors of one station, sampled on the schedule of its config page.
//!
//! Generic over the ports, so a board wires real UARTs and pins and QEMU wires the simulated
//! parts of [`crate::sim`]; the drivers and the schedule are the same code either way.

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::InputPin;
use embedded_io::{Read, ReadReady, Write};

use crate::drivers::modbus::{LevelTransducer, ModbusMaster};
use crate::drivers::pms5003::{Pms5003, PmsReading};
use crate::drivers::traffic::LoopPair;
use crate::drivers::FrameStats;
use crate::sample::Metric;
use crate::schedule::{Schedule, Sensor};

/// A particulate reading older than this at sampling time is stale (the sensor stopped).
const PMS_FRESH_MS: u64 = 5_000;

/// The station's ports and drivers.
#[derive(Debug)]
pub struct Station<P, M, D, A, B> {
    /// Sampling schedule.
    pub schedule: Schedule,
    /// PMS5003 UART.
    pub pms_port: P,
    /// PMS5003 parser.
    pub pms: Pms5003,
    /// RS-485 port of the Modbus line.
    pub modbus_port: M,
    /// Modbus master.
    pub modbus: ModbusMaster,
    /// The level transducer on it.
    pub level: LevelTransducer,
    /// Delay for Modbus timing.
    pub delay: D,
    /// Loop A output.
    pub loop_a: A,
    /// Loop B output.
    pub loop_b: B,
    /// Loop pair counter.
    pub loops: LoopPair,
    latest_pms: Option<(PmsReading, u64)>,
}

/// Bad frames per sensor, for the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StationStats {
    /// PMS5003 frames.
    pub air: FrameStats,
    /// Modbus replies.
    pub water: FrameStats,
    /// Loop pairings.
    pub traffic: FrameStats,
}

impl<P, M, D, A, B> Station<P, M, D, A, B>
where
    P: Read + ReadReady,
    M: Read + Write + ReadReady,
    D: DelayNs,
    A: InputPin,
    B: InputPin<Error = A::Error>,
{
    /// A station.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        schedule: Schedule,
        pms_port: P,
        modbus_port: M,
        level: LevelTransducer,
        delay: D,
        loop_a: A,
        loop_b: B,
        loops: LoopPair,
    ) -> Self {
        Self {
            schedule,
            pms_port,
            pms: Pms5003::new(),
            modbus_port,
            modbus: ModbusMaster::default(),
            level,
            delay,
            loop_a,
            loop_b,
            loops,
            latest_pms: None,
        }
    }

    /// Bad and good frames per sensor.
    pub fn stats(&self) -> StationStats {
        StationStats { air: self.pms.stats(), water: self.modbus.stats(), traffic: self.loops.stats() }
    }

    /// Call every millisecond: follows the streaming sensors, and samples those due, handing
    /// each sample to `record(metric, value, uptime_ms)`.
    pub fn poll(&mut self, now_ms: u64, mut record: impl FnMut(Metric, f64, u64)) {
        if self.schedule.fitted(Sensor::Air) {
            if let Ok(Some(r)) = self.pms.poll(&mut self.pms_port) {
                self.latest_pms = Some((r, now_ms));
            }
        }
        if self.schedule.fitted(Sensor::Traffic) {
            // A pin read error loses one poll; the next one sees the level again.
            let _ = self.loops.poll(&mut self.loop_a, &mut self.loop_b, now_ms * 1000);
        }
        let Some(sensor) = self.schedule.due(now_ms) else { return };
        match sensor {
            Sensor::Air => {
                if let Some((r, at)) = self.latest_pms.take() {
                    if now_ms.saturating_sub(at) <= PMS_FRESH_MS {
                        record(Metric::Pm2_5, f64::from(r.pm2_5), at);
                        record(Metric::Pm10, f64::from(r.pm10), at);
                    }
                }
            }
            Sensor::Water => {
                // A failed read is counted by the driver and gives no reading.
                if let Ok(cm) = self.level.read(&mut self.modbus, &mut self.modbus_port, &mut self.delay) {
                    record(Metric::WaterLevel, tenths(cm), now_ms);
                }
            }
            Sensor::Traffic => {
                let w = self.loops.take_window(self.schedule.period_ms(Sensor::Traffic) * 1000);
                record(Metric::VehicleCount, tenths(w.vehicles_per_min), now_ms);
                if let Some(kmh) = w.mean_kmh {
                    record(Metric::Speed, tenths(kmh), now_ms);
                }
            }
        }
    }
}

/// Rounds to one decimal, half away from zero (`f64::round` needs std): a sensor's
/// resolution, and a shorter value on the wire.
fn tenths(x: f64) -> f64 {
    let scaled = x * 10.0 + if x < 0.0 { -0.5 } else { 0.5 };
    (scaled as i64) as f64 / 10.0
}
