//! The load generator of `mekong-bench ingest`: one raw MQTT 3.1.1 connection per simulated
//! device (rumqttc's packet codec without its event loop, so the generator stays light), over
//! TCP or TLS, QoS 1 publishes with a window of unacknowledged ones, and the device's
//! downlink, from which it times each acknowledgement. Also a counting subscriber, for an
//! external broker, and the device's connection set-up alone, for `mekong-bench connect`.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bytes::BytesMut;
use mekong_ingest::access::PasswordDigest;
use mekong_schema::downlink::{self, Downlink};
use mekong_schema::senml::encode_pack_with_downlink;
use mekong_schema::{encode_pack, Base, Reading};
use rumqttc::{Connect, Packet, PubAck, Publish, QoS, Subscribe};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

const MAX_PACKET: usize = 1 << 20;

/// What the generator does.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Broker address.
    pub addr: SocketAddr,
    /// Simulated devices, one connection each.
    pub devices: usize,
    /// Readings per pack.
    pub readings_per_pack: usize,
    /// Unacknowledged publishes (PUBACK) per connection.
    pub window: usize,
    /// Packs per second per device; `None` for as fast as the window allows.
    pub rate: Option<f64>,
    /// Subscribe to the downlink and time acknowledgements.
    pub downlinks: bool,
    /// Device id prefix (scenarios use fresh ids).
    pub prefix: String,
    /// Connect over TLS with this configuration (to `localhost`), else plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Time each pack by the wall clock (its first reading at the moment it is made), so
    /// that a follower can tell how long a reading took to reach it; else times start a day
    /// back.
    pub wall_clock: bool,
    /// With a rate, spread the devices' packs evenly over one period rather than sending them
    /// all at once: `(index of this generator's first device, devices in all)`, so that
    /// several generators together keep one even spread (the city load).
    pub spread: Option<(usize, usize)>,
}

/// Which acknowledgements the devices ask for with their packs (the wire contract's
/// downlink versions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Acks {
    /// One downlink per pack (version 1: packs without `"mekong_dl"`), as before lists.
    #[default]
    PerPack,
    /// Lists: the packs say `"mekong_dl": 2`, as the firmware's do, and a device's packs of
    /// one flush share a downlink.
    Lists,
    /// The PUBACK: the packs say `"mekong_dl": 3`, the devices subscribe to no downlink, and
    /// a pack is acknowledged by its PUBACK, which mekong's broker holds until the pack is
    /// durable. Resent packs get a new packet id.
    Puback,
}

impl Acks {
    /// Its name on the command line and in the JSON lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Acks::PerPack => "per-pack",
            Acks::Lists => "lists",
            Acks::Puback => "puback",
        }
    }
}

/// How the devices resend a pack whose acknowledgement is overdue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Resend {
    /// After [`RESEND_AFTER`], backed off and with jitter, as the firmware does.
    #[default]
    Backoff,
    /// After [`RESEND_AFTER`] every time, all devices alike (the generator before the
    /// back-off), to compare.
    Fixed,
}

impl Resend {
    /// Its name on the command line and in the JSON lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Resend::Backoff => "backoff",
            Resend::Fixed => "fixed",
        }
    }
}

/// What the simulated devices do that the wire contract leaves to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Model {
    /// The acknowledgements they ask for.
    pub acks: Acks,
    /// How they resend.
    pub resend: Resend,
}

