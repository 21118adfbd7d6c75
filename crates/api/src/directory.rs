//! What the operator says about each registered device: its name, place and tags.
//!
//! The registry file (read by the binary) gives each `[[device]]` an optional `name`, a
//! `location` (`lat`, `lon` in degrees WGS 84, optional `elevation` in metres) and free-form
//! `tags` (a table of strings, such as `district = "Ninh Kieu"`). The API serves them with
//! the device's counts, and lists a registered device before it has sent anything. The
//! checks on a place live here, with the type, so that the registry and any later editor
//! refuse the same values.
//!
//! [`Directory`] is a handle the binary and the handlers share: readers take a snapshot (an
//! `Arc` of the whole map, so a listing is consistent and holds no lock while it writes its
//! JSON), and a new registry replaces the map whole.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use mekong_schema::DeviceKind;

/// A device as its registry entry describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Its kind.
    pub kind: DeviceKind,
    /// What people call it ("Ninh Kieu wharf, Hau river").
    pub name: Option<String>,
    /// Where it stands.
    pub location: Option<Location>,
    /// Free-form labels.
    pub tags: BTreeMap<String, String>,
}

/// A place on the WGS 84 ellipsoid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Location {
    lat: f64,
    lon: f64,
    elevation: Option<f64>,
}

/// Why a place, a name or a tag was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProfileError {
    /// Latitude outside -90..=90 or not a number.
    #[error("lat must be from -90 to 90 degrees, got {0}")]
    Latitude(f64),
    /// Longitude outside -180..=180 or not a number.
    #[error("lon must be from -180 to 180 degrees, got {0}")]
    Longitude(f64),
    /// Elevation not a finite number of metres.
    #[error("elevation must be a finite number of metres, got {0}")]
    Elevation(f64),
    /// A name longer than [`MAX_TEXT`] bytes or with control characters.
    #[error("name must be 1 to {MAX_TEXT} bytes without control characters")]
    Name,
    /// A tag with an empty or overlong key or value, or too many tags.
    #[error(
        "tags: at most {MAX_TAGS}, each key 1 to 64 bytes and value at most {MAX_TEXT}, without control characters"
    )]
    Tag,
}

/// Longest name or tag value, in bytes.
pub const MAX_TEXT: usize = 200;
/// Most tags on one device.
pub const MAX_TAGS: usize = 32;

impl Location {
    /// A checked place.
    pub fn new(lat: f64, lon: f64, elevation: Option<f64>) -> Result<Location, ProfileError> {
        if !(-90.0..=90.0).contains(&lat) {
            return Err(ProfileError::Latitude(lat));
        }
        if !(-180.0..=180.0).contains(&lon) {
            return Err(ProfileError::Longitude(lon));
        }
        if let Some(e) = elevation.filter(|e| !e.is_finite()) {
            return Err(ProfileError::Elevation(e));
        }
        Ok(Location { lat, lon, elevation })
    }

    /// Latitude, degrees north.
    pub fn lat(&self) -> f64 {
        self.lat
    }

    /// Longitude, degrees east.
    pub fn lon(&self) -> f64 {
        self.lon
    }

    /// Metres above the WGS 84 ellipsoid, if known.
    pub fn elevation(&self) -> Option<f64> {
        self.elevation
    }
}

impl Profile {
    /// A checked profile.
    pub fn new(
        kind: DeviceKind,
        name: Option<String>,
        location: Option<Location>,
        tags: BTreeMap<String, String>,
    ) -> Result<Profile, ProfileError> {
        let text_ok = |s: &str, max: usize| !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control);
        if name.as_deref().is_some_and(|n| !text_ok(n, MAX_TEXT)) {
            return Err(ProfileError::Name);
        }
        let tag_ok = |(k, v): (&String, &String)| text_ok(k, 64) && (v.is_empty() || text_ok(v, MAX_TEXT));
        if tags.len() > MAX_TAGS || !tags.iter().all(tag_ok) {
            return Err(ProfileError::Tag);
        }
        Ok(Profile { kind, name, location, tags })
    }
}

