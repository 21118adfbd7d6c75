//! A node, put together: samples go into the outbox, packs go out over the MQTT session, and
//! downlinks free them and set the clock.
//!
//! The board calls [`Node::record`] with each sample and [`Node::poll`] from its main loop
//! (every millisecond or so), and prints the [`Report`]s on its console.

use core::fmt::Write as _;

use embedded_io::{Read, ReadReady, Write};
use heapless::String;
use mekong_schema::downlink::{self, Downlink, MAX_REASON_LEN};
use mekong_schema::topic::Uplink;

use crate::clock::Clock;
use crate::mqtt::{Event, Session, SessionConfig};
use crate::outbox::{Ack, Outbox, OutboxStats};
use crate::provision::Provision;
use crate::sample::{Metric, Sample};
use crate::seal::Sealer;
use crate::seq::{SeqStore, Sequencer};

/// Samples the outbox holds before dropping the oldest: about two hours of one sensor at one
/// a minute, or 20 minutes of all three at 30 s.
pub const QUEUE: usize = 128;
/// Packs the outbox can hold in flight.
pub const WINDOW: usize = 4;
/// `mekong/v1/` + 64-character id + `/down`.
const TOPIC_CAP: usize = 80;

/// Timing and batching.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Publish at least this often when samples wait, ms.
    pub publish_every_ms: u64,
    /// Resend a pack with no answer after this long, ms.
    pub ack_timeout_ms: u64,
    /// Most samples in one pack; a backlog goes out in packs this large without waiting.
    pub max_records: usize,
    /// Packs in flight at once. 1 until downlinks carry sequence numbers: then every
    /// refusal names its pack for sure ([`crate::outbox`]).
    pub max_in_flight: usize,
    /// MQTT keep-alive, seconds.
    pub keepalive_s: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Self { publish_every_ms: 60_000, ack_timeout_ms: 30_000, max_records: 16, max_in_flight: 1, keepalive_s: 60 }
    }
}

/// What the node did, for the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Connected to the broker and subscribed to the downlink topic.
    Online,
    /// The MQTT session ended.
    Offline(&'static str),
    /// A pack went out (attempt 1 is the first send).
    Published {
        /// Sequence number.
        seq: u64,
        /// Records in it.
        records: u16,
        /// Bytes on the wire (payload).
        bytes: usize,
        /// Send number.
        attempt: u16,
    },
    /// The platform stored a pack.
    Acked {
        /// Its sequence number.
        seq: u64,
        /// Readings the platform stored.
        readings: u32,
        /// Newest reading time, epoch ms.
        up_to_ms: i64,
    },
    /// An acknowledgement for no pack in flight (a late one, after a resend).
    AckUnmatched,
    /// The platform refused a pack; it is dropped.
    Refused {
        /// Its sequence number, if it could be told.
        seq: Option<u64>,
        /// The platform's reason kind.
        reason: String<MAX_REASON_LEN>,
    },
    /// A downlink that is not a valid acknowledgement or refusal.
    BadDownlink,
    /// The sequence counter could not be stored: nothing is packed until it can.
    SeqStoreFailed,
}

/// One node.
#[derive(Debug)]
pub struct Node<S, Q> {
    client_id: String<64>,
    up: String<TOPIC_CAP>,
    down: String<TOPIC_CAP>,
    settings: Settings,
    clock: Clock,
    outbox: Outbox<QUEUE, WINDOW>,
    session: Session,
    sealer: S,
    seq: Sequencer<Q>,
    last_publish_ms: u64,
}

impl<S: Sealer, Q: SeqStore> Node<S, Q> {
    /// A node with the identity of its config page; opens the sequence counter (one flash
    /// write). `None` if the counter's store fails.
    pub fn new(p: &Provision<'_>, settings: Settings, sealer: S, seq_store: Q, now_ms: u64) -> Option<Self> {
        let mut client_id = String::new();
        client_id.push_str(p.device_id).ok()?;
        let mut up = String::new();
        write!(up, "{}", Uplink(p.device_id)).ok()?;
        let mut down = String::new();
        write!(down, "{}", downlink::Topic(p.device_id)).ok()?;
        Some(Self {
            client_id,
            up,
            down,
            settings,
            clock: Clock::new(),
            outbox: Outbox::new(settings.max_in_flight),
            session: Session::new(),
            sealer,
            seq: Sequencer::open(seq_store, 64).ok()?,
            last_publish_ms: now_ms,
        })
    }

    /// Queues a sample taken at uptime `at_ms`.
    pub fn record(&mut self, metric: Metric, value: f64, at_ms: u64) {
        self.outbox.push(Sample { metric, value, at_ms });
    }

    /// The wall clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Outbox counters.
    pub fn outbox_stats(&self) -> OutboxStats {
        self.outbox.stats()
    }

    /// Samples waiting and packs in flight.
    pub fn backlog(&self) -> (usize, usize) {
        (self.outbox.queued(), self.outbox.in_flight().len())
    }

