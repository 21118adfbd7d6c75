//! The sender: reads the outbox from the durable position, publishes each pack upstream over
//! MQTT 5, and moves the position once the upstream has acknowledged every pack up to it.
//!
//! A connection is one rumqttc client and event loop; when it fails the sender drops both
//! and, after a capped back-off, starts afresh from what is acknowledged, so it alone decides
//! what is sent again (rumqttc's own replay of a lost session is never relied upon). The
//! window of packs published beyond the durable position is `max_in_flight`: that bounds
//! what a reconnect or a crash sends twice.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use mekong_feed::Stored;
use mekong_schema::senml::{self, Base, EncodeError, Entry as SenmlEntry, Value};
use mekong_stats::Stats;
use mekong_store::Store;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, PubCompReason, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use rumqttc::{Outgoing, TlsConfiguration, Transport};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::outbox::{self, Entry, Queue};
use crate::{Format, ForwardError, ForwardOptions};

/// The user property that carries a pack's sequence number.
pub const SEQ_PROPERTY: &str = "mekong-seq";
/// The user property that carries when the pack was accepted (ms since the epoch).
pub const ACCEPTED_PROPERTY: &str = "mekong-accepted-ms";

/// Records read from the outbox at a time.
const READ_BATCH: usize = 128;
/// How far the pace of a rate limit may fall behind (a burst after a late wake-up).
const PACE_SLACK: Duration = Duration::from_millis(100);
/// How often the sender looks at the outbox's size, connected or not.
const TICK: Duration = Duration::from_secs(1);

/// A pack published and not yet in the durable position.
#[derive(Debug)]
struct Slot {
    acked: bool,
    bytes: u64,
    readings: u64,
    accepted_ms: i64,
}

/// What a position write in flight will have done.
type Persisting = JoinHandle<(u64, u64, u64, Result<(), ForwardError>)>;

/// The sender's state across connections.
pub(crate) struct Sender {
    store: Store,
    options: ForwardOptions,
    queue: Arc<Queue>,
    stats: Arc<Stats>,
    /// Every pack up to it is acknowledged upstream (in memory).
    acked: u64,
    /// The durable position.
    persisted: u64,
    /// Packs published above the durable position, acknowledged or not.
    window: BTreeMap<u64, Slot>,
    /// The next sequence number to read.
    next: u64,
    /// When the rate limit lets the next pack go.
    pace: Instant,
}

/// One event of the sender's loop.
enum Ev {
    Stop,
    /// An event of the connection; `None` once its event loop has ended.
    Mqtt(Option<Box<Result<Event, rumqttc::v5::ConnectionError>>>),
    Wake,
    Persisted(Result<(u64, u64, u64, Result<(), ForwardError>), tokio::task::JoinError>),
    Tick,
}

/// Why a connection ended.
enum End {
    Stop,
    Failed(String),
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Sender {
    pub(crate) fn new(
        store: Store,
        options: ForwardOptions,
        queue: Arc<Queue>,
        stats: Arc<Stats>,
        position: u64,
    ) -> Sender {
        Sender {
            store,
            options,
            queue,
            stats,
            acked: position,
            persisted: position,
            window: BTreeMap::new(),
            next: position + 1,
            pace: Instant::now(),
        }
    }

    /// Connects, forwards, reconnects after a failure, until `stopped` says so; then writes
    /// the position of what was acknowledged.
    pub(crate) async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        let mut persisting: Option<Persisting> = None;
        let mut backoff = self.options.reconnect_min;
        loop {
            let started = Instant::now();
            let end = self.connection(&mut stopped, &mut persisting).await;
            self.stats.forward.set_connected(false);
            self.lost_connection();
            match end {
                End::Stop => break,
                End::Failed(error) => {
                    self.stats.forward.record_error();
                    // A connection that lasted resets the back-off.
                    if started.elapsed() > self.options.reconnect_max {
                        backoff = self.options.reconnect_min;
                    }
                    tracing::warn!(error = %error, retry_in = ?backoff, "upstream broker connection lost");
                }
            }
            let deadline = Instant::now() + backoff;
            backoff = (backoff * 2).min(self.options.reconnect_max);
            // Wait out the back-off, still writing the position and bounding the outbox.
            loop {
                self.bound_outbox();
                self.persist(&mut persisting);
                let ev = tokio::select! {
                    _ = stopped.changed() => Ev::Stop,
                    r = wait(&mut persisting) => Ev::Persisted(r),
                    _ = tokio::time::sleep_until(deadline.min(Instant::now() + TICK)) => Ev::Tick,
                };
                match ev {
                    Ev::Stop => {
                        self.finish(&mut persisting).await;
                        return;
                    }
                    Ev::Persisted(r) => {
                        persisting = None;
                        self.persisted_done(r);
                    }
                    _ if Instant::now() >= deadline => break,
                    _ => {}
                }
            }
        }
        self.finish(&mut persisting).await;
    }

