//! The engine at work on a real store: a restart in between, webhooks to a real receiver.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mekong_store::{Store, StoreOptions};

use super::*;
use crate::engine::tests::spec;
use crate::webhook::{signature, Secret};

const MIN: i64 = 60_000;

#[derive(Default)]
struct Heard(Mutex<Vec<Notice>>);

impl Live for Heard {
    fn change(&self, notice: &Notice) {
        self.0.lock().unwrap().push(notice.clone());
    }
}

impl Heard {
    fn states(&self) -> Vec<(u64, String)> {
        self.0.lock().unwrap().iter().map(|n| (n.seq, n.state.clone())).collect()
    }
}

fn flood() -> RuleSpec {
    RuleSpec { above: Some(250.0), clear: Some(240.0), for_s: 120, ..spec("flood", "threshold") }
}

fn feed(alerts: &Alerts, minutes: std::ops::Range<i64>, value: f64) {
    for m in minutes {
        let pts = [(m * MIN, value)];
        alerts.observe("hau-01", "water", [("water_level", &pts[..])]);
    }
}

fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_active_alert_and_neither_loses_nor_repeats_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let options = AlertsOptions { rules: vec![flood()], ..AlertsOptions::default() };
    let runtime = tokio::runtime::Handle::current();
    {
        let store = Store::open(&path, &StoreOptions::default()).unwrap();
        let alerts = Alerts::start(store, options.clone(), &runtime).unwrap();
        let heard = Arc::new(Heard::default());
        alerts.add_live(heard.clone(), true);
        feed(&alerts, 0..10, 260.0);
        assert_eq!(heard.states(), vec![(1, "firing".to_owned())]);
        assert_eq!(alerts.active().len(), 1);
        alerts.stop();
    }
    let store = Store::open(&path, &StoreOptions::default()).unwrap();
    let alerts = Alerts::start(store, options, &runtime).unwrap();
    let heard = Arc::new(Heard::default());
    alerts.add_live(heard.clone(), true);
    // What a new MQTT broker is told at once: the firing, with its number.
    assert_eq!(heard.states(), vec![(1, "firing".to_owned())]);
    let active = alerts.active();
    assert_eq!((active[0].rule.as_str(), active[0].at_ms, active[0].value), ("flood", 2 * MIN, Some(260.0)));
    // Late data from before the restart, then more of the same: nothing fires again.
    feed(&alerts, 3..6, 300.0);
    feed(&alerts, 10..20, 270.0);
    assert_eq!(alerts.late_readings(), 3);
    feed(&alerts, 20..30, 230.0);
    assert_eq!(heard.states(), vec![(1, "firing".to_owned()), (2, "resolved".to_owned())]);
    let history = alerts.history(&HistoryQuery { limit: 10, ..HistoryQuery::default() }).unwrap();
    assert_eq!(history.iter().map(|n| (n.seq, n.at_ms / MIN)).collect::<Vec<_>>(), vec![(1, 2), (2, 20)]);
    let filtered =
        HistoryQuery { from_ms: Some(10 * MIN), device: Some("hau-01".into()), limit: 10, ..HistoryQuery::default() };
    assert_eq!(alerts.history(&filtered).unwrap().len(), 1);
    assert!(alerts.active().is_empty());
    alerts.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_device_resolves_its_alerts_and_leaves_no_state_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let options = AlertsOptions { rules: vec![flood()], ..AlertsOptions::default() };
    let runtime = tokio::runtime::Handle::current();
    {
        let store = Store::open(&path, &StoreOptions::default()).unwrap();
        let alerts = Alerts::start(store, options.clone(), &runtime).unwrap();
        let heard = Arc::new(Heard::default());
        alerts.add_live(heard.clone(), true);
        feed(&alerts, 0..10, 260.0);
        alerts.forget_device("hau-01").unwrap();
        assert_eq!(heard.states(), vec![(1, "firing".to_owned()), (2, "resolved".to_owned())]);
        assert!(heard.0.lock().unwrap()[1].message.contains("removed"));
        assert!(alerts.active().is_empty());
        alerts.stop();
    }
    // After a restart nothing of it comes back; a device that takes the id starts afresh.
    let store = Store::open(&path, &StoreOptions::default()).unwrap();
    let alerts = Alerts::start(store, options, &runtime).unwrap();
    assert!(alerts.active().is_empty());
    feed(&alerts, 100..110, 260.0);
    assert_eq!(alerts.active().len(), 1);
    alerts.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_of_the_api_persist_and_config_rules_are_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let options = AlertsOptions { rules: vec![flood()], ..AlertsOptions::default() };
    let runtime = tokio::runtime::Handle::current();
    let salt = RuleSpec { above: Some(4.0), metric: Some("salinity".into()), ..spec("salt", "threshold") };
    {
        let alerts =
            Alerts::start(Store::open(&path, &StoreOptions::default()).unwrap(), options.clone(), &runtime).unwrap();
        assert!(matches!(alerts.put_rule(flood()), Err(AlertsError::ReadOnly(_))));
        assert!(matches!(alerts.put_rule(RuleSpec { above: None, ..salt.clone() }), Err(AlertsError::Rule { .. })));
        assert!(alerts.put_rule(salt.clone()).unwrap());
        let pts = [(MIN, 5.0)];
        alerts.observe("hau-01", "water", [("salinity", &pts[..])]);
        assert_eq!(alerts.active().len(), 1);
        alerts.stop();
    }
    let alerts = Alerts::start(Store::open(&path, &StoreOptions::default()).unwrap(), options, &runtime).unwrap();
    let rules = alerts.rules();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[1], (salt, RuleSource::Api));
    assert_eq!(alerts.active().len(), 1);
    let heard = Arc::new(Heard::default());
    alerts.add_live(heard.clone(), true);
    assert!(alerts.delete_rule("salt").unwrap());
    assert!(!alerts.delete_rule("salt").unwrap());
    // Its firing resolved on the way out.
    assert_eq!(heard.states(), vec![(1, "firing".to_owned()), (2, "resolved".to_owned())]);
    assert!(alerts.active().is_empty());
    alerts.stop();
}

