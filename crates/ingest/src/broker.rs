//! The embedded rumqttd broker: mekong's options mapped onto rumqttd's `Config`, the broker
//! thread, and the in-process link the ingest path reads from.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mekong_schema::topic::UPLINK_FILTER;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, SegmentConfig, ServerSettings, TlsConfig};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::guard::Guard;
use crate::IngestError;

/// Log bound of every subscription filter but the uplink one: segments of rumqttd's minimum
/// size, two of them, about 40 downlink acknowledgements per device.
pub const OTHER_FILTER_SEGMENT_BYTES: usize = 1024;
/// Segments kept per filter other than the uplink one.
pub const OTHER_FILTER_SEGMENTS: usize = 2;

/// The broker's options. They are also the `[broker]` section of mekong's configuration, as
/// they are (field names are its keys; a missing key takes the default here): one definition
/// and one check ([`BrokerOptions::validate`]) of each setting, wherever it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerOptions {
    /// Where MQTT clients connect, 3.1.1 and 5 alike (each connection's CONNECT says which).
    /// `[::]` accepts IPv6 and IPv4 (on Linux, unless `net.ipv6.bindv6only` is set).
    pub listen: SocketAddr,
    /// A port of its own for MQTT 5 clients only, if the configuration asks for one. The
    /// empty string in a configuration file means none.
    #[serde(serialize_with = "ser_opt_addr", deserialize_with = "de_opt_addr")]
    pub listen_v5: Option<SocketAddr>,
    /// Where MQTT clients (3.1.1 and 5) connect over TLS, served only with
    /// [`BrokerOptions::tls`] (mekong's `[tls]` section). The empty string means nowhere.
    #[serde(serialize_with = "ser_opt_addr", deserialize_with = "de_opt_addr")]
    pub listen_tls: Option<SocketAddr>,
    /// A TLS port of its own for MQTT 5 clients only, as `listen_v5`.
    #[serde(serialize_with = "ser_opt_addr", deserialize_with = "de_opt_addr")]
    pub listen_v5_tls: Option<SocketAddr>,
    /// Most client connections at once.
    pub max_connections: usize,
    /// Largest MQTT packet a client may send; the client is disconnected beyond it.
    pub max_packet_bytes: usize,
    /// Unacknowledged QoS 1/2 publishes per connection.
    pub max_inflight: usize,
    /// How long a client has to send CONNECT after opening its connection; on a TLS listener,
    /// also how long it has to finish its TLS handshake (before that).
    pub connection_timeout_ms: u16,
    /// Size of one segment of the broker's in-memory log of uplinks.
    pub segment_bytes: usize,
    /// Segments kept in that log. The ingest path may fall behind by
    /// `segment_bytes * segment_count` bytes of uplinks before the broker skips messages
    /// (which are then counted as lost).
    pub segment_count: usize,
    /// Threads that serve the MQTT connections, shared by every listener; 0: one per core.
    /// With 1, each listener serves its connections on its own thread.
    pub network_threads: usize,
    /// How long to wait for the listeners to accept connections at start-up. Not a
    /// configuration key.
    #[serde(skip)]
    pub ready_timeout: Duration,
    /// Serve loopback only ([`loopback_only`]): the platform sets it while clients have no
    /// credentials to present. Not a configuration key.
    #[serde(skip)]
    pub loopback_only: bool,
    /// The TLS listeners' configuration; without it, they are not served. Not a
    /// configuration key: mekong builds it from its `[tls]` section.
    #[serde(skip)]
    pub tls: Option<BrokerTls>,
}

/// The rustls configuration of the broker's TLS listeners, built once by the caller and
/// shared by every TLS connection; its certificate resolver may hand out a new certificate
/// while the broker runs (rotation without a restart).
#[derive(Debug, Clone)]
pub struct BrokerTls(pub Arc<rustls::ServerConfig>);

/// The same configuration, not an equal one: rustls' has no equality of its own.
impl PartialEq for BrokerTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for BrokerTls {}

