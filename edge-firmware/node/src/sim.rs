//! Simulated parts for QEMU and host tests: they speak the real wire formats (PMS5003 frames,
//! Modbus RTU replies, loop detector levels), so the real drivers parse them, and they
//! misbehave on purpose (corrupted frames, exceptions, bad CRCs) at fixed intervals, so the
//! bad-frame paths run too. Deterministic: everything follows the shared simulated time.

use core::cell::Cell;
use core::convert::Infallible;

use embedded_hal::digital::{ErrorType as PinErrorType, InputPin};
use embedded_io::{ErrorType, Read, ReadReady, Write};

use crate::crc::crc16_modbus;
use crate::drivers::pms5003::{build_frame, FRAME_LEN};

/// A triangle wave between 0 and 1 with the given period, ms: daily and tidal cycles without
/// floating-point `sin` (no libm in a no_std image).
fn triangle(t_ms: u64, period_ms: u64) -> f64 {
    let phase = (t_ms % period_ms) as f64 / period_ms as f64;
    if phase < 0.5 {
        phase * 2.0
    } else {
        2.0 - phase * 2.0
    }
}

/// A small deterministic hash for jitter.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

/// A PMS5003 streaming one frame a second; every 7th frame has a broken check code.
#[derive(Debug)]
pub struct SimPms<'t> {
    now: &'t Cell<u64>,
    next_ms: u64,
    frame: [u8; FRAME_LEN],
    at: usize,
    sent: u32,
}

impl<'t> SimPms<'t> {
    /// A sensor following the simulated time `now` (ms).
    pub fn new(now: &'t Cell<u64>) -> Self {
        Self { now, next_ms: 0, frame: [0; FRAME_LEN], at: FRAME_LEN, sent: 0 }
    }
}

impl ErrorType for SimPms<'_> {
    type Error = Infallible;
}

impl ReadReady for SimPms<'_> {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        let now = self.now.get();
        if self.at == FRAME_LEN && now >= self.next_ms {
            // PM2.5 from 12 to 62 µg/m³ over a day; PM10 about 1.4 times that.
            let pm25 = 12 + (50.0 * triangle(now, 86_400_000)) as u16;
            let pm10 = pm25 + pm25 * 2 / 5;
            self.frame =
                build_frame([pm25 + 3, pm25 + 5, pm10 + 6], [pm25 - 3, pm25, pm10], [3000, 900, 150, 12, 3, 1]);
            self.sent += 1;
            if self.sent % 7 == 0 {
                self.frame[31] ^= 0x5A;
            }
            self.at = 0;
            self.next_ms = now + 1_000;
        }
        Ok(self.at < FRAME_LEN)
    }
}

impl Read for SimPms<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let n = buf.len().min(FRAME_LEN - self.at);
        buf[..n].copy_from_slice(&self.frame[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// A pressure level transducer at Modbus address 1, level in mm in register 4, following a
/// 12 h 25 min tide between 1.2 and 2.4 m. Every 11th reply has a bad CRC and every 13th is
/// exception 4 (slave device failure).
#[derive(Debug)]
pub struct SimLevel<'t> {
    now: &'t Cell<u64>,
    request: [u8; 8],
    got: usize,
    reply: [u8; 16],
    reply_len: usize,
    at: usize,
    replies: u32,
}

impl<'t> SimLevel<'t> {
    /// A transducer following the simulated time `now` (ms).
    pub fn new(now: &'t Cell<u64>) -> Self {
        Self { now, request: [0; 8], got: 0, reply: [0; 16], reply_len: 0, at: 0, replies: 0 }
    }

    fn answer(&mut self) {
        let r = self.request;
        if r[0] != 1 || crc16_modbus(&r[..6]).to_le_bytes() != [r[6], r[7]] {
            return; // not for us, or garbled: a real slave stays silent
        }
        self.replies += 1;
        let body: &[u8] = if self.replies % 13 == 0 {
            &[1, 0x83, 0x04]
        } else {
            let mm = 1200 + (1200.0 * triangle(self.now.get(), 44_700_000)) as u16;
            let v = mm.to_be_bytes();
            &[1, 0x03, 0x02, v[0], v[1]]
        };
        let n = body.len();
        self.reply[..n].copy_from_slice(body);
        let crc = crc16_modbus(&self.reply[..n]).to_le_bytes();
        self.reply[n..n + 2].copy_from_slice(&crc);
        if self.replies % 11 == 0 {
            self.reply[n] ^= 0xFF;
        }
        self.reply_len = n + 2;
        self.at = 0;
    }
}

impl ErrorType for SimLevel<'_> {
    type Error = Infallible;
}

