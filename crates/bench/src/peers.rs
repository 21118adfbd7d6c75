//! Peers in `mekong-bench query`: running VictoriaMetrics and InfluxDB 1.x servers, loaded
//! with the same reference dataset and asked the same four queries as mekong.
//!
//! The schema is each peer's idiomatic one for sensor readings, and the same for both: one
//! metric (VictoriaMetrics) or measurement (InfluxDB) per mekong metric (`water_level`,
//! `pm2_5`, `vehicle_count`), a `device` label or tag per series, and the value as a double
//! (InfluxDB's field `v`). So a query of one series selects by name and device, and one of a
//! metric across devices reads one metric, as in mekong. VictoriaMetrics is loaded through
//! `/api/v1/import` (JSON lines, a series-day a line), InfluxDB through `/write` (line
//! protocol at millisecond precision, 10,000 points a request, as its documentation advises);
//! the loader then waits until each peer counts every point (after VictoriaMetrics'
//! `/internal/force_flush`).
//!
//! The queries, each the peer's ordinary way of asking:
//! - a raw day: VictoriaMetrics' `/api/v1/export` of the series over `[from, to - 1 ms]`
//!   (its bounds are inclusive), InfluxDB's `SELECT v ... WHERE time >= from AND time < to`;
//! - buckets (a year by day, a metric by hour): count, min, max, sum, avg, first and last of
//!   each bucket, in one request: MetricsQL `*_over_time` over windows of the step, evaluated
//!   1 ms before each bucket's end (a window `(T - step, T]` is then the bucket
//!   `[start, start + step)` at millisecond resolution), and InfluxQL `GROUP BY time(step),
//!   device`;
//! - latest: VictoriaMetrics' instant query of every series at the dataset's end (its
//!   5-minute lookback finds each series' last point), InfluxDB's `last(v)` of every
//!   measurement by device.
//!
//! VictoriaMetrics' queries carry `nocache=1`: the benchmark repeats the same requests, which
//! its rollup cache would answer from memory without reading its storage, and mekong caches
//! no answers.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::answers::{self, BucketsByDevice, LatestValues, Points};
use crate::client::Http;

/// The InfluxDB database the dataset goes into.
pub const INFLUX_DB: &str = "mekong_bench";

/// Points of one InfluxDB write request.
const INFLUX_BATCH_POINTS: usize = 10_000;

/// Bytes of one VictoriaMetrics import request.
const VM_BATCH_BYTES: usize = 4 << 20;

/// Which server a peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// VictoriaMetrics (single-node).
    VictoriaMetrics,
    /// InfluxDB 1.x.
    InfluxDb,
}

impl PeerKind {
    fn parse(name: &str) -> anyhow::Result<PeerKind> {
        match name {
            "victoriametrics" | "vm" => Ok(PeerKind::VictoriaMetrics),
            "influxdb" | "influx" => Ok(PeerKind::InfluxDb),
            other => bail!("unknown peer {other:?}: victoriametrics or influxdb"),
        }
    }

    /// Its name in the benchmark's output.
    pub fn name(self) -> &'static str {
        match self {
            PeerKind::VictoriaMetrics => "victoriametrics",
            PeerKind::InfluxDb => "influxdb",
        }
    }
}

/// A running peer to load and query.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Which server.
    pub kind: PeerKind,
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
    /// Its data directory, to report its size on disk, if given.
    pub data_dir: Option<PathBuf>,
}

/// `NAME=VALUE` split at the first `=`.
fn split_option<'a>(option: &'a str, flag: &str) -> anyhow::Result<(PeerKind, &'a str)> {
    let (name, value) = option.split_once('=').with_context(|| format!("{flag} {option:?}: expected NAME=VALUE"))?;
    Ok((PeerKind::parse(name)?, value))
}

/// An `http://host:port` URL (a trailing `/` allowed, no path) as a socket address.
fn parse_url(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.strip_prefix("http://").with_context(|| format!("{url:?}: only http:// URLs"))?;
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.contains('/') {
        bail!("{url:?}: a peer's URL has no path");
    }
    host.to_socket_addrs()
        .with_context(|| format!("{url:?}: not host:port"))?
        .next()
        .with_context(|| format!("{url:?}: no address"))
}

