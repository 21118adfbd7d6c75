//! Exports of a real store in a temp dir, checked row by row against what was written: CSV
//! as text, Parquet read back with the parquet crate's own row reader (the end-to-end tests
//! read both with Python's pyarrow and csv, independent readers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mekong_export::{Export, Format, Query};
use mekong_store::{NewPoint, Store, StoreOptions, ValueKind};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;

/// One expected row: device, kind, metric, unit, time, value, value_bool.
type Row = (String, String, String, Option<String>, i64, f64, Option<bool>);

/// Two devices, a decimal series, a non-decimal one, a boolean one and a unit with a comma:
/// the store and the rows an export of everything must give, in its order.
fn store() -> (tempfile::TempDir, Store, Vec<Row>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions { flush_every_ms: None, ..Default::default() }).unwrap();
    let t0 = 1_790_000_000_000;
    let mut rows = Vec::new();
    let mut write =
        |device: &str, kind: &str, metric: &str, unit: Option<&str>, vk: ValueKind, n: i64, f: &dyn Fn(i64) -> f64| {
            let points: Vec<NewPoint> = (0..n)
                .map(|i| NewPoint { metric, unit, time_ms: t0 + i * 1_000 + i % 7, value: f(i), value_kind: vk })
                .collect();
            store.write(device, kind, t0, &points).unwrap();
            for p in &points {
                let b = (vk == ValueKind::Boolean).then_some(p.value != 0.0);
                rows.push((device.into(), kind.into(), metric.into(), unit.map(Into::into), p.time_ms, p.value, b));
            }
        };
    write("a-1", "water", "level", Some("m"), ValueKind::Number, 3_000, &|i| (i as f64) * 0.01 - 5.0);
    write("a-1", "water", "pump", None, ValueKind::Boolean, 500, &|i| (i % 3 == 0) as u8 as f64);
    write("b-2", "air", "pm25", Some("ug,m3"), ValueKind::Number, 2_000, &|i| (i as f64).sqrt() * 1e-3 + 1.0 / 3.0);
    store.flush().unwrap();
    (dir, store, rows)
}

fn everything() -> Query {
    Query { from_ms: 0, to_ms: i64::MAX, ..Default::default() }
}

/// Runs an export in small steps, taking the bytes as they come, as the API does.
fn export(store: &Store, query: Query, format: Format) -> Vec<u8> {
    let mut export = Export::start_with_row_group(store, query, format, Vec::new(), 700).unwrap();
    let mut bytes = Vec::new();
    while export.step(333).unwrap() {
        bytes.extend(export.take_output().unwrap());
    }
    bytes.extend(export.take_output().unwrap());
    let (rest, progress) = export.finish().unwrap();
    bytes.extend(rest);
    assert_eq!(progress.series_done, progress.series_total);
    bytes
}

fn csv_rows(rows: &[Row]) -> String {
    let mut text = String::from(mekong_export::CSV_HEADER);
    for (device, kind, metric, unit, t, v, b) in rows {
        let unit = unit.as_deref().map(|u| if u.contains(',') { format!("\"{u}\"") } else { u.to_string() });
        let mut time = Vec::new();
        mekong_export::push_rfc3339(&mut time, *t);
        let b = b.map(|b| b.to_string()).unwrap_or_default();
        text.push_str(&format!(
            "{device},{kind},{metric},{},{},{v},{b}\r\n",
            unit.unwrap_or_default(),
            String::from_utf8(time).unwrap()
        ));
    }
    text
}

fn parquet_rows(bytes: Vec<u8>) -> Vec<Row> {
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
    let mut rows = Vec::new();
    for row in reader.get_row_iter(None).unwrap() {
        let fields: Vec<Field> = row.unwrap().into_columns().into_iter().map(|(_, f)| f).collect();
        let text = |f: &Field| match f {
            Field::Str(s) => Some(s.clone()),
            Field::Null => None,
            other => panic!("not a string: {other:?}"),
        };
        let Field::TimestampMillis(t) = fields[4] else { panic!("time is {:?}", fields[4]) };
        let Field::Double(v) = fields[5] else { panic!("value is {:?}", fields[5]) };
        let b = match fields[6] {
            Field::Bool(b) => Some(b),
            Field::Null => None,
            ref other => panic!("value_bool is {other:?}"),
        };
        rows.push((
            text(&fields[0]).unwrap(),
            text(&fields[1]).unwrap(),
            text(&fields[2]).unwrap(),
            text(&fields[3]),
            t,
            v,
            b,
        ));
    }
    rows
}

#[test]
fn csv_holds_every_reading_in_order() {
    let (_dir, store, rows) = store();
    let text = String::from_utf8(export(&store, everything(), Format::Csv)).unwrap();
    assert_eq!(text, csv_rows(&rows));
}

#[test]
fn parquet_holds_every_reading_in_order() {
    let (_dir, store, rows) = store();
    let bytes = export(&store, everything(), Format::Parquet);
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes.clone())).unwrap();
    // 5,500 rows in row groups of 700.
    assert_eq!(reader.metadata().num_row_groups(), 8);
    assert_eq!(parquet_rows(bytes), rows);
}

#[test]
fn filters_and_ranges_select_rows() {
    let (_dir, store, rows) = store();
    let t0 = 1_790_000_000_000;
    let query = Query {
        from_ms: t0 + 100_000,
        to_ms: t0 + 400_000,
        kind: Some("water".into()),
        metrics: vec!["pump".into()],
        ..Default::default()
    };
    let want: Vec<Row> =
        rows.iter().filter(|r| r.2 == "pump" && r.4 >= query.from_ms && r.4 < query.to_ms).cloned().collect();
    assert_eq!(want.len(), 300);
    assert_eq!(parquet_rows(export(&store, query.clone(), Format::Parquet)), want);
    assert_eq!(String::from_utf8(export(&store, query, Format::Csv)).unwrap(), csv_rows(&want));

    let query = Query { devices: vec!["b-2".into()], ..everything() };
    let want: Vec<Row> = rows.iter().filter(|r| r.0 == "b-2").cloned().collect();
    assert_eq!(parquet_rows(export(&store, query, Format::Parquet)), want);
}

#[test]
fn an_empty_selection_is_a_header_or_an_empty_file() {
    let (_dir, store, _) = store();
    let query = Query { from_ms: 0, to_ms: 1_000, ..Default::default() };
    let csv = export(&store, query.clone(), Format::Csv);
    assert_eq!(csv, mekong_export::CSV_HEADER.as_bytes());
    assert_eq!(parquet_rows(export(&store, query, Format::Parquet)), vec![]);
}

#[test]
fn a_reversed_range_is_refused() {
    let (_dir, store, _) = store();
    let query = Query { from_ms: 10, to_ms: 10, ..Default::default() };
    let err = Export::start(&store, query, Format::Csv, Vec::new()).unwrap_err();
    assert!(err.to_string().contains("must be before"), "{err}");
}
