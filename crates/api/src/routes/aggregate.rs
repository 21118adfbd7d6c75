//! Aggregates in time buckets: of one series, or of one metric across the devices of a kind.
//!
//! Buckets are aligned to the Unix epoch (UTC): with `step=1d` a bucket is a UTC day, unless
//! `tz` names a zone whose calendar days the buckets follow (`calendar.rs`). Only
//! buckets that hold points are returned. With a step of whole hours the store reads the
//! hourly rollups of folded hours and the points elsewhere, so long ranges are cheap
//! (`Store::aggregate`).

use std::time::{Duration, Instant};

use axum::extract::rejection::{PathRejection, QueryRejection};
use std::fmt::Write;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mekong_store::{Bucket, Store, ValueKind};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::series::series_range;
use super::{kind_filter, ValueOut};
use crate::blocking::QueryPool;
use crate::calendar::Buckets;
use crate::error::{ApiError, ErrorBody};
use crate::{csv, time, AppState};

/// Most buckets one request may span.
pub const MAX_BUCKETS: i64 = 100_000;

/// A point inside a bucket (its first or last).
#[derive(Serialize, ToSchema)]
pub struct At {
    t_ms: i64,
    v: ValueOut,
}

/// One bucket. Of a series of booleans: `min` is whether all were true, `max` whether any
/// was, `first` and `last` booleans; `sum` counts the true ones and `avg` is their share.
#[derive(Serialize, ToSchema)]
pub struct BucketOut {
    t: String,
    t_ms: i64,
    count: u64,
    min: ValueOut,
    max: ValueOut,
    sum: f64,
    avg: f64,
    first: At,
    last: At,
}

impl BucketOut {
    fn new(b: Bucket, kind: ValueKind) -> Self {
        BucketOut {
            t: time::format(b.start_ms),
            t_ms: b.start_ms,
            count: b.count,
            min: ValueOut::of(b.min, kind),
            max: ValueOut::of(b.max, kind),
            sum: b.sum,
            avg: b.avg(),
            first: At { t_ms: b.first.time_ms, v: ValueOut::of(b.first.value, kind) },
            last: At { t_ms: b.last.time_ms, v: ValueOut::of(b.last.value, kind) },
        }
    }
}

/// `GET /v1/devices/{device}/series/{metric}/aggregate` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AggregateQuery {
    /// Start of the range (inclusive), RFC 3339 or epoch ms; default: the series' first point.
    #[param(
        pattern = r"^(-?[0-9]{1,18}|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2}))$"
    )]
    from: Option<String>,
    /// End of the range (exclusive), RFC 3339 or epoch ms; default: just after its last point.
    #[param(
        pattern = r"^(-?[0-9]{1,18}|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2}))$"
    )]
    to: Option<String>,
    /// Bucket length: `500ms`, `30s`, `15m`, `1h`, `1d`, or milliseconds; or calendar weeks
    /// (`1w`: ISO weeks, Monday to Monday) and months (`1mo`; `3mo` are quarters).
    #[param(pattern = "^0*[1-9][0-9]{0,11}(ms|s|m|h|d|w|mo)?$", required = true)]
    step: Option<String>,
    /// An IANA time zone (`Asia/Ho_Chi_Minh`, `Europe/Berlin`): with a step of whole days,
    /// weeks or months, buckets are that zone's calendar days (23 or 25 hours across a
    /// daylight-saving change), weeks or months instead of UTC ones.
    tz: Option<String>,
    /// `json` (the default) or `csv` (also chosen by `Accept: text/csv`): one row per bucket,
    /// streamed.
    #[param(pattern = "^(json|csv)$")]
    format: Option<String>,
}

/// `GET /v1/aggregate` query: that of one series, with the metric and the devices' kind, and
/// a range that must be given.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ManyQuery {
    /// The metric to aggregate.
    #[param(required = true)]
    metric: Option<String>,
    /// Only devices of this kind.
    #[param(pattern = "^(traffic|water|air|unknown)$")]
    kind: Option<String>,
    /// Start of the range (inclusive), RFC 3339 or epoch ms.
    #[param(
        pattern = r"^(-?[0-9]{1,18}|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2}))$",
        required = true
    )]
    from: Option<String>,
    /// End of the range (exclusive), RFC 3339 or epoch ms.
    #[param(
        pattern = r"^(-?[0-9]{1,18}|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2}))$",
        required = true
    )]
    to: Option<String>,
    /// As for one series.
    #[param(pattern = "^0*[1-9][0-9]{0,11}(ms|s|m|h|d|w|mo)?$", required = true)]
    step: Option<String>,
    /// As for one series.
    tz: Option<String>,
    /// As for one series.
    #[param(pattern = "^(json|csv)$")]
    format: Option<String>,
}

