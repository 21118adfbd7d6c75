//! The engine: one state machine per (rule, device), fed the readings of each durable pack in
//! reading-time order, and a clock for stale devices. Pure: no I/O, no clock of its own (the
//! caller passes `now_ms`), so that every behaviour is a unit test.
//!
//! Late readings: each (rule, device) keeps the latest reading time it has evaluated
//! (`reached_ms`). A reading at or before it is late: it is counted and changes nothing, so
//! a span already evaluated can neither open a new firing nor clear one. A reading after it is
//! evaluated at its own time, so a backlog sent after an outage, oldest first, fires (and
//! clears) with the times of the readings that did it. `reached_ms` is kept with every
//! change, so this holds across restarts.

use std::collections::{HashMap, VecDeque};

use crate::rule::{Condition, Direction, Rule};

/// One change of an alert's state, as the engine decides it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The rule.
    pub rule: String,
    /// The device.
    pub device: String,
    /// The metric (for a stale rule without one, empty).
    pub metric: String,
    /// Firing (true) or resolved.
    pub firing: bool,
    /// Reading time of the change (for a stale rule, the time it was noticed or the pack
    /// arrived).
    pub at_ms: i64,
    /// The reading that made it; `None` for a stale device.
    pub value: Option<f64>,
    /// The message, filled in.
    pub message: String,
}

/// What the engine keeps of a (rule, device) across restarts: its last change and how far
/// in reading time it has evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    /// The metric.
    pub metric: String,
    /// Whether it fires.
    pub firing: bool,
    /// Time of its last change.
    pub since_ms: i64,
    /// The value of its last change.
    pub value: Option<f64>,
    /// The message of its last change.
    pub message: String,
    /// The latest reading time evaluated.
    pub reached_ms: i64,
    /// Stale rules: the device's usual period as last learned, kept so that a device that
    /// never reports again after a restart is still found stale.
    pub period_ms: Option<i64>,
}

/// The in-memory part of a (rule, device).
#[derive(Debug)]
struct Track {
    saved: Saved,
    /// Since when the condition that would change the state has held, in reading time.
    pending_ms: Option<i64>,
    /// Rate rules: the readings within the window.
    window: VecDeque<(i64, f64)>,
    /// Stale rules: arrival times of the last packs (wall clock).
    arrivals: VecDeque<i64>,
}

impl Track {
    fn new(metric: &str) -> Track {
        let saved = Saved {
            metric: metric.to_owned(),
            firing: false,
            since_ms: i64::MIN,
            value: None,
            message: String::new(),
            reached_ms: i64::MIN,
            period_ms: None,
        };
        Track { saved, pending_ms: None, window: VecDeque::new(), arrivals: VecDeque::new() }
    }
}

/// Arrivals kept per stale track, to learn the device's period.
const ARRIVALS: usize = 9;
/// Packs closer together than this are one burst (a backlog), not a period.
const MIN_PERIOD_MS: i64 = 1_000;

/// The rules and their states.
#[derive(Debug, Default)]
pub struct Engine {
    rules: Vec<Rule>,
    /// Rules by metric, so that a series looks at its own rules only.
    by_metric: HashMap<String, Vec<usize>>,
    stale: Vec<usize>,
    tracks: HashMap<(String, String), Track>,
    late: u64,
}

impl Engine {
    /// An engine running `rules`, with no state.
    pub fn new(rules: Vec<Rule>) -> Engine {
        let mut engine = Engine::default();
        engine.set_rules(rules);
        engine
    }

    /// Replaces the rules. States of rules that stay (by id) are kept; the (rule, device)
    /// pairs of rules that went are returned, their states dropped.
    pub fn set_rules(&mut self, rules: Vec<Rule>) -> Vec<(String, String)> {
        self.by_metric.clear();
        self.stale.clear();
        for (i, rule) in rules.iter().enumerate() {
            match (&rule.condition, &rule.metric) {
                (Condition::Stale { .. }, _) => self.stale.push(i),
                (_, Some(metric)) => self.by_metric.entry(metric.clone()).or_default().push(i),
                (_, None) => {}
            }
        }
        let gone: Vec<(String, String)> =
            self.tracks.keys().filter(|(rule, _)| !rules.iter().any(|r| &r.id == rule)).cloned().collect();
        for key in &gone {
            self.tracks.remove(key);
        }
        self.rules = rules;
        gone
    }

    /// Drops every state of `device` (a device removed from the platform); returns the
    /// (rule, state) pairs dropped.
    pub fn forget_device(&mut self, device: &str) -> Vec<(String, Saved)> {
        let keys: Vec<(String, String)> = self.tracks.keys().filter(|(_, d)| d == device).cloned().collect();
        keys.into_iter().filter_map(|key| self.tracks.remove(&key).map(|t| (key.0, t.saved))).collect()
    }

