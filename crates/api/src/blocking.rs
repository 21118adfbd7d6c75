//! Store queries whose cost grows with the data run off the async workers, a few at a time.
//!
//! sled reads are synchronous, and decoding chunks into buckets is CPU work that grows with
//! the range asked for: run on an async worker, one heavy query holds that worker, and with it
//! every other request the worker would have served (`/healthz` included). [`QueryPool::run`]
//! moves such work to tokio's blocking threads.
//!
//! Why a bound on top of `spawn_blocking`: tokio's blocking pool grows to 512 threads, so a
//! flood of heavy queries would become hundreds of threads sharing a few cores, each holding
//! its decoded chunks and buckets, and starving the ingest threads of CPU. Once the pages are
//! cached a query is CPU-bound, so more queries at once than cores finish none sooner. The
//! bound is a semaphore: a query waits for a permit asynchronously (no thread is held), in
//! arrival order (tokio's semaphore is fair), and a request dropped while it waits leaves the
//! queue without running. The permit moves into the blocking
//! task and is released when the work ends, not when the request ends, so an abandoned query
//! that already started still counts against the bound until it finishes.
//!
//! What runs here: every store read whose cost grows with the data or the fleet: points,
//! aggregates, and the fleet-wide listings `/v1/devices` and `/v1/latest`, which copy one
//! entry per device or series out of the store's in-memory mirror and write it as JSON (0.1
//! to 0.2 ms for 200 devices, 9 to 20 ms for 10,000; see `docs/api-blocking.md`). What stays
//! on the workers: lookups of one device or series in that mirror, the ingest counters, and
//! `/healthz`, which must answer even when every permit is taken.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::error::ApiError;

/// Runs blocking store work on tokio's blocking threads, at most `max` at a time.
#[derive(Debug, Clone)]
pub struct QueryPool {
    permits: Arc<Semaphore>,
}

impl QueryPool {
    /// At most `max` queries at once (at least one).
    pub fn new(max: usize) -> Self {
        QueryPool { permits: Arc::new(Semaphore::new(max.max(1))) }
    }

    /// One query per core of this machine, as far as the standard library can tell.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, usize::from))
    }

    /// Runs `work` on a blocking thread once a permit is free, and hands back its result.
    /// A panic in `work`, or a runtime shutting down under it, is a 500, logged with the
    /// cause.
    pub async fn run<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    {
        // The semaphore is never closed; an error here would be a bug, still not a panic.
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|e| ApiError::Internal(format!("query pool: {e}")))?;
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        });
        match task.await {
            Ok(result) => result,
            Err(e) => Err(ApiError::Internal(format!("store query did not finish: {e}"))),
        }
    }
}
