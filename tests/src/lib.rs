//! What mekong's tests need to talk to a running platform, wherever it runs: free ports, real
//! MQTT device clients over TCP, SenML packs, downlinks decoded, and JSON over HTTP.
//!
//! This library does not depend on `mekong`, so that mekong's own process-level tests
//! (`crates/mekong/tests`, which start the binary) can use it as a dev-dependency without a
//! dependency cycle. The end-to-end suite's in-process platform is in `e2e/platform.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod export;
pub mod pki;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Outgoing, Packet, QoS, SubscribeReasonCode,
};
use serde_json::Value;
use tokio::sync::mpsc;

/// How long any awaited event may take before a test fails.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// `N` distinct ports that were free a moment ago (rumqttd cannot report the port it binds,
/// so the tests pick them). Every listener is held until all are picked: a port taken and
/// dropped one at a time can come back from the kernel at the next ask.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: [TcpListener; N] = std::array::from_fn(|_| TcpListener::bind("[::]:0").unwrap());
    listeners.map(|l| l.local_addr().unwrap().port())
}

/// The `(t_ms, v)` pairs of a points response.
pub fn points_of(body: &Value) -> Vec<(i64, f64)> {
    body["points"]
        .as_array()
        .expect("points array")
        .iter()
        .map(|p| (p["t_ms"].as_i64().expect("t_ms"), p["v"].as_f64().expect("v")))
        .collect()
}

