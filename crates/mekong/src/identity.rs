//! `mekong identity`: the broker's gateway and app identities in the registry file, and a
//! list of every MQTT identity (devices included: `mekong device provision` makes theirs).
//!
//! A password is 64 hex digits of the operating system's randomness, printed once by
//! `create` and kept only as its SHA-256 digest (`password_sha256`), as the broker checks it
//! (`mekong_ingest::access`). A gateway publishes for the devices it lists; an app subscribes
//! within the filters it is granted. The registry is edited in place, as `mekong token` does.

use std::path::Path;

use anyhow::{bail, Context};
use mekong_ingest::access::{PasswordDigest, Role};

use crate::config::{
    entries_mut, parse_identities, registry_document, registry_text, remove_entry, to_hex, write_registry,
};

/// A new MQTT password: 64 hex digits (32 random bytes), text a client can send as it is.
pub fn new_password() -> anyhow::Result<String> {
    let mut random = [0u8; 32];
    getrandom::getrandom(&mut random).context("cannot draw a random password")?;
    Ok(to_hex(&random))
}

/// The registry table of a role's entries.
fn table(role: &Role) -> &'static str {
    match role {
        Role::Device => "device",
        Role::Gateway { .. } => "gateway",
        Role::App { .. } => "app",
    }
}

/// Adds a gateway or app named `name` to `registry` (created if missing) and returns its
/// password, which is nowhere else. Devices get theirs from `mekong device provision`.
pub fn create(registry: &Path, name: &str, role: &Role) -> anyhow::Result<String> {
    let text = registry_text(registry)?;
    let identities = parse_identities(&text).with_context(|| format!("invalid registry {}", registry.display()))?;
    let taken = identities.mqtt.iter().any(|i| i.name == name) || identities.devices.kind(name).is_some();
    if taken {
        bail!("{name:?} is taken (devices, gateways and apps share names); revoke it first (mekong identity revoke {name})");
    }
    let mut entry = toml_edit::Table::new();
    entry["name"] = toml_edit::value(name);
    let password = new_password()?;
    entry["password_sha256"] = toml_edit::value(to_hex(&PasswordDigest::of(password.as_bytes()).0));
    match role {
        Role::Device => bail!("a device's password comes with its configuration: mekong device provision {name}"),
        Role::Gateway { devices } => entry["devices"] = toml_edit::value(devices.iter().collect::<toml_edit::Array>()),
        Role::App { filters } => entry["subscribe"] = toml_edit::value(filters.iter().collect::<toml_edit::Array>()),
    }
    let mut doc = registry_document(registry)?;
    entries_mut(&mut doc, table(role), registry)?.push(entry);
    // The write checks names and filters as `serve` would, and refuses before writing.
    write_registry(registry, &doc)?;
    Ok(password)
}

/// Removes the gateway or app named `name`; whether there was one.
pub fn revoke(registry: &Path, name: &str) -> anyhow::Result<bool> {
    Ok(remove_entry(registry, "gateway", name)? || remove_entry(registry, "app", name)?)
}

/// Every MQTT identity of `registry`: name, role, and what it may use (devices a gateway
/// speaks for, filters an app may subscribe to).
pub fn list(registry: &Path) -> anyhow::Result<Vec<(String, &'static str, Vec<String>)>> {
    let text = registry_text(registry)?;
    let identities = parse_identities(&text).with_context(|| format!("invalid registry {}", registry.display()))?;
    Ok(identities
        .mqtt
        .into_iter()
        .map(|i| {
            let role = i.role.as_str();
            let lane = match i.role {
                Role::Device => vec![],
                Role::Gateway { devices } => devices,
                Role::App { filters } => filters,
            };
            (i.name, role, lane)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_identities;

    #[test]
    fn gateways_and_apps_are_kept_with_their_password_digests_and_can_be_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let registry = dir.path().join("devices.toml");
        std::fs::write(&registry, "# the city's registry\n[[device]]\nid = \"cai-03\"\nkind = \"water\"\n").unwrap();

        let gateway = Role::Gateway { devices: vec!["cai-03".into()] };
        let app = Role::App { filters: vec!["mekong/v1/+/up".into()] };
        let gw_password = create(&registry, "gw-1", &gateway).unwrap();
        let app_password = create(&registry, "board", &app).unwrap();
        assert_eq!(gw_password.len(), 64);
        assert_ne!(gw_password, app_password);
        let text = std::fs::read_to_string(&registry).unwrap();
        assert!(text.starts_with("# the city's registry"), "comments stay");
        assert!(!text.contains(&gw_password) && !text.contains(&app_password), "a password is written");
        let identities = load_identities(&registry).unwrap();
        let gw = identities.mqtt.iter().find(|i| i.name == "gw-1").unwrap();
        assert_eq!((&gw.role, gw.password), (&gateway, PasswordDigest::of(gw_password.as_bytes())));
        assert_eq!(
            list(&registry).unwrap(),
            [("gw-1".into(), "gateway", vec!["cai-03".into()]), ("board".into(), "app", vec!["mekong/v1/+/up".into()])]
        );

        // Names are shared with devices and unique; a bad filter is refused before writing.
        assert!(create(&registry, "cai-03", &app).is_err());
        assert!(create(&registry, "board", &gateway).is_err());
        let bad = create(&registry, "other", &Role::App { filters: vec!["a/#/b".into()] }).unwrap_err();
        assert!(format!("{bad:#}").contains("not a valid topic filter"), "{bad:#}");
        assert!(create(&registry, "node", &Role::Device).is_err());

        assert!(revoke(&registry, "board").unwrap());
        assert!(!revoke(&registry, "board").unwrap());
        assert_eq!(list(&registry).unwrap().len(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&registry).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
