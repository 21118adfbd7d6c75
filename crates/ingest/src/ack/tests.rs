//! Which answers a round sends after its flush: the rule that keeps an acknowledgement from
//! naming a pack that is not on disk, and a refusal from resting on data that is not.

use mekong_schema::Reason;
use mekong_store::WriteSummary;

use super::*;
use crate::pipeline::{Accepted, Rejection};

const NOW: i64 = 1_790_000_000_000;

fn accepted(device: &str) -> Outcome {
    let summary = WriteSummary { stored: 3, duplicates: 1 };
    let series = vec![mekong_feed::Series {
        metric: "speed".into(),
        unit: None,
        boolean: false,
        points: vec![(NOW - 1_000, 3.0)],
    }];
    let new_readings = Some(Stored { device: device.into(), kind: "traffic".into(), series });
    Outcome::Accepted(Accepted {
        device: device.into(),
        summary,
        up_to_ms: NOW - 1_000,
        seq: Some(9),
        downlink: 0,
        new_readings,
    })
}

fn refused(device: &str, kind: Reason) -> Outcome {
    Outcome::Refused(Rejection { device: Some(device.into()), kind, reason: "why".into(), seq: None })
}

fn group(generation: Option<u64>) -> Handled {
    Handled {
        generation: generation.map(Generation),
        outbox: None,
        outcomes: vec![
            accepted("a"),
            refused("b", Reason::BadTime),
            refused("c", Reason::Replayed),
            Outcome::Deferred,
            Outcome::Refused(Rejection { device: None, kind: Reason::BadTopic, reason: "why".into(), seq: None }),
        ],
        offsets: Vec::new(),
    }
}

/// Devices answered, and what was counted: (packs, readings, withheld).
fn check(pending: &[Handled], durable: Option<u64>, devices: &[&str], counts: (u64, u64, u64)) {
    let out = answers(pending, durable.map(Generation), NOW);
    let got: Vec<&str> = out.messages.iter().map(|(d, _)| *d).collect();
    assert_eq!(got, devices);
    assert_eq!((out.packs, out.readings, out.withheld), counts);
}

#[test]
fn a_group_of_the_flushed_generation_gets_every_answer() {
    check(&[group(Some(2))], Some(2), &["a", "b", "c"], (1, 3, 0));
    let pending = [group(Some(2))];
    let out = answers(&pending, Some(Generation(2)), NOW);
    assert_eq!(out.messages[0].1, Downlink::Ack { up_to_ms: NOW - 1_000, readings: 4, server_ms: NOW, seq: Some(9) });
    assert_eq!(out.messages[1].1, Downlink::Refused { reason: "bad_time", server_ms: NOW, seq: None });
}

#[test]
fn without_a_flush_of_its_generation_only_refusals_about_the_pack_go_out() {
    // The flush failed.
    check(&[group(Some(2))], None, &["b"], (0, 0, 2));
    // A newer opening was flushed: what went to the failed one is not on disk.
    check(&[group(Some(1))], Some(2), &["b"], (0, 0, 2));
    // The write failed, or the store was opened afresh between the checks and the write.
    check(&[group(None)], Some(2), &["b"], (0, 0, 2));
    check(&[group(Some(1)), group(Some(2))], Some(2), &["b", "a", "b", "c"], (1, 3, 2));
}

#[test]
fn only_the_readings_of_the_flushed_generation_go_on_the_feed() {
    let mut pending = [group(Some(1)), group(Some(2)), group(None)];
    let fed = new_readings(&mut pending, Some(Generation(2)));
    assert_eq!(fed.len(), 1);
    assert_eq!(pending[1].outcomes[0], accepted("a").without_readings());
    // What was not made durable keeps its readings: nothing of it went out.
    assert_eq!(pending[0].outcomes[0], accepted("a"));
}

trait WithoutReadings {
    fn without_readings(self) -> Self;
}

impl WithoutReadings for Outcome {
    fn without_readings(mut self) -> Outcome {
        if let Outcome::Accepted(a) = &mut self {
            a.new_readings = None;
        }
        self
    }
}

/// An accepted pack of `device` with newest reading `up_to_ms`, whose node reads downlink
/// version `downlink`.
fn pack(device: &str, up_to_ms: i64, downlink: u8) -> Outcome {
    Outcome::Accepted(Accepted {
        device: device.into(),
        summary: WriteSummary { stored: 1, duplicates: 0 },
        up_to_ms,
        seq: None,
        downlink,
        new_readings: None,
    })
}

/// The packs each downlink names, by device: `[("d", [t1, t2]), ("e", [t3])]`, with `Refused`
/// as an empty list.
fn named(out: &Answers<'_>) -> Vec<(String, Vec<i64>)> {
    out.messages
        .iter()
        .map(|(device, m)| {
            let times = match m {
                Downlink::Ack { up_to_ms, .. } => vec![*up_to_ms],
                Downlink::Acks { acks, .. } => acks.as_slice().iter().map(|a| a.up_to_ms).collect(),
                Downlink::Refused { .. } => vec![],
            };
            (device.to_string(), times)
        })
        .collect()
}

