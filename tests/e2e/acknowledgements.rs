//! Devices hear back on their downlink topic: an acknowledgement once their pack is on disk,
//! a refusal (with the reason kind) when it never will be.

use mekong_tests::{config, now_secs, pack, start, Downlink, Sensor};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packs_are_acknowledged_after_the_flush_and_refusals_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(&config(dir.path())).await;
    let mut node = Sensor::device(running.mqtt(), "hau-03").await;
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

    // Another device's messages do not reach this one.
    let mut other = Sensor::device(running.mqtt(), "hau-04").await;
    other.publish("mekong/v1/hau-04/up", pack(t, &[("salinity", "ppt", 0.3, 0.0)])).await;
    assert!(matches!(other.downlink().await, Downlink::Ack { readings: 1, .. }));
    let stats = running.wait_stats("four downlinks", |s| s["downlinks"] == 4).await;
    assert_eq!(stats["durable_packs"], 3, "{stats}");
    running.stop().await;
}
