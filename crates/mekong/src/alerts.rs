//! The alert engine in the platform: the `[alerts]` section (rules, webhooks, whose secrets
//! are read here, the one crate that reads files and the environment), and the engine's live
//! destinations: the broker (each change retained on `mekong/v1/alerts/{rule}/{device}`).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use mekong_alerts::{AlertsOptions, Live, Notice, RuleSpec, Secret, WebhookOptions};
use mekong_ingest::Publisher;
use mekong_schema::topic::AlertTopic;
use serde::{Deserialize, Serialize};

/// `[alerts]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Changes kept in the history; the oldest go as new ones come.
    pub history_max: u64,
    /// How often stale devices are looked for, in ms.
    pub check_every_ms: u64,
    /// The rules: `[[alerts.rule]]`.
    pub rule: Vec<RuleSpec>,
    /// Where changes are POSTed: `[[alerts.webhook]]`.
    pub webhook: Vec<WebhookConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        let o = AlertsOptions::default();
        AlertsConfig {
            history_max: o.history_max,
            check_every_ms: o.tick.as_millis() as u64,
            rule: Vec::new(),
            webhook: Vec::new(),
        }
    }
}

/// One `[[alerts.webhook]]`. The secret is named (an environment variable or a file), never
/// written in the configuration, so that `print-config` and logs cannot show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Its name: letters, digits, `-`, `_`.
    pub name: String,
    /// Where to POST (`http://` or `https://`).
    pub url: String,
    /// The environment variable that holds the HMAC secret.
    pub secret_env: String,
    /// Or the file that holds it (its whole content, without a final newline).
    pub secret_file: PathBuf,
    /// How long one attempt may take, in seconds.
    pub timeout_secs: u64,
    /// The first wait after a failed attempt, in ms; it doubles up to `retry_max_ms`.
    pub retry_min_ms: u64,
    /// The longest wait between attempts, in ms.
    pub retry_max_ms: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            name: String::new(),
            url: String::new(),
            secret_env: String::new(),
            secret_file: PathBuf::new(),
            timeout_secs: 10,
            retry_min_ms: 1_000,
            retry_max_ms: 300_000,
        }
    }
}

impl AlertsConfig {
    /// Checks the rules and webhooks (not the secrets, which are read at start).
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut ids = HashSet::new();
        for rule in &self.rule {
            rule.check().context("in [[alerts.rule]]")?;
            if !ids.insert(rule.id.as_str()) {
                bail!("[[alerts.rule]] {:?} is defined twice", rule.id);
            }
        }
        let mut names = HashSet::new();
        for (i, hook) in self.webhook.iter().enumerate() {
            if !mekong_alerts::rule::valid_id(&hook.name) || !names.insert(hook.name.as_str()) {
                bail!("alerts.webhook[{i}].name {:?}: a unique name of letters, digits, '-' or '_'", hook.name);
            }
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                bail!("alerts.webhook[{i}] ({}): url must start with http:// or https://", hook.name);
            }
            if hook.secret_env.is_empty() == hook.secret_file.as_os_str().is_empty() {
                bail!("alerts.webhook[{i}] ({}): give one of secret_env or secret_file", hook.name);
            }
            if hook.timeout_secs == 0 || hook.retry_min_ms == 0 || hook.retry_max_ms < hook.retry_min_ms {
                bail!(
                    "alerts.webhook[{i}] ({}): timeout_secs and retry_min_ms above 0, retry_max_ms >= retry_min_ms",
                    hook.name
                );
            }
        }
        if self.check_every_ms == 0 || self.history_max == 0 {
            bail!("alerts.check_every_ms and alerts.history_max must be above 0");
        }
        Ok(())
    }

    /// The engine's options, with each webhook's secret read from its variable or file. An
    /// error names the variable or file, never the secret.
    pub fn options(&self) -> anyhow::Result<AlertsOptions> {
        let mut webhooks = Vec::with_capacity(self.webhook.len());
        for hook in &self.webhook {
            let secret = match hook.secret_env.is_empty() {
                false => std::env::var(&hook.secret_env)
                    .with_context(|| {
                        format!("webhook {}: environment variable {} is not set", hook.name, hook.secret_env)
                    })?
                    .into_bytes(),
                true => {
                    let mut bytes = std::fs::read(&hook.secret_file).with_context(|| {
                        format!("webhook {}: cannot read its secret file {}", hook.name, hook.secret_file.display())
                    })?;
                    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        bytes.pop();
                    }
                    bytes
                }
            };
            if secret.len() < 16 {
                bail!("webhook {}: its secret is shorter than 16 bytes", hook.name);
            }
            webhooks.push(WebhookOptions {
                name: hook.name.clone(),
                url: hook.url.clone(),
                secret: Secret(secret),
                timeout: Duration::from_secs(hook.timeout_secs),
                retry_min: Duration::from_millis(hook.retry_min_ms),
                retry_max: Duration::from_millis(hook.retry_max_ms),
            });
        }
        Ok(AlertsOptions {
            rules: self.rule.clone(),
            webhooks,
            history_max: self.history_max,
            tick: Duration::from_millis(self.check_every_ms),
        })
    }
}

/// Each change, retained on `mekong/v1/alerts/{rule}/{device}` (the JSON of [`Notice`]), so
/// that a subscriber sees every alert's current state as soon as it subscribes.
#[derive(Debug)]
pub struct MqttAlerts(pub Publisher);

impl Live for MqttAlerts {
    fn change(&self, notice: &Notice) {
        let topic = AlertTopic { rule: &notice.rule, device: &notice.device }.to_string();
        let payload = serde_json::to_vec(notice).unwrap_or_default();
        if let Err(e) = self.0.publish_retained(topic, payload) {
            tracing::warn!(error = %e, rule = %notice.rule, device = %notice.device, "cannot publish an alert on mqtt");
        }
    }
}
