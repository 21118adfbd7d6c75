//! The live stream (`GET /v1/stream`): readings once durable, filtered, resumable after a
//! lost connection with neither gap nor repeat, and a client too slow to keep up dropped and
//! counted while the others get everything.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::platform::{config, start};
use mekong_tests::{now_secs, pack, Downlink, EventStream, Sensor, StreamEvent};

/// `(device, metric, [(t_ms, v)])` of a readings event.
fn readings(event: &StreamEvent) -> (String, String, Vec<(i64, f64)>) {
    assert_eq!(event.name, "readings", "{event:?}");
    let d = &event.data;
    let points =
        d["points"].as_array().unwrap().iter().map(|p| (p["t_ms"].as_i64().unwrap(), p["v"].as_f64().unwrap()));
    (d["device"].as_str().unwrap().into(), d["metric"].as_str().unwrap().into(), points.collect())
}

fn expect(event: &StreamEvent, device: &str, metric: &str, points: &[(i64, f64)]) {
    assert_eq!(readings(event), (device.to_owned(), metric.to_owned(), points.to_vec()), "{event:?}");
}

/// Publishes a pack and waits for its acknowledgement: the readings are durable.
async fn stored(sensor: &mut Sensor, device: &str, payload: Vec<u8>) {
    sensor.publish(&format!("mekong/v1/{device}/up"), payload).await;
    assert!(matches!(sensor.downlink().await, Downlink::Ack { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_are_streamed_once_durable_filtered_and_resumable() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(&config(dir.path())).await;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}/v1/stream", running.platform.http_addr.port());
    let mut all = EventStream::open(&http, &base, None).await;
    let mut one = EventStream::open(&http, &format!("{base}?device=hau-01&metric=water_level"), None).await;
    // A follower of one device, everything of it: with `all` it shares each event's text.
    let mut hau1_all = EventStream::open(&http, &format!("{base}?device=hau-01"), None).await;
    let (mut hau1, mut hau2) =
        (Sensor::device(running.mqtt(), "hau-01").await, Sensor::device(running.mqtt(), "hau-02").await);
    let t = now_secs().floor();
    let ms = |s: f64| ((t + s) * 1000.0) as i64;

    let first = pack(
        t,
        &[("water_level", "cm", 182.5, 0.0), ("salinity", "g/L", 0.4, 0.0), ("water_level", "cm", 183.0, 10.0)],
    );
    stored(&mut hau1, "hau-01", first.clone()).await;
    stored(&mut hau2, "hau-02", pack(t, &[("water_level", "cm", 90.0, 0.0)])).await;
    // A resend adds nothing, so it is not streamed.
    stored(&mut hau1, "hau-01", first).await;
    stored(&mut hau1, "hau-01", pack(t, &[("water_level", "cm", 184.0, 20.0)])).await;

    expect(&all.next().await, "hau-01", "water_level", &[(ms(0.0), 182.5), (ms(10.0), 183.0)]);
    expect(&all.next().await, "hau-01", "salinity", &[(ms(0.0), 0.4)]);
    expect(&all.next().await, "hau-02", "water_level", &[(ms(0.0), 90.0)]);
    expect(&all.next().await, "hau-01", "water_level", &[(ms(20.0), 184.0)]);
    // The filtered stream has only hau-01's water levels.
    expect(&one.next().await, "hau-01", "water_level", &[(ms(0.0), 182.5), (ms(10.0), 183.0)]);
    expect(&one.next().await, "hau-01", "water_level", &[(ms(20.0), 184.0)]);
    expect(&hau1_all.next().await, "hau-01", "water_level", &[(ms(0.0), 182.5), (ms(10.0), 183.0)]);
    expect(&hau1_all.next().await, "hau-01", "salinity", &[(ms(0.0), 0.4)]);
    expect(&hau1_all.next().await, "hau-01", "water_level", &[(ms(20.0), 184.0)]);

    // The connection is lost; two packs are stored meanwhile; the client resumes after the
    // last event it had, and gets those two and then what comes live, nothing twice.
    let last = all.last_id.clone().unwrap();
    let last_hau1 = hau1_all.last_id.clone().unwrap();
    drop((all, hau1_all));
    stored(&mut hau2, "hau-02", pack(t, &[("water_level", "cm", 91.0, 30.0)])).await;
    stored(&mut hau1, "hau-01", pack(t, &[("water_level", "cm", 185.0, 30.0)])).await;
    let mut resumed = EventStream::open(&http, &base, Some(&last)).await;
    let mut hau1_resumed = EventStream::open(&http, &format!("{base}?device=hau-01"), Some(&last_hau1)).await;
    stored(&mut hau1, "hau-01", pack(t, &[("water_level", "cm", 186.0, 40.0)])).await;
    expect(&resumed.next().await, "hau-02", "water_level", &[(ms(30.0), 91.0)]);
    expect(&resumed.next().await, "hau-01", "water_level", &[(ms(30.0), 185.0)]);
    expect(&resumed.next().await, "hau-01", "water_level", &[(ms(40.0), 186.0)]);
    // The follower of hau-01 resumes with hau-01's events only, in order.
    expect(&hau1_resumed.next().await, "hau-01", "water_level", &[(ms(30.0), 185.0)]);
    expect(&hau1_resumed.next().await, "hau-01", "water_level", &[(ms(40.0), 186.0)]);

    // An id of another run of the server cannot be resumed: the client is told to start over.
    let mut stale = EventStream::open(&http, &base, Some("1-5")).await;
    assert_eq!(stale.next().await.name, "reset");

    // Filters are checked.
    let (status, body) = running.get("/v1/stream?kind=boats").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(running.json("/v1/stats").await["stream"]["dropped"], 0);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_dropped_and_counted_and_the_others_get_everything() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(&config(dir.path())).await;
    let http = reqwest::Client::new();
    let port = running.platform.http_addr.port();
    let mut reader = EventStream::open(&http, &format!("http://127.0.0.1:{port}/v1/stream"), None).await;
    // A client that asks for the stream and never reads a byte of it.
    let mut stuck = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stuck.write_all(b"GET /v1/stream HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    running.wait_stats("two stream clients", |s| s["stream"]["clients"] == 2).await;

    // 400 readings a pack, about 13 KB of events each: a few hundred fill the stuck client's
    // socket buffers and then its queue of 2 MiB.
    let mut sensor = Sensor::device_queued(running.mqtt(), "flood-1", 64).await;
    let t0 = now_secs().floor() - 20_000.0;
    let packs = 2_000;
    let mut expected = Vec::new();
    let mut seen = 0;
    for i in 0..packs {
        let bt = t0 + f64::from(i) * 10.0;
        let records: Vec<_> =
            (0..400).map(|j| ("water_level", "cm", f64::from(j % 300), f64::from(j) / 100.0)).collect();
        sensor.publish_nowait("mekong/v1/flood-1/up", pack(bt, &records)).await;
        expected.push((bt * 1000.0) as i64);
        // At most 32 packs unacknowledged, so that the broker's log never overflows.
        if i >= 32 {
            assert!(matches!(sensor.downlink().await, Downlink::Ack { .. }));
        }
        // Read as we go, so that this client keeps up.
        while let Some(event) = tokio::time::timeout(Duration::ZERO, reader.read()).await.ok().flatten() {
            assert_eq!(readings(&event).2[0].0, expected[seen], "event {seen}");
            seen += 1;
        }
    }
    while seen < packs as usize {
        let event = reader.next().await;
        assert_eq!(readings(&event).2[0].0, expected[seen], "event {seen}");
        seen += 1;
    }
    let stats = running.wait_stats("the stuck client dropped", |s| s["stream"]["dropped"] == 1).await;
    assert_eq!(stats["lost"], 0, "{stats}");
    assert_eq!(stats["durable_packs"], packs, "{stats}");
    running.stop().await;
}
