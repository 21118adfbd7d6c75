//! Webhooks: each change POSTed as JSON to every configured URL, signed with HMAC-SHA256,
//! from a durable outbox per webhook, in order, retried with exponential back-off and jitter.
//!
//! Signature: `X-Mekong-Signature: sha256=<hex of HMAC-SHA256(secret, timestamp "." body)>`,
//! with `X-Mekong-Timestamp` the Unix time in seconds of the attempt, so that a receiver can
//! refuse an old request replayed. `X-Mekong-Delivery` is the change's sequence number: a
//! change is delivered at least once (a crash after the receiver's answer and before the
//! outbox entry is removed sends it again), so a receiver that must not see one twice keeps
//! the last number it took.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mekong_schema::webhook;
use mekong_store::{RecordWrite, Store};
use tokio::sync::Notify;

use crate::now_ms;
use crate::records::{outbox_prefix, OUTBOX};

/// A webhook's secret: never printed (its `Debug` says `<redacted>`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One webhook.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// Its name (the outbox's and the delivery log's): letters, digits, `-`, `_`.
    pub name: String,
    /// Where to POST.
    pub url: String,
    /// The HMAC key.
    pub secret: Secret,
    /// How long one attempt may take.
    pub timeout: Duration,
    /// The first wait after a failed attempt; it doubles up to `retry_max`.
    pub retry_min: Duration,
    /// The longest wait between attempts.
    pub retry_max: Duration,
}

/// The signature header's value for `body` sent at `timestamp` (Unix seconds): the wire
/// contract's ([`mekong_schema::webhook::signature`]).
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut out = [0u8; webhook::SIGNATURE_LEN];
    webhook::signature(secret, timestamp, body, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// One attempt, for the delivery log.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The webhook.
    pub webhook: String,
    /// The change's sequence number.
    pub seq: u64,
    /// Which attempt (1 for the first).
    pub attempt: u32,
    /// When it ended, ms since the epoch.
    pub at_ms: i64,
    /// Whether the receiver took it (a 2xx answer).
    pub delivered: bool,
    /// The receiver's status, if it answered.
    pub status: Option<u16>,
    /// Why it failed, if it did (no URL, no secret).
    pub error: Option<String>,
    /// How long the attempt took, in ms.
    pub took_ms: u64,
}

/// The most recent attempts of every webhook, bounded.
#[derive(Debug, Default)]
pub struct DeliveryLog {
    entries: Mutex<VecDeque<Delivery>>,
}

/// Attempts the delivery log keeps.
const LOG_CAPACITY: usize = 1_000;

impl DeliveryLog {
    fn push(&self, delivery: Delivery) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() == LOG_CAPACITY {
            entries.pop_front();
        }
        entries.push_back(delivery);
    }

    /// The attempts kept, oldest first.
    pub fn entries(&self) -> Vec<Delivery> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }
}

/// A running webhook: its options and what wakes its sender.
#[derive(Debug)]
pub(crate) struct Webhook {
    pub options: WebhookOptions,
    pub wake: Notify,
}

/// A random number from the standard library's per-process random keys (no new dependency
/// for the jitter of back-offs).
fn random() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(now_ms());
    h.finish()
}

/// The wait after `failures` failed attempts in a row: exponential, capped, with "equal
/// jitter" (half fixed, half random) so that webhooks that failed together do not retry
/// together.
pub(crate) fn backoff(options: &WebhookOptions, failures: u32) -> Duration {
    let base = options.retry_min.saturating_mul(1u32 << failures.min(20)).min(options.retry_max);
    let half = base / 2;
    let jitter = half.as_millis() as u64;
    half + Duration::from_millis(if jitter == 0 { 0 } else { random() % (jitter + 1) })
}

