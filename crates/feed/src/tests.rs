//! The feed's ids, window and resumption, and the observer's place after the stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use super::*;

fn stored(device: &str, t: i64) -> Stored {
    Stored {
        device: device.into(),
        kind: "water".into(),
        series: vec![Series {
            metric: "water_level".into(),
            unit: Some("cm".into()),
            boolean: false,
            points: vec![(t, 1.0)],
        }],
    }
}

fn ids(items: &[Arc<Item>]) -> Vec<u64> {
    items.iter().map(|i| i.id).collect()
}

#[test]
fn ids_grow_by_one_and_a_follower_sees_every_event_in_order() {
    let feed = Feed::new(16);
    let mut rx = feed.subscribe();
    feed.publish_stored(vec![stored("a", 1), stored("b", 2)]);
    let alert = AlertChange {
        rule: "r".into(),
        device: "a".into(),
        metric: "water_level".into(),
        state: AlertState::Firing,
        at_ms: 1,
        value: Some(1.0),
        severity: "warning".into(),
        message: "high".into(),
    };
    assert_eq!(feed.publish_alert(alert), 3);
    let got: Vec<u64> = (0..3).map(|_| rx.try_recv().unwrap().id).collect();
    assert_eq!(got, [1, 2, 3]);
    assert!(matches!(&rx.try_recv(), Err(broadcast::error::TryRecvError::Empty)));
    assert_eq!(feed.stats(), FeedStats { events: 3, followers: 1, dropped: 0 });
}

#[test]
fn resume_joins_the_window_and_the_channel_with_no_gap_and_no_repeat() {
    let feed = Feed::new(16);
    for t in 0..10 {
        feed.publish_stored(vec![stored("a", t)]);
    }
    let (missed, mut rx) = feed.resume(6).unwrap();
    assert_eq!(ids(&missed), [7, 8, 9, 10]);
    feed.publish_stored(vec![stored("a", 10)]);
    assert_eq!(rx.try_recv().unwrap().id, 11);
    // Resuming at the newest id misses nothing and repeats nothing.
    let (missed, _) = feed.resume(11).unwrap();
    assert!(missed.is_empty());
    // An id this run never gave is not resumable.
    assert!(feed.resume(12).is_none());
}

#[test]
fn an_id_older_than_the_window_cannot_be_resumed() {
    let feed = Feed::new(16);
    for t in 0..40 {
        feed.publish_stored(vec![stored("a", t)]);
    }
    // The window holds 25..=40: resuming after 24 misses nothing, after 23 would.
    assert_eq!(ids(&feed.resume(24).unwrap().0).first(), Some(&25));
    assert!(feed.resume(23).is_none());
    assert!(feed.resume(0).is_none());
}

#[test]
fn a_follower_that_falls_behind_is_told_so() {
    let feed = Feed::new(16);
    let mut rx = feed.subscribe();
    for t in 0..20 {
        feed.publish_stored(vec![stored("a", t)]);
    }
    assert!(matches!(rx.try_recv(), Err(broadcast::error::TryRecvError::Lagged(4))));
}

struct Recorder(Mutex<Vec<(String, usize)>>, Feed);

impl Observer for Recorder {
    fn stored(&self, packs: &[Arc<Stored>]) {
        // The packs are on the stream before the observer sees them.
        let events = self.1.stats().events as usize;
        self.0.lock().unwrap().extend(packs.iter().map(|p| (p.device.clone(), events)));
    }
}

#[test]
fn the_observer_sees_every_pack_after_the_stream_does() {
    let feed = Feed::new(16);
    let recorder = Arc::new(Recorder(Mutex::new(Vec::new()), feed.clone()));
    feed.set_observer(recorder.clone());
    feed.publish_stored(vec![stored("a", 1), stored("b", 1)]);
    feed.publish_stored(Vec::new());
    feed.publish_stored(vec![stored("c", 2)]);
    let seen = recorder.0.lock().unwrap().clone();
    assert_eq!(seen, [("a".to_string(), 2), ("b".to_string(), 2), ("c".to_string(), 3)]);
}

#[tokio::test]
async fn close_ends_what_waits_for_it_even_if_it_started_waiting_late() {
    let feed = Feed::new(16);
    let early = tokio::spawn({
        let feed = feed.clone();
        async move { feed.closed().await }
    });
    feed.close();
    early.await.unwrap();
    feed.closed().await;
}

#[test]
fn an_item_is_rendered_once_for_every_follower() {
    let feed = Feed::new(16);
    let (mut a, mut b) = (feed.subscribe(), feed.subscribe());
    feed.publish_stored(vec![stored("a", 1)]);
    let (a, b) = (a.try_recv().unwrap(), b.try_recv().unwrap());
    let renders = std::sync::atomic::AtomicUsize::new(0);
    let render = |item: &Item| {
        renders.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("event {}", item.id)
    };
    assert_eq!(a.rendered(render).map(String::as_str), Some("event 1"));
    assert_eq!(b.rendered(render).map(String::as_str), Some("event 1"));
    assert_eq!(renders.into_inner(), 1);
    // Asked for as another type, it is not rendered again.
    assert_eq!(b.rendered(|_| 5u8), None);
}

