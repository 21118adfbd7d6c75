//! `mekong-bench pipeline`: a short run stores every pack whole (the command fails otherwise)
//! and prints one line per pack size, with figures that add up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const BENCH: &str = env!("CARGO_BIN_EXE_mekong-bench");

#[test]
fn a_short_run_stores_its_groups_and_reports_each_pack_size() {
    let out = Command::new(BENCH)
        .args(["pipeline", "--readings", "1,3", "--devices", "20", "--group", "7", "--seconds", "0.2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pipeline failed: {stderr}");
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "a line per pack size and the summary: {lines:?}");
    for (line, readings) in lines.iter().zip([1, 3]) {
        assert_eq!(line["scenario"], "pipeline");
        assert_eq!(line["readings_per_pack"], readings);
        let packs = line["packs"].as_u64().unwrap();
        // Whole groups of 7, at least one.
        assert!(packs >= 7 && packs % 7 == 0, "{line}");
        for figure in ["decode_ns_per_record", "chunk_encode_us_per_pack", "ingest_thread_us_per_pack"] {
            assert!(line[figure].as_f64().unwrap() > 0.0, "{figure} in {line}");
        }
        // The mean takes in every group, the median half of them at most: no mean below the
        // median's half.
        let (median, mean) = (
            line["ingest_thread_us_per_pack"].as_f64().unwrap(),
            line["ingest_thread_mean_us_per_pack"].as_f64().unwrap(),
        );
        assert!(mean * 2.0 >= median, "{line}");
    }
    // More records, a longer pack.
    assert!(lines[1]["pack_bytes"].as_u64() > lines[0]["pack_bytes"].as_u64());
    assert_eq!(lines[2]["runs"].as_array().map(Vec::len), Some(2));
    for case in ["empty", "eleven_bytes"] {
        assert!(lines[2]["str_eq_ns"][case].as_f64().unwrap() > 0.0, "{}", lines[2]);
    }
}