/// GET an absolute URL and its JSON body.
pub async fn get_url(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = http.get(url).timeout(TIMEOUT).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// How many requests a client queues before `publish_nowait` waits and `try_publish`
/// refuses, unless a test asks for another depth.
pub const QUEUE: usize = 100;

/// An MQTT 3.1.1 client that publishes at QoS 1 and waits for each PUBACK.
#[derive(Debug)]
pub struct Sensor {
    client: AsyncClient,
    acks: mpsc::UnboundedReceiver<()>,
    /// Set when the broker closed the connection.
    closed: mpsc::UnboundedReceiver<String>,
    subacks: mpsc::UnboundedReceiver<Vec<SubscribeReasonCode>>,
    /// Payloads received on subscribed topics (the device's downlink).
    downlinks: mpsc::UnboundedReceiver<Vec<u8>>,
}

impl Sensor {
    /// Connects as `client_id` and waits for the CONNACK.
    pub async fn connect(addr: SocketAddr, client_id: &str) -> Sensor {
        Sensor::connect_queued(addr, client_id, QUEUE).await
    }

    /// Connects as `client_id` with a username and password; the CONNACK's refusal code if
    /// the broker refuses.
    pub async fn login(
        addr: SocketAddr,
        client_id: &str,
        username: &str,
        password: &str,
    ) -> Result<Sensor, ConnectReturnCode> {
        Sensor::try_connect(addr, client_id, Some((username, password)), QUEUE).await
    }

    /// Connects with a request queue `queue` deep.
    async fn connect_queued(addr: SocketAddr, client_id: &str, queue: usize) -> Sensor {
        match Sensor::try_connect(addr, client_id, None, queue).await {
            Ok(sensor) => sensor,
            Err(code) => panic!("CONNACK refused the connection: {code:?}"),
        }
    }

    /// Connects over TLS to `localhost` on `port`, trusting what `tls` trusts, and waits for
    /// the CONNACK.
    pub async fn connect_tls(port: u16, client_id: &str, tls: Arc<rustls::ClientConfig>) -> Sensor {
        let mut options = MqttOptions::new(client_id, "localhost", port);
        options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls)));
        match Sensor::connect_with(options, None, QUEUE).await {
            Ok(sensor) => sensor,
            Err(code) => panic!("CONNACK refused the connection: {code:?}"),
        }
    }

    /// Connects over TLS to `localhost` on `port` with `tls` (which may present a client
    /// certificate) and no password; the CONNACK's refusal code if the broker refuses.
    pub async fn try_connect_tls(
        port: u16,
        client_id: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Sensor, ConnectReturnCode> {
        let mut options = MqttOptions::new(client_id, "localhost", port);
        options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls)));
        Sensor::connect_with(options, None, QUEUE).await
    }

    /// Connects to `addr` as `client_id`, with `login` if given.
    async fn try_connect(
        addr: SocketAddr,
        client_id: &str,
        login: Option<(&str, &str)>,
        queue: usize,
    ) -> Result<Sensor, ConnectReturnCode> {
        Sensor::connect_with(MqttOptions::new(client_id, addr.ip().to_string(), addr.port()), login, queue).await
    }

    /// Connects with `options`, and `login` if given; the CONNACK's refusal code if the
    /// broker refuses. The connection is driven in its own task (rumqttc's `poll` must not be
    /// dropped half-way, so it cannot sit in a `select!` beside a timer); the client's
    /// channels close when the connection ends.
    async fn connect_with(
        mut options: MqttOptions,
        login: Option<(&str, &str)>,
        queue: usize,
    ) -> Result<Sensor, ConnectReturnCode> {
        options.set_max_packet_size(4 << 20, 4 << 20);
        // mekong sends no PUBACK for a pack it lost under overload (the device resends it as
        // a new publish): with rumqttc's default of 100 in flight, a flooding client would
        // stop at its hundredth loss.
        options.set_inflight(4096);
        if let Some((username, password)) = login {
            options.set_credentials(username, password);
        }
        let (client, mut events) = AsyncClient::new(options, queue);
        let (ack_tx, acks) = mpsc::unbounded_channel();
        let (closed_tx, closed) = mpsc::unbounded_channel();
        let (suback_tx, subacks) = mpsc::unbounded_channel();
        let (down_tx, downlinks) = mpsc::unbounded_channel();
        let (connected_tx, connected) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut connected_tx = Some(connected_tx);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(tx) = connected_tx.take() {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        let _ = ack_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        let _ = suback_tx.send(ack.return_codes);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = down_tx.send(p.payload.to_vec());
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                        let _ = closed_tx.send("disconnected by the test".to_owned());
                        return;
                    }
                    Ok(_) => {}
                    Err(ConnectionError::ConnectionRefused(code)) => {
                        if let Some(tx) = connected_tx.take() {
                            let _ = tx.send(Err(code));
                        }
                        return;
                    }
                    Err(e) => {
                        // Do not reconnect: a test that sees the connection close wants to know.
                        let _ = closed_tx.send(e.to_string());
                        return;
                    }
                }
            }
        });
        let mut sensor = Sensor { client, acks, closed, subacks, downlinks };
        match tokio::time::timeout(TIMEOUT, connected).await.expect("no CONNACK") {
            Ok(Ok(())) => Ok(sensor),
            Ok(Err(code)) => Err(code),
            Err(_) => panic!("connection closed before CONNACK: {:?}", sensor.closed.try_recv()),
        }
    }

    /// Subscribes to `filter` at QoS 0 and returns the SUBACK's code.
    pub async fn subscribe(&mut self, filter: &str) -> SubscribeReasonCode {
        self.client.subscribe(filter, QoS::AtMostOnce).await.unwrap();
        let codes =
            tokio::time::timeout(TIMEOUT, self.subacks.recv()).await.expect("no SUBACK").expect("connection gone");
        assert_eq!(codes.len(), 1, "one filter, one code");
        codes[0]
    }

    /// Connects as device `id` and subscribes to its downlink topic, waiting for the SUBACK,
    /// so that every downlink the platform sends `id` from then on reaches this client.
    pub async fn device(addr: SocketAddr, id: &str) -> Sensor {
        Sensor::device_queued(addr, id, QUEUE).await
    }

    /// `device`, with a request queue `queue` deep (for a load that outruns the socket).
    pub async fn device_queued(addr: SocketAddr, id: &str, queue: usize) -> Sensor {
        let mut sensor = Sensor::connect_queued(addr, id, queue).await;
        sensor.subscribe_downlink(id).await;
        sensor
    }

    /// [`Sensor::device`] for a device that logs in with its password.
    pub async fn device_login(addr: SocketAddr, id: &str, password: &str) -> Sensor {
        let mut sensor = Sensor::login(addr, id, id, password).await.expect("login refused");
        sensor.subscribe_downlink(id).await;
        sensor
    }

    /// `device`, over TLS to `localhost` on `port` ([`Sensor::connect_tls`]).
    pub async fn device_tls(port: u16, id: &str, tls: Arc<rustls::ClientConfig>) -> Sensor {
        let mut sensor = Sensor::connect_tls(port, id, tls).await;
        sensor.subscribe_downlink(id).await;
        sensor
    }

    async fn subscribe_downlink(&mut self, id: &str) {
        let code = self.subscribe(&format!("mekong/v1/{id}/down")).await;
        assert!(matches!(code, SubscribeReasonCode::Success(_)), "downlink subscription refused: {code:?}");
    }

    /// The next downlink message, decoded.
    pub async fn downlink(&mut self) -> Downlink {
        self.downlink_within(TIMEOUT).await.expect("no downlink")
    }

    /// The next downlink message, if one arrives within `wait` (or is here already).
    pub async fn downlink_within(&mut self, wait: Duration) -> Option<Downlink> {
        match tokio::time::timeout(wait, self.downlinks.recv()).await {
            Ok(payload) => Some(decode_downlink(&payload.expect("connection gone"))),
            Err(_) => None,
        }
    }

    /// The next downlink payload as it came, waiting as long as it takes; `None` once the
    /// connection has ended. Cancel-safe, for a `select!` with the test's own timer.
    pub async fn downlink_payload(&mut self) -> Option<Vec<u8>> {
        self.downlinks.recv().await
    }

    /// A downlink message this client has already received and not yet taken, without
    /// waiting: after a later message has arrived, `None` shows that nothing else came.
    pub fn received_downlink(&mut self) -> Option<Downlink> {
        self.downlinks.try_recv().ok().map(|payload| decode_downlink(&payload))
    }

    /// Publishes `payload` on `topic` at QoS 1 and waits for the broker's PUBACK.
    pub async fn publish(&mut self, topic: &str, payload: Vec<u8>) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
        tokio::select! {
            ack = self.acks.recv() => ack.expect("connection gone before PUBACK"),
            closed = self.closed.recv() => panic!("connection closed before PUBACK: {closed:?}"),
            () = tokio::time::sleep(TIMEOUT) => panic!("no PUBACK"),
        }
    }

    /// Publishes without waiting for the acknowledgement.
    pub async fn publish_nowait(&mut self, topic: &str, payload: Vec<u8>) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    }

    /// Queues a publish at QoS 1 without waiting; `false` if the request queue is full.
    pub fn try_publish(&self, topic: &str, payload: Vec<u8>) -> bool {
        self.client.try_publish(topic, QoS::AtLeastOnce, false, payload).is_ok()
    }

    /// The PUBACKs received since the last call (or since the connection), without waiting.
    pub fn take_acks(&mut self) -> u64 {
        let mut n = 0;
        while self.acks.try_recv().is_ok() {
            n += 1;
        }
        n
    }

    /// Waits for `n` PUBACKs.
    pub async fn wait_acks(&mut self, n: usize) {
        for _ in 0..n {
            tokio::time::timeout(TIMEOUT, self.acks.recv()).await.expect("no PUBACK").expect("connection gone");
        }
    }

    /// Waits until the broker closes the connection; returns the client's error.
    pub async fn closed(&mut self) -> String {
        tokio::time::timeout(TIMEOUT, self.closed.recv()).await.expect("connection stayed open").unwrap_or_default()
    }

    /// Sends DISCONNECT (if the connection is still up) and waits until the connection's
    /// task has ended.
    pub async fn disconnect(mut self) {
        let _ = self.client.disconnect().await;
        let ended = async { while self.downlinks.recv().await.is_some() {} };
        tokio::time::timeout(TIMEOUT, ended).await.expect("the connection outlived its DISCONNECT");
    }
}

