//! Retention through the running platform: the upkeep thread folds what arrived, then drops raw
//! points past their limit while their hourly rollups stay, and drops rollups past theirs.

use std::time::Duration;

use crate::platform::{config, start};
use mekong::config::RetentionConfig;
use mekong_tests::{now_secs, pack, points_of, Downlink, Sensor, TIMEOUT};

const DAY_SECS: f64 = 86_400.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_raw_points_expire_their_rollups_stay_and_new_data_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.storage.maintenance_every_secs = 1;
    c.storage.fold_after_secs = 0;
    c.storage.retention =
        vec![RetentionConfig { kind: Some("water".into()), metric: None, raw_days: Some(1), rollup_days: Some(3) }];
    let running = start(&c).await;

    // Three readings in one hour two days ago, two five days ago, two now; and the same
    // times for an air station, which no rule covers.
    let now = now_secs().floor();
    let hour = |days_ago: f64| ((now - days_ago * DAY_SECS) / 3_600.0).floor() * 3_600.0;
    let (two, five) = (hour(2.0), hour(5.0));
    let readings = |metric: &'static str, unit: &'static str| {
        vec![
            (metric, unit, 150.0, two),
            (metric, unit, 155.5, two + 600.0),
            (metric, unit, 149.0, two + 1_200.0),
            (metric, unit, 120.0, five),
            (metric, unit, 121.0, five + 60.0),
            (metric, unit, 170.0, now - 10.0),
            (metric, unit, 171.0, now),
        ]
    };
    for (device, metric, unit) in [("tra-noc-01", "water_level", "cm"), ("ninh-kieu-air", "pm2_5", "ug/m3")] {
        let all = readings(metric, unit);
        let relative: Vec<_> = all.iter().map(|&(m, u, v, t)| (m, u, v, t - now)).collect();
        let mut sensor = Sensor::device(running.mqtt(), device).await;
        sensor.publish(&format!("mekong/v1/{device}/up"), pack(now, &relative)).await;
        let ack = sensor.downlink().await;
        assert!(matches!(ack, Downlink::Ack { readings: 7, .. }), "{ack:?}");
    }

    // The upkeep runs every second: wait until the water level's old raw points are gone.
    let series = "/v1/devices/tra-noc-01/series/water_level";
    let now_ms = (now * 1000.0) as i64;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let points = points_of(&running.json(series).await);
        if points == [(now_ms - 10_000, 170.0), (now_ms, 171.0)] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "old points still there: {points:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let info = running.json("/v1/devices/tra-noc-01/series").await;
    assert_eq!(info["series"][0]["count"].as_u64(), Some(2));

    // Two days ago: the hour's rollup answers for the expired points.
    let from = (two * 1000.0) as i64;
    let by_hour = running.json(&format!("{series}/aggregate?from={from}&to={}&step=1h", from + 3_600_000)).await;
    let bucket = &by_hour["buckets"][0];
    assert_eq!(by_hour["buckets"].as_array().map(Vec::len), Some(1), "{by_hour}");
    assert_eq!(
        (bucket["count"].as_u64(), bucket["min"].as_f64(), bucket["max"].as_f64()),
        (Some(3), Some(149.0), Some(155.5))
    );
    assert_eq!(bucket["first"]["v"].as_f64(), Some(150.0));
    // Five days ago: past the rollups' three days too.
    let from = (five * 1000.0) as i64;
    let old = running.json(&format!("{series}/aggregate?from={from}&to={}&step=1h", from + 3_600_000)).await;
    assert_eq!(old["buckets"].as_array().map(Vec::len), Some(0), "{old}");

    // The air station keeps everything.
    let air = points_of(&running.json("/v1/devices/ninh-kieu-air/series/pm2_5?limit=100").await);
    assert_eq!(air.len(), 7);
    running.stop().await;
}
