//! mekong's one configuration: the TOML file, then `MEKONG__SECTION__KEY` environment
//! overrides, checked once and turned into each crate's options.
//!
//! Every key has a default, so a missing file means the defaults. An unknown key or a bad
//! value is an error that names the key. `config/mekong.toml` holds every key, commented.
//!
//! A section that is a library's options as they are (`[broker]` is
//! [`mekong_ingest::BrokerOptions`], `[ingest]` is [`mekong_ingest::PipelineOptions`] but for
//! the registry) is read straight into them and checked by the library; the others have their
//! own types here, because they name files to read (`[registry]`) or say things differently in
//! a file (0 for "never"), and are checked and converted here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use mekong_api::auth::{ApiToken, Scope, TokenDigest};
use mekong_ingest::{BrokerOptions, DeviceKey, PipelineOptions, Registry};
use mekong_schema::cose::KEY_LEN;
use mekong_schema::topic::is_valid_device_id;
use mekong_schema::DeviceKind;
use mekong_store::{RetentionPolicy, RetentionRule, StoreOptions};
use serde::{Deserialize, Serialize};

use crate::tls::TlsConfig;

/// Where the registry is unless the configuration says otherwise; `mekong device provision`
/// and `mekong token` write there by default too.
pub const DEFAULT_REGISTRY: &str = "config/devices.toml";

/// Prefix of environment variables that override keys: `MEKONG__API__LISTEN=[::]:9090`.
pub const ENV_PREFIX: &str = "MEKONG__";

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The embedded MQTT broker.
    pub broker: BrokerOptions,
    /// The ingest path.
    pub ingest: PipelineOptions,
    /// The file of identities.
    pub registry: RegistryConfig,
    /// The time-series store.
    pub storage: StorageConfig,
    /// The HTTP query service.
    pub api: ApiConfig,
    /// Who may connect, and from where.
    pub security: SecurityConfig,
    /// TLS for MQTT and HTTP: the certificate and its key.
    pub tls: TlsConfig,
    /// Logging.
    pub log: LogConfig,
}

/// `[registry]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// The registry file: devices, their keys, and API tokens. A missing file at the default
    /// path means an empty registry; at another path, an error. The empty string means none.
    pub path: PathBuf,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig { path: PathBuf::from(DEFAULT_REGISTRY) }
    }
}

/// `[storage]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Where the database lives.
    pub data_dir: PathBuf,
    /// sled's page cache.
    pub cache_bytes: u64,
    /// Background flush period; 0 flushes only at shutdown.
    pub flush_every_ms: u64,
    /// How often the upkeep pass runs (folding closed windows, then retention); 0 never.
    pub maintenance_every_secs: u64,
    /// A window is folded once it ended this long ago.
    pub fold_after_secs: u64,
    /// How long to keep what, per device kind and metric: `[[storage.retention]]`.
    pub retention: Vec<RetentionConfig>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        let s = StoreOptions::default();
        StorageConfig {
            data_dir: PathBuf::from("./data"),
            cache_bytes: s.cache_capacity_bytes,
            flush_every_ms: s.flush_every_ms.unwrap_or(0),
            maintenance_every_secs: 60,
            fold_after_secs: 300,
            retention: Vec::new(),
        }
    }
}

/// One `[[storage.retention]]` rule; the first that matches a series applies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Device kind (`traffic`, `water`, `air`); absent for any.
    pub kind: Option<String>,
    /// Metric name; absent for any.
    pub metric: Option<String>,
    /// Days of raw points kept; absent for all of them.
    pub raw_days: Option<u32>,
    /// Days of hourly rollups kept; absent for all of them.
    pub rollup_days: Option<u32>,
}

/// `[api]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// HTTP listener; `[::]` accepts IPv6 and IPv4.
    pub listen: SocketAddr,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { listen: SocketAddr::from(([0u16; 8], 8080)) }
    }
}

/// `[security]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Let clients in without credentials on addresses other than loopback. Off, a listener
    /// that has no credentials to check (MQTT always, for now; HTTP without API tokens) is
    /// served on loopback only, as Mosquitto 2 does.
    pub allow_anonymous: bool,
    /// `/metrics` answers without a token when API tokens exist.
    pub metrics_open: bool,
    /// Origins (`https://apps.cantho.example`) whose browser pages may call the API (CORS);
    /// empty, none.
    pub cors_origins: Vec<String>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig { allow_anonymous: false, metrics_open: true, cors_origins: Vec::new() }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `info,mekong_ingest=debug`; `RUST_LOG` wins.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { filter: "info,rumqttd=off".into() }
    }
}

