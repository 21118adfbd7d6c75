//! Reading files of `mekong export` back with independent readers: Python's csv module for
//! CSV, pyarrow for Parquet (`tests/python/read_export.py`), and the rows a test expects.
//!
//! Without pyarrow, a Parquet check is skipped with a loud message, unless
//! `MEKONG_REQUIRE_PYARROW=1` (CI sets it, `.ci/run` installs pyarrow), which makes it a
//! failure.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// One row as the reader gives it: device, kind, metric, unit, time in ms, the value's
/// IEEE-754 bits, and value_bool.
pub type Row = (String, String, String, Option<String>, i64, u64, Option<bool>);

/// A row from its parts, the value as an `f64`.
pub fn row(device: &str, kind: &str, metric: &str, unit: Option<&str>, t: i64, v: f64, b: Option<bool>) -> Row {
    (device.into(), kind.into(), metric.into(), unit.map(Into::into), t, v.to_bits(), b)
}

/// What the reader made of a file.
#[derive(Debug)]
pub struct Read {
    /// Column name to type (pyarrow's names for Parquet, `text` for CSV).
    pub schema: Value,
    /// The columns in file order.
    pub header: Vec<String>,
    /// The rows.
    pub rows: Vec<Row>,
    /// Parquet: the compression codecs of its column chunks.
    pub compression: Value,
}

/// Why pyarrow cannot be used here, if it cannot.
pub fn pyarrow_missing() -> Option<String> {
    match Command::new("python3").args(["-c", "import pyarrow.parquet"]).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(String::from_utf8_lossy(&out.stderr).trim().lines().last().unwrap_or("").to_owned()),
        Err(e) => Some(format!("python3: {e}")),
    }
}

/// Whether Parquet files can be read back; `false` (after a loud message) when pyarrow is
/// missing and not required, a panic when `MEKONG_REQUIRE_PYARROW=1`.
pub fn pyarrow_or_skip(test: &str) -> bool {
    let Some(why) = pyarrow_missing() else { return true };
    assert!(
        !std::env::var("MEKONG_REQUIRE_PYARROW").is_ok_and(|v| v == "1"),
        "MEKONG_REQUIRE_PYARROW=1 but pyarrow is not usable: {why}"
    );
    eprintln!(
        "{test}: SKIPPED the Parquet read-back: pyarrow is not usable ({why}); `pip install pyarrow` runs it, \
         MEKONG_REQUIRE_PYARROW=1 makes this a failure"
    );
    false
}

/// Reads `path` (`csv` or `parquet`) with the independent reader.
pub fn read(format: &str, path: &Path) -> Read {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/read_export.py");
    let out = Command::new("python3").arg(script).arg(format).arg(path).output().unwrap();
    assert!(out.status.success(), "read_export.py {format}: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let rows = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                text(&r[0]).unwrap(),
                text(&r[1]).unwrap(),
                text(&r[2]).unwrap(),
                text(&r[3]),
                r[4].as_i64().unwrap(),
                r[5].as_u64().unwrap(),
                r[6].as_bool(),
            )
        })
        .collect();
    let header = v["header"].as_array().unwrap().iter().map(|h| text(h).unwrap()).collect();
    Read { schema: v["schema"].clone(), header, rows, compression: v["compression"].clone() }
}

/// The columns of every export, in order.
pub const COLUMNS: [&str; 7] = ["device", "kind", "metric", "unit", "time", "value", "value_bool"];

/// Checks what pyarrow says of a Parquet export's columns and compression.
pub fn check_parquet_schema(read: &Read) {
    assert_eq!(read.header, COLUMNS);
    for (column, ty) in [
        ("device", "string"),
        ("kind", "string"),
        ("metric", "string"),
        ("unit", "string"),
        ("time", "timestamp[ms, tz=UTC]"),
        ("value", "double"),
        ("value_bool", "bool"),
    ] {
        assert_eq!(read.schema[column], ty, "{column}");
    }
    if let Some(codecs) = read.compression.as_array().filter(|c| !c.is_empty()) {
        assert_eq!(codecs, &[Value::from("ZSTD")], "compression");
    }
}
