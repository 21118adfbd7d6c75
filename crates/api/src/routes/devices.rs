//! Devices: the list (optionally of one kind) and one device with its ingest counters and, for
//! a device that signs its packs, its last sequence number and the gaps in them.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mekong_store::DeviceInfo;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::kind_filter;
use crate::blocking::QueryPool;
use crate::error::{ApiError, ErrorBody};
use crate::{time, AppState};

/// One device. Its counts are kept by the store with its metadata, so they survive restarts.
#[derive(Serialize, ToSchema)]
pub struct Device {
    id: String,
    kind: String,
    first_seen: String,
    first_seen_ms: i64,
    last_seen: String,
    last_seen_ms: i64,
    series: usize,
    points: u64,
    packs: u64,
    duplicates: u64,
    rejected: u64,
    rejected_by_reason: BTreeMap<String, u64>,
    last_rejection: Option<LastRejection>,
    /// The last sequence number accepted from a device that signs its packs.
    seq: Option<u64>,
    /// How often that number skipped ahead: missing transmissions.
    seq_gaps: u64,
}

/// When a device's last refused publish came, and why.
#[derive(Serialize, ToSchema)]
pub struct LastRejection {
    t: String,
    t_ms: i64,
    reason: String,
}

impl Device {
    fn new(d: DeviceInfo, state: &AppState) -> Self {
        let tally = d.tally;
        Device {
            first_seen: time::format(d.first_seen_ms),
            last_seen: time::format(d.last_seen_ms),
            first_seen_ms: d.first_seen_ms,
            last_seen_ms: d.last_seen_ms,
            series: d.series,
            points: d.points,
            packs: tally.packs,
            duplicates: tally.duplicates,
            rejected: tally.rejected_total(),
            last_rejection: tally.last_rejection.map(|(t_ms, reason)| LastRejection {
                t: time::format(t_ms),
                t_ms,
                reason,
            }),
            rejected_by_reason: tally.rejected,
            seq: state.store.device_seq(&d.id),
            seq_gaps: tally.seq_gaps,
            id: d.id,
            kind: d.kind,
        }
    }
}

/// `GET /v1/devices` body.
#[derive(Serialize, ToSchema)]
pub struct Devices {
    devices: Vec<Device>,
}

/// `GET /v1/devices` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    kind: Option<String>,
}

/// `GET /v1/devices?kind=water`: every device that has sent readings, by id.
#[utoipa::path(get, path = "/v1/devices",
    operation_id = "list_devices", tag = "devices", params(ListQuery), responses(
    (status = 200, description = "the devices, by id", body = Devices), (status = 400, description = "a malformed parameter", body = ErrorBody), (status = 500, description = "the server failed", body = ErrorBody),
))]
pub async fn list(
    State(state): State<AppState>,
    State(queries): State<QueryPool>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let kind = kind_filter(query.kind.as_deref())?;
    // In memory, but its cost (copies under the store's lock, then the JSON) grows with the
    // fleet: a blocking thread's, as a store scan is.
    queries
        .run(move || {
            let devices = state.store.devices(kind).into_iter().map(|d| Device::new(d, &state)).collect();
            Ok(Json(Devices { devices }).into_response())
        })
        .await
}

/// `GET /v1/devices/{device}`.
#[utoipa::path(get, path = "/v1/devices/{device}",
    operation_id = "get_device", tag = "devices",
    params(("device" = String, Path, description = "the device's id")),
    responses((status = 200, description = "the device and its counts", body = Device), (status = 400, description = "a malformed parameter", body = ErrorBody), (status = 404, description = "no such device", body = ErrorBody), (status = 500, description = "the server failed", body = ErrorBody)),
)]
pub async fn one(State(state): State<AppState>, Path(device): Path<String>) -> Result<Json<Device>, ApiError> {
    let info = state.store.device(&device).ok_or_else(|| ApiError::NotFound(format!("unknown device {device:?}")))?;
    Ok(Json(Device::new(info, &state)))
}