    /// The uplink topic.
    pub fn uplink_topic(&self) -> &str {
        &self.up
    }

    /// Runs the session and the outbox at uptime `now_ms`; returns what happened, if
    /// anything worth a line on the console. An `Err` is a failed link (already handled: the
    /// session reconnects).
    pub fn poll<T>(&mut self, link: &mut T, now_ms: u64) -> Result<Option<Report>, T::Error>
    where
        T: Read + Write + ReadReady,
    {
        let cfg = SessionConfig {
            client_id: &self.client_id,
            downlink: &self.down,
            keepalive_s: self.settings.keepalive_s,
            answer_timeout_ms: 10_000,
            retry_ms: 5_000,
        };
        let report = match self.session.poll(link, now_ms, &cfg)? {
            Some(Event::Ready) => {
                self.outbox.resend_all();
                Some(Report::Online)
            }
            Some(Event::Lost(why)) => Some(Report::Offline(why)),
            Some(Event::Message { topic, payload }) if topic == self.down.as_str() => {
                Some(apply_downlink(&mut self.clock, &mut self.outbox, payload, now_ms))
            }
            Some(_) => None,
            None => None,
        };
        if report.is_some() {
            return Ok(report);
        }
        if !self.session.is_ready() {
            return Ok(None);
        }
        let backlog = self.outbox.queued() >= self.settings.max_records;
        let due = now_ms.saturating_sub(self.last_publish_ms) >= self.settings.publish_every_ms;
        if (backlog || due) && self.outbox.can_pack(&self.clock) {
            let Ok(seq) = self.seq.take() else { return Ok(Some(Report::SeqStoreFailed)) };
            // An encoding failure cannot happen with this firmware's metrics; the samples
            // stay queued if it ever does.
            let _ = self.outbox.pack(&self.clock, now_ms, seq, &mut self.sealer, self.settings.max_records);
            self.last_publish_ms = now_ms;
        }
        let Some(p) = self.outbox.next_to_send(now_ms, self.settings.ack_timeout_ms) else { return Ok(None) };
        let (seq, records, attempt, bytes) = (p.seq, p.records, p.attempts, p.bytes().len());
        match self.session.publish(link, &self.up, p.bytes(), now_ms) {
            Ok(_) => Ok(Some(Report::Published { seq, records, bytes, attempt })),
            // Sent again when the session is back.
            Err(_) => Ok(Some(Report::Offline("publish failed"))),
        }
    }
}

