//! The compact forms of a range of points, through the real server: `format=columnar` (JSON
//! columns) and CBOR (`format=cbor` or `Accept: application/cbor`) give the same points, page
//! by page, as the default form, for numbers read to a decimal, numbers that no short decimal
//! writes, and booleans; an empty range is empty columns; an unknown format is a 400 that
//! names the forms. The CBOR is decoded by Python's `cbor2` (which CI installs for the COSE
//! cross-check), an implementation that knows nothing of mekong's writer. Without a usable
//! `cbor2` that read-back prints SKIPPED and the rest of the test runs;
//! `MEKONG_REQUIRE_PYCOSE=1`, which needs `cbor2` anyway, makes it a failure.

use mekong_tests::{now_secs, pack, Downlink, Sensor};
use serde_json::Value;

use crate::platform::{config, start};

/// Numbers that no short decimal writes, and the extremes a double can hold.
const ODD: [f64; 13] = [
    0.1 + 0.2,
    1.0 / 3.0,
    -2.0 / 7.0,
    1e-300,
    -1.7976931348623157e308,
    5e-324,
    9_007_199_254_740_993.0,
    -1.5e-10,
    65504.0,
    6.103515625e-05,
    std::f64::consts::PI,
    123_456_789.123_456_78,
    -0.0,
];

/// `(status, content type, body)` of `GET url` with `accept`, if given.
async fn fetch(http: &reqwest::Client, url: &str, accept: Option<&str>) -> (u16, String, Vec<u8>) {
    let mut request = http.get(url);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, content_type, response.bytes().await.unwrap().to_vec())
}

/// Why Python's `cbor2` cannot be used here, if it cannot.
fn cbor2_missing() -> Option<String> {
    match std::process::Command::new("python3").args(["-c", "import cbor2"]).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(String::from_utf8_lossy(&out.stderr).trim().lines().last().unwrap_or("").to_owned()),
        Err(e) => Some(format!("python3: {e}")),
    }
}

/// Whether the CBOR answers can be read back by `cbor2`; `false` (after a loud message) when
/// it is missing and not required, a panic when `MEKONG_REQUIRE_PYCOSE=1`.
fn cbor2_or_skip() -> bool {
    let Some(why) = cbor2_missing() else { return true };
    assert!(
        !std::env::var("MEKONG_REQUIRE_PYCOSE").is_ok_and(|v| v == "1"),
        "MEKONG_REQUIRE_PYCOSE=1 but cbor2 is not usable: {why}"
    );
    eprintln!(
        "compact_points: SKIPPED the CBOR read-back: Python's cbor2 is not usable ({why}); \
         `pip install 'cbor2<6'` runs it, MEKONG_REQUIRE_PYCOSE=1 makes this a failure"
    );
    false
}

