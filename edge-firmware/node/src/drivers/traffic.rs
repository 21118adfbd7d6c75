//! Traffic counter on a pair of inductive loops (or any pulse detector): vehicles per minute
//! from the rising edges of the first loop, and speed from the time between a vehicle's
//! rising edge on loop A and on loop B, a known distance downstream.
//!
//! The loop detector card gives one digital output per loop, high while a vehicle is over
//! it. The driver samples both outputs through `embedded-hal` input pins (the board polls at
//! 1 kHz or better, or feeds edges from a capture interrupt to [`LoopPair::edge`]), pairs
//! each A edge with the next B edge, and refuses pairings that cannot be a vehicle (too fast,
//! too slow, B without A), counting them as bad.

use embedded_hal::digital::InputPin;

use super::FrameStats;

/// Which loop an edge came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loop {
    /// The upstream loop: its rising edges count vehicles.
    A,
    /// The downstream loop.
    B,
}

/// Installation of the loop pair.
#[derive(Debug, Clone, Copy)]
pub struct LoopConfig {
    /// Distance between the leading edges of the two loops, metres.
    pub distance_m: f64,
    /// Speeds above this are refused as mismatched edges, km/h.
    pub max_kmh: f64,
    /// An A edge with no B edge within this time is a vehicle that changed lane or a
    /// motorbike that missed loop B: it counts, but gives no speed. Microseconds.
    pub max_gap_us: u64,
}

impl Default for LoopConfig {
    fn default() -> Self {
        // 4 m between loops; 1.5 s covers 9.6 km/h, slower than a motorbike in a jam.
        Self { distance_m: 4.0, max_kmh: 200.0, max_gap_us: 1_500_000 }
    }
}

/// What one counting window gives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrafficWindow {
    /// Vehicles per minute (`vehicle_count`, unit `/min`).
    pub vehicles_per_min: f64,
    /// Mean speed of the timed vehicles (`speed`, km/h); `None` when none was timed.
    pub mean_kmh: Option<f64>,
    /// Vehicles counted in the window.
    pub vehicles: u32,
}

/// Counts and times vehicles on a loop pair.
#[derive(Debug)]
pub struct LoopPair {
    config: LoopConfig,
    last_a: bool,
    last_b: bool,
    pending_a: Option<u64>,
    vehicles: u32,
    timed: u32,
    kmh_sum: f64,
    stats: FrameStats,
}

impl LoopPair {
    /// A pair with no vehicle seen yet.
    pub fn new(config: LoopConfig) -> Self {
        Self {
            config,
            last_a: false,
            last_b: false,
            pending_a: None,
            vehicles: 0,
            timed: 0,
            kmh_sum: 0.0,
            stats: FrameStats::default(),
        }
    }

    /// Timed vehicles (good) and refused pairings (bad) so far.
    pub fn stats(&self) -> FrameStats {
        self.stats
    }

    /// Samples both loop outputs at `now_us` and handles their rising edges.
    pub fn poll<A, B>(&mut self, a: &mut A, b: &mut B, now_us: u64) -> Result<(), A::Error>
    where
        A: InputPin,
        B: InputPin<Error = A::Error>,
    {
        let (ha, hb) = (a.is_high()?, b.is_high()?);
        if ha && !self.last_a {
            self.edge(Loop::A, now_us);
        }
        if hb && !self.last_b {
            self.edge(Loop::B, now_us);
        }
        self.last_a = ha;
        self.last_b = hb;
        Ok(())
    }

    /// One rising edge at `at_us` (from polling or a capture interrupt).
    pub fn edge(&mut self, which: Loop, at_us: u64) {
        match which {
            Loop::A => {
                self.vehicles = self.vehicles.saturating_add(1);
                // A vehicle still pending never reached B: counted, not timed.
                self.pending_a = Some(at_us);
            }
            Loop::B => {
                let Some(t_a) = self.pending_a.take() else {
                    // B without A: a vehicle straddling the lanes, or a glitch.
                    self.stats.bad();
                    return;
                };
                let dt_us = at_us.saturating_sub(t_a);
                if dt_us == 0 || dt_us > self.config.max_gap_us {
                    self.stats.bad();
                    return;
                }
                let kmh = self.config.distance_m / (dt_us as f64 / 1e6) * 3.6;
                if kmh > self.config.max_kmh {
                    self.stats.bad();
                    return;
                }
                self.stats.good();
                self.timed += 1;
                self.kmh_sum += kmh;
            }
        }
    }

