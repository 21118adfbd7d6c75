//! Where each listener may listen, and who may use it, given the credentials its clients
//! can present.
//!
//! As Mosquitto 2 does: a listener whose clients cannot authenticate is served on loopback
//! only (`[::]` becomes `127.0.0.1` and `[::1]`; any other non-loopback address is refused
//! at start), and anyone there may do anything, unless `security.allow_anonymous` says
//! otherwise, which is logged as insecure. The broker's clients can authenticate once an
//! MQTT identity (a device, gateway or app with a password) is in the registry: then it
//! serves every configured address and checks every client. The HTTP API is loopback-only
//! until API tokens exist in the registry.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use mekong_ingest::access::Anonymous;
use mekong_ingest::{BrokerOptions, Policy};

use crate::config::{Config, Identities};

/// What each listener is exposed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exposure {
    /// The broker serves loopback only, and checks nobody there.
    pub mqtt_loopback_only: bool,
    /// What the broker lets clients without credentials do, when it checks its clients.
    pub mqtt_anonymous: Option<Anonymous>,
    /// Registered devices may log in with a client certificate (`tls.client_ca`).
    pub mqtt_certificates: bool,
    /// The HTTP API serves loopback only.
    pub http_loopback_only: bool,
}

impl Exposure {
    /// Decides from the configuration and the registry's identities, and says so in the log.
    pub fn decide(config: &Config, identities: &Identities) -> anyhow::Result<Exposure> {
        let allow = config.security.allow_anonymous;
        let api_tokens = !identities.tokens.is_empty();
        let mqtt_certificates = config.tls.client_certificates();
        let mqtt_credentials = !identities.mqtt.is_empty() || mqtt_certificates;
        let mqtt_anonymous = match (mqtt_credentials, allow) {
            (_, true) => Some(Anonymous::AsDevice),
            (true, false) => Some(Anonymous::Refused),
            (false, false) => None,
        };
        let exposure = Exposure {
            mqtt_loopback_only: mqtt_anonymous.is_none(),
            mqtt_anonymous,
            mqtt_certificates,
            http_loopback_only: !allow && !api_tokens,
        };
        let api = if api_tokens { "bearer tokens, on every address" } else { "anonymous, loopback only" };
        match mqtt_anonymous {
            Some(Anonymous::AsDevice) => tracing::warn!(
                identities = identities.mqtt.len(),
                "INSECURE: security.allow_anonymous = true: MQTT clients without credentials are let in on {}, each \
                 confined to the topics of the device its client id names{}",
                config.broker.listen,
                if api_tokens { "" } else { "; and anyone can read everything over HTTP" }
            ),
            Some(Anonymous::Refused) => tracing::info!(
                identities = identities.mqtt.len(),
                client_certificates = mqtt_certificates,
                api,
                "MQTT clients log in with their passwords (or client certificates) on every address, each confined \
                 to its own topics; clients without credentials are refused"
            ),
            None => tracing::info!(
                api,
                "no MQTT identity has a password yet: the broker serves loopback only, where anyone may publish and \
                 subscribe; provision devices (mekong device provision) to serve other addresses, or set \
                 security.allow_anonymous = true (insecure)"
            ),
        }
        if exposure.http_loopback_only {
            exposure.http_addresses(config.api.listen)?;
        }
        exposure.broker(config).validate().context("in [broker]")?;
        exposure.policy(identities)?;
        Ok(exposure)
    }

    /// The broker's access policy over the registry's MQTT identities; `None` when the
    /// broker checks nobody (loopback only).
    pub fn policy(&self, identities: &Identities) -> anyhow::Result<Option<Policy>> {
        let Some(anonymous) = self.mqtt_anonymous else {
            return Ok(None);
        };
        let policy = Policy::new(identities.mqtt.clone(), anonymous).context("in the registry's MQTT identities")?;
        let certified = match self.mqtt_certificates {
            true => identities.devices.ids().map(str::to_owned).collect(),
            false => Vec::new(),
        };
        Ok(Some(policy.with_certified_devices(certified)))
    }

    /// The broker's options as this exposure allows them.
    pub fn broker(&self, config: &Config) -> BrokerOptions {
        BrokerOptions { loopback_only: self.mqtt_loopback_only, ..config.broker.clone() }
    }

    /// The addresses the HTTP API binds for the configured `addr`.
    pub fn http_addresses(&self, addr: SocketAddr) -> anyhow::Result<Vec<SocketAddr>> {
        if !self.http_loopback_only {
            return Ok(vec![addr]);
        }
        match mekong_ingest::broker::loopback_only(addr) {
            Some(addrs) => Ok(addrs),
            None => bail!(
                "api.listen {addr} is not a loopback address, and the API has no tokens to check: create one \
                 (mekong token create NAME --scope read), listen on [::] (served on loopback only), or set \
                 security.allow_anonymous = true (insecure)"
            ),
        }
    }
}
