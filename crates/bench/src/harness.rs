//! What both benchmarks need around the processes they start: the `mekong` binary, free
//! ports, a temporary directory, a small HTTP GET, percentiles, and CPU time.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The `mekong` binary: the one given, else the one beside this binary (cargo builds both
/// into the same directory).
pub fn mekong_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(path) => path,
        None => {
            let me = std::env::current_exe().context("cannot find the mekong-bench binary")?;
            me.with_file_name(format!("mekong{}", std::env::consts::EXE_SUFFIX))
        }
    };
    if !path.is_file() {
        bail!(
            "no mekong binary at {}: build it with `cargo build --release -p mekong -p mekong-bench`, or pass --mekong",
            path.display()
        );
    }
    Ok(path)
}

/// CPU time (user and system) a process has used, in seconds, from /proc: `pid` is a
/// process id or `self` (or `self/task/TID`, one of its threads). Linux reports it in clock
/// ticks of 1/100 s to every process.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// `N` distinct ports free at the time of asking, on loopback; every listener is held until
/// all are picked, so that the kernel cannot hand the same port out twice.
pub fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let mut ports = [0; N];
    let mut held = Vec::with_capacity(N);
    for port in &mut ports {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        *port = listener.local_addr()?.port();
        held.push(listener);
    }
    Ok(ports)
}

/// The `p` quantile of sorted microseconds, in milliseconds; `None` for no samples.
pub fn percentile_ms(sorted: &[u32], p: f64) -> Option<f64> {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len().checked_sub(1)?);
    Some(f64::from(sorted[i]) / 1000.0)
}

/// A temporary directory removed on drop.
#[derive(Debug)]
pub struct TempDir {
    /// Where it is.
    pub path: PathBuf,
}

/// A new temporary directory, named after this process and a free port so that concurrent
/// runs do not collide.
pub fn temp_dir() -> anyhow::Result<TempDir> {
    let path = std::env::temp_dir().join(format!("mekong-bench-{}-{}", std::process::id(), free_ports::<1>()?[0]));
    std::fs::create_dir_all(&path)?;
    Ok(TempDir { path })
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `GET path` as JSON, with a minimal HTTP/1.1 client (one request per connection).
pub async fn get_json(addr: SocketAddr, path: &str) -> anyhow::Result<Value> {
    let (_, body) = request(addr, "GET", path).await?;
    Ok(serde_json::from_str(&body)?)
}

/// `POST path` with an empty body, as JSON, answered with `201 Created`.
pub async fn post_json(addr: SocketAddr, path: &str) -> anyhow::Result<Value> {
    let (head, body) = request(addr, "POST", path).await?;
    if !head.starts_with("HTTP/1.1 201") {
        bail!("POST {path}: {head}: {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

/// One request without a body on a connection of its own; the answer's head and body.
async fn request(addr: SocketAddr, method: &str, path: &str) -> anyhow::Result<(String, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").context("malformed http response")?;
    Ok((head.to_owned(), body.to_owned()))
}

/// Waits until the server at `addr` answers `GET path` with JSON; fails, naming it as `what`,
/// if it has not within `within`.
pub async fn wait_answering(addr: SocketAddr, path: &str, within: Duration, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while get_json(addr, path).await.is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not come up on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A connection that has asked the server at `addr` for `/v1/stream{query}`; its answer
/// (head, then events, chunked) is read as it comes.
pub async fn open_stream(addr: SocketAddr, query: &str) -> anyhow::Result<tokio::net::TcpStream> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(format!("GET /v1/stream{query} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
    Ok(stream)
}

/// Adds `chunk` to what `pending` holds of a stream, and returns the events' data (what
/// follows `data: `) of the lines that are now whole; a part line waits in `pending`.
pub fn data_lines(pending: &mut Vec<u8>, chunk: &[u8]) -> Vec<Vec<u8>> {
    pending.extend_from_slice(chunk);
    let Some(end) = pending.iter().rposition(|&b| b == b'\n') else { return Vec::new() };
    let lines: Vec<u8> = pending.drain(..=end).collect();
    lines.split(|&b| b == b'\n').filter_map(|l| l.strip_prefix(b"data: ")).map(<[u8]>::to_vec).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_counts_this_process_working_and_no_process_is_none() {
        let start = cpu_seconds("self").expect("this process's /proc/self/stat");
        // Work until the clock ticks (1/100 s) show it, within a bound far above a tick.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut x = 0u64;
        let mut now = start;
        while now < start + 0.02 && Instant::now() < deadline {
            for i in 0..100_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
            now = cpu_seconds("self").unwrap_or(start);
        }
        assert!(now >= start + 0.02, "CPU time stayed at {now} s from {start} s");
        // Process ids stop far below this (pid_max is at most 2^22).
        assert_eq!(cpu_seconds("4294967295"), None);
    }

    #[test]
    fn data_lines_are_whole_lines_and_a_part_line_waits() {
        let mut pending = Vec::new();
        assert!(data_lines(&mut pending, b"retry: 2000\n\nevent: alert\ndata: {\"at_").is_empty());
        let got = data_lines(&mut pending, b"ms\":5}\nid: 1-1\n\ndata: {}\n");
        assert_eq!(got, [b"{\"at_ms\":5}".to_vec(), b"{}".to_vec()]);
        assert!(pending.is_empty());
    }
}
