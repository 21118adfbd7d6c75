//! Alert rules: how they are written (config file and API, [`RuleSpec`]) and the checked form
//! the engine runs ([`Rule`]).

use serde::{Deserialize, Serialize};

use crate::AlertsError;

/// A rule as written in `[[alerts.rule]]` or sent to `PUT /v1/alerts/rules/{id}`: one flat
/// table, checked into a [`Rule`] by [`RuleSpec::check`].
///
/// `type = "threshold"`: `above` or `below` a level, held `for_s` seconds (of reading time);
/// cleared once the value is on the other side of `clear` (default: the level itself) for
/// `clear_for_s` seconds. `type = "rate"`: a `rise` or `fall` of more than the amount within
/// `within_s` seconds; cleared once the change within the window is under `clear` (default:
/// half the amount) for `clear_for_s`. `type = "stale"`: no pack from the device for
/// `periods` times its usual period (`period_s`, or learned from the spacing of its packs);
/// cleared by a pack that arrives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// The rule's name: letters, digits, `-` and `_` (it is an MQTT topic level).
    pub id: String,
    /// `threshold`, `rate` or `stale`.
    #[serde(rename = "type")]
    pub kind_of_rule: String,
    /// The metric it watches (required but for `stale`, where it narrows the packs that
    /// count to those carrying this metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// Only this device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Only devices of this kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// threshold: fires above this level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// threshold: fires below this level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// rate: fires on a rise of more than this within `within_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rise: Option<f64>,
    /// rate: fires on a fall of more than this within `within_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fall: Option<f64>,
    /// rate: the window, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_s: Option<u64>,
    /// How long the condition must hold before the alert fires, in seconds of reading time.
    #[serde(default)]
    pub for_s: u64,
    /// The level (threshold) or change (rate) the value must be back past to clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear: Option<f64>,
    /// How long the clear condition must hold before the alert resolves, in seconds.
    #[serde(default)]
    pub clear_for_s: u64,
    /// stale: how many usual periods without a pack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub periods: Option<f64>,
    /// stale: the device's usual period, in seconds; learned from its packs if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_s: Option<u64>,
    /// `warning` (default) or `critical`.
    #[serde(default = "warning")]
    pub severity: String,
    /// What a person reads; `{device}`, `{metric}` and `{value}` are replaced.
    #[serde(default)]
    pub message: String,
}

fn warning() -> String {
    "warning".to_owned()
}

/// How bad a firing is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Look at it.
    Warning,
    /// Act now.
    Critical,
}

impl Severity {
    /// Its name in JSON, MQTT and webhooks.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Which side of a level or change fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Above the level, or a rise.
    Up,
    /// Below the level, or a fall.
    Down,
}

/// What a rule watches for. Times are in ms.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The value past `level` for `for_ms`; clear once past `clear` the other way for
    /// `clear_for_ms`.
    Threshold {
        /// Above or below.
        direction: Direction,
        /// The level.
        level: f64,
        /// The clear level (hysteresis).
        clear: f64,
    },
    /// A change of more than `amount` within `within_ms`; clear once under `clear`.
    Rate {
        /// A rise or a fall.
        direction: Direction,
        /// The change that fires.
        amount: f64,
        /// The window.
        within_ms: i64,
        /// The change under which it clears.
        clear: f64,
    },
    /// No pack for `periods` usual periods.
    Stale {
        /// How many periods.
        periods: f64,
        /// The period, if configured.
        period_ms: Option<i64>,
    },
}

/// A checked rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Its name.
    pub id: String,
    /// The metric (for `stale`, optional).
    pub metric: Option<String>,
    /// Only this device.
    pub device: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// What fires it.
    pub condition: Condition,
    /// How long the fire condition must hold, in ms.
    pub for_ms: i64,
    /// How long the clear condition must hold, in ms.
    pub clear_for_ms: i64,
    /// How bad.
    pub severity: Severity,
    /// The message template.
    pub message: String,
}

/// Whether `id` can name a rule (and so an MQTT topic level and a URL segment).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn secs(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

