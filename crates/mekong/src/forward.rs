//! The feed to the regional data centre in the platform: the `[forward]` section, the upstream
//! broker's password read from its variable or file and its CA from its PEM file (here, the
//! one crate that reads files and the environment), turned into the forwarder's options.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use mekong_forward::{Format, ForwardOptions, Password};
use rustls::{ClientConfig, RootCertStore};
use serde::{Deserialize, Serialize};

/// `[forward]`. The password is named (an environment variable or a file), never written
/// in the configuration, so that `print-config` and logs cannot show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardConfig {
    /// Forward accepted packs upstream.
    pub enabled: bool,
    /// The upstream broker's host name or address.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// MQTT over TLS.
    pub tls: bool,
    /// The CA that signed the upstream's certificate (PEM); needed with `tls`.
    pub ca_file: PathBuf,
    /// MQTT user name ("" for none).
    pub username: String,
    /// The environment variable that holds the password.
    pub password_env: String,
    /// Or the file that holds it (a trailing newline is not part of it).
    pub password_file: PathBuf,
    /// MQTT client id, also the origin consumers tell mekongs apart by.
    pub client_id: String,
    /// Packs go to `<topic_prefix>/<kind>/<device>`.
    pub topic_prefix: String,
    /// `cbor` (SenML-CBOR) or `json` (SenML-JSON).
    pub format: String,
    /// 1 or 2.
    pub qos: u8,
    /// Packs published beyond the durable position, at most: the most a reconnect or a
    /// crash can send twice.
    pub max_in_flight: u16,
    /// Packs per second at most when catching up after an outage (0: no limit).
    pub max_packs_per_sec: u32,
    /// The outbox's size at most, in MiB; beyond, the oldest packs not yet sent are dropped
    /// from it (never from the store), counted and logged.
    pub max_outbox_mib: u64,
    /// MQTT keep-alive, in seconds.
    pub keep_alive_secs: u64,
    /// The longest wait between reconnects, in seconds.
    pub reconnect_max_secs: u64,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        let o = ForwardOptions::new("", 1883);
        ForwardConfig {
            enabled: false,
            host: String::new(),
            port: 1883,
            tls: false,
            ca_file: PathBuf::new(),
            username: String::new(),
            password_env: String::new(),
            password_file: PathBuf::new(),
            client_id: o.client_id,
            topic_prefix: o.topic_prefix,
            format: "cbor".into(),
            qos: o.qos,
            max_in_flight: o.max_in_flight,
            max_packs_per_sec: o.max_packs_per_sec,
            max_outbox_mib: o.max_outbox_bytes >> 20,
            keep_alive_secs: o.keep_alive.as_secs(),
            reconnect_max_secs: o.reconnect_max.as_secs(),
        }
    }
}

impl ForwardConfig {
    /// Checks the section (not the password or the CA, which are read at start).
    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.enabled {
            return Ok(());
        }
        if !self.password_env.is_empty() && !self.password_file.as_os_str().is_empty() {
            bail!("forward: give one of password_env or password_file, not both");
        }
        if self.tls && self.ca_file.as_os_str().is_empty() {
            bail!("forward.tls needs forward.ca_file, the CA of the upstream broker's certificate");
        }
        if self.max_outbox_mib == 0 || self.keep_alive_secs == 0 || self.reconnect_max_secs == 0 {
            bail!("forward: max_outbox_mib, keep_alive_secs and reconnect_max_secs must be at least 1");
        }
        self.shape(None).context("in [forward]")?.validate().context("in [forward]")?;
        Ok(())
    }

    /// The options but for the password and the TLS configuration.
    fn shape(&self, password: Option<Password>) -> anyhow::Result<ForwardOptions> {
        let format = match self.format.as_str() {
            "cbor" => Format::Cbor,
            "json" => Format::Json,
            other => bail!("format must be cbor or json, not {other:?}"),
        };
        let mut o = ForwardOptions::new(self.host.clone(), self.port);
        o.username = Some(self.username.clone()).filter(|u| !u.is_empty());
        o.password = password;
        o.client_id = self.client_id.clone();
        o.topic_prefix = self.topic_prefix.clone();
        o.format = format;
        o.qos = self.qos;
        o.max_in_flight = self.max_in_flight;
        o.max_packs_per_sec = self.max_packs_per_sec;
        o.max_outbox_bytes = self.max_outbox_mib.saturating_mul(1 << 20);
        o.keep_alive = Duration::from_secs(self.keep_alive_secs);
        o.reconnect_max = Duration::from_secs(self.reconnect_max_secs).max(o.reconnect_min);
        Ok(o)
    }

    /// The forwarder's options, with the password read from its variable or file and the
    /// TLS configuration built from the CA file; `None` when forwarding is off. An error names
    /// the variable or file, never the password.
    pub fn options(&self) -> anyhow::Result<Option<ForwardOptions>> {
        if !self.enabled {
            return Ok(None);
        }
        let password = if !self.password_env.is_empty() {
            let value = std::env::var(&self.password_env)
                .with_context(|| format!("forward: environment variable {} is not set", self.password_env))?;
            Some(Password(value))
        } else if !self.password_file.as_os_str().is_empty() {
            let text = std::fs::read_to_string(&self.password_file)
                .with_context(|| format!("forward: cannot read its password file {}", self.password_file.display()))?;
            Some(Password(text.trim_end_matches(['\n', '\r']).to_owned()))
        } else {
            None
        };
        let mut options = self.shape(password)?;
        if self.tls {
            let what = || format!("forward.ca_file {}", self.ca_file.display());
            let mut roots = RootCertStore::empty();
            for ca in crate::tls::read_chain(&self.ca_file).with_context(what)? {
                roots.add(ca).with_context(|| format!("{}: not a CA certificate rustls can use", what()))?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .context("forward: TLS versions")?
                .with_root_certificates(roots)
                .with_no_client_auth();
            options.tls = Some(Arc::new(config));
        }
        options.validate().context("in [forward]")?;
        Ok(Some(options))
    }
}
