//! The device registry: which device ids are known and of which kind.

use std::collections::HashMap;

use mekong_schema::DeviceKind;

/// Known devices. Loaded by the binary from the registry file; read-only here.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    devices: HashMap<String, DeviceKind>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a device.
    pub fn insert(&mut self, id: impl Into<String>, kind: DeviceKind) {
        self.devices.insert(id.into(), kind);
    }

    /// The kind of a registered device.
    pub fn kind(&self, id: &str) -> Option<DeviceKind> {
        self.devices.get(id).copied()
    }

    /// Number of registered devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether no device is registered.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}
