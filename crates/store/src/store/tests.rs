//! Tests of the store on a real sled database in a temporary directory.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::*;

fn open(dir: &Path) -> Store {
    Store::open(dir, &StoreOptions { cache_capacity_bytes: 8 << 20, flush_every_ms: None, fold_log_every_ms: None })
        .unwrap()
}

fn p(metric: &str, time_ms: i64, value: f64) -> NewPoint<'_> {
    NewPoint { metric, unit: Some("cm"), time_ms, value, value_kind: Default::default() }
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

/// Staging looks only late points up (a point after its series' newest time is new), so this
/// checks it against a plain set of everything stored, over groups of packs of every size
/// with points in order, late, repeated within a pack, within a group and across groups.
#[test]
fn duplicates_are_found_in_the_pack_the_group_and_the_store_whatever_the_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut rng = crate::xorshift(0x9e37_79b9_7f4a_7c15);
    let mut next = move |below: u64| rng() % below;
    let devices = ["d0", "d1", "d2"];
    let metrics = ["level", "flow"];
    let mut newest = [[T0; 2]; 3];
    let mut model: std::collections::HashMap<(usize, usize), BTreeMap<i64, f64>> = Default::default();
    let (mut late_points, mut repeats) = (0, 0);
    for round in 0..60 {
        // (device, [(metric, time, value)]) of each pack, as indexes into the names above.
        type Pack = (usize, Vec<(usize, i64, f64)>);
        let mut packs: Vec<Pack> = Vec::new();
        for _ in 0..1 + next(5) {
            let device = next(3) as usize;
            // Small packs are scanned, large ones (past 16 points) use a set.
            let len = if next(2) == 0 { 1 + next(6) } else { 17 + next(30) };
            let points = (0..len)
                .map(|i| {
                    let metric = next(2) as usize;
                    let last = &mut newest[device][metric];
                    let time = match next(10) {
                        0..=6 => {
                            *last += 1 + next(3) as i64 * 1000;
                            *last
                        }
                        7 => *last,
                        _ => *last - next(40) as i64 * 1000,
                    };
                    (metric, time, (round * 100 + i) as f64)
                })
                .collect();
            packs.push((device, points));
        }
        let new_points: Vec<Vec<NewPoint<'_>>> =
            packs.iter().map(|(_, points)| points.iter().map(|&(m, t, v)| p(metrics[m], t, v)).collect()).collect();
        let writes: Vec<PackWrite<'_>> = packs
            .iter()
            .zip(&new_points)
            .map(|((d, _), points)| PackWrite { device: devices[*d], kind: "water", seen_ms: T0, points, seq: None })
            .collect();
        let written = store.write_packs(&writes).unwrap();
        let mut expected = Vec::new();
        for (index, (device, points)) in packs.iter().enumerate() {
            let mut summary = WriteSummary::default();
            for (at, &(metric, time, value)) in points.iter().enumerate() {
                let series = model.entry((*device, metric)).or_default();
                if series.last_key_value().is_some_and(|(&newest, _)| time <= newest) {
                    late_points += 1;
                }
                match series.entry(time) {
                    std::collections::btree_map::Entry::Occupied(_) => {
                        repeats += 1;
                        summary.duplicates += 1;
                        expected.push((index, at));
                    }
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(value);
                        summary.stored += 1;
                    }
                }
            }
            assert_eq!(written.packs[index].as_ref().unwrap(), &summary, "round {round}, pack {index}");
        }
        assert_eq!(written.duplicates, expected, "round {round}");
    }
    assert!(late_points > 200 && repeats > 50, "the test reaches both paths: {late_points} late, {repeats} repeated");
    for ((device, metric), series) in &model {
        let stored = store.points(devices[*device], metrics[*metric], i64::MIN, i64::MAX, 100_000).unwrap().unwrap();
        let stored: Vec<(i64, f64)> = stored.iter().map(|p| (p.time_ms, p.value)).collect();
        let expected: Vec<(i64, f64)> = series.iter().map(|(&t, &v)| (t, v)).collect();
        assert_eq!(stored, expected, "{} {}", devices[*device], metrics[*metric]);
    }
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
    let bad = [
        p("salinity", T0, 0.1),
        NewPoint {
            metric: "water_level",
            unit: Some("m"),
            time_ms: T0 + 1,
            value: 1.5,
            value_kind: Default::default(),
        },
    ];
    let err = store.write("a", "water", T0, &bad).unwrap_err();
    assert!(matches!(err, WriteError::Refused(PackRefused::UnitMismatch { .. })), "{err}");
    assert!(store.series("a", "salinity").is_none());
    assert_eq!(store.point_count(), 1);
}

#[test]
fn a_unit_that_changes_within_a_series_run_refuses_the_pack_and_a_missing_unit_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Names and units made at run time, each its own string: runs are told by content.
    let (level, cm, m) = (String::from("water_level"), String::from("cm"), String::from("m"));
    let point = |time_ms, unit| NewPoint { metric: &level, unit, time_ms, value: 1.0, value_kind: Default::default() };
    let bad = [point(T0, Some(&cm[..])), point(T0 + 1, Some(&cm[..])), point(T0 + 2, Some(&m[..]))];
    let err = store.write("a", "water", T0, &bad).unwrap_err();
    assert!(
        matches!(&err, WriteError::Refused(PackRefused::UnitMismatch { expected, got, .. }) if expected == "cm" && got == "m"),
        "{err}"
    );
    assert_eq!(store.point_count(), 0);
    assert!(store.series("a", "water_level").is_none());

    let other_cm = String::from("cm");
    let good = [point(T0, Some(&cm[..])), point(T0 + 1, None), point(T0 + 2, Some(&other_cm[..]))];
    let summary = store.write("a", "water", T0, &good).unwrap();
    assert_eq!(summary.stored, 3);
    let series = store.series("a", "water_level").unwrap();
    assert_eq!((series.unit.as_deref(), series.count), (Some("cm"), 3));
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
    let wrong_unit = [NewPoint {
        metric: "water_level",
        unit: Some("m"),
        time_ms: T0 + 20_000,
        value: 1.5,
        value_kind: Default::default(),
    }];
    let other = [p("salinity", T0, 0.3)];
    let repeat = [p("water_level", T0 + 10_000, 152.0), p("salinity", T0, 0.4)];
    let written = store
        .write_packs(&[
            PackWrite { device: "a", kind: "water", seen_ms: T0 + 1, points: &late_and_new, seq: None },
            PackWrite { device: "a", kind: "water", seen_ms: T0 + 2, points: &wrong_unit, seq: None },
            PackWrite { device: "b", kind: "water", seen_ms: T0 + 3, points: &other, seq: None },
            PackWrite { device: "b", kind: "water", seen_ms: T0 + 4, points: &repeat, seq: None },
        ])
        .unwrap();
    // Which points were not new, by (pack, point): the feed of new readings leaves them out.
    assert_eq!(written.duplicates, [(0, 1), (3, 1)]);
    let results = written.packs;
    assert_eq!(results[0].as_ref().unwrap(), &WriteSummary { stored: 2, duplicates: 1 });
    assert!(matches!(results[1], Err(PackRefused::UnitMismatch { .. })));
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

