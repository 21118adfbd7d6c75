//! Store and forward: samples wait here until the platform says they are on its disk.
//!
//! Two bounded stages, no allocator:
//!
//! 1. the **queue** of samples not yet packed (`Q` samples). When it is full, the oldest
//!    sample is dropped and counted; the count goes out as a `dropped` record in the next pack,
//!    so the platform knows the gap is the node's and not the network's;
//! 2. the **packs in flight** (`W` packs, each kept as its plain SenML bytes). A pack leaves
//!    only when the platform acknowledges it (`Ack` on `mekong/v1/{id}/down`, sent after the
//!    readings are flushed to disk; it names the pack, which a PUBACK does not), or refuses it (a refused
//!    pack would be refused again: it is dropped and counted). A pack with no answer is sent
//!    again after a timeout.
//!
//! **Every send is a new transmission.** [`Outbox::transmit`] seals the pack with the
//! sequence number it is given, a new one each time ([`crate::seal`] says why), and the pack
//! remembers every number it went out with. The readings inside never change, so the platform
//! stores them once however often they arrive.
//!
//! **Matching a downlink to a pack.** An acknowledgement names the sequence number of the
//! transmission it answers (label 5): the pack that went out with that number is freed, even
//! if a later send of it is still unanswered. Without a number (a platform device without a
//! key), the newest reading time `up_to_ms` names the pack. A refusal of a signed pack names
//! its sequence number too, and drops exactly the pack that went out with it; a number that no
//! pack in flight went out with (a stale refusal, or a forged one: the number of a refusal is
//! not authenticated) drops nothing. Only a refusal without a number (a platform older than
//! label 5 on refusals, or a pack whose envelope the platform could not read) is matched by
//! order: the platform answers the packs of one connection in the order it received them, so
//! it answers the oldest transmission still unanswered, that is the smallest outstanding
//! sequence number (every answer marks the numbers below its own as answered or lost). That
//! fallback is exact unless the broker silently dropped a pack under overload just before a
//! refused one; then a good pack may be dropped in its place (counted as refused). A
//! reconnection marks every earlier transmission as lost.
//!
//! **Resends back off.** A pack with no answer goes again after `timeout_ms` the first time,
//! and after twice as long at each send after that, up to eight times `timeout_ms`; to each
//! wait is added up to half of it again, chosen from the node's jitter seed (its device id,
//! [`Outbox::with_jitter_seed`]) and the number of the send. The rule is the wire contract's
//! ([`mekong_schema::downlink::resend_after_ms`]), so gateways and the platform's load
//! generator back off alike. A fleet that lost the platform at once (a broker restart, an
//! overload) so comes back spread out instead of resending in lockstep, and a slow platform
//! gets fewer resends from each node the longer it stays slow, not more.
//!
//! **Before the clock is set** no readings are packed; the node sends a hello instead
//! ([`crate::pack::encode_hello`]), encoded again at each send, and the first downlink of any
//! kind sets the clock.

use heapless::{Deque, Vec};
use mekong_schema::downlink::{resend_after_ms, resend_jitter};
use mekong_schema::senml::EncodeError;

use crate::clock::{Clock, Synced};
use crate::pack::{self, MAX_RECORDS};
use crate::sample::Sample;
use crate::seal::{SealError, Sealer};

/// Room for one plain pack: 24 records of about 25 bytes.
pub const PACK_BYTES: usize = 768;

/// Sends of one pack before it is given up (and counted as expired): a pack that nobody ever
/// answers (a topic the platform does not read) must not block the outbox forever.
pub const MAX_ATTEMPTS: u16 = 10;

/// A pack sent (or about to be) and not yet answered.
#[derive(Debug, Clone)]
pub struct InFlight {
    /// The pack's number since boot (for the console; not on the wire).
    pub id: u32,
    /// Newest reading time the platform will store, epoch ms; `None` for a hello.
    pub up_to_ms: Option<i64>,
    /// Records in the pack.
    pub records: u16,
    /// When it was last sent (uptime ms); `None`: due now.
    pub sent_at_ms: Option<u64>,
    /// How many times it was sent.
    pub attempts: u16,
    /// How long after `sent_at_ms` it is sent again without an answer ([`resend_after_ms`]).
    pub wait_ms: u64,
    seqs: Vec<u64, { MAX_ATTEMPTS as usize }>,
    bytes: Vec<u8, PACK_BYTES>,
}

