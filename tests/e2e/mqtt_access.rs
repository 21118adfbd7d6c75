//! Who may do what on the broker once MQTT identities exist: logins with rumqttc (MQTT 3.1.1
//! and 5) and with Mosquitto's own clients, every identity confined to its own topics, no
//! session takeover without the password, every refusal counted and logged, and no password
//! in any log line.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mekong_ingest::access::PasswordDigest;
use mekong_tests::{now_secs, pack, Downlink, Sensor, TIMEOUT};
use rumqttc::v5;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode as V5Connect, Packet as V5Packet, PubAckReason, SubscribeReasonCode as V5Sub,
};
use rumqttc::{ConnectReturnCode, SubscribeReasonCode};
use serde_json::Value;

use crate::platform::{config, logs, start, Running};

const NODE: &str = "hau-01";
const OTHER: &str = "hau-02";
/// Registered without a password; the gateway speaks for it.
const BEHIND_GATEWAY: &str = "cai-03";
const GATEWAY: &str = "gw-1";
const APP: &str = "flood-board";

/// Passwords as `mekong device provision` makes them: 64 hex digits.
fn password(who: &str) -> String {
    let digest = PasswordDigest::of(format!("test password of {who}").as_bytes());
    mekong::config::to_hex(&digest.0)
}

fn digest_hex(who: &str) -> String {
    mekong::config::to_hex(&PasswordDigest::of(password(who).as_bytes()).0)
}

