//! Where each listener may listen, given the credentials its clients can present.
//!
//! As Mosquitto 2 does: a listener whose clients cannot authenticate is served on loopback
//! only (`[::]` becomes `127.0.0.1` and `[::1]`; any other non-loopback address is refused
//! at start), unless `security.allow_anonymous` says otherwise, which is logged as insecure.
//! MQTT clients cannot authenticate yet (the broker checks no credentials), so the broker is
//! loopback-only by default; the HTTP API is too until API tokens exist in the registry.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use mekong_ingest::BrokerOptions;

use crate::config::Config;

/// What each listener is exposed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exposure {
    /// The broker serves loopback only.
    pub mqtt_loopback_only: bool,
    /// The HTTP API serves loopback only.
    pub http_loopback_only: bool,
}

impl Exposure {
    /// Decides, and says so in the log: `api_tokens` is whether the registry holds any.
    pub fn decide(config: &Config, api_tokens: bool) -> anyhow::Result<Exposure> {
        let allow = config.security.allow_anonymous;
        let exposure = Exposure { mqtt_loopback_only: !allow, http_loopback_only: !allow && !api_tokens };
        if allow {
            tracing::warn!(
                "INSECURE: security.allow_anonymous = true: anyone who reaches {} can publish and subscribe to every \
                 topic over MQTT{}",
                config.broker.listen,
                if api_tokens { "" } else { ", and read everything over HTTP" }
            );
        } else {
            tracing::info!(
                api = if api_tokens { "bearer tokens, on every address" } else { "anonymous, loopback only" },
                "MQTT clients cannot authenticate yet: the broker serves loopback only; set \
                 security.allow_anonymous = true to serve other addresses (insecure)"
            );
        }
        if exposure.http_loopback_only {
            exposure.http_addresses(config.api.listen)?;
        }
        exposure.broker(config).validate().context("in [broker]")?;
        Ok(exposure)
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
