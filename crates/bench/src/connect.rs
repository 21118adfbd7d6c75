//! `mekong-bench connect`: connection set-up, as when a fleet reconnects at once (after a
//! network outage or a restart of mekong): connections per second and connect times, plain
//! TCP against TLS in one run, and the server memory an idle connection holds either way.
//!
//! Per scenario a fresh `mekong serve` (a child process, as in `ingest`). The devices connect
//! once, a bounded number at a time, and stay idle: the server's resident memory then, less
//! its memory before, is what the idle connections hold. Then they disconnect and, released
//! together, all reconnect at once, `--rounds` times: a device's connect time runs from its
//! TCP connect to its CONNACK (with TLS, a full handshake: devices never resume a session, the
//! worst case, as after a restart of the server), and the round's rate is the devices over
//! the time from the release to the last CONNACK. The load generator shares the machine's
//! cores with the server (and with TLS does a client's half of every handshake), so the rates
//! are those of the whole machine, not of the server alone.
//!
//! A scenario is a [`Security`]: what a device does to get in: plain TCP, TLS (`--tls`), or
//! plain TCP with a username and password in CONNECT that the broker checks against a
//! registry of every device (`--auth`); each other scenario's ratios to plain are in the
//! summary.
//!
//! `--spread-ms` spreads each round's reconnections over that window, each device waiting as
//! the firmware does after a lost session (its jitter, from its id: the firmware waits its
//! retry pause and then up to half of it again, so a 5 s pause spreads a fleet over 2.5 s);
//! a device's connect time then runs from the end of its wait. Without it the whole fleet
//! connects in the same instant, the worst case. The kernel's count of connections dropped
//! because a listener's queue was full (`TcpExtListenOverflows`, for the whole network
//! namespace) is read around each round, and so is the CPU of the server and of the load
//! generator, from the release to the last CONNACK, per connection made.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::sync::{Barrier, Semaphore};

use mekong_schema::downlink;

use crate::harness::{self, percentile_ms, temp_dir};
use crate::ingest::{open_file_limit, Server};
use crate::load::{connect_device_timed, disconnect, logins_registry, Conn};
use crate::tls::BenchTls;

/// What to measure.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Devices, one connection each.
    pub devices: usize,
    /// Reconnections of the whole fleet at once, per scenario.
    pub rounds: usize,
    /// Also measure TLS (against plain TCP).
    pub tls: bool,
    /// Also measure logins with a username and password (plain TCP), against none.
    pub auth: bool,
    /// Each round's reconnections spread over this window (0: all in the same instant).
    pub spread: Duration,
    /// The `mekong` binary.
    pub mekong: std::path::PathBuf,
}

/// What a device does to get in: the scenario's name and its transport.
#[derive(Debug, Clone, Copy)]
struct Security<'a> {
    name: &'static str,
    tls: Option<&'a BenchTls>,
    /// Every device logs in with its password, checked against a registry of them all.
    login: bool,
}

/// Connections made at once before the measured reconnections (the initial connect is not
/// measured, so it need not be a stampede).
const INITIAL_AT_ONCE: usize = 64;

/// A device's connect gives up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the scenarios and returns the summary (also printed, one line per scenario).
pub async fn connect(opts: ConnectOptions) -> anyhow::Result<Value> {
    if let Some(limit) = open_file_limit() {
        if limit < opts.devices as u64 + 512 {
            bail!(
                "{} devices need about {} open files and the limit is {limit}: raise it with `ulimit -n`",
                opts.devices,
                opts.devices + 512
            );
        }
    }
    let tls = opts.tls.then(BenchTls::new).transpose()?;
    let mut scenarios = vec![Security { name: "plain", tls: None, login: false }];
    if let Some(tls) = &tls {
        scenarios.push(Security { name: "tls", tls: Some(tls), login: false });
    }
    if opts.auth {
        scenarios.push(Security { name: "auth", tls: None, login: true });
    }
    let mut results = Vec::new();
    for (n, security) in scenarios.into_iter().enumerate() {
        let row = scenario(&opts, security, n).await.with_context(|| format!("scenario {}", security.name))?;
        println!("{row}");
        results.push(row);
    }
    let mut summary = json!({
        "bench": "connect",
        "devices": opts.devices,
        "rounds": opts.rounds,
        "spread_ms": opts.spread.as_millis(),
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "results": results,
    });
    // Each other scenario against plain, measured in the same run.
    let plain = results[0].clone();
    for other in &results[1..] {
        let ratio = |key: &str| {
            let (a, b) = (other[key].as_f64().unwrap_or(0.0), plain[key].as_f64().unwrap_or(0.0));
            json!(if b > 0.0 { (a / b * 1000.0).round() / 1000.0 } else { 0.0 })
        };
        let extra = |key: &str| {
            let (a, b) = (other[key].as_f64(), plain[key].as_f64());
            json!(a.zip(b).map(|(a, b)| ((a - b) * 10.0).round() / 10.0))
        };
        let name = other["scenario"].as_str().unwrap_or("other");
        summary[format!("{name}_over_plain")] = json!({
            "connects_per_s": ratio("connects_per_s"),
            "connect_p99_ms": ratio("connect_p99_ms"),
            "idle_rss_mib_per_1000_extra": extra("idle_rss_mib_per_1000"),
        });
    }
    Ok(summary)
}

