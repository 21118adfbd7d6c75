//! Who may use the broker, and for what: the MQTT identities of the registry (devices,
//! gateways, apps), how each proves itself when it connects, and the lane of topics each may
//! publish and subscribe to.
//!
//! The broker asks this policy through two hooks (`broker.rs` installs them): one when a
//! client connects, one for every publish and subscription. It is pure logic, so that every
//! rule is tested here without a broker.
//!
//! A connection's client id names its identity: the identity's name itself, or the name, a
//! `:` and anything (so that one app can hold several sessions). `:` is not allowed in a
//! device id, so no client id of another identity can be a device's: nobody can take over a
//! device's session without its password. The username must be the identity's name too.

use std::collections::{HashMap, HashSet};
use std::fmt;

use mekong_schema::topic::{is_valid_device_id, parse_downlink, parse_uplink};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::IngestError;

/// The SHA-256 of a password. Passwords are high-entropy secrets made by mekong (32 random
/// bytes), so a plain digest is enough: nothing is left to guess that a slow hash would
/// protect. Its `Debug` output shows two bytes only.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PasswordDigest(pub [u8; 32]);

impl PasswordDigest {
    /// The digest of `password`, as a client presents it.
    pub fn of(password: &[u8]) -> PasswordDigest {
        PasswordDigest(Sha256::digest(password).into())
    }

    /// Equality that takes the same time wherever the digests differ.
    fn matches(&self, other: &PasswordDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for PasswordDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PasswordDigest({:02x}{:02x}..)", self.0[0], self.0[1])
    }
}

/// What an identity is, and so what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A node: publishes on `mekong/v1/{its id}/up`, subscribes to `mekong/v1/{its id}/down`.
    Device,
    /// A gateway: the lanes of every device it lists, as those devices have them.
    Gateway {
        /// The device ids it speaks for.
        devices: Vec<String>,
    },
    /// An application (a live consumer): subscriptions within the filters it is granted,
    /// never a publish.
    App {
        /// The topic filters it may subscribe to (or to any narrower filter).
        filters: Vec<String>,
    },
}

impl Role {
    /// The role's name, for logs and counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Device => "device",
            Role::Gateway { .. } => "gateway",
            Role::App { .. } => "app",
        }
    }
}

/// One MQTT identity of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Its name: a device id for a device; for gateways and apps any `[a-z0-9-]{1,64}`
    /// that no other identity has (they share the devices' name space).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The digest of its password.
    pub password: PasswordDigest,
}

/// What a client without credentials may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anonymous {
    /// Nothing: it is refused at CONNECT.
    Refused,
    /// What the device its client id names may do, if that device has no password (the
    /// insecure `allow_anonymous` mode, for nodes provisioned before MQTT passwords): its
    /// own uplink and downlink only.
    AsDevice,
}

/// Why a client was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials, and anonymous clients are refused.
    NoCredentials,
    /// The username names no identity, or the password is wrong (not told apart, so that
    /// a client cannot probe for names).
    BadCredentials,
    /// The client id is not the identity's name (or the name, `:` and a suffix).
    ClientIdMismatch,
    /// An anonymous client's id is not a device id, or names an identity with a password.
    AnonymousClientId,
    /// A client certificate that does not name the client id, or a client id that is no
    /// registered device.
    CertificateMismatch,
    /// The identity may not publish on this topic or subscribe to this filter.
    OutOfLane,
}

impl Refusal {
    /// A fixed label, for counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::NoCredentials => "no_credentials",
            Refusal::BadCredentials => "bad_credentials",
            Refusal::ClientIdMismatch => "client_id_mismatch",
            Refusal::AnonymousClientId => "anonymous_client_id",
            Refusal::CertificateMismatch => "certificate_mismatch",
            Refusal::OutOfLane => "out_of_lane",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::NoCredentials => "no username and password, and anonymous clients are not allowed",
            Refusal::BadCredentials => "unknown username or wrong password",
            Refusal::ClientIdMismatch => "the client id must be the username (or the username, ':' and a suffix)",
            Refusal::AnonymousClientId => {
                "without credentials the client id must be the id of a device that has no password"
            }
            Refusal::CertificateMismatch => {
                "the client certificate does not name the client id, or it is no registered device"
            }
            Refusal::OutOfLane => "not in this identity's topics",
        })
    }
}

