//! `GET /v1/stream`: Server-Sent Events of readings once they are durable and of alert
//! changes, filtered, resumable over the feed's recent window.
//!
//! Each client has a task of its own between the feed and its connection, with a bounded
//! queue: a client that reads slower than the feed fills its queue, or falls behind the feed
//! itself, and is dropped and counted (`stream.dropped` in `/v1/stats`). Nothing a client
//! does ever slows the ingest path, which only publishes into the feed.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::Frame;
use mekong_feed::{AlertChange, Event, Feed, FollowEnded, Following, Item};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use utoipa::{IntoParams, ToSchema};

use super::kind_filter;
use crate::error::{ApiError, ErrorBody};
use crate::AppState;

/// Bytes of events a client's queue holds before the client counts as too slow and is
/// dropped (its connection's own buffers come on top): a couple of seconds of a whole city's
/// readings, so that a moment without CPU does not cost a client its stream.
const CLIENT_QUEUE_BYTES: usize = 2 << 20;

/// A comment line this often keeps proxies and clients from timing out an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What a client that lost its connection should wait before it reconnects, in ms.
const RETRY_MS: u32 = 2000;

/// Most events joined into one piece of a client's stream.
const MAX_BATCH: usize = 256;

/// A piece of a client's stream ends once it holds this many bytes, well within the
/// client's queue: a burst of big packs is then several pieces, never one the queue cannot
/// take.
const MAX_PIECE: usize = 256 << 10;

/// Longest list of names in one filter.
const MAX_NAMES: usize = 1000;

/// `GET /v1/stream` query. Each filter is a comma-separated list; absent, everything.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Device kinds (`water,air`).
    kind: Option<String>,
    /// Device ids.
    device: Option<String>,
    /// Metric names (`water_level,salinity`).
    metric: Option<String>,
    /// Which events: `readings`, `alerts`, or both (the default).
    events: Option<String>,
}

/// `event: readings`: the new readings of one metric of one stored pack.
#[derive(Serialize, ToSchema)]
pub struct ReadingsEvent<'a> {
    device: &'a str,
    kind: &'a str,
    metric: &'a str,
    unit: Option<&'a str>,
    points: Vec<StreamPoint>,
}

/// A reading in the stream: time in ms since the epoch, and value (`true`/`false` in a
/// series of booleans).
#[derive(Serialize, ToSchema)]
pub struct StreamPoint {
    t_ms: i64,
    v: super::ValueOut,
}

/// `event: alert`: an alert fired or resolved.
#[derive(Serialize, ToSchema)]
pub struct AlertEvent<'a> {
    rule: &'a str,
    device: &'a str,
    metric: &'a str,
    /// `firing` or `resolved`.
    state: &'static str,
    /// Reading time of the change, ms since the epoch.
    at_ms: i64,
    /// The reading that caused it; null for a device gone stale.
    value: Option<f64>,
    severity: &'a str,
    message: &'a str,
}

impl<'a> From<&'a AlertChange> for AlertEvent<'a> {
    fn from(a: &'a AlertChange) -> Self {
        AlertEvent {
            rule: &a.rule,
            device: &a.device,
            metric: &a.metric,
            state: a.state.as_str(),
            at_ms: a.at_ms,
            value: a.value,
            severity: &a.severity,
            message: &a.message,
        }
    }
}

/// What a client asked for.
#[derive(Debug, Default)]
struct Filter {
    kinds: Option<HashSet<&'static str>>,
    devices: Option<HashSet<String>>,
    metrics: Option<HashSet<String>>,
    readings: bool,
    alerts: bool,
}

impl Filter {
    fn parse(q: &StreamQuery) -> Result<Filter, ApiError> {
        let kinds = list(q.kind.as_deref(), "kind")?
            .map(|names| names.iter().map(|k| kind_filter(Some(k)).map(|k| k.unwrap_or_default())).collect())
            .transpose()?;
        let (mut readings, mut alerts) = (q.events.is_none(), q.events.is_none());
        for name in list(q.events.as_deref(), "events")?.unwrap_or_default() {
            match name.as_str() {
                "readings" => readings = true,
                "alerts" => alerts = true,
                other => return Err(ApiError::BadRequest(format!("events must be readings or alerts, got {other:?}"))),
            }
        }
        Ok(Filter {
            kinds,
            devices: list(q.device.as_deref(), "device")?,
            metrics: list(q.metric.as_deref(), "metric")?,
            readings,
            alerts,
        })
    }

    fn device(&self, device: &str) -> bool {
        self.devices.as_ref().is_none_or(|d| d.contains(device))
    }

