//! Devices hear back on their downlink topic: an acknowledgement once their pack is on disk,
//! a refusal (with the reason kind) when it never will be, and nothing meant for another
//! device. The broker's PUBACK of an uplink waits for the same moment.

use std::collections::BTreeSet;

use mekong_schema::downlink::{self, Downlink as Message};

use crate::platform::{config, start};
use mekong_tests::{now_secs, pack, pack_acked_by_puback, pack_reading_lists, Downlink, Sensor, TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packs_are_acknowledged_after_the_flush_and_refusals_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(&config(dir.path())).await;
    let mut node = Sensor::device(running.mqtt(), "hau-03").await;
    // Subscribed (SUBACK) before hau-03 sends anything: whatever reached hau-04's topic since
    // would be in its client.
    let mut other = Sensor::device(running.mqtt(), "hau-04").await;
    let t = now_secs().floor();

    let before = (now_secs() * 1000.0) as i64;
    node.publish(
        "mekong/v1/hau-03/up",
        pack(t, &[("water_level", "cm", 170.0, -60.0), ("water_level", "cm", 171.5, 0.0)]),
    )
    .await;
    let ack = node.downlink().await;
    let Downlink::Ack { up_to_ms, readings, server_ms, seq } = ack else { panic!("expected an ack, got {ack:?}") };
    assert_eq!((up_to_ms, readings, seq), ((t * 1000.0) as i64, 2, None));
    assert!(server_ms >= before, "server time {server_ms} is the platform's clock");
    // The acknowledgement follows the flush that made the readings durable.
    let stats = running.json("/v1/stats").await;
    assert!(stats["durable_readings"].as_u64().unwrap() >= 2, "{stats}");

    // A resend is acknowledged as well (its readings are stored, as before).
    node.publish(
        "mekong/v1/hau-03/up",
        pack(t, &[("water_level", "cm", 170.0, -60.0), ("water_level", "cm", 171.5, 0.0)]),
    )
    .await;
    assert!(matches!(node.downlink().await, Downlink::Ack { readings: 2, .. }));

    node.publish("mekong/v1/hau-03/up", pack(t + 3.0 * 86_400.0, &[("water_level", "cm", 1.0, 0.0)])).await;
    assert!(matches!(node.downlink().await, Downlink::Refused { reason, .. } if reason == "bad_time"));

    // Another device's messages do not reach this one, either way. Absence is checked where
    // anything misrouted would have arrived: at each device's acknowledgement of a later
    // pack, sent after the other's messages by the same platform through the same broker.
    own_ack_and_nothing_else(&mut other, "hau-04", t - 10.0).await;
    own_ack_and_nothing_else(&mut node, "hau-03", t + 1.0).await;
    own_ack_and_nothing_else(&mut other, "hau-04", t - 5.0).await;

    // Six downlinks in all: none went anywhere else either.
    let stats = running.wait_stats("six downlinks", |s| s["downlinks"] == 6).await;
    assert_eq!(stats["durable_packs"], 5, "{stats}");
    running.stop().await;
}

/// Sends one reading at `t` as `device`, and checks that the next downlink its client holds
/// is that pack's acknowledgement (each pack's `up_to_ms` is its own) and that nothing else
/// came.
async fn own_ack_and_nothing_else(sensor: &mut Sensor, device: &str, t: f64) {
    sensor.publish(&format!("mekong/v1/{device}/up"), pack(t, &[("water_level", "cm", 170.0, 0.0)])).await;
    let ack = sensor.downlink().await;
    let expected = (t * 1000.0) as i64;
    assert!(matches!(ack, Downlink::Ack { up_to_ms, readings: 1, .. } if up_to_ms == expected), "{device}: {ack:?}");
    assert_eq!(sensor.received_downlink(), None, "{device}: a downlink that is not its own");
}

