//! `mekong-bench pipeline`: the ingest thread's work on a pack, without the broker or the
//! load generator: decoding the load generator's pack alone, encoding its points as a chunk
//! alone, and the pipeline's whole work (decode, checks, staging, the write log) on a real
//! store, in groups of packs from many devices as the ingest thread takes them.
//!
//! `mekong-bench ingest` measures the whole system, and on two cores shared with the load
//! generator its rates move by a tenth from one run to the next; this command measures what
//! one change to the ingest thread does to it, alone, in a few seconds.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mekong_ingest::{Outcome, Pipeline, PipelineOptions, Stats};
use mekong_schema::senml::{self, DecodeOptions};
use mekong_store::fuzzing::encode_chunk;
use mekong_store::{Store, StoreOptions};
use serde_json::{json, Value};

use crate::harness;
use crate::load::{device_pack, now_ms, Acks};

/// What to run (the options of `mekong-bench pipeline`).
#[derive(Debug, Clone, clap::Args)]
pub struct PipelineBenchOptions {
    /// Readings per pack, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,50")]
    pub readings: Vec<usize>,
    /// Devices the packs come from, in turn: a group holds one pack of each of `--group` of
    /// them, as when thousands of devices keep one pack in flight each.
    #[arg(long, default_value_t = 10_000)]
    pub devices: usize,
    /// Packs per group (one store write each).
    #[arg(long, default_value_t = 256)]
    pub group: usize,
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
}

/// Runs every measurement for each `--readings`, prints a line each, and returns the summary.
pub fn pipeline(opts: PipelineBenchOptions) -> anyhow::Result<Value> {
    if !(1..=1_000_000).contains(&opts.devices) || !(1..=100_000).contains(&opts.group) {
        bail!("--devices must be 1 to 1,000,000 and --group 1 to 100,000");
    }
    // The most records a pack may hold (the pipeline's default limit).
    let max_records = PipelineOptions::default().max_records_per_pack;
    if opts.readings.iter().any(|r| !(1..=max_records).contains(r)) {
        bail!("--readings must be 1 to {max_records}");
    }
    if !(opts.seconds > 0.0 && opts.seconds <= 3600.0) {
        bail!("--seconds must be above 0 and at most 3600");
    }
    let mut summary = Vec::new();
    for &readings in &opts.readings {
        let start_ms = now_ms();
        let mut buf = vec![0u8; 80 + readings * 32];
        let n = device_pack(&mut buf, readings, start_ms - 86_400_000, Acks::Puback)?;
        let pack = &buf[..n];
        let decode_ns = decode_ns_per_record(pack, start_ms, readings, opts.seconds)?;
        let encode_us = chunk_encode_us(readings, start_ms, opts.seconds);
        let whole = handle_groups(&opts, readings, start_ms)?;
        let line = json!({
            "scenario": "pipeline",
            "readings_per_pack": readings,
            "pack_bytes": n,
            "decode_ns_per_record": round(decode_ns, 1),
            "chunk_encode_us_per_pack": round(encode_us, 3),
            "devices": opts.devices,
            "group": opts.group,
            "packs": whole.packs,
            "ingest_thread_us_per_pack": round(whole.median_us_per_pack, 2),
            "ingest_thread_mean_us_per_pack": round(whole.mean_us_per_pack, 2),
            "other_threads_cpu_us_per_pack": round(whole.others_us_per_pack, 2),
        });
        println!("{line}");
        summary.push(line);
    }
    // `==` on two empty strings and on two of eleven bytes, as the pipeline compares names:
    // the empty ones point at no memory (an empty `String`'s dangling address), where glibc's
    // AVX-512 `memcmp` has been seen to take a hundred times longer for no bytes (README, "Four
    // cuts on the ingest thread").
    let (empty, named) = ((String::new(), String::new()), ("water_level".to_owned(), "water_level".to_owned()));
    let str_eq = json!({
        "empty": round(str_eq_ns(&empty.0, &empty.1, opts.seconds.min(1.0))?, 2),
        "eleven_bytes": round(str_eq_ns(&named.0, &named.1, opts.seconds.min(1.0))?, 2),
    });
    Ok(json!({ "scenario": "pipeline summary", "runs": summary, "str_eq_ns": str_eq }))
}

/// One `a == b`, in ns.
fn str_eq_ns(a: &str, b: &str, seconds: f64) -> anyhow::Result<f64> {
    const CALLS: u32 = 1000;
    let mut equal = 0u64;
    let call = median_call(seconds, || {
        for _ in 0..CALLS {
            equal += u64::from(std::hint::black_box(a) == std::hint::black_box(b));
        }
        Ok(())
    })?;
    std::hint::black_box(equal);
    Ok(call.as_secs_f64() * 1e9 / f64::from(CALLS))
}

/// Decoding the pack alone, into nothing: the SenML reader with its checks, per record.
fn decode_ns_per_record(pack: &[u8], now_ms: i64, readings: usize, seconds: f64) -> anyhow::Result<f64> {
    let opts = DecodeOptions { now: now_ms as f64 / 1000.0, max_records: readings };
    let mut sum = 0.0;
    let call = median_call(seconds, || {
        senml::decode_with_info(pack, opts, &mut |r| {
            if let senml::Value::Number(v) = r.value {
                sum += v + r.time;
            }
            Ok(())
        })
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("the pack does not decode: {e}"))
    })?;
    std::hint::black_box(sum);
    Ok(call.as_secs_f64() * 1e9 / readings as f64)
}

