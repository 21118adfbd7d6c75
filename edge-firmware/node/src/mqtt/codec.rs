//! Encoding and parsing of the MQTT 3.1.1 packets a node uses (OASIS MQTT 3.1.1, section 3).
//!
//! Encoders write into a caller's buffer and return the length. The parser takes whatever
//! bytes have arrived and says "need more", "here is a packet of n bytes" or "malformed"; it
//! never reads past the input and never trusts a length before checking it against the input.

/// Packet types (the high nibble of the first byte).
pub mod kind {
    /// Client to server: connection request.
    pub const CONNECT: u8 = 1;
    /// Server to client: connection acknowledgement.
    pub const CONNACK: u8 = 2;
    /// Either way: a message.
    pub const PUBLISH: u8 = 3;
    /// Acknowledges a QoS 1 PUBLISH.
    pub const PUBACK: u8 = 4;
    /// Client to server: subscription request.
    pub const SUBSCRIBE: u8 = 8;
    /// Server to client: subscription acknowledgement.
    pub const SUBACK: u8 = 9;
    /// Client to server: keep-alive.
    pub const PINGREQ: u8 = 12;
    /// Server to client: keep-alive answer.
    pub const PINGRESP: u8 = 13;
    /// Client to server: clean end.
    pub const DISCONNECT: u8 = 14;
}

/// Why bytes cannot be encoded or parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecError {
    /// The output buffer is too small.
    BufferFull,
    /// A string or payload longer than MQTT allows.
    TooLong,
    /// The input breaks the protocol (bad remaining length, bad flags, short fields).
    Malformed(&'static str),
}

/// A packet from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// CONNACK with its session-present flag and return code (0 accepted).
    ConnAck {
        /// The server kept a session.
        session_present: bool,
        /// 0 accepted; 1 to 5 refused (protocol, id, unavailable, credentials, not authorised).
        code: u8,
    },
    /// PUBLISH.
    Publish {
        /// Topic name.
        topic: &'a str,
        /// QoS 0, 1 or 2.
        qos: u8,
        /// Packet id (QoS 1 and 2).
        pid: Option<u16>,
        /// Application message.
        payload: &'a [u8],
    },
    /// PUBACK.
    PubAck(u16),
    /// SUBACK with the first return code (0 to 2 granted QoS, 0x80 failure).
    SubAck {
        /// Packet id of the SUBSCRIBE.
        pid: u16,
        /// Granted QoS or 0x80.
        code: u8,
    },
    /// PINGRESP.
    PingResp,
    /// Any other packet type (valid framing, ignored by a node).
    Other(u8),
}

/// Fixed header: type, flags, the length of the rest, and of the header itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Packet type.
    pub kind: u8,
    /// Low nibble of the first byte.
    pub flags: u8,
    /// Remaining length.
    pub len: usize,
    /// Bytes of the fixed header (2 to 5).
    pub header_len: usize,
}

impl Header {
    /// The whole packet's length.
    pub fn total(&self) -> usize {
        self.header_len + self.len
    }
}

/// Reads a fixed header; `Ok(None)` while it is incomplete.
pub fn parse_header(buf: &[u8]) -> Result<Option<Header>, CodecError> {
    let Some(&first) = buf.first() else { return Ok(None) };
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else { return Ok(None) };
        len |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some(Header { kind: first >> 4, flags: first & 0x0F, len, header_len: 2 + i }));
        }
    }
    Err(CodecError::Malformed("remaining length longer than 4 bytes"))
}

/// Parses one packet at the start of `buf`: `Ok(None)` while incomplete, else the packet and
/// its length.
pub fn parse(buf: &[u8]) -> Result<Option<(Packet<'_>, usize)>, CodecError> {
    let Some(h) = parse_header(buf)? else { return Ok(None) };
    let Some(body) = buf.get(h.header_len..h.total()) else { return Ok(None) };
    let u16_at = |i: usize| -> Result<u16, CodecError> {
        body.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or(CodecError::Malformed("short packet"))
    };
    let packet = match h.kind {
        kind::CONNACK => {
            if body.len() != 2 {
                return Err(CodecError::Malformed("connack length"));
            }
            Packet::ConnAck { session_present: body[0] & 1 != 0, code: body[1] }
        }
        kind::PUBLISH => {
            let qos = (h.flags >> 1) & 3;
            if qos == 3 {
                return Err(CodecError::Malformed("publish qos 3"));
            }
            let tlen = usize::from(u16_at(0)?);
            let topic = body.get(2..2 + tlen).ok_or(CodecError::Malformed("publish topic"))?;
            let topic = core::str::from_utf8(topic).map_err(|_| CodecError::Malformed("topic not utf-8"))?;
            let mut at = 2 + tlen;
            let pid = if qos > 0 {
                at += 2;
                Some(u16_at(at - 2)?)
            } else {
                None
            };
            let payload = body.get(at..).ok_or(CodecError::Malformed("publish payload"))?;
            Packet::Publish { topic, qos, pid, payload }
        }
        kind::PUBACK => {
            if body.len() != 2 {
                return Err(CodecError::Malformed("puback length"));
            }
            Packet::PubAck(u16_at(0)?)
        }
        kind::SUBACK => {
            let code = *body.get(2).ok_or(CodecError::Malformed("suback length"))?;
            Packet::SubAck { pid: u16_at(0)?, code }
        }
        kind::PINGRESP => Packet::PingResp,
        other => Packet::Other(other),
    };
    Ok(Some((packet, h.total())))
}

