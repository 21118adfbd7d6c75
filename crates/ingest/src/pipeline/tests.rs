//! Tests of the pipeline on a real store: what is stored, what is refused and why, signed
//! packs and their sequence numbers. (The gap counter that detects messages the broker
//! skipped is tested in `worker.rs`.)

use mekong_schema::{encode_pack, Base, Reading};
use mekong_store::{Point, StoreOptions};

use super::*;
use crate::DeviceKey;

const NOW_MS: i64 = 1_790_000_000_000;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    stats: Arc<Stats>,
    pipeline: Pipeline,
}

fn fixture(opts: PipelineOptions) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions { flush_every_ms: None, ..Default::default() }).unwrap();
    let stats = Arc::new(Stats::new(100));
    let pipeline = Pipeline::new(opts, store.clone(), Arc::clone(&stats));
    Fixture { _dir: dir, store, stats, pipeline }
}

fn pack(readings: &[Reading<'_>], bt: f64) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let n = encode_pack(&mut buf, &Base { time: Some(bt), ..Default::default() }, readings).unwrap();
    buf.truncate(n);
    buf
}

/// The acceptance an outcome must be.
trait Accept {
    fn accepted(self) -> Accepted;
}

impl Accept for Outcome {
    fn accepted(self) -> Accepted {
        match self {
            Outcome::Accepted(a) => a,
            other => panic!("expected an acceptance, got {other:?}"),
        }
    }
}

fn reading(name: &str, value: f64, time: f64) -> Reading<'_> {
    Reading { name, unit: None, value, time }
}