/// A downlink message, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Downlink {
    /// Stored durably.
    Ack {
        /// Newest reading time of the pack, ms.
        up_to_ms: i64,
        /// Readings of the pack stored.
        readings: u32,
        /// Platform time, ms.
        server_ms: i64,
        /// Sequence number of a signed pack.
        seq: Option<u64>,
    },
    /// Refused.
    Refused {
        /// Reason kind.
        reason: String,
        /// Platform time, ms.
        server_ms: i64,
        /// Sequence number of the refused envelope, when it could be read.
        seq: Option<u64>,
    },
}

/// A downlink payload, decoded and owned (not a list of acknowledgements, which goes only
/// to a node whose packs ask for lists).
fn decode_downlink(payload: &[u8]) -> Downlink {
    match mekong_schema::downlink::decode(payload).unwrap() {
        mekong_schema::downlink::Downlink::Ack { up_to_ms, readings, server_ms, seq } => {
            Downlink::Ack { up_to_ms, readings, server_ms, seq }
        }
        // Only to a node whose packs ask for lists ([`pack_reading_lists`]); its test reads
        // them with `downlink_payload`.
        mekong_schema::downlink::Downlink::Acks { .. } => panic!("a list of acknowledgements: read it as a payload"),
        mekong_schema::downlink::Downlink::Refused { reason, server_ms, seq } => {
            Downlink::Refused { reason: reason.to_owned(), server_ms, seq }
        }
    }
}

