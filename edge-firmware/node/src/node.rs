//! A node, put together: samples go into the outbox, packs go out sealed over the MQTT
//! session, and downlinks free them and set the clock.
//!
//! The board calls [`Node::record`] with each sample and [`Node::poll`] from its main loop
//! (every millisecond or so), and prints the [`Report`]s on its console. Until the first
//! downlink sets the clock, the node sends a hello rather than readings ([`crate::pack`]).
//!
//! The node logs in to the broker with its device id as client id and user name and the
//! password of its config page, as 64 hex digits (`MqttPassword::to_hex`, what the registry's
//! digest is taken of).

use core::fmt::Write as _;

use embedded_io::{Read, ReadReady, Write};
use heapless::{Deque, String};
use mekong_schema::cose::MAX_OVERHEAD;
use mekong_schema::downlink::{self, Downlink, MAX_BATCH, MAX_REASON_LEN};
use mekong_schema::provision::PASSWORD_LEN;
use mekong_schema::topic::Uplink;

use crate::clock::Clock;
use crate::mqtt::codec::Login;
use crate::mqtt::{Event, Session, SessionConfig};
use crate::outbox::{Ack, Outbox, OutboxStats, PACK_BYTES};
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
    /// Resend a pack with no answer after this long, ms; doubled at each resend of the same
    /// pack up to eight times, plus jitter ([`mekong_schema::downlink::resend_after_ms`]).
    pub ack_timeout_ms: u64,
    /// Most samples in one pack; a backlog goes out in packs this large without waiting.
    pub max_records: usize,
    /// Packs in flight at once (at most [`WINDOW`]). Acknowledgements name their pack by
    /// sequence number, refusals by order ([`crate::outbox`]).
    pub max_in_flight: usize,
    /// MQTT keep-alive, seconds; the node also pings after half of it without a byte from
    /// the broker ([`crate::mqtt::session`]).
    pub keepalive_s: u16,
    /// How long to wait for CONNACK, SUBACK or PINGRESP, ms.
    pub answer_timeout_ms: u64,
    /// Pause before connecting again after a lost session, ms.
    pub retry_ms: u64,
    /// Longest pause after the broker refused the node's password, ms (the pause doubles
    /// from twice `retry_ms` with each refusal in a row): a refused login does not mend
    /// itself, so the node does not hammer the broker with it.
    pub refused_max_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            publish_every_ms: 60_000,
            ack_timeout_ms: 30_000,
            max_records: 16,
            max_in_flight: WINDOW,
            keepalive_s: 60,
            answer_timeout_ms: 10_000,
            retry_ms: 5_000,
            refused_max_ms: 300_000,
        }
    }
}

/// What the node did, for the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Connected to the broker and subscribed to the downlink topic.
    Online,
    /// The MQTT session ended.
    Offline(&'static str),
    /// The broker refused the node's credentials (CONNACK 4 or 5); the next try is in
    /// `retry_in_ms`.
    LoginRefused {
        /// The CONNACK's return code.
        code: u8,
        /// Pause before the next try, ms.
        retry_in_ms: u64,
    },
    /// A pack went out (attempt 1 is the first send).
    Published {
        /// The pack's number since boot.
        id: u32,
        /// The sequence number of this send.
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
        /// The pack's number since boot.
        id: u32,
        /// The sequence number the acknowledgement names (a signed pack's).
        seq: Option<u64>,
        /// Whether it was the hello.
        hello: bool,
        /// Readings the platform stored.
        readings: u32,
        /// Newest reading time, epoch ms.
        up_to_ms: i64,
    },
    /// An acknowledgement for no pack in flight (a late one, after a resend).
    AckUnmatched,
    /// The platform refused a pack; it is dropped.
    Refused {
        /// The pack's number since boot, if one was in flight.
        id: Option<u32>,
        /// The sequence number the refusal names, if any (a signed pack's whose envelope the
        /// platform could read).
        seq: Option<u64>,
        /// The platform's reason kind.
        reason: String<MAX_REASON_LEN>,
    },
    /// A downlink that is not a valid acknowledgement or refusal.
    BadDownlink,
    /// The sequence counter could not be stored: nothing is sent until it can.
    SeqStoreFailed,
    /// A pack could not be sealed or encoded (cannot happen with this firmware's buffers).
    SendFailed,
}