/// Sends `hook`'s outbox, in order, until the runtime stops: the oldest entry until the
/// receiver takes it, then the next; waits to be woken when the outbox is empty.
pub(crate) async fn run(hook: Arc<Webhook>, store: Store, log: Arc<DeliveryLog>, client: reqwest::Client) {
    let prefix = outbox_prefix(&hook.options.name);
    let mut failures: u32 = 0;
    loop {
        let next = {
            let (store, prefix) = (store.clone(), prefix.clone());
            tokio::task::spawn_blocking(move || store.scan_records_from(OUTBOX, &prefix, 1)).await
        };
        let (key, body) = match next {
            Ok(Ok(mut found)) => match found.pop().filter(|(k, _)| k.starts_with(&prefix)) {
                Some(entry) => entry,
                None => {
                    // A wake while the outbox was read is kept by Notify (one permit); the
                    // timeout covers a store that could not be read.
                    let _ = tokio::time::timeout(Duration::from_secs(5), hook.wake.notified()).await;
                    continue;
                }
            },
            Ok(Err(e)) => {
                tracing::warn!(webhook = %hook.options.name, error = %e, "cannot read the webhook's outbox");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(_) => return,
        };
        let seq = key[prefix.len()..].try_into().map(u64::from_be_bytes).unwrap_or(0);
        let started = std::time::Instant::now();
        let result = attempt(&client, &hook.options, seq, body).await;
        let took_ms = started.elapsed().as_millis() as u64;
        let (delivered, status, error) = match result {
            Ok(status) => (status.is_success(), Some(status.as_u16()), None),
            Err(e) => (false, None, Some(e)),
        };
        log.push(Delivery {
            webhook: hook.options.name.clone(),
            seq,
            attempt: failures + 1,
            at_ms: now_ms(),
            delivered,
            status,
            error: error.clone(),
            took_ms,
        });
        if delivered {
            failures = 0;
            let store = store.clone();
            let removed = tokio::task::spawn_blocking(move || {
                store.write_records(&[RecordWrite::Delete { space: OUTBOX, key: &key }])
            })
            .await;
            if !matches!(removed, Ok(Ok(_))) {
                // Sent again later: at least once.
                tracing::warn!(webhook = %hook.options.name, seq, "cannot remove a delivered change from the outbox");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        } else {
            let wait = backoff(&hook.options, failures);
            failures = failures.saturating_add(1);
            tracing::debug!(webhook = %hook.options.name, seq, ?status, error = ?error, ?wait, "webhook delivery failed");
            tokio::time::sleep(wait).await;
        }
    }
}

/// One POST of `body`; the receiver's status, or why there was none (without the URL, which
/// may carry a token).
async fn attempt(
    client: &reqwest::Client,
    options: &WebhookOptions,
    seq: u64,
    body: Vec<u8>,
) -> Result<reqwest::StatusCode, String> {
    let timestamp = (now_ms() / 1000).max(0) as u64;
    let signature = signature(&options.secret.0, timestamp, &body);
    client
        .post(&options.url)
        .timeout(options.timeout)
        .header("content-type", "application/json")
        .header(webhook::TIMESTAMP_HEADER, timestamp.to_string())
        .header(webhook::SIGNATURE_HEADER, signature)
        .header(webhook::DELIVERY_HEADER, seq.to_string())
        .header("x-mekong-webhook", &options.name)
        .body(body)
        .send()
        .await
        .map(|r| r.status())
        .map_err(|e| e.without_url().to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_secret_is_never_printed_and_waits_grow_within_their_bounds() {
        // The signature's known answer is the schema crate's test; here, that it is used.
        assert_eq!(signature(b"Jefe", 1_790_000_000, b"{}").len(), 71);
        let options = WebhookOptions {
            name: "ops".into(),
            url: "http://x".into(),
            secret: Secret(b"hunter2".to_vec()),
            timeout: Duration::from_secs(1),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(2),
        };
        assert!(!format!("{options:?}").contains("hunter2"));
        for failures in 0..30 {
            let wait = backoff(&options, failures);
            let base = Duration::from_millis(100).saturating_mul(1 << failures.min(20)).min(Duration::from_secs(2));
            assert!(wait >= base / 2 && wait <= base, "{failures}: {wait:?}");
        }
    }
}
