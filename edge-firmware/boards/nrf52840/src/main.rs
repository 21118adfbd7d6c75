//! The mekong node image for the Nordic nRF52840 (e.g. the nRF52840-DK): the node logic of
//! `mekong-node`, the same `Node` and `Station` as the QEMU image, on real peripherals.
//!
//! - UARTE0 (115200 8N1, RTS/CTS): the MQTT byte stream to a modem or gateway in transparent
//!   TCP mode. The modem is configured beforehand to open a TCP connection to the broker and
//!   pass bytes through both ways; this firmware sends no AT commands (dial-up is out of
//!   scope). The node's MQTT session notices a dead link by its keep-alive and connects again.
//! - UARTE1 (9600 8N1): the station's serial sensor, either a PMS5003 or the RS-485
//!   transceiver of the Modbus level transducer with its DE pin (see `ports.rs`).
//! - Two GPIO inputs: the loop detector card's outputs, high while a vehicle is over a loop.
//! - RTC1: the uptime clock, whose tick wakes the main loop from `wfi` (`clock.rs`).
//! - NVMC: the config page (read) and the two-page sequence-number journal (`FlashJournal`:
//!   erase a page, write words), both where `memory.x` reserves them.
//! - RTT: the console (`probe-rs run` or `probe-rs attach` shows it); it never blocks, so a
//!   node with no probe attached runs the same.
//!
//! Pins are in the constants below and in README.md. Built and linted in CI; not yet run
//! on hardware.
#![no_std]
#![no_main]

mod clock;
mod ports;

use core::fmt::Write as _;

use cortex_m_rt::entry;
use embedded_io::ReadReady;
use mekong_board_support::{config_page, halt, stack_peak};
use mekong_node::console;
use mekong_node::drivers::modbus::LevelTransducer;
use mekong_node::drivers::traffic::{LoopConfig, LoopPair};
use mekong_node::node::{Node, Settings};
use mekong_node::provision;
use mekong_node::schedule::Schedule;
use mekong_node::seal::Mac0;
use mekong_node::seq::FlashJournal;
use mekong_node::station::Station;
use nrf52840_hal::clocks::{Clocks, LfOscConfiguration};
use nrf52840_hal::delay::Delay;
use nrf52840_hal::gpio::{p0, p1, Level};
use nrf52840_hal::nvmc::Nvmc;
use nrf52840_hal::pac;
use nrf52840_hal::uarte::{self, Baudrate, Parity, Uarte};
use panic_halt as _;
use rtt_target::{rtt_init, ChannelMode};

use clock::Uptime;
use ports::{Port, Rs485, Rx};

/// The level transducer on the RS-485 line: Modbus address 1, the level in holding register 4
/// in millimetres (0.1 cm a count), a pressure transducer (the reading is the level). The
/// same as the QEMU image's simulated one; change here for another model.
const LEVEL: LevelTransducer = LevelTransducer { slave: 1, register: 4, cm_per_count: 0.1, datum_cm: None };

/// Flash erase page (NVMC).
const PAGE: u32 = 4096;

/// The two sequence-journal pages, for the NVMC driver (which takes the area it may erase
/// and write as a slice, and offsets within it).
fn seq_pages() -> &'static mut [u8] {
    extern "C" {
        static mut _seq_start: u8;
        static mut _seq_end: u8;
    }
    // SAFETY: memory.x reserves [_seq_start, _seq_end) in flash for the journal, page-aligned
    // and two pages long; this is called once, so the slice is the only reference to it, and
    // the image's code and the config page lie outside it.
    unsafe {
        let start = core::ptr::addr_of_mut!(_seq_start);
        let len = (core::ptr::addr_of!(_seq_end) as usize).saturating_sub(start as usize);
        core::slice::from_raw_parts_mut(start, len)
    }
}