/// The addresses that serve `addr` on loopback only: an unspecified address (`[::]`,
/// `0.0.0.0`) becomes both `127.0.0.1` and `[::1]` on its port (so `localhost` reaches it
/// over either family), a loopback address stays; `None` for any other address, which has
/// no loopback form and must not be served without credentials.
pub fn loopback_only(addr: SocketAddr) -> Option<Vec<SocketAddr>> {
    let ip = addr.ip();
    if ip.is_loopback() {
        return Some(vec![addr]);
    }
    ip.is_unspecified().then(|| {
        vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port()),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port()),
        ]
    })
}

/// More threads than this for the connections is a typing error, not a machine.
const MAX_NETWORK_THREADS: usize = 1024;

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            listen: SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 1883),
            listen_v5: None,
            listen_tls: Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 8883)),
            listen_v5_tls: None,
            max_connections: 20_000,
            max_packet_bytes: 256 * 1024,
            max_inflight: 100,
            connection_timeout_ms: 5_000,
            segment_bytes: 4 * 1024 * 1024,
            segment_count: 4,
            network_threads: 1,
            ready_timeout: Duration::from_secs(10),
            loopback_only: false,
            tls: None,
        }
    }
}

impl BrokerOptions {
    /// Every listener served: the TLS ones only with a TLS configuration.
    fn listeners(&self) -> impl Iterator<Item = SocketAddr> {
        let tls = |addr: Option<SocketAddr>| addr.filter(|_| self.tls.is_some());
        std::iter::once(self.listen).chain(self.listen_v5).chain(tls(self.listen_tls)).chain(tls(self.listen_v5_tls))
    }