impl Config {
    /// Reads `path` (if `required` is false, a missing file means defaults), applies the
    /// environment overrides in `env`, and checks the result.
    pub fn load(
        path: &Path,
        required: bool,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => String::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read config file {}", path.display())),
        };
        let mut table: toml::Table =
            toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))?;
        apply_env(&mut table, env)?;
        let config = Config::deserialize(toml::Value::Table(table)).with_context(|| {
            format!("invalid configuration (file {}, then {ENV_PREFIX}* variables)", path.display())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        let b = &self.broker;
        b.validate().context("in [broker]")?;
        self.ingest.validate().context("in [ingest]")?;
        self.tls.validate()?;
        if self.ingest.max_payload_bytes >= b.max_packet_bytes {
            bail!(
                "ingest.max_payload_bytes ({}) must be below broker.max_packet_bytes ({}), so that an oversized payload \
                 reaches mekong and is logged instead of closing the connection",
                self.ingest.max_payload_bytes,
                b.max_packet_bytes
            );
        }
        if self.ingest.require_registration && self.registry.path.as_os_str().is_empty() {
            bail!("ingest.require_registration is true but registry.path names no file");
        }
        for (i, origin) in self.security.cors_origins.iter().enumerate() {
            let valid = (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.ends_with('/')
                && !origin.contains(char::is_whitespace);
            if !valid {
                bail!("security.cors_origins[{i}] {origin:?} is not an origin such as https://apps.example.org");
            }
        }
        for (i, rule) in self.storage.retention.iter().enumerate() {
            if let Some(kind) = &rule.kind {
                if DeviceKind::parse(kind).is_none() {
                    bail!("storage.retention[{i}].kind {kind:?} is not traffic, water or air");
                }
            }
            if rule.raw_days == Some(0) || rule.rollup_days == Some(0) {
                bail!(
                    "storage.retention[{i}]: raw_days and rollup_days must be at least 1 (leave one out to keep all)"
                );
            }
            if let (Some(raw), Some(rollup)) = (rule.raw_days, rule.rollup_days) {
                if rollup < raw {
                    bail!("storage.retention[{i}]: rollup_days ({rollup}) must be at least raw_days ({raw})");
                }
            }
        }
        Ok(())
    }

    /// The identities of the registry file; empty without one, or when the default path
    /// holds no file.
    pub fn identities(&self) -> anyhow::Result<Identities> {
        let path = &self.registry.path;
        if path.as_os_str().is_empty() || (path == Path::new(DEFAULT_REGISTRY) && !path.exists()) {
            return Ok(Identities::default());
        }
        load_identities(path)
    }

    /// The ingest path's options, with the devices of the registry.
    pub fn pipeline_options(&self, registry: Registry) -> PipelineOptions {
        PipelineOptions { registry, ..self.ingest.clone() }
    }

    /// The store's options.
    pub fn store_options(&self) -> StoreOptions {
        let s = &self.storage;
        StoreOptions {
            cache_capacity_bytes: s.cache_bytes,
            flush_every_ms: (s.flush_every_ms > 0).then_some(s.flush_every_ms),
        }
    }

    /// The retention rules, in the store's terms.
    pub fn retention_policy(&self) -> RetentionPolicy {
        const DAY_MS: i64 = 86_400_000;
        let days = |d: Option<u32>| d.map(|d| i64::from(d) * DAY_MS);
        RetentionPolicy {
            rules: self
                .storage
                .retention
                .iter()
                .map(|r| RetentionRule {
                    kind: r.kind.clone(),
                    metric: r.metric.clone(),
                    raw_ms: days(r.raw_days),
                    rollups_ms: days(r.rollup_days),
                })
                .collect(),
        }
    }
}

/// Sets `a.b = value` in `table` for every `MEKONG__A__B=value`. The value is read as a TOML
/// value when it is one (`true`, `42`, `"x"`), else taken as a string.
fn apply_env(table: &mut toml::Table, env: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<()> {
    for (name, value) in env {
        let Some(path) = name.strip_prefix(ENV_PREFIX) else { continue };
        let keys: Vec<String> = path.split("__").map(str::to_lowercase).collect();
        if keys.len() != 2 || keys.iter().any(String::is_empty) {
            bail!("environment variable {name}: expected {ENV_PREFIX}SECTION__KEY");
        }
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(value));
        let section = table.entry(keys[0].clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(section) = section.as_table_mut() else {
            bail!("environment variable {name}: {} is not a section", keys[0]);
        };
        section.insert(keys[1].clone(), parsed);
    }
    Ok(())
}

/// The registry file: `[[device]]` entries with `id`, `kind` and, for a device that signs
/// its packs, `key`; `[[token]]` entries with `name`, `scope` and `sha256` (the digest of an
/// API token, never the token).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    #[serde(default)]
    device: Vec<RegistryEntry>,
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    scope: String,
    sha256: String,
}

/// Every identity the registry file names: devices (with their keys) and API tokens.
#[derive(Debug, Clone, Default)]
pub struct Identities {
    /// The devices.
    pub devices: Registry,
    /// The API tokens, as digests.
    pub tokens: Vec<ApiToken>,
}

/// Reads and checks the registry file: every identity in it.
pub fn load_identities(path: &Path) -> anyhow::Result<Identities> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read registry {}", path.display()))?;
    parse_identities(&text).with_context(|| format!("invalid registry {}", path.display()))
}