    /// Closes the window that ends at `now_us` and starts the next one.
    /// `window_us` is the sampling period, so a window with no vehicle still reads 0/min.
    pub fn take_window(&mut self, window_us: u64) -> TrafficWindow {
        let minutes = window_us as f64 / 60e6;
        let w = TrafficWindow {
            vehicles_per_min: if minutes > 0.0 { f64::from(self.vehicles) / minutes } else { 0.0 },
            mean_kmh: (self.timed > 0).then(|| self.kmh_sum / f64::from(self.timed)),
            vehicles: self.vehicles,
        };
        self.vehicles = 0;
        self.timed = 0;
        self.kmh_sum = 0.0;
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::convert::Infallible;

    /// A loop output: high during the given (start, end) intervals, in µs.
    struct Wave<'a>(&'a [(u64, u64)], &'a core::cell::Cell<u64>);
    impl embedded_hal::digital::ErrorType for Wave<'_> {
        type Error = Infallible;
    }
    impl InputPin for Wave<'_> {
        fn is_high(&mut self) -> Result<bool, Infallible> {
            let now = self.1.get();
            Ok(self.0.iter().any(|&(s, e)| s <= now && now < e))
        }
        fn is_low(&mut self) -> Result<bool, Infallible> {
            self.is_high().map(|h| !h)
        }
    }

    #[test]
    fn speed_from_two_loops_polled_at_1_khz() {
        // Three motorbikes at 36 km/h (10 m/s: 400 ms from A to B over 4 m), one car at
        // 72 km/h (200 ms); each occupies a loop for 150 ms.
        let a = [(1_000_000, 1_150_000), (5_000_000, 5_150_000), (9_000_000, 9_150_000), (20_000_000, 20_150_000)];
        let b = [(1_400_000, 1_550_000), (5_400_000, 5_550_000), (9_400_000, 9_550_000), (20_200_000, 20_350_000)];
        let now = core::cell::Cell::new(0);
        let (mut pa, mut pb) = (Wave(&a, &now), Wave(&b, &now));
        let mut pair = LoopPair::new(LoopConfig::default());
        for ms in 0..30_000u64 {
            now.set(ms * 1000);
            pair.poll(&mut pa, &mut pb, ms * 1000).unwrap();
        }
        let w = pair.take_window(30_000_000);
        assert_eq!(w.vehicles, 4);
        assert!((w.vehicles_per_min - 8.0).abs() < 1e-9, "4 in 30 s is 8/min");
        let mean = w.mean_kmh.unwrap();
        assert!((mean - (36.0 * 3.0 + 72.0) / 4.0).abs() < 1e-6, "{mean}");
        assert_eq!(pair.stats(), FrameStats { good: 4, bad: 0 });
        let empty = pair.take_window(60_000_000);
        assert_eq!((empty.vehicles, empty.vehicles_per_min, empty.mean_kmh), (0, 0.0, None));
    }

    #[test]
    fn impossible_pairings_are_counted_not_timed() {
        let mut pair = LoopPair::new(LoopConfig::default());
        pair.edge(Loop::B, 10); // B without A
        pair.edge(Loop::A, 1_000_000);
        pair.edge(Loop::B, 1_010_000); // 10 ms over 4 m: 1440 km/h
        pair.edge(Loop::A, 2_000_000);
        pair.edge(Loop::B, 9_000_000); // 7 s: too slow to be the same vehicle
        pair.edge(Loop::A, 10_000_000); // counted, never reaches B
        let w = pair.take_window(60_000_000);
        assert_eq!(w.vehicles, 3);
        assert_eq!(w.mean_kmh, None);
        assert_eq!(pair.stats(), FrameStats { good: 0, bad: 3 });
    }
}
