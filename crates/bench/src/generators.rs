//! `mekong-bench ingest`'s load spread over child processes: each process may hold only
//! 20,000 open files here (a hard limit that root cannot raise), so 18,000 devices are run
//! by two or more children of this binary (its hidden `load` command), each holding at most
//! `--per-process` connections. A child connects its devices, says `ready` on stdout, and
//! then obeys its stdin: `measure` opens the measured window, `stop MS` closes it and waits
//! up to MS milliseconds for the window's acknowledgements; it answers `stop` with one JSON
//! line of what it timed, and exits once its devices have disconnected.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::load::{Counters, Load, LoadOptions, Model};

/// What the devices timed over the measured window, from every process.
#[derive(Debug, Default)]
pub struct Tally {
    /// Acknowledgement latencies of packs first sent while measuring, µs, sorted.
    pub ack_latency_us: Vec<u32>,
    /// Packs resent after their acknowledgement was overdue.
    pub resends: u64,
    /// Packs first sent while measuring.
    pub sent: u64,
    /// Of those, the ones acknowledged (within the grace after the window).
    pub acked: u64,
    /// Downlinks that acknowledged packs, received in the window.
    pub ack_downlinks: u64,
}

/// The devices of a scenario: in this process, or split over child processes.
pub enum Generator {
    /// Every device in this process.
    Local(Load),
    /// Devices in child processes.
    Children(Vec<LoadChild>),
}

/// One child process of the load and its pipes.
pub struct LoadChild {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl LoadChild {
    async fn say(&mut self, word: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{word}\n").as_bytes()).await?;
        self.stdin.flush().await.context("the load process went away")
    }

    async fn hear(&mut self) -> anyhow::Result<String> {
        match self.stdout.next_line().await? {
            Some(line) => Ok(line),
            None => bail!("the load process ended early ({:?})", self.child.try_wait()),
        }
    }
}

impl Generator {
    /// Connects every device of `opts`, behaving as `model` says: here if there are at most
    /// `per_process`, else in child processes of at most `per_process` each. Returns once
    /// all are connected.
    pub async fn start(opts: LoadOptions, per_process: usize, model: Model) -> anyhow::Result<Generator> {
        let per_process = per_process.max(1);
        if opts.devices <= per_process {
            return Ok(Generator::Local(Load::start_with(opts, model).await?));
        }
        if opts.tls.is_some() {
            bail!("a load over TLS runs in one process (at most --per-process devices)");
        }
        let exe = std::env::current_exe().context("cannot find the mekong-bench binary")?;
        let mut children = Vec::new();
        let mut first = 0;
        while first < opts.devices {
            let devices = per_process.min(opts.devices - first);
            let mut command = tokio::process::Command::new(&exe);
            command
                .arg("load")
                .args(["--addr", &opts.addr.to_string()])
                .args(["--devices", &devices.to_string()])
                .args(["--prefix", &format!("{}{}-", opts.prefix, children.len())])
                .args(["--readings", &opts.readings_per_pack.to_string()])
                .args(["--window", &opts.window.to_string()])
                .args(["--first", &first.to_string()])
                .args(["--acks", model.acks.as_str()])
                .args(["--resend", model.resend.as_str()]);
            if let Some(rate) = opts.rate {
                command.args(["--rate", &rate.to_string()]);
            }
            if let Some((_, all)) = opts.spread {
                command.args(["--spread-over", &all.to_string()]);
            }
            if opts.downlinks {
                command.arg("--downlinks");
            }
            command.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).kill_on_drop(true);
            let mut child = command.spawn().context("cannot start a load process")?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                bail!("a load process has no pipes");
            };
            children.push(LoadChild { child, stdin, stdout: BufReader::new(stdout).lines() });
            first += devices;
        }
        // The children connect at the same time; each says when all of its devices are up.
        for child in &mut children {
            let line = child.hear().await?;
            if line != "ready" {
                bail!("a load process said {line:?} instead of ready");
            }
        }
        Ok(Generator::Children(children))
    }

    /// CPU time the devices have used, in seconds: their child processes', or this
    /// process's when they run here.
    pub fn cpu_seconds(&self) -> Option<f64> {
        match self {
            Generator::Local(_) => crate::harness::cpu_seconds("self"),
            Generator::Children(children) => children
                .iter()
                .map(|c| c.child.id().and_then(|pid| crate::harness::cpu_seconds(&pid.to_string())))
                .sum(),
        }
    }

    /// Opens the measured window.
    pub async fn measure(&mut self) -> anyhow::Result<()> {
        match self {
            Generator::Local(load) => load.counters.measuring.store(true, Ordering::Relaxed),
            Generator::Children(children) => {
                for child in children {
                    child.say("measure").await?;
                }
            }
        }
        Ok(())
    }

    /// Closes the measured window, waits up to `grace` for the acknowledgements of the packs
    /// sent in it, and stops every device.
    pub async fn finish(self, grace: Duration) -> anyhow::Result<Tally> {
        match self {
            Generator::Local(load) => {
                let tally = close_window(&load.counters, grace).await;
                load.stop().await?;
                Ok(tally)
            }
            Generator::Children(mut children) => {
                for child in &mut children {
                    child.say(&format!("stop {}", grace.as_millis())).await?;
                }
                let mut tally = Tally::default();
                for child in &mut children {
                    let line = child.hear().await?;
                    let v: Value = serde_json::from_str(&line).context("a load process's tally")?;
                    let n = |key: &str| v[key].as_u64().unwrap_or(0);
                    tally.resends += n("resends");
                    tally.sent += n("sent");
                    tally.acked += n("acked");
                    tally.ack_downlinks += n("ack_downlinks");
                    if let Some(us) = v["ack_latency_us"].as_array() {
                        tally.ack_latency_us.extend(us.iter().filter_map(|u| u.as_u64()).map(|u| u as u32));
                    }
                }
                for mut child in children {
                    drop(child.stdin);
                    let status = tokio::time::timeout(Duration::from_secs(30), child.child.wait()).await;
                    if !matches!(status, Ok(Ok(s)) if s.success()) {
                        let _ = child.child.kill().await;
                        bail!("a load process did not end cleanly: {status:?}");
                    }
                }
                tally.ack_latency_us.sort_unstable();
                Ok(tally)
            }
        }
    }
}