impl InFlight {
    /// The plain pack (empty for a hello, which is encoded at each send).
    pub fn plain(&self) -> &[u8] {
        &self.bytes
    }

    /// The sequence numbers it went out with, oldest first.
    pub fn seqs(&self) -> &[u64] {
        &self.seqs
    }

    /// Whether this is the hello pack.
    pub fn is_hello(&self) -> bool {
        self.up_to_ms.is_none()
    }
}

/// One send, as [`Outbox::transmit`] made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The pack's number since boot.
    pub id: u32,
    /// The sequence number it carries.
    pub seq: u64,
    /// Records in it.
    pub records: u16,
    /// Which send of the pack this is (1: the first).
    pub attempt: u16,
    /// Bytes of the sealed pack (the MQTT payload).
    pub len: usize,
}

/// An acknowledgement, as the downlink gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Newest reading time of the acknowledged pack, epoch ms.
    pub up_to_ms: i64,
    /// Readings stored.
    pub readings: u32,
    /// The sequence number of the transmission, for a signed pack.
    pub seq: Option<u64>,
}

/// Counters since boot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutboxStats {
    /// Samples dropped because the queue was full.
    pub dropped: u32,
    /// Packs acknowledged.
    pub acked_packs: u32,
    /// Records in acknowledged packs.
    pub acked_records: u32,
    /// Packs refused by the platform (dropped, not resent).
    pub refused_packs: u32,
    /// Packs given up after [`MAX_ATTEMPTS`] sends without an answer.
    pub expired_packs: u32,
    /// Sends after the first.
    pub resends: u32,
    /// Downlinks that matched no pack (late duplicates after a resend).
    pub unmatched: u32,
}

/// Why a pack could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The hello could not be encoded (cannot happen: one short record).
    Encode(EncodeError),
    /// The seal does not fit the buffer.
    Seal(SealError),
}

/// The outbox: `Q` queued samples, `W` packs in flight.
#[derive(Debug)]
pub struct Outbox<const Q: usize, const W: usize> {
    queue: Deque<Sample, Q>,
    in_flight: Vec<InFlight, W>,
    max_in_flight: usize,
    dropped_unreported: u32,
    next_id: u32,
    /// Sequence numbers at or below this are answered, or will never be.
    answered: Option<u64>,
    /// The last sequence number sent.
    last_seq: Option<u64>,
    /// Spreads the resends of a fleet ([`resend_jitter`]).
    jitter_seed: u32,
    stats: OutboxStats,
}

impl<const Q: usize, const W: usize> Outbox<Q, W> {
    /// An empty outbox that keeps at most `max_in_flight` (1 to `W`) packs in flight.
    pub fn new(max_in_flight: usize) -> Self {
        Self {
            queue: Deque::new(),
            in_flight: Vec::new(),
            max_in_flight: max_in_flight.clamp(1, W),
            dropped_unreported: 0,
            next_id: 0,
            answered: None,
            last_seq: None,
            jitter_seed: 0,
            stats: OutboxStats::default(),
        }
    }

    /// Sets the seed of the resend jitter: something that differs from node to node, such as
    /// a checksum of the device id, so that nodes do not resend in lockstep.
    pub fn with_jitter_seed(mut self, seed: u32) -> Self {
        self.jitter_seed = seed;
        self
    }

    /// Counters since boot.
    pub fn stats(&self) -> OutboxStats {
        self.stats
    }

    /// Samples waiting to be packed.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Packs waiting for an answer.
    pub fn in_flight(&self) -> &[InFlight] {
        &self.in_flight
    }

    /// Queues a sample; when the queue is full the oldest sample makes room and is counted.
    pub fn push(&mut self, sample: Sample) {
        if self.queue.is_full() {
            self.queue.pop_front();
            self.stats.dropped = self.stats.dropped.saturating_add(1);
            self.dropped_unreported = self.dropped_unreported.saturating_add(1);
        }
        // Room was made above.
        let _ = self.queue.push_back(sample);
    }

