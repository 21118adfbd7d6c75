//! The live feed inside the process: what the store made durable and how alerts changed, for
//! whoever follows it (the alert engine, the API's `/v1/stream`).
//!
//! The acknowledgement thread publishes each flushed round's packs, and only after the flush,
//! so a follower never sees a reading that a crash could take back. Publishing never waits
//! for a follower: the stream's followers read from a broadcast channel and one that falls
//! behind by more than its capacity is told so (`Lagged`) and dropped by its reader. The one
//! follower that must see everything, the alert engine, is an [`Observer`] called on the
//! publisher's thread.
//!
//! Events carry ids that grow by one from 1 in each run of the process; the last `window`
//! events are kept, so a client that lost its connection can resume after the last id it saw
//! with neither a gap nor a repeat ([`Feed::resume`]).

use std::any::Any;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use tokio::sync::broadcast;

/// One metric's newly stored points of one pack.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The metric's name (`water_level`).
    pub metric: String,
    /// Its unit, when the pack gave one.
    pub unit: Option<String>,
    /// (time in ms since the epoch, value), in the pack's order.
    pub points: Vec<(i64, f64)>,
}

/// What one pack added to the store, once durable. Points that were already stored (a
/// resend) are left out; a pack that added nothing is not published.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The device that sent it.
    pub device: String,
    /// The device's kind (`water`, `traffic`, `air`, ...).
    pub kind: String,
    /// One entry per metric of the pack, in the order of first appearance.
    pub series: Vec<Series>,
}

impl Stored {
    /// How many points the pack added.
    pub fn points(&self) -> usize {
        self.series.iter().map(|s| s.points.len()).sum()
    }
}

/// Whether an alert is on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertState {
    /// The rule's condition holds.
    Firing,
    /// It held, and its clear condition now holds.
    Resolved,
}

impl AlertState {
    /// Its name on the wire: `firing`, `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// An alert that fired or resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertChange {
    /// The rule's id.
    pub rule: String,
    /// The device it is about.
    pub device: String,
    /// The metric the rule watches.
    pub metric: String,
    /// The new state.
    pub state: AlertState,
    /// The reading time of the change, ms since the epoch.
    pub at_ms: i64,
    /// The reading that caused it; `None` when it was no reading (a device gone stale).
    pub value: Option<f64>,
    /// The rule's severity (`warning`, `critical`).
    pub severity: String,
    /// What happened, for people.
    pub message: String,
}

/// What the feed carries.
#[derive(Debug, Clone)]
pub enum Event {
    /// A pack's new readings, durable.
    Stored(Arc<Stored>),
    /// An alert's change of state, recorded.
    Alert(Arc<AlertChange>),
}

/// An event and its id.
pub struct Item {
    /// Grows by one per event, from 1, in each run of the process.
    pub id: u64,
    /// The event.
    pub event: Event,
    /// What the followers make of it (their wire form), made once and shared.
    rendered: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl Item {
    /// The event as followers send it on, made by `render` for the first follower that asks
    /// and shared with the others, so that a hundred followers encode it once. `None` if it
    /// was rendered as another type (one kind of follower renders, the stream's).
    pub fn rendered<T: Any + Send + Sync>(&self, render: impl FnOnce(&Item) -> T) -> Option<&T> {
        self.rendered.get_or_init(|| Box::new(render(self))).downcast_ref()
    }
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Item").field("id", &self.id).field("event", &self.event).finish_non_exhaustive()
    }
}

/// A follower that must see every pack, called on the publisher's thread (the
/// acknowledgement thread) with each flushed round's packs in order, after they went on the
/// stream. It must be quick: ingest waits for it.
pub trait Observer: Send + Sync {
    /// The packs a flush made durable.
    fn stored(&self, packs: &[Arc<Stored>]);
}

/// How the feed has been used since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FeedStats {
    /// Events published.
    pub events: u64,
    /// Followers of the stream now.
    pub followers: u64,
    /// Followers dropped because they fell behind.
    pub dropped: u64,
}

/// The feed: a cheap handle, shared by publishers and followers.
#[derive(Clone)]
pub struct Feed {
    inner: Arc<Inner>,
}

struct Inner {
    run_id: u64,
    window: usize,
    /// The recent events, and the channel, under one lock: an event enters both at once, so
    /// that [`Feed::resume`] can join the two with neither a gap nor a repeat.
    recent: Mutex<Recent>,
    observer: RwLock<Option<Arc<dyn Observer>>>,
    dropped: AtomicU64,
    /// True once the process is stopping: followers end their streams.
    closing: tokio::sync::watch::Sender<bool>,
}

