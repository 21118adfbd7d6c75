//! Signed packs over the real broker: a node provisioned with `mekong device provision` seals
//! its packs in COSE_Mac0 envelopes; the platform stores them and acknowledges their sequence
//! numbers, and refuses wrong keys, replays (also after a restart), plain packs from a keyed
//! device and signed packs from a device without a key, while a plain sensor carries on. A
//! refusal names the refused envelope's number; numbers are per key, so a node provisioned
//! again starts a new numbering.

use std::path::Path;

use crate::platform::{config, start, Running};
use mekong::provision::{provision, ProvisionOptions};
use mekong::Config;
use mekong_schema::{cose, provision as blob, DeviceKind};
use mekong_tests::{now_secs, pack, points_of, Downlink, Sensor};

const NODE: &str = "hau-signed-01";
const NODE_UP: &str = "mekong/v1/hau-signed-01/up";
const PLAIN: &str = "good-air";
const PLAIN_UP: &str = "mekong/v1/good-air/up";

/// A registry with a plain sensor, and `NODE` added by the provisioning command; the node's
/// key and MQTT password, as its firmware reads them from the blob.
fn registry(dir: &Path) -> ([u8; 32], String) {
    let registry = dir.join("devices.toml");
    std::fs::write(&registry, format!("[[device]]\nid = \"{PLAIN}\"\nkind = \"air\"\n")).unwrap();
    let out = dir.join("node.bin");
    provision(&ProvisionOptions {
        device_id: NODE.into(),
        kind: DeviceKind::Water,
        key: None,
        broker_host: "localhost".into(),
        broker_port: 1883,
        period_secs: 60,
        sensors: Default::default(),
        registry,
        out: out.clone(),
    })
    .unwrap();
    let bytes = std::fs::read(out).unwrap();
    let node = blob::decode(&bytes).unwrap();
    (node.key, String::from_utf8(node.password.to_hex().to_vec()).unwrap())
}

fn platform_config(data: &Path, registry_dir: &Path) -> Config {
    let mut c = config(data);
    c.registry.path = registry_dir.join("devices.toml");
    // The plain sensor has no password: it connects anonymously, confined to its own topics.
    c.security.allow_anonymous = true;
    c
}

fn sealed(key: &[u8; 32], seq: u64, device: &str, pack: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; pack.len() + cose::MAX_OVERHEAD];
    let n = cose::seal(&mut out, key, seq, device, pack).unwrap();
    out.truncate(n);
    out
}

/// The next downlink is a refusal for `why`, naming the refused envelope's number `seq`.
async fn expect_refusal(sensor: &mut Sensor, why: &str, seq: Option<u64>) {
    match sensor.downlink().await {
        Downlink::Refused { reason, seq: got, .. } => assert_eq!((reason.as_str(), got), (why, seq)),
        other => panic!("expected a refusal ({why}, {seq:?}), got {other:?}"),
    }
}

async fn expect_ack(sensor: &mut Sensor, seq: Option<u64>) {
    match sensor.downlink().await {
        Downlink::Ack { seq: got, .. } => assert_eq!(got, seq),
        other => panic!("expected an acknowledgement of {seq:?}, got {other:?}"),
    }
}