/// Turns the pull-up on for a UARTE's receive pin, so a line with nothing driving it (a
/// modem switched off, an RS-485 transceiver whose receiver is off while DE is high) reads
/// idle rather than noise. The HAL's UARTE pins are floating inputs.
fn pull_up(port: &pac::p0::RegisterBlock, pin: usize) {
    if let Some(cnf) = port.pin_cnf.get(pin) {
        cnf.modify(|_, w| w.pull().pullup());
    }
}

#[entry]
fn main() -> ! {
    let channels = rtt_init! {
        up: {
            0: { size: 1024, mode: ChannelMode::NoBlockSkip, name: "console" }
        }
    };
    let mut console = channels.up.0;
    let _ = writeln!(console, "mekong node {} (nrf52840)", env!("CARGO_PKG_VERSION"));

    let (Some(p), Some(mut cp)) = (pac::Peripherals::take(), pac::CorePeripherals::take()) else { halt() };
    // The crystal oscillators: HFXO for the UARTs' baud rates, LFXO (32.768 kHz, fitted on
    // the DK) for the RTC.
    let _clocks = Clocks::new(p.CLOCK)
        .enable_ext_hfosc()
        .set_lfclk_src_external(LfOscConfiguration::NoExternalNoBypass)
        .start_lfclk();
    let Some(mut uptime) = Uptime::start(p.RTC1, &mut cp.NVIC) else {
        let _ = writeln!(console, "halted: RTC1 would not start");
        halt();
    };

    let prov = match provision::read(config_page()) {
        Ok(pr) => pr,
        Err(e) => {
            let _ = console::config_error(&mut console, &e);
            halt();
        }
    };
    let _ = console::identity(&mut console, &prov);

    let pins0 = p0::Parts::new(p.P0);
    let pins1 = p1::Parts::new(p.P1);

    // UARTE0: the modem. P0.06 TXD, P0.08 RXD, P0.05 RTS, P0.07 CTS (on the DK, the interface
    // MCU's virtual COM port).
    let modem = Uarte::new(
        p.UARTE0,
        uarte::Pins {
            txd: pins0.p0_06.into_push_pull_output(Level::High).degrade(),
            rxd: pins0.p0_08.into_floating_input().degrade(),
            rts: Some(pins0.p0_05.into_push_pull_output(Level::High).degrade()),
            cts: Some(pins0.p0_07.into_floating_input().degrade()),
        },
        Parity::EXCLUDED,
        Baudrate::BAUD115200,
    );
    // UARTE1: the serial sensor. P1.02 TXD (PMS5003 RX, or the transceiver's DI), P1.01 RXD
    // (PMS5003 TX, or RO), P1.03 the transceiver's DE and /RE.
    let sensor = Uarte::new(
        p.UARTE1,
        uarte::Pins {
            txd: pins1.p1_02.into_push_pull_output(Level::High).degrade(),
            rxd: pins1.p1_01.into_floating_input().degrade(),
            rts: None,
            cts: None,
        },
        Parity::EXCLUDED,
        Baudrate::BAUD9600,
    );
    // SAFETY: P0 and P1 were split into their pins above; this touches only the pull of
    // P0.08 and P1.01, which now belong to the UARTEs and which nothing else configures.
    unsafe {
        pull_up(&*pac::P0::ptr(), 8);
        pull_up(&*pac::P1::ptr(), 1);
    }
    let de = pins1.p1_03.into_push_pull_output(Level::Low).degrade();
    // P1.04 and P1.05: loops A and B, pulled down (a relay output switches 3.3 V onto them).
    let loop_a = pins1.p1_04.into_pulldown_input().degrade();
    let loop_b = pins1.p1_05.into_pulldown_input().degrade();

    // EasyDMA buffers: the UARTEs can only move bytes to and from RAM.
    let (Some(modem_tx), Some(modem_rx), Some(sensor_tx), Some(sensor_rx)) = (
        cortex_m::singleton!(: [u8; 64] = [0; 64]),
        cortex_m::singleton!(: [u8; 1] = [0; 1]),
        cortex_m::singleton!(: [u8; 16] = [0; 16]),
        cortex_m::singleton!(: [u8; 1] = [0; 1]),
    ) else {
        halt()
    };
    let (Ok((mut link_tx, link_rx)), Ok((sensor_tx, sensor_rx))) =
        (modem.split(modem_tx, modem_rx), sensor.split(sensor_tx, sensor_rx))
    else {
        let _ = writeln!(console, "halted: UARTE buffers refused");
        halt();
    };
    let (mut link_rx, mut sensor_rx) = (Rx(link_rx), Rx(sensor_rx));
    // Start receiving now: the UARTE holds what arrives until it is read.
    let _ = link_rx.read_ready();
    let _ = sensor_rx.read_ready();

    let pr = prov.period_secs;
    let (pms_port, modbus_port) = match (pr.air > 0, pr.water > 0) {
        (true, true) => {
            let _ = writeln!(
                console,
                "config page fits both the PMS5003 and the level transducer; this board has one sensor UART"
            );
            let _ = writeln!(console, "halted: provision air or water on this node, not both");
            halt();
        }
        (true, false) => (Port(Some(sensor_rx)), Port(None)),
        (false, true) => (Port(None), Port(Some(Rs485::new(sensor_tx, sensor_rx, de)))),
        (false, false) => (Port(None), Port(None)),
    };

    let now0 = uptime.now();
    let journal = FlashJournal::new(Nvmc::new(p.NVMC, seq_pages()), [0, PAGE], PAGE);
    let sealer = Mac0::new(prov.key, prov.device_id);
    let Some(mut node) = Node::new(&prov, Settings::default(), sealer, journal, now0) else {
        let _ = writeln!(console, "halted: sequence counter store failed");
        halt();
    };
    let mut station = Station::new(
        Schedule::new([pr.air, pr.water, pr.traffic], now0),
        pms_port,
        modbus_port,
        LEVEL,
        Delay::new(cp.SYST),
        loop_a,
        loop_b,
        LoopPair::new(LoopConfig::default()),
    );
    let mut link = Link { tx: &mut link_tx, rx: &mut link_rx };
    let _ = console::ram(&mut console, core::mem::size_of_val(&node), core::mem::size_of_val(&station));
    let _ = writeln!(
        console,
        "connecting to the broker on UARTE0 as {} (the modem must be connected to {}:{})",
        node.uplink_topic(),
        prov.broker_host,
        prov.broker_port
    );

    let mut next_status = now0 + 60_000;
    loop {
        let now = uptime.now();
        station.poll(now, |metric, value, at| node.record(metric, value, at));
        match node.poll(&mut link, now, |_, _| {}) {
            Ok(Some(report)) => {
                let _ = console::report(&mut console, now, &report);
            }
            Ok(None) => {}
            Err(e) => {
                let _ = writeln!(console, "[{now}] link error: {e:?}");
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
        // Sleep to the next RTC tick (about 1 ms).
        cortex_m::asm::wfi();
    }
}

/// The modem's UARTE, both halves as one `embedded-io` port for the MQTT session.
struct Link<'a> {
    tx: &'a mut uarte::UarteTx<pac::UARTE0>,
    rx: &'a mut Rx<pac::UARTE0>,
}

impl embedded_io::ErrorType for Link<'_> {
    type Error = uarte::Error;
}

impl embedded_io::ReadReady for Link<'_> {
    fn read_ready(&mut self) -> Result<bool, uarte::Error> {
        self.rx.read_ready()
    }
}

impl embedded_io::Read for Link<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, uarte::Error> {
        self.rx.read(buf)
    }
}

impl embedded_io::Write for Link<'_> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, uarte::Error> {
        self.tx.write(buf)
    }
    fn flush(&mut self) -> Result<(), uarte::Error> {
        self.tx.flush()
    }
}
