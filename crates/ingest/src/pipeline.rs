//! From publishes to stored points: topic, size, signature, decode and contract checks for
//! each publish, then one store write for the whole group.
//!
//! A device registered with a key must seal every pack in a COSE_Mac0 envelope
//! (`mekong_schema::cose`); the pipeline checks the key id against the topic, the tag, and
//! that the sequence number is above the last one stored for the device (or staged earlier in
//! the same group), before it looks at the pack inside. The number is stored in the same
//! batch as the pack's readings, so a replay is refused after a restart as well.
//!
//! Numbers are per key: the store keeps, beside the device's last number, the fingerprint of
//! the key it was accepted under (`cose::key_fingerprint`, opaque to the store). A node
//! provisioned again gets a new key and starts a new numbering, so when the registry's key is
//! not the one of the stored number, the first pack signed with the new key is accepted
//! whatever its number, and the numbering goes on from there. A pack signed with the old key
//! no longer verifies (`bad_signature`), so the old numbers cannot be replayed either.
//!
//! A refusal names the refused envelope's sequence number whenever the envelope could be
//! read, so that a node with several packs in flight knows which one was refused.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mekong_feed::{Series, Stored};
use mekong_schema::cose::{self, FINGERPRINT_LEN};
use mekong_schema::limits::MAX_NAME_LEN;
use mekong_schema::naming::Naming;
use mekong_schema::senml::{self, DecodeOptions};
use mekong_schema::{topic, DeviceKind, Reason, Record, RecordError, Value};
use mekong_stats::{RejectionEntry, Stats, HEAD_BYTES, TOPIC_CHARS};
use mekong_store::{Generation, NewPoint, PackRefused, PackWrite, RefusalWrite, Store, ValueKind, WriteSummary};
use serde::{Deserialize, Serialize};

use crate::outbox::SharedOutbox;
use crate::refusal_log::{self, RefusalLog};
use crate::registry::{Registry, SharedRegistry};
use crate::IngestError;

/// Options of the ingest path. They are also the `[ingest]` section of mekong's configuration,
/// as they are (field names are its keys), but for the registry, which the binary reads from
/// its file; [`PipelineOptions::validate`] is the one check of those settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineOptions {
    /// Payloads larger than this are refused (the broker's own packet limit is higher, so that
    /// such a payload reaches the pipeline and is recorded with its reason).
    pub max_payload_bytes: usize,
    /// Packs with more records than this are refused.
    pub max_records_per_pack: usize,
    /// How many recent rejections the log keeps.
    pub rejection_log_capacity: usize,
    /// The operator's log shows the first refusal of each device and reason at once, and
    /// the rest in one summary line per device and reason every this many seconds.
    pub refusal_summary_secs: u64,
    /// Refuse devices that are not in the registry.
    pub require_registration: bool,
    /// Known devices and their kinds. Not a configuration key.
    #[serde(skip)]
    pub registry: Registry,
    /// Publish an acknowledgement (or refusal) on the device's downlink topic once its pack
    /// is durably stored (or refused).
    pub acknowledge: bool,
    /// Most publishes handled in one group (one store write, one flush).
    pub max_group: usize,
    /// What keeps a durable record of each accepted pack in its batch (the forwarder's
    /// outbox), if anything does. Not a configuration key.
    #[serde(skip)]
    pub outbox: Option<SharedOutbox>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            max_payload_bytes: 64 * 1024,
            max_records_per_pack: 4096,
            rejection_log_capacity: 1000,
            refusal_summary_secs: 60,
            require_registration: false,
            registry: Registry::new(),
            acknowledge: true,
            max_group: 2048,
            outbox: None,
        }
    }
}

