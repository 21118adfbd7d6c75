//! The ingest thread: takes publishes from the broker link in groups, runs them through the
//! pipeline, and hands the outcomes to the acknowledgement thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttd::local::LinkRx;
use rumqttd::Notification;

use crate::pipeline::{Handled, Pipeline};

/// How long the thread waits for a message before it looks at the stop flag again.
const POLL: Duration = Duration::from_millis(100);

/// Counts messages skipped by the broker from the gaps in the offsets of the link's filter log.
#[derive(Debug, Default)]
pub(crate) struct Gaps {
    next: u64,
}

impl Gaps {
    /// Notes a message at `offset`; returns how many were skipped before it.
    pub(crate) fn observe(&mut self, offset: u64) -> u64 {
        let skipped = offset.saturating_sub(self.next);
        self.next = self.next.max(offset + 1);
        skipped
    }
}

/// Runs until `stop` is set (then handles what the link holds at that moment, up to one
/// group) or the broker is gone.
/// Each round takes every publish the link has at hand, up to the pipeline's `max_group`, as
/// one group: one store write, and later one flush, for all of them.
pub(crate) fn run(mut rx: LinkRx, pipeline: &mut Pipeline, stop: &AtomicBool, acks: &SyncSender<Handled>) {
    let mut gaps = Gaps::default();
    let max_group = pipeline.options().max_group.max(1);
    let mut group: Vec<(Bytes, Bytes)> = Vec::with_capacity(max_group);
    let mut offsets: Vec<Option<u64>> = Vec::with_capacity(max_group);
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let mut deadline = if stopping { Instant::now() } else { Instant::now() + POLL };
        let mut closed = false;
        while group.len() < max_group {
            match rx.recv_deadline(deadline) {
                Ok(Some(Notification::Forward(forward))) => {
                    let offset = forward.cursor.map(|(_, offset)| offset);
                    if let Some(offset) = offset {
                        let skipped = gaps.observe(offset);
                        if skipped > 0 {
                            tracing::warn!(skipped, "broker skipped messages: the ingest path fell behind its log");
                            pipeline.stats.record_lost(skipped);
                        }
                    }
                    group.push((forward.publish.topic, forward.publish.payload));
                    offsets.push(offset);
                    // Take what is already here, but do not wait for more once there is work.
                    deadline = Instant::now();
                }
                Ok(Some(Notification::Unschedule)) => {
                    // The router stops sending until told the link is ready again; tell it
                    // now, so it refills the link while this group is being handled.
                    if let Err(e) = rx.ready() {
                        tracing::error!(error = %e, "broker link closed");
                        closed = true;
                        break;
                    }
                }
                Ok(Some(_)) | Ok(None) => {}
                // recv_deadline fails at once when the router is gone, and at the deadline
                // when nothing came: only the first is an error.
                Err(e) if Instant::now() < deadline => {
                    tracing::error!(error = %e, "broker link closed");
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        pipeline.log_refusals();
        if !group.is_empty() {
            let now = crate::now_ms();
            let refs: Vec<(&[u8], &[u8])> = group.iter().map(|(t, p)| (t.as_ref(), p.as_ref())).collect();
            let mut handled = pipeline.handle_group(&refs, now);
            handled.offsets = std::mem::replace(&mut offsets, Vec::with_capacity(max_group));
            group.clear();
            if acks.send(handled).is_err() {
                tracing::error!("acknowledgement thread gone");
                return;
            }
        }
        // When stopping, one last round takes what the link holds at that moment: under a
        // steady load there is always more, and shutdown must not wait for a pause.
        if stopping || closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_in_log_offsets_count_skipped_messages() {
        let mut gaps = Gaps::default();
        assert_eq!(gaps.observe(0), 0);
        assert_eq!(gaps.observe(1), 0);
        assert_eq!(gaps.observe(5), 3);
        assert_eq!(gaps.observe(6), 0);
        // A repeated or older offset is not a gap.
        assert_eq!(gaps.observe(6), 0);
        assert_eq!(gaps.observe(2), 0);
        assert_eq!(gaps.observe(7), 0);
    }
}