fn write_registry(dir: &Path) -> std::path::PathBuf {
    let text = format!(
        "[[device]]\nid = \"{NODE}\"\nkind = \"water\"\npassword_sha256 = \"{}\"\n\n\
         [[device]]\nid = \"{OTHER}\"\nkind = \"water\"\npassword_sha256 = \"{}\"\n\n\
         [[device]]\nid = \"{BEHIND_GATEWAY}\"\nkind = \"water\"\n\n\
         [[gateway]]\nname = \"{GATEWAY}\"\npassword_sha256 = \"{}\"\ndevices = [\"{BEHIND_GATEWAY}\"]\n\n\
         [[app]]\nname = \"{APP}\"\npassword_sha256 = \"{}\"\nsubscribe = [\"mekong/v1/+/up\"]\n",
        digest_hex(NODE),
        digest_hex(OTHER),
        digest_hex(GATEWAY),
        digest_hex(APP),
    );
    let path = dir.join("devices.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn start_with_identities(dir: &Path) -> Running {
    let mut c = config(&dir.join("data"));
    c.registry.path = write_registry(dir);
    start(&c).await
}

fn reading(t: f64, v: f64) -> Vec<u8> {
    pack(t, &[("water_level", "cm", v, 0.0)])
}

async fn expect_ack(sensor: &mut Sensor) {
    let downlink = sensor.downlink().await;
    assert!(matches!(downlink, Downlink::Ack { .. }), "expected an acknowledgement, got {downlink:?}");
}

/// The stored points of `device`'s water level.
async fn points(running: &Running, device: &str) -> usize {
    let (status, body) = running.get(&format!("/v1/devices/{device}/series/water_level")).await;
    match status {
        200 => body["points"].as_array().map_or(0, Vec::len),
        _ => 0,
    }
}

fn refused(stats: &Value, identity: &str) -> (u64, u64) {
    let r = &stats["mqtt"]["access_refused"][identity];
    (r["publishes"].as_u64().unwrap_or(0), r["subscriptions"].as_u64().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_checked_and_a_session_cannot_be_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let running = start_with_identities(dir.path()).await;
    let addr = running.mqtt();

    let refusal = |r: Result<Sensor, ConnectReturnCode>| r.err();
    assert_eq!(
        refusal(Sensor::login(addr, NODE, NODE, &password(OTHER)).await),
        Some(ConnectReturnCode::NotAuthorized)
    );
    assert_eq!(
        refusal(Sensor::login(addr, "nobody", "nobody", &password(NODE)).await),
        Some(ConnectReturnCode::NotAuthorized)
    );
    // The right password for another client id: that would take over its session.
    assert_eq!(
        refusal(Sensor::login(addr, OTHER, NODE, &password(NODE)).await),
        Some(ConnectReturnCode::NotAuthorized)
    );

    let mut node = Sensor::device_login(addr, NODE, &password(NODE)).await;
    // Without credentials, with the node's client id: refused, and the node stays connected.
    let stranger = tokio::time::timeout(TIMEOUT, async {
        let mut options = rumqttc::MqttOptions::new(NODE, "127.0.0.1", addr.port());
        options.set_keep_alive(Duration::from_secs(5));
        let (_client, mut events) = rumqttc::AsyncClient::new(options, 10);
        loop {
            match events.poll().await {
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return code,
                Err(e) => panic!("the stranger saw {e} instead of a refusal"),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("no answer to the stranger");
    assert_eq!(stranger, ConnectReturnCode::NotAuthorized);
    node.publish(&format!("mekong/v1/{NODE}/up"), reading(now_secs(), 120.0)).await;
    expect_ack(&mut node).await;

    // A will on another device's downlink would be a forged acknowledgement at disconnect.
    let mut options = rumqttc::MqttOptions::new(OTHER, "127.0.0.1", addr.port());
    options.set_credentials(OTHER, password(OTHER));
    options.set_last_will(rumqttc::LastWill::new(
        format!("mekong/v1/{NODE}/down"),
        vec![0xa1],
        rumqttc::QoS::AtLeastOnce,
        false,
    ));
    let (_client, mut events) = rumqttc::AsyncClient::new(options, 10);
    let will = tokio::time::timeout(TIMEOUT, events.poll()).await.expect("no CONNACK");
    assert!(
        matches!(will, Err(rumqttc::ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized))),
        "{will:?}"
    );

    // MQTT 5: the refusal is "Not authorized" (0x87).
    let mut options = v5::MqttOptions::new(NODE, "127.0.0.1", running.mqtt5().port());
    options.set_credentials(NODE, password(OTHER));
    let (_client, mut events) = v5::AsyncClient::new(options, 10);
    let v5_refusal = tokio::time::timeout(TIMEOUT, events.poll()).await.expect("no CONNACK over MQTT 5");
    assert!(
        matches!(v5_refusal, Err(v5::ConnectionError::ConnectionRefused(V5Connect::NotAuthorized))),
        "{v5_refusal:?}"
    );

    let stats = running.json("/v1/stats").await;
    let connects = &stats["mqtt"]["connects_refused"];
    assert_eq!(connects["bad_credentials"], 3, "{stats}");
    assert_eq!(connects["client_id_mismatch"], 1, "{stats}");
    assert_eq!(connects["no_credentials"], 1, "{stats}");
    // The refused will counts as a publish refused to its identity.
    assert_eq!(refused(&stats, OTHER), (1, 0), "{stats}");
    assert!(logs().contains("mqtt login refused"));
    node.disconnect().await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_identity_stays_in_its_own_topics() {
    let dir = tempfile::tempdir().unwrap();
    let running = start_with_identities(dir.path()).await;
    let addr = running.mqtt();
    let t = now_secs();

    let mut node = Sensor::device_login(addr, NODE, &password(NODE)).await;
    let mut other = Sensor::device_login(addr, OTHER, &password(OTHER)).await;
    let mut app = Sensor::login(addr, &format!("{APP}:wall-1"), APP, &password(APP)).await.unwrap();
    assert!(matches!(app.subscribe("mekong/v1/+/up").await, SubscribeReasonCode::Success(_)));

    // A device reads nothing but its own downlink.
    for filter in ["#", "mekong/v1/+/up", &format!("mekong/v1/{OTHER}/down"), "mekong/v1/+/down"] {
        assert_eq!(node.subscribe(filter).await, SubscribeReasonCode::Failure, "{filter}");
    }
    // It cannot publish for another device, nor an acknowledgement to one. 3.1.1 has no
    // failure code in a PUBACK: the publish is acknowledged and dropped.
    node.publish(&format!("mekong/v1/{OTHER}/up"), reading(t, 999.0)).await;
    node.publish(&format!("mekong/v1/{OTHER}/down"), vec![0xa1, 0x00, 0x01]).await;
    // The app may read uplinks, and nothing else, and never publish.
    assert_eq!(app.subscribe("mekong/v1/+/down").await, SubscribeReasonCode::Failure);
    assert_eq!(app.subscribe("#").await, SubscribeReasonCode::Failure);
    app.publish(&format!("mekong/v1/{OTHER}/up"), reading(t, 998.0)).await;

    // The gateway speaks for its device and nobody else.
    let mut gateway = Sensor::login(addr, GATEWAY, GATEWAY, &password(GATEWAY)).await.unwrap();
    assert!(matches!(
        gateway.subscribe(&format!("mekong/v1/{BEHIND_GATEWAY}/down")).await,
        SubscribeReasonCode::Success(_)
    ));
    assert_eq!(gateway.subscribe(&format!("mekong/v1/{NODE}/down")).await, SubscribeReasonCode::Failure);
    gateway.publish(&format!("mekong/v1/{NODE}/up"), reading(t, 997.0)).await;
    gateway.publish(&format!("mekong/v1/{BEHIND_GATEWAY}/up"), reading(t, 50.0)).await;
    expect_ack(&mut gateway).await;

    // What each may do still works, and the forged acknowledgement never reached `other`:
    // the first downlink it sees is the answer to its own pack.
    other.publish(&format!("mekong/v1/{OTHER}/up"), reading(t, 130.0)).await;
    expect_ack(&mut other).await;
    node.publish(&format!("mekong/v1/{NODE}/up"), reading(t, 120.0)).await;
    expect_ack(&mut node).await;
    // The app saw exactly the three uplinks that were let in, in any order.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let payload = tokio::time::timeout(TIMEOUT, app.downlink_payload()).await.expect("uplink not relayed").unwrap();
        seen.push(payload);
    }
    // The refused publishes were all handled (PUBACKed) before these three were sent, so a
    // refused one that had been relayed would be among the first three.
    seen.sort();
    let mut expected = vec![reading(t, 130.0), reading(t, 120.0), reading(t, 50.0)];
    expected.sort();
    assert_eq!(seen, expected, "the app saw a refused publish");

    // Nothing refused was stored.
    assert_eq!(points(&running, OTHER).await, 1);
    assert_eq!(points(&running, NODE).await, 1);
    assert_eq!(points(&running, BEHIND_GATEWAY).await, 1);

    let stats = running.json("/v1/stats").await;
    assert_eq!(refused(&stats, NODE), (2, 4), "{stats}");
    assert_eq!(refused(&stats, APP), (1, 2), "{stats}");
    assert_eq!(refused(&stats, GATEWAY), (1, 1), "{stats}");
    let metrics = running.text("/metrics").await;
    assert!(
        metrics.contains(&format!("mekong_mqtt_access_refused_total{{identity=\"{NODE}\",action=\"subscribe\"}} 4"))
    );
    // One line per identity in ten seconds: the node's first refusal is the one logged.
    let logged = logs().lines().any(|l| {
        l.contains("mqtt subscribe refused") && l.contains(&format!("\"{NODE}\"")) && l.contains("topic=\"#\"")
    });
    assert!(logged, "no log line for the first refusal");

    // MQTT 5 says why: "Not authorized" (0x87) in the SUBACK and the PUBACK.
    let mut options = v5::MqttOptions::new(NODE, "127.0.0.1", running.mqtt5().port());
    options.set_credentials(NODE, password(NODE));
    let (client, mut events) = v5::AsyncClient::new(options, 10);
    client.subscribe("#", v5::mqttbytes::QoS::AtMostOnce).await.unwrap();
    client
        .publish(format!("mekong/v1/{OTHER}/up"), v5::mqttbytes::QoS::AtLeastOnce, false, reading(t, 996.0))
        .await
        .unwrap();
    let (mut suback, mut puback) = (None, None);
    tokio::time::timeout(TIMEOUT, async {
        while suback.is_none() || puback.is_none() {
            match events.poll().await.unwrap() {
                v5::Event::Incoming(V5Packet::SubAck(ack)) => suback = Some(ack.return_codes),
                v5::Event::Incoming(V5Packet::PubAck(ack)) => puback = Some(ack.reason),
                _ => {}
            }
        }
    })
    .await
    .expect("no SUBACK and PUBACK over MQTT 5");
    assert_eq!(suback, Some(vec![V5Sub::NotAuthorized]));
    assert_eq!(puback, Some(PubAckReason::NotAuthorized));
    running.stop().await;
}

/// The next line of `lines` that `wanted` accepts.
async fn line_with(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>, wanted: impl Fn(&str) -> bool) -> String {
    let found = tokio::time::timeout(TIMEOUT, async {
        while let Some(line) = lines.recv().await {
            if wanted(&line) {
                return line;
            }
        }
        panic!("mosquitto_sub ended before the line the test waits for");
    });
    found.await.expect("mosquitto_sub did not print the line the test waits for")
}

/// Whether Mosquitto's clients are here; CI installs them and sets
/// `MEKONG_REQUIRE_MOSQUITTO=1`, so that there a missing client fails the test.
fn mosquitto_clients() -> bool {
    let here = Command::new("mosquitto_pub").arg("--help").output().is_ok();
    if !here {
        assert!(std::env::var_os("MEKONG_REQUIRE_MOSQUITTO").is_none(), "mosquitto_pub is not installed");
        eprintln!("SKIPPED: mosquitto-clients are not installed (apt-get install mosquitto-clients)");
    }
    here
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquittos_own_clients_log_in_and_are_refused_with_a_bad_password() {
    if !mosquitto_clients() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let running = start_with_identities(dir.path()).await;
    let port = running.mqtt().port().to_string();
    let t = now_secs();

    // The app listens with mosquitto_sub for one message; its lines come through a channel
    // (a thread reads them), so that the test can wait for each with a timeout.
    // stdbuf: its debug lines would otherwise wait in stdio's buffer until it exits.
    let mut sub = Command::new("stdbuf")
        .args(["-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", &port, "-i", APP, "-u", APP, "-P", &password(APP)])
        .args(["-t", "mekong/v1/+/up", "-C", "1", "-W", "20", "-F", "%t", "-d"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (line_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = sub.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = line_tx.send(line);
        }
    });
    // With -d it reports its SUBACK: the publishes below come after the subscription.
    line_with(&mut lines, |l| l.contains("received SUBACK")).await;
    let publish = |who: &str, pw: String| {
        let (topic, port) = (format!("mekong/v1/{who}/up"), port.clone());
        let payload = dir.path().join(format!("{who}.cbor"));
        std::fs::write(&payload, reading(t, 140.0)).unwrap();
        let who = who.to_owned();
        tokio::task::spawn_blocking(move || {
            Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port, "-i", &who, "-u", &who, "-P", &pw, "-q", "1", "-t", &topic])
                .arg("-f")
                .arg(&payload)
                .output()
                .unwrap()
        })
    };
    let bad = publish(NODE, password(OTHER)).await.unwrap();
    assert!(!bad.status.success());
    let said = String::from_utf8_lossy(&bad.stderr).to_lowercase();
    assert!(said.contains("not authori"), "mosquitto_pub said: {said}");
    let good = publish(NODE, password(NODE)).await.unwrap();
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
    let relayed = line_with(&mut lines, |l| l.starts_with("mekong/v1/")).await;
    assert_eq!(relayed, format!("mekong/v1/{NODE}/up"));
    let _ = tokio::task::spawn_blocking(move || sub.wait()).await;
    running.wait_handled(1).await;
    assert_eq!(points(&running, NODE).await, 1);
    running.stop().await;

    // No password of this file's, and no digest, in any log line of this test process.
    let log = logs();
    for who in [NODE, OTHER, BEHIND_GATEWAY, GATEWAY, APP] {
        assert!(!log.contains(&password(who)) && !log.contains(&digest_hex(who)), "a secret of {who} was logged");
    }
}
