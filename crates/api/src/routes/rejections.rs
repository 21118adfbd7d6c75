//! The bounded log of recently refused publishes.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::limit;
use crate::error::{ApiError, ErrorBody};
use crate::{time, AppState};

/// One refused publish.
#[derive(Serialize, ToSchema)]
pub struct Rejection {
    t: String,
    t_ms: i64,
    topic: String,
    device: Option<String>,
    kind: &'static str,
    reason: String,
    payload_len: usize,
    head_hex: String,
}

/// `GET /v1/rejections` body.
#[derive(Serialize, ToSchema)]
pub struct Rejections {
    /// Refusals since start, including those no longer in the log.
    total: u64,
    rejections: Vec<Rejection>,
}

/// `GET /v1/rejections` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RejectionsQuery {
    /// Only this device's.
    device: Option<String>,
    /// How many, 1 to 10000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    limit: Option<String>,
}

/// `GET /v1/rejections?device=hau-01&limit=50`: newest first.
#[utoipa::path(get, path = "/v1/rejections",
    operation_id = "list_rejections", tag = "ingest", params(RejectionsQuery), responses(
    (status = 200, description = "refused publishes, newest first", body = Rejections), (status = 400, description = "a malformed parameter", body = ErrorBody), (status = 500, description = "the server failed", body = ErrorBody),
))]
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<RejectionsQuery>, QueryRejection>,
) -> Result<Json<Rejections>, ApiError> {
    let Query(query) = query?;
    let limit = limit(query.limit.as_deref(), 100, 10_000)?;
    let total = match &query.device {
        Some(d) => state.stats.device_rejected(d),
        None => state.stats.snapshot().rejected,
    };
    let rejections = state
        .stats
        .rejections(query.device.as_deref(), limit)
        .into_iter()
        .map(|e| Rejection {
            t: time::format(e.time_ms),
            t_ms: e.time_ms,
            head_hex: e.head.iter().map(|b| format!("{b:02x}")).collect(),
            topic: e.topic,
            device: e.device,
            kind: e.kind.as_str(),
            reason: e.reason,
            payload_len: e.payload_len,
        })
        .collect();
    Ok(Json(Rejections { total, rejections }))
}