/// A group of single-reading packs from many devices (as thousands of nodes send them) costs
/// each pack one metadata entry, its device's, besides its chunk: the series' metadata is in
/// the device's entry (format 7), and reads back whole after a reopen.
#[test]
fn a_pack_costs_one_metadata_entry_its_devices() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..50).map(|i| format!("node-{i:02}")).collect();
    let points: Vec<[NewPoint<'_>; 1]> = (0..50).map(|i| [p("water_level", T0 + i, i as f64)]).collect();
    let weather = [p("rain", T0, 1.0), p("wind", T0, 2.0), p("humidity", T0, 3.0)];
    {
        let store = open(dir.path());
        let mut packs: Vec<PackWrite<'_>> = (0..50)
            .map(|i| PackWrite { device: &ids[i], kind: "water", seen_ms: T0, points: &points[i], seq: None })
            .collect();
        packs.push(PackWrite { device: "station", kind: "weather", seen_ms: T0, points: &weather, seq: None });
        let before = all_keys(&store);
        store.write_packs(&packs).unwrap();
        let added: Vec<Vec<u8>> = all_keys(&store).into_iter().filter(|k| !before.contains(k)).collect();
        let of = |first: u8| added.iter().filter(|k| k[0] == first).count();
        // 51 packs: one chunk per series (53), one entry per device (51), no series entries.
        assert_eq!((of(keys::POINT), of(keys::DEVICE), of(keys::SERIES)), (53, 51, 0), "{added:02x?}");
        // A second group extends one series of the station: still its one entry.
        let more = [p("wind", T0 + 1, 2.5)];
        let before = all_keys(&store);
        store.write("station", "weather", T0 + 1, &more).unwrap();
        let tree = &store.current().unwrap().tree;
        assert!(all_keys(&store).iter().filter(|k| !before.contains(k)).all(|k| k[0] == keys::POINT));
        let entry = tree.get(keys::device("station")).unwrap().unwrap();
        let (meta, series) = super::meta::decode_entry(&entry).unwrap();
        assert_eq!(meta.map(|m| m.tally.packs), Some(2));
        let counts: BTreeMap<String, u64> = series.into_iter().map(|(m, s)| (m, s.count)).collect();
        assert_eq!(counts, BTreeMap::from([("humidity".into(), 1), ("rain".into(), 1), ("wind".into(), 2)]));
    }
    let store = open(dir.path());
    assert_eq!(store.point_count(), 54);
    assert_eq!(store.series_of("station").unwrap().len(), 3);
    let wind = store.series("station", "wind").unwrap();
    assert_eq!((wind.count, wind.last_ms, wind.last_value), (2, T0 + 1, 2.5));
    assert_eq!(store.series("node-49", "water_level").unwrap().last_value, 49.0);
    assert_eq!(store.device("node-07").unwrap().points, 1);
}

/// Random groups of points, late and duplicate ones included, against a model: every range
/// and limit returns what the model says, and the first value written for a time stays.
#[test]
fn ranges_match_a_model_whatever_the_write_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut model: BTreeMap<i64, f64> = BTreeMap::new();
    let mut next = crate::xorshift(0x9e37_79b9_7f4a_7c15);
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
        for result in store.write_packs(&writes).unwrap().packs {
            result.unwrap();
        }
        for point in packs.iter().flatten() {
            model.entry(point.time_ms).or_insert(point.value);
        }
        // Folding now and then, up to a random time, so that later groups write late points
        // into windows already folded.
        if next().is_multiple_of(4) {
            store.fold(T0 + (next() % span as u64) as i64, || true).unwrap();
        }
    }
    assert_eq!(store.series("a", "water_level").unwrap().count, model.len() as u64);
    for round in 0..200 {
        if round == 100 {
            // T0 is not on the hour: the points span six windows.
            store.fold(T0 + span + chunk::WINDOW_MS, || true).unwrap();
            assert_eq!(chunk_keys(&store), 0, "every window in its day's file once all are folded");
            assert!(!day_files(dir.path()).is_empty());
        }
        let from = T0 - 1000 + (next() % (span as u64 + 2000)) as i64;
        let to = from + (next() % (span as u64)) as i64;
        let limit = 1 + (next() % 50) as usize;
        let got = store.points("a", "water_level", from, to, limit).unwrap().unwrap();
        let want: Vec<Point> =
            model.range(from..to.max(from)).take(limit).map(|(&time_ms, &value)| Point { time_ms, value }).collect();
        assert_eq!(got, want, "from {from} to {to} limit {limit}");
    }
}

/// The chunks in the tree, once the log is folded.
fn chunk_keys(store: &Store) -> usize {
    store.fold_log().unwrap();
    store.current().unwrap().tree.scan_prefix([keys::POINT]).count()
}

/// The day files in the store's directory (named by sled or not).
fn day_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.join(days::DIR)) else { return Vec::new() };
    let mut names: Vec<String> = entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Aggregates over random late writes, random folds, random ranges and random steps equal a