/// A device's connection: TCP, or TLS over TCP.
#[derive(Debug)]
pub enum Conn {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// How long each step of a device's connection took: TCP connect, TLS handshake (zero
/// without TLS), CONNECT to CONNACK (and SUBACK).
pub type Steps = [Duration; 3];

/// Opens a device's connection and sends CONNECT as `id` (keep-alive 600 s), and SUBSCRIBE
/// to its downlink if `downlink`; returns once the broker has answered both.
pub async fn connect_device(
    addr: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
    id: &str,
    downlink: bool,
) -> anyhow::Result<Conn> {
    connect_device_timed(addr, tls, id, downlink, false).await.map(|(conn, _)| conn)
}

/// The MQTT password of bench device `id`, as [`logins_registry`] registers it: 64 hex
/// digits, as `mekong device provision` makes them, but derived from the id so that the
/// load generator needs no list.
pub fn bench_password(id: &str) -> String {
    PasswordDigest::of(format!("mekong-bench {id}").as_bytes()).0.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a registry at `path` in which every one of `ids` is a device that logs in with
/// its [`bench_password`].
pub fn logins_registry(path: &std::path::Path, ids: &[String]) -> anyhow::Result<()> {
    use std::fmt::Write;
    let mut text = String::new();
    for id in ids {
        let digest: String =
            PasswordDigest::of(bench_password(id).as_bytes()).0.iter().map(|b| format!("{b:02x}")).collect();
        writeln!(text, "[[device]]\nid = \"{id}\"\nkind = \"water\"\npassword_sha256 = \"{digest}\"\n")?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// [`connect_device`], with the time each step took. The TCP connection has no Nagle, as a
/// device that waits for acknowledgements would set; TLS is verified for `localhost`.
pub async fn connect_device_timed(
    addr: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
    id: &str,
    downlink: bool,
    login: bool,
) -> anyhow::Result<(Conn, Steps)> {
    let started = Instant::now();
    // Where the address cannot be bound (only Linux routes all of 127.0.0.0/8 to loopback by
    // default), the system picks, as without one.
    let bound = source_address(addr, id).and_then(|source| {
        let socket = TcpSocket::new_v4().ok()?;
        socket.bind(source).ok().map(|()| socket)
    });
    let tcp = match bound {
        Some(socket) => socket.connect(addr).await,
        None => TcpStream::connect(addr).await,
    };
    let tcp = tcp.with_context(|| format!("connect to {addr}"))?;
    tcp.set_nodelay(true)?;
    let tcp_done = Instant::now();
    let mut stream = match tls {
        None => Conn::Tcp(tcp),
        Some(config) => {
            let name = ServerName::try_from("localhost")?;
            let stream = tokio_rustls::TlsConnector::from(Arc::clone(config)).connect(name, tcp).await;
            Conn::Tls(Box::new(stream.with_context(|| format!("tls handshake with {addr}"))?))
        }
    };
    let tls_done = Instant::now();
    let mut connect = Connect::new(id);
    connect.keep_alive = 600;
    if login {
        connect.set_login(id, bench_password(id));
    }
    let mut out = BytesMut::new();
    Packet::Connect(connect).write(&mut out, MAX_PACKET)?;
    if downlink {
        Packet::Subscribe(Subscribe::new(format!("mekong/v1/{id}/down"), QoS::AtMostOnce))
            .write(&mut out, MAX_PACKET)?;
    }
    stream.write_all(&out).await?;
    let mut buf = BytesMut::with_capacity(4096);
    let mut expect = if downlink { 2 } else { 1 };
    while expect > 0 {
        match read_packet(&mut stream, &mut buf).await? {
            Packet::ConnAck(_) | Packet::SubAck(_) => expect -= 1,
            other => bail!("unexpected {other:?} while connecting"),
        }
    }
    let steps = [tcp_done - started, tls_done - tcp_done, tls_done.elapsed()];
    Ok((stream, steps))
}

/// Source addresses the devices' connections to a loopback server come from (127.77.0.1 and
/// on: the last octet, so fewer than 255).
const SOURCE_ADDRESSES: u32 = 64;

/// Where a device's connection to `server` comes from: for an IPv4 loopback server, one of
/// [`SOURCE_ADDRESSES`] loopback addresses, chosen by the device's id; `None` otherwise (the
/// system picks).
///
/// Thousands of connections from one address to one server port make the kernel's choice of
/// a source port slow: it tries ports in turn, and every port already connected to that server
/// is a miss, so a connect costs time in proportion to the connections open. At 18,000 devices
/// that search was two thirds of the load generator's CPU in `connect`'s reconnections
/// (`perf record` of `mekong-bench`: `__inet_hash_connect` and `__inet_check_established`), and
/// the generator, not the server, set the rate. A city's devices come from as many addresses
/// as there are devices (or gateways); a few hundred per address is closer to that.
fn source_address(server: SocketAddr, id: &str) -> Option<SocketAddr> {
    match server {
        SocketAddr::V4(v4) if v4.ip().is_loopback() => {
            let n = 1 + downlink::resend_jitter_seed(id) % SOURCE_ADDRESSES;
            Some(SocketAddr::from(([127, 77, 0, n as u8], 0)))
        }
        _ => None,
    }
}

/// Sends DISCONNECT and closes the connection.
pub async fn disconnect(mut stream: Conn) {
    let mut out = BytesMut::new();
    if Packet::Disconnect.write(&mut out, MAX_PACKET).is_ok() {
        let _ = stream.write_all(&out).await;
    }
    let _ = stream.shutdown().await;
}

/// Counters shared by every connection.
#[derive(Debug, Default)]
pub struct Counters {
    /// PUBACKs received while measuring.
    pub pubacks: AtomicU64,
    /// Downlink acknowledgements received while measuring.
    pub acks: AtomicU64,
    /// Set while the measurement window is open.
    pub measuring: AtomicBool,
    /// Set to make every connection stop publishing.
    pub stop: AtomicBool,
    /// Acknowledgement latencies in microseconds, of packs first sent while measuring.
    pub ack_latency_us: std::sync::Mutex<Vec<u32>>,
    /// Packs resent because their acknowledgement was overdue.
    pub resends: AtomicU64,
    /// When each acknowledgement came, of any device, while `record_ack_times` is set: the
    /// gaps between them show how long the platform stopped answering (`backup`'s pause).
    pub ack_times: std::sync::Mutex<Vec<Instant>>,
    /// Set to record `ack_times`.
    pub record_ack_times: AtomicBool,
    /// Packs first sent while measuring (with downlinks): those whose acknowledgement is timed.
    pub sent_measured: AtomicU64,
    /// Downlinks that acknowledged at least one pack in flight, received while measuring.
    pub ack_downlinks: AtomicU64,
}

/// How long a device waits for an acknowledgement before it resends a pack the first time;
/// each later resend of the pack waits twice as long, up to eight times this, plus jitter
/// from the device's id: the firmware's rule ([`downlink::resend_after_ms`]). The firmware
/// waits 30 s; a bench device waits 5 s, so that a window of 10 s shows what resends cost
/// and the city load's grace can recover a pack the broker dropped.
pub const RESEND_AFTER: Duration = Duration::from_secs(5);

/// When a pack sent for the `attempts`-th time, as send number `sends` of the device with
/// jitter seed `seed`, is due again without an answer.
fn resend_wait(resend: Resend, seed: u32, attempts: u16, sends: u64) -> Duration {
    if resend == Resend::Fixed {
        return RESEND_AFTER;
    }
    let base = RESEND_AFTER.as_millis() as u64;
    Duration::from_millis(downlink::resend_after_ms(base, attempts, downlink::resend_jitter(seed, sends)))
}

/// A running load: its connections are up and publishing.
#[derive(Debug)]
pub struct Load {
    /// Shared counters.
    pub counters: Arc<Counters>,
    tasks: tokio::task::JoinSet<anyhow::Result<()>>,
}

impl Load {
    /// Connects every device (a bounded number at a time) and starts publishing, with one
    /// acknowledgement per pack.
    pub async fn start(opts: LoadOptions) -> anyhow::Result<Load> {
        Load::start_with(opts, Model::default()).await
    }

    /// [`Load::start`], the devices behaving as `model` says.
    pub async fn start_with(opts: LoadOptions, model: Model) -> anyhow::Result<Load> {
        let counters = Arc::new(Counters::default());
        let connecting = Arc::new(Semaphore::new(32));
        let mut connects = tokio::task::JoinSet::new();
        for i in 0..opts.devices {
            let id = format!("{}{i:05}", opts.prefix);
            let (opts, connecting) = (opts.clone(), Arc::clone(&connecting));
            connects.spawn(async move {
                let _permit = connecting.acquire().await?;
                connect(&opts, model, &id).await.map(|stream| (i, id, stream))
            });
        }
        let mut tasks = tokio::task::JoinSet::new();
        while let Some(connected) = connects.join_next().await {
            let (i, id, stream) = connected.context("connect task failed")??;
            let (opts, counters) = (opts.clone(), Arc::clone(&counters));
            tasks.spawn(async move { run_device(opts, model, i, id, stream, counters).await });
        }
        Ok(Load { counters, tasks })
    }

    /// Stops publishing and waits for every connection to close.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.counters.stop.store(true, Ordering::Relaxed);
        while let Some(result) = self.tasks.join_next().await {
            result.context("device task failed")??;
        }
        Ok(())
    }
}

async fn connect(opts: &LoadOptions, model: Model, id: &str) -> anyhow::Result<Conn> {
    let subscribe = opts.downlinks && model.acks != Acks::Puback;
    connect_device(opts.addr, opts.tls.as_ref(), id, subscribe).await
}

/// A SUBSCRIBE with packet id 1 (MQTT forbids 0; rumqttc's constructor leaves it 0).
fn subscribe(filter: String, qos: QoS) -> Subscribe {
    let mut s = Subscribe::new(filter, qos);
    s.pkid = 1;
    s
}

async fn read_packet(stream: &mut (impl AsyncRead + Unpin), buf: &mut BytesMut) -> anyhow::Result<Packet> {
    loop {
        match Packet::read(buf, MAX_PACKET) {
            Ok(packet) => return Ok(packet),
            Err(rumqttc::Error::InsufficientBytes(_)) => {
                if stream.read_buf(buf).await? == 0 {
                    bail!("connection closed by the broker");
                }
            }
            Err(e) => bail!("malformed packet from the broker: {e}"),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A pack sent and not yet acknowledged.
#[derive(Debug)]
struct Inflight {
    up_to_ms: i64,
    /// The packet id of its last send (for an acknowledgement by PUBACK).
    pkid: u16,
    first_sent: Instant,
    last_sent: Instant,
    /// Sends so far, and how long after `last_sent` the next one is due.
    attempts: u16,
    wait: Duration,
    measured: bool,
    payload: bytes::Bytes,
}

/// One device: publishes new packs while its window has room, and, like a real node, keeps
/// each pack until the platform acknowledges it on the downlink, resending it when the
/// acknowledgement is overdue. Without downlinks (the broker-only and external-broker
/// scenarios) the broker's PUBACK frees the window instead.
async fn run_device(
    opts: LoadOptions,
    model: Model,
    index: usize,
    id: String,
    stream: Conn,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    match stream {
        Conn::Tcp(tcp) => {
            let (reader, writer) = tcp.into_split();
            run_device_halves(opts, model, index, id, reader, writer, counters).await
        }
        // One TLS session reads and writes: its halves share it behind a lock, as any TLS
        // client's would.
        Conn::Tls(tls) => {
            let (reader, writer) = tokio::io::split(*tls);
            run_device_halves(opts, model, index, id, reader, writer, counters).await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_device_halves<R, W>(
    opts: LoadOptions,
    model: Model,
    index: usize,
    id: String,
    mut reader: R,
    mut writer: W,
    counters: Arc<Counters>,
) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let window = Arc::new(Semaphore::new(opts.window.max(1)));
    let inflight: Arc<std::sync::Mutex<VecDeque<Inflight>>> = Arc::default();
    let downlinks = opts.downlinks;
    let by_puback = model.acks == Acks::Puback;

    let read = {
        let (window, inflight, counters) = (Arc::clone(&window), Arc::clone(&inflight), Arc::clone(&counters));
        tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            loop {
                let packet = loop {
                    match Packet::read(&mut buf, MAX_PACKET) {
                        Ok(p) => break p,
                        Err(rumqttc::Error::InsufficientBytes(_)) => match reader.read_buf(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        },
                        Err(_) => return,
                    }
                };
                match packet {
                    Packet::PubAck(ack) => {
                        if counters.measuring.load(Ordering::Relaxed) {
                            counters.pubacks.fetch_add(1, Ordering::Relaxed);
                        }
                        if !downlinks {
                            window.add_permits(1);
                        } else if by_puback {
                            let acked = {
                                let mut queue = inflight.lock().unwrap_or_else(|e| e.into_inner());
                                let pos = queue.iter().position(|e| e.pkid == ack.pkid);
                                pos.and_then(|i| queue.remove(i))
                            };
                            if let Some(entry) = acked {
                                settle(entry, &window, &counters);
                            }
                        }
                    }
                    Packet::Publish(p) => {
                        // An acknowledgement, or a list of them (only to devices that ask).
                        let mut named = [0i64; downlink::MAX_BATCH];
                        let named = match downlink::decode(&p.payload) {
                            Ok(Downlink::Ack { up_to_ms, .. }) => {
                                named[0] = up_to_ms;
                                &named[..1]
                            }
                            Ok(Downlink::Acks { acks, .. }) => {
                                for (slot, ack) in named.iter_mut().zip(acks.as_slice()) {
                                    *slot = ack.up_to_ms;
                                }
                                &named[..acks.len()]
                            }
                            _ => continue,
                        };
                        let mut freed = 0;
                        for &up_to_ms in named {
                            // An acknowledgement covers exactly its own pack: an older pack
                            // that the broker skipped stays queued and is resent.
                            let acked = {
                                let mut queue = inflight.lock().unwrap_or_else(|e| e.into_inner());
                                let pos = queue.iter().position(|e| e.up_to_ms == up_to_ms);
                                pos.and_then(|i| queue.remove(i))
                            };
                            let Some(entry) = acked else { continue };
                            freed += 1;
                            settle(entry, &window, &counters);
                        }
                        if freed > 0 && counters.measuring.load(Ordering::Relaxed) {
                            counters.ack_downlinks.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {}
                }
            }
        })
    };

    let topic = format!("mekong/v1/{id}/up");
    let seed = downlink::resend_jitter_seed(&id);
    let mut sends: u64 = 0;
    let rpp = opts.readings_per_pack.max(1);
    // Times start a day back and advance one millisecond per reading: every reading is new.
    let mut next_time = now_ms() - 86_400_000;
    let mut pkid: u16 = 0;
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut pack = vec![0u8; 80 + rpp * 32];
    let mut ticker = opts.rate.map(|r| {
        let period = Duration::from_secs_f64(1.0 / r.max(0.001));
        let phase = opts.spread.map_or(Duration::ZERO, |(first, all)| {
            let all = all.max(1);
            period.mul_f64(((first + index) % all) as f64 / all as f64)
        });
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    // Returns the packet id it used.
    let mut publish = |payload: bytes::Bytes, out: &mut BytesMut| -> anyhow::Result<u16> {
        pkid = pkid % u16::MAX + 1;
        let mut p = Publish::from_bytes(topic.as_str(), QoS::AtLeastOnce, payload);
        p.pkid = pkid;
        Packet::Publish(p).write(out, MAX_PACKET)?;
        Ok(pkid)
    };
    while !counters.stop.load(Ordering::Relaxed) {
        out.clear();
        // When the first pack in flight is due to be resent.
        let mut next_resend: Option<Instant> = None;
        if downlinks {
            let now = Instant::now();
            let mut queue = inflight.lock().unwrap_or_else(|e| e.into_inner());
            for e in queue.iter_mut() {
                if now.duration_since(e.last_sent) >= e.wait {
                    sends += 1;
                    e.attempts = e.attempts.saturating_add(1);
                    e.wait = resend_wait(model.resend, seed, e.attempts, sends);
                    e.last_sent = now;
                    counters.resends.fetch_add(1, Ordering::Relaxed);
                    e.pkid = publish(e.payload.clone(), &mut out)?;
                }
                let at = e.last_sent + e.wait;
                next_resend = Some(next_resend.map_or(at, |t| t.min(at)));
            }
        }
        // A device waits for its tick, then for room in its window, a second at most each,
        // so that it still sees `stop`; and for room only until a pack in flight is due
        // again. It does not wake up meanwhile: a device polling every few milliseconds
        // while the platform's acknowledgements take a second would cost the load generator
        // more than the server (and so would lower the rate measured).
        let due = match ticker.as_mut() {
            None => true,
            Some(ticker) => tokio::time::timeout(Duration::from_secs(1), ticker.tick()).await.is_ok(),
        };
        let until = Instant::now() + Duration::from_secs(1);
        let until = next_resend.map_or(until, |t| t.min(until));
        let permit = if due { tokio::time::timeout_at(until.into(), window.acquire()).await.ok() } else { None };
        if let Some(permit) = permit {
            permit?.forget();
            if opts.wall_clock {
                next_time = next_time.max(now_ms());
            }
            let n = device_pack(&mut pack, rpp, next_time, model.acks)?;
            let payload = bytes::Bytes::copy_from_slice(&pack[..n]);
            let up_to_ms = next_time + rpp as i64 - 1;
            next_time += rpp as i64;
            // Only encoded here: written below, so its acknowledgement cannot come before its
            // entry is in the queue.
            let sent_pkid = publish(payload.clone(), &mut out)?;
            if downlinks {
                let now = Instant::now();
                let measured = counters.measuring.load(Ordering::Relaxed);
                if measured {
                    counters.sent_measured.fetch_add(1, Ordering::Relaxed);
                }
                sends += 1;
                let wait = resend_wait(model.resend, seed, 1, sends);
                let entry = Inflight {
                    up_to_ms,
                    pkid: sent_pkid,
                    first_sent: now,
                    last_sent: now,
                    attempts: 1,
                    wait,
                    measured,
                    payload,
                };
                inflight.lock().unwrap_or_else(|e| e.into_inner()).push_back(entry);
            }
        }
        if !out.is_empty() {
            writer.write_all(&out).await?;
        }
    }
    read.abort();
    let mut out = BytesMut::new();
    Packet::Disconnect.write(&mut out, MAX_PACKET)?;
    let _ = writer.write_all(&out).await;
    Ok(())
}

/// A device's pack as the load generator sends it: `readings` water levels in centimetres,
/// one millisecond apart from `time_ms`, asking for `acks`; its length in `buf`, which holds
/// `80 + readings * 32` bytes.
pub fn device_pack(buf: &mut [u8], readings: usize, time_ms: i64, acks: Acks) -> anyhow::Result<usize> {
    let readings: Vec<Reading<'_>> = (0..readings)
        .map(|j| Reading {
            name: "water_level",
            unit: Some("cm"),
            value: 150.0 + (j % 50) as f64 * 0.5,
            time: j as f64 / 1000.0,
        })
        .collect();
    let base = Base { time: Some(time_ms as f64 / 1000.0), ..Base::default() };
    Ok(match acks {
        Acks::PerPack => encode_pack(buf, &base, &readings)?,
        Acks::Lists => encode_pack_with_downlink(buf, &base, &readings, downlink::VERSION_LIST)?,
        Acks::Puback => encode_pack_with_downlink(buf, &base, &readings, downlink::VERSION_PUBACK)?,
    })
}

/// Frees the window slot of an acknowledged pack and times the acknowledgement.
fn settle(entry: Inflight, window: &Semaphore, counters: &Counters) {
    window.add_permits(1);
    if counters.record_ack_times.load(Ordering::Relaxed) {
        counters.ack_times.lock().unwrap_or_else(|e| e.into_inner()).push(Instant::now());
    }
    if entry.measured {
        counters.acks.fetch_add(1, Ordering::Relaxed);
        let us = u32::try_from(entry.first_sent.elapsed().as_micros()).unwrap_or(u32::MAX);
        counters.ack_latency_us.lock().unwrap_or_else(|e| e.into_inner()).push(us);
    }
}

/// A subscriber that counts what an (external) broker delivers on `mekong/v1/+/up`.
#[derive(Debug)]
pub struct CountingSubscriber {
    /// Publishes received while measuring.
    pub received: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingSubscriber {
    /// Connects, subscribes at QoS `qos`, and counts in the background.
    pub async fn start(addr: SocketAddr, qos: QoS, counters: Arc<Counters>) -> anyhow::Result<Self> {
        let mut stream = TcpStream::connect(addr).await.with_context(|| format!("connect to {addr}"))?;
        let mut out = BytesMut::new();
        let mut connect = Connect::new("mekong-bench-counter");
        connect.keep_alive = 600;
        Packet::Connect(connect).write(&mut out, MAX_PACKET)?;
        Packet::Subscribe(subscribe("mekong/v1/+/up".to_owned(), qos)).write(&mut out, MAX_PACKET)?;
        stream.write_all(&out).await?;
        let mut buf = BytesMut::with_capacity(1 << 20);
        for _ in 0..2 {
            match read_packet(&mut stream, &mut buf).await? {
                Packet::ConnAck(_) | Packet::SubAck(_) => {}
                other => bail!("unexpected {other:?} while subscribing"),
            }
        }
        let received = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&received);
        let task = tokio::spawn(async move {
            let mut acks = BytesMut::new();
            loop {
                let packet = match Packet::read(&mut buf, MAX_PACKET) {
                    Ok(p) => p,
                    Err(rumqttc::Error::InsufficientBytes(_)) => {
                        if !acks.is_empty() {
                            if stream.write_all(&acks).await.is_err() {
                                return;
                            }
                            acks.clear();
                        }
                        match stream.read_buf(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => continue,
                        }
                    }
                    Err(_) => return,
                };
                if let Packet::Publish(p) = packet {
                    if counters.measuring.load(Ordering::Relaxed) {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    if p.qos == QoS::AtLeastOnce {
                        let _ = Packet::PubAck(PubAck::new(p.pkid)).write(&mut acks, MAX_PACKET);
                    }
                }
            }
        });
        Ok(CountingSubscriber { received, task })
    }

    /// Stops counting.
    pub fn stop(self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_devices_come_from_many_addresses() {
        let server: SocketAddr = "127.0.0.1:1883".parse().unwrap();
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            let source = source_address(server, &format!("dev-{i:05}")).unwrap();
            let [a, b, c, d] = match source.ip() {
                std::net::IpAddr::V4(ip) => ip.octets(),
                other => panic!("{other}"),
            };
            assert_eq!((a, b, c, source.port()), (127, 77, 0, 0));
            assert!((1..=SOURCE_ADDRESSES as u8).contains(&d), "{source}");
            seen.insert(d);
        }
        assert_eq!(seen.len(), SOURCE_ADDRESSES as usize);
        assert_eq!(source_address("192.0.2.1:1883".parse().unwrap(), "dev"), None);
        assert_eq!(source_address("[::1]:1883".parse().unwrap(), "dev"), None);
    }
}
