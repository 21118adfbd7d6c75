//! The engine's state machines on simulated series: each rule type fires once and clears once,
//! hovering, late data and a restart in between included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::rule::RuleSpec;

const MIN: i64 = 60_000;

pub(crate) fn spec(id: &str, kind_of_rule: &str) -> RuleSpec {
    RuleSpec {
        id: id.into(),
        kind_of_rule: kind_of_rule.into(),
        metric: Some("water_level".into()),
        device: None,
        kind: Some("water".into()),
        above: None,
        below: None,
        rise: None,
        fall: None,
        within_s: None,
        for_s: 0,
        clear: None,
        clear_for_s: 0,
        periods: None,
        period_s: None,
        severity: "warning".into(),
        message: "level {value} at {device}".into(),
    }
}

fn flood() -> Rule {
    RuleSpec { above: Some(250.0), clear: Some(240.0), for_s: 600, clear_for_s: 300, ..spec("flood", "threshold") }
        .check()
        .unwrap()
}

/// Feeds `points` (minute, value) one pack each, and returns the changes as (minute, firing).
fn run(engine: &mut Engine, points: &[(i64, f64)]) -> Vec<(i64, bool)> {
    let mut out = Vec::new();
    for &(minute, v) in points {
        let pts = [(minute * MIN, v)];
        for c in engine.observe("hau-01", "water", [("water_level", &pts[..])], minute * MIN) {
            out.push((c.at_ms / MIN, c.firing));
        }
    }
    out
}

/// A level that rises over 250 cm, hovers around it, stays above, and falls back.
fn hovering_tide() -> Vec<(i64, f64)> {
    let mut series = Vec::new();
    for m in 0..120 {
        let v = match m {
            0..20 => 200.0 + m as f64 * 2.0,
            // Hovers: above and below 250 every other minute (does not fire: not held 10 min).
            20..30 => {
                if m % 2 == 0 {
                    251.0
                } else {
                    249.0
                }
            }
            30..60 => 260.0,
            // Back to hovering at 245..251 (does not clear: not below 240).
            60..80 => {
                if m % 2 == 0 {
                    251.0
                } else {
                    245.0
                }
            }
            _ => 230.0,
        };
        series.push((m, v));
    }
    series
}

#[test]
fn threshold_fires_once_after_its_duration_and_clears_once_with_hysteresis() {
    let mut engine = Engine::new(vec![flood()]);
    assert_eq!(run(&mut engine, &hovering_tide()), vec![(40, true), (85, false)]);
}

#[test]
fn below_threshold_and_messages() {
    let rule = RuleSpec { below: Some(1.0), clear: Some(2.0), ..spec("low", "threshold") }.check().unwrap();
    let mut engine = Engine::new(vec![rule]);
    assert_eq!(run(&mut engine, &[(0, 3.0), (1, 0.5), (2, 1.5), (3, 0.8), (4, 2.5)]), vec![(1, true), (4, false)]);
    let saved = engine.state("low", "hau-01").unwrap();
    assert_eq!(saved.message, "cleared: level 2.5 at hau-01");
    assert_eq!(saved.value, Some(2.5));
}

#[test]
fn rules_match_their_scope_only() {
    let mut rule = flood();
    rule.for_ms = 0;
    rule.device = Some("other".into());
    let mut engine = Engine::new(vec![rule]);
    assert!(run(&mut engine, &[(0, 300.0)]).is_empty());
    let pts = [(0i64, 300.0)];
    assert_eq!(engine.observe("other", "water", [("water_level", &pts[..])], 0).len(), 1);
    assert!(engine.observe("other", "water", [("salinity", &pts[..])], 0).is_empty());
    assert!(engine.observe("other", "air", [("water_level", &pts[..])], 0).is_empty());
}

#[test]
fn late_readings_inside_an_evaluated_span_change_nothing() {
    let mut engine = Engine::new(vec![flood()]);
    let tide = hovering_tide();
    // The first 100 minutes, then a late copy of minutes 30..60 with other values that
    // would fire again, then the rest.
    let mut changes = run(&mut engine, &tide[..100]);
    let late: Vec<(i64, f64)> = (30..60).map(|m| (m, 300.0)).collect();
    changes.extend(run(&mut engine, &late));
    assert_eq!(engine.late(), 30);
    changes.extend(run(&mut engine, &tide[100..]));
    assert_eq!(changes, vec![(40, true), (85, false)]);
}