/// Checks the text of a registry file: devices and tokens.
pub fn parse_identities(text: &str) -> anyhow::Result<Identities> {
    let file: RegistryFile = toml::from_str(text)?;
    let devices = devices(file.device)?;
    let mut tokens: Vec<ApiToken> = Vec::with_capacity(file.token.len());
    for (i, entry) in file.token.into_iter().enumerate() {
        if entry.name.is_empty() || tokens.iter().any(|t| t.name == entry.name) {
            bail!("token {i}: name {:?} is empty or taken", entry.name);
        }
        let scope = Scope::parse(&entry.scope)
            .with_context(|| format!("token {:?}: scope {:?} is not read or admin", entry.name, entry.scope))?;
        let digest = parse_key_hex(&entry.sha256)
            .with_context(|| format!("token {:?}: sha256 must be 64 hex digits", entry.name))?;
        tokens.push(ApiToken { name: entry.name, scope, digest: TokenDigest(digest) });
    }
    Ok(Identities { devices, tokens })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryEntry {
    id: String,
    kind: String,
    #[serde(default)]
    key: Option<String>,
}

/// The text of the registry file at `path`, for an edit; a missing file is an empty
/// registry (the edit creates it).
pub fn registry_text(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read registry {}", path.display())),
    }
}

/// Bytes as lowercase hex digits, as the registry holds keys and digests ([`parse_key_hex`]
/// reads them back).
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn devices(entries: Vec<RegistryEntry>) -> anyhow::Result<Registry> {
    let mut registry = Registry::new();
    for (i, entry) in entries.into_iter().enumerate() {
        if !is_valid_device_id(&entry.id) {
            bail!("device {i}: id {:?} is not [a-z0-9-]{{1,64}}", entry.id);
        }
        let kind = DeviceKind::parse(&entry.kind)
            .with_context(|| format!("device {:?}: unknown kind {:?}", entry.id, entry.kind))?;
        match entry.key {
            None => registry.insert(entry.id, kind),
            Some(hex) => {
                // The message names the device, never the key.
                let key = parse_key_hex(&hex)
                    .with_context(|| format!("device {:?}: key must be {} hex digits", entry.id, 2 * KEY_LEN))?;
                registry.insert_keyed(entry.id, kind, DeviceKey(key));
            }
        }
    }
    Ok(registry)
}

/// A device key (or a token digest) written as hex digits (either case); `None` unless
/// exactly 64 of them.
pub fn parse_key_hex(hex: &str) -> Option<[u8; KEY_LEN]> {
    let digits = hex.as_bytes();
    if digits.len() != 2 * KEY_LEN {
        return None;
    }
    let mut key = [0u8; KEY_LEN];
    for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        let digit = |d: u8| char::from(d).to_digit(16);
        *byte = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests;
