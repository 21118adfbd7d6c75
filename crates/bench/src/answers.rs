//! The query benchmark's answers in one form, whoever gave them: mekong (default and
//! columnar JSON), VictoriaMetrics (`/api/v1/export`, `/api/v1/query_range`, `/api/v1/query`)
//! and InfluxDB 1.x (`/query`), read into points, buckets and latest values, and compared with
//! what the generator says the dataset holds.
//!
//! Floats are compared with a relative tolerance of [`REL_TOLERANCE`] (1e-9). Raw values are
//! the same doubles in every store here (the dataset's are short decimals, which
//! VictoriaMetrics' decimal mantissa and exponent hold exactly), so they agree to the bit in
//! practice; sums and averages are computed in different orders (mekong from its hourly
//! rollups, the peers point by point), which moves the last bits: a sum of n doubles in
//! another order differs by at most about n·ε relative (8,640·2.2e-16 ≈ 2e-12 for a day of
//! 10-second points). 1e-9 is far above that and far below the smallest real difference in
//! the data (one step of 0.1 in a value of about 250, 4e-4). Counts, and the times of points
//! and buckets, must be equal.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use serde_json::Value;

/// Relative tolerance of every float comparison (see the module's documentation).
pub const REL_TOLERANCE: f64 = 1e-9;

/// The points of one series: `(t_ms, value)`, oldest first.
pub type Points = Vec<(i64, f64)>;

/// Buckets by device.
pub type BucketsByDevice = BTreeMap<String, Vec<Bucket>>;

/// Latest values by `(device, metric)`.
pub type LatestValues = BTreeMap<(String, String), f64>;

/// One bucket of an aggregate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Start of the bucket, epoch ms.
    pub start_ms: i64,
    /// Points in it.
    pub count: u64,
    /// Least value.
    pub min: f64,
    /// Greatest value.
    pub max: f64,
    /// Sum of the values.
    pub sum: f64,
    /// Their mean.
    pub avg: f64,
    /// The oldest point's value.
    pub first: f64,
    /// The newest point's value.
    pub last: f64,
}

/// The buckets of `step_ms` (aligned on `start_ms`) of `points`, which are oldest first: the
/// brute-force aggregate the answers are checked against.
pub fn buckets_of(points: impl IntoIterator<Item = (i64, f64)>, start_ms: i64, step_ms: i64) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::new();
    for (t, v) in points {
        let bucket_start = start_ms + (t - start_ms).div_euclid(step_ms) * step_ms;
        match out.last_mut() {
            Some(b) if b.start_ms == bucket_start => {
                b.count += 1;
                b.min = b.min.min(v);
                b.max = b.max.max(v);
                b.sum += v;
                b.last = v;
            }
            _ => out.push(Bucket {
                start_ms: bucket_start,
                count: 1,
                min: v,
                max: v,
                sum: v,
                avg: 0.0,
                first: v,
                last: v,
            }),
        }
    }
    for b in &mut out {
        b.avg = b.sum / b.count as f64;
    }
    out
}

fn num(v: &Value) -> anyhow::Result<f64> {
    match v {
        Value::Number(n) => n.as_f64().context("a number out of range"),
        // VictoriaMetrics writes sample values as strings.
        Value::String(s) => s.parse().with_context(|| format!("not a number: {s:?}")),
        other => bail!("expected a number, got {other}"),
    }
}

fn int(v: &Value) -> anyhow::Result<i64> {
    v.as_i64().with_context(|| format!("expected an integer, got {v}"))
}

fn array<'a>(v: &'a Value, what: &str) -> anyhow::Result<&'a Vec<Value>> {
    v.as_array().with_context(|| format!("{what}: expected an array, got {v}"))
}

fn text(v: &Value, what: &str) -> anyhow::Result<String> {
    v.as_str().map(str::to_owned).with_context(|| format!("{what}: expected a string, got {v}"))
}

