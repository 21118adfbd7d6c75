//! Tests of the store on a real sled database in a temporary directory.

use super::*;

fn open(dir: &Path) -> Store {
    Store::open(dir, &StoreOptions { cache_capacity_bytes: 8 << 20, flush_every_ms: None }).unwrap()
}

fn p(metric: &str, time_ms: i64, value: f64) -> NewPoint<'_> {
    NewPoint { metric, unit: Some("cm"), time_ms, value }
}

const T0: i64 = 1_790_000_000_000;

#[test]
fn points_come_back_in_time_order_within_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let points: Vec<_> = [30, 10, 20, 0, 40].iter().map(|s| p("water_level", T0 + s * 1000, *s as f64)).collect();
    let summary = store.write("hau-01", "water", T0, &points).unwrap();
    assert_eq!(summary, WriteSummary { stored: 5, duplicates: 0 });
    let got = store.points("hau-01", "water_level", T0 + 10_000, T0 + 40_000, 100).unwrap().unwrap();
    let times: Vec<_> = got.iter().map(|p| (p.time_ms - T0) / 1000).collect();
    assert_eq!(times, [10, 20, 30]);
    assert_eq!(got[0].value, 10.0);
    let limited = store.points("hau-01", "water_level", T0, T0 + 100_000, 2).unwrap().unwrap();
    assert_eq!(limited.len(), 2);
    assert!(store.points("hau-01", "salinity", T0, T0 + 1, 10).unwrap().is_none());
    assert!(store.points("hau-01", "water_level", T0 + 5, T0, 10).unwrap().unwrap().is_empty());
}

#[test]
fn series_do_not_bleed_into_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.write("a", "water", T0, &[p("x", T0, 1.0), p("y", T0, 2.0)]).unwrap();
    store.write("b", "water", T0, &[p("x", T0, 3.0)]).unwrap();
    let all = |d, m| store.points(d, m, i64::MIN, i64::MAX, 10).unwrap().unwrap();
    assert_eq!(all("a", "x"), [Point { time_ms: T0, value: 1.0 }]);
    assert_eq!(all("a", "y"), [Point { time_ms: T0, value: 2.0 }]);
    assert_eq!(all("b", "x"), [Point { time_ms: T0, value: 3.0 }]);
}

#[test]
fn rewriting_a_point_is_idempotent_and_keeps_the_first_value() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.write("a", "air", T0, &[p("pm2_5", T0, 12.0)]).unwrap();
    let again = store
        .write("a", "air", T0 + 5, &[p("pm2_5", T0, 99.0), p("pm2_5", T0 + 1, 13.0), p("pm2_5", T0 + 1, 14.0)])
        .unwrap();
    assert_eq!(again, WriteSummary { stored: 1, duplicates: 2 });
    let got = store.points("a", "pm2_5", i64::MIN, i64::MAX, 10).unwrap().unwrap();
    assert_eq!(got, [Point { time_ms: T0, value: 12.0 }, Point { time_ms: T0 + 1, value: 13.0 }]);
    let s = store.series("a", "pm2_5").unwrap();
    assert_eq!((s.count, s.first_ms, s.last_ms, s.last_value), (2, T0, T0 + 1, 13.0));
    assert_eq!(store.device("a").unwrap().points, 2);
}

#[test]
fn late_points_do_not_move_the_latest_value() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.write("a", "water", T0, &[p("water_level", T0, 150.0)]).unwrap();
    store.write("a", "water", T0 + 1, &[p("water_level", T0 - 60_000, 140.0)]).unwrap();
    let latest = store.latest(None);
    assert_eq!(latest.len(), 1);
    assert_eq!((latest[0].time_ms, latest[0].value), (T0, 150.0));
    let s = store.series("a", "water_level").unwrap();
    assert_eq!((s.first_ms, s.last_ms, s.count), (T0 - 60_000, T0, 2));
}

#[test]
fn a_unit_change_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.write("a", "water", T0, &[p("water_level", T0, 150.0)]).unwrap();
    let bad =
        [p("salinity", T0, 0.1), NewPoint { metric: "water_level", unit: Some("m"), time_ms: T0 + 1, value: 1.5 }];
    let err = store.write("a", "water", T0, &bad).unwrap_err();
    assert!(matches!(err, StoreError::UnitMismatch { .. }), "{err}");
    assert!(store.series("a", "salinity").is_none());
    assert_eq!(store.point_count(), 1);
}

