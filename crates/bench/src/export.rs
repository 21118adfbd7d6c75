//! `mekong-bench export`: the export rate of `mekong export` (readings per second) to CSV and
//! to Parquet, and the Parquet file's bytes per reading, over a dataset directory made by
//! `mekong-bench query --data-dir DIR` (the reference dataset, or a scaled-down one). Runs the
//! binary itself on the directory, as an operator would with mekong stopped, and reads the
//! number of readings from the line it prints at the end.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::harness::temp_dir;

/// Exports the whole of `data` in both formats, `rounds` times each, and reports the best
/// round of each (the least disturbed by other work on the machine).
pub fn export(data: &Path, rounds: usize, mekong: &Path) -> anyhow::Result<Value> {
    if !data.is_dir() {
        bail!("{} is not a directory: make one with `mekong-bench query --data-dir DIR`", data.display());
    }
    let work = temp_dir()?;
    let mut results = serde_json::Map::new();
    for format in ["csv", "parquet"] {
        let out = work.path.join(format!("export.{format}"));
        let mut best: Option<(f64, u64)> = None;
        for _ in 0..rounds.max(1) {
            let started = Instant::now();
            let run = Command::new(mekong)
                .args(["export", "--data-dir"])
                .arg(data)
                .args(["--from", "0", "--to", "9999999999999", "--format", format, "-o"])
                .arg(&out)
                .output()
                .context("cannot run mekong export")?;
            let secs = started.elapsed().as_secs_f64();
            let said = String::from_utf8_lossy(&run.stderr);
            if !run.status.success() {
                bail!("mekong export --format {format} failed: {said}");
            }
            // "exported N readings of S series to FILE in ..."
            let readings: u64 = said
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("unexpected output of mekong export: {said}"))?;
            if best.is_none_or(|(s, _)| secs < s) {
                best = Some((secs, readings));
            }
        }
        let (secs, readings) = best.context("no round")?;
        let bytes = std::fs::metadata(&out)?.len();
        let line = json!({
            "step": "export",
            "format": format,
            "readings": readings,
            "seconds": (secs * 100.0).round() / 100.0,
            "readings_per_sec": (readings as f64 / secs).round(),
            "bytes": bytes,
            "bytes_per_reading": (bytes as f64 / readings.max(1) as f64 * 1000.0).round() / 1000.0,
        });
        println!("{line}");
        results.insert(format.into(), line);
        std::fs::remove_file(&out)?;
    }
    Ok(json!({ "bench": "export", "rounds": rounds.max(1), "csv": results["csv"], "parquet": results["parquet"] }))
}