    /// Whether a new pack of readings may be made now: the clock is set, samples wait and a
    /// slot is free.
    pub fn can_pack(&self, clock: &Clock) -> bool {
        clock.is_set() && !self.queue.is_empty() && self.in_flight.len() < self.max_in_flight
    }

    /// Whether the node should send a hello: it does not know the date and nothing is in
    /// flight (so nor is a hello).
    pub fn needs_hello(&self, clock: &Clock) -> bool {
        !clock.is_set() && self.in_flight.is_empty()
    }

    /// Puts the hello in flight, due now.
    pub fn push_hello(&mut self) {
        let hello = self.entry(None, 1, Vec::new());
        let _ = self.in_flight.push(hello);
    }

    fn entry(&mut self, up_to_ms: Option<i64>, records: u16, bytes: Vec<u8, PACK_BYTES>) -> InFlight {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        InFlight { id, up_to_ms, records, sent_at_ms: None, attempts: 0, wait_ms: 0, seqs: Vec::new(), bytes }
    }

    /// Packs up to `max_records` of the oldest samples (plus the `dropped` report) with their
    /// times from `clock`, and keeps the pack in flight, due to be sent. `packed` sees every
    /// sample that went in, with the time (epoch ms) the platform will store it at.
    pub fn pack(
        &mut self,
        clock: &Synced,
        max_records: usize,
        mut packed: impl FnMut(&Sample, i64),
    ) -> Result<Option<&InFlight>, EncodeError> {
        if self.queue.is_empty() || self.in_flight.len() >= self.max_in_flight {
            return Ok(None);
        }
        let mut take = max_records.clamp(1, MAX_RECORDS - 1).min(self.queue.len());
        let mut bytes: Vec<u8, PACK_BYTES> = Vec::new();
        let _ = bytes.resize(PACK_BYTES, 0);
        let done = loop {
            let mut batch: Vec<Sample, { MAX_RECORDS - 1 }> = Vec::new();
            for s in self.queue.iter().take(take) {
                let _ = batch.push(*s);
            }
            match pack::encode(&batch, self.dropped_unreported, clock, &mut bytes) {
                Ok(p) => break p,
                // Values that encode long (fractional floats): fewer per pack.
                Err(EncodeError::BufferFull) if take > 1 => take /= 2,
                Err(e) => return Err(e),
            }
        };
        bytes.truncate(done.len);
        for _ in 0..take {
            if let Some(s) = self.queue.pop_front() {
                packed(&s, pack::time_ms(clock, s.at_ms));
            }
        }
        self.dropped_unreported = 0;
        let entry = self.entry(Some(done.up_to_ms), done.records, bytes);
        // The check at the top made room.
        let _ = self.in_flight.push(entry);
        Ok(self.in_flight.last())
    }

    fn due_at(&self, now_ms: u64) -> Option<usize> {
        self.in_flight.iter().position(|p| p.sent_at_ms.is_none_or(|t| now_ms.saturating_sub(t) >= p.wait_ms))
    }

    /// Whether a pack is due at `now_ms`: one never sent, or one unanswered for its wait
    /// (`timeout_ms` backed off with its sends, [`resend_after_ms`], fixed when it was sent).
    /// Packs sent [`MAX_ATTEMPTS`] times without an answer are given up here.
    pub fn has_due(&mut self, now_ms: u64) -> bool {
        while let Some(i) = self.due_at(now_ms).filter(|&i| self.in_flight[i].attempts >= MAX_ATTEMPTS) {
            self.in_flight.remove(i);
            self.stats.expired_packs += 1;
        }
        self.due_at(now_ms).is_some()
    }