impl PipelineOptions {
    /// Checks what the types alone cannot; the message names the option.
    pub fn validate(&self) -> Result<(), IngestError> {
        for (name, value) in [
            ("max_records_per_pack", self.max_records_per_pack),
            ("max_payload_bytes", self.max_payload_bytes),
            ("max_group", self.max_group),
            ("refusal_summary_secs", usize::try_from(self.refusal_summary_secs).unwrap_or(usize::MAX)),
        ] {
            if value == 0 {
                return Err(IngestError::Config(format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }
}

/// A pack that was stored (not yet flushed).
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// The device that sent it.
    pub device: String,
    /// What the store did with its readings.
    pub summary: WriteSummary,
    /// Newest reading time in the pack, ms since the epoch.
    pub up_to_ms: i64,
    /// The envelope's sequence number, for a signed pack.
    pub seq: Option<u64>,
    /// The downlink version the pack says its node reads (0 if it does not say): from
    /// [`mekong_schema::downlink::VERSION_LIST`] on, its acknowledgement may share one
    /// downlink with the device's other packs of the same flush.
    pub downlink: u8,
    /// The readings it added (not those already stored), for the feed once they are
    /// durable; `None` if it added none.
    pub new_readings: Option<Stored>,
}

/// A publish that was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The device, when the topic holds a valid id.
    pub device: Option<String>,
    /// The reason kind.
    pub kind: Reason,
    /// The reason, for people.
    pub reason: String,
    /// The sequence number of the refused envelope, when the pack was signed and its
    /// envelope could be read (unauthenticated if the tag is what failed).
    pub seq: Option<u64>,
}

impl Rejection {
    fn new(device: Option<&str>, kind: Reason, reason: impl Into<String>) -> Self {
        Rejection { device: device.map(Into::into), kind, reason: reason.into(), seq: None }
    }

    fn with_seq(self, seq: Option<u64>) -> Self {
        Rejection { seq, ..self }
    }
}

/// A sequence number with the fingerprint of the key it was signed with.
type KeyedSeq = (u64, [u8; FINGERPRINT_LEN]);

/// What became of one publish.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Stored; durable once a flush of the group's generation returns.
    Accepted(Accepted),
    /// Refused, for a reason of the pack's: final.
    Refused(Rejection),
    /// Passed every check, but the store could not write it (a reason of the platform's,
    /// such as a full disk): nothing is stored, and the device gets no answer, so it resends.
    Deferred,
}

/// What became of a group of publishes.
#[derive(Debug)]
pub struct Handled {
    /// The store generation the group was checked against and written to; `None` if the
    /// store could not write, or was opened afresh in between (then what the checks read may
    /// not be on disk). An answer that rests on stored data goes out only after a flush of
    /// this generation.
    pub generation: Option<Generation>,
    /// One outcome per publish, in order.
    pub outcomes: Vec<Outcome>,
    /// The mark of the outbox records written with the group, and the generation they were
    /// written to: durable once a flush of that generation returns.
    pub outbox: Option<(Generation, u64)>,
    /// Where each publish is in the broker's uplink log, in order, for the PUBACKs the broker
    /// holds until the pack is answered; empty when the broker holds none. Set by the ingest
    /// thread, which reads the offsets.
    pub offsets: Vec<Option<u64>>,
}

/// One reading of a pack. Its metric and unit are shared with the reading before it when they
/// are the same, as they mostly are in a pack of many readings: one allocation per name, not
/// two per reading. Shared by `Rc`, not `Arc`: a pack's readings never leave the ingest
/// thread, so an atomic count, taken and dropped for two names a reading, was work for
/// nothing (README, "The ingest thread alone").
#[derive(Debug)]
struct Reading {
    metric: Rc<str>,
    unit: Option<Rc<str>>,
    time_ms: i64,
    value: f64,
    value_kind: ValueKind,
}

/// A publish that passed every check and waits for the group's store write.
#[derive(Debug)]
struct Ready {
    device: String,
    kind: DeviceKind,
    readings: Vec<Reading>,
    up_to_ms: i64,
    seq: Option<KeyedSeq>,
    downlink: u8,
}

impl Ready {
    fn seq(&self) -> Option<u64> {
        self.seq.map(|(seq, _)| seq)
    }
}

/// The ingest path without the broker: usable on its own in tests.
#[derive(Debug)]
pub struct Pipeline {
    opts: PipelineOptions,
    /// Where a replaced registry comes from ([`Pipeline::registry_handle`]).
    shared: SharedRegistry,
    /// The registry of the group being handled.
    registry: Arc<Registry>,
    store: Store,
    pub(crate) stats: Arc<Stats>,
    refusals: RefusalLog,
}

impl Pipeline {
    /// A pipeline writing to `store` and counting into `stats`.
    pub fn new(opts: PipelineOptions, store: Store, stats: Arc<Stats>) -> Self {
        let refusals = RefusalLog::new(Instant::now(), Duration::from_secs(opts.refusal_summary_secs));
        let shared = SharedRegistry::new(opts.registry.clone());
        let registry = shared.snapshot();
        Pipeline { opts, shared, registry, store, stats, refusals }
    }

