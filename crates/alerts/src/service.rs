//! [`Alerts`]: the engine at work in the platform. It takes each durable pack (from the
//! feed's observer), writes every change it decides with its sequence number, state and
//! outbox entries in one atomic store batch, and only then delivers it live (feed, MQTT) and
//! wakes the webhooks' senders; a clock thread looks for stale devices.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use mekong_store::{RecordWrite, Store};

use crate::engine::{Change, Engine};
use crate::records::{self, Notice, StateRecord, HISTORY, OUTBOX, RULES, STATE};
use crate::rule::{Rule, RuleSpec};
use crate::webhook::{self, DeliveryLog, Webhook, WebhookOptions};
use crate::{now_ms, AlertsError};

/// What else hears of every change once it is durable: the live feed, the MQTT broker.
pub trait Live: Send + Sync {
    /// A change, in sequence order.
    fn change(&self, notice: &Notice);
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct AlertsOptions {
    /// The rules of the config file (read-only through the API).
    pub rules: Vec<RuleSpec>,
    /// Where changes are POSTed.
    pub webhooks: Vec<WebhookOptions>,
    /// Changes kept in the history; older ones are dropped as new ones come.
    pub history_max: u64,
    /// How often the clock looks for stale devices.
    pub tick: Duration,
}

impl Default for AlertsOptions {
    fn default() -> Self {
        AlertsOptions { rules: Vec::new(), webhooks: Vec::new(), history_max: 100_000, tick: Duration::from_secs(1) }
    }
}

/// Where a rule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleSource {
    /// The config file: read-only through the API.
    Config,
    /// Added through the API, kept in the store.
    Api,
}

/// A filter on the history.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Changes at or after this time (ms).
    pub from_ms: Option<i64>,
    /// Changes before this time (ms).
    pub to_ms: Option<i64>,
    /// Of this rule only.
    pub rule: Option<String>,
    /// Of this device only.
    pub device: Option<String>,
    /// At most this many, the most recent.
    pub limit: usize,
}

/// The pending count of one webhook, for the delivery log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookStatus {
    /// Its name.
    pub name: String,
    /// Scheme, host and port of its URL (never its path or query, which may hold a token).
    pub target: String,
    /// Changes waiting in its outbox.
    pub pending: u64,
}

#[derive(Debug)]
struct Core {
    engine: Engine,
    next_seq: u64,
    /// The oldest sequence number the history may still hold.
    oldest_seq: u64,
    /// The sequence number of each (rule, device)'s last change.
    seqs: HashMap<(String, String), u64>,
    api_rules: BTreeMap<String, RuleSpec>,
}

pub(crate) struct Inner {
    store: Store,
    core: Mutex<Core>,
    config_rules: Vec<RuleSpec>,
    live: RwLock<Vec<Arc<dyn Live>>>,
    webhooks: Vec<Arc<Webhook>>,
    log: Arc<DeliveryLog>,
    history_max: u64,
    stop: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts").field("webhooks", &self.webhooks.len()).finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The webhooks' senders hold the store; they end with the engine.
        for task in self.tasks.get_mut().unwrap_or_else(|e| e.into_inner()).drain(..) {
            task.abort();
        }
    }
}

/// The alert engine at work. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Alerts {
    inner: Arc<Inner>,
}

fn checked(specs: &[RuleSpec]) -> Result<Vec<Rule>, AlertsError> {
    specs.iter().map(RuleSpec::check).collect()
}

