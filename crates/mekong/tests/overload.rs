//! Overload: devices publish far faster than the platform can store, into a broker log of
//! 1 MiB. What gives is the broker's log: it skips what the ingest path cannot read
//! in time, mekong counts those as lost, the devices get no acknowledgement for them and
//! resend. Memory stays bounded, every acknowledged reading is stored exactly once, every
//! publish either reached the ingest path or is counted as lost (none vanishes uncounted),
//! and the broker's PUBACKs, which wait for the store, went to exactly the packs it took:
//! none to a lost one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{connect, drain, flood, spawn_server, verify, wait_healthy, Device};
use mekong_tests::{total_acks, Sensor};

/// Peak resident memory the server may reach in this test. The broker's uplink log is held
/// to 1 MiB here, so what remains is the process itself, sled's cache and the connections:
/// the bound is generous, and exists to catch memory that grows with the load.
const PEAK_RSS_BOUND_MIB: u64 = 256;

/// Packs each device sends in the flood: 28 times the broker's log in all.
const FLOOD_PACKS: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_overload_memory_stays_bounded_and_acknowledged_readings_are_stored() {
    let data = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let env = [("MEKONG__BROKER__SEGMENT_BYTES", "524288"), ("MEKONG__BROKER__SEGMENT_COUNT", "2")];
    let server = spawn_server(data.path(), &env);
    wait_healthy(&http, server.http).await;

    // 32 devices, each 64 packs of 400 readings (about 14 KiB each, 28 MiB in all) sent as
    // fast as the connections take them, into a log of 1 MiB: with 16 the ingest path, now
    // faster, sometimes kept up and nothing was skipped. All connect first, so that all
    // flood at once.
    let mut connected = Vec::new();
    for i in 0..32 {
        let device = Device::new("flood-", i, 400);
        let sensor = connect(&device, server.mqtt).await;
        connected.push((device, sensor));
    }
    let tasks: Vec<_> =
        connected.into_iter().map(|(device, sensor)| tokio::spawn(flood(device, sensor, FLOOD_PACKS))).collect();
    let mut flooded = Vec::new();
    for task in tasks {
        flooded.push(task.await.unwrap());
    }
    // Every publish of the flood is taken by the ingest path or skipped in its log and
    // counted: nothing vanishes silently between the broker and the ingest path. The link
    // notices a gap only once it reads past it, so the sum is awaited.
    let published: u64 = flooded.iter().map(|(d, _)| d.published).sum();
    let stats = wait_for(&http, &server, "every publish taken or counted lost", |s| {
        s["received"].as_u64().unwrap() + s["lost"].as_u64().unwrap() >= published
    })
    .await;
    let (received, lost) = (stats["received"].as_u64().unwrap(), stats["lost"].as_u64().unwrap());
    assert!(lost > 0, "the flood should overrun a 1 MiB log: {stats}");
    assert_eq!(received + lost, published, "{stats}");
    // The PUBACKs come once the packs are on disk: one for every pack the ingest path took,
    // none for a lost one.
    let mut sensors: Vec<&mut Sensor> = flooded.iter_mut().map(|(_, sensor)| sensor).collect();
    let pubacks = total_acks(&mut sensors, received, Duration::from_secs(30)).await;
    let stats = server.stats(&http).await;
    assert_eq!(stats["durable_packs"].as_u64(), Some(received), "{stats}");
    assert_eq!(pubacks, received, "PUBACKs against packs taken: {stats}");
    let mut devices = Vec::new();
    for (device, sensor) in flooded {
        sensor.disconnect().await;
        devices.push(device);
    }

    // The devices resend whatever was not acknowledged, two packs at a time (about 900 KiB in
    // flight over all of them, within the log), until everything is acknowledged.
    let tasks: Vec<_> = devices.drain(..).map(|d| tokio::spawn(drain(d, server.mqtt, 2))).collect();
    for task in tasks {
        devices.push(task.await.unwrap());
    }
    let (total, missing, duplicates, wrong) = verify(&http, server.http, &devices).await;
    let resent: u64 = devices.iter().map(|d| d.published).sum::<u64>() - published;
    let peak = server.peak_rss_mib().unwrap();
    println!(
        "{{\"overload\":true,\"packs_published\":{published},\"packs_resent\":{resent},\"received\":{received},\"lost_at_broker\":{lost},\"pubacks\":{pubacks},\"readings_acknowledged\":{total},\"missing\":{missing},\"duplicates\":{duplicates},\"wrong_values\":{wrong},\"server_peak_rss_mib\":{peak}}}"
    );
    assert_eq!((missing, duplicates, wrong), (0, 0, 0));
    assert!(peak < PEAK_RSS_BOUND_MIB, "peak resident memory {peak} MiB");
}

/// The server's statistics once `done` holds of them (within 30 s).
async fn wait_for(
    http: &reqwest::Client,
    server: &common::Server,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = server.stats(http).await;
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "{what}: {stats}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