    /// One connection, until it fails or the sender stops.
    async fn connection(&mut self, stopped: &mut watch::Receiver<bool>, persisting: &mut Option<Persisting>) -> End {
        let (client, eventloop) = AsyncClient::new(self.mqtt_options(), usize::from(self.options.max_in_flight) + 8);
        // The event loop runs in a task of its own and hands its events over a channel, so
        // that no poll of it is ever cancelled half-way by another branch of the loop below.
        let (events_tx, mut events) = tokio::sync::mpsc::channel(64);
        let mut driver = Driver(tokio::spawn(drive(eventloop, events_tx)));
        let wake = Arc::clone(&self.queue);
        let mut connected = false;
        // Packs handed to the client, in order, until it says which packet id each got.
        let mut order: VecDeque<u64> = VecDeque::new();
        let mut pkids: HashMap<u16, u64> = HashMap::new();
        loop {
            let mut deadline = Instant::now() + TICK;
            if connected {
                if let Some(paced) = self.fill(&client, &mut order) {
                    deadline = deadline.min(paced);
                }
            }
            self.bound_outbox();
            self.persist(persisting);
            if *stopped.borrow() {
                return End::Stop;
            }
            let ev = tokio::select! {
                _ = stopped.changed() => Ev::Stop,
                r = events.recv() => Ev::Mqtt(r),
                _ = wake.wake.notified() => Ev::Wake,
                r = wait(persisting) => Ev::Persisted(r),
                _ = tokio::time::sleep_until(deadline) => Ev::Tick,
            };
            match ev {
                Ev::Stop => {
                    let _ = client.try_disconnect();
                    // The event loop writes the DISCONNECT, then finds no one listening.
                    drop(events);
                    let _ = tokio::time::timeout(Duration::from_millis(500), &mut driver.0).await;
                    return End::Stop;
                }
                Ev::Persisted(r) => {
                    *persisting = None;
                    self.persisted_done(r);
                }
                Ev::Wake | Ev::Tick => {}
                Ev::Mqtt(None) => return End::Failed("the connection's event loop ended".into()),
                Ev::Mqtt(Some(r)) => match *r {
                    Err(e) => return End::Failed(e.to_string()),
                    Ok(event) => match event {
                        Event::Incoming(Packet::ConnAck(_)) => {
                            connected = true;
                            self.stats.forward.set_connected(true);
                            tracing::info!(host = %self.options.host, port = self.options.port, "connected to the upstream broker");
                        }
                        Event::Outgoing(Outgoing::Publish(pkid)) => {
                            if let Some(seq) = order.pop_front() {
                                pkids.insert(pkid, seq);
                            }
                        }
                        Event::Incoming(Packet::PubAck(ack)) if self.options.qos == 1 => {
                            if !matches!(ack.reason, PubAckReason::Success | PubAckReason::NoMatchingSubscribers) {
                                return End::Failed(format!("upstream refused a publish: {:?}", ack.reason));
                            }
                            if let Some(seq) = pkids.remove(&ack.pkid) {
                                self.completed(seq);
                            }
                        }
                        Event::Incoming(Packet::PubComp(comp)) if self.options.qos == 2 => {
                            if !matches!(comp.reason, PubCompReason::Success) {
                                return End::Failed(format!("upstream refused a publish: {:?}", comp.reason));
                            }
                            if let Some(seq) = pkids.remove(&comp.pkid) {
                                self.completed(seq);
                            }
                        }
                        Event::Incoming(Packet::Disconnect(d)) => {
                            return End::Failed(format!("upstream disconnected: {:?}", d.reason_code));
                        }
                        _ => {}
                    },
                },
            }
        }
    }