    /// Seals the next due pack with `seq` (a number never used before) into `out` and marks
    /// it sent at `now_ms`, to be sent again after `timeout_ms` backed off with its sends
    /// ([`resend_after_ms`]) if no answer comes; `None` if no pack is due. A hello is encoded
    /// afresh.
    pub fn transmit<S: Sealer>(
        &mut self,
        now_ms: u64,
        timeout_ms: u64,
        seq: u64,
        sealer: &mut S,
        out: &mut [u8],
    ) -> Result<Option<Sent>, SendError> {
        let Some(i) = self.due_at(now_ms) else { return Ok(None) };
        let p = &mut self.in_flight[i];
        let len = if p.is_hello() {
            let mut hello = [0u8; 32];
            let n = pack::encode_hello(now_ms, &mut hello).map_err(SendError::Encode)?;
            sealer.seal(seq, &hello[..n], out)
        } else {
            sealer.seal(seq, &p.bytes, out)
        }
        .map_err(SendError::Seal)?;
        if p.seqs.is_full() {
            p.seqs.remove(0);
        }
        let _ = p.seqs.push(seq);
        if p.attempts > 0 {
            self.stats.resends += 1;
        }
        p.attempts += 1;
        p.sent_at_ms = Some(now_ms);
        p.wait_ms = resend_after_ms(timeout_ms, p.attempts, resend_jitter(self.jitter_seed, seq));
        self.last_seq = Some(seq);
        Ok(Some(Sent { id: p.id, seq, records: p.records, attempt: p.attempts, len }))
    }

    /// After a reconnection: every pack in flight is due again at once, and no answer to
    /// what went out on the old connection is awaited any more.
    pub fn resend_all(&mut self) {
        self.answered = self.last_seq;
        for p in &mut self.in_flight {
            p.sent_at_ms = None;
        }
    }

    fn mark_answered(&mut self, seq: u64) {
        self.answered = Some(self.answered.map_or(seq, |a| a.max(seq)));
    }

    /// Frees the pack an acknowledgement names; returns it.
    pub fn on_ack(&mut self, ack: Ack) -> Option<InFlight> {
        let i = match ack.seq {
            Some(seq) => {
                self.mark_answered(seq);
                self.in_flight.iter().position(|p| p.seqs.contains(&seq))
            }
            None => self
                .in_flight
                .iter()
                .position(|p| p.up_to_ms == Some(ack.up_to_ms))
                .or_else(|| self.in_flight.iter().position(|p| p.is_hello() && p.sent_at_ms.is_some())),
        };
        let Some(i) = i else {
            self.stats.unmatched += 1;
            return None;
        };
        let p = self.in_flight.remove(i);
        self.stats.acked_packs += 1;
        self.stats.acked_records += u32::from(p.records);
        Some(p)
    }

