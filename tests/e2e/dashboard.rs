//! The dashboard in a real headless Chromium (Debian's `chromium`, driven by playwright-core
//! through `tests/browser/dashboard.mjs`) against the real platform with the demo fleet: the
//! page loads with no console error, lists the fleet, places it on the map, draws charts
//! whose points are what the API answers to the same queries, asks for a token when the API
//! needs one, and shows an alert once this mekong serves them.
//!
//! Skipped, and said, when `node`, `/usr/bin/chromium` or `tests/browser/node_modules` are
//! missing, unless `MEKONG_REQUIRE_CHROMIUM=1` (CI sets it, and `.ci/run` installs them).
//! `MEKONG_DASHBOARD_SCREENSHOT=path` keeps the screenshot (README's `docs/dashboard.png`).

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use mekong::simulate::{self, SimOptions};
use mekong_tests::{now_secs, pack, Sensor};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::platform::{config, start, Running};

const CHROMIUM: &str = "/usr/bin/chromium";

/// The directory of the browser script, if node, Chromium and playwright-core are there.
fn browser() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    let node = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    let missing = [
        (!node).then_some("node"),
        (!Path::new(CHROMIUM).exists()).then_some(CHROMIUM),
        (!dir.join("node_modules/playwright-core").exists()).then_some("tests/browser/node_modules (npm ci)"),
    ];
    let missing: Vec<&str> = missing.into_iter().flatten().collect();
    if missing.is_empty() {
        return Some(dir);
    }
    assert!(std::env::var_os("MEKONG_REQUIRE_CHROMIUM").is_none(), "missing for the browser test: {missing:?}");
    eprintln!(
        "skipped: the browser test needs {missing:?} (apt-get install chromium nodejs npm; npm ci in tests/browser)"
    );
    None
}

/// A demo fleet of `devices` stations with `hours` of backlog, one reading a minute, placed
/// on the map as `serve --demo` places it.
async fn demo_fleet(running: &Running, devices: usize, hours: u64) -> Vec<String> {
    let opts = SimOptions {
        host: "127.0.0.1".into(),
        port: running.mqtt().port(),
        devices,
        interval: Duration::from_secs(60),
        duration: Some(Duration::ZERO),
        history: Duration::from_secs(hours * 3600),
        batch: 60,
        ..SimOptions::default()
    };
    simulate::place_fleet(running.platform.directory(), &opts);
    let report = simulate::run(opts.clone(), watch::channel(false).1).await.unwrap();
    assert_eq!((report.stored, report.unanswered()), (report.packs, 0), "{report:?}");
    (0..devices).map(|i| simulate::Station::new(&opts.prefix, i, opts.seed).id).collect()
}

/// Runs the browser script against `running` with `env`; `on_ready` runs once the page
/// says it is ready (when the script was told to wait for an alert). The script's last line.
async fn run_browser(dir: &Path, running: &Running, env: &[(&str, String)], on_ready: Option<&Sensor>) -> Value {
    let mut command = Command::new("node");
    command
        .arg(dir.join("dashboard.mjs"))
        .current_dir(dir)
        .env("MEKONG_URL", format!("http://127.0.0.1:{}", running.platform.http_addr.port()))
        .env("CHROMIUM", CHROMIUM)
        .stdout(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, mut rx) = mpsc::unbounded_channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut last = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        let value: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if value["ready"] == true {
            if let Some(sensor) = on_ready {
                raise_flood(sensor).await;
            }
            continue;
        }
        last = Some(value);
    }
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    reader.join().unwrap();
    assert!(status.success(), "the browser script failed: {status}");
    last.expect("the browser script printed no result")
}

/// The flood scenario's reading: a river level far above any station's alarm.
async fn raise_flood(sensor: &Sensor) {
    let payload = pack(now_secs(), &[("water_level", "cm", 480.0, 0.0)]);
    assert!(sensor.try_publish(&format!("mekong/v1/{FLOOD_DEVICE}/up"), payload), "the flood reading was not sent");
}

const FLOOD_DEVICE: &str = "sim-water-000";

/// What the page did wrong, if anything: console errors, failed requests.
fn check_clean(out: &Value) {
    assert_eq!(out["console_errors"], serde_json::json!([]), "{out}");
    assert_eq!(out["failed_requests"], serde_json::json!([]), "{out}");
}

