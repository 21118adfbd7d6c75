//! The CMSDK APB UART of the mps2 boards (ARM DDI 0479, "APB UART"), as `embedded-io`
//! `Read`/`Write`/`ReadReady` and `core::fmt::Write`.
//!
//! Polled, no interrupts: the main loop runs every millisecond, and QEMU holds incoming
//! bytes in the chardev until the one-byte receive buffer is free, so nothing is lost.

use core::convert::Infallible;
use core::ptr::{read_volatile, write_volatile};

/// UART0: the console.
pub const UART0: usize = 0x4000_4000;
/// UART1: the MQTT link.
pub const UART1: usize = 0x4000_5000;

const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
const BAUDDIV: usize = 0x10;
const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;
const CTRL_TX_EN: u32 = 1 << 0;
const CTRL_RX_EN: u32 = 1 << 1;

/// One UART.
pub struct Uart {
    base: usize,
}

impl Uart {
    /// Enables the UART at `base`.
    ///
    /// # Safety
    /// `base` must be a CMSDK UART, and only one `Uart` may exist for it.
    pub unsafe fn new(base: usize) -> Self {
        let u = Self { base };
        // 16 is the smallest divider the part allows; QEMU ignores the rate.
        u.write_reg(BAUDDIV, 16);
        u.write_reg(CTRL, CTRL_TX_EN | CTRL_RX_EN);
        u
    }

    fn read_reg(&self, off: usize) -> u32 {
        // SAFETY: a register of the UART this value owns (see `new`).
        unsafe { read_volatile((self.base + off) as *const u32) }
    }

    fn write_reg(&self, off: usize, v: u32) {
        // SAFETY: as above.
        unsafe { write_volatile((self.base + off) as *mut u32, v) }
    }

    fn put(&mut self, b: u8) {
        while self.read_reg(STATE) & STATE_TX_FULL != 0 {}
        self.write_reg(DATA, u32::from(b));
    }
}

impl embedded_io::ErrorType for Uart {
    type Error = Infallible;
}

impl embedded_io::ReadReady for Uart {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(self.read_reg(STATE) & STATE_RX_FULL != 0)
    }
}

impl embedded_io::Read for Uart {
    /// Returns the bytes already received (at least one: waits for the first).
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let mut n = 0;
        while n < buf.len() {
            if self.read_reg(STATE) & STATE_RX_FULL == 0 {
                if n > 0 {
                    break;
                }
                continue;
            }
            buf[n] = (self.read_reg(DATA) & 0xFF) as u8;
            n += 1;
        }
        Ok(n)
    }
}

impl embedded_io::Write for Uart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        for &b in buf {
            self.put(b);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

impl core::fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
        Ok(())
    }
}
