//! From one publish to stored points: topic, size, decode, contract checks, store; and the
//! thread that feeds it from the broker link.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mekong_schema::limits::MAX_NAME_LEN;
use mekong_schema::senml::{self, DecodeOptions};
use mekong_schema::{topic, DeviceKind, Record, RecordError, Value};
use mekong_store::{NewPoint, Store, StoreError, WriteSummary};
use rumqttd::Notification;

use crate::broker::Link;
use crate::registry::Registry;
use crate::stats::{RejectionEntry, Stats, HEAD_BYTES, TOPIC_CHARS};

/// Options of the ingest path.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Payloads larger than this are refused (the broker's own packet limit is higher, so that
    /// such a payload reaches the pipeline and is recorded with its reason).
    pub max_payload_bytes: usize,
    /// Packs with more records than this are refused.
    pub max_records_per_pack: usize,
    /// How many recent rejections the log keeps.
    pub rejection_log_capacity: usize,
    /// Refuse devices that are not in the registry.
    pub require_registration: bool,
    /// Known devices and their kinds.
    pub registry: Registry,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            max_payload_bytes: 64 * 1024,
            max_records_per_pack: 4096,
            rejection_log_capacity: 1000,
            require_registration: false,
            registry: Registry::new(),
        }
    }
}

/// A pack that was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The device that sent it.
    pub device: String,
    /// What the store did with its readings.
    pub summary: WriteSummary,
}

/// A publish that was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The device, when the topic holds a valid id.
    pub device: Option<String>,
    /// Short stable name of the reason.
    pub kind: &'static str,
    /// The reason, for people.
    pub reason: String,
}

impl Rejection {
    fn new(device: Option<&str>, kind: &'static str, reason: impl Into<String>) -> Self {
        Rejection { device: device.map(Into::into), kind, reason: reason.into() }
    }
}

#[derive(Debug)]
struct Reading {
    metric: String,
    unit: Option<String>,
    time_ms: i64,
    value: f64,
}

/// The ingest path, without the broker: usable on its own in tests.
#[derive(Debug)]
pub struct Pipeline {
    opts: PipelineOptions,
    store: Store,
    stats: Arc<Stats>,
    readings: Vec<Reading>,
}

impl Pipeline {
    /// A pipeline writing to `store` and counting into `stats`.
    pub fn new(opts: PipelineOptions, store: Store, stats: Arc<Stats>) -> Self {
        Pipeline { opts, store, stats, readings: Vec::new() }
    }

    /// Handles one publish received at `now_ms`, records the outcome in the stats, and
    /// returns it; `None` for topics that carry no readings (downlinks).
    pub fn handle(&mut self, topic: &[u8], payload: &[u8], now_ms: i64) -> Option<Result<Accepted, Rejection>> {
        if std::str::from_utf8(topic).is_ok_and(topic::is_downlink) {
            return None;
        }
        self.stats.record_received();
        let outcome = self.process(topic, payload, now_ms);
        match &outcome {
            Ok(a) => self.stats.record_accepted(&a.device, a.summary.stored, a.summary.duplicates),
            Err(r) => {
                tracing::debug!(device = ?r.device, kind = r.kind, reason = %r.reason, "publish refused");
                self.stats.record_rejection(RejectionEntry {
                    time_ms: now_ms,
                    topic: String::from_utf8_lossy(topic).chars().take(TOPIC_CHARS).collect(),
                    device: r.device.clone(),
                    kind: r.kind,
                    reason: r.reason.clone(),
                    payload_len: payload.len(),
                    head: payload[..payload.len().min(HEAD_BYTES)].to_vec(),
                });
            }
        }
        Some(outcome)
    }