/// The PUBACKs `sensors` receive in all: polled until there are `want` (or `within` has
/// passed), and once more 50 ms later, so that one too many shows.
pub async fn total_acks(sensors: &mut [&mut Sensor], want: u64, within: Duration) -> u64 {
    let deadline = std::time::Instant::now() + within;
    let mut total = 0;
    loop {
        total += sensors.iter_mut().map(|s| s.take_acks()).sum::<u64>();
        tokio::time::sleep(Duration::from_millis(50)).await;
        if total >= want || std::time::Instant::now() >= deadline {
            return total + sensors.iter_mut().map(|s| s.take_acks()).sum::<u64>();
        }
    }
}

/// Encodes readings `(name, unit, value, time)` as one SenML-CBOR pack with base time `bt`.
pub fn pack(bt: f64, readings: &[(&str, &str, f64, f64)]) -> Vec<u8> {
    encode(bt, readings, None)
}

/// [`pack`], saying that its node reads lists of acknowledgements (downlink version 2).
pub fn pack_reading_lists(bt: f64, readings: &[(&str, &str, f64, f64)]) -> Vec<u8> {
    encode(bt, readings, Some(mekong_schema::downlink::VERSION_LIST))
}

/// [`pack`], saying that its node takes the PUBACK as its acknowledgement (downlink
/// version 3): it gets no acknowledgement downlink.
pub fn pack_acked_by_puback(bt: f64, readings: &[(&str, &str, f64, f64)]) -> Vec<u8> {
    encode(bt, readings, Some(mekong_schema::downlink::VERSION_PUBACK))
}

/// [`pack`], saying downlink version `downlink` if given.
fn encode(bt: f64, readings: &[(&str, &str, f64, f64)], downlink: Option<u8>) -> Vec<u8> {
    let readings: Vec<_> = readings
        .iter()
        .map(|&(name, unit, value, time)| mekong_schema::Reading { name, unit: Some(unit), value, time })
        .collect();
    let mut buf = vec![0u8; 64 + 64 * readings.len()];
    let base = mekong_schema::Base { time: Some(bt), ..Default::default() };
    let n = match downlink {
        None => mekong_schema::encode_pack(&mut buf, &base, &readings),
        Some(version) => mekong_schema::senml::encode_pack_with_downlink(&mut buf, &base, &readings, version),
    };
    buf.truncate(n.unwrap());
    buf
}

/// Seconds since the Unix epoch, whole milliseconds.
pub fn now_secs() -> f64 {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    ms as f64 / 1000.0
}