/// CBOR as Python's `cbor2` reads it, as JSON with every float written as its bits in hex
/// (`{"f": "0x..."}`), so that nothing is rounded on the way back.
fn python_cbor(bytes: &[u8]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("answer.cbor");
    std::fs::write(&file, bytes).unwrap();
    let script = "import cbor2, json, struct, sys\n\
        def bits(v):\n\
        \x20   if isinstance(v, float): return {'f': hex(struct.unpack('<Q', struct.pack('<d', v))[0])}\n\
        \x20   if isinstance(v, list): return [bits(x) for x in v]\n\
        \x20   if isinstance(v, dict): return {k: bits(x) for k, x in v.items()}\n\
        \x20   return v\n\
        print(json.dumps(bits(cbor2.loads(open(sys.argv[1], 'rb').read()))))";
    let out = std::process::Command::new("python3").arg("-c").arg(script).arg(&file).output();
    let out = out.expect("python3 ran a moment ago, in cbor2_or_skip");
    assert!(out.status.success(), "cbor2: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A float as `python_cbor` writes it.
fn bits(v: f64) -> Value {
    serde_json::json!({ "f": format!("{:#x}", v.to_bits()) })
}

/// The default form's points as `(t_ms, v)` columns, its other fields as they are.
fn columns_of(rows: &Value) -> (Vec<Value>, Vec<Value>) {
    let points = rows["points"].as_array().unwrap();
    (points.iter().map(|p| p["t_ms"].clone()).collect(), points.iter().map(|p| p["v"].clone()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columnar_and_cbor_answers_hold_the_same_points_as_the_default_form() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(&config(dir.path())).await;
    let http = reqwest::Client::new();
    let host = format!("http://127.0.0.1:{}", running.platform.http_addr.port());
    let base = format!("{host}/v1/devices/hau-01/series");
    let t = now_secs().floor() - 3600.0;
    let cbor2 = cbor2_or_skip();

    // Water levels read to the millimetre, numbers no decimal writes short, and a pump's
    // booleans.
    let mut station = Sensor::device(running.mqtt(), "hau-01").await;
    let levels: Vec<f64> = (0..250).map(|i| (1800.0 + f64::from(i % 37) * 3.0 - 50.0) / 10.0).collect();
    let readings: Vec<_> = levels.iter().enumerate().map(|(i, &v)| ("water_level", "cm", v, i as f64)).collect();
    station.publish("mekong/v1/hau-01/up", pack(t, &readings)).await;
    assert!(matches!(station.downlink().await, Downlink::Ack { readings: 250, .. }));
    let readings: Vec<_> = ODD.iter().enumerate().map(|(i, &v)| ("odd", "1", v, i as f64)).collect();
    station.publish("mekong/v1/hau-01/up", pack(t, &readings)).await;
    assert!(matches!(station.downlink().await, Downlink::Ack { readings: 13, .. }));
    let pump = format!(
        r#"[{{"bt":{t},"n":"pump_running","vb":true}},{{"n":"pump_running","t":60,"vb":false}},{{"n":"pump_running","t":120,"vb":true}}]"#
    );
    station.publish("mekong/v1/hau-01/up", pump.into_bytes()).await;
    assert!(matches!(station.downlink().await, Downlink::Ack { readings: 3, .. }));

    let sent: [(&str, Vec<Value>); 3] = [
        ("water_level", levels.iter().map(|&v| bits(v)).collect()),
        ("odd", ODD.iter().map(|&v| bits(v)).collect()),
        ("pump_running", [true, false, true].map(Value::Bool).to_vec()),
    ];
    for (metric, values) in sent {
        // Pages of 100 (and the whole series in one), so that paging is compared too.
        for limit in [100, 10_000] {
            let mut from = None::<i64>;
            let mut seen = Vec::new();
            loop {
                let path = match from {
                    Some(from) => format!("/v1/devices/hau-01/series/{metric}?limit={limit}&from={from}"),
                    None => format!("/v1/devices/hau-01/series/{metric}?limit={limit}"),
                };
                let rows = running.json(&path).await;
                let query = format!("{host}{path}");
                let (t_ms, v) = columns_of(&rows);

                let (status, content_type, body) = fetch(&http, &format!("{query}&format=columnar"), None).await;
                assert_eq!((status, content_type.as_str()), (200, "application/json"), "{query}");
                let columns: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(columns["t_ms"].as_array().unwrap(), &t_ms, "{query}");
                assert_eq!(columns["v"].as_array().unwrap(), &v, "{query}");
                for key in ["device", "metric", "unit", "value_kind", "from_ms", "to_ms", "next_from_ms"] {
                    assert_eq!(columns[key], rows[key], "{query}: {key}");
                }
                assert!(columns.get("points").is_none());

                // CBOR by parameter and by Accept, byte for byte the same.
                let (status, content_type, cbor) = fetch(&http, &format!("{query}&format=cbor"), None).await;
                assert_eq!((status, content_type.as_str()), (200, "application/cbor"), "{query}");
                let (_, _, by_accept) = fetch(&http, &query, Some("application/cbor")).await;
                assert_eq!(by_accept, cbor, "{query}");
                if cbor2 {
                    let decoded = python_cbor(&cbor);
                    assert_eq!(decoded["t_ms"].as_array().unwrap(), &t_ms, "{query}");
                    for key in ["device", "metric", "unit", "value_kind", "from_ms", "to_ms", "next_from_ms"] {
                        assert_eq!(decoded[key], rows[key], "{query}: {key}");
                    }
                    seen.extend(decoded["v"].as_array().unwrap().iter().cloned());
                }
                // The columnar JSON is 40% or less of the default form for a page of numbers.
                if metric == "water_level" && t_ms.len() >= 100 {
                    let (_, _, default) = fetch(&http, &query, None).await;
                    assert!(body.len() * 10 < default.len() * 4, "{} vs {}", body.len(), default.len());
                    assert!(cbor.len() < body.len(), "{} vs {}", cbor.len(), body.len());
                }
                match rows["next_from_ms"].as_i64() {
                    Some(next) => from = Some(next),
                    None => break,
                }
            }
            // The CBOR's values are the readings sent, bit for bit.
            if cbor2 {
                assert_eq!(seen, values, "{metric}, pages of {limit}");
            }
        }
    }

    // An empty range: empty columns in both forms.
    let empty = format!("{base}/water_level?from={}&to={}", (t as i64 - 7200) * 1000, (t as i64 - 3600) * 1000);
    let (status, _, body) = fetch(&http, &format!("{empty}&format=columnar"), None).await;
    assert_eq!(status, 200);
    let columns: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((columns["t_ms"].clone(), columns["v"].clone()), (Value::Array(vec![]), Value::Array(vec![])));
    assert_eq!(columns["next_from_ms"], Value::Null);
    let (status, content_type, cbor) = fetch(&http, &format!("{empty}&format=cbor"), None).await;
    assert_eq!((status, content_type.as_str()), (200, "application/cbor"));
    if cbor2 {
        let decoded = python_cbor(&cbor);
        assert_eq!((decoded["t_ms"].clone(), decoded["v"].clone()), (Value::Array(vec![]), Value::Array(vec![])));
        assert_eq!(decoded["value_kind"], "number");
    }

    // A format that is none of them: 400, naming the forms; CSV by Accept is still CSV.
    let (status, content_type, body) = fetch(&http, &format!("{base}/water_level?format=msgpack"), None).await;
    assert_eq!((status, content_type.as_str()), (400, "application/json"));
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["code"], "bad_request");
    assert_eq!(error["error"]["message"], "format must be json, columnar, cbor or csv, got \"msgpack\"");
    let (status, content_type, _) = fetch(&http, &format!("{base}/pump_running"), Some("text/csv")).await;
    assert_eq!((status, content_type.starts_with("text/csv")), (200, true));
    running.stop().await;
}
