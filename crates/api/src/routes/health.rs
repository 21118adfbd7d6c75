//! Liveness, ingest counters as JSON, and Prometheus metrics.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use mekong_store::Health as StoreHealth;
use serde::Serialize;
use utoipa::ToSchema;

use crate::health::{self, Figures, Status};
use crate::AppState;

/// `GET /healthz` body.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `degraded` (storing, but something needs an operator) or `failing` (not
    /// storing).
    status: &'static str,
    /// Why it is not `ok`.
    reasons: Vec<HealthReason>,
    devices: usize,
    points: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk: Option<Disk>,
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<StoreFailure>,
}

/// One reason for a state other than `ok`.
#[derive(Serialize, ToSchema)]
pub struct HealthReason {
    check: &'static str,
    detail: String,
}

/// The data directory's filesystem.
#[derive(Serialize, ToSchema)]
pub struct Disk {
    free_bytes: u64,
    total_bytes: u64,
}

/// Why the store cannot write, in a failing answer.
#[derive(Serialize, ToSchema)]
pub struct StoreFailure {
    /// The failure began at, RFC 3339 and epoch ms.
    since: String,
    since_ms: i64,
    /// sled's error (an I/O error names the errno, such as "No space left on device").
    error: String,
    /// Times the database was opened afresh since.
    reopens: u32,
}

/// The figures `/healthz` and the metrics judge, read now.
fn figures(state: &AppState) -> (Figures, Option<StoreFailure>) {
    let snapshot = state.stats.snapshot();
    let failure = match state.store.health() {
        StoreHealth::Writable => None,
        StoreHealth::Failing { since, cause, reopens } => {
            let since_ms = since.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            Some(StoreFailure { since: crate::time::format(since_ms), since_ms, error: cause, reopens })
        }
    };
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let figures = Figures {
        now_ms,
        started_ms: snapshot.started_ms,
        store_failure: failure.as_ref().map(|f| f.error.clone()),
        disk: state.store.disk_space(),
        last_lost_ms: snapshot.last_lost_ms,
        last_upkeep_ms: snapshot.last_upkeep_ms,
    };
    (figures, failure)
}

/// `GET /healthz`: 200 `ok` or `degraded` (with reasons: disk space under
/// `storage.min_free_bytes`, messages lost at the broker in the last minutes, the upkeep
/// behind), 503 `failing` while the store cannot write (a full disk): readings are then
/// neither stored nor acknowledged, and devices keep them until it can.
#[utoipa::path(get, path = "/healthz",
    operation_id = "health", tag = "meta", responses(
    (status = 200, description = "`ok` or `degraded`", body = Health),
    (status = 503, description = "`failing`: the store cannot write", body = Health),
))]
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let (figures, store) = figures(&state);
    let (status, reasons) = health::assess(&figures, &state.health);
    let code = if status == Status::Failing { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let health = Health {
        status: status.as_str(),
        reasons: reasons.into_iter().map(|r| HealthReason { check: r.check, detail: r.detail }).collect(),
        devices: state.store.device_count(),
        points: state.store.point_count(),
        disk: figures.disk.map(|d| Disk { free_bytes: d.free, total_bytes: d.total }),
        store,
    };
    (code, Json(health))
}

/// `GET /v1/stats` body.
#[derive(Serialize, ToSchema)]
pub struct Stats {
    received: u64,
    accepted: u64,
    readings: u64,
    duplicates: u64,
    rejected: u64,
    rejected_by_kind: BTreeMap<&'static str, u64>,
    lost: u64,
    deferred: u64,
    withheld: u64,
    durable_packs: u64,
    durable_readings: u64,
    flushes: u64,
    flush_micros: u64,
    downlinks: u64,
    mqtt: MqttRefusals,
    stream: StreamStats,
    /// The feed to the upstream broker; absent when `[forward]` is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    forward: Option<ForwardStats>,
}

/// The feed of accepted packs to the upstream broker (the regional data centre), in
/// `GET /v1/stats`.
#[derive(Serialize, ToSchema)]
pub struct ForwardStats {
    /// Connected to the upstream broker now.
    connected: bool,
    /// Packs accepted and not yet acknowledged upstream.
    queued_packs: u64,
    /// Their bytes in the store.
    queued_bytes: u64,
    /// Packs the upstream acknowledged since start.
    sent_packs: u64,
    /// Their readings.
    sent_readings: u64,
    /// Packs published again after a reconnect (a consumer dedupes them by `mekong-seq`).
    resent_packs: u64,
    /// Connection and publish errors since start.
    errors: u64,
    /// Packs dropped from a full outbox (still in the store), since start.
    dropped_packs: u64,
    /// Their readings.
    dropped_readings: u64,
    /// Sequence number up to which every pack is acknowledged upstream.
    position: u64,
    /// From acceptance to the upstream's acknowledgement, of the last pack acknowledged, in ms.
    lag_ms: i64,
}

