//! MQTT behaviour that clients rely on, each shown with a real client over real TCP: the
//! README's conformance table points here.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use mekong_tests::{now_secs, pack, Sensor, TIMEOUT};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS, SubscribeReasonCode};

use crate::platform::{config, start, Running};

fn reading(v: f64) -> Vec<u8> {
    pack(now_secs(), &[("water_level", "cm", v, 0.0)])
}

/// A client driven in its own task, its incoming packets on a channel.
fn client(
    addr: SocketAddr,
    options: impl FnOnce(&mut MqttOptions),
) -> (AsyncClient, tokio::sync::mpsc::UnboundedReceiver<Packet>) {
    let mut o = MqttOptions::new("", addr.ip().to_string(), addr.port());
    options(&mut o);
    let (client, mut events) = AsyncClient::new(o, 16);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(p)) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    (client, rx)
}

/// The next incoming packet that `wanted` accepts.
async fn next<T>(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Packet>, wanted: impl Fn(Packet) -> Option<T>) -> T {
    let found = tokio::time::timeout(TIMEOUT, async {
        while let Some(p) = rx.recv().await {
            if let Some(t) = wanted(p) {
                return t;
            }
        }
        panic!("the connection ended first");
    });
    found.await.expect("no such packet")
}

fn connack(p: Packet) -> Option<rumqttc::ConnAck> {
    if let Packet::ConnAck(ack) = p {
        Some(ack)
    } else {
        None
    }
}

fn publish(p: Packet) -> Option<rumqttc::Publish> {
    if let Packet::Publish(p) = p {
        Some(p)
    } else {
        None
    }
}