/// brute-force computation over a model. Values are quarters, so sums are exact in any order
/// (rollups add them in another order than the points).
#[test]
fn aggregates_match_brute_force() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut model: BTreeMap<i64, f64> = BTreeMap::new();
    let mut next = crate::xorshift(0x2545_f491_4f6c_dd1d);
    let span = 3 * 86_400_000_i64;
    for group in 0..30 {
        let points: Vec<NewPoint<'_>> = (0..1 + next() % 200)
            .map(|_| p("pm2_5", T0 + (next() % span as u64) as i64, (next() % 400) as f64 / 4.0 - 20.0))
            .collect();
        store.write("a", "air", T0 + group, &points).unwrap();
        for point in &points {
            model.entry(point.time_ms).or_insert(point.value);
        }
        if next().is_multiple_of(3) {
            store.fold(T0 + (next() % span as u64) as i64, || true).unwrap();
        }
    }
    let steps = [1, 1_000, 60_000, 900_000, 3_600_000, 7_200_000, 86_400_000, 7 * 86_400_000];
    for round in 0..400 {
        // Half the queries before the last fold (some windows folded, some not), half after.
        if round == 200 {
            store.fold(T0 + span + 3_600_000, || true).unwrap();
        }
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

/// Rollups answer for folded windows: once the raw points of a window are expired, its hourly
/// aggregates are still there, from the rollup alone.
#[test]
fn retention_drops_old_raw_points_then_old_rollups_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;
    let start = T0 - T0 % DAY;
    let now = start + 4 * DAY;
    // Four days every 10 minutes, for a water level and an air series.
    let times: Vec<i64> = (0..4 * 144).map(|i| start + i * 600_000).collect();
    for day in times.chunks(144) {
        let water: Vec<_> = day.iter().map(|&t| p("water_level", t, ((t - start) / 600_000) as f64)).collect();
        let air: Vec<_> = day.iter().map(|&t| p("pm2_5", t, 7.5)).collect();
        store.write("w", "water", day[0], &water).unwrap();
        store.write("a", "air", day[0], &air).unwrap();
    }
    let before = store.aggregate("w", "water_level", start, now, HOUR).unwrap().unwrap();
    assert_eq!(before.len(), 96);

    let policy = RetentionPolicy {
        rules: vec![RetentionRule {
            kind: Some("water".into()),
            metric: None,
            raw_ms: Some(DAY),
            rollups_ms: Some(2 * DAY),
        }],
    };
    // Nothing is expired before it is folded: its rollup must exist first.
    assert_eq!(store.expire(now, &policy).unwrap(), ExpireReport::default());
    let folded = store.fold(now, || true).unwrap();
    assert_eq!((folded.days, folded.hours), (4, 0), "every day has closed");
    assert_eq!(chunk_keys(&store), 0, "the days are in their files");
    assert_eq!(day_files(dir.path()).len(), 4, "one file a day");
    let report = store.expire(now, &policy).unwrap();
    assert_eq!(report, ExpireReport { blocks: 3, points: 3 * 144, rollups: 2 });
    // The files of the first three days are rewritten without the water series.
    assert_eq!(day_files(dir.path()).len(), 4);
    assert_eq!(store.current().unwrap().days.read().values().filter(|&&g| g == 2).count(), 3);

    // Raw points: only the last day is left, untouched.
    let w = store.points("w", "water_level", i64::MIN, i64::MAX, 1000).unwrap().unwrap();
    assert_eq!(w.len(), 144);
    assert_eq!(w[0], Point { time_ms: start + 3 * DAY, value: 432.0 });
    let s = store.series("w", "water_level").unwrap();
    assert_eq!((s.count, s.first_ms, s.last_ms), (144, start + 3 * DAY, now - 600_000));
    assert_eq!(store.device("w").unwrap().points, 144);
    // Hourly aggregates: the last two days, from rollups where the points are gone.
    let after = store.aggregate("w", "water_level", start, now, HOUR).unwrap().unwrap();
    assert_eq!(after[..], before[48..]);
    let daily = store.aggregate("w", "water_level", start, now, DAY).unwrap().unwrap();
    assert_eq!(daily.iter().map(|b| b.count).collect::<Vec<_>>(), [144, 144]);
    // Another kind is not touched.
    assert_eq!(store.points("a", "pm2_5", i64::MIN, i64::MAX, 1000).unwrap().unwrap().len(), 4 * 144);
    // A second pass finds nothing more, and all of it survives a reopen.
    assert_eq!(store.expire(now, &policy).unwrap(), ExpireReport::default());
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.series("w", "water_level").unwrap().count, 144);
    assert_eq!(store.aggregate("w", "water_level", start, now, HOUR).unwrap().unwrap()[..], before[48..]);
}

#[test]
fn a_late_point_reopens_its_folded_window_until_the_next_fold() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let hour = chunk::window_start(T0);
    let points: Vec<_> = (0..360).map(|i| p("water_level", hour + i * 10_000, 1.0)).collect();
    for pair in points.chunks(2) {
        store.write("w", "water", T0, pair).unwrap();
    }
    // The fold of the log merged the 180 groups' chunks of that hour into one.
    assert_eq!(chunk_keys(&store), 1);
    let report = store.fold(hour + 2 * chunk::WINDOW_MS, || true).unwrap();
    // The day is still open: its file holds the hour that closed.
    assert_eq!(report, FoldReport { hours: 1, days: 0, chunks_in: 1, points: 360 });
    assert_eq!(chunk_keys(&store), 0);
    assert_eq!(day_files(dir.path()).len(), 1);
    // Folding again changes nothing.
    assert_eq!(store.fold(hour + 2 * chunk::WINDOW_MS, || true).unwrap(), FoldReport::default());

    store.write("w", "water", T0, &[p("water_level", hour + 5, 100.0)]).unwrap();
    let by_hour =
        store.aggregate("w", "water_level", hour, hour + chunk::WINDOW_MS, chunk::WINDOW_MS).unwrap().unwrap();
    assert_eq!((by_hour[0].count, by_hour[0].max), (361, 100.0), "the stale rollup is not used");
    assert_eq!(store.fold(hour + 2 * chunk::WINDOW_MS, || true).unwrap().hours, 1);
    assert_eq!(chunk_keys(&store), 0);
    let again = store.aggregate("w", "water_level", hour, hour + chunk::WINDOW_MS, chunk::WINDOW_MS).unwrap().unwrap();
    assert_eq!(again, by_hour);
}

