//! The crash test: the platform runs as its own process under steady load, is killed with
//! SIGKILL at a random moment, and restarts on the same data directory. Every reading
//! acknowledged before the kill must be there exactly once, and the devices' resends after
//! the restart must create no duplicates.
//!
//! `MEKONG_CRASH_RUNS` sets the number of kill-and-restart runs (default 3; CI uses the
//! default, a longer soak sets more).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{connect, drain, load, spawn_server, verify, wait_healthy, Device};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_readings_survive_sigkill_exactly_once() {
    let runs: usize = std::env::var("MEKONG_CRASH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let data = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut devices: Vec<Device> = (0..4).map(|i| Device::new("crash-", i, 5)).collect();
    let mut seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64 | 1;
    let mut server = spawn_server(data.path(), &[]);
    wait_healthy(&http, server.http).await;

    let mut acked_so_far = 0;
    for run in 0..runs {
        // Steady load, then SIGKILL at a random moment between 0.3 s and 1.5 s.
        let period = Duration::from_millis(3);
        let mut tasks = Vec::new();
        for device in devices.drain(..) {
            let sensor = connect(&device, server.mqtt).await;
            tasks.push(tokio::spawn(load(device, sensor, period, None)));
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(300 + seed % 1200)).await;
        server.kill();
        for task in tasks {
            let mut device = task.await.unwrap();
            device.acked_before_kill = device.acked.len();
            devices.push(device);
        }
        let acked_before = devices.iter().map(|d| d.acked_before_kill).sum::<usize>() - acked_so_far;
        assert!(acked_before > 0, "run {run}: nothing was acknowledged before the kill");

        server = spawn_server(data.path(), &[]);
        wait_healthy(&http, server.http).await;
        let tasks: Vec<_> = devices.drain(..).map(|d| tokio::spawn(drain(d, server.mqtt, 32))).collect();
        for task in tasks {
            devices.push(task.await.unwrap());
        }

        let (total, lost, duplicates, wrong) = verify(&http, server.http, &devices).await;
        acked_so_far = total;
        println!(
            "{{\"crash_run\":{},\"acknowledged_before_kill\":{acked_before},\"acknowledged_total\":{total},\"lost\":{lost},\"duplicates\":{duplicates},\"wrong_values\":{wrong}}}",
            run + 1
        );
        assert_eq!((lost, duplicates, wrong), (0, 0, 0), "run {run}");
    }
    server.kill();
}