    fn mqtt_options(&self) -> MqttOptions {
        let o = &self.options;
        let mut m = MqttOptions::new(o.client_id.clone(), o.host.clone(), o.port);
        m.set_keep_alive(o.keep_alive);
        m.set_clean_start(true);
        m.set_outgoing_inflight_upper_limit(o.max_in_flight);
        m.set_request_channel_capacity(usize::from(o.max_in_flight) + 8);
        if let (Some(user), Some(password)) = (&o.username, &o.password) {
            m.set_credentials(user.clone(), password.0.clone());
        } else if let Some(user) = &o.username {
            m.set_credentials(user.clone(), String::new());
        }
        if let Some(tls) = &o.tls {
            m.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::clone(tls))));
        }
        m
    }

    /// Publishes what the window and the rate limit allow; returns when the rate limit
    /// lets the next pack go, if it held one back.
    fn fill(&mut self, client: &AsyncClient, order: &mut VecDeque<u64>) -> Option<Instant> {
        let max = usize::from(self.options.max_in_flight);
        loop {
            let durable = self.queue.durable_upto();
            let room = max.saturating_sub(self.window.len());
            if room == 0 || self.next > durable {
                return None;
            }
            let entries = match outbox::read(&self.store, self.next, durable, room.min(READ_BATCH)) {
                Ok(entries) => entries,
                Err(e) => {
                    self.stats.forward.record_error();
                    tracing::error!(error = %e, "cannot read the upstream outbox");
                    return Some(Instant::now() + TICK);
                }
            };
            let complete = entries.len() < room.min(READ_BATCH);
            for entry in entries {
                if self.window.get(&entry.seq).is_some_and(|s| s.acked) {
                    // Acknowledged before a reconnect: not sent again.
                    self.next = entry.seq + 1;
                    continue;
                }
                if let Some(at) = self.paced() {
                    return Some(at);
                }
                if !self.publish(client, &entry) {
                    return None;
                }
                order.push_back(entry.seq);
                self.next = entry.seq + 1;
            }
            if complete {
                // Numbers of groups that failed to write have no record.
                self.next = self.next.max(durable + 1);
                return None;
            }
        }
    }

    /// `None` if the rate limit lets a pack go now (and counts it), else when it will.
    fn paced(&mut self) -> Option<Instant> {
        let rate = self.options.max_packs_per_sec;
        if rate == 0 {
            return None;
        }
        let now = Instant::now();
        if self.pace > now {
            return Some(self.pace);
        }
        let floor = now.checked_sub(PACE_SLACK).unwrap_or(now);
        self.pace = self.pace.max(floor) + Duration::from_secs(1) / rate;
        None
    }

    /// Hands `entry` to the client; false if the client's queue is full.
    fn publish(&mut self, client: &AsyncClient, entry: &Entry) -> bool {
        let readings = entry.pack.points() as u64;
        let payload = match payload(&entry.pack, self.options.format) {
            Ok(payload) => payload,
            Err(e) => {
                // Cannot happen for what ingest stores (finite numbers and booleans); if it
                // does, the pack is counted and logged, and the feed goes on.
                tracing::error!(seq = entry.seq, device = %entry.pack.device, error = %e, "pack cannot be encoded: not forwarded");
                self.stats.forward.record_dropped(1, readings);
                let slot = Slot { acked: false, bytes: entry.bytes, readings: 0, accepted_ms: entry.accepted_ms };
                self.window.insert(entry.seq, slot);
                self.completed(entry.seq);
                return true;
            }
        };
        let topic = format!("{}/{}/{}", self.options.topic_prefix, entry.pack.kind, entry.pack.device);
        let properties = PublishProperties {
            content_type: Some(self.options.format.content_type().to_owned()),
            user_properties: vec![
                (SEQ_PROPERTY.to_owned(), entry.seq.to_string()),
                (ACCEPTED_PROPERTY.to_owned(), entry.accepted_ms.to_string()),
            ],
            ..PublishProperties::default()
        };
        let qos = match self.options.qos {
            2 => QoS::ExactlyOnce,
            _ => QoS::AtLeastOnce,
        };
        match client.try_publish_with_properties(topic, qos, false, payload, properties) {
            Ok(()) => {
                let slot = Slot { acked: false, bytes: entry.bytes, readings, accepted_ms: entry.accepted_ms };
                self.window.insert(entry.seq, slot);
                true
            }
            Err(_) => false,
        }
    }

    /// The upstream acknowledged `seq`.
    fn completed(&mut self, seq: u64) {
        let Some(slot) = self.window.get_mut(&seq) else { return };
        if slot.acked {
            return;
        }
        slot.acked = true;
        let (readings, accepted_ms) = (slot.readings, slot.accepted_ms);
        for (&s, slot) in self.window.range(self.acked + 1..) {
            if !slot.acked {
                break;
            }
            self.acked = s;
        }
        self.stats.forward.record_sent(readings, now_ms() - accepted_ms, self.acked);
    }

    /// After a connection ended: what it left unacknowledged is read and published again.
    fn lost_connection(&mut self) {
        let unacked: Vec<u64> = self.window.iter().filter(|(_, s)| !s.acked).map(|(&seq, _)| seq).collect();
        if let Some(&first) = unacked.first() {
            self.next = self.next.min(first);
            self.stats.forward.record_resent(unacked.len() as u64);
        }
        for seq in unacked {
            self.window.remove(&seq);
        }
    }

    /// Starts writing the position, if it moved and no write is under way.
    fn persist(&mut self, persisting: &mut Option<Persisting>) {
        if persisting.is_some() || self.acked <= self.persisted {
            return;
        }
        let upto = self.acked;
        let seqs: Vec<u64> = self.window.range(..=upto).map(|(&s, _)| s).collect();
        let bytes = self.window.range(..=upto).map(|(_, s)| s.bytes).sum();
        let store = self.store.clone();
        *persisting = Some(tokio::task::spawn_blocking(move || {
            let result = outbox::remove(&store, &seqs, Some(upto));
            (upto, seqs.len() as u64, bytes, result)
        }));
    }

    fn persisted_done(&mut self, result: Result<(u64, u64, u64, Result<(), ForwardError>), tokio::task::JoinError>) {
        match result {
            Ok((upto, packs, bytes, Ok(()))) => {
                self.persisted = upto;
                self.window = self.window.split_off(&(upto + 1));
                self.queue.removed(packs, bytes);
            }
            Ok((_, _, _, Err(e))) => {
                self.stats.forward.record_error();
                tracing::error!(error = %e, "cannot write the upstream feed's position; will retry");
            }
            Err(e) => tracing::error!(error = %e, "the position write failed"),
        }
        self.gauges();
    }

    /// The outbox's size and the position, in the stats.
    fn gauges(&self) {
        let (packs, bytes) = self.queue.queued();
        self.stats.forward.set_queued(packs, bytes, self.persisted);
    }

    /// Drops the oldest packs not yet sent while the outbox is over its bound, down to 90%
    /// of it; they stay in the store, and the log says which they were.
    fn bound_outbox(&mut self) {
        let max = self.options.max_outbox_bytes;
        let (_, bytes) = self.queue.queued();
        if bytes <= max {
            self.gauges();
            return;
        }
        let mut excess = bytes - (max - max / 10);
        let durable = self.queue.durable_upto();
        while excess > 0 && self.next <= durable {
            let entries = match outbox::read(&self.store, self.next, durable, 1024) {
                Ok(entries) if !entries.is_empty() => entries,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the upstream outbox");
                    return;
                }
            };
            let mut dropped = Vec::new();
            let (mut dropped_bytes, mut readings) = (0u64, 0u64);
            for entry in &entries {
                if excess == 0 {
                    break;
                }
                dropped.push(entry.seq);
                dropped_bytes += entry.bytes;
                readings += entry.pack.points() as u64;
                excess = excess.saturating_sub(entry.bytes);
            }
            if let Err(e) = outbox::remove(&self.store, &dropped, None) {
                tracing::error!(error = %e, "cannot drop packs from the upstream outbox");
                return;
            }
            let last = entries.get(dropped.len().saturating_sub(1));
            tracing::warn!(
                first_seq = entries.first().map(|e| e.seq),
                last_seq = last.map(|e| e.seq),
                accepted_from_ms = entries.first().map(|e| e.accepted_ms),
                accepted_to_ms = last.map(|e| e.accepted_ms),
                packs = dropped.len(),
                readings,
                max_outbox_bytes = max,
                "upstream outbox full: its oldest packs not yet sent are dropped (they stay in the store)"
            );
            self.queue.removed(dropped.len() as u64, dropped_bytes);
            self.stats.forward.record_dropped(dropped.len() as u64, readings);
            if let Some(&seq) = dropped.last() {
                self.next = seq + 1;
            }
        }
        self.gauges();
    }

    /// Waits for the position write under way and writes the last one.
    async fn finish(&mut self, persisting: &mut Option<Persisting>) {
        if let Some(task) = persisting.take() {
            self.persisted_done(task.await);
        }
        self.persist(persisting);
        if let Some(task) = persisting.take() {
            self.persisted_done(task.await);
        }
    }
}

