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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use mekong_api::auth::{ApiToken, Scope, TokenDigest};
use mekong_api::directory::{Location, Profile};
use mekong_ingest::access::{Anonymous, Identity, PasswordDigest, Policy, Role};
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

/// Where `serve` and `compact` read the configuration when no `--config` is given, unless
/// systemd names a configuration directory ([`ServiceDirs`]); a missing file means defaults.
pub const DEFAULT_CONFIG: &str = "config/mekong.toml";

/// Prefix of environment variables that override keys: `MEKONG__API__LISTEN=[::]:9090`.
pub const ENV_PREFIX: &str = "MEKONG__";

/// The directories systemd made for the service, as it passes them to the process:
/// `$CONFIGURATION_DIRECTORY` (`ConfigurationDirectory=` in the unit, `/etc/mekong`) and
/// `$STATE_DIRECTORY` (`StateDirectory=`, `/var/lib/mekong`). Where they are set, they take
/// the place of the defaults that name paths under the working directory (a service's is
/// `/`): the configuration file is `mekong.toml` and the registry `devices.toml` in the first,
/// the store is `data` in the second. A key in the file or a `MEKONG__` variable still wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceDirs {
    /// `$CONFIGURATION_DIRECTORY`, the first if it lists several.
    pub configuration: Option<PathBuf>,
    /// `$STATE_DIRECTORY`, the first if it lists several.
    pub state: Option<PathBuf>,
}

impl ServiceDirs {
    /// The directories named in `env`; an empty variable is no directory.
    pub fn from_env(env: &[(String, String)]) -> ServiceDirs {
        // systemd joins the directories of a setting that lists several with ':'; mekong's
        // unit lists one.
        let dir = |name: &str| {
            env.iter()
                .find(|(key, _)| key == name)
                .and_then(|(_, value)| value.split(':').next().filter(|dir| !dir.is_empty()))
                .map(PathBuf::from)
        };
        ServiceDirs { configuration: dir("CONFIGURATION_DIRECTORY"), state: dir("STATE_DIRECTORY") }
    }

    /// The configuration file to read when none is named.
    pub fn config_file(&self) -> PathBuf {
        match &self.configuration {
            Some(dir) => dir.join("mekong.toml"),
            None => PathBuf::from(DEFAULT_CONFIG),
        }
    }

    /// Sets `storage.data_dir` and `registry.path` in `table` from these directories, where
    /// the table has no such key. The store is a directory below the state directory, never
    /// the state directory itself: `mekong compact` swaps the store's directory by renaming
    /// it, and the parent of `/var/lib/mekong` is not the service's to write.
    fn fill_defaults(&self, table: &mut toml::Table) {
        let mut fill = |section: &str, key: &str, path: PathBuf| {
            let section = table.entry(section).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            // A section that is not a table is left for deserialisation to report.
            if let Some(section) = section.as_table_mut() {
                // The path came from a `String`, so the lossy conversion loses nothing.
                section.entry(key).or_insert_with(|| toml::Value::String(path.to_string_lossy().into_owned()));
            }
        };
        if let Some(dir) = &self.state {
            fill("storage", "data_dir", dir.join("data"));
        }
        if let Some(dir) = &self.configuration {
            fill("registry", "path", dir.join("devices.toml"));
        }
    }
}

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
    /// The operations-room dashboard at `/`.
    pub dashboard: mekong_dashboard::DashboardOptions,
    /// Logging.
    pub log: LogConfig,
    /// Alert rules and where their changes go.
    pub alerts: crate::alerts::AlertsConfig,
    /// The feed of accepted packs to an upstream broker (the regional data centre).
    pub forward: crate::forward::ForwardConfig,
    /// Backups the server takes: where, how often, how many kept.
    pub backup: crate::backup::BackupConfig,
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
    /// How often the store's write log is folded into its tree; 0 only when it holds 128 MiB
    /// and before the upkeep and other writes that need the tree whole.
    pub fold_log_every_ms: u64,
    /// How often the upkeep pass runs (folding closed windows, then retention); 0 never.
    pub maintenance_every_secs: u64,
    /// A window is folded once it ended this long ago.
    pub fold_after_secs: u64,
    /// `/healthz` says `degraded` while the data directory's filesystem has fewer free bytes.
    pub min_free_bytes: u64,
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
            fold_log_every_ms: s.fold_log_every_ms.unwrap_or(0),
            maintenance_every_secs: 60,
            fold_after_secs: 300,
            min_free_bytes: 1 << 30,
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
    /// How lines are written: `text` for people, `json` (one object a line) for collectors.
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Plain text (colours on a terminal only).
    Text,
    /// One JSON object a line.
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { filter: "info,rumqttd=warn".into(), format: LogFormat::Text }
    }
}