#[test]
fn a_closed_day_becomes_one_block_and_a_late_point_refolds_the_whole_day() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let day = chunk::day_start(T0);
    let at = |i: i64| day + i * 60_000;
    // Two days, a point a minute, written a few at a time; the first day's closed hours
    // folded into its file while it is open, then the whole day once it has closed.
    let points: Vec<_> = (0..2 * 1440).map(|i| p("water_level", at(i), (i % 97) as f64 / 10.0)).collect();
    for few in points.chunks(7) {
        store.write("w", "water", T0, few).unwrap();
    }
    assert_eq!(store.fold(day + 5 * chunk::WINDOW_MS, || true).unwrap().hours, 1);
    assert_eq!(day_files(dir.path()), ["2026-09-21.1.mkb"]);
    let report = store.fold(day + 2 * chunk::DAY_MS, || true).unwrap();
    assert_eq!((report.days, report.hours, report.points), (2, 0, 2 * 1440));
    assert_eq!(chunk_keys(&store), 0);
    assert_eq!(day_files(dir.path()), ["2026-09-21.2.mkb", "2026-09-22.1.mkb"]);
    let all = |store: &Store| store.points("w", "water_level", i64::MIN, i64::MAX, 10_000).unwrap().unwrap();
    assert_eq!(all(&store).len(), 2 * 1440);
    // A range inside the day block, starting mid-hour.
    let inside = store.points("w", "water_level", at(130) + 1, at(140), 100).unwrap().unwrap();
    assert_eq!(inside.first().map(|p| p.time_ms), Some(at(131)));
    assert_eq!(inside.len(), 9);

    // A late point at 05:30:30 of the first day, and a duplicate of a stored one.
    let late = [p("water_level", at(330) + 30_000, 50.0), p("water_level", at(330), 99.0)];
    assert_eq!(store.write("w", "water", T0, &late).unwrap(), WriteSummary { stored: 1, duplicates: 1 });
    let hour5 = day + 5 * chunk::WINDOW_MS;
    let by_hour = |store: &Store| {
        store.aggregate("w", "water_level", day, day + chunk::DAY_MS, chunk::WINDOW_MS).unwrap().unwrap()
    };
    let fresh = by_hour(&store);
    assert_eq!((fresh[5].start_ms, fresh[5].count, fresh[5].max), (hour5, 61, 50.0), "no stale rollup");
    let report = store.fold(day + 2 * chunk::DAY_MS, || true).unwrap();
    assert_eq!((report.days, report.chunks_in), (1, 1), "the late chunk, into the day's file");
    assert_eq!(chunk_keys(&store), 0);
    assert_eq!(day_files(dir.path()), ["2026-09-21.3.mkb", "2026-09-22.1.mkb"]);
    assert_eq!(by_hour(&store), fresh);
    assert_eq!(all(&store).len(), 2 * 1440 + 1);
}

#[test]
fn compaction_keeps_every_entry_gives_space_back_and_new_chunks_stay_unique() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let hour = chunk::window_start(T0);
    let before = {
        let store = open(&path);
        for i in 0..2_000 {
            let t = hour + i * 10_000;
            store.write("w", "water", t, &[p("water_level", t, (i % 50) as f64)]).unwrap();
        }
        store.fold(hour + 10 * chunk::WINDOW_MS, || true).unwrap();
        store.flush().unwrap();
        store.points("w", "water_level", i64::MIN, i64::MAX, 10_000).unwrap().unwrap()
    };
    let options = StoreOptions { cache_capacity_bytes: 8 << 20, flush_every_ms: None, fold_log_every_ms: None };
    let report = compact(&path, &options).unwrap();
    assert!(report.bytes_after < report.bytes_before, "{report:?}");
    assert!(!dir.path().join("data.old").exists() && !dir.path().join("data.compacting").exists());

    let store = open(&path);
    assert_eq!(store.points("w", "water_level", i64::MIN, i64::MAX, 10_000).unwrap().unwrap(), before);
    assert_eq!(store.series("w", "water_level").unwrap().count, 2_000);
    // Writing goes on in the compacted copy: a late point lands beside the folded block.
    store.write("w", "water", T0, &[p("water_level", hour + 1, 7.0)]).unwrap();
    assert_eq!(store.points("w", "water_level", i64::MIN, i64::MAX, 10_000).unwrap().unwrap().len(), 2_001);
}

#[test]
fn compaction_reports_its_progress_batch_by_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    {
        let store = open(&path);
        // One chunk entry per write (each in an hour of its own, so that folds of the log
        // merge none): more than two batches of entries.
        let points: Vec<_> = (0..25_000).map(|i| p("water_level", T0 + i * chunk::WINDOW_MS, 1.0)).collect();
        for chunk in points.chunks(1) {
            store.write("w", "water", T0, chunk).unwrap();
        }
        store.flush().unwrap();
    }
    let options = StoreOptions { cache_capacity_bytes: 8 << 20, flush_every_ms: None, fold_log_every_ms: None };
    let mut seen = Vec::new();
    let report = compact_with_progress(&path, &options, |so_far| seen.push(so_far.entries)).unwrap();
    assert_eq!(seen, [10_000, 20_000], "{report:?}");
    assert!(report.entries > 25_000, "{report:?}");
}