#[tokio::test]
async fn a_device_follower_gets_its_devices_events_only_and_resumes_without_gap() {
    let feed = Feed::new(16);
    feed.publish_stored(vec![stored("a", 1), stored("b", 1)]);
    let devices = ["a".to_string(), "c".to_string(), "a".to_string()];
    let (missed, mut following) = feed.follow_devices(&devices, Some(0)).unwrap();
    assert_eq!(ids(&missed), [1]);
    feed.publish_stored(vec![stored("b", 2), stored("c", 2), stored("a", 2)]);
    // The round's two events for it come in one piece: one wake-up, not two.
    assert_eq!(following.rx.len(), 1);
    assert_eq!(following.recv().await.unwrap().id, 4);
    assert_eq!(following.try_recv().unwrap().map(|i| i.id), Some(5));
    assert_eq!(following.try_recv().unwrap().map(|i| i.id), None);
    assert_eq!(feed.stats().followers, 1);
    drop(following);
    assert_eq!(feed.stats().followers, 0);
    // An id older than the window cannot be resumed.
    for t in 0..20 {
        feed.publish_stored(vec![stored("b", t)]);
    }
    assert!(feed.follow_devices(&devices, Some(1)).is_none());
}

#[tokio::test]
async fn a_device_follower_that_falls_behind_is_cut_off_under_all_its_devices() {
    let feed = Feed::new(16);
    let (_, mut following) = feed.follow_devices(&["a".to_string(), "b".to_string()], None).unwrap();
    for t in 0..17 {
        feed.publish_stored(vec![stored("a", t)]);
    }
    assert_eq!(following.recv().await.unwrap_err(), FollowEnded::Lagged);
    // It is out of the index under "b" as well.
    assert_eq!(feed.stats().followers, 0);
}

#[tokio::test]
async fn an_item_counts_the_followers_it_was_handed_to() {
    let feed = Feed::new(16);
    let (_, mut of_a) = feed.follow_devices(&["a".to_string()], None).unwrap();
    let (_, mut of_a_and_b) = feed.follow_devices(&["a".to_string(), "b".to_string()], None).unwrap();
    feed.publish_stored(vec![stored("a", 1), stored("b", 1), stored("c", 1)]);
    let mut everything = feed.subscribe();
    feed.publish_stored(vec![stored("a", 2), stored("c", 2)]);
    let counts = |items: Vec<Arc<Item>>| items.iter().map(|i| (i.id, i.followers())).collect::<Vec<_>>();
    // Before the subscriber: a's to both device followers, b's to one, c's to none.
    assert_eq!(counts(feed.resume(0).unwrap().0), [(1, 2), (2, 1), (3, 0), (4, 3), (5, 1)]);
    assert_eq!(of_a.recv().await.unwrap().followers(), 2);
    assert_eq!(of_a_and_b.try_recv().unwrap().map(|i| i.id), Some(1));
    assert_eq!(everything.try_recv().unwrap().followers(), 3);
}

#[tokio::test]
async fn a_busy_device_follower_gets_the_rounds_within_its_hold_together_and_in_order() {
    let hold = Duration::from_secs(3600);
    let feed = Feed::with_hold(16, hold);
    let (_, mut following) = feed.follow_devices(&["a".to_string()], None).unwrap();
    // The first round wakes it at once.
    feed.publish_stored(vec![stored("a", 1)]);
    assert_eq!(following.recv().await.unwrap().id, 1);
    // The next ones, within the hold, are held.
    feed.publish_stored(vec![stored("a", 2)]);
    feed.publish_stored(vec![stored("b", 3)]);
    feed.publish_stored(vec![stored("a", 4), stored("a", 5)]);
    assert_eq!(following.try_recv().unwrap().map(|i| i.id), None);
    feed.release_held(Instant::now());
    assert_eq!(following.try_recv().unwrap().map(|i| i.id), None, "released before the hold passed");
    // Once it has passed, they go as one piece, in order, and nothing of another device.
    feed.release_held(Instant::now() + hold);
    assert_eq!(following.rx.len(), 1);
    let got: Vec<u64> = std::iter::from_fn(|| following.try_recv().unwrap()).map(|i| i.id).collect();
    assert_eq!(got, [2, 4, 5]);
    // A follower that goes away takes what was held for it along.
    feed.publish_stored(vec![stored("a", 6)]);
    drop(following);
    assert!(feed.lock().paces.is_empty());
}

#[tokio::test]
async fn held_rounds_reach_a_follower_at_the_tick_when_its_device_goes_quiet() {
    let feed = Feed::with_hold(16, Duration::from_millis(40));
    let (_, mut following) = feed.follow_devices(&["a".to_string()], None).unwrap();
    feed.publish_stored(vec![stored("a", 1)]);
    feed.publish_stored(vec![stored("a", 2)]);
    // No round comes after the second: the feed's own tick sends it.
    for id in [1, 2] {
        let next = tokio::time::timeout(Duration::from_secs(10), following.recv()).await.expect("never sent");
        assert_eq!(next.unwrap().id, id);
    }
}
