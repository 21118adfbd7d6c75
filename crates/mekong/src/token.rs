//! `mekong token`: the HTTP API's bearer tokens, in the registry file beside the devices.
//!
//! A token is `mkt_` and 64 hex digits of the operating system's randomness: printed once by
//! `create`, and kept only as its SHA-256 digest (`[[token]]` with `name`, `scope`,
//! `sha256`). The registry is edited in place and written as `mekong device provision`
//! writes it (mode 0600, one rename). `mekong serve` reads the tokens at start.

use std::path::Path;

use anyhow::{bail, Context};
use mekong_api::auth::{Scope, TokenDigest};

use crate::config::{
    entries_mut, parse_identities, registry_document, registry_text, remove_entry, to_hex, write_registry,
};

/// Names a token may have: what a log line can show plainly.
fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Adds a token named `name` with `scope` to `registry` (created if missing) and returns
/// its secret, which is nowhere else.
pub fn create(registry: &Path, name: &str, scope: Scope) -> anyhow::Result<String> {
    if !is_valid_name(name) {
        bail!("token name {name:?} is not 1 to 64 of a-z, A-Z, 0-9, '-', '_', '.'");
    }
    let mut doc = registry_document(registry)?;
    let tokens = entries_mut(&mut doc, "token", registry)?;
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
    write_registry(registry, &doc)?;
    Ok(secret)
}

/// Removes the token named `name`; whether there was one.
pub fn revoke(registry: &Path, name: &str) -> anyhow::Result<bool> {
    remove_entry(registry, "token", name)
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
