//! `mekong-bench backup`: backups of a serving mekong, over a dataset directory made by
//! `mekong-bench query --data-dir DIR` (the reference dataset, or a scaled-down one): a full
//! backup's time and size, then `--load-secs` of load standing in for an hour of the city
//! (`--rate` packs a second), then an incremental backup's time and size; the longest ingest
//! pause a backup causes, seen from the publishing side (the devices' acknowledgement
//! latencies while each backup runs, against a window before it) and from the server's
//! (`pause_ms`, the read of the sled part under the store's write lock); then `mekong backup
//! verify` and `mekong restore` of the last backup into an empty directory, timed.
//!
//! The dataset is copied first, so that the directory stays as `query` made it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::harness::{free_ports, get_json, percentile_ms, post_json, temp_dir, wait_answering};
use crate::load::{Counters, Load, LoadOptions};

/// What to measure (the options of `mekong-bench backup`).
#[derive(Debug, Clone, clap::Args)]
pub struct BackupBenchOptions {
    /// The dataset directory (`mekong-bench query --series 100 --days 3 --data-dir DIR`).
    #[arg(long)]
    pub data_dir: std::path::PathBuf,
    /// Devices publishing, one connection each.
    #[arg(long, default_value_t = 1000)]
    pub devices: usize,
    /// Packs a second over all devices. 1,000 for 60 s is an hour of a city of 1,000 series
    /// each sending a pack of 6 readings a minute (60,000 packs), in a minute.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Readings per pack.
    #[arg(long, default_value_t = 6)]
    pub readings: usize,
    /// Seconds of load between the full and the incremental backup.
    #[arg(long, default_value_t = 60.0)]
    pub load_secs: f64,
    /// Seconds of load measured before each backup, for the latency it is compared with.
    #[arg(long, default_value_t = 5.0)]
    pub baseline_secs: f64,
}

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The acknowledgement latencies of packs first sent while `during` runs (p50, p99, max in
/// ms), and the longest time without any acknowledgement of any device that overlaps it: the
/// pause ingest had, as the devices saw it.
async fn latencies_during<T>(counters: &Counters, during: impl std::future::Future<Output = T>) -> (T, Value) {
    counters.ack_latency_us.lock().unwrap_or_else(|e| e.into_inner()).clear();
    counters.ack_times.lock().unwrap_or_else(|e| e.into_inner()).clear();
    counters.record_ack_times.store(true, Ordering::Relaxed);
    // The last acknowledgement before the window opens, for a gap that spans its start.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    counters.measuring.store(true, Ordering::Relaxed);
    let out = during.await;
    counters.measuring.store(false, Ordering::Relaxed);
    let ended = Instant::now();
    // Packs sent in the window whose acknowledgement is still on its way, and the first
    // acknowledgement after it (a gap that spans its end); a pack is resent after 5 s without
    // one, and its latency counts from its first sending.
    tokio::time::sleep(Duration::from_secs(2)).await;
    counters.record_ack_times.store(false, Ordering::Relaxed);
    let times = std::mem::take(&mut *counters.ack_times.lock().unwrap_or_else(|e| e.into_inner()));
    let longest_gap = times
        .windows(2)
        .filter(|w| w[1] >= started && w[0] <= ended)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_else(|| ended - started);
    let mut us = std::mem::take(&mut *counters.ack_latency_us.lock().unwrap_or_else(|e| e.into_inner()));
    us.sort_unstable();
    let ms = |q: f64| percentile_ms(&us, q);
    let max = us.last().map(|&u| f64::from(u) / 1000.0);
    let gap_ms = (longest_gap.as_secs_f64() * 1e6).round() / 1000.0;
    (out, json!({ "acks": us.len(), "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": max, "longest_gap_ms": gap_ms }))
}

/// One backup through the API, with the latencies before and during it.
async fn timed_backup(counters: &Counters, http: SocketAddr, baseline: f64) -> anyhow::Result<Value> {
    let ((), before) = latencies_during(counters, tokio::time::sleep(Duration::from_secs_f64(baseline))).await;
    let backup = async {
        let started = Instant::now();
        let answer = post_json(http, "/v1/backups").await;
        (answer, started.elapsed().as_secs_f64())
    };
    let ((answer, secs), during) = latencies_during(counters, backup).await;
    let answer = answer?;
    Ok(json!({
        "seconds": (secs * 1000.0).round() / 1000.0,
        "bytes": answer["backup"]["bytes"],
        "copied_bytes": answer["copied_bytes"],
        "copied_files": answer["copied_files"],
        "reused_files": answer["reused_files"],
        "day_files": answer["backup"]["files"],
        "readings": answer["backup"]["readings"],
        "server_pause_ms": answer["pause_ms"],
        "ack_latency_before": before,
        "ack_latency_during": during,
    }))
}

/// Runs the benchmark; the last line it prints is the summary it returns.
pub fn backup(opts: BackupBenchOptions, mekong: &Path) -> anyhow::Result<Value> {
    if !opts.data_dir.is_dir() {
        bail!("{} is not a directory: make one with `mekong-bench query --data-dir DIR`", opts.data_dir.display());
    }
    let work = temp_dir()?;
    let data = work.path.join("data");
    let repo = work.path.join("repo");
    copy_dir(&opts.data_dir, &data).context("cannot copy the dataset")?;
    let [http, mqtt] = free_ports()?.map(|port| SocketAddr::from(([127, 0, 0, 1], port)));
    let server = Server {
        child: Command::new(mekong)
            .args(["serve", "--config", "/dev/null"])
            .env("MEKONG__STORAGE__DATA_DIR", &data)
            .env("MEKONG__BROKER__LISTEN", mqtt.to_string())
            .env("MEKONG__BROKER__LISTEN_V5", "")
            .env("MEKONG__API__LISTEN", http.to_string())
            .env("MEKONG__BACKUP__DIR", &repo)
            .env("MEKONG__BACKUP__EVERY_SECS", "0")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start mekong serve")?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (full, incremental) = runtime.block_on(async {
        wait_answering(http, "/healthz", Duration::from_secs(60), "mekong serve").await?;
        let devices = opts.devices.max(1);
        let load = Load::start(LoadOptions {
            addr: mqtt,
            devices,
            readings_per_pack: opts.readings.max(1),
            window: 16,
            rate: Some(opts.rate / devices as f64),
            downlinks: true,
            prefix: "backup-".into(),
            tls: None,
            wall_clock: true,
            spread: None,
        })
        .await?;
        let full = timed_backup(&load.counters, http, opts.baseline_secs).await?;
        println!("{}", json!({ "step": "full", "backup": full }));
        let before = get_json(http, "/v1/stats").await?;
        tokio::time::sleep(Duration::from_secs_f64(opts.load_secs)).await;
        let after = get_json(http, "/v1/stats").await?;
        let durable = |v: &Value, key: &str| v[key].as_u64().unwrap_or(0);
        let packs = durable(&after, "durable_packs") - durable(&before, "durable_packs");
        let readings = durable(&after, "durable_readings") - durable(&before, "durable_readings");
        let mut incremental = timed_backup(&load.counters, http, opts.baseline_secs).await?;
        incremental["after_load"] = json!({ "seconds": opts.load_secs, "packs": packs, "readings": readings });
        println!("{}", json!({ "step": "incremental", "backup": incremental }));
        load.stop().await?;
        anyhow::Ok((full, incremental))
    })?;
    drop(server);

    let started = Instant::now();
    let checked = Command::new(mekong).args(["backup", "verify"]).arg(&repo).output()?;
    let verify_secs = started.elapsed().as_secs_f64();
    if !checked.status.success() {
        bail!("mekong backup verify failed: {}", String::from_utf8_lossy(&checked.stderr));
    }
    let restored_dir = work.path.join("restored");
    let started = Instant::now();
    let restored = Command::new(mekong)
        .args(["restore", "--config", "/dev/null", "--from"])
        .arg(&repo)
        .arg("--data-dir")
        .arg(&restored_dir)
        .output()?;
    let restore_secs = started.elapsed().as_secs_f64();
    if !restored.status.success() {
        bail!("mekong restore failed: {}", String::from_utf8_lossy(&restored.stderr));
    }
    let round = |s: f64| (s * 1000.0).round() / 1000.0;
    Ok(json!({
        "bench": "backup",
        "dataset": opts.data_dir.display().to_string(),
        "load": { "devices": opts.devices, "packs_per_sec": opts.rate, "readings_per_pack": opts.readings },
        "full": full,
        "incremental": incremental,
        "verify_seconds": round(verify_secs),
        "restore_seconds": round(restore_secs),
    }))
}
