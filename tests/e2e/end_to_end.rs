//! A fleet publishes over MQTT and every value and time comes back over HTTP.

use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddr};

use crate::platform::{config, start};
use mekong::simulate::Station;
use mekong_tests::{get_url, now_secs, pack, points_of, Sensor, TIMEOUT};
use rumqttc::v5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_round_trips_every_value_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(&config(dir.path())).await;
    let t0 = (now_secs() - 600.0).floor();
    // (device, metric) -> [(t_ms, value)]
    let mut expected: BTreeMap<(String, String), Vec<(i64, f64)>> = BTreeMap::new();
    let mut packs = 0;
    for index in 0..9 {
        let mut station = Station::new("e2e-", index, 42);
        let mut sensor = Sensor::connect(running.mqtt(), &station.id).await;
        let topic = format!("mekong/v1/{}/up", station.id);
        // A backlog of 20 timestamps in one pack (a node back from an outage), then three
        // live packs of one timestamp each.
        let backlog: Vec<f64> = (0..20).map(|k| t0 + k as f64 * 10.0 + 0.125).collect();
        let live: Vec<f64> = (0..3).map(|k| t0 + 300.0 + k as f64 * 10.0 + 0.001 * index as f64).collect();
        for times in std::iter::once(backlog).chain(live.into_iter().map(|t| vec![t])) {
            let mut copy = station.clone();
            for &t in &times {
                for (metric, _, value) in copy.sample(t) {
                    let key = (station.id.clone(), metric.to_owned());
                    expected.entry(key).or_default().push(((t * 1000.0).round() as i64, value));
                }
            }
            let (payload, _) = station.pack(&times).unwrap();
            sensor.publish(&topic, payload).await;
            packs += 1;
        }
    }
    let stats = running.wait_handled(packs).await;
    assert_eq!(
        (stats["accepted"].as_u64(), stats["rejected"].as_u64(), stats["lost"].as_u64()),
        (Some(packs), Some(0), Some(0))
    );

    for ((device, metric), points) in &expected {
        let body = running.json(&format!("/v1/devices/{device}/series/{metric}?limit=10000")).await;
        assert_eq!(&points_of(&body), points, "{device}/{metric}");
        assert!(body["points"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["t"].as_str().is_some_and(|t| t.len() == 24 && t.ends_with('Z'))));
        assert_eq!(body["next_from_ms"], serde_json::Value::Null);
    }

    let devices = running.json("/v1/devices").await;
    let kinds: BTreeMap<String, String> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap().to_owned(), d["kind"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(kinds.len(), 9);
    for (id, kind) in &kinds {
        assert!(id.starts_with(&format!("e2e-{kind}-")), "{id} is {kind}");
    }

    let series = running.json("/v1/devices/e2e-water-000/series").await;
    let levels = series["series"].as_array().unwrap().iter().find(|s| s["metric"] == "water_level").unwrap().clone();
    assert_eq!((levels["unit"].as_str(), levels["count"].as_u64()), (Some("cm"), Some(23)));

    // Aggregates over the real server agree with the readings sent.
    let key = ("e2e-air-002".to_owned(), "pm2_5".to_owned());
    let body = running.json("/v1/devices/e2e-air-002/series/pm2_5/aggregate?step=1h").await;
    let count: u64 = body["buckets"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap()).sum();
    let max = body["buckets"].as_array().unwrap().iter().map(|b| b["max"].as_f64().unwrap()).fold(f64::MIN, f64::max);
    assert_eq!(count, expected[&key].len() as u64);
    assert_eq!(max, expected[&key].iter().map(|p| p.1).fold(f64::MIN, f64::max));

    let latest = running.json("/v1/latest?kind=water").await;
    let latest = latest["latest"].as_array().unwrap();
    assert_eq!(latest.len(), 3 * 3, "three water stations, three metrics each");
    for l in latest {
        let key = (l["device"].as_str().unwrap().to_owned(), l["metric"].as_str().unwrap().to_owned());
        let last = expected[&key].iter().max_by_key(|p| p.0).unwrap();
        assert_eq!((l["t_ms"].as_i64().unwrap(), l["v"].as_f64().unwrap()), *last, "{key:?}");
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_clients_and_ipv6_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(&config(dir.path())).await;
    clients_of_both_versions_and_families_are_served(&running).await;
    running.stop().await;
}

/// `broker.network_threads` above 1: both listeners' connections run on the shared workers
/// (vendored rumqttd patch 25), and every client is served as on one thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_served_on_shared_network_threads() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.broker.network_threads = 3;
    let running = start(&config).await;
    clients_of_both_versions_and_families_are_served(&running).await;
    // No other test sets the option, so these are this broker's workers.
    let workers = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter(|task| {
            let comm = std::fs::read_to_string(task.as_ref().unwrap().path().join("comm")).unwrap_or_default();
            comm.trim_end() == "mqtt-worker"
        })
        .count();
    assert_eq!(workers, 3, "threads named mqtt-worker");
    running.stop().await;
}

async fn clients_of_both_versions_and_families_are_served(running: &crate::platform::Running) {
    let v6 = |port| SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    let t = now_secs();

    // MQTT 3.1.1 over IPv6.
    let mut sensor = Sensor::connect(v6(running.platform.mqtt_addr.port()), "v6-sensor").await;
    sensor.publish("mekong/v1/v6-sensor/up", pack(t, &[("noise", "dB", 61.5, 0.0)])).await;

    // MQTT 5 over IPv6.
    let mut options = v5::MqttOptions::new("v5-sensor", "::1", running.platform.mqtt5_addr.unwrap().port());
    options.set_keep_alive(std::time::Duration::from_secs(5));
    let (client, mut events) = v5::AsyncClient::new(options, 10);
    client
        .publish(
            "mekong/v1/v5-sensor/up",
            v5::mqttbytes::QoS::AtLeastOnce,
            false,
            pack(t, &[("rainfall", "mm", 2.5, 0.0)]),
        )
        .await
        .unwrap();
    tokio::time::timeout(TIMEOUT, async {
        loop {
            if let v5::Event::Incoming(v5::mqttbytes::v5::Packet::PubAck(_)) = events.poll().await.unwrap() {
                break;
            }
        }
    })
    .await
    .expect("no PUBACK over MQTT 5");

    running.wait_handled(2).await;
    let http = reqwest::Client::new();
    let port = running.platform.http_addr.port();
    for url in [format!("http://[::1]:{port}/v1/latest"), format!("http://127.0.0.1:{port}/v1/latest")] {
        let (status, body) = get_url(&http, &url).await;
        assert_eq!(status, 200, "{url}");
        let values: BTreeMap<String, f64> = body["latest"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| (l["device"].as_str().unwrap().to_owned(), l["v"].as_f64().unwrap()))
            .collect();
        assert_eq!(values, BTreeMap::from([("v5-sensor".to_owned(), 2.5), ("v6-sensor".to_owned(), 61.5)]), "{url}");
    }
}