fn refused(f: &mut Fixture, topic: &str, payload: &[u8]) -> Rejection {
    match f.pipeline.handle(topic.as_bytes(), payload, NOW_MS) {
        Outcome::Refused(r) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn a_pack_is_stored_with_its_times_and_the_kind_inferred() {
    let mut f = fixture(PipelineOptions::default());
    let payload = pack(
        &[reading("water_level", 182.5, 0.0), reading("water_level", 183.0, 10.0), reading("salinity", 0.4, 10.0)],
        1_789_999_000.5,
    );
    let got = f.pipeline.handle(b"mekong/v1/hau-01/up", &payload, NOW_MS).accepted();
    assert_eq!(got.summary, WriteSummary { stored: 3, duplicates: 0 });
    assert_eq!(got.up_to_ms, 1_789_999_010_500);
    let points = f.store.points("hau-01", "water_level", i64::MIN, i64::MAX, 10).unwrap().unwrap();
    assert_eq!(
        points,
        [Point { time_ms: 1_789_999_000_500, value: 182.5 }, Point { time_ms: 1_789_999_010_500, value: 183.0 }]
    );
    let device = f.store.device("hau-01").unwrap();
    assert_eq!((device.kind.as_str(), device.last_seen_ms), ("water", NOW_MS));
    assert_eq!((device.tally.packs, f.stats.snapshot().readings), (1, 3));
}

#[test]
fn the_registry_decides_the_kind_and_can_refuse_unknown_devices() {
    let mut registry = Registry::new();
    registry.insert("bridge-3", DeviceKind::Traffic);
    let opts = PipelineOptions { registry, require_registration: true, ..Default::default() };
    let mut f = fixture(opts);
    let payload = pack(&[reading("temperature", 30.0, 0.0)], 1_789_999_000.0);
    f.pipeline.handle(b"mekong/v1/bridge-3/up", &payload, NOW_MS).accepted();
    assert_eq!(f.store.device("bridge-3").unwrap().kind, "traffic");
    let r = refused(&mut f, "mekong/v1/stranger/up", &payload);
    assert_eq!((r.kind, r.device.as_deref()), (Reason::UnknownDevice, Some("stranger")));
    assert!(f.store.device("stranger").is_none());
}

#[test]
fn a_replaced_registry_applies_from_the_next_group() {
    let opts = PipelineOptions { require_registration: true, ..Default::default() };
    let mut f = fixture(opts);
    let payload = pack(&[reading("temperature", 30.0, 0.0)], 1_789_999_000.0);
    assert_eq!(refused(&mut f, "mekong/v1/bridge-3/up", &payload).kind, Reason::UnknownDevice);
    // Registered through the API while the ingest thread runs: no restart.
    let mut registry = Registry::new();
    registry.insert("bridge-3", DeviceKind::Traffic);
    f.pipeline.registry_handle().replace(registry);
    f.pipeline.handle(b"mekong/v1/bridge-3/up", &payload, NOW_MS).accepted();
    assert_eq!(f.store.device("bridge-3").unwrap().kind, "traffic");
    // And removed again.
    f.pipeline.registry_handle().replace(Registry::new());
    let later = pack(&[reading("temperature", 31.0, 0.0)], 1_789_999_001.0);
    assert_eq!(refused(&mut f, "mekong/v1/bridge-3/up", &later).kind, Reason::UnknownDevice);
}

#[test]
fn a_known_devices_refusals_are_tallied_in_the_store_with_its_packs() {
    let mut f = fixture(PipelineOptions::default());
    let good = pack(&[Reading { unit: Some("cm"), ..reading("water_level", 180.0, 0.0) }], 1_789_999_000.0);
    f.pipeline.handle(b"mekong/v1/hau-01/up", &good, NOW_MS).accepted();
    f.pipeline.handle(b"mekong/v1/hau-01/up", &good, NOW_MS + 1).accepted();
    let garbage = refused(&mut f, "mekong/v1/hau-01/up", b"\xff").kind;
    // The store refuses this one itself, and tallies it under the wire contract's label.
    let other_unit = pack(&[Reading { unit: Some("m"), ..reading("water_level", 1.8, 1.0) }], 1_789_999_000.0);
    assert_eq!(refused(&mut f, "mekong/v1/hau-01/up", &other_unit).kind, Reason::UnitMismatch);
    // A device the store does not know is not added for its refusals.
    refused(&mut f, "mekong/v1/stranger/up", b"\xff");
    assert!(f.store.device("stranger").is_none());

    let tally = f.store.device("hau-01").unwrap().tally;
    assert_eq!((tally.packs, tally.duplicates, tally.rejected_total()), (2, 1, 2));
    assert_eq!(tally.rejected.get(garbage.as_str()), Some(&1));
    assert_eq!(tally.rejected.get(Reason::UnitMismatch.as_str()), Some(&1));
    assert_eq!(tally.last_rejection.map(|(_, reason)| reason), Some(Reason::UnitMismatch.as_str().to_owned()));
}

#[test]
fn bad_topics_are_refused_and_downlinks_ignored() {
    let mut f = fixture(PipelineOptions::default());
    let payload = pack(&[reading("pm10", 30.0, 0.0)], 1_789_999_000.0);
    // The link subscribes to uplinks only, so a downlink never reaches the pipeline; were one
    // to, it is no uplink either.
    for topic in ["mekong/v1/Bad_Id/up", "mekong/v1/a/b/up", "mekong/v2/a/up", "mekong/v1/a", "mekong/v1/a/down"] {
        let r = refused(&mut f, topic, &payload);
        assert_eq!((r.kind, r.device), (Reason::BadTopic, None), "{topic}");
    }
    assert_eq!(f.stats.snapshot().received, 5);
    assert_eq!(f.stats.device_rejected(mekong_stats::INVALID_DEVICE), 5);
}

#[test]
fn oversized_payloads_are_refused_before_decoding() {
    let mut f = fixture(PipelineOptions { max_payload_bytes: 16, ..Default::default() });
    let payload = pack(&[reading("pm10", 30.0, 0.0), reading("pm2_5", 10.0, 0.0)], 1_789_999_000.0);
    let r = refused(&mut f, "mekong/v1/a/up", &payload);
    assert_eq!(r.kind, Reason::TooLarge);
    assert!(r.reason.contains("over the limit of 16"), "{}", r.reason);
}

#[test]
fn a_pack_with_one_bad_record_stores_nothing() {
    let mut f = fixture(PipelineOptions::default());
    // The second record is a day and a half ahead of the receipt time.
    let payload = pack(&[reading("pm10", 30.0, 0.0), reading("pm10", 31.0, 130_000.0)], 1_790_000_000.0);
    let r = refused(&mut f, "mekong/v1/a/up", &payload);
    assert_eq!(r.kind, Reason::BadTime);
    assert_eq!(r.reason, "record 1: time is more than a day in the future");
    assert!(f.store.device("a").is_none());
    let log = f.stats.rejections(None, 10);
    assert_eq!(log[0].head, payload[..32]);
    assert_eq!(log[0].payload_len, payload.len());
}

#[test]
fn a_unit_change_is_refused_with_the_reason() {
    let mut f = fixture(PipelineOptions::default());
    let first = pack(&[Reading { unit: Some("cm"), ..reading("water_level", 180.0, 0.0) }], 1_789_999_000.0);
    f.pipeline.handle(b"mekong/v1/a/up", &first, NOW_MS).accepted();
    let second = pack(&[Reading { unit: Some("m"), ..reading("water_level", 1.8, 0.0) }], 1_789_999_010.0);
    let r = refused(&mut f, "mekong/v1/a/up", &second);
    assert_eq!((r.kind, r.reason.as_str()), (Reason::UnitMismatch, "series water_level is in cm, not m"));
}

#[test]
fn a_unit_that_changes_within_a_pack_is_not_taken_for_the_one_before() {
    // The sink shares a reading's unit with the reading before's when they are the same: a
    // unit that differs, right after, is its own.
    let mut f = fixture(PipelineOptions::default());
    let payload = pack(
        &[
            Reading { unit: Some("cm"), ..reading("water_level", 180.0, 0.0) },
            Reading { unit: Some("m"), ..reading("water_level", 1.8, 10.0) },
        ],
        1_789_999_000.0,
    );
    let r = refused(&mut f, "mekong/v1/a/up", &payload);
    assert_eq!((r.kind, r.reason.as_str()), (Reason::UnitMismatch, "series water_level is in cm, not m"));
}

#[test]
fn resends_are_counted_as_duplicates() {
    let mut f = fixture(PipelineOptions::default());
    let payload = pack(&[reading("speed", 31.0, 0.0)], 1_789_999_000.0);
    f.pipeline.handle(b"mekong/v1/a/up", &payload, NOW_MS).accepted();
    let again = f.pipeline.handle(b"mekong/v1/a/up", &payload, NOW_MS + 1).accepted();
    assert_eq!(again.summary, WriteSummary { stored: 0, duplicates: 1 });
    assert_eq!(f.store.point_count(), 1);
}

#[test]
fn a_name_repeated_under_another_base_name_is_another_metric() {
    let mut f = fixture(PipelineOptions::default());
    // The same `n` under two base names, back and forth: the metric follows the pair.
    let payload = br#"[{"bn":"pump-","bt":1789999000,"n":"rpm","v":1},{"n":"rpm","t":1,"v":2},
        {"bn":"fan-","n":"rpm","t":2,"v":3},{"n":"rpm","t":3,"v":4},{"bn":"pump-","n":"rpm","t":4,"v":5}]"#;
    let got = f.pipeline.handle(b"mekong/v1/a/up", payload, NOW_MS).accepted();
    assert_eq!(got.summary.stored, 5);
    let values = |metric| -> Vec<f64> {
        f.store.points("a", metric, i64::MIN, i64::MAX, 10).unwrap().unwrap().iter().map(|p| p.value).collect()
    };
    assert_eq!((values("pump-rpm"), values("fan-rpm")), (vec![1.0, 2.0, 5.0], vec![3.0, 4.0]));
}

#[test]
fn an_acceptance_carries_only_the_readings_it_added_by_metric() {
    let mut f = fixture(PipelineOptions::default());
    let first = pack(&[reading("water_level", 180.0, 0.0)], 1_789_999_000.0);
    let fresh = f.pipeline.handle(b"mekong/v1/a/up", &first, NOW_MS).accepted().new_readings.unwrap();
    assert_eq!((fresh.device.as_str(), fresh.kind.as_str(), fresh.points()), ("a", "water", 1));
    // A pack that overlaps what is stored: the stored reading is left out, the rest grouped by
    // metric in the order of first appearance.
    let overlapping = pack(
        &[reading("water_level", 180.0, 0.0), reading("salinity", 0.4, 0.0), reading("water_level", 181.0, 10.0)],
        1_789_999_000.0,
    );
    let fresh = f.pipeline.handle(b"mekong/v1/a/up", &overlapping, NOW_MS).accepted().new_readings.unwrap();
    let series: Vec<(&str, Vec<(i64, f64)>)> =
        fresh.series.iter().map(|s| (s.metric.as_str(), s.points.clone())).collect();
    assert_eq!(
        series,
        [("salinity", vec![(1_789_999_000_000, 0.4)]), ("water_level", vec![(1_789_999_010_000, 181.0)])]
    );
    // A whole resend adds nothing.
    assert_eq!(f.pipeline.handle(b"mekong/v1/a/up", &overlapping, NOW_MS).accepted().new_readings, None);
}

#[test]
fn an_acceptance_groups_interleaved_metrics_by_metric() {
    let mut f = fixture(PipelineOptions::default());
    let at = |i: u32| f64::from(i) * 10.0;
    let readings = [
        reading("water_level", 1.0, at(0)),
        reading("water_level", 2.0, at(1)),
        reading("salinity", 3.0, at(0)),
        reading("water_level", 4.0, at(2)),
        reading("salinity", 5.0, at(1)),
        reading("salinity", 6.0, at(2)),
        reading("water_level", 7.0, at(3)),
    ];
    let fresh = f.pipeline.handle(b"mekong/v1/a/up", &pack(&readings, 1_789_999_000.0), NOW_MS).accepted();
    let fresh = fresh.new_readings.unwrap();
    let series: Vec<(&str, Vec<f64>)> =
        fresh.series.iter().map(|s| (s.metric.as_str(), s.points.iter().map(|p| p.1).collect())).collect();
    assert_eq!(series, [("water_level", vec![1.0, 2.0, 4.0, 7.0]), ("salinity", vec![3.0, 5.0, 6.0])]);
}

#[test]
fn a_group_is_stored_in_one_write_with_outcomes_in_order() {
    let mut f = fixture(PipelineOptions::default());
    let good = pack(&[reading("pm10", 30.0, 0.0)], 1_789_999_000.0);
    let cm = pack(&[Reading { unit: Some("cm"), ..reading("water_level", 180.0, 0.0) }], 1_789_999_000.0);
    let m = pack(&[Reading { unit: Some("m"), ..reading("water_level", 1.8, 10.0) }], 1_789_999_000.0);
    let group: [(&[u8], &[u8]); 5] = [
        (b"mekong/v1/a/up", &good),
        (b"mekong/v1/a/down", &good),
        (b"mekong/v1/b/up", &cm),
        (b"mekong/v1/b/up", &m),
        (b"mekong/v1/B/up", &good),
    ];
    let outcomes = f.pipeline.handle_group(&group, NOW_MS).outcomes;
    assert!(matches!(&outcomes[0], Outcome::Accepted(a) if a.device == "a"));
    assert!(matches!(&outcomes[1], Outcome::Refused(r) if r.kind == Reason::BadTopic));
    assert!(matches!(&outcomes[2], Outcome::Accepted(a) if a.summary.stored == 1));
    assert!(matches!(&outcomes[3], Outcome::Refused(r) if r.kind == Reason::UnitMismatch));
    assert!(matches!(&outcomes[4], Outcome::Refused(r) if r.kind == Reason::BadTopic));
    let s = f.stats.snapshot();
    assert_eq!((s.received, s.accepted, s.rejected, s.readings), (5, 2, 3, 2));
    assert_eq!(f.store.point_count(), 2);
}

const KEY: [u8; 32] = [0x5a; 32];

fn sealed(key: &[u8; 32], seq: u64, kid: &str, pack: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; pack.len() + mekong_schema::cose::MAX_OVERHEAD];
    let n = mekong_schema::cose::seal(&mut out, key, seq, kid, pack).unwrap();
    out.truncate(n);
    out
}

