//! The broker's gatekeeper: the access policy ([`crate::access`]) put behind rumqttd's
//! authentication hook (at CONNECT) and its authorization hook (every publish and
//! subscription), with every refusal counted ([`Stats`]) and logged.
//!
//! The authorization hook runs on rumqttd's router thread, so it does no more than a map
//! lookup and a topic comparison; logging is rate-limited per identity, so that a client
//! that keeps publishing where it may not cannot flood the log.
//!
//! The policy can be replaced while the broker runs ([`Guard::replace`]: the binary does so
//! when a device is removed through the API). Logins are checked against the policy of the
//! moment, and so is every publish and subscription of a connection already open: a removed
//! device's session stays connected (rumqttd offers no way to close it from outside) but
//! every publish it makes from then on is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use rumqttd::{Action, Authorizer, CertificateAuth, ConnectionSettings};
use rustls::pki_types::{CertificateDer, ServerName};

use crate::access::{Caller, Policy, Refusal};
use crate::Stats;

/// At most one log line per key (a refusal reason, or an identity) in this interval; the
/// lines left out are counted in the next one.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The policy and where its refusals go.
#[derive(Debug, Clone)]
pub struct Guard {
    policy: Arc<RwLock<Arc<Policy>>>,
    stats: Arc<Stats>,
    log: Arc<Mutex<HashMap<String, Quiet>>>,
}

/// When a key last logged, and how many lines it left out since.
#[derive(Debug, Clone, Copy)]
struct Quiet {
    last: Instant,
    left_out: u64,
}

impl Guard {
    /// A guard that applies `policy` and counts its refusals in `stats`.
    pub fn new(policy: Policy, stats: Arc<Stats>) -> Guard {
        Guard { policy: Arc::new(RwLock::new(Arc::new(policy))), stats, log: Arc::default() }
    }

    /// Replaces the policy: every login, publish and subscription from now on is checked
    /// against `policy`, those of connections already open included.
    pub fn replace(&self, policy: Policy) {
        *self.policy.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(policy);
    }

    /// The policy of the moment (replaced whole, so a poisoned lock still holds a valid one).
    fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Installs both hooks on a listener's connection settings.
    pub fn install(&self, settings: &mut ConnectionSettings) {
        let guard = self.clone();
        settings.set_auth_handler(move |client_id: String, username: String, password: String| {
            std::future::ready(guard.authenticate(&client_id, &username, &password))
        });
        let guard = self.clone();
        settings.authorizer = Some(Authorizer::new(move |client_id, action| guard.authorize(client_id, action)));
        let guard = self.clone();
        settings.certificate_auth =
            Some(CertificateAuth::new(move |client_id, der| guard.authenticate_certificate(client_id, der)));
    }

    /// The client-certificate hook: rustls has verified the certificate against the client
    /// CAs; it must name the client id (as a DNS name among its subject alternative names),
    /// which must be a registered device's.
    fn authenticate_certificate(&self, client_id: &str, der: &[u8]) -> bool {
        let der = CertificateDer::from(der);
        let names = |name: &str| {
            let Ok(cert) = webpki::EndEntityCert::try_from(&der) else {
                return false;
            };
            ServerName::try_from(name).is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
        };
        match self.policy().authenticate_certificate(client_id, names) {
            Ok(_) => true,
            Err(refusal) => {
                self.stats.record_connect_refused(refusal.as_str());
                self.log(refusal.as_str(), |left_out| {
                    tracing::warn!(client_id = ?client_id, reason = %refusal, left_out, "mqtt login by certificate refused")
                });
                false
            }
        }
    }

    /// The authentication hook: rumqttd passes an empty username and password for a
    /// CONNECT without them.
    fn authenticate(&self, client_id: &str, username: &str, password: &str) -> bool {
        let login = (!username.is_empty() || !password.is_empty()).then_some((username, password.as_bytes()));
        match self.policy().authenticate(client_id, login) {
            Ok(_) => true,
            Err(refusal) => {
                self.stats.record_connect_refused(refusal.as_str());
                // The client id and username are the client's claims, printed escaped; the
                // password never.
                self.log(refusal.as_str(), |left_out| {
                    tracing::warn!(client_id = ?client_id, username = ?username, reason = %refusal, left_out, "mqtt login refused")
                });
                false
            }
        }
    }