/// Who is behind a connection, as far as authorization is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller<'a> {
    /// A registry identity that proved itself.
    Identity(&'a Identity),
    /// A client without credentials, taken for the device its client id names.
    AnonymousDevice(&'a str),
    /// A registered device that logged in with a client certificate naming it.
    CertifiedDevice(&'a str),
}

impl Caller<'_> {
    /// The name counters and logs use: the identity's name, or `anonymous` (client ids of
    /// anonymous clients are not counted one by one, so they cannot grow a counter map).
    pub fn label(&self) -> &str {
        match self {
            Caller::Identity(identity) => &identity.name,
            Caller::AnonymousDevice(_) => "anonymous",
            // Registered devices only: a bounded set.
            Caller::CertifiedDevice(id) => id,
        }
    }
}

/// The broker's access policy: every identity, the devices that may log in with a client
/// certificate, and what anonymous clients may do.
#[derive(Debug, Clone)]
pub struct Policy {
    identities: HashMap<String, Identity>,
    certified: HashSet<String>,
    anonymous: Anonymous,
}

/// The identity name a client id claims: all before the first `:`.
fn claimed_name(client_id: &str) -> &str {
    client_id.split_once(':').map_or(client_id, |(name, _)| name)
}

impl Policy {
    /// A policy over `identities`; names must be unique and valid, and every filter an app
    /// is granted a valid topic filter.
    pub fn new(identities: Vec<Identity>, anonymous: Anonymous) -> Result<Policy, IngestError> {
        let invalid = |message: String| Err(IngestError::Config(message));
        let mut by_name = HashMap::with_capacity(identities.len());
        for identity in identities {
            if !is_valid_device_id(&identity.name) {
                return invalid(format!("identity {:?}: a name must be [a-z0-9-]{{1,64}}", identity.name));
            }
            match &identity.role {
                Role::Device => {}
                Role::Gateway { devices } => {
                    if let Some(bad) = devices.iter().find(|d| !is_valid_device_id(d)) {
                        return invalid(format!("gateway {:?}: {bad:?} is not a device id", identity.name));
                    }
                }
                Role::App { filters } => {
                    if filters.is_empty() {
                        return invalid(format!("app {:?}: grant it at least one filter", identity.name));
                    }
                    if let Some(bad) = filters.iter().find(|f| !is_valid_filter(f)) {
                        return invalid(format!("app {:?}: {bad:?} is not a valid topic filter", identity.name));
                    }
                }
            }
            let name = identity.name.clone();
            if by_name.insert(name.clone(), identity).is_some() {
                return invalid(format!("identity {name:?} appears twice (devices, gateways and apps share names)"));
            }
        }
        Ok(Policy { identities: by_name, certified: HashSet::new(), anonymous })
    }

    /// Lets the registered devices `ids` log in with a client certificate that names them
    /// (a TLS listener with client CAs verifies the certificate; [`Self::authenticate_certificate`]
    /// checks the name).
    pub fn with_certified_devices(mut self, ids: impl IntoIterator<Item = String>) -> Policy {
        self.certified.extend(ids);
        self
    }

    /// Checks a CONNECT over TLS whose client presented a verified certificate:
    /// `valid_for(name)` says whether the certificate names `name`. The client id must be
    /// a registered device's that the certificate names.
    pub fn authenticate_certificate<'a>(
        &'a self,
        client_id: &'a str,
        valid_for: impl Fn(&str) -> bool,
    ) -> Result<Caller<'a>, Refusal> {
        if !self.certified.contains(client_id) || !valid_for(client_id) {
            return Err(Refusal::CertificateMismatch);
        }
        Ok(Caller::CertifiedDevice(client_id))
    }

    /// Number of identities.
    pub fn len(&self) -> usize {
        self.identities.len()
    }

    /// Whether there is no identity.
    pub fn is_empty(&self) -> bool {
        self.identities.is_empty()
    }

    /// Checks a CONNECT: its client id and, if it has them, its username and password.
    pub fn authenticate<'a>(&'a self, client_id: &'a str, login: Option<(&str, &[u8])>) -> Result<Caller<'a>, Refusal> {
        let name = claimed_name(client_id);
        let Some((username, password)) = login else {
            return match self.anonymous {
                Anonymous::Refused => Err(Refusal::NoCredentials),
                Anonymous::AsDevice if self.identities.contains_key(name) || !is_valid_device_id(client_id) => {
                    Err(Refusal::AnonymousClientId)
                }
                Anonymous::AsDevice => Ok(Caller::AnonymousDevice(client_id)),
            };
        };
        // The digest is compared even for an unknown name, so the time taken does not tell
        // names apart.
        let presented = PasswordDigest::of(password);
        let identity = self.identities.get(username);
        let known = identity.map_or(PasswordDigest([0; 32]), |i| i.password);
        let identity = identity.filter(|_| known.matches(&presented)).ok_or(Refusal::BadCredentials)?;
        if name != identity.name {
            return Err(Refusal::ClientIdMismatch);
        }
        Ok(Caller::Identity(identity))
    }

    /// The caller behind an authenticated connection's client id (which [`Self::authenticate`]
    /// has tied to its identity); `None` if the client id could not have been let in.
    pub fn caller<'a>(&'a self, client_id: &'a str) -> Option<Caller<'a>> {
        match self.identities.get(claimed_name(client_id)) {
            Some(identity) => Some(Caller::Identity(identity)),
            // Only a certificate lets such a device in, unless anonymous clients may act as
            // devices: either way, a device's lane.
            None if self.certified.contains(client_id) => Some(Caller::CertifiedDevice(client_id)),
            None if self.anonymous == Anonymous::AsDevice && is_valid_device_id(client_id) => {
                Some(Caller::AnonymousDevice(client_id))
            }
            None => None,
        }
    }

    /// Whether `caller` may publish on `topic`.
    pub fn may_publish(caller: Caller<'_>, topic: &str) -> Result<(), Refusal> {
        let device = parse_uplink(topic).ok();
        let allowed = match caller {
            Caller::AnonymousDevice(id) | Caller::CertifiedDevice(id) => device == Some(id),
            Caller::Identity(identity) => match &identity.role {
                Role::Device => device == Some(identity.name.as_str()),
                Role::Gateway { devices } => device.is_some_and(|d| devices.iter().any(|g| g == d)),
                Role::App { .. } => false,
            },
        };
        allowed.then_some(()).ok_or(Refusal::OutOfLane)
    }

    /// Whether `caller` may subscribe to `filter`.
    pub fn may_subscribe(caller: Caller<'_>, filter: &str) -> Result<(), Refusal> {
        let device = parse_downlink(filter);
        let allowed = match caller {
            Caller::AnonymousDevice(id) | Caller::CertifiedDevice(id) => device == Some(id),
            Caller::Identity(identity) => match &identity.role {
                Role::Device => device == Some(identity.name.as_str()),
                Role::Gateway { devices } => device.is_some_and(|d| devices.iter().any(|g| g == d)),
                Role::App { filters } => is_valid_filter(filter) && filters.iter().any(|g| within(filter, g)),
            },
        };
        allowed.then_some(()).ok_or(Refusal::OutOfLane)
    }
}

