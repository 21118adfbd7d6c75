//! `GET /v1/export` on the real server: readings published over MQTT (SenML-JSON: decimal,
//! non-decimal and boolean series), exported as CSV and Parquet through a streamed answer and
//! read back by Python's csv module and pyarrow, every time and value checked; filters, an
//! empty range, scopes and bad parameters.

use mekong_api::auth::Scope;
use mekong_tests::export::{check_parquet_schema, pyarrow_or_skip, read, row, Row, COLUMNS};
use mekong_tests::{now_secs, Downlink, Sensor, TIMEOUT};
use serde_json::Value;

use crate::platform::{config, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_through_the_api_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("devices.toml");
    let read_token = mekong::token::create(&registry, "city-app", Scope::Read).unwrap();
    let admin = mekong::token::create(&registry, "operations", Scope::Admin).unwrap();
    let mut config = config(&dir.path().join("data"));
    config.registry.path = registry;
    let running = start(&config).await;
    let base = format!("http://127.0.0.1:{}", running.platform.http_addr.port());
    let http = reqwest::Client::new();

    // Whole seconds, and offsets in eighths of a second: times exact in both SenML and ms.
    let bt = (now_secs() / 600.0).floor() * 600.0 - 600.0;
    let bt_ms = bt as i64 * 1000;
    let decimal = [12.5, 12.75, -0.25, 3.1];
    let odd = [1.0 / 3.0, 1e-7, 12_345.678_901_234_567, std::f64::consts::PI];
    let gate = [true, false, true];
    let mut records = Vec::new();
    for (i, v) in decimal.iter().enumerate() {
        records.push(format!(r#"{{"n":"level","u":"m","t":{},"v":{v:?}}}"#, i as f64 * 0.125));
    }
    for (i, b) in gate.iter().enumerate() {
        records.push(format!(r#"{{"n":"gate_open","t":{},"vb":{b}}}"#, i as f64 * 60.5));
    }
    let mut river = Sensor::device(running.mqtt(), "river-1").await;
    let json = format!(r#"[{{"bt":{bt},{}]"#, &records.join(",")[1..]);
    river.publish("mekong/v1/river-1/up", json.into_bytes()).await;
    assert!(matches!(river.downlink().await, Downlink::Ack { readings: 7, .. }), "river-1");
    let records: Vec<String> = odd
        .iter()
        .enumerate()
        .map(|(i, v)| format!(r#"{{"n":"pm25","u":"ug/m3","t":{},"v":{v:?}}}"#, i as f64 * 30.0))
        .collect();
    let mut air = Sensor::device(running.mqtt(), "air-2").await;
    let json = format!(r#"[{{"bt":{bt},{}]"#, &records.join(",")[1..]);
    air.publish("mekong/v1/air-2/up", json.into_bytes()).await;
    assert!(matches!(air.downlink().await, Downlink::Ack { readings: 4, .. }), "air-2");

    let get = |query: String, token: Option<String>| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let mut request = http.get(format!("{base}/v1/export?{query}")).timeout(TIMEOUT);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            (status, headers, response.bytes().await.unwrap().to_vec())
        }
    };
    let kind = |device: &'static str| {
        let (http, base, admin) = (http.clone(), base.clone(), admin.clone());
        async move {
            let response = http.get(format!("{base}/v1/devices/{device}")).bearer_auth(admin).send().await.unwrap();
            let body: Value = response.json().await.unwrap();
            body["kind"].as_str().unwrap().to_owned()
        }
    };
    let (air_kind, river_kind) = (kind("air-2").await, kind("river-1").await);
    let mut rows: Vec<Row> = Vec::new();
    for (i, v) in odd.iter().enumerate() {
        rows.push(row("air-2", &air_kind, "pm25", Some("ug/m3"), bt_ms + i as i64 * 30_000, *v, None));
    }
    for (i, b) in gate.iter().enumerate() {
        let t = bt_ms + (i as f64 * 60_500.0) as i64;
        rows.push(row("river-1", &river_kind, "gate_open", None, t, f64::from(u8::from(*b)), Some(*b)));
    }
    for (i, v) in decimal.iter().enumerate() {
        rows.push(row("river-1", &river_kind, "level", Some("m"), bt_ms + i as i64 * 125, *v, None));
    }

    let parquet = pyarrow_or_skip("exports_through_the_api_read_back_exactly");
    let (from, to) = (bt_ms, bt_ms + 3_600_000);
    let cases: Vec<(String, Vec<Row>)> = vec![
        (format!("from={from}&to={to}"), rows.clone()),
        (
            format!("from={from}&to={to}&device=river-1&metric=gate_open,pm25"),
            rows.iter().filter(|r| r.0 == "river-1" && r.2 == "gate_open").cloned().collect(),
        ),
        (
            format!("from={}&to={to}&kind={air_kind}", bt_ms + 30_000),
            rows.iter().filter(|r| r.1 == air_kind && r.4 >= bt_ms + 30_000).cloned().collect(),
        ),
        (format!("from={}&to={from}", from - 1000), vec![]),
    ];
    for (i, (query, want)) in cases.iter().enumerate() {
        for format in ["csv", "parquet"] {
            if format == "parquet" && !parquet {
                continue;
            }
            let (status, headers, body) = get(format!("{query}&format={format}"), Some(admin.clone())).await;
            assert_eq!(status, 200, "{query}: {}", String::from_utf8_lossy(&body));
            let disposition = headers["content-disposition"].to_str().unwrap();
            assert!(
                disposition.starts_with("attachment; filename=\"mekong-")
                    && disposition.ends_with(&format!(".{format}\""))
            );
            let media = if format == "csv" { "text/csv" } else { "application/vnd.apache.parquet" };
            assert!(headers["content-type"].to_str().unwrap().starts_with(media));
            let file = dir.path().join(format!("{i}.{format}"));
            std::fs::write(&file, &body).unwrap();
            let got = read(format, &file);
            assert_eq!(got.header, COLUMNS);
            if format == "parquet" {
                check_parquet_schema(&got);
            }
            assert_eq!(got.rows, *want, "{format} {query}");
        }
    }

    // Admin only; a read token is refused, and so is no token.
    let everything = format!("from={from}&to={to}");
    assert_eq!(get(everything.clone(), Some(read_token.clone())).await.0, 403);
    assert_eq!(get(everything.clone(), None).await.0, 401);
    for (query, status, want) in [
        (format!("to={to}"), 400, "from is required"),
        (format!("from={from}"), 400, "to is required"),
        (format!("from={to}&to={from}"), 400, "must be before"),
        (format!("from=yesterday&to={to}"), 400, "from: expected an RFC 3339 time"),
        (format!("{everything}&format=xlsx"), 400, "format must be csv or parquet"),
        (format!("{everything}&kind=boats"), 400, "kind must be one of"),
        (format!("{everything}&device=river-1,,air-2"), 400, "an empty name"),
        (format!("{everything}&device=nobody"), 404, "unknown device"),
    ] {
        let (got, _, body) = get(query.clone(), Some(admin.clone())).await;
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(got, status, "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(want), "{query}: {message}");
    }
}