impl Config {
    /// Reads `path` (if `required` is false, a missing file means defaults), applies the
    /// environment overrides in `env`, then the defaults of systemd's directories in `env`
    /// ([`ServiceDirs`]) where neither set the key, and checks the result.
    pub fn load(
        path: &Path,
        required: bool,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let dirs = ServiceDirs::from_env(&env);
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => String::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read config file {}", path.display())),
        };
        let mut table: toml::Table =
            toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))?;
        apply_env(&mut table, env)?;
        dirs.fill_defaults(&mut table);
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
        self.alerts.validate()?;
        self.forward.validate()?;
        self.dashboard.validate().context("in [dashboard]")?;
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
        self.backup.validate(&self.storage.data_dir)?;
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
            fold_log_every_ms: (s.fold_log_every_ms > 0).then_some(s.fold_log_every_ms),
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

/// The registry file: `[[device]]` entries with `id`, `kind`, for a device that signs its
/// packs `key`, and for one that logs in to the broker `password_sha256`; `[[gateway]]`
/// entries with `name`, `password_sha256` and the `devices` they speak for; `[[app]]`
/// entries with `name`, `password_sha256` and the filters they may `subscribe` to;
/// `[[token]]` entries with `name`, `scope` and `sha256` (the digest of an API token, never
/// the token). Every secret is kept as its SHA-256 digest, except device keys, which the
/// platform needs to check MACs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    #[serde(default)]
    device: Vec<RegistryEntry>,
    #[serde(default)]
    gateway: Vec<GatewayEntry>,
    #[serde(default)]
    app: Vec<AppEntry>,
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayEntry {
    name: String,
    password_sha256: String,
    devices: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppEntry {
    name: String,
    password_sha256: String,
    subscribe: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    scope: String,
    sha256: String,
}

/// Every identity the registry file names: devices (with their keys), the broker's
/// identities (devices, gateways and apps with a password) and API tokens.
#[derive(Debug, Clone, Default)]
pub struct Identities {
    /// The devices.
    pub devices: Registry,
    /// Who may log in to the broker, and as what.
    pub mqtt: Vec<Identity>,
    /// The API tokens, as digests.
    pub tokens: Vec<ApiToken>,
    /// Every registered device's kind, name, place and tags, for the API.
    pub profiles: BTreeMap<String, Profile>,
}

/// Reads and checks the registry file: every identity in it.
pub fn load_identities(path: &Path) -> anyhow::Result<Identities> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read registry {}", path.display()))?;
    parse_identities(&text).with_context(|| format!("invalid registry {}", path.display()))
}