/// What edits the registry for the admin endpoints: the binary's implementation writes the
/// registry file in place (its comments kept) and then hands the new registry to the ingest
/// thread and the new profiles to the [`Directory`], so a change takes effect without a
/// restart.
pub trait Registrar: Send + Sync + std::fmt::Debug {
    /// Adds device `id` with `profile`, or replaces the kind, name, place and tags of the
    /// registered one (its key and password stay); whether it was added.
    fn put(&self, id: &str, profile: &Profile) -> Result<bool, RegistrarError>;
    /// Removes device `id` from the registry; whether it was there. Returns once the removal
    /// has taken effect: no new login, no publish of a session it holds, and no pack of it
    /// still on its way to the store. Its readings stay (the API deletes them on request).
    fn remove(&self, id: &str) -> Result<bool, RegistrarError>;
}

/// Why the registry was not edited.
#[derive(Debug, thiserror::Error)]
pub enum RegistrarError {
    /// The edited registry would not load (it is left as it was).
    #[error("{0}")]
    Refused(String),
    /// The file could not be read or written.
    #[error("{0}")]
    Failed(String),
}

/// The registered devices' profiles, by id, shared between the binary and the handlers.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    profiles: Arc<RwLock<Arc<BTreeMap<String, Profile>>>>,
}

impl Directory {
    /// A directory of `profiles`.
    pub fn new(profiles: BTreeMap<String, Profile>) -> Directory {
        Directory { profiles: Arc::new(RwLock::new(Arc::new(profiles))) }
    }

    /// Every profile as it is now; later changes do not reach this copy.
    pub fn snapshot(&self) -> Arc<BTreeMap<String, Profile>> {
        // A panic while the lock was held cannot leave the map half-written (it is replaced
        // whole), so a poisoned lock still holds a valid map.
        Arc::clone(&self.profiles.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces every profile at once.
    pub fn replace(&self, profiles: BTreeMap<String, Profile>) {
        *self.profiles.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(profiles);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_names_and_tags_are_checked() {
        assert!(Location::new(10.034, 105.788, Some(2.5)).is_ok());
        assert_eq!(Location::new(90.5, 0.0, None), Err(ProfileError::Latitude(90.5)));
        assert_eq!(Location::new(0.0, -180.5, None), Err(ProfileError::Longitude(-180.5)));
        assert!(Location::new(f64::NAN, 0.0, None).is_err());
        assert!(Location::new(0.0, 0.0, Some(f64::INFINITY)).is_err());
        let tags = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let profile = |name: Option<&str>, t| Profile::new(DeviceKind::Water, name.map(str::to_owned), None, t);
        assert!(profile(Some("Ninh Kieu wharf"), tags(&[("district", "Ninh Kieu"), ("flood-alarm", "")])).is_ok());
        assert_eq!(profile(Some(""), tags(&[])), Err(ProfileError::Name));
        assert_eq!(profile(Some("two\nlines"), tags(&[])), Err(ProfileError::Name));
        assert_eq!(profile(None, tags(&[("", "x")])), Err(ProfileError::Tag));
        let many: Vec<(String, String)> = (0..=MAX_TAGS).map(|i| (format!("t{i}"), String::new())).collect();
        assert_eq!(Profile::new(DeviceKind::Air, None, None, many.into_iter().collect()), Err(ProfileError::Tag));
    }

    #[test]
    fn a_snapshot_outlives_a_replacement() {
        let directory = Directory::new(BTreeMap::new());
        let before = directory.snapshot();
        let profile = Profile::new(DeviceKind::Air, None, None, BTreeMap::new()).unwrap();
        directory.replace([("a".to_owned(), profile)].into());
        assert!(before.is_empty());
        assert_eq!(directory.snapshot().len(), 1);
    }
}
