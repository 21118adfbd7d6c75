//! The mekong node image for QEMU's mps2-an386 board (Cortex-M4): the real node logic with
//! simulated sensors, the console on UART0 and the MQTT byte stream on UART1.
//!
//! Under QEMU, UART1 is connected to the broker's TCP port (a `-chardev socket` given to the
//! second `-serial`, directly or through the end-to-end test's bridge), standing in for the
//! transparent-mode cellular modem a field node has on that UART. See `scripts/qemu_e2e.py`.
//!
//! Besides the field node's status lines, the console shows every sample as it is taken
//! (`sample up=<uptime ms> <metric>=<value>`) and as it goes into a pack with the time the
//! platform will store it at (`packed up=<uptime ms> t=<epoch ms> <metric>=<value>`), so a
//! test can check the platform's copy of every reading.
#![no_std]
#![no_main]

mod uart;

use core::cell::Cell;
use core::fmt::Write as _;
use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use mekong_board_support::{config_page, halt, stack_peak};
use mekong_node::console;
use mekong_node::drivers::modbus::LevelTransducer;
use mekong_node::drivers::traffic::{LoopConfig, LoopPair};
use mekong_node::node::{Node, Settings};
use mekong_node::provision;
use mekong_node::schedule::Schedule;
use mekong_node::seal::Mac0;
use mekong_node::seq::RamStore;
use mekong_node::sim::{SimLevel, SimLoop, SimPms};
use mekong_node::station::Station;
use panic_halt as _;

use uart::Uart;

/// mps2-an386's system clock, which drives SysTick (QEMU's `mps2` model: 25 MHz).
const SYSCLK_HZ: u32 = 25_000_000;
const TICKS_PER_MS: u32 = SYSCLK_HZ / 1000;

/// A simulated node runs faster than a field node, so the end-to-end test sees
/// acknowledgements, an outage and the recovery within a minute: it publishes every 5 s rather
/// than every minute, resends after 10 s, notices a dead link after 3 s of silence plus
/// 3 s without a PINGRESP (keep-alive 6 s), and waits at most 30 s between refused logins.
const SETTINGS: Settings = Settings {
    publish_every_ms: 5_000,
    ack_timeout_ms: 10_000,
    max_records: 16,
    max_in_flight: mekong_node::node::WINDOW,
    keepalive_s: 6,
    answer_timeout_ms: 3_000,
    retry_ms: 2_000,
    refused_max_ms: 30_000,
};

static MILLIS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    MILLIS.fetch_add(1, Ordering::Relaxed);
}

/// Milliseconds since boot, widened past the 49-day wrap of the 32-bit counter.
struct Uptime {
    last: u32,
    high: u64,
}

impl Uptime {
    fn now(&mut self) -> u64 {
        let m = MILLIS.load(Ordering::Relaxed);
        if m < self.last {
            self.high += 1 << 32;
        }
        self.last = m;
        self.high + u64::from(m)
    }
}

/// SysTick cycles since boot: for measuring, not for time keeping.
fn cycles() -> u64 {
    loop {
        let ms = MILLIS.load(Ordering::Relaxed);
        let cvr = cortex_m::peripheral::SYST::get_current();
        if MILLIS.load(Ordering::Relaxed) == ms {
            return u64::from(ms) * u64::from(TICKS_PER_MS) + u64::from(TICKS_PER_MS - 1 - cvr);
        }
    }
}

/// Delay for the Modbus driver: busy-waits on the uptime clock's cycle counter.
struct Delay;

impl embedded_hal::delay::DelayNs for Delay {
    fn delay_ns(&mut self, ns: u32) {
        let until = cycles() + u64::from(ns) * u64::from(SYSCLK_HZ / 1_000_000) / 1000;
        while cycles() < until {}
    }
}

