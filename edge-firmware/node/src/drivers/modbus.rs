//! Modbus RTU master for RS-485 sensors, and the water-level transducer on top of it.
//!
//! Only function 0x03 (read holding registers) is needed: level transducers (ultrasonic or
//! pressure) publish their reading in one or two holding registers. A request is
//! `slave, 0x03, start (BE), count (BE), CRC-16/MODBUS (LE)`; the reply is
//! `slave, 0x03, byte count, registers (BE), CRC` or the exception
//! `slave, 0x83, exception code, CRC`. Every reply is checked: slave address, function,
//! byte count, CRC. A reply that fails, an exception or silence is counted and gives no reading.

use embedded_hal::delay::DelayNs;
use embedded_io::{Read, ReadReady, Write};

use super::FrameStats;
use crate::crc::crc16_modbus;

/// Most registers one request reads; bounds the reply buffer.
pub const MAX_REGISTERS: usize = 8;
const READ_HOLDING: u8 = 0x03;
const EXCEPTION: u8 = 0x80;
const MAX_REPLY: usize = 5 + 2 * MAX_REGISTERS;

/// Why a read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModbusError<E> {
    /// The serial port failed.
    Io(E),
    /// No complete reply within the timeout.
    Timeout,
    /// The reply's CRC does not match.
    Crc,
    /// The slave answered with an exception (1 illegal function, 2 illegal data address,
    /// 3 illegal data value, 4 slave device failure, ...).
    Exception(u8),
    /// The reply is not the answer to the request (other slave, function or length).
    Malformed,
    /// More registers asked for than [`MAX_REGISTERS`], or none.
    BadRequest,
}

/// Builds a read-holding-registers request.
pub fn read_request(slave: u8, start: u16, count: u16) -> [u8; 8] {
    let mut r = [0u8; 8];
    r[0] = slave;
    r[1] = READ_HOLDING;
    r[2..4].copy_from_slice(&start.to_be_bytes());
    r[4..6].copy_from_slice(&count.to_be_bytes());
    let crc = crc16_modbus(&r[..6]);
    r[6..].copy_from_slice(&crc.to_le_bytes());
    r
}

/// How many bytes the reply to a request from `slave` has, judging by its first three bytes;
/// `None` while fewer are known.
fn reply_len(head: &[u8]) -> Option<usize> {
    match head {
        [_, f, ..] if *f == READ_HOLDING | EXCEPTION => Some(5),
        [_, _, count, ..] => Some(5 + usize::from(*count)),
        _ => None,
    }
}

/// Checks a whole reply to `read_request(slave, _, out.len())` and fills `out`.
pub fn parse_reply<E>(slave: u8, reply: &[u8], out: &mut [u16]) -> Result<(), ModbusError<E>> {
    let (body, crc) = reply.split_at(reply.len().saturating_sub(2));
    if reply.len() < 5 {
        return Err(ModbusError::Malformed);
    }
    if crc16_modbus(body).to_le_bytes() != crc {
        return Err(ModbusError::Crc);
    }
    if body[0] != slave {
        return Err(ModbusError::Malformed);
    }
    match body[1] {
        f if f == READ_HOLDING | EXCEPTION => return Err(ModbusError::Exception(body[2])),
        READ_HOLDING => {}
        _ => return Err(ModbusError::Malformed),
    }
    let data = &body[3..];
    if usize::from(body[2]) != 2 * out.len() || data.len() != 2 * out.len() {
        return Err(ModbusError::Malformed);
    }
    for (o, w) in out.iter_mut().zip(data.chunks_exact(2)) {
        *o = u16::from_be_bytes([w[0], w[1]]);
    }
    Ok(())
}

/// A Modbus RTU master on one serial line.
#[derive(Debug)]
pub struct ModbusMaster {
    /// How long to wait for a complete reply.
    pub timeout_us: u32,
    /// Line silence before a request (3.5 characters; 4 ms covers 9600 baud).
    pub silence_us: u32,
    stats: FrameStats,
}

impl Default for ModbusMaster {
    fn default() -> Self {
        Self { timeout_us: 200_000, silence_us: 4_000, stats: FrameStats::default() }
    }
}

/// Polling step while waiting for a reply.
const POLL_US: u32 = 250;

impl ModbusMaster {
    /// Good and bad replies so far (timeouts and exceptions count as bad).
    pub fn stats(&self) -> FrameStats {
        self.stats
    }

