//! One MQTT 3.1.1 session over a byte stream, driven by [`Session::poll`] from the main loop.
//!
//! The session connects (clean session: the outbox, not the broker, remembers what is
//! unacknowledged), subscribes to the node's downlink topic, keeps the connection alive with
//! PINGREQ, answers QoS 1 downlinks with PUBACK, and hands each downlink to the caller. Any
//! silence past its deadline or any malformed byte ends the session; the next poll starts a
//! new one (after a pause), and the node resends what is unacknowledged.
//!
//! Silence is judged on what the node *receives*: a node that publishes often never goes
//! quiet itself, but over a dead link (a modem that lost its carrier, a cut bridge) its
//! publishes vanish and no PUBACK comes back. After half the keep-alive without a byte from
//! the broker it pings, and without an answer it ends the session and connects again.
//!
//! A session lost before it was ready (no CONNACK, no SUBACK: the platform is down or
//! overloaded) is retried later each time, as the outbox resends packs
//! ([`mekong_schema::downlink::resend_after_ms`]): `retry_ms` after the first loss, doubling
//! with each loss in a row up to eight times that, plus up to half again drawn from the device
//! id and the connection count, so that a fleet that lost the platform at one moment does not
//! come back in lockstep. A session that reached ready resets it.
//!
//! A broker that refuses the node's credentials (CONNACK 4 or 5) will refuse them again until
//! someone provisions the node afresh or fixes the platform's registry, so the session does not
//! retry at its usual pace: each refusal in a row doubles the pause, up to
//! [`SessionConfig::refused_max_ms`], and a connection accepted resets it.
//!
//! It never blocks on reading: it takes what `ReadReady` says is there. Writes block until
//! the UART has taken the bytes, which at 115200 baud is 60 ms for a 700-byte pack.

use embedded_io::{Read, ReadReady, Write};

use mekong_schema::downlink;

use super::codec::{self, CodecError, Login, Packet};

/// Bytes kept for incoming packets: a downlink is about 30 bytes plus its topic, a list of
/// acknowledgements (downlink version 2) up to 172 bytes
/// ([`mekong_schema::downlink::MAX_BATCH`] packs).
pub const RX_BYTES: usize = 320;

/// The longest CONNECT a node sends: fixed header (3 bytes for this length), variable header
/// (10), then client id, user name and password of up to 64 bytes each, with their lengths.
const CONNECT_BYTES: usize = 3 + 10 + 3 * (2 + 64);

/// The session's settings.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig<'a> {
    /// MQTT client id: the device id.
    pub client_id: &'a str,
    /// User name and password for CONNECT (the broker ties the client id to the user name).
    pub login: Option<Login<'a>>,
    /// Topic to subscribe to: `mekong/v1/{id}/down`.
    pub downlink: &'a str,
    /// Keep-alive, seconds.
    pub keepalive_s: u16,
    /// How long to wait for CONNACK, SUBACK or PINGRESP, ms.
    pub answer_timeout_ms: u64,
    /// Pause before connecting again after a failure, ms.
    pub retry_ms: u64,
    /// Longest pause after refused credentials, ms: the pause doubles from `retry_ms` with
    /// each refusal in a row, up to this.
    pub refused_max_ms: u64,
}

/// The pause before the next CONNECT after the `lost`-th session in a row lost, the node having
/// connected `connects` times: the outbox's back-off with `retry_ms` as its base, and jitter
/// from the device id and `connects`.
pub fn reconnect_after_ms(cfg: &SessionConfig<'_>, lost: u16, connects: u32) -> u64 {
    let jitter = downlink::resend_jitter(downlink::resend_jitter_seed(cfg.client_id), u64::from(connects));
    downlink::resend_after_ms(cfg.retry_ms, lost, jitter)
}

/// What happened during a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// Connected and subscribed: packs may be published.
    Ready,
    /// A message on a subscribed topic.
    Message {
        /// Topic.
        topic: &'a str,
        /// Payload.
        payload: &'a [u8],
    },
    /// The broker's PUBACK of a published pack. mekong holds it until the pack is on disk, but
    /// the node keeps its packs by the downlink acknowledgements (downlink version 2), which
    /// name the pack; an older platform sends the PUBACK at once.
    PubAck(u16),
    /// The session ended; a new one starts after a pause.
    Lost(&'static str),
    /// The broker refused the node's credentials; the next try is in `retry_in_ms`.
    LoginRefused {
        /// The CONNACK's return code (4 or 5).
        code: u8,
        /// Pause before the next CONNECT, ms.
        retry_in_ms: u64,
    },
}