    fn process(&mut self, topic: &[u8], payload: &[u8], now_ms: i64) -> Result<Accepted, Rejection> {
        let topic = std::str::from_utf8(topic).map_err(|_| Rejection::new(None, "bad_topic", "topic is not utf-8"))?;
        let device = topic::parse_uplink(topic).map_err(|e| Rejection::new(None, "bad_topic", e.to_string()))?;
        let registered = self.opts.registry.kind(device);
        if self.opts.require_registration && registered.is_none() {
            return Err(Rejection::new(Some(device), "unknown_device", "device is not registered"));
        }
        if payload.len() > self.opts.max_payload_bytes {
            let reason =
                format!("payload of {} bytes is over the limit of {}", payload.len(), self.opts.max_payload_bytes);
            return Err(Rejection::new(Some(device), "too_large", reason));
        }

        self.readings.clear();
        let readings = &mut self.readings;
        let opts = DecodeOptions { now: now_ms as f64 / 1000.0, max_records: self.opts.max_records_per_pack };
        senml::decode_pack(payload, opts, &mut |r: Record<'_>| {
            let Value::Number(value) = r.value else {
                return Err(RecordError::Refused("only numeric values (v) are stored"));
            };
            let mut name = [0u8; MAX_NAME_LEN];
            readings.push(Reading {
                metric: r.name_into(&mut name).to_owned(),
                unit: r.unit.map(str::to_owned),
                time_ms: (r.time * 1000.0).round() as i64,
                value,
            });
            Ok(())
        })
        .map_err(|e| Rejection::new(Some(device), e.kind(), e.to_string()))?;
        if self.readings.is_empty() {
            return Err(Rejection::new(Some(device), "empty_pack", "pack has no records"));
        }

        let kind = registered
            .or_else(|| self.store.device(device).and_then(|d| DeviceKind::parse(&d.kind)))
            .filter(|k| *k != DeviceKind::Unknown)
            .or_else(|| self.readings.iter().find_map(|r| DeviceKind::of_metric(&r.metric)))
            .unwrap_or(DeviceKind::Unknown);
        let points: Vec<NewPoint<'_>> = self
            .readings
            .iter()
            .map(|r| NewPoint { metric: &r.metric, unit: r.unit.as_deref(), time_ms: r.time_ms, value: r.value })
            .collect();
        match self.store.write(device, kind.as_str(), now_ms, &points) {
            Ok(summary) => Ok(Accepted { device: device.to_owned(), summary }),
            Err(e @ StoreError::UnitMismatch { .. }) => {
                Err(Rejection::new(Some(device), "unit_mismatch", e.to_string()))
            }
            Err(e) => {
                tracing::error!(device, error = %e, "store write failed");
                Err(Rejection::new(Some(device), "store_error", e.to_string()))
            }
        }
    }
}

/// Counts messages skipped by the broker from the gaps in the offsets of the link's filter log.
#[derive(Debug, Default)]
pub(crate) struct Gaps {
    next: u64,
}

impl Gaps {
    /// Notes a message at `offset`; returns how many were skipped before it.
    pub(crate) fn observe(&mut self, offset: u64) -> u64 {
        let skipped = offset.saturating_sub(self.next);
        self.next = self.next.max(offset + 1);
        skipped
    }
}

/// How long the thread waits for a message before it looks at the stop flag again.
const POLL: Duration = Duration::from_millis(100);

/// The ingest thread: feeds every publish from the link to the pipeline until `stop` is set,
/// then handles what the link already holds and returns.
pub(crate) fn run(mut link: Link, pipeline: &mut Pipeline, stop: &AtomicBool) {
    let mut gaps = Gaps::default();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let deadline = if stopping { Instant::now() } else { Instant::now() + POLL };
        match link.rx.recv_deadline(deadline) {
            Ok(Some(Notification::Forward(forward))) => {
                if let Some((_, offset)) = forward.cursor {
                    let skipped = gaps.observe(offset);
                    if skipped > 0 {
                        tracing::warn!(skipped, "broker skipped messages: the ingest path fell behind its log");
                        pipeline.stats.record_lost(skipped);
                    }
                }
                pipeline.handle(&forward.publish.topic, &forward.publish.payload, now_ms());
            }
            Ok(Some(Notification::Unschedule)) => {
                // The router stops sending until told the link is ready again.
                if let Err(e) = link.rx.ready() {
                    tracing::error!(error = %e, "broker link closed");
                    return;
                }
            }
            Ok(Some(_)) | Ok(None) => {}
            Err(_) if stopping => return,
            // recv_deadline fails at once when the router is gone, and at the deadline when
            // nothing came: only the first is an error.
            Err(e) if Instant::now() < deadline => {
                tracing::error!(error = %e, "broker link closed");
                return;
            }
            Err(_) => {}
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests;