    /// The authorization hook.
    fn authorize(&self, client_id: &str, action: Action<'_>) -> bool {
        // A connection the policy cannot place was not let in by it; refuse everything.
        let policy = self.policy();
        let Some(caller) = policy.caller(client_id) else {
            // Not counted under a name the client gave; logged, for a session whose identity
            // was removed while it was connected.
            self.log("no-identity", |left_out| {
                tracing::warn!(client_id = ?client_id, left_out, "mqtt action of a client whose identity is gone refused")
            });
            return false;
        };
        let (verdict, subscription, what) = match action {
            Action::Publish(topic) => (Policy::may_publish(caller, topic), false, topic),
            Action::Subscribe(filter) => (Policy::may_subscribe(caller, filter), true, filter),
        };
        match verdict {
            Ok(()) => true,
            Err(refusal) => {
                self.refused(caller, subscription, what, &refusal);
                false
            }
        }
    }

    fn refused(&self, caller: Caller<'_>, subscription: bool, what: &str, refusal: &Refusal) {
        let identity = caller.label();
        self.stats.record_access_refused(identity, subscription);
        let action = if subscription { "subscribe" } else { "publish" };
        self.log(identity, |left_out| {
            tracing::warn!(identity, action, topic = ?what, reason = %refusal, left_out, "mqtt {action} refused")
        });
    }

    /// Runs `line` with the number of lines left out since the last one, unless `key`
    /// logged less than [`LOG_EVERY`] ago.
    fn log(&self, key: &str, line: impl FnOnce(u64)) {
        let now = Instant::now();
        let left_out = {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            match log.get_mut(key) {
                Some(quiet) if now.duration_since(quiet.last) < LOG_EVERY => {
                    quiet.left_out += 1;
                    return;
                }
                Some(quiet) => std::mem::replace(quiet, Quiet { last: now, left_out: 0 }).left_out,
                None => {
                    // Keys are refusal reasons and registry identities: a bounded set.
                    log.insert(key.to_owned(), Quiet { last: now, left_out: 0 });
                    0
                }
            }
        };
        line(left_out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Anonymous, Identity, PasswordDigest, Role};

    fn guard() -> (Guard, Arc<Stats>) {
        let stats = Arc::new(Stats::new(0));
        let device = Identity { name: "hau-01".into(), role: Role::Device, password: PasswordDigest::of(b"pw") };
        (Guard::new(Policy::new(vec![device], Anonymous::Refused).unwrap(), Arc::clone(&stats)), stats)
    }

    #[test]
    fn the_hooks_apply_the_policy_and_count_every_refusal() {
        let (guard, stats) = guard();
        assert!(guard.authenticate("hau-01", "hau-01", "pw"));
        assert!(!guard.authenticate("hau-01", "hau-01", "wrong"));
        assert!(!guard.authenticate("hau-01", "", ""));
        assert!(guard.authorize("hau-01", Action::Publish("mekong/v1/hau-01/up")));
        assert!(!guard.authorize("hau-01", Action::Publish("mekong/v1/hau-01/down")));
        assert!(!guard.authorize("hau-01", Action::Subscribe("#")));
        assert!(!guard.authorize("hau-01", Action::Subscribe("mekong/v1/+/up")));
        // Nobody the policy knows: refused, and not counted under a made-up name.
        assert!(!guard.authorize("stranger", Action::Publish("mekong/v1/stranger/up")));
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.connects_refused.get("bad_credentials"), Some(&1));
        assert_eq!(snapshot.connects_refused.get("no_credentials"), Some(&1));
        let refused = snapshot.access_refused.get("hau-01").copied().unwrap_or_default();
        assert_eq!((refused.publishes, refused.subscriptions), (1, 2));
        assert_eq!(snapshot.access_refused.len(), 1);
    }

    #[test]
    fn a_replaced_policy_applies_to_logins_and_to_connections_already_open() {
        let (guard, _) = guard();
        assert!(guard.authorize("hau-01", Action::Publish("mekong/v1/hau-01/up")));
        // hau-01 removed: the same (already connected) client id may publish no more.
        guard.replace(Policy::new(vec![], Anonymous::Refused).unwrap());
        assert!(!guard.authorize("hau-01", Action::Publish("mekong/v1/hau-01/up")));
        assert!(!guard.authorize("hau-01", Action::Subscribe("mekong/v1/hau-01/down")));
        assert!(!guard.authenticate("hau-01", "hau-01", "pw"));
    }

    #[test]
    fn logging_is_rate_limited_per_key_and_counts_what_it_left_out() {
        let (guard, _) = guard();
        let mut lines = Vec::new();
        for _ in 0..5 {
            guard.log("a", |left_out| lines.push(("a", left_out)));
        }
        guard.log("b", |left_out| lines.push(("b", left_out)));
        assert_eq!(lines, [("a", 0), ("b", 0)]);
        // As if the interval had passed: the next line reports the four left out.
        guard.log.lock().unwrap().get_mut("a").unwrap().last -= LOG_EVERY;
        guard.log("a", |left_out| lines.push(("a", left_out)));
        assert_eq!(lines.last(), Some(&("a", 4)));
    }
}
