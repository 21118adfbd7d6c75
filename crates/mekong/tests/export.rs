//! `mekong export` from a data directory: a store written in a temp dir, exported by the
//! binary to CSV and Parquet, read back by Python's csv module and pyarrow, every time and
//! value checked; filters, an empty range, a locked directory and bad arguments.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use mekong_store::{NewPoint, Store, StoreOptions, ValueKind};
use mekong_tests::export::{check_parquet_schema, pyarrow_or_skip, read, row, Row};

const T0: i64 = 1_790_000_000_000;

/// Writes a store: a decimal series, a non-decimal one, a boolean one, on two devices of two
/// kinds (the unit with a comma and a quote, which CSV must quote); the rows in export order.
fn write_store(dir: &Path) -> Vec<Row> {
    let store = Store::open(dir, &StoreOptions { flush_every_ms: None, ..Default::default() }).unwrap();
    let mut rows = Vec::new();
    let mut write = |device: &str, kind: &str, metric: &str, unit: Option<&str>, vk: ValueKind, values: Vec<f64>| {
        let points: Vec<NewPoint> = values
            .iter()
            .enumerate()
            .map(|(i, &value)| NewPoint { metric, unit, time_ms: T0 + i as i64 * 10_001, value, value_kind: vk })
            .collect();
        store.write(device, kind, T0, &points).unwrap();
        for p in &points {
            let b = (vk == ValueKind::Boolean).then_some(p.value != 0.0);
            rows.push(row(device, kind, metric, unit, p.time_ms, p.value, b));
        }
    };
    write(
        "air-2",
        "air",
        "pm25",
        Some("ug/m3,\"std\""),
        ValueKind::Number,
        (0..900).map(|i| (i as f64).sqrt() / 7.0).collect(),
    );
    write("river-1", "water", "gate_open", None, ValueKind::Boolean, (0..300).map(|i| f64::from(i % 5 == 0)).collect());
    write(
        "river-1",
        "water",
        "level",
        Some("m"),
        ValueKind::Number,
        (0..1200).map(|i| f64::from(i) * 0.01 - 3.0).collect(),
    );
    store.flush().unwrap();
    rows
}

fn export(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mekong")).arg("export").args(args).output().unwrap()
}

fn exported(data: &Path, out: &Path, format: &str, extra: &[&str]) {
    let mut args = vec!["--data-dir", data.to_str().unwrap(), "--format", format, "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let run = export(&args);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(said.starts_with("exported "), "{said}");
    // Not a terminal: no progress bar.
    assert!(!said.contains('\r') && !said.contains('\x1b'), "{said:?}");
    assert!(!Path::new(&format!("{}.partial", out.display())).exists());
}

#[test]
fn exports_of_a_data_directory_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rows = write_store(&data);
    let parquet = pyarrow_or_skip("exports_of_a_data_directory_read_back_exactly");
    let whole = ["--from", "2026-09-21T00:00:00Z", "--to", "2026-09-23T00:00:00Z"];
    let from = (T0 + 2_000_000).to_string();
    let to = (T0 + 6_000_000).to_string();
    let cases: Vec<(Vec<&str>, Vec<Row>)> = vec![
        (whole.to_vec(), rows.clone()),
        (
            vec!["--from", &from, "--to", &to, "--kind", "water"],
            rows.iter()
                .filter(|r| r.1 == "water" && (T0 + 2_000_000..T0 + 6_000_000).contains(&r.4))
                .cloned()
                .collect(),
        ),
        (
            vec!["--from", "0", "--to", &to, "--device", "river-1,air-2", "--metric", "gate_open"],
            rows.iter().filter(|r| r.2 == "gate_open" && r.4 < T0 + 6_000_000).cloned().collect(),
        ),
        (vec!["--from", "0", "--to", "1000"], vec![]),
    ];
    for (i, (args, want)) in cases.iter().enumerate() {
        let csv = dir.path().join(format!("{i}.csv"));
        exported(&data, &csv, "csv", args);
        let got = read("csv", &csv);
        assert_eq!(got.header, mekong_tests::export::COLUMNS);
        assert_eq!(got.rows, *want, "csv {args:?}");
        if parquet {
            let file = dir.path().join(format!("{i}.parquet"));
            exported(&data, &file, "parquet", args);
            let got = read("parquet", &file);
            check_parquet_schema(&got);
            assert_eq!(got.rows, *want, "parquet {args:?}");
        }
    }
    // The unit with a comma and a quote is one quoted field.
    let text = std::fs::read_to_string(dir.path().join("0.csv")).unwrap();
    assert!(text.contains(",\"ug/m3,\"\"std\"\"\","), "{}", &text[..200]);
}