impl Alerts {
    /// Loads the rules added through the API, the states and the history's last number from
    /// `store`, and starts the clock thread and (on `runtime`) one sender per webhook.
    pub fn start(
        store: Store,
        options: AlertsOptions,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Alerts, AlertsError> {
        let mut ids = std::collections::HashSet::new();
        for spec in &options.rules {
            if !ids.insert(spec.id.as_str()) {
                return Err(AlertsError::Rule { id: spec.id.clone(), why: "defined twice".into() });
            }
        }
        checked(&options.rules)?;
        let mut names = std::collections::HashSet::new();
        for hook in &options.webhooks {
            if !crate::rule::valid_id(&hook.name) || !names.insert(hook.name.as_str()) {
                return Err(AlertsError::Webhook(format!("{:?}: a unique name of letters, digits, - or _", hook.name)));
            }
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                return Err(AlertsError::Webhook(format!("{}: the url must be http:// or https://", hook.name)));
            }
        }
        let mut api_rules = BTreeMap::new();
        for (key, value) in store.scan_records(RULES)? {
            match serde_json::from_slice::<RuleSpec>(&value) {
                Ok(spec) if ids.contains(spec.id.as_str()) => {
                    tracing::warn!(rule = %spec.id, "a rule of the API has the id of a config rule: the config's is used");
                }
                Ok(spec) if spec.check().is_ok() => {
                    api_rules.insert(spec.id.clone(), spec);
                }
                _ => {
                    tracing::warn!(key = %String::from_utf8_lossy(&key), "an alert rule in the store cannot be read: left out")
                }
            }
        }
        let mut rules = checked(&options.rules)?;
        rules.extend(checked(&api_rules.values().cloned().collect::<Vec<_>>())?);
        let mut engine = Engine::new(rules);
        let mut seqs = HashMap::new();
        for (key, value) in store.scan_records(STATE)? {
            let record = serde_json::from_slice::<StateRecord>(&value).ok();
            match (records::parse_state_key(&key), record) {
                (Some((rule, device)), Some(record)) if engine.rules().iter().any(|r| r.id == rule) => {
                    engine.restore(rule, device, record.saved());
                    seqs.insert((rule.to_owned(), device.to_owned()), record.seq);
                }
                _ => {}
            }
        }
        for (rule, device, metric, from, to) in engine.windows_to_refill() {
            if let Ok(Some(points)) = store.points(&device, &metric, from, to, 100_000) {
                let points: Vec<(i64, f64)> = points.iter().map(|p| (p.time_ms, p.value)).collect();
                engine.refill(&rule, &device, &points);
            }
        }
        for device in store.devices(None) {
            engine.seen(&device.id, &device.kind, device.last_seen_ms);
        }
        let history = store.scan_records(HISTORY)?;
        let seq_of = |key: &[u8]| key.try_into().map(u64::from_be_bytes).ok();
        let next_seq = history.last().and_then(|(k, _)| seq_of(k)).map_or(1, |s| s + 1);
        let oldest_seq = history.first().and_then(|(k, _)| seq_of(k)).unwrap_or(next_seq);
        let webhooks: Vec<Arc<Webhook>> = options
            .webhooks
            .iter()
            .map(|o| Arc::new(Webhook { options: o.clone(), wake: tokio::sync::Notify::new() }))
            .collect();
        let inner = Arc::new(Inner {
            store: store.clone(),
            core: Mutex::new(Core { engine, next_seq, oldest_seq, seqs, api_rules }),
            config_rules: options.rules.clone(),
            live: RwLock::new(Vec::new()),
            webhooks,
            log: Arc::new(DeliveryLog::default()),
            history_max: options.history_max.max(1),
            stop: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
        });
        let alerts = Alerts { inner };
        if !alerts.inner.webhooks.is_empty() {
            let client = reqwest::Client::builder()
                .build()
                .map_err(|e| AlertsError::Webhook(format!("http client: {}", e.without_url())))?;
            let mut tasks = alerts.inner.tasks.lock().unwrap_or_else(|e| e.into_inner());
            for hook in &alerts.inner.webhooks {
                let run = webhook::run(Arc::clone(hook), store.clone(), Arc::clone(&alerts.inner.log), client.clone());
                tasks.push(runtime.spawn(run));
            }
        }
        let clock = {
            // Weak: the thread ends by itself once the engine is dropped (a platform that
            // failed to start after it), as well as at `stop`.
            let weak = Arc::downgrade(&alerts.inner);
            let every = options.tick;
            std::thread::Builder::new().name("mekong-alerts".into()).spawn(move || loop {
                std::thread::park_timeout(every);
                let Some(inner) = weak.upgrade() else { return };
                if inner.stop.load(Ordering::Relaxed) {
                    return;
                }
                Alerts { inner }.tick(now_ms());
            })?
        };
        alerts.inner.threads.lock().unwrap_or_else(|e| e.into_inner()).push(clock);
        Ok(alerts)
    }