/// Whether `filter` is a valid MQTT topic filter: not empty, `#` only as a whole last level,
/// `+` only as a whole level.
pub fn is_valid_filter(filter: &str) -> bool {
    let levels: Vec<&str> = filter.split('/').collect();
    !filter.is_empty()
        && levels.iter().enumerate().all(|(i, level)| match *level {
            "#" => i + 1 == levels.len(),
            "+" => true,
            level => !level.contains(['#', '+']),
        })
}

/// Whether every topic that `filter` matches is matched by `granted` too (both valid
/// filters). Wildcards in the first level do not match topics that start with `$`
/// (MQTT-4.7.2-1), so a grant of `#` does not reach `$SYS`.
pub fn within(filter: &str, granted: &str) -> bool {
    let mut filter = filter.split('/');
    let mut granted = granted.split('/');
    let mut first = true;
    loop {
        let (f, g) = (filter.next(), granted.next());
        let dollar = first && f.is_some_and(|f| f.starts_with('$'));
        first = false;
        match (f, g) {
            (None, None) => return true,
            // `a/#` matches `a` itself.
            (None, Some("#")) => return true,
            (Some(_), Some("#")) => return !dollar,
            (Some("#"), Some(_)) => return false,
            (Some("+"), Some("+")) => {}
            (Some("+"), Some(_)) => return false,
            (Some(_), Some("+")) if dollar => return false,
            (Some(_), Some("+")) => {}
            (Some(f), Some(g)) if f == g => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests;
