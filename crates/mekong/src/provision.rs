//! `mekong device provision`: registers a node, its key and its MQTT password in the registry
//! file, and writes the configuration blob (`mekong_schema::provision`) that its firmware reads
//! from flash.
//!
//! The registry is edited in place (its comments and order stay); an entry with the same id is
//! updated, so provisioning a node again gives it a new key. Every run draws a new MQTT
//! password (32 bytes from the operating system): the blob carries it, the registry only its
//! SHA-256 (`password_sha256`, of the 64 hex digits the node presents, as the broker checks
//! it), and it is never printed. So provisioning a node again rotates its password too: once
//! `mekong serve` runs with the new registry, the node's old blob no longer logs in. Both
//! files hold the key and are written with mode 0600, each through a temporary file renamed
//! over the old one, so a crash leaves either the old file or the new one.
//!
//! A node samples the sensor its kind names every `period_secs`; any sensor (that one
//! included) can be given its own period, so one node can be a mixed station (air quality,
//! water level and a traffic loop on one pole).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use mekong_ingest::access::PasswordDigest;
use mekong_ingest::DeviceKey;
use mekong_schema::cose::KEY_LEN;
use mekong_schema::provision::{self, MqttPassword, Periods, Provision, BLOB_LEN, PASSWORD_LEN};
use mekong_schema::topic::is_valid_device_id;
use mekong_schema::DeviceKind;

use crate::config::{parse_identities, registry_text, to_hex};

/// What to provision.
#[derive(Debug, Clone)]
pub struct ProvisionOptions {
    /// The device id.
    pub device_id: String,
    /// Its kind: traffic, water or air.
    pub kind: DeviceKind,
    /// Its key; `None` draws a new one from the operating system's random source.
    pub key: Option<DeviceKey>,
    /// The broker as the node will reach it.
    pub broker_host: String,
    /// The broker's MQTT port.
    pub broker_port: u16,
    /// Sampling period of the node's sensor (the one its kind names), seconds, unless
    /// [`SensorPeriods`] sets that sensor's.
    pub period_secs: u16,
    /// Periods of single sensors, which make a mixed station (the others are off).
    pub sensors: SensorPeriods,
    /// The registry file to add the device to (created if missing).
    pub registry: PathBuf,
    /// Where to write the node's configuration blob.
    pub out: PathBuf,
}

/// Sampling periods of single sensors, seconds; `None`: the kind's sensor samples every
/// `period_secs`, another sensor is off. `Some(0)` turns a sensor off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SensorPeriods {
    /// The air-quality sensor (PMS5003: `pm2_5`, `pm10`).
    pub air: Option<u16>,
    /// The water-level probe (Modbus: `water_level`).
    pub water: Option<u16>,
    /// The traffic loop (`vehicle_count`, `speed`).
    pub traffic: Option<u16>,
}

impl SensorPeriods {
    /// The periods to write for a node of `kind` whose own sensor samples every
    /// `default_secs` unless set here.
    pub fn resolve(&self, kind: DeviceKind, default_secs: u16) -> anyhow::Result<Periods> {
        let own = |k: DeviceKind, set: Option<u16>| set.unwrap_or(if k == kind { default_secs } else { 0 });
        if kind == DeviceKind::Unknown {
            bail!("a node's kind must be traffic, water or air");
        }
        let periods = Periods {
            air: own(DeviceKind::Air, self.air),
            water: own(DeviceKind::Water, self.water),
            traffic: own(DeviceKind::Traffic, self.traffic),
        };
        if periods == Periods::default() {
            bail!("every sensor is off: give the node at least one sampling period above 0");
        }
        Ok(periods)
    }
}

/// What [`provision`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provisioned {
    /// Whether the device was new to the registry (else its entry was updated, with a new
    /// password: the node's previous blob no longer logs in).
    pub added: bool,
    /// Size of the blob written.
    pub blob_bytes: usize,
}

