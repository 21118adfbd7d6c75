//! The uptime clock: RTC1 on the 32.768 kHz crystal, at 1024 ticks a second, whose tick
//! event also wakes the main loop from `wfi` about every millisecond.
//!
//! SysTick cannot do this on the nRF52: it counts core cycles, and the core clock stops in
//! `wfi`. The RTC's 24-bit counter wraps every 4.5 hours at this rate; [`Uptime::now`]
//! widens it, which holds as long as it is read at least once a wrap (the loop reads it
//! every tick).

use nrf52840_hal::pac::{interrupt, NVIC, RTC1};
use nrf52840_hal::rtc::{Rtc, RtcInterrupt};

/// RTC prescaler: 32768 / (31 + 1) = 1024 ticks a second.
const PRESCALER: u32 = 31;
const TICKS_PER_S: u64 = 1024;
const WRAP: u64 = 1 << 24;

/// Milliseconds since boot.
pub struct Uptime {
    rtc: Rtc<RTC1>,
    last: u32,
    high: u64,
}

impl Uptime {
    /// Starts RTC1 and its tick interrupt. The low-frequency clock must be running.
    pub fn start(rtc1: RTC1, nvic: &mut NVIC) -> Option<Self> {
        let mut rtc = Rtc::new(rtc1, PRESCALER).ok()?;
        rtc.enable_event(RtcInterrupt::Tick);
        rtc.enable_interrupt(RtcInterrupt::Tick, Some(nvic));
        rtc.enable_counter();
        Some(Self { rtc, last: 0, high: 0 })
    }

    /// Milliseconds since the clock started.
    pub fn now(&mut self) -> u64 {
        let c = self.rtc.get_counter();
        if c < self.last {
            self.high += WRAP;
        }
        self.last = c;
        (self.high + u64::from(c)) * 1000 / TICKS_PER_S
    }
}

/// The tick only wakes the core; the handler clears it.
#[interrupt]
fn RTC1() {
    // SAFETY: a write of 0 to RTC1's EVENTS_TICK register, which nothing else writes; the
    // `Rtc` value owned by `Uptime` only reads the counter.
    unsafe { (*RTC1::ptr()).events_tick.write(|w| w) };
}
