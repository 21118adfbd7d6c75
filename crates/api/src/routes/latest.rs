//! The latest value of every series, for a city map.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{kind_filter, ValueOut};
use crate::blocking::QueryPool;
use crate::error::{ApiError, ErrorBody};
use crate::{time, AppState};

/// One series' latest value.
#[derive(Serialize, ToSchema)]
pub struct Latest {
    device: String,
    kind: String,
    metric: String,
    unit: Option<String>,
    t: String,
    t_ms: i64,
    /// `number` or `boolean`: what `v` is.
    value_kind: &'static str,
    v: ValueOut,
}

/// `GET /v1/latest` body.
#[derive(Serialize, ToSchema)]
pub struct LatestList {
    latest: Vec<Latest>,
}

/// `GET /v1/latest` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LatestQuery {
    /// Only devices of this kind.
    #[param(pattern = "^(traffic|water|air|unknown)$")]
    kind: Option<String>,
}

/// `GET /v1/latest?kind=water`.
#[utoipa::path(get, path = "/v1/latest",
    operation_id = "latest_values", tag = "data", params(LatestQuery), responses(
    (status = 200, description = "the latest value of every series", body = LatestList), (status = 400, description = "a malformed parameter", body = ErrorBody), (status = 500, description = "the server failed", body = ErrorBody),
))]
pub async fn latest(
    State(state): State<AppState>,
    State(queries): State<QueryPool>,
    query: Result<Query<LatestQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let kind = kind_filter(query.kind.as_deref())?;
    // In memory, but one entry per series of the fleet: a blocking thread's, as in devices.rs.
    queries
        .run(move || {
            let latest = state
                .store
                .latest(kind)
                .into_iter()
                .map(|l| Latest {
                    t: time::format(l.time_ms),
                    t_ms: l.time_ms,
                    v: ValueOut::of(l.value, l.value_kind),
                    value_kind: l.value_kind.as_str(),
                    device: l.device,
                    kind: l.kind,
                    metric: l.metric,
                    unit: l.unit,
                })
                .collect();
            Ok(Json(LatestList { latest }).into_response())
        })
        .await
}