fn signing_fixture() -> Fixture {
    let mut registry = Registry::new();
    registry.insert_keyed("hau-07", DeviceKind::Water, DeviceKey(KEY));
    registry.insert("hau-08", DeviceKind::Water);
    fixture(PipelineOptions { registry, ..Default::default() })
}

#[test]
fn a_keyed_device_must_sign_and_may_not_replay() {
    let mut f = signing_fixture();
    const UP: &[u8] = b"mekong/v1/hau-07/up";
    let plain = pack(&[reading("water_level", 180.0, 0.0)], 1_789_999_000.0);
    let accepted = f.pipeline.handle(UP, &sealed(&KEY, 5, "hau-07", &plain), NOW_MS).accepted();
    assert_eq!((accepted.seq, accepted.summary.stored), (Some(5), 1));
    assert_eq!(f.store.device_seq("hau-07"), Some(5));

    let next = pack(&[reading("water_level", 181.0, 10.0)], 1_789_999_000.0);
    let mut other_key = KEY;
    other_key[0] ^= 1;
    // Each refusal names the envelope's sequence number when the envelope could be read.
    for (payload, kind, seq) in [
        (plain.clone(), Reason::Unsigned, None),
        (sealed(&other_key, 6, "hau-07", &next), Reason::BadSignature, Some(6)),
        (sealed(&KEY, 7, "hau-08", &next), Reason::BadSignature, Some(7)),
        (sealed(&KEY, 5, "hau-07", &plain), Reason::Replayed, Some(5)),
        (sealed(&KEY, 4, "hau-07", &next), Reason::Replayed, Some(4)),
        (sealed(&KEY, 8, "hau-07", &[0x81, 0xa1, 0x02, 0x61, b'x']), Reason::WrongType, Some(8)),
        (vec![0xd1, 0x84, 0x40], Reason::BadEnvelope, None),
    ] {
        let r = refused(&mut f, "mekong/v1/hau-07/up", &payload);
        assert_eq!((r.kind, r.device.as_deref(), r.seq), (kind, Some("hau-07"), seq), "{}", r.reason);
    }
    assert_eq!(f.store.point_count(), 1, "nothing refused was stored");

    // A replay within one group is refused too, and a skipped number counts as a gap.
    let (first, again) = (sealed(&KEY, 6, "hau-07", &next), sealed(&KEY, 6, "hau-07", &next));
    let outcomes = f.pipeline.handle_group(&[(UP, &first), (UP, &again)], NOW_MS).outcomes;
    assert!(matches!(&outcomes[0], Outcome::Accepted(a) if a.seq == Some(6)));
    assert!(matches!(&outcomes[1], Outcome::Refused(r) if r.kind == Reason::Replayed));
    assert_eq!(f.store.device("hau-07").unwrap().tally.seq_gaps, 0);
    let later = pack(&[reading("water_level", 182.0, 20.0)], 1_789_999_000.0);
    f.pipeline.handle(UP, &sealed(&KEY, 10, "hau-07", &later), NOW_MS).accepted();
    assert_eq!((f.store.device("hau-07").unwrap().tally.seq_gaps, f.store.device_seq("hau-07")), (1, Some(10)));
}