    fn metric(&self, metric: &str) -> bool {
        self.metrics.as_ref().is_none_or(|m| m.contains(metric))
    }

    fn kind(&self, kind: &str) -> bool {
        self.kinds.as_ref().is_none_or(|k| k.contains(kind))
    }
}

/// A comma-separated list of names, without empty ones.
fn list(value: Option<&str>, what: &str) -> Result<Option<HashSet<String>>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    let names: HashSet<String> = value.split(',').map(str::trim).filter(|n| !n.is_empty()).map(String::from).collect();
    if names.len() > MAX_NAMES {
        return Err(ApiError::BadRequest(format!("{what} names at most {MAX_NAMES} values")));
    }
    Ok(Some(names))
}

/// Where a client resumes, from its `Last-Event-ID`: `run-id`.
fn last_event_id(headers: &HeaderMap) -> Option<(u64, u64)> {
    let value = headers.get("last-event-id")?.to_str().ok()?;
    let (run, id) = value.split_once('-')?;
    Some((run.parse().ok()?, id.parse().ok()?))
}

/// `GET /v1/stream?kind=water&metric=water_level`: Server-Sent Events. `event: readings`
/// carries the new readings of one metric of one pack, once they are on disk; `event: alert`
/// an alert that fired or resolved. Every event has an `id`; a client that reconnects with
/// `Last-Event-ID` gets what it missed, if the server still holds it (the last 16,384
/// events); otherwise, or after a restart of the server, its first event is `event: reset`,
/// and it should read the current state afresh. A client that reads too slowly is
/// disconnected; it may reconnect and resume.
#[utoipa::path(get, path = "/v1/stream",
    operation_id = "stream", tag = "data", params(StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "the id of the last event received, to resume after it")),
    responses(
    (status = 200, description = "a stream of `readings`, `alert` and `reset` events (text/event-stream); the data of each is a JSON object", body = ReadingsEvent, content_type = "text/event-stream"),
    (status = 400, description = "a malformed parameter", body = ErrorBody),
))]
pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let filter = Filter::parse(&query)?;
    let feed = state.feed.clone();
    let mut head = format!("retry: {RETRY_MS}\n\n");
    let after = last_event_id(&headers).map(|(run, id)| (run == feed.run_id()).then_some(id));
    // A client that names devices follows them through the feed's index: it is woken for
    // their events only. The others follow everything and filter.
    let devices: Option<Vec<String>> = filter.devices.as_ref().map(|d| d.iter().cloned().collect());
    let follow = |after: Option<u64>| match &devices {
        Some(devices) => feed.follow_devices(devices, after).map(|(m, f)| (m, Source::Devices(f))),
        None => match after {
            Some(after) => feed.resume(after).map(|(m, rx)| (m, Source::All(rx))),
            None => Some((Vec::new(), Source::All(feed.subscribe()))),
        },
    };
    let resumed = match after {
        None => follow(None),
        Some(Some(after)) => follow(Some(after)),
        Some(None) => None,
    };
    let (missed, source) = match resumed {
        Some(resumed) => resumed,
        None => {
            head.push_str("event: reset\ndata: {\"reason\":\"the events after Last-Event-ID are no longer held\"}\n\n");
            // Cannot fail: without `after` there is nothing to have lost.
            follow(None).unwrap_or_else(|| (Vec::new(), Source::All(feed.subscribe())))
        }
    };
    let (tx, body) = mpsc::unbounded_channel();
    let queue = Queue { tx, bytes: Arc::new(AtomicUsize::new(0)) };
    queue.bytes.fetch_add(head.len(), Ordering::Relaxed);
    // Cannot fail: the receiver is right here.
    let _ = queue.tx.send(Bytes::from(head));
    let body = StreamBody { rx: body, bytes: Arc::clone(&queue.bytes) };
    tokio::spawn(forward(state, filter, missed, source, queue));
    let mut response = Body::new(body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx would otherwise hold the events back in its buffer.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Moves events from the feed to one client until it hangs up or falls behind.
async fn forward(state: AppState, filter: Filter, missed: Vec<Arc<Item>>, mut source: Source, tx: Queue) {
    let feed = state.feed.clone();
    let run = feed.run_id();
    let mut piece = Vec::new();
    for item in missed {
        encode(&state, &filter, run, &item, &mut piece);
        if piece.len() >= MAX_PIECE && !send(&feed, &tx, std::mem::take(&mut piece)) {
            return;
        }
    }
    if !send(&feed, &tx, piece) {
        return;
    }
    let mut keep_alive = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    let closed = feed.closed();
    tokio::pin!(closed);
    loop {
        tokio::select! {
            // The server is stopping.
            () = &mut closed => return,
            item = source.recv() => {
                let mut next = item;
                // Whatever else is there already goes too, without a wake-up per event, and
                // as one piece: one write to the connection for a flush's worth of events.
                let mut piece = Vec::new();
                let mut items = 0;
                loop {
                    match next {
                        Ok(Some(item)) => encode(&state, &filter, run, &item, &mut piece),
                        Ok(None) => break,
                        Err(FollowEnded::Lagged) => {
                            feed.record_dropped();
                            return;
                        }
                        Err(FollowEnded::Closed) => return,
                    }
                    items += 1;
                    if items == MAX_BATCH || piece.len() >= MAX_PIECE {
                        break;
                    }
                    next = source.try_recv();
                }
                if !send(&feed, &tx, piece) {
                    return;
                }
            }
            _ = keep_alive.tick() => {
                if !send(&feed, &tx, b":\n\n".to_vec()) {
                    return;
                }
            }
            () = tx.closed() => return,
        }
    }
}

/// Where a client's events come from.
enum Source {
    /// Everything, filtered by the client's task.
    All(broadcast::Receiver<Arc<Item>>),
    /// The events of the client's devices only.
    Devices(Following),
}

impl Source {
    async fn recv(&mut self) -> Result<Option<Arc<Item>>, FollowEnded> {
        match self {
            Source::All(rx) => match rx.recv().await {
                Ok(item) => Ok(Some(item)),
                Err(broadcast::error::RecvError::Lagged(_)) => Err(FollowEnded::Lagged),
                Err(broadcast::error::RecvError::Closed) => Err(FollowEnded::Closed),
            },
            Source::Devices(f) => f.recv().await.map(Some),
        }
    }

    /// The next event if there is one now.
    fn try_recv(&mut self) -> Result<Option<Arc<Item>>, FollowEnded> {
        match self {
            Source::All(rx) => match rx.try_recv() {
                Ok(item) => Ok(Some(item)),
                Err(broadcast::error::TryRecvError::Empty) => Ok(None),
                Err(broadcast::error::TryRecvError::Lagged(_)) => Err(FollowEnded::Lagged),
                Err(broadcast::error::TryRecvError::Closed) => Err(FollowEnded::Closed),
            },
            Source::Devices(f) => f.try_recv(),
        }
    }
}

/// A client's queue, bounded by the bytes it holds.
struct Queue {
    tx: mpsc::UnboundedSender<Bytes>,
    bytes: Arc<AtomicUsize>,
}

impl Queue {
    async fn closed(&self) {
        self.tx.closed().await;
    }
}

/// Queues `piece` for the client (nothing if it is empty); false when the client is gone
/// or too slow (counted).
fn send(feed: &Feed, tx: &Queue, piece: Vec<u8>) -> bool {
    if piece.is_empty() {
        return true;
    }
    let len = piece.len();
    if tx.bytes.load(Ordering::Relaxed) + len > CLIENT_QUEUE_BYTES {
        feed.record_dropped();
        return false;
    }
    tx.bytes.fetch_add(len, Ordering::Relaxed);
    tx.tx.send(Bytes::from(piece)).is_ok()
}

/// The events queued for one client, as its connection takes them.
struct StreamBody {
    rx: mpsc::UnboundedReceiver<Bytes>,
    bytes: Arc<AtomicUsize>,
}

impl http_body::Body for StreamBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|piece| {
            piece.map(|piece| {
                self.bytes.fetch_sub(piece.len(), Ordering::Relaxed);
                Ok(Frame::data(piece))
            })
        })
    }
}

