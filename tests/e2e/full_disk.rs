//! A full disk, through the running platform: while the store cannot write, nothing is
//! acknowledged and nothing is refused for it; once space returns, mekong writes again
//! without a restart, and every pack the device resends is stored exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::platform::{config, start};
use mekong_store::{Health, NewPoint, PackWrite, Store, StoreError, StoreOptions, WriteSummary};
use mekong_tests::{now_secs, pack, points_of, Downlink, Sensor, SmallFs, TIMEOUT};

const DEVICE: &str = "hau-09";
const TOPIC: &str = "mekong/v1/hau-09/up";
/// Readings per pack: big enough that a few packs need new pages of the log.
const READINGS: usize = 60;
/// The most packs sent before the disk must have failed.
const MAX_PACKS: usize = 160;

/// Pack `i`: readings one second apart from `t0`, values unique to the pack and reading.
fn pack_of(t0: f64, i: usize) -> (i64, Vec<u8>) {
    let bt = t0 + (i * READINGS) as f64;
    let readings: Vec<(&str, &str, f64, f64)> =
        (0..READINGS).map(|j| ("water_level", "cm", (i * 1000 + j) as f64, j as f64)).collect();
    let up_to_ms = ((bt + (READINGS - 1) as f64) * 1000.0).round() as i64;
    (up_to_ms, pack(bt, &readings))
}

