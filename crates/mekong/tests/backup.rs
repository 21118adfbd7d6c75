//! Online backup end to end: `mekong serve` as its own process under steady MQTT load, a
//! backup asked for through `mekong backup --url` (admin token), the server killed with
//! SIGKILL, its data directory deleted, the backup checked and restored with the CLI, and a
//! new server started on it. Every reading acknowledged before the backup was asked for must
//! be served once, and what else is there must be whole packs that were sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::{connect, load_marked, spawn_server, stored, wait_healthy, Device};
use mekong_api::auth::Scope;

fn mekong(args: &[&str], token: Option<&str>) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mekong"));
    command.args(args).env("RUST_BACKTRACE", "0");
    match token {
        Some(token) => command.env("MEKONG_TOKEN", token),
        None => command.env_remove("MEKONG_TOKEN"),
    };
    command.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_acknowledged_reading_once_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let repo = dir.path().join("backups");
    let registry = dir.path().join("devices.toml");
    let read = mekong::token::create(&registry, "city-app", Scope::Read).unwrap();
    let admin = mekong::token::create(&registry, "operations", Scope::Admin).unwrap();
    let env = [
        ("MEKONG__REGISTRY__PATH", registry.to_str().unwrap()),
        ("MEKONG__BACKUP__DIR", repo.to_str().unwrap()),
        ("MEKONG__BACKUP__EVERY_SECS", "0"),
        // Folds every second, into day files, while the backup runs (the readings start an
        // hour ago, so their hour windows close as the test goes).
        ("MEKONG__STORAGE__MAINTENANCE_EVERY_SECS", "1"),
        ("MEKONG__STORAGE__FOLD_AFTER_SECS", "0"),
    ];
    let mut server = spawn_server(&data, &env);
    let http = reqwest::Client::new();
    wait_healthy(&http, server.http).await;
    let url = format!("http://127.0.0.1:{}", server.http);

    let (mark, marks) = tokio::sync::watch::channel(0u32);
    let (snapshots, mut snapshot) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let device = Device::new("backup-", i, 5);
        let sensor = connect(&device, server.mqtt).await;
        tasks.push(tokio::spawn(load_marked(
            device,
            sensor,
            Duration::from_millis(3),
            marks.clone(),
            snapshots.clone(),
        )));
    }
    // Load until a fold has written a day file (there is no event for it: polled).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let has_day_file = || {
        std::fs::read_dir(data.join("blocks"))
            .is_ok_and(|d| d.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".mkb")))
    };
    while !has_day_file() {
        assert!(std::time::Instant::now() < deadline, "no fold wrote a day file");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A read token and no token are refused, and write nothing.
    for (token, hint) in [(Some(read.as_str()), "admin scope"), (None, "MEKONG_TOKEN")] {
        let refused = tokio::task::block_in_place(|| mekong(&["backup", "--url", &url], token));
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success() && said.contains(hint), "{said}");
    }
    assert!(!repo.join("backups").exists());

    // What each device has had acknowledged at this moment, then the backup, under load.
    mark.send(1).unwrap();
    let mut before: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    while before.len() < 4 {
        let (id, acked) = snapshot.recv().await.unwrap();
        before.insert(id, acked);
    }
    let taken = tokio::task::block_in_place(|| mekong(&["backup", "--url", &url], Some(&admin)));
    let said = String::from_utf8_lossy(&taken.stdout);
    assert!(taken.status.success(), "{}", String::from_utf8_lossy(&taken.stderr));
    assert!(said.contains("ingest paused") && !said.contains(&admin), "{said}");
    let listed: serde_json::Value =
        http.get(format!("{url}/v1/backups")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["backups"].as_array().unwrap().len(), 1, "{listed}");
    let files = listed["backups"][0]["files"].as_u64().unwrap();

    // More load after the backup, then the kill.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    let mut devices = Vec::new();
    for task in tasks {
        devices.push(task.await.unwrap());
    }
    let acked_before: usize = before.values().map(BTreeMap::len).sum();
    let acked_after: usize = devices.iter().map(|d| d.acked.len()).sum();
    assert!(acked_before > 100 && acked_after > acked_before, "{acked_before} then {acked_after}");

    // The data directory is gone; the backup is checked, then restored with the CLI.
    std::fs::remove_dir_all(&data).unwrap();
    let repo_arg = repo.to_str().unwrap();
    let checked = mekong(&["backup", "verify", repo_arg], None);
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    let data_arg = data.to_str().unwrap();
    let restored = mekong(&["restore", "--from", repo_arg, "--data-dir", data_arg, "--config", "/dev/null"], None);
    assert!(restored.status.success(), "{}", String::from_utf8_lossy(&restored.stderr));
    // A second restore into the now full directory is refused.
    let again = mekong(&["restore", "--from", repo_arg, "--data-dir", data_arg, "--config", "/dev/null"], None);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("not empty"));

    let server = spawn_server(&data, &[]);
    wait_healthy(&http, server.http).await;
    let mut in_backup = 0;
    for device in &devices {
        let points = stored(&http, server.http, &device.id).await;
        let mut by_time: BTreeMap<i64, f64> = BTreeMap::new();
        for (t, v) in &points {
            assert!(by_time.insert(*t, *v).is_none(), "{}: reading at {t} served twice", device.id);
        }
        for (t, v) in &before[&device.id] {
            assert_eq!(by_time.get(t), Some(v), "{}: reading at {t} acknowledged before the backup", device.id);
        }
        // Anything else is a reading the device sent, with its value, in whole packs.
        for (t, v) in &by_time {
            let sent = device.acked.get(t).or_else(|| {
                device.pending.values().find_map(|(_, readings)| readings.iter().find(|r| r.0 == *t).map(|r| &r.1))
            });
            assert_eq!(sent, Some(v), "{}: reading at {t} was never sent", device.id);
        }
        for (_, readings) in device.pending.values() {
            let there = readings.iter().filter(|r| by_time.contains_key(&r.0)).count();
            assert!(there == 0 || there == readings.len(), "{}: half a pack", device.id);
        }
        assert_eq!(points.len() % 5, 0, "{}: whole packs only", device.id);
        in_backup += points.len();
    }
    println!(
        "{{\"acknowledged_before_backup\":{acked_before},\"in_backup\":{in_backup},\"acknowledged_by_kill\":{acked_after},\"day_files\":{files}}}"
    );
    assert!(files >= 1, "the backup holds the day file the folds wrote");
}

