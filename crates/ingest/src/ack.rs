//! The acknowledgement thread: flushes the store once per round, for every group stored since
//! the last flush (group commit), then tells each device that its pack is durable, or that it
//! was refused: the broker's PUBACK, which it held until now, and a downlink on the device's
//! downlink topic (none for an acknowledgement of downlink version 3, which is the PUBACK).
//!
//! Ordering is the point: a group reaches this thread only after its store write returned,
//! and acknowledgements go out only after a flush that started later, of the same store
//! generation the group was written to. So an acknowledged reading is on disk, whatever
//! happens to the process afterwards. A refusal that rests on stored data (a replayed
//! sequence number, a unit that differs from the series') waits for that flush too; a
//! refusal about the pack alone goes out whatever the store does. When the store cannot
//! write, nothing else is answered: the devices resend after their timeout, and resends are
//! idempotent.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use mekong_feed::{Feed, Stored};
use mekong_schema::downlink::{self, AckList, Downlink, PackAck};
use mekong_schema::topic::UPLINK_FILTER;
use mekong_stats::Stats;
use mekong_store::{Generation, Store};
use rumqttd::local::LinkTx;
use rumqttd::protocol::PubAckReason;

use crate::outbox::SharedOutbox;
use crate::pipeline::{Handled, Outcome};

/// Runs until the ingest thread hangs up, then flushes and acknowledges what is left.
pub(crate) fn run(
    groups: Receiver<Handled>,
    mut tx: LinkTx,
    store: Store,
    stats: Arc<Stats>,
    feed: Feed,
    acknowledge: bool,
    outbox: Option<SharedOutbox>,
) {
    let mut pending: Vec<Handled> = Vec::new();
    // The longest downlink is a full list (about 175 bytes).
    let mut buf = [0u8; 256];
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
            commit(&mut pending, &mut tx, &store, &stats, &feed, acknowledge, &mut buf);
            // Read by `commit`; cleared here, once the outbox has heard.
            if let Some(outbox) = &outbox {
                if let Some(mark) = durable_mark(&pending) {
                    outbox.0.durable(mark);
                }
            }
            pending.clear();
        }
        if hung_up {
            return;
        }
    }
}

fn commit(
    pending: &mut [Handled],
    tx: &mut LinkTx,
    store: &Store,
    stats: &Stats,
    feed: &Feed,
    acknowledge: bool,
    buf: &mut [u8],
) {
    let started = std::time::Instant::now();
    // A failed flush is logged by the store, once per failure.
    let durable = store.flush().ok().map(|f| f.generation);
    for group in pending.iter_mut() {
        // An outbox record is durable with its group's generation, like its pack.
        group.outbox = group.outbox.filter(|(generation, _)| Some(*generation) == durable);
    }
    let flush_micros = started.elapsed().as_micros() as u64;
    let answers = answers(pending, durable, crate::now_ms());
    if durable.is_some() {
        stats.record_flush(answers.packs, answers.readings, flush_micros);
    }
    stats.record_withheld(answers.withheld);
    let pubacks = pubacks(pending, durable);
    if !pubacks.is_empty() {
        if let Err(e) = tx.release_acks(UPLINK_FILTER, pubacks) {
            tracing::error!(error = %e, "cannot release PUBACKs: broker link closed");
        }
    }
    let mut sent = 0;
    for (device, message) in answers.messages.iter().filter(|_| acknowledge) {
        let Ok(n) = message.encode(buf) else { continue };
        let topic = downlink::Topic(device).to_string();
        if let Err(e) = tx.publish(topic, buf[..n].to_vec()) {
            tracing::error!(error = %e, "cannot publish acknowledgements: broker link closed");
            break;
        }
        sent += 1;
    }
    stats.record_downlinks(sent);
    // The devices hear first: the feed's followers (the stream, the alert engine) must not
    // delay an acknowledgement.
    if durable.is_some() {
        feed.publish_stored(new_readings(pending, durable));
    }
}

/// The highest outbox mark the last flush made durable (`commit` kept only those).
fn durable_mark(pending: &[Handled]) -> Option<u64> {
    pending.iter().filter_map(|group| group.outbox.map(|(_, mark)| mark)).max()
}

/// What the packs of `pending` that the flush of `durable` made durable added, in order.
fn new_readings(pending: &mut [Handled], durable: Option<Generation>) -> Vec<Stored> {
    pending
        .iter_mut()
        .filter(|group| group.generation == durable)
        .flat_map(|group| group.outcomes.iter_mut())
        .filter_map(|outcome| match outcome {
            Outcome::Accepted(a) => a.new_readings.take(),
            _ => None,
        })
        .collect()
}