/// How long one pack of `n` water-level readings takes to encode, averaged over 100
/// encodings (printed at boot: the figure in README.md).
fn bench_encode(console: &mut Uart, n: usize) {
    use mekong_schema::senml::{encode_pack, Base, Reading};
    let mut readings = [Reading { name: "water_level", unit: Some("cm"), value: 0.0, time: 0.0 }; 16];
    for (i, r) in readings.iter_mut().enumerate().take(n) {
        r.value = 182.5 + i as f64 * 0.3;
        r.time = -60.0 * (n - 1 - i) as f64;
    }
    let base = Base { name: None, time: Some(1_790_000_000.0), unit: Some("cm") };
    let mut out = [0u8; 768];
    let rounds = 100u64;
    let start = cycles();
    let mut len = 0;
    for _ in 0..rounds {
        len = encode_pack(&mut out, &base, &readings[..n]).unwrap_or(0);
    }
    let ticks = cycles() - start;
    // Virtual nanoseconds; under `-icount shift=0` QEMU counts one instruction per virtual
    // nanosecond, so this is the instruction count.
    let ns = ticks * 1_000_000_000 / u64::from(SYSCLK_HZ) / rounds;
    let _ = writeln!(console, "bench: encode {n} readings = {len} bytes, {ns} virtual ns per pack");

    let mut sealer = Mac0::new([0x5a; 32], "hau-ninh-kieu-01");
    let mut sealed = [0u8; 768 + mekong_schema::cose::MAX_OVERHEAD];
    let mut sealed_len = 0;
    let start = cycles();
    for seq in 0..rounds {
        sealed_len = mekong_node::seal::Sealer::seal(&mut sealer, seq, &out[..len], &mut sealed).unwrap_or(0);
    }
    let ticks = cycles() - start;
    let ns = ticks * 1_000_000_000 / u64::from(SYSCLK_HZ) / rounds;
    let _ = writeln!(console, "bench: seal {len} bytes = {sealed_len} bytes, {ns} virtual ns per pack");
}

#[entry]
fn main() -> ! {
    let Some(mut cp) = cortex_m::Peripherals::take() else { halt() };
    cp.SYST.set_clock_source(SystClkSource::Core);
    cp.SYST.set_reload(TICKS_PER_MS - 1);
    cp.SYST.clear_current();
    cp.SYST.enable_counter();
    cp.SYST.enable_interrupt();

    // SAFETY: the CMSDK UARTs of mps2-an386 at their documented addresses, each owned once.
    let mut console = unsafe { Uart::new(uart::UART0) };
    let mut link = unsafe { Uart::new(uart::UART1) };
    let _ = writeln!(console, "mekong node {} (mps2-an386)", env!("CARGO_PKG_VERSION"));

    let prov = match provision::read(config_page()) {
        Ok(p) => p,
        Err(e) => {
            let _ = console::config_error(&mut console, &e);
            halt();
        }
    };
    let _ = console::identity(&mut console, &prov);
    bench_encode(&mut console, 1);
    bench_encode(&mut console, 16);

    let mut uptime = Uptime { last: 0, high: 0 };
    let now0 = uptime.now();
    let sealer = Mac0::new(prov.key, prov.device_id);
    let Some(mut node) = Node::new(&prov, SETTINGS, sealer, RamStore::default(), now0) else {
        let _ = writeln!(console, "halted: sequence counter store failed");
        halt();
    };
    let p = prov.period_secs;
    let sim_time = Cell::new(now0);
    let level = LevelTransducer { slave: 1, register: 4, cm_per_count: 0.1, datum_cm: None };
    let mut station = Station::new(
        Schedule::new([p.air, p.water, p.traffic], now0),
        SimPms::new(&sim_time),
        SimLevel::new(&sim_time),
        level,
        Delay,
        SimLoop::new(&sim_time, false),
        SimLoop::new(&sim_time, true),
        LoopPair::new(LoopConfig::default()),
    );
    let _ = console::ram(&mut console, core::mem::size_of_val(&node), core::mem::size_of_val(&station));
    let _ = writeln!(console, "connecting to the broker on UART1 as {}", node.uplink_topic());

    let mut next_status = now0 + 60_000;
    loop {
        let now = uptime.now();
        sim_time.set(now);
        station.poll(now, |metric, value, at| {
            let _ = writeln!(console, "sample up={at} {}={}", metric.name(), console::Value(value));
            node.record(metric, value, at);
        });
        let polled = node.poll(&mut link, now, |s, t| {
            let _ = writeln!(console, "packed up={} t={t} {}={}", s.at_ms, s.metric.name(), console::Value(s.value));
        });
        match polled {
            Ok(Some(report)) => {
                let _ = console::report(&mut console, now, &report);
            }
            Ok(None) => {}
            Err(_) => {
                let _ = writeln!(console, "[{now}] link error");
            }
        }
        if now >= next_status {
            next_status = now + 60_000;
            let _ = console::status(
                &mut console,
                now,
                node.backlog(),
                &node.outbox_stats(),
                &station.stats(),
                stack_peak(),
            );
        }
        // Sleep to the next tick: under `-icount`, QEMU lets virtual time follow real time
        // while the core sleeps, so keep-alives match the broker's clock.
        cortex_m::asm::wfi();
    }
}