/// Why a publish was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishError<E> {
    /// Not connected and subscribed yet.
    NotReady,
    /// The stream failed; the session is lost.
    Io(E),
    /// The topic or payload does not fit MQTT.
    Codec(CodecError),
}

/// An event before it borrows the buffer.
#[derive(Debug, Clone, Copy)]
enum Step {
    Ready,
    Message(usize),
    PubAck(u16),
    Lost(&'static str),
    LoginRefused { code: u8, retry_in_ms: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting until the given uptime to connect.
    Idle { until_ms: u64 },
    /// CONNECT sent at the given time.
    Connecting { since_ms: u64 },
    /// SUBSCRIBE sent at the given time.
    Subscribing { since_ms: u64, pid: u16 },
    /// Connected and subscribed.
    Ready,
}

/// Counters since boot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionStats {
    /// Sessions started.
    pub connects: u32,
    /// Sessions that reached Ready.
    pub ready: u32,
    /// Sessions lost.
    pub lost: u32,
    /// Incoming packets too large for the buffer, skipped.
    pub oversized: u32,
    /// CONNECTs whose credentials the broker refused.
    pub refused_logins: u32,
}

/// The session.
#[derive(Debug)]
pub struct Session {
    state: State,
    rx: [u8; RX_BYTES],
    rx_len: usize,
    /// Bytes of the packet handed out by the last poll, dropped at the next.
    consumed: usize,
    /// Bytes of an oversized packet still to skip.
    skip: usize,
    next_pid: u16,
    last_tx_ms: u64,
    last_rx_ms: u64,
    ping_sent_ms: Option<u64>,
    /// Refused logins since the last accepted connection: the back-off's exponent.
    refused_in_a_row: u32,
    /// Sessions lost since the last one that reached ready: the reconnect back-off's.
    lost_in_a_row: u16,
    stats: SessionStats,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    /// A session that connects at the first poll.
    pub const fn new() -> Self {
        Self {
            state: State::Idle { until_ms: 0 },
            rx: [0; RX_BYTES],
            rx_len: 0,
            consumed: 0,
            skip: 0,
            next_pid: 0,
            last_tx_ms: 0,
            last_rx_ms: 0,
            ping_sent_ms: None,
            refused_in_a_row: 0,
            lost_in_a_row: 0,
            stats: SessionStats { connects: 0, ready: 0, lost: 0, oversized: 0, refused_logins: 0 },
        }
    }

    /// Whether packs may be published.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// Counters since boot.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    fn pid(&mut self) -> u16 {
        self.next_pid = self.next_pid.wrapping_add(1).max(1);
        self.next_pid
    }

    fn lose(&mut self, now_ms: u64, cfg: &SessionConfig<'_>, why: &'static str) -> Option<Step> {
        self.pause_after_loss(now_ms, cfg);
        Some(Step::Lost(why))
    }

    /// Ends the session; the next CONNECT waits the reconnect back-off.
    fn pause_after_loss(&mut self, now_ms: u64, cfg: &SessionConfig<'_>) {
        self.lost_in_a_row = self.lost_in_a_row.saturating_add(1);
        self.stats.lost += 1;
        self.state =
            State::Idle { until_ms: now_ms + reconnect_after_ms(cfg, self.lost_in_a_row, self.stats.connects) };
    }

    /// A refused login: the session ends, and the pause before the next CONNECT doubles with
    /// each refusal in a row.
    fn refused(&mut self, now_ms: u64, cfg: &SessionConfig<'_>, code: u8) -> Option<Step> {
        self.refused_in_a_row = self.refused_in_a_row.saturating_add(1);
        self.stats.refused_logins += 1;
        self.stats.lost += 1;
        let doubled = cfg.retry_ms.saturating_mul(1 << self.refused_in_a_row.min(32));
        let retry_in_ms = doubled.min(cfg.refused_max_ms.max(cfg.retry_ms));
        self.state = State::Idle { until_ms: now_ms + retry_in_ms };
        Some(Step::LoginRefused { code, retry_in_ms })
    }

    fn send<T: Write>(&mut self, io: &mut T, bytes: &[u8], now_ms: u64) -> Result<(), T::Error> {
        io.write_all(bytes)?;
        io.flush()?;
        self.last_tx_ms = now_ms;
        Ok(())
    }