/// `GET /v1/devices/{device}/series/{metric}/aggregate` body.
#[derive(Serialize, ToSchema)]
pub struct SeriesAggregate {
    device: String,
    metric: String,
    unit: Option<String>,
    /// `number` or `boolean`: what the buckets' `min`, `max`, `first` and `last` are.
    value_kind: &'static str,
    from_ms: i64,
    to_ms: i64,
    /// The step's nominal length: with `tz`, its days of 24 hours (a local day may be 23 or
    /// 25); a week 7 days, a month an average Gregorian month (2,629,746,000 ms).
    step_ms: i64,
    /// The time zone of the calendar days, if asked for.
    tz: Option<String>,
    buckets: Vec<BucketOut>,
}

fn checked_range(from_ms: i64, to_ms: i64, step_ms: i64) -> Result<(), ApiError> {
    if from_ms >= to_ms {
        return Err(ApiError::BadRequest(format!("from ({from_ms}) must be before to ({to_ms})")));
    }
    let buckets = (to_ms - from_ms) / step_ms;
    if buckets > MAX_BUCKETS {
        return Err(ApiError::BadRequest(format!(
            "the range spans {buckets} buckets of {step_ms} ms, more than {MAX_BUCKETS}: use a larger step"
        )));
    }
    Ok(())
}

fn buckets_of(step: Option<&str>, tz: Option<&str>) -> Result<Buckets, ApiError> {
    let step = step.ok_or_else(|| ApiError::BadRequest("step is required (such as 1m, 15m, 1h, 1d)".into()))?;
    Buckets::parse(step, tz)
}

/// `GET /v1/devices/{device}/series/{metric}/aggregate?from=..&to=..&step=1h`: count, min,
/// max, sum, avg, first and last of each bucket. Without `from`/`to`, the whole series.
#[utoipa::path(get, path = "/v1/devices/{device}/series/{metric}/aggregate",
    operation_id = "aggregate_series", tag = "data",
    params(("device" = String, Path, description = "the device's id"), ("metric" = String, Path, description = "the metric's SenML name"), AggregateQuery),
    responses((status = 200, description = "the buckets of the series",
        content((SeriesAggregate = "application/json"), (String = "text/csv"))), (status = 400, description = "a malformed parameter", body = ErrorBody), (status = 404, description = "no such series", body = ErrorBody), (status = 500, description = "the server failed", body = ErrorBody)),
)]
pub async fn series(
    State(state): State<AppState>,
    State(queries): State<QueryPool>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<AggregateQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path((device, metric)) = path?;
    let Query(q) = query?;
    let as_csv = csv::wanted(q.format.as_deref(), &headers)?;
    let buckets = buckets_of(q.step.as_deref(), q.tz.as_deref())?;
    let step_ms = buckets.step_ms();
    let (series, from_ms, to_ms) = series_range(&state, &device, &metric, q.from.as_deref(), q.to.as_deref())?;
    checked_range(from_ms, to_ms, step_ms)?;
    if as_csv {
        let filename = format!("{device}_{metric}_{}.csv", q.step.as_deref().unwrap_or_default());
        let value_kind = series.value_kind;
        let cursor = SpanCursor { store: state.store.clone(), device, metric, from_ms, to_ms, buckets, value_kind };
        let (rows, more) = queries.run(move || span_piece(cursor)).await?;
        let first = format!("{}\n{rows}", BUCKET_COLUMNS);
        return Ok(csv::stream(queries, &filename, first, more, span_piece).await);
    }
    queries
        .run(move || {
            let found = buckets.aggregate(&state.store, &device, &metric, from_ms, to_ms)?.unwrap_or_default();
            let body = SeriesAggregate {
                device,
                metric,
                unit: series.unit,
                value_kind: series.value_kind.as_str(),
                from_ms,
                to_ms,
                step_ms,
                tz: q.tz,
                buckets: found.into_iter().map(|b| BucketOut::new(b, series.value_kind)).collect(),
            };
            // Up to `MAX_BUCKETS` buckets of JSON: written here too, not on an async worker.
            Ok(Json(body).into_response())
        })
        .await
}

