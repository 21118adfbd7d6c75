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
use mekong_store::ValueKind;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use utoipa::{IntoParams, ToSchema};

use super::kind_filter;
use crate::error::{ApiError, ErrorBody};
use crate::AppState;

/// Bytes of events a client's queue holds before the client counts as too slow and is
/// dropped (its connection's own buffers come on top): a couple of seconds of a whole city's
/// readings, so that a moment without CPU does not cost a client its stream. Unfiltered
/// clients share the events' bytes, so the memory is often less.
const CLIENT_QUEUE_BYTES: usize = 2 << 20;

/// A comment line this often keeps proxies and clients from timing out an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What a client that lost its connection should wait before it reconnects, in ms.
const RETRY_MS: u32 = 2000;

/// Most events joined into one piece of a client's stream.
const MAX_BATCH: usize = 256;

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
    for item in missed {
        if !send(&feed, &tx, encode(&state, &filter, run, &item)) {
            return;
        }
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
                let mut batch: Vec<Bytes> = Vec::new();
                loop {
                    match next {
                        Ok(Some(item)) => batch.extend(encode(&state, &filter, run, &item)),
                        Ok(None) => break,
                        Err(FollowEnded::Lagged) => {
                            feed.record_dropped();
                            return;
                        }
                        Err(FollowEnded::Closed) => return,
                    }
                    if batch.len() == MAX_BATCH {
                        break;
                    }
                    next = source.try_recv();
                }
                if !send(&feed, &tx, joined(batch)) {
                    return;
                }
            }
            _ = keep_alive.tick() => {
                if !send(&feed, &tx, Some(Bytes::from_static(b":\n\n"))) {
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

/// The pieces as one; a single piece as it is (its bytes may be shared with other clients).
fn joined(mut pieces: Vec<Bytes>) -> Option<Bytes> {
    match pieces.len() {
        0 => None,
        1 => pieces.pop(),
        _ => {
            let mut out = bytes::BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
            pieces.iter().for_each(|p| out.extend_from_slice(p));
            Some(out.freeze())
        }
    }
}

/// Queues `piece` for the client; false when the client is gone or too slow (counted).
fn send(feed: &Feed, tx: &Queue, piece: Option<Bytes>) -> bool {
    let Some(piece) = piece else { return true };
    let len = piece.len();
    if tx.bytes.load(Ordering::Relaxed) + len > CLIENT_QUEUE_BYTES {
        feed.record_dropped();
        return false;
    }
    tx.bytes.fetch_add(len, Ordering::Relaxed);
    tx.tx.send(piece).is_ok()
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

/// An item as the stream sends it, made once for every client (`Item::rendered`).
struct Rendered {
    /// Its events, each ending in a blank line, with the metric each is about: one per metric
    /// of a pack, or the one alert.
    pieces: Vec<(String, String)>,
    /// Every piece and the id: what a client that filters none of it out gets.
    whole: Bytes,
}

fn render(run: u64, item: &Item) -> Rendered {
    let mut pieces = Vec::new();
    match &item.event {
        Event::Stored(pack) => {
            for series in &pack.series {
                // The feed carries values as numbers, and says which are booleans.
                let kind = if series.boolean { ValueKind::Boolean } else { ValueKind::Number };
                let body = ReadingsEvent {
                    device: &pack.device,
                    kind: &pack.kind,
                    metric: &series.metric,
                    unit: series.unit.as_deref(),
                    points: series
                        .points
                        .iter()
                        .map(|&(t_ms, v)| StreamPoint { t_ms, v: super::ValueOut::of(v, kind) })
                        .collect(),
                };
                pieces.push((series.metric.clone(), event("readings", &body)));
            }
        }
        Event::Alert(change) => pieces.push((change.metric.clone(), event("alert", &AlertEvent::from(&**change)))),
    }
    let whole = with_id(pieces.iter().map(|(_, text)| text.as_str()), run, item.id);
    Rendered { pieces, whole }
}

/// The events `texts`, the last one with the id: a client that resumes after it has had
/// them all.
fn with_id<'a>(texts: impl Iterator<Item = &'a str>, run: u64, id: u64) -> Bytes {
    let mut out: String = texts.collect();
    if out.is_empty() {
        return Bytes::new();
    }
    // The last event's blank line ends it: the id goes just before.
    out.pop();
    out.push_str(&format!("id: {run}-{id}\n\n"));
    Bytes::from(out)
}

/// What a client with `filter` gets of `item`; `None` if the filter keeps none of it.
fn encode(state: &AppState, filter: &Filter, run: u64, item: &Item) -> Option<Bytes> {
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
        return None;
    }
    let rendered = item.rendered(|item| render(run, item))?;
    let bytes = match (&item.event, &filter.metrics) {
        (Event::Stored(_), Some(_)) => with_id(
            rendered.pieces.iter().filter(|(metric, _)| filter.metric(metric)).map(|(_, text)| text.as_str()),
            run,
            item.id,
        ),
        _ => rendered.whole.clone(),
    };
    (!bytes.is_empty()).then_some(bytes)
}

/// An alert passes a kind filter when its device is of one of the kinds.
fn alert_kind(state: &AppState, filter: &Filter, change: &AlertChange) -> bool {
    filter.kinds.is_none() || state.store.device(&change.device).is_some_and(|d| filter.kind(&d.kind))
}

/// One event: its name and its data, a JSON object on one line.
fn event(name: &str, data: &impl Serialize) -> String {
    // A struct of strings and numbers: serialising cannot fail, and the JSON has no newline.
    let json = serde_json::to_string(data).unwrap_or_default();
    format!("event: {name}\ndata: {json}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

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
