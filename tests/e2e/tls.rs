//! TLS over real sockets: rumqttc on MQTT 3.1.1 and 5, mosquitto_pub/mosquitto_sub (a client
//! nobody here wrote) with `--cafile`, HTTPS with reqwest; stalled handshakes that hold up
//! no device and end at the timeout; certificates rotated by the files' poll and by a
//! reload, a broken file keeping the old certificate; and the loopback-only rule.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mekong::Config;
use mekong_tests::pki::{served_certificate, Issued, TestPki};
use mekong_tests::{free_ports, now_secs, pack, Downlink, Sensor, TestNet, TIMEOUT};
use rumqttc::v5;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::platform::{config, logs, start_https};

/// The defaults on fresh ports, with TLS on from `issued`'s files and the TLS listeners on
/// `[::]` (so loopback only).
fn tls_config(data_dir: &std::path::Path, issued: &Issued) -> Config {
    let mut c = config(data_dir);
    let [tls, tls5] = free_ports();
    c.broker.listen_tls = Some(SocketAddr::from(([0u16; 8], tls)));
    c.broker.listen_v5_tls = Some(SocketAddr::from(([0u16; 8], tls5)));
    c.tls.cert = issued.cert.clone();
    c.tls.key = issued.key.clone();
    c.tls.reload_every_secs = 0;
    c
}

/// An MQTT 5 client over TLS to `localhost` on `port`, once its CONNACK has come.
async fn connect_v5_tls(port: u16, id: &str, pki: &TestPki) -> (v5::AsyncClient, v5::EventLoop) {
    let mut options = v5::MqttOptions::new(id, "localhost", port);
    options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(pki.client_config())));
    let (client, mut events) = v5::AsyncClient::new(options, 10);
    let connack = async {
        loop {
            if let v5::Event::Incoming(v5::mqttbytes::v5::Packet::ConnAck(_)) = events.poll().await.unwrap() {
                break;
            }
        }
    };
    tokio::time::timeout(TIMEOUT, connack).await.expect("no CONNACK over MQTT 5 with TLS");
    (client, events)
}

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_over_tls_on_both_protocol_versions_and_the_api_over_https() {
    let pki = TestPki::new();
    let issued = pki.issue("server");
    let dir = tempfile::tempdir().unwrap();
    let running = start_https(&tls_config(dir.path(), &issued), &pki.ca_pem()).await;

    // MQTT 3.1.1 over TLS: a device publishes and gets its acknowledgement on its downlink.
    let mut device = Sensor::device_tls(running.mqtt_tls_port(), "tls-dev-01", pki.client_config()).await;
    let t = now_secs().floor();
    device.publish("mekong/v1/tls-dev-01/up", pack(t, &[("water_level", "cm", 120.5, 0.0)])).await;
    assert!(matches!(device.downlink().await, Downlink::Ack { readings: 1, .. }));

    // MQTT 5 over TLS.
    let (client, mut events) = connect_v5_tls(running.mqtt5_tls_port(), "tls-dev-02", &pki).await;
    let payload = pack(t, &[("water_level", "cm", 99.0, 0.0)]);
    client.publish("mekong/v1/tls-dev-02/up", v5::mqttbytes::QoS::AtLeastOnce, false, payload).await.unwrap();
    let puback = async {
        loop {
            match events.poll().await.unwrap() {
                v5::Event::Incoming(v5::mqttbytes::v5::Packet::PubAck(_)) => break,
                _ => continue,
            }
        }
    };
    tokio::time::timeout(TIMEOUT, puback).await.expect("no PUBACK over MQTT 5 with TLS");

    // The API over HTTPS (the client trusts the test's CA only), and the readings in it.
    running.wait_handled(2).await;
    let body = running.json("/v1/devices/tls-dev-02/series/water_level").await;
    assert_eq!(body["points"][0]["v"], 99.0);
    // No plain HTTP on the HTTPS port.
    let plain = reqwest::get(format!("http://127.0.0.1:{}/healthz", running.platform.http_addr.port())).await;
    assert!(plain.map(|r| r.status().as_u16() != 200).unwrap_or(true), "plain http answered on the https port");
    device.disconnect().await;
    running.stop().await;
}