/// Adds or updates the device in the registry and writes its configuration blob.
pub fn provision(opts: &ProvisionOptions) -> anyhow::Result<Provisioned> {
    if !is_valid_device_id(&opts.device_id) {
        bail!("device id {:?} is not [a-z0-9-]{{1,64}}", opts.device_id);
    }
    let period_secs = opts.sensors.resolve(opts.kind, opts.period_secs)?;
    let key = match opts.key {
        Some(key) => key.0,
        None => {
            let mut key = [0u8; KEY_LEN];
            getrandom::getrandom(&mut key).context("cannot draw a random key")?;
            key
        }
    };
    // A new password on every run, never one given: a password that was on a command line
    // or in an old blob could be known elsewhere.
    let mut password = [0u8; PASSWORD_LEN];
    getrandom::getrandom(&mut password).context("cannot draw a random password")?;
    let password = MqttPassword(password);
    let node = Provision {
        device_id: &opts.device_id,
        kind: opts.kind,
        key,
        broker_host: &opts.broker_host,
        broker_port: opts.broker_port,
        period_secs,
        password,
    };
    let mut blob = [0u8; BLOB_LEN];
    let blob_bytes = provision::encode(&node, &mut blob)?;

    let entry = Entry { kind: opts.kind, key: &key, password: PasswordDigest::of(&password.to_hex()) };
    let text = registry_text(&opts.registry)?;
    let (updated, added) = upsert(&text, &opts.device_id, &entry)
        .with_context(|| format!("cannot update registry {}", opts.registry.display()))?;
    // What the platform will read must load, or nothing is written.
    parse_identities(&updated).context("the updated registry does not load")?;

    write_secret(&opts.out, &blob[..blob_bytes])?;
    write_secret(&opts.registry, updated.as_bytes())?;
    Ok(Provisioned { added, blob_bytes })
}

/// What a device's registry entry holds besides its id.
struct Entry<'a> {
    kind: DeviceKind,
    key: &'a [u8; KEY_LEN],
    /// The digest of the password's text, as the broker compares it.
    password: PasswordDigest,
}

/// The registry text with the device's entry set (every entry with its id, should there be
/// several); whether it was added.
fn upsert(text: &str, id: &str, new: &Entry<'_>) -> anyhow::Result<(String, bool)> {
    let mut doc: toml_edit::DocumentMut = text.parse()?;
    let devices = doc
        .as_table_mut()
        .entry("device")
        .or_insert_with(|| toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new()));
    let Some(devices) = devices.as_array_of_tables_mut() else {
        bail!("`device` is not a list of [[device]] tables");
    };
    let (kind, key, password) = (new.kind.as_str(), to_hex(new.key), to_hex(&new.password.0));
    let set = |entry: &mut toml_edit::Table| {
        entry["kind"] = toml_edit::value(kind);
        entry["key"] = toml_edit::value(key.as_str());
        entry["password_sha256"] = toml_edit::value(password.as_str());
    };
    let added = crate::config::upsert_device(devices, id, set);
    Ok((doc.to_string(), added))
}

