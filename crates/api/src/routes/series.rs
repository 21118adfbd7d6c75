//! A device's series, and the points of one series in a time range, page by page.

use axum::extract::rejection::{PathRejection, QueryRejection};
use std::fmt::Write;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mekong_store::{SeriesInfo, ValueKind};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{limit, ValueOut};
use crate::blocking::QueryPool;
use crate::error::{ApiError, ErrorBody};
use crate::{cbor, csv, time, AppState};

/// One series of a device.
#[derive(Serialize, ToSchema)]
pub struct Series {
    metric: String,
    unit: Option<String>,
    first: String,
    first_ms: i64,
    last: String,
    last_ms: i64,
    count: u64,
    /// `number` or `boolean`: what `last_value` and the points' `v` are.
    value_kind: &'static str,
    last_value: ValueOut,
}

/// `GET /v1/devices/{device}/series` body.
#[derive(Serialize, ToSchema)]
pub struct SeriesList {
    device: String,
    series: Vec<Series>,
}

/// `GET /v1/devices/{device}/series`.
#[utoipa::path(get, path = "/v1/devices/{device}/series",
    operation_id = "list_series", tag = "data",
    params(("device" = String, Path, description = "the device's id")),
    responses((status = 200, description = "the device's series", body = SeriesList), (status = 400, description = "a malformed parameter", body = ErrorBody), (status = 404, description = "no such device", body = ErrorBody), (status = 500, description = "the server failed", body = ErrorBody)),
)]
pub async fn list(State(state): State<AppState>, Path(device): Path<String>) -> Result<Json<SeriesList>, ApiError> {
    let series =
        state.store.series_of(&device).ok_or_else(|| ApiError::NotFound(format!("unknown device {device:?}")))?;
    let series = series
        .into_iter()
        .map(|s| Series {
            first: time::format(s.first_ms),
            last: time::format(s.last_ms),
            first_ms: s.first_ms,
            last_ms: s.last_ms,
            count: s.count,
            last_value: ValueOut::of(s.last_value, s.value_kind),
            value_kind: s.value_kind.as_str(),
            metric: s.metric,
            unit: s.unit,
        })
        .collect();
    Ok(Json(SeriesList { device, series }))
}

/// The series asked for and the range `[from, to)` of a query, which defaults to the whole
/// series: 400 for a malformed or empty range, 404 for an unknown series.
pub(super) fn series_range(
    state: &AppState,
    device: &str,
    metric: &str,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(SeriesInfo, i64, i64), ApiError> {
    let from = from.map(|v| time::parse("from", v)).transpose()?;
    let to = to.map(|v| time::parse("to", v)).transpose()?;
    if let (Some(from), Some(to)) = (from, to) {
        if from >= to {
            return Err(ApiError::BadRequest(format!("from ({from}) must be before to ({to})")));
        }
    }
    let series = state
        .store
        .series(device, metric)
        .ok_or_else(|| ApiError::NotFound(format!("unknown series {metric:?} of device {device:?}")))?;
    let from_ms = from.unwrap_or(series.first_ms);
    let to_ms = to.unwrap_or(series.last_ms.saturating_add(1));
    Ok((series, from_ms, to_ms))
}

/// Most points one page may hold.
pub const MAX_LIMIT: usize = 10_000;
/// Points in a page when the request does not say.
pub const DEFAULT_LIMIT: usize = 1_000;

/// One point.
#[derive(Serialize, ToSchema)]
pub struct PointOut {
    #[schema(value_type = String, format = DateTime)]
    t: time::Rfc3339Ms,
    t_ms: i64,
    v: ValueOut,
}

/// `GET /v1/devices/{device}/series/{metric}` body.
#[derive(Serialize, ToSchema)]
pub struct Points {
    device: String,
    metric: String,
    unit: Option<String>,
    /// `number` or `boolean`: what the points' `v` are.
    value_kind: &'static str,
    from_ms: i64,
    to_ms: i64,
    points: Vec<PointOut>,
    /// Where the next page starts (pass it as `from`), or null on the last page.
    next_from_ms: Option<i64>,
}

/// A page of points in columns (`format=columnar` in JSON, `format=cbor` in CBOR): the same
/// fields as [`Points`], with the points as two arrays of one entry per point, instead of
/// an object per point with its time twice. A day of 10-second readings is then about a
/// quarter of the size, and cheaper to write and to read.
#[derive(Serialize, ToSchema)]
pub struct ColumnarPoints {
    device: String,
    metric: String,
    unit: Option<String>,
    /// `number` or `boolean`: what the entries of `v` are.
    value_kind: &'static str,
    from_ms: i64,
    to_ms: i64,
    /// The points' times, epoch milliseconds, oldest first.
    t_ms: Vec<i64>,
    /// The points' values, in the order of `t_ms`: all numbers, or all booleans.
    #[schema(value_type = Vec<ValueOut>)]
    v: Column,
    /// Where the next page starts (pass it as `from`), or null on the last page.
    next_from_ms: Option<i64>,
}

/// The values of [`ColumnarPoints`].
#[derive(Serialize)]
#[serde(untagged)]
enum Column {
    Numbers(Vec<f64>),
    Booleans(Vec<bool>),
}

/// The JSON answers of `GET /v1/devices/{device}/series/{metric}`: an object per point (the
/// default) or columns (`format=columnar`).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum PointsJson {
    /// An object per point.
    Rows(Points),
    /// Columns.
    Columns(ColumnarPoints),
}

