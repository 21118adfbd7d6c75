//! Backups from the command line and on a schedule: `mekong backup` straight from the data
//! directory of a stopped mekong ([`local`]) or through a running server's `POST /v1/backups`
//! with an admin token ([`remote`]); `mekong backup verify`, `list`, `prune`; `mekong restore`;
//! and the server's thread that takes a backup when the newest is `[backup] every_secs` old.
//! The repository and what a backup holds are `mekong_store::backup`'s.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use mekong_store::backup::{BackupOptions, BackupReport, Repository};
use mekong_store::{Store, StoreError, StoreOptions};
use serde::{Deserialize, Serialize};

use crate::export::TOKEN_ENV;

/// `[backup]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// The repository the server writes its backups into (scheduled ones and
    /// `POST /v1/backups`): the only place it writes them. Empty: backups through the server
    /// are off.
    pub dir: PathBuf,
    /// A scheduled backup is taken once the newest backup of the repository is this old;
    /// 0: none (backups only when asked).
    pub every_secs: u64,
    /// Backups kept, the newest; after each backup the server takes, older ones and the day
    /// files only they hold are deleted. 0 keeps all.
    pub keep: usize,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig { dir: PathBuf::new(), every_secs: 86_400, keep: 7 }
    }
}

impl BackupConfig {
    /// The repository, if one is set.
    pub fn repository(&self) -> Option<Repository> {
        (!self.dir.as_os_str().is_empty()).then(|| Repository::new(&self.dir))
    }

    /// How many to keep, in the store's terms.
    pub fn keep(&self) -> Option<usize> {
        (self.keep > 0).then_some(self.keep)
    }

