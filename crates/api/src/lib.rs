//! mekong's query service: what smart-city apps read, as HTTP/JSON.
//!
//! [`router`] builds the whole service from an [`AppState`]; the binary binds and serves it.
//! Handlers read the store and the ingest counters and answer with this crate's own response
//! types (`routes::*`), never with store structs, so the JSON shape is a promise made here.
//! Times are accepted as RFC 3339 or epoch milliseconds and returned as both ([`time`]).
//! Errors are JSON `{"error": {"code", "message"}}` with the matching status ([`error`]).
#![warn(missing_docs)]

pub mod error;
mod routes;
pub mod time;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use mekong_ingest::Stats;
use mekong_store::Store;

/// What every handler can reach. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The time-series store.
    pub store: Store,
    /// Counters and rejection log of the ingest path.
    pub stats: Arc<Stats>,
}

/// The query service.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(routes::health::healthz))
        .route("/metrics", get(routes::health::metrics))
        .route("/v1/stats", get(routes::health::stats))
        .route("/v1/devices", get(routes::devices::list))
        .route("/v1/devices/{device}", get(routes::devices::one))
        .route("/v1/devices/{device}/series", get(routes::series::list))
        .route("/v1/devices/{device}/series/{metric}", get(routes::series::points))
        .route("/v1/devices/{device}/series/{metric}/aggregate", get(routes::aggregate::series))
        .route("/v1/aggregate", get(routes::aggregate::many))
        .route("/v1/latest", get(routes::latest::latest))
        .route("/v1/rejections", get(routes::rejections::list))
        .fallback(routes::not_found)
        .with_state(state)
}

#[cfg(test)]
mod tests;