/// A device whose packs say it reads version 2 gets one downlink for its packs of a flush,
/// across groups, at the place of its first; a device that does not say so gets one per
/// pack, as before; a refusal of the device closes its list; a list holds at most
/// MAX_BATCH packs, and a list of one goes out as a plain acknowledgement.
#[test]
fn a_device_that_reads_lists_gets_one_downlink_per_flush() {
    let first = Handled {
        generation: Some(Generation(3)),
        outbox: None,
        outcomes: vec![pack("d", 1, 2), pack("old", 10, 0), pack("d", 2, 2), pack("old", 11, 0)],
        offsets: Vec::new(),
    };
    let second = Handled {
        generation: Some(Generation(3)),
        outbox: None,
        outcomes: vec![
            pack("d", 3, 2),
            refused("d", Reason::BadTime),
            pack("d", 4, 2),
            pack("d", 5, 2),
            pack("e", 20, 2),
        ],
        offsets: Vec::new(),
    };
    let pending = [first, second];
    let out = answers(&pending, Some(Generation(3)), NOW);
    let want: Vec<(String, Vec<i64>)> = vec![
        ("d".into(), vec![1, 2, 3]),
        ("old".into(), vec![10]),
        ("old".into(), vec![11]),
        ("d".into(), vec![]),
        ("d".into(), vec![4, 5]),
        ("e".into(), vec![20]),
    ];
    assert_eq!(named(&out), want);
    assert_eq!((out.packs, out.readings, out.withheld), (8, 8, 0));
    assert!(matches!(out.messages[1].1, Downlink::Ack { .. }), "a device that did not opt in");
    assert_eq!(out.messages[5].1, Downlink::Ack { up_to_ms: 20, readings: 1, server_ms: NOW, seq: None });
    let Downlink::Acks { acks, server_ms } = out.messages[0].1 else { panic!("a list") };
    assert_eq!(server_ms, NOW);
    assert_eq!(acks.as_slice()[2], downlink::PackAck { up_to_ms: 3, readings: 1, seq: None });

    // Ten packs in one flush: a list of MAX_BATCH, then the rest.
    let many = Handled {
        generation: Some(Generation(3)),
        outbox: None,
        outcomes: (0..10).map(|t| pack("d", t, 2)).collect(),
        offsets: Vec::new(),
    };
    let out = answers(std::slice::from_ref(&many), Some(Generation(3)), NOW);
    assert_eq!(named(&out), vec![("d".into(), (0..8).collect()), ("d".into(), vec![8, 9])]);
    // Not flushed: nothing is acknowledged, listed or not.
    let pending = [many];
    let out = answers(&pending, Some(Generation(4)), NOW);
    assert!(out.messages.is_empty());
    assert_eq!(out.withheld, 10);
}

/// The PUBACKs a flush lets go are those of the packs it answers: accepted packs of the
/// flushed generation (success), refusals that go out (payload format invalid); not a
/// deferred pack, nor one whose acknowledgement is withheld, nor one without an offset.
#[test]
fn the_broker_s_held_pubacks_go_with_the_answers() {
    let mut first = group(Some(2));
    first.offsets = vec![Some(10), Some(11), Some(12), Some(13), None];
    let mut second = group(Some(1));
    second.offsets = (20..25).map(Some).collect();
    let pending = [first, second];
    let got = pubacks(&pending, Some(Generation(2)));
    let want = vec![
        (10, PubAckReason::Success),
        (11, PubAckReason::PayloadFormatInvalid),
        (12, PubAckReason::PayloadFormatInvalid),
        // The second group's generation was not flushed: only its refusal about the pack
        // alone (bad_time) is final; the bad_topic refusal has no device and is at 24.
        (21, PubAckReason::PayloadFormatInvalid),
        (24, PubAckReason::PayloadFormatInvalid),
    ];
    assert_eq!(got, want);
    // A failed flush lets go of the refusals about the pack alone.
    let got: Vec<u64> = pubacks(&pending, None).into_iter().map(|(o, _)| o).collect();
    assert_eq!(got, vec![11, 21, 24]);
}

/// A pack of downlink version 3 is acknowledged by its PUBACK alone: no downlink, but
/// counted; its refusal still goes out.
#[test]
fn a_pack_of_version_3_gets_no_acknowledgement_downlink() {
    let group = Handled {
        generation: Some(Generation(3)),
        outbox: None,
        outcomes: vec![pack("p", 1, 3), refused("p", Reason::BadTime), pack("p", 2, 3), pack("old", 5, 0)],
        offsets: (0..4).map(Some).collect(),
    };
    let pending = [group];
    let out = answers(&pending, Some(Generation(3)), NOW);
    assert_eq!(named(&out), vec![("p".to_string(), vec![]), ("old".to_string(), vec![5])]);
    assert_eq!((out.packs, out.readings, out.withheld), (3, 3, 0));
    assert_eq!(pubacks(&pending, Some(Generation(3))).len(), 4);
}