#[test]
fn an_interrupted_compaction_is_refused_at_open_and_finished_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    {
        let store = open(&path);
        store.write("w", "water", T0, &[p("water_level", T0, 1.0)]).unwrap();
        store.flush().unwrap();
    }
    let options = StoreOptions { cache_capacity_bytes: 8 << 20, flush_every_ms: None, fold_log_every_ms: None };
    // As if the process died between the two renames, with the copy complete.
    std::fs::rename(&path, dir.path().join("data.old")).unwrap();
    copy_dir(&dir.path().join("data.old"), &dir.path().join("data.compacting"));
    let err = Store::open(&path, &options).unwrap_err();
    assert!(matches!(err, StoreError::InterruptedCompaction { .. }), "{err}");
    assert!(!path.exists(), "the refused open created nothing");
    compact(&path, &options).unwrap();
    assert_eq!(open(&path).point_count(), 1);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn sequence_numbers_are_stored_with_their_packs_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = [p("water_level", T0, 1.0)];
    let wrong_unit = [NewPoint {
        metric: "water_level",
        unit: Some("m"),
        time_ms: T0 + 1_000,
        value: 2.0,
        value_kind: Default::default(),
    }];
    let later = [p("water_level", T0 + 2_000, 3.0)];
    const K: [u8; 8] = [1; 8];
    let pack = |device, points, seq: Option<u64>| PackWrite {
        device,
        kind: "water",
        seen_ms: T0,
        points,
        seq: seq.map(|s| (s, K)),
    };
    let results = store
        .write_packs(&[pack("a", &first[..], Some(7)), pack("b", &first[..], None), pack("c", &first[..], Some(1))])
        .unwrap()
        .packs;
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
        .unwrap()
        .packs;
    assert!(results[0].is_err());
    store.write_packs(&[pack("c", &later[..], Some(3))]).unwrap();
    assert_eq!((store.device_seq("a"), store.device_seq("c")), (Some(9), Some(8)));

    drop(store);
    let store = open(dir.path());
    assert_eq!((store.device_seq("a"), store.device_seq("b"), store.device_seq("c")), (Some(9), None, Some(8)));
    assert_eq!(store.device_seq_with_id("a"), Some((9, K)));

    // A number of another numbering (a new key) replaces the stored one, even a lower one,
    // and then its own numbering keeps the highest.
    const L: [u8; 8] = [2; 8];
    let renumbered = [p("water_level", T0 + 3_000, 4.0)];
    let again = [p("water_level", T0 + 4_000, 5.0)];
    let results = store
        .write_packs(&[
            PackWrite { device: "a", kind: "water", seen_ms: T0, points: &renumbered, seq: Some((2, L)) },
            PackWrite { device: "a", kind: "water", seen_ms: T0, points: &again, seq: Some((1, L)) },
        ])
        .unwrap()
        .packs;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(store.device_seq_with_id("a"), Some((2, L)));
}

/// A sequence number entry is 16 bytes (number and numbering id); another length is
/// corruption. (Each directory is written with sled alone, then opened once: sled may hold its
/// lock for a moment after a drop.)
#[test]
fn a_sequence_number_entry_is_read_whole_or_refused() {
    let written_with = |value: &[u8]| {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree(TREE).unwrap();
        tree.insert(keys::FORMAT, &[FORMAT_VERSION]).unwrap();
        tree.insert(keys::seq("old"), value).unwrap();
        db.flush().unwrap();
        drop((tree, db));
        dir
    };
    let mut value = 42u64.to_be_bytes().to_vec();
    value.extend_from_slice(&[7; 8]);
    let dir = written_with(&value);
    assert_eq!(open(dir.path()).device_seq_with_id("old"), Some((42, [7; 8])));
    for bad in [&value[..8], &value[..15], &[1u8; 17][..]] {
        let dir = written_with(bad);
        assert!(matches!(Store::open(dir.path(), &StoreOptions::default()), Err(StoreError::Corrupt(_))), "{bad:?}");
    }
}

/// Waiting for sled's lock is bounded: a directory another open store holds is still refused.
#[test]
fn a_directory_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _held = open(dir.path());
    let started = std::time::Instant::now();
    let err = Store::open(dir.path(), &StoreOptions::default()).unwrap_err();
    // What to do, not sled's lock error.
    assert!(matches!(err, StoreError::Locked(_)), "{err}");
    assert!(err.to_string().contains("stop the mekong that serves it first"), "{err}");
    assert!(started.elapsed() >= LOCK_WAIT, "gave up after {:?}", started.elapsed());
}

/// Every key of the tree, for checking what a removal leaves.
/// Every key in the tree, once the log is folded.
fn all_keys(store: &Store) -> Vec<Vec<u8>> {
    store.fold_log().unwrap();
    store.current().unwrap().tree.iter().keys().map(|k| k.unwrap().to_vec()).collect()
}

#[test]
fn removing_a_device_removes_all_it_stored_and_nothing_else_and_no_new_series_sees_it() {
    const HOUR: i64 = 3_600_000;
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        // "a" first, so that "b" has the highest series ids, the ones a new opening would reuse
        // if it counted from the series left.
        store.write("a", "water", T0, &[p("water_level", T0, 1.0)]).unwrap();
        let before_b = all_keys(&store);
        // Two days of b, folded (day blocks, hour blocks, rollups) and a fresh chunk; signed.
        let times: Vec<i64> = (0..48).map(|h| T0 + h * HOUR).collect();
        let level: Vec<_> = times.iter().map(|&t| p("water_level", t, 2.0)).collect();
        let salt: Vec<_> = times
            .iter()
            .map(|&t| NewPoint {
                metric: "salinity",
                unit: Some("ppt"),
                time_ms: t,
                value: 0.5,
                value_kind: Default::default(),
            })
            .collect();
        store.write("b", "water", T0, &level).unwrap();
        store.write("b", "water", T0, &salt).unwrap();
        store.fold(T0 + 47 * HOUR, || true).unwrap();
        let seq = [PackWrite {
            device: "b",
            kind: "water",
            seen_ms: T0,
            points: &[p("water_level", T0 + 48 * HOUR, 3.0)],
            seq: Some((7, [1; 8])),
        }];
        store.write_packs(&seq).unwrap();
        assert!(chunk_keys(&store) > 2);
        store.write("a", "water", T0, &[p("water_level", T0 + 1, 1.5)]).unwrap();

        let removed = store.remove_device("b").unwrap().unwrap();
        assert_eq!((removed.series, removed.points), (2, 97));
        assert_eq!(store.remove_device("b").unwrap(), None);
        assert!(store.device("b").is_none());
        assert!(store.series_of("b").is_none());
        assert!(store.points("b", "water_level", i64::MIN, i64::MAX, 10).unwrap().is_none());
        assert_eq!(store.device_seq("b"), None);
        assert!(store.latest(None).iter().all(|l| l.device != "b"));
        // Nothing of b is left in the tree: the keys are a's and the store's own.
        let keep_only = all_keys(&store);
        // b's blocks in the day files stay until those files are rewritten: its ids are never
        // given to another series.
        let of_a = |k: &[u8]| {
            (matches!(k[0], keys::POINT | keys::ROLLUP) && k[1..5] == 0u32.to_be_bytes())
                || k[0] == keys::DAY_FILE
                || k == keys::NEXT_SERIES
        };
        let extra: Vec<_> = keep_only.iter().filter(|k| !before_b.contains(k) && !of_a(k)).collect();
        assert!(keep_only.iter().any(|k| k[0] == keys::ROLLUP), "the fold wrote rollups (of a)");
        assert!(extra.is_empty(), "left behind: {extra:?}");
        assert_eq!(store.points("a", "water_level", i64::MIN, i64::MAX, 10).unwrap().unwrap().len(), 2);
        store.flush().unwrap();
    }
    // Reopened, b is still gone, and new series get new ids and none of b's points.
    let store = open(dir.path());
    assert!(store.device("b").is_none());
    assert_eq!(store.device("a").unwrap().points, 2);
    store
        .write(
            "b",
            "air",
            T0,
            &[NewPoint { metric: "pm2_5", unit: None, time_ms: T0 + HOUR, value: 9.0, value_kind: Default::default() }],
        )
        .unwrap();
    store.write("c", "water", T0, &[p("water_level", T0 + HOUR, 4.0)]).unwrap();
    assert_eq!(
        store.points("c", "water_level", i64::MIN, i64::MAX, 100).unwrap().unwrap(),
        [Point { time_ms: T0 + HOUR, value: 4.0 }]
    );
    assert_eq!(store.points("b", "pm2_5", i64::MIN, i64::MAX, 100).unwrap().unwrap().len(), 1);
    let buckets = store.aggregate("c", "water_level", i64::MIN / 4, i64::MAX / 4, 24 * HOUR).unwrap();
    assert_eq!(format!("{buckets:?}").matches("count: 1").count(), 1, "{buckets:?}");
    assert_eq!(store.device("b").unwrap().kind, "air");
}