/// mekong's points in the default form: `{"points": [{"t_ms", "v"}, ...]}`.
pub fn mekong_points(answer: &Value) -> anyhow::Result<Points> {
    array(&answer["points"], "points")?.iter().map(|p| Ok((int(&p["t_ms"])?, num(&p["v"])?))).collect()
}

/// mekong's points in columns: `{"t_ms": [...], "v": [...]}`.
pub fn mekong_columnar(answer: &Value) -> anyhow::Result<Points> {
    let (t, v) = (array(&answer["t_ms"], "t_ms")?, array(&answer["v"], "v")?);
    if t.len() != v.len() {
        bail!("{} times but {} values", t.len(), v.len());
    }
    t.iter().zip(v).map(|(t, v)| Ok((int(t)?, num(v)?))).collect()
}

fn mekong_bucket(b: &Value) -> anyhow::Result<Bucket> {
    Ok(Bucket {
        start_ms: int(&b["t_ms"])?,
        count: b["count"].as_u64().context("count")?,
        min: num(&b["min"])?,
        max: num(&b["max"])?,
        sum: num(&b["sum"])?,
        avg: num(&b["avg"])?,
        first: num(&b["first"]["v"])?,
        last: num(&b["last"]["v"])?,
    })
}

/// mekong's aggregate of one series (`{"device", "buckets"}`) or of a metric across devices
/// (`{"series": [{"device", "buckets"}]}`).
pub fn mekong_buckets(answer: &Value) -> anyhow::Result<BucketsByDevice> {
    let one = |s: &Value| -> anyhow::Result<(String, Vec<Bucket>)> {
        let buckets = array(&s["buckets"], "buckets")?.iter().map(mekong_bucket).collect::<anyhow::Result<_>>()?;
        Ok((text(&s["device"], "device")?, buckets))
    };
    match answer.get("series") {
        Some(series) => array(series, "series")?.iter().map(one).collect(),
        None => Ok([one(answer)?].into_iter().collect()),
    }
}

/// mekong's `/v1/latest`.
pub fn mekong_latest(answer: &Value) -> anyhow::Result<LatestValues> {
    array(&answer["latest"], "latest")?
        .iter()
        .map(|l| Ok(((text(&l["device"], "device")?, text(&l["metric"], "metric")?), num(&l["v"])?)))
        .collect()
}

/// VictoriaMetrics' `/api/v1/export` of one series: JSON lines of `{"metric", "values",
/// "timestamps"}` (one series may come in several lines), merged and sorted by time.
pub fn vm_export(body: &[u8]) -> anyhow::Result<Points> {
    let mut points = Vec::new();
    for line in body.split(|&b| b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)) {
        let line: Value = serde_json::from_slice(line).context("an export line that is not JSON")?;
        let (values, times) = (array(&line["values"], "values")?, array(&line["timestamps"], "timestamps")?);
        if values.len() != times.len() {
            bail!("{} timestamps but {} values", times.len(), values.len());
        }
        for (t, v) in times.iter().zip(values) {
            points.push((int(t)?, num(v)?));
        }
    }
    points.sort_by_key(|p| p.0);
    Ok(points)
}

/// A VictoriaMetrics time in seconds (`1795046399.999`) as epoch ms.
fn vm_time_ms(v: &Value) -> anyhow::Result<i64> {
    Ok((num(v)? * 1000.0).round() as i64)
}

