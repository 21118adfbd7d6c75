//! The dashboard's routes through the router itself: what each path serves, with which
//! headers, and that the page names only assets that exist.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;

async fn get(router: &Router, path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes().to_vec())
}

fn plain() -> Router {
    router(&DashboardOptions::default()).unwrap()
}

#[tokio::test]
async fn the_page_is_served_with_its_policy_and_revalidated() {
    let (status, headers, body) = get(&plain(), "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(headers[CACHE_CONTROL], "no-cache");
    let csp = headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("img-src 'self' data:;"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(body, assets::INDEX);
    // No inline script: every <script> has a src.
    let html = String::from_utf8(body).unwrap();
    assert!(html.matches("<script").count() == html.matches("<script src=").count(), "{html}");

    // The ETag revalidates: 304 without a body, then a new tag would be a 200.
    let etag = headers[ETAG].to_str().unwrap().to_owned();
    let (status, headers, body) = get(&plain(), "/", &[("if-none-match", &etag)]).await;
    assert_eq!((status, body.len()), (StatusCode::NOT_MODIFIED, 0));
    assert_eq!(headers[ETAG], etag.as_str());
    let (status, _, _) = get(&plain(), "/", &[("if-none-match", "\"0123\"")]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn every_asset_the_page_names_is_served_with_its_type_and_cache() {
    let html = String::from_utf8(assets::INDEX.to_vec()).unwrap();
    let named: Vec<&str> = html.split(['"', '\'']).filter(|s| s.starts_with("/dashboard/")).collect();
    assert!(named.len() >= 5, "{named:?}");
    for path in named {
        let (status, headers, body) = get(&plain(), path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(!body.is_empty(), "{path}");
        let want = if path.ends_with(".js") { "text/javascript; charset=utf-8" } else { "text/css; charset=utf-8" };
        assert_eq!(headers[CONTENT_TYPE], want, "{path}");
        assert_eq!(headers[X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        // A vendored library's path names its version, so it may be cached for good.
        let immutable = headers[CACHE_CONTROL].to_str().unwrap().contains("immutable");
        assert_eq!(immutable, path.starts_with("/dashboard/vendor/"), "{path}");
    }
    for asset in assets::ALL.iter().filter(|a| a.immutable) {
        let version = asset.path.split('/').nth(1).unwrap();
        assert!(
            version.rsplit_once('-').is_some_and(|(_, v)| v.starts_with(|c: char| c.is_ascii_digit())),
            "{}",
            asset.path
        );
    }
    let (status, headers, _) = get(&plain(), "/dashboard/vendor/uplot-1.6.32/LICENSE", &[]).await;
    assert_eq!((status, headers[CONTENT_TYPE].to_str().unwrap()), (StatusCode::OK, "text/plain; charset=utf-8"));
    let (status, headers, body) = get(&plain(), "/dashboard/no-such.js", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers[CONTENT_TYPE], "application/json");
    assert!(String::from_utf8(body).unwrap().contains("not_found"));
}

#[tokio::test]
async fn assets_are_compressed_for_clients_that_ask() {
    let (status, headers, body) =
        get(&plain(), "/dashboard/vendor/leaflet-1.9.4/leaflet.js", &[("accept-encoding", "gzip")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-encoding"], "gzip");
    assert!(body.len() < assets::ALL.iter().find(|a| a.path.ends_with("leaflet.js")).unwrap().bytes.len() / 2);
}

#[tokio::test]
async fn the_tile_server_reaches_the_page_and_its_policy() {
    let options = DashboardOptions {
        tile_url: "https://{s}.tiles.cantho.example:8443/{z}/{x}/{y}.png".into(),
        tile_attribution: "&copy; OpenStreetMap contributors".into(),
        ..DashboardOptions::default()
    };
    let router = router(&options).unwrap();
    let (_, headers, _) = get(&router, "/", &[]).await;
    let csp = headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("img-src 'self' data: https://*.tiles.cantho.example:8443;"), "{csp}");
    let (status, headers, body) = get(&router, "/dashboard/config.json", &[]).await;
    assert_eq!((status, headers[CONTENT_TYPE].to_str().unwrap()), (StatusCode::OK, "application/json"));
    let config: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(config["tile_url"], options.tile_url.as_str());
    assert_eq!(config["tile_attribution"], options.tile_attribution.as_str());

    // Tiles on mekong's own origin need nothing more than 'self'.
    let own = DashboardOptions { tile_url: "/tiles/{z}/{x}/{y}.png".into(), ..DashboardOptions::default() };
    let (_, headers, _) = get(&super::router(&own).unwrap(), "/", &[]).await;
    assert!(headers[CONTENT_SECURITY_POLICY].to_str().unwrap().contains("img-src 'self' data:;"));
}

#[test]
fn tile_urls_and_attributions_are_checked() {
    let check = |url: &str| DashboardOptions { tile_url: url.into(), ..DashboardOptions::default() }.validate();
    for good in
        ["", "https://tile.openstreetmap.org/{z}/{x}/{y}.png", "http://10.0.0.5:8080/{z}/{y}/{x}", "/t/{z}/{x}/{y}"]
    {
        assert_eq!(check(good), Ok(()), "{good}");
    }
    for bad in [
        "tile.openstreetmap.org/{z}/{x}/{y}.png",
        "ftp://tiles.example/{z}/{x}/{y}",
        "https://tiles.example/{z}/{x}.png",
        "https://tiles.example/{z}/{x}/{y}.png; script-src *",
        "https://tiles.example/{z}/{x}/{y}.png 'unsafe-inline'",
        "https://{z}.example/{z}/{x}/{y}",
        "//tiles.example/{z}/{x}/{y}",
    ] {
        assert!(matches!(check(bad), Err(DashboardError::TileUrl(_))), "{bad}");
    }
    let long = DashboardOptions { tile_attribution: "x".repeat(501), ..DashboardOptions::default() };
    assert_eq!(long.validate(), Err(DashboardError::Attribution));
    let control = DashboardOptions { tile_attribution: "a\nb".into(), ..DashboardOptions::default() };
    assert_eq!(control.validate(), Err(DashboardError::Attribution));
}
