//! When each sensor is due: fixed periods from the config page, on the uptime clock.
//!
//! A node that falls behind (a long modem call, a debugger halt) samples once and moves on
//! rather than catching up with a burst of readings no one asked for.

/// The sensors a node may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sensor {
    /// Particulate sensor (PMS5003).
    Air,
    /// Water-level transducer (Modbus RTU).
    Water,
    /// Loop-pair traffic counter.
    Traffic,
}

const SENSORS: [Sensor; 3] = [Sensor::Air, Sensor::Water, Sensor::Traffic];

/// Next due time of each sensor.
#[derive(Debug, Clone)]
pub struct Schedule {
    period_ms: [u64; 3],
    next_ms: [u64; 3],
}

impl Schedule {
    /// Periods in seconds for air, water and traffic; 0 leaves that sensor out. Each sensor
    /// is first due one period after `now_ms`: a particulate sensor needs 30 s of fan time
    /// after power-up, and a counting window must be full.
    pub fn new(periods_s: [u16; 3], now_ms: u64) -> Self {
        let period_ms = periods_s.map(|p| u64::from(p) * 1000);
        Self { period_ms, next_ms: period_ms.map(|p| now_ms + p) }
    }

    /// Whether a sensor is fitted.
    pub fn fitted(&self, sensor: Sensor) -> bool {
        self.period_ms[sensor as usize] > 0
    }

    /// The period of a sensor, ms.
    pub fn period_ms(&self, sensor: Sensor) -> u64 {
        self.period_ms[sensor as usize]
    }

    /// The next sensor due at `now_ms`, if any, and books its next time.
    pub fn due(&mut self, now_ms: u64) -> Option<Sensor> {
        for (i, sensor) in SENSORS.into_iter().enumerate() {
            let period = self.period_ms[i];
            if period > 0 && now_ms >= self.next_ms[i] {
                let missed = (now_ms - self.next_ms[i]) / period;
                self.next_ms[i] += (missed + 1) * period;
                return Some(sensor);
            }
        }
        None
    }

    /// The earliest due time of any sensor (to sleep until it).
    pub fn next_due_ms(&self) -> Option<u64> {
        (0..3).filter(|&i| self.period_ms[i] > 0).map(|i| self.next_ms[i]).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_and_missed_slots() {
        let mut s = Schedule::new([10, 60, 0], 0);
        assert!(!s.fitted(Sensor::Traffic));
        assert_eq!(s.due(9_999), None);
        assert_eq!(s.due(10_000), Some(Sensor::Air));
        assert_eq!(s.due(10_000), None);
        assert_eq!(s.next_due_ms(), Some(20_000));
        // 55 s late: one air sample, not five; then water.
        assert_eq!(s.due(75_000), Some(Sensor::Air));
        assert_eq!(s.due(75_000), Some(Sensor::Water));
        assert_eq!(s.due(75_000), None);
        assert_eq!(s.next_due_ms(), Some(80_000));
    }
}