/// VictoriaMetrics' `/api/v1/query_range` of [`vm_buckets_query`]: one series per device and
/// aggregate (label `agg`), each a value at the end of every window (`bucket start + window -
/// 1 ms`), gathered into buckets.
pub fn vm_buckets(body: &[u8], window_ms: i64) -> anyhow::Result<BucketsByDevice> {
    let answer: Value = serde_json::from_slice(body)?;
    if answer["status"] != "success" {
        bail!("query_range failed: {answer}");
    }
    let mut by_device: BTreeMap<String, BTreeMap<i64, Bucket>> = BTreeMap::new();
    for series in array(&answer["data"]["result"], "result")? {
        let device = text(&series["metric"]["device"], "device label")?;
        let agg = text(&series["metric"]["agg"], "agg label")?;
        for value in array(&series["values"], "values")? {
            let start_ms = vm_time_ms(&value[0])? + 1 - window_ms;
            let v = num(&value[1])?;
            let b = by_device.entry(device.clone()).or_default().entry(start_ms).or_insert(Bucket {
                start_ms,
                count: 0,
                min: f64::NAN,
                max: f64::NAN,
                sum: f64::NAN,
                avg: f64::NAN,
                first: f64::NAN,
                last: f64::NAN,
            });
            match agg.as_str() {
                "count" => b.count = v as u64,
                "min" => b.min = v,
                "max" => b.max = v,
                "sum" => b.sum = v,
                "avg" => b.avg = v,
                "first" => b.first = v,
                "last" => b.last = v,
                other => bail!("unknown agg label {other:?}"),
            }
        }
    }
    Ok(by_device.into_iter().map(|(d, b)| (d, b.into_values().collect())).collect())
}

/// The MetricsQL of [`vm_buckets`]: count, min, max, sum, avg, first and last of `selector`
/// over windows of `window`, each labelled `agg`, in one query.
pub fn vm_buckets_query(selector: &str, window: &str) -> String {
    let parts: Vec<String> = [
        ("count", "count_over_time"),
        ("min", "min_over_time"),
        ("max", "max_over_time"),
        ("sum", "sum_over_time"),
        ("avg", "avg_over_time"),
        ("first", "first_over_time"),
        ("last", "last_over_time"),
    ]
    .iter()
    .map(|(agg, f)| format!("label_set({f}({selector}[{window}]),\"agg\",\"{agg}\")"))
    .collect();
    format!("union({})", parts.join(","))
}

/// VictoriaMetrics' instant `/api/v1/query` of every series: the value of each.
pub fn vm_latest(body: &[u8]) -> anyhow::Result<LatestValues> {
    let answer: Value = serde_json::from_slice(body)?;
    if answer["status"] != "success" {
        bail!("query failed: {answer}");
    }
    array(&answer["data"]["result"], "result")?
        .iter()
        .map(|s| {
            let key = (text(&s["metric"]["device"], "device label")?, text(&s["metric"]["__name__"], "__name__")?);
            Ok((key, num(&s["value"][1])?))
        })
        .collect()
}

/// The `series` of InfluxDB's first statement result, or none; an `error` is an error.
fn influx_series(body: &[u8]) -> anyhow::Result<Vec<Value>> {
    let answer: Value = serde_json::from_slice(body)?;
    let result = &answer["results"][0];
    if let Some(error) = result.get("error").or_else(|| answer.get("error")) {
        bail!("influxdb: {error}");
    }
    Ok(result.get("series").and_then(Value::as_array).cloned().unwrap_or_default())
}

/// InfluxDB's `SELECT v FROM ...` with `epoch=ms`: `[[t, v], ...]`.
pub fn influx_points(body: &[u8]) -> anyhow::Result<Points> {
    let mut points = Vec::new();
    for series in influx_series(body)? {
        for row in array(&series["values"], "values")? {
            points.push((int(&row[0])?, num(&row[1])?));
        }
    }
    points.sort_by_key(|p| p.0);
    Ok(points)
}

/// InfluxDB's `SELECT count(v), min(v), max(v), sum(v), mean(v), first(v), last(v) ...
/// GROUP BY time(..), device` with `epoch=ms`; empty buckets (a null count) are left out.
pub fn influx_buckets(body: &[u8]) -> anyhow::Result<BucketsByDevice> {
    let mut out = BucketsByDevice::new();
    for series in influx_series(body)? {
        let device = text(&series["tags"]["device"], "device tag")?;
        let columns: Vec<&str> = array(&series["columns"], "columns")?.iter().filter_map(Value::as_str).collect();
        if columns != ["time", "count", "min", "max", "sum", "mean", "first", "last"] {
            bail!("unexpected columns {columns:?}");
        }
        let buckets = out.entry(device).or_default();
        for row in array(&series["values"], "values")? {
            if row[1].is_null() || row[1] == 0 {
                continue;
            }
            buckets.push(Bucket {
                start_ms: int(&row[0])?,
                count: row[1].as_u64().context("count")?,
                min: num(&row[2])?,
                max: num(&row[3])?,
                sum: num(&row[4])?,
                avg: num(&row[5])?,
                first: num(&row[6])?,
                last: num(&row[7])?,
            });
        }
    }
    Ok(out)
}