    /// The engine as the feed's observer: it holds the engine weakly, so that the engine may
    /// hold the feed (as a destination) without a cycle that would keep both, and the store,
    /// alive.
    pub fn observer(&self) -> Arc<dyn mekong_feed::Observer> {
        Arc::new(crate::feed::Observing(Arc::downgrade(&self.inner)))
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Alerts {
        Alerts { inner }
    }

    fn core(&self) -> MutexGuard<'_, Core> {
        // The core is changed by whole assignments after each store write; a panic elsewhere
        // leaves it usable.
        self.inner.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a live destination. With `replay`, it first hears the last change of every
    /// (rule, device) (the MQTT broker keeps retained messages in memory only, so it needs
    /// them again after a restart); without, only changes from now on (the feed).
    pub fn add_live(&self, live: Arc<dyn Live>, replay: bool) {
        let core = self.core();
        for notice in current(&core).iter().filter(|_| replay) {
            live.change(notice);
        }
        self.inner.live.write().unwrap_or_else(|e| e.into_inner()).push(live);
    }

    /// Evaluates one durable pack of `device` (of `kind`): per metric, its new points.
    pub fn observe<'a>(
        &self,
        device: &str,
        kind: &str,
        series: impl IntoIterator<Item = (&'a str, &'a [(i64, f64)])> + Clone,
    ) {
        let mut core = self.core();
        let changes = core.engine.observe(device, kind, series, now_ms());
        if !changes.is_empty() {
            self.commit(&mut core, changes);
        }
    }

    /// [`Alerts::observe`] for every pack of a flushed round, with one store write for all
    /// the changes they make.
    pub fn observe_round<'a, S>(&self, packs: impl IntoIterator<Item = (&'a str, &'a str, S)>)
    where
        S: IntoIterator<Item = (&'a str, &'a [(i64, f64)])> + Clone,
    {
        let mut core = self.core();
        let now = now_ms();
        let mut changes = Vec::new();
        for (device, kind, series) in packs {
            changes.extend(core.engine.observe(device, kind, series, now));
        }
        if !changes.is_empty() {
            self.commit(&mut core, changes);
        }
    }

    /// Looks for stale devices at `now_ms`.
    pub fn tick(&self, now_ms: i64) {
        let mut core = self.core();
        let changes = core.engine.tick(now_ms);
        if !changes.is_empty() {
            self.commit(&mut core, changes);
        }
    }

    /// Writes `changes` (state, history, outboxes: one batch), then delivers them.
    fn commit(&self, core: &mut Core, changes: Vec<Change>) {
        let mut notices = Vec::with_capacity(changes.len());
        let mut values: Vec<(Vec<u8>, Vec<u8>, &'static str)> = Vec::new();
        for change in changes {
            let seq = core.next_seq;
            core.next_seq += 1;
            let severity =
                core.engine.rules().iter().find(|r| r.id == change.rule).map_or("warning", |r| r.severity.as_str());
            let notice = Notice {
                seq,
                rule: change.rule.clone(),
                device: change.device.clone(),
                metric: change.metric.clone(),
                state: if change.firing { "firing" } else { "resolved" }.to_owned(),
                at_ms: change.at_ms,
                value: change.value,
                severity: severity.to_owned(),
                message: change.message.clone(),
            };
            let body = serde_json::to_vec(&notice).unwrap_or_default();
            if let Some(saved) = core.engine.state(&change.rule, &change.device) {
                let state = serde_json::to_vec(&StateRecord::new(saved, seq)).unwrap_or_default();
                values.push((records::state_key(&change.rule, &change.device), state, STATE));
            }
            values.push((seq.to_be_bytes().to_vec(), body.clone(), HISTORY));
            for hook in &self.inner.webhooks {
                values.push((records::outbox_key(&hook.options.name, seq), body.clone(), OUTBOX));
            }
            core.seqs.insert((change.rule, change.device), seq);
            notices.push(notice);
        }
        let mut trimmed = Vec::new();
        while core.next_seq.saturating_sub(core.oldest_seq) > self.inner.history_max {
            trimmed.push(core.oldest_seq.to_be_bytes());
            core.oldest_seq += 1;
        }
        let mut writes: Vec<RecordWrite<'_>> =
            values.iter().map(|(key, value, space)| RecordWrite::Put { space, key, value }).collect();
        writes.extend(trimmed.iter().map(|key| RecordWrite::Delete { space: HISTORY, key }));
        if let Err(e) = self.inner.store.write_records(&writes) {
            // Live destinations still hear of it; webhooks and the history miss it.
            tracing::error!(error = %e, changes = notices.len(), "cannot store alert changes");
        }
        for notice in &notices {
            tracing::info!(rule = %notice.rule, device = %notice.device, state = %notice.state, seq = notice.seq, "alert");
        }
        let live = self.inner.live.read().unwrap_or_else(|e| e.into_inner()).clone();
        for notice in &notices {
            for l in &live {
                l.change(notice);
            }
        }
        for hook in &self.inner.webhooks {
            hook.wake.notify_one();
        }
    }

    /// The (rule, device) pairs that fire now.
    pub fn active(&self) -> Vec<Notice> {
        let mut all: Vec<Notice> = current(&self.core()).into_iter().filter(Notice::firing).collect();
        all.sort_by(|a, b| (&a.rule, &a.device).cmp(&(&b.rule, &b.device)));
        all
    }

    /// The changes that match `query`, oldest first.
    pub fn history(&self, query: &HistoryQuery) -> Result<Vec<Notice>, AlertsError> {
        let mut out: Vec<Notice> = self
            .inner
            .store
            .scan_records(HISTORY)?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice::<Notice>(&v).ok())
            .filter(|n| {
                query.from_ms.is_none_or(|t| n.at_ms >= t)
                    && query.to_ms.is_none_or(|t| n.at_ms < t)
                    && query.rule.as_deref().is_none_or(|r| r == n.rule)
                    && query.device.as_deref().is_none_or(|d| d == n.device)
            })
            .collect();
        let skip = out.len().saturating_sub(query.limit);
        out.drain(..skip);
        Ok(out)
    }

