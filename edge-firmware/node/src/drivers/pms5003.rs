//! Plantower PMS5003 particulate sensor: the 32-byte frame it streams on its UART
//! (9600 8N1, active mode, one frame a second or so).
//!
//! Frame (datasheet, "Appendix I"): `0x42 0x4D`, frame length (2 bytes, always 28 = 2 × 13
//! data words + 2 checksum bytes), 13 big-endian data words, then a big-endian check code
//! that is the sum of all 30 bytes before it. Data words 4 to 6 are PM1.0, PM2.5 and PM10
//! "under atmospheric environment" in µg/m³, which is what a city map wants; words 1 to 3
//! are the factory "CF=1" values, kept for completeness.
//!
//! The parser takes bytes as they come and resynchronises on the header after any bad frame,
//! so a sensor plugged in mid-frame or a line glitch costs one frame, never a wrong reading.

use embedded_io::{Read, ReadReady};

use super::FrameStats;

/// Length of one frame on the wire.
pub const FRAME_LEN: usize = 32;
const HEADER: [u8; 2] = [0x42, 0x4D];
const BODY_LEN: u16 = 28;

/// One checked frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PmsReading {
    /// PM1.0, PM2.5, PM10 with the factory CF=1 correction, µg/m³.
    pub pm_cf1: [u16; 3],
    /// PM1.0, PM2.5, PM10 under atmospheric environment, µg/m³.
    pub pm1_0: u16,
    /// PM2.5 under atmospheric environment, µg/m³ (the `pm2_5` metric).
    pub pm2_5: u16,
    /// PM10 under atmospheric environment, µg/m³ (the `pm10` metric).
    pub pm10: u16,
    /// Particles beyond 0.3, 0.5, 1.0, 2.5, 5.0 and 10 µm in 0.1 L of air.
    pub counts: [u16; 6],
}

/// Why a frame is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The length field is not 28.
    BadLength(u16),
    /// The check code does not match the sum of the bytes.
    BadChecksum {
        /// The sum computed over the first 30 bytes.
        computed: u16,
        /// The check code in the frame.
        sent: u16,
    },
}

/// Checks one whole frame and returns its values.
pub fn parse_frame(frame: &[u8; FRAME_LEN]) -> Result<PmsReading, FrameError> {
    let word = |i: usize| u16::from_be_bytes([frame[i], frame[i + 1]]);
    debug_assert_eq!(frame[..2], HEADER);
    let len = word(2);
    if len != BODY_LEN {
        return Err(FrameError::BadLength(len));
    }
    let computed = frame[..30].iter().fold(0u16, |sum, &b| sum.wrapping_add(u16::from(b)));
    let sent = word(30);
    if computed != sent {
        return Err(FrameError::BadChecksum { computed, sent });
    }
    let data = |n: usize| word(4 + 2 * (n - 1));
    Ok(PmsReading {
        pm_cf1: [data(1), data(2), data(3)],
        pm1_0: data(4),
        pm2_5: data(5),
        pm10: data(6),
        counts: [data(7), data(8), data(9), data(10), data(11), data(12)],
    })
}

/// The streaming parser: feed it bytes, get checked readings.
#[derive(Debug, Default)]
pub struct Pms5003 {
    buf: [u8; FRAME_LEN],
    len: usize,
    stats: FrameStats,
}

impl Pms5003 {
    /// A parser waiting for a header.
    pub fn new() -> Self {
        Self::default()
    }

    /// Good and bad frames so far.
    pub fn stats(&self) -> FrameStats {
        self.stats
    }

    /// Takes one byte; returns a reading when it completes a good frame.
    pub fn push(&mut self, byte: u8) -> Option<PmsReading> {
        // Hunting for the two header bytes: anything else before them is line noise.
        if self.len < HEADER.len() && byte != HEADER[self.len] {
            self.len = 0;
            if byte == HEADER[0] {
                self.buf[0] = byte;
                self.len = 1;
            }
            return None;
        }
        self.buf[self.len] = byte;
        self.len += 1;
        if self.len < FRAME_LEN {
            return None;
        }
        let frame = self.buf;
        self.len = 0;
        match parse_frame(&frame) {
            Ok(reading) => {
                self.stats.good();
                Some(reading)
            }
            Err(_) => {
                self.stats.bad();
                // A real header may start inside the refused frame (the frame was cut short
                // by a glitch): keep the tail from the next header candidate on. The tail is
                // shorter than a frame, so nothing more can complete yet.
                let next =
                    (1..FRAME_LEN).find(|&i| frame[i] == HEADER[0] && frame.get(i + 1).is_none_or(|&b| b == HEADER[1]));
                if let Some(i) = next {
                    self.len = FRAME_LEN - i;
                    self.buf[..self.len].copy_from_slice(&frame[i..]);
                }
                None
            }
        }
    }

