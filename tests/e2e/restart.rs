//! Data survives a restart on the same data directory, and so do each device's counts;
//! resends after it add nothing.

use crate::platform::{config, start};
use mekong_tests::{now_secs, pack, points_of, Sensor};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_survive_a_restart_and_resends_are_not_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    let t = now_secs().floor();
    let first = pack(
        t,
        &[("water_level", "cm", 171.3, 0.0), ("water_level", "cm", 172.1, 60.0), ("salinity", "ppt", 0.42, 60.0)],
    );

    let running = start(&config(dir.path())).await;
    let mut sensor = Sensor::connect(running.mqtt(), "cai-rang-01").await;
    sensor.publish("mekong/v1/cai-rang-01/up", first.clone()).await;
    // A refusal, counted in the device's tally (it is known by now).
    sensor.publish("mekong/v1/cai-rang-01/up", vec![0xff]).await;
    running.wait_handled(2).await;
    let before = running.json("/v1/devices/cai-rang-01").await;
    assert_eq!((before["packs"].as_u64(), before["rejected"].as_u64()), (Some(1), Some(1)), "{before}");
    running.stop().await;

    // Same data directory, new ports.
    let running = start(&config(dir.path())).await;
    let body = running.json("/v1/devices/cai-rang-01/series/water_level").await;
    let t_ms = (t * 1000.0) as i64;
    assert_eq!(points_of(&body), [(t_ms, 171.3), (t_ms + 60_000, 172.1)]);
    let device = running.json("/v1/devices/cai-rang-01").await;
    assert_eq!((device["kind"].as_str(), device["points"].as_u64()), (Some("water"), Some(3)));
    // The counts are the store's, not the process's: the same after the restart.
    for key in ["packs", "duplicates", "rejected", "rejected_by_reason", "last_rejection", "seq_gaps"] {
        assert_eq!(device[key], before[key], "{key}: {device}");
    }

    // The node never saw an acknowledgement and sends the same pack again.
    let mut sensor = Sensor::connect(running.mqtt(), "cai-rang-01").await;
    sensor.publish("mekong/v1/cai-rang-01/up", first).await;
    let stats = running.wait_handled(1).await;
    assert_eq!((stats["readings"].as_u64(), stats["duplicates"].as_u64()), (Some(0), Some(3)));
    let device = running.json("/v1/devices/cai-rang-01").await;
    assert_eq!(
        (device["points"].as_u64(), device["packs"].as_u64(), device["duplicates"].as_u64()),
        (Some(3), Some(2), Some(3))
    );
    running.stop().await;
}