    /// Reads `out.len()` holding registers from `start` of `slave`.
    pub fn read_holding<T, D>(
        &mut self,
        port: &mut T,
        delay: &mut D,
        slave: u8,
        start: u16,
        out: &mut [u16],
    ) -> Result<(), ModbusError<T::Error>>
    where
        T: Read + Write + ReadReady,
        D: DelayNs,
    {
        let count = u16::try_from(out.len()).map_err(|_| ModbusError::BadRequest)?;
        if out.is_empty() || out.len() > MAX_REGISTERS {
            return Err(ModbusError::BadRequest);
        }
        let result = self.transact(port, delay, slave, start, count, out);
        match result {
            Ok(()) => self.stats.good(),
            Err(_) => self.stats.bad(),
        }
        result
    }

    fn transact<T, D>(
        &mut self,
        port: &mut T,
        delay: &mut D,
        slave: u8,
        start: u16,
        count: u16,
        out: &mut [u16],
    ) -> Result<(), ModbusError<T::Error>>
    where
        T: Read + Write + ReadReady,
        D: DelayNs,
    {
        // A late reply to an earlier, timed-out request would be taken for this one.
        let mut junk = [0u8; 8];
        while port.read_ready().map_err(ModbusError::Io)? {
            if port.read(&mut junk).map_err(ModbusError::Io)? == 0 {
                break;
            }
        }
        delay.delay_us(self.silence_us);
        port.write_all(&read_request(slave, start, count)).map_err(ModbusError::Io)?;
        port.flush().map_err(ModbusError::Io)?;

        let mut reply = [0u8; MAX_REPLY];
        let mut len = 0;
        let mut waited = 0u32;
        loop {
            let want = reply_len(&reply[..len]).unwrap_or(3).min(MAX_REPLY);
            if len >= want {
                break;
            }
            if port.read_ready().map_err(ModbusError::Io)? {
                len += port.read(&mut reply[len..want]).map_err(ModbusError::Io)?;
                continue;
            }
            if waited >= self.timeout_us {
                return Err(ModbusError::Timeout);
            }
            delay.delay_us(POLL_US);
            waited += POLL_US;
        }
        if reply_len(&reply[..len]).is_some_and(|n| n > MAX_REPLY) {
            return Err(ModbusError::Malformed);
        }
        parse_reply(slave, &reply[..len], out)
    }
}

/// A water-level transducer that gives the level (or the distance down to the water) in one
/// holding register.
#[derive(Debug, Clone, Copy)]
pub struct LevelTransducer {
    /// Modbus address of the transducer.
    pub slave: u8,
    /// Register holding the reading.
    pub register: u16,
    /// Centimetres per register count (0.1 for a register in mm).
    pub cm_per_count: f64,
    /// For ultrasonic sensors that measure down to the water: level = datum - reading.
    /// `None` for pressure transducers, whose reading is the level.
    pub datum_cm: Option<f64>,
}