    /// The handle that replaces this pipeline's registry from another thread; each group
    /// reads the registry once, at its start.
    pub fn registry_handle(&self) -> SharedRegistry {
        self.shared.clone()
    }

    /// Logs the summary of the refusals held back, once their interval is over; the ingest
    /// thread calls it every round, busy or not.
    pub(crate) fn log_refusals(&mut self) {
        for line in self.refusals.tick(Instant::now()) {
            refusal_log::emit(&line);
        }
    }

    /// The options it runs with.
    pub fn options(&self) -> &PipelineOptions {
        &self.opts
    }

    /// Handles one publish received at `now_ms`; see [`Pipeline::handle_group`].
    pub fn handle(&mut self, topic: &[u8], payload: &[u8], now_ms: i64) -> Outcome {
        let mut handled = self.handle_group(&[(topic, payload)], now_ms);
        handled.outcomes.pop().unwrap_or(Outcome::Deferred)
    }

    /// Handles a group of publishes received at `now_ms`: checks each one, writes all that
    /// pass in one store write, records every outcome in the stats, and returns them in
    /// order.
    pub fn handle_group(&mut self, publishes: &[(&[u8], &[u8])], now_ms: i64) -> Handled {
        // One registry for the whole group, the latest one replaced (device management),
        // marked in flight until the group is written (a device's removal waits for it).
        let (registry, _in_flight) = self.shared.begin_group();
        self.registry = registry;
        // The generation the checks read (a device's last sequence number, its kind).
        let checked = self.store.generation();
        let mut prepared: Vec<Result<Ready, Rejection>> = Vec::with_capacity(publishes.len());
        // Sequence numbers of the group's signed packs so far: a replay within one group is
        // refused as well.
        let mut seqs = HashMap::new();
        for (topic, payload) in publishes {
            self.stats.record_received();
            prepared.push(self.prepare(topic, payload, now_ms, &mut seqs));
        }

        let (written, outcomes, mark) = self.store_group(&prepared, now_ms);
        for (outcome, (topic, payload)) in outcomes.iter().zip(publishes) {
            match outcome {
                Outcome::Accepted(a) => self.stats.record_accepted(a.summary.stored, a.summary.duplicates),
                Outcome::Refused(r) => self.record_rejection(r, topic, payload, now_ms),
                Outcome::Deferred => self.stats.record_deferred(),
            }
        }
        let generation = written.filter(|&g| checked == Some(g));
        let outbox = written.zip(mark);
        Handled { generation, outcomes, outbox, offsets: Vec::new() }
    }

