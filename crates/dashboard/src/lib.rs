//! mekong's operations-room dashboard: one page that shows the stations on a map, their
//! latest values and alert states, a chart of any series, and the active alerts, kept live
//! from the API's event stream.
//!
//! Everything the browser loads is embedded in the binary (`include_bytes!`, [`assets`]): the
//! page, its script and style, and pinned copies of uPlot (the chart) and Leaflet (the map)
//! with their licences (`assets/vendor/README.md` says where each came from and its SHA-256).
//! Building or running mekong needs no Node toolchain. The page holds no data: it reads the
//! API with the user's token, so [`router`] serves the assets to anyone and the API keeps
//! guarding the data.
//!
//! The binary merges [`router`] into the API's router; this crate knows nothing of the API
//! but the paths the script calls. The vendored libraries have the version in their paths
//! and are cached for a year (`immutable`); the page, its script and `config.json` are
//! revalidated by ETag at every load, so a new mekong is seen at once.
#![warn(missing_docs)]

pub mod assets;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tower_http::compression::CompressionLayer;

use crate::assets::Asset;

/// The `[dashboard]` section of mekong's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardOptions {
    /// Serve the dashboard at `/`.
    pub enabled: bool,
    /// A tile server's URL template, Leaflet's form (`https://tiles.example.org/{z}/{x}/{y}.png`,
    /// `{s}` for subdomains), or a path on mekong's own origin (`/tiles/{z}/{x}/{y}.png`);
    /// empty, no tiles: the stations are drawn at their places on a plain background.
    pub tile_url: String,
    /// What the map shows in its corner for the tiles (HTML, such as
    /// `&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors`).
    pub tile_attribution: String,
}

impl Default for DashboardOptions {
    fn default() -> Self {
        DashboardOptions { enabled: true, tile_url: String::new(), tile_attribution: String::new() }
    }
}

/// Why the `[dashboard]` settings were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DashboardError {
    /// The tile URL is not an http(s) URL or a path, or has no `{z}`, `{x}`, `{y}`.
    #[error(
        "tile_url must be empty, an http:// or https:// URL or a path starting with /, with {{z}}, {{x}} and {{y}} \
         and no spaces or quotes; got {0:?}"
    )]
    TileUrl(String),
    /// The attribution is too long or holds control characters.
    #[error("tile_attribution must be at most 500 bytes without control characters")]
    Attribution,
}

impl DashboardOptions {
    /// Checks the tile URL and attribution.
    pub fn validate(&self) -> Result<(), DashboardError> {
        tile_source(&self.tile_url)?;
        let a = &self.tile_attribution;
        if a.len() > 500 || a.chars().any(char::is_control) {
            return Err(DashboardError::Attribution);
        }
        Ok(())
    }
}

/// The `img-src` source that lets the page load tiles from `url` (`None` for no tiles or
/// tiles on the page's own origin). `{s}` in the host becomes the wildcard `*`.
fn tile_source(url: &str) -> Result<Option<String>, DashboardError> {
    if url.is_empty() {
        return Ok(None);
    }
    let bad = || DashboardError::TileUrl(url.to_owned());
    // Characters that would end the CSP source or the header.
    if url.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, ';' | ',' | '\'' | '"')) {
        return Err(bad());
    }
    if !["{z}", "{x}", "{y}"].iter().all(|p| url.contains(p)) {
        return Err(bad());
    }
    if url.starts_with('/') && !url.starts_with("//") {
        return Ok(None);
    }
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    if scheme != "http" && scheme != "https" {
        return Err(bad());
    }
    let host = rest.split('/').next().unwrap_or_default().replace("{s}", "*");
    let host_ok = !host.is_empty()
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '*' | '[' | ']'));
    if !host_ok {
        return Err(bad());
    }
    Ok(Some(format!("{scheme}://{host}")))
}

/// One asset ready to serve: its bytes and the headers that never change.
#[derive(Debug)]
struct Prepared {
    bytes: Bytes,
    content_type: &'static str,
    cache: &'static str,
    etag: HeaderValue,
}

