//! Alerts through the whole platform: a rule fires once on readings published over MQTT,
//! stays active across a restart without firing again (late data included), reaches a late
//! MQTT subscriber at once (retained), and reaches a webhook that was down, every change, in
//! order, with a valid signature.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use mekong::alerts::WebhookConfig;
use mekong_tests::{now_secs, pack, Sensor, TIMEOUT};
use serde_json::Value;
use sha2::Sha256;

use crate::platform::{config, start, Running};

const SECRET: &str = "e2e-webhook-secret-0123456789";

fn flood_rule() -> mekong_alerts::RuleSpec {
    serde_json::from_value(serde_json::json!({
        "id": "hau-flood", "type": "threshold", "kind": "water", "metric": "water_level",
        "above": 250.0, "for_s": 60, "clear": 240.0, "severity": "critical",
        "message": "Hau river at {value} cm at {device}"
    }))
    .unwrap()
}

/// The changes a webhook receiver took, each checked against its signature as a receiver
/// would (HMAC-SHA256 of timestamp "." body, computed here with the hmac crate).
type Received = Arc<Mutex<Vec<Value>>>;

async fn receiver(listener: tokio::net::TcpListener, received: Received) {
    use axum::http::{HeaderMap, StatusCode};
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let received = Arc::clone(&received);
            async move {
                let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let timestamp = header("x-mekong-timestamp");
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
                mac.update(timestamp.as_bytes());
                mac.update(b".");
                mac.update(&body);
                let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
                let age = now_secs() - timestamp.parse::<f64>().unwrap_or(0.0);
                if header("x-mekong-signature") != format!("sha256={hex}") || !(-5.0..300.0).contains(&age) {
                    return StatusCode::UNAUTHORIZED;
                }
                received.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                StatusCode::OK
            }
        }),
    );
    axum::serve(listener, app).await.unwrap();
}

async fn wait_for(running: &Running, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let body = running.json(path).await;
        if done(&body) {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The retained state of `hau-flood` on `hau-01`, as a subscriber that connects now gets it.
async fn retained(running: &Running, client_id: &str) -> Value {
    let mut subscriber = Sensor::connect(running.mqtt(), client_id).await;
    subscriber.subscribe("mekong/v1/alerts/#").await;
    let payload = tokio::time::timeout(TIMEOUT, subscriber.downlink_payload()).await.expect("no retained alert");
    subscriber.disconnect().await;
    serde_json::from_slice(&payload.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_fires_once_across_a_restart_and_reaches_mqtt_and_a_webhook_that_was_down() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("webhook.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    // The receiver's port, not listened on yet: the webhook is down.
    let hook_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let platform_config = || {
        let mut config = config(&dir.path().join("data"));
        config.alerts.rule = vec![flood_rule()];
        config.alerts.webhook = vec![WebhookConfig {
            name: "ops-room".into(),
            url: format!("http://127.0.0.1:{hook_port}/hook"),
            secret_file: secret_file.clone(),
            retry_min_ms: 20,
            retry_max_ms: 200,
            ..WebhookConfig::default()
        }];
        config
    };
    let t0 = now_secs().floor() - 600.0;
    let t0_ms = (t0 * 1000.0) as i64;

    let running = start(&platform_config()).await;
    let mut node = Sensor::device(running.mqtt(), "hau-01").await;
    // Above 250 cm from t0 on, a reading a minute: held 60 s at t0 + 60 s, when it fires.
    let above: Vec<(&str, &str, f64, f64)> =
        (0..4).map(|i| ("water_level", "cm", 255.0 + i as f64, i as f64 * 60.0)).collect();
    node.publish("mekong/v1/hau-01/up", pack(t0, &above)).await;
    node.downlink().await;
    let alerts =
        wait_for(&running, "/v1/alerts", "the alert", |b| b["alerts"].as_array().is_some_and(|a| !a.is_empty())).await;
    let alert = &alerts["alerts"][0];
    assert_eq!((alert["rule"].as_str(), alert["device"].as_str()), (Some("hau-flood"), Some("hau-01")));
    assert_eq!((alert["since_ms"].as_i64(), alert["value"].as_f64()), (Some(t0_ms + 60_000), Some(256.0)));
    // A subscriber that comes after the change gets the current state at once.
    let state = retained(&running, "ops-board:1").await;
    assert_eq!((state["state"].as_str(), state["seq"].as_u64()), (Some("firing"), Some(1)), "{state}");
    // The webhook is down: attempts fail and are logged, the change waits in its outbox.
    let deliveries = wait_for(&running, "/v1/alerts/deliveries", "failed attempts", |b| {
        b["deliveries"].as_array().is_some_and(|d| d.len() >= 2)
    })
    .await;
    assert_eq!(deliveries["webhooks"][0]["pending"], 1, "{deliveries}");
    assert!(deliveries["deliveries"].as_array().unwrap().iter().all(|d| d["delivered"] == false));
    assert!(!deliveries.to_string().contains(SECRET));
    node.disconnect().await;
    running.stop().await;

    // Same data directory, new ports: the alert is still active and retained on the new
    // broker; late readings from before the restart and more of the same fire nothing.
    let running = start(&platform_config()).await;
    let alerts = running.json("/v1/alerts").await;
    assert_eq!(alerts["alerts"].as_array().unwrap().len(), 1, "{alerts}");
    assert_eq!(retained(&running, "ops-board:2").await["seq"], 1);
    let mut node = Sensor::device(running.mqtt(), "hau-01").await;
    let late = pack(t0 + 30.0, &[("water_level", "cm", 300.0, 0.0)]);
    let more: Vec<(&str, &str, f64, f64)> = (4..8).map(|i| ("water_level", "cm", 260.0, i as f64 * 60.0)).collect();
    node.publish("mekong/v1/hau-01/up", late).await;
    node.publish("mekong/v1/hau-01/up", pack(t0, &more)).await;
    node.downlink().await;
    node.downlink().await;

    // The receiver comes up; then the level falls below 240 cm: resolved.
    let received: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], hook_port))).await.unwrap();
    tokio::spawn(receiver(listener, Arc::clone(&received)));
    node.publish("mekong/v1/hau-01/up", pack(t0 + 480.0, &[("water_level", "cm", 230.0, 0.0)])).await;
    node.downlink().await;
    let history = wait_for(&running, "/v1/alerts/history", "the resolution", |b| {
        b["changes"].as_array().is_some_and(|c| c.len() >= 2)
    })
    .await;
    let changes: Vec<(u64, &str, i64)> = history["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["seq"].as_u64().unwrap(), c["state"].as_str().unwrap(), c["at_ms"].as_i64().unwrap()))
        .collect();
    assert_eq!(changes, [(1, "firing", t0_ms + 60_000), (2, "resolved", t0_ms + 480_000)]);
    assert!(running.json("/v1/alerts").await["alerts"].as_array().unwrap().is_empty());
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while received.lock().unwrap().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the webhook got {:?}", received.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got: Vec<(u64, String)> = received
        .lock()
        .unwrap()
        .iter()
        .map(|n| (n["seq"].as_u64().unwrap(), n["state"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(got, [(1, "firing".to_owned()), (2, "resolved".to_owned())]);
    assert_eq!(retained(&running, "ops-board:3").await["state"], "resolved");
    let deliveries =
        wait_for(&running, "/v1/alerts/deliveries", "an empty outbox", |b| b["webhooks"][0]["pending"] == 0).await;
    assert!(deliveries["deliveries"][0]["delivered"] == true, "{deliveries}");
    node.disconnect().await;
    running.stop().await;
    assert!(!crate::platform::logs().contains(SECRET));
}
