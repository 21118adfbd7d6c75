//! `mekong identity` as an operator runs it: an app's password is printed once, on stdout
//! alone, and a `mekong serve` that reads the registry lets the app in with it, and nobody
//! without it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use mekong_tests::Sensor;
use rumqttc::{ConnectReturnCode, SubscribeReasonCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_added_by_the_command_logs_in_with_the_printed_password_only() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("devices.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_mekong"))
        .args(["identity", "app", "flood-board", "--subscribe", "mekong/v1/+/up", "--registry"])
        .arg(&registry)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let password = stdout.trim_end();
    assert!(password.len() == 64 && password.bytes().all(|b| b.is_ascii_hexdigit()), "{stdout:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("flood-board") && !stderr.contains(password), "{stderr}");
    assert!(!std::fs::read_to_string(&registry).unwrap().contains(password));

    let listed = Command::new(env!("CARGO_BIN_EXE_mekong"))
        .args(["identity", "list", "--registry"])
        .arg(&registry)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "flood-board\tapp\tmekong/v1/+/up\n");

    let registry_env = registry.to_str().unwrap();
    let server = common::spawn_server(&dir.path().join("data"), &[("MEKONG__REGISTRY__PATH", registry_env)]);
    common::wait_healthy(&reqwest::Client::new(), server.http).await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], server.mqtt));
    let mut app = Sensor::login(addr, "flood-board:1", "flood-board", password).await.expect("the app is refused");
    assert!(matches!(app.subscribe("mekong/v1/+/up").await, SubscribeReasonCode::Success(_)));
    assert_eq!(app.subscribe("mekong/v1/+/down").await, SubscribeReasonCode::Failure);
    let wrong = "0".repeat(64);
    assert_eq!(
        Sensor::login(addr, "flood-board", "flood-board", &wrong).await.err(),
        Some(ConnectReturnCode::NotAuthorized)
    );
}
