//! Data survives a restart on the same data directory, and resends after it add nothing.

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
    running.wait_handled(1).await;
    running.stop().await;

    // Same data directory, new ports.
    let running = start(&config(dir.path())).await;
    let body = running.json("/v1/devices/cai-rang-01/series/water_level").await;
    let t_ms = (t * 1000.0) as i64;
    assert_eq!(points_of(&body), [(t_ms, 171.3), (t_ms + 60_000, 172.1)]);
    let device = running.json("/v1/devices/cai-rang-01").await;
    assert_eq!((device["kind"].as_str(), device["points"].as_u64()), (Some("water"), Some(3)));

    // The node never saw an acknowledgement and sends the same pack again.
    let mut sensor = Sensor::connect(running.mqtt(), "cai-rang-01").await;
    sensor.publish("mekong/v1/cai-rang-01/up", first).await;
    let stats = running.wait_handled(1).await;
    assert_eq!((stats["readings"].as_u64(), stats["duplicates"].as_u64()), (Some(0), Some(3)));
    let device = running.json("/v1/devices/cai-rang-01").await;
    assert_eq!(device["points"].as_u64(), Some(3));
    running.stop().await;
}
