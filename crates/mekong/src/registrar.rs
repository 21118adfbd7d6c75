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
//! What does not change without a restart: the broker's MQTT identities (passwords), which
//! only `mekong device provision` and `mekong identity` set; a device removed here that has a
//! password can still log in until mekong restarts, though with
//! `ingest.require_registration` its packs are refused at once. Its readings stay.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use mekong_api::directory::{Directory, Profile, Registrar, RegistrarError};
use mekong_ingest::SharedRegistry;

use crate::config::{entries_mut, parse_identities, registry_document, registry_text, write_registry};

/// Edits the registry file at `path` for the API and applies each edit at once.
#[derive(Debug)]
pub struct FileRegistrar {
    path: PathBuf,
    directory: Directory,
    ingest: SharedRegistry,
    one_at_a_time: Mutex<()>,
}

impl FileRegistrar {
    /// A registrar of the file at `path` that hands its edits to `directory` and `ingest`.
    pub fn new(path: PathBuf, directory: Directory, ingest: SharedRegistry) -> Self {
        FileRegistrar { path, directory, ingest, one_at_a_time: Mutex::new(()) }
    }

    /// Applies `edit` to the registry document, writes it if it loads, and hands it over.
    fn edit<T>(&self, edit: impl FnOnce(&mut toml_edit::ArrayOfTables) -> T) -> Result<T, RegistrarError> {
        let _one = self.one_at_a_time.lock().unwrap_or_else(PoisonError::into_inner);
        let failed = |e: anyhow::Error| RegistrarError::Failed(format!("{e:#}"));
        let mut doc = registry_document(&self.path).map_err(failed)?;
        let devices = entries_mut(&mut doc, "device", &self.path).map_err(failed)?;
        let result = edit(devices);
        write_registry(&self.path, &doc).map_err(|e| RegistrarError::Refused(format!("{e:#}")))?;
        let text = registry_text(&self.path).map_err(failed)?;
        let identities = parse_identities(&text).map_err(failed)?;
        self.ingest.replace(identities.devices);
        self.directory.replace(identities.profiles);
        Ok(result)
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
    }

    fn remove(&self, id: &str) -> Result<bool, RegistrarError> {
        self.edit(|devices| {
            let before = devices.len();
            devices.retain(|t| t.get("id").and_then(|v| v.as_str()) != Some(id));
            devices.len() != before
        })
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
        let registrar = FileRegistrar::new(path.clone(), directory.clone(), ingest.clone());

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
