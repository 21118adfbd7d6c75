//! Tests of the router through `tower::ServiceExt::oneshot`, on a real store: status codes,
//! error bodies, paging and time parameters, and heavy queries kept off the async workers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use http_body_util::BodyExt;
use mekong_stats::Stats;
use mekong_store::{NewPoint, Store, StoreOptions};
use serde_json::Value;
use tower::ServiceExt;

use super::*;
use crate::blocking::QueryPool;
use crate::error::ApiError;

const T0: i64 = 1_790_000_000_000;

/// The service over `store` with no tokens, no CORS and the default health thresholds.
fn anonymous(store: Store) -> AppState {
    AppState {
        store,
        stats: Arc::new(Stats::new(10)),
        access: Arc::new(Access::anonymous()),
        cors_origins: Vec::new(),
        health: Default::default(),
        directory: Default::default(),
        registrar: None,
        alerts: None,
        feed: mekong_feed::Feed::new(16),
        backups: None,
    }
}

fn state() -> (tempfile::TempDir, AppState) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions { flush_every_ms: None, ..Default::default() }).unwrap();
    let points: Vec<_> = (0..25)
        .map(|i| NewPoint {
            metric: "water_level",
            unit: Some("cm"),
            time_ms: T0 + i * 10_000,
            value: 150.0 + i as f64,
            value_kind: Default::default(),
        })
        .collect();
    store.write("hau-01", "water", T0, &points).unwrap();
    store
        .write(
            "bridge-3",
            "traffic",
            T0,
            &[NewPoint {
                metric: "speed",
                unit: Some("km/h"),
                time_ms: T0,
                value: 31.0,
                value_kind: Default::default(),
            }],
        )
        .unwrap();
    let alerts = alerts_on(&store);
    let pts: Vec<(i64, f64)> = points.iter().map(|p| (p.time_ms, p.value)).collect();
    alerts.observe("hau-01", "water", [("water_level", &pts[..])]);
    (dir, AppState { alerts: Some(alerts), ..anonymous(store) })
}

/// The alert engine on `store` with one config rule, `hau-flood`: water level above 160 cm.
fn alerts_on(store: &Store) -> mekong_alerts::Alerts {
    let rule: mekong_alerts::RuleSpec = serde_json::from_value(serde_json::json!({
        "id": "hau-flood", "type": "threshold", "metric": "water_level", "kind": "water",
        "above": 160.0, "clear": 155.0, "severity": "critical", "message": "{device} at {value} cm"
    }))
    .unwrap();
    let options = mekong_alerts::AlertsOptions { rules: vec![rule], ..Default::default() };
    mekong_alerts::Alerts::start(store.clone(), options, &tokio::runtime::Handle::current()).unwrap()
}

async fn get(state: &AppState, uri: &str) -> (StatusCode, Value) {
    call(router(state.clone()), uri.to_owned()).await
}