    /// Does whatever is due at `now_ms` (uptime) and returns at most one event. Call it
    /// often; an `Err` is a failed stream (the session is then lost, and a later poll
    /// reconnects).
    pub fn poll<T>(&mut self, io: &mut T, now_ms: u64, cfg: &SessionConfig<'_>) -> Result<Option<Event<'_>>, T::Error>
    where
        T: Read + Write + ReadReady,
    {
        match self.step(io, now_ms, cfg) {
            Err(e) => {
                self.pause_after_loss(now_ms, cfg);
                Err(e)
            }
            Ok(None) => Ok(None),
            Ok(Some(Step::Ready)) => Ok(Some(Event::Ready)),
            Ok(Some(Step::PubAck(pid))) => Ok(Some(Event::PubAck(pid))),
            Ok(Some(Step::Lost(why))) => Ok(Some(Event::Lost(why))),
            Ok(Some(Step::LoginRefused { code, retry_in_ms })) => Ok(Some(Event::LoginRefused { code, retry_in_ms })),
            // Parse again to hand out the topic and payload borrowed from the buffer.
            Ok(Some(Step::Message(len))) => match codec::parse(&self.rx[..len]) {
                Ok(Some((Packet::Publish { topic, payload, .. }, _))) => Ok(Some(Event::Message { topic, payload })),
                _ => Ok(None),
            },
        }
    }

    fn step<T>(&mut self, io: &mut T, now_ms: u64, cfg: &SessionConfig<'_>) -> Result<Option<Step>, T::Error>
    where
        T: Read + Write + ReadReady,
    {
        // Forget the packet the previous poll handed out.
        self.rx.copy_within(self.consumed..self.rx_len, 0);
        self.rx_len -= self.consumed;
        self.consumed = 0;

        match self.state {
            State::Idle { until_ms } if now_ms >= until_ms => {
                self.rx_len = 0;
                self.skip = 0;
                self.ping_sent_ms = None;
                let mut b = [0u8; CONNECT_BYTES];
                match codec::connect(&mut b, cfg.client_id, cfg.login, cfg.keepalive_s) {
                    Ok(n) => self.send(io, &b[..n], now_ms)?,
                    Err(_) => return Ok(self.lose(now_ms, cfg, "client id or credentials too long")),
                }
                self.stats.connects += 1;
                self.last_rx_ms = now_ms;
                self.state = State::Connecting { since_ms: now_ms };
                return Ok(None);
            }
            State::Idle { .. } => return Ok(None),
            State::Connecting { since_ms } | State::Subscribing { since_ms, .. } => {
                if now_ms.saturating_sub(since_ms) > cfg.answer_timeout_ms {
                    return Ok(self.lose(now_ms, cfg, "no answer from the broker"));
                }
            }
            State::Ready => {
                if let Some(sent) = self.ping_sent_ms {
                    if now_ms.saturating_sub(sent) > cfg.answer_timeout_ms {
                        return Ok(self.lose(now_ms, cfg, "no answer to ping"));
                    }
                } else if now_ms.saturating_sub(self.last_tx_ms.min(self.last_rx_ms))
                    >= u64::from(cfg.keepalive_s) * 500
                {
                    // Half the keep-alive: the broker drops a client silent for 1.5 × it, and
                    // the node suspects a link on which the broker has been silent that long.
                    self.send(io, &codec::PINGREQ, now_ms)?;
                    self.ping_sent_ms = Some(now_ms);
                }
            }
        }

        // Take what has arrived.
        while io.read_ready()? {
            if self.skip > 0 {
                let mut junk = [0u8; 32];
                let want = self.skip.min(junk.len());
                let n = io.read(&mut junk[..want])?;
                self.skip -= n;
                if n == 0 {
                    break;
                }
                continue;
            }
            if self.rx_len == RX_BYTES {
                break;
            }
            let n = io.read(&mut self.rx[self.rx_len..])?;
            if n == 0 {
                break;
            }
            self.rx_len += n;
            self.last_rx_ms = now_ms;
        }

        let header = match codec::parse_header(&self.rx[..self.rx_len]) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(None),
            Err(_) => return Ok(self.lose(now_ms, cfg, "malformed packet from the broker")),
        };
        if header.total() > RX_BYTES {
            // Not for us (a node's downlinks are small): skip it rather than drop the session.
            self.stats.oversized += 1;
            self.skip = header.total() - self.rx_len;
            self.rx_len = 0;
            return Ok(None);
        }
        let (packet, len) = match codec::parse(&self.rx[..self.rx_len]) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(None),
            Err(_) => return Ok(self.lose(now_ms, cfg, "malformed packet from the broker")),
        };
        self.consumed = len;
        match (packet, self.state) {
            (Packet::ConnAck { code: 0, .. }, State::Connecting { .. }) => {
                self.refused_in_a_row = 0;
                let pid = self.pid();
                let mut b = [0u8; 96];
                match codec::subscribe(&mut b, pid, cfg.downlink, 1) {
                    Ok(n) => self.send(io, &b[..n], now_ms)?,
                    Err(_) => return Ok(self.lose(now_ms, cfg, "downlink topic too long")),
                }
                self.state = State::Subscribing { since_ms: now_ms, pid };
                Ok(None)
            }
            (Packet::ConnAck { code, .. }, State::Connecting { .. }) if codec::REFUSED_LOGIN.contains(&code) => {
                Ok(self.refused(now_ms, cfg, code))
            }
            (Packet::ConnAck { .. }, _) => Ok(self.lose(now_ms, cfg, "broker refused the connection")),
            (Packet::SubAck { pid, code }, State::Subscribing { pid: want, .. }) if pid == want => {
                if code == 0x80 {
                    return Ok(self.lose(now_ms, cfg, "broker refused the subscription"));
                }
                self.state = State::Ready;
                self.stats.ready += 1;
                self.lost_in_a_row = 0;
                Ok(Some(Step::Ready))
            }
            (Packet::PingResp, _) => {
                self.ping_sent_ms = None;
                Ok(None)
            }
            (Packet::PubAck(pid), _) => Ok(Some(Step::PubAck(pid))),
            (Packet::Publish { qos, pid, .. }, _) => {
                if let (1, Some(pid)) = (qos, pid) {
                    self.send(io, &codec::puback(pid), now_ms)?;
                }
                Ok(Some(Step::Message(len)))
            }
            _ => Ok(None),
        }
    }

