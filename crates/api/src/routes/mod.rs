//! One module per resource; each holds its handlers and its response types.

pub mod aggregate;
pub mod alerts;
pub mod backups;
pub mod devices;
pub mod export;
pub mod health;
pub mod latest;
pub mod rejections;
pub mod series;
pub mod stream;

use mekong_schema::DeviceKind;
use mekong_store::ValueKind;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;

/// A value as the API writes it: a number, or `true`/`false` in a series of booleans
/// (SenML `vb`, stored as 1 and 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ValueOut {
    /// A reading of a number series.
    Number(f64),
    /// A reading of a boolean series.
    Boolean(bool),
}

impl ValueOut {
    /// `value` as a series of `kind` reads it.
    pub fn of(value: f64, kind: ValueKind) -> ValueOut {
        match kind {
            ValueKind::Number => ValueOut::Number(value),
            ValueKind::Boolean => ValueOut::Boolean(value != 0.0),
        }
    }

    /// Its text in CSV: the number as JSON writes it, or `true`/`false`.
    pub fn csv(self, out: &mut String) {
        use std::fmt::Write;
        // f64's Display is the shortest text that reads back as the same number.
        let _ = match self {
            ValueOut::Number(v) => write!(out, "{v}"),
            ValueOut::Boolean(b) => write!(out, "{b}"),
        };
    }
}

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