/// The PUBACKs the broker holds that the flush of `durable` (`None`: it failed) lets go, by
/// uplink log offset, ascending: the same packs as [`answers`] answers. A pack left out (not
/// durable, or lost before the ingest thread read it) gets no PUBACK; its device resends it.
fn pubacks(pending: &[Handled], durable: Option<Generation>) -> Vec<(u64, PubAckReason)> {
    let mut out = Vec::new();
    for group in pending {
        let flushed = durable.is_some() && group.generation == durable;
        for (outcome, offset) in group.outcomes.iter().zip(&group.offsets) {
            let Some(offset) = *offset else { continue };
            match outcome {
                Outcome::Accepted(_) if flushed => out.push((offset, PubAckReason::Success)),
                Outcome::Refused(r) if flushed || !r.kind.depends_on_stored_data() => {
                    out.push((offset, PubAckReason::PayloadFormatInvalid))
                }
                Outcome::Accepted(_) | Outcome::Refused(_) | Outcome::Deferred => {}
            }
        }
    }
    out
}

/// What one round sends, and what it counts.
#[derive(Debug, Default)]
struct Answers<'a> {
    /// Downlinks by device, in the order of the publishes.
    messages: Vec<(&'a str, Downlink<'a>)>,
    /// Packs and new readings made durable by the flush.
    packs: u64,
    readings: u64,
    /// Answers held back because the flush of their generation did not happen.
    withheld: u64,
}

/// The answers to `pending` after a flush that made `durable` durable (`None`: it failed).
/// An acknowledgement, or a refusal that rests on stored data, needs its group's generation
/// to be the one flushed; a refusal about the pack alone needs nothing; a deferred pack gets
/// no answer.
///
/// The packs of a device that reads lists of acknowledgements (downlink version 2, which its
/// packs say) share one downlink, up to [`downlink::MAX_BATCH`] of them, at the place of the
/// first; a refusal of the device closes its list, so that its answers keep their order. A
/// list of one goes out as a plain acknowledgement. A pack of downlink version 3 gets no
/// acknowledgement downlink: its PUBACK is one.
fn answers(pending: &[Handled], durable: Option<Generation>, server_ms: i64) -> Answers<'_> {
    let mut out = Answers::default();
    // The device's list still open, by its index in `out.messages`.
    let mut open: HashMap<&str, usize> = HashMap::new();
    for group in pending {
        let flushed = durable.is_some() && group.generation == durable;
        for outcome in &group.outcomes {
            match outcome {
                Outcome::Accepted(a) if flushed => {
                    out.packs += 1;
                    out.readings += a.summary.stored as u64;
                    let readings = u32::try_from(a.summary.stored + a.summary.duplicates).unwrap_or(u32::MAX);
                    if a.downlink >= downlink::VERSION_PUBACK {
                        // The PUBACK acknowledges it.
                        continue;
                    }
                    if a.downlink < downlink::VERSION_LIST {
                        let ack = Downlink::Ack { up_to_ms: a.up_to_ms, readings, server_ms, seq: a.seq };
                        out.messages.push((&a.device, ack));
                        continue;
                    }
                    let ack = PackAck { up_to_ms: a.up_to_ms, readings, seq: a.seq };
                    let listed = open.get(a.device.as_str()).and_then(|&i| match &mut out.messages[i].1 {
                        Downlink::Acks { acks, .. } => acks.push(ack).ok(),
                        _ => None,
                    });
                    if listed.is_none() {
                        let mut acks = AckList::new();
                        // A new list has room.
                        let _ = acks.push(ack);
                        open.insert(&a.device, out.messages.len());
                        out.messages.push((&a.device, Downlink::Acks { acks, server_ms }));
                    }
                }
                Outcome::Refused(r) if flushed || !r.kind.depends_on_stored_data() => {
                    if let Some(device) = &r.device {
                        open.remove(device.as_str());
                        let refusal = Downlink::Refused { reason: r.kind.as_str(), server_ms, seq: r.seq };
                        out.messages.push((device, refusal));
                    }
                }
                Outcome::Accepted(_) | Outcome::Refused(_) => out.withheld += 1,
                Outcome::Deferred => {}
            }
        }
    }
    for (_, message) in &mut out.messages {
        if let Downlink::Acks { acks, server_ms } = *message {
            if let [one] = acks.as_slice() {
                *message = Downlink::Ack { up_to_ms: one.up_to_ms, readings: one.readings, server_ms, seq: one.seq };
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
