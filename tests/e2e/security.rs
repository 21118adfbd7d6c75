//! Who gets in: the loopback-only default without credentials, seen from a second host (a
//! network namespace of the test's own), and the API's bearer tokens and CORS through the
//! real HTTP server.

use std::net::SocketAddr;

use mekong::Config;
use mekong_api::auth::Scope;
use mekong_tests::{TestNet, TIMEOUT};

use crate::platform::{config, start};

/// The platform's listeners as the namespace would reach them, on this side's address.
fn seen_from(net: &TestNet, running: &crate::platform::Running) -> [SocketAddr; 3] {
    let p = &running.platform;
    [
        SocketAddr::new(net.host, p.mqtt_addr.port()),
        SocketAddr::new(net.host, p.mqtt5_addr.unwrap().port()),
        SocketAddr::new(net.host, p.http_addr.port()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_only_loopback_is_served() {
    let Some(net) = TestNet::create() else { return };
    let dir = tempfile::tempdir().unwrap();

    // The defaults: no credentials anywhere, so nothing answers on another address.
    let running = start(&config(&dir.path().join("a"))).await;
    for addr in seen_from(&net, &running) {
        assert!(!net.connects(addr), "{addr} answered a second host without credentials");
    }
    // Loopback still is served, over both families.
    for ip in ["127.0.0.1", "::1"] {
        let addr = SocketAddr::new(ip.parse().unwrap(), running.platform.mqtt_addr.port());
        assert!(tokio::net::TcpStream::connect(addr).await.is_ok(), "{addr}");
    }
    running.stop().await;

    // With API tokens the API answers everywhere (it checks them); MQTT still does not.
    let registry = dir.path().join("devices.toml");
    mekong::token::create(&registry, "city-app", Scope::Read).unwrap();
    let mut with_tokens = config(&dir.path().join("b"));
    with_tokens.registry.path = registry.clone();
    let running = start(&with_tokens).await;
    let [mqtt, mqtt5, http] = seen_from(&net, &running);
    assert!(!net.connects(mqtt) && !net.connects(mqtt5));
    assert!(net.connects(http), "the API with tokens is not served beyond loopback");
    running.stop().await;

    // With an MQTT identity in the registry the broker checks logins, so it answers
    // everywhere too.
    let digest = mekong::config::to_hex(&mekong_ingest::access::PasswordDigest::of(b"app password").0);
    let text = std::fs::read_to_string(&registry).unwrap()
        + &format!("\n[[app]]\nname = \"board\"\npassword_sha256 = \"{digest}\"\nsubscribe = [\"mekong/v1/+/up\"]\n");
    std::fs::write(&registry, text).unwrap();
    let mut with_logins = config(&dir.path().join("d"));
    with_logins.registry.path = registry;
    let running = start(&with_logins).await;
    for addr in seen_from(&net, &running) {
        assert!(net.connects(addr), "{addr} is not served beyond loopback with MQTT identities and API tokens");
    }
    running.stop().await;

    // allow_anonymous opens everything: the control that shows the namespace can connect.
    let mut open = config(&dir.path().join("c"));
    open.security.allow_anonymous = true;
    let running = start(&open).await;
    for addr in seen_from(&net, &running) {
        assert!(net.connects(addr), "{addr} refused with allow_anonymous");
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_on_another_address_without_credentials_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config: Config = config(dir.path());
    config.api.listen = "192.0.2.10:8080".parse().unwrap();
    let e = mekong::Platform::start(&config).await.unwrap_err();
    assert!(format!("{e:#}").contains("allow_anonymous"), "{e:#}");
    let mut config = config.clone();
    config.api.listen = "[::]:0".parse().unwrap();
    config.broker.listen = "192.0.2.10:1883".parse().unwrap();
    let e = mekong::Platform::start(&config).await.unwrap_err();
    assert!(format!("{e:#}").contains("not a loopback address"), "{e:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_and_cors_through_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("devices.toml");
    let read = mekong::token::create(&registry, "city-app", Scope::Read).unwrap();
    let admin = mekong::token::create(&registry, "operations", Scope::Admin).unwrap();
    let mut config = config(&dir.path().join("data"));
    config.registry.path = registry;
    config.security.metrics_open = false;
    config.security.cors_origins = vec!["https://apps.cantho.example".into()];
    let running = start(&config).await;
    let base = format!("http://127.0.0.1:{}", running.platform.http_addr.port());
    let http = reqwest::Client::new();

    let status = |path: &'static str, token: Option<String>| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let mut request = http.get(format!("{base}{path}")).timeout(TIMEOUT);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    // The read token with its last digit changed (to one it does not have).
    let last = if read.ends_with('0') { '1' } else { '0' };
    let wrong = Some(format!("{}{last}", &read[..read.len() - 1]));
    assert_ne!(wrong.as_deref(), Some(read.as_str()));
    for (path, want) in [
        ("/healthz", [200, 200, 200, 200]),
        ("/metrics", [401, 401, 200, 200]),
        ("/v1/latest", [401, 401, 200, 200]),
        ("/v1/devices", [401, 401, 200, 200]),
        ("/v1/rejections", [401, 401, 403, 200]),
    ] {
        for (token, want) in [None, wrong.clone(), Some(read.clone()), Some(admin.clone())].into_iter().zip(want) {
            let (got, body) = status(path, token.clone()).await;
            assert_eq!(got, want, "{path} with {}: {body}", if token.is_some() { "a token" } else { "none" });
            for secret in [&read, &admin] {
                assert!(!body.contains(secret.as_str()), "{path} answered with a token");
            }
        }
    }

    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, format!("{base}/v1/latest"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .timeout(TIMEOUT)
            .send()
    };
    let allowed = preflight("https://apps.cantho.example").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://apps.cantho.example");
    let refused = preflight("https://elsewhere.example").await.unwrap();
    assert!(refused.headers().get("access-control-allow-origin").is_none());
    running.stop().await;

    // The refusals were logged (so the logs were captured), and no log line holds a token.
    let logs = crate::platform::logs();
    assert!(logs.contains("api request refused"), "no refusal in the captured logs");
    for secret in [&read, &admin, wrong.as_ref().unwrap()] {
        assert!(!logs.contains(&secret[4..]), "a token is in the logs");
    }
}

/// Device management through the real server: an admin token registers a device, which the
/// running ingest accepts at once (registration required, no restart), the registry file
/// holds it with its place, and a read token can neither add nor remove one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_managed_through_the_api_without_a_restart() {
    use mekong_tests::{now_secs, pack, Downlink, Sensor};
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("devices.toml");
    let read = mekong::token::create(&registry, "city-app", Scope::Read).unwrap();
    let admin = mekong::token::create(&registry, "operations", Scope::Admin).unwrap();
    let mut config = config(&dir.path().join("data"));
    config.registry.path = registry.clone();
    config.ingest.require_registration = true;
    let running = start(&config).await;
    let url = format!("http://127.0.0.1:{}/v1/devices/cai-rang-02", running.platform.http_addr.port());
    let http = reqwest::Client::new();
    let put = |token: &str| {
        http.put(&url)
            .bearer_auth(token)
            .json(&serde_json::json!({"kind": "water", "name": "Cai Rang wharf",
                "location": {"lat": 10.005, "lon": 105.749}, "tags": {"river": "Can Tho"}}))
            .timeout(TIMEOUT)
            .send()
    };

    // Not registered yet: refused.
    let mut node = Sensor::device(running.mqtt(), "cai-rang-02").await;
    let bt = now_secs();
    node.publish("mekong/v1/cai-rang-02/up", pack(bt, &[("water_level", "cm", 180.0, 0.0)])).await;
    assert!(matches!(node.downlink().await, Downlink::Refused { ref reason, .. } if reason.contains("unknown_device")));

    assert_eq!(put(&read).await.unwrap().status().as_u16(), 403);
    let response = put(&admin).await.unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let text = std::fs::read_to_string(&registry).unwrap();
    assert!(text.contains("id = \"cai-rang-02\"") && text.contains("lat = 10.005"), "{text}");

    // Accepted now, by the same running server.
    node.publish("mekong/v1/cai-rang-02/up", pack(bt + 1.0, &[("water_level", "cm", 181.0, 0.0)])).await;
    assert!(matches!(node.downlink().await, Downlink::Ack { readings: 1, .. }));
    let response = http.get(&url).bearer_auth(&read).timeout(TIMEOUT).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let device: serde_json::Value = response.json().await.unwrap();
    assert_eq!((device["name"].as_str(), device["points"].as_u64()), (Some("Cai Rang wharf"), Some(1)));

    let delete = |token: String| http.delete(&url).bearer_auth(token).timeout(TIMEOUT).send();
    assert_eq!(delete(read.clone()).await.unwrap().status().as_u16(), 403);
    assert_eq!(delete(admin.clone()).await.unwrap().status().as_u16(), 204);
    node.publish("mekong/v1/cai-rang-02/up", pack(bt + 2.0, &[("water_level", "cm", 182.0, 0.0)])).await;
    assert!(matches!(node.downlink().await, Downlink::Refused { .. }));
    running.stop().await;
}
