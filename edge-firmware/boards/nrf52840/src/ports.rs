//! The serial ports on this board: a UARTE receiver that keeps up with its line, the sensor
//! UART (UARTE1) lent to the one serial sensor the config page fits, and the RS-485
//! half-duplex line of the Modbus level transducer.
//!
//! The nRF52840 has two UARTEs and the modem takes the first, so the PMS5003 and the
//! RS-485 transceiver share UARTE1's pins: a node has one of the two (see README.md).

use core::convert::Infallible;

use embedded_hal::digital::OutputPin;
use embedded_io::{ErrorType, Read, ReadReady, Write};
use nrf52840_hal::gpio::{Output, Pin, PushPull};
use nrf52840_hal::pac::UARTE1;
use nrf52840_hal::uarte::{self, Instance, UarteRx, UarteTx};

/// Core cycles (2 µs at 64 MHz) for a receive transfer just started to take a byte already
/// waiting in the UARTE's FIFO.
const FIFO_CYCLES: u32 = 128;

/// A UARTE's receiving half. The HAL's receives one byte per transfer, and its `read_ready`
/// only starts the next transfer after a read, answering `false` even when bytes wait in the
/// FIFO: a reader looping on `read_ready` would get one byte per main-loop turn (about a
/// millisecond). This one looks again once the new transfer has had time to take a waiting
/// byte, so a reader drains what has arrived in one turn.
pub struct Rx<U: Instance>(pub UarteRx<U>);

impl<U: Instance> ErrorType for Rx<U> {
    type Error = uarte::Error;
}

impl<U: Instance> ReadReady for Rx<U> {
    fn read_ready(&mut self) -> Result<bool, uarte::Error> {
        if self.0.read_ready()? {
            return Ok(true);
        }
        cortex_m::asm::delay(FIFO_CYCLES);
        self.0.read_ready()
    }
}

impl<U: Instance> Read for Rx<U> {
    /// One byte (waits for it: call after `read_ready`).
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, uarte::Error> {
        self.0.read(buf)
    }
}

/// A port that is fitted (`Some`) or not: an unfitted one never has data and swallows writes.
/// The station only touches the ports of the sensors its schedule fits, so an unfitted port
/// is never used; it only fills the station's type.
pub struct Port<T>(pub Option<T>);

impl<T: ErrorType> ErrorType for Port<T> {
    type Error = T::Error;
}

impl<T: ReadReady> ReadReady for Port<T> {
    fn read_ready(&mut self) -> Result<bool, T::Error> {
        match &mut self.0 {
            Some(p) => p.read_ready(),
            None => Ok(false),
        }
    }
}

impl<T: Read> Read for Port<T> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, T::Error> {
        match &mut self.0 {
            Some(p) => p.read(buf),
            None => Ok(0),
        }
    }
}

impl<T: Write> Write for Port<T> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, T::Error> {
        match &mut self.0 {
            Some(p) => p.write(buf),
            None => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> Result<(), T::Error> {
        match &mut self.0 {
            Some(p) => p.flush(),
            None => Ok(()),
        }
    }
}

/// Core cycles of one character at 9600 baud (10 bits, 1.04 ms) plus 15 %: how long DE stays
/// high after the UARTE reports the transmission done, so the stop bit of the last byte is on
/// the line before the transceiver lets go of it (64 MHz core clock).
const TURNAROUND_CYCLES: u32 = 64_000_000 / 9600 * 10 * 115 / 100;

/// A half-duplex RS-485 line: UARTE1 through a transceiver (e.g. a MAX3485) whose DE and
/// /RE pins are tied together to one GPIO, high while the node transmits.
pub struct Rs485 {
    tx: UarteTx<UARTE1>,
    rx: Rx<UARTE1>,
    de: Pin<Output<PushPull>>,
}

impl Rs485 {
    /// The line, receiving (DE low).
    pub fn new(tx: UarteTx<UARTE1>, rx: Rx<UARTE1>, mut de: Pin<Output<PushPull>>) -> Self {
        let _: Result<(), Infallible> = de.set_low();
        Self { tx, rx, de }
    }
}

impl ErrorType for Rs485 {
    type Error = uarte::Error;
}

impl ReadReady for Rs485 {
    fn read_ready(&mut self) -> Result<bool, uarte::Error> {
        self.rx.read_ready()
    }
}

impl Read for Rs485 {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, uarte::Error> {
        self.rx.read(buf)
    }
}

impl Write for Rs485 {
    /// Takes the line (DE high) and queues the bytes; [`Rs485::flush`] sends them and gives
    /// the line back (the Modbus master flushes after every request).
    fn write(&mut self, buf: &[u8]) -> Result<usize, uarte::Error> {
        let _: Result<(), Infallible> = self.de.set_high();
        self.tx.write(buf)
    }

    fn flush(&mut self) -> Result<(), uarte::Error> {
        let sent = self.tx.flush();
        cortex_m::asm::delay(TURNAROUND_CYCLES);
        let _: Result<(), Infallible> = self.de.set_low();
        sent
    }
}