/// Writes a remaining length; returns the bytes used.
fn put_len(out: &mut [u8], mut len: usize) -> Result<usize, CodecError> {
    if len > 268_435_455 {
        return Err(CodecError::TooLong);
    }
    let mut i = 0;
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        *out.get_mut(i).ok_or(CodecError::BufferFull)? = b;
        i += 1;
        if len == 0 {
            return Ok(i);
        }
    }
}

/// A cursor over an output buffer.
struct Out<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Out<'_> {
    fn bytes(&mut self, b: &[u8]) -> Result<(), CodecError> {
        let dst = self.buf.get_mut(self.at..self.at + b.len()).ok_or(CodecError::BufferFull)?;
        dst.copy_from_slice(b);
        self.at += b.len();
        Ok(())
    }
    fn u16(&mut self, v: u16) -> Result<(), CodecError> {
        self.bytes(&v.to_be_bytes())
    }
    fn str(&mut self, s: &str) -> Result<(), CodecError> {
        self.u16(u16::try_from(s.len()).map_err(|_| CodecError::TooLong)?)?;
        self.bytes(s.as_bytes())
    }
    fn header(&mut self, first: u8, len: usize) -> Result<(), CodecError> {
        self.bytes(&[first])?;
        self.at += put_len(self.buf.get_mut(self.at..).ok_or(CodecError::BufferFull)?, len)?;
        Ok(())
    }
}

/// CONNECT return codes (MQTT 3.1.1, 3.2.2.3) that refuse the client's credentials: bad
/// user name or password, not authorised.
pub const REFUSED_LOGIN: [u8; 2] = [4, 5];

/// A CONNECT's user name and password. Its `Debug` output leaves the password out.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Login<'a> {
    /// User name (a UTF-8 string on the wire).
    pub username: &'a str,
    /// Password (binary data on the wire: a two-byte length, then the bytes).
    pub password: &'a [u8],
}

impl core::fmt::Debug for Login<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Login").field("username", &self.username).finish_non_exhaustive()
    }
}

/// CONNECT with a clean session, and the user name and password flags and fields if `login`
/// is given (3.1.2.8, 3.1.2.9: the password flag only with the user name flag; the payload is
/// client id, user name, password, in that order).
pub fn connect(
    out: &mut [u8],
    client_id: &str,
    login: Option<Login<'_>>,
    keepalive_s: u16,
) -> Result<usize, CodecError> {
    let mut o = Out { buf: out, at: 0 };
    let (flags, login_len) = match login {
        Some(l) => (0x80 | 0x40, 2 + l.username.len() + 2 + l.password.len()),
        None => (0, 0),
    };
    o.header(kind::CONNECT << 4, 10 + 2 + client_id.len() + login_len)?;
    o.str("MQTT")?;
    o.bytes(&[4, flags | 0x02])?; // protocol level 4 (3.1.1), clean session
    o.u16(keepalive_s)?;
    o.str(client_id)?;
    if let Some(l) = login {
        o.str(l.username)?;
        o.u16(u16::try_from(l.password.len()).map_err(|_| CodecError::TooLong)?)?;
        o.bytes(l.password)?;
    }
    Ok(o.at)
}

/// SUBSCRIBE to one filter.
pub fn subscribe(out: &mut [u8], pid: u16, filter: &str, qos: u8) -> Result<usize, CodecError> {
    let mut o = Out { buf: out, at: 0 };
    o.header(kind::SUBSCRIBE << 4 | 0x02, 2 + 2 + filter.len() + 1)?;
    o.u16(pid)?;
    o.str(filter)?;
    o.bytes(&[qos])?;
    Ok(o.at)
}

/// The fixed and variable header of a PUBLISH (topic and packet id); the payload follows
/// them on the wire, so a pack is never copied into another buffer.
pub fn publish_header(out: &mut [u8], topic: &str, pid: Option<u16>, payload_len: usize) -> Result<usize, CodecError> {
    let qos: u8 = if pid.is_some() { 1 } else { 0 };
    let mut o = Out { buf: out, at: 0 };
    let len = 2 + topic.len() + if pid.is_some() { 2 } else { 0 } + payload_len;
    o.header(kind::PUBLISH << 4 | qos << 1, len)?;
    o.str(topic)?;
    if let Some(pid) = pid {
        o.u16(pid)?;
    }
    Ok(o.at)
}

