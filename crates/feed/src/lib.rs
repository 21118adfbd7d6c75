//! The live feed inside the process: what the store made durable and how alerts changed, for
//! whoever follows it (the alert engine, the API's `/v1/stream`).
//!
//! The acknowledgement thread publishes each flushed round's packs, and only after the flush,
//! so a follower never sees a reading that a crash could take back. Publishing never waits
//! for a follower: the stream's followers read from a broadcast channel and one that falls
//! behind by more than its capacity is told so (`Lagged`) and dropped by its reader. A
//! follower of given devices is reached through an index by device instead, and woken only
//! for their events ([`Feed::follow_devices`]), once per published round: the round's events
//! of its devices reach it together, so that a follower costs a wake-up per flush of the
//! store rather than per pack. A busy one is woken at most once per `hold`
//! ([`Feed::with_hold`]): the rounds that come sooner after its last wake-up are held and go
//! together, at the next round after the hold or at the feed's tick, whichever is first; a
//! follower of a quiet device is woken at once. The one follower that must see everything,
//! the alert engine, is an [`Observer`] called on the publisher's thread.
//!
//! Events carry ids that grow by one from 1 in each run of the process; the last `window`
//! events are kept, so a client that lost its connection can resume after the last id it saw
//! with neither a gap nor a repeat ([`Feed::resume`]).

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};

/// Events a feed keeps for a stream client that resumes (`Last-Event-ID`): at 5,000 packs a
/// second, a few seconds' worth; hours of a quiet night. A client away longer starts afresh.
pub const DEFAULT_WINDOW: usize = 16_384;

/// How long after a follower of given devices was last woken its next events are held
/// ([`Feed::with_hold`]), for the process's feed. Under load the store flushes a round every
/// few milliseconds, and each round woke each busy follower twice (its task, then its
/// connection's) and cost a write: holding a busy follower's rounds for 20 ms cut that to at
/// most 50 a second, for at most 20 ms more latency, and none for a follower of a quiet
/// device.
pub const DEFAULT_HOLD: Duration = Duration::from_millis(20);

/// One metric's newly stored points of one pack.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The metric's name (`water_level`).
    pub metric: String,
    /// Its unit, when the pack gave one.
    pub unit: Option<String>,
    /// The values are booleans (SenML `vb`), as 0 and 1.
    pub boolean: bool,
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

impl Event {
    /// The device it is about.
    pub fn device(&self) -> &str {
        match self {
            Event::Stored(pack) => &pack.device,
            Event::Alert(change) => &change.device,
        }
    }
}

/// What [`Following::recv`] gives when there is no event to give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowEnded {
    /// The follower let too many events pile up and was cut off.
    Lagged,
    /// The feed is gone.
    Closed,
}

/// A follower of some devices ([`Feed::follow_devices`]); it leaves the index when dropped.
pub struct Following {
    feed: Feed,
    follower: u64,
    devices: Vec<String>,
    rx: mpsc::UnboundedReceiver<Vec<Arc<Item>>>,
    /// The rest of the last round received.
    round: VecDeque<Arc<Item>>,
    queued: Arc<AtomicUsize>,
    lagged: Arc<AtomicBool>,
}

impl Following {
    /// The next event about its devices.
    pub async fn recv(&mut self) -> Result<Arc<Item>, FollowEnded> {
        if self.round.is_empty() {
            if let Some(round) = self.rx.recv().await {
                self.round.extend(round);
            }
        }
        let item = self.round.pop_front();
        self.took(item)
    }

    /// The next event if there is one now; `Ok(None)` if not.
    pub fn try_recv(&mut self) -> Result<Option<Arc<Item>>, FollowEnded> {
        if self.round.is_empty() {
            match self.rx.try_recv() {
                Ok(round) => self.round.extend(round),
                Err(mpsc::error::TryRecvError::Empty) => return Ok(None),
                Err(mpsc::error::TryRecvError::Disconnected) => {}
            }
        }
        let item = self.round.pop_front();
        self.took(item).map(Some)
    }

    fn took(&self, item: Option<Arc<Item>>) -> Result<Arc<Item>, FollowEnded> {
        if self.lagged.load(Ordering::Relaxed) {
            return Err(FollowEnded::Lagged);
        }
        let item = item.ok_or(FollowEnded::Closed)?;
        self.queued.fetch_sub(1, Ordering::Relaxed);
        Ok(item)
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        self.feed.unfollow(self.follower, &self.devices);
    }
}

impl std::fmt::Debug for Following {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Following").field("follower", &self.follower).field("devices", &self.devices).finish()
    }
}