impl Write for SimLevel<'_> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        for &b in buf {
            if self.got < 8 {
                self.request[self.got] = b;
                self.got += 1;
            }
            if self.got == 8 {
                self.got = 0;
                self.answer();
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

impl ReadReady for SimLevel<'_> {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(self.at < self.reply_len)
    }
}

impl Read for SimLevel<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let n = buf.len().min(self.reply_len - self.at);
        buf[..n].copy_from_slice(&self.reply[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Traffic over a loop pair 4 m apart: a vehicle every 2 to 3 s at 25 to 55 km/h, each
/// over a loop for 150 ms. One output per loop.
#[derive(Debug, Clone, Copy)]
pub struct SimLoop<'t> {
    now: &'t Cell<u64>,
    downstream: bool,
}

const HEADWAY_MS: u64 = 2_000;
const OCCUPANCY_MS: u64 = 150;

impl<'t> SimLoop<'t> {
    /// Loop A (`downstream = false`) or B, following the simulated time `now` (ms).
    pub fn new(now: &'t Cell<u64>, downstream: bool) -> Self {
        Self { now, downstream }
    }

    /// When vehicle `i` reaches this loop, ms.
    fn arrival(&self, i: u64) -> u64 {
        let h = mix(i);
        let start = i * HEADWAY_MS + h % 1_000;
        if self.downstream {
            let kmh = 25 + (h >> 16) % 31;
            start + 4_000 * 36 / (kmh * 10) // 4 m at kmh: 4 / (kmh / 3.6) s
        } else {
            start
        }
    }
}

impl PinErrorType for SimLoop<'_> {
    type Error = Infallible;
}

impl InputPin for SimLoop<'_> {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        let now = self.now.get();
        let k = now / HEADWAY_MS;
        Ok((k.saturating_sub(1)..=k).any(|i| {
            let t = self.arrival(i);
            t <= now && now < t + OCCUPANCY_MS
        }))
    }
    fn is_low(&mut self) -> Result<bool, Infallible> {
        self.is_high().map(|h| !h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::modbus::LevelTransducer;
    use crate::drivers::traffic::{LoopConfig, LoopPair};
    use crate::sample::Metric;
    use crate::schedule::Schedule;
    use crate::station::Station;

    struct Tick(u64);
    impl embedded_hal::delay::DelayNs for Tick {
        fn delay_ns(&mut self, ns: u32) {
            self.0 += u64::from(ns);
        }
    }

    #[test]
    fn an_hour_of_a_simulated_station_through_the_real_drivers() {
        let now = Cell::new(0u64);
        let level = LevelTransducer { slave: 1, register: 4, cm_per_count: 0.1, datum_cm: None };
        let mut st = Station::new(
            Schedule::new([30, 60, 60], 0),
            SimPms::new(&now),
            SimLevel::new(&now),
            level,
            Tick(0),
            SimLoop::new(&now, false),
            SimLoop::new(&now, true),
            LoopPair::new(LoopConfig::default()),
        );
        let mut got: std::vec::Vec<(Metric, f64)> = std::vec::Vec::new();
        for ms in 0..3_600_000u64 {
            now.set(ms);
            st.poll(ms, |m, v, _| got.push((m, v)));
        }
        let count = |m: Metric| got.iter().filter(|(g, _)| *g == m).count();
        // The last slot (at 3,600,000 ms) is just past the hour.
        assert_eq!(count(Metric::Pm2_5), 119, "every 30 s");
        assert!(count(Metric::WaterLevel) >= 50 && count(Metric::WaterLevel) < 59, "59 minus the bad replies");
        assert_eq!(count(Metric::VehicleCount), 59);
        let s = st.stats();
        assert!(s.air.bad > 400, "every 7th frame is corrupt: {s:?}");
        assert_eq!(s.water.bad as usize, 59 - count(Metric::WaterLevel));
        for (m, v) in &got {
            match m {
                Metric::WaterLevel => assert!((120.0..=240.0).contains(v), "{v}"),
                Metric::VehicleCount => assert!((18.0..=31.0).contains(v), "{v}"),
                Metric::Speed => assert!((24.0..=56.0).contains(v), "{v}"),
                Metric::Pm2_5 => assert!((12.0..=62.0).contains(v), "{v}"),
                _ => {}
            }
        }
    }
}