/// A small filesystem of its own (a tmpfs), mounted on a fresh temporary directory and
/// unmounted when dropped: a disk that a test can fill up and free again.
#[derive(Debug)]
pub struct SmallFs {
    dir: tempfile::TempDir,
}

/// Set to make the tests that need root ([`SmallFs`], [`TestNet`]) fail where they cannot
/// run, instead of skipping (CI sets it).
pub const REQUIRE_ROOT: &str = "MEKONG_REQUIRE_ROOT";

/// Whether a command that needs root ran and succeeded; if not, why (its error output).
fn succeeded(output: std::io::Result<std::process::Output>) -> Result<(), String> {
    match output {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// Skips (or, with [`REQUIRE_ROOT`] set, fails) a test that needs root for `what`.
fn skip_without_root(what: &str, why: &str) {
    assert!(std::env::var_os(REQUIRE_ROOT).is_none(), "cannot {what}: {why}");
    eprintln!("SKIPPED: cannot {what} ({why}); run as root, as CI does");
}

impl SmallFs {
    /// Mounts a tmpfs of `bytes`. Mounting needs root (or CAP_SYS_ADMIN); without it this
    /// says so on stderr and returns `None`, unless [`REQUIRE_ROOT`] is set.
    pub fn mount(bytes: u64) -> Option<SmallFs> {
        let dir = tempfile::tempdir().unwrap();
        let size = format!("size={bytes}");
        let mount = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &size, "mekong-test"])
            .arg(dir.path())
            .output();
        match succeeded(mount) {
            Ok(()) => Some(SmallFs { dir }),
            Err(why) => {
                skip_without_root("mount a tmpfs", &why);
                None
            }
        }
    }

    /// Its root.
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn filler(&self) -> std::path::PathBuf {
        self.dir.path().join("filler")
    }

    /// Fills the filesystem with a file until not one more byte fits; returns its size.
    pub fn fill(&self) -> u64 {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(self.filler()).unwrap();
        let mut written = 0u64;
        for block in [1 << 20, 4096, 1] {
            let zeros = vec![0u8; block];
            loop {
                match file.write(&zeros) {
                    Ok(0) => break,
                    Ok(n) => written += n as u64,
                    Err(e) if e.raw_os_error() == Some(28) => break,
                    Err(e) => panic!("filling the disk: {e}"),
                }
            }
        }
        written
    }

    /// Writes a file that leaves about `keep` bytes free (as `df` counts them); returns its
    /// size. [`SmallFs::free`] removes it.
    pub fn fill_leaving(&self, keep: u64) -> u64 {
        use std::io::Write;
        let df =
            std::process::Command::new("df").args(["--output=avail", "-B1"]).arg(self.dir.path()).output().unwrap();
        let avail: u64 = String::from_utf8_lossy(&df.stdout).lines().nth(1).unwrap().trim().parse().unwrap();
        let size = avail.saturating_sub(keep);
        let mut file = std::fs::File::create(self.filler()).unwrap();
        let block = vec![0u8; 1 << 20];
        let mut written = 0;
        while written < size {
            let n = (size - written).min(block.len() as u64) as usize;
            file.write_all(&block[..n]).unwrap();
            written += n as u64;
        }
        file.sync_all().unwrap();
        written
    }

    /// Removes what [`SmallFs::fill`] wrote.
    pub fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // Lazily: a store still open on it (a failed test) must not keep it mounted.
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// A network namespace of the test's own, joined to this one by a veth pair: a second host
/// on this machine, with an address that is not loopback, to connect from. Removed when
/// dropped.
#[derive(Debug)]
pub struct TestNet {
    name: String,
    link: String,
    /// This side's address, which the namespace reaches over the pair.
    pub host: std::net::IpAddr,
}

impl TestNet {
    /// Creates the namespace and the pair (10.231.N.1 here, 10.231.N.2 there). Needs root
    /// (`ip netns`); without it this says so and returns `None`, unless [`REQUIRE_ROOT`] is
    /// set.
    pub fn create() -> Option<TestNet> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}-{n}", std::process::id() % 100_000);
        let net = TestNet {
            name: format!("mekong-{tag}"),
            link: format!("mk{tag}"),
            host: std::net::IpAddr::from([10, 231, (n % 250) as u8, 1]),
        };
        let peer = format!("{}p", net.link);
        let (here, there) = (format!("{}/30", net.host), format!("10.231.{}.2/30", n % 250));
        let steps: [&[&str]; 8] = [
            &["netns", "add", &net.name],
            &["link", "add", &net.link, "type", "veth", "peer", "name", &peer],
            &["link", "set", &peer, "netns", &net.name],
            &["addr", "add", &here, "dev", &net.link],
            &["link", "set", &net.link, "up"],
            &["-n", &net.name, "addr", "add", &there, "dev", &peer],
            &["-n", &net.name, "link", "set", &peer, "up"],
            &["-n", &net.name, "link", "set", "lo", "up"],
        ];
        for step in steps {
            if let Err(why) = succeeded(std::process::Command::new("ip").args(step).output()) {
                skip_without_root("make a network namespace", &format!("ip {}: {why}", step.join(" ")));
                return None;
            }
        }
        Some(net)
    }

    /// Whether a TCP connection from inside the namespace to `addr` is accepted (within 5 s).
    pub fn connects(&self, addr: SocketAddr) -> bool {
        let script = format!("exec 3<>/dev/tcp/{}/{}", addr.ip(), addr.port());
        let status = std::process::Command::new("ip")
            .args(["netns", "exec", &self.name, "timeout", "5", "bash", "-c", &script])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        status.success()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Deleting one end of the pair deletes both.
        let _ = std::process::Command::new("ip").args(["link", "del", &self.link]).status();
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    /// Its `event:` name.
    pub name: String,
    /// Its `data:`, as JSON.
    pub data: Value,
    /// Its `id:`, if it had one.
    pub id: Option<String>,
}