/// The peers of `--peer NAME=URL` options, with the directories of `--peer-data NAME=DIR`.
pub fn parse_peers(peers: &[String], data: &[String]) -> anyhow::Result<Vec<Peer>> {
    let mut out: Vec<Peer> = Vec::new();
    for option in peers {
        let (kind, url) = split_option(option, "--peer")?;
        if out.iter().any(|p| p.kind == kind) {
            bail!("--peer {}: given twice", kind.name());
        }
        out.push(Peer { kind, addr: parse_url(url)?, data_dir: None });
    }
    for option in data {
        let (kind, dir) = split_option(option, "--peer-data")?;
        let peer = out
            .iter_mut()
            .find(|p| p.kind == kind)
            .with_context(|| format!("--peer-data {option:?}: no --peer {}", kind.name()))?;
        peer.data_dir = Some(PathBuf::from(dir));
    }
    Ok(out)
}

/// `s` percent-encoded for a query string: everything but RFC 3986's unreserved characters.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A label value in a MetricsQL selector, quoted.
fn vm_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A string literal in InfluxQL, quoted.
fn influx_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// An identifier in InfluxQL, double-quoted.
fn influx_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Epoch ms as VictoriaMetrics' seconds with a fraction.
fn vm_seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// The selector of one series, or of every series of `metric`.
fn vm_selector(metric: &str, device: Option<&str>) -> String {
    match device {
        Some(device) => format!("{{__name__={},device={}}}", vm_quote(metric), vm_quote(device)),
        None => format!("{{__name__={}}}", vm_quote(metric)),
    }
}