async fn call(app: Router, uri: String) -> (StatusCode, Value) {
    let response = app.oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
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

#[tokio::test]
async fn aggregates_by_step_for_one_series_and_across_devices() {
    let (_dir, state) = state();
    // 25 points, 10 s apart, values 150..=174, from 14:13:20: buckets of one minute.
    let (status, body) = get(&state, "/v1/devices/hau-01/series/water_level/aggregate?step=1m").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let buckets = body["buckets"].as_array().unwrap();
    // 14:13 holds 14:13:20, :30, :40, :50 (values 150..=153); then six a minute.
    assert_eq!(buckets[0]["t"], "2026-09-21T14:13:00.000Z");
    assert_eq!(
        (buckets[0]["count"].as_u64(), buckets[0]["min"].as_f64(), buckets[0]["max"].as_f64()),
        (Some(4), Some(150.0), Some(153.0))
    );
    assert_eq!(buckets[0]["avg"], 151.5);
    assert_eq!(buckets[1]["count"], 6);
    assert_eq!(buckets[1]["first"]["v"], 154.0);
    assert_eq!(buckets[1]["last"]["v"], 159.0);
    let total: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 25);

    let uri = "/v1/aggregate?kind=water&metric=water_level&from=2026-09-21T14:00:00Z&to=2026-09-21T15:00:00Z&step=1h";
    let (status, body) = get(&state, uri).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["series"][0]["device"], "hau-01");
    assert_eq!(body["series"][0]["buckets"][0]["sum"], (150..175).sum::<i32>() as f64);
    let (_, body) = get(&state, "/v1/aggregate?kind=traffic&metric=water_level&from=0&to=1&step=1s").await;
    assert!(body["series"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn aggregate_errors_say_what_is_wrong() {
    let (_dir, state) = state();
    for uri in [
        "/v1/devices/hau-01/series/water_level/aggregate",
        "/v1/devices/hau-01/series/water_level/aggregate?step=1y",
        "/v1/devices/hau-01/series/water_level/aggregate?step=0mo",
        "/v1/devices/hau-01/series/water_level/aggregate?step=1ms&from=0&to=1790000000000",
        "/v1/devices/hau-01/series/water_level/aggregate?step=1h&from=5&to=5",
        "/v1/aggregate?metric=water_level&step=1h&from=0",
        "/v1/aggregate?step=1h&from=0&to=1",
        "/v1/aggregate?metric=x&step=1h&from=0&to=1&kind=boats",
    ] {
        let (status, body) = get(&state, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
    }
    let (status, _) = get(&state, "/v1/devices/hau-01/series/salinity/aggregate?step=1h").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Calendar weeks: the readings of Monday 2026-09-21 fall in the ISO week that begins then.
    let (status, body) = get(&state, "/v1/devices/hau-01/series/water_level/aggregate?step=1w").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["buckets"][0]["t"].as_str(), body["step_ms"].as_i64()),
        (Some("2026-09-21T00:00:00.000Z"), Some(604_800_000))
    );
}

/// A state whose API needs tokens: `mkt_read` (read) and `mkt_admin` (admin), with
/// `/metrics` behind a token and one allowed origin.
fn guarded() -> (tempfile::TempDir, AppState) {
    let (dir, state) = state();
    let token = |name: &str, scope, secret: &str| auth::ApiToken {
        name: name.into(),
        scope,
        digest: auth::TokenDigest::of(secret),
    };
    let tokens = vec![token("app", Scope::Read, "mkt_read"), token("ops", Scope::Admin, "mkt_admin")];
    let access = Arc::new(Access::tokens(tokens, false));
    let cors_origins = vec![HeaderValue::from_static("https://apps.cantho.example")];
    (dir, AppState { access, cors_origins, ..state })
}

async fn status_with(state: &AppState, uri: &str, token: Option<&str>) -> StatusCode {
    let mut request = Request::get(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    router(state.clone()).oneshot(request.body(Body::empty()).unwrap()).await.unwrap().status()
}

#[tokio::test]
async fn each_scope_reaches_what_it_covers() {
    let (_dir, state) = guarded();
    let cases = [
        ("/healthz", [StatusCode::OK, StatusCode::OK, StatusCode::OK, StatusCode::OK]),
        ("/metrics", [StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED, StatusCode::OK, StatusCode::OK]),
        ("/v1/latest", [StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED, StatusCode::OK, StatusCode::OK]),
        ("/v1/devices/hau-01", [StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED, StatusCode::OK, StatusCode::OK]),
        ("/v1/stats", [StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED, StatusCode::OK, StatusCode::OK]),
        ("/v1/rejections", [StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN, StatusCode::OK]),
    ];
    for (uri, want) in cases {
        for (token, want) in [None, Some("mkt_wrong"), Some("mkt_read"), Some("mkt_admin")].into_iter().zip(want) {
            assert_eq!(status_with(&state, uri, token).await, want, "{uri} with {token:?}");
        }
    }
    let response =
        router(state.clone()).oneshot(Request::get("/v1/latest").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.headers().get("www-authenticate").unwrap(), "Bearer");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn a_preflight_is_answered_for_allowed_origins_only() {
    let (_dir, guarded) = guarded();
    let preflight = |origin: &str| {
        Request::builder()
            .method("OPTIONS")
            .uri("/v1/latest")
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .body(Body::empty())
            .unwrap()
    };
    let allowed = router(guarded.clone()).oneshot(preflight("https://apps.cantho.example")).await.unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(allowed.headers().get("access-control-allow-origin").unwrap(), "https://apps.cantho.example");
    let refused = router(guarded).oneshot(preflight("https://evil.example")).await.unwrap();
    assert!(refused.headers().get("access-control-allow-origin").is_none());
    // Without configured origins there are no CORS headers at all.
    let (_dir, open) = state();
    let response = router(open).oneshot(preflight("https://apps.cantho.example")).await.unwrap();
    assert!(response.headers().get("access-control-allow-origin").is_none());
}

const HEAVY_DEVICES: usize = 40;
const HEAVY_POINTS: i64 = 20_000;

/// A store with `HEAVY_DEVICES` water sensors of `HEAVY_POINTS` readings each, one a second,
/// written an hour at a time: aggregating all of them by minute decodes every point, which
/// takes orders of magnitude longer than `/healthz`.
fn heavy_state() -> (tempfile::TempDir, AppState) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions { flush_every_ms: None, ..Default::default() }).unwrap();
    for d in 0..HEAVY_DEVICES {
        let device = format!("w-{d:03}");
        for hour in (0..HEAVY_POINTS).step_by(3600) {
            let points: Vec<_> = (hour..(hour + 3600).min(HEAVY_POINTS))
                .map(|i| NewPoint {
                    metric: "water_level",
                    unit: Some("cm"),
                    time_ms: T0 + i * 1000,
                    value: 100.0 + (i % 97) as f64 / 10.0,
                    value_kind: Default::default(),
                })
                .collect();
            store.write(&device, "water", T0, &points).unwrap();
        }
    }
    (dir, anonymous(store))
}

// One thread serves every request, as a runtime with one worker would: had the aggregate run
// on it, `/healthz` could only be answered once the aggregate was done.
#[tokio::test(flavor = "current_thread")]
async fn health_answers_while_a_heavy_aggregate_runs() {
    let (_dir, state) = heavy_state();
    let app = router(state);
    let to = T0 + HEAVY_POINTS * 1000;
    let uri = format!("/v1/aggregate?kind=water&metric=water_level&from={T0}&to={to}&step=1m");
    let aggregate = tokio::spawn(call(app.clone(), uri));
    // On this one thread the spawned task starts when the test yields; it is then in flight.
    tokio::task::yield_now().await;

    let (status, health) = call(app.clone(), "/healthz".into()).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["points"], HEAVY_DEVICES as i64 * HEAVY_POINTS);
    assert!(!aggregate.is_finished(), "/healthz answered only once the aggregate was done");

    let (status, body) = aggregate.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let series = body["series"].as_array().unwrap();
    // Every device once, in order, however many blocking tasks the aggregate took.
    let devices: Vec<_> = series.iter().map(|s| s["device"].as_str().unwrap().to_owned()).collect();
    assert_eq!(devices, (0..HEAVY_DEVICES).map(|d| format!("w-{d:03}")).collect::<Vec<_>>());
    let counted: u64 =
        series.iter().flat_map(|s| s["buckets"].as_array().unwrap()).map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, HEAVY_DEVICES as u64 * HEAVY_POINTS as u64);
}

#[tokio::test]
async fn a_query_that_panics_is_a_500_that_does_not_leak_why() {
    let pool = QueryPool::new(1);
    let error = pool.run(|| -> Result<(), ApiError> { panic!("chunk decoder fell over") }).await.unwrap_err();
    // The cause is kept for the log...
    assert!(matches!(&error, ApiError::Internal(detail) if detail.contains("chunk decoder fell over")), "{error:?}");
    // ...and the client gets the usual internal error.
    let response = error.into_response();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body, serde_json::json!({"error": {"code": "internal", "message": "internal error"}}));
    // The panic gave its permit back: the pool of one still runs queries.
    assert_eq!(pool.run(|| Ok(7)).await.unwrap(), 7);
}

#[tokio::test]
async fn the_pool_runs_as_many_queries_at_once_as_its_bound_and_no_more() {
    let pool = QueryPool::new(2);
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    // Each query waits for a second one to be running beside it, so a bound of two is reached;
    // a pool that let more run at once would be seen above two.
    let pair = Arc::new(Barrier::new(2));
    let queries: Vec<_> = (0..8)
        .map(|_| {
            let (pool, running, most, pair) = (pool.clone(), running.clone(), most.clone(), pair.clone());
            tokio::spawn(async move {
                pool.run(move || {
                    most.fetch_max(running.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    pair.wait();
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                })
                .await
            })
        })
        .collect();
    for query in queries {
        query.await.unwrap().unwrap();
    }
    assert_eq!(most.load(Ordering::SeqCst), 2);
}

/// `(method, path)` of every operation in a document, paths with their parameters as `{}`.
fn operations(document: &Value) -> std::collections::BTreeSet<(String, String)> {
    let mut found = std::collections::BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            found.insert((method.to_uppercase(), generic_path(path)));
        }
    }
    found
}