    /// Writes the ready packs of a group in one store write and pairs every publish with
    /// its outcome; the generation written to, if the write went through, and the mark of
    /// the outbox records written with it.
    fn store_group(
        &self,
        prepared: &[Result<Ready, Rejection>],
        now_ms: i64,
    ) -> (Option<Generation>, Vec<Outcome>, Option<u64>) {
        let points: Vec<Vec<NewPoint<'_>>> = prepared
            .iter()
            .map(|p| match p {
                Ok(ready) => ready
                    .readings
                    .iter()
                    .map(|r| NewPoint {
                        metric: &r.metric,
                        unit: r.unit.as_deref(),
                        time_ms: r.time_ms,
                        value: r.value,
                        value_kind: r.value_kind,
                    })
                    .collect(),
                Err(_) => Vec::new(),
            })
            .collect();
        let writes: Vec<PackWrite<'_>> = prepared
            .iter()
            .zip(&points)
            .filter_map(|(p, points)| match p {
                Ok(ready) => Some(PackWrite {
                    device: &ready.device,
                    kind: ready.kind.as_str(),
                    seen_ms: now_ms,
                    points,
                    seq: ready.seq,
                }),
                Err(_) => None,
            })
            .collect();
        // Refusals are counted in their devices' tallies in the same batch (unit mismatches
        // by the store itself), so that the counts survive a restart at no extra write.
        let refusals: Vec<RefusalWrite<'_>> = prepared
            .iter()
            .filter_map(|p| match p {
                Err(Rejection { device: Some(device), kind, .. }) => {
                    Some(RefusalWrite { device, reason: kind.as_str(), time_ms: now_ms })
                }
                _ => None,
            })
            .collect();
        let readies: Vec<&Ready> = prepared.iter().filter_map(|p| p.as_ref().ok()).collect();
        // What each written pack added, worked out once the store has staged the group: the
        // outbox records it in the same batch, the feed shows it once durable.
        let mut added: Vec<Option<Stored>> = Vec::new();
        let mut mark = None;
        let outbox = self.opts.outbox.as_ref();
        let records = |results: &[Result<WriteSummary, PackRefused>], duplicates: &[(usize, usize)]| {
            let mut duplicates = duplicates.iter().peekable();
            for (index, (result, ready)) in results.iter().zip(&readies).enumerate() {
                let mut repeated = Vec::new();
                while let Some(&(_, point)) = duplicates.next_if(|(pack, _)| *pack == index) {
                    repeated.push(point);
                }
                added.push(result.as_ref().ok().and_then(|_| new_readings(ready, &repeated)));
            }
            let Some(outbox) = outbox else { return Vec::new() };
            let packs: Vec<&Stored> = added.iter().flatten().collect();
            if packs.is_empty() {
                return Vec::new();
            }
            let (records, staged) = outbox.0.stage(&packs, now_ms);
            mark = staged;
            records
        };
        let written = match self.store.write_group_with(&writes, &refusals, records) {
            Ok(written) => written,
            Err(e) => {
                // The store logs the failure once; this is per group.
                tracing::debug!(error = %e, packs = writes.len(), "store cannot write; packs deferred");
                let outcomes = prepared
                    .iter()
                    .map(|p| match p {
                        Err(r) => Outcome::Refused(r.clone()),
                        Ok(_) => Outcome::Deferred,
                    })
                    .collect();
                return (None, outcomes, None);
            }
        };
        let mut results = written.packs.into_iter().zip(added);
        let outcomes = prepared
            .iter()
            .map(|p| match p {
                Err(r) => Outcome::Refused(r.clone()),
                Ok(ready) => match results.next() {
                    Some((Ok(summary), new_readings)) => {
                        let seq = ready.seq.map(|(seq, _)| seq);
                        Outcome::Accepted(Accepted {
                            device: ready.device.clone(),
                            summary,
                            up_to_ms: ready.up_to_ms,
                            seq,
                            downlink: ready.downlink,
                            new_readings,
                        })
                    }
                    Some((Err(e @ (PackRefused::UnitMismatch { .. } | PackRefused::ValueKindMismatch { .. })), _)) => {
                        Outcome::Refused(
                            Rejection::new(Some(&ready.device), Reason::UnitMismatch, e.to_string())
                                .with_seq(ready.seq()),
                        )
                    }
                    // The store answers every pack it was given; should it not, the pack is
                    // not refused for the platform's mistake.
                    None => Outcome::Deferred,
                },
            })
            .collect();
        (Some(written.generation), outcomes, mark)
    }

    fn record_rejection(&mut self, r: &Rejection, topic: &[u8], payload: &[u8], now_ms: i64) {
        if let Some(line) = self.refusals.record(r.device.as_deref(), r.kind, &r.reason) {
            refusal_log::emit(&line);
        }
        self.stats.record_rejection(RejectionEntry {
            time_ms: now_ms,
            topic: String::from_utf8_lossy(topic).chars().take(TOPIC_CHARS).collect(),
            device: r.device.clone(),
            kind: r.kind,
            reason: r.reason.clone(),
            payload_len: payload.len(),
            head: payload[..payload.len().min(HEAD_BYTES)].to_vec(),
        });
    }

    /// Every check that needs no store write: topic, registration, size, signature, the pack
    /// itself. `seqs` holds the sequence numbers of the group's packs prepared so far. A
    /// refusal of a readable envelope names its sequence number.
    fn prepare(
        &self,
        topic: &[u8],
        payload: &[u8],
        now_ms: i64,
        seqs: &mut HashMap<String, KeyedSeq>,
    ) -> Result<Ready, Rejection> {
        self.check(topic, payload, now_ms, seqs).map_err(|r| {
            if r.seq.is_some() || r.device.is_none() || payload.len() > self.opts.max_payload_bytes {
                return r;
            }
            let seq = cose::is_sealed(payload).then(|| cose::parse(payload).ok()).flatten().map(|e| e.seq());
            r.with_seq(seq)
        })
    }