fn ids(v: &Value) -> BTreeSet<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_fleet_and_charts_what_the_api_answers() {
    let Some(dir) = browser() else { return };
    let data = tempfile::tempdir().unwrap();
    let mut config = config(data.path());
    // The flood scenario's alarm: a river level far above any station's, at once.
    config.alerts.rule = vec![serde_json::from_value(serde_json::json!({
        "id": "river-alarm", "type": "threshold", "kind": "water", "metric": "water_level",
        "above": 400.0, "for_s": 0, "severity": "critical", "message": "river at {value} cm at {device}"
    }))
    .unwrap()];
    let running = start(&config).await;
    let fleet = demo_fleet(&running, 6, 8).await;

    // The page asks for alerts and the stream only where /openapi.json lists them; this
    // mekong does.
    let openapi = running.json("/openapi.json").await;
    let alerts = openapi["paths"].get("/v1/alerts").is_some();
    assert!(alerts && openapi["paths"].get("/v1/stream").is_some());
    let shot = data.path().join("dashboard.png");
    let shot = std::env::var("MEKONG_DASHBOARD_SCREENSHOT").map(PathBuf::from).unwrap_or(shot);
    let mut env = vec![("MEKONG_SCREENSHOT", shot.display().to_string())];
    let sensor = match alerts {
        true => {
            env.push(("MEKONG_EXPECT_ALERT", FLOOD_DEVICE.to_owned()));
            Some(Sensor::device(running.mqtt(), "dashboard-flood").await)
        }
        false => None,
    };
    let out = run_browser(&dir, &running, &env, sensor.as_ref()).await;
    check_clean(&out);

    // The stations listed are the API's devices, which are the fleet, each on the map.
    let listed = ids(&out["stations_listed"]);
    assert_eq!(listed, ids(&out["api_devices"]), "{out}");
    assert_eq!(listed, fleet.iter().cloned().collect(), "{out}");
    assert_eq!(out["markers"].as_u64(), Some(fleet.len() as u64), "{out}");

    // Every chart drew what the API answered to its query: raw points over 6 hours (360 of
    // them fit the chart's width), buckets over 24 hours (480 do not).
    let checks = out["checks"].as_array().unwrap();
    let modes: BTreeSet<&str> = checks.iter().map(|c| c["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["aggregate", "raw"].into(), "{out}");
    for c in checks {
        assert!(c["answered"].as_u64().unwrap() > 0, "{c}");
        assert_eq!(c["drawn"], c["answered"], "{c}");
    }
    // Live from the event stream once this mekong serves one, else by polling.
    let live = if openapi["paths"].get("/v1/stream").is_some() { "stream" } else { "polling" };
    assert_eq!(out["live"], live, "{out}");
    if alerts {
        assert!(out["alert_shown_after_ms"].as_u64().is_some_and(|ms| ms < 10_000), "{out}");
    }
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{}", shot.display());

    // The figures of README's "Dashboard" section.
    let figures = serde_json::json!({
        "first_render_ms": out["first_render_ms"],
        "first_contentful_paint_ms": out["first_contentful_paint_ms"],
        "requests": out["requests"],
        "transfer_bytes": out["transfer_bytes"],
        "decoded_body_bytes": out["decoded_body_bytes"],
        "asset_encoded_bytes": out["asset_encoded_bytes"],
        "asset_decoded_bytes": out["asset_decoded_bytes"],
        "encoding": out["encodings"]["/dashboard/vendor/leaflet-1.9.4/leaflet.js"],
        "alerts_checked": alerts,
        "alert_shown_after_ms": out["alert_shown_after_ms"],
    });
    println!("{figures}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_asks_for_a_token_when_the_api_needs_one() {
    let Some(dir) = browser() else { return };
    let data = tempfile::tempdir().unwrap();
    let registry = data.path().join("devices.toml");
    let token = mekong::token::create(&registry, "wall-screen", mekong_api::auth::Scope::Read).unwrap();
    let mut config = config(data.path());
    config.registry.path = registry;
    let running = start(&config).await;
    let fleet = demo_fleet(&running, 3, 1).await;

    let out = run_browser(&dir, &running, &[("MEKONG_TOKEN", token)], None).await;
    assert_eq!(out["asked_for_token"], true, "{out}");
    // The 401s that told the page to ask are the only console errors let through.
    assert!(out["refused_without_token"].as_u64().is_some_and(|n| n >= 1), "{out}");
    check_clean(&out);
    assert_eq!(ids(&out["stations_listed"]), fleet.into_iter().collect(), "{out}");
    running.stop().await;
}