/// The MQTT password as CONNECT carries it (64 hex digits), kept out of `Debug`.
struct PasswordText([u8; 2 * PASSWORD_LEN]);

impl core::fmt::Debug for PasswordText {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("(secret)")
    }
}

/// One node.
#[derive(Debug)]
pub struct Node<S, Q> {
    client_id: String<64>,
    password: PasswordText,
    up: String<TOPIC_CAP>,
    down: String<TOPIC_CAP>,
    settings: Settings,
    clock: Clock,
    outbox: Outbox<QUEUE, WINDOW>,
    session: Session,
    sealer: S,
    seq: Sequencer<Q>,
    last_publish_ms: u64,
    /// The reports of a list of acknowledgements after its first, one per poll (its packs
    /// are freed at once).
    reports: Deque<Report, { MAX_BATCH - 1 }>,
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
            password: PasswordText(p.password.to_hex()),
            up,
            down,
            settings,
            clock: Clock::new(),
            // Nodes differ by id: their resends after a common outage spread out.
            outbox: Outbox::new(settings.max_in_flight).with_jitter_seed(downlink::resend_jitter_seed(p.device_id)),
            session: Session::new(),
            sealer,
            seq: Sequencer::open(seq_store, 64).ok()?,
            last_publish_ms: now_ms,
            reports: Deque::new(),
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
    /// anything worth a line on the console. `packed` sees each sample that goes into a pack,
    /// with the time (epoch ms) it goes out with. An `Err` is a failed link (already handled:
    /// the session reconnects).
    pub fn poll<T>(
        &mut self,
        link: &mut T,
        now_ms: u64,
        packed: impl FnMut(&Sample, i64),
    ) -> Result<Option<Report>, T::Error>
    where
        T: Read + Write + ReadReady,
    {
        if let Some(report) = self.reports.pop_front() {
            return Ok(Some(report));
        }
        let cfg = SessionConfig {
            client_id: &self.client_id,
            // The broker ties the client id to the user name: both are the device id.
            login: Some(Login { username: &self.client_id, password: &self.password.0 }),
            downlink: &self.down,
            keepalive_s: self.settings.keepalive_s,
            answer_timeout_ms: self.settings.answer_timeout_ms,
            retry_ms: self.settings.retry_ms,
            refused_max_ms: self.settings.refused_max_ms,
        };
        let report = match self.session.poll(link, now_ms, &cfg)? {
            Some(Event::Ready) => {
                self.outbox.resend_all();
                Some(Report::Online)
            }
            Some(Event::Lost(why)) => Some(Report::Offline(why)),
            Some(Event::LoginRefused { code, retry_in_ms }) => Some(Report::LoginRefused { code, retry_in_ms }),
            Some(Event::Message { topic, payload }) if topic == self.down.as_str() => {
                Some(apply_downlink(&mut self.clock, &mut self.outbox, &mut self.reports, payload, now_ms))
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
        if self.outbox.needs_hello(&self.clock) {
            self.outbox.push_hello();
        }
        let backlog = self.outbox.queued() >= self.settings.max_records;
        let due = now_ms.saturating_sub(self.last_publish_ms) >= self.settings.publish_every_ms;
        if let Some(clock) = self.clock.synced().filter(|_| backlog || due) {
            // An encoding failure cannot happen with this firmware's metrics; the samples
            // stay queued if it ever does.
            if let Ok(Some(_)) = self.outbox.pack(&clock, self.settings.max_records, packed) {
                self.last_publish_ms = now_ms;
            }
        }
        if !self.outbox.has_due(now_ms) {
            return Ok(None);
        }
        // A new number for every send, resends included ([`crate::seal`]).
        let Ok(seq) = self.seq.take() else { return Ok(Some(Report::SeqStoreFailed)) };
        let mut sealed = [0u8; PACK_BYTES + MAX_OVERHEAD];
        let sent = match self.outbox.transmit(now_ms, self.settings.ack_timeout_ms, seq, &mut self.sealer, &mut sealed)
        {
            Ok(Some(sent)) => sent,
            Ok(None) => return Ok(None),
            Err(_) => return Ok(Some(Report::SendFailed)),
        };
        let Some(payload) = sealed.get(..sent.len) else { return Ok(Some(Report::SendFailed)) };
        match self.session.publish(link, &self.up, payload, now_ms) {
            Ok(_) => Ok(Some(Report::Published {
                id: sent.id,
                seq: sent.seq,
                records: sent.records,
                bytes: sent.len,
                attempt: sent.attempt,
            })),
            // Sent again when the session is back.
            Err(_) => Ok(Some(Report::Offline("publish failed"))),
        }
    }
}

/// Applies a downlink; returns its report, and queues in `more` those of a list's other
/// packs.
fn apply_downlink<const Q: usize, const W: usize>(
    clock: &mut Clock,
    outbox: &mut Outbox<Q, W>,
    more: &mut Deque<Report, { MAX_BATCH - 1 }>,
    payload: &[u8],
    now_ms: u64,
) -> Report {
    let mut acked = |ack: Ack| match outbox.on_ack(ack) {
        Some(p) => Report::Acked {
            id: p.id,
            seq: ack.seq,
            hello: p.is_hello(),
            readings: ack.readings,
            up_to_ms: ack.up_to_ms,
        },
        None => Report::AckUnmatched,
    };
    match downlink::decode(payload) {
        Ok(Downlink::Ack { up_to_ms, readings, server_ms, seq }) => {
            clock.set(server_ms, now_ms);
            acked(Ack { up_to_ms, readings, seq })
        }
        // Downlink version 2, which the node's packs ask for: each pack named is freed now.
        Ok(Downlink::Acks { acks, server_ms }) => {
            clock.set(server_ms, now_ms);
            let mut first = None;
            for a in acks.as_slice() {
                let report = acked(Ack { up_to_ms: a.up_to_ms, readings: a.readings, seq: a.seq });
                if first.is_none() {
                    first = Some(report);
                } else {
                    // Room for the list's others: the queue is emptied before a downlink is read.
                    let _ = more.push_back(report);
                }
            }
            first.unwrap_or(Report::BadDownlink)
        }
        Ok(Downlink::Refused { reason, server_ms, seq }) => {
            // Even a refusal tells the time: the node can pack its readings, and learns from
            // their answers whether the refusal was about the node or about one pack.
            clock.set(server_ms, now_ms);
            let id = outbox.on_refusal(seq).map(|p| p.id);
            let mut r = String::new();
            let _ = r.push_str(reason);
            Report::Refused { id, seq, reason: r }
        }
        Err(_) => Report::BadDownlink,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::codec;
    use crate::mqtt::session::tests::{downlink, Pipe};
    use crate::provision::{MqttPassword, Periods};
    use crate::seal::Mac0;
    use crate::seq::RamStore;
    use mekong_schema::cose;
    use mekong_schema::senml::{decode_pack, DecodeOptions, Value};
    use mekong_schema::DeviceKind;
    use std::vec::Vec;

    const KEY: [u8; 32] = [1; 32];
    const PASSWORD: [u8; 32] = [0xc3; 32];
    const T0: i64 = 1_790_000_000_000;

    type TestNode = Node<Mac0<'static>, RamStore>;

    fn node() -> TestNode {
        let p = Provision {
            device_id: "hau-01",
            kind: DeviceKind::Water,
            key: KEY,
            broker_host: "localhost",
            broker_port: 1883,
            period_secs: Periods { air: 0, water: 60, traffic: 0 },
            password: MqttPassword(PASSWORD),
        };
        let settings = Settings { max_records: 4, ..Settings::default() };
        Node::new(&p, settings, Mac0::new(KEY, "hau-01"), RamStore::default(), 0).unwrap()
    }

    /// A publish as the platform reads it: the envelope opened with the node's key, the pack
    /// decoded at platform time `now_s`. (seq, [(name, value, time s)]).
    fn open(payload: &[u8], now_s: f64) -> (u64, Vec<(std::string::String, f64, f64)>) {
        let opened = cose::open(payload, &KEY).expect("a valid envelope");
        assert_eq!(opened.kid, b"hau-01");
        let mut out = Vec::new();
        decode_pack(opened.payload, DecodeOptions { now: now_s, max_records: 100 }, &mut |r| {
            let Value::Number(v) = r.value else { panic!() };
            let mut n = [0u8; 64];
            out.push((r.name_into(&mut n).into(), v, r.time));
            Ok(())
        })
        .unwrap();
        (opened.seq, out)
    }

    /// Reports, published payloads, and (value, time ms) of the samples packed.
    type Ran = (Vec<Report>, Vec<Vec<u8>>, Vec<(f64, i64)>);

    /// Polls until quiet, answering CONNECT and SUBSCRIBE like a broker; returns the
    /// reports, the payloads the node published, and the samples it packed.
    fn run(n: &mut TestNode, io: &mut Pipe, now: u64) -> Ran {
        let (mut reports, mut packs, mut packed) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..20 {
            if let Some(r) = n.poll(io, now, |s, t| packed.push((s.value, t))).unwrap() {
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
        (reports, packs, packed)
    }

    fn ack(up_to_ms: i64, readings: u32, server_ms: i64, seq: u64) -> Vec<u8> {
        let mut b = [0u8; 64];
        let n = Downlink::Ack { up_to_ms, readings, server_ms, seq: Some(seq) }.encode(&mut b).unwrap();
        downlink("mekong/v1/hau-01/down", 9, &b[..n])
    }

    #[test]
    fn a_hello_first_then_sealed_packs_with_absolute_times_matched_by_sequence_number() {
        let (mut n, mut io) = (node(), Pipe::default());
        n.record(Metric::WaterLevel, 182.5, 500);
        let (reports, packs, _) = run(&mut n, &mut io, 1_000);
        assert!(matches!(reports[..], [Report::Online, Report::Published { id: 0, seq: 0, records: 1, .. }]));
        // No reading before the clock is set: a hello, stored at its time of receipt.
        assert_eq!(open(&packs[0], 1_790_000_000.0), (0, std::vec![("uptime".into(), 1.0, 1_790_000_000.0)]));
        io.give(&ack(T0, 1, T0, 0));
        let (reports, _, _) = run(&mut n, &mut io, 1_100);
        assert_eq!(reports, [Report::Acked { id: 0, seq: Some(0), hello: true, readings: 1, up_to_ms: T0 }]);
        assert_eq!(n.clock().epoch_ms(1_100), Some(T0));

        // The sample queued before the clock was set goes out at its true time, sealed.
        let (reports, packs, packed) = run(&mut n, &mut io, 61_100);
        assert!(matches!(reports[..], [Report::Published { id: 1, seq: 1, records: 1, .. }]), "{reports:?}");
        let at = T0 - 600;
        assert_eq!(packed, [(182.5, at - at.rem_euclid(1000) + 1000 * i64::from(at.rem_euclid(1000) >= 500))]);
        assert_eq!(open(&packs[0], 1_790_000_100.0), (1, std::vec![("water_level".into(), 182.5, 1_789_999_999.0)]));

        // A backlog of 9 at max_records 4: two more packs at once, four in flight at most.
        for i in 0..9u64 {
            n.record(Metric::WaterLevel, 183.0 + i as f64, 62_000 + i * 1_000);
        }
        let (reports, packs, packed) = run(&mut n, &mut io, 71_000);
        assert_eq!(packs.len(), 2, "{reports:?}");
        assert_eq!(packed.len(), 8);
        assert_eq!(n.backlog(), (1, 3));
        // The answers come in any order; each frees the pack of its number.
        let newest = T0 + 61_000 + 7_000 - 1_100;
        io.give(&ack(newest, 4, T0 + 70_000, 3));
        io.give(&ack(T0 - 1_000, 1, T0 + 70_000, 1));
        let (reports, _, _) = run(&mut n, &mut io, 71_100);
        assert!(matches!(reports[..2], [Report::Acked { id: 3, .. }, Report::Acked { id: 1, .. }]), "{reports:?}");
        assert_eq!(n.backlog(), (1, 1), "pack 2 in flight; the last sample waits for the publish period");
    }

    #[test]
    fn a_silent_platform_gets_a_resend_with_a_new_number_and_a_refusal_drops_the_pack() {
        let (mut n, mut io) = (node(), Pipe::default());
        run(&mut n, &mut io, 0);
        io.give(&ack(T0, 1, T0, 0));
        run(&mut n, &mut io, 100);
        n.record(Metric::WaterLevel, 182.5, 1_000);
        let (_, first, _) = run(&mut n, &mut io, 60_000);
        // No answer for 30 s and this node's jitter: the same readings again, under a new number.
        let due = 60_000
            + downlink::resend_after_ms(30_000, 1, downlink::resend_jitter(downlink::resend_jitter_seed("hau-01"), 1));
        assert!(run(&mut n, &mut io, due - 1).0.is_empty(), "not yet");
        let (reports, again, _) = run(&mut n, &mut io, due);
        assert!(matches!(reports[..], [Report::Published { id: 1, seq: 2, attempt: 2, .. }]), "{reports:?}");
        let (one, two) = (open(&first[0], 1_790_000_100.0), open(&again[0], 1_790_000_100.0));
        assert_eq!((one.0, two.0), (1, 2));
        assert_eq!(one.1, two.1);
        let mut b = [0u8; 64];
        let len = Downlink::Refused { reason: "bad_time", server_ms: T0, seq: None }.encode(&mut b).unwrap();
        io.give(&downlink("mekong/v1/hau-01/down", 3, &b[..len]));
        let (reports, _, _) = run(&mut n, &mut io, due + 100);
        assert_eq!(
            reports,
            [Report::Refused { id: Some(1), seq: None, reason: String::try_from("bad_time").unwrap() }]
        );
        assert_eq!(n.outbox_stats().refused_packs, 1);
        let (reports, _, _) = run(&mut n, &mut io, 200_000);
        assert!(reports.is_empty(), "{reports:?}");
        io.give(&downlink("mekong/v1/hau-01/down", 4, &[0xff]));
        assert_eq!(run(&mut n, &mut io, 200_001).0, [Report::BadDownlink]);
    }

    fn refusal(reason: &str, seq: Option<u64>) -> Vec<u8> {
        let mut b = [0u8; 64];
        let n = Downlink::Refused { reason, server_ms: T0 + 70_000, seq }.encode(&mut b).unwrap();
        downlink("mekong/v1/hau-01/down", 9, &b[..n])
    }

    /// Two packs in flight; the platform refuses the second by its number: the second is
    /// dropped (by order, the first would have been), the first stays until its ack, and a
    /// refusal naming a number no pack went out with drops nothing.
    #[test]
    fn a_refusal_drops_the_pack_of_its_sequence_number() {
        let (mut n, mut io) = (node(), Pipe::default());
        run(&mut n, &mut io, 0);
        io.give(&ack(T0, 1, T0, 0));
        run(&mut n, &mut io, 100);
        for i in 0..8u64 {
            n.record(Metric::WaterLevel, 180.0 + i as f64, 1_000 + i * 1_000);
        }
        let (reports, packs, _) = run(&mut n, &mut io, 60_100);
        assert!(
            matches!(reports[..], [Report::Published { id: 1, seq: 1, .. }, Report::Published { id: 2, seq: 2, .. }]),
            "{reports:?}"
        );
        assert_eq!(packs.len(), 2);
        io.give(&refusal("unit_mismatch", Some(2)));
        let reason = || String::try_from("unit_mismatch").unwrap();
        assert_eq!(run(&mut n, &mut io, 60_200).0, [Report::Refused { id: Some(2), seq: Some(2), reason: reason() }]);
        io.give(&refusal("unit_mismatch", Some(7)));
        assert_eq!(run(&mut n, &mut io, 60_300).0, [Report::Refused { id: None, seq: Some(7), reason: reason() }]);
        assert_eq!(n.backlog().1, 1, "pack 1 still in flight");
        io.give(&ack(T0 + 4_000, 4, T0 + 70_000, 1));
        assert!(matches!(run(&mut n, &mut io, 60_400).0[..], [Report::Acked { id: 1, seq: Some(1), .. }]));
        assert_eq!((n.outbox_stats().refused_packs, n.backlog().1), (1, 0));
    }

    /// The node's packs say it reads lists of acknowledgements (downlink version 2); a list
    /// frees every pack it names at once, and the console gets a line per pack (one per
    /// poll), and one for a number no pack went out with.
    #[test]
    fn a_list_of_acknowledgements_frees_each_pack_it_names() {
        let (mut n, mut io) = (node(), Pipe::default());
        run(&mut n, &mut io, 0);
        io.give(&ack(T0, 1, T0, 0));
        run(&mut n, &mut io, 100);
        for i in 0..12u64 {
            n.record(Metric::WaterLevel, 180.0 + i as f64, 1_000 + i * 1_000);
        }
        let (reports, packs, _) = run(&mut n, &mut io, 60_100);
        assert_eq!(packs.len(), 3, "{reports:?}");
        for p in &packs {
            let opened = cose::open(p, &KEY).unwrap();
            let opts = DecodeOptions { now: 1_790_000_100.0, max_records: 100 };
            let info = mekong_schema::senml::decode_with_info(opened.payload, opts, &mut |_| Ok(())).unwrap();
            assert_eq!(info.downlink, downlink::VERSION_LIST);
        }
        let mut acks = downlink::AckList::new();
        for (seq, up_to_ms) in [(2, T0 - 52_000), (1, T0 - 56_000), (99, T0)] {
            acks.push(downlink::PackAck { up_to_ms, readings: 4, seq: Some(seq) }).unwrap();
        }
        let mut b = [0u8; 256];
        let len = Downlink::Acks { acks, server_ms: T0 + 70_000 }.encode(&mut b).unwrap();
        io.give(&downlink("mekong/v1/hau-01/down", 9, &b[..len]));
        let (reports, _, _) = run(&mut n, &mut io, 60_200);
        assert!(
            matches!(
                reports[..],
                [
                    Report::Acked { id: 2, seq: Some(2), readings: 4, .. },
                    Report::Acked { id: 1, seq: Some(1), readings: 4, .. },
                    Report::AckUnmatched,
                ]
            ),
            "{reports:?}"
        );
        assert_eq!(n.backlog(), (0, 1), "pack 3 still in flight");
        assert_eq!(n.clock().epoch_ms(60_200), Some(T0 + 70_000));
        let st = n.outbox_stats();
        assert_eq!((st.acked_packs, st.acked_records, st.unmatched), (3, 9, 1));
    }

    /// The CONNECT carries the device id as client id and user name and the config page's
    /// password as its 64 hex digits; a refused login is reported, nothing is sent during the
    /// back-off, and the password never shows in the node's `Debug` output.
    #[test]
    fn the_node_logs_in_with_its_password_and_backs_off_when_refused() {
        let (mut n, mut io) = (node(), Pipe::default());
        n.record(Metric::WaterLevel, 182.5, 0);
        assert_eq!(n.poll(&mut io, 0, |_, _| {}).unwrap(), None);
        // 10 5c | 00 04 MQTT 04 | c2 (user name, password, clean session) | 00 3c
        // | 00 06 hau-01 | 00 06 hau-01 | 00 40 c3c3... (the password's hex digits)
        let mut want = std::vec![0x10, 10 + 8 + 8 + 66, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xc2, 0, 60];
        for field in [&b"hau-01"[..], b"hau-01", &b"c3".repeat(32)] {
            want.extend_from_slice(&[0, field.len() as u8]);
            want.extend_from_slice(field);
        }
        assert_eq!(io.sent(), [(codec::kind::CONNECT, want)]);

        io.give(&[0x20, 0x02, 0x00, 0x05]);
        let refused = n.poll(&mut io, 100, |_, _| {}).unwrap();
        assert_eq!(refused, Some(Report::LoginRefused { code: 5, retry_in_ms: 10_000 }));
        n.record(Metric::WaterLevel, 182.6, 1_000);
        for t in [101, 5_000, 10_099] {
            assert_eq!(n.poll(&mut io, t, |_, _| {}).unwrap(), None);
            assert!(io.sent().is_empty(), "nothing sent at {t}");
        }
        assert_eq!(n.poll(&mut io, 10_100, |_, _| {}).unwrap(), None);
        assert_eq!(io.sent()[0].0, codec::kind::CONNECT, "tries again after the pause");
        io.give(&[0x20, 0x02, 0x00, 0x04]);
        let refused = n.poll(&mut io, 10_200, |_, _| {}).unwrap();
        assert_eq!(refused, Some(Report::LoginRefused { code: 4, retry_in_ms: 20_000 }));
        assert_eq!(n.backlog(), (2, 0), "the samples wait");

        let shown = std::format!("{n:?}");
        assert!(shown.contains("password: (secret)"), "{shown}");
        assert!(!shown.contains("c3c3") && !shown.contains("99, 51, 99, 51"), "{shown}");
    }
}