/// A webhook receiver on loopback: checks each request's signature and keeps the changes.
async fn receiver(listener: tokio::net::TcpListener, got: Arc<Mutex<Vec<Notice>>>) {
    use axum::http::{HeaderMap, StatusCode};
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let got = Arc::clone(&got);
            async move {
                let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let timestamp: u64 = header("x-mekong-timestamp").parse().unwrap_or(0);
                let fresh = (crate::now_ms() / 1000 - timestamp as i64).abs() < 300;
                if !fresh || header("x-mekong-signature") != signature(b"s3cret", timestamp, &body) {
                    return StatusCode::UNAUTHORIZED;
                }
                let notice: Notice = serde_json::from_slice(&body).unwrap();
                assert_eq!(header("x-mekong-delivery"), notice.seq.to_string());
                got.lock().unwrap().push(notice);
                StatusCode::NO_CONTENT
            }
        }),
    );
    axum::serve(listener, app).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_get_every_change_signed_and_in_order_after_being_down_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    // A port nothing listens on yet: the receiver is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let hook = WebhookOptions {
        name: "ops".into(),
        url: format!("http://127.0.0.1:{port}/hook"),
        secret: Secret(b"s3cret".to_vec()),
        timeout: Duration::from_secs(2),
        retry_min: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
    };
    let options = AlertsOptions { rules: vec![flood()], webhooks: vec![hook], ..AlertsOptions::default() };
    let runtime = tokio::runtime::Handle::current();
    let store = Store::open(&path, &StoreOptions::default()).unwrap();
    let alerts = Alerts::start(store, options.clone(), &runtime).unwrap();
    let a = alerts.clone();
    tokio::task::spawn_blocking(move || {
        feed(&a, 0..5, 260.0);
        feed(&a, 5..10, 230.0);
    })
    .await
    .unwrap();
    let failed = |alerts: &Alerts| alerts.deliveries().iter().filter(|d| !d.delivered).count();
    let a = alerts.clone();
    tokio::task::spawn_blocking(move || until("failed attempts", || failed(&a) >= 3)).await.unwrap();
    assert_eq!(alerts.webhooks().unwrap()[0].pending, 2);
    assert_eq!(alerts.webhooks().unwrap()[0].target, format!("http://127.0.0.1:{port}"));
    alerts.stop();
    drop(alerts);
    tokio::time::sleep(Duration::from_millis(50)).await;

    // After a restart, the receiver comes up, and two more changes follow.
    let store =
        tokio::task::spawn_blocking(move || Store::open(&path, &StoreOptions::default()).unwrap()).await.unwrap();
    let alerts = Alerts::start(store, options, &runtime).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(receiver(listener, Arc::clone(&got)));
    let a = alerts.clone();
    tokio::task::spawn_blocking(move || {
        feed(&a, 10..15, 260.0);
        feed(&a, 15..20, 230.0);
    })
    .await
    .unwrap();
    let g = Arc::clone(&got);
    tokio::task::spawn_blocking(move || until("four deliveries", || g.lock().unwrap().len() >= 4)).await.unwrap();
    let got: Vec<(u64, String)> = got.lock().unwrap().iter().map(|n| (n.seq, n.state.clone())).collect();
    let want: Vec<(u64, String)> =
        [(1, "firing"), (2, "resolved"), (3, "firing"), (4, "resolved")].map(|(s, st)| (s, st.to_owned())).into();
    assert_eq!(got, want);
    let a = alerts.clone();
    tokio::task::spawn_blocking(move || until("an empty outbox", || a.webhooks().unwrap()[0].pending == 0))
        .await
        .unwrap();
    assert!(alerts.deliveries().iter().all(|d| d.status.is_none_or(|s| s == 204)));
    alerts.stop();
}
