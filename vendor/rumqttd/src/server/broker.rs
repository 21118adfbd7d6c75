use crate::link::alerts::{self};
#[cfg(feature = "console")]
use crate::link::console::ConsoleLink;
use crate::link::network::{self, Network, N};
use crate::link::remote::{self, mqtt_connect, RemoteLink};
use crate::link::{bridge, timer};
use crate::local::LinkBuilder;
use crate::protocol::auto::Auto;
use crate::protocol::v4::V4;
use crate::protocol::v5::V5;
use crate::protocol::{Packet, Protocol};
#[cfg(any(feature = "use-rustls", feature = "use-native-tls"))]
use crate::server::tls::{self, TLSAcceptor};
use crate::{meters, ConnectionSettings};
#[cfg(feature = "prometheus")]
use crate::Meter;
use flume::{RecvError, SendError, Sender};
use std::collections::HashMap;
#[cfg(feature = "prometheus")]
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, PoisonError};
use tracing::{debug, error, field, info, warn, Instrument};

#[cfg(feature = "websocket")]
use async_tungstenite::tokio::accept_hdr_async;
#[cfg(feature = "websocket")]
use async_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request, Response,
};
#[cfg(feature = "websocket")]
use async_tungstenite::tungstenite::http::HeaderValue;
#[cfg(feature = "websocket")]
use ws_stream_tungstenite::WsStream;

#[cfg(feature = "prometheus")]
use metrics::gauge;
#[cfg(feature = "prometheus")]
use metrics_exporter_prometheus::PrometheusBuilder;
use std::time::Duration;
use std::{io, thread};

#[cfg(feature = "console")]
use crate::link::console;
use crate::link::local::{self, LinkRx, LinkTx};
use crate::router::{Event, Router};
use crate::{Config, ConnectionId, ServerSettings};

use std::net::SocketAddr;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::error::Elapsed;
use tokio::{task, time};

