//! Fuzzes the firmware's MQTT session (`mekong_node::mqtt::session::Session::poll`) with
//! whatever a broker, or the line to it, may deliver: the receive buffer of 256 bytes, the
//! skipping of packets too large for it, and the state machine around the codec.
//!
//! The input is a sequence of steps: a control byte, then the bytes that arrive before the
//! next poll (1 to 64 of them, from the control byte's low six bits), while the clock moves
//! on by 0, 3, 6 or 9 s (its high two bits), so that timeouts, pings and reconnections are
//! reached too.
//!
//! Properties: no panic; a message handed out fits the receive buffer; and everything the
//! node writes is whole MQTT packets of the kinds a node sends.
#![no_main]

use embedded_io::{ErrorType, Read, ReadReady, Write};
use libfuzzer_sys::fuzz_target;
use mekong_node::mqtt::codec::{self, kind, Login};
use mekong_node::mqtt::session::{Event, Session, SessionConfig, RX_BYTES};

const CFG: SessionConfig<'static> = SessionConfig {
    client_id: "hau-01",
    login: Some(Login { username: "hau-01", password: b"0f1e2d3c" }),
    downlink: "mekong/v1/hau-01/down",
    keepalive_s: 10,
    answer_timeout_ms: 5_000,
    retry_ms: 2_000,
    refused_max_ms: 20_000,
};

/// The line to the broker: the node reads what has arrived so far, and writes are kept.
struct Line<'a> {
    incoming: &'a [u8],
    arrived: usize,
    read: usize,
    written: Vec<u8>,
}

impl ErrorType for Line<'_> {
    type Error = core::convert::Infallible;
}

impl Read for Line<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = buf.len().min(self.arrived - self.read);
        buf[..n].copy_from_slice(&self.incoming[self.read..self.read + n]);
        self.read += n;
        Ok(n)
    }
}

impl ReadReady for Line<'_> {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(self.read < self.arrived)
    }
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

fuzz_target!(|input: &[u8]| {
    // Control bytes and the bytes that arrive, split apart: the bytes of the line are what
    // follows each control byte.
    let mut steps = Vec::new();
    let mut incoming = Vec::new();
    let mut rest = input;
    while let Some((&control, tail)) = rest.split_first() {
        let n = usize::from(control & 0x3f) + 1;
        let (chunk, tail) = tail.split_at(n.min(tail.len()));
        incoming.extend_from_slice(chunk);
        steps.push((incoming.len(), u64::from(control >> 6) * 3_000));
        rest = tail;
    }
    let mut line = Line { incoming: &incoming, arrived: 0, read: 0, written: Vec::new() };
    let mut session = Session::new();
    let mut now_ms = 0;
    // A few polls after the last bytes, for what they set off.
    let last = steps.last().map_or(0, |s| s.0);
    for (arrived, advance) in steps.into_iter().chain([(last, 0), (last, 9_000), (last, 0)]) {
        line.arrived = arrived;
        now_ms += advance;
        match session.poll(&mut line, now_ms, &CFG) {
            Ok(Some(Event::Message { topic, payload })) => assert!(topic.len() + payload.len() <= RX_BYTES),
            Ok(Some(Event::Ready)) => {
                // A ready session takes a pack.
                let _ = session.publish(&mut line, "mekong/v1/hau-01/up", &[0x80], now_ms);
            }
            Ok(_) => {}
        }
    }
    let mut sent = &line.written[..];
    while !sent.is_empty() {
        let header = codec::parse_header(sent).expect("a well-formed header").expect("a whole header");
        assert!(
            [kind::CONNECT, kind::SUBSCRIBE, kind::PUBLISH, kind::PUBACK, kind::PINGREQ].contains(&header.kind),
            "the node sent a packet of kind {}",
            header.kind
        );
        sent = sent.get(header.total()..).expect("a whole packet");
    }
});
