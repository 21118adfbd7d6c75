//! The device registry: which device ids are known, of which kind, and the key of those that
//! sign their packs.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

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
#[derive(Debug, Clone, Default)]
pub struct SharedRegistry(Arc<RwLock<Arc<Registry>>>);

impl SharedRegistry {
    /// A handle on `registry`.
    pub fn new(registry: Registry) -> Self {
        SharedRegistry(Arc::new(RwLock::new(Arc::new(registry))))
    }

    /// The registry as it is now.
    pub fn snapshot(&self) -> Arc<Registry> {
        // Replaced whole, never edited in place: a poisoned lock still holds a valid registry.
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces the registry; groups that start after this see the new one.
    pub fn replace(&self, registry: Registry) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(registry);
    }
}