/// `/v1/devices/{id}/series` and `/v1/devices/{device}/series` alike as `/v1/devices/{}/series`.
fn generic_path(path: &str) -> String {
    path.split('/').map(|s| if s.starts_with('{') { "{}" } else { s }).collect::<Vec<_>>().join("/")
}

async fn openapi(state: &AppState) -> Value {
    let (status, document) = get(state, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document["openapi"], "3.1.0", "{document}");
    document
}

#[tokio::test]
async fn the_document_the_readme_and_the_router_name_the_same_endpoints() {
    let (dir, state) = guarded();
    // With a backup repository, so that every GET can succeed.
    let repository = mekong_store::backup::Repository::new(dir.path().join("repo"));
    let state = AppState { backups: Some(Arc::new(crate::Backups { repository, keep: None })), ..state };
    let document = openapi(&state).await;
    // The README's table of endpoints, the contract people read.
    let readme = include_str!("../../../README.md");
    let table: std::collections::BTreeSet<_> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(endpoint, _)| endpoint))
        .filter_map(|e| e.split_once(' '))
        .filter(|(method, _)| ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(method))
        .map(|(method, path)| (method.to_owned(), generic_path(path.split('?').next().unwrap())))
        .collect();
    assert_eq!(operations(&document), table, "the OpenAPI document and the README's table differ");

    // Every described operation is served: with an admin token and real parameters, none
    // falls through to the router's fallback or is the wrong method, and each answers with a
    // status its description lists.
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let uri =
                path.replace("{device}", "hau-01").replace("{metric}", "water_level").replace("{id}", "hau-flood");
            let uri = if uri.contains("aggregate") {
                format!("{uri}?metric=water_level&from={T0}&to={}&step=1d", T0 + 86_400_000)
            } else if uri.ends_with("/export") {
                format!("{uri}?from={T0}&to={}", T0 + 86_400_000)
            } else {
                uri
            };
            let request = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&uri)
                .header("authorization", "Bearer mkt_admin")
                .body(Body::empty())
                .unwrap();
            let response = router(state.clone()).oneshot(request).await.unwrap();
            let status = response.status();
            // A stream never ends: its head is the answer.
            let bytes = match response.headers().get("content-type").is_some_and(|t| t == "text/event-stream") {
                true => Default::default(),
                false => response.into_body().collect().await.unwrap().to_bytes(),
            };
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            // GETs succeed; a PUT without a body or a DELETE without a registrar say why,
            // with a status their description lists.
            assert!(status.is_success() || method != "get", "{method} {uri}: {status}");
            assert_ne!(body["error"]["message"], "no such endpoint", "{method} {uri} fell through to the fallback");
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
            assert!(
                operation["responses"].get(status.as_str()).is_some(),
                "{method} {path}: {status} is not described"
            );
        }
    }

    // And the other way round: routes are only ever added from their descriptions
    // (`routes!`), never with a bare `.route(..)` that the document would not see.
    let lib = include_str!("lib.rs");
    assert!(!lib.contains(".route(\""), "lib.rs adds a route that is not in the OpenAPI document");
    assert!(lib.matches("routes!(").count() >= 12, "routes! no longer registers the routes");
}

#[tokio::test]
async fn guarded_operations_say_their_scope_and_the_document_needs_no_token() {
    let (_dir, state) = guarded();
    // No token: the document is open, like /healthz.
    assert_eq!(status_with(&state, "/openapi.json", None).await, StatusCode::OK);
    let document = openapi(&state).await;
    let security = |path: &str| document["paths"][path]["get"]["security"].clone();
    assert_eq!(security("/v1/latest"), serde_json::json!([{"bearer": ["read"]}]));
    assert_eq!(security("/v1/rejections"), serde_json::json!([{"bearer": ["admin"]}]));
    assert_eq!(security("/metrics"), serde_json::json!([{"bearer": ["read"]}]));
    assert_eq!(security("/healthz"), Value::Null);
    assert_eq!(security("/openapi.json"), Value::Null);
    assert!(document["paths"]["/v1/rejections"]["get"]["responses"]["403"].is_object());
    assert_eq!(document["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    // With /metrics open, its description says so.
    let (_dir2, open) = state_with_metrics_open();
    let document = openapi(&open).await;
    assert_eq!(document["paths"]["/metrics"]["get"]["security"], Value::Null);
}

fn state_with_metrics_open() -> (tempfile::TempDir, AppState) {
    let (dir, state) = guarded();
    let token = auth::ApiToken { name: "app".into(), scope: Scope::Read, digest: auth::TokenDigest::of("mkt_read") };
    (dir, AppState { access: Arc::new(Access::tokens(vec![token], true)), ..state })
}

/// The document validates against the OpenAPI 3.1 schema, as checked by
/// openapi-spec-validator (Python), an implementation independent of utoipa. Without it the
/// test says SKIPPED rather than passing; CI installs it and sets
/// `MEKONG_REQUIRE_OPENAPI_VALIDATOR=1`, which turns a missing validator into a failure.
#[tokio::test]
async fn the_document_validates_as_openapi_3_1() {
    let (_dir, state) = guarded();
    let document = openapi(&state).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&document).unwrap()).unwrap();
    let script = "import sys, json\nfrom openapi_spec_validator import validate\nfrom openapi_spec_validator.validation import OpenAPIV31SpecValidator\nvalidate(json.load(open(sys.argv[1])), cls=OpenAPIV31SpecValidator)\nprint('valid')";
    let run = std::process::Command::new("python3").arg("-c").arg(script).arg(&file).output();
    let why = match &run {
        Ok(out) if out.status.success() => return assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "valid"),
        Ok(out) if !String::from_utf8_lossy(&out.stderr).contains("ModuleNotFoundError") => {
            panic!("the OpenAPI document does not validate: {}", String::from_utf8_lossy(&out.stderr))
        }
        Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
        Err(e) => e.to_string(),
    };
    assert!(
        !std::env::var("MEKONG_REQUIRE_OPENAPI_VALIDATOR").is_ok_and(|v| v == "1"),
        "MEKONG_REQUIRE_OPENAPI_VALIDATOR=1 but openapi-spec-validator is not usable: {why}"
    );
    eprintln!("the_document_validates_as_openapi_3_1: SKIPPED: openapi-spec-validator is not usable: {why}");
}