    /// The rules running.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Puts back the state of (rule, device) kept before a restart.
    pub fn restore(&mut self, rule: &str, device: &str, saved: Saved) {
        let mut track = Track::new(&saved.metric);
        track.saved = saved;
        self.tracks.insert((rule.to_owned(), device.to_owned()), track);
    }

    /// The rate windows to refill after [`Engine::restore`]: (rule, device, metric, from,
    /// to) for each rate rule's (rule, device) that had evaluated readings, the span of its
    /// window before the restart (`from <= t < to`).
    pub fn windows_to_refill(&self) -> Vec<(String, String, String, i64, i64)> {
        let mut out = Vec::new();
        for ((rule, device), track) in &self.tracks {
            let Some(r) = self.rules.iter().find(|r| &r.id == rule) else { continue };
            if let (Condition::Rate { within_ms, .. }, true) = (&r.condition, track.saved.reached_ms != i64::MIN) {
                let to = track.saved.reached_ms.saturating_add(1);
                out.push((
                    rule.clone(),
                    device.clone(),
                    track.saved.metric.clone(),
                    to.saturating_sub(*within_ms + 1),
                    to,
                ));
            }
        }
        out
    }

    /// Puts back the readings of a rate rule's window ([`Engine::windows_to_refill`]), read
    /// from the store, so that a rise under way before a restart is still measured whole.
    pub fn refill(&mut self, rule: &str, device: &str, points: &[(i64, f64)]) {
        if let Some(track) = self.tracks.get_mut(&(rule.to_owned(), device.to_owned())) {
            let reached = track.saved.reached_ms;
            track.window = points.iter().copied().filter(|&(t, v)| t <= reached && v.is_finite()).collect();
        }
    }

    /// Notes that `device` (of `kind`) last reported at `at_ms` (wall clock), as the store
    /// remembers it at start, so that a device that never reports again is found stale.
    pub fn seen(&mut self, device: &str, kind: &str, at_ms: i64) {
        for &i in &self.stale {
            let rule = &self.rules[i];
            if rule.applies_to(device, kind) {
                let metric = rule.metric.as_deref().unwrap_or("");
                let track =
                    self.tracks.entry((rule.id.clone(), device.to_owned())).or_insert_with(|| Track::new(metric));
                if track.arrivals.back().is_none_or(|&last| last < at_ms) {
                    track.arrivals.push_back(at_ms);
                }
            }
        }
    }

