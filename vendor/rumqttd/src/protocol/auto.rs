//! MQTT 3.1.1 and MQTT 5 on one listener: the protocol level of a connection's CONNECT picks
//! the codec (MQTT 3.1.1 section 3.1.2.2, MQTT 5 section 3.1.2.2), as Mosquitto, EMQX,
//! HiveMQ and VerneMQ serve both versions on one port.
//!
//! A `Server` clones its protocol for every connection, so each connection decides for
//! itself, once, from its first packet; until then a read waits for the whole CONNECT.

use bytes::BytesMut;

use super::v4::{self, V4};
use super::v5::V5;
use super::{Error, Packet, Protocol};

/// The codec a connection settled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V4,
    V5,
}

/// Reads MQTT 3.1.1 or 5, as the client's CONNECT says, and writes the same.
#[derive(Debug, Clone, Default)]
pub struct Auto {
    version: Option<Version>,
}

/// The version a CONNECT at the start of `stream` asks for: 5 for protocol level 5, 3.1.1
/// otherwise (3.1.1's reader then refuses what it does not know, including a first packet
/// that is no CONNECT). `InsufficientBytes` until the whole packet is there.
fn detect(stream: &BytesMut, max_size: usize) -> Result<Version, Error> {
    let header = v4::check(stream.iter(), max_size)?;
    let body = &stream[header.fixed_header_len..header.frame_length()];
    if header.packet_type()? != v4::PacketType::Connect {
        return Ok(Version::V4);
    }
    // The protocol name (a two-byte length, then "MQTT"), then the level.
    let level = body
        .get(..2)
        .map(|len| 2 + usize::from(u16::from_be_bytes([len[0], len[1]])))
        .and_then(|at| body.get(at));
    Ok(match level {
        Some(5) => Version::V5,
        _ => Version::V4,
    })
}

impl Protocol for Auto {
    fn read_mut(&mut self, stream: &mut BytesMut, max_size: usize) -> Result<Packet, Error> {
        let version = match self.version {
            Some(version) => version,
            None => {
                let version = detect(stream, max_size)?;
                self.version = Some(version);
                version
            }
        };
        match version {
            Version::V4 => V4.read_mut(stream, max_size),
            Version::V5 => V5.read_mut(stream, max_size),
        }
    }

    fn write(&self, packet: Packet, write: &mut BytesMut) -> Result<usize, Error> {
        match self.version {
            Some(Version::V5) => V5.write(packet, write),
            // Before a CONNECT was read nothing is written but, at most, a refusal, which
            // a 3.1.1 client reads best.
            _ => V4.write(packet, write),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(level: u8) -> BytesMut {
        let body = [0, 4, b'M', b'Q', b'T', b'T', level, 0x02, 0, 30, 0, 1, b'a'];
        let mut frame = BytesMut::from(&[0x10, body.len() as u8][..]);
        frame.extend_from_slice(&body);
        if level == 5 {
            // MQTT 5: an empty properties section after the keep-alive.
            frame = BytesMut::from(&[0x10, body.len() as u8 + 1][..]);
            frame.extend_from_slice(&body[..10]);
            frame.extend_from_slice(&[0]);
            frame.extend_from_slice(&body[10..]);
        }
        frame
    }

    #[test]
    fn the_connect_picks_the_version_and_a_partial_one_waits() {
        for (level, expected) in [(4, Version::V4), (5, Version::V5)] {
            let mut stream = connect(level);
            let mut auto = Auto::default();
            let packet = auto.read_mut(&mut stream, 1024).unwrap();
            assert!(matches!(packet, Packet::Connect(..)), "{packet:?}");
            assert_eq!(auto.version, Some(expected));
        }
        let whole = connect(5);
        let mut part = BytesMut::from(&whole[..whole.len() - 1]);
        let mut auto = Auto::default();
        assert!(matches!(auto.read_mut(&mut part, 1024), Err(Error::InsufficientBytes(_))));
        assert_eq!(auto.version, None, "nothing decided on half a CONNECT");
        // A first packet that is no CONNECT goes to the 3.1.1 reader, which reads it as what
        // it is (the connection then refuses it for not being a CONNECT).
        let mut ping = BytesMut::from(&[0xc0, 0][..]);
        assert!(matches!(Auto::default().read_mut(&mut ping, 1024), Ok(Packet::PingReq(_))));
    }
}
