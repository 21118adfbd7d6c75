//! The checksum the node computes itself: CRC-16/MODBUS for the RS-485 link (the config
//! page's CRC-32 is `mekong_schema::provision`'s).
//!
//! Bitwise rather than table-driven: frames are a few dozen bytes, and a 512-byte table
//! would cost more flash than the cycles it saves.

/// CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF). Sent low byte first on the wire.
pub fn crc16_modbus(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xA001 } else { crc >> 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_values_of_the_catalogue() {
        // The "check" column of the CRC catalogue: the CRC of ASCII "123456789".
        assert_eq!(crc16_modbus(b"123456789"), 0x4B37);
    }

    #[test]
    fn modbus_spec_example() {
        // Read holding registers 108..110 of slave 17 (Modbus over serial line spec):
        // 11 03 00 6B 00 03, CRC 76 87 on the wire (low byte first).
        assert_eq!(crc16_modbus(&[0x11, 0x03, 0x00, 0x6B, 0x00, 0x03]).to_le_bytes(), [0x76, 0x87]);
    }
}