    /// Every listener configured, served or not.
    fn configured(&self) -> [(&'static str, Option<SocketAddr>); 4] {
        [
            ("listen", Some(self.listen)),
            ("listen_v5", self.listen_v5),
            ("listen_tls", self.listen_tls),
            ("listen_v5_tls", self.listen_v5_tls),
        ]
    }

    /// The addresses bound for `addr`: itself, or its loopback forms when serving loopback
    /// only.
    fn bound(&self, addr: SocketAddr) -> Vec<SocketAddr> {
        match self.loopback_only {
            true => loopback_only(addr).unwrap_or_default(),
            false => vec![addr],
        }
    }

    /// Every address a listener is bound to.
    pub fn bound_addresses(&self) -> Vec<SocketAddr> {
        self.listeners().flat_map(|addr| self.bound(addr)).collect()
    }

    /// rumqttd's servers for one configured listener, named `name`, `name-2`, ...
    fn servers(
        &self,
        name: &str,
        addr: SocketAddr,
        server: impl Fn(&str, SocketAddr) -> ServerSettings,
    ) -> HashMap<String, ServerSettings> {
        let name = |i: usize| if i == 0 { name.to_owned() } else { format!("{name}-{}", i + 1) };
        self.bound(addr).into_iter().enumerate().map(|(i, addr)| (name(i), server(&name(i), addr))).collect()
    }

    /// Checks what the types alone cannot; the message names the option. [`start`] checks
    /// this too; mekong's configuration calls it at load time, to fail before anything starts.
    pub fn validate(&self) -> Result<(), IngestError> {
        let invalid = |message: String| Err(IngestError::Config(message));
        if self.network_threads > MAX_NETWORK_THREADS {
            return invalid(format!(
                "network_threads must be at most {MAX_NETWORK_THREADS} (0: one per core), got {}",
                self.network_threads
            ));
        }
        if self.segment_bytes < 1024 {
            // rumqttd panics below 1 KiB.
            return invalid(format!("segment_bytes must be at least 1024, got {}", self.segment_bytes));
        }
        for (name, value) in [
            ("segment_count", self.segment_count),
            ("max_connections", self.max_connections),
            ("max_inflight", self.max_inflight),
        ] {
            if value == 0 {
                return invalid(format!("{name} must be at least 1"));
            }
        }
        let configured = self.configured();
        let configured = || configured.iter().filter_map(|&(name, addr)| Some((name, addr?)));
        if let Some((name, _)) = configured().find(|(_, addr)| addr.port() == 0) {
            // rumqttd binds its listeners itself and cannot report a port it picked, and
            // wait_listening would wait for port 0.
            return invalid(format!("{name} needs a port other than 0"));
        }
        if let Some(addr) = self.listeners().find(|&addr| self.loopback_only && loopback_only(addr).is_none()) {
            return invalid(format!(
                "{addr} is not a loopback address, and clients have no credentials to present: listen on [::] \
                 (served on loopback only) or set security.allow_anonymous = true to let anyone in there (insecure)"
            ));
        }
        for (i, (name, addr)) in configured().enumerate() {
            if let Some((other, _)) = configured().take(i).find(|&(_, a)| a == addr) {
                return invalid(format!("{name} must differ from {other}"));
            }
        }
        Ok(())
    }

    /// rumqttd's configuration; with a `guard`, every listener authenticates and authorizes
    /// its clients through it.
    fn to_rumqttd(&self, guard: Option<&Guard>) -> Result<Config, IngestError> {
        self.validate()?;
        let server = |name: &str, listen| {
            let mut connections = ConnectionSettings {
                connection_timeout_ms: self.connection_timeout_ms,
                max_payload_size: self.max_packet_bytes,
                max_inflight_count: self.max_inflight,
                auth: None,
                external_auth: None,
                dynamic_filters: false,
                authorizer: None,
                certificate_auth: None,
            };
            if let Some(guard) = guard {
                guard.install(&mut connections);
            }
            ServerSettings { name: name.to_owned(), listen, tls: None, next_connection_delay_ms: 0, connections }
        };
        // rumqttd keeps a log per subscription filter and holds it at its size bound whether
        // or not it was read. The uplink filter gets the configured bound; every other filter,
        // above all each device's downlink (one per device), the smallest rumqttd allows, so
        // that memory does not grow with the number of devices times the uplink bound. A
        // device that falls more than that behind on its downlink misses acknowledgements and
        // resends, which is harmless.
        let uplinks = SegmentConfig { max_segment_size: self.segment_bytes, max_segment_count: self.segment_count };
        let router = RouterConfig {
            // The ingest link and the platform's publisher link (alerts) are connections too
            // (`broker::start` alone opens only the first: one slot to spare there).
            max_connections: self.max_connections + 2,
            max_outgoing_packet_count: 200,
            max_segment_size: OTHER_FILTER_SEGMENT_BYTES,
            max_segment_count: OTHER_FILTER_SEGMENTS,
            custom_segment: Some(HashMap::from([(UPLINK_FILTER.to_owned(), uplinks)])),
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        };
        // The TLS listeners are the plain ones with the handshake first, which rumqttd runs in
        // the connection's task, bounded by connection_timeout_ms (vendored patch 6).
        let tls = self.tls.as_ref().map(|tls| TlsConfig::RustlsServerConfig(Arc::clone(&tls.0)));
        let tls_server = |name: &str, listen| ServerSettings { tls: tls.clone(), ..server(name, listen) };
        // `listen` and `listen_tls` serve both versions (vendored patch 14); the 5-only ports
        // only if configured.
        let mut auto = self.servers("mqtt", self.listen, server);
        let mut v5 = self.listen_v5.map(|addr| self.servers("mqtt5", addr, server)).unwrap_or_default();
        if tls.is_some() {
            auto.extend(self.listen_tls.map(|addr| self.servers("mqtts", addr, tls_server)).unwrap_or_default());
            v5.extend(self.listen_v5_tls.map(|addr| self.servers("mqtts5", addr, tls_server)).unwrap_or_default());
        }
        let network_threads = match self.network_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Ok(Config {
            id: 0,
            router,
            auto: Some(auto),
            v5: (!v5.is_empty()).then_some(v5),
            network_threads: Some(network_threads),
            ..Config::default()
        })
    }
}

fn de_opt_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|e| serde::de::Error::custom(format!("{e}: {s:?}")))
}