    /// Publishes `payload` on `topic` with QoS 1; returns the packet id.
    pub fn publish<T: Write>(
        &mut self,
        io: &mut T,
        topic: &str,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<u16, PublishError<T::Error>> {
        if !self.is_ready() {
            return Err(PublishError::NotReady);
        }
        let pid = self.pid();
        let mut head = [0u8; 96];
        let n = codec::publish_header(&mut head, topic, Some(pid), payload.len()).map_err(PublishError::Codec)?;
        let sent = io.write_all(&head[..n]).and_then(|()| io.write_all(payload)).and_then(|()| io.flush());
        if let Err(e) = sent {
            self.state = State::Idle { until_ms: now_ms };
            self.stats.lost += 1;
            return Err(PublishError::Io(e));
        }
        self.last_tx_ms = now_ms;
        Ok(pid)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::vec::Vec;

    /// Both ends of a byte stream in memory: what the node wrote, what the "broker" sends.
    #[derive(Default)]
    pub(crate) struct Pipe {
        pub to_broker: Vec<u8>,
        pub to_node: VecDeque<u8>,
    }

    impl embedded_io::ErrorType for Pipe {
        type Error = core::convert::Infallible;
    }
    impl Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
            let n = buf.len().min(self.to_node.len()).min(7); // arbitrary chunks
            for b in buf.iter_mut().take(n) {
                *b = self.to_node.pop_front().unwrap_or(0);
            }
            Ok(n)
        }
    }
    impl ReadReady for Pipe {
        fn read_ready(&mut self) -> Result<bool, Self::Error> {
            Ok(!self.to_node.is_empty())
        }
    }
    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
            self.to_broker.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    impl Pipe {
        /// Packets the node sent since the last call, as (type, whole packet).
        pub(crate) fn sent(&mut self) -> Vec<(u8, Vec<u8>)> {
            let mut out = Vec::new();
            let mut rest = &self.to_broker[..];
            while let Ok(Some(h)) = codec::parse_header(rest) {
                out.push((h.kind, rest[..h.total()].to_vec()));
                rest = &rest[h.total()..];
            }
            assert!(rest.is_empty(), "a partial packet was written");
            self.to_broker.clear();
            out
        }
        pub(crate) fn give(&mut self, bytes: &[u8]) {
            self.to_node.extend(bytes);
        }
    }

