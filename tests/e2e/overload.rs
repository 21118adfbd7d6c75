//! When the ingest path falls behind the broker's log, the messages the broker skips are
//! counted as lost: published = handled + lost, nothing disappears silently; and the
//! broker's PUBACKs go to the handled ones only.

use crate::platform::{config, start};
use mekong_tests::{now_secs, Sensor};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_the_broker_skips_are_counted_as_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    // A log of one 1 KiB segment: the link may fall behind by about one message.
    config.broker.segment_bytes = 1024;
    config.broker.segment_count = 1;
    let running = start(&config).await;

    let t = now_secs();
    let mut sensors = Vec::new();
    for s in 0..4 {
        sensors.push(Sensor::connect(running.mqtt(), &format!("flood-{s}")).await);
    }
    let per_sensor = 250;
    let mut tasks = Vec::new();
    for (s, mut sensor) in sensors.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for k in 0..per_sensor {
                // 40 readings, about 700 bytes: each pack costs the ingest path real work.
                let readings: Vec<(&str, &str, f64, f64)> =
                    (0..40).map(|i| ("water_level", "cm", 150.0 + i as f64, (k * 40 + i) as f64 * 0.001)).collect();
                let payload = mekong_tests::pack(t, &readings);
                sensor.publish_nowait(&format!("mekong/v1/flood-{s}/up"), payload).await;
            }
            sensor
        }));
    }
    let mut sensors = Vec::new();
    for task in tasks {
        sensors.push(task.await.unwrap());
    }
    let published = (4 * per_sensor) as u64;
    let stats = running
        .wait_stats("every publish handled or counted lost", |s| {
            let n = |k: &str| s[k].as_u64().unwrap();
            n("accepted") + n("rejected") + n("lost") >= published
        })
        .await;
    let n = |k: &str| stats[k].as_u64().unwrap();
    let (received, lost) = (n("received"), n("lost"));
    assert_eq!(received + lost, published, "{stats}");
    assert!(lost > 0, "the flood should overrun a 1 KiB log: {stats}");
    assert_eq!((n("accepted"), n("rejected")), (received, 0), "{stats}");
    // A PUBACK for every pack taken (each once it is on disk), none for a lost one.
    let mut sensors: Vec<&mut Sensor> = sensors.iter_mut().collect();
    let pubacks = mekong_tests::total_acks(&mut sensors, received, mekong_tests::TIMEOUT).await;
    assert_eq!(pubacks, received, "{stats}");
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", running.platform.http_addr.port()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains(&format!("mekong_ingest_lost_total {lost}\n")), "{metrics}");
    running.stop().await;
}