/// PUBACK.
pub fn puback(pid: u16) -> [u8; 4] {
    let p = pid.to_be_bytes();
    [kind::PUBACK << 4, 2, p[0], p[1]]
}

/// PINGREQ.
pub const PINGREQ: [u8; 2] = [kind::PINGREQ << 4, 0];

/// DISCONNECT.
pub const DISCONNECT: [u8; 2] = [kind::DISCONNECT << 4, 0];

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> std::string::String {
        b.iter().map(|x| std::format!("{x:02x}")).collect()
    }

    #[test]
    fn packets_as_the_spec_lays_them_out() {
        let mut b = [0u8; 64];
        // 10 0e | 00 04 MQTT | 04 | 02 | 00 3c | 00 02 "n1"
        let n = connect(&mut b, "n1", None, 60).unwrap();
        assert_eq!(hex(&b[..n]), "100e00044d5154540402003c00026e31");
        // 10 17 | 00 04 MQTT | 04 | c2: user name, password, clean session | 00 3c | 00 02 "n1"
        // | 00 02 "n1" | 00 03 "p\0w" (binary data: any byte)
        let login = Login { username: "n1", password: b"p\0w" };
        let n = connect(&mut b, "n1", Some(login), 60).unwrap();
        assert_eq!(hex(&b[..n]), "101700044d51545404c2003c00026e3100026e310003700077");
        // 82 0a | 00 01 | 00 05 "a/b/c" | 01
        let n = subscribe(&mut b, 1, "a/b/c", 1).unwrap();
        assert_eq!(hex(&b[..n]), "820a00010005612f622f6301");
        // 32 | len = 2 + 3 + 2 + 200 = 207 = cf 01 | 00 03 "t/u" | 00 07
        let n = publish_header(&mut b, "t/u", Some(7), 200).unwrap();
        assert_eq!(hex(&b[..n]), "32cf010003742f750007");
        assert_eq!(puback(0x1234), [0x40, 0x02, 0x12, 0x34]);
        assert!(connect(&mut b[..10], "n1", None, 60).is_err(), "buffer too small");
        assert_eq!(connect(&mut b[..24], "n1", Some(login), 60), Err(CodecError::BufferFull));
        assert_eq!(std::format!("{login:?}"), "Login { username: \"n1\", .. }");
    }

    #[test]
    fn remaining_lengths_at_their_boundaries() {
        for (len, enc) in [
            (0usize, &[0x00u8][..]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let mut b = [0u8; 4];
            let n = put_len(&mut b, len).unwrap();
            assert_eq!(&b[..n], enc, "{len}");
            let mut packet = std::vec![0x30];
            packet.extend_from_slice(enc);
            assert_eq!(parse_header(&packet).unwrap().unwrap().len, len);
        }
        assert!(parse_header(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]).is_err(), "five length bytes");
        assert_eq!(parse_header(&[0x30, 0xFF]), Ok(None));
    }

    #[test]
    fn server_packets_parse_and_cut_packets_wait_for_more() {
        let publish = [0x32, 0x0b, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x09, 0xa1, 0x00, 0x01, 0xff];
        let cases: [(&[u8], Packet<'_>); 5] = [
            (&[0x20, 0x02, 0x00, 0x00], Packet::ConnAck { session_present: false, code: 0 }),
            (&[0x90, 0x03, 0x00, 0x01, 0x01], Packet::SubAck { pid: 1, code: 1 }),
            (&[0x40, 0x02, 0x00, 0x05], Packet::PubAck(5)),
            (&[0xd0, 0x00], Packet::PingResp),
            (&publish, Packet::Publish { topic: "a/b", qos: 1, pid: Some(9), payload: &[0xa1, 0x00, 0x01, 0xff] }),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse(bytes), Ok(Some((want, bytes.len()))));
            for cut in 0..bytes.len() {
                assert_eq!(parse(&bytes[..cut]), Ok(None), "{bytes:02x?} cut at {cut}");
            }
        }
    }

    #[test]
    fn malformed_server_packets_are_errors_not_panics() {
        for bad in [
            &[0x20, 0x03, 0, 0, 0][..],         // connack too long
            &[0x40, 0x01, 0],                   // puback too short
            &[0x32, 0x03, 0x00, 0x09, b'a'],    // topic longer than the packet
            &[0x32, 0x04, 0x00, 0x01, b'a', 0], // qos 1 without a whole packet id
            &[0x36, 0x02, 0x00, 0x00],          // qos 3
            &[0x90, 0x02, 0x00, 0x01],          // suback without a code
            &[0x30, 0x03, 0x00, 0x01, 0xff],    // topic not utf-8
        ] {
            assert!(parse(bad).is_err(), "{bad:02x?}");
        }
    }
}
