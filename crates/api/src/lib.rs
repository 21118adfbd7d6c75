//! mekong's query service: what smart-city apps read, as HTTP/JSON.
//!
//! [`router`] builds the whole service from an [`AppState`]; the binary binds and serves it.
//! Handlers read the store and the ingest counters and answer with this crate's own response
//! types (`routes::*`), never with store structs, so the JSON shape is a promise made here.
//! Queries whose cost grows with the data or the fleet (points, aggregates, fleet-wide
//! listings) run on blocking threads, a bounded number at a time (`blocking.rs`); lookups of
//! one device, the counters and `/healthz` stay on the async workers.
//! Times are accepted as RFC 3339 or epoch milliseconds and returned as both ([`time`]).
//! Errors are JSON `{"error": {"code", "message"}}` with the matching status ([`error`]).
#![warn(missing_docs)]

pub mod auth;
mod blocking;
pub mod calendar;
pub mod cbor;
pub mod csv;
pub mod directory;
mod docs;
pub mod error;
pub mod health;
pub mod openapi;
mod routes;
pub mod time;

use std::sync::Arc;

use axum::extract::FromRef;
use axum::http::{HeaderValue, Method};
use axum::middleware::from_fn_with_state;
use axum::Router;
pub use mekong_feed::Feed;
use mekong_stats::Stats;
use mekong_store::Store;
pub use routes::backups::Backups;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Access, Scope};
use crate::blocking::QueryPool;
use crate::health::HealthOptions;

/// What every handler can reach. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The time-series store.
    pub store: Store,
    /// Counters and rejection log of the ingest path.
    pub stats: Arc<Stats>,
    /// Who may call what.
    pub access: Arc<Access>,
    /// Origins whose browser pages may call the API; empty, none (no CORS headers at all).
    pub cors_origins: Vec<HeaderValue>,
    /// What `/healthz` judges by.
    pub health: HealthOptions,
    /// The registered devices' names, places and tags.
    pub directory: directory::Directory,
    /// What edits the registry (`PUT` and `DELETE /v1/devices/{id}`); without one those
    /// answer 404.
    pub registrar: Option<Arc<dyn directory::Registrar>>,
    /// The alert engine (`/v1/alerts*`); without one those answer 404.
    pub alerts: Option<mekong_alerts::Alerts>,
    /// Readings once durable, and alert changes: `/v1/stream`.
    pub feed: Feed,
    /// The backup repository (`/v1/backups`); without one those answer 409.
    pub backups: Option<Arc<Backups>>,
}

/// What the handlers reach: the caller's [`AppState`], and the bound on blocking queries,
/// which belongs to the service rather than to the caller (each handler extracts the part it
/// needs through `FromRef`).
#[derive(Debug, Clone)]
struct Shared {
    app: AppState,
    queries: QueryPool,
    openapi: openapi::Document,
}

impl FromRef<Shared> for AppState {
    fn from_ref(shared: &Shared) -> Self {
        shared.app.clone()
    }
}

impl FromRef<Shared> for QueryPool {
    fn from_ref(shared: &Shared) -> Self {
        shared.queries.clone()
    }
}

impl FromRef<Shared> for openapi::Document {
    fn from_ref(shared: &Shared) -> Self {
        shared.openapi.clone()
    }
}

/// The query service. `/healthz` and `/openapi.json` answer anyone; `/metrics` anyone or a
/// token of any scope, as [`Access::metrics_open`] says; data needs a `read` token, the
/// rejection log `admin` (no token at all while [`Access`] has none). Responses are
/// compressed (gzip or Brotli) for clients that ask.
pub fn router(state: AppState) -> Router {
    let (router, document) = described(&state.access).split_for_parts();
    let router = router.fallback(routes::not_found);
    let router = match state.cors_origins.is_empty() {
        true => router,
        // Outside the token check: a preflight carries no token, and the browser sends the
        // real request (with its token) only when the preflight allowed it.
        false => router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(state.cors_origins.clone()))
                .allow_methods([Method::GET, Method::PUT, Method::DELETE])
                .allow_headers([axum::http::header::AUTHORIZATION, axum::http::header::CONTENT_TYPE]),
        ),
    };
    // Outermost, so that errors and CORS answers are compressed like the rest; tower-http
    // leaves small bodies (under 32 bytes), images and event streams alone, and honours the
    // client's Accept-Encoding (q-values included).
    let router = router.layer(CompressionLayer::new().gzip(true).br(true));
    let openapi = openapi::Document::new(document);
    router.with_state(Shared { app: state, queries: QueryPool::per_core(), openapi })
}

/// Every route, each registered from its handler's `#[utoipa::path]` (`routes!`), so that the
/// router and its description come from one place; the scopes' layers and their part of the
/// description (security, 401 and 403) are added per group by [`openapi::scoped`].
fn described(access: &Arc<Access>) -> OpenApiRouter<Shared> {
    let scoped = |scope: Scope| from_fn_with_state((Arc::clone(access), scope), auth::require);
    let open = OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(routes::health::healthz))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(docs::page))
        .routes(routes!(docs::script));
    let mut metrics = OpenApiRouter::new().routes(routes!(routes::health::metrics));
    if !access.metrics_open {
        metrics = openapi::scoped(metrics, Scope::Read).route_layer(scoped(Scope::Read));
    }
    let read = OpenApiRouter::new()
        .routes(routes!(routes::health::stats))
        .routes(routes!(routes::devices::list))
        .routes(routes!(routes::devices::one))
        .routes(routes!(routes::series::list))
        .routes(routes!(routes::series::points))
        .routes(routes!(routes::aggregate::series))
        .routes(routes!(routes::aggregate::many))
        .routes(routes!(routes::latest::latest))
        .routes(routes!(routes::alerts::active))
        .routes(routes!(routes::alerts::history))
        .routes(routes!(routes::stream::stream));
    let read = openapi::scoped(read, Scope::Read).route_layer(scoped(Scope::Read));
    let admin = OpenApiRouter::new()
        .routes(routes!(routes::rejections::list))
        .routes(routes!(routes::devices::put, routes::devices::remove))
        .routes(routes!(routes::alerts::rules))
        .routes(routes!(routes::alerts::put_rule, routes::alerts::delete_rule))
        .routes(routes!(routes::alerts::deliveries))
        .routes(routes!(routes::export::export))
        .routes(routes!(routes::backups::take, routes::backups::list));
    let admin = openapi::scoped(admin, Scope::Admin).route_layer(scoped(Scope::Admin));
    open.merge(metrics).merge(read).merge(admin)
}

#[cfg(test)]
mod tests;