#[test]
fn a_backlog_after_an_outage_is_evaluated_at_its_own_times() {
    let mut engine = Engine::new(vec![flood()]);
    // Minutes 0..30 live; the node is cut off for minutes 30..90 and sends them in one pack
    // at minute 90: the firing and the clearing carry the readings' times.
    let tide = hovering_tide();
    let mut changes = run(&mut engine, &tide[..30]);
    let backlog: Vec<(i64, f64)> = tide[30..90].iter().map(|&(m, v)| (m * MIN, v)).collect();
    for c in engine.observe("hau-01", "water", [("water_level", &backlog[..])], 90 * MIN) {
        changes.push((c.at_ms / MIN, c.firing));
    }
    assert_eq!(changes, vec![(40, true), (85, false)]);
}

#[test]
fn a_restart_keeps_the_firing_and_does_not_fire_it_again() {
    let tide = hovering_tide();
    let mut before = Engine::new(vec![flood()]);
    assert_eq!(run(&mut before, &tide[..50]), vec![(40, true)]);
    let saved = before.state("flood", "hau-01").unwrap().clone();
    assert!(saved.firing);
    let mut after = Engine::new(vec![flood()]);
    after.restore("flood", "hau-01", saved);
    // Late data from before the restart changes nothing; the rest clears once.
    assert!(run(&mut after, &[(35, 300.0), (39, 300.0)]).is_empty());
    assert_eq!(run(&mut after, &tide[50..]), vec![(85, false)]);
}

#[test]
fn rate_of_rise_fires_once_and_clears_once() {
    let rule = RuleSpec { rise: Some(20.0), within_s: Some(1800), ..spec("surge", "rate") }.check().unwrap();
    let mut engine = Engine::new(vec![rule]);
    // Flat, then a rise of 1 cm a minute (fires once above 20 cm), then flat: the rise within
    // the window falls under 10 cm (the default clear, half) once the low values leave it.
    let mut series: Vec<(i64, f64)> = (0..30).map(|m| (m, 200.0)).collect();
    series.extend((30..60).map(|m| (m, 200.0 + (m - 29) as f64)));
    series.extend((60..150).map(|m| (m, 230.0)));
    let changes = run(&mut engine, &series);
    assert_eq!(changes, vec![(50, true), (80, false)]);
}

#[test]
fn rate_of_fall_needs_its_duration() {
    let rule = RuleSpec { fall: Some(5.0), within_s: Some(600), for_s: 120, ..spec("drop", "rate") }.check().unwrap();
    let mut engine = Engine::new(vec![rule]);
    let series: Vec<(i64, f64)> = (0..40).map(|m| (m, if m < 10 { 100.0 } else { 90.0 })).collect();
    // Falls 10 at minute 10; held 2 minutes: fires at 12; the window (10 minutes, both ends in) forgets the fall at 20.
    assert_eq!(run(&mut engine, &series), vec![(12, true), (20, false)]);
}

#[test]
fn stale_device_with_a_learned_period_fires_once_and_clears_on_its_next_pack() {
    let rule = RuleSpec { metric: None, periods: Some(3.0), ..spec("quiet", "stale") }.check().unwrap();
    let mut engine = Engine::new(vec![rule]);
    let pts = [(0i64, 1.0)];
    // A pack every 5 minutes: learned after three spacings.
    for m in [0, 5, 10] {
        engine.observe("hau-01", "water", [("water_level", &pts[..])], m * MIN);
        assert!(engine.tick(m * MIN + 20 * MIN).is_empty(), "two spacings learn nothing");
    }
    engine.observe("hau-01", "water", [("water_level", &pts[..])], 15 * MIN);
    assert!(engine.tick(29 * MIN).is_empty());
    let fired = engine.tick(31 * MIN);
    assert_eq!(fired.len(), 1);
    assert!(fired[0].firing && fired[0].value.is_none());
    assert!(engine.tick(40 * MIN).is_empty(), "fires once");
    let cleared = engine.observe("hau-01", "water", [("water_level", &pts[..])], 41 * MIN);
    assert_eq!(cleared.len(), 1);
    assert!(!cleared[0].firing);
    assert!(engine.tick(50 * MIN).is_empty());
}

#[test]
fn stale_device_with_a_configured_period_and_a_device_seen_before_a_restart() {
    let rule = RuleSpec { metric: None, period_s: Some(60), periods: Some(2.0), ..spec("quiet", "stale") };
    let mut engine = Engine::new(vec![rule.check().unwrap()]);
    engine.seen("hau-01", "water", 0);
    engine.seen("air-01", "air", 0);
    assert!(engine.tick(MIN).is_empty());
    let fired = engine.tick(2 * MIN + 1);
    assert_eq!(fired.iter().map(|c| c.device.as_str()).collect::<Vec<_>>(), ["hau-01"]);
}

