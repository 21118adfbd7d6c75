//! The outbox's bound while the upstream is away: the oldest packs not yet sent are dropped
//! from it (counted, and left in the store), the newest are kept, and the sequence numbers
//! and position stay right across a reopen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use mekong_feed::{Series, Stored};
use mekong_forward::outbox::{self, OUTBOX};
use mekong_forward::{Forward, ForwardOptions};
use mekong_ingest::Outbox;
use mekong_stats::Stats;
use mekong_store::{RecordWrite, Store, StoreOptions};

fn pack(i: i64) -> Stored {
    Stored {
        device: format!("d{}", i % 3),
        kind: "water".into(),
        series: vec![Series {
            metric: "water_level".into(),
            unit: Some("cm".into()),
            boolean: false,
            points: (0..10).map(|j| (1_790_000_000_000 + i * 10 + j, j as f64)).collect(),
        }],
    }
}

/// Writes `packs` through the outbox hook as the ingest path would, flushed.
fn accept(store: &Store, hook: &dyn Outbox, packs: &[Stored]) {
    let refs: Vec<&Stored> = packs.iter().collect();
    let (records, mark) = hook.stage(&refs, 1_790_000_000_000);
    let writes: Vec<_> = records
        .iter()
        .map(|(space, key, value)| RecordWrite::Put { space, key: key.as_slice(), value: value.as_slice() })
        .collect();
    store.write_records(&writes).unwrap();
    hook.durable(mark.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_drops_its_oldest_packs_and_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    // Nobody listens there: the upstream is away for the whole test.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut options = ForwardOptions::new("127.0.0.1", port);
    let record = outbox::encode(&pack(0), 0).len() as u64;
    options.max_outbox_bytes = record * 100;
    options.reconnect_max = Duration::from_millis(400);
    let mut forward = Forward::open(store.clone(), options).unwrap();
    let hook = forward.outbox();
    let packs: Vec<Stored> = (0..250).map(pack).collect();
    accept(&store, hook.0.as_ref(), &packs);
    let stats = Arc::new(Stats::new(10));
    forward.start(Arc::clone(&stats), &tokio::runtime::Handle::current());

    let deadline = Instant::now() + Duration::from_secs(20);
    let snapshot = loop {
        let s = stats.forward.snapshot().unwrap();
        if s.dropped_packs > 0 && s.queued_bytes <= record * 100 {
            break s;
        }
        assert!(Instant::now() < deadline, "the outbox was never bounded: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!snapshot.connected);
    // Down to 90% of the bound, the oldest first: 160 packs of 250 dropped, 90 kept.
    assert_eq!((snapshot.dropped_packs, snapshot.dropped_readings), (160, 1600), "{snapshot:?}");
    let kept = store.scan_records(OUTBOX).unwrap();
    let seqs: Vec<u64> = kept.iter().map(|(k, _)| u64::from_be_bytes(k.as_slice().try_into().unwrap())).collect();
    assert_eq!(seqs, (161..=250).collect::<Vec<u64>>());
    forward.shutdown().await;

    // Numbers go on above the newest, whatever was dropped.
    let forward = Forward::open(store.clone(), ForwardOptions::new("127.0.0.1", port)).unwrap();
    assert_eq!(forward.outbox().0.stage(&[&pack(0)], 0).1, Some(251));
}