#[test]
fn signed_packs_need_a_registered_key() {
    let mut f = signing_fixture();
    let payload = sealed(&KEY, 1, "hau-08", &pack(&[reading("water_level", 180.0, 0.0)], 1_789_999_000.0));
    for topic in ["mekong/v1/hau-08/up", "mekong/v1/stranger/up"] {
        assert_eq!(refused(&mut f, topic, &payload).kind, Reason::UnknownKey);
    }
    // A refusal still names the envelope's number, so the node knows which pack it was.
    assert_eq!(refused(&mut f, "mekong/v1/hau-08/up", &payload).seq, Some(1));
    // A device without a key keeps sending plain packs, and has no sequence number.
    let plain = pack(&[reading("water_level", 180.0, 0.0)], 1_789_999_000.0);
    let accepted = f.pipeline.handle(b"mekong/v1/hau-08/up", &plain, NOW_MS).accepted();
    assert_eq!(accepted.seq, None);
    assert_eq!(f.store.device_seq("hau-08"), None);
}

/// A new key starts a new numbering: the first pack signed with it is accepted whatever its
/// number (even below the old key's), its numbers are then protected as before, and the old
/// key no longer verifies. The store keeps the key's fingerprint, so this holds across a
/// restart (a new pipeline on the same store, as after `mekong serve` restarts).
#[test]
fn sequence_numbers_are_per_key() {
    let mut f = signing_fixture();
    const UP: &[u8] = b"mekong/v1/hau-07/up";
    let at = |i: u32| pack(&[reading("water_level", 180.0 + f64::from(i), f64::from(i))], 1_789_999_000.0);
    f.pipeline.handle(UP, &sealed(&KEY, 100, "hau-07", &at(0)), NOW_MS).accepted();

    let new_key = [0xa5; 32];
    let mut registry = Registry::new();
    registry.insert_keyed("hau-07", DeviceKind::Water, DeviceKey(new_key));
    let mut p =
        Pipeline::new(PipelineOptions { registry, ..Default::default() }, f.store.clone(), Arc::clone(&f.stats));
    let refused_by = |p: &mut Pipeline, payload: &[u8]| match p.handle(UP, payload, NOW_MS) {
        Outcome::Refused(r) => r.kind,
        other => panic!("expected a rejection, got {other:?}"),
    };
    assert_eq!(refused_by(&mut p, &sealed(&KEY, 101, "hau-07", &at(1))), Reason::BadSignature);
    let accepted = p.handle(UP, &sealed(&new_key, 1, "hau-07", &at(2)), NOW_MS).accepted();
    assert_eq!(accepted.seq, Some(1));
    assert_eq!(f.store.device_seq_with_id("hau-07"), Some((1, cose::key_fingerprint(&new_key))));
    assert_eq!(refused_by(&mut p, &sealed(&new_key, 1, "hau-07", &at(3))), Reason::Replayed);
    p.handle(UP, &sealed(&new_key, 2, "hau-07", &at(4)), NOW_MS).accepted();
    assert_eq!(f.store.device("hau-07").unwrap().tally.seq_gaps, 0, "a new numbering is not a gap");

    // Within one group as well: the first pack under the new key starts its numbering.
    let mut back = Registry::new();
    back.insert_keyed("hau-07", DeviceKind::Water, DeviceKey(KEY));
    let mut p =
        Pipeline::new(PipelineOptions { registry: back, ..Default::default() }, f.store.clone(), Arc::clone(&f.stats));
    let (a, b, c) =
        (sealed(&KEY, 3, "hau-07", &at(5)), sealed(&KEY, 3, "hau-07", &at(6)), sealed(&KEY, 4, "hau-07", &at(7)));
    let outcomes = p.handle_group(&[(UP, &a), (UP, &b), (UP, &c)], NOW_MS).outcomes;
    assert!(matches!(&outcomes[0], Outcome::Accepted(a) if a.seq == Some(3)));
    assert!(matches!(&outcomes[1], Outcome::Refused(r) if r.kind == Reason::Replayed && r.seq == Some(3)));
    assert!(matches!(&outcomes[2], Outcome::Accepted(a) if a.seq == Some(4)));
    assert_eq!(f.store.device_seq_with_id("hau-07"), Some((4, cose::key_fingerprint(&KEY))));
}