/// What form an answer of points takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointsForm {
    /// JSON with an object per point (the default).
    Json,
    /// JSON with a column of times and one of values.
    Columnar,
    /// CBOR of the columnar shape.
    Cbor,
    /// CSV of every point of the range, streamed.
    Csv,
}

/// The media type of CBOR answers (RFC 8949).
pub const CBOR_CONTENT_TYPE: &str = "application/cbor";

impl PointsForm {
    /// `format` decides when given (`json`, `columnar`, `cbor` or `csv`); without it an
    /// `Accept` header naming `application/cbor` asks for CBOR, then one naming `text/csv`
    /// for CSV, and anything else gets the default JSON.
    pub fn choose(format: Option<&str>, headers: &HeaderMap) -> Result<PointsForm, ApiError> {
        match format {
            Some("json") => Ok(PointsForm::Json),
            Some("columnar") => Ok(PointsForm::Columnar),
            Some("cbor") => Ok(PointsForm::Cbor),
            Some("csv") => Ok(PointsForm::Csv),
            Some(other) => {
                Err(ApiError::BadRequest(format!("format must be json, columnar, cbor or csv, got {other:?}")))
            }
            None if csv::accepts(headers, CBOR_CONTENT_TYPE) => Ok(PointsForm::Cbor),
            None if csv::accepts(headers, "text/csv") => Ok(PointsForm::Csv),
            None => Ok(PointsForm::Json),
        }
    }
}

impl ColumnarPoints {
    /// The CBOR of this page: a map with the same keys and values as its JSON.
    fn to_cbor(&self) -> Vec<u8> {
        let mut w = cbor::Writer::with_capacity(96 + self.t_ms.len() * 18);
        w.map(9);
        w.text("device");
        w.text(&self.device);
        w.text("metric");
        w.text(&self.metric);
        w.text("unit");
        w.opt_text(self.unit.as_deref());
        w.text("value_kind");
        w.text(self.value_kind);
        w.text("from_ms");
        w.int(self.from_ms);
        w.text("to_ms");
        w.int(self.to_ms);
        w.text("t_ms");
        w.array(self.t_ms.len());
        for &t in &self.t_ms {
            w.int(t);
        }
        w.text("v");
        match &self.v {
            Column::Numbers(values) => {
                w.array(values.len());
                for &v in values {
                    w.float(v);
                }
            }
            Column::Booleans(values) => {
                w.array(values.len());
                for &v in values {
                    w.bool(v);
                }
            }
        }
        w.text("next_from_ms");
        w.opt_int(self.next_from_ms);
        w.out
    }
}

/// `GET /v1/devices/{device}/series/{metric}` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PointsQuery {
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
    /// Points in a page, 1 to 10000 (default 1000); in CSV, the most rows (default: all).
    #[param(value_type = Option<u64>, minimum = 1)]
    limit: Option<String>,
    /// `json` (the default: an object per point), `columnar` (JSON with a `t_ms` and a `v`
    /// array), `cbor` (the columnar shape in CBOR; also chosen by `Accept: application/cbor`)
    /// or `csv` (also chosen by `Accept: text/csv`: the whole range as `t,t_ms,v` rows,
    /// streamed, with no paging).
    #[param(pattern = "^(json|columnar|cbor|csv)$")]
    format: Option<String>,
}