/// The server takes a backup whenever the newest in `[backup] dir` is `every_secs` old, and
/// keeps `keep` of them: the repository holds two whole backups, the newest keeps changing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_run_in_the_server_and_keep_the_newest() {
    use mekong_store::backup::Repository;
    use mekong_tests::{free_ports, now_secs, pack, Downlink, Sensor};

    let dir = tempfile::tempdir().unwrap();
    let mut config = mekong::Config::default();
    let [mqtt] = free_ports();
    config.broker.listen = std::net::SocketAddr::from(([127, 0, 0, 1], mqtt));
    config.broker.listen_v5 = None;
    config.api.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.storage.data_dir = dir.path().join("data");
    config.backup.dir = dir.path().join("backups");
    config.backup.every_secs = 1;
    config.backup.keep = 2;
    config.validate().unwrap();
    let platform = mekong::Platform::start(&config).await.unwrap();
    let mut device = Sensor::device(platform.mqtt_addr, "hau-01").await;
    device.publish("mekong/v1/hau-01/up", pack(now_secs(), &[("level", "m", 1.25, 0.0)])).await;
    assert!(matches!(device.downlink().await, Downlink::Ack { readings: 1, .. }));

    let repository = Repository::new(&config.backup.dir);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = std::collections::BTreeSet::new();
    // Polled: the schedule gives no event. Four backups seen, never more than two kept, but
    // for the moment between a new backup's rename into place and the retention after it
    // (which must not delete an old backup before the new one is whole).
    while seen.len() < 4 {
        assert!(std::time::Instant::now() < deadline, "backups seen: {seen:?}");
        let list = tokio::task::block_in_place(|| repository.list()).unwrap();
        assert!(list.len() <= 3, "{list:?}");
        seen.extend(list.into_iter().map(|b| b.id));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    platform.shutdown().await.unwrap();
    let list = repository.list().unwrap();
    assert_eq!(list.len(), 2);
    for b in &list {
        let report = repository.verify(Some(&b.id)).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(b.readings, 1);
    }
}

/// The command line on a stopped mekong's data directory: a full then an incremental backup,
/// a refusal while the directory is in use, and `verify` naming a damaged file with a
/// failing status, after which `restore` restores nothing.
#[test]
fn the_command_line_backs_up_a_stopped_store_and_verify_names_a_damaged_file() {
    use mekong_store::{NewPoint, Store, StoreOptions};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let repo = dir.path().join("repo");
    let day = 1_789_948_800_000_i64;
    {
        let store = Store::open(&data, &StoreOptions::default()).unwrap();
        for d in 0..3 {
            let points: Vec<NewPoint<'_>> = (0..144)
                .map(|i| NewPoint {
                    metric: "water_level",
                    unit: Some("cm"),
                    time_ms: day + d * 86_400_000 + i * 600_000,
                    value: i as f64,
                    value_kind: Default::default(),
                })
                .collect();
            store.write("hau-01", "water", day, &points).unwrap();
        }
        store.fold(day + 3 * 86_400_000, || true).unwrap();
        store.flush().unwrap();
        // While a process holds the store, the command says to go through the server.
        let refused = mekong(&["backup", "--to", repo.to_str().unwrap(), "--data-dir", data.to_str().unwrap()], None);
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success() && said.contains("in use") && said.contains("--url"), "{said}");
    }
    let args =
        ["backup", "--to", repo.to_str().unwrap(), "--data-dir", data.to_str().unwrap(), "--config", "/dev/null"];
    let first = mekong(&args, None);
    let said = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(said.contains("432 readings") && said.contains("copied 3 files"), "{said}");
    let second = mekong(&args, None);
    let said = String::from_utf8_lossy(&second.stdout);
    assert!(said.contains("copied 0 files") && said.contains("3 already in the repository"), "{said}");

    let verified = mekong(&["backup", "verify", repo.to_str().unwrap()], None);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    let damaged = std::fs::read_dir(repo.join("files")).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&damaged).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&damaged, bytes).unwrap();
    let verified = mekong(&["backup", "verify", repo.to_str().unwrap()], None);
    let said = String::from_utf8_lossy(&verified.stderr);
    assert_eq!(verified.status.code(), Some(1), "{said}");
    let name = damaged.file_name().unwrap().to_str().unwrap();
    assert!(said.contains(name) && said.contains("damaged"), "{said}");
    let target = dir.path().join("restored");
    let restored = mekong(
        &["restore", "--from", repo.to_str().unwrap(), "--data-dir", target.to_str().unwrap(), "--config", "/dev/null"],
        None,
    );
    assert!(!restored.status.success());
    assert!(!target.exists() || std::fs::read_dir(&target).unwrap().next().is_none());
}