    /// Refuses a repository inside the data directory (a restore of it would hold itself, and
    /// `mekong compact` replaces that directory whole).
    pub fn validate(&self, data_dir: &Path) -> anyhow::Result<()> {
        if !self.dir.as_os_str().is_empty() && absolute(&self.dir).starts_with(absolute(data_dir)) {
            bail!("backup.dir {:?} is inside storage.data_dir {:?}: put backups elsewhere", self.dir, data_dir);
        }
        Ok(())
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Opens the store of `dir` for a command that needs it alone, or says how to go through the
/// server that holds it.
fn open_stopped(dir: &Path, options: &StoreOptions, what: &str) -> anyhow::Result<Store> {
    if !dir.is_dir() {
        bail!("no data directory at {}", dir.display());
    }
    match Store::open(dir, options) {
        Ok(store) => Ok(store),
        Err(StoreError::Locked(_)) => bail!(
            "the data directory {} is in use: a mekong is serving it. {what} through that server instead: `mekong \
             backup --url http://HOST:PORT` with an admin token in ${TOKEN_ENV}; it writes into its [backup] dir",
            dir.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot open the store in {}", dir.display())),
    }
}

/// Backs up the data directory `data` of a stopped mekong into `to`.
pub fn local(data: &Path, options: &StoreOptions, to: &Path, backup: &BackupOptions) -> anyhow::Result<BackupReport> {
    let store = open_stopped(data, options, "Back up")?;
    let report =
        Repository::new(to).backup(&store, backup).with_context(|| format!("backup into {} failed", to.display()))?;
    print_report(&report);
    Ok(report)
}

fn print_report(r: &BackupReport) {
    let b = &r.backup;
    println!(
        "backup {}: {} readings of {} series, {} day files, {} bytes; copied {} files ({} bytes), {} already in the \
         repository; ingest paused {:.1} ms; took {:.1} s",
        b.id,
        b.readings,
        b.series,
        b.files,
        b.bytes,
        r.copied_files,
        r.copied_bytes,
        r.reused_files,
        r.pause.as_secs_f64() * 1000.0,
        r.took.as_secs_f64()
    );
    if let Some(p) = r.pruned.as_ref().filter(|p| !p.backups.is_empty()) {
        println!("retention deleted backups {} and {} day files ({} bytes)", p.backups.join(", "), p.files, p.bytes);
    }
}

/// Asks the server at `url` for a backup (`POST /v1/backups`) into its `[backup] dir`, with
/// the admin token in [`TOKEN_ENV`]; returns its answer.
pub async fn remote(url: &str, full: bool) -> anyhow::Result<serde_json::Value> {
    let endpoint = format!("{}/v1/backups", url.trim_end_matches('/'));
    let mut request = reqwest::Client::new().post(&endpoint).json(&serde_json::json!({ "full": full }));
    if let Ok(token) = std::env::var(TOKEN_ENV) {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.with_context(|| format!("cannot reach {endpoint}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        // The API's errors are `{"error": {"code", "message"}}`; the token is never in them.
        let message = value["error"]["message"].as_str().map_or(body.clone(), str::to_owned);
        let hint = match status.as_u16() {
            401 => format!(" (set ${TOKEN_ENV} to an admin token)"),
            403 => " (the token needs the admin scope)".to_owned(),
            _ => String::new(),
        };
        bail!("{endpoint} answered {status}: {message}{hint}");
    }
    let b = &value["backup"];
    println!(
        "backup {} (point {}): {} readings of {} series, {} day files, {} bytes; copied {} files ({} bytes); ingest \
         paused {:.1} ms; took {:.1} s",
        b["id"].as_str().unwrap_or("?"),
        b["point"].as_str().unwrap_or("?"),
        b["readings"],
        b["series"],
        b["files"],
        b["bytes"],
        value["copied_files"],
        value["copied_bytes"],
        value["pause_ms"].as_f64().unwrap_or(0.0),
        value["took_ms"].as_f64().unwrap_or(0.0) / 1000.0
    );
    Ok(value)
}

/// `mekong backup verify`: fails, naming every damaged file, unless the backup is whole.
pub fn verify(dir: &Path, id: Option<&str>) -> anyhow::Result<()> {
    let report = Repository::new(dir).verify(id).with_context(|| format!("cannot check {}", dir.display()))?;
    if !report.problems.is_empty() {
        for problem in &report.problems {
            eprintln!("{problem}");
        }
        bail!("backup {} is damaged: {} problems (above)", report.id, report.problems.len());
    }
    println!(
        "backup {} is whole: {} day files, {} blocks decoded, {} readings, counts match the manifest",
        report.id, report.files, report.blocks, report.readings
    );
    Ok(())
}

/// `mekong backup list`.
pub fn list(dir: &Path) -> anyhow::Result<()> {
    for b in Repository::new(dir).list().with_context(|| format!("cannot read {}", dir.display()))? {
        println!("{}  {} readings  {} series  {} day files  {} bytes", b.id, b.readings, b.series, b.files, b.bytes);
    }
    Ok(())
}

/// `mekong backup prune`.
pub fn prune(dir: &Path, keep: usize) -> anyhow::Result<()> {
    let p = Repository::new(dir).prune(keep).with_context(|| format!("cannot prune {}", dir.display()))?;
    println!("deleted {} backups and {} day files ({} bytes)", p.backups.len(), p.files, p.bytes);
    Ok(())
}

/// `mekong restore`: backup `id` (the newest if `None`) of `from` into the empty data
/// directory `data`.
pub fn restore(from: &Path, id: Option<&str>, data: &Path) -> anyhow::Result<()> {
    let r = Repository::new(from)
        .restore(id, data)
        .with_context(|| format!("cannot restore from {} into {}", from.display(), data.display()))?;
    println!(
        "restored backup {} (point {} ms) into {}: {} readings, {} day files, {} bytes",
        r.id,
        r.point_ms,
        data.display(),
        r.readings,
        r.files,
        r.bytes
    );
    Ok(())
}

/// The server's scheduled backups: a thread that takes one whenever the newest backup of the
/// repository is `every` old (at once if there is none), so that restarts neither skip nor
/// repeat one.
#[derive(Debug)]
pub struct Scheduler {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

/// How often the thread looks again, at most: a failed backup is tried again after this.
const LOOK_EVERY: Duration = Duration::from_secs(60);

impl Scheduler {
    /// Starts the thread.
    pub fn start(store: Store, repository: Repository, every: Duration, keep: Option<usize>) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("mekong-backup".into()).spawn(move || loop {
            let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            let newest = match repository.list() {
                Ok(list) => list.last().map(|b| b.point_ms),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the backup repository; trying again in a minute");
                    Some(now_ms)
                }
            };
            let due_ms = newest.map_or(now_ms, |t| t.saturating_add(every.as_millis() as i64));
            let wait = if due_ms <= now_ms {
                match repository.backup(&store, &BackupOptions { full: false, keep }) {
                    Ok(_) => Duration::ZERO,
                    Err(e) => {
                        tracing::error!(error = %e, "scheduled backup failed; trying again in a minute");
                        LOOK_EVERY
                    }
                }
            } else {
                Duration::from_millis((due_ms - now_ms) as u64).min(LOOK_EVERY)
            };
            match stopped.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        })?;
        Ok(Scheduler { stop, thread })
    }

    /// Ends the thread after the backup it is taking, if any, and waits for it.
    pub fn stop(self) {
        drop(self.stop);
        if self.thread.join().is_err() {
            tracing::error!("the backup thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_repository_inside_the_data_directory_is_refused() {
        let config = |dir: &str| BackupConfig { dir: dir.into(), ..BackupConfig::default() };
        assert!(config("./data/backups").validate(Path::new("./data")).is_err());
        assert!(config("data").validate(Path::new("./data")).is_err());
        assert!(config("/srv/backups").validate(Path::new("./data")).is_ok());
        assert!(config("./data-backups").validate(Path::new("./data")).is_ok());
        assert!(config("").validate(Path::new("./data")).is_ok());
        assert!(config("").repository().is_none());
        assert_eq!(BackupConfig { keep: 0, ..config("x") }.keep(), None);
    }
}