/// Starts `mosquitto_sub` over TLS on `port` for `topic`, one message, payloads as hex, and
/// returns it once its subscription is acknowledged (it prints SUBACK with -d).
fn mosquitto_sub(pki: &TestPki, port: u16, version: &str, topic: &str) -> (std::process::Child, impl BufRead) {
    // Line-buffered: piped, its debug lines would wait in a full buffer until it exits.
    let mut child = Command::new("stdbuf")
        .args([
            "-oL",
            "mosquitto_sub",
            "-h",
            "localhost",
            "-p",
            &port.to_string(),
            "-V",
            version,
            "-q",
            "0",
            "-C",
            "1",
            "-W",
            "20",
        ])
        .args(["-d", "-F", "%x", "-t", topic, "--cafile"])
        .arg(pki.ca_file())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("SUBACK") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "mosquitto_sub ended before its SUBACK");
    }
    (child, out)
}

/// The payload (hex) mosquitto_sub prints after its debug lines.
fn hex_payload(out: &mut impl BufRead) -> Vec<u8> {
    let mut seen = Vec::new();
    for line in out.lines() {
        let line = line.unwrap();
        seen.push(line.clone());
        let line = line.trim();
        if !line.is_empty() && line.len() % 2 == 0 && line.bytes().all(|b| b.is_ascii_hexdigit()) {
            return (0..line.len()).step_by(2).map(|i| u8::from_str_radix(&line[i..i + 2], 16).unwrap()).collect();
        }
    }
    panic!("mosquitto_sub printed no payload: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_with_a_cafile_publish_and_subscribe_over_tls() {
    if Command::new("mosquitto_pub").arg("--help").output().is_err() {
        assert!(
            std::env::var_os("MEKONG_REQUIRE_MOSQUITTO").is_none(),
            "mosquitto_pub is missing (apt-get install mosquitto-clients)"
        );
        eprintln!("SKIPPED: mosquitto_pub is missing (apt-get install mosquitto-clients); CI installs it");
        return;
    }
    let pki = TestPki::new();
    let issued = pki.issue("server");
    let dir = tempfile::tempdir().unwrap();
    let running = start_https(&tls_config(dir.path(), &issued), &pki.ca_pem()).await;
    let t = now_secs().floor();
    for (i, (port, version)) in
        [(running.mqtt_tls_port(), "mqttv311"), (running.mqtt5_tls_port(), "mqttv5")].into_iter().enumerate()
    {
        let id = format!("mosq-0{i}");
        let (mut sub, mut out) = mosquitto_sub(&pki, port, version, &format!("mekong/v1/{id}/down"));
        let file = pki.dir().join(format!("{id}.cbor"));
        std::fs::write(&file, pack(t, &[("water_level", "cm", 140.0 + i as f64, 0.0)])).unwrap();
        let status = Command::new("mosquitto_pub")
            .args(["-h", "localhost", "-p", &port.to_string(), "-V", version, "-q", "1"])
            .args(["-t", &format!("mekong/v1/{id}/up"), "-f"])
            .arg(&file)
            .arg("--cafile")
            .arg(pki.ca_file())
            .status()
            .unwrap();
        assert!(status.success(), "mosquitto_pub over TLS ({version}) failed");
        let payload = tokio::task::spawn_blocking(move || hex_payload(&mut out)).await.unwrap();
        let ack = mekong_schema::downlink::decode(&payload).unwrap();
        assert!(matches!(ack, mekong_schema::downlink::Downlink::Ack { readings: 1, .. }), "{ack:?}");
        assert!(sub.wait().unwrap().success());
    }
    // A client that trusts another CA refuses the connection (mosquitto_pub checks it).
    let other = TestPki::new();
    let status = Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &running.mqtt_tls_port().to_string(), "-q", "1"])
        .args(["-t", "mekong/v1/mosq-09/up", "-m", "x", "--cafile"])
        .arg(other.ca_file())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "mosquitto_pub accepted a certificate its CA file does not vouch for");
    running.wait_handled(2).await;
    running.stop().await;
}

