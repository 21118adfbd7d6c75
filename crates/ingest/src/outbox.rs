//! The hook through which another crate keeps a durable record of every accepted pack in the
//! pack's own store batch (the forwarder's outbox), and hears when a flush made it durable.

use std::sync::Arc;

use mekong_feed::Stored;
use mekong_store::GroupRecord;

/// A durable record per accepted pack, written with the pack ([`mekong_store::Store::write_group_with`]):
/// so a pack is acknowledged if and only if its record is on disk, whatever crashes when.
pub trait Outbox: Send + Sync {
    /// The records to write in the batch of a group received at `now_ms`, for the packs that
    /// add readings (`packs`: each one's new readings, those already stored left out, in the
    /// order of the publishes); and a mark that [`Outbox::durable`] hands back once a flush
    /// made them durable (`None` if there are none). Called on the ingest thread, once per
    /// group, with the store's write lock held: it must not touch the store.
    fn stage(&self, packs: &[&Stored], now_ms: i64) -> (Vec<GroupRecord>, Option<u64>);

    /// Called on the acknowledgement thread after a flush made every record staged with a
    /// mark up to `mark` durable (marks grow with the groups).
    fn durable(&self, mark: u64);
}

/// An [`Outbox`] to hand to the ingest path ([`crate::PipelineOptions::outbox`]).
#[derive(Clone)]
pub struct SharedOutbox(pub Arc<dyn Outbox>);

impl std::fmt::Debug for SharedOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedOutbox")
    }
}

impl PartialEq for SharedOutbox {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
