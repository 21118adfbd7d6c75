//! The server of the broker-only scenario: what the embedded broker alone allows. mekong's
//! broker, started through `mekong_ingest::broker` with `mekong serve`'s default options (and
//! its network threads from `MEKONG__BROKER__NETWORK_THREADS`, as `mekong serve`), and
//! its ingest link reduced to a counter: no decoding, storage or acknowledgement. It runs in a
//! child process of `mekong-bench ingest`, as `mekong serve` does in the other scenarios, so
//! that its memory is measured apart from the load generator's and the connections' two ends
//! do not share one open-file limit.
//!
//! Every HTTP request on the stats address is answered with `{"counted": n}`, the uplinks
//! read from the link so far.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use mekong_ingest::broker::{self, BrokerOptions};
use rumqttd::Notification;

/// Starts the broker on `listen` (MQTT 3.1.1 only), then counts uplinks until the broker is
/// gone, serving the count on `stats` once the broker accepts connections.
pub fn run(listen: SocketAddr, stats: SocketAddr) -> anyhow::Result<()> {
    let mut opts = BrokerOptions { listen, listen_v5: None, ..BrokerOptions::default() };
    // The one broker option that changes what the broker alone can do, taken from the
    // environment as `mekong serve` takes it, so that both scenarios of a run compare the
    // same broker.
    if let Ok(threads) = std::env::var("MEKONG__BROKER__NETWORK_THREADS") {
        opts.network_threads =
            threads.parse().with_context(|| format!("MEKONG__BROKER__NETWORK_THREADS: {threads:?}"))?;
    }
    // The sending half stays alive with the link, though nothing is sent on it.
    let (_tx, mut rx) = broker::start(&opts, None).context("cannot start the broker")?;
    broker::wait_listening(&opts).context("the broker did not come up")?;
    let counted = Arc::new(AtomicU64::new(0));
    let listener = TcpListener::bind(stats).with_context(|| format!("cannot listen on {stats}"))?;
    {
        let counted = Arc::clone(&counted);
        std::thread::Builder::new().name("stats".into()).spawn(move || {
            for stream in listener.incoming().flatten() {
                // A client that goes away early costs its own answer, nothing else.
                let _ = answer(stream, counted.load(Ordering::Relaxed));
            }
        })?;
    }
    loop {
        match rx.recv().context("broker link closed")? {
            Some(Notification::Forward(_)) => {
                counted.fetch_add(1, Ordering::Relaxed);
            }
            // The router stops sending until told the link is ready again, as for the
            // ingest thread.
            Some(Notification::Unschedule) => rx.ready().context("broker link closed")?,
            Some(_) | None => {}
        }
    }
}

/// Reads the request's head, answers with the count, and closes.
fn answer(mut stream: TcpStream, counted: u64) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    // Read the whole request first: closing with unread input resets the connection, and the
    // client could lose the answer.
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let body = format!("{{\"counted\":{counted}}}");
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

    use super::*;
    use crate::harness::{free_ports, get_json};

    async fn counted(stats: SocketAddr) -> Option<u64> {
        get_json(stats, "/").await.ok()?["counted"].as_u64()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_every_uplink_and_nothing_else() {
        let [listen, stats] = free_ports().unwrap().map(|port| SocketAddr::from(([127, 0, 0, 1], port)));
        // The broker's thread never ends; neither does this one, until the test process does.
        std::thread::spawn(move || run(listen, stats));
        let deadline = Instant::now() + Duration::from_secs(30);
        while counted(stats).await.is_none() {
            assert!(Instant::now() < deadline, "the counter did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let (client, mut events) = AsyncClient::new(MqttOptions::new("bench-test", "127.0.0.1", listen.port()), 16);
        for i in 0..5u8 {
            client.publish("mekong/v1/dev-1/up", QoS::AtLeastOnce, false, vec![i]).await.unwrap();
        }
        // Not an uplink: the link does not subscribe to it.
        client.publish("mekong/v1/dev-1/down", QoS::AtLeastOnce, false, vec![0]).await.unwrap();
        let mut pubacks = 0;
        while pubacks < 6 {
            let event = tokio::time::timeout(Duration::from_secs(30), events.poll()).await.unwrap().unwrap();
            if let Event::Incoming(Packet::PubAck(_)) = event {
                pubacks += 1;
            }
        }
        while counted(stats).await != Some(5) {
            assert!(Instant::now() < deadline, "counted {:?}, expected 5", counted(stats).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(counted(stats).await, Some(5));
    }
}
