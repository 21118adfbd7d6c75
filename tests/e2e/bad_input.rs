//! Everything a sensor can get wrong is refused with a reason, counted for that device and
//! logged, while the broker and every other sensor carry on.

use std::io::Write;
use std::net::TcpStream;

use crate::platform::{config, start, Running};
use mekong::Config;
use mekong_tests::{now_secs, pack, Sensor};

/// What a refusal must look like.
struct Refusal<'a> {
    kind: &'a str,
    reason: &'a str,
    device: Option<&'a str>,
}

/// Publishes `payload` on `topic` from one sensor between two good packs from another, then
/// checks the refusal in the log and the counters, that the good sensor's packs are stored,
/// and that the bad sensor's connection still works.
async fn check(topic: &str, payload: Vec<u8>, expected: Refusal<'_>) {
    check_with(|_| {}, topic, payload, expected).await;
}

async fn check_with(tune: impl FnOnce(&mut Config), topic: &str, payload: Vec<u8>, expected: Refusal<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    tune(&mut config);
    let running = start(&config).await;
    let t = now_secs();
    let mut good = Sensor::connect(running.mqtt(), "good-air").await;
    let mut bad = Sensor::connect(running.mqtt(), "bad-sensor").await;

    good.publish("mekong/v1/good-air/up", pack(t, &[("pm2_5", "ug/m3", 21.5, 0.0)])).await;
    bad.publish(topic, payload.clone()).await;
    good.publish("mekong/v1/good-air/up", pack(t, &[("pm2_5", "ug/m3", 22.5, 10.0)])).await;
    let stats = running.wait_handled(3).await;
    assert_eq!(stats["rejected"], 1, "{stats}");
    assert_eq!(stats["rejected_by_kind"][expected.kind], 1, "{stats}");

    let log = running.json("/v1/rejections").await;
    let entry = &log["rejections"][0];
    assert_eq!(entry["kind"], expected.kind, "{entry}");
    let reason = entry["reason"].as_str().unwrap();
    assert!(reason.contains(expected.reason), "reason {reason:?} lacks {:?}", expected.reason);
    assert_eq!(entry["device"].as_str(), expected.device, "{entry}");
    assert_eq!(entry["topic"], topic);
    assert_eq!(entry["payload_len"], payload.len());
    let head: String = payload.iter().take(32).map(|b| format!("{b:02x}")).collect();
    assert_eq!(entry["head_hex"], head);
    if let Some(device) = expected.device {
        let per_device = running.json(&format!("/v1/rejections?device={device}")).await;
        assert_eq!(per_device["total"], 1);
    }

    let body = running.json("/v1/devices/good-air/series/pm2_5").await;
    let values: Vec<f64> = body["points"].as_array().unwrap().iter().map(|p| p["v"].as_f64().unwrap()).collect();
    assert_eq!(values, [21.5, 22.5], "the other sensor's readings");

    // The sender is not cut off: its next good pack is stored.
    bad.publish("mekong/v1/bad-sensor/up", pack(t, &[("noise", "dB", 55.0, 0.0)])).await;
    running.wait_handled(4).await;
    assert_eq!(running.json("/v1/devices/bad-sensor").await["points"], 1);
    assert!(running.get("/healthz").await.0 == 200);
    running.stop().await;
}

const UP: &str = "mekong/v1/bad-sensor/up";

fn on(kind: &'static str, reason: &'static str) -> Refusal<'static> {
    Refusal { kind, reason, device: Some("bad-sensor") }
}

