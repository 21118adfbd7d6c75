//! Devices: the list (optionally of one kind) and one device with what the registry says of
//! it (name, place, tags), its ingest counters and, for a device that signs its packs, its
//! last sequence number and the gaps in them. Registered devices are listed before they send
//! anything.

use std::collections::BTreeMap;

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mekong_schema::topic::is_valid_device_id;
use mekong_schema::DeviceKind;
use mekong_store::DeviceInfo;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::kind_filter;
use crate::blocking::QueryPool;
use crate::directory::{Location, Profile, ProfileError, Registrar};
use crate::error::{ApiError, ErrorBody};
use crate::{time, AppState};

/// One device: what the registry says about it, and its counts. The counts are kept by the
/// store with its metadata, so they survive restarts; a registered device that has sent
/// nothing yet has zero counts and no times.
#[derive(Serialize, ToSchema)]
pub struct Device {
    id: String,
    kind: String,
    /// Whether the registry lists it (else it was only seen).
    registered: bool,
    /// Its name in the registry.
    name: Option<String>,
    /// Its place in the registry.
    location: Option<LocationOut>,
    /// Its free-form tags in the registry.
    tags: BTreeMap<String, String>,
    /// First publish received, or null before any.
    first_seen: Option<String>,
    first_seen_ms: Option<i64>,
    /// Last publish received, or null before any.
    last_seen: Option<String>,
    last_seen_ms: Option<i64>,
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

/// A device's place: degrees WGS 84, metres.
#[derive(Serialize, ToSchema)]
pub struct LocationOut {
    lat: f64,
    lon: f64,
    elevation: Option<f64>,
}

/// When a device's last refused publish came, and why.
#[derive(Serialize, ToSchema)]
pub struct LastRejection {
    t: String,
    t_ms: i64,
    reason: String,
}

impl Device {
    /// The device `id` from what the store has seen of it and what the registry says.
    fn new(id: String, seen: Option<DeviceInfo>, profile: Option<&Profile>, state: &AppState) -> Self {
        let kind = match (&seen, profile) {
            (Some(d), _) => d.kind.clone(),
            (None, Some(p)) => p.kind.as_str().to_owned(),
            (None, None) => String::new(),
        };
        let mut device = Device {
            registered: profile.is_some(),
            name: profile.and_then(|p| p.name.clone()),
            location: profile.and_then(|p| p.location).map(|l| LocationOut {
                lat: l.lat(),
                lon: l.lon(),
                elevation: l.elevation(),
            }),
            tags: profile.map(|p| p.tags.clone()).unwrap_or_default(),
            first_seen: None,
            first_seen_ms: None,
            last_seen: None,
            last_seen_ms: None,
            series: 0,
            points: 0,
            packs: 0,
            duplicates: 0,
            rejected: 0,
            rejected_by_reason: BTreeMap::new(),
            last_rejection: None,
            seq: state.store.device_seq(&id),
            seq_gaps: 0,
            id,
            kind,
        };
        if let Some(d) = seen {
            let tally = d.tally;
            device.first_seen = Some(time::format(d.first_seen_ms));
            device.last_seen = Some(time::format(d.last_seen_ms));
            device.first_seen_ms = Some(d.first_seen_ms);
            device.last_seen_ms = Some(d.last_seen_ms);
            device.series = d.series;
            device.points = d.points;
            device.packs = tally.packs;
            device.duplicates = tally.duplicates;
            device.rejected = tally.rejected_total();
            device.last_rejection =
                tally.last_rejection.map(|(t_ms, reason)| LastRejection { t: time::format(t_ms), t_ms, reason });
            device.rejected_by_reason = tally.rejected;
            device.seq_gaps = tally.seq_gaps;
        }
        device
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
    /// Only devices of this kind.
    #[param(pattern = "^(traffic|water|air|unknown)$")]
    kind: Option<String>,
}

/// `GET /v1/devices?kind=water`: every device that is registered or has sent readings, by id.
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
            let profiles = state.directory.snapshot();
            let mut all: BTreeMap<String, Option<DeviceInfo>> =
                state.store.devices(kind).into_iter().map(|d| (d.id.clone(), Some(d))).collect();
            // Registered devices of the kind that have sent nothing yet are listed too.
            for (id, p) in profiles.iter() {
                if kind.is_none_or(|k| p.kind.as_str() == k)
                    && !all.contains_key(id)
                    && state.store.device(id).is_none()
                {
                    all.insert(id.clone(), None);
                }
            }
            let devices =
                all.into_iter().map(|(id, d)| Device::new(id.clone(), d, profiles.get(&id), &state)).collect();
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
    let profiles = state.directory.snapshot();
    let seen = state.store.device(&device);
    if seen.is_none() && !profiles.contains_key(&device) {
        return Err(ApiError::NotFound(format!("unknown device {device:?}")));
    }
    let profile = profiles.get(&device);
    Ok(Json(Device::new(device, seen, profile, &state)))
}

/// `PUT /v1/devices/{device}` body: what the registry says of a device.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceIn {
    /// `water`, `air`, `traffic` or `unknown`.
    #[schema(pattern = "^(traffic|water|air|unknown)$")]
    kind: String,
    name: Option<String>,
    location: Option<LocationIn>,
    /// Free-form labels, up to 32.
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

/// A place: degrees WGS 84, metres.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationIn {
    lat: f64,
    lon: f64,
    elevation: Option<f64>,
}