/// The live stream (`/v1/stream`), in `GET /v1/stats`.
#[derive(Serialize, ToSchema)]
pub struct StreamStats {
    /// Events published since start (packs' readings and alert changes).
    events: u64,
    /// Clients following the stream now.
    clients: u64,
    /// Clients disconnected because they read too slowly.
    dropped: u64,
}

/// What the broker refused, in `GET /v1/stats`.
#[derive(Serialize, ToSchema)]
pub struct MqttRefusals {
    /// Connections refused at CONNECT, by reason.
    connects_refused: BTreeMap<&'static str, u64>,
    /// Publishes and subscriptions outside an identity's topics, by identity.
    access_refused: BTreeMap<String, AccessRefused>,
}

/// One identity's refused publishes and subscriptions.
#[derive(Serialize, ToSchema)]
pub struct AccessRefused {
    publishes: u64,
    subscriptions: u64,
}

/// `GET /v1/stats`: what the ingest path has done since start.
#[utoipa::path(get, path = "/v1/stats",
    operation_id = "stats", tag = "meta", responses((status = 200, description = "ingest counters since start", body = Stats)))]
pub async fn stats(State(state): State<AppState>) -> Json<Stats> {
    let s = state.stats.snapshot();
    Json(Stats {
        received: s.received,
        accepted: s.accepted,
        readings: s.readings,
        duplicates: s.duplicates,
        rejected: s.rejected,
        rejected_by_kind: s.rejected_by_kind,
        lost: s.lost,
        deferred: s.deferred,
        withheld: s.withheld,
        durable_packs: s.durable_packs,
        durable_readings: s.durable_readings,
        flushes: s.flushes,
        flush_micros: s.flush_micros,
        downlinks: s.downlinks,
        mqtt: MqttRefusals {
            connects_refused: s.connects_refused,
            access_refused: s
                .access_refused
                .into_iter()
                .map(|(identity, r)| {
                    (identity, AccessRefused { publishes: r.publishes, subscriptions: r.subscriptions })
                })
                .collect(),
        },
        stream: {
            let f = state.feed.stats();
            StreamStats { events: f.events, clients: f.followers, dropped: f.dropped }
        },
        forward: s.forward.map(|f| ForwardStats {
            connected: f.connected,
            queued_packs: f.queued_packs,
            queued_bytes: f.queued_bytes,
            sent_packs: f.sent_packs,
            sent_readings: f.sent_readings,
            resent_packs: f.resent_packs,
            errors: f.errors,
            dropped_packs: f.dropped_packs,
            dropped_readings: f.dropped_readings,
            position: f.position,
            lag_ms: f.lag_ms,
        }),
    })
}