/// A series of booleans keeps its kind across a reopen and in every listing, and a point of
/// the other kind is refused without writing anything of its pack.
#[test]
fn a_boolean_series_keeps_its_kind_and_refuses_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let gate = |time_ms, open: bool| NewPoint {
        metric: "gate_open",
        unit: None,
        time_ms,
        value: f64::from(u8::from(open)),
        value_kind: ValueKind::Boolean,
    };
    {
        let store = open(dir.path());
        store.write("cai-rang", "water", T0, &[gate(T0, true), gate(T0 + 1000, false), gate(T0 + 2000, true)]).unwrap();
        let mixed = [p("water_level", T0, 150.0), NewPoint { value_kind: ValueKind::Number, ..gate(T0 + 3000, true) }];
        let err = store.write("cai-rang", "water", T0, &mixed).unwrap_err();
        assert!(matches!(&err, WriteError::Refused(PackRefused::ValueKindMismatch { .. })), "{err}");
        assert_eq!(err.to_string(), "series gate_open holds booleans, not numbers");
        assert!(store.series("cai-rang", "water_level").is_none());
        store.flush().unwrap();
    }
    let store = open(dir.path());
    let series = store.series("cai-rang", "gate_open").unwrap();
    assert_eq!((series.value_kind, series.count, series.last_value), (ValueKind::Boolean, 3, 1.0));
    let latest = store.latest(None);
    assert_eq!(latest.iter().map(|l| l.value_kind).collect::<Vec<_>>(), [ValueKind::Boolean]);
    let values: Vec<_> =
        store.points("cai-rang", "gate_open", T0, T0 + 10_000, 10).unwrap().unwrap().iter().map(|p| p.value).collect();
    assert_eq!(values, [1.0, 0.0, 1.0]);
    // A number for it later is refused too, whatever the pack's other points.
    let err = store
        .write("cai-rang", "water", T0, &[NewPoint { value_kind: ValueKind::Number, ..gate(T0 + 5000, true) }])
        .unwrap_err();
    assert!(matches!(err, WriteError::Refused(PackRefused::ValueKindMismatch { .. })));
}

/// A day file cut short or with a flipped bit is an error naming the file, on the reads that
/// need it, never a panic and never fewer points; a missing one stops the opening; files the
/// store does not use (a fold killed before its batch) are deleted at open.
#[test]
fn a_damaged_day_file_is_reported_by_name_and_strays_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let day = chunk::day_start(T0);
    {
        let store = open(dir.path());
        let points: Vec<_> = (0..2 * 144).map(|i| p("water_level", day + i * 600_000, i as f64)).collect();
        store.write("w", "water", T0, &points).unwrap();
        store.fold(day + 3 * chunk::DAY_MS, || true).unwrap();
        store.flush().unwrap();
    }
    let files = day_files(dir.path());
    assert_eq!(files.len(), 2);
    let blocks = dir.path().join(days::DIR);
    // Strays: a temporary file, and a file of a generation sled does not name.
    std::fs::write(blocks.join("2026-09-21.7.mkb.tmp"), b"half").unwrap();
    std::fs::write(blocks.join("2026-09-21.7.mkb"), b"whole but unnamed").unwrap();
    std::fs::write(blocks.join("README"), b"an operator's note").unwrap();
    drop(open(dir.path()));
    let mut expected = files.clone();
    expected.push("README".into());
    expected.sort();
    assert_eq!(day_files(dir.path()), expected);

    let first = blocks.join(&files[0]);
    let whole = std::fs::read(&first).unwrap();
    let bad_reads = |bytes: &[u8]| {
        std::fs::write(&first, bytes).unwrap();
        let store = open(dir.path());
        let err = store.points("w", "water_level", i64::MIN, i64::MAX, 1000).unwrap_err();
        assert!(matches!(&err, StoreError::DayFile { file, .. } if file == &first), "{err}");
        assert!(err.to_string().contains(&files[0]), "{err}");
        // The other day still reads, and so does the metadata.
        let second = store.points("w", "water_level", day + chunk::DAY_MS, i64::MAX, 1000).unwrap().unwrap();
        assert_eq!(second.len(), 144);
        assert_eq!(store.series("w", "water_level").unwrap().count, 288);
        // A late point into the damaged day cannot be checked for a duplicate: refused, not
        // stored twice.
        assert!(store.write("w", "water", T0, &[p("water_level", day + 1, 0.5)]).is_err());
    };
    bad_reads(&whole[..whole.len() - 3]);
    let mut flipped = whole.clone();
    flipped[20] ^= 1;
    bad_reads(&flipped);
    std::fs::write(&first, &whole).unwrap();
    assert_eq!(open(dir.path()).points("w", "water_level", i64::MIN, i64::MAX, 1000).unwrap().unwrap().len(), 288);

    std::fs::remove_file(&first).unwrap();
    let err = Store::open(dir.path(), &StoreOptions::default()).unwrap_err();
    assert!(matches!(&err, StoreError::DayFile { file, reason } if file == &first && reason == "missing"), "{err}");
}

