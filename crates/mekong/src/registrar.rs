//! Device management through the API: the registry file edited in place, then the new
//! registry handed to the running platform.
//!
//! `PUT /v1/devices/{id}` and `DELETE /v1/devices/{id}` (admin scope) call [`FileRegistrar`].
//! An edit reads the file as a document (comments and order kept, as `mekong device
//! provision` does), changes one `[[device]]` entry, writes it through `write_registry`
//! (which refuses a registry that would not load, so the file never holds one), then loads
//! what it wrote and hands the devices to the ingest thread ([`SharedRegistry`], read once per
//! group) and the profiles to the API ([`Directory`]). One edit at a time: the lock spans read,
//! write and hand-over, so two edits cannot lose each other.
//!
//! Each edit also rebuilds the broker's access policy from the edited registry and hands it
//! to the broker's [`Guard`]: a device removed here can no longer log in, and a session it
//! still holds has every later publish refused (rumqttd cannot close it from outside). A
//! removal returns only once no pack checked against the registry that still held the
//! device is on its way to the store ([`SharedRegistry::settled`]), so that the API can
//! then delete its readings without a pack of it landing afterwards. Without a policy (the
//! broker open on loopback, or `security.allow_anonymous`) anyone may still publish as any
//! device id; `ingest.require_registration` then refuses a removed device's packs.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use mekong_api::directory::{Directory, Profile, Registrar, RegistrarError};
use mekong_ingest::guard::Guard;
use mekong_ingest::SharedRegistry;

use crate::config::{entries_mut, parse_identities, registry_document, write_registry};
use crate::exposure::Exposure;

/// How long a removal waits for the ingest thread to finish a group checked against the
/// registry before it (a group takes milliseconds; a store that cannot write defers packs
/// rather than waiting).
const SETTLE_WITHIN: Duration = Duration::from_secs(10);

/// The broker's gatekeeper and the exposure that says how to build its policy.
#[derive(Debug, Clone)]
pub struct BrokerAccess {
    /// The guard whose policy each edit replaces.
    pub guard: Guard,
    /// How the policy is built from the registry (as at start).
    pub exposure: Exposure,
}

/// Edits the registry file at `path` for the API and applies each edit at once.
#[derive(Debug)]
pub struct FileRegistrar {
    path: PathBuf,
    directory: Directory,
    ingest: SharedRegistry,
    broker: Option<BrokerAccess>,
    one_at_a_time: Mutex<()>,
}

impl FileRegistrar {
    /// A registrar of the file at `path` that hands its edits to `directory`, `ingest` and,
    /// if the broker has a policy, to the broker.
    pub fn new(path: PathBuf, directory: Directory, ingest: SharedRegistry, broker: Option<BrokerAccess>) -> Self {
        FileRegistrar { path, directory, ingest, broker, one_at_a_time: Mutex::new(()) }
    }

    /// Applies `edit` to the registry document, writes it if it loads (and its access policy
    /// builds), and hands it over; returns the edit's result and the ingest registry's new
    /// version.
    fn edit<T>(&self, edit: impl FnOnce(&mut toml_edit::ArrayOfTables) -> T) -> Result<(T, u64), RegistrarError> {
        let _one = self.one_at_a_time.lock().unwrap_or_else(PoisonError::into_inner);
        let failed = |e: anyhow::Error| RegistrarError::Failed(format!("{e:#}"));
        let refused = |e: anyhow::Error| RegistrarError::Refused(format!("{e:#}"));
        let mut doc = registry_document(&self.path).map_err(failed)?;
        let devices = entries_mut(&mut doc, "device", &self.path).map_err(failed)?;
        let result = edit(devices);
        let identities = parse_identities(&doc.to_string()).map_err(refused)?;
        let policy = match &self.broker {
            Some(broker) => broker.exposure.policy(&identities).map_err(refused)?,
            None => None,
        };
        write_registry(&self.path, &doc).map_err(refused)?;
        let version = self.ingest.replace(identities.devices);
        if let (Some(broker), Some(policy)) = (&self.broker, policy) {
            broker.guard.replace(policy);
        }
        self.directory.replace(identities.profiles);
        Ok((result, version))
    }
}

