//! The operator's log of a `mekong serve` child process, in its JSON form: every line an
//! object, start-up lines that say what runs where, the first refusal of a device and reason
//! at once and the rest summarised, and no ERROR line for what devices normally do
//! (refused packs, connecting, disconnecting), even with the broker's own warnings on; and a
//! SIGTERM that comes during the start, which ends in the same orderly stop as later.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;

use mekong_tests::{now_secs, pack, Sensor, TIMEOUT};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;

/// Every line read so far, parsed; the test fails on a line that is not JSON.
struct Log {
    lines: UnboundedReceiver<String>,
    seen: Vec<Value>,
}

impl Log {
    /// Waits for a line that `wanted` accepts, and returns it.
    async fn wait_for(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let found = tokio::time::timeout(TIMEOUT, async {
            while let Some(line) = self.lines.recv().await {
                let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                self.seen.push(value.clone());
                if wanted(&value) {
                    return value;
                }
            }
            panic!("the server's log ended before {what}");
        });
        found.await.unwrap_or_else(|_| panic!("no log line for {what}"))
    }
}

impl Log {
    /// Reads the lines left until the server closes its output.
    async fn read_to_end(&mut self) {
        let ended = tokio::time::timeout(TIMEOUT, async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")));
            }
        });
        ended.await.expect("the server's log did not end");
    }
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_json_says_what_happened_and_has_no_error_for_normal_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("MEKONG__INGEST__REFUSAL_SUMMARY_SECS", "1"), ("MEKONG__LOG__FILTER", "info,rumqttd=warn")];
    let (mut server, lines) = common::spawn_logging_server(dir.path(), &env, &["--log-format", "json"]);
    let mut log = Log { lines, seen: Vec::new() };
    let up = log.wait_for("start-up", |l| message(l) == "mekong is up").await;
    assert!(up["fields"]["mqtt"].as_str().unwrap().contains(&server.mqtt.to_string()), "{up}");
    let store = log.seen.iter().find(|l| message(l) == "store opened").expect("no store line");
    assert_eq!(store["fields"]["points"], 0, "{store}");

    let addr = SocketAddr::from(([127, 0, 0, 1], server.mqtt));
    let mut device = Sensor::device(addr, "hau-01").await;
    device.publish("mekong/v1/hau-01/up", pack(now_secs(), &[("water_level", "cm", 180.0, 0.0)])).await;
    for _ in 0..3 {
        device.publish("mekong/v1/hau-01/up", vec![0xff]).await;
    }
    let first = log.wait_for("the first refusal", |l| message(l) == "publish refused").await;
    assert_eq!(first["fields"]["device"], "hau-01", "{first}");
    assert_eq!(first["level"], "INFO");
    let reason = first["fields"]["reason"].as_str().unwrap().to_owned();
    let summary = log.wait_for("the summary", |l| message(l).contains("more publishes refused")).await;
    assert_eq!((summary["fields"]["device"].as_str(), summary["fields"]["count"].as_u64()), (Some("hau-01"), Some(2)));
    assert_eq!(summary["fields"]["reason"].as_str(), Some(reason.as_str()));
    // A clean disconnect, and one that just drops the connection.
    device.disconnect().await;
    let dropped = Sensor::connect(addr, "cai-02").await;
    drop(dropped);

    std::process::Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    log.read_to_end().await;
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
    let refused = log.seen.iter().filter(|l| message(l) == "publish refused").count();
    assert_eq!(refused, 1, "the refusals after the first are summarised, not logged one by one");
    let errors: Vec<&Value> = log.seen.iter().filter(|l| l["level"] == "ERROR" || l["level"] == "WARN").collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

/// systemd may stop the service at any moment, also while it opens its store (a large log to
/// fold, a slow disk): a SIGTERM before it is up still ends in the orderly stop, with the
/// store flushed, not in death by the signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_while_it_starts_ends_in_an_orderly_stop() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, lines) = common::spawn_logging_server(dir.path(), &[], &["--log-format", "json"]);
    let mut log = Log { lines, seen: Vec::new() };
    // The first line comes from the start, long before it ends.
    let first = log.wait_for("the first line", |_| true).await;
    assert!(log.seen.iter().all(|l| message(l) != "mekong is up"), "already up at the first line: {first}");
    std::process::Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    log.read_to_end().await;
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}: {:#?}", log.seen);
    let said: Vec<&str> = log.seen.iter().map(message).collect();
    assert!(said.contains(&"mekong is up") && said.last() == Some(&"store flushed; mekong stopped"), "{said:?}");
}