/// A day file goes once every series in it has expired; the points left, the counts and the
/// first times follow, and a late point into an expired day is stored again like any other.
#[test]
fn retention_deletes_a_day_file_once_all_its_series_have_expired() {
    const DAY: i64 = 86_400_000;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let start = chunk::day_start(T0);
    for (device, kind) in [("w", "water"), ("a", "air")] {
        let points: Vec<_> = (0..4 * 24).map(|h| p("level", start + h * 3_600_000, h as f64)).collect();
        store.write(device, kind, start, &points).unwrap();
    }
    store.fold(start + 4 * DAY, || true).unwrap();
    assert_eq!(day_files(dir.path()).len(), 4);
    let policy = RetentionPolicy { rules: vec![RetentionRule { raw_ms: Some(2 * DAY), ..RetentionRule::default() }] };
    let report = store.expire(start + 4 * DAY, &policy).unwrap();
    assert_eq!((report.blocks, report.points), (4, 4 * 24));
    assert_eq!(day_files(dir.path()), ["2026-09-23.1.mkb", "2026-09-24.1.mkb"]);
    for device in ["w", "a"] {
        let s = store.series(device, "level").unwrap();
        assert_eq!((s.count, s.first_ms), (48, start + 2 * DAY), "{device}");
        assert_eq!(store.points(device, "level", i64::MIN, i64::MAX, 1000).unwrap().unwrap().len(), 48);
        assert_eq!(store.device(device).unwrap().points, 48);
    }
    // The same again finds nothing; a reopening agrees.
    assert_eq!(store.expire(start + 4 * DAY, &policy).unwrap(), ExpireReport::default());
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.series("a", "level").unwrap().count, 48);
    assert_eq!(day_files(dir.path()).len(), 2);
}

/// Reads while a writer logs and the store's thread folds the log every millisecond: every
/// point written before a read began is in it, once, with its value.
#[test]
fn reads_see_every_point_once_while_the_log_is_folded_beside_them() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions { cache_capacity_bytes: 8 << 20, flush_every_ms: None, fold_log_every_ms: Some(1) };
    let store = Store::open(dir.path(), &options).unwrap();
    const N: usize = 3_000;
    let written = AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..N {
                // Ten seconds apart: one hour window holds 360 of them, so folds merge chunks.
                store.write("w", "water", T0, &[p("water_level", T0 + i as i64 * 10_000, i as f64)]).unwrap();
                written.store(i + 1, Ordering::SeqCst);
            }
        });
        let mut reads = 0;
        loop {
            let before = written.load(Ordering::SeqCst);
            let got = store.points("w", "water_level", i64::MIN, i64::MAX, usize::MAX).unwrap().unwrap_or_default();
            assert!(got.len() >= before, "{} points read after {before} were written", got.len());
            for (i, point) in got.iter().enumerate() {
                assert_eq!((point.time_ms, point.value), (T0 + i as i64 * 10_000, i as f64), "point {i}");
            }
            reads += 1;
            if before == N {
                break;
            }
        }
        assert!(reads > 1);
    });
    // The store's thread folded some of it into the tree meanwhile.
    assert!(store.current().unwrap().tree.scan_prefix([keys::POINT]).count() > 0);
    let hours = store.aggregate("w", "water_level", T0, T0 + N as i64 * 10_000, chunk::WINDOW_MS).unwrap().unwrap();
    assert_eq!(hours.iter().map(|b| b.count).sum::<u64>(), N as u64);
}

/// A fold writes one chunk per series and hour and one entry per device, however many groups
/// it takes, and deletes their records.
#[test]
fn a_fold_merges_the_logged_groups_into_one_chunk_per_series_and_hour_and_one_entry_per_device() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..10 {
        let a = [p("water_level", T0 + i * 1_000, i as f64)];
        let b = [p("salinity", T0 + i * 1_000, 1.0), p("salinity", T0 + chunk::WINDOW_MS + i * 1_000, 2.0)];
        let packs = [
            PackWrite { device: "a", kind: "water", seen_ms: T0, points: &a, seq: None },
            PackWrite { device: "b", kind: "water", seen_ms: T0, points: &b, seq: Some((i as u64, [3; 8])) },
        ];
        store.write_packs(&packs).unwrap();
    }
    assert_eq!(store.log_size().0, 10);
    let fold = store.fold_log().unwrap();
    // a's hour, b's two hours; the two devices' entries, b's sequence number, the next series id.
    assert_eq!(fold, LogFold { records: 10, chunks: 3, entries: 4 });
    assert_eq!(store.log_size(), (0, 0));
    assert_eq!(store.fold_log().unwrap(), LogFold::default());
    let tree = &store.current().unwrap().tree;
    assert_eq!(tree.scan_prefix([keys::LOG]).count(), 0);
    assert_eq!(tree.scan_prefix([keys::POINT]).count(), 3);
    assert_eq!(store.points("b", "salinity", i64::MIN, i64::MAX, 100).unwrap().unwrap().len(), 20);
    assert_eq!(store.device_seq("b"), Some(9));
}

