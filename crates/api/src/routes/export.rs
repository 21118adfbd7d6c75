//! `GET /v1/export`: a time range of every selected series as one CSV or Parquet download,
//! streamed (admin: an export is the whole city's data at once).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use bytes::Bytes;
use mekong_export::{Export, ExportError, Format};
use serde::Deserialize;
use utoipa::IntoParams;

use super::kind_filter;
use crate::blocking::QueryPool;
use crate::error::{ApiError, ErrorBody};
use crate::{csv, time, AppState};

/// An export whose bytes are taken out as they are made.
type InMemory = Export<Vec<u8>>;

/// Rows written in one piece of work on the query pool (a few tens of milliseconds).
const PIECE_ROWS: usize = 65_536;

/// `GET /v1/export` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// Start of the range (inclusive), RFC 3339 or epoch ms.
    #[param(
        pattern = r"^(-?[0-9]{1,18}|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2}))$"
    )]
    from: Option<String>,
    /// End of the range (exclusive), RFC 3339 or epoch ms.
    #[param(
        pattern = r"^(-?[0-9]{1,18}|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2}))$"
    )]
    to: Option<String>,
    /// Only devices of this kind.
    #[param(pattern = "^(traffic|water|air|unknown)$")]
    kind: Option<String>,
    /// Only these devices: ids separated by commas.
    device: Option<String>,
    /// Only these metrics: SenML names separated by commas.
    metric: Option<String>,
    /// `csv` (the default) or `parquet`.
    #[param(pattern = "^(csv|parquet)$")]
    format: Option<String>,
}

/// `GET /v1/export?from=..&to=..`: every reading with `from <= t < to` of the selected
/// series, ordered by device, metric, then time, as CSV (RFC 4180, a header row) or Parquet
/// (zstd). Columns: device, kind, metric, unit, time, value, value_bool (see README, Export).
#[utoipa::path(get, path = "/v1/export",
    operation_id = "export", tag = "data",
    params(ExportQuery),
    responses(
        (status = 200, description = "the readings, streamed as a download",
            content((String = "text/csv"), (Vec<u8> = "application/vnd.apache.parquet"))),
        (status = 400, description = "a missing or malformed parameter", body = ErrorBody),
        (status = 404, description = "a device asked for is unknown", body = ErrorBody),
        (status = 500, description = "the server failed", body = ErrorBody)),
)]
pub async fn export(
    State(state): State<AppState>,
    State(queries): State<QueryPool>,
    query: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let required = |name: &str, value: Option<&str>| match value {
        Some(v) => time::parse(name, v),
        None => Err(ApiError::BadRequest(format!("{name} is required (RFC 3339 or epoch ms)"))),
    };
    let from_ms = required("from", query.from.as_deref())?;
    let to_ms = required("to", query.to.as_deref())?;
    if from_ms >= to_ms {
        return Err(ApiError::BadRequest(format!("from ({from_ms}) must be before to ({to_ms})")));
    }
    let format = match query.format.as_deref() {
        None => Format::Csv,
        Some(name) => Format::parse(name)
            .ok_or_else(|| ApiError::BadRequest(format!("format must be csv or parquet, got {name:?}")))?,
    };
    let kind = kind_filter(query.kind.as_deref())?.map(str::to_owned);
    let devices = list("device", query.device.as_deref())?;
    let metrics = list("metric", query.metric.as_deref())?;
    if let Some(unknown) = devices.iter().find(|d| state.store.device(d).is_none()) {
        return Err(ApiError::NotFound(format!("unknown device {unknown:?}")));
    }
    let filename = format!("mekong-{from_ms}-{to_ms}.{}", format.as_str());
    let query = mekong_export::Query { from_ms, to_ms, kind, devices, metrics };
    let store = state.store.clone();
    let (first, more) = queries
        .run(move || {
            let export = Export::start(&store, query, format, Vec::new()).map_err(api_error)?;
            piece(export)
        })
        .await?;
    Ok(csv::stream_bytes(queries, format.content_type(), &filename, first, more, piece).await)
}

/// The next piece of an export: up to [`PIECE_ROWS`] rows, and the bytes they made (for
/// Parquet, only when a row group was finished); the last piece carries the file's end.
fn piece(mut export: InMemory) -> Result<(Bytes, Option<InMemory>), ApiError> {
    let more = export.step(PIECE_ROWS).map_err(api_error)?;
    let mut bytes = export.take_output().map_err(api_error)?;
    if more {
        return Ok((Bytes::from(bytes), Some(export)));
    }
    let (rest, _) = export.finish().map_err(api_error)?;
    bytes.extend(rest);
    Ok((Bytes::from(bytes), None))
}

/// A comma-separated list of names, none of them empty.
fn list(name: &str, value: Option<&str>) -> Result<Vec<String>, ApiError> {
    let Some(value) = value else { return Ok(Vec::new()) };
    value
        .split(',')
        .map(|item| match item.trim() {
            "" => Err(ApiError::BadRequest(format!("{name}: an empty name in {value:?}"))),
            item => Ok(item.to_owned()),
        })
        .collect()
}

fn api_error(e: ExportError) -> ApiError {
    match e {
        ExportError::BadQuery(message) => ApiError::BadRequest(message),
        ExportError::Store(e) => e.into(),
        other => ApiError::Internal(other.to_string()),
    }
}