/// A node whose packs say it reads lists of acknowledgements (downlink version 2) and that
/// has many packs in flight gets them acknowledged in fewer downlinks, each pack exactly
/// once; a node of the first version in the same run, sending the same way at the same time,
/// still gets one acknowledgement per pack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_reads_lists_gets_fewer_downlinks_and_an_old_one_one_per_pack() {
    const PACKS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let running = start(&config(dir.path())).await;
    let mut new = Sensor::device_queued(running.mqtt(), "hau-new", 2 * PACKS).await;
    let mut old = Sensor::device_queued(running.mqtt(), "hau-old", 2 * PACKS).await;
    let t = now_secs().floor() - 600.0;
    // Both send their packs back to back, without waiting for PUBACKs: the platform takes
    // what arrived during one flush into the next, so packs of one device share flushes.
    for i in 0..PACKS {
        let at = t + i as f64;
        new.publish_nowait("mekong/v1/hau-new/up", pack_reading_lists(at, &[("water_level", "cm", 170.0, 0.0)])).await;
        old.publish_nowait("mekong/v1/hau-old/up", pack(at, &[("water_level", "cm", 171.0, 0.0)])).await;
    }
    let want: BTreeSet<i64> = (0..PACKS).map(|i| ((t + i as f64) * 1000.0) as i64).collect();

    let (mut covered, mut downlinks, mut lists) = (BTreeSet::new(), 0, 0);
    while covered.len() < PACKS {
        let payload = tokio::time::timeout(mekong_tests::TIMEOUT, new.downlink_payload()).await;
        let payload = payload.expect("no downlink").expect("connection gone");
        let times = match downlink::decode(&payload).unwrap() {
            Message::Ack { up_to_ms, readings: 1, seq: None, .. } => vec![up_to_ms],
            Message::Acks { acks, .. } => {
                assert!((2..=downlink::MAX_BATCH).contains(&acks.len()), "a list of 2 to MAX_BATCH: {acks:?}");
                lists += 1;
                acks.as_slice()
                    .iter()
                    .map(|a| {
                        assert_eq!((a.readings, a.seq), (1, None));
                        a.up_to_ms
                    })
                    .collect()
            }
            other => panic!("hau-new: {other:?}"),
        };
        downlinks += 1;
        for up_to_ms in times {
            assert!(want.contains(&up_to_ms), "an acknowledgement of a pack never sent: {up_to_ms}");
            assert!(covered.insert(up_to_ms), "pack {up_to_ms} acknowledged twice");
        }
    }
    assert!(lists > 0 && downlinks < PACKS, "{PACKS} packs in {downlinks} downlinks, {lists} of them lists");

    let mut acked = BTreeSet::new();
    for _ in 0..PACKS {
        match old.downlink().await {
            Downlink::Ack { up_to_ms, readings: 1, .. } => assert!(acked.insert(up_to_ms)),
            other => panic!("hau-old gets one plain acknowledgement per pack: {other:?}"),
        }
    }
    assert_eq!(acked, want);
    // Nothing more came to either, and the platform counted what it sent.
    let total = (downlinks + PACKS) as u64;
    let stats = running.wait_stats("every downlink", |s| s["downlinks"].as_u64() == Some(total)).await;
    assert_eq!(stats["durable_packs"], 2 * PACKS as u64, "{stats}");
    assert_eq!((new.received_downlink(), old.received_downlink()), (None, None));
    running.stop().await;
}

/// The PUBACK of an uplink comes once its pack is on disk (or refused), not when the broker
/// has it: at each PUBACK the pack's readings are already counted durable. A node whose packs
/// say downlink version 3 gets no acknowledgement downlink (the PUBACK is one), but still its
/// refusals; an MQTT 5 client sees a refusal in the PUBACK's reason code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_puback_says_the_pack_is_durable_and_version_3_needs_no_downlink() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(&config(dir.path())).await;
    let mut node = Sensor::device(running.mqtt(), "hau-pub").await;
    let t = now_secs().floor() - 60.0;

    for (i, readings) in [2u64, 3, 1].into_iter().enumerate() {
        let at = t - 30.0 + 10.0 * i as f64;
        let values: Vec<_> = (0..readings).map(|r| ("water_level", "cm", 170.0 + r as f64, -(r as f64))).collect();
        // Returns at the PUBACK.
        node.publish("mekong/v1/hau-pub/up", pack_acked_by_puback(at, &values)).await;
        let stats = running.json("/v1/stats").await;
        assert_eq!(stats["durable_packs"].as_u64(), Some(i as u64 + 1), "PUBACK before the flush: {stats}");
    }
    // A refusal: PUBACKed (it is final), and explained on the downlink topic.
    node.publish("mekong/v1/hau-pub/up", pack_acked_by_puback(t + 3.0 * 86_400.0, &[("water_level", "cm", 1.0, 0.0)]))
        .await;
    assert!(matches!(node.downlink().await, Downlink::Refused { reason, .. } if reason == "bad_time"));
    // A pack of version 1 is acknowledged on the downlink topic, and that acknowledgement is
    // the next downlink: none came for the version-3 packs before it.
    node.publish("mekong/v1/hau-pub/up", pack(t + 10.0, &[("water_level", "cm", 175.0, 0.0)])).await;
    let ack = node.downlink().await;
    assert!(matches!(ack, Downlink::Ack { up_to_ms, readings: 1, .. } if up_to_ms == ((t + 10.0) * 1000.0) as i64));
    assert_eq!(node.received_downlink(), None);
    // The acknowledgement thread counts its downlinks once it has sent them all: the device may
    // hear the last one first.
    let stats = running.wait_stats("the two downlinks", |s| s["downlinks"].as_u64() >= Some(2)).await;
    assert_eq!((stats["downlinks"].as_u64(), stats["durable_readings"].as_u64()), (Some(2), Some(7)), "{stats}");

    // MQTT 5: success for a stored pack, 0x99 (payload format invalid) for a refused one.
    use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
    use rumqttc::v5::mqttbytes::QoS;
    let addr = running.mqtt();
    let options = rumqttc::v5::MqttOptions::new("hau-pub5", addr.ip().to_string(), addr.port());
    let (client, mut events) = rumqttc::v5::AsyncClient::new(options, 10);
    let mut reasons = Vec::new();
    for at in [t + 20.0, t + 3.0 * 86_400.0] {
        let payload = pack_acked_by_puback(at, &[("water_level", "cm", 1.0, 0.0)]);
        client.publish("mekong/v1/hau-pub5/up", QoS::AtLeastOnce, false, payload).await.unwrap();
        let reason = tokio::time::timeout(TIMEOUT, async {
            loop {
                if let rumqttc::v5::Event::Incoming(Packet::PubAck(ack)) = events.poll().await.unwrap() {
                    return ack.reason;
                }
            }
        })
        .await
        .expect("no PUBACK over MQTT 5");
        reasons.push(reason);
    }
    assert_eq!(reasons, [PubAckReason::Success, PubAckReason::PayloadFormatInvalid]);
    running.stop().await;
}