async fn scenario(opts: &ConnectOptions, security: Security<'_>, n: usize) -> anyhow::Result<Value> {
    let ids: Vec<String> = (0..opts.devices).map(|i| format!("conn{n}-{i:05}")).collect();
    let registry = match security.login {
        true => {
            let dir = temp_dir()?;
            logins_registry(&dir.path.join("devices.toml"), &ids)?;
            Some(dir)
        }
        false => None,
    };
    let registry_path = registry.as_ref().map(|dir| dir.path.join("devices.toml"));
    let server = Server::start_with(&opts.mekong, false, security.tls, registry_path.as_deref()).await?;
    let addr = server.mqtt;
    let tls = security.tls.map(|t| Arc::clone(&t.client));
    let login = security.login;

    // Connected once and idle: what they hold in the server.
    let rss_before = server.rss_mib();
    let at_once = Arc::new(Semaphore::new(INITIAL_AT_ONCE));
    let mut connects = tokio::task::JoinSet::new();
    for id in &ids {
        let (id, tls, at_once) = (id.clone(), tls.clone(), Arc::clone(&at_once));
        connects.spawn(async move {
            let _permit = at_once.acquire_owned().await?;
            connect_device_timed(addr, tls.as_ref(), &id, false, login).await.map(|(conn, _)| conn)
        });
    }
    let mut conns: Vec<Conn> = Vec::with_capacity(opts.devices);
    while let Some(done) = connects.join_next().await {
        conns.push(done.context("connect task failed")??);
    }
    // Let the server settle (its tasks finish what the connects started) before reading.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = server.rss_mib();
    let per_1000 = rss_before
        .zip(rss_idle)
        .map(|(before, idle)| (((idle - before) / opts.devices.max(1) as f64 * 1000.0) * 10.0).round() / 10.0);

    // The fleet reconnects at once, `rounds` times.
    let mut times_us: Vec<u32> = Vec::new();
    // Per step: TCP connect, TLS handshake, CONNECT to CONNACK.
    let mut steps_us: [Vec<u32>; 3] = Default::default();
    let mut rates = Vec::new();
    // Why connects failed, and how often: the error's chain as its key.
    let mut failures: std::collections::BTreeMap<String, usize> = Default::default();
    let mut overflows: Option<u64> = Some(0);
    // CPU seconds of the server and of this process from each release to its last CONNACK.
    let mut cpu: [Option<f64>; 2] = [Some(0.0); 2];
    let mut reconnected = 0usize;
    for _ in 0..opts.rounds {
        for conn in conns.drain(..) {
            disconnect(conn).await;
        }
        // The server forgets the old sessions before the same ids come back.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let release = Arc::new(Barrier::new(opts.devices + 1));
        let mut tasks = tokio::task::JoinSet::new();
        for id in &ids {
            let (id, tls, release) = (id.clone(), tls.clone(), Arc::clone(&release));
            let wait = spread_wait(&id, opts.spread);
            tasks.spawn(async move {
                release.wait().await;
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                let started = Instant::now();
                let conn =
                    tokio::time::timeout(CONNECT_TIMEOUT, connect_device_timed(addr, tls.as_ref(), &id, false, login))
                        .await;
                (conn, started.elapsed())
            });
        }
        let overflows_before = listen_overflows();
        let cpu_before = (server.cpu_seconds(), harness::cpu_seconds("self"));
        release.wait().await;
        let released = Instant::now();
        while let Some(done) = tasks.join_next().await {
            let (conn, took) = done.context("connect task failed")?;
            match conn {
                Ok(Ok((conn, steps))) => {
                    conns.push(conn);
                    times_us.push(micros(took));
                    for (all, step) in steps_us.iter_mut().zip(steps) {
                        all.push(micros(step));
                    }
                }
                Ok(Err(e)) => *failures.entry(format!("{e:#}")).or_default() += 1,
                Err(_) => *failures.entry(format!("no CONNACK within {CONNECT_TIMEOUT:?}")).or_default() += 1,
            }
        }
        rates.push(conns.len() as f64 / released.elapsed().as_secs_f64());
        reconnected += conns.len();
        for (sum, (before, after)) in
            cpu.iter_mut().zip([(cpu_before.0, server.cpu_seconds()), (cpu_before.1, harness::cpu_seconds("self"))])
        {
            *sum = sum.zip(before).zip(after).map(|((sum, before), after)| sum + (after - before));
        }
        overflows = match (overflows, overflows_before, listen_overflows()) {
            (Some(sum), Some(before), Some(after)) => Some(sum + after.saturating_sub(before)),
            _ => None,
        };
    }
    for conn in conns.drain(..) {
        disconnect(conn).await;
    }
    drop(server);
    times_us.sort_unstable();
    rates.sort_by(f64::total_cmp);
    let mut step_p99 = Vec::new();
    for step in &mut steps_us {
        step.sort_unstable();
        step_p99.push(percentile_ms(step, 0.99));
    }
    Ok(json!({
        "scenario": security.name,
        "devices": opts.devices,
        "rounds": opts.rounds,
        "connects_per_s": rates.get(rates.len() / 2).map(|r| r.round()),
        "connect_p50_ms": percentile_ms(&times_us, 0.50),
        "connect_p99_ms": percentile_ms(&times_us, 0.99),
        "connect_max_ms": percentile_ms(&times_us, 1.0),
        "p99_ms_tcp_tls_connack": step_p99,
        "failed": failures.values().sum::<usize>(),
        "failures": failures,
        "listen_overflows": overflows,
        "server_cpu_us_per_connect": cpu[0].map(|s| per_connect_us(s, reconnected)),
        "load_cpu_us_per_connect": cpu[1].map(|s| per_connect_us(s, reconnected)),
        "server_rss_before_mib": rss_before,
        "server_rss_idle_mib": rss_idle,
        "idle_rss_mib_per_1000": per_1000,
    }))
}

