//! The hidden `mekong-bench load` command, as `ingest` drives it when the devices are split
//! over processes: against the broker-only server (another `mekong-bench` process), it
//! connects its devices, says `ready`, publishes at its paced rate, answers `stop` with its
//! tally and exits cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BENCH: &str = env!("CARGO_BIN_EXE_mekong-bench");

/// Kills its process on drop, so that a failed assertion leaves nothing running.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// The broker-only server's count of uplinks, `None` while it is not up.
fn counted(stats: SocketAddr) -> Option<u64> {
    let mut stream = TcpStream::connect(stats).ok()?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let body = answer.split("\r\n\r\n").nth(1)?;
    serde_json::from_str::<serde_json::Value>(body).ok()?["counted"].as_u64()
}

#[test]
fn a_load_process_connects_paces_its_devices_and_reports_on_stop() {
    let (listen, stats) = (free_addr(), free_addr());
    let _server = Killed(
        Command::new(BENCH)
            .args(["broker-only", "--listen", &listen.to_string(), "--stats", &stats.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while counted(stats).is_none() {
        assert!(Instant::now() < deadline, "the broker-only server did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }

    // 12 devices, 4 packs a second each, their first packs spread over a quarter second.
    let started = Instant::now();
    let mut load = Killed(
        Command::new(BENCH)
            .args(["load", "--addr", &listen.to_string(), "--devices", "12", "--prefix", "t-"])
            .args(["--readings", "1", "--window", "1", "--rate", "4", "--first", "0", "--spread-over", "12"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdin = load.0.stdin.take().unwrap();
    let mut lines = BufReader::new(load.0.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    writeln!(stdin, "measure").unwrap();

    // Every device publishes, again and again: two rounds of all twelve.
    while counted(stats).unwrap_or(0) < 24 {
        assert!(Instant::now() < deadline, "counted {:?} uplinks, expected 24", counted(stats));
        std::thread::sleep(Duration::from_millis(20));
    }
    writeln!(stdin, "stop 0").unwrap();
    let tally: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    // Without downlinks nothing is timed; the tally is still whole.
    for key in ["resends", "sent", "acked"] {
        assert_eq!(tally[key].as_u64(), Some(0), "{key} in {tally}");
    }
    assert_eq!(tally["ack_latency_us"].as_array().map(Vec::len), Some(0));
    drop(stdin);
    let status = loop {
        if let Some(status) = load.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the load process did not end");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "load process ended with {status}");
    // Paced: at 4 packs a second a device sends at most one more than the seconds allow
    // (unpaced, with the broker's PUBACK freeing its window, it would send thousands).
    let uplinks = counted(stats).unwrap() as f64;
    let most = 12.0 * (4.0 * started.elapsed().as_secs_f64() + 1.0);
    assert!(uplinks <= most, "{uplinks} uplinks, at most {most} at the rate");
}
