//! Aggregates in time buckets: of one series, or of one metric across the devices of a kind.
//!
//! Buckets are aligned to the Unix epoch (UTC): with `step=1d` a bucket is a UTC day. Only
//! buckets that hold points are returned. With a step of whole hours the store reads the
//! hourly rollups of folded hours and the points elsewhere, so long ranges are cheap
//! (`Store::aggregate`).

use std::time::{Duration, Instant};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mekong_store::Bucket;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::kind_filter;
use super::series::series_range;
use crate::blocking::QueryPool;
use crate::error::{ApiError, ErrorBody};
use crate::{time, AppState};

/// Most buckets one request may span.
pub const MAX_BUCKETS: i64 = 100_000;

/// A point inside a bucket (its first or last).
#[derive(Serialize, ToSchema)]
pub struct At {
    t_ms: i64,
    v: f64,
}

/// One bucket.
#[derive(Serialize, ToSchema)]
pub struct BucketOut {
    t: String,
    t_ms: i64,
    count: u64,
    min: f64,
    max: f64,
    sum: f64,
    avg: f64,
    first: At,
    last: At,
}

impl From<Bucket> for BucketOut {
    fn from(b: Bucket) -> Self {
        BucketOut {
            t: time::format(b.start_ms),
            t_ms: b.start_ms,
            count: b.count,
            min: b.min,
            max: b.max,
            sum: b.sum,
            avg: b.avg(),
            first: At { t_ms: b.first.time_ms, v: b.first.value },
            last: At { t_ms: b.last.time_ms, v: b.last.value },
        }
    }
}

/// Query of both endpoints.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AggregateQuery {
    from: Option<String>,
    to: Option<String>,
    step: Option<String>,
    kind: Option<String>,
    metric: Option<String>,
}

/// `GET /v1/devices/{device}/series/{metric}/aggregate` body.
#[derive(Serialize, ToSchema)]
pub struct SeriesAggregate {
    device: String,
    metric: String,
    unit: Option<String>,
    from_ms: i64,
    to_ms: i64,
    step_ms: i64,
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

fn step_of(q: &AggregateQuery) -> Result<i64, ApiError> {
    let step =
        q.step.as_deref().ok_or_else(|| ApiError::BadRequest("step is required (such as 1m, 15m, 1h, 1d)".into()))?;
    time::parse_step(step)
}

/// `GET /v1/devices/{device}/series/{metric}/aggregate?from=..&to=..&step=1h`: count, min,
/// max, sum, avg, first and last of each bucket. Without `from`/`to`, the whole series.
#[utoipa::path(get, path = "/v1/devices/{device}/series/{metric}/aggregate",
    operation_id = "aggregate_series", tag = "data",
    params(("device" = String, Path, description = "the device's id"), ("metric" = String, Path, description = "the metric's SenML name"), AggregateQuery),
    responses((status = 200, description = "the buckets of the series", body = SeriesAggregate), (status = 400, description = "a malformed parameter", body = ErrorBody), (status = 404, description = "no such series", body = ErrorBody), (status = 500, description = "the server failed", body = ErrorBody)),
)]
pub async fn series(
    State(state): State<AppState>,
    State(queries): State<QueryPool>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<AggregateQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path((device, metric)) = path?;
    let Query(q) = query?;
    let step_ms = step_of(&q)?;
    let (series, from_ms, to_ms) = series_range(&state, &device, &metric, q.from.as_deref(), q.to.as_deref())?;
    checked_range(from_ms, to_ms, step_ms)?;
    queries
        .run(move || {
            let buckets = state.store.aggregate(&device, &metric, from_ms, to_ms, step_ms)?.unwrap_or_default();
            let body = SeriesAggregate {
                device,
                metric,
                unit: series.unit,
                from_ms,
                to_ms,
                step_ms,
                buckets: buckets.into_iter().map(Into::into).collect(),
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
    buckets: Vec<BucketOut>,
}

/// `GET /v1/aggregate` body.
#[derive(Serialize, ToSchema)]
pub struct ManyAggregate {
    kind: Option<&'static str>,
    metric: String,
    from_ms: i64,
    to_ms: i64,
    step_ms: i64,
    series: Vec<DeviceAggregate>,
}

/// `GET /v1/aggregate?kind=water&metric=water_level&from=..&to=..&step=1h`: the buckets of
/// metric `metric` for every device (of kind `kind`, if given) that has it. `from` and `to`
/// are required.
#[utoipa::path(get, path = "/v1/aggregate",
    operation_id = "aggregate_devices", tag = "data", params(AggregateQuery), responses(
    (status = 200, description = "the buckets of each device that has the metric", body = ManyAggregate), (status = 400, description = "a malformed parameter", body = ErrorBody), (status = 500, description = "the server failed", body = ErrorBody),
))]
pub async fn many(
    State(state): State<AppState>,
    State(queries): State<QueryPool>,
    query: Result<Query<AggregateQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let step_ms = step_of(&q)?;
    let kind = kind_filter(q.kind.as_deref())?;
    let metric = q.metric.clone().ok_or_else(|| ApiError::BadRequest("metric is required".into()))?;
    let required = |name: &str, v: &Option<String>| {
        v.as_deref()
            .ok_or_else(|| ApiError::BadRequest(format!("{name} is required")))
            .and_then(|v| time::parse(name, v))
    };
    let (from_ms, to_ms) = (required("from", &q.from)?, required("to", &q.to)?);
    checked_range(from_ms, to_ms, step_ms)?;
    // Blocking tasks of a few milliseconds each rather than one for the whole fleet: a query
    // waiting for a permit gets its turn between two devices instead of after the last one,
    // and a dropped request stops there. A task per device would cost a hand-over between
    // threads per device, which a busy machine makes slow.
    let mut done = Vec::new();
    let mut left = state.store.devices_with(kind, &metric).into_iter();
    loop {
        let (store, metric) = (state.store.clone(), metric.clone());
        let slice = queries
            .run(move || {
                let started = Instant::now();
                for device in left.by_ref() {
                    let unit = store.series(&device, &metric).and_then(|s| s.unit);
                    if let Some(buckets) = store.aggregate(&device, &metric, from_ms, to_ms, step_ms)? {
                        let buckets = buckets.into_iter().map(Into::into).collect();
                        done.push(DeviceAggregate { device, unit, buckets });
                    }
                    if started.elapsed() >= SLICE {
                        break;
                    }
                }
                if left.len() > 0 {
                    return Ok(Slice::More(done, left));
                }
                let body = ManyAggregate { kind, metric, from_ms, to_ms, step_ms, series: done };
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
