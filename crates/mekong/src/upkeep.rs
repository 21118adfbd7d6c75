//! The store's upkeep thread: every so often, fold the hour windows that have closed into
//! blocks with their rollups, then apply the retention rules.

use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mekong_ingest::Stats;
use mekong_store::{RetentionPolicy, Store};

/// A running upkeep thread; [`Upkeep::stop`] ends it.
#[derive(Debug)]
pub struct Upkeep {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

/// When and what the upkeep does.
#[derive(Debug, Clone)]
pub struct UpkeepOptions {
    /// Time between passes; the first runs at once.
    pub every: Duration,
    /// A window is folded once it ended this long ago.
    pub fold_after: Duration,
    /// What to drop.
    pub retention: RetentionPolicy,
}

impl Upkeep {
    /// Starts the thread; each pass it finishes is noted in `stats` (for `/healthz`).
    pub fn start(store: Store, options: UpkeepOptions, stats: Arc<Stats>) -> std::io::Result<Upkeep> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("mekong-upkeep".into()).spawn(move || loop {
            if pass(&store, &options, &stopped) {
                stats.record_upkeep_pass();
            }
            match stopped.recv_timeout(options.every) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        })?;
        Ok(Upkeep { stop, thread })
    }

    /// Ends the thread after the series it is folding now, and waits for it.
    pub fn stop(self) {
        drop(self.stop);
        if self.thread.join().is_err() {
            tracing::error!("the upkeep thread panicked");
        }
    }
}

/// One pass: fold, then expire; whether it finished (neither step failed nor was stopped).
fn pass(store: &Store, options: &UpkeepOptions, stopped: &mpsc::Receiver<()>) -> bool {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let before_ms = now_ms.saturating_sub(options.fold_after.as_millis() as i64);
    let keep_going = || matches!(stopped.try_recv(), Err(TryRecvError::Empty));
    let folded = match store.fold(before_ms, keep_going) {
        Ok(r) => {
            if r.hours + r.days > 0 {
                tracing::info!(hours = r.hours, days = r.days, chunks = r.chunks_in, points = r.points, "folded");
            }
            true
        }
        // The store is left as it was by the failing batch; the next pass tries again.
        Err(e) => {
            tracing::error!(error = %e, "folding failed");
            false
        }
    };
    if !keep_going() {
        return false;
    }
    if options.retention.rules.is_empty() {
        return folded;
    }
    match store.expire(now_ms, &options.retention) {
        Ok(r) => {
            if r.blocks + r.rollups > 0 {
                tracing::info!(blocks = r.blocks, points = r.points, rollups = r.rollups, "expired old data");
            }
            folded
        }
        Err(e) => {
            tracing::error!(error = %e, "retention failed");
            false
        }
    }
}
