//! `POST /v1/backups` and `GET /v1/backups`: online backups of the store into the repository
//! the server's configuration names (`[backup] dir`). A caller never names a path: the server
//! writes only there.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use mekong_store::backup::{BackupError, BackupOptions, BackupSummary, Repository};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::{time, AppState};

/// The server's backup repository and how many backups it keeps.
#[derive(Debug, Clone)]
pub struct Backups {
    /// The repository (`[backup] dir`).
    pub repository: Repository,
    /// Backups kept after each new one (`[backup] keep`); `None` keeps all.
    pub keep: Option<usize>,
}

/// One backup of the repository.
#[derive(Serialize, ToSchema)]
pub struct BackupOut {
    /// Its id (the UTC time of its point).
    id: String,
    /// Its point, RFC 3339: every reading acknowledged before it is in the backup.
    point: String,
    /// Its point in ms since the epoch.
    point_ms: i64,
    /// Day files in it.
    files: usize,
    /// Bytes of its day files and sled part.
    bytes: u64,
    /// Readings in it.
    readings: u64,
    /// Series in it.
    series: usize,
}

impl From<&BackupSummary> for BackupOut {
    fn from(b: &BackupSummary) -> Self {
        BackupOut {
            id: b.id.clone(),
            point: time::format(b.point_ms),
            point_ms: b.point_ms,
            files: b.files,
            bytes: b.bytes,
            readings: b.readings,
            series: b.series,
        }
    }
}

/// `POST /v1/backups` body (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// Copy every day file even if an earlier backup holds it (default false: incremental).
    #[serde(default)]
    full: bool,
}

/// `POST /v1/backups` answer.
#[derive(Serialize, ToSchema)]
pub struct BackupTaken {
    backup: BackupOut,
    /// Day files this backup copied; the others were in the repository already.
    copied_files: usize,
    /// Bytes it copied.
    copied_bytes: u64,
    /// Day files it shares with earlier backups.
    reused_files: usize,
    /// How long ingest waited for the backup (the read of the store's sled part), in ms.
    pause_ms: f64,
    /// The whole backup, in ms.
    took_ms: f64,
    /// Backups deleted by the retention (`[backup] keep`) after this one.
    pruned: Vec<String>,
}

/// `GET /v1/backups` body.
#[derive(Serialize, ToSchema)]
pub struct BackupList {
    /// The repository's backups, oldest first.
    backups: Vec<BackupOut>,
}

fn configured(state: &AppState) -> Result<Arc<Backups>, ApiError> {
    state.backups.clone().ok_or_else(|| {
        ApiError::Conflict("backups are off on this server: set [backup] dir in its configuration".into())
    })
}

fn failed(e: BackupError) -> ApiError {
    match e {
        BackupError::Busy(_) => ApiError::Conflict("another backup of the repository is running".into()),
        other => ApiError::Internal(format!("backup failed: {other}")),
    }
}

/// `POST /v1/backups`: takes a backup of the store, while it serves, into the configured
/// repository; incremental unless `full` is asked.
#[utoipa::path(post, path = "/v1/backups", operation_id = "take_backup", tag = "backups",
    request_body(content = Option<BackupRequest>, content_type = "application/json"),
    responses(
        (status = 201, description = "the backup, taken", body = BackupTaken),
        (status = 400, description = "a malformed body", body = ErrorBody),
        (status = 409, description = "backups are off on this server, or another is running", body = ErrorBody),
        (status = 500, description = "the server failed", body = ErrorBody)),
)]
pub async fn take(State(state): State<AppState>, body: Bytes) -> Result<(StatusCode, Json<BackupTaken>), ApiError> {
    let backups = configured(&state)?;
    let request: BackupRequest = match body.iter().all(u8::is_ascii_whitespace) {
        true => BackupRequest::default(),
        false => serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("bad backup request: {e}")))?,
    };
    let store = state.store.clone();
    let options = BackupOptions { full: request.full, keep: backups.keep };
    let report = tokio::task::spawn_blocking(move || backups.repository.backup(&store, &options))
        .await
        .map_err(|e| ApiError::Internal(format!("backup did not finish: {e}")))?
        .map_err(failed)?;
    tracing::info!(backup = %report.backup.id, "backup taken through the API");
    Ok((
        StatusCode::CREATED,
        Json(BackupTaken {
            backup: BackupOut::from(&report.backup),
            copied_files: report.copied_files,
            copied_bytes: report.copied_bytes,
            reused_files: report.reused_files,
            pause_ms: report.pause.as_secs_f64() * 1000.0,
            took_ms: report.took.as_secs_f64() * 1000.0,
            pruned: report.pruned.map(|p| p.backups).unwrap_or_default(),
        }),
    ))
}

/// `GET /v1/backups`: the backups of the configured repository, oldest first.
#[utoipa::path(get, path = "/v1/backups", operation_id = "list_backups", tag = "backups", responses(
    (status = 200, description = "the repository's backups", body = BackupList),
    (status = 409, description = "backups are off on this server", body = ErrorBody),
    (status = 500, description = "the server failed", body = ErrorBody),
))]
pub async fn list(State(state): State<AppState>) -> Result<Json<BackupList>, ApiError> {
    let backups = configured(&state)?;
    let list = tokio::task::spawn_blocking(move || backups.repository.list())
        .await
        .map_err(|e| ApiError::Internal(format!("listing did not finish: {e}")))?
        .map_err(failed)?;
    Ok(Json(BackupList { backups: list.iter().map(BackupOut::from).collect() }))
}
