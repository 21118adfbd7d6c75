//! `mekong-bench day-blocks`: the size and decoding time of the store's day blocks over the
//! reference dataset's days, in the chunk format ingest writes (version 4), in the one folds
//! write (version 6) and in the one they wrote before it (version 5), without sled: the codec
//! alone.
//!
//! The days are those `mekong-bench query --series N --days D` loads: N series (water levels,
//! PM2.5 and vehicle counts in turn) for D days, plus one water series for a whole year,
//! every `--interval-secs`, one block per series and UTC day.

use std::time::Instant;

use anyhow::bail;
use mekong_store::fuzzing::{decode_chunk, encode_block, encode_block_v5, encode_chunk};
use serde_json::{json, Value};

use crate::query::Series;

const DAY_MS: i64 = 86_400_000;

/// The last day ends here (2026-11-01T00:00:00Z): the same data at every run.
const END_MS: i64 = 1_793_491_200_000;

/// What to encode (the options of `mekong-bench day-blocks`).
#[derive(Debug, Clone, clap::Args)]
pub struct DayBlockOptions {
    /// Series (besides one water series of a whole year), kinds in turn.
    #[arg(long, default_value_t = 100)]
    pub series: usize,
    /// Days per series.
    #[arg(long, default_value_t = 3)]
    pub days: u32,
    /// Days of the year-long water series (0 leaves it out).
    #[arg(long, default_value_t = 365)]
    pub year_days: u32,
    /// Seconds between two points of a series; must divide a day.
    #[arg(long, default_value_t = 10)]
    pub interval_secs: u32,
    /// Times each kind's first block is decoded, for the decoding time.
    #[arg(long, default_value_t = 500)]
    pub decodes: u32,
}

/// Bytes and points of one version, per kind.
#[derive(Default)]
struct Tally {
    bytes: [u64; 3],
    points: [u64; 3],
}

/// Encodes every day block in each version, checks that both decode to the points bit for bit,
/// prints a line per kind and version, and returns the summary line.
pub fn day_blocks(opts: DayBlockOptions) -> anyhow::Result<Value> {
    if opts.interval_secs == 0 || 86_400 % opts.interval_secs != 0 {
        bail!("--interval-secs must divide a day");
    }
    let kinds = ["water", "air", "traffic"];
    let mut series: Vec<(Series, u32)> = (0..opts.series)
        .map(|i| Ok((Series::new(i, kinds[i % kinds.len()])?, opts.days)))
        .collect::<anyhow::Result<_>>()?;
    if opts.year_days > 0 {
        series.push((Series::new(opts.series, "water")?, opts.year_days));
    }
    let step = i64::from(opts.interval_secs) * 1000;
    let mut tallies = [Tally::default(), Tally::default(), Tally::default()];
    // Per kind, the decoding time of its first block in each version (4, 5, 6), in µs.
    let mut decode_us: [Option<[f64; 3]>; 3] = [None; 3];
    let mut decoded = Vec::new();
    for (s, days) in &series {
        let kind = kinds.iter().position(|k| *k == s.kind).unwrap_or(0);
        for d in 0..i64::from(*days) {
            let day = END_MS - (d + 1) * DAY_MS;
            let points: Vec<(i64, f64)> = (day..day + DAY_MS).step_by(step as usize).map(|t| (t, s.value(t))).collect();
            let encoded = [encode_chunk(&points), encode_block_v5(&points), encode_block(&points)];
            for (bytes, tally) in encoded.iter().zip(&mut tallies) {
                decoded.clear();
                if decode_chunk(bytes, &mut decoded).is_none() || !same(&decoded, &points) {
                    bail!("a block of {} does not decode to its points", s.device);
                }
                tally.bytes[kind] += bytes.len() as u64;
                tally.points[kind] += points.len() as u64;
            }
            if decode_us[kind].is_none() {
                decode_us[kind] = Some(encoded.each_ref().map(|bytes| time_decodes(bytes, opts.decodes)));
            }
        }
    }
    let per_point = |bytes: u64, points: u64| {
        if points == 0 {
            0.0
        } else {
            (bytes as f64 / points as f64 * 10_000.0).round() / 10_000.0
        }
    };
    for (kind, name) in kinds.iter().enumerate() {
        let Some(us) = decode_us[kind] else { continue };
        for ((version, tally), us) in [4, 5, 6].into_iter().zip(&tallies).zip(us) {
            let line = json!({
                "scenario": "day blocks",
                "kind": name,
                "version": version,
                "points": tally.points[kind],
                "bytes": tally.bytes[kind],
                "bytes_per_point": per_point(tally.bytes[kind], tally.points[kind]),
                "decode_us_per_day_block": (us * 10.0).round() / 10.0,
                "points_per_day_block": 86_400 / opts.interval_secs,
            });
            println!("{line}");
        }
    }
    let total = |t: &Tally| (t.bytes.iter().sum::<u64>(), t.points.iter().sum::<u64>());
    let ((b4, p4), (b5, _), (b6, _)) = (total(&tallies[0]), total(&tallies[1]), total(&tallies[2]));
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { (a as f64 / b as f64 * 1000.0).round() / 1000.0 };
    Ok(json!({
        "scenario": "day blocks summary",
        "series": opts.series,
        "days": opts.days,
        "year_days": opts.year_days,
        "points": p4,
        "v4_bytes_per_point": per_point(b4, p4),
        "v5_bytes_per_point": per_point(b5, p4),
        "v6_bytes_per_point": per_point(b6, p4),
        "v5_over_v4": ratio(b5, b4),
        "v6_over_v5": ratio(b6, b5),
    }))
}

/// Whether two lists of points are the same, bit for bit.
fn same(a: &[(i64, f64)], b: &[(i64, f64)]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.0 == y.0 && x.1.to_bits() == y.1.to_bits())
}

/// The mean time to decode `bytes`, in µs, over `runs` decodes.
fn time_decodes(bytes: &[u8], runs: u32) -> f64 {
    let mut out = Vec::new();
    let started = Instant::now();
    for _ in 0..runs.max(1) {
        out.clear();
        let _ = std::hint::black_box(decode_chunk(std::hint::black_box(bytes), &mut out));
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(runs.max(1))
}