/// The first bytes of a TLS ClientHello (record header announcing 512 bytes, handshake
/// header), and nothing more: a handshake that never finishes.
const CLIENT_HELLO_START: [u8; 9] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_hold_up_no_device_and_end_at_the_timeout() {
    let pki = TestPki::new();
    let issued = pki.issue("server");
    let dir = tempfile::tempdir().unwrap();
    // The default handshake timeout, 5 s: time enough to open the stalled connections and
    // measure a device among them on a busy machine.
    let config = tls_config(dir.path(), &issued);
    let timeout = Duration::from_millis(config.broker.connection_timeout_ms.into());
    let running = start_https(&config, &pki.ca_pem()).await;
    let tls_ports = [running.mqtt_tls_port(), running.mqtt5_tls_port()];

    // 300 half-open TLS handshakes (150 with half a ClientHello, 150 with none), then 1,000
    // silent TCP connections, spread over both TLS listeners; 100 more on the HTTPS port.
    let opened = Instant::now();
    let mut stalled = Vec::with_capacity(1400);
    for i in 0..1300 {
        let mut stream = TcpStream::connect(localhost(tls_ports[i % 2])).await.unwrap();
        if i < 150 {
            stream.write_all(&CLIENT_HELLO_START).await.unwrap();
        }
        stalled.push(stream);
    }
    for _ in 0..100 {
        stalled.push(TcpStream::connect(localhost(running.platform.http_addr.port())).await.unwrap());
    }

    // A device still connects at once on either protocol version, and the API answers.
    let started = Instant::now();
    let device = Sensor::connect_tls(tls_ports[0], "tls-legit-0", pki.client_config()).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "a device took {took:?} to connect over TLS among 1,400 stalled");
    let started = Instant::now();
    connect_v5_tls(tls_ports[1], "tls-legit-1", &pki).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "an MQTT 5 device took {took:?} to connect over TLS among 1,400 stalled");
    let started = Instant::now();
    running.json("/healthz").await;
    assert!(started.elapsed() < Duration::from_secs(1), "https took {:?}", started.elapsed());
    assert!(opened.elapsed() < timeout, "too slow to measure before the timeout");

    // A handshake that never finishes is closed by the broker after connection_timeout_ms.
    for mut stream in [stalled.swap_remove(0), stalled.swap_remove(200)] {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(TIMEOUT, stream.read(&mut buf)).await.expect("a stalled handshake stayed open");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(opened.elapsed() >= timeout, "closed before the timeout: {:?}", opened.elapsed());
    }
    drop(stalled);
    device.disconnect().await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_is_served_to_new_connections_and_a_broken_one_keeps_the_old() {
    let pki = TestPki::new();
    let first = pki.issue("server");
    let dir = tempfile::tempdir().unwrap();
    let mut config = tls_config(dir.path(), &first);
    config.tls.reload_every_secs = 1;
    let running = start_https(&config, &pki.ca_pem()).await;
    let port = running.mqtt_tls_port();
    assert_eq!(served_certificate(localhost(port), pki.client_config()).await, first.der);
    let mut device = Sensor::connect_tls(port, "tls-rot-01", pki.client_config()).await;

    // The files are replaced; the poll (every second) sees it, and new connections get the
    // new certificate on every TLS listener.
    let second = pki.issue("server");
    let deadline = Instant::now() + TIMEOUT;
    while served_certificate(localhost(port), pki.client_config()).await != second.der {
        assert!(Instant::now() < deadline, "the poll never served the new certificate");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for port in [running.mqtt5_tls_port(), running.platform.http_addr.port()] {
        assert_eq!(served_certificate(localhost(port), pki.client_config()).await, second.der);
    }
    // The connection opened before goes on.
    let t = now_secs().floor();
    device.publish("mekong/v1/tls-rot-01/up", pack(t, &[("water_level", "cm", 1.0, 0.0)])).await;

    // A broken certificate file: the reload fails, names the file, and the old one stays.
    std::fs::write(&second.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    let e = format!("{:#}", running.platform.reload_tls().unwrap_err());
    assert!(e.contains(&second.cert.display().to_string()), "{e}");
    // A key that belongs to another certificate: refused as well.
    let third = pki.issue("other");
    std::fs::write(&second.cert, &second.cert_pem).unwrap();
    std::fs::write(&second.key, &third.key_pem).unwrap();
    let e = format!("{:#}", running.platform.reload_tls().unwrap_err());
    assert!(e.contains("does not belong"), "{e}");
    assert_eq!(served_certificate(localhost(port), pki.client_config()).await, second.der);
    device.publish("mekong/v1/tls-rot-01/up", pack(t + 1.0, &[("water_level", "cm", 2.0, 0.0)])).await;

    // No key material in any error or log line.
    let logs = logs();
    for key in [&first.key_pem, &second.key_pem, &third.key_pem] {
        let body = key.lines().nth(1).unwrap();
        assert!(!e.contains(body) && !logs.contains(body), "key material in an error or the logs");
    }
    device.disconnect().await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_configuration_errors_name_the_file_and_tls_listeners_stay_on_loopback() {
    let pki = TestPki::new();
    let issued = pki.issue("server");
    let dir = tempfile::tempdir().unwrap();
    let mut missing = tls_config(dir.path(), &issued);
    missing.tls.cert = dir.path().join("nowhere.crt");
    let e = format!("{:#}", mekong::Platform::start(&missing).await.unwrap_err());
    assert!(e.contains("nowhere.crt") && e.contains("No such file"), "{e}");
    let mut swapped = tls_config(dir.path(), &issued);
    swapped.tls.key = issued.cert.clone();
    let e = format!("{:#}", mekong::Platform::start(&swapped).await.unwrap_err());
    assert!(e.contains("tls.key") && e.contains("server.crt") && e.contains("no PRIVATE KEY"), "{e}");

    // TLS is not a credential: a TLS listener on another address without credentials is
    // refused like a plain one.
    let mut exposed = tls_config(dir.path(), &issued);
    exposed.broker.listen_tls = Some("192.0.2.10:8883".parse().unwrap());
    let e = format!("{:#}", mekong::Platform::start(&exposed).await.unwrap_err());
    assert!(e.contains("not a loopback address"), "{e}");

    // And from a second host, nothing TLS answers (root: a network namespace).
    let Some(net) = TestNet::create() else { return };
    let running = start_https(&tls_config(&dir.path().join("data"), &issued), &pki.ca_pem()).await;
    for port in [running.mqtt_tls_port(), running.mqtt5_tls_port(), running.platform.http_addr.port()] {
        let addr = SocketAddr::new(net.host, port);
        assert!(!net.connects(addr), "{addr} answered a second host without credentials");
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_logs_in_the_registered_device_it_names_and_nobody_else() {
    let pki = TestPki::new();
    let issued = pki.issue("server");
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("devices.toml");
    std::fs::write(
        &registry,
        "[[device]]\nid = \"hau-01\"\nkind = \"water\"\n\n[[device]]\nid = \"hau-02\"\nkind = \"water\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("clients-ca.pem"), pki.ca_pem()).unwrap();
    let mut c = tls_config(&dir.path().join("data"), &issued);
    c.registry.path = registry;
    c.tls.client_ca = dir.path().join("clients-ca.pem");
    let running = start_https(&c, &pki.ca_pem()).await;
    let port = running.platform.mqtt_tls_addr.unwrap().port();

    // hau-01's certificate lets hau-01 in, with no password, confined to its own topics.
    let mut node = Sensor::try_connect_tls(port, "hau-01", pki.device_config("hau-01")).await.expect("refused");
    assert!(matches!(node.subscribe("mekong/v1/hau-01/down").await, rumqttc::SubscribeReasonCode::Success(_)));
    assert_eq!(node.subscribe("#").await, rumqttc::SubscribeReasonCode::Failure);
    node.publish("mekong/v1/hau-01/up", pack(now_secs(), &[("water_level", "cm", 120.0, 0.0)])).await;
    assert!(matches!(node.downlink().await, Downlink::Ack { .. }));

    // Nor as another device, nor for a name that is no registered device, nor without
    // anything: CONNACK 0x05. The plain listener has no certificates: refused there too.
    let refused = |r: Result<Sensor, rumqttc::ConnectReturnCode>| r.err();
    assert_eq!(
        refused(Sensor::try_connect_tls(port, "hau-02", pki.device_config("hau-01")).await),
        Some(rumqttc::ConnectReturnCode::NotAuthorized)
    );
    assert_eq!(
        refused(Sensor::try_connect_tls(port, "stranger", pki.device_config("stranger")).await),
        Some(rumqttc::ConnectReturnCode::NotAuthorized)
    );
    assert_eq!(
        refused(Sensor::try_connect_tls(port, "hau-02", pki.client_config()).await),
        Some(rumqttc::ConnectReturnCode::NotAuthorized)
    );
    let stats = running.json("/v1/stats").await;
    assert_eq!(stats["mqtt"]["connects_refused"]["certificate_mismatch"], 2, "{stats}");
    assert_eq!(stats["mqtt"]["access_refused"]["hau-01"]["subscriptions"], 1, "{stats}");

    // A certificate from another CA: the server refuses the handshake (with TLS 1.3 the
    // client learns it at its first read), so no CONNACK ever comes.
    let other = TestPki::new();
    let answered = async {
        let Ok(mut stream) = mekong_tests::pki::tls_connect(localhost(port), other.device_config("hau-01")).await
        else {
            return false;
        };
        let connect = [0x10, 18, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 30, 0, 6, b'h', b'a', b'u', b'-', b'0', b'1'];
        if stream.write_all(&connect).await.is_err() {
            return false;
        }
        let mut answer = [0u8; 4];
        stream.read_exact(&mut answer).await.is_ok()
    };
    assert!(!tokio::time::timeout(TIMEOUT, answered).await.expect("no answer"), "a foreign CA's certificate got in");
    running.stop().await;
}