    /// [`Pipeline::prepare`] without the sequence number of refusals.
    fn check(
        &self,
        topic: &[u8],
        payload: &[u8],
        now_ms: i64,
        seqs: &mut HashMap<String, KeyedSeq>,
    ) -> Result<Ready, Rejection> {
        let topic =
            std::str::from_utf8(topic).map_err(|_| Rejection::new(None, Reason::BadTopic, "topic is not utf-8"))?;
        let device = topic::parse_uplink(topic).map_err(|e| Rejection::new(None, Reason::BadTopic, e.to_string()))?;
        let registered = self.registry.kind(device);
        if self.opts.require_registration && registered.is_none() {
            return Err(Rejection::new(Some(device), Reason::UnknownDevice, "device is not registered"));
        }
        if payload.len() > self.opts.max_payload_bytes {
            let reason =
                format!("payload of {} bytes is over the limit of {}", payload.len(), self.opts.max_payload_bytes);
            return Err(Rejection::new(Some(device), Reason::TooLarge, reason));
        }
        let (payload, seq) = self.unseal(device, payload, seqs)?;

        let opts = DecodeOptions { now: now_ms as f64 / 1000.0, max_records: self.opts.max_records_per_pack };
        // Room for as many readings as the pack announces (a pack of fifty grew its list five
        // times), within the limit and at most one per byte of the pack, so that a few bytes
        // announcing billions cost no more than the pack could hold.
        let announced = senml::records_announced(payload).and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
        let mut readings: Vec<Reading> = Vec::with_capacity(announced.min(opts.max_records).min(payload.len()));
        // SenML-CBOR or SenML-JSON, told apart by the first byte; names as other SenML
        // ecosystems write them are filed by the contract's rule (`naming`).
        let mut naming = Naming::default();
        // The base name, name and unit of the reading before, whose metric and unit are
        // `readings.last()`'s: a record that repeats them (as most of a pack's do) has that
        // metric, which the same naming would find again, and that unit.
        let mut named: Option<(&str, &str, Option<&str>)> = None;
        let info = senml::decode_with_info(payload, opts, &mut |r: Record<'_>| {
            // Booleans are stored as 0 and 1 in a series that reads back as booleans; strings
            // and data have no series to go into (the wire contract says so).
            let (value, value_kind) = match r.value {
                Value::Number(v) => (v, ValueKind::Number),
                Value::Bool(b) => (f64::from(u8::from(b)), ValueKind::Boolean),
                _ => return Err(RecordError::Refused("only numbers (v) and booleans (vb) are stored")),
            };
            let last = readings.last();
            let metric = match last {
                Some(last) if named.is_some_and(|(bn, n, _)| same(bn, r.base_name) && same(n, r.name)) => {
                    Rc::clone(&last.metric)
                }
                _ => {
                    let mut name = [0u8; MAX_NAME_LEN];
                    let metric = naming.metric(&r, &mut name)?;
                    match last {
                        Some(last) if *last.metric == *metric => Rc::clone(&last.metric),
                        _ => Rc::from(metric),
                    }
                }
            };
            // `named`'s unit is the text `last.unit` was made from, so comparing with it is
            // comparing with `last.unit`, by place first.
            let unit = match (r.unit, last.and_then(|l| l.unit.as_ref())) {
                (Some(unit), Some(last)) if named.is_some_and(|(_, _, u)| u.is_some_and(|u| same(u, unit))) => {
                    Some(Rc::clone(last))
                }
                (unit, _) => unit.map(Rc::from),
            };
            named = Some((r.base_name, r.name, r.unit));
            readings.push(Reading { metric, unit, time_ms: (r.time * 1000.0).round() as i64, value, value_kind });
            Ok(())
        })
        .map_err(|e| Rejection::new(Some(device), e.kind(), e.to_string()))?;
        let Some(up_to_ms) = readings.iter().map(|r| r.time_ms).max() else {
            return Err(Rejection::new(Some(device), Reason::EmptyPack, "pack has no records"));
        };

        let kind = registered
            .or_else(|| self.store.with_device_kind(device, DeviceKind::parse).flatten())
            .filter(|k| *k != DeviceKind::Unknown)
            .or_else(|| readings.iter().find_map(|r| DeviceKind::of_metric(&r.metric)))
            .unwrap_or(DeviceKind::Unknown);
        if let Some(keyed) = seq {
            seqs.insert(device.to_owned(), keyed);
        }
        Ok(Ready { device: device.to_owned(), kind, readings, up_to_ms, seq, downlink: info.downlink })
    }