    /// Reads whatever the UART has ready (never blocks) and returns the newest good reading.
    pub fn poll<R: Read + ReadReady>(&mut self, uart: &mut R) -> Result<Option<PmsReading>, R::Error> {
        let mut newest = None;
        let mut chunk = [0u8; 16];
        while uart.read_ready()? {
            let n = uart.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            for &b in &chunk[..n] {
                if let Some(r) = self.push(b) {
                    newest = Some(r);
                }
            }
        }
        Ok(newest)
    }
}

/// Builds a well-formed frame (for simulated sensors and tests).
pub fn build_frame(pm_cf1: [u16; 3], pm_atm: [u16; 3], counts: [u16; 6]) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[..2].copy_from_slice(&HEADER);
    f[2..4].copy_from_slice(&BODY_LEN.to_be_bytes());
    let words = pm_cf1.iter().chain(pm_atm.iter()).chain(counts.iter()).chain([0u16].iter());
    for (i, w) in words.enumerate() {
        f[4 + 2 * i..6 + 2 * i].copy_from_slice(&w.to_be_bytes());
    }
    let sum = f[..30].iter().fold(0u16, |s, &b| s.wrapping_add(u16::from(b)));
    f[30..].copy_from_slice(&sum.to_be_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as a PMS5003 sends it in moderately polluted air, written out byte by byte
    /// from the datasheet layout: PM2.5 = 35 µg/m³ (0x0023), PM10 = 48 (0x0030); the check
    /// code 0x032C is the sum of the 30 bytes before it, worked out by hand.
    const FRAME: [u8; 32] = [
        0x42, 0x4D, 0x00, 0x1C, // header, length 28
        0x00, 0x19, 0x00, 0x26, 0x00, 0x33, // CF=1: PM1.0 25, PM2.5 38, PM10 51
        0x00, 0x16, 0x00, 0x23, 0x00, 0x30, // atmospheric: PM1.0 22, PM2.5 35, PM10 48
        0x11, 0x94, 0x05, 0x1B, 0x00, 0xC8, // >0.3 µm 4500, >0.5 µm 1307, >1.0 µm 200
        0x00, 0x14, 0x00, 0x04, 0x00, 0x01, // >2.5 µm 20, >5.0 µm 4, >10 µm 1
        0x00, 0x00, // reserved
        0x03, 0x2C, // check code
    ];

    fn feed(p: &mut Pms5003, bytes: &[u8]) -> std::vec::Vec<PmsReading> {
        bytes.iter().filter_map(|&b| p.push(b)).collect()
    }

    #[test]
    fn the_datasheet_layout_frame_parses() {
        let r = parse_frame(&FRAME).unwrap();
        assert_eq!((r.pm1_0, r.pm2_5, r.pm10), (22, 35, 48));
        assert_eq!(r.pm_cf1, [25, 38, 51]);
        assert_eq!(r.counts, [4500, 1307, 200, 20, 4, 1]);
        assert_eq!(build_frame([25, 38, 51], [22, 35, 48], [4500, 1307, 200, 20, 4, 1]), FRAME);
    }

    #[test]
    fn a_stream_with_noise_yields_each_good_frame() {
        let mut p = Pms5003::new();
        let mut stream = std::vec![0x00, 0x42, 0xFF, 0x4D];
        stream.extend_from_slice(&FRAME);
        stream.extend_from_slice(&FRAME);
        assert_eq!(feed(&mut p, &stream).len(), 2);
        assert_eq!(p.stats(), FrameStats { good: 2, bad: 0 });
    }

    #[test]
    fn every_single_bit_flip_is_refused_or_harmless() {
        // Flip each bit of the frame: the header and length flips must lose the frame, the
        // rest must fail the checksum. No flipped frame may give a reading.
        for i in 0..FRAME_LEN * 8 {
            let mut f = FRAME;
            f[i / 8] ^= 1 << (i % 8);
            let mut p = Pms5003::new();
            assert!(feed(&mut p, &f).is_empty(), "bit {i} flipped gave a reading");
        }
    }

    #[test]
    fn corrupted_frames_are_counted_and_the_next_good_one_is_found() {
        let mut bad_sum = FRAME;
        bad_sum[13] = 0xFF; // PM2.5 atmospheric now 0x00FF: the check code no longer matches
        assert_eq!(
            parse_frame(&bad_sum),
            Err(FrameError::BadChecksum { computed: 0x032C - 0x23 + 0xFF, sent: 0x032C })
        );
        let mut bad_len = FRAME;
        bad_len[3] = 0x14; // 20: the PMS7003's length, not this part's
        assert_eq!(parse_frame(&bad_len), Err(FrameError::BadLength(20)));

        let mut p = Pms5003::new();
        let mut stream = std::vec::Vec::new();
        stream.extend_from_slice(&bad_sum);
        stream.extend_from_slice(&bad_len);
        stream.extend_from_slice(&FRAME[..17]); // cut short by a glitch
        stream.extend_from_slice(&FRAME);
        let got = feed(&mut p, &stream);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].pm2_5, 35);
        assert_eq!(p.stats().good, 1);
        assert!(p.stats().bad >= 3, "{:?}", p.stats());
    }
}
