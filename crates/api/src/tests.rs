//! Tests of the router through `tower::ServiceExt::oneshot`, on a real store: status codes,
//! error bodies, paging and time parameters.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use mekong_ingest::Stats;
use mekong_store::{NewPoint, Store, StoreOptions};
use serde_json::Value;
use tower::ServiceExt;

use super::*;

const T0: i64 = 1_790_000_000_000;

fn state() -> (tempfile::TempDir, AppState) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions { flush_every_ms: None, ..Default::default() }).unwrap();
    let points: Vec<_> = (0..25)
        .map(|i| NewPoint {
            metric: "water_level",
            unit: Some("cm"),
            time_ms: T0 + i * 10_000,
            value: 150.0 + i as f64,
        })
        .collect();
    store.write("hau-01", "water", T0, &points).unwrap();
    store
        .write("bridge-3", "traffic", T0, &[NewPoint { metric: "speed", unit: Some("km/h"), time_ms: T0, value: 31.0 }])
        .unwrap();
    (dir, AppState { store, stats: Arc::new(Stats::new(10)) })
}

async fn get(state: &AppState, uri: &str) -> (StatusCode, Value) {
    let response = router(state.clone()).oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn errors_are_json_with_the_right_status() {
    let (_dir, state) = state();
    let cases = [
        ("/v1/devices/nope", StatusCode::NOT_FOUND),
        ("/v1/devices/nope/series", StatusCode::NOT_FOUND),
        ("/v1/devices/hau-01/series/salinity", StatusCode::NOT_FOUND),
        ("/v1/devices/hau-01/series/water_level?from=20&to=10", StatusCode::BAD_REQUEST),
        ("/v1/devices/hau-01/series/water_level?from=10&to=10", StatusCode::BAD_REQUEST),
        ("/v1/devices/hau-01/series/water_level?from=yesterday", StatusCode::BAD_REQUEST),
        ("/v1/devices/hau-01/series/water_level?limit=0", StatusCode::BAD_REQUEST),
        ("/v1/devices/hau-01/series/water_level?limit=10001", StatusCode::BAD_REQUEST),
        ("/v1/latest?kind=boats", StatusCode::BAD_REQUEST),
        ("/v1/nothing-here", StatusCode::NOT_FOUND),
    ];
    for (uri, status) in cases {
        let (got, body) = get(&state, uri).await;
        assert_eq!(got, status, "{uri}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{uri}: {body}");
    }
}

#[tokio::test]
async fn points_page_through_a_range() {
    let (_dir, state) = state();
    let mut from = (T0 + 20_000).to_string();
    let mut seen = Vec::new();
    loop {
        let uri = format!("/v1/devices/hau-01/series/water_level?from={from}&to=2026-09-21T14:17:00Z&limit=7");
        let (status, body) = get(&state, &uri).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["unit"], "cm");
        seen.extend(body["points"].as_array().unwrap().iter().map(|p| p["v"].as_f64().unwrap()));
        match body["next_from_ms"].as_i64() {
            Some(next) => from = next.to_string(),
            None => break,
        }
    }
    // 14:13:20 + 20 s .. 14:17:00 (exclusive) at 10 s steps: points 2..=21.
    let expected: Vec<f64> = (2..22).map(|i| 150.0 + i as f64).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn points_carry_both_time_forms() {
    let (_dir, state) = state();
    let (_, body) = get(&state, "/v1/devices/hau-01/series/water_level?limit=1").await;
    assert_eq!(body["points"][0]["t"], "2026-09-21T14:13:20.000Z");
    assert_eq!(body["points"][0]["t_ms"], T0);
    assert_eq!(body["next_from_ms"], T0 + 10_000);
}

#[tokio::test]
async fn devices_and_latest_filter_by_kind() {
    let (_dir, state) = state();
    let (_, body) = get(&state, "/v1/devices?kind=traffic").await;
    let ids: Vec<_> =
        body["devices"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, ["bridge-3"]);
    let (_, body) = get(&state, "/v1/latest?kind=water").await;
    assert_eq!(body["latest"].as_array().unwrap().len(), 1);
    assert_eq!(body["latest"][0]["v"], 174.0);
    let (_, body) = get(&state, "/v1/devices/hau-01/series").await;
    assert_eq!(body["series"][0]["count"], 25);
}