/// An item as the stream sends it to a client that filters none of it out, made once for
/// all the clients an event reached (`Item::rendered`): its events and the id.
struct Rendered(Box<[u8]>);

/// Appends the events of `event` (id `id`) to `out`, written straight into the buffer: per
/// event this runs once, on the stream's path, and a `String` per event and per point (as
/// serde's structs would make) cost more than the JSON itself. Readings of the metrics
/// `keep` leaves out are left out, the id after the last event written; nothing if it
/// keeps none. [`ReadingsEvent`] and [`AlertEvent`] are the schema; a test checks the text
/// against them.
fn render_into(out: &mut Vec<u8>, run: u64, id: u64, event: &Event, keep: impl Fn(&str) -> bool) {
    let start = out.len();
    match event {
        Event::Stored(pack) => {
            for series in pack.series.iter().filter(|s| keep(&s.metric)) {
                write_readings(out, pack, series);
                out.push(b'\n');
            }
        }
        Event::Alert(change) => {
            out.extend_from_slice(b"event: alert\ndata: ");
            // A struct of strings and numbers: serialising into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, &AlertEvent::from(&**change));
            out.extend_from_slice(b"\n\n");
        }
    }
    if out.len() > start {
        // The last event's blank line ends it: the id goes just before.
        out.pop();
        push_id(out, run, id);
    }
}