impl Registrar for FileRegistrar {
    fn put(&self, id: &str, profile: &Profile) -> Result<bool, RegistrarError> {
        self.edit(|devices| {
            let set = |entry: &mut toml_edit::Table| {
                entry["kind"] = toml_edit::value(profile.kind.as_str());
                match &profile.name {
                    Some(name) => entry["name"] = toml_edit::value(name.as_str()),
                    None => drop(entry.remove("name")),
                }
                match profile.location {
                    Some(l) => {
                        let mut place = toml_edit::InlineTable::new();
                        place.insert("lat", l.lat().into());
                        place.insert("lon", l.lon().into());
                        if let Some(e) = l.elevation() {
                            place.insert("elevation", e.into());
                        }
                        entry["location"] = toml_edit::value(place);
                    }
                    None => drop(entry.remove("location")),
                }
                if profile.tags.is_empty() {
                    entry.remove("tags");
                } else {
                    let tags: toml_edit::InlineTable =
                        profile.tags.iter().map(|(k, v)| (k.as_str(), toml_edit::Value::from(v.as_str()))).collect();
                    entry["tags"] = toml_edit::value(tags);
                }
            };
            crate::config::upsert_device(devices, id, set)
        })
        .map(|(added, _)| added)
    }

    fn remove(&self, id: &str) -> Result<bool, RegistrarError> {
        let (removed, version) = self.edit(|devices| {
            let before = devices.len();
            devices.retain(|t| t.get("id").and_then(|v| v.as_str()) != Some(id));
            devices.len() != before
        })?;
        if !self.ingest.settled(version, SETTLE_WITHIN) {
            return Err(RegistrarError::Failed(format!(
                "the ingest thread did not finish its group within {SETTLE_WITHIN:?}; the device is removed, \
                 but a pack of it may still be stored"
            )));
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mekong_api::directory::Location;
    use mekong_ingest::Registry;
    use mekong_schema::DeviceKind;

    use super::*;

    #[test]
    fn edits_keep_the_file_s_comments_and_reach_ingest_and_the_api_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.toml");
        let key = "ab".repeat(32);
        std::fs::write(
            &path,
            format!("# the city's stations\n[[device]]\nid = \"hau-01\"\nkind = \"water\"\nkey = \"{key}\"\n"),
        )
        .unwrap();
        let (directory, ingest) = (Directory::default(), SharedRegistry::new(Registry::new()));
        let registrar = FileRegistrar::new(path.clone(), directory.clone(), ingest.clone(), None);

        let place = Location::new(10.034, 105.788, Some(2.5)).unwrap();
        let tags: BTreeMap<_, _> = [("river".to_owned(), "Hau".to_owned())].into();
        let wharf = Profile::new(DeviceKind::Water, Some("Ninh Kieu wharf".into()), Some(place), tags).unwrap();
        assert!(!registrar.put("hau-01", &wharf).unwrap(), "hau-01 was registered already");
        let air = Profile::new(DeviceKind::Air, None, None, BTreeMap::new()).unwrap();
        assert!(registrar.put("park-02", &air).unwrap());

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# the city's stations"), "{text}");
        let loaded = parse_identities(&text).unwrap();
        assert_eq!(loaded.profiles["hau-01"], wharf);
        // The key is the provisioning's, and stays.
        assert!(loaded.devices.key("hau-01").is_some());
        // Handed over without a restart.
        assert_eq!(ingest.snapshot().kind("park-02"), Some(DeviceKind::Air));
        assert_eq!(directory.snapshot()["hau-01"].name.as_deref(), Some("Ninh Kieu wharf"));

        // Change back to nothing but a kind: name, place and tags go.
        let bare = Profile::new(DeviceKind::Traffic, None, None, BTreeMap::new()).unwrap();
        registrar.put("hau-01", &bare).unwrap();
        assert_eq!(directory.snapshot()["hau-01"], bare);
        assert!(!std::fs::read_to_string(&path).unwrap().contains("Ninh Kieu"));

        assert!(registrar.remove("park-02").unwrap());
        assert!(!registrar.remove("park-02").unwrap());
        assert_eq!(ingest.snapshot().kind("park-02"), None);
        assert!(!directory.snapshot().contains_key("park-02"));
        assert!(ingest.snapshot().kind("hau-01").is_some());
    }
}