    pub(crate) const CFG: SessionConfig<'static> = SessionConfig {
        client_id: "hau-01",
        login: Some(Login { username: "hau-01", password: b"0f1e2d3c" }),
        downlink: "mekong/v1/hau-01/down",
        keepalive_s: 60,
        answer_timeout_ms: 10_000,
        retry_ms: 5_000,
        refused_max_ms: 60_000,
    };

    /// A downlink PUBLISH as the broker forwards it.
    pub(crate) fn downlink(topic: &str, pid: u16, payload: &[u8]) -> Vec<u8> {
        let mut b = [0u8; 64];
        let n = codec::publish_header(&mut b, topic, Some(pid), payload.len()).unwrap();
        let mut p = b[..n].to_vec();
        p.extend_from_slice(payload);
        p
    }

    /// Polls until nothing more happens; returns the events (owned).
    fn run(s: &mut Session, io: &mut Pipe, now: u64) -> Vec<std::string::String> {
        run_with(s, io, now, &CFG)
    }

    fn run_with(s: &mut Session, io: &mut Pipe, now: u64, cfg: &SessionConfig<'_>) -> Vec<std::string::String> {
        let mut out = Vec::new();
        for _ in 0..10 {
            match s.poll(io, now, cfg).unwrap() {
                Some(e) => out.push(std::format!("{e:?}")),
                None if io.to_node.is_empty() => break,
                None => {}
            }
        }
        out
    }

    pub(crate) fn connect(s: &mut Session, io: &mut Pipe, now: u64) {
        s.poll(io, now, &CFG).unwrap();
        let sent = io.sent();
        assert_eq!(sent[0].0, codec::kind::CONNECT);
        io.give(&[0x20, 0x02, 0x00, 0x00]);
        assert!(run(s, io, now).is_empty());
        let sent = io.sent();
        assert_eq!(sent[0].0, codec::kind::SUBSCRIBE);
        let pid = [sent[0].1[2], sent[0].1[3]];
        io.give(&[0x90, 0x03, pid[0], pid[1], 0x01]);
        assert_eq!(run(s, io, now), ["Ready"]);
        assert!(s.is_ready());
    }

    #[test]
    fn connect_subscribe_publish_and_receive() {
        let (mut s, mut io) = (Session::new(), Pipe::default());
        connect(&mut s, &mut io, 0);
        let pid = s.publish(&mut io, "mekong/v1/hau-01/up", &[0x80], 10).unwrap();
        let sent = io.sent();
        assert_eq!(
            sent,
            [(
                codec::kind::PUBLISH,
                std::vec![
                    0x32, 0x18, 0, 19, b'm', b'e', b'k', b'o', b'n', b'g', b'/', b'v', b'1', b'/', b'h', b'a', b'u',
                    b'-', b'0', b'1', b'/', b'u', b'p', 0, pid as u8, 0x80
                ]
            )]
        );
        io.give(&[0x40, 0x02, 0x00, pid as u8]);
        io.give(&downlink("mekong/v1/hau-01/down", 0x0102, &[0xa1, 0x00, 0x01]));
        let events = run(&mut s, &mut io, 20);
        assert_eq!(
            events,
            [
                std::format!("PubAck({pid})"),
                "Message { topic: \"mekong/v1/hau-01/down\", payload: [161, 0, 1] }".into()
            ]
        );
        assert_eq!(
            io.sent(),
            [(codec::kind::PUBACK, std::vec![0x40, 0x02, 0x01, 0x02])],
            "QoS 1 downlink acknowledged"
        );
    }

    #[test]
    fn keepalive_and_a_silent_broker() {
        let (mut s, mut io) = (Session::new(), Pipe::default());
        connect(&mut s, &mut io, 0);
        s.poll(&mut io, 29_999, &CFG).unwrap();
        assert!(io.sent().is_empty());
        s.poll(&mut io, 30_000, &CFG).unwrap();
        assert_eq!(io.sent()[0].1, codec::PINGREQ);
        io.give(&[0xd0, 0x00]);
        s.poll(&mut io, 30_100, &CFG).unwrap();
        s.poll(&mut io, 60_100, &CFG).unwrap();
        assert_eq!(io.sent()[0].1, codec::PINGREQ);
        // No PINGRESP this time: lost, then a new CONNECT after the retry pause.
        assert_eq!(run(&mut s, &mut io, 70_101), ["Lost(\"no answer to ping\")"]);
        assert!(s.publish(&mut io, "t", &[], 70_102).is_err());
        let pause = reconnect_after_ms(&CFG, 1, 1);
        s.poll(&mut io, 70_101 + pause - 1, &CFG).unwrap();
        assert!(io.sent().is_empty());
        s.poll(&mut io, 70_101 + pause, &CFG).unwrap();
        assert_eq!(io.sent()[0].0, codec::kind::CONNECT);
        assert_eq!(s.stats().connects, 2);
    }

    #[test]
    fn a_node_that_publishes_but_hears_nothing_pings_and_gives_up() {
        let (mut s, mut io) = (Session::new(), Pipe::default());
        connect(&mut s, &mut io, 0);
        for t in [10_000, 20_000] {
            s.publish(&mut io, "t", &[1], t).unwrap();
            s.poll(&mut io, t, &CFG).unwrap();
        }
        assert!(io.sent().iter().all(|(kind, _)| *kind == codec::kind::PUBLISH), "no ping while it hears");
        s.poll(&mut io, 30_000, &CFG).unwrap();
        assert_eq!(io.sent(), [(codec::kind::PINGREQ, codec::PINGREQ.to_vec())], "30 s without a byte in");
        assert_eq!(run(&mut s, &mut io, 40_001), ["Lost(\"no answer to ping\")"]);
    }

    #[test]
    fn refusals_garbage_and_oversized_packets() {
        let (mut s, mut io) = (Session::new(), Pipe::default());
        s.poll(&mut io, 0, &CFG).unwrap();
        io.give(&[0x20, 0x02, 0x00, 0x03]); // server unavailable
        assert_eq!(run(&mut s, &mut io, 1), ["Lost(\"broker refused the connection\")"]);
        s.poll(&mut io, 1 + reconnect_after_ms(&CFG, 1, 1), &CFG).unwrap();
        assert!(io.sent().iter().any(|(kind, _)| *kind == codec::kind::CONNECT), "the usual pause");

        let (mut s, mut io) = (Session::new(), Pipe::default());
        connect(&mut s, &mut io, 0);
        // A 1000-byte retained message on our topic: skipped whole, the session goes on.
        let big = downlink("mekong/v1/hau-01/down", 3, &[0u8; 1000]);
        io.give(&big);
        io.give(&downlink("mekong/v1/hau-01/down", 4, &[0xa0]));
        let events = run(&mut s, &mut io, 1);
        assert_eq!(events, ["Message { topic: \"mekong/v1/hau-01/down\", payload: [160] }"]);
        assert_eq!(s.stats().oversized, 1);
        // Garbage: a remaining length of five bytes.
        io.give(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(run(&mut s, &mut io, 2), ["Lost(\"malformed packet from the broker\")"]);
    }

    /// The CONNECT a node sends, byte for byte as MQTT 3.1.1 lays it out (3.1): a 64-character
    /// device id as client id and user name, and its 64-digit password.
    #[test]
    fn connect_carries_the_user_name_and_password() {
        let id = "a".repeat(64);
        let password = [b'7'; 64];
        let cfg = SessionConfig {
            client_id: &id,
            login: Some(Login { username: &id, password: &password }),
            downlink: "mekong/v1/x/down",
            ..CFG
        };
        let (mut s, mut io) = (Session::new(), Pipe::default());
        s.poll(&mut io, 0, &cfg).unwrap();
        let sent = io.sent();
        let mut want = std::vec![0x10, 0xd0, 0x01]; // CONNECT; remaining length 10 + 3 × 66 = 208
        want.extend_from_slice(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04]); // protocol name and level
        want.push(0xc2); // flags: user name (0x80), password (0x40), clean session (0x02)
        want.extend_from_slice(&[0x00, 60]); // keep-alive
        for field in [id.as_bytes(), id.as_bytes(), &password[..]] {
            want.extend_from_slice(&[0x00, 64]);
            want.extend_from_slice(field);
        }
        assert_eq!(want.len(), CONNECT_BYTES, "the longest CONNECT fits its buffer exactly");
        assert_eq!(sent, [(codec::kind::CONNECT, want)]);

        // Without a login: no flags but clean session, no fields after the client id.
        let (mut s, mut io) = (Session::new(), Pipe::default());
        s.poll(&mut io, 0, &SessionConfig { login: None, ..CFG }).unwrap();
        assert_eq!(io.sent()[0].1, b"\x10\x12\x00\x04MQTT\x04\x02\x00\x3c\x00\x06hau-01");
    }

    /// Sessions lost in a row before ready (no CONNACK) wait longer each time, up to eight times
    /// the retry pause plus jitter; two nodes wait differently; a session that reaches ready
    /// starts the count again.
    #[test]
    fn lost_sessions_back_off_with_jitter() {
        let (mut s, mut io) = (Session::new(), Pipe::default());
        let mut now = 0;
        let mut pauses = std::vec::Vec::new();
        for lost in 1..=6u16 {
            s.poll(&mut io, now, &CFG).unwrap();
            assert_eq!(io.sent()[0].0, codec::kind::CONNECT, "a CONNECT at {now}");
            now += CFG.answer_timeout_ms + 1;
            assert_eq!(run(&mut s, &mut io, now), ["Lost(\"no answer from the broker\")"]);
            let pause = reconnect_after_ms(&CFG, lost, u32::from(lost));
            let base = CFG.retry_ms << (lost - 1).min(3);
            assert!((base..=base + base / 2).contains(&pause), "pause {pause} after {lost} lost");
            for t in [now, now + pause - 1] {
                s.poll(&mut io, t, &CFG).unwrap();
                assert!(io.sent().is_empty(), "nothing sent at {t}, within the pause {pause}");
            }
            now += pause;
            pauses.push(pause);
        }
        assert!(pauses[3] >= 8 * CFG.retry_ms && pauses[5] <= 12 * CFG.retry_ms, "capped: {pauses:?}");
        let other = SessionConfig { client_id: "hau-02", ..CFG };
        assert_ne!(
            (1..=6).map(|n| reconnect_after_ms(&CFG, n, u32::from(n))).collect::<std::vec::Vec<_>>(),
            (1..=6).map(|n| reconnect_after_ms(&other, n, u32::from(n))).collect::<std::vec::Vec<_>>(),
            "another node, other pauses"
        );
        connect(&mut s, &mut io, now);
        io.give(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]); // a malformed packet ends the session
        assert_eq!(run(&mut s, &mut io, now + 1), ["Lost(\"malformed packet from the broker\")"]);
        // Ready reset the count: the first pause again, not the eighth.
        s.poll(&mut io, now + 1 + reconnect_after_ms(&CFG, 1, 7), &CFG).unwrap();
        assert_eq!(io.sent()[0].0, codec::kind::CONNECT);
    }

    /// CONNACK 4 or 5: the session says so and waits twice as long after each refusal in a
    /// row, up to the cap; an accepted connection starts the count again.
    #[test]
    fn a_refused_login_backs_off() {
        let (mut s, mut io) = (Session::new(), Pipe::default());
        let mut now = 0;
        for (code, pause) in [(5u8, 10_000u64), (4, 20_000), (5, 40_000), (5, 60_000), (5, 60_000)] {
            s.poll(&mut io, now, &CFG).unwrap();
            assert_eq!(io.sent()[0].0, codec::kind::CONNECT, "a CONNECT at {now}");
            io.give(&[0x20, 0x02, 0x00, code]);
            let events = run(&mut s, &mut io, now + 1);
            assert_eq!(events, [std::format!("LoginRefused {{ code: {code}, retry_in_ms: {pause} }}")]);
            now += 1;
            // Nothing until the pause is over, however often it is polled.
            for t in [now, now + pause / 2, now + pause - 1] {
                s.poll(&mut io, t, &CFG).unwrap();
                assert!(io.sent().is_empty(), "nothing sent at {t}, {pause} ms after refusal");
            }
            now += pause;
        }
        assert_eq!(s.stats().refused_logins, 5);
        connect(&mut s, &mut io, now);
        // Accepted: the next refusal waits twice the retry again.
        io.give(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(run(&mut s, &mut io, now), ["Lost(\"malformed packet from the broker\")"]);
        let pause = reconnect_after_ms(&CFG, 1, 6);
        s.poll(&mut io, now + pause, &CFG).unwrap();
        assert_eq!(io.sent()[0].0, codec::kind::CONNECT);
        io.give(&[0x20, 0x02, 0x00, 0x05]);
        assert_eq!(run(&mut s, &mut io, now + pause + 1), ["LoginRefused { code: 5, retry_in_ms: 10000 }"]);
    }
}