fn apply_downlink<const Q: usize, const W: usize>(
    clock: &mut Clock,
    outbox: &mut Outbox<Q, W>,
    payload: &[u8],
    now_ms: u64,
) -> Report {
    match downlink::decode(payload) {
        Ok(Downlink::Ack { up_to_ms, readings, server_ms }) => {
            // Matched before the clock moves: a pack with relative times is matched as the
            // only one in flight, whatever the clock says.
            let freed = outbox.on_ack(Ack { up_to_ms, readings, seq: None });
            clock.set(server_ms, now_ms);
            match freed {
                Some(p) => Report::Acked { seq: p.seq, readings, up_to_ms },
                None => Report::AckUnmatched,
            }
        }
        Ok(Downlink::Refused { reason, server_ms }) => {
            clock.set(server_ms, now_ms);
            let seq = outbox.on_refusal(None).map(|p| p.seq);
            let mut r = String::new();
            let _ = r.push_str(reason);
            Report::Refused { seq, reason: r }
        }
        Err(_) => Report::BadDownlink,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::codec;
    use crate::mqtt::session::tests::{downlink, Pipe};
    use crate::provision::Periods;
    use crate::seal::Unsigned;
    use crate::seq::RamStore;
    use mekong_schema::senml::{decode_pack, DecodeOptions};
    use mekong_schema::DeviceKind;

    const KEY: [u8; 32] = [1; 32];
    const T0: i64 = 1_790_000_000_000;

    fn node() -> Node<Unsigned, RamStore> {
        let p = Provision {
            device_id: "hau-01",
            kind: DeviceKind::Water,
            key: &KEY,
            broker_host: "localhost",
            broker_port: 1883,
            periods: Periods { air_s: 0, water_s: 60, traffic_s: 0 },
        };
        Node::new(&p, Settings { max_records: 4, ..Settings::default() }, Unsigned, RamStore::default(), 0).unwrap()
    }

    /// Polls until quiet, answering CONNECT and SUBSCRIBE like a broker; returns the
    /// reports and the payloads the node published.
    fn run(
        n: &mut Node<Unsigned, RamStore>,
        io: &mut Pipe,
        now: u64,
    ) -> (std::vec::Vec<Report>, std::vec::Vec<std::vec::Vec<u8>>) {
        let (mut reports, mut packs) = (std::vec::Vec::new(), std::vec::Vec::new());
        for _ in 0..20 {
            if let Some(r) = n.poll(io, now).unwrap() {
                reports.push(r);
            }
            for (kind, bytes) in io.sent() {
                match kind {
                    codec::kind::CONNECT => io.give(&[0x20, 0x02, 0, 0]),
                    codec::kind::SUBSCRIBE => io.give(&[0x90, 0x03, bytes[2], bytes[3], 1]),
                    codec::kind::PINGREQ => io.give(&[0xd0, 0x00]),
                    codec::kind::PUBLISH => {
                        let Ok(Some((codec::Packet::Publish { topic, payload, pid, .. }, _))) = codec::parse(&bytes)
                        else {
                            panic!()
                        };
                        assert_eq!(topic, "mekong/v1/hau-01/up");
                        packs.push(payload.to_vec());
                        let pid = pid.unwrap().to_be_bytes();
                        io.give(&[0x40, 0x02, pid[0], pid[1]]);
                    }
                    _ => {}
                }
            }
        }
        (reports, packs)
    }

    fn ack(up_to_ms: i64, readings: u32, server_ms: i64) -> std::vec::Vec<u8> {
        let mut b = [0u8; 64];
        let n = Downlink::Ack { up_to_ms, readings, server_ms }.encode(&mut b).unwrap();
        downlink("mekong/v1/hau-01/down", 9, &b[..n])
    }

    #[test]
    fn first_pack_is_relative_its_ack_sets_the_clock_and_the_next_is_absolute() {
        let (mut n, mut io) = (node(), Pipe::default());
        let (reports, _) = run(&mut n, &mut io, 0);
        assert_eq!(reports, [Report::Online]);
        n.record(Metric::WaterLevel, 182.5, 60_000);
        let (reports, packs) = run(&mut n, &mut io, 60_500);
        assert_eq!(reports, [Report::Published { seq: 0, records: 1, bytes: packs[0].len(), attempt: 1 }]);
        // Relative time (taken 0.5 s before sending: -1 s); the platform resolves it
        // against its time of receipt.
        let mut times = std::vec::Vec::new();
        decode_pack(&packs[0], DecodeOptions { now: 1_790_000_000.0, max_records: 10 }, &mut |r| {
            times.push(r.time);
            Ok(())
        })
        .unwrap();
        assert!(times[0] >= 1_789_999_999.0, "{times:?}");
        // The platform says: stored, at T0 - 1000, and it is T0 now.
        io.give(&ack(T0 - 1_000, 1, T0));
        let (reports, _) = run(&mut n, &mut io, 61_000);
        assert_eq!(reports, [Report::Acked { seq: 0, readings: 1, up_to_ms: T0 - 1_000 }]);
        assert_eq!(n.clock().epoch_ms(61_000), Some(T0));
        assert_eq!(n.backlog(), (0, 0));

        // A backlog of 5 at max_records 4 goes out at once, absolute this time.
        for i in 0..5u64 {
            n.record(Metric::WaterLevel, 183.0 + i as f64, 62_000 + i * 1_000);
        }
        let (reports, packs) = run(&mut n, &mut io, 67_000);
        assert_eq!(reports.len(), 1, "one pack in flight at a time: {reports:?}");
        assert_eq!(packs.len(), 1);
        let newest = T0 + (65_000 - 61_000);
        io.give(&ack(newest, 4, T0 + 6_000));
        let (reports, _) = run(&mut n, &mut io, 67_000);
        assert_eq!(reports, [Report::Acked { seq: 1, readings: 4, up_to_ms: newest }]);
        // The fifth waits for the publish period.
        let (reports, packs) = run(&mut n, &mut io, 127_000);
        assert!(matches!(reports[..], [Report::Published { seq: 2, records: 1, .. }]), "{reports:?}");
        assert_eq!(packs.len(), 1);
    }

    #[test]
    fn a_refusal_drops_the_pack_and_a_silent_platform_gets_a_resend() {
        let (mut n, mut io) = (node(), Pipe::default());
        run(&mut n, &mut io, 0);
        n.record(Metric::WaterLevel, 182.5, 1_000);
        let (_, first) = run(&mut n, &mut io, 60_000);
        // No answer for 30 s: the same bytes again.
        let (reports, again) = run(&mut n, &mut io, 90_000);
        assert!(matches!(reports[..], [Report::Published { seq: 0, attempt: 2, .. }]), "{reports:?}");
        assert_eq!(again, first);
        let mut b = [0u8; 64];
        let len = Downlink::Refused { reason: "bad_time", server_ms: T0 }.encode(&mut b).unwrap();
        io.give(&downlink("mekong/v1/hau-01/down", 3, &b[..len]));
        let (reports, _) = run(&mut n, &mut io, 90_100);
        assert_eq!(reports, [Report::Refused { seq: Some(0), reason: String::try_from("bad_time").unwrap() }]);
        assert_eq!(n.outbox_stats().refused_packs, 1);
        let (reports, _) = run(&mut n, &mut io, 200_000);
        assert!(reports.is_empty(), "{reports:?}");
        io.give(&downlink("mekong/v1/hau-01/down", 4, &[0xff]));
        assert_eq!(run(&mut n, &mut io, 200_001).0, [Report::BadDownlink]);
    }
}