#[derive(Debug, thiserror::Error)]
#[error("Acceptor error")]
pub enum Error {
    #[error("I/O {0}")]
    Io(#[from] io::Error),
    #[error("Timeout")]
    Timeout(#[from] Elapsed),
    #[error("Channel recv error")]
    Recv(#[from] RecvError),
    #[error("Channel send error")]
    Send(#[from] SendError<(ConnectionId, Event)>),
    #[cfg(any(feature = "use-rustls", feature = "use-native-tls"))]
    #[error("Certs error = {0}")]
    Certs(#[from] tls::Error),
    #[error("Accept error = {0}")]
    Accept(String),
    #[error("Remote error = {0}")]
    Remote(#[from] remote::Error),
    #[error("Invalid configuration")]
    Config(String),
}

pub struct Broker {
    config: Arc<Config>,
    router_tx: Sender<(ConnectionId, Event)>,
}

impl Broker {
    pub fn new(config: Config) -> Broker {
        let config = Arc::new(config);
        let router_config = config.router.clone();
        let router: Router = Router::new(config.id, router_config);

        // Setup cluster if cluster settings are configured.
        match config.cluster.clone() {
            Some(_cluster_config) => {
                // let node_id = cluster_config.node_id;
                // let listen = cluster_config.listen;
                // let seniors = cluster_config.seniors;
                // let mut cluster = RemoteCluster::new(node_id, &listen, seniors);
                // Broker::setup_remote_cluster(&mut router, node_id, &mut cluster);

                // Start router first and then cluster in the background
                let router_tx = router.spawn();
                // cluster.spawn();
                Broker { config, router_tx }
            }
            None => {
                let router_tx = router.spawn();
                Broker { config, router_tx }
            }
        }
    }

    // pub fn new_local_cluster(
    //     config: Config,
    //     node_id: NodeId,
    //     seniors: Vec<(NodeId, Sender<ReplicationData>)>,
    // ) -> (Broker, Sender<ReplicationData>) {
    //     let config = Arc::new(config);
    //     let router_config = config.router.clone();

    //     let mut router = Router::new(config.id, router_config);
    //     let (mut cluster, tx) = LocalCluster::new(node_id, seniors);
    //     Broker::setup_local_cluster(&mut router, node_id, &mut cluster);

    //     // Start router first and then cluster in the background
    //     let router_tx = router.spawn();
    //     cluster.spawn();

    //     (Broker { config, router_tx }, tx)
    // }

    // fn setup_remote_cluster(router: &mut Router, node_id: NodeId, cluster: &mut RemoteCluster) {
    //     // Retrieve pre-configured list of router <-> replica link from router
    //     // and add the link to cluster
    //     let nodes: Vec<NodeId> = (0..MAX_NODES).filter(|v| *v != node_id).collect();
    //     for node_id in nodes {
    //         let link = router.get_replica_handle(node_id);
    //         cluster.add_replica_router_handle(node_id, link);
    //     }
    // }

    // fn setup_local_cluster(router: &mut Router, node_id: NodeId, cluster: &mut LocalCluster) {
    //     // Retrieve pre-configured list of router <-> replica link from router
    //     // and add the link to cluster
    //     let nodes: Vec<NodeId> = (0..MAX_NODES).filter(|v| *v != node_id).collect();
    //     for node_id in nodes {
    //         let link = router.get_replica_handle(node_id);
    //         cluster.add_replica_router_handle(node_id, link);
    //     }
    // }

    // Link to get meters
    pub fn meters(&self) -> Result<meters::MetersLink, meters::LinkError> {
        let link = meters::MetersLink::new(self.router_tx.clone())?;
        Ok(link)
    }

    // Link to get alerts
    pub fn alerts(&self) -> Result<alerts::AlertsLink, alerts::LinkError> {
        let link = alerts::AlertsLink::new(self.router_tx.clone())?;
        Ok(link)
    }

    pub fn link(&self, client_id: &str) -> Result<(LinkTx, LinkRx), local::LinkError> {
        // Register this connection with the router. Router replies with ack which if ok will
        // start the link. Router can sometimes reject the connection (ex. max connection limit).
        let (link_tx, link_rx, _ack) =
            LinkBuilder::new(client_id, self.router_tx.clone()).build()?;
        Ok((link_tx, link_rx))
    }

    #[tracing::instrument(skip(self))]
    pub fn start(&mut self) -> Result<(), Error> {
        if self.config.v4.is_none()
            && self.config.v5.is_none()
            && self.config.auto.is_none()
            && (cfg!(not(feature = "websocket")) || self.config.ws.is_none())
        {
            return Err(Error::Config(
                "Atleast one server config must be specified, \
                consider adding either of [v4.x]/[v5.x] or [ws.x] (if enabled) in config file."
                    .to_string(),
            ));
        }

        // we don't know which servers (v4/v5/ws) user will spawn
        // so we collect handles for all of the spawned servers
        let mut server_thread_handles = Vec::new();

        if let Some(metrics_config) = self.config.metrics.clone() {
            let timer_thread = thread::Builder::new().name("timer".to_owned());
            let router_tx = self.router_tx.clone();
            timer_thread.spawn(move || {
                let mut runtime = tokio::runtime::Builder::new_current_thread();
                let runtime = runtime.enable_all().build().unwrap();

                runtime.block_on(async move {
                    timer::start(metrics_config, router_tx).await;
                });
            })?;
        }

        // Spawn bridge in a separate thread.
        if let Some(bridge_config) = self.config.bridge.clone() {
            let bridge_thread = thread::Builder::new().name(bridge_config.name.clone());
            let router_tx = self.router_tx.clone();
            bridge_thread.spawn(move || {
                let mut runtime = tokio::runtime::Builder::new_current_thread();
                let runtime = runtime.enable_all().build().unwrap();

                runtime.block_on(async move {
                    if let Err(e) = bridge::start(bridge_config, router_tx, V4).await {
                        error!(error=?e, "Bridge Link error");
                    };
                });
            })?;
        }

        // mekong: the listeners' connections run on one runtime of `network_threads` workers
        // when it is set, so that they can use more than a core; each listener's accept loop
        // keeps its own thread. The runtime lives until the end of `start`, which lasts as
        // long as the listeners.
        let workers_runtime = match self.config.network_threads {
            Some(threads) if threads > 1 => Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .thread_name("mqtt-worker")
                    .enable_all()
                    .build()?,
            ),
            _ => None,
        };
        let workers = workers_runtime.as_ref().map(|runtime| runtime.handle().clone());

        // Spawn servers in a separate thread.
        if let Some(v4_config) = &self.config.v4 {
            for (_, config) in v4_config.clone() {
                let server_thread = thread::Builder::new().name(config.name.clone());
                let mut server = Server::new(config, self.router_tx.clone(), V4);
                let workers = workers.clone();
                let handle = server_thread.spawn(move || {
                    run_listener(workers, async {
                        if let Err(e) = server.start(LinkType::Remote).await {
                            error!(error=?e, "Server error - V4");
                        }
                    });
                })?;
                server_thread_handles.push(handle)
            }
        }

        if let Some(v5_config) = &self.config.v5 {
            for (_, config) in v5_config.clone() {
                let server_thread = thread::Builder::new().name(config.name.clone());
                let mut server = Server::new(config, self.router_tx.clone(), V5);
                let workers = workers.clone();
                let handle = server_thread.spawn(move || {
                    run_listener(workers, async {
                        if let Err(e) = server.start(LinkType::Remote).await {
                            error!(error=?e, "Server error - V5");
                        }
                    });
                })?;
                server_thread_handles.push(handle)
            }
        }

        if let Some(auto_config) = &self.config.auto {
            for (_, config) in auto_config.clone() {
                let server_thread = thread::Builder::new().name(config.name.clone());
                let mut server = Server::new(config, self.router_tx.clone(), Auto::default());
                let workers = workers.clone();
                let handle = server_thread.spawn(move || {
                    run_listener(workers, async {
                        if let Err(e) = server.start(LinkType::Remote).await {
                            error!(error=?e, "Server error - MQTT 3.1.1 and 5");
                        }
                    });
                })?;
                server_thread_handles.push(handle)
            }
        }

        #[cfg(not(feature = "websocket"))]
        if self.config.ws.is_some() {
            warn!("websocket feature is disabled, [ws] config will be ignored.");
        }

        #[cfg(feature = "websocket")]
        if let Some(ws_config) = &self.config.ws {
            for (_, config) in ws_config.clone() {
                let server_thread = thread::Builder::new().name(config.name.clone());
                //TODO: Add support for V5 procotol with websockets. Registered in config or on ServerSettings
                let mut server = Server::new(config, self.router_tx.clone(), V4);
                let workers = workers.clone();
                let handle = server_thread.spawn(move || {
                    run_listener(workers, async {
                        if let Err(e) = server.start(LinkType::Websocket).await {
                            error!(error=?e, "Server error - WS");
                        }
                    });
                })?;
                server_thread_handles.push(handle)
            }
        }

        #[cfg(not(feature = "prometheus"))]
        if self.config.prometheus.is_some() {
            warn!("prometheus feature is disabled, [prometheus] config will be ignored.");
        }

        #[cfg(feature = "prometheus")]
        if let Some(prometheus_setting) = &self.config.prometheus {
            let timeout = prometheus_setting.interval;
            // If port is specified use it instead of listen.
            // NOTE: This means listen is ignored when `port` is specified.
            // `port` will be removed in future release in favour of `listen`
            let addr = {
                #[allow(deprecated)]
                match prometheus_setting.port {
                    Some(port) => SocketAddr::new("127.0.0.1".parse().unwrap(), port),
                    None => prometheus_setting.listen.unwrap_or(SocketAddr::new(
                        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
                        9042,
                    )),
                }
            };
            let metrics_thread = thread::Builder::new().name("Metrics".to_owned());
            let meter_link = self.meters().unwrap();
            metrics_thread.spawn(move || {
                let builder = PrometheusBuilder::new().with_http_listener(addr);
                builder.install().unwrap();

                let total_publishes = gauge!("metrics.router.total_publishes");
                let total_connections = gauge!("metrics.router.total_connections");
                let failed_publishes = gauge!("metrics.router.failed_publishes");
                loop {
                    if let Ok(metrics) = meter_link.recv() {
                        for m in metrics {
                            match m {
                                Meter::Router(_, ref r) => {
                                    total_connections.set(r.total_connections as f64);
                                    total_publishes.set(r.total_publishes as f64);
                                    failed_publishes.set(r.failed_publishes as f64);
                                }
                                _ => continue,
                            }
                        }
                    }

                    std::thread::sleep(Duration::from_secs(timeout));
                }
            })?;
        }

        #[cfg(not(feature = "console"))]
        if self.config.console.is_some() {
            warn!("console feature is disabled, [console] config will be ignored.");
        }

        #[cfg(feature = "console")]
        if let Some(console) = self.config.console.clone() {
            let console_link = ConsoleLink::new(console, self.router_tx.clone());

            let console_link = Arc::new(console_link);
            let console_thread = thread::Builder::new().name("Console".to_string());
            console_thread.spawn(move || {
                let mut runtime = tokio::runtime::Builder::new_current_thread();
                let runtime = runtime.enable_all().build().unwrap();
                runtime.block_on(console::start(console_link));
            })?;
        }

        // in ideal case, where server doesn't crash, join() will never resolve
        // we still try to join threads so that we don't return from function
        // unless everything crashes.
        server_thread_handles.into_iter().for_each(|handle| {
            // join() might panic in case the thread panics
            // we just ignore it
            let _ = handle.join();
        });

        Ok(())
    }
}

/// Runs a listener's accept loop on this thread: its connections on the shared workers'
/// runtime when there is one (`Config::network_threads`), or all on this thread, as upstream.
fn run_listener<F: std::future::Future<Output = ()>>(workers: Option<tokio::runtime::Handle>, listener: F) {
    match workers {
        Some(workers) => workers.block_on(listener),
        None => match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(listener),
            Err(e) => error!(error=?e, "Cannot build a listener's runtime"),
        },
    }
}

/// `rumqtt-` and a random (version 4) UUID in its simple form, as `uuid::Uuid::new_v4().simple()`
/// writes it, from the `rand` that shared subscriptions already use rather than the `uuid`
/// crate and a second `rand`.
fn assigned_client_id_v4() -> String {
    const VERSION_MASK: u128 = 0xf << 76;
    const VARIANT_MASK: u128 = 0x3 << 62;
    let random = rand::random::<u128>();
    let uuid = (random & !VERSION_MASK & !VARIANT_MASK) | (0x4 << 76) | (0x2 << 62);
    format!("rumqtt-{uuid:032x}")
}

#[derive(Copy, Clone)]
pub enum LinkType {
    #[cfg(feature = "websocket")]
    Websocket,
    Remote,
}

#[derive(PartialEq)]
enum AwaitingWill {
    Cancel,
    Fire,
}

pub struct Server<P> {
    config: ServerSettings,
    router_tx: Sender<(ConnectionId, Event)>,
    protocol: P,
    awaiting_will_handler: Arc<Mutex<HashMap<String, Sender<AwaitingWill>>>>,
}

impl<P: Protocol + Clone + Send + 'static> Server<P> {
    pub fn new(
        config: ServerSettings,
        router_tx: Sender<(ConnectionId, Event)>,
        protocol: P,
    ) -> Server<P> {
        Server {
            config,
            router_tx,
            protocol,
            awaiting_will_handler: Arc::new(Mutex::new(HashMap::default())),
        }
    }

    pub async fn start(&mut self, link_type: LinkType) -> Result<(), Error> {
        // tokio's (mio's) bind listens with a backlog of 128, like the standard library: a
        // fleet that reconnects at once overflows it, and every connection dropped there
        // waits for its SYN to be sent again, a second later.
        let socket = match self.config.listen {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(self.config.listen)?;
        let listener = socket.listen(LISTEN_BACKLOG)?;
        let delay = Duration::from_millis(self.config.next_connection_delay_ms);
        let mut count: usize = 0;

        // Built once for the listener (not per connection, which read the PEM files again at
        // every accept), so that a bad certificate is an error here, at start.
        #[cfg(any(feature = "use-rustls", feature = "use-native-tls"))]
        let acceptor = match &self.config.tls {
            Some(c) => Some(Arc::new(TLSAcceptor::new(c)?)),
            None => None,
        };
        #[cfg(not(any(feature = "use-rustls", feature = "use-native-tls")))]
        let acceptor: Option<Arc<Acceptor>> = None;

        let config = Arc::new(self.config.connections.clone());
        // The TLS handshake and the websocket upgrade must end within the time a client has
        // to send CONNECT; each is bounded by it.
        let handshake_timeout = Duration::from_millis(config.connection_timeout_ms.into());
        info!(
            config = self.config.name,
            listen_addr = self.config.listen.to_string(),
            "Listening for remote connections",
        );
        loop {
            // Await new network connection.
            let (stream, addr) = match listener.accept().await {
                Ok((s, r)) => { let _ = s.set_nodelay(true); (s, r) },
                Err(e) => {
                    error!(error=?e, "Unable to accept socket.");
                    continue;
                }
            };

            count += 1;
            let config = config.clone();
            let router_tx = self.router_tx.clone();
            let protocol = self.protocol.clone();
            let will_handlers = self.awaiting_will_handler.clone();
            let name = self.config.name.clone();
            let acceptor = acceptor.clone();
            // The handshakes run in the connection's own task, so that a client that is slow
            // or silent in its TLS handshake (or websocket upgrade) holds up no other
            // connection; the timeout ends it.
            task::spawn(async move {
                // mekong: the handshakes, the CONNECT and the link's set-up are boxed: a
                // task is as large as its largest state, and these end once the link runs,
                // so an idle connection's task holds only the running link.
                let handshake = Box::pin(handshake(acceptor, stream, link_type));
                let (network, tenant_id, peer_certificate) = match time::timeout(handshake_timeout, handshake).await {
                    Ok(Ok(o)) => o,
                    // A client that cannot finish a handshake (a wrong CA, a refused client
                    // certificate, a port scan) is the client's trouble.
                    Ok(Err(e)) => {
                        warn!(error=?e, ?addr, "Handshake error");
                        return;
                    }
                    Err(_) => {
                        warn!(?addr, timeout=?handshake_timeout, "Handshake timed out");
                        return;
                    }
                };

                info!(name=?name, ?addr, count, tenant=?tenant_id, "accept");

                let span = match link_type {
                    #[cfg(feature = "websocket")]
                    LinkType::Websocket => tracing::info_span!(
                        "websocket_link",
                        client_id = field::Empty,
                        connection_id = field::Empty
                    ),
                    LinkType::Remote => tracing::error_span!(
                        "remote_link",
                        ?tenant_id,
                        client_id = field::Empty,
                        connection_id = field::Empty,
                    ),
                };
                remote(config, tenant_id, peer_certificate, router_tx, network, protocol, will_handlers)
                    .instrument(span)
                    .await
            });

            // A sleep of zero still waits for the timer's next tick (a millisecond), which
            // would hold accepts below a thousand a second.
            if !delay.is_zero() {
                time::sleep(delay).await;
            }
        }
    }
}

/// Connections the kernel completes before the accept loop takes them, as many as the system
/// allows: it caps the number at `net.core.somaxconn` (4,096 by default since Linux 5.4). A
/// fleet of thousands that reconnects at once, after a restart of the broker, overflowed
/// 1,024, and each connection dropped there waited a second for its SYN to be sent again.
const LISTEN_BACKLOG: u32 = 65_535;

/// What makes an accepted TCP stream a TLS stream; a listener has none without a TLS
/// implementation compiled in.
#[cfg(any(feature = "use-rustls", feature = "use-native-tls"))]
type Acceptor = TLSAcceptor;
#[cfg(not(any(feature = "use-rustls", feature = "use-native-tls")))]
type Acceptor = std::convert::Infallible;

/// The connection's TLS handshake, when its listener has TLS, then its websocket upgrade,
/// when it is a websocket listener.
/// The stream after its handshakes, the tenant id, and the client's certificate (DER), if
/// it presented one.
type Handshaken = (Box<dyn N>, Option<String>, Option<Vec<u8>>);

async fn handshake(
    acceptor: Option<Arc<Acceptor>>,
    stream: TcpStream,
    link_type: LinkType,
) -> Result<Handshaken, Error> {
    let (network, tenant_id, peer_certificate) = match acceptor {
        #[cfg(any(feature = "use-rustls", feature = "use-native-tls"))]
        Some(acceptor) => {
            let (tenant_id, network, peer_certificate) = acceptor.accept(stream).await?;
            (network, tenant_id, peer_certificate)
        }
        #[cfg(not(any(feature = "use-rustls", feature = "use-native-tls")))]
        Some(never) => match *never {},
        None => (Box::new(stream) as Box<dyn N>, None, None),
    };
    match link_type {
        #[cfg(feature = "websocket")]
        LinkType::Websocket => match accept_hdr_async(network, WSCallback).await {
            Ok(s) => Ok((Box::new(WsStream::new(s)), tenant_id, peer_certificate)),
            Err(e) => Err(Error::Accept(format!("websocket handshake failed: {e}"))),
        },
        LinkType::Remote => Ok((network, tenant_id, peer_certificate)),
    }
}

/// Configures the Websocket connection to indicate the correct protocol
/// by adding the "sec-websocket-protocol" with value of "mqtt" to the response header
#[cfg(feature = "websocket")]
struct WSCallback;
#[cfg(feature = "websocket")]
impl Callback for WSCallback {
    fn on_request(
        self,
        _request: &Request,
        mut response: Response,
    ) -> Result<Response, ErrorResponse> {
        response
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
        Ok(response)
    }
}

/// A new network connection should wait for a mqtt connect packet. This should be handled
/// asynchronously to avoid blocking other new connections while this connection is
/// waiting for mqtt connect packet. Also this honours connection wait time as per config to prevent
/// denial of service attacks (rogue clients which only establish network connections without
/// sending a mqtt connection packet to make the server reach its concurrent connection limit).
async fn remote<P: Protocol>(
    config: Arc<ConnectionSettings>,
    tenant_id: Option<String>,
    peer_certificate: Option<Vec<u8>>,
    router_tx: Sender<(ConnectionId, Event)>,
    stream: Box<dyn N>,
    protocol: P,
    will_handlers: Arc<Mutex<HashMap<String, Sender<AwaitingWill>>>>,
) {
    let mut network = Network::new(
        stream,
        config.max_payload_size,
        config.max_inflight_count,
        protocol,
    );

    let dynamic_filters = config.dynamic_filters;
    let authorizer = config.authorizer.clone();

    let connect_packet = match Box::pin(mqtt_connect(config, &mut network, peer_certificate.as_deref())).await {
        Ok(p) => p,
        // A probe that only opens a port, or a refused login: no fault of the broker's.
        Err(e) if e.is_routine() => {
            debug!(error=?e, "no MQTT connection");
            return;
        }
        Err(e) => {
            warn!(error=?e, "Error while handling MQTT connect packet");
            return;
        }
    };

    let (mut client_id, clean_session) = match &connect_packet {
        Packet::Connect(ref connect, _, _, _, _) => {
            (connect.client_id.clone(), connect.clean_session)
        }
        _ => unreachable!(),
    };

    let mut assigned_client_id = None;
    if client_id.is_empty() {
        client_id = assigned_client_id_v4();
        assigned_client_id = Some(client_id.clone());
    }

    if let Some(tenant_id) = &tenant_id {
        // client_id is set to "tenant_id.client_id"
        // this is to make sure we are consistent,
        // as Connection uses this format of client_id
        client_id = format!("{tenant_id}.{client_id}");
    }

    // mekong: the map of will handlers is one per listener, so a panic while it is locked
    // poisoned it and every later CONNECT on the listener panicked here. Its entries are
    // whole after any panic, so a poisoned lock is taken as it is; and the previous
    // connection's task may be gone (its link refused by a full router), so a failed send
    // to it is no one's fault: it had nothing left to cancel or fire.
    let previous = will_handlers
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&client_id);
    if let Some(sender) = previous {
        let awaiting_will = if clean_session {
            AwaitingWill::Fire
        } else {
            AwaitingWill::Cancel
        };
        let _ = sender.try_send(awaiting_will);
    }

    let (will_tx, will_rx) = flume::bounded::<AwaitingWill>(1);
    will_handlers
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(client_id.clone(), will_tx.clone());

    // Start the link
    let mut link = match Box::pin(RemoteLink::new(
        router_tx.clone(),
        tenant_id.clone(),
        network,
        connect_packet,
        dynamic_filters,
        assigned_client_id,
        authorizer,
    ))
    .await
    {
        Ok(l) => l,
        Err(e) => {
            error!(error=?e, "Remote link error");
            // mekong: this connection never got a link, so nothing will wait on its will
            // handler: forget it, unless a newer connection with the same id replaced it.
            let mut handlers = will_handlers.lock().unwrap_or_else(PoisonError::into_inner);
            if handlers.get(&client_id).is_some_and(|h| h.same_channel(&will_tx)) {
                handlers.remove(&client_id);
            }
            return;
        }
    };
    // The map holds the sender now; this task only receives.
    drop(will_tx);

    let connection_id = link.connection_id;
    let will_delay_interval = link.will_delay_interval;
    let mut send_disconnect = true;

    // A client that disconnects, or goes away, is routine: logged at `info`, never as an
    // error, so that an operator who turns rumqttd's warnings on sees only what is not.
    match link.start().await {
        // Connection got closed. This shouldn't usually happen.
        Ok(_) => info!("connection-stop"),
        // No need to send a disconnect message when disconnection
        // originated internally in the router (a DISCONNECT, or a newer session).
        Err(remote::Error::Link(e)) => {
            info!(error=?e, "disconnected by the router");
            send_disconnect = false;
        }
        Err(e) if e.is_routine() => {
            info!(error=?e, "disconnected");
        }
        // Any other error
        Err(e) => {
            warn!(error=?e, "disconnected");
        }
    };

    if send_disconnect {
        let disconnect = Event::Disconnect;
        let message = (connection_id, disconnect);
        router_tx.send(message).ok();
    }

    // this is important to stop the connection
    drop(link);

    let publish_will = match tokio::time::timeout(
        Duration::from_secs(will_delay_interval as u64),
        will_rx.recv_async(),
    )
    .await
    {
        Ok(w) => w.is_ok_and(|k| k == AwaitingWill::Fire),
        Err(_) => {
            // no need to keep the sender after timeout
            will_handlers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&client_id);
            // as will delay interval has passed, publish the will message
            true
        }
    };

    if publish_will {
        let message = Event::PublishWill((client_id, tenant_id));
        // is this connection_id really correct at this point?
        // as we have disconnected already, some other connection
        // might be using this connection ID!
        // It won't matter in this case as we don't use it
        // but might affect logs?
        router_tx.send((connection_id, message)).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::assigned_client_id_v4;

    #[test]
    fn assigned_client_id_is_a_random_v4_uuid() {
        let id = assigned_client_id_v4();
        let uuid = id.strip_prefix("rumqtt-").unwrap();
        assert_eq!(uuid.len(), 32);
        assert!(uuid.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(&uuid[12..13], "4");
        assert!("89ab".contains(&uuid[16..17]));
        assert_ne!(id, assigned_client_id_v4());
    }
}
