//! Store and forward: samples wait here until the platform says they are on its disk.
//!
//! Two bounded stages, no allocator:
//!
//! 1. the **queue** of samples not yet packed (`Q` samples). When it is full, the oldest
//!    sample is dropped and counted; the count goes out as a `dropped` record in the next pack,
//!    so the platform knows the gap is the node's and not the network's;
//! 2. the **packs in flight** (`W` packs, each kept as the exact bytes sent). A pack leaves
//!    only when the platform acknowledges it (`Ack` on `mekong/v1/{id}/down`, sent after the
//!    readings are flushed to disk; the MQTT PUBACK is not enough), or refuses it (a refused
//!    pack would be refused again: it is dropped and counted). A pack with no answer is resent
//!    after a timeout, byte for byte, so the platform stores its readings once.
//!
//! Matching a downlink to a pack: by sequence number when the downlink carries one (the
//! label the schema is adding with signing), else by `up_to_ms`, the newest reading time,
//! which the node knows for packs with absolute times ([`crate::pack`]). A pack with relative
//! times (sent before the clock was set) cannot be matched by time, so only one pack is in
//! flight until the clock is set, and an acknowledgement that matches nothing else is its.
//! A refusal does not name its pack yet (no sequence number, no time): it is taken as the
//! oldest pack in flight, which is exact while one pack is in flight, the default until
//! downlinks carry sequence numbers.

use heapless::{Deque, Vec};
use mekong_schema::senml::EncodeError;

use crate::clock::Clock;
use crate::pack::{self, MAX_RECORDS};
use crate::sample::Sample;
use crate::seal::{SealError, Sealer};

/// Room for one sealed pack: 24 records of about 25 bytes, plus the seal.
pub const PACK_BYTES: usize = 768;

/// Sends of one pack before it is given up (and counted as expired): a pack that nobody ever
/// answers (a topic the platform does not read) must not block the outbox forever.
pub const MAX_ATTEMPTS: u16 = 10;

/// A pack sent (or about to be) and not yet answered.
#[derive(Debug, Clone)]
pub struct InFlight {
    /// The pack's sequence number.
    pub seq: u64,
    /// Newest reading time the platform will resolve, for packs with absolute times.
    pub up_to_ms: Option<i64>,
    /// Records in the pack.
    pub records: u16,
    /// When it was last sent (uptime ms); `None`: due now.
    pub sent_at_ms: Option<u64>,
    /// How many times it was sent.
    pub attempts: u16,
    bytes: Vec<u8, PACK_BYTES>,
}

impl InFlight {
    /// The sealed bytes, as published.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// An acknowledgement, as the downlink gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Newest reading time of the acknowledged pack, epoch ms.
    pub up_to_ms: i64,
    /// Readings stored.
    pub readings: u32,
    /// The pack's sequence number, once the schema carries it.
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
    /// Acknowledgements that matched no pack (late duplicates after a resend).
    pub unmatched: u32,
}

/// Why a pack could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackError {
    /// Not even one sample fits a pack (cannot happen with the metrics of this firmware).
    Encode(EncodeError),
    /// The seal does not fit.
    Seal(SealError),
}