/// The plain sensor sends reading `k` and has it acknowledged: it is never disturbed.
async fn plain_reading(running: &Running, sensor: &mut Sensor, t: f64, k: usize) {
    sensor.publish(PLAIN_UP, pack(t, &[("pm2_5", "ug/m3", k as f64, k as f64)])).await;
    expect_ack(sensor, None).await;
    let body = running.json(&format!("/v1/devices/{PLAIN}/series/pm2_5")).await;
    assert_eq!(points_of(&body).len(), k + 1, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_packs_are_stored_and_acknowledged_and_forgeries_refused() {
    let (data, reg) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (key, password) = registry(reg.path());
    let running = start(&platform_config(data.path(), reg.path())).await;
    let mut node = Sensor::device_login(running.mqtt(), NODE, &password).await;
    let mut plain = Sensor::device(running.mqtt(), PLAIN).await;
    let t = now_secs().floor();
    let reading = |k: f64| pack(t, &[("water_level", "cm", 170.0 + k, k)]);

    node.publish(NODE_UP, sealed(&key, 1, NODE, &reading(0.0))).await;
    expect_ack(&mut node, Some(1)).await;
    plain_reading(&running, &mut plain, t, 0).await;

    let mut wrong = key;
    wrong[0] ^= 1;
    node.publish(NODE_UP, sealed(&wrong, 2, NODE, &reading(1.0))).await;
    expect_refusal(&mut node, "bad_signature", Some(2)).await;
    node.publish(NODE_UP, sealed(&key, 1, NODE, &reading(0.0))).await;
    expect_refusal(&mut node, "replayed", Some(1)).await;
    node.publish(NODE_UP, reading(1.0)).await;
    expect_refusal(&mut node, "unsigned", None).await;
    plain_reading(&running, &mut plain, t, 1).await;
    // A device without a key cannot send signed packs, even with a valid envelope.
    plain.publish(PLAIN_UP, sealed(&key, 1, PLAIN, &pack(t, &[("pm2_5", "ug/m3", 9.0, 99.0)]))).await;
    expect_refusal(&mut plain, "unknown_key", Some(1)).await;

    // Numbers 2 to 4 never arrived: one gap.
    node.publish(NODE_UP, sealed(&key, 5, NODE, &reading(2.0))).await;
    expect_ack(&mut node, Some(5)).await;
    plain_reading(&running, &mut plain, t, 2).await;

    let body = running.json(&format!("/v1/devices/{NODE}/series/water_level")).await;
    let t_ms = (t * 1000.0) as i64;
    assert_eq!(points_of(&body), [(t_ms, 170.0), (t_ms + 2000, 172.0)], "only the accepted packs");
    let device = running.json(&format!("/v1/devices/{NODE}")).await;
    assert_eq!(
        (device["seq"].as_u64(), device["seq_gaps"].as_u64(), device["rejected"].as_u64()),
        (Some(5), Some(1), Some(3))
    );
    let plain_device = running.json(&format!("/v1/devices/{PLAIN}")).await;
    assert!(plain_device["seq"].is_null(), "{plain_device}");
    let stats = running.json("/v1/stats").await;
    for kind in ["bad_signature", "replayed", "unsigned", "unknown_key"] {
        assert_eq!(stats["rejected_by_kind"][kind], 1, "{kind}: {stats}");
    }
    let log = running.json(&format!("/v1/rejections?device={NODE}")).await;
    let kinds: Vec<_> = log["rejections"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["unsigned", "replayed", "bad_signature"], "newest first");
    running.stop().await;

    // The refusals were logged, and no log line holds a key, or the registry's text of it.
    let logs = crate::platform::logs();
    assert!(logs.contains("publish refused"), "no refusal in the captured logs");
    let registry = std::fs::read_to_string(reg.path().join("devices.toml")).unwrap();
    for secret in [key, wrong] {
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        assert!(registry.contains(&hex) || secret == wrong, "the registry holds the node's key");
        assert!(!logs.contains(&hex), "a key is in the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_a_restart_is_refused() {
    let (data, reg) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (key, password) = registry(reg.path());
    let t = now_secs().floor();
    let captured = sealed(&key, 3, NODE, &pack(t, &[("water_level", "cm", 171.0, 0.0)]));

    let running = start(&platform_config(data.path(), reg.path())).await;
    let mut node = Sensor::device_login(running.mqtt(), NODE, &password).await;
    node.publish(NODE_UP, captured.clone()).await;
    expect_ack(&mut node, Some(3)).await;
    running.stop().await;

    let running = start(&platform_config(data.path(), reg.path())).await;
    let mut node = Sensor::device_login(running.mqtt(), NODE, &password).await;
    let mut plain = Sensor::device(running.mqtt(), PLAIN).await;
    node.publish(NODE_UP, captured).await;
    expect_refusal(&mut node, "replayed", Some(3)).await;
    plain_reading(&running, &mut plain, t, 0).await;
    node.publish(NODE_UP, sealed(&key, 4, NODE, &pack(t, &[("water_level", "cm", 172.0, 60.0)]))).await;
    expect_ack(&mut node, Some(4)).await;
    let device = running.json(&format!("/v1/devices/{NODE}")).await;
    assert_eq!((device["seq"].as_u64(), device["points"].as_u64()), (Some(4), Some(2)));
    running.stop().await;
}

/// Sequence numbers are per key: a node provisioned again (new key, numbering restarted) is
/// accepted from its first pack after the platform restarts with the new registry, its new
/// numbers are protected as before, and packs still signed with the old key are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_key_starts_a_new_numbering() {
    let (data, reg) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (key_a, password) = registry(reg.path());
    let t = now_secs().floor();
    let reading = |k: f64| pack(t, &[("water_level", "cm", 170.0 + k, k)]);

    let running = start(&platform_config(data.path(), reg.path())).await;
    let mut node = Sensor::device_login(running.mqtt(), NODE, &password).await;
    node.publish(NODE_UP, sealed(&key_a, 100, NODE, &reading(0.0))).await;
    expect_ack(&mut node, Some(100)).await;
    running.stop().await;

    // Provisioned again: the registry now holds key B, and the platform restarts with it.
    let (key_b, password) = registry(reg.path());
    assert_ne!(key_a, key_b);
    let running = start(&platform_config(data.path(), reg.path())).await;
    let mut node = Sensor::device_login(running.mqtt(), NODE, &password).await;
    node.publish(NODE_UP, sealed(&key_b, 1, NODE, &reading(1.0))).await;
    expect_ack(&mut node, Some(1)).await;
    node.publish(NODE_UP, sealed(&key_b, 2, NODE, &reading(2.0))).await;
    expect_ack(&mut node, Some(2)).await;
    node.publish(NODE_UP, sealed(&key_b, 1, NODE, &reading(1.0))).await;
    expect_refusal(&mut node, "replayed", Some(1)).await;
    node.publish(NODE_UP, sealed(&key_a, 101, NODE, &reading(3.0))).await;
    expect_refusal(&mut node, "bad_signature", Some(101)).await;
    running.stop().await;

    // And after another restart under B, B's numbers are still protected.
    let running = start(&platform_config(data.path(), reg.path())).await;
    let mut node = Sensor::device_login(running.mqtt(), NODE, &password).await;
    node.publish(NODE_UP, sealed(&key_b, 2, NODE, &reading(2.0))).await;
    expect_refusal(&mut node, "replayed", Some(2)).await;
    node.publish(NODE_UP, sealed(&key_b, 3, NODE, &reading(4.0))).await;
    expect_ack(&mut node, Some(3)).await;
    let body = running.json(&format!("/v1/devices/{NODE}/series/water_level")).await;
    let t_ms = (t * 1000.0) as i64;
    assert_eq!(points_of(&body), [(t_ms, 170.0), (t_ms + 1000, 171.0), (t_ms + 2000, 172.0), (t_ms + 4000, 174.0)]);
    let device = running.json(&format!("/v1/devices/{NODE}")).await;
    assert_eq!((device["seq"].as_u64(), device["seq_gaps"].as_u64()), (Some(3), Some(0)));
    running.stop().await;
}