/// One series in a many-series aggregate.
#[derive(Serialize, ToSchema)]
pub struct DeviceAggregate {
    device: String,
    unit: Option<String>,
    /// `number` or `boolean`, as for one series.
    value_kind: &'static str,
    buckets: Vec<BucketOut>,
}

/// `GET /v1/aggregate` body.
#[derive(Serialize, ToSchema)]
pub struct ManyAggregate {
    kind: Option<&'static str>,
    metric: String,
    from_ms: i64,
    to_ms: i64,
    /// The step's nominal length: with `tz`, its days of 24 hours (a local day may be 23 or
    /// 25); a week 7 days, a month an average Gregorian month (2,629,746,000 ms).
    step_ms: i64,
    /// The time zone of the calendar days, if asked for.
    tz: Option<String>,
    series: Vec<DeviceAggregate>,
}

/// `GET /v1/aggregate?kind=water&metric=water_level&from=..&to=..&step=1h`: the buckets of
/// metric `metric` for every device (of kind `kind`, if given) that has it. `from` and `to`
/// are required.
#[utoipa::path(get, path = "/v1/aggregate",
    operation_id = "aggregate_devices", tag = "data", params(ManyQuery), responses(
    (status = 200, description = "the buckets of each device that has the metric",
        content((ManyAggregate = "application/json"), (String = "text/csv"))), (status = 400, description = "a malformed parameter", body = ErrorBody), (status = 500, description = "the server failed", body = ErrorBody),
))]
pub async fn many(
    State(state): State<AppState>,
    State(queries): State<QueryPool>,
    headers: HeaderMap,
    query: Result<Query<ManyQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let as_csv = csv::wanted(q.format.as_deref(), &headers)?;
    let buckets = buckets_of(q.step.as_deref(), q.tz.as_deref())?;
    let step_ms = buckets.step_ms();
    let kind = kind_filter(q.kind.as_deref())?;
    let metric = q.metric.clone().ok_or_else(|| ApiError::BadRequest("metric is required".into()))?;
    let required = |name: &str, v: &Option<String>| {
        v.as_deref()
            .ok_or_else(|| ApiError::BadRequest(format!("{name} is required")))
            .and_then(|v| time::parse(name, v))
    };
    let (from_ms, to_ms) = (required("from", &q.from)?, required("to", &q.to)?);
    checked_range(from_ms, to_ms, step_ms)?;
    if as_csv {
        let filename = format!("{metric}_{}.csv", q.step.as_deref().unwrap_or_default());
        let left = state.store.devices_with(kind, &metric).into_iter();
        let cursor = DevicesCursor { store: state.store.clone(), metric, left, from_ms, to_ms, buckets };
        let (rows, more) = queries.run(move || devices_piece(cursor)).await?;
        let first = format!("device,{}\n{rows}", BUCKET_COLUMNS);
        return Ok(csv::stream(queries, &filename, first, more, devices_piece).await);
    }
    // Blocking tasks of a few milliseconds each rather than one for the whole fleet: a query
    // waiting for a permit gets its turn between two devices instead of after the last one,
    // and a dropped request stops there. A task per device would cost a hand-over between
    // threads per device, which a busy machine makes slow.
    let mut done = Vec::new();
    let mut left = state.store.devices_with(kind, &metric).into_iter();
    loop {
        let (store, metric, buckets, tz) = (state.store.clone(), metric.clone(), buckets.clone(), q.tz.clone());
        let slice = queries
            .run(move || {
                let started = Instant::now();
                for device in left.by_ref() {
                    let (unit, kind) =
                        store.series(&device, &metric).map_or((None, ValueKind::Number), |s| (s.unit, s.value_kind));
                    if let Some(found) = buckets.aggregate(&store, &device, &metric, from_ms, to_ms)? {
                        let buckets = found.into_iter().map(|b| BucketOut::new(b, kind)).collect();
                        done.push(DeviceAggregate { device, unit, value_kind: kind.as_str(), buckets });
                    }
                    if started.elapsed() >= SLICE {
                        break;
                    }
                }
                if left.len() > 0 {
                    return Ok(Slice::More(done, left));
                }
                let body = ManyAggregate { kind, metric, from_ms, to_ms, step_ms, tz, series: done };
                Ok(Slice::Last(Json(body).into_response()))
            })
            .await?;
        match slice {
            Slice::More(more_done, more_left) => (done, left) = (more_done, more_left),
            Slice::Last(response) => return Ok(response),
        }
    }
}