/// InfluxDB's `SELECT last(v) FROM /.*/ GROUP BY device`.
pub fn influx_latest(body: &[u8]) -> anyhow::Result<LatestValues> {
    influx_series(body)?
        .iter()
        .map(|s| {
            let key = (text(&s["tags"]["device"], "device tag")?, text(&s["name"], "name")?);
            Ok((key, num(&s["values"][0][1])?))
        })
        .collect()
}

/// Whether `a` and `b` agree: their relative difference, which must be within
/// [`REL_TOLERANCE`].
fn close(a: f64, b: f64, what: &str) -> anyhow::Result<f64> {
    if a == b {
        return Ok(0.0);
    }
    let rel = (a - b).abs() / a.abs().max(b.abs());
    if rel.is_nan() || rel > REL_TOLERANCE {
        bail!("{what}: {a} against {b}");
    }
    Ok(rel)
}

/// Checks `got` against `expected`; the greatest relative difference of a value.
pub fn agree_points(expected: &[(i64, f64)], got: &[(i64, f64)]) -> anyhow::Result<f64> {
    if expected.len() != got.len() {
        bail!("{} points, expected {}", got.len(), expected.len());
    }
    let mut worst = 0.0_f64;
    for (e, g) in expected.iter().zip(got) {
        if e.0 != g.0 {
            bail!("a point at {}, expected one at {}", g.0, e.0);
        }
        worst = worst.max(close(e.1, g.1, &format!("the value at {}", e.0))?);
    }
    Ok(worst)
}

/// Checks `got` against `expected`, device by device and bucket by bucket; the greatest
/// relative difference of a value.
pub fn agree_buckets(expected: &BucketsByDevice, got: &BucketsByDevice) -> anyhow::Result<f64> {
    if expected.len() != got.len() {
        bail!("{} series, expected {}", got.len(), expected.len());
    }
    let mut worst = 0.0_f64;
    for ((device, e), (got_device, g)) in expected.iter().zip(got) {
        if device != got_device {
            bail!("series of {got_device}, expected {device}");
        }
        if e.len() != g.len() {
            bail!("{device}: {} buckets, expected {}", g.len(), e.len());
        }
        for (e, g) in e.iter().zip(g) {
            let at = format!("{device} at {}", e.start_ms);
            if (e.start_ms, e.count) != (g.start_ms, g.count) {
                bail!("{at}: bucket {} of {} points, expected {} of {}", g.start_ms, g.count, e.start_ms, e.count);
            }
            for (name, a, b) in [
                ("min", e.min, g.min),
                ("max", e.max, g.max),
                ("sum", e.sum, g.sum),
                ("avg", e.avg, g.avg),
                ("first", e.first, g.first),
                ("last", e.last, g.last),
            ] {
                worst = worst.max(close(a, b, &format!("{at}: {name}"))?);
            }
        }
    }
    Ok(worst)
}