/// `event: readings` of one series of a pack: the shape of [`ReadingsEvent`].
fn write_readings(out: &mut Vec<u8>, pack: &mekong_feed::Stored, series: &mekong_feed::Series) {
    out.extend_from_slice(b"event: readings\ndata: {\"device\":");
    json_str(out, &pack.device);
    out.extend_from_slice(b",\"kind\":");
    json_str(out, &pack.kind);
    out.extend_from_slice(b",\"metric\":");
    json_str(out, &series.metric);
    out.extend_from_slice(b",\"unit\":");
    match &series.unit {
        Some(unit) => json_str(out, unit),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"points\":[");
    let (mut int, mut float) = (itoa::Buffer::new(), zmij::Buffer::new());
    for (i, &(t_ms, v)) in series.points.iter().enumerate() {
        out.extend_from_slice(if i > 0 { b",{\"t_ms\":" } else { b"{\"t_ms\":" });
        out.extend_from_slice(int.format(t_ms).as_bytes());
        out.extend_from_slice(b",\"v\":");
        // The feed carries values as numbers, and says which are booleans.
        if series.boolean {
            out.extend_from_slice(if v != 0.0 { b"true" } else { b"false" });
        } else if v.is_finite() {
            // serde_json's own number form (it formats with zmij too).
            out.extend_from_slice(float.format_finite(v).as_bytes());
        } else {
            // What serde_json writes for what JSON cannot hold.
            out.extend_from_slice(b"null");
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}\n");
}

/// `s` as a JSON string, escaped as serde_json escapes it.
fn json_str(out: &mut Vec<u8>, s: &str) {
    // Names rarely hold a character JSON escapes (a control character, `"` or `\`).
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Serialising a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// `id: {run}-{id}` and the blank line that ends the event before it.
fn push_id(out: &mut Vec<u8>, run: u64, id: u64) {
    let mut int = itoa::Buffer::new();
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(int.format(run).as_bytes());
    out.push(b'-');
    out.extend_from_slice(int.format(id).as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// Appends what a client with `filter` gets of `item` to `out`; nothing if the filter keeps
/// none of it. An event that reached several clients is written once for them all, unless
/// a client keeps only some of its metrics; one that reached a single client is written
/// straight into that client's piece (nothing kept alongside it in the window).
fn encode(state: &AppState, filter: &Filter, run: u64, item: &Item, out: &mut Vec<u8>) {
    let kept = match &item.event {
        Event::Stored(pack) => filter.readings && filter.kind(&pack.kind) && filter.device(&pack.device),
        Event::Alert(change) => {
            filter.alerts
                && filter.device(&change.device)
                && filter.metric(&change.metric)
                && alert_kind(state, filter, change)
        }
    };
    if !kept {
        return;
    }
    let some_metrics = matches!(item.event, Event::Stored(_)) && filter.metrics.is_some();
    if item.followers() > 1 && !some_metrics {
        let whole = |item: &Item| {
            let mut out = Vec::new();
            render_into(&mut out, run, item.id, &item.event, |_| true);
            Rendered(out.into_boxed_slice())
        };
        if let Some(Rendered(whole)) = item.rendered(whole) {
            out.extend_from_slice(whole);
            return;
        }
    }
    render_into(out, run, item.id, &item.event, |metric| filter.metric(metric));
}

/// An alert passes a kind filter when its device is of one of the kinds.
fn alert_kind(state: &AppState, filter: &Filter, change: &AlertChange) -> bool {
    filter.kinds.is_none() || state.store.device(&change.device).is_some_and(|d| filter.kind(&d.kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mekong_store::ValueKind;

    fn query(kind: Option<&str>, events: Option<&str>) -> StreamQuery {
        StreamQuery {
            kind: kind.map(Into::into),
            device: Some("a, b,,".into()),
            metric: None,
            events: events.map(Into::into),
        }
    }

    #[test]
    fn filters_are_comma_separated_and_checked() {
        let f = Filter::parse(&query(Some("water,air"), None)).unwrap();
        assert!(f.readings && f.alerts && f.kind("water") && !f.kind("traffic"));
        assert!(f.device("a") && f.device("b") && !f.device("c") && f.metric("anything"));
        let f = Filter::parse(&query(None, Some("alerts"))).unwrap();
        assert!(!f.readings && f.alerts);
        assert!(Filter::parse(&query(Some("boats"), None)).is_err());
        assert!(Filter::parse(&query(None, Some("logs"))).is_err());
    }

    /// The events as serde writes the schema's structs: what `render` writes by hand.
    fn by_serde(run: u64, id: u64, event: &Event) -> String {
        let mut texts = Vec::new();
        match event {
            Event::Stored(pack) => {
                for series in &pack.series {
                    let kind = if series.boolean { ValueKind::Boolean } else { ValueKind::Number };
                    let body = ReadingsEvent {
                        device: &pack.device,
                        kind: &pack.kind,
                        metric: &series.metric,
                        unit: series.unit.as_deref(),
                        points: series
                            .points
                            .iter()
                            .map(|&(t_ms, v)| StreamPoint { t_ms, v: super::super::ValueOut::of(v, kind) })
                            .collect(),
                    };
                    texts.push(format!("event: readings\ndata: {}\n", serde_json::to_string(&body).unwrap()));
                }
            }
            Event::Alert(a) => {
                texts.push(format!("event: alert\ndata: {}\n", serde_json::to_string(&AlertEvent::from(&**a)).unwrap()))
            }
        }
        format!("{}id: {run}-{id}\n\n", texts.join("\n"))
    }

    #[test]
    fn events_written_by_hand_are_the_schemas_json() {
        let series = |metric: &str, unit: Option<&str>, boolean: bool, points: Vec<(i64, f64)>| mekong_feed::Series {
            metric: metric.into(),
            unit: unit.map(Into::into),
            boolean,
            points,
        };
        let pack = mekong_feed::Stored {
            device: "hau-01".into(),
            kind: "water".into(),
            series: vec![
                series(
                    "water_level",
                    Some("cm"),
                    false,
                    vec![
                        (1_795_823_647_000, 182.5),
                        (-1, -0.0),
                        (0, 1e300),
                        (i64::MIN, f64::NAN),
                        (i64::MAX, f64::NEG_INFINITY),
                        (3, 1e21),
                        (4, 1.5e-7),
                    ],
                ),
                series("pump\"on\"", None, true, vec![(5, 1.0), (6, 0.0)]),
                series("pm2_5", Some("µg/m³\n\u{1}"), false, vec![(7, 0.1 + 0.2), (8, f64::MIN_POSITIVE), (9, 12.0)]),
                series("empty", Some("x"), false, vec![]),
            ],
        };
        let alert = mekong_feed::AlertChange {
            rule: "hau-river-high".into(),
            device: "hau-01".into(),
            metric: "water_level".into(),
            state: mekong_feed::AlertState::Firing,
            at_ms: 1_795_823_647_000,
            value: Some(252.0),
            severity: "warning".into(),
            message: "level \"high\"".into(),
        };
        let rendered = |event: &Event, keep: &dyn Fn(&str) -> bool| {
            // After what a piece already holds, as a client's batch of events.
            let mut out = b"id: 1-1\n\n".to_vec();
            render_into(&mut out, 17, 42, event, keep);
            String::from_utf8(out.split_off(9)).unwrap()
        };
        for event in [Event::Stored(Arc::new(pack.clone())), Event::Alert(Arc::new(alert))] {
            assert_eq!(rendered(&event, &|_| true), by_serde(17, 42, &event));
        }
        // A client that follows some metrics gets just their events, the id after the last,
        // as if the pack had held only those.
        for keep in [&["water_level", "pm2_5"][..], &["pm2_5"], &["pump\"on\"", "empty"]] {
            let got = rendered(&Event::Stored(Arc::new(pack.clone())), &|m| keep.contains(&m));
            let mut only = pack.clone();
            only.series.retain(|s| keep.contains(&s.metric.as_str()));
            assert_eq!(got, by_serde(17, 42, &Event::Stored(Arc::new(only))), "{keep:?}");
        }
        assert_eq!(rendered(&Event::Stored(Arc::new(pack)), &|m| m == "salinity"), "");
    }

    #[test]
    fn last_event_id_is_run_and_id() {
        let mut h = HeaderMap::new();
        assert_eq!(last_event_id(&h), None);
        h.insert("last-event-id", HeaderValue::from_static("1764460800000-42"));
        assert_eq!(last_event_id(&h), Some((1_764_460_800_000, 42)));
        h.insert("last-event-id", HeaderValue::from_static("42"));
        assert_eq!(last_event_id(&h), None);
    }
}