#[test]
fn removing_a_rule_drops_its_states() {
    let mut rule = flood();
    rule.for_ms = 0;
    let mut engine = Engine::new(vec![rule]);
    assert_eq!(run(&mut engine, &[(0, 300.0)]).len(), 1);
    assert_eq!(engine.set_rules(vec![]), vec![("flood".to_owned(), "hau-01".to_owned())]);
    assert_eq!(engine.states().count(), 0);
}

#[test]
fn bad_rules_are_refused_with_a_reason() {
    let cases = [
        (RuleSpec { above: Some(1.0), below: Some(0.0), ..spec("x", "threshold") }, "one of above or below"),
        (RuleSpec { above: Some(1.0), clear: Some(2.0), ..spec("x", "threshold") }, "quiet side"),
        (RuleSpec { rise: Some(1.0), ..spec("x", "rate") }, "within_s"),
        (RuleSpec { above: Some(f64::NAN), ..spec("x", "threshold") }, "finite"),
        (RuleSpec { above: Some(1.0), ..spec("a/b", "threshold") }, "the id"),
        (RuleSpec { above: Some(1.0), metric: None, ..spec("x", "threshold") }, "metric"),
        (RuleSpec { severity: "loud".into(), ..spec("x", "stale") }, "severity"),
    ];
    for (spec, why) in cases {
        let err = spec.check().unwrap_err().to_string();
        assert!(err.contains(why), "{err} should say {why}");
    }
}

#[test]
fn a_rate_rule_across_a_restart_with_its_window_refilled_fires_and_clears_as_without() {
    let rule = || RuleSpec { rise: Some(20.0), within_s: Some(1800), ..spec("surge", "rate") }.check().unwrap();
    let mut series: Vec<(i64, f64)> = (0..30).map(|m| (m, 200.0)).collect();
    series.extend((30..60).map(|m| (m, 200.0 + (m - 29) as f64)));
    series.extend((60..150).map(|m| (m, 230.0)));
    for cut in [45, 55, 70] {
        let mut before = Engine::new(vec![rule()]);
        let mut changes = run(&mut before, &series[..cut]);
        let mut after = Engine::new(vec![rule()]);
        // What a stop saves, and the store's points of the window.
        for (r, d, saved) in before.progress() {
            after.restore(r, d, saved.clone());
        }
        for (r, d, _, from, to) in after.windows_to_refill() {
            let points: Vec<(i64, f64)> =
                series.iter().map(|&(m, v)| (m * MIN, v)).filter(|&(t, _)| t >= from && t < to).collect();
            after.refill(&r, &d, &points);
        }
        // Late data from before the restart changes nothing.
        changes.extend(run(&mut after, &[(10, 500.0)]));
        changes.extend(run(&mut after, &series[cut..]));
        assert_eq!(changes, vec![(50, true), (80, false)], "restart after minute {cut}");
    }
}

#[test]
fn a_stale_alert_across_a_restart_does_not_fire_again_and_clears_once() {
    let rule = || RuleSpec { metric: None, period_s: Some(60), periods: Some(2.0), ..spec("quiet", "stale") };
    let mut before = Engine::new(vec![rule().check().unwrap()]);
    before.seen("hau-01", "water", 0);
    assert_eq!(before.tick(3 * MIN).len(), 1);
    let mut after = Engine::new(vec![rule().check().unwrap()]);
    for (r, d, saved) in before.progress() {
        after.restore(r, d, saved.clone());
    }
    // The store still says the device was last seen at 0.
    after.seen("hau-01", "water", 0);
    assert!(after.tick(10 * MIN).is_empty());
    let pts = [(11 * MIN, 1.0)];
    let cleared = after.observe("hau-01", "water", [("water_level", &pts[..])], 11 * MIN);
    assert_eq!(cleared.iter().map(|c| (c.firing, c.at_ms)).collect::<Vec<_>>(), [(false, 11 * MIN)]);
    assert!(after.tick(12 * MIN).is_empty());
}

#[test]
fn a_learned_period_survives_a_restart_so_a_device_that_never_comes_back_is_found() {
    let rule = || RuleSpec { metric: None, periods: Some(3.0), ..spec("quiet", "stale") }.check().unwrap();
    let mut before = Engine::new(vec![rule()]);
    let pts = [(0i64, 1.0)];
    for m in [0, 5, 10, 15] {
        before.observe("hau-01", "water", [("water_level", &pts[..])], m * MIN);
    }
    // A restart at minute 16; the device never reports again.
    let mut after = Engine::new(vec![rule()]);
    for (r, d, saved) in before.progress() {
        after.restore(r, d, saved.clone());
    }
    after.seen("hau-01", "water", 15 * MIN);
    assert!(after.tick(29 * MIN).is_empty());
    assert_eq!(after.tick(31 * MIN).len(), 1);
}
