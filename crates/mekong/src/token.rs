//! `mekong token`: the HTTP API's bearer tokens, in the registry file beside the devices.
//!
//! A token is `mkt_` and 64 hex digits of the operating system's randomness: printed once by
//! `create`, and kept only as its SHA-256 digest (`[[token]]` with `name`, `scope`,
//! `sha256`). The registry is edited in place and written as `mekong device provision`
//! writes it (mode 0600, one rename). `mekong serve` reads the tokens at start.

use std::path::Path;

use anyhow::{bail, Context};
use mekong_api::auth::{Scope, TokenDigest};

use crate::config::{parse_identities, registry_text, to_hex};
use crate::provision::write_secret;

/// Names a token may have: what a log line can show plainly.
fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn read(registry: &Path) -> anyhow::Result<toml_edit::DocumentMut> {
    registry_text(registry)?.parse().with_context(|| format!("invalid registry {}", registry.display()))
}

fn write(registry: &Path, doc: &toml_edit::DocumentMut) -> anyhow::Result<()> {
    let text = doc.to_string();
    // What the platform will read must load, or nothing is written.
    parse_identities(&text).context("the updated registry does not load")?;
    write_secret(registry, text.as_bytes())
}

/// Adds a token named `name` with `scope` to `registry` (created if missing) and returns
/// its secret, which is nowhere else.
pub fn create(registry: &Path, name: &str, scope: Scope) -> anyhow::Result<String> {
    if !is_valid_name(name) {
        bail!("token name {name:?} is not 1 to 64 of a-z, A-Z, 0-9, '-', '_', '.'");
    }
    let mut doc = read(registry)?;
    let tokens = doc
        .as_table_mut()
        .entry("token")
        .or_insert_with(|| toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new()));
    let Some(tokens) = tokens.as_array_of_tables_mut() else {
        bail!("`token` in {} is not a list of [[token]] tables", registry.display());
    };
    if tokens.iter().any(|t| t.get("name").and_then(|v| v.as_str()) == Some(name)) {
        bail!("a token named {name:?} exists; revoke it first (mekong token revoke {name})");
    }
    let mut random = [0u8; 32];
    getrandom::getrandom(&mut random).context("cannot draw a random token")?;
    let secret = format!("mkt_{}", to_hex(&random));
    let mut entry = toml_edit::Table::new();
    entry["name"] = toml_edit::value(name);
    entry["scope"] = toml_edit::value(scope.as_str());
    entry["sha256"] = toml_edit::value(to_hex(&TokenDigest::of(&secret).0));
    tokens.push(entry);
    write(registry, &doc)?;
    Ok(secret)
}

/// Removes the token named `name`; whether there was one.
pub fn revoke(registry: &Path, name: &str) -> anyhow::Result<bool> {
    let mut doc = read(registry)?;
    let Some(tokens) = doc.get_mut("token").and_then(toml_edit::Item::as_array_of_tables_mut) else {
        return Ok(false);
    };
    let before = tokens.len();
    tokens.retain(|t| t.get("name").and_then(|v| v.as_str()) != Some(name));
    if tokens.len() == before {
        return Ok(false);
    }
    write(registry, &doc)?;
    Ok(true)
}

/// The tokens of `registry`: names and scopes.
pub fn list(registry: &Path) -> anyhow::Result<Vec<(String, Scope)>> {
    let text = registry_text(registry)?;
    let identities = parse_identities(&text).with_context(|| format!("invalid registry {}", registry.display()))?;
    Ok(identities.tokens.into_iter().map(|t| (t.name, t.scope)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_identities;

    #[test]
    fn a_token_is_kept_as_its_digest_and_can_be_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let registry = dir.path().join("devices.toml");
        std::fs::write(&registry, "# the city's registry\n[[device]]\nid = \"hau-01\"\nkind = \"water\"\n").unwrap();

        let secret = create(&registry, "city-app", Scope::Read).unwrap();
        let admin = create(&registry, "ops", Scope::Admin).unwrap();
        assert!(secret.starts_with("mkt_") && secret.len() == 68, "{secret}");
        assert_ne!(secret, admin);
        let text = std::fs::read_to_string(&registry).unwrap();
        assert!(text.starts_with("# the city's registry"), "comments stay");
        assert!(!text.contains(&secret[4..]), "the secret is not written");
        let identities = load_identities(&registry).unwrap();
        assert_eq!(identities.devices.len(), 1);
        let app = &identities.tokens[0];
        assert_eq!((app.name.as_str(), app.scope, app.digest), ("city-app", Scope::Read, TokenDigest::of(&secret)));
        assert_eq!(list(&registry).unwrap(), [("city-app".into(), Scope::Read), ("ops".into(), Scope::Admin)]);

        assert!(create(&registry, "city-app", Scope::Admin).is_err(), "names are unique");
        assert!(create(&registry, "has space", Scope::Read).is_err());
        assert!(revoke(&registry, "city-app").unwrap());
        assert!(!revoke(&registry, "city-app").unwrap());
        assert_eq!(list(&registry).unwrap(), [("ops".into(), Scope::Admin)]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&registry).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