    /// The pack inside a signed payload, once its envelope checks, with its sequence number;
    /// a plain payload as it is. Which of the two a device must send is up to the registry.
    fn unseal<'p>(
        &self,
        device: &str,
        payload: &'p [u8],
        seqs: &HashMap<String, KeyedSeq>,
    ) -> Result<(&'p [u8], Option<KeyedSeq>), Rejection> {
        let refuse = |kind, reason: String| Rejection::new(Some(device), kind, reason);
        let key = self.registry.key(device);
        let Some(key) = key else {
            if cose::is_sealed(payload) {
                return Err(refuse(Reason::UnknownKey, "signed pack from a device registered without a key".into()));
            }
            return Ok((payload, None));
        };
        if !cose::is_sealed(payload) {
            return Err(refuse(Reason::Unsigned, "device has a key: its packs must be signed (cose_mac0)".into()));
        }
        let envelope = cose::parse(payload).map_err(|e| refuse(Reason::BadEnvelope, e.to_string()))?;
        if envelope.kid() != device.as_bytes() {
            return Err(refuse(Reason::BadSignature, "key id does not name the device of the topic".into()));
        }
        let pack = envelope.verify(&key.0).map_err(|e| refuse(Reason::BadSignature, e.to_string()))?;
        let seq = envelope.seq();
        let fingerprint = cose::key_fingerprint(&key.0);
        if let Some(last) = self.last_seq(device, fingerprint, seqs).filter(|&last| seq <= last) {
            return Err(refuse(
                Reason::Replayed,
                format!("sequence number {seq} is not above {last}, the last accepted"),
            ));
        }
        Ok((pack, Some((seq, fingerprint))))
    }

    /// The last number accepted from `device` under the key of `fingerprint`, staged in this
    /// group or stored; `None` if there is none, or if the last one was accepted under
    /// another key (the device's key changed, and with it the numbering).
    fn last_seq(
        &self,
        device: &str,
        fingerprint: [u8; FINGERPRINT_LEN],
        seqs: &HashMap<String, KeyedSeq>,
    ) -> Option<u64> {
        let (last, under) = seqs.get(device).copied().or_else(|| self.store.device_seq_with_id(device))?;
        (under == fingerprint).then_some(last)
    }
}

/// Whether two strings are equal, without a call to `memcmp` for no bytes or for one string
/// at one place: most records have no base name, and the CBOR decoder hands out a record's
/// name and unit, when they repeat the record before's, at the place it first read them; the
/// calls to `memcmp` were 77 instructions a record (callgrind, `mekong-bench pipeline
/// --readings 50`). (When empty names still came at a dangling address, glibc's AVX-512
/// `memcmp` took over a hundred times longer there, and this check was found; the decoder now
/// hands out none such.)
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && (a.is_empty() || std::ptr::eq(a.as_ptr(), b.as_ptr()) || a == b)
}

/// The readings of `ready` but those at the indexes `repeated` (ascending), by metric in the
/// order of first appearance; `None` if none is left.
fn new_readings(ready: &Ready, repeated: &[usize]) -> Option<Stored> {
    if repeated.len() >= ready.readings.len() {
        return None;
    }
    let mut series: Vec<Series> = Vec::new();
    let mut repeated = repeated.iter().peekable();
    // The series of the reading before, and its metric: the readings of a series mostly
    // follow each other and share their metric's `Rc`, so most find their series at once.
    let mut before: Option<(usize, &Rc<str>)> = None;
    for (at, r) in ready.readings.iter().enumerate() {
        if repeated.next_if(|&&i| i == at).is_some() {
            continue;
        }
        let found = match before {
            Some((index, metric)) if Rc::ptr_eq(metric, &r.metric) => Some(index),
            // A pack names few metrics: a scan beats a map.
            _ => series.iter().position(|s| s.metric == *r.metric),
        };
        before = Some((found.unwrap_or(series.len()), &r.metric));
        match found.and_then(|index| series.get_mut(index)) {
            Some(s) => s.points.push((r.time_ms, r.value)),
            None => {
                // Room for the rest of the pack's readings of the metric at once (repeats
                // left out are few), rather than growing the list as a pack of fifty did.
                let of_metric = |x: &&Reading| Rc::ptr_eq(&x.metric, &r.metric) || x.metric == r.metric;
                let mut points = Vec::with_capacity(ready.readings[at..].iter().filter(of_metric).count());
                points.push((r.time_ms, r.value));
                series.push(Series {
                    metric: r.metric.to_string(),
                    unit: r.unit.as_deref().map(str::to_owned),
                    boolean: r.value_kind == ValueKind::Boolean,
                    points,
                })
            }
        }
    }
    Some(Stored { device: ready.device.clone(), kind: ready.kind.as_str().to_owned(), series })
}

#[cfg(test)]
mod tests;
