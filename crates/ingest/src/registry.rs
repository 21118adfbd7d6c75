//! The device registry: which device ids are known, of which kind, and the key of those that
//! sign their packs.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use mekong_schema::cose::KEY_LEN;
use mekong_schema::DeviceKind;

/// A device's secret for COSE_Mac0 envelopes. Its `Debug` output hides the bytes, so that
/// logging the options never prints a key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DeviceKey(pub [u8; KEY_LEN]);

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceKey(..)")
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    kind: DeviceKind,
    key: Option<DeviceKey>,
}

/// Known devices. Loaded by the binary from the registry file; read-only here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registry {
    devices: HashMap<String, Entry>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a device that sends plain packs.
    pub fn insert(&mut self, id: impl Into<String>, kind: DeviceKind) {
        self.devices.insert(id.into(), Entry { kind, key: None });
    }

    /// Adds (or replaces) a device that must sign its packs with `key`.
    pub fn insert_keyed(&mut self, id: impl Into<String>, kind: DeviceKind, key: DeviceKey) {
        self.devices.insert(id.into(), Entry { kind, key: Some(key) });
    }

    /// The kind of a registered device.
    pub fn kind(&self, id: &str) -> Option<DeviceKind> {
        self.devices.get(id).map(|e| e.kind)
    }

    /// The key of a registered device that signs its packs.
    pub fn key(&self, id: &str) -> Option<&DeviceKey> {
        self.devices.get(id)?.key.as_ref()
    }

    /// The registered device ids, in no order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.devices.keys().map(String::as_str)
    }

    /// Number of registered devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Number of registered devices that sign their packs.
    pub fn keyed(&self) -> usize {
        self.devices.values().filter(|e| e.key.is_some()).count()
    }

    /// Whether no device is registered.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

/// The registry the ingest thread reads, replaceable while it runs: the API's device
/// management replaces it whole after editing the registry file, and the pipeline takes a
/// snapshot (one read lock, one `Arc` clone) at the start of each group, so a group sees one
/// registry throughout and ingest never waits on a file.
///
/// Each replacement has a version, and the group being handled says which version it
/// checked against, so that removing a device can wait until no pack checked against the
/// registry that still held it is on its way to the store ([`SharedRegistry::settled`]).
#[derive(Debug, Clone, Default)]
pub struct SharedRegistry(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    current: RwLock<(Arc<Registry>, u64)>,
    /// The version of the registry of the group being handled, plus one; 0 between groups.
    in_flight: Mutex<u64>,
    /// Notified when a group is done.
    done: Condvar,
}

/// A group being handled against one version of the registry; dropped when it is done.
#[derive(Debug)]
pub(crate) struct GroupInFlight(Arc<Shared>);

impl Drop for GroupInFlight {
    fn drop(&mut self) {
        *self.0.in_flight.lock().unwrap_or_else(PoisonError::into_inner) = 0;
        self.0.done.notify_all();
    }
}

impl SharedRegistry {
    /// A handle on `registry`.
    pub fn new(registry: Registry) -> Self {
        SharedRegistry(Arc::new(Shared {
            current: RwLock::new((Arc::new(registry), 0)),
            in_flight: Mutex::new(0),
            done: Condvar::new(),
        }))
    }

    /// The registry as it is now.
    pub fn snapshot(&self) -> Arc<Registry> {
        // Replaced whole, never edited in place: a poisoned lock still holds a valid registry.
        Arc::clone(&self.0.current.read().unwrap_or_else(PoisonError::into_inner).0)
    }

    /// The registry for a group about to be handled, marked as in flight until the returned
    /// guard is dropped (one group at a time: the ingest thread's).
    pub(crate) fn begin_group(&self) -> (Arc<Registry>, GroupInFlight) {
        let current = self.0.current.read().unwrap_or_else(PoisonError::into_inner);
        // Marked while the read lock is held: once `replace` has returned, a group that took
        // the older registry is visible as in flight.
        *self.0.in_flight.lock().unwrap_or_else(PoisonError::into_inner) = current.1 + 1;
        (Arc::clone(&current.0), GroupInFlight(Arc::clone(&self.0)))
    }

    /// Replaces the registry; groups that start after this see the new one. Returns the new
    /// registry's version, for [`SharedRegistry::settled`].
    pub fn replace(&self, registry: Registry) -> u64 {
        let mut current = self.0.current.write().unwrap_or_else(PoisonError::into_inner);
        let version = current.1 + 1;
        *current = (Arc::new(registry), version);
        version
    }

    /// Waits, at most `within`, until no group checked against a registry older than
    /// `version` is being handled; whether that happened in time.
    pub fn settled(&self, version: u64, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut in_flight = self.0.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        while *in_flight != 0 && *in_flight <= version {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            in_flight = self.0.done.wait_timeout(in_flight, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }
}

#[cfg(test)]
mod shared_tests {
    use super::*;

    #[test]
    fn a_replacement_settles_once_the_groups_of_older_registries_are_done() {
        let shared = SharedRegistry::new(Registry::new());
        let (_, group) = shared.begin_group();
        let version = shared.replace(Registry::new());
        assert!(!shared.settled(version, Duration::from_millis(20)), "a group of the old registry is in flight");
        let waiter = {
            let shared = shared.clone();
            std::thread::spawn(move || shared.settled(version, Duration::from_secs(30)))
        };
        drop(group);
        assert!(waiter.join().unwrap());
        // A group of the new registry does not hold it up.
        let (_, _newer) = shared.begin_group();
        assert!(shared.settled(version, Duration::ZERO));
    }
}