fn registrar(state: &AppState) -> Result<&Arc<dyn Registrar>, ApiError> {
    state.registrar.as_ref().ok_or_else(|| ApiError::NotFound("this server's registry cannot be edited".into()))
}

/// `PUT /v1/devices/{device}`: registers the device, or changes its kind, name, place and tags
/// (its key and MQTT password stay: `mekong device provision` sets those). The registry file
/// is edited in place and the change takes effect at once.
#[utoipa::path(put, path = "/v1/devices/{device}",
    operation_id = "put_device",
    tag = "devices",
    params(("device" = String, Path, description = "the device's id, [a-z0-9-]{1,64}")),
    request_body = DeviceIn,
    responses(
        (status = 200, description = "the device was changed", body = Device),
        (status = 201, description = "the device was registered", body = Device),
        (status = 400, description = "a malformed id or body, or a value out of range", body = ErrorBody),
        (status = 404, description = "this server's registry cannot be edited", body = ErrorBody),
        (status = 500, description = "the registry file could not be written", body = ErrorBody),
    ),
)]
pub async fn put(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<DeviceIn>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = path?;
    let Json(body) = body?;
    if !is_valid_device_id(&id) {
        return Err(ApiError::BadRequest(format!("device id {id:?} is not [a-z0-9-]{{1,64}}")));
    }
    let kind =
        DeviceKind::parse(&body.kind).ok_or_else(|| ApiError::BadRequest(format!("unknown kind {:?}", body.kind)))?;
    let bad = |e: ProfileError| ApiError::BadRequest(e.to_string());
    let location = body.location.map(|l| Location::new(l.lat, l.lon, l.elevation)).transpose().map_err(bad)?;
    let profile = Profile::new(kind, body.name, location, body.tags).map_err(bad)?;
    let registrar = Arc::clone(registrar(&state)?);
    // A file read, a write and a rename: a blocking thread's, as any file work.
    let added = {
        let id = id.clone();
        tokio::task::spawn_blocking(move || registrar.put(&id, &profile))
            .await
            .map_err(|e| ApiError::Internal(format!("registry edit did not finish: {e}")))??
    };
    tracing::info!(device = %id, added, "registry edited through the API");
    let profiles = state.directory.snapshot();
    let seen = state.store.device(&id);
    let out = Device::new(id.clone(), seen, profiles.get(&id), &state);
    let status = if added { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(out)).into_response())
}