#[test]
fn a_served_data_directory_and_bad_arguments_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_store(&data);
    let out = dir.path().join("x.csv");
    let data_arg = data.to_str().unwrap();
    let out_arg = out.to_str().unwrap();
    let store = Store::open(&data, &StoreOptions::default()).unwrap();
    let run = export(&["--data-dir", data_arg, "--from", "0", "--to", "1", "-o", out_arg]);
    assert!(!run.status.success());
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(said.contains("in use") && said.contains("--url") && said.contains("MEKONG_TOKEN"), "{said}");
    drop(store);
    for (args, want) in [
        (vec!["--from", "10", "--to", "10"], "must be before"),
        (vec!["--from", "yesterday", "--to", "10"], "from: expected an RFC 3339 time"),
        (vec!["--from", "0", "--to", "10", "--format", "xml"], "invalid value 'xml'"),
    ] {
        let mut all = vec!["--data-dir", data_arg, "-o", out_arg];
        all.extend(args);
        let run = export(&all);
        assert!(!run.status.success());
        let said = String::from_utf8_lossy(&run.stderr);
        assert!(said.contains(want), "{all:?}: {said}");
    }
    assert!(!out.exists());
    let run = export(&[
        "--data-dir",
        dir.path().join("nowhere").to_str().unwrap(),
        "--from",
        "0",
        "--to",
        "1",
        "-o",
        out_arg,
    ]);
    assert!(String::from_utf8_lossy(&run.stderr).contains("no data directory at"));
    assert!(!dir.path().join("nowhere").exists());
}

/// `mekong export --url` against a running server (in this process): the same files as the
/// API gives, read back exactly; the token comes from the environment and is never printed;
/// a read token and no token are refused with a hint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_through_a_running_server_read_back_exactly() {
    use mekong_api::auth::Scope;
    use mekong_tests::{free_ports, now_secs, pack, Downlink, Sensor};

    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("devices.toml");
    let read_token = mekong::token::create(&registry, "city-app", Scope::Read).unwrap();
    let admin = mekong::token::create(&registry, "operations", Scope::Admin).unwrap();
    let mut config = mekong::Config::default();
    let [mqtt] = free_ports();
    config.broker.listen = std::net::SocketAddr::from(([127, 0, 0, 1], mqtt));
    config.broker.listen_v5 = None;
    config.api.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.storage.data_dir = dir.path().join("data");
    config.registry.path = registry;
    let platform = mekong::Platform::start(&config).await.unwrap();
    let url = format!("http://127.0.0.1:{}", platform.http_addr.port());

    let bt = (now_secs() / 60.0).floor() * 60.0 - 600.0;
    let mut device = Sensor::device(platform.mqtt_addr, "hau-01").await;
    let readings = [("level", "m", 1.25, 0.0), ("level", "m", 1.375, 10.0), ("pm25", "ug/m3", 0.1 + 0.2, 0.0)];
    device.publish("mekong/v1/hau-01/up", pack(bt, &readings)).await;
    let answer = device.downlink().await;
    assert!(matches!(answer, Downlink::Ack { readings: 3, .. }), "{answer:?}");
    let t = bt as i64 * 1000;
    let (from, to) = (t.to_string(), (t + 60_000).to_string());

    let run = |token: Option<&str>, format: &str, out: &Path| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mekong"));
        command.args(["export", "--url", &url, "--from", &from, "--to", &to, "--format", format, "-o"]).arg(out);
        match token {
            Some(token) => command.env("MEKONG_TOKEN", token),
            None => command.env_remove("MEKONG_TOKEN"),
        };
        command.output().unwrap()
    };
    let parquet = pyarrow_or_skip("exports_through_a_running_server_read_back_exactly");
    for format in ["csv", "parquet"] {
        if format == "parquet" && !parquet {
            continue;
        }
        let out = dir.path().join(format!("url.{format}"));
        let done = tokio::task::block_in_place(|| run(Some(&admin), format, &out));
        let said = String::from_utf8_lossy(&done.stderr);
        assert!(done.status.success(), "{said}");
        assert!(!said.contains(&admin));
        let got = read(format, &out);
        let kinds: Vec<&str> = got.rows.iter().map(|r| r.1.as_str()).collect();
        let kind = kinds.first().copied().unwrap_or("?").to_owned();
        let want = vec![
            row("hau-01", &kind, "level", Some("m"), t, 1.25, None),
            row("hau-01", &kind, "level", Some("m"), t + 10_000, 1.375, None),
            row("hau-01", &kind, "pm25", Some("ug/m3"), t, 0.1 + 0.2, None),
        ];
        assert_eq!(got.rows, want, "{format}");
    }
    for (token, want) in [(Some(read_token.as_str()), "admin scope"), (None, "MEKONG_TOKEN")] {
        let out = dir.path().join("refused.csv");
        let done = tokio::task::block_in_place(|| run(token, "csv", &out));
        let said = String::from_utf8_lossy(&done.stderr);
        assert!(!done.status.success());
        assert!(said.contains(want), "{said}");
        assert!(!said.contains(&read_token) && !said.contains(&admin));
        assert!(!out.exists());
    }
    platform.shutdown().await.unwrap();
}