/// SenML booleans (`vb`) make a series of booleans: stored as 1 and 0, said by the series'
/// value kind; a number for it afterwards is refused like a unit change, and strings are
/// still refused.
#[test]
fn booleans_make_a_boolean_series_that_numbers_cannot_join() {
    let mut f = fixture(PipelineOptions::default());
    let pump = br#"[{"bt":1789999000,"n":"pump_running","vb":true},{"n":"pump_running","t":60,"vb":false},{"n":"water_level","u":"cm","v":181}]"#;
    let accepted = f.pipeline.handle(b"mekong/v1/hau-01/up", pump, NOW_MS).accepted();
    assert_eq!(accepted.summary.stored, 3);
    let series = f.store.series("hau-01", "pump_running").unwrap();
    assert_eq!((series.value_kind, series.last_value, series.unit), (ValueKind::Boolean, 0.0, None));
    assert_eq!(f.store.series("hau-01", "water_level").unwrap().value_kind, ValueKind::Number);
    let points = f.store.points("hau-01", "pump_running", 0, i64::MAX, 10).unwrap().unwrap();
    let values: Vec<_> = points.iter().map(|p| p.value).collect();
    assert_eq!(values, [1.0, 0.0]);

    let number = pack(&[reading("pump_running", 1.0, 120.0)], 1_789_999_000.0);
    let r = refused(&mut f, "mekong/v1/hau-01/up", &number);
    assert_eq!((r.kind, r.reason.as_str()), (Reason::UnitMismatch, "series pump_running holds booleans, not numbers"));
    let boolean = br#"[{"bt":1789999000,"n":"water_level","vb":true}]"#;
    let r = refused(&mut f, "mekong/v1/hau-01/up", boolean);
    assert_eq!(r.reason, "series water_level holds numbers, not booleans");
    let text = br#"[{"bt":1789999000,"n":"gate_state","vs":"open"}]"#;
    let r = refused(&mut f, "mekong/v1/hau-01/up", text);
    assert_eq!(r.kind, Reason::UnsupportedValue);
    assert!(r.reason.contains("only numbers (v) and booleans (vb) are stored"), "{}", r.reason);
    assert_eq!(f.store.series("hau-01", "pump_running").unwrap().count, 2);
}

/// A pack that says its node reads lists of acknowledgements (`"mekong_dl": 2`) is accepted
/// like any other and carries the version to the acknowledgement thread; without the label
/// the version is 0.
#[test]
fn a_pack_carries_the_downlink_version_its_node_reads() {
    let mut f = fixture(PipelineOptions::default());
    let readings = [reading("water_level", 182.5, 0.0)];
    let mut buf = vec![0u8; 256];
    let base = Base { time: Some(1_789_999_000.0), ..Default::default() };
    let n = mekong_schema::senml::encode_pack_with_downlink(&mut buf, &base, &readings, 2).unwrap();
    let got = f.pipeline.handle(b"mekong/v1/hau-01/up", &buf[..n], NOW_MS).accepted();
    assert_eq!((got.downlink, got.summary.stored), (2, 1));
    let got = f.pipeline.handle(b"mekong/v1/hau-01/up", &pack(&readings, 1_789_999_001.0), NOW_MS).accepted();
    assert_eq!(got.downlink, 0);
}