/// One record `{0: "x", 2: <value bytes>}` in a pack: values the encoder never writes.
fn record_with_value(value: &[u8]) -> Vec<u8> {
    let mut p = vec![0x81, 0xa2, 0x00, 0x61, b'x', 0x02];
    p.extend_from_slice(value);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_cbor() {
    let full = pack(now_secs(), &[("pm10", "ug/m3", 35.25, 0.0), ("pm2_5", "ug/m3", 20.125, 0.0)]);
    check(UP, full[..full.len() / 2].to_vec(), on("truncated", "truncated cbor")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_a_senml_pack() {
    check(UP, br#"{"pm10": 35}"#.to_vec(), on("not_senml", "not a senml pack")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_are_not_maps() {
    check(UP, vec![0x82, 0x01, 0x02], on("invalid_record", "record 0: record is not a map")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types() {
    let payload = record_with_value(&[0x64, b'h', b'i', b'g', b'h']);
    check(UP, payload, on("wrong_type", "field v must be a number, found a text string")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nan_values() {
    check(UP, record_with_value(&[0xfb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0]), on("not_finite", "v is not a finite number"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_values() {
    check(UP, record_with_value(&[0xf9, 0x7c, 0x00]), on("not_finite", "v is not a finite number")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_before_2000() {
    let payload = pack(946_684_799.0, &[("pm10", "ug/m3", 35.0, 0.0)]);
    check(UP, payload, on("bad_time", "time is before 2000-01-01")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_more_than_a_day_ahead() {
    let payload = pack(now_secs() + 2.0 * 86_400.0, &[("pm10", "ug/m3", 35.0, 0.0)]);
    check(UP, payload, on("bad_time", "time is more than a day in the future")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_values_are_not_stored_yet() {
    let payload = vec![0x81, 0xa2, 0x00, 0x61, b'x', 0x03, 0x62, b'o', b'k'];
    check(UP, payload, on("unsupported_value", "only numbers (v) and booleans (vb) are stored")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_device_ids() {
    let payload = pack(now_secs(), &[("pm10", "ug/m3", 35.0, 0.0)]);
    let refusal = Refusal { kind: "bad_topic", reason: "device id must be", device: None };
    check("mekong/v1/Bad_Sensor/up", payload, refusal).await;
}

/// A topic outside the contract matches no subscription: rumqttd acknowledges the publish
/// and drops it. Nothing is stored or counted, the sender gets no downlink acknowledgement,
/// and no one else notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_outside_the_contract_are_dropped_by_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(&config(dir.path())).await;
    let mut good = Sensor::connect(running.mqtt(), "good-air").await;
    let mut bad = Sensor::connect(running.mqtt(), "bad-sensor").await;
    let payload = pack(now_secs(), &[("pm10", "ug/m3", 35.0, 0.0)]);
    bad.publish("mekong/v1/bad-sensor/extra/up", payload.clone()).await;
    good.publish("mekong/v1/good-air/up", payload.clone()).await;
    // The good pack is handled after the stray one would have been, had it reached mekong.
    let stats = running.wait_handled(1).await;
    assert_eq!((stats["accepted"].as_u64(), stats["received"].as_u64()), (Some(1), Some(1)));
    assert!(running.get("/v1/devices/bad-sensor").await.0 == 404);
    // Its connection still works.
    bad.publish("mekong/v1/bad-sensor/up", payload).await;
    running.wait_handled(2).await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_devices_when_registration_is_required() {
    let registry = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        registry.path(),
        "[[device]]\nid = \"good-air\"\nkind = \"air\"\n[[device]]\nid = \"bad-sensor\"\nkind = \"air\"\n",
    )
    .unwrap();
    let payload = pack(now_secs(), &[("pm10", "ug/m3", 35.0, 0.0)]);
    let refusal = Refusal { kind: "unknown_device", reason: "device is not registered", device: Some("stranger") };
    let tune = |c: &mut Config| {
        c.registry.path = registry.path().to_owned();
        c.ingest.require_registration = true;
    };
    check_with(tune, "mekong/v1/stranger/up", payload, refusal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_over_the_size_limit() {
    let mut payload = vec![0x9f]; // an indefinite array of many small records, ~70 KB
    while payload.len() < 70_000 {
        payload.extend_from_slice(&[0xa2, 0x00, 0x61, b'x', 0x02, 0x01]);
    }
    payload.push(0xff);
    check(UP, payload, on("too_large", "payload of 70004 bytes is over the limit of 65536")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_claim_huge_arrays() {
    // An array of 2^64 - 1 records, then one record and nothing more.
    let mut payload = vec![0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    payload.extend_from_slice(&[0xa2, 0x00, 0x61, b'x', 0x02, 0x01]);
    check(UP, payload, on("truncated", "truncated cbor")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_claim_huge_strings() {
    // A record name that claims 2^32 - 1 bytes.
    let payload = vec![0x81, 0xa1, 0x00, 0x7a, 0xff, 0xff, 0xff, 0xff, b'a'];
    check(UP, payload, on("truncated", "truncated cbor")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_items() {
    let mut payload = vec![0x81, 0xa2, 0x00, 0x61, b'x', 0x18, 0x63];
    payload.extend(std::iter::repeat_n(0x81, 50_000));
    payload.push(0x00);
    check(UP, payload, on("invalid_cbor", "recursion limit exceeded")).await;
}

/// Packets beyond the broker's own limit close that client's connection (the broker cannot
/// read past them); mekong's payload limit sits below it so that such packets are rare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_over_the_broker_limit_close_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(&config(dir.path())).await;
    let mut good = Sensor::connect(running.mqtt(), "good-air").await;
    let mut bad = Sensor::connect(running.mqtt(), "huge-sender").await;
    bad.publish_nowait("mekong/v1/huge-sender/up", vec![0x80; 300 * 1024]).await;
    assert!(!bad.closed().await.is_empty());
    good.publish("mekong/v1/good-air/up", pack(now_secs(), &[("pm2_5", "ug/m3", 20.0, 0.0)])).await;
    let stats = running.wait_handled(1).await;
    assert_eq!((stats["accepted"].as_u64(), stats["received"].as_u64()), (Some(1), Some(1)));
    running.stop().await;
}

/// Garbage instead of MQTT on both listeners, including a CONNECT that claims a huge length
/// and a malformed MQTT 5 property block, does not disturb connected sensors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_mqtt_ports_disturbs_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let running: Running = start(&config(dir.path())).await;
    let mut good = Sensor::connect(running.mqtt(), "good-air").await;
    let garbage: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        &[0x10, 0xff, 0xff, 0xff, 0xff, 0x7f],
        &[0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3c, 0x7f, 0xff, 0xff, 0xff, 0x7f, 0x00],
        &[0x30, 0x05, 0x00, 0x09, b'a', b'b', b'c'],
    ];
    for addr in [running.mqtt(), running.mqtt5()] {
        for bytes in garbage {
            let mut stream = TcpStream::connect(addr).unwrap();
            let _ = stream.write_all(bytes);
        }
    }
    for k in 0..3 {
        good.publish("mekong/v1/good-air/up", pack(now_secs(), &[("pm2_5", "ug/m3", 20.0 + k as f64, 0.0)])).await;
    }
    let stats = running.wait_handled(3).await;
    assert_eq!((stats["accepted"].as_u64(), stats["rejected"].as_u64()), (Some(3), Some(0)));
    // And new clients can still connect, on both protocols' ports.
    let mut late = Sensor::connect(running.mqtt(), "late-air").await;
    late.publish("mekong/v1/late-air/up", pack(now_secs(), &[("pm10", "ug/m3", 30.0, 0.0)])).await;
    running.wait_handled(4).await;
    running.stop().await;
}

/// A client may send what only a server sends. rumqttd's MQTT 5 parser panicked on a CONNACK
/// or UNSUBACK from a client (upstream PR bytebeamio/rumqtt#812, vendored patch 16): the
/// panic unwound the connection's task before it told the router, so the connection's slot
/// stayed taken for good and, slot by slot, the broker stopped accepting devices. Now the
/// packets are read and ignored: the connection carries on, and once it closes, its slot is
/// free again (the broker here has one slot for devices).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_packets_from_a_client_neither_end_its_connection_nor_leak_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.broker.max_connections = 1;
    let running = start(&c).await;
    let addr = running.mqtt5();
    tokio::task::spawn_blocking(move || {
        // CONNACK (session present 0, success, no properties), then UNSUBACK (packet id 1, no
        // properties, one reason: success): each used to panic the parser.
        for rogue in [&[0x20, 0x03, 0x00, 0x00, 0x00][..], &[0xb0, 0x04, 0x00, 0x01, 0x00, 0x00]] {
            let mut stream = connect_when_free(addr, "rogue");
            stream.write_all(rogue).unwrap();
            stream.write_all(&[0xc0, 0x00]).unwrap(); // PINGREQ
            let answer = read_packet(&mut stream).map(|p| p[0]);
            drop(stream);
            // Once the router has seen the connection go, its slot is free for the next.
            drop(connect_when_free(addr, "next"));
            assert_eq!(answer, Some(0xd0), "PINGRESP on the same connection");
        }
    })
    .await
    .unwrap();
    running.stop().await;
}

/// An MQTT 5 packet whose fields run past its end is malformed, and the broker closes the
/// connection, as MQTT 5 asks (4.13). rumqttd's parser reported it as "insufficient bytes",
/// so the link skipped the packet and carried on (vendored patch 18; found by
/// fuzz/broker_v5_read). Here an UNSUBSCRIBE whose property length is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_mqtt5_packet_closes_the_connection_rather_than_being_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(&config(dir.path())).await;
    let addr = running.mqtt5();
    tokio::task::spawn_blocking(move || {
        let mut stream = connect_when_free(addr, "cut-short");
        stream.write_all(&[0xa2, 0x02, 0x00, 0x01]).unwrap(); // UNSUBSCRIBE, packet id 1, then nothing
        let _ = stream.write_all(&[0xc0, 0x00]); // PINGREQ
        assert_eq!(read_packet(&mut stream), None, "the connection is closed, not answered");
    })
    .await
    .unwrap();
    running.stop().await;
}

/// A device that a full broker turns away, and that tries again with the same client id,
/// must not take the listener down with it. rumqttd kept the refused connection's will
/// handler, and the retry's `try_send` to it panicked while it held the listener's lock of
/// will handlers, poisoning it: from then on every CONNECT on that listener panicked, and no
/// device could connect there until a restart (vendored patch 17).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_refused_by_a_full_broker_can_retry_and_others_connect_later() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.broker.max_connections = 1;
    let running = start(&c).await;
    let addr = running.mqtt5();
    tokio::task::spawn_blocking(move || {
        let holder = connect_when_free(addr, "holder");
        for _ in 0..3 {
            assert!(mqtt5_connect(addr, "turned-away").is_none(), "the broker's one slot is taken");
        }
        drop(holder);
        drop(connect_when_free(addr, "turned-away"));
        drop(connect_when_free(addr, "another"));
    })
    .await
    .unwrap();
    running.stop().await;
}

/// An anonymous MQTT 5 connection as `client_id`, tried until the broker accepts it: a slot
/// comes free only once the router has seen the previous connection close.
fn connect_when_free(addr: std::net::SocketAddr, client_id: &str) -> TcpStream {
    let deadline = std::time::Instant::now() + mekong_tests::TIMEOUT;
    loop {
        match mqtt5_connect(addr, client_id) {
            Some(stream) => return stream,
            None if std::time::Instant::now() < deadline => std::thread::sleep(std::time::Duration::from_millis(50)),
            None => panic!("no free slot for {client_id}: the previous connection's slot leaked"),
        }
    }
}

/// An anonymous MQTT 5 CONNECT as `client_id`; the stream if the broker accepted it.
fn mqtt5_connect(addr: std::net::SocketAddr, client_id: &str) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(addr).ok()?;
    // A broker without a free slot never answers: give up soon, and try again.
    stream.set_read_timeout(Some(std::time::Duration::from_secs(1))).ok()?;
    let id = client_id.as_bytes();
    // Protocol name, level 5, clean start, keep-alive 60 s, no properties, client id.
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3c, 0x00, 0x00, id.len() as u8];
    body.extend_from_slice(id);
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    stream.write_all(&packet).ok()?;
    // CONNACK: flags, then the reason code (0: success).
    let connack = read_packet(&mut stream)?;
    (connack[0] == 0x20 && connack.get(3) == Some(&0)).then_some(())?;
    stream.set_read_timeout(Some(mekong_tests::TIMEOUT)).ok()?;
    Some(stream)
}

/// One MQTT packet (remaining length below 128, as every packet of these tests).
fn read_packet(stream: &mut TcpStream) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).ok()?;
    let mut packet = head.to_vec();
    packet.resize(2 + usize::from(head[1]), 0);
    stream.read_exact(&mut packet[2..]).ok()?;
    Some(packet)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_senml_json() {
    let payload = br#"[{"n":"pm10","u":"ug/m3","v":35.}]"#.to_vec();
    check(UP, payload, on("invalid_json", "invalid json at byte 32: invalid number")).await;
}