/// Every downlink that arrives within `wait`: acknowledged packs by their newest time, and
/// refusals.
async fn drain(node: &mut Sensor, wait: Duration, acked: &mut BTreeMap<i64, u32>, refusals: &mut Vec<String>) {
    while let Some(message) = node.downlink_within(wait).await {
        match message {
            Downlink::Ack { up_to_ms, readings, .. } => {
                acked.insert(up_to_ms, readings);
            }
            Downlink::Refused { reason, .. } => refusals.push(reason),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nearly_full_disk_is_reported_before_it_stops_the_store() {
    let Some(fs) = SmallFs::mount(24 << 20) else { return };
    let mut config = config(&fs.path().join("data"));
    config.storage.min_free_bytes = 8 << 20;
    let running = start(&config).await;
    let (status, ok) = running.get("/healthz").await;
    assert_eq!((status, &ok["status"]), (200, &serde_json::json!("ok")), "{ok}");
    assert!(ok["disk"]["free_bytes"].as_u64().unwrap() > 8 << 20, "{ok}");

    fs.fill_leaving(2 << 20);
    let (status, low) = running.get("/healthz").await;
    // Still storing: 200, with the reason.
    assert_eq!((status, &low["status"]), (200, &serde_json::json!("degraded")), "{low}");
    assert_eq!(low["reasons"][0]["check"], "disk", "{low}");
    assert!(low["reasons"][0]["detail"].as_str().unwrap().contains("storage.min_free_bytes"), "{low}");
    assert!(running.text("/metrics").await.contains("\nmekong_health 1\n"));

    fs.free();
    let (status, again) = running.get("/healthz").await;
    assert_eq!((status, &again["status"]), (200, &serde_json::json!("ok")), "{again}");
    assert!(running.text("/metrics").await.contains("\nmekong_health 0\n"));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_defers_packs_and_writes_again_once_space_returns() {
    let Some(fs) = SmallFs::mount(24 << 20) else { return };
    let mut config = config(&fs.path().join("data"));
    // Flushes only for acknowledgements, so that each group's flush is what meets the disk.
    config.storage.flush_every_ms = 0;
    config.storage.maintenance_every_secs = 0;
    config.storage.min_free_bytes = 4 << 20;
    let running = start(&config).await;
    let (status, health) = running.get("/healthz").await;
    assert_eq!((status, &health["status"]), (200, &serde_json::json!("ok")), "{health}");
    let mut node = Sensor::device(running.mqtt(), DEVICE).await;
    // An hour ago onwards: every reading is within the accepted time window.
    let t0 = (now_secs() - 3_600.0).floor();
    let (mut acked, mut refusals) = (BTreeMap::new(), Vec::new());

    let (first_up_to, first) = pack_of(t0, 0);
    node.publish(TOPIC, first).await;
    assert!(matches!(node.downlink().await, Downlink::Ack { up_to_ms, .. } if up_to_ms == first_up_to));
    acked.insert(first_up_to, READINGS as u32);

    let filled = fs.fill();
    assert!(filled > 0);
    // Publish until the store fails: /healthz turns 503 "failing".
    let mut sent = 1;
    let failing = loop {
        assert!(sent < MAX_PACKS, "{sent} packs on a full disk and the store never failed");
        let (_, payload) = pack_of(t0, sent);
        // No PUBACK for a pack the store could not keep: wait for the ingest path to have
        // taken it instead.
        node.publish_nowait(TOPIC, payload).await;
        sent += 1;
        running.wait_stats("the pack taken", |s| s["received"].as_u64() == Some(sent as u64)).await;
        let (status, health) = running.get("/healthz").await;
        if status == 503 {
            break health;
        }
        assert_eq!(status, 200, "{health}");
        drain(&mut node, Duration::ZERO, &mut acked, &mut refusals).await;
    };
    assert_eq!(failing["status"], "failing", "{failing}");
    assert!(failing["store"]["error"].as_str().unwrap().contains("No space left"), "{failing}");
    let checks: Vec<&str> =
        failing["reasons"].as_array().unwrap().iter().map(|r| r["check"].as_str().unwrap()).collect();
    assert_eq!(checks, ["store", "disk"], "{failing}");

    // While it fails, packs are deferred, not refused; a refusal about the pack itself still
    // goes out, and it comes after any answer to the packs sent before it.
    for i in sent..sent + 5 {
        node.publish_nowait(TOPIC, pack_of(t0, i).1).await;
    }
    sent += 5;
    node.publish_nowait(TOPIC, pack(t0 + 3.0 * 86_400.0, &[("water_level", "cm", 1.0, 0.0)])).await;
    loop {
        match node.downlink().await {
            Downlink::Refused { reason, .. } if reason == "bad_time" => break,
            Downlink::Ack { up_to_ms, readings, .. } => {
                acked.insert(up_to_ms, readings);
            }
            Downlink::Refused { reason, .. } => refusals.push(reason),
        }
    }
    assert_eq!(refusals, Vec::<String>::new(), "refused for the platform's failure");
    let unanswered = (0..sent).filter(|&i| !acked.contains_key(&pack_of(t0, i).0)).count();
    eprintln!("disk filled with {filled} bytes; {sent} packs sent, {unanswered} unanswered");
    assert!(unanswered >= 5, "only {unanswered} of {sent} packs went unanswered on a full disk");

    // Space returns. The device resends what is unanswered after each timeout, as a node
    // does, until everything is acknowledged: the same platform, no restart.
    fs.free();
    let deadline = tokio::time::Instant::now() + 2 * TIMEOUT;
    loop {
        let missing: Vec<usize> = (0..sent).filter(|&i| !acked.contains_key(&pack_of(t0, i).0)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} packs never acknowledged after space returned",
            missing.len()
        );
        for &i in &missing {
            node.publish_nowait(TOPIC, pack_of(t0, i).1).await;
        }
        drain(&mut node, Duration::from_secs(2), &mut acked, &mut refusals).await;
    }
    assert_eq!(refusals, Vec::<String>::new());
    assert!(acked.values().all(|&n| n == READINGS as u32), "{acked:?}");
    let (status, health) = running.get("/healthz").await;
    assert_eq!((status, &health["status"]), (200, &serde_json::json!("ok")), "{health}");
    let stats = running.json("/v1/stats").await;
    let unstored = stats["deferred"].as_u64().unwrap() + stats["withheld"].as_u64().unwrap();
    assert!(unstored >= 5, "{stats}");

    // Every reading of every pack is stored once, with its value.
    let expected: Vec<(i64, f64)> = (0..sent * READINGS)
        .map(|k| ((t0 as i64 + k as i64) * 1000, ((k / READINGS) * 1000 + k % READINGS) as f64))
        .collect();
    let path = format!("/v1/devices/{DEVICE}/series/water_level?limit=10000");
    assert_eq!(points_of(&running.json(&path).await), expected);
    running.stop().await;

    // And they are on disk: the store opened afresh holds them all, once.
    let store = Store::open(&config.storage.data_dir, &StoreOptions::default()).unwrap();
    let stored = store.points(DEVICE, "water_level", i64::MIN, i64::MAX, usize::MAX).unwrap().unwrap();
    let stored: Vec<(i64, f64)> = stored.iter().map(|p| (p.time_ms, p.value)).collect();
    assert_eq!(stored, expected);
}

/// The store's side of it, step by step: a failed opening is never written again, the next
/// one reloads what is on disk (so a resent pack is stored, not taken for a duplicate, and its
/// sequence number is not taken for a replay), and health follows.
#[test]
fn the_store_opens_afresh_and_forgets_what_never_reached_the_disk() {
    let Some(fs) = SmallFs::mount(8 << 20) else { return };
    let options = StoreOptions { flush_every_ms: None, ..StoreOptions::default() };
    let store = Store::open(&fs.path().join("data"), &options).unwrap();
    const KEY: [u8; 8] = [7; 8];
    let points = |i: i64| -> Vec<NewPoint<'static>> {
        (0..200)
            .map(|j| NewPoint {
                metric: "salinity",
                unit: Some("ppt"),
                time_ms: i * 1_000_000 + j,
                value: 0.5,
                value_kind: Default::default(),
            })
            .collect()
    };
    let write = |i: i64, seq: u64| {
        let points = points(i);
        let pack = PackWrite { device: DEVICE, kind: "water", seen_ms: 0, points: &points, seq: Some((seq, KEY)) };
        store.write_packs(&[pack]).map(|w| (w.generation, w.packs[0].clone()))
    };

    let (first, summary) = write(1, 1).unwrap();
    assert_eq!(summary, Ok(WriteSummary { stored: 200, duplicates: 0 }));
    assert_eq!(store.flush().unwrap().generation, first);
    fs.fill();

    // Until a write or flush meets the full disk, sled buffers; then the opening fails.
    let mut seq = 2;
    let failed = loop {
        assert!(seq < 1_000, "the store never failed on a full disk");
        match write(seq as i64, seq).map(|_| store.flush()) {
            Ok(Ok(flushed)) => assert_eq!(flushed.generation, first),
            Ok(Err(e)) | Err(e) => break e,
        }
        seq += 1;
    };
    assert!(matches!(failed, StoreError::Unavailable { .. }), "{failed}");
    assert!(matches!(store.health(), Health::Failing { .. }));
    assert!(matches!(write(seq as i64, seq), Err(StoreError::Unavailable { .. })));
    // While no new opening can be had, the failed one still answers reads.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        assert!(matches!(write(seq as i64, seq), Err(StoreError::Unavailable { .. })));
        let read = store.points(DEVICE, "salinity", 1_000_000, 1_000_200, 1_000).unwrap().unwrap();
        assert_eq!(read.len(), 200);
        std::thread::sleep(Duration::from_millis(100));
    }

    fs.free();
    // The next write after the back-off opens the database afresh.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let (second, summary) = loop {
        match write(seq as i64, seq) {
            Ok(written) => break written,
            Err(e) => assert!(std::time::Instant::now() < deadline, "never writable again: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(second > first, "{second:?} after {first:?}");
    // What the failed opening held in memory is gone: the pack is stored, not a duplicate,
    // and its number is above the last one on disk, not a replay.
    assert_eq!(summary, Ok(WriteSummary { stored: 200, duplicates: 0 }));
    assert!(matches!(store.health(), Health::Failing { .. }), "writable only once a flush went through");
    assert_eq!(store.flush().unwrap().generation, second);
    assert_eq!(store.health(), Health::Writable);
    assert_eq!(store.device_seq(DEVICE), Some(seq));
    drop(store);

    let store = Store::open(&fs.path().join("data"), &options).unwrap();
    let stored = store.points(DEVICE, "salinity", i64::MIN, i64::MAX, usize::MAX).unwrap().unwrap();
    // Pack 1, the packs whose flush went through before the failure, and the last one.
    assert_eq!(stored.len() % 200, 0);
    assert!(stored.iter().any(|p| p.time_ms == seq as i64 * 1_000_000));
    assert_eq!(store.series(DEVICE, "salinity").unwrap().count, stored.len() as u64);
}