/// Checks `got` against `expected`; the greatest relative difference of a value.
pub fn agree_latest(expected: &LatestValues, got: &LatestValues) -> anyhow::Result<f64> {
    if expected.len() != got.len() {
        bail!("{} series, expected {}", got.len(), expected.len());
    }
    let mut worst = 0.0_f64;
    for ((key, e), (got_key, g)) in expected.iter().zip(got) {
        if key != got_key {
            bail!("a value for {got_key:?}, expected one for {key:?}");
        }
        worst = worst.max(close(*e, *g, &format!("{key:?}"))?);
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const H: i64 = 3_600_000;

    fn bucket(start_ms: i64, values: &[f64]) -> Bucket {
        buckets_of(values.iter().enumerate().map(|(i, &v)| (start_ms + i as i64 * 1000, v)), start_ms, H)[0]
    }

    #[test]
    fn brute_force_buckets() {
        let points = [(0, 2.0), (1000, 1.0), (H, 5.0), (H + 5, 7.0), (3 * H, 1.5)];
        let got = buckets_of(points, 0, H);
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0],
            Bucket { start_ms: 0, count: 2, min: 1.0, max: 2.0, sum: 3.0, avg: 1.5, first: 2.0, last: 1.0 }
        );
        assert_eq!((got[1].start_ms, got[1].first, got[1].last, got[1].avg), (H, 5.0, 7.0, 6.0));
        assert_eq!(got[2].start_ms, 3 * H);
    }

    #[test]
    fn victoriametrics_answers() {
        let export =
            b"{\"metric\":{\"__name__\":\"w\",\"device\":\"a\"},\"values\":[2.5,3],\"timestamps\":[2000,3000]}\n\
            {\"metric\":{\"__name__\":\"w\",\"device\":\"a\"},\"values\":[1.25],\"timestamps\":[1000]}\n";
        assert_eq!(vm_export(export).unwrap(), [(1000, 1.25), (2000, 2.5), (3000, 3.0)]);
        assert!(vm_export(b"{\"values\":[1],\"timestamps\":[]}\n").is_err());

        // Windows of an hour ending 1 ms before 01:00 and 02:00.
        let range = json!({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"device": "a", "agg": "count"}, "values": [[3599.999, "2"], [7199.999, "1"]]},
            {"metric": {"__name__": "w", "device": "a", "agg": "min"}, "values": [[3599.999, "1"], [7199.999, "4"]]},
            {"metric": {"device": "a", "agg": "max"}, "values": [[3599.999, "2"], [7199.999, "4"]]},
            {"metric": {"device": "a", "agg": "sum"}, "values": [[3599.999, "3"], [7199.999, "4"]]},
            {"metric": {"device": "a", "agg": "avg"}, "values": [[3599.999, "1.5"], [7199.999, "4"]]},
            {"metric": {"device": "a", "agg": "first"}, "values": [[3599.999, "2"], [7199.999, "4"]]},
            {"metric": {"device": "a", "agg": "last"}, "values": [[3599.999, "1"], [7199.999, "4"]]},
        ]}});
        let got = vm_buckets(range.to_string().as_bytes(), H).unwrap();
        let expected: BucketsByDevice = [("a".to_owned(), vec![bucket(0, &[2.0, 1.0]), bucket(H, &[4.0])])].into();
        assert_eq!(agree_buckets(&expected, &got).unwrap(), 0.0);
        assert!(vm_buckets(br#"{"status":"error","error":"bad"}"#, H).is_err());

        let query = vm_buckets_query("w{device=\"a\"}", "1h");
        assert!(
            query.starts_with("union(label_set(count_over_time(w{device=\"a\"}[1h]),\"agg\",\"count\"),"),
            "{query}"
        );
        assert_eq!(query.matches("label_set(").count(), 7);

        let latest = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"__name__": "w", "device": "a"}, "value": [10, "7.9"]},
            {"metric": {"__name__": "p", "device": "b"}, "value": [10, "-1"]},
        ]}});
        let got = vm_latest(latest.to_string().as_bytes()).unwrap();
        assert_eq!(got, [(("a".to_owned(), "w".to_owned()), 7.9), (("b".to_owned(), "p".to_owned()), -1.0)].into());
    }

    #[test]
    fn influxdb_answers() {
        let points = br#"{"results":[{"statement_id":0,"series":[{"name":"w","columns":["time","v"],"values":[[1000,0],[2000,0.1]]}]}]}"#;
        assert_eq!(influx_points(points).unwrap(), [(1000, 0.0), (2000, 0.1)]);
        assert_eq!(influx_points(br#"{"results":[{"statement_id":0}]}"#).unwrap(), []);
        assert!(influx_points(br#"{"results":[{"statement_id":0,"error":"database not found: x"}]}"#).is_err());

        let buckets = json!({"results": [{"statement_id": 0, "series": [{"name": "w", "tags": {"device": "a"},
            "columns": ["time", "count", "min", "max", "sum", "mean", "first", "last"],
            "values": [[0, 2, 1, 2, 3, 1.5, 2, 1], [3_600_000, null, null, null, null, null, null, null], [7_200_000, 1, 4, 4, 4, 4, 4, 4]]}]}]});
        let got = influx_buckets(buckets.to_string().as_bytes()).unwrap();
        let expected: BucketsByDevice = [("a".to_owned(), vec![bucket(0, &[2.0, 1.0]), bucket(2 * H, &[4.0])])].into();
        assert_eq!(agree_buckets(&expected, &got).unwrap(), 0.0);

        let latest = br#"{"results":[{"statement_id":0,"series":[{"name":"w","tags":{"device":"a"},"columns":["time","last"],"values":[[5000,7.9]]}]}]}"#;
        assert_eq!(influx_latest(latest).unwrap(), [(("a".to_owned(), "w".to_owned()), 7.9)].into());
    }

    #[test]
    fn mekong_answers() {
        let rows = json!({"points": [{"t": "x", "t_ms": 1000, "v": 1.5}, {"t": "y", "t_ms": 2000, "v": 2}]});
        let columns = json!({"t_ms": [1000, 2000], "v": [1.5, 2.0]});
        assert_eq!(mekong_points(&rows).unwrap(), mekong_columnar(&columns).unwrap());
        assert!(mekong_columnar(&json!({"t_ms": [1], "v": []})).is_err());
        let b = json!({"t_ms": 0, "count": 2, "min": 1, "max": 2, "sum": 3, "avg": 1.5, "first": {"t_ms": 0, "v": 2}, "last": {"t_ms": 1000, "v": 1}});
        let one = mekong_buckets(&json!({"device": "a", "buckets": [b]})).unwrap();
        let many = mekong_buckets(&json!({"series": [{"device": "a", "buckets": [b]}]})).unwrap();
        assert_eq!(one, many);
        assert_eq!(one["a"], [bucket(0, &[2.0, 1.0])]);
        let latest = mekong_latest(&json!({"latest": [{"device": "a", "metric": "w", "v": 7.9}]})).unwrap();
        assert_eq!(latest, [(("a".to_owned(), "w".to_owned()), 7.9)].into());
    }

    #[test]
    fn agreement_is_within_the_tolerance_and_no_further() {
        assert_eq!(agree_points(&[(1, 250.3)], &[(1, 250.3)]).unwrap(), 0.0);
        assert!(agree_points(&[(1, 1.0)], &[(1, 1.0 + 1e-12)]).unwrap() > 0.0);
        assert!(agree_points(&[(1, 250.3)], &[(1, 250.4)]).is_err());
        assert!(agree_points(&[(1, 1.0)], &[(2, 1.0)]).is_err());
        assert!(agree_points(&[(1, 1.0)], &[]).is_err());
        let mut off = bucket(0, &[1.0, 2.0]);
        let expected: BucketsByDevice = [("a".to_owned(), vec![off])].into();
        off.sum += 1e-6;
        assert!(agree_buckets(&expected, &[("a".to_owned(), vec![off])].into()).is_err());
        off.sum -= 1e-6;
        off.count = 3;
        assert!(agree_buckets(&expected, &[("a".to_owned(), vec![off])].into()).is_err());
        assert!(agree_buckets(&expected, &[("b".to_owned(), vec![off])].into()).is_err());
        let latest: LatestValues = [(("a".to_owned(), "w".to_owned()), 1.0)].into();
        assert!(agree_latest(&latest, &[(("a".to_owned(), "p".to_owned()), 1.0)].into()).is_err());
    }
}