    /// Drops the pack a refusal answers: the one that went out with `seq` if the refusal
    /// names a number, else the oldest unanswered transmission (see the module
    /// documentation); returns it.
    pub fn on_refusal(&mut self, seq: Option<u64>) -> Option<InFlight> {
        let seq = match seq {
            // Only a number one of our packs went out with counts: anything else is stale or
            // forged, and must neither drop a pack nor move the order-matching mark.
            Some(seq) if self.in_flight.iter().any(|p| p.seqs.contains(&seq)) => Some(seq),
            Some(_) => None,
            None => {
                let answered = self.answered;
                self.in_flight
                    .iter()
                    .flat_map(|p| p.seqs.iter().copied())
                    .filter(|&s| answered.is_none_or(|a| s > a))
                    .min()
            }
        };
        let Some(seq) = seq else {
            self.stats.unmatched += 1;
            return None;
        };
        self.mark_answered(seq);
        let Some(i) = self.in_flight.iter().position(|p| p.seqs.contains(&seq)) else {
            self.stats.unmatched += 1;
            return None;
        };
        self.stats.refused_packs += 1;
        Some(self.in_flight.remove(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Metric;
    use crate::seal::Unsigned;
    use mekong_schema::downlink::MAX_BACKOFF;
    use mekong_schema::senml::{decode_pack, DecodeOptions, Value};

    const T0: i64 = 1_790_000_000_000;

    fn synced() -> Synced {
        let mut c = Clock::new();
        c.set(T0, 0);
        c.synced().unwrap()
    }

    fn level(v: f64, at_s: u64) -> Sample {
        Sample { metric: Metric::WaterLevel, value: v, at_ms: at_s * 1000 }
    }

    /// The records of a sent pack, as the platform decodes them: (name, value, time s).
    fn records(bytes: &[u8]) -> std::vec::Vec<(std::string::String, f64, f64)> {
        let mut out = std::vec::Vec::new();
        let opts = DecodeOptions { now: 1_790_000_500.0, max_records: 4096 };
        decode_pack(bytes, opts, &mut |r| {
            let Value::Number(v) = r.value else { panic!() };
            let mut n = [0u8; 64];
            out.push((r.name_into(&mut n).into(), v, r.time));
            Ok(())
        })
        .unwrap();
        out
    }

    /// Sends the next due pack with `seq`; its bytes.
    fn send(ob: &mut Outbox<16, 4>, now: u64, seq: u64) -> Option<(Sent, std::vec::Vec<u8>)> {
        let mut out = [0u8; PACK_BYTES];
        let sent = ob.transmit(now, 30_000, seq, &mut Unsigned, &mut out).unwrap()?;
        Some((sent, out[..sent.len].to_vec()))
    }

    #[test]
    fn an_ack_frees_the_pack_of_its_sequence_number_only() {
        let clock = synced();
        let mut ob: Outbox<16, 4> = Outbox::new(4);
        for i in 0..4 {
            ob.push(level(180.0 + i as f64, 10 * i));
        }
        let mut seen = std::vec::Vec::new();
        let first = ob.pack(&clock, 2, |s, t| seen.push((s.value, t))).unwrap().unwrap().up_to_ms;
        let second = ob.pack(&clock, 2, |s, t| seen.push((s.value, t))).unwrap().unwrap().up_to_ms;
        assert_eq!((first, second), (Some(T0 + 10_000), Some(T0 + 30_000)));
        assert_eq!(seen, [(180.0, T0), (181.0, T0 + 10_000), (182.0, T0 + 20_000), (183.0, T0 + 30_000)]);
        assert!(ob.has_due(40_000));
        assert_eq!(send(&mut ob, 40_000, 7).unwrap().0.id, 0);
        assert_eq!(send(&mut ob, 40_000, 8).unwrap().0.id, 1);
        assert!(send(&mut ob, 40_000, 9).is_none(), "nothing else is due");
        // The second pack's ack arrives first: it frees that pack, not the first.
        let freed = ob.on_ack(Ack { up_to_ms: T0 + 30_000, readings: 2, seq: Some(8) }).unwrap();
        assert_eq!((freed.id, freed.seqs()), (1, &[8][..]));
        assert!(ob.on_ack(Ack { up_to_ms: T0 + 30_000, readings: 2, seq: Some(8) }).is_none(), "a duplicate ack");
        assert_eq!(ob.on_ack(Ack { up_to_ms: T0 + 10_000, readings: 2, seq: None }).unwrap().id, 0, "by time");
        assert!(ob.in_flight().is_empty());
        let st = ob.stats();
        assert_eq!((st.acked_packs, st.acked_records, st.unmatched), (2, 4, 1));
    }

    #[test]
    fn every_send_has_a_new_number_and_the_same_readings_and_a_late_ack_of_an_earlier_send_counts() {
        let clock = synced();
        let mut ob: Outbox<16, 4> = Outbox::new(1);
        ob.push(level(182.5, 5));
        ob.pack(&clock, 8, |_, _| {}).unwrap();
        let (_, sent) = send(&mut ob, 6_000, 1).unwrap();
        let due = 6_000 + resend_after_ms(30_000, 1, resend_jitter(0, 1));
        assert!(!ob.has_due(due - 1), "not yet");
        ob.push(level(183.0, 40));
        assert!(!ob.can_pack(&Clock::new()), "no clock, no pack");
        let (again, bytes) = send(&mut ob, due, 2).unwrap();
        assert_eq!((again.seq, again.attempt), (2, 2));
        assert_eq!(bytes, sent, "Unsigned: the readings are byte for byte the same");
        assert_eq!(records(&bytes), [("water_level".into(), 182.5, 1_790_000_005.0)]);
        assert_eq!(ob.stats().resends, 1);
        // The platform stored the first send; its ack comes late. It frees the pack.
        assert_eq!(ob.on_ack(Ack { up_to_ms: T0 + 5_000, readings: 1, seq: Some(1) }).unwrap().seqs(), [1, 2]);
        // A pack nobody answers is given up after MAX_ATTEMPTS sends, each wait longer.
        ob.pack(&clock, 8, |_, _| {}).unwrap();
        let mut sends = std::vec::Vec::new();
        let (mut now, mut seq) = (100_000, 10);
        while !ob.in_flight().is_empty() {
            if ob.has_due(now) {
                send(&mut ob, now, seq).unwrap();
                sends.push(now);
                seq += 1;
            }
            now += 100;
        }
        assert_eq!(sends.len(), usize::from(MAX_ATTEMPTS));
        for (i, w) in sends.windows(2).enumerate() {
            let base = 30_000 * (1 << i).min(MAX_BACKOFF);
            assert!((base..=base * 3 / 2 + 100).contains(&(w[1] - w[0])), "wait {i}: {}", w[1] - w[0]);
        }
        assert_eq!(ob.stats().expired_packs, 1);
    }

    /// Nodes that sent at the same moment resend at different moments.
    #[test]
    fn resends_back_off_and_nodes_spread_out() {
        // A fleet of 100 nodes, each sending its first pack at the same moment with seq 1.
        let clock = synced();
        let mut due: std::vec::Vec<u64> = (0..100u32)
            .map(|node| {
                let mut ob: Outbox<16, 4> = Outbox::new(1).with_jitter_seed(node.wrapping_mul(2_654_435_761));
                ob.push(level(1.0, 1));
                ob.pack(&clock, 1, |_, _| {}).unwrap();
                send(&mut ob, 0, 1).unwrap();
                let p = &ob.in_flight()[0];
                assert!((30_000..=45_000).contains(&p.wait_ms));
                p.wait_ms
            })
            .collect();
        due.sort_unstable();
        due.dedup();
        assert!(due.len() > 90, "the fleet resends over 15 s, not at one moment: {} distinct", due.len());
        // In each of the three 5 s thirds of the spread, some nodes.
        for third in 0..3 {
            let lo = 30_000 + third * 5_000;
            assert!(due.iter().any(|d| (lo..lo + 5_000).contains(d)), "none in {lo}..");
        }
    }

    #[test]
    fn overflow_drops_the_oldest_and_the_next_pack_says_how_many() {
        let clock = synced();
        let mut ob: Outbox<8, 2> = Outbox::new(1);
        for i in 0..11 {
            ob.push(level(100.0 + i as f64, i));
        }
        assert_eq!(ob.queued(), 8);
        assert_eq!(ob.stats().dropped, 3);
        let p = ob.pack(&clock, 23, |_, _| {}).unwrap().unwrap();
        let got = records(p.plain());
        assert_eq!(got.first(), Some(&("water_level".into(), 103.0, 1_790_000_003.0)), "the three oldest went");
        assert_eq!(got.last(), Some(&("dropped".into(), 3.0, 1_790_000_010.0)));
        assert_eq!(p.records, 9);
        // Reported once.
        ob.on_ack(Ack { up_to_ms: T0 + 10_000, readings: 9, seq: None }).unwrap();
        ob.push(level(111.0, 12));
        let p = ob.pack(&clock, 23, |_, _| {}).unwrap().unwrap();
        assert_eq!(records(p.plain()), [("water_level".into(), 111.0, 1_790_000_012.0)]);
    }

    #[test]
    fn a_refusal_answers_the_oldest_unanswered_transmission() {
        let clock = synced();
        let mut ob: Outbox<16, 4> = Outbox::new(4);
        assert!(ob.on_refusal(None).is_none(), "nothing sent: nothing to refuse");
        for i in 0..3 {
            ob.push(level(100.0 + i as f64, i));
            ob.pack(&clock, 1, |_, _| {}).unwrap();
        }
        for seq in [1, 2, 3] {
            send(&mut ob, 2_000, seq).unwrap();
        }
        // Pack 0 (seq 1) was lost by the broker; pack 1 (seq 2) is acknowledged, pack 2
        // (seq 3) refused: the refusal comes after the ack of 2, so it is 3's.
        ob.on_ack(Ack { up_to_ms: T0 + 1_000, readings: 1, seq: Some(2) }).unwrap();
        assert_eq!(ob.on_refusal(None).unwrap().id, 2);
        assert_eq!(ob.stats().refused_packs, 1);
        // Pack 0 goes again with seq 4; a refusal now is its.
        send(&mut ob, 40_000, 4).unwrap();
        assert_eq!(ob.on_refusal(None).unwrap().seqs(), [1, 4]);
        assert!(ob.in_flight().is_empty());
        assert!(!ob.has_due(1_000_000));
    }

    /// A refusal that names its number drops exactly that pack, in whatever order refusals
    /// and acknowledgements come, even when the broker lost an earlier pack (where matching by
    /// order would drop the wrong one); a number no pack went out with drops nothing.
    #[test]
    fn a_refusal_with_a_number_drops_exactly_its_pack() {
        let clock = synced();
        let mut ob: Outbox<16, 4> = Outbox::new(4);
        for i in 0..3 {
            ob.push(level(100.0 + i as f64, i));
            ob.pack(&clock, 1, |_, _| {}).unwrap();
        }
        for seq in [1, 2, 3] {
            send(&mut ob, 2_000, seq).unwrap();
        }
        // Seq 1 was lost by the broker, seq 3 refused: by order, pack 0 would go.
        assert_eq!(ob.on_refusal(Some(3)).unwrap().id, 2);
        assert!(ob.on_refusal(Some(3)).is_none(), "already dropped");
        assert!(ob.on_refusal(Some(99)).is_none(), "never sent");
        assert_eq!(ob.stats().unmatched, 2);
        assert_eq!(ob.in_flight().iter().map(|p| p.id).collect::<std::vec::Vec<_>>(), [0, 1]);
        // The stray numbers moved no mark: a refusal without one is still the oldest's.
        ob.on_ack(Ack { up_to_ms: T0 + 1_000, readings: 1, seq: Some(2) }).unwrap();
        send(&mut ob, 40_000, 4).unwrap();
        assert_eq!(ob.on_refusal(Some(1)).unwrap().seqs(), [1, 4], "a refusal of an earlier send");
        assert_eq!(ob.stats().refused_packs, 2);
        assert!(ob.in_flight().is_empty());
    }

    #[test]
    fn after_a_reconnection_a_refusal_is_for_the_new_connection_only() {
        let clock = synced();
        let mut ob: Outbox<16, 4> = Outbox::new(4);
        for i in 0..2 {
            ob.push(level(100.0 + i as f64, i));
            ob.pack(&clock, 1, |_, _| {}).unwrap();
        }
        send(&mut ob, 1_000, 1).unwrap();
        send(&mut ob, 1_000, 2).unwrap();
        ob.resend_all();
        // Pack 1 goes first on the new connection this time.
        ob.in_flight.swap(0, 1);
        assert_eq!(send(&mut ob, 2_000, 3).unwrap().0.id, 1);
        assert_eq!(ob.on_refusal(None).unwrap().id, 1, "seq 1 and 2 died with the old connection");
    }

    #[test]
    fn before_the_clock_is_set_a_hello_goes_out_encoded_at_each_send() {
        let mut clock = Clock::new();
        let mut ob: Outbox<16, 4> = Outbox::new(4);
        ob.push(level(100.0, 1));
        assert!(!ob.can_pack(&clock));
        assert!(ob.needs_hello(&clock));
        ob.push_hello();
        assert!(!ob.needs_hello(&clock));
        let (_, first) = send(&mut ob, 3_000, 0).unwrap();
        assert_eq!(records(&first), [("uptime".into(), 3.0, 1_790_000_500.0)]);
        let (again, second) = send(&mut ob, 33_000, 1).unwrap();
        assert_eq!(again.attempt, 2);
        assert_eq!(records(&second)[0].1, 33.0, "a new measurement");
        // Its acknowledgement names the receipt time, which no reading pack has.
        let hello = ob.on_ack(Ack { up_to_ms: T0, readings: 1, seq: None }).unwrap();
        assert!(hello.is_hello());
        clock.set(T0, 33_100);
        assert!(ob.can_pack(&clock) && !ob.needs_hello(&clock));
        let p = ob.pack(&clock.synced().unwrap(), 8, |_, _| {}).unwrap().unwrap();
        assert_eq!(p.up_to_ms, Some(T0 - 32_000), "taken at 1 s uptime, 32.1 s before the clock was set");
    }
}
