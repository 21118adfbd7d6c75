//! `mekong export`: a time range of readings as CSV or Parquet, either straight from the data
//! directory of a stopped mekong ([`local`]) or through a running server's `GET /v1/export`
//! with an admin token ([`remote`]). The output is written to `FILE.partial` and renamed
//! once whole, so a failed export never leaves a file that looks complete. On a terminal
//! (stderr) a progress bar is drawn; otherwise one line at the end says what was done.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mekong_export::{Format, Progress, Query};
use mekong_store::{Store, StoreError, StoreOptions};

/// The environment variable that holds the API token for `--url` (never a flag: flags end up
/// in shell histories and process listings).
pub const TOKEN_ENV: &str = "MEKONG_TOKEN";

/// Where the export goes: a file (through `FILE.partial`), or standard output for `-`.
#[derive(Debug)]
pub struct Output {
    path: Option<PathBuf>,
}

impl Output {
    /// `-` is standard output.
    pub fn new(path: &Path) -> Output {
        Output { path: (path != Path::new("-")).then(|| path.to_owned()) }
    }

    fn partial(&self) -> Option<PathBuf> {
        self.path.as_ref().map(|p| {
            let mut name = p.as_os_str().to_owned();
            name.push(".partial");
            PathBuf::from(name)
        })
    }

    fn open(&self) -> anyhow::Result<Box<dyn Write + Send>> {
        Ok(match self.partial() {
            Some(partial) => Box::new(BufWriter::with_capacity(
                1 << 20,
                File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?,
            )),
            None => Box::new(BufWriter::with_capacity(1 << 20, std::io::stdout())),
        })
    }

    /// Syncs the file and gives it its name.
    fn done(&self) -> anyhow::Result<()> {
        if let (Some(path), Some(partial)) = (&self.path, self.partial()) {
            File::open(&partial)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("cannot sync {}", partial.display()))?;
            std::fs::rename(&partial, path)
                .with_context(|| format!("cannot rename {} to {}", partial.display(), path.display()))?;
        }
        Ok(())
    }

    fn failed(&self) {
        if let Some(partial) = self.partial() {
            let _ = std::fs::remove_file(partial);
        }
    }

    fn name(&self) -> String {
        self.path.as_ref().map_or_else(|| "standard output".into(), |p| p.display().to_string())
    }
}

