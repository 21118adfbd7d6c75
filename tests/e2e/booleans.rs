//! SenML booleans (`vb`) over real MQTT, in CBOR and in SenML-JSON, from a pump station:
//! stored as a series of booleans and read back through HTTP as `true`/`false`; a number for
//! that series afterwards is refused with its reason.

use mekong_tests::{now_secs, pack, Downlink, EventStream, Sensor};
use serde_json::Value;

use crate::platform::{config, start};

/// A SenML-CBOR pack of booleans: `(name, seconds after bt, value)`, written by hand since
/// the contract's encoder writes numbers only.
fn cbor_booleans(bt: f64, readings: &[(&str, u8, bool)]) -> Vec<u8> {
    let mut out = vec![0x80 | u8::try_from(readings.len()).unwrap()];
    for (i, &(name, t, value)) in readings.iter().enumerate() {
        // A map of n, t, vb; the first record carries bt (label -3) too.
        out.push(if i == 0 { 0xa4 } else { 0xa3 });
        if i == 0 {
            out.push(0x22);
            out.push(0xfb);
            out.extend_from_slice(&bt.to_be_bytes());
        }
        out.push(0x00);
        out.push(0x60 | u8::try_from(name.len()).unwrap());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&[0x06, 0x18, t]);
        out.extend_from_slice(&[0x04, if value { 0xf5 } else { 0xf4 }]);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pump_stations_booleans_read_back_as_booleans() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(&config(dir.path())).await;
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/v1/stream?device=pump-7", running.platform.http_addr.port());
    let mut stream = EventStream::open(&http, &url, None).await;
    let mut station = Sensor::device(running.mqtt(), "pump-7").await;
    // At the start of a ten-minute bucket, so that one bucket holds every reading.
    let t = ((now_secs() / 600.0).floor() - 1.0) * 600.0;
    let topic = "mekong/v1/pump-7/up";

    // The pump's state in CBOR, the flood gate's and the pump's next in SenML-JSON, and the
    // level in the sump as a number.
    station.publish(topic, cbor_booleans(t, &[("pump_running", 0, true), ("pump_running", 60, false)])).await;
    assert!(matches!(station.downlink().await, Downlink::Ack { readings: 2, .. }));
    let json = format!(
        r#"[{{"bt":{t},"n":"gate_open","t":0,"vb":false}},{{"n":"gate_open","t":120,"vb":true}},{{"n":"pump_running","t":120,"vb":true}}]"#
    );
    station.publish(topic, json.into_bytes()).await;
    assert!(matches!(station.downlink().await, Downlink::Ack { readings: 3, .. }));
    station.publish(topic, pack(t, &[("sump_level", "cm", 42.5, 0.0)])).await;
    assert!(matches!(station.downlink().await, Downlink::Ack { readings: 1, .. }));

    // The stream says true and false for them too, and numbers for the number series.
    let streamed = |event: mekong_tests::StreamEvent| -> (String, Vec<Value>) {
        let values = event.data["points"].as_array().unwrap().iter().map(|p| p["v"].clone()).collect();
        (event.data["metric"].as_str().unwrap().to_owned(), values)
    };
    assert_eq!(streamed(stream.next().await), ("pump_running".into(), vec![Value::Bool(true), Value::Bool(false)]));
    assert_eq!(streamed(stream.next().await), ("gate_open".into(), vec![Value::Bool(false), Value::Bool(true)]));
    assert_eq!(streamed(stream.next().await), ("pump_running".into(), vec![Value::Bool(true)]));
    assert_eq!(streamed(stream.next().await), ("sump_level".into(), vec![Value::from(42.5)]));

    let points = running.json("/v1/devices/pump-7/series/pump_running").await;
    assert_eq!(points["value_kind"], "boolean");
    let values: Vec<_> = points["points"].as_array().unwrap().iter().map(|p| p["v"].clone()).collect();
    assert_eq!(values, [true, false, true].map(Value::Bool));
    let gate = running.json("/v1/devices/pump-7/series/gate_open").await;
    let values: Vec<_> = gate["points"].as_array().unwrap().iter().map(|p| p["v"].clone()).collect();
    assert_eq!(values, [false, true].map(Value::Bool));
    let csv = running.text("/v1/devices/pump-7/series/gate_open?format=csv").await;
    let last_column: Vec<_> = csv.lines().map(|l| l.rsplit(',').next().unwrap()).collect();
    assert_eq!(last_column, ["v", "false", "true"]);

    let series = running.json("/v1/devices/pump-7/series").await;
    let kinds: Vec<_> = series["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["metric"].as_str().unwrap(), s["value_kind"].as_str().unwrap(), s["last_value"].clone()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("gate_open", "boolean", Value::Bool(true)),
            ("pump_running", "boolean", Value::Bool(true)),
            ("sump_level", "number", Value::from(42.5))
        ]
    );
    let buckets = running.json("/v1/devices/pump-7/series/pump_running/aggregate?step=10m").await;
    let bucket = &buckets["buckets"][0];
    assert_eq!(
        (bucket["count"].as_u64(), bucket["max"].as_bool(), bucket["min"].as_bool()),
        (Some(3), Some(true), Some(false))
    );
    assert!((bucket["avg"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-12, "{bucket}");

    // A number for the pump is refused, and says why.
    station.publish(topic, pack(t, &[("pump_running", "1", 1.0, 180.0)])).await;
    let refusal = station.downlink().await;
    let Downlink::Refused { reason, .. } = &refusal else { panic!("expected a refusal, got {refusal:?}") };
    assert_eq!(reason, "unit_mismatch");
    let rejections = running.json("/v1/rejections?device=pump-7").await;
    assert_eq!(rejections["rejections"][0]["reason"], "series pump_running holds booleans, not numbers");
    running.stop().await;
}