/// The outbox: `Q` queued samples, `W` packs in flight.
#[derive(Debug)]
pub struct Outbox<const Q: usize, const W: usize> {
    queue: Deque<Sample, Q>,
    in_flight: Vec<InFlight, W>,
    max_in_flight: usize,
    dropped_unreported: u32,
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
            stats: OutboxStats::default(),
        }
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

    /// Whether a new pack may be made now: samples wait, a slot is free, and either the
    /// clock is set or no pack with relative times is in flight.
    pub fn can_pack(&self, clock: &Clock) -> bool {
        !self.queue.is_empty()
            && self.in_flight.len() < self.max_in_flight
            && (clock.is_set() || self.in_flight.is_empty())
    }

    /// Packs up to `max_records` of the oldest samples (plus the `dropped` report) as pack
    /// number `seq`, seals it, and keeps it in flight, due to be sent.
    pub fn pack<S: Sealer>(
        &mut self,
        clock: &Clock,
        now_ms: u64,
        seq: u64,
        sealer: &mut S,
        max_records: usize,
    ) -> Result<Option<&InFlight>, PackError> {
        if !self.can_pack(clock) {
            return Ok(None);
        }
        let mut take = max_records.clamp(1, MAX_RECORDS - 1).min(self.queue.len());
        let mut plain = [0u8; PACK_BYTES];
        let room = PACK_BYTES.saturating_sub(sealer.overhead());
        let packed = loop {
            let mut batch: Vec<Sample, { MAX_RECORDS - 1 }> = Vec::new();
            for s in self.queue.iter().take(take) {
                let _ = batch.push(*s);
            }
            match pack::encode(&batch, self.dropped_unreported, clock, now_ms, &mut plain[..room]) {
                Ok(p) => break p,
                // Values that encode long (fractional floats): fewer per pack.
                Err(EncodeError::BufferFull) if take > 1 => take /= 2,
                Err(e) => return Err(PackError::Encode(e)),
            }
        };
        let mut bytes: Vec<u8, PACK_BYTES> = Vec::new();
        let _ = bytes.resize(PACK_BYTES, 0);
        let n = sealer.seal(seq, &plain[..packed.len], &mut bytes).map_err(PackError::Seal)?;
        bytes.truncate(n);
        for _ in 0..take {
            self.queue.pop_front();
        }
        self.dropped_unreported = 0;
        let pack =
            InFlight { seq, up_to_ms: packed.up_to_ms, records: packed.records, sent_at_ms: None, attempts: 0, bytes };
        // can_pack checked the room.
        let _ = self.in_flight.push(pack);
        Ok(self.in_flight.last())
    }

    /// The next pack to send at `now_ms`: one never sent, or one unanswered for
    /// `timeout_ms`. It is marked as sent now. Packs sent [`MAX_ATTEMPTS`] times without an
    /// answer are given up here.
    pub fn next_to_send(&mut self, now_ms: u64, timeout_ms: u64) -> Option<&InFlight> {
        let due = |p: &InFlight| p.sent_at_ms.is_none_or(|t| now_ms.saturating_sub(t) >= timeout_ms);
        while let Some(i) = self.in_flight.iter().position(|p| due(p) && p.attempts >= MAX_ATTEMPTS) {
            self.in_flight.remove(i);
            self.stats.expired_packs += 1;
        }
        let i = self.in_flight.iter().position(due)?;
        let p = &mut self.in_flight[i];
        if p.attempts > 0 {
            self.stats.resends += 1;
        }
        p.attempts += 1;
        p.sent_at_ms = Some(now_ms);
        Some(&self.in_flight[i])
    }

    /// After a reconnection: every pack in flight is due again at once (the answers to what
    /// was sent on the old connection may never come).
    pub fn resend_all(&mut self) {
        for p in &mut self.in_flight {
            p.sent_at_ms = None;
        }
    }

    /// Frees the pack an acknowledgement names; returns it.
    pub fn on_ack(&mut self, ack: Ack) -> Option<InFlight> {
        let i = match ack.seq {
            Some(seq) => self.in_flight.iter().position(|p| p.seq == seq),
            None => self
                .in_flight
                .iter()
                .position(|p| p.up_to_ms == Some(ack.up_to_ms))
                .or_else(|| self.in_flight.iter().position(|p| p.up_to_ms.is_none() && p.sent_at_ms.is_some())),
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

    /// Drops the pack a refusal names (by `seq` when given, else the oldest sent); returns it.
    pub fn on_refusal(&mut self, seq: Option<u64>) -> Option<InFlight> {
        let i = match seq {
            Some(seq) => self.in_flight.iter().position(|p| p.seq == seq),
            None => self.in_flight.iter().position(|p| p.sent_at_ms.is_some()),
        };
        let Some(i) = i else {
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
    use mekong_schema::senml::{decode_pack, DecodeOptions, Value};

    const T0: i64 = 1_790_000_000_000;

    fn synced() -> Clock {
        let mut c = Clock::new();
        c.set(T0, 0);
        c
    }

    fn level(v: f64, at_s: u64) -> Sample {
        Sample { metric: Metric::WaterLevel, value: v, at_ms: at_s * 1000 }
    }

    /// The records of a sent pack, as the platform decodes them.
    fn records(bytes: &[u8]) -> std::vec::Vec<(std::string::String, f64)> {
        let mut out = std::vec::Vec::new();
        let opts = DecodeOptions { now: 1_790_000_500.0, max_records: 4096 };
        decode_pack(bytes, opts, &mut |r| {
            let Value::Number(v) = r.value else { panic!() };
            let mut n = [0u8; 64];
            out.push((r.name_into(&mut n).into(), v));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn an_ack_frees_its_pack_only() {
        let clock = synced();
        let mut ob: Outbox<16, 4> = Outbox::new(4);
        for i in 0..4 {
            ob.push(level(180.0 + i as f64, 10 * i));
        }
        let first = ob.pack(&clock, 40_000, 1, &mut Unsigned, 2).unwrap().unwrap().up_to_ms;
        let second = ob.pack(&clock, 40_000, 2, &mut Unsigned, 2).unwrap().unwrap().up_to_ms;
        assert_eq!((first, second), (Some(T0 + 10_000), Some(T0 + 30_000)));
        assert!(ob.next_to_send(40_000, 30_000).is_some());
        assert!(ob.next_to_send(40_000, 30_000).is_some());
        // The second pack's ack arrives first: it frees that pack, not the first.
        let freed = ob.on_ack(Ack { up_to_ms: T0 + 30_000, readings: 2, seq: None }).unwrap();
        assert_eq!(freed.seq, 2);
        assert_eq!(ob.in_flight().len(), 1);
        assert_eq!(ob.in_flight()[0].seq, 1);
        assert!(ob.on_ack(Ack { up_to_ms: T0 + 30_000, readings: 2, seq: None }).is_none(), "a duplicate ack");
        assert_eq!(ob.on_ack(Ack { up_to_ms: 0, readings: 2, seq: Some(1) }).unwrap().seq, 1, "by sequence number");
        assert!(ob.in_flight().is_empty());
        let st = ob.stats();
        assert_eq!((st.acked_packs, st.acked_records, st.unmatched), (2, 4, 1));
    }

    #[test]
    fn an_unanswered_pack_is_resent_after_the_timeout_byte_for_byte() {
        let clock = synced();
        let mut ob: Outbox<16, 4> = Outbox::new(1);
        ob.push(level(182.5, 5));
        ob.pack(&clock, 6_000, 7, &mut Unsigned, 8).unwrap();
        let sent = ob.next_to_send(6_000, 30_000).unwrap().bytes().to_vec();
        assert!(ob.next_to_send(35_999, 30_000).is_none(), "not yet");
        ob.push(level(183.0, 40));
        assert!(!ob.can_pack(&clock), "one pack in flight at most");
        let again = ob.next_to_send(36_000, 30_000).unwrap();
        assert_eq!(again.bytes(), &sent[..]);
        assert_eq!(again.attempts, 2);
        assert_eq!(ob.stats().resends, 1);
        // A reconnection makes it due at once.
        ob.resend_all();
        assert!(ob.next_to_send(36_001, 30_000).is_some());
        // Given up after MAX_ATTEMPTS sends.
        let sends = (1..20).take_while(|i| ob.next_to_send(36_001 + i * 30_000, 30_000).is_some()).count();
        assert_eq!(sends, usize::from(MAX_ATTEMPTS) - 3);
        assert_eq!(ob.stats().expired_packs, 1);
        assert!(ob.in_flight().is_empty());
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
        let p = ob.pack(&clock, 20_000, 1, &mut Unsigned, 23).unwrap().unwrap();
        let got = records(p.bytes());
        assert_eq!(got.first(), Some(&("water_level".into(), 103.0)), "the three oldest went");
        assert_eq!(got.last(), Some(&("dropped".into(), 3.0)));
        assert_eq!(p.records, 9);
        // Reported once.
        ob.on_ack(Ack { up_to_ms: T0 + 10_000, readings: 9, seq: None }).unwrap();
        ob.push(level(111.0, 12));
        let p = ob.pack(&clock, 20_000, 2, &mut Unsigned, 23).unwrap().unwrap();
        assert_eq!(records(p.bytes()), [("water_level".into(), 111.0)]);
    }

    #[test]
    fn a_refused_pack_is_dropped_not_resent() {
        let clock = synced();
        let mut ob: Outbox<8, 2> = Outbox::new(1);
        ob.push(level(100.0, 1));
        ob.pack(&clock, 2_000, 1, &mut Unsigned, 8).unwrap();
        assert!(ob.on_refusal(None).is_none(), "not sent yet: nothing to refuse");
        ob.next_to_send(2_000, 30_000).unwrap();
        assert_eq!(ob.on_refusal(None).unwrap().seq, 1);
        assert!(ob.next_to_send(1_000_000, 30_000).is_none());
        assert_eq!(ob.stats().refused_packs, 1);
    }

    #[test]
    fn before_the_clock_is_set_one_relative_pack_is_in_flight_and_any_ack_is_its() {
        let mut clock = Clock::new();
        let mut ob: Outbox<8, 4> = Outbox::new(4);
        ob.push(level(100.0, 1));
        ob.push(level(101.0, 2));
        let p = ob.pack(&clock, 3_000, 1, &mut Unsigned, 1).unwrap().unwrap();
        assert_eq!(p.up_to_ms, None);
        assert!(!ob.can_pack(&clock));
        ob.next_to_send(3_000, 30_000).unwrap();
        // The ack names the time the platform resolved; it matches the relative pack.
        let ack = Ack { up_to_ms: T0 - 2_000, readings: 1, seq: None };
        assert_eq!(ob.on_ack(ack).unwrap().seq, 1);
        clock.set(T0, 3_100);
        assert!(ob.can_pack(&clock));
        let p = ob.pack(&clock, 3_200, 2, &mut Unsigned, 8).unwrap().unwrap();
        assert_eq!(p.up_to_ms, Some(T0 - 1_000), "taken at 2 s uptime, 1.1 s before the ack set the clock");
    }
}