/// `GET /v1/devices/{device}/series/{metric}?from=..&to=..&limit=..`: points with
/// `from <= t < to`, oldest first. Without `from`/`to` the whole series; with more points than
/// `limit`, `next_from_ms` says where the next page starts.
#[utoipa::path(get, path = "/v1/devices/{device}/series/{metric}",
    operation_id = "get_points", tag = "data",
    params(("device" = String, Path, description = "the device's id"), ("metric" = String, Path, description = "the metric's SenML name"), PointsQuery),
    responses((status = 200, description = "a page of points, oldest first, an object per point or (`format=columnar`, `format=cbor`) in columns; in CSV, every point of the range",
        content((PointsJson = "application/json"), (ColumnarPoints = "application/cbor"), (String = "text/csv"))), (status = 400, description = "a malformed parameter", body = ErrorBody), (status = 404, description = "no such series", body = ErrorBody), (status = 500, description = "the server failed", body = ErrorBody)),
)]
pub async fn points(
    State(state): State<AppState>,
    State(queries): State<QueryPool>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<PointsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path((device, metric)) = path?;
    let Query(query) = query?;
    let form = PointsForm::choose(query.format.as_deref(), &headers)?;
    let (series, from_ms, to_ms) = series_range(&state, &device, &metric, query.from.as_deref(), query.to.as_deref())?;
    if form == PointsForm::Csv {
        let rows = match query.limit {
            Some(_) => limit(query.limit.as_deref(), DEFAULT_LIMIT, usize::MAX)?,
            None => usize::MAX,
        };
        let cursor = PointsCursor {
            store: state.store.clone(),
            device,
            metric,
            from_ms,
            to_ms,
            rows_left: rows,
            value_kind: series.value_kind,
        };
        return points_csv(queries, cursor).await;
    }
    let limit = limit(query.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    // The scan and the JSON of up to `MAX_LIMIT` points are the slow part: a blocking thread's.
    queries
        .run(move || {
            // One more than asked tells whether another page follows, and where it starts.
            let mut points = state.store.points(&device, &metric, from_ms, to_ms, limit + 1)?.unwrap_or_default();
            let next_from_ms = if points.len() > limit { points.pop().map(|p| p.time_ms) } else { None };
            let value_kind = series.value_kind.as_str();
            if form != PointsForm::Json {
                let t_ms = points.iter().map(|p| p.time_ms).collect();
                let v = match series.value_kind {
                    ValueKind::Number => Column::Numbers(points.iter().map(|p| p.value).collect()),
                    ValueKind::Boolean => Column::Booleans(points.iter().map(|p| p.value != 0.0).collect()),
                };
                let unit = series.unit;
                let body = ColumnarPoints { device, metric, unit, value_kind, from_ms, to_ms, t_ms, v, next_from_ms };
                let (bytes, content_type) = match form {
                    PointsForm::Cbor => (body.to_cbor(), CBOR_CONTENT_TYPE),
                    _ => {
                        // Straight into a buffer of about the right size: serde_json writes
                        // the numbers with itoa and ryu, and there is no text per point.
                        let mut out = Vec::with_capacity(160 + body.t_ms.len() * 22);
                        serde_json::to_writer(&mut out, &PointsJson::Columns(body))
                            .map_err(|e| ApiError::Internal(format!("columnar points: {e}")))?;
                        (out, "application/json")
                    }
                };
                return Ok(([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], bytes).into_response());
            }
            let points = points
                .into_iter()
                .map(|p| PointOut {
                    t: time::Rfc3339Ms(p.time_ms),
                    t_ms: p.time_ms,
                    v: ValueOut::of(p.value, series.value_kind),
                })
                .collect();
            let body = Points { device, metric, unit: series.unit, value_kind, from_ms, to_ms, points, next_from_ms };
            Ok(Json(PointsJson::Rows(body)).into_response())
        })
        .await
}

/// Where a CSV export of points stands: the rest of its range and how many rows it may
/// still write.
struct PointsCursor {
    store: mekong_store::Store,
    device: String,
    metric: String,
    from_ms: i64,
    to_ms: i64,
    rows_left: usize,
    value_kind: mekong_store::ValueKind,
}

/// The next piece of a points CSV: up to [`csv::PIECE_ROWS`] rows from where `cursor` stands.
fn points_piece(mut cursor: PointsCursor) -> Result<(String, Option<PointsCursor>), ApiError> {
    let want = cursor.rows_left.min(csv::PIECE_ROWS);
    let points = cursor.store.points(&cursor.device, &cursor.metric, cursor.from_ms, cursor.to_ms, want)?;
    let points = points.unwrap_or_default();
    let mut out = String::with_capacity(points.len() * 48);
    for p in &points {
        time::push(&mut out, p.time_ms);
        let _ = write!(out, ",{},", p.time_ms);
        ValueOut::of(p.value, cursor.value_kind).csv(&mut out);
        out.push('\n');
    }
    cursor.rows_left -= points.len();
    let more = match points.last() {
        Some(last) if points.len() == want && cursor.rows_left > 0 && last.time_ms < i64::MAX => {
            cursor.from_ms = last.time_ms + 1;
            Some(cursor)
        }
        _ => None,
    };
    Ok((out, more))
}

/// `format=csv` of [`points`]: `t,t_ms,v`, every point of `[from_ms, to_ms)` up to `rows`.
async fn points_csv(queries: QueryPool, cursor: PointsCursor) -> Result<Response, ApiError> {
    let filename = format!("{}_{}.csv", cursor.device, cursor.metric);
    let (rows, more) = queries.run(move || points_piece(cursor)).await?;
    let first = format!("t,t_ms,v\n{rows}");
    Ok(csv::stream(queries, &filename, first, more, points_piece).await)
}