/// An MQTT 3.1.1 CONNECT with `client_id` and keep-alive `keep_alive` seconds, clean session.
fn raw_connect(client_id: &str, keep_alive: u16) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02];
    body.extend_from_slice(&keep_alive.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

/// An MQTT 3.1.1 CONNECT with a will at QoS 1: `topic`, `message`.
fn raw_connect_with_will(client_id: &str, topic: &str, message: &[u8]) -> Vec<u8> {
    let field = |bytes: &[u8]| [&(bytes.len() as u16).to_be_bytes()[..], bytes].concat();
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02 | 0x04 | 0x08, 0, 30];
    body.extend(field(client_id.as_bytes()));
    body.extend(field(topic.as_bytes()));
    body.extend(field(message));
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

async fn platform(dir: &std::path::Path) -> Running {
    start(&config(dir)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_zero_is_accepted_and_a_keep_alive_is_enforced_at_one_and_a_half_times() {
    let dir = tempfile::tempdir().unwrap();
    let running = platform(dir.path()).await;
    let addr = running.mqtt();

    // Keep-alive 0 turns the mechanism off (MQTT-3.1.2-10): the device connects and works.
    let (device, mut rx) = client(addr, |o| {
        o.set_client_id("ka-zero".into());
        o.set_keep_alive(Duration::ZERO);
    });
    assert_eq!(next(&mut rx, connack).await.code, rumqttc::ConnectReturnCode::Success);
    device.subscribe("mekong/v1/ka-zero/down", QoS::AtLeastOnce).await.unwrap();
    next(&mut rx, |p| matches!(p, Packet::SubAck(_)).then_some(())).await;
    device.publish("mekong/v1/ka-zero/up", QoS::AtLeastOnce, false, reading(1.0)).await.unwrap();
    let ack = next(&mut rx, publish).await;
    assert_eq!(ack.topic, "mekong/v1/ka-zero/down");

    // A bare CONNECT with keep-alive 0 is accepted, and the connection answers a PINGREQ.
    let pong = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.write_all(&raw_connect("ka-raw", 0)).unwrap();
        let mut answer = [0u8; 4];
        stream.read_exact(&mut answer).unwrap();
        assert_eq!(answer, [0x20, 2, 0, 0], "CONNACK");
        stream.write_all(&[0xc0, 0]).unwrap();
        let mut pong = [0u8; 2];
        stream.read_exact(&mut pong).unwrap();
        pong
    })
    .await
    .unwrap();
    assert_eq!(pong, [0xd0, 0], "PINGRESP");

    // Keep-alive 2 s, then silence: closed after 3 s (1.5 times), not before.
    let started = Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.write_all(&raw_connect("ka-two", 2)).unwrap();
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack).unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0]);
        // Read until the broker closes the connection.
        let mut rest = [0u8; 16];
        matches!(stream.read(&mut rest), Ok(0) | Err(_))
    })
    .await
    .unwrap();
    let elapsed = started.elapsed();
    assert!(closed, "the connection stayed open");
    assert!(elapsed >= Duration::from_millis(2_900) && elapsed < Duration::from_secs(10), "closed after {elapsed:?}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_subscription_gets_its_failure_code_and_dollar_topics_escape_wildcards() {
    let dir = tempfile::tempdir().unwrap();
    let running = platform(dir.path()).await;
    let addr = running.mqtt();
    let mut watcher = Sensor::connect(addr, "watcher").await;
    // The broker has no `$` topics to offer: a `$` filter is refused, the connection stays.
    assert_eq!(watcher.subscribe("$SYS/#").await, SubscribeReasonCode::Failure);
    assert!(matches!(watcher.subscribe("#").await, SubscribeReasonCode::Success(_)));

    // `#` does not match a `$` topic (MQTT-4.7.2-1); a publish nobody may receive is dropped,
    // and the publisher stays connected: its next publish comes through.
    let mut publisher = Sensor::connect(addr, "publisher").await;
    publisher.publish("$private/x", b"secret".to_vec()).await;
    publisher.publish("plain/x", b"open".to_vec()).await;
    let first = tokio::time::timeout(TIMEOUT, watcher.downlink_payload()).await.unwrap().unwrap();
    assert_eq!(first, b"open");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_gets_what_came_while_it_was_away_and_a_will_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let running = platform(dir.path()).await;
    let addr = running.mqtt();

    // Clean session off: the downlink subscription outlives the connection.
    let persistent = |o: &mut MqttOptions| {
        o.set_client_id("hau-07".into());
        o.set_clean_session(false);
    };
    let (device, mut rx) = client(addr, persistent);
    next(&mut rx, connack).await;
    device.subscribe("mekong/v1/hau-07/down", QoS::AtLeastOnce).await.unwrap();
    next(&mut rx, |p| matches!(p, Packet::SubAck(_)).then_some(())).await;
    device.disconnect().await.unwrap();
    // Its task ends once the DISCONNECT is written.
    tokio::time::timeout(TIMEOUT, async { while rx.recv().await.is_some() {} }).await.expect("still connected");
    // While the device is away, its pack comes through another client (the broker is open
    // here), and the acknowledgement goes out. Sent by the device itself, the pack could be
    // acknowledged before the broker had the device's DISCONNECT.
    let mut relay = Sensor::connect(addr, "relay").await;
    relay.publish("mekong/v1/hau-07/up", reading(3.0)).await;
    running.wait_stats("the acknowledgement", |s| s["downlinks"].as_u64().unwrap() >= 1).await;
    let (_back, mut rx) = client(addr, persistent);
    assert!(next(&mut rx, connack).await.session_present);
    let ack = next(&mut rx, publish).await;
    assert_eq!(ack.topic, "mekong/v1/hau-07/down");

    // A will: published when a station vanishes without a DISCONNECT (its socket closes).
    let mut app = Sensor::connect(addr, "control-room").await;
    assert!(matches!(app.subscribe("stations/+/status").await, SubscribeReasonCode::Success(_)));
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.write_all(&raw_connect_with_will("cai-08", "stations/cai-08/status", b"offline")).unwrap();
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack).unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0]);
    })
    .await
    .unwrap();
    let will = tokio::time::timeout(TIMEOUT, app.downlink_payload()).await.expect("no will").unwrap();
    assert_eq!(will, b"offline");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos_2_pack_is_stored_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let running = platform(dir.path()).await;
    let (device, mut rx) = client(running.mqtt(), |o| {
        o.set_client_id("q2".into());
    });
    next(&mut rx, connack).await;
    device.subscribe("mekong/v1/q2/down", QoS::AtLeastOnce).await.unwrap();
    next(&mut rx, |p| matches!(p, Packet::SubAck(_)).then_some(())).await;
    device.publish("mekong/v1/q2/up", QoS::ExactlyOnce, false, reading(4.0)).await.unwrap();
    next(&mut rx, |p| matches!(p, Packet::PubComp(_)).then_some(())).await;
    let ack = next(&mut rx, publish).await;
    assert_eq!(ack.topic, "mekong/v1/q2/down");
    let stats = running.wait_stats("the pack", |s| s["durable_packs"].as_u64().unwrap() >= 1).await;
    assert_eq!((stats["received"].as_u64(), stats["durable_packs"].as_u64()), (Some(1), Some(1)), "{stats}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_protocol_versions_share_one_port() {
    let dir = tempfile::tempdir().unwrap();
    let running = platform(dir.path()).await;
    let addr = running.mqtt();

    // MQTT 3.1.1 and MQTT 5 clients on the same port, each acknowledged in its own version.
    let mut v4 = Sensor::device(addr, "one-port-4").await;
    v4.publish("mekong/v1/one-port-4/up", reading(5.0)).await;
    assert!(matches!(v4.downlink().await, mekong_tests::Downlink::Ack { .. }));

    let mut options = rumqttc::v5::MqttOptions::new("one-port-5", addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = rumqttc::v5::AsyncClient::new(options, 10);
    client.subscribe("mekong/v1/one-port-5/down", rumqttc::v5::mqttbytes::QoS::AtLeastOnce).await.unwrap();
    client
        .publish("mekong/v1/one-port-5/up", rumqttc::v5::mqttbytes::QoS::AtLeastOnce, false, reading(6.0))
        .await
        .unwrap();
    let ack = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::Publish(p)) =
                events.poll().await.unwrap()
            {
                return p;
            }
        }
    })
    .await
    .expect("no acknowledgement over MQTT 5 on the shared port");
    assert_eq!(&ack.topic[..], b"mekong/v1/one-port-5/down");

    // A client nobody here wrote, set to MQTT 5, on the same port.
    let mut packs = 2;
    if mosquitto() {
        packs += 1;
        let payload = dir.path().join("pack.cbor");
        std::fs::write(&payload, reading(7.0)).unwrap();
        let out = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &addr.port().to_string(), "-V", "mqttv5", "-q", "1"])
            .args(["-i", "one-port-mosq", "-t", "mekong/v1/one-port-mosq/up", "-f"])
            .arg(&payload)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let stats = running.wait_stats("every pack on disk", |s| s["durable_packs"].as_u64().unwrap() >= packs).await;
    assert_eq!((stats["durable_packs"].as_u64(), stats["rejected"].as_u64()), (Some(packs), Some(0)), "{stats}");
    running.stop().await;
}

/// Whether Mosquitto's clients are here; CI installs them and sets
/// `MEKONG_REQUIRE_MOSQUITTO=1`, so that there a missing client fails the test.
fn mosquitto() -> bool {
    let here = std::process::Command::new("mosquitto_pub").arg("--help").output().is_ok();
    if !here {
        assert!(std::env::var_os("MEKONG_REQUIRE_MOSQUITTO").is_none(), "mosquitto_pub is not installed");
        eprintln!("SKIPPED: mosquitto-clients are not installed (apt-get install mosquitto-clients)");
    }
    here
}