/// Checks the text of a registry file: devices and tokens.
pub fn parse_identities(text: &str) -> anyhow::Result<Identities> {
    let file: RegistryFile = toml::from_str(text)?;
    let digest = |what: &str, name: &str, hex: &str| {
        parse_key_hex(hex)
            .map(PasswordDigest)
            .with_context(|| format!("{what} {name:?}: password_sha256 must be 64 hex digits"))
    };
    let mut mqtt = Vec::new();
    for entry in &file.device {
        if let Some(hex) = &entry.password_sha256 {
            mqtt.push(Identity {
                name: entry.id.clone(),
                role: Role::Device,
                password: digest("device", &entry.id, hex)?,
            });
        }
    }
    for entry in file.gateway {
        let password = digest("gateway", &entry.name, &entry.password_sha256)?;
        mqtt.push(Identity { name: entry.name, role: Role::Gateway { devices: entry.devices }, password });
    }
    for entry in file.app {
        let password = digest("app", &entry.name, &entry.password_sha256)?;
        mqtt.push(Identity { name: entry.name, role: Role::App { filters: entry.subscribe }, password });
    }
    // The same checks as at start-up (names unique and valid, filters valid), so that an
    // edit by a command is refused before it is written.
    Policy::new(mqtt.clone(), Anonymous::Refused)?;
    let profiles = profiles(&file.device)?;
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
    Ok(Identities { devices, mqtt, tokens, profiles })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryEntry {
    id: String,
    kind: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    password_sha256: Option<String>,
    /// What people call it.
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    location: Option<LocationEntry>,
    /// Free-form labels: a table of strings.
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

/// `location = { lat = 10.034, lon = 105.788, elevation = 2.5 }`: degrees WGS 84, metres.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocationEntry {
    lat: f64,
    lon: f64,
    #[serde(default)]
    elevation: Option<f64>,
}

/// The profiles of the registry's devices, checked as the API's editor would check them.
/// Ids and kinds are checked by [`devices`].
fn profiles(entries: &[RegistryEntry]) -> anyhow::Result<BTreeMap<String, Profile>> {
    let mut profiles = BTreeMap::new();
    for entry in entries {
        let Some(kind) = DeviceKind::parse(&entry.kind) else { continue };
        let location = entry
            .location
            .as_ref()
            .map(|l| Location::new(l.lat, l.lon, l.elevation))
            .transpose()
            .with_context(|| format!("device {:?}: location", entry.id))?;
        let profile = Profile::new(kind, entry.name.clone(), location, entry.tags.clone())
            .with_context(|| format!("device {:?}", entry.id))?;
        profiles.insert(entry.id.clone(), profile);
    }
    Ok(profiles)
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

/// The registry file at `path` as a document to edit, its comments and order kept; a
/// missing file is an empty one.
pub fn registry_document(path: &Path) -> anyhow::Result<toml_edit::DocumentMut> {
    registry_text(path)?.parse().with_context(|| format!("invalid registry {}", path.display()))
}

/// The `[[table]]` entries of a registry document, created if missing.
pub fn entries_mut<'a>(
    doc: &'a mut toml_edit::DocumentMut,
    table: &str,
    path: &Path,
) -> anyhow::Result<&'a mut toml_edit::ArrayOfTables> {
    let entries = doc
        .as_table_mut()
        .entry(table)
        .or_insert_with(|| toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new()));
    entries
        .as_array_of_tables_mut()
        .with_context(|| format!("`{table}` in {} is not a list of [[{table}]] tables", path.display()))
}

/// Applies `set` to every `[[device]]` entry with `id` (a hand-edited file may hold
/// several), or to a new entry with `id` appended when there is none; whether it was added.
pub fn upsert_device(devices: &mut toml_edit::ArrayOfTables, id: &str, set: impl Fn(&mut toml_edit::Table)) -> bool {
    let mut added = true;
    for entry in devices.iter_mut().filter(|t| t.get("id").and_then(|v| v.as_str()) == Some(id)) {
        set(entry);
        added = false;
    }
    if added {
        let mut entry = toml_edit::Table::new();
        entry["id"] = toml_edit::value(id);
        set(&mut entry);
        devices.push(entry);
    }
    added
}

/// Removes the `[[table]]` entry named `name` from the registry at `path`; whether there was
/// one.
pub fn remove_entry(path: &Path, table: &str, name: &str) -> anyhow::Result<bool> {
    let mut doc = registry_document(path)?;
    let Some(entries) = doc.get_mut(table).and_then(toml_edit::Item::as_array_of_tables_mut) else {
        return Ok(false);
    };
    let before = entries.len();
    entries.retain(|t| t.get("name").and_then(|v| v.as_str()) != Some(name));
    if entries.len() == before {
        return Ok(false);
    }
    write_registry(path, &doc)?;
    Ok(true)
}

/// Writes an edited registry document to `path`, if it loads as the platform would load
/// it (else nothing is written): mode 0600, through one rename.
pub fn write_registry(path: &Path, doc: &toml_edit::DocumentMut) -> anyhow::Result<()> {
    let text = doc.to_string();
    parse_identities(&text).context("the updated registry does not load")?;
    crate::provision::write_secret(path, text.as_bytes())
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