/// Exports from the data directory `dir`, which no running mekong may hold.
pub fn local(dir: &Path, options: &StoreOptions, query: Query, format: Format, output: &Output) -> anyhow::Result<()> {
    // Opening creates a store where there is none: a mistyped path must not look like an
    // empty city.
    if !dir.is_dir() {
        bail!("no data directory at {}", dir.display());
    }
    let store = match Store::open(dir, options) {
        Ok(store) => store,
        Err(StoreError::Locked(_)) => bail!(
            "the data directory {} is in use: a mekong is serving it. Export through that server instead: \
             `mekong export --url http://HOST:PORT ...` with an admin token in ${TOKEN_ENV}",
            dir.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot open the store in {}", dir.display())),
    };
    let out = output.open()?;
    let started = Instant::now();
    let mut bar = Bar::new();
    let result = mekong_export::run(&store, query, format, out, |p| bar.readings(p, started));
    bar.clear();
    let (mut out, progress) = match result {
        Ok(done) => done,
        Err(e) => {
            output.failed();
            return Err(e).context("the export failed");
        }
    };
    out.flush().context("cannot write the export")?;
    drop(out);
    output.done()?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "exported {} readings of {} series to {} in {secs:.1} s ({:.0} readings/s)",
        progress.readings,
        progress.series_total,
        output.name(),
        progress.readings as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// Exports through the server at `url` (`GET /v1/export`), with the admin token in
/// [`TOKEN_ENV`] if set.
pub async fn remote(url: &str, query: &Query, format: Format, output: &Output) -> anyhow::Result<()> {
    let mut params: Vec<(&str, String)> = vec![
        ("from", query.from_ms.to_string()),
        ("to", query.to_ms.to_string()),
        ("format", format.as_str().to_owned()),
    ];
    if let Some(kind) = &query.kind {
        params.push(("kind", kind.clone()));
    }
    if !query.devices.is_empty() {
        params.push(("device", query.devices.join(",")));
    }
    if !query.metrics.is_empty() {
        params.push(("metric", query.metrics.join(",")));
    }
    let endpoint = format!("{}/v1/export", url.trim_end_matches('/'));
    let mut request = reqwest::Client::new().get(&endpoint).query(&params);
    if let Ok(token) = std::env::var(TOKEN_ENV) {
        request = request.bearer_auth(token);
    }
    let mut response = request.send().await.with_context(|| format!("cannot reach {endpoint}"))?;
    let status = response.status();
    if !status.is_success() {
        // The API's errors are `{"error": {"code", "message"}}`; the token is never in them.
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or(body);
        let hint = match status.as_u16() {
            401 => format!(" (set ${TOKEN_ENV} to an admin token)"),
            403 => " (the token needs the admin scope)".to_owned(),
            _ => String::new(),
        };
        bail!("{endpoint} answered {status}: {message}{hint}");
    }
    let mut out = output.open()?;
    let started = Instant::now();
    let mut bar = Bar::new();
    let mut bytes: u64 = 0;
    let copied: anyhow::Result<()> = async {
        while let Some(chunk) = response.chunk().await.context("the export was cut short")? {
            out.write_all(&chunk).context("cannot write the export")?;
            bytes += chunk.len() as u64;
            bar.bytes(bytes, started);
        }
        out.flush().context("cannot write the export")
    }
    .await;
    bar.clear();
    drop(out);
    if let Err(e) = copied {
        output.failed();
        return Err(e);
    }
    output.done()?;
    eprintln!("exported {bytes} bytes to {} in {:.1} s", output.name(), started.elapsed().as_secs_f64());
    Ok(())
}

/// The progress bar on a terminal; nothing elsewhere.
struct Bar {
    terminal: bool,
    drawn: Option<Instant>,
}

impl Bar {
    fn new() -> Bar {
        Bar { terminal: std::io::stderr().is_terminal(), drawn: None }
    }

    fn due(&mut self) -> bool {
        let due = self.terminal && self.drawn.is_none_or(|t| t.elapsed() >= Duration::from_millis(200));
        if due {
            self.drawn = Some(Instant::now());
        }
        due
    }

    fn readings(&mut self, p: &Progress, started: Instant) {
        if !self.due() {
            return;
        }
        // Estimates of partly covered series can fall short: the bar never passes 100 %.
        let share =
            if p.readings_estimate == 0 { 1.0 } else { (p.readings as f64 / p.readings_estimate as f64).min(1.0) };
        let width = 30;
        let filled = (share * width as f64) as usize;
        let rate = p.readings as f64 / started.elapsed().as_secs_f64().max(1e-9);
        eprint!(
            "\r\x1b[2K[{}{}] {:3.0}%  {} of ~{} readings, {}/{} series, {:.0}/s",
            "#".repeat(filled),
            ".".repeat(width - filled),
            share * 100.0,
            p.readings,
            p.readings_estimate.max(p.readings),
            p.series_done,
            p.series_total,
            rate
        );
    }

    fn bytes(&mut self, bytes: u64, started: Instant) {
        if self.due() {
            let rate = bytes as f64 / started.elapsed().as_secs_f64().max(1e-9);
            eprint!("\r\x1b[2K{} MiB received, {:.1} MiB/s", bytes >> 20, rate / 1_048_576.0);
        }
    }

    fn clear(&mut self) {
        if self.drawn.is_some() {
            eprint!("\r\x1b[2K");
        }
    }
}