/// A store with one series of `n` water levels, one a second, as a tide gauge sends them.
fn long_series(n: i64) -> (tempfile::TempDir, AppState) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions { flush_every_ms: None, ..Default::default() }).unwrap();
    for hour in (0..n).step_by(3600) {
        let points: Vec<_> = (hour..(hour + 3600).min(n))
            .map(|i| NewPoint {
                metric: "water_level",
                unit: Some("cm"),
                time_ms: T0 + i * 1000,
                // A tide of 1.6 m read to the millimetre.
                value: (1200.0 + ((i as f64) / 2000.0).sin() * 800.0).round() / 10.0,
                value_kind: Default::default(),
            })
            .collect();
        store.write("hau-01", "water", T0, &points).unwrap();
    }
    (dir, anonymous(store))
}

async fn fetch(app: Router, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut request = Request::get(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app.oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes().to_vec())
}

#[tokio::test]
async fn responses_are_compressed_for_clients_that_ask() {
    use std::io::Read;
    let (_dir, state) = long_series(10_000);
    let app = router(state);
    let uri = "/v1/devices/hau-01/series/water_level?limit=10000";
    let (status, headers, plain) = fetch(app.clone(), uri, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("content-encoding").is_none());

    let (_, headers, gzip) = fetch(app.clone(), uri, &[("accept-encoding", "gzip")]).await;
    assert_eq!(headers.get("content-encoding").unwrap(), "gzip");
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&gzip[..]).read_to_end(&mut unzipped).unwrap();
    assert_eq!(unzipped, plain);

    let (_, headers, br) = fetch(app.clone(), uri, &[("accept-encoding", "gzip;q=0.5, br")]).await;
    assert_eq!(headers.get("content-encoding").unwrap(), "br");
    let mut unbrotli = Vec::new();
    brotli::Decompressor::new(&br[..], 4096).read_to_end(&mut unbrotli).unwrap();
    assert_eq!(unbrotli, plain);

    // JSON of regular readings is mostly repetition: each encoding takes it below a fifth.
    eprintln!("10,000 points: {} bytes plain, {} gzip, {} br", plain.len(), gzip.len(), br.len());
    assert!(gzip.len() * 5 < plain.len() && br.len() * 5 < plain.len(), "{} {} {}", plain.len(), gzip.len(), br.len());

    // Errors are compressed like the rest, and an encoding nobody offers is not used.
    let (_, headers, _) = fetch(app.clone(), "/v1/devices/nope/series/x?limit=0", &[("accept-encoding", "br")]).await;
    assert_eq!(headers.get("content-encoding").unwrap(), "br");
    let (_, headers, _) = fetch(app, uri, &[("accept-encoding", "zstd, deflate")]).await;
    assert!(headers.get("content-encoding").is_none());
}

/// Rows of a CSV as Python's `csv` module reads them, so that the test does not trust a
/// reader of its own making.
fn python_csv(bytes: &[u8]) -> Vec<Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.csv");
    std::fs::write(&file, bytes).unwrap();
    let script = "import csv, json, sys\nprint(json.dumps(list(csv.reader(open(sys.argv[1], newline='')))))";
    let out = std::process::Command::new("python3").arg("-c").arg(script).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn points_in_csv_are_every_point_of_the_range_streamed_in_pieces() {
    let n = 25_000;
    let (_dir, state) = long_series(n);
    let app = router(state);
    let uri = format!("/v1/devices/hau-01/series/water_level?format=csv&from={}", T0 + 1000);
    let response = app.clone().oneshot(Request::get(&uri).body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8; header=present");
    assert!(response.headers()["content-disposition"].to_str().unwrap().contains("hau-01_water_level.csv"));
    // The body comes in pieces, not as one buffer.
    let mut body = response.into_body();
    let (mut frames, mut bytes) = (0, Vec::new());
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            frames += 1;
            bytes.extend_from_slice(&data);
        }
    }
    assert!(frames >= 3, "{frames} frames");
    let rows = python_csv(&bytes);
    assert_eq!(rows[0], ["t", "t_ms", "v"]);
    assert_eq!(rows.len() as i64, n);
    // Every time and value, against the JSON pages of the same range.
    let mut from = T0 + 1000;
    let mut row = 1;
    loop {
        let (_, page) =
            call(app.clone(), format!("/v1/devices/hau-01/series/water_level?from={from}&limit=10000")).await;
        for p in page["points"].as_array().unwrap() {
            assert_eq!(rows[row][0], p["t"].as_str().unwrap());
            assert_eq!(rows[row][1].parse::<i64>().unwrap(), p["t_ms"].as_i64().unwrap());
            assert_eq!(rows[row][2].parse::<f64>().unwrap(), p["v"].as_f64().unwrap());
            row += 1;
        }
        match page["next_from_ms"].as_i64() {
            Some(next) => from = next,
            None => break,
        }
    }
    assert_eq!(row, rows.len());

    // `limit` caps the rows; Accept picks CSV too; and `to` is exclusive.
    let uri = format!("/v1/devices/hau-01/series/water_level?limit=3&to={}", T0 + 2000);
    let (_, _, bytes) = fetch(app.clone(), &uri, &[("accept", "text/csv")]).await;
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        "t,t_ms,v\n2026-09-21T14:13:20.000Z,1790000000000,120\n2026-09-21T14:13:21.000Z,1790000001000,120\n"
    );
}