    /// Evaluates the readings of one durable pack of `device` (of `kind`): `series` gives,
    /// per metric, its new points; the pack arrived at `now_ms`. Returns the changes, in
    /// order.
    pub fn observe<'a>(
        &mut self,
        device: &str,
        kind: &str,
        series: impl IntoIterator<Item = (&'a str, &'a [(i64, f64)])> + Clone,
        now_ms: i64,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut sorted = Vec::new();
        for (metric, points) in series.clone() {
            let Some(rules) = self.by_metric.get(metric) else { continue };
            // Packs are usually in time order already; sort a copy only when not.
            let points: &[(i64, f64)] = match points.windows(2).all(|w| w[0].0 <= w[1].0) {
                true => points,
                false => {
                    sorted.clear();
                    sorted.extend_from_slice(points);
                    sorted.sort_by_key(|p| p.0);
                    &sorted
                }
            };
            for &i in rules {
                let rule = &self.rules[i];
                if !rule.applies_to(device, kind) {
                    continue;
                }
                let track =
                    self.tracks.entry((rule.id.clone(), device.to_owned())).or_insert_with(|| Track::new(metric));
                for &(t, v) in points {
                    if t <= track.saved.reached_ms || !v.is_finite() {
                        self.late += 1;
                        continue;
                    }
                    track.saved.reached_ms = t;
                    if let Some(firing) = step(rule, track, t, v) {
                        changes.push(change(rule, device, track, firing, t, Some(v)));
                    }
                }
            }
        }
        for &i in &self.stale {
            let rule = &self.rules[i];
            let counts = rule.metric.as_deref().is_none_or(|m| series.clone().into_iter().any(|(s, _)| s == m));
            if !counts || !rule.applies_to(device, kind) {
                continue;
            }
            let metric = rule.metric.as_deref().unwrap_or("");
            let track = self.tracks.entry((rule.id.clone(), device.to_owned())).or_insert_with(|| Track::new(metric));
            match track.arrivals.back() {
                Some(&last) if now_ms - last < MIN_PERIOD_MS => {
                    if let Some(last) = track.arrivals.back_mut() {
                        *last = now_ms;
                    }
                }
                _ => track.arrivals.push_back(now_ms),
            }
            if track.arrivals.len() > ARRIVALS {
                track.arrivals.pop_front();
            }
            track.saved.period_ms = learned(track).or(track.saved.period_ms);
            if track.saved.firing {
                changes.push(change(rule, device, track, false, now_ms, None));
            }
        }
        changes
    }

    /// Looks for devices gone stale by `now_ms` (wall clock).
    pub fn tick(&mut self, now_ms: i64) -> Vec<Change> {
        let mut changes = Vec::new();
        for &i in &self.stale {
            let rule = &self.rules[i];
            let Condition::Stale { periods, period_ms } = rule.condition else { continue };
            for ((id, device), track) in self.tracks.iter_mut() {
                if id != &rule.id || track.saved.firing {
                    continue;
                }
                let period = period_ms.or_else(|| learned(track)).or(track.saved.period_ms);
                let (Some(&last), Some(period)) = (track.arrivals.back(), period) else {
                    continue;
                };
                if (now_ms - last) as f64 > periods * period as f64 {
                    changes.push(change(rule, device, track, true, now_ms, None));
                }
            }
        }
        changes
    }

    /// Every (rule, device) with its state, firing or not.
    pub fn states(&self) -> impl Iterator<Item = (&str, &str, &Saved)> {
        self.tracks
            .iter()
            .filter(|(_, t)| t.saved.since_ms != i64::MIN)
            .map(|((rule, device), t)| (rule.as_str(), device.as_str(), &t.saved))
    }

    /// Every (rule, device) that has evaluated a reading or changed, for saving at a stop.
    pub fn progress(&self) -> impl Iterator<Item = (&str, &str, &Saved)> {
        self.tracks
            .iter()
            .filter(|(_, t)| {
                t.saved.since_ms != i64::MIN || t.saved.reached_ms != i64::MIN || t.saved.period_ms.is_some()
            })
            .map(|((rule, device), t)| (rule.as_str(), device.as_str(), &t.saved))
    }

    /// The state of (rule, device).
    pub fn state(&self, rule: &str, device: &str) -> Option<&Saved> {
        self.tracks.get(&(rule.to_owned(), device.to_owned())).map(|t| &t.saved)
    }

    /// Readings left out as late (at or before what their state machine had reached).
    pub fn late(&self) -> u64 {
        self.late
    }
}

/// The usual period of a stale track's device: the median spacing of its recent packs, once
/// there are three spacings.
fn learned(track: &Track) -> Option<i64> {
    let mut gaps: Vec<i64> = track.arrivals.iter().zip(track.arrivals.iter().skip(1)).map(|(a, b)| b - a).collect();
    if gaps.len() < 3 {
        return None;
    }
    gaps.sort_unstable();
    gaps.get(gaps.len() / 2).copied()
}

/// Records a change in the track and describes it.
fn change(rule: &Rule, device: &str, track: &mut Track, firing: bool, at_ms: i64, value: Option<f64>) -> Change {
    let metric = track.saved.metric.clone();
    let message = rule.message_for(device, &metric, value, firing);
    track.saved.firing = firing;
    track.saved.since_ms = at_ms;
    track.saved.value = value;
    track.saved.message = message.clone();
    track.pending_ms = None;
    Change { rule: rule.id.clone(), device: device.to_owned(), metric, firing, at_ms, value, message }
}

/// One reading through a threshold or rate machine: `Some(firing)` when the state changes.
fn step(rule: &Rule, track: &mut Track, t: i64, v: f64) -> Option<bool> {
    let (crossing, clearing) = match rule.condition {
        Condition::Threshold { direction: Direction::Up, level, clear } => (v > level, v < clear),
        Condition::Threshold { direction: Direction::Down, level, clear } => (v < level, v > clear),
        Condition::Rate { direction, amount, within_ms, clear } => {
            track.window.push_back((t, v));
            while track.window.front().is_some_and(|&(t0, _)| t0 < t.saturating_sub(within_ms)) {
                track.window.pop_front();
            }
            let values = track.window.iter().map(|&(_, v)| v);
            let change = match direction {
                Direction::Up => v - values.fold(f64::INFINITY, f64::min),
                Direction::Down => values.fold(f64::NEG_INFINITY, f64::max) - v,
            };
            (change > amount, change < clear)
        }
        Condition::Stale { .. } => return None,
    };
    let (wanted, hold_ms) = match track.saved.firing {
        false => (crossing, rule.for_ms),
        true => (clearing, rule.clear_for_ms),
    };
    if !wanted {
        track.pending_ms = None;
        return None;
    }
    let since = *track.pending_ms.get_or_insert(t);
    (t - since >= hold_ms).then_some(!track.saved.firing)
}

#[cfg(test)]
pub(crate) mod tests;