/// An event and its id.
pub struct Item {
    /// Grows by one per event, from 1, in each run of the process.
    pub id: u64,
    /// The event.
    pub event: Event,
    /// Followers it was handed to when published: those of its device and those of everything.
    followers: usize,
    /// What the followers make of it (their wire form), made once and shared.
    rendered: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl Item {
    /// How many followers it was handed to when published (those of its device, and every
    /// follower of everything): one that is alone with an event gains nothing by sharing
    /// its wire form ([`Item::rendered`]), which would live as long as the window holds the
    /// event.
    pub fn followers(&self) -> usize {
        self.followers
    }

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
    /// See [`Feed::with_hold`]; zero wakes every follower at every round.
    hold: Duration,
    /// Set once the tick that releases held events runs.
    ticking: OnceLock<()>,
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
    /// Followers of given devices, by device: an event wakes only those of its device, so
    /// that a hundred apps that each show one station cost what one does.
    by_device: HashMap<String, Vec<Slot>>,
    /// Followers of given devices whose rounds are held, or were woken within the hold.
    paces: HashMap<u64, Pace>,
    next_follower: u64,
}

/// When a follower of given devices was last woken, and the events held for it since.
struct Pace {
    slot: Slot,
    /// `None` until first woken.
    woken: Option<Instant>,
    held: Vec<Arc<Item>>,
}

impl Pace {
    /// Whether the hold since it was last woken has passed by `now`.
    fn due(&self, now: Instant, hold: Duration) -> bool {
        self.woken.is_none_or(|w| now.saturating_duration_since(w) >= hold)
    }
}

impl Recent {
    /// The events after id `after`; `None` if some of them have left the window already (or
    /// `after` is not an id of this run).
    fn after(&self, after: u64) -> Option<impl Iterator<Item = &Arc<Item>>> {
        let oldest = self.items.front().map_or(self.next_id, |i| i.id);
        if after >= self.next_id || after + 1 < oldest {
            return None;
        }
        Some(self.items.iter().skip((after + 1 - oldest) as usize))
    }
}

/// One follower's place in the index of one of its devices.
#[derive(Clone)]
struct Slot {
    follower: u64,
    tx: mpsc::UnboundedSender<Vec<Arc<Item>>>,
    /// Events sent and not yet received: the bound, since the channel has none.
    queued: Arc<AtomicUsize>,
    /// Set when the follower was cut off for falling behind.
    lagged: Arc<AtomicBool>,
}

/// The events of one published round for the followers of given devices, by follower.
#[derive(Default)]
struct Round(HashMap<u64, (Slot, Vec<Arc<Item>>)>);

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").field("run_id", &self.inner.run_id).field("window", &self.inner.window).finish()
    }
}

impl Feed {
    /// A feed that keeps the last `window` events for resumption; a follower may fall
    /// `window` events behind (at least 16) before it is told it lagged. Every follower is
    /// woken at every round ([`Feed::with_hold`] holds a busy one's).
    pub fn new(window: usize) -> Feed {
        Feed::with_hold(window, Duration::ZERO)
    }