#[test]
fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.write("a", "air", T0, &[p("pm10", T0, 40.0), p("pm2_5", T0, 20.0)]).unwrap();
        store.write("b", "traffic", T0 + 7, &[p("speed", T0, 31.0)]).unwrap();
        store.flush().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.devices(None).iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(store.devices(Some("traffic"))[0].last_seen_ms, T0 + 7);
    assert_eq!(store.series_of("a").unwrap().len(), 2);
    assert_eq!(store.point_count(), 3);
    // New series after reopen get fresh ids, not ones already in use.
    store.write("c", "air", T0, &[p("pm10", T0, 1.0)]).unwrap();
    assert_eq!(store.points("a", "pm10", i64::MIN, i64::MAX, 10).unwrap().unwrap().len(), 1);
    assert_eq!(store.points("c", "pm10", i64::MIN, i64::MAX, 10).unwrap().unwrap().len(), 1);
}

#[test]
fn latest_filters_by_kind() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.write("w", "water", T0, &[p("water_level", T0, 1.0)]).unwrap();
    store.write("t", "traffic", T0, &[p("speed", T0, 2.0)]).unwrap();
    let water = store.latest(Some("water"));
    assert_eq!(water.len(), 1);
    assert_eq!(water[0].device, "w");
    assert_eq!(store.latest(None).len(), 2);
    assert!(store.latest(Some("air")).is_empty());
}

#[test]
fn a_group_of_packs_is_written_at_once_and_a_bad_pack_is_left_out_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.write("a", "water", T0, &[p("water_level", T0, 150.0)]).unwrap();
    let late_and_new =
        [p("water_level", T0 - 10_000, 149.0), p("water_level", T0, 999.0), p("water_level", T0 + 10_000, 151.0)];
    let wrong_unit = [NewPoint { metric: "water_level", unit: Some("m"), time_ms: T0 + 20_000, value: 1.5 }];
    let other = [p("salinity", T0, 0.3)];
    let repeat = [p("water_level", T0 + 10_000, 152.0), p("salinity", T0, 0.4)];
    let results = store
        .write_packs(&[
            PackWrite { device: "a", kind: "water", seen_ms: T0 + 1, points: &late_and_new, seq: None },
            PackWrite { device: "a", kind: "water", seen_ms: T0 + 2, points: &wrong_unit, seq: None },
            PackWrite { device: "b", kind: "water", seen_ms: T0 + 3, points: &other, seq: None },
            PackWrite { device: "b", kind: "water", seen_ms: T0 + 4, points: &repeat, seq: None },
        ])
        .unwrap();
    assert_eq!(results[0].as_ref().unwrap(), &WriteSummary { stored: 2, duplicates: 1 });
    assert!(matches!(results[1], Err(StoreError::UnitMismatch { .. })));
    assert_eq!(results[2].as_ref().unwrap(), &WriteSummary { stored: 1, duplicates: 0 });
    assert_eq!(results[3].as_ref().unwrap(), &WriteSummary { stored: 1, duplicates: 1 });

    let a = store.points("a", "water_level", i64::MIN, i64::MAX, 10).unwrap().unwrap();
    let values: Vec<f64> = a.iter().map(|p| p.value).collect();
    assert_eq!(values, [149.0, 150.0, 151.0]);
    let s = store.series("a", "water_level").unwrap();
    assert_eq!((s.count, s.first_ms, s.last_ms, s.last_value), (3, T0 - 10_000, T0 + 10_000, 151.0));
    assert_eq!(store.device("a").unwrap().last_seen_ms, T0 + 1, "the refused pack does not count as seen");
    assert_eq!(store.device("b").unwrap().points, 2);
    assert_eq!(store.points("b", "salinity", i64::MIN, i64::MAX, 10).unwrap().unwrap()[0].value, 0.3);

    // Everything the group wrote, and its metadata, is on disk.
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.point_count(), 5);
    assert_eq!(store.series_of("b").unwrap().len(), 2);
}

/// Random groups of points, late and duplicate ones included, against a model: every range
/// and limit returns what the model says, and the first value written for a time stays.
#[test]
fn ranges_match_a_model_whatever_the_write_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut model: BTreeMap<i64, f64> = BTreeMap::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // Times over five hours, so that chunks of several windows overlap and interleave.
    let span = 5 * chunk::WINDOW_MS;
    for group in 0..40 {
        let packs: Vec<Vec<NewPoint<'_>>> = (0..1 + next() % 4)
            .map(|_| {
                (0..1 + next() % 30)
                    .map(|_| p("water_level", T0 + (next() % span as u64) as i64 / 1000 * 1000, (next() % 1000) as f64))
                    .collect()
            })
            .collect();
        let writes: Vec<PackWrite<'_>> = packs
            .iter()
            .map(|points| PackWrite { device: "a", kind: "water", seen_ms: T0 + group, points, seq: None })
            .collect();
        for result in store.write_packs(&writes).unwrap() {
            result.unwrap();
        }
        for point in packs.iter().flatten() {
            model.entry(point.time_ms).or_insert(point.value);
        }
    }
    assert_eq!(store.series("a", "water_level").unwrap().count, model.len() as u64);
    for _ in 0..200 {
        let from = T0 - 1000 + (next() % (span as u64 + 2000)) as i64;
        let to = from + (next() % (span as u64)) as i64;
        let limit = 1 + (next() % 50) as usize;
        let got = store.points("a", "water_level", from, to, limit).unwrap().unwrap();
        let want: Vec<Point> =
            model.range(from..to.max(from)).take(limit).map(|(&time_ms, &value)| Point { time_ms, value }).collect();
        assert_eq!(got, want, "from {from} to {to} limit {limit}");
    }
}