/// The task that polls a connection's event loop; aborted with its connection.
struct Driver(JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Polls `eventloop` and hands each event over, until it fails or no one listens.
async fn drive(
    mut eventloop: EventLoop,
    events: tokio::sync::mpsc::Sender<Box<Result<Event, rumqttc::v5::ConnectionError>>>,
) {
    loop {
        let event = eventloop.poll().await;
        let failed = event.is_err();
        if events.send(Box::new(event)).await.is_err() || failed {
            return;
        }
    }
}

/// The position write under way, or never.
async fn wait(
    persisting: &mut Option<Persisting>,
) -> Result<(u64, u64, u64, Result<(), ForwardError>), tokio::task::JoinError> {
    match persisting {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

/// The device URN a forwarded pack's base name gives (RFC 9039's form, mekong's own type).
pub fn base_name(device: &str) -> String {
    format!("urn:dev:mekong:{device}:")
}

/// `pack` as SenML: the device in the base name, the earliest reading's time as base time,
/// each reading with its metric, unit and time; booleans as `vb`.
pub fn payload(pack: &Stored, format: Format) -> Result<Vec<u8>, EncodeError> {
    let bt_ms = pack.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).min().unwrap_or(0);
    let name = base_name(&pack.device);
    let base = Base { name: Some(&name), time: Some(bt_ms as f64 / 1000.0), unit: None };
    let entries: Vec<SenmlEntry<'_>> = pack
        .series
        .iter()
        .flat_map(|s| {
            s.points.iter().map(move |&(t, v)| SenmlEntry {
                name: &s.metric,
                unit: s.unit.as_deref(),
                value: if s.boolean { Value::Bool(v != 0.0) } else { Value::Number(v) },
                time: (t - bt_ms) as f64 / 1000.0,
            })
        })
        .collect();
    let mut size =
        64 + name.len() + entries.iter().map(|e| e.name.len() + e.unit.map_or(0, str::len) + 40).sum::<usize>();
    loop {
        let mut out = vec![0u8; size];
        let written = match format {
            Format::Cbor => senml::encode_entries(&mut out, &base, &entries),
            Format::Json => senml::json::encode_pack(&mut out, &base, &entries),
        };
        match written {
            Ok(n) => {
                out.truncate(n);
                return Ok(out);
            }
            Err(EncodeError::BufferFull) if size < 64 << 20 => size *= 2,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use mekong_feed::Series;
    use mekong_schema::senml::{DecodeOptions, Record};

    use super::*;

    #[test]
    fn a_forwarded_pack_decodes_to_the_readings_stored_in_both_forms() {
        let pack = Stored {
            device: "pump-7".into(),
            kind: "water".into(),
            series: vec![
                Series {
                    metric: "water_level".into(),
                    unit: Some("cm".into()),
                    boolean: false,
                    points: vec![(1_790_000_000_250, 182.4), (1_790_000_060_250, 183.0)],
                },
                Series { metric: "pump_on".into(), unit: None, boolean: true, points: vec![(1_789_999_990_000, 1.0)] },
            ],
        };
        for format in [Format::Cbor, Format::Json] {
            let bytes = payload(&pack, format).unwrap();
            assert_eq!(senml::is_json(&bytes), format == Format::Json);
            let mut got = Vec::new();
            let opts = DecodeOptions { now: 1_790_000_100.0, max_records: 10 };
            senml::decode(&bytes, opts, &mut |r: Record<'_>| {
                got.push((
                    r.base_name.to_owned(),
                    r.name.to_owned(),
                    r.unit.map(str::to_owned),
                    r.value,
                    (r.time * 1000.0).round() as i64,
                ));
                Ok(())
            })
            .unwrap();
            let bn = "urn:dev:mekong:pump-7:".to_owned();
            assert_eq!(
                got,
                [
                    (bn.clone(), "water_level".into(), Some("cm".into()), Value::Number(182.4), 1_790_000_000_250),
                    (bn.clone(), "water_level".into(), Some("cm".into()), Value::Number(183.0), 1_790_000_060_250),
                    (bn, "pump_on".into(), None, Value::Bool(true), 1_789_999_990_000),
                ]
            );
        }
    }
}