/// How long one blocking task of [`many`] works before it gives its permit back; it always
/// finishes the device it is on.
const SLICE: Duration = Duration::from_millis(2);

/// What one blocking task of [`many`] hands back: the series so far and the devices left,
/// or the response, written after the last device.
enum Slice {
    More(Vec<DeviceAggregate>, std::vec::IntoIter<String>),
    Last(Response),
}

/// The columns of a bucket in CSV: its start in both forms, the aggregates, and the time and
/// value of its first and last point.
const BUCKET_COLUMNS: &str = "t,t_ms,count,min,max,sum,avg,first_t_ms,first,last_t_ms,last";

/// Appends one bucket as a CSV row, after `device` and a comma if given.
fn bucket_row(out: &mut String, device: Option<&str>, b: &Bucket, kind: ValueKind) {
    if let Some(device) = device {
        csv::field(out, device);
        out.push(',');
    }
    time::push(out, b.start_ms);
    let _ = write!(out, ",{},{},", b.start_ms, b.count);
    ValueOut::of(b.min, kind).csv(out);
    out.push(',');
    ValueOut::of(b.max, kind).csv(out);
    let _ = write!(out, ",{},{},{},", b.sum, b.avg(), b.first.time_ms);
    ValueOut::of(b.first.value, kind).csv(out);
    let _ = write!(out, ",{},", b.last.time_ms);
    ValueOut::of(b.last.value, kind).csv(out);
    out.push('\n');
}

/// Where a CSV of one series' buckets stands: the rest of its range.
struct SpanCursor {
    store: Store,
    device: String,
    metric: String,
    from_ms: i64,
    to_ms: i64,
    buckets: Buckets,
    value_kind: ValueKind,
}

/// The next piece of one series' buckets: the next [`csv::PIECE_ROWS`] steps of the range,
/// cut at a bucket boundary so that no bucket is split between two pieces.
fn span_piece(mut c: SpanCursor) -> Result<(String, Option<SpanCursor>), ApiError> {
    let end = c.buckets.after(c.buckets.start_of(c.from_ms)?, csv::PIECE_ROWS as i64)?.min(c.to_ms);
    let buckets = c.buckets.aggregate(&c.store, &c.device, &c.metric, c.from_ms, end)?.unwrap_or_default();
    let mut out = String::with_capacity(buckets.len() * 96);
    for b in &buckets {
        bucket_row(&mut out, None, b, c.value_kind);
    }
    if end >= c.to_ms {
        return Ok((out, None));
    }
    c.from_ms = end;
    Ok((out, Some(c)))
}

/// Where a CSV of many devices' buckets stands: the devices left.
struct DevicesCursor {
    store: Store,
    metric: String,
    left: std::vec::IntoIter<String>,
    from_ms: i64,
    to_ms: i64,
    buckets: Buckets,
}

/// The next piece of a many-device CSV: the devices one [`SLICE`] of work reaches, whole.
fn devices_piece(mut c: DevicesCursor) -> Result<(String, Option<DevicesCursor>), ApiError> {
    let started = Instant::now();
    let mut out = String::new();
    for device in c.left.by_ref() {
        let kind = c.store.series(&device, &c.metric).map_or(ValueKind::Number, |s| s.value_kind);
        for b in c.buckets.aggregate(&c.store, &device, &c.metric, c.from_ms, c.to_ms)?.unwrap_or_default() {
            bucket_row(&mut out, Some(&device), &b, kind);
        }
        if started.elapsed() >= SLICE {
            break;
        }
    }
    let more = if c.left.len() > 0 { Some(c) } else { None };
    Ok((out, more))
}