impl Prepared {
    fn new(bytes: Bytes, content_type: &'static str, cache: &'static str) -> Prepared {
        let digest = Sha256::digest(&bytes);
        let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
        // 24 hex digits and quotes: always a valid header value.
        let etag = HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"0\""));
        Prepared { bytes, content_type, cache, etag }
    }

    /// 304 when the browser holds this version, else the asset.
    fn respond(&self, request: &HeaderMap, extra: &[(axum::http::HeaderName, HeaderValue)]) -> Response {
        let fresh = request
            .get(IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|tag| tag.trim().trim_start_matches("W/") == self.etag));
        let mut headers = HeaderMap::new();
        headers.insert(ETAG, self.etag.clone());
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(self.cache));
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        for (name, value) in extra {
            headers.insert(name.clone(), value.clone());
        }
        if fresh {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        (headers, self.bytes.clone()).into_response()
    }
}

/// What the handlers serve.
#[derive(Debug)]
struct Served {
    index: Prepared,
    page_headers: Vec<(axum::http::HeaderName, HeaderValue)>,
    config: Prepared,
    assets: HashMap<&'static str, Prepared>,
}

/// Revalidated at every use: the page, its script, its settings.
const REVALIDATE: &str = "no-cache";
/// The vendored libraries: their version is in their path.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The dashboard's routes: `/` (the page), `/dashboard/config.json` (the map's settings) and
/// `/dashboard/...` (the assets), compressed (gzip, Brotli) for clients that ask. Merge it
/// into a router that has no route at `/` or under `/dashboard/`.
pub fn router(options: &DashboardOptions) -> Result<Router, DashboardError> {
    options.validate()?;
    let img_src = match tile_source(&options.tile_url)? {
        Some(source) => format!("'self' data: {source}"),
        None => "'self' data:".to_owned(),
    };
    // No inline script or style anywhere; the libraries set styles through the DOM, which
    // style-src does not govern.
    let csp = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src {img_src}; connect-src 'self'; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    );
    let csp = HeaderValue::from_str(&csp).map_err(|_| DashboardError::TileUrl(options.tile_url.clone()))?;
    let config = serde_json::json!({
        "tile_url": options.tile_url,
        "tile_attribution": options.tile_attribution,
        "version": env!("CARGO_PKG_VERSION"),
    });
    let served = Served {
        index: Prepared::new(Bytes::from_static(assets::INDEX), "text/html; charset=utf-8", REVALIDATE),
        page_headers: vec![(CONTENT_SECURITY_POLICY, csp), (REFERRER_POLICY, HeaderValue::from_static("no-referrer"))],
        config: Prepared::new(Bytes::from(config.to_string()), "application/json", REVALIDATE),
        assets: assets::ALL
            .iter()
            .map(|a: &Asset| {
                let cache = if a.immutable { IMMUTABLE } else { REVALIDATE };
                (a.path, Prepared::new(Bytes::from_static(a.bytes), a.content_type, cache))
            })
            .collect(),
    };
    Ok(Router::new()
        .route("/", get(index))
        .route("/dashboard/config.json", get(config_json))
        .route("/dashboard/{*path}", get(asset))
        .with_state(Arc::new(served))
        .layer(CompressionLayer::new().gzip(true).br(true)))
}

async fn index(State(served): State<Arc<Served>>, headers: HeaderMap) -> Response {
    served.index.respond(&headers, &served.page_headers)
}

async fn config_json(State(served): State<Arc<Served>>, headers: HeaderMap) -> Response {
    served.config.respond(&headers, &[])
}

async fn asset(State(served): State<Arc<Served>>, Path(path): Path<String>, headers: HeaderMap) -> Response {
    match served.assets.get(path.as_str()) {
        Some(asset) => asset.respond(&headers, &[]),
        None => (
            StatusCode::NOT_FOUND,
            [(CONTENT_TYPE, "application/json")],
            r#"{"error":{"code":"not_found","message":"no such dashboard asset"}}"#,
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests;