/// Closes the measured window of `counters` and, with `grace`, waits for the packs sent in
/// it to be acknowledged (or the grace to run out); what they timed.
async fn close_window(counters: &Arc<Counters>, grace: Duration) -> Tally {
    counters.measuring.store(false, Ordering::Relaxed);
    let deadline = Instant::now() + grace;
    let sent = counters.sent_measured.load(Ordering::Relaxed);
    while counters.acks.load(Ordering::Relaxed) < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ack_latency_us = std::mem::take(&mut *counters.ack_latency_us.lock().unwrap_or_else(|e| e.into_inner()));
    ack_latency_us.sort_unstable();
    Tally {
        ack_latency_us,
        resends: counters.resends.load(Ordering::Relaxed),
        sent,
        acked: counters.acks.load(Ordering::Relaxed),
        ack_downlinks: counters.ack_downlinks.load(Ordering::Relaxed),
    }
}

/// The hidden `load` command: one child's share of the devices, driven over stdin/stdout.
pub async fn run_child(opts: LoadOptions, model: Model) -> anyhow::Result<()> {
    let load = Load::start_with(opts, model).await?;
    let mut out = tokio::io::stdout();
    out.write_all(b"ready\n").await?;
    out.flush().await?;
    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    let grace = loop {
        let line = commands.next_line().await?;
        match line.as_deref().map(|l| l.split_once(' ').unwrap_or((l, ""))) {
            Some(("measure", _)) => load.counters.measuring.store(true, Ordering::Relaxed),
            Some(("stop", ms)) => break Duration::from_millis(ms.parse().unwrap_or(0)),
            None => break Duration::ZERO,
            Some(_) => bail!("unknown command {line:?}"),
        }
    };
    let tally = close_window(&load.counters, grace).await;
    let line = json!({
        "ack_latency_us": tally.ack_latency_us,
        "resends": tally.resends,
        "sent": tally.sent,
        "acked": tally.acked,
        "ack_downlinks": tally.ack_downlinks,
    });
    out.write_all(format!("{line}\n").as_bytes()).await?;
    out.flush().await?;
    load.stop().await
}
