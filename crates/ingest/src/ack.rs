//! The acknowledgement thread: flushes the store once per round, for every group stored since
//! the last flush (group commit), then tells each device on its downlink topic that its pack
//! is durable, or that it was refused.
//!
//! Ordering is the point: a group reaches this thread only after its store write returned,
//! and acknowledgements go out only after a flush that started later. So an acknowledged
//! reading is on disk, whatever happens to the process afterwards.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use mekong_schema::downlink::{self, Downlink};
use mekong_store::Store;
use rumqttd::local::LinkTx;

use crate::pipeline::Outcome;
use crate::stats::Stats;
use crate::worker::now_ms;

/// The outcomes of one group, stored but not yet flushed.
#[derive(Debug)]
pub(crate) struct Group {
    pub outcomes: Vec<Outcome>,
}

/// Runs until the ingest thread hangs up, then flushes and acknowledges what is left.
pub(crate) fn run(groups: Receiver<Group>, mut tx: LinkTx, store: Store, stats: Arc<Stats>, acknowledge: bool) {
    let mut pending: Vec<Group> = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        let hung_up = match groups.recv_timeout(Duration::from_millis(100)) {
            Ok(group) => {
                pending.push(group);
                false
            }
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        // Everything that arrived while the last flush ran joins this one.
        pending.extend(groups.try_iter());
        if !pending.is_empty() {
            commit(&mut pending, &mut tx, &store, &stats, acknowledge, &mut buf);
        }
        if hung_up {
            return;
        }
    }
}

fn commit(pending: &mut Vec<Group>, tx: &mut LinkTx, store: &Store, stats: &Stats, acknowledge: bool, buf: &mut [u8]) {
    let stored = pending.iter().flat_map(|g| &g.outcomes).filter_map(|o| o.as_ref()?.as_ref().ok());
    let (packs, readings) = stored.fold((0u64, 0u64), |(p, r), a| (p + 1, r + a.summary.stored as u64));
    let started = std::time::Instant::now();
    if let Err(e) = store.flush() {
        // Nothing is acknowledged: the devices will resend, and the writes are idempotent.
        tracing::error!(error = %e, "store flush failed; not acknowledging {packs} packs");
        pending.clear();
        return;
    }
    stats.record_flush(packs, readings, started.elapsed().as_micros() as u64);
    if !acknowledge {
        pending.clear();
        return;
    }
    let server_ms = now_ms();
    let mut sent = 0;
    for outcome in pending.drain(..).flat_map(|g| g.outcomes).flatten() {
        let (device, message) = match &outcome {
            Ok(a) => {
                let readings = u32::try_from(a.summary.stored + a.summary.duplicates).unwrap_or(u32::MAX);
                (a.device.as_str(), Downlink::Ack { up_to_ms: a.up_to_ms, readings, server_ms, seq: a.seq })
            }
            Err(r) => match &r.device {
                Some(device) => (device.as_str(), Downlink::Refused { reason: r.kind, server_ms, seq: r.seq }),
                None => continue,
            },
        };
        let Ok(n) = message.encode(buf) else { continue };
        let topic = downlink::Topic(device).to_string();
        if let Err(e) = tx.publish(topic, buf[..n].to_vec()) {
            tracing::error!(error = %e, "cannot publish acknowledgements: broker link closed");
            break;
        }
        sent += 1;
    }
    stats.record_downlinks(sent);
}
