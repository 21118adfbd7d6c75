//! The API's one error type: a status, a stable code and a message, as JSON.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// Everything a handler can answer instead of data.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// No valid bearer token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The token's scope does not cover the request (403).
    #[error("{0}")]
    Forbidden(String),
    /// The thing asked for does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the server's configuration (409).
    #[error("{0}")]
    Conflict(String),
    /// The server failed (500); the detail is logged, not sent.
    #[error("internal error")]
    Internal(String),
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    code: ErrorCode,
    /// For a person; never repeats a secret the client sent, never an internal detail.
    message: String,
}

/// The stable code of an error, one per status.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400.
    BadRequest,
    /// 401, with `WWW-Authenticate: Bearer`.
    Unauthorized,
    /// 403.
    Forbidden,
    /// 404.
    NotFound,
    /// 409.
    Conflict,
    /// 500.
    Internal,
}

impl ErrorBody {
    fn new(code: ErrorCode, message: String) -> Self {
        ErrorBody { error: ErrorDetail { code, message } }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
            ApiError::Unauthorized(_) => {
                let body = Json(ErrorBody::new(ErrorCode::Unauthorized, self.to_string()));
                let challenge = [(header::WWW_AUTHENTICATE, "Bearer")];
                return (StatusCode::UNAUTHORIZED, challenge, body).into_response();
            }
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, ErrorCode::Conflict),
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal)
            }
        };
        (status, Json(ErrorBody::new(code, self.to_string()))).into_response()
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::BadRequest(e.body_text())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError::BadRequest(e.body_text())
    }
}

impl From<crate::directory::RegistrarError> for ApiError {
    fn from(e: crate::directory::RegistrarError) -> Self {
        match e {
            crate::directory::RegistrarError::Refused(why) => ApiError::BadRequest(why),
            crate::directory::RegistrarError::Failed(why) => ApiError::Internal(why),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::BadRequest(e.body_text())
    }
}

impl From<mekong_store::StoreError> for ApiError {
    fn from(e: mekong_store::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}
