//! One module per resource; each holds its handlers and its response types.

pub mod aggregate;
pub mod alerts;
pub mod devices;
pub mod health;
pub mod latest;
pub mod rejections;
pub mod series;
pub mod stream;

use mekong_schema::DeviceKind;

use crate::error::ApiError;

/// Unknown paths get a JSON 404 like every other error.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

/// Parses an optional `kind` filter, refusing names that are not kinds.
fn kind_filter(kind: Option<&str>) -> Result<Option<&'static str>, ApiError> {
    kind.map(|k| {
        DeviceKind::parse(k).map(DeviceKind::as_str).ok_or_else(|| {
            let names: Vec<_> = DeviceKind::ALL.iter().map(|k| k.as_str()).collect();
            ApiError::BadRequest(format!("kind must be one of {}, got {k:?}", names.join(", ")))
        })
    })
    .transpose()
}

/// Parses an optional `limit` in `1..=max`.
fn limit(value: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match value {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::BadRequest(format!("limit must be a whole number from 1 to {max}, got {v:?}"))),
        },
    }
}