#[tokio::test]
async fn aggregates_in_csv_match_their_json() {
    let (_dir, state) = long_series(25_000);
    let app = router(state);
    let to = T0 + 25_000 * 1000;
    for (json, csv) in [
        (format!("/v1/devices/hau-01/series/water_level/aggregate?step=1s&from={T0}&to={to}"), true),
        (format!("/v1/devices/hau-01/series/water_level/aggregate?step=15m&from={T0}&to={to}"), true),
        (format!("/v1/aggregate?metric=water_level&step=1m&from={T0}&to={to}"), false),
    ] {
        let (_, body) = call(app.clone(), json.clone()).await;
        let buckets: Vec<(String, Value)> = match csv {
            true => body["buckets"].as_array().unwrap().iter().map(|b| ("hau-01".to_owned(), b.clone())).collect(),
            false => body["series"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| {
                    s["buckets"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|b| (s["device"].as_str().unwrap().to_owned(), b.clone()))
                })
                .collect(),
        };
        let (status, _, bytes) = fetch(app.clone(), &format!("{json}&format=csv"), &[]).await;
        assert_eq!(status, StatusCode::OK);
        let rows = python_csv(&bytes);
        let skip = usize::from(!csv);
        let header = &rows[0][skip..];
        assert_eq!(header.join(","), "t,t_ms,count,min,max,sum,avg,first_t_ms,first,last_t_ms,last");
        assert_eq!(rows.len() - 1, buckets.len(), "{json}");
        for (row, (device, b)) in rows[1..].iter().zip(&buckets) {
            if !csv {
                assert_eq!(&row[0], device);
            }
            let row = &row[skip..];
            assert_eq!(row[0], b["t"].as_str().unwrap());
            assert_eq!(row[1].parse::<i64>().unwrap(), b["t_ms"].as_i64().unwrap());
            assert_eq!(row[2].parse::<u64>().unwrap(), b["count"].as_u64().unwrap());
            for (i, name) in [(3, "min"), (4, "max"), (5, "sum"), (6, "avg")] {
                assert_eq!(row[i].parse::<f64>().unwrap(), b[name].as_f64().unwrap(), "{name}");
            }
            assert_eq!(row[7].parse::<i64>().unwrap(), b["first"]["t_ms"].as_i64().unwrap());
            assert_eq!(row[8].parse::<f64>().unwrap(), b["first"]["v"].as_f64().unwrap());
            assert_eq!(row[9].parse::<i64>().unwrap(), b["last"]["t_ms"].as_i64().unwrap());
            assert_eq!(row[10].parse::<f64>().unwrap(), b["last"]["v"].as_f64().unwrap());
        }
    }
    // Errors before the first row are JSON with their status.
    let (status, body) =
        call(app.clone(), "/v1/devices/hau-01/series/salinity/aggregate?step=1h&format=csv".into()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (status, _) = call(app, "/v1/devices/hau-01/series/water_level?format=xml".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// A store with a water level every 10 minutes over `[from, to)` (values counting up from
/// 0), folded into blocks and hourly rollups as the upkeep would, so that day buckets are
/// read from rollups where they can be.
fn ten_minute_series(from: &str, to: &str) -> (tempfile::TempDir, AppState, Vec<(i64, f64)>) {
    let (from, to) = (time::parse("from", from).unwrap(), time::parse("to", to).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions { flush_every_ms: None, ..Default::default() }).unwrap();
    let all: Vec<(i64, f64)> = (0..).map(|i| (from + i * 600_000, i as f64)).take_while(|p| p.0 < to).collect();
    for hour in all.chunks(6) {
        let points: Vec<_> = hour
            .iter()
            .map(|&(t, v)| NewPoint {
                metric: "water_level",
                unit: Some("cm"),
                time_ms: t,
                value: v,
                value_kind: Default::default(),
            })
            .collect();
        store.write("hau-01", "water", hour[0].0, &points).unwrap();
    }
    store.fold(to + 86_400_000 * 2, || true).unwrap();
    (dir, anonymous(store), all)
}

/// Day buckets of the series in `tz` between `from` and `to`: (start, count, sum).
async fn local_days(state: &AppState, tz: &str, from: &str, to: &str) -> Vec<(String, u64, f64)> {
    let uri = format!("/v1/devices/hau-01/series/water_level/aggregate?step=1d&tz={tz}&from={from}&to={to}");
    let (status, body) = get(state, &uri).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tz"], tz);
    body["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["t"].as_str().unwrap().to_owned(), b["count"].as_u64().unwrap(), b["sum"].as_f64().unwrap()))
        .collect()
}

/// The same buckets by brute force over the points, given the buckets' starts.
fn brute_force(points: &[(i64, f64)], starts: &[&str], to: &str) -> Vec<(String, u64, f64)> {
    let to = time::parse("to", to).unwrap();
    let starts: Vec<i64> = starts.iter().map(|s| time::parse("t", s).unwrap()).collect();
    let mut out = Vec::new();
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(to);
        let inside: Vec<_> = points.iter().filter(|p| p.0 >= start && p.0 < end).collect();
        out.push((time::format(start), inside.len() as u64, inside.iter().map(|p| p.1).sum()));
    }
    out
}

#[tokio::test]
async fn local_days_in_can_tho_start_at_17_utc() {
    let (_dir, state, points) = ten_minute_series("2026-11-25T00:00:00Z", "2026-11-29T00:00:00Z");
    let (from, to) = ("2026-11-25T17:00:00Z", "2026-11-28T17:00:00Z");
    let days = local_days(&state, "Asia/Ho_Chi_Minh", from, to).await;
    let starts = ["2026-11-25T17:00:00Z", "2026-11-26T17:00:00Z", "2026-11-27T17:00:00Z"];
    assert_eq!(days, brute_force(&points, &starts, to));
    assert!(days.iter().all(|d| d.1 == 144), "{days:?}");
    // The same range in UTC days: buckets at midnight UTC, the first and last partial.
    let (_, body) =
        get(&state, &format!("/v1/devices/hau-01/series/water_level/aggregate?step=1d&from={from}&to={to}")).await;
    assert_eq!(body["buckets"][1]["t"], "2026-11-26T00:00:00.000Z");
    assert_eq!(body["buckets"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn berlin_days_have_23_and_25_hours_across_daylight_saving() {
    for (from, to, starts, counts) in [
        // Spring: 2026-03-29 loses an hour.
        (
            "2026-03-27T23:00:00Z",
            "2026-03-30T22:00:00Z",
            ["2026-03-27T23:00:00Z", "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z"],
            [144, 138, 144],
        ),
        // Autumn: 2026-10-25 gains one.
        (
            "2026-10-23T22:00:00Z",
            "2026-10-26T23:00:00Z",
            ["2026-10-23T22:00:00Z", "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z"],
            [144, 150, 144],
        ),
    ] {
        let (_dir, state, points) = ten_minute_series("2026-03-20T00:00:00Z", "2026-04-05T00:00:00Z");
        let (_dir2, autumn, autumn_points) = ten_minute_series("2026-10-20T00:00:00Z", "2026-11-01T00:00:00Z");
        let (state, points) = if from.starts_with("2026-03") { (state, points) } else { (autumn, autumn_points) };
        let days = local_days(&state, "Europe/Berlin", from, to).await;
        assert_eq!(days, brute_force(&points, &starts, to), "{from}");
        assert_eq!(days.iter().map(|d| d.1).collect::<Vec<_>>(), counts, "{from}");
    }
}

#[tokio::test]
async fn local_days_with_a_half_hour_offset_read_their_partial_hours_from_points() {
    // India is UTC+05:30: its days start at 18:30 UTC, in the middle of a rollup's hour.
    let (_dir, state, points) = ten_minute_series("2026-11-25T00:00:00Z", "2026-11-29T00:00:00Z");
    let (from, to) = ("2026-11-25T18:30:00Z", "2026-11-28T18:30:00Z");
    let days = local_days(&state, "Asia/Kolkata", from, to).await;
    let starts = ["2026-11-25T18:30:00Z", "2026-11-26T18:30:00Z", "2026-11-27T18:30:00Z"];
    assert_eq!(days, brute_force(&points, &starts, to));
    // Sub-day steps and unknown zones are refused.
    for uri in [
        "/v1/devices/hau-01/series/water_level/aggregate?step=1h&tz=Asia/Kolkata",
        "/v1/devices/hau-01/series/water_level/aggregate?step=1d&tz=Asia/Can_Tho",
    ] {
        let (status, body) = get(&state, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
    }
}

#[tokio::test]
async fn registered_devices_are_listed_with_their_profile_before_they_send() {
    use crate::directory::{Directory, Location, Profile};
    use mekong_schema::DeviceKind;
    let (_dir, state) = state();
    let wharf = Profile::new(
        DeviceKind::Water,
        Some("Ninh Kieu wharf".into()),
        Some(Location::new(10.034, 105.788, Some(2.5)).unwrap()),
        [("river".to_owned(), "Hau".to_owned())].into(),
    )
    .unwrap();
    let silent = Profile::new(DeviceKind::Water, None, Some(Location::new(10.005, 105.749, None).unwrap()), [].into());
    let directory = Directory::new([("hau-01".to_owned(), wharf), ("cai-rang-02".to_owned(), silent.unwrap())].into());
    let state = AppState { directory, ..state };

    let (_, body) = get(&state, "/v1/devices?kind=water").await;
    let devices = body["devices"].as_array().unwrap();
    let ids: Vec<_> = devices.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["cai-rang-02", "hau-01"]);
    // The silent one: registered, its place, zero counts, no times.
    assert_eq!(devices[0]["registered"], true);
    assert_eq!(devices[0]["location"], serde_json::json!({"lat": 10.005, "lon": 105.749, "elevation": null}));
    assert_eq!((devices[0]["points"].as_u64(), devices[0]["packs"].as_u64()), (Some(0), Some(0)));
    assert_eq!(devices[0]["first_seen"], Value::Null);
    assert_eq!(devices[0]["kind"], "water");
    // The one that sent: its counts and its profile.
    assert_eq!(devices[1]["name"], "Ninh Kieu wharf");
    assert_eq!(devices[1]["tags"]["river"], "Hau");
    assert_eq!(devices[1]["location"]["elevation"], 2.5);
    assert_eq!(devices[1]["points"], 25);
    assert_eq!(devices[1]["first_seen_ms"], T0);

    // Only seen, never registered: listed, without a profile.
    let (_, body) = get(&state, "/v1/devices?kind=traffic").await;
    assert_eq!(body["devices"][0]["id"], "bridge-3");
    assert_eq!(body["devices"][0]["registered"], false);
    assert_eq!(body["devices"][0]["location"], Value::Null);

    let (status, one) = get(&state, "/v1/devices/cai-rang-02").await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["series"], 0);
    let (status, _) = get(&state, "/v1/devices/nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A change of the registry reaches the next request.
    state.directory.replace(Default::default());
    let (status, _) = get(&state, "/v1/devices/cai-rang-02").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A registry in memory that applies its edits to the directory, as the binary's file
/// registrar does.
#[derive(Debug, Default)]
struct MemoryRegistrar {
    directory: crate::directory::Directory,
}

impl crate::directory::Registrar for MemoryRegistrar {
    fn put(&self, id: &str, profile: &crate::directory::Profile) -> Result<bool, crate::directory::RegistrarError> {
        let mut all = (*self.directory.snapshot()).clone();
        let added = all.insert(id.to_owned(), profile.clone()).is_none();
        self.directory.replace(all);
        Ok(added)
    }

    fn remove(&self, id: &str) -> Result<bool, crate::directory::RegistrarError> {
        let mut all = (*self.directory.snapshot()).clone();
        let removed = all.remove(id).is_some();
        self.directory.replace(all);
        Ok(removed)
    }
}

async fn send(state: &AppState, method: &str, uri: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json");
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    let response = router(state.clone()).oneshot(request.body(body).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn admins_add_change_and_remove_devices_and_readers_cannot() {
    let (_dir, state) = guarded();
    let directory = crate::directory::Directory::default();
    let registrar = Arc::new(MemoryRegistrar { directory: directory.clone() });
    let state = AppState { directory, registrar: Some(registrar), ..state };
    let wharf = serde_json::json!({"kind": "water", "name": "Ninh Kieu wharf",
        "location": {"lat": 10.034, "lon": 105.788}, "tags": {"river": "Hau"}});

    let (status, _) = send(&state, "PUT", "/v1/devices/cai-rang-02", "mkt_read", Some(wharf.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = send(&state, "PUT", "/v1/devices/cai-rang-02", "mkt_admin", Some(wharf.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!((body["registered"].as_bool(), body["points"].as_u64()), (Some(true), Some(0)));
    let (_, listed) = send(&state, "GET", "/v1/devices?kind=water", "mkt_read", None).await;
    let ids: Vec<_> = listed["devices"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["cai-rang-02", "hau-01"]);

    let changed = serde_json::json!({"kind": "water", "name": "Cai Rang wharf"});
    let (status, body) = send(&state, "PUT", "/v1/devices/cai-rang-02", "mkt_admin", Some(changed)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["name"].as_str(), &body["location"]), (Some("Cai Rang wharf"), &Value::Null));

    for bad in [
        serde_json::json!({"kind": "boat"}),
        serde_json::json!({"kind": "air", "location": {"lat": 91.0, "lon": 0.0}}),
        serde_json::json!({"kind": "air", "colour": "red"}),
        serde_json::json!({"name": "no kind"}),
    ] {
        let (status, body) = send(&state, "PUT", "/v1/devices/cai-rang-02", "mkt_admin", Some(bad.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "bad_request");
    }
    let (status, _) = send(&state, "PUT", "/v1/devices/Not_An_Id", "mkt_admin", Some(wharf)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, _) = send(&state, "DELETE", "/v1/devices/cai-rang-02", "mkt_read", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = send(&state, "DELETE", "/v1/devices/cai-rang-02", "mkt_admin", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = send(&state, "DELETE", "/v1/devices/cai-rang-02", "mkt_admin", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(&state, "GET", "/v1/devices/cai-rang-02", "mkt_read", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The id can be used again.
    let again = serde_json::json!({"kind": "air"});
    let (status, _) = send(&state, "PUT", "/v1/devices/cai-rang-02", "mkt_admin", Some(again)).await;
    assert_eq!(status, StatusCode::CREATED);

    // Removing with its data: hau-01 is only stored (not registered here); its data goes.
    let (status, body) = send(&state, "DELETE", "/v1/devices/hau-01?data=maybe", "mkt_admin", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = send(&state, "DELETE", "/v1/devices/hau-01?data=delete", "mkt_read", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let series = state.store.series_of("hau-01").unwrap().len();
    assert!(series > 0);
    let (status, body) = send(&state, "DELETE", "/v1/devices/hau-01?data=delete", "mkt_admin", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["unregistered"].as_bool(), body["series"].as_u64()), (Some(false), Some(series as u64)));
    assert!(body["points"].as_u64().unwrap() > 0, "{body}");
    let (status, _) = send(&state, "GET", "/v1/devices/hau-01", "mkt_read", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(&state, "DELETE", "/v1/devices/hau-01?data=delete", "mkt_admin", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Registered and stored: both go, in one request.
    let (status, body) = send(&state, "DELETE", "/v1/devices/cai-rang-02?data=delete", "mkt_admin", None).await;
    assert_eq!(
        (status, body["unregistered"].as_bool(), body["series"].as_u64()),
        (StatusCode::OK, Some(true), Some(0))
    );
}

#[tokio::test]
async fn alerts_are_listed_to_readers_and_their_rules_managed_by_admins() {
    let (_dir, state) = guarded();
    let (status, body) = send(&state, "GET", "/v1/alerts", "mkt_read", None).await;
    assert_eq!(status, StatusCode::OK);
    let alert = &body["alerts"][0];
    assert_eq!((alert["rule"].as_str(), alert["device"].as_str()), (Some("hau-flood"), Some("hau-01")));
    assert_eq!((alert["state"].as_str(), alert["severity"].as_str()), (Some("firing"), Some("critical")));
    // The first reading above 160 cm: 150 + 11.
    assert_eq!((alert["since_ms"].as_i64(), alert["value"].as_f64()), (Some(T0 + 110_000), Some(161.0)));
    assert_eq!(alert["message"], "hau-01 at 161 cm");
    let (status, body) =
        send(&state, "GET", &format!("/v1/alerts/history?from={T0}&rule=hau-flood"), "mkt_read", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["changes"].as_array().unwrap().len(), 1);
    assert_eq!(body["changes"][0]["seq"], 1);
    let (status, _) = send(&state, "GET", "/v1/alerts/history?from=yesterday", "mkt_read", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    for uri in ["/v1/alerts/rules", "/v1/alerts/deliveries"] {
        assert_eq!(send(&state, "GET", uri, "mkt_read", None).await.0, StatusCode::FORBIDDEN, "{uri}");
        assert_eq!(send(&state, "GET", uri, "mkt_admin", None).await.0, StatusCode::OK, "{uri}");
    }
    let salt = serde_json::json!({"type": "threshold", "metric": "salinity", "above": 4.0, "for_s": 600,
        "clear": 3.0, "message": "salinity {value} ppt at {device}"});
    assert_eq!(
        send(&state, "PUT", "/v1/alerts/rules/salt", "mkt_read", Some(salt.clone())).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, body) = send(&state, "PUT", "/v1/alerts/rules/salt", "mkt_admin", Some(salt.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        (body["id"].as_str(), body["source"].as_str(), body["above"].as_f64()),
        (Some("salt"), Some("api"), Some(4.0))
    );
    assert_eq!(send(&state, "PUT", "/v1/alerts/rules/salt", "mkt_admin", Some(salt.clone())).await.0, StatusCode::OK);
    let (status, body) = send(&state, "PUT", "/v1/alerts/rules/hau-flood", "mkt_admin", Some(salt)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")));
    let bad = serde_json::json!({"type": "threshold", "metric": "salinity", "above": 4.0, "below": 1.0});
    assert_eq!(send(&state, "PUT", "/v1/alerts/rules/salt", "mkt_admin", Some(bad)).await.0, StatusCode::BAD_REQUEST);
    let (_, body) = send(&state, "GET", "/v1/alerts/rules", "mkt_admin", None).await;
    let ids: Vec<_> = body["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r["source"].as_str().unwrap()))
        .collect();
    assert_eq!(ids, [("hau-flood", "config"), ("salt", "api")]);
    assert_eq!(send(&state, "DELETE", "/v1/alerts/rules/hau-flood", "mkt_admin", None).await.0, StatusCode::CONFLICT);
    assert_eq!(send(&state, "DELETE", "/v1/alerts/rules/salt", "mkt_read", None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(send(&state, "DELETE", "/v1/alerts/rules/salt", "mkt_admin", None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(send(&state, "DELETE", "/v1/alerts/rules/salt", "mkt_admin", None).await.0, StatusCode::NOT_FOUND);
    // Without an engine the routes say so.
    let off = AppState { alerts: None, ..state };
    assert_eq!(send(&off, "GET", "/v1/alerts", "mkt_read", None).await.0, StatusCode::NOT_FOUND);
}

/// Every `kind` the document describes, parameter or field, is a pattern that names exactly
/// the device kinds (a literal in the annotations, so it could fall behind a new kind).
#[tokio::test]
async fn the_documented_kinds_are_the_device_kinds() {
    let (_dir, state) = guarded();
    let document = openapi(&state).await;
    let names: Vec<_> = mekong_schema::DeviceKind::ALL.iter().map(|k| k.as_str()).collect();
    let pattern = format!("^({})$", names.join("|"));
    let mut seen = 0;
    // The stream's `kind` is a list of kinds, said in its description.
    let paths = document["paths"].as_object().unwrap().iter().filter(|(path, _)| *path != "/v1/stream");
    for operation in paths.flat_map(|(_, p)| p.as_object().unwrap().values()) {
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            if parameter["name"] == "kind" && parameter["in"] == "query" {
                assert_eq!(parameter["schema"]["pattern"], pattern.as_str(), "{parameter}");
                seen += 1;
            }
        }
    }
    assert!(seen >= 3, "{seen} kind parameters");
    assert_eq!(document["components"]["schemas"]["DeviceIn"]["properties"]["kind"]["pattern"], pattern.as_str());
}

/// A series of booleans (SenML `vb`) reads back as booleans: points in JSON and CSV, its
/// buckets (the share of true as `avg`), its listing and the latest values say so.
#[tokio::test]
async fn a_boolean_series_reads_back_as_booleans() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions { flush_every_ms: None, ..Default::default() }).unwrap();
    let pump = |i: i64, on: bool| NewPoint {
        metric: "pump_running",
        unit: None,
        time_ms: T0 + i * 60_000,
        value: f64::from(u8::from(on)),
        value_kind: mekong_store::ValueKind::Boolean,
    };
    let points = [pump(0, true), pump(1, true), pump(2, false), pump(3, true)];
    store.write("pump-7", "water", T0, &points).unwrap();
    let app = router(anonymous(store));

    let (status, _, body) = fetch(app.clone(), "/v1/devices/pump-7/series/pump_running", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["value_kind"], "boolean");
    let values: Vec<_> = body["points"].as_array().unwrap().iter().map(|p| p["v"].clone()).collect();
    assert_eq!(values, [true, true, false, true].map(Value::Bool));

    let (_, _, csv) = fetch(app.clone(), "/v1/devices/pump-7/series/pump_running?format=csv", &[]).await;
    let rows = python_csv(&csv);
    assert_eq!(rows[0], ["t", "t_ms", "v"]);
    assert_eq!(rows[1..].iter().map(|r| r[2].as_str()).collect::<Vec<_>>(), ["true", "true", "false", "true"]);

    let uri = "/v1/devices/pump-7/series/pump_running/aggregate?step=1h";
    let (_, _, body) = fetch(app.clone(), uri, &[]).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    let bucket = &body["buckets"][0];
    assert_eq!(body["value_kind"], "boolean");
    assert_eq!(
        (bucket["count"].as_u64(), bucket["sum"].as_f64(), bucket["avg"].as_f64()),
        (Some(4), Some(3.0), Some(0.75))
    );
    assert_eq!((&bucket["min"], &bucket["max"]), (&Value::Bool(false), &Value::Bool(true)));
    assert_eq!((&bucket["first"]["v"], &bucket["last"]["v"]), (&Value::Bool(true), &Value::Bool(true)));
    let (_, _, csv) = fetch(app.clone(), &format!("{uri}&format=csv"), &[]).await;
    let rows = python_csv(&csv);
    assert_eq!(
        rows[1][2..],
        ["4", "false", "true", "3", "0.75", &T0.to_string(), "true", &(T0 + 180_000).to_string(), "true"]
    );

    let (_, _, body) = fetch(app.clone(), "/v1/devices/pump-7/series", &[]).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (&body["series"][0]["value_kind"], &body["series"][0]["last_value"]),
        (&Value::from("boolean"), &Value::Bool(true))
    );
    let (_, _, body) = fetch(app, "/v1/latest", &[]).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (&body["latest"][0]["value_kind"], &body["latest"][0]["v"]),
        (&Value::from("boolean"), &Value::Bool(true))
    );
}

#[tokio::test]
async fn admins_take_and_list_backups_into_the_configured_repository_and_readers_cannot() {
    let (dir, state) = guarded();
    // Off without a repository.
    let (status, body) = send(&state, "POST", "/v1/backups", "mkt_admin", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let repository = mekong_store::backup::Repository::new(dir.path().join("repo"));
    let backups = Arc::new(crate::Backups { repository: repository.clone(), keep: Some(2) });
    let state = AppState { backups: Some(backups), ..state };
    for token in ["mkt_read", "nope"] {
        let (status, _) = send(&state, "POST", "/v1/backups", token, None).await;
        assert!(matches!(status, StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED), "{token}: {status}");
        let (status, _) = send(&state, "GET", "/v1/backups", token, None).await;
        assert!(matches!(status, StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED), "{token}: {status}");
    }
    assert!(!repository.dir().exists(), "a refused request wrote nothing");
    // A path in the body is not something a caller may give.
    let (status, _) =
        send(&state, "POST", "/v1/backups", "mkt_admin", Some(serde_json::json!({"dir": "/tmp/elsewhere"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let mut ids = Vec::new();
    for full in [true, false, false] {
        let (status, body) =
            send(&state, "POST", "/v1/backups", "mkt_admin", Some(serde_json::json!({ "full": full }))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["backup"]["readings"], 26, "{body}");
        assert!(body["pause_ms"].as_f64().unwrap() >= 0.0);
        ids.push(body["backup"]["id"].as_str().unwrap().to_owned());
    }
    let (status, body) = send(&state, "GET", "/v1/backups", "mkt_admin", None).await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<&str> = body["backups"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(listed, ids[1..], "keep = 2");
    assert!(repository.verify(None).unwrap().problems.is_empty());
}

/// `/metrics` shows the write groups logged and not yet folded into the store's tree.
#[tokio::test]
async fn metrics_count_the_write_groups_not_yet_folded() {
    let dir = tempfile::tempdir().unwrap();
    // No background fold: the test folds when it wants.
    let options = StoreOptions { flush_every_ms: None, fold_log_every_ms: None, ..Default::default() };
    let store = Store::open(dir.path(), &options).unwrap();
    let state = anonymous(store.clone());
    let metrics = || async {
        let response = router(state.clone()).oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await;
        let bytes = response.unwrap().into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    };
    for i in 0..2 {
        let point =
            NewPoint { metric: "rain", unit: None, time_ms: T0 + i, value: 1.0, value_kind: Default::default() };
        store.write("wx-1", "weather", T0, &[point]).unwrap();
    }
    let text = metrics().await;
    assert!(text.contains("\nmekong_store_log_records 2\n"), "{text}");
    assert!(!text.contains("\nmekong_store_log_bytes 0\n"), "{text}");
    store.fold_log().unwrap();
    let text = metrics().await;
    assert!(text.contains("\nmekong_store_log_records 0\n"), "{text}");
    assert!(text.contains("\nmekong_store_log_bytes 0\n"), "{text}");
}