/// Encoding the pack's points as an ingest chunk alone, per pack.
fn chunk_encode_us(readings: usize, now_ms: i64, seconds: f64) -> f64 {
    let points: Vec<(i64, f64)> = (0..readings).map(|j| (now_ms + j as i64, 150.0 + (j % 50) as f64 * 0.5)).collect();
    let mut bytes = 0;
    let call = median_call(seconds, || {
        bytes += std::hint::black_box(encode_chunk(&points)).len();
        Ok(())
    });
    std::hint::black_box(bytes);
    call.map_or(f64::NAN, |call| call.as_secs_f64() * 1e6)
}

/// Calls `f` for about `seconds`, in batches of 64 calls that read the clock rarely; the time
/// of a call in the median batch. The median, not the mean: this machine's other work (and its
/// host's) stretches some batches many times over, and would move a mean by a tenth from one
/// run to the next.
fn median_call(seconds: f64, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    const BATCH: u32 = 64;
    let start = Instant::now();
    let until = Duration::from_secs_f64(seconds.max(0.01));
    let mut batches = Vec::new();
    loop {
        let at = Instant::now();
        for _ in 0..BATCH {
            f()?;
        }
        batches.push(at.elapsed() / BATCH);
        if start.elapsed() >= until {
            return Ok(median(&mut batches));
        }
    }
}

/// The median of `values` (the upper one of an even count); zero for none.
fn median(values: &mut [Duration]) -> Duration {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// What the pipeline's runs measured.
struct Whole {
    packs: u64,
    /// A pack's share of the median group's time in the pipeline.
    median_us_per_pack: f64,
    /// The time in the pipeline over the packs, waits for the store's locks included.
    mean_us_per_pack: f64,
    others_us_per_pack: f64,
}

/// The pipeline on a store of a temporary directory, with the server's store options: groups
/// of `--group` packs, each device's packs a pack's readings apart, every group flushed by
/// another thread as the acknowledgement thread does. Every pack must be accepted whole.
fn handle_groups(opts: &PipelineBenchOptions, readings: usize, start_ms: i64) -> anyhow::Result<Whole> {
    let dir = harness::temp_dir()?;
    let store = Store::open(&dir.path, &StoreOptions::default()).context("cannot open the store")?;
    let stats = Arc::new(Stats::new(100));
    let mut pipeline = Pipeline::new(PipelineOptions::default(), store.clone(), stats);
    let (flushes, pending) = mpsc::sync_channel::<()>(64);
    let flusher = {
        let store = store.clone();
        std::thread::spawn(move || -> anyhow::Result<()> {
            while pending.recv().is_ok() {
                while pending.try_recv().is_ok() {}
                store.flush().context("cannot flush the store")?;
            }
            Ok(())
        })
    };
    let topics: Vec<String> = (0..opts.devices).map(|d| format!("mekong/v1/bench-{d:05}/up")).collect();
    // Each device's next time, from a day back as the load generator's.
    let mut times = vec![start_ms - 86_400_000; opts.devices];
    let mut buf = vec![0u8; 80 + readings * 32];
    let mut payloads: Vec<Vec<u8>> = Vec::with_capacity(opts.group);
    let mut next_device = 0;
    let mut packs = 0u64;
    let mut in_handle = Duration::ZERO;
    let mut per_pack_of_group = Vec::new();
    let cpu_start = other_threads_cpu_seconds();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < opts.seconds {
        payloads.clear();
        let mut devices = Vec::with_capacity(opts.group);
        for _ in 0..opts.group {
            let d = next_device;
            next_device = (next_device + 1) % opts.devices;
            let n = device_pack(&mut buf, readings, times[d], Acks::Puback)?;
            times[d] += readings as i64;
            payloads.push(buf[..n].to_vec());
            devices.push(d);
        }
        let group: Vec<(&[u8], &[u8])> =
            devices.iter().zip(&payloads).map(|(&d, p)| (topics[d].as_bytes(), p.as_slice())).collect();
        let at = Instant::now();
        let handled = pipeline.handle_group(&group, now_ms());
        let took = at.elapsed();
        in_handle += took;
        per_pack_of_group.push(took / u32::try_from(group.len()).unwrap_or(u32::MAX).max(1));
        for outcome in &handled.outcomes {
            match outcome {
                Outcome::Accepted(a) if a.summary.stored == readings => {}
                other => bail!("a pack was not stored whole: {other:?}"),
            }
        }
        packs += group.len() as u64;
        // A full channel means the flusher has a flush to do already.
        let _ = flushes.try_send(());
    }
    drop(flushes);
    flusher.join().map_err(|_| anyhow::anyhow!("the flushing thread panicked"))??;
    let cpu = cpu_start.zip(other_threads_cpu_seconds()).map(|(a, b)| b - a);
    let per_pack = |s: f64| s * 1e6 / packs.max(1) as f64;
    Ok(Whole {
        packs,
        median_us_per_pack: median(&mut per_pack_of_group).as_secs_f64() * 1e6,
        mean_us_per_pack: per_pack(in_handle.as_secs_f64()),
        others_us_per_pack: cpu.map_or(f64::NAN, per_pack),
    })
}

/// The CPU seconds of this process's threads but the calling one: the store's (the log's
/// fold, sled's flusher) and the flushing thread, whose work a group leaves to them.
fn other_threads_cpu_seconds() -> Option<f64> {
    let me = std::fs::read_link("/proc/thread-self").ok()?;
    let me = me.file_name()?.to_owned();
    let mut seconds = 0.0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let task = task.ok()?;
        if task.file_name() == me {
            continue;
        }
        seconds += harness::cpu_seconds(&format!("self/task/{}", task.file_name().to_string_lossy())).unwrap_or(0.0);
    }
    Some(seconds)
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}