    /// [`Feed::new`], with the rounds for a follower of given devices held for `hold` after
    /// it was last woken ([`DEFAULT_HOLD`]): they go together at the first round after the
    /// hold, or at the feed's tick (a task of the tokio runtime that first has a follower).
    pub fn with_hold(window: usize, hold: Duration) -> Feed {
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
                hold,
                ticking: OnceLock::new(),
                recent: Mutex::new(Recent {
                    next_id: 1,
                    items: VecDeque::with_capacity(window),
                    tx,
                    by_device: HashMap::new(),
                    paces: HashMap::new(),
                    next_follower: 1,
                }),
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
            let mut round = Round::default();
            for pack in &packs {
                self.push(&mut recent, Event::Stored(Arc::clone(pack)), &mut round);
            }
            self.deliver(&mut recent, round);
        }
        let observer = self.inner.observer.read().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(observer) = observer {
            observer.stored(&packs);
        }
    }

    /// Publishes an alert's change; its event id.
    pub fn publish_alert(&self, change: AlertChange) -> u64 {
        let mut recent = self.lock();
        let mut round = Round::default();
        let id = self.push(&mut recent, Event::Alert(Arc::new(change)), &mut round);
        self.deliver(&mut recent, round);
        id
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
        let missed = recent.after(after)?.cloned().collect();
        Some((missed, recent.tx.subscribe()))
    }

    /// Follows the events about `devices` (readings of their packs, changes of their
    /// alerts), from now on, or after id `after` if given: then `None` if events after it
    /// have left the window, as [`Feed::resume`]. A follower that lets `window` events pile
    /// up is cut off: its [`Following::recv`] says `Lagged`.
    pub fn follow_devices(&self, devices: &[String], after: Option<u64>) -> Option<(Vec<Arc<Item>>, Following)> {
        let mut recent = self.lock();
        let missed = match after {
            None => Vec::new(),
            Some(after) => {
                recent.after(after)?.filter(|i| devices.iter().any(|d| i.event.device() == d)).cloned().collect()
            }
        };
        let follower = recent.next_follower;
        recent.next_follower += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let lagged = Arc::new(AtomicBool::new(false));
        let mut unique: Vec<&String> = devices.iter().collect();
        unique.sort();
        unique.dedup();
        for device in &unique {
            let slot = Slot { follower, tx: tx.clone(), queued: Arc::clone(&queued), lagged: Arc::clone(&lagged) };
            recent.by_device.entry((*device).clone()).or_default().push(slot);
        }
        let devices = unique.into_iter().cloned().collect();
        drop(recent);
        self.start_tick();
        let round = VecDeque::new();
        Some((missed, Following { feed: self.clone(), follower, devices, rx, round, queued, lagged }))
    }

    /// Sends every follower of given devices whose hold has passed by `now` the events held
    /// for it. The feed's tick calls this; a test may too, with a time of its choosing.
    pub fn release_held(&self, now: Instant) {
        let mut recent = self.lock();
        let hold = self.inner.hold;
        let due: Vec<u64> =
            recent.paces.iter().filter(|(_, p)| !p.held.is_empty() && p.due(now, hold)).map(|(&f, _)| f).collect();
        self.wake(&mut recent, &due, now);
        // A follower with nothing held whose hold has passed needs no pace: the next round
        // finds it due, as a new one.
        recent.paces.retain(|_, p| !p.held.is_empty() || !p.due(now, hold));
    }

    /// Starts the task that releases held events, once, if events are held at all and a
    /// tokio runtime is at hand. It ends with the feed.
    fn start_tick(&self) {
        if self.inner.hold.is_zero() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        self.inner.ticking.get_or_init(|| {
            let feed: Weak<Inner> = Arc::downgrade(&self.inner);
            // Half the hold: a held event waits at most one and a half holds.
            let period = (self.inner.hold / 2).max(Duration::from_millis(1));
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(inner) = feed.upgrade() else { return };
                    Feed { inner }.release_held(Instant::now());
                }
            });
        });
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
        let mut by_device: Vec<u64> = recent.by_device.values().flatten().map(|s| s.follower).collect();
        by_device.sort_unstable();
        by_device.dedup();
        FeedStats {
            events: recent.next_id - 1,
            followers: (recent.tx.receiver_count() + by_device.len()) as u64,
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

    /// Adds an event to the window and the broadcast channel, and to `round` for the
    /// followers of its device.
    fn push(&self, recent: &mut Recent, event: Event, round: &mut Round) -> u64 {
        let id = recent.next_id;
        recent.next_id += 1;
        let slots = recent.by_device.get(event.device());
        let followers = slots.map_or(0, Vec::len) + recent.tx.receiver_count();
        let item = Arc::new(Item { id, event, followers, rendered: OnceLock::new() });
        for slot in slots.into_iter().flatten() {
            round.0.entry(slot.follower).or_insert_with(|| (slot.clone(), Vec::new())).1.push(Arc::clone(&item));
        }
        if recent.items.len() == self.inner.window {
            recent.items.pop_front();
        }
        recent.items.push_back(Arc::clone(&item));
        // No follower is not an error.
        let _ = recent.tx.send(item);
        id
    }

    /// Sends each follower of given devices its events of a round, with those held for it,
    /// in one piece; holds them instead for a follower woken less than the hold ago.
    fn deliver(&self, recent: &mut Recent, round: Round) {
        let now = Instant::now();
        let hold = self.inner.hold;
        let mut due = Vec::with_capacity(round.0.len());
        for (follower, (slot, items)) in round.0 {
            let pace = recent.paces.entry(follower).or_insert_with(|| Pace { slot, woken: None, held: Vec::new() });
            pace.held.extend(items);
            if pace.due(now, hold) {
                due.push(follower);
            }
        }
        self.wake(recent, &due, now);
    }

    /// Sends followers `due` what is held for them.
    fn wake(&self, recent: &mut Recent, due: &[u64], now: Instant) {
        let window = self.inner.window;
        let mut cut_off = Vec::new();
        for follower in due {
            let Some(pace) = recent.paces.get_mut(follower) else { continue };
            let items = std::mem::take(&mut pace.held);
            pace.woken = Some(now);
            let slot = &pace.slot;
            // A follower too far behind, or gone, leaves the index, under all its devices.
            if slot.queued.load(Ordering::Relaxed) + items.len() > window {
                slot.lagged.store(true, Ordering::Relaxed);
                cut_off.push(slot.follower);
                continue;
            }
            slot.queued.fetch_add(items.len(), Ordering::Relaxed);
            if slot.tx.send(items).is_err() {
                cut_off.push(slot.follower);
            }
        }
        if !cut_off.is_empty() {
            recent.by_device.retain(|_, slots| {
                slots.retain(|s| !cut_off.contains(&s.follower));
                !slots.is_empty()
            });
            recent.paces.retain(|f, _| !cut_off.contains(f));
        }
    }

    /// Takes follower `follower` out of the index.
    fn unfollow(&self, follower: u64, devices: &[String]) {
        let mut recent = self.lock();
        recent.paces.remove(&follower);
        for device in devices {
            if let Some(slots) = recent.by_device.get_mut(device) {
                slots.retain(|s| s.follower != follower);
                if slots.is_empty() {
                    recent.by_device.remove(device);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
