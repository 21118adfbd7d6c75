//! `GET /v1/stream`: Server-Sent Events of readings once they are durable and of alert
//! changes, filtered, resumable over the feed's recent window.
//!
//! Each client has a task of its own between the feed and its connection, with a bounded
//! queue: a client that reads slower than the feed fills its queue, or falls behind the feed
//! itself, and is dropped and counted (`stream.dropped` in `/v1/stats`). Nothing a client
//! does ever slows the ingest path, which only publishes into the feed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use mekong_feed::{AlertChange, Event, Feed, Item, Stored};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use utoipa::{IntoParams, ToSchema};

use super::kind_filter;
use crate::csv::ChannelBody;
use crate::error::{ApiError, ErrorBody};
use crate::AppState;

/// Events a client's queue holds before the client counts as too slow and is dropped (its
/// connection's own buffers come on top).
const CLIENT_QUEUE: usize = 1024;

/// A comment line this often keeps proxies and clients from timing out an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What a client that lost its connection should wait before it reconnects, in ms.
const RETRY_MS: u32 = 2000;

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

/// A reading in the stream: time in ms since the epoch, and value.
#[derive(Serialize, ToSchema)]
pub struct StreamPoint {
    t_ms: i64,
    v: f64,
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
    let (missed, rx) = match last_event_id(&headers) {
        None => (Vec::new(), feed.subscribe()),
        Some((run, id)) => match (run == feed.run_id()).then(|| feed.resume(id)).flatten() {
            Some(resumed) => resumed,
            None => {
                head.push_str(
                    "event: reset\ndata: {\"reason\":\"the events after Last-Event-ID are no longer held\"}\n\n",
                );
                (Vec::new(), feed.subscribe())
            }
        },
    };
    let (tx, body) = mpsc::channel(CLIENT_QUEUE);
    // Cannot fail: the channel is new and has room.
    let _ = tx.try_send(Ok(Bytes::from(head)));
    tokio::spawn(forward(state, filter, missed, rx, tx));
    let mut response = Body::new(ChannelBody::new(body)).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx would otherwise hold the events back in its buffer.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Moves events from the feed to one client until it hangs up or falls behind.
async fn forward(
    state: AppState,
    filter: Filter,
    missed: Vec<Arc<Item>>,
    mut rx: broadcast::Receiver<Arc<Item>>,
    tx: mpsc::Sender<Result<Bytes, ApiError>>,
) {
    let feed = state.feed.clone();
    let run = feed.run_id();
    let mut text = String::new();
    for item in missed {
        if !send(&feed, &tx, encode(&state, &filter, run, &item, &mut text)) {
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
            item = rx.recv() => match item {
                Ok(item) => {
                    if !send(&feed, &tx, encode(&state, &filter, run, &item, &mut text)) {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    feed.record_dropped();
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = keep_alive.tick() => {
                if !send(&feed, &tx, Some(Bytes::from_static(b":\n\n"))) {
                    return;
                }
            }
            () = tx.closed() => return,
        }
    }
}

/// Queues `piece` for the client; false when the client is gone or too slow (counted).
fn send(feed: &Feed, tx: &mpsc::Sender<Result<Bytes, ApiError>>, piece: Option<Bytes>) -> bool {
    let Some(piece) = piece else { return true };
    match tx.try_send(Ok(piece)) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            feed.record_dropped();
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// The SSE text of `item` for a client with `filter`; `None` if the filter keeps none of
/// it. The id goes on the last event only: a client that resumes after it has had the
/// whole item.
fn encode(state: &AppState, filter: &Filter, run: u64, item: &Item, text: &mut String) -> Option<Bytes> {
    text.clear();
    match &item.event {
        Event::Stored(pack) => readings(filter, pack, text),
        Event::Alert(change) => {
            if filter.alerts
                && filter.device(&change.device)
                && filter.metric(&change.metric)
                && alert_kind(state, filter, change)
            {
                event(text, "alert", &AlertEvent::from(&**change));
            }
        }
    }
    if text.is_empty() {
        return None;
    }
    // The last event's blank line ends it: the id goes just before.
    text.truncate(text.len() - 1);
    text.push_str(&format!("id: {run}-{}\n\n", item.id));
    Some(Bytes::from(std::mem::take(text)))
}

fn readings(filter: &Filter, pack: &Stored, text: &mut String) {
    if !(filter.readings && filter.kind(&pack.kind) && filter.device(&pack.device)) {
        return;
    }
    for series in pack.series.iter().filter(|s| filter.metric(&s.metric)) {
        let body = ReadingsEvent {
            device: &pack.device,
            kind: &pack.kind,
            metric: &series.metric,
            unit: series.unit.as_deref(),
            points: series.points.iter().map(|&(t_ms, v)| StreamPoint { t_ms, v }).collect(),
        };
        event(text, "readings", &body);
    }
}

/// An alert passes a kind filter when its device is of one of the kinds.
fn alert_kind(state: &AppState, filter: &Filter, change: &AlertChange) -> bool {
    filter.kinds.is_none() || state.store.device(&change.device).is_some_and(|d| filter.kind(&d.kind))
}

fn event(text: &mut String, name: &str, data: &impl Serialize) {
    // A struct of strings and numbers: serialising cannot fail, and the JSON has no newline.
    if let Ok(json) = serde_json::to_string(data) {
        text.push_str("event: ");
        text.push_str(name);
        text.push_str("\ndata: ");
        text.push_str(&json);
        text.push_str("\n\n");
    }
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
