//! Overload: devices publish far faster than the platform can store, into a broker log of
//! 1 MiB. What gives is the broker's log: it skips what the ingest path cannot read
//! in time, mekong counts those as lost, the devices get no acknowledgement for them and
//! resend. Memory stays bounded, every acknowledged reading is stored exactly once, and
//! every publish the broker acknowledged (PUBACK) either reached the ingest path or is counted
//! as lost: none vanishes uncounted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{connect, drain, flood, spawn_server, verify, wait_healthy, Device};

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
    let mut devices = Vec::new();
    for task in tasks {
        devices.push(task.await.unwrap());
    }

    // The devices resend whatever was not acknowledged, two packs at a time (about 900 KiB in
    // flight over all of them, within the log), until everything is acknowledged.
    let tasks: Vec<_> = devices.drain(..).map(|d| tokio::spawn(drain(d, server.mqtt, 2))).collect();
    for task in tasks {
        devices.push(task.await.unwrap());
    }
    let (total, missing, duplicates, wrong) = verify(&http, server.http, &devices).await;
    let published: u64 = devices.iter().map(|d| d.published).sum();
    let broker_acked: u64 = devices.iter().map(|d| d.broker_acked).sum();
    // Nothing vanishes silently between the broker and the ingest path: every publish the
    // broker acknowledged was either taken by ingest (`received`) or skipped in its log and
    // counted (`lost`). A resend's earlier copy may still be on its way when the devices
    // are done, so the sum is awaited; the link notices a gap only once it reads past it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let stats = loop {
        let stats = server.stats(&http).await;
        let taken = stats["received"].as_u64().unwrap() + stats["lost"].as_u64().unwrap();
        if taken >= broker_acked || Instant::now() >= deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let peak = server.peak_rss_mib().unwrap();
    println!(
        "{{\"overload\":true,\"packs_published\":{published},\"packs_broker_acked\":{broker_acked},\"received\":{},\"lost_at_broker\":{},\"readings_acknowledged\":{total},\"missing\":{missing},\"duplicates\":{duplicates},\"wrong_values\":{wrong},\"server_peak_rss_mib\":{peak}}}",
        stats["received"], stats["lost"]
    );
    assert!(stats["lost"].as_u64().unwrap() > 0, "the flood should overrun a 1 MiB log: {stats}");
    assert_eq!(
        stats["received"].as_u64().unwrap() + stats["lost"].as_u64().unwrap(),
        broker_acked,
        "every publish the broker acknowledged is received or counted lost: {stats}"
    );
    assert_eq!((missing, duplicates, wrong), (0, 0, 0));
    assert!(peak < PEAK_RSS_BOUND_MIB, "peak resident memory {peak} MiB");
}