/// A fold lists a window's chunks as they are where each starts after the one before ends
/// (chunk version 7), and merges their points into one chunk (version 4) where they overlap
/// or hold few points; both read back every point once, in order.
#[test]
fn a_fold_lists_chunks_that_follow_one_another_and_merges_those_that_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let value = |t: i64| 1.0 + (t % 7) as f64 * 0.5;
    let points = |metric: &'static str, times: &[i64]| -> Vec<NewPoint<'static>> {
        times.iter().map(|&t| p(metric, t, value(t))).collect()
    };
    // "level": packs of ten regular readings, one after the other. "flow": the second pack
    // reaches back between the first one's readings.
    let groups: [(i64, &[i64]); 3] = [(0, &[0, 20, 40]), (100, &[10, 30]), (200, &[50])];
    for (level, flow) in groups {
        let level = points("level", &(0..10).map(|i| T0 + level + i * 10).collect::<Vec<_>>());
        let flow = points("flow", &flow.iter().map(|t| T0 + t).collect::<Vec<_>>());
        let packs = [
            PackWrite { device: "a", kind: "water", seen_ms: T0, points: &level, seq: None },
            PackWrite { device: "b", kind: "water", seen_ms: T0, points: &flow, seq: None },
        ];
        store.write_packs(&packs).unwrap();
    }
    assert_eq!(store.fold_log().unwrap().chunks, 2);
    let tree = &store.current().unwrap().tree;
    let versions: Vec<u8> = tree.scan_prefix([keys::POINT]).map(|e| e.unwrap().1[0]).collect();
    // Series ids in the order first written: a's level, then b's flow.
    assert_eq!(versions, [7, 4]);
    for (device, metric, times) in
        [("a", "level", (0..300).step_by(10).collect::<Vec<i64>>()), ("b", "flow", vec![0, 10, 20, 30, 40, 50])]
    {
        let got = store.points(device, metric, i64::MIN, i64::MAX, 100).unwrap().unwrap();
        let got: Vec<(i64, f64)> = got.iter().map(|p| (p.time_ms - T0, p.value)).collect();
        let want: Vec<(i64, f64)> = times.iter().map(|&t| (t, value(T0 + t))).collect();
        assert_eq!(got, want, "{device}/{metric}");
    }
}

/// A point still in the log is a duplicate like a folded one, and records left in the log
/// when the store stops are folded by the next opening, metadata included.
#[test]
fn the_log_counts_for_duplicates_and_an_opening_folds_what_a_stop_left_in_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.write("a", "water", T0, &[p("water_level", T0, 1.0)]).unwrap();
        let again = store.write("a", "water", T0 + 1, &[p("water_level", T0, 9.0), p("water_level", T0 + 5, 2.0)]);
        assert_eq!(again.unwrap(), WriteSummary { stored: 1, duplicates: 1 });
        let seq = [PackWrite { device: "a", kind: "water", seen_ms: T0 + 2, points: &[], seq: Some((4, [1; 8])) }];
        store.write_packs(&seq).unwrap();
        assert_eq!(store.log_size().0, 3);
        store.flush().unwrap();
    }
    let store = open(dir.path());
    let tree = &store.current().unwrap().tree;
    assert_eq!(tree.scan_prefix([keys::LOG]).count(), 0, "folded at the opening");
    assert_eq!(tree.scan_prefix([keys::POINT]).count(), 2);
    let got = store.points("a", "water_level", i64::MIN, i64::MAX, 10).unwrap().unwrap();
    assert_eq!(got, [Point { time_ms: T0, value: 1.0 }, Point { time_ms: T0 + 5, value: 2.0 }]);
    let device = store.device("a").unwrap();
    assert_eq!((device.points, device.last_seen_ms), (2, T0 + 2));
    assert_eq!(store.device_seq("a"), Some(4));
    assert_eq!(store.series("a", "water_level").unwrap().count, 2);
}

/// A fold is applied in slices, so a crash between two of them leaves part of it in the tree
/// and all its records in the log. The opening applies the records again and must end where
/// the whole fold would have: each point once (merged chunks included), the newest entries.
#[test]
fn a_fold_cut_short_between_its_slices_is_finished_by_the_opening() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let devices: Vec<String> = (0..8).map(|d| format!("d{d}")).collect();
    {
        let store = open(dir.path());
        // Five groups, each a pack from every device: five chunks per series and hour, merged.
        for g in 0..5 {
            let points: Vec<[NewPoint<'_>; 2]> = (0..devices.len())
                .map(|_| [p("level", T0 + g * 1000, g as f64), p("flow", T0 + g * 1000, 1.0)])
                .collect();
            let packs: Vec<PackWrite<'_>> = devices
                .iter()
                .zip(&points)
                .map(|(device, points)| PackWrite { device, kind: "water", seen_ms: T0 + g, points, seq: None })
                .collect();
            store.write_packs(&packs).unwrap();
        }
        let opened = store.current().unwrap();
        assert_eq!(store.log_size().0, 5);
        // Slices of three inserts: 9 entries (8 devices, the next series id), then 16 merged
        // chunks; a crash after four slices.
        opened.log.slice.store(3, Ordering::Relaxed);
        opened.log.test_crash_after.store(4, Ordering::Relaxed);
        assert!(store.fold_log().is_err());
        assert_eq!(opened.tree.scan_prefix([keys::LOG]).count(), 5, "every record is still in the log");
        let entries = opened.tree.scan_prefix([keys::DEVICE]).count()
            + usize::from(opened.tree.get(keys::NEXT_SERIES).unwrap().is_some());
        assert_eq!(entries, 9, "three slices of entries are in the tree");
        assert_eq!(opened.tree.scan_prefix([keys::POINT]).count(), 3, "and one of merged chunks");
        store.flush().unwrap();
    }
    let store = open(dir.path());
    let tree = &store.current().unwrap().tree;
    assert_eq!(tree.scan_prefix([keys::LOG]).count(), 0);
    for device in &devices {
        let level = store.points(device, "level", i64::MIN, i64::MAX, 100).unwrap().unwrap();
        let expected: Vec<Point> = (0..5).map(|g| Point { time_ms: T0 + g * 1000, value: g as f64 }).collect();
        assert_eq!(level, expected, "{device}");
        assert_eq!(store.points(device, "flow", i64::MIN, i64::MAX, 100).unwrap().unwrap().len(), 5);
        let meta = store.device(device).unwrap();
        assert_eq!((meta.points, meta.last_seen_ms), (10, T0 + 4), "{device}");
    }
    // And a whole fold, in slices, after more writes, leaves the same points.
    let opened = store.current().unwrap();
    opened.log.slice.store(3, Ordering::Relaxed);
    store.write("d0", "water", T0 + 9, &[p("level", T0 + 5000, 5.0)]).unwrap();
    store.write("d0", "water", T0 + 9, &[p("level", T0 + 6000, 6.0)]).unwrap();
    let fold = store.fold_log().unwrap();
    assert_eq!((fold.records, fold.chunks), (2, 1));
    assert_eq!(store.points("d0", "level", i64::MIN, i64::MAX, 100).unwrap().unwrap().len(), 7);
}