impl LevelTransducer {
    /// Reads the level in centimetres (the `water_level` metric, unit `cm`).
    pub fn read<T, D>(&self, bus: &mut ModbusMaster, port: &mut T, delay: &mut D) -> Result<f64, ModbusError<T::Error>>
    where
        T: Read + Write + ReadReady,
        D: DelayNs,
    {
        let mut reg = [0u16; 1];
        bus.read_holding(port, delay, self.slave, self.register, &mut reg)?;
        let reading = f64::from(reg[0]) * self.cm_per_count;
        Ok(match self.datum_cm {
            Some(datum) => datum - reading,
            None => reading,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    // The read-holding-registers example of the Modbus over serial line specification
    // (and of every Modbus tutorial since): slave 17, registers 108 to 110.
    const SPEC_REQUEST: [u8; 8] = [0x11, 0x03, 0x00, 0x6B, 0x00, 0x03, 0x76, 0x87];
    const SPEC_REPLY: [u8; 11] = [0x11, 0x03, 0x06, 0xAE, 0x41, 0x56, 0x52, 0x43, 0x40, 0x49, 0xAD];
    // Exception 2 (illegal data address) from slave 17.
    const SPEC_EXCEPTION: [u8; 5] = [0x11, 0x83, 0x02, 0xC1, 0x34];

    /// A serial port that records what is written and replays a scripted reply.
    #[derive(Default)]
    struct Port {
        written: Vec<u8>,
        reply: Vec<u8>,
        stale: Vec<u8>,
    }

    impl embedded_io::ErrorType for Port {
        type Error = core::convert::Infallible;
    }
    impl Read for Port {
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
            let src = if self.stale.is_empty() { &mut self.reply } else { &mut self.stale };
            // One byte at a time, as a UART gives them.
            if src.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = src.remove(0);
            Ok(1)
        }
    }
    impl ReadReady for Port {
        fn read_ready(&mut self) -> Result<bool, Self::Error> {
            Ok(!self.stale.is_empty() || (!self.written.is_empty() && !self.reply.is_empty()))
        }
    }
    impl Write for Port {
        fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    struct NoDelay;
    impl DelayNs for NoDelay {
        fn delay_ns(&mut self, _: u32) {}
    }

    fn check(reply: &[u8], count: usize) -> (Result<Vec<u16>, ModbusError<core::convert::Infallible>>, Vec<u8>) {
        let mut port = Port { reply: reply.to_vec(), ..Port::default() };
        let mut bus = ModbusMaster::default();
        let mut out = std::vec![0u16; count];
        let r = bus.read_holding(&mut port, &mut NoDelay, 0x11, 0x6B, &mut out).map(|()| out);
        let stats = bus.stats();
        assert_eq!(stats.good + stats.bad, 1);
        assert_eq!(stats.good == 1, r.is_ok());
        (r, port.written)
    }

    #[test]
    fn the_spec_example_request_and_reply() {
        assert_eq!(read_request(0x11, 0x6B, 3), SPEC_REQUEST);
        let (got, written) = check(&SPEC_REPLY, 3);
        assert_eq!(written, SPEC_REQUEST);
        assert_eq!(got, Ok(std::vec![0xAE41, 0x5652, 0x4340]));
    }

    #[test]
    fn an_exception_reply_is_an_error() {
        assert_eq!(check(&SPEC_EXCEPTION, 3).0, Err(ModbusError::Exception(2)));
    }

    #[test]
    fn corrupted_replies_are_refused() {
        for i in 0..SPEC_REPLY.len() {
            let mut r = SPEC_REPLY;
            r[i] ^= 0x10;
            let (got, _) = check(&r, 3);
            assert!(got.is_err(), "byte {i} flipped: {got:?}");
        }
        let mut crc = SPEC_REPLY;
        crc[10] ^= 0x01;
        assert_eq!(check(&crc, 3).0, Err(ModbusError::Crc));
        assert_eq!(check(&SPEC_REPLY[..7], 3).0, Err(ModbusError::Timeout), "cut short");
        assert_eq!(check(&[], 3).0, Err(ModbusError::Timeout), "silence");
        // A well-formed reply from another slave.
        let mut other = std::vec![0x12, 0x03, 0x02, 0x01, 0x00];
        let crc = crc16_modbus(&other).to_le_bytes();
        other.extend_from_slice(&crc);
        assert_eq!(check(&other, 1).0, Err(ModbusError::Malformed));
        // The right slave, but fewer registers than asked for.
        let mut short = std::vec![0x11, 0x03, 0x02, 0x01, 0x00];
        let crc = crc16_modbus(&short).to_le_bytes();
        short.extend_from_slice(&crc);
        assert_eq!(check(&short, 3).0, Err(ModbusError::Malformed));
    }

    #[test]
    fn stale_bytes_are_drained_before_the_request() {
        let mut port = Port { reply: SPEC_REPLY.to_vec(), stale: std::vec![0x11, 0x03], ..Port::default() };
        let mut out = [0u16; 3];
        ModbusMaster::default().read_holding(&mut port, &mut NoDelay, 0x11, 0x6B, &mut out).unwrap();
        assert_eq!(out, [0xAE41, 0x5652, 0x4340]);
    }

    #[test]
    fn a_level_transducer_in_mm_and_an_ultrasonic_one() {
        // 1825 mm (0x0721) from a pressure transducer at slave 1, register 4.
        let mut reply = std::vec![0x01, 0x03, 0x02, 0x07, 0x21];
        let crc = crc16_modbus(&reply).to_le_bytes();
        reply.extend_from_slice(&crc);
        let mut port = Port { reply: reply.clone(), ..Port::default() };
        let pressure = LevelTransducer { slave: 1, register: 4, cm_per_count: 0.1, datum_cm: None };
        let level = pressure.read(&mut ModbusMaster::default(), &mut port, &mut NoDelay).unwrap();
        assert!((level - 182.5).abs() < 1e-9);
        let mut port = Port { reply, ..Port::default() };
        let ultrasonic = LevelTransducer { datum_cm: Some(500.0), ..pressure };
        let level = ultrasonic.read(&mut ModbusMaster::default(), &mut port, &mut NoDelay).unwrap();
        assert!((level - 317.5).abs() < 1e-9);
    }
}