/// Aggregates over random late writes, random ranges and random steps equal a brute-force
/// computation over a model. Values are quarters, so sums are exact in any order.
#[test]
fn aggregates_match_brute_force() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut model: BTreeMap<i64, f64> = BTreeMap::new();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let span = 3 * 86_400_000_i64;
    for group in 0..30 {
        let points: Vec<NewPoint<'_>> = (0..1 + next() % 200)
            .map(|_| p("pm2_5", T0 + (next() % span as u64) as i64, (next() % 400) as f64 / 4.0 - 20.0))
            .collect();
        store.write("a", "air", T0 + group, &points).unwrap();
        for point in &points {
            model.entry(point.time_ms).or_insert(point.value);
        }
    }
    let steps = [1, 1_000, 60_000, 900_000, 3_600_000, 86_400_000, 7 * 86_400_000];
    for _ in 0..300 {
        let step = steps[(next() % steps.len() as u64) as usize];
        let from = T0 - 3_600_000 + (next() % (span as u64 + 7_200_000)) as i64;
        let to = from + 1 + (next() % span as u64) as i64;
        let got = store.aggregate("a", "pm2_5", from, to, step).unwrap().unwrap();
        let mut want: BTreeMap<i64, Vec<(i64, f64)>> = BTreeMap::new();
        for (&t, &v) in model.range(from..to) {
            want.entry(t.div_euclid(step) * step).or_default().push((t, v));
        }
        assert_eq!(got.len(), want.len(), "from {from} to {to} step {step}");
        for (bucket, (start, points)) in got.iter().zip(&want) {
            let values: Vec<f64> = points.iter().map(|p| p.1).collect();
            assert_eq!(bucket.start_ms, *start);
            assert_eq!(bucket.count, points.len() as u64);
            assert_eq!(bucket.min, values.iter().cloned().fold(f64::INFINITY, f64::min));
            assert_eq!(bucket.max, values.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
            assert_eq!(bucket.sum, values.iter().sum::<f64>());
            assert_eq!(bucket.first, Point { time_ms: points[0].0, value: points[0].1 });
            let last = points[points.len() - 1];
            assert_eq!(bucket.last, Point { time_ms: last.0, value: last.1 });
        }
    }
    assert!(store.aggregate("a", "pm10", T0, T0 + 1, 1000).unwrap().is_none());
    assert_eq!(store.devices_with(Some("air"), "pm2_5"), ["a"]);
    assert!(store.devices_with(Some("water"), "pm2_5").is_empty());
}

#[test]
fn sequence_numbers_are_stored_with_their_packs_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = [p("water_level", T0, 1.0)];
    let wrong_unit = [NewPoint { metric: "water_level", unit: Some("m"), time_ms: T0 + 1_000, value: 2.0 }];
    let later = [p("water_level", T0 + 2_000, 3.0)];
    let pack = |device, points, seq| PackWrite { device, kind: "water", seen_ms: T0, points, seq };
    let results = store
        .write_packs(&[pack("a", &first[..], Some(7)), pack("b", &first[..], None), pack("c", &first[..], Some(1))])
        .unwrap();
    assert!(results.iter().all(Result::is_ok));
    assert_eq!((store.device_seq("a"), store.device_seq("b"), store.device_seq("c")), (Some(7), None, Some(1)));

    // A pack left out keeps its number out too; within a group and across groups the highest
    // number stays.
    let results = store
        .write_packs(&[
            pack("a", &wrong_unit[..], Some(50)),
            pack("a", &later[..], Some(9)),
            pack("c", &later[..], Some(8)),
        ])
        .unwrap();
    assert!(results[0].is_err());
    store.write_packs(&[pack("c", &later[..], Some(3))]).unwrap();
    assert_eq!((store.device_seq("a"), store.device_seq("c")), (Some(9), Some(8)));

    drop(store);
    let store = open(dir.path());
    assert_eq!((store.device_seq("a"), store.device_seq("b"), store.device_seq("c")), (Some(9), None, Some(8)));
}