    /// Every rule, with where it comes from.
    pub fn rules(&self) -> Vec<(RuleSpec, RuleSource)> {
        let core = self.core();
        let config = self.inner.config_rules.iter().map(|s| (s.clone(), RuleSource::Config));
        config.chain(core.api_rules.values().map(|s| (s.clone(), RuleSource::Api))).collect()
    }

    /// Adds or replaces a rule of the API's; `Ok(true)` if it is new. A config rule's id is
    /// refused ([`AlertsError::ReadOnly`]).
    pub fn put_rule(&self, spec: RuleSpec) -> Result<bool, AlertsError> {
        spec.check()?;
        if self.inner.config_rules.iter().any(|r| r.id == spec.id) {
            return Err(AlertsError::ReadOnly(spec.id));
        }
        let mut core = self.core();
        let value = serde_json::to_vec(&spec).unwrap_or_default();
        self.inner.store.write_records(&[RecordWrite::Put { space: RULES, key: spec.id.as_bytes(), value: &value }])?;
        let new = core.api_rules.insert(spec.id.clone(), spec).is_none();
        self.reload_rules(&mut core)?;
        Ok(new)
    }

    /// Removes a rule of the API's; `Ok(false)` if there is none. Its firing alerts resolve
    /// ("rule removed") and its states go.
    pub fn delete_rule(&self, id: &str) -> Result<bool, AlertsError> {
        if self.inner.config_rules.iter().any(|r| r.id == id) {
            return Err(AlertsError::ReadOnly(id.to_owned()));
        }
        let mut core = self.core();
        if !core.api_rules.contains_key(id) {
            return Ok(false);
        }
        let firing: Vec<Change> = core
            .engine
            .states()
            .filter(|(rule, _, saved)| *rule == id && saved.firing)
            .map(|(rule, device, saved)| Change {
                rule: rule.to_owned(),
                device: device.to_owned(),
                metric: saved.metric.clone(),
                firing: false,
                at_ms: now_ms(),
                value: None,
                message: format!("cleared: rule {id} removed"),
            })
            .collect();
        if !firing.is_empty() {
            self.commit(&mut core, firing);
        }
        self.inner.store.write_records(&[RecordWrite::Delete { space: RULES, key: id.as_bytes() }])?;
        core.api_rules.remove(id);
        self.reload_rules(&mut core)?;
        Ok(true)
    }

    /// Forgets `device` (removed from the platform with its data): its firing alerts
    /// resolve ("device removed"), so that every follower hears of it, and its states go,
    /// so that a device that later takes the id starts afresh.
    pub fn forget_device(&self, device: &str) -> Result<(), AlertsError> {
        let mut core = self.core();
        let dropped = core.engine.forget_device(device);
        let resolved: Vec<Change> = dropped
            .iter()
            .filter(|(_, saved)| saved.firing)
            .map(|(rule, saved)| Change {
                rule: rule.clone(),
                device: device.to_owned(),
                metric: saved.metric.clone(),
                firing: false,
                at_ms: now_ms(),
                value: None,
                message: format!("cleared: device {device} removed"),
            })
            .collect();
        if !resolved.is_empty() {
            self.commit(&mut core, resolved);
        }
        let keys: Vec<Vec<u8>> = dropped.iter().map(|(rule, _)| records::state_key(rule, device)).collect();
        for (rule, _) in &dropped {
            core.seqs.remove(&(rule.clone(), device.to_owned()));
        }
        let deletes: Vec<RecordWrite<'_>> = keys.iter().map(|key| RecordWrite::Delete { space: STATE, key }).collect();
        self.inner.store.write_records(&deletes)?;
        Ok(())
    }