/// A client of `GET /v1/stream`: reads the response body as it comes and cuts it into events.
#[derive(Debug)]
pub struct EventStream {
    response: reqwest::Response,
    buf: Vec<u8>,
    /// The id of the last event read that had one, for `Last-Event-ID`.
    pub last_id: Option<String>,
}

impl EventStream {
    /// Opens `url`, resuming after `last_id` if given, and checks that the answer is a stream.
    pub async fn open(http: &reqwest::Client, url: &str, last_id: Option<&str>) -> EventStream {
        let mut request = http.get(url);
        if let Some(id) = last_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = tokio::time::timeout(TIMEOUT, request.send()).await.expect("no answer").unwrap();
        assert_eq!(response.status(), 200, "GET {url}");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        EventStream { response, buf: Vec::new(), last_id: None }
    }

    /// The next event with data (comments and the `retry:` field are skipped).
    pub async fn next(&mut self) -> StreamEvent {
        tokio::time::timeout(TIMEOUT, self.read()).await.expect("no event").expect("the stream ended")
    }

    /// The next event, or `None` when the server ends the stream.
    pub async fn read(&mut self) -> Option<StreamEvent> {
        loop {
            // Bytes, not text, until an event is whole: a chunk may end inside a character.
            while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let bytes: Vec<u8> = self.buf.drain(..end + 2).collect();
                let block = String::from_utf8(bytes).expect("utf-8 stream");
                let (mut name, mut data, mut id) = (String::from("message"), String::new(), None);
                for line in block.lines() {
                    match line.split_once(": ") {
                        Some(("event", v)) => name = v.to_owned(),
                        Some(("data", v)) => data.push_str(v),
                        Some(("id", v)) => id = Some(v.to_owned()),
                        _ => {}
                    }
                }
                if data.is_empty() {
                    continue;
                }
                if id.is_some() {
                    self.last_id.clone_from(&id);
                }
                let data = serde_json::from_str(&data).unwrap_or_else(|e| panic!("event data {data:?}: {e}"));
                return Some(StreamEvent { name, data, id });
            }
            let chunk = self.response.chunk().await.ok()??;
            self.buf.extend_from_slice(&chunk);
        }
    }
}