struct Recent {
    next_id: u64,
    items: VecDeque<Arc<Item>>,
    tx: broadcast::Sender<Arc<Item>>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").field("run_id", &self.inner.run_id).field("window", &self.inner.window).finish()
    }
}

impl Feed {
    /// A feed that keeps the last `window` events for resumption; a follower may fall
    /// `window` events behind (at least 16) before it is told it lagged.
    pub fn new(window: usize) -> Feed {
        let window = window.max(16);
        let (tx, _) = broadcast::channel(window);
        let run_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        Feed {
            inner: Arc::new(Inner {
                run_id,
                window,
                recent: Mutex::new(Recent { next_id: 1, items: VecDeque::with_capacity(window), tx }),
                observer: RwLock::new(None),
                dropped: AtomicU64::new(0),
                closing: tokio::sync::watch::Sender::new(false),
            }),
        }
    }

    /// Names the one observer (the alert engine); a later call replaces it.
    pub fn set_observer(&self, observer: Arc<dyn Observer>) {
        *self.inner.observer.write().unwrap_or_else(PoisonError::into_inner) = Some(observer);
    }

    /// Publishes the packs a flush made durable, then hands them to the observer.
    pub fn publish_stored(&self, packs: Vec<Stored>) {
        if packs.is_empty() {
            return;
        }
        let packs: Vec<Arc<Stored>> = packs.into_iter().map(Arc::new).collect();
        {
            let mut recent = self.lock();
            for pack in &packs {
                self.push(&mut recent, Event::Stored(Arc::clone(pack)));
            }
        }
        let observer = self.inner.observer.read().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(observer) = observer {
            observer.stored(&packs);
        }
    }

    /// Publishes an alert's change; its event id.
    pub fn publish_alert(&self, change: AlertChange) -> u64 {
        let mut recent = self.lock();
        self.push(&mut recent, Event::Alert(Arc::new(change)))
    }

    /// Follows what is published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Item>> {
        self.lock().tx.subscribe()
    }

    /// The events after id `after` that the window still holds, and a receiver of what comes
    /// next: together, every event after `after` once. `None` if events after `after` have
    /// already left the window (or `after` is not an id of this run).
    #[allow(clippy::type_complexity)]
    pub fn resume(&self, after: u64) -> Option<(Vec<Arc<Item>>, broadcast::Receiver<Arc<Item>>)> {
        let recent = self.lock();
        if after >= recent.next_id {
            return None;
        }
        let oldest = recent.items.front().map_or(recent.next_id, |i| i.id);
        if after + 1 < oldest {
            return None;
        }
        let skip = (after + 1 - oldest) as usize;
        let missed = recent.items.iter().skip(skip).cloned().collect();
        Some((missed, recent.tx.subscribe()))
    }

    /// Tells every follower that the process is stopping ([`Feed::closed`]).
    pub fn close(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Resolves once [`Feed::close`] was called: a stream ends then, so that the server's
    /// shutdown need not wait for its clients to hang up.
    pub async fn closed(&self) {
        let mut closing = self.inner.closing.subscribe();
        // The sender lives as long as the feed, which `self` holds.
        let _ = closing.wait_for(|closing| *closing).await;
    }

    /// Counts a follower that its reader dropped for falling behind.
    pub fn record_dropped(&self) {
        self.inner.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// What the feed has done.
    pub fn stats(&self) -> FeedStats {
        let recent = self.lock();
        FeedStats {
            events: recent.next_id - 1,
            followers: recent.tx.receiver_count() as u64,
            dropped: self.inner.dropped.load(Ordering::Relaxed),
        }
    }

    /// Differs between runs of the process (the start time in ms), so that a client can tell
    /// an id of this run from one of an earlier run.
    pub fn run_id(&self) -> u64 {
        self.inner.run_id
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recent> {
        // The lock guards plain data, left consistent at every step.
        self.inner.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, recent: &mut Recent, event: Event) -> u64 {
        let id = recent.next_id;
        recent.next_id += 1;
        let item = Arc::new(Item { id, event, rendered: OnceLock::new() });
        if recent.items.len() == self.inner.window {
            recent.items.pop_front();
        }
        recent.items.push_back(Arc::clone(&item));
        // No follower is not an error.
        let _ = recent.tx.send(item);
        id
    }
}

#[cfg(test)]
mod tests;