    fn reload_rules(&self, core: &mut Core) -> Result<(), AlertsError> {
        let mut rules = checked(&self.inner.config_rules)?;
        rules.extend(checked(&core.api_rules.values().cloned().collect::<Vec<_>>())?);
        let gone = core.engine.set_rules(rules);
        let keys: Vec<Vec<u8>> = gone.iter().map(|(rule, device)| records::state_key(rule, device)).collect();
        for pair in &gone {
            core.seqs.remove(pair);
        }
        let deletes: Vec<RecordWrite<'_>> = keys.iter().map(|key| RecordWrite::Delete { space: STATE, key }).collect();
        self.inner.store.write_records(&deletes)?;
        Ok(())
    }

    /// The delivery log: recent attempts, oldest first.
    pub fn deliveries(&self) -> Vec<webhook::Delivery> {
        self.inner.log.entries()
    }

    /// Every webhook and the changes waiting in its outbox.
    pub fn webhooks(&self) -> Result<Vec<WebhookStatus>, AlertsError> {
        let outbox = self.inner.store.scan_records(OUTBOX)?;
        Ok(self
            .inner
            .webhooks
            .iter()
            .map(|hook| {
                let prefix = records::outbox_prefix(&hook.options.name);
                let pending = outbox.iter().filter(|(k, _)| k.starts_with(&prefix)).count() as u64;
                WebhookStatus { name: hook.options.name.clone(), target: target(&hook.options.url), pending }
            })
            .collect())
    }

    /// Readings left out as late since start.
    pub fn late_readings(&self) -> u64 {
        self.core().engine.late()
    }

    /// Saves how far every (rule, device) has evaluated, and stops the clock and the
    /// webhooks' senders (what their outboxes hold is sent after the next start).
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        for thread in self.inner.threads.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            thread.thread().unpark();
            let _ = thread.join();
        }
        for task in self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            task.abort();
        }
        // The feed holds the engine as its observer, and the engine the feed as a
        // destination: letting go of the destinations ends that cycle, so that the store
        // (and its directory's lock) is released once the platform lets go too.
        self.inner.live.write().unwrap_or_else(|e| e.into_inner()).clear();
        let core = self.core();
        let states: Vec<(Vec<u8>, Vec<u8>)> = core
            .engine
            .progress()
            .map(|(rule, device, saved)| {
                let seq = core.seqs.get(&(rule.to_owned(), device.to_owned())).copied().unwrap_or(0);
                let value = serde_json::to_vec(&StateRecord::new(saved, seq)).unwrap_or_default();
                (records::state_key(rule, device), value)
            })
            .collect();
        let writes: Vec<RecordWrite<'_>> =
            states.iter().map(|(key, value)| RecordWrite::Put { space: STATE, key, value }).collect();
        if let Err(e) = self.inner.store.write_records(&writes) {
            tracing::warn!(error = %e, "cannot save how far the alert rules have evaluated");
        }
    }
}

/// The last change of every (rule, device), as notices.
fn current(core: &Core) -> Vec<Notice> {
    core.engine
        .states()
        .map(|(rule, device, saved)| {
            let severity = core.engine.rules().iter().find(|r| r.id == rule).map_or("warning", |r| r.severity.as_str());
            Notice {
                seq: core.seqs.get(&(rule.to_owned(), device.to_owned())).copied().unwrap_or(0),
                rule: rule.to_owned(),
                device: device.to_owned(),
                metric: saved.metric.clone(),
                state: if saved.firing { "firing" } else { "resolved" }.to_owned(),
                at_ms: saved.since_ms,
                value: saved.value,
                severity: severity.to_owned(),
                message: saved.message.clone(),
            }
        })
        .collect()
}

/// Scheme, host and port of `url`.
fn target(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // Credentials in the authority (user:password@) are left out too.
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests;
