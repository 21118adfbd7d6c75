//! `mekong simulate` against the real platform: it reports what the platform stored (its
//! downlink acknowledgements, not the broker's PUBACKs) after waiting for the last answer,
//! names the cause of a connection failure, and a demo run on data of an earlier one goes on
//! from where that one ended.

use std::time::Duration;

use mekong::simulate::{self, SimOptions};
use tokio::sync::watch;

use crate::platform::{config, start};

fn fleet(port: u16) -> SimOptions {
    SimOptions {
        host: "127.0.0.1".into(),
        port,
        devices: 3,
        interval: Duration::from_millis(50),
        duration: Some(Duration::from_millis(500)),
        history: Duration::from_secs(600),
        batch: 20,
        ..SimOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_counts_what_the_platform_stored_and_a_rerun_continues_the_time_line() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(&config(dir.path())).await;
    let opts = fleet(running.mqtt().port());
    let report = simulate::run(opts.clone(), watch::channel(false).1).await.unwrap();
    assert!(report.packs > 3, "{report:?}");
    assert_eq!((report.stored, report.refused, report.unanswered()), (report.packs, 0, 0), "{report:?}");
    // Every stored reading is in the store, and the store counted them as the report did.
    let stats = running.json("/v1/stats").await;
    assert_eq!(stats["durable_packs"].as_u64(), Some(report.stored), "{stats}");
    assert_eq!(stats["readings"].as_u64(), Some(report.readings), "{stats}");

    // A second run on the same data sends only what comes after the first one's newest
    // reading: nothing is stored twice.
    let again = SimOptions { history: simulate::backlog_after(running.platform.store(), &opts), ..opts };
    assert!(again.history < Duration::from_secs(5), "{:?}", again.history);
    let second = simulate::run(again, watch::channel(false).1).await.unwrap();
    assert_eq!(second.stored, second.packs);
    let stats = running.json("/v1/stats").await;
    assert_eq!(stats["duplicates"].as_u64(), Some(0), "{stats}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_failure_names_its_cause() {
    let port = mekong_tests::free_ports::<1>()[0];
    let error = simulate::run(fleet(port), watch::channel(false).1).await.unwrap_err().to_string();
    assert!(error.contains("connection refused") && error.contains(&port.to_string()), "{error}");
    let unknown = SimOptions { host: "no-such-host.invalid".into(), ..fleet(port) };
    let error = simulate::run(unknown, watch::channel(false).1).await.unwrap_err().to_string();
    assert!(error.contains("no-such-host.invalid") && !error.contains("eventloop"), "{error}");
}
