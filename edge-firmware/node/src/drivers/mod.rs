//! Sensor drivers over `embedded-io` (serial parts) and `embedded-hal` (pins, delays).
//!
//! Each driver parses the real frames of a real part and checks them; a frame that fails a
//! check is counted in the driver's [`FrameStats`] and never becomes a reading.

pub mod modbus;
pub mod pms5003;
pub mod traffic;

/// Good and bad frames seen by one driver since boot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FrameStats {
    /// Frames that passed every check.
    pub good: u32,
    /// Frames refused: bad checksum, bad length, bad header, exception, timeout.
    pub bad: u32,
}

impl FrameStats {
    pub(crate) fn bad(&mut self) {
        self.bad = self.bad.saturating_add(1);
    }

    pub(crate) fn good(&mut self) {
        self.good = self.good.saturating_add(1);
    }
}