fn ser_opt_addr<S: Serializer>(addr: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&addr.map(|a| a.to_string()).unwrap_or_default())
}

/// Starts the broker on its own thread and returns both halves of the ingest link,
/// subscribed to the uplink filter. With a `guard`, every client must pass it (else anyone
/// that reaches a listener may do anything: the platform allows that on loopback only).
/// [`Ingest::start`](crate::Ingest::start) reads the link with the ingest thread; a
/// benchmark may read it with something simpler (the broker-only scenario of `mekong-bench`
/// counts what comes through). The broker runs until the process exits.
pub fn start(opts: &BrokerOptions, guard: Option<&Guard>) -> Result<(LinkTx, LinkRx), IngestError> {
    start_links(opts, guard, false, false).map(|(tx, rx, _)| (tx, rx))
}

/// Both halves of an in-process link.
pub(crate) type Link = (LinkTx, LinkRx);

/// [`start`], and with `publisher` a second in-process link, subscribed to nothing, for
/// the platform's own publishes (alert states, [`crate::Publisher`]). With `hold_acks` the
/// broker holds the PUBACK of every QoS 1 uplink until the link releases it
/// ([`LinkTx::release_acks`], vendored rumqttd patch 24).
pub(crate) fn start_links(
    opts: &BrokerOptions,
    guard: Option<&Guard>,
    publisher: bool,
    hold_acks: bool,
) -> Result<(LinkTx, LinkRx, Option<Link>), IngestError> {
    let config = opts.to_rumqttd(guard)?;
    // rumqttd binds inside its own threads and only logs a failure; bind once here first so
    // that a taken port is a clear error at start-up.
    for addr in opts.bound_addresses() {
        TcpListener::bind(addr).map_err(|source| IngestError::Bind { addr, source })?;
    }
    let mut broker = Broker::new(config);
    // A client that connects with the link's client id would take its place (rumqttd drops
    // the older of two connections with one id), so the id is not guessable.
    let client_id = format!("mekong-ingest-{:016x}", RandomState::new().hash_one(Instant::now()));
    let (mut tx, rx) = broker.link(&client_id).map_err(|e| IngestError::Link(e.to_string()))?;
    // Only uplinks: the link's own downlinks then never come back to it, and the offsets of
    // this one filter's log count every uplink, so gaps in them are lost uplinks.
    if hold_acks {
        // Before the subscription: no uplink reaches the link with its PUBACK already sent.
        tx.hold_acks(UPLINK_FILTER).map_err(|e| IngestError::Link(e.to_string()))?;
    }
    tx.subscribe(UPLINK_FILTER).map_err(|e| IngestError::Link(e.to_string()))?;
    let publisher = match publisher {
        true => {
            let id = format!("mekong-platform-{:016x}", RandomState::new().hash_one(Instant::now()));
            Some(broker.link(&id).map_err(|e| IngestError::Link(e.to_string()))?)
        }
        false => None,
    };
    std::thread::Builder::new().name("mekong-broker".into()).spawn(move || {
        // Never returns while the broker runs.
        if let Err(e) = broker.start() {
            tracing::error!(error = %e, "mqtt broker stopped");
        }
    })?;
    Ok((tx, rx, publisher))
}

/// Waits until every listener accepts TCP connections.
pub fn wait_listening(opts: &BrokerOptions) -> Result<(), IngestError> {
    let deadline = Instant::now() + opts.ready_timeout;
    for addr in opts.bound_addresses() {
        let target = connectable(addr);
        while TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_err() {
            if Instant::now() >= deadline {
                return Err(IngestError::NotListening(addr));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// The loopback address of the same family for an unspecified listen address.
pub fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port()),
        _ => addr,
    }
}