impl RuleSpec {
    /// Checks the rule; the error says what is wrong with it.
    pub fn check(&self) -> Result<Rule, AlertsError> {
        let bad = |why: &str| AlertsError::Rule { id: self.id.clone(), why: why.to_owned() };
        if !valid_id(&self.id) {
            return Err(bad("the id must be 1 to 64 letters, digits, '-' or '_'"));
        }
        let finite = |v: Option<f64>| v.is_none_or(f64::is_finite);
        if ![self.above, self.below, self.rise, self.fall, self.clear, self.periods].into_iter().all(finite) {
            return Err(bad("numbers must be finite"));
        }
        let severity = match self.severity.as_str() {
            "warning" => Severity::Warning,
            "critical" => Severity::Critical,
            _ => return Err(bad("severity is warning or critical")),
        };
        let need_metric = || self.metric.clone().filter(|m| !m.is_empty()).ok_or_else(|| bad("a metric is needed"));
        let condition = match self.kind_of_rule.as_str() {
            "threshold" => {
                let (direction, level) = match (self.above, self.below) {
                    (Some(l), None) => (Direction::Up, l),
                    (None, Some(l)) => (Direction::Down, l),
                    _ => return Err(bad("a threshold rule has one of above or below")),
                };
                let clear = self.clear.unwrap_or(level);
                let wrong_side = match direction {
                    Direction::Up => clear > level,
                    Direction::Down => clear < level,
                };
                if wrong_side {
                    return Err(bad("clear must be on the quiet side of the level"));
                }
                need_metric()?;
                Condition::Threshold { direction, level, clear }
            }
            "rate" => {
                let (direction, amount) = match (self.rise, self.fall) {
                    (Some(a), None) => (Direction::Up, a),
                    (None, Some(a)) => (Direction::Down, a),
                    _ => return Err(bad("a rate rule has one of rise or fall")),
                };
                if amount <= 0.0 {
                    return Err(bad("the rise or fall must be above 0"));
                }
                let within_ms = match self.within_s {
                    Some(s) if s > 0 => secs(s),
                    _ => return Err(bad("a rate rule needs within_s above 0")),
                };
                let clear = self.clear.unwrap_or(amount / 2.0);
                if clear > amount || clear < 0.0 {
                    return Err(bad("clear must be between 0 and the rise or fall"));
                }
                need_metric()?;
                Condition::Rate { direction, amount, within_ms, clear }
            }
            "stale" => {
                let periods = self.periods.unwrap_or(3.0);
                if periods < 1.0 {
                    return Err(bad("periods must be at least 1"));
                }
                let period_ms = match self.period_s {
                    Some(0) => return Err(bad("period_s must be above 0")),
                    p => p.map(secs),
                };
                Condition::Stale { periods, period_ms }
            }
            _ => return Err(bad("type is threshold, rate or stale")),
        };
        Ok(Rule {
            id: self.id.clone(),
            metric: self.metric.clone().filter(|m| !m.is_empty()),
            device: self.device.clone(),
            kind: self.kind.clone(),
            condition,
            for_ms: secs(self.for_s),
            clear_for_ms: secs(self.clear_for_s),
            severity,
            message: self.message.clone(),
        })
    }
}

impl Rule {
    /// Whether the rule watches this device (the metric is matched by the engine's index).
    pub fn applies_to(&self, device: &str, kind: &str) -> bool {
        self.device.as_deref().is_none_or(|d| d == device) && self.kind.as_deref().is_none_or(|k| k == kind)
    }

    /// The message of a change, its placeholders filled in.
    pub fn message_for(&self, device: &str, metric: &str, value: Option<f64>, firing: bool) -> String {
        let template = match self.message.is_empty() {
            true => format!("{} on {{device}} ({{metric}} {{value}})", self.id),
            false => self.message.clone(),
        };
        let value = value.map_or_else(|| "no data".to_owned(), |v| format!("{v}"));
        let text = template.replace("{device}", device).replace("{metric}", metric).replace("{value}", &value);
        match firing {
            true => text,
            false => format!("cleared: {text}"),
        }
    }
}