/// Writes a file that holds a key: readable by its owner only, replaced in one rename.
pub(crate) fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path.file_name().with_context(|| format!("{} is not a file name", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let renamed = written.and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = renamed {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_identities;
    use mekong_ingest::access::{Anonymous, Policy, Refusal};

    /// Whether the broker's policy over the registry at `path` lets `node` log in as it does
    /// (username and client id its device id, password the hex text of the blob's).
    fn logs_in(path: &Path, node: &Provision<'_>) -> Result<(), Refusal> {
        let policy = Policy::new(load_identities(path).unwrap().mqtt, Anonymous::Refused).unwrap();
        let password = node.password.to_hex();
        policy.authenticate(node.device_id, Some((node.device_id, &password))).map(|_| ())
    }

    fn options(dir: &Path, id: &str, kind: DeviceKind, key: Option<DeviceKey>) -> ProvisionOptions {
        ProvisionOptions {
            device_id: id.into(),
            kind,
            key,
            broker_host: "mekong.cantho.example".into(),
            broker_port: 8883,
            period_secs: 30,
            sensors: SensorPeriods::default(),
            registry: dir.join("devices.toml"),
            out: dir.join(format!("node-{id}.bin")),
        }
    }

    #[test]
    fn provisioning_again_keeps_the_name_place_and_tags() {
        let dir = tempfile::tempdir().unwrap();
        let registry = dir.path().join("devices.toml");
        let entry = "# the wharf\n[[device]]\nid = \"hau-01\"\nkind = \"water\"\nname = \"Ninh Kieu wharf\"\n\
                     location = { lat = 10.034, lon = 105.788 }\ntags = { river = \"Hau\" }\n";
        fs::write(&registry, entry).unwrap();
        provision(&options(dir.path(), "hau-01", DeviceKind::Water, None)).unwrap();
        let identities = load_identities(&registry).unwrap();
        let profile = &identities.profiles["hau-01"];
        assert_eq!(profile.name.as_deref(), Some("Ninh Kieu wharf"));
        assert_eq!(profile.location.map(|l| l.lat()), Some(10.034));
        assert_eq!(profile.tags["river"], "Hau");
        assert!(identities.devices.key("hau-01").is_some());
        assert!(fs::read_to_string(&registry).unwrap().starts_with("# the wharf"));
    }

    #[test]
    fn a_new_node_is_appended_with_its_key_and_its_blob_decodes() {
        let dir = tempfile::tempdir().unwrap();
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/devices.toml");
        fs::copy(&example, dir.path().join("devices.toml")).unwrap();
        let before = load_identities(&dir.path().join("devices.toml")).unwrap().devices.len();

        let opts = options(dir.path(), "xom-chai-03", DeviceKind::Air, None);
        assert_eq!(provision(&opts).unwrap(), Provisioned { added: true, blob_bytes: BLOB_LEN });

        let blob = fs::read(&opts.out).unwrap();
        let node = provision::decode(&blob).unwrap();
        assert_eq!(
            (node.device_id, node.kind, node.broker_host, node.broker_port),
            ("xom-chai-03", DeviceKind::Air, "mekong.cantho.example", 8883)
        );
        assert_eq!(node.period_secs, Periods { air: 30, water: 0, traffic: 0 });
        assert_ne!(node.key, [0u8; KEY_LEN], "a random key");
        assert_ne!(node.password.0, [0u8; PASSWORD_LEN], "a random password");
        assert_ne!(node.password.0, node.key, "not the key");
        // The registry holds the digest of the blob's password, and nothing of it in clear.
        let identities = load_identities(&opts.registry).unwrap();
        let digest = PasswordDigest::of(&node.password.to_hex());
        assert!(identities.mqtt.iter().any(|i| i.name == "xom-chai-03" && i.password == digest));
        assert_eq!(logs_in(&opts.registry, &node), Ok(()));
        let text = fs::read_to_string(&opts.registry).unwrap();
        assert!(text.contains(&format!("password_sha256 = \"{}\"", to_hex(&digest.0))), "{text}");
        assert!(!text.contains(std::str::from_utf8(&node.password.to_hex()).unwrap()), "{text}");
        assert!(!text.contains(&to_hex(&node.password.0[..8])), "{text}");
        let registry = load_identities(&opts.registry).unwrap().devices;
        assert_eq!(registry.len(), before + 1);
        assert_eq!(registry.key("xom-chai-03"), Some(&DeviceKey(node.key)));
        assert_eq!(registry.kind("xom-chai-03"), Some(DeviceKind::Air));
        // The file's comments and other entries stay as they were.
        let text = fs::read_to_string(&opts.registry).unwrap();
        assert!(text.starts_with(&fs::read_to_string(&example).unwrap()), "{text}");
        #[cfg(unix)]
        for path in [&opts.out, &opts.registry] {
            let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(path).unwrap().permissions());
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        }
    }

    #[test]
    fn provisioning_again_updates_the_entry_and_a_given_key_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let first = options(dir.path(), "hau-09", DeviceKind::Water, None);
        provision(&first).unwrap();
        let first_blob = fs::read(&first.out).unwrap();
        let first_node = provision::decode(&first_blob).unwrap();
        assert_eq!(logs_in(&first.registry, &first_node), Ok(()));
        let key = DeviceKey([7; KEY_LEN]);
        let again = ProvisionOptions {
            kind: DeviceKind::Traffic,
            ..options(dir.path(), "hau-09", DeviceKind::Water, Some(key))
        };
        assert!(!provision(&again).unwrap().added);
        let registry = load_identities(&again.registry).unwrap().devices;
        assert_eq!(
            (registry.len(), registry.kind("hau-09"), registry.key("hau-09")),
            (1, Some(DeviceKind::Traffic), Some(&key))
        );
        let blob = fs::read(&again.out).unwrap();
        let node = provision::decode(&blob).unwrap();
        assert_eq!(node.key, key.0);
        // A new password, which logs in; the first blob's no longer does.
        assert_ne!(node.password, first_node.password);
        assert_eq!(logs_in(&again.registry, &node), Ok(()));
        assert_eq!(logs_in(&again.registry, &first_node), Err(Refusal::BadCredentials));
        let text = fs::read_to_string(&again.registry).unwrap();
        assert_eq!(text.matches("password_sha256").count(), 1, "{text}");
    }

    /// Per-sensor periods make a mixed station; the kind's sensor keeps `period_secs`
    /// unless set, and a node with every sensor off is refused.
    #[test]
    fn a_mixed_station_gets_a_period_per_sensor() {
        let check = |kind, sensors: SensorPeriods, expected: Option<Periods>| {
            assert_eq!(sensors.resolve(kind, 60).ok(), expected, "{kind:?} {sensors:?}");
        };
        let none = SensorPeriods::default();
        check(DeviceKind::Water, none, Some(Periods { air: 0, water: 60, traffic: 0 }));
        let mixed = SensorPeriods { air: Some(10), traffic: Some(30), ..none };
        check(DeviceKind::Water, mixed, Some(Periods { air: 10, water: 60, traffic: 30 }));
        check(DeviceKind::Air, mixed, Some(Periods { air: 10, water: 0, traffic: 30 }));
        check(
            DeviceKind::Traffic,
            SensorPeriods { traffic: Some(5), ..none },
            Some(Periods { traffic: 5, ..Periods::default() }),
        );
        check(
            DeviceKind::Air,
            SensorPeriods { air: Some(0), water: Some(20), ..none },
            Some(Periods { water: 20, ..Periods::default() }),
        );
        check(DeviceKind::Air, SensorPeriods { air: Some(0), ..none }, None);
        check(DeviceKind::Unknown, mixed, None);

        let dir = tempfile::tempdir().unwrap();
        let opts = ProvisionOptions { sensors: mixed, ..options(dir.path(), "hau-10", DeviceKind::Water, None) };
        provision(&opts).unwrap();
        let node = provision::decode(&fs::read(&opts.out).unwrap()).unwrap().period_secs;
        assert_eq!(node, Periods { air: 10, water: 30, traffic: 30 });
    }

    #[test]
    fn bad_requests_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        for opts in [
            options(dir.path(), "Hau_09", DeviceKind::Water, None),
            options(dir.path(), "hau-09", DeviceKind::Unknown, None),
            ProvisionOptions { broker_host: "h".repeat(65), ..options(dir.path(), "hau-09", DeviceKind::Water, None) },
        ] {
            assert!(provision(&opts).is_err());
        }
        fs::write(dir.path().join("devices.toml"), "device = 3\n").unwrap();
        let e = provision(&options(dir.path(), "hau-09", DeviceKind::Water, None)).unwrap_err();
        assert!(format!("{e:#}").contains("[[device]]"), "{e:#}");
        let mut left: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        assert_eq!(left, ["devices.toml"]);
    }
}