/// How long a device waits after the release before it reconnects: its firmware jitter
/// (the first reconnection after a lost session) modulo the window, so that the fleet spreads
/// over it as a fleet of nodes does.
fn spread_wait(id: &str, spread: Duration) -> Duration {
    let window = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX);
    match window {
        0 => Duration::ZERO,
        _ => {
            let jitter = downlink::resend_jitter(downlink::resend_jitter_seed(id), 1);
            Duration::from_millis(u64::from(jitter) % window)
        }
    }
}

/// The kernel's count of connections dropped for a full listen queue, in this network
/// namespace (`TcpExt: ListenOverflows` in `/proc/net/netstat`); `None` where it cannot be read.
fn listen_overflows() -> Option<u64> {
    overflows_in(&std::fs::read_to_string("/proc/net/netstat").ok()?)
}

/// `ListenOverflows` from the text of `/proc/net/netstat`: a line of `TcpExt:` names, then one
/// of their values.
fn overflows_in(text: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let at = names.split_whitespace().position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

fn per_connect_us(seconds: f64, connects: usize) -> f64 {
    (seconds * 1e6 / connects.max(1) as f64 * 10.0).round() / 10.0
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleet_spreads_evenly_over_the_window() {
        let window = Duration::from_millis(2500);
        let mut tenths = [0usize; 10];
        for i in 0..10_000 {
            let wait = spread_wait(&format!("conn0-{i:05}"), window);
            assert!(wait < window, "{wait:?}");
            tenths[(wait.as_millis() / 250) as usize] += 1;
        }
        assert!(tenths.iter().all(|&n| (800..1200).contains(&n)), "{tenths:?}");
        assert_eq!(spread_wait("conn0-00001", Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn listen_overflows_are_read_by_name() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 3 4096 4100\n\
                    IpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(overflows_in(text), Some(4096));
        assert_eq!(overflows_in("TcpExt: ListenDrops\nTcpExt: 1\n"), None);
        assert_eq!(overflows_in("TcpExt: ListenOverflows\nTcpExt: x\n"), None);
    }
}