/// `DELETE /v1/devices/{device}` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemoveQuery {
    /// `keep` (the default): the device's readings stay in the store, and it stays listed
    /// while it has any. `delete`: its series, points, rollups and counters are deleted too,
    /// at once and for good (the confirmation is this parameter).
    #[param(pattern = "^(keep|delete)$")]
    data: Option<String>,
}

/// What `DELETE /v1/devices/{device}?data=delete` removed.
#[derive(Serialize, ToSchema)]
pub struct Removed {
    device: String,
    /// Whether it was in the registry (and is no longer).
    unregistered: bool,
    /// Series deleted.
    series: usize,
    /// Points deleted.
    points: u64,
}

/// `DELETE /v1/devices/{device}`: removes the device from the registry, at once: it can no
/// longer log in to the broker, and a session it holds has every later publish refused.
/// With `data=delete`, everything stored of it goes too (after the removal has taken
/// effect, so no pack of it lands afterwards), and its id can be used afresh.
#[utoipa::path(delete, path = "/v1/devices/{device}",
    operation_id = "delete_device",
    tag = "devices",
    params(("device" = String, Path, description = "the device's id"), RemoveQuery),
    responses(
        (status = 200, description = "with data=delete: the device and its data were removed", body = Removed),
        (status = 204, description = "the device was removed from the registry; its data stays"),
        (status = 400, description = "a malformed id or parameter", body = ErrorBody),
        (status = 404, description = "no such registered (or, with data=delete, stored) device, or a registry that cannot be edited", body = ErrorBody),
        (status = 500, description = "the registry file or the store could not be written", body = ErrorBody),
    ),
)]
pub async fn remove(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<RemoveQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = path?;
    let Query(query) = query?;
    let delete_data = match query.data.as_deref() {
        None | Some("keep") => false,
        Some("delete") => true,
        Some(other) => return Err(ApiError::BadRequest(format!("data must be keep or delete, not {other:?}"))),
    };
    let unregistered = match (&state.registrar, delete_data) {
        (Some(registrar), _) => {
            let (registrar, id) = (Arc::clone(registrar), id.clone());
            tokio::task::spawn_blocking(move || registrar.remove(&id))
                .await
                .map_err(|e| ApiError::Internal(format!("registry edit did not finish: {e}")))??
        }
        (None, false) => return Err(ApiError::NotFound("this server's registry cannot be edited".into())),
        (None, true) => false,
    };
    if unregistered {
        tracing::info!(device = %id, "device removed from the registry through the API");
    }
    if !delete_data {
        if !unregistered {
            return Err(ApiError::NotFound(format!("device {id:?} is not registered")));
        }
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let removed = {
        let (store, id) = (state.store.clone(), id.clone());
        tokio::task::spawn_blocking(move || store.remove_device(&id))
            .await
            .map_err(|e| ApiError::Internal(format!("data removal did not finish: {e}")))?
            .map_err(|e| ApiError::Internal(format!("cannot remove the device's data: {e}")))?
    };
    if !unregistered && removed.is_none() {
        return Err(ApiError::NotFound(format!("device {id:?} is neither registered nor stored")));
    }
    // Its alerts go with its data: firing ones resolve, so that every follower hears of it.
    if let Some(alerts) = state.alerts.clone() {
        let id = id.clone();
        tokio::task::spawn_blocking(move || alerts.forget_device(&id))
            .await
            .map_err(|e| ApiError::Internal(format!("alert removal did not finish: {e}")))?
            .map_err(|e| ApiError::Internal(format!("cannot remove the device's alerts: {e}")))?;
    }
    let removed = removed.unwrap_or_default();
    tracing::info!(device = %id, series = removed.series, points = removed.points, "device's data deleted through the API");
    let out = Removed { device: id, unregistered, series: removed.series, points: removed.points };
    Ok((StatusCode::OK, Json(out)).into_response())
}