/// `GET /metrics`: the same counters in the Prometheus text format.
#[utoipa::path(get, path = "/metrics",
    operation_id = "metrics", tag = "meta", responses(
    (status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain"),
))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let s = state.stats.snapshot();
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
    };
    counter("mekong_ingest_received_total", "Publishes received by the ingest path.", s.received);
    counter("mekong_ingest_accepted_total", "Packs accepted and stored.", s.accepted);
    counter("mekong_ingest_readings_total", "Readings stored as new points.", s.readings);
    counter("mekong_ingest_duplicates_total", "Readings already stored (resends).", s.duplicates);
    counter("mekong_ingest_lost_total", "Publishes skipped by the broker because ingest fell behind.", s.lost);
    counter(
        "mekong_ingest_deferred_total",
        "Packs not stored because the store could not write; left unanswered for a resend.",
        s.deferred,
    );
    counter(
        "mekong_ingest_withheld_total",
        "Answers not sent because the flush of their store state failed.",
        s.withheld,
    );
    counter("mekong_ingest_durable_packs_total", "Packs flushed to disk.", s.durable_packs);
    counter("mekong_ingest_durable_readings_total", "Readings flushed to disk.", s.durable_readings);
    counter("mekong_ingest_flushes_total", "Store flushes (group commits).", s.flushes);
    counter("mekong_ingest_flush_microseconds_total", "Time spent flushing the store.", s.flush_micros);
    counter("mekong_ingest_downlinks_total", "Acknowledgements and refusals sent to devices.", s.downlinks);
    let f = state.feed.stats();
    counter("mekong_stream_events_total", "Events published on the live stream.", f.events);
    counter("mekong_stream_dropped_total", "Stream clients disconnected for reading too slowly.", f.dropped);
    let _ = writeln!(
        out,
        "# HELP mekong_stream_clients Clients following the live stream.\n# TYPE mekong_stream_clients gauge\nmekong_stream_clients {}",
        f.followers
    );
    if let Some(f) = s.forward {
        let mut metric = |name: &str, kind: &str, help: &str, value: i128| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        metric("mekong_forward_connected", "gauge", "1 while connected to the upstream broker.", f.connected.into());
        metric(
            "mekong_forward_queued_packs",
            "gauge",
            "Packs accepted, not yet acknowledged upstream.",
            f.queued_packs.into(),
        );
        metric("mekong_forward_queued_bytes", "gauge", "Bytes of the upstream outbox.", f.queued_bytes.into());
        metric(
            "mekong_forward_sent_packs_total",
            "counter",
            "Packs acknowledged by the upstream broker.",
            f.sent_packs.into(),
        );
        metric(
            "mekong_forward_sent_readings_total",
            "counter",
            "Readings acknowledged by the upstream broker.",
            f.sent_readings.into(),
        );
        metric(
            "mekong_forward_resent_packs_total",
            "counter",
            "Packs published again after a reconnect.",
            f.resent_packs.into(),
        );
        metric("mekong_forward_errors_total", "counter", "Upstream connection and publish errors.", f.errors.into());
        metric(
            "mekong_forward_dropped_packs_total",
            "counter",
            "Packs dropped from a full outbox (still in the store).",
            f.dropped_packs.into(),
        );
        metric(
            "mekong_forward_dropped_readings_total",
            "counter",
            "Readings dropped from a full outbox (still in the store).",
            f.dropped_readings.into(),
        );
        metric(
            "mekong_forward_position",
            "gauge",
            "Sequence number up to which every pack is acknowledged upstream.",
            f.position.into(),
        );
        metric(
            "mekong_forward_lag_milliseconds",
            "gauge",
            "Acceptance to upstream acknowledgement, of the last pack acknowledged.",
            f.lag_ms.into(),
        );
    }
    let _ = writeln!(
        out,
        "# HELP mekong_ingest_rejected_total Publishes refused, by reason.\n# TYPE mekong_ingest_rejected_total counter"
    );
    for (kind, n) in &s.rejected_by_kind {
        let _ = writeln!(out, "mekong_ingest_rejected_total{{reason=\"{kind}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP mekong_mqtt_connects_refused_total MQTT connections refused at CONNECT, by reason.\n# TYPE \
         mekong_mqtt_connects_refused_total counter"
    );
    for (reason, n) in &s.connects_refused {
        let _ = writeln!(out, "mekong_mqtt_connects_refused_total{{reason=\"{reason}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP mekong_mqtt_access_refused_total Publishes and subscriptions refused, by identity.\n# TYPE \
         mekong_mqtt_access_refused_total counter"
    );
    // Identity names are [a-z0-9-] (or `anonymous`): nothing to escape in a label.
    for (identity, r) in &s.access_refused {
        for (action, n) in [("publish", r.publishes), ("subscribe", r.subscriptions)] {
            let _ =
                writeln!(out, "mekong_mqtt_access_refused_total{{identity=\"{identity}\",action=\"{action}\"}} {n}");
        }
    }
    let (figures, _) = figures(&state);
    let (status, _) = health::assess(&figures, &state.health);
    let _ = writeln!(
        out,
        "# HELP mekong_health 0 ok, 1 degraded (storing, but something needs an operator), 2 failing (not \
         storing).\n# TYPE mekong_health gauge\nmekong_health {}",
        status as u8
    );
    if let Some(disk) = figures.disk {
        let _ = writeln!(
            out,
            "# HELP mekong_disk_free_bytes Free bytes on the data directory's filesystem.\n# TYPE \
             mekong_disk_free_bytes gauge\nmekong_disk_free_bytes {}\n# HELP mekong_disk_total_bytes Size of \
             the data directory's filesystem.\n# TYPE mekong_disk_total_bytes gauge\nmekong_disk_total_bytes {}",
            disk.free, disk.total
        );
    }
    if let Some(t) = figures.last_upkeep_ms {
        let _ = writeln!(
            out,
            "# HELP mekong_upkeep_last_pass_timestamp_seconds When the store's upkeep last finished a pass.\n# \
             TYPE mekong_upkeep_last_pass_timestamp_seconds gauge\nmekong_upkeep_last_pass_timestamp_seconds {}",
            t / 1000
        );
    }
    let writable = u8::from(matches!(state.store.health(), StoreHealth::Writable));
    let _ = writeln!(
        out,
        "# HELP mekong_store_writable 1 if the store can write, 0 while it cannot (a full disk).\n# TYPE \
         mekong_store_writable gauge\nmekong_store_writable {writable}"
    );
    let _ = writeln!(
        out,
        "# HELP mekong_store_points Points stored.\n# TYPE mekong_store_points gauge\nmekong_store_points {}",
        state.store.point_count()
    );
    let (records, bytes) = state.store.log_size();
    let _ = writeln!(
        out,
        "# HELP mekong_store_log_records Records of the store's write log (a write group, one per 7 KiB), not yet \
         folded into its tree.\n# TYPE \
         mekong_store_log_records gauge\nmekong_store_log_records {records}\n# HELP mekong_store_log_bytes Bytes \
         those hold in memory until folded.\n# TYPE mekong_store_log_bytes gauge\nmekong_store_log_bytes {bytes}"
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
