//! `mekong device provision` as an operator runs it: the command line, the registry it edits
//! and the blob it writes.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use mekong_ingest::access::PasswordDigest;
use mekong_schema::provision;

/// Lowercase hex, as the registry writes digests.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_command_registers_the_node_and_writes_its_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("devices.toml");
    let key = "aa".repeat(32);
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mekong"))
            .current_dir(dir.path())
            .args(["device", "provision", "phong-dien-02", "--kind", "water", "--broker", "[fd00::5]:1884"])
            .args(["--registry", registry.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&["--key-hex", &key, "--period-secs", "120"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("added phong-dien-02 (water)") && !said.contains(&key), "{said}");

    let blob = std::fs::read(dir.path().join("node-phong-dien-02.bin")).unwrap();
    let node = provision::decode(&blob).unwrap();
    assert_eq!((node.device_id, node.broker_host, node.broker_port), ("phong-dien-02", "fd00::5", 1884));
    assert_eq!((node.key, node.period_secs.water), ([0xaa; 32], 120));
    let text = std::fs::read_to_string(&registry).unwrap();
    assert!(text.contains(&format!("key = \"{key}\"")), "{text}");
    // The password: in the blob, its digest in the registry, never on the terminal.
    let password = node.password.to_hex();
    let password = std::str::from_utf8(&password).unwrap();
    let digest = hex(&PasswordDigest::of(password.as_bytes()).0);
    assert!(text.contains(&format!("password_sha256 = \"{digest}\"")), "{text}");
    assert!(!text.contains(password), "{text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for shown in [&said, &stderr] {
        assert!(!shown.contains(password) && !shown.contains(&digest), "{shown}");
    }

    let out = run(&["--key-hex", "abc"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--key-hex must be 64 hex digits"));
    let out = run(&["--out", "other.bin"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("updated") && said.contains("no longer logs in"), "{said}");
    let blob = std::fs::read(dir.path().join("other.bin")).unwrap();
    let again = provision::decode(&blob).unwrap();
    assert_ne!(again.key, [0xaa; 32]);
    // Provisioning again rotates the password: the registry now holds the new one's digest.
    assert_ne!(again.password, node.password);
    let text = std::fs::read_to_string(&registry).unwrap();
    let new_digest = hex(&PasswordDigest::of(&again.password.to_hex()).0);
    assert!(text.contains(&new_digest) && !text.contains(&digest), "{text}");
}
