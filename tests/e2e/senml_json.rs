//! SenML-JSON on the same topic as SenML-CBOR: stored and acknowledged alike, refused with a
//! reason that says what is wrong with the JSON, and names as other SenML ecosystems write
//! them (device URNs in base names, LwM2M paths) filed under the contract's metrics.

use crate::platform::{config, start};
use mekong_tests::{now_secs, pack, Downlink, Sensor};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_packs_are_stored_acknowledged_and_refused_like_cbor() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(&config(dir.path())).await;
    let mut gateway = Sensor::device(running.mqtt(), "ow-gateway").await;
    let mut other = Sensor::device(running.mqtt(), "hau-05").await;
    let t = now_secs().floor();

    // RFC 8428's device URN in the base name: the metric is the record's own name, so a
    // well-known one (water_level) gives the station its kind.
    let rfc = format!(
        r#"[{{"bn":"urn:dev:ow:10e2073a01080063:","bt":{t},"bu":"cm","n":"water_level","v":120.5}},
            {{"n":"water_level","t":-10,"v":120.25}},
            {{"n":"salinity","u":"ppt","v":0.5}}]"#
    );
    gateway.publish("mekong/v1/ow-gateway/up", rfc.into_bytes()).await;
    let ack = gateway.downlink().await;
    let Downlink::Ack { up_to_ms, readings, .. } = ack else { panic!("expected an ack, got {ack:?}") };
    assert_eq!((up_to_ms, readings), ((t * 1000.0) as i64, 3));

    // The same rule for the CBOR form: a device URN base name, then the measurement.
    let mut cbor = vec![0u8; 128];
    let base = mekong_schema::Base { name: Some("urn:dev:ow:10e2073a01080063:"), time: Some(t), unit: None };
    let reading = mekong_schema::Reading { name: "water_temp", unit: Some("Cel"), value: 29.0, time: 0.0 };
    let n = mekong_schema::encode_pack(&mut cbor, &base, &[reading]).unwrap();
    cbor.truncate(n);
    gateway.publish("mekong/v1/ow-gateway/up", cbor).await;
    assert!(matches!(gateway.downlink().await, Downlink::Ack { readings: 1, .. }));

    // An LwM2M device's temperature (object 3303, instance 0, resource 5700).
    let lwm2m = format!(r#"[{{"bn":"/3303/0/","bt":{t},"n":"5700","u":"Cel","v":29.5}}]"#);
    gateway.publish("mekong/v1/ow-gateway/up", lwm2m.into_bytes()).await;
    assert!(matches!(gateway.downlink().await, Downlink::Ack { readings: 1, .. }));

    // Malformed JSON, then a pack naming two devices: refused with their reasons, while
    // another device's CBOR pack, sent in between, is stored and acknowledged.
    gateway.publish("mekong/v1/ow-gateway/up", br#"[{"n":"water_level","v":1"#.to_vec()).await;
    assert!(matches!(gateway.downlink().await, Downlink::Refused { reason, .. } if reason == "truncated"));
    other.publish("mekong/v1/hau-05/up", pack(t, &[("water_level", "cm", 90.0, 0.0)])).await;
    assert!(matches!(other.downlink().await, Downlink::Ack { readings: 1, .. }));
    let two = format!(
        r#"[{{"bn":"urn:dev:ow:1:","bt":{t},"n":"water_level","v":1}},{{"bn":"urn:dev:ow:2:","n":"water_level","v":2}}]"#
    );
    gateway.publish("mekong/v1/ow-gateway/up", two.into_bytes()).await;
    assert!(matches!(gateway.downlink().await, Downlink::Refused { reason, .. } if reason == "invalid_record"));
    gateway.publish("mekong/v1/ow-gateway/up", br#"[{"n":"a\u0062","v":1}]"#.to_vec()).await;
    assert!(matches!(gateway.downlink().await, Downlink::Refused { reason, .. } if reason == "invalid_json"));

    let log = running.json("/v1/rejections?device=ow-gateway").await;
    let reasons: Vec<&str> =
        log["rejections"].as_array().unwrap().iter().map(|r| r["reason"].as_str().unwrap()).collect();
    assert!(reasons.iter().any(|r| r.contains("escape sequences in strings are not supported")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("a pack may name only one device")), "{reasons:?}");

    let device = running.json("/v1/devices/ow-gateway").await;
    assert_eq!(device["kind"], "water", "{device}");
    let level = running.json("/v1/devices/ow-gateway/series/water_level").await;
    let values: Vec<f64> = level["points"].as_array().unwrap().iter().map(|p| p["v"].as_f64().unwrap()).collect();
    assert_eq!(values, [120.25, 120.5], "{level}");
    assert_eq!(level["unit"], "cm");
    let temp = running.json("/v1/devices/ow-gateway/series/3303%2F0%2F5700").await;
    assert_eq!(temp["points"][0]["v"], 29.5, "{temp}");
    assert_eq!(temp["unit"], "Cel");
    let water_temp = running.json("/v1/devices/ow-gateway/series/water_temp").await;
    assert_eq!((water_temp["points"][0]["v"].as_f64(), water_temp["unit"].as_str()), (Some(29.0), Some("Cel")));
    let others = running.json("/v1/devices/hau-05/series/water_level").await;
    assert_eq!(others["points"][0]["v"], 90.0, "{others}");
    running.stop().await;
}