/// Appends one point in InfluxDB's line protocol: measurement `metric`, tag `device`, field
/// `v`, time in ms. Commas, spaces and `=` in names are escaped as the protocol says; the
/// value is the shortest decimal that reads back as the same double.
pub fn influx_line(out: &mut String, metric: &str, device: &str, t_ms: i64, v: f64) {
    let escape = |out: &mut String, s: &str, also_equals: bool| {
        for c in s.chars() {
            if c == ',' || c == ' ' || (also_equals && c == '=') || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
    };
    escape(out, metric, false);
    out.push_str(",device=");
    escape(out, device, true);
    out.push_str(&format!(" v={v:?} {t_ms}\n"));
}

/// One line of VictoriaMetrics' JSON import: a series' points.
pub fn vm_import_line(out: &mut Vec<u8>, metric: &str, device: &str, points: &[(i64, f64)]) -> anyhow::Result<()> {
    let values: Vec<f64> = points.iter().map(|p| p.1).collect();
    let timestamps: Vec<i64> = points.iter().map(|p| p.0).collect();
    let line =
        json!({ "metric": { "__name__": metric, "device": device }, "values": values, "timestamps": timestamps });
    serde_json::to_writer(&mut *out, &line)?;
    out.push(b'\n');
    Ok(())
}

/// Loads series into a peer, in requests of a good size.
#[derive(Debug)]
pub struct Loader {
    peer: Peer,
    http: Http,
    vm: Vec<u8>,
    influx: String,
    influx_points: usize,
    /// Points sent.
    pub points: u64,
    /// Bytes sent.
    pub bytes: u64,
}

impl Loader {
    /// Connects to `peer` and, for InfluxDB, creates the database afresh.
    pub fn new(peer: &Peer) -> anyhow::Result<Loader> {
        let mut http =
            Http::connect(peer.addr).with_context(|| format!("cannot reach {} at {}", peer.kind.name(), peer.addr))?;
        match peer.kind {
            PeerKind::InfluxDb => {
                for q in [format!("DROP DATABASE {INFLUX_DB}"), format!("CREATE DATABASE {INFLUX_DB}")] {
                    http.post(&format!("/query?q={}", url_encode(&q)), "application/x-www-form-urlencoded", b"")?;
                }
            }
            PeerKind::VictoriaMetrics => {
                // Series of another run (or of anything else) would be in the answers and on
                // disk: the benchmark wants an empty server.
                let body = http.get("/api/v1/series/count")?;
                let answer: Value = serde_json::from_slice(&body)?;
                if answer["data"][0].as_u64() != Some(0) {
                    bail!(
                        "victoriametrics at {} already holds series ({answer}): start it on an empty -storageDataPath",
                        peer.addr
                    );
                }
            }
        }
        Ok(Loader {
            peer: peer.clone(),
            http,
            vm: Vec::new(),
            influx: String::new(),
            influx_points: 0,
            points: 0,
            bytes: 0,
        })
    }

    /// Adds points of one series.
    pub fn add(&mut self, metric: &str, device: &str, points: &[(i64, f64)]) -> anyhow::Result<()> {
        self.points += points.len() as u64;
        match self.peer.kind {
            PeerKind::VictoriaMetrics => {
                vm_import_line(&mut self.vm, metric, device, points)?;
                if self.vm.len() >= VM_BATCH_BYTES {
                    self.send()?;
                }
            }
            PeerKind::InfluxDb => {
                for &(t, v) in points {
                    influx_line(&mut self.influx, metric, device, t, v);
                    self.influx_points += 1;
                    if self.influx_points >= INFLUX_BATCH_POINTS {
                        self.send()?;
                    }
                }
            }
        }
        Ok(())
    }

    fn send(&mut self) -> anyhow::Result<()> {
        match self.peer.kind {
            PeerKind::VictoriaMetrics if !self.vm.is_empty() => {
                self.http.post("/api/v1/import", "application/json", &self.vm)?;
                self.bytes += self.vm.len() as u64;
                self.vm.clear();
            }
            PeerKind::InfluxDb if !self.influx.is_empty() => {
                let path = format!("/write?db={INFLUX_DB}&precision=ms");
                self.http.post(&path, "text/plain; charset=utf-8", self.influx.as_bytes())?;
                self.bytes += self.influx.len() as u64;
                self.influx.clear();
                self.influx_points = 0;
            }
            _ => {}
        }
        Ok(())
    }

    /// Sends what is left, then waits (up to `limit`) until the peer counts every point sent
    /// in `[from_ms, to_ms)`.
    pub fn finish(mut self, from_ms: i64, to_ms: i64, limit: Duration) -> anyhow::Result<()> {
        self.send()?;
        let deadline = Instant::now() + limit;
        loop {
            let counted = match self.peer.kind {
                PeerKind::VictoriaMetrics => {
                    self.http.get("/internal/force_flush")?;
                    let days = (to_ms - from_ms) / 86_400_000 + 2;
                    let q = format!("sum(count_over_time({{device!=\"\"}}[{days}d]))");
                    let path =
                        format!("/api/v1/query?query={}&time={}&nocache=1", url_encode(&q), vm_seconds(to_ms - 1));
                    let answer: Value = serde_json::from_slice(&self.http.get(&path)?)?;
                    answer["data"]["result"][0]["value"][1].as_str().and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0)
                        as u64
                }
                PeerKind::InfluxDb => {
                    let body = self.http.get(&influx_path("SELECT count(v) FROM /.*/"))?;
                    let answer: Value = serde_json::from_slice(&body)?;
                    let series = answer["results"][0]["series"].as_array().cloned().unwrap_or_default();
                    series.iter().filter_map(|s| s["values"][0][1].as_u64()).sum()
                }
            };
            if counted == self.points {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} counts {counted} points of the {} sent", self.peer.kind.name(), self.points);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// InfluxDB's `/query` of `q` in the benchmark's database, times as epoch ms.
fn influx_path(q: &str) -> String {
    format!("/query?db={INFLUX_DB}&epoch=ms&q={}", url_encode(q))
}

/// The path of one series' raw points in `[from_ms, to_ms)`.
pub fn raw_path(kind: PeerKind, metric: &str, device: &str, from_ms: i64, to_ms: i64) -> String {
    match kind {
        PeerKind::VictoriaMetrics => format!(
            "/api/v1/export?match[]={}&start={}&end={}",
            url_encode(&vm_selector(metric, Some(device))),
            vm_seconds(from_ms),
            vm_seconds(to_ms - 1)
        ),
        PeerKind::InfluxDb => influx_path(&format!(
            "SELECT v FROM {} WHERE device = {} AND time >= {from_ms}ms AND time < {to_ms}ms",
            influx_ident(metric),
            influx_quote(device)
        )),
    }
}

/// The path of the buckets of `step` (`1h`, `1d`: both peers' duration syntax) of one series
/// or (`device` none) of every series of `metric`, in `[from_ms, to_ms)`.
pub fn buckets_path(
    kind: PeerKind,
    metric: &str,
    device: Option<&str>,
    from_ms: i64,
    to_ms: i64,
    step: &str,
    step_ms: i64,
) -> String {
    match kind {
        PeerKind::VictoriaMetrics => format!(
            "/api/v1/query_range?query={}&start={}&end={}&step={step}&nocache=1",
            url_encode(&answers::vm_buckets_query(&vm_selector(metric, device), step)),
            vm_seconds(from_ms + step_ms - 1),
            vm_seconds(to_ms - 1)
        ),
        PeerKind::InfluxDb => {
            let device = device.map(|d| format!("device = {} AND ", influx_quote(d))).unwrap_or_default();
            influx_path(&format!(
                "SELECT count(v), min(v), max(v), sum(v), mean(v), first(v), last(v) FROM {} WHERE {device}time >= {from_ms}ms AND time < {to_ms}ms GROUP BY time({step}), device",
                influx_ident(metric)
            ))
        }
    }
}

/// The path of the latest value of every series, for a dataset that ends at `end_ms`.
pub fn latest_path(kind: PeerKind, end_ms: i64) -> String {
    match kind {
        PeerKind::VictoriaMetrics => {
            format!("/api/v1/query?query={}&time={}&nocache=1", url_encode("{device!=\"\"}"), vm_seconds(end_ms))
        }
        PeerKind::InfluxDb => influx_path("SELECT last(v) FROM /.*/ GROUP BY device"),
    }
}

/// A raw answer of `kind` read.
pub fn parse_raw(kind: PeerKind, body: &[u8]) -> anyhow::Result<Points> {
    match kind {
        PeerKind::VictoriaMetrics => answers::vm_export(body),
        PeerKind::InfluxDb => answers::influx_points(body),
    }
}

/// A buckets answer of `kind` read.
pub fn parse_buckets(kind: PeerKind, body: &[u8], step_ms: i64) -> anyhow::Result<BucketsByDevice> {
    match kind {
        PeerKind::VictoriaMetrics => answers::vm_buckets(body, step_ms),
        PeerKind::InfluxDb => answers::influx_buckets(body),
    }
}

/// A latest answer of `kind` read.
pub fn parse_latest(kind: PeerKind, body: &[u8]) -> anyhow::Result<LatestValues> {
    match kind {
        PeerKind::VictoriaMetrics => answers::vm_latest(body),
        PeerKind::InfluxDb => answers::influx_latest(body),
    }
}

/// Bytes of the files under `dir`.
pub fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { dir_bytes(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}

/// The size of `dir` once it has stopped changing (the same over `quiet`), or after `limit`.
pub fn settled_bytes(dir: &Path, quiet: Duration, limit: Duration) -> anyhow::Result<(u64, bool)> {
    let deadline = Instant::now() + limit;
    let mut last = dir_bytes(dir)?;
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = dir_bytes(dir)?;
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= quiet {
            return Ok((now, true));
        }
        if Instant::now() > deadline {
            return Ok((now, false));
        }
    }
}

/// The peer's size on disk after loading: VictoriaMetrics' after its flush and after a
/// forced merge, InfluxDB's once its cache is written out and its compactions are done (the
/// directory has not changed for 20 s).
pub fn disk(peer: &Peer, points: u64) -> anyhow::Result<Value> {
    let Some(dir) = &peer.data_dir else { return Ok(Value::Null) };
    let per_point = |bytes: u64| (bytes as f64 / points as f64 * 1000.0).round() / 1000.0;
    let limit = Duration::from_secs(600);
    match peer.kind {
        PeerKind::VictoriaMetrics => {
            let mut http = Http::connect(peer.addr)?;
            http.get("/internal/force_flush")?;
            let (flushed, _) = settled_bytes(dir, Duration::from_secs(5), limit)?;
            http.get("/internal/force_merge")?;
            let (merged, settled) = settled_bytes(dir, Duration::from_secs(10), limit)?;
            Ok(json!({
                "dir": dir,
                "bytes_after_flush": flushed,
                "bytes_per_point_after_flush": per_point(flushed),
                "bytes": merged,
                "bytes_per_point": per_point(merged),
                "settled": settled,
            }))
        }
        PeerKind::InfluxDb => {
            let (bytes, settled) = settled_bytes(dir, Duration::from_secs(20), limit)?;
            Ok(json!({ "dir": dir, "bytes": bytes, "bytes_per_point": per_point(bytes), "settled": settled }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_and_their_directories_from_options() {
        let peers = parse_peers(
            &["victoriametrics=http://127.0.0.1:8428".into(), "influxdb=http://127.0.0.1:8086/".into()],
            &["influxdb=/tmp/influx".into()],
        )
        .unwrap();
        assert_eq!(peers.len(), 2);
        assert_eq!(
            (peers[0].kind, peers[0].addr.port(), peers[0].data_dir.is_none()),
            (PeerKind::VictoriaMetrics, 8428, true)
        );
        assert_eq!((peers[1].kind, peers[1].data_dir.as_deref()), (PeerKind::InfluxDb, Some(Path::new("/tmp/influx"))));
        for (peers, data) in [
            (vec!["prometheus=http://127.0.0.1:9090"], vec![]),
            (vec!["vm=127.0.0.1:8428"], vec![]),
            (vec!["vm=http://127.0.0.1:8428/api"], vec![]),
            (vec!["vm"], vec![]),
            (vec!["vm=http://127.0.0.1:1", "victoriametrics=http://127.0.0.1:2"], vec![]),
            (vec!["vm=http://127.0.0.1:1"], vec!["influxdb=/tmp"]),
        ] {
            let peers: Vec<String> = peers.into_iter().map(String::from).collect();
            let data: Vec<String> = data.into_iter().map(String::from).collect();
            assert!(parse_peers(&peers, &data).is_err(), "{peers:?} {data:?}");
        }
    }

    #[test]
    fn line_protocol_escapes_what_it_must() {
        let mut out = String::new();
        influx_line(&mut out, "water_level", "ref-water-0001", 1_790_000_000_000, 182.5);
        influx_line(&mut out, "pm2,5 x", "a=b c,d", 1, 12.0);
        influx_line(&mut out, "w", "a", -5, 0.1 + 0.2);
        assert_eq!(
            out,
            "water_level,device=ref-water-0001 v=182.5 1790000000000\n\
             pm2\\,5\\ x,device=a\\=b\\ c\\,d v=12.0 1\n\
             w,device=a v=0.30000000000000004 -5\n"
        );
    }

    #[test]
    fn import_lines_are_json_lines() {
        let mut out = Vec::new();
        vm_import_line(&mut out, "w", "a\"b", &[(1000, 1.5), (2000, 2.0)]).unwrap();
        vm_import_line(&mut out, "w", "c", &[]).unwrap();
        let lines: Vec<Value> =
            out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect();
        assert_eq!(
            lines[0],
            json!({"metric": {"__name__": "w", "device": "a\"b"}, "values": [1.5, 2.0], "timestamps": [1000, 2000]})
        );
        assert_eq!(lines.len(), 2);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 2);
    }

    #[test]
    fn query_paths() {
        assert_eq!(url_encode("a b{c=\"d\"}~.-_"), "a%20b%7Bc%3D%22d%22%7D~.-_");
        assert_eq!(vm_seconds(1_795_046_399_999), "1795046399.999");
        assert_eq!(vm_seconds(-1), "-1.999");
        assert_eq!(
            raw_path(PeerKind::VictoriaMetrics, "w", "a", 86_400_000, 172_800_000),
            "/api/v1/export?match[]=%7B__name__%3D%22w%22%2Cdevice%3D%22a%22%7D&start=86400.000&end=172799.999"
        );
        assert_eq!(
            raw_path(PeerKind::InfluxDb, "w", "o'k", 0, 1000),
            format!(
                "/query?db={INFLUX_DB}&epoch=ms&q={}",
                url_encode("SELECT v FROM \"w\" WHERE device = 'o\\'k' AND time >= 0ms AND time < 1000ms")
            )
        );
        let vm = buckets_path(PeerKind::VictoriaMetrics, "w", None, 0, 7_200_000, "1h", 3_600_000);
        assert!(vm.ends_with("&start=3599.999&end=7199.999&step=1h&nocache=1"), "{vm}");
        let influx = buckets_path(PeerKind::InfluxDb, "w", Some("a"), 0, 7_200_000, "1h", 3_600_000);
        assert!(
            influx.contains(&url_encode(
                "WHERE device = 'a' AND time >= 0ms AND time < 7200000ms GROUP BY time(1h), device"
            )),
            "{influx}"
        );
    }

    #[test]
    fn directory_sizes_add_up_files_below() {
        let dir = std::env::temp_dir().join(format!("mekong-bench-peers-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a"), [0; 10]).unwrap();
        std::fs::write(dir.join("sub/b"), [0; 5]).unwrap();
        assert_eq!(dir_bytes(&dir).unwrap(), 15);
        assert_eq!(settled_bytes(&dir, Duration::from_millis(600), Duration::from_secs(5)).unwrap(), (15, true));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
