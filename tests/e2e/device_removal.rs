//! Removing a device through the API takes effect at once: its MQTT login is revoked, a
//! session it still holds has its publishes refused, and with `data=delete` everything stored
//! of it is gone (its id free for a new device), while every other device carries on.

use std::path::Path;

use mekong_ingest::access::PasswordDigest;
use mekong_tests::{now_secs, pack, Downlink, Sensor};
use reqwest::Method;
use rumqttc::ConnectReturnCode;

use crate::platform::{config, start};

const NODE: &str = "hau-01";
const OTHER: &str = "hau-02";
const KEPT: &str = "hau-03";

fn password(who: &str) -> String {
    mekong::config::to_hex(&PasswordDigest::of(format!("test password of {who}").as_bytes()).0)
}

fn write_registry(dir: &Path) -> std::path::PathBuf {
    let entry = |id: &str| {
        let digest = mekong::config::to_hex(&PasswordDigest::of(password(id).as_bytes()).0);
        format!("[[device]]\nid = \"{id}\"\nkind = \"water\"\npassword_sha256 = \"{digest}\"\n\n")
    };
    let path = dir.join("devices.toml");
    std::fs::write(&path, [NODE, OTHER, KEPT].map(entry).concat()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_device_loses_its_login_at_once_and_its_data_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&dir.path().join("data"));
    c.registry.path = write_registry(dir.path());
    let running = start(&c).await;
    let addr = running.mqtt();
    let t = now_secs().floor();

    let mut node = Sensor::device_login(addr, NODE, &password(NODE)).await;
    let mut other = Sensor::device_login(addr, OTHER, &password(OTHER)).await;
    let mut kept = Sensor::device_login(addr, KEPT, &password(KEPT)).await;
    node.publish(
        &format!("mekong/v1/{NODE}/up"),
        pack(t, &[("water_level", "cm", 1.0, -1.0), ("salinity", "ppt", 0.5, 0.0)]),
    )
    .await;
    assert!(matches!(node.downlink().await, Downlink::Ack { readings: 2, .. }));
    for (sensor, id) in [(&mut other, OTHER), (&mut kept, KEPT)] {
        sensor.publish(&format!("mekong/v1/{id}/up"), pack(t, &[("water_level", "cm", 2.0, 0.0)])).await;
        assert!(matches!(sensor.downlink().await, Downlink::Ack { readings: 1, .. }));
    }

    // Read-only removal is refused without a confirmation it understands.
    let (status, body) = running.send(Method::DELETE, &format!("/v1/devices/{NODE}?data=yes"), None).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = running.send(Method::DELETE, &format!("/v1/devices/{NODE}?data=delete"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["unregistered"], true, "{body}");
    assert_eq!((body["series"].as_u64(), body["points"].as_u64()), (Some(2), Some(2)), "{body}");

    // Its data is gone.
    assert_eq!(running.get(&format!("/v1/devices/{NODE}")).await.0, 404);
    assert_eq!(running.get(&format!("/v1/devices/{NODE}/series/water_level")).await.0, 404);
    let latest = running.json("/v1/latest").await;
    assert!(latest["latest"].as_array().unwrap().iter().all(|l| l["device"] != NODE), "{latest}");

    // Its open session may publish no more: the broker's router refuses the publish before
    // its PUBACK (MQTT 3.1.1 has no failure code in a PUBACK), so once another device's
    // later pack is acknowledged, the refused one would have reached the pipeline before it.
    let received = running.json("/v1/stats").await["received"].as_u64().unwrap();
    node.publish(&format!("mekong/v1/{NODE}/up"), pack(t, &[("water_level", "cm", 3.0, 1.0)])).await;
    other.publish(&format!("mekong/v1/{OTHER}/up"), pack(t, &[("water_level", "cm", 2.5, 1.0)])).await;
    assert!(matches!(other.downlink().await, Downlink::Ack { readings: 1, .. }));
    let stats = running.json("/v1/stats").await;
    assert_eq!(stats["received"].as_u64().unwrap(), received + 1, "only the other device's: {stats}");
    assert_eq!(running.get(&format!("/v1/devices/{NODE}")).await.0, 404);
    assert_eq!(node.received_downlink(), None);
    let again = Sensor::login(addr, NODE, NODE, &password(NODE)).await;
    assert_eq!(again.err(), Some(ConnectReturnCode::NotAuthorized));
    assert!(!std::fs::read_to_string(&c.registry.path).unwrap().contains(NODE));

    // Removed with its data kept: unregistered, its readings still served.
    let (status, _) = running.send(Method::DELETE, &format!("/v1/devices/{KEPT}"), None).await;
    assert_eq!(status, 204);
    let device = running.json(&format!("/v1/devices/{KEPT}")).await;
    assert_eq!((device["registered"].as_bool(), device["points"].as_u64()), (Some(false), Some(1)), "{device}");

    // The other device carried on, its data untouched.
    assert_eq!(running.json(&format!("/v1/devices/{OTHER}")).await["points"], 2);

    // The id is free: registered afresh, it starts with nothing.
    let (status, body) =
        running.send(Method::PUT, &format!("/v1/devices/{NODE}"), Some(serde_json::json!({"kind": "air"}))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!((body["kind"].as_str(), body["points"].as_u64()), (Some("air"), Some(0)), "{body}");
    running.stop().await;
}
