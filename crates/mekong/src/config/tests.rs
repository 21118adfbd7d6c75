//! Tests of configuration loading: the shipped file, overrides, and errors that name the key.

use super::*;

fn load_str(text: &str, env: &[(&str, &str)]) -> anyhow::Result<Config> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("mekong.toml");
    std::fs::write(&path, text)?;
    Config::load(&path, true, env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

fn error_of(text: &str, env: &[(&str, &str)]) -> String {
    format!("{:#}", load_str(text, env).unwrap_err())
}

#[test]
fn the_shipped_file_states_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/mekong.toml");
    let config = Config::load(&path, true, []).unwrap();
    // Its alert rules are examples, active so that the flood demo raises an alert; every
    // other key is its default.
    assert_eq!(config.alerts.rule.len(), 5);
    let alerts = crate::alerts::AlertsConfig { rule: Vec::new(), ..config.alerts.clone() };
    assert_eq!(Config { alerts, ..config }, Config::default());
}

#[test]
fn the_shipped_alert_rules_name_metrics_of_their_kinds_and_bad_ones_are_refused() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/mekong.toml");
    let config = Config::load(&path, true, []).unwrap();
    for rule in &config.alerts.rule {
        if let (Some(kind), Some(metric)) = (&rule.kind, &rule.metric) {
            assert_eq!(
                DeviceKind::of_metric(metric),
                DeviceKind::parse(kind),
                "{}: {metric} is no {kind} metric",
                rule.id
            );
        }
    }
    let bad = "[[alerts.rule]]\nid = \"x\"\ntype = \"threshold\"\nmetric = \"water_level\"\nabove = 1.0\nclear = 2.0\n";
    assert!(error_of(bad, &[]).contains("quiet side"), "{}", error_of(bad, &[]));
    let twice = "[[alerts.rule]]\nid = \"x\"\ntype = \"stale\"\n[[alerts.rule]]\nid = \"x\"\ntype = \"stale\"\n";
    assert!(error_of(twice, &[]).contains("defined twice"));
    let hook = "[[alerts.webhook]]\nname = \"ops\"\nurl = \"https://ops.example/h\"\n";
    assert!(error_of(hook, &[]).contains("one of secret_env or secret_file"));
    // The secret is read at start; a missing one is named by its variable, never shown.
    let hook = format!("{hook}secret_env = \"MEKONG_TEST_NO_SUCH_SECRET\"\n");
    let config = load_str(&hook, &[]).unwrap();
    let e = format!("{:#}", config.alerts.options().unwrap_err());
    assert!(e.contains("MEKONG_TEST_NO_SUCH_SECRET"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "0123456789abcdef-very-secret\n").unwrap();
    let text =
        format!("[[alerts.webhook]]\nname = \"ops\"\nurl = \"https://ops.example/h\"\nsecret_file = {:?}\n", file);
    let config = load_str(&text, &[]).unwrap();
    let options = config.alerts.options().unwrap();
    assert_eq!(options.webhooks[0].secret.0, b"0123456789abcdef-very-secret");
    assert!(!format!("{options:?}").contains("very-secret"));
    assert!(!toml::to_string(&config).unwrap().contains("very-secret"));
}

#[test]
fn the_shipped_file_shows_every_key() {
    // A field added to a library's options that are a section ([broker]) becomes a key; it
    // must be explained in the shipped file (or kept out of the file with `serde(skip)`).
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/mekong.toml");
    let shipped: toml::Table = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let printed: toml::Table = toml::from_str(&toml::to_string(&Config::default()).unwrap()).unwrap();
    for (name, section) in &printed {
        let shipped = shipped[name].as_table().unwrap();
        for (key, value) in section.as_table().unwrap() {
            // Lists of tables ([[storage.retention]]) are shown commented, as an example.
            if !value.is_array() {
                assert!(shipped.contains_key(key), "config/mekong.toml does not show {name}.{key}");
            }
        }
    }
}

#[test]
fn the_shipped_retention_example_loads_and_names_a_metric_of_its_kind() {
    // The example is commented out in the file; uncommented, it must be a valid rule whose
    // metric is one the stations of its kind report (an unknown name matches nothing, and
    // the rule would silently keep everything).
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/mekong.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| l.trim() == "# [[storage.retention]]").expect("a retention example");
    let example: String = lines[start..]
        .iter()
        .map_while(|l| l.strip_prefix("# ").filter(|l| !l.trim().is_empty()))
        .map(|l| format!("{l}\n"))
        .collect();
    let config = load_str(&example, &[]).unwrap();
    let [rule] = config.storage.retention.as_slice() else { panic!("one rule in {example}") };
    let (kind, metric) = (rule.kind.as_deref().unwrap(), rule.metric.as_deref().unwrap());
    assert_eq!(DeviceKind::of_metric(metric), DeviceKind::parse(kind), "{metric} is not a {kind} metric");
    assert!(rule.raw_days.is_some() && rule.rollup_days.is_some(), "{example}");
}

#[test]
fn the_printed_defaults_parse_back() {
    let printed = toml::to_string(&Config::default()).unwrap();
    assert_eq!(load_str(&printed, &[]).unwrap(), Config::default());
}

#[test]
fn a_missing_file_means_defaults_unless_it_was_asked_for() {
    let missing = Path::new("/nonexistent/mekong.toml");
    assert_eq!(Config::load(missing, false, []).unwrap(), Config::default());
    assert!(Config::load(missing, true, []).is_err());
}

#[test]
fn unknown_keys_and_bad_values_name_the_key() {
    let e = error_of("[api]\nlisten = \"[::]:8080\"\nlisen = 1\n", &[]);
    assert!(e.contains("lisen"), "{e}");
    let e = error_of("[broker]\nmax_inflight = \"many\"\n", &[]);
    assert!(e.contains("max_inflight"), "{e}");
    let e = error_of("[storage]\ndata_dir = 5\n", &[]);
    assert!(e.contains("data_dir"), "{e}");
    let e = error_of("[broker]\nlisten = \"localhost\"\n", &[]);
    assert!(e.contains("listen"), "{e}");
    let e = error_of("[broker]\nsegment_bytes = 10\n", &[]);
    assert!(e.contains("[broker]") && e.contains("segment_bytes must be at least 1024, got 10"), "{e}");
    let e = error_of("[broker]\nnetwork_threads = 100000\n", &[]);
    assert!(e.contains("[broker]") && e.contains("network_threads must be at most 1024"), "{e}");
    let e = error_of("[broker]\nmax_inflight = 0\n", &[]);
    assert!(e.contains("[broker]") && e.contains("max_inflight must be at least 1"), "{e}");
    let e = error_of("[broker]\nlisten_v5 = \"[::]:1883\"\n", &[]);
    assert!(e.contains("[broker]") && e.contains("listen_v5 must differ"), "{e}");
    let e = error_of("", &[("MEKONG__BROKER__LISTEN", "[::]:0")]);
    assert!(e.contains("[broker]") && e.contains("a port other than 0"), "{e}");
    let e = error_of("[broker]\nready_timeout = 1\n", &[]);
    assert!(e.contains("ready_timeout"), "{e}");
    let e = error_of("[ingest]\nmax_payload_bytes = 300000\n", &[]);
    assert!(e.contains("ingest.max_payload_bytes"), "{e}");
    let e = error_of("[nope]\n", &[]);
    assert!(e.contains("nope"), "{e}");
}

#[test]
fn tls_keys_are_read_and_checked() {
    let config = load_str(
        "[tls]\ncert = \"/etc/mekong/fullchain.pem\"\nkey = \"/etc/mekong/privkey.pem\"\n",
        &[("MEKONG__TLS__RELOAD_EVERY_SECS", "0"), ("MEKONG__BROKER__LISTEN_V5_TLS", "")],
    )
    .unwrap();
    assert!(config.tls.enabled() && config.tls.api);
    assert_eq!(config.tls.reload_every_secs, 0);
    assert_eq!(config.broker.listen_v5_tls, None);
    assert!(!Config::default().tls.enabled(), "TLS is off by default");
    let e = error_of("[tls]\ncert = \"/etc/mekong/fullchain.pem\"\n", &[]);
    assert!(e.contains("tls.cert and tls.key go together"), "{e}");
    // Every listener, TLS or not, has a port of its own, served or not.
    let e = error_of("[broker]\nlisten_tls = \"[::]:1883\"\n", &[]);
    assert!(e.contains("listen_tls must differ from listen"), "{e}");
    let e = error_of("[broker]\nlisten_v5_tls = \"[::]:8883\"\n", &[]);
    assert!(e.contains("listen_v5_tls must differ from listen_tls"), "{e}");
    let e = error_of("[broker]\nlisten_tls = \"[::]:0\"\n", &[]);
    assert!(e.contains("listen_tls needs a port other than 0"), "{e}");
}

#[test]
fn environment_variables_override_the_file() {
    let config = load_str(
        "[api]\nlisten = \"[::]:8080\"\n",
        &[
            ("MEKONG__API__LISTEN", "127.0.0.1:9999"),
            ("MEKONG__INGEST__REQUIRE_REGISTRATION", "false"),
            ("MEKONG__STORAGE__CACHE_BYTES", "1048576"),
            ("MEKONG__BROKER__LISTEN_V5", ""),
            ("OTHER", "ignored"),
        ],
    )
    .unwrap();
    assert_eq!(config.api.listen, "127.0.0.1:9999".parse().unwrap());
    assert_eq!(config.storage.cache_bytes, 1 << 20);
    assert_eq!(config.broker.listen_v5, None);
    let e = error_of("", &[("MEKONG__API__PORT", "1")]);
    assert!(e.contains("port"), "{e}");
    let e = error_of("", &[("MEKONG__API", "1")]);
    assert!(e.contains("MEKONG__API"), "{e}");
}

/// What systemd passes the Debian package's service (`StateDirectory=mekong`,
/// `ConfigurationDirectory=mekong`).
const SERVICE_ENV: [(&str, &str); 2] =
    [("STATE_DIRECTORY", "/var/lib/mekong"), ("CONFIGURATION_DIRECTORY", "/etc/mekong")];

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn systemds_directories_supply_the_data_directory_and_the_registry() {
    let config = load_str("", &SERVICE_ENV).unwrap();
    assert_eq!(config.storage.data_dir, Path::new("/var/lib/mekong/data"));
    assert_eq!(config.registry.path, Path::new("/etc/mekong/devices.toml"));
    // Nothing else changes.
    let defaults = Config::default();
    assert_eq!(
        config,
        Config {
            storage: StorageConfig { data_dir: config.storage.data_dir.clone(), ..defaults.storage.clone() },
            registry: RegistryConfig { path: config.registry.path.clone() },
            ..defaults
        }
    );
    // Without them, the defaults stay relative to the working directory.
    let plain = load_str("", &[]).unwrap();
    assert_eq!(
        (plain.storage.data_dir, plain.registry.path),
        (PathBuf::from("./data"), PathBuf::from(DEFAULT_REGISTRY))
    );
}

#[test]
fn a_key_in_the_file_or_the_environment_wins_over_systemds_directories() {
    let mut env = SERVICE_ENV.to_vec();
    env.push(("MEKONG__REGISTRY__PATH", "/srv/registry.toml"));
    let config = load_str("[storage]\ndata_dir = \"/srv/mekong\"\n", &env).unwrap();
    assert_eq!(config.storage.data_dir, Path::new("/srv/mekong"));
    assert_eq!(config.registry.path, Path::new("/srv/registry.toml"));
    // "" (no registry) is a value too.
    env.pop();
    let config = load_str("[registry]\npath = \"\"\n", &env).unwrap();
    assert_eq!(config.registry.path, Path::new(""));
    // A section that is not a table is still reported as such.
    let e = error_of("storage = 5\n", &env);
    assert!(e.contains("storage"), "{e}");
}

#[test]
fn the_configuration_file_is_in_systemds_configuration_directory_when_it_names_one() {
    let check = |env: &[(&str, &str)], file: &str, state: Option<&str>| {
        let dirs = ServiceDirs::from_env(&vars(env));
        assert_eq!(dirs.config_file(), Path::new(file), "{env:?}");
        assert_eq!(dirs.state.as_deref(), state.map(Path::new), "{env:?}");
    };
    check(&[], DEFAULT_CONFIG, None);
    check(&SERVICE_ENV, "/etc/mekong/mekong.toml", Some("/var/lib/mekong"));
    // systemd joins several directories with ':'; mekong takes the first.
    check(
        &[("CONFIGURATION_DIRECTORY", "/etc/a:/etc/b"), ("STATE_DIRECTORY", "/var/lib/a:/var/lib/b")],
        "/etc/a/mekong.toml",
        Some("/var/lib/a"),
    );
    // Empty means unset.
    check(&[("CONFIGURATION_DIRECTORY", ""), ("STATE_DIRECTORY", "")], DEFAULT_CONFIG, None);
    check(&[("MEKONG__STORAGE__DATA_DIR", "/srv")], DEFAULT_CONFIG, None);
}

#[test]
fn the_packaged_file_loads_and_leaves_the_paths_to_systemd() {
    // /etc/mekong/mekong.toml of the Debian package: under the service, the store and the
    // registry must come out in /var/lib/mekong and /etc/mekong, which only the environment
    // can say if the file names neither.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/deb/mekong.toml");
    let config = Config::load(&path, true, vars(&SERVICE_ENV)).unwrap();
    assert_eq!(config.storage.data_dir, Path::new("/var/lib/mekong/data"));
    assert_eq!(config.registry.path, Path::new("/etc/mekong/devices.toml"));
    let packaged = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/deb/devices.toml");
    let identities = load_identities(&packaged).unwrap();
    assert!(identities.devices.is_empty() && identities.mqtt.is_empty() && identities.tokens.is_empty());
}

#[test]
fn the_example_registry_loads_and_bad_entries_are_refused() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/devices.toml");
    let registry = load_identities(&path).unwrap().devices;
    assert!(!registry.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("devices.toml");
    std::fs::write(&bad, "[[device]]\nid = \"Hau_01\"\nkind = \"water\"\n").unwrap();
    assert!(format!("{:#}", load_identities(&bad).unwrap_err()).contains("Hau_01"));
    std::fs::write(&bad, "[[device]]\nid = \"hau-01\"\nkind = \"boat\"\n").unwrap();
    assert!(format!("{:#}", load_identities(&bad).unwrap_err()).contains("boat"));
}

#[test]
fn retention_rules_are_read_and_checked() {
    let text = "[[storage.retention]]\nkind = \"traffic\"\nraw_days = 90\nrollup_days = 1825\n\n\
                [[storage.retention]]\nmetric = \"pm2_5\"\nraw_days = 30\n";
    let config = load_str(text, &[]).unwrap();
    let policy = config.retention_policy();
    assert_eq!(policy.rules.len(), 2);
    let traffic = policy.rule_for("traffic", "vehicles").unwrap();
    assert_eq!((traffic.raw_ms, traffic.rollups_ms), (Some(90 * 86_400_000), Some(1825 * 86_400_000)));
    assert_eq!(policy.rule_for("air", "pm2_5").unwrap().raw_ms, Some(30 * 86_400_000));
    assert!(policy.rule_for("water", "water_level").is_none());

    let e = error_of("[[storage.retention]]\nkind = \"boats\"\n", &[]);
    assert!(e.contains("storage.retention[0].kind"), "{e}");
    let e = error_of("[[storage.retention]]\nraw_days = 10\nrollup_days = 5\n", &[]);
    assert!(e.contains("rollup_days (5) must be at least raw_days (10)"), "{e}");
    let e = error_of("[[storage.retention]]\nraw_days = 0\n", &[]);
    assert!(e.contains("at least 1"), "{e}");
}

#[test]
fn registry_keys_are_read_and_bad_ones_refused_without_echoing_them() {
    let key = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
    let registry =
        parse_identities(&format!("[[device]]\nid = \"hau-01\"\nkind = \"water\"\nkey = \"{key}\"\n")).unwrap().devices;
    let expected: [u8; 32] = std::array::from_fn(|i| (i as u8 % 16) * 0x11);
    assert_eq!(registry.key("hau-01"), Some(&DeviceKey(expected)));
    assert_eq!(registry.kind("hau-01"), Some(DeviceKind::Water));
    let plain = parse_identities("[[device]]\nid = \"hau-02\"\nkind = \"water\"\n").unwrap().devices;
    assert_eq!(plain.key("hau-02"), None);
    for bad in [&key[..62], "zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", "+1"] {
        let text = format!("[[device]]\nid = \"hau-01\"\nkind = \"water\"\nkey = \"{bad}\"\n");
        let e = format!("{:#}", parse_identities(&text).unwrap_err());
        assert!(e.contains("hau-01") && e.contains("64 hex digits") && !e.contains(bad), "{e}");
    }
}

#[test]
fn mqtt_identities_are_read_from_devices_gateways_and_apps() {
    let digest = "ab".repeat(32);
    let text = format!(
        "[[device]]\nid = \"hau-01\"\nkind = \"water\"\npassword_sha256 = \"{digest}\"\n\n\
         [[device]]\nid = \"hau-02\"\nkind = \"water\"\n\n\
         [[gateway]]\nname = \"gw-1\"\npassword_sha256 = \"{digest}\"\ndevices = [\"hau-02\"]\n\n\
         [[app]]\nname = \"board\"\npassword_sha256 = \"{digest}\"\nsubscribe = [\"mekong/v1/+/up\"]\n"
    );
    let identities = parse_identities(&text).unwrap();
    let roles: Vec<(&str, &str)> = identities.mqtt.iter().map(|i| (i.name.as_str(), i.role.as_str())).collect();
    assert_eq!(roles, [("hau-01", "device"), ("gw-1", "gateway"), ("board", "app")]);
    assert_eq!(identities.mqtt[0].password, mekong_ingest::access::PasswordDigest([0xab; 32]));
    assert_eq!(identities.devices.len(), 2);

    let refused = |text: String| format!("{:#}", parse_identities(&text).unwrap_err());
    let e = refused(format!("[[app]]\nname = \"hau-01\"\npassword_sha256 = \"{digest}\"\nsubscribe = [\"#\"]\n\n[[gateway]]\nname = \"hau-01\"\npassword_sha256 = \"{digest}\"\ndevices = []\n"));
    assert!(e.contains("appears twice"), "{e}");
    let e = refused(format!("[[app]]\nname = \"board\"\npassword_sha256 = \"{digest}\"\nsubscribe = [\"a/#/b\"]\n"));
    assert!(e.contains("not a valid topic filter"), "{e}");
    let e = refused("[[gateway]]\nname = \"gw\"\npassword_sha256 = \"secret\"\ndevices = []\n".into());
    assert!(e.contains("gw") && e.contains("64 hex digits") && !e.contains("secret"), "{e}");
}

#[test]
fn devices_have_names_places_and_tags_and_bad_places_are_refused() {
    let text = "[[device]]\nid = \"hau-01\"\nkind = \"water\"\nname = \"Ninh Kieu wharf, Hau river\"\n\
                location = { lat = 10.034, lon = 105.788, elevation = 2.5 }\n\
                tags = { district = \"Ninh Kieu\", flood-alarm = \"\" }\n\n\
                [[device]]\nid = \"bridge-3\"\nkind = \"traffic\"\n";
    let identities = parse_identities(text).unwrap();
    let p = &identities.profiles["hau-01"];
    assert_eq!(p.name.as_deref(), Some("Ninh Kieu wharf, Hau river"));
    let l = p.location.unwrap();
    assert_eq!((l.lat(), l.lon(), l.elevation()), (10.034, 105.788, Some(2.5)));
    assert_eq!(p.tags["district"], "Ninh Kieu");
    assert_eq!(identities.profiles["bridge-3"].location, None);
    assert_eq!(identities.devices.len(), 2);

    let refused = |entry: &str| {
        format!(
            "{:#}",
            parse_identities(&format!("[[device]]\nid = \"hau-01\"\nkind = \"water\"\n{entry}\n")).unwrap_err()
        )
    };
    assert!(refused("location = { lat = 91.0, lon = 105.0 }").contains("lat must be from -90 to 90"));
    assert!(refused("location = { lat = 10.0, lon = 181.0 }").contains("lon must be"));
    assert!(refused("location = { lat = 10.0 }").contains("lon"));
    assert!(refused("location = { lat = 10.0, lon = 105.0, alt = 3.0 }").contains("alt"));
    assert!(refused("tags = { \"\" = \"x\" }").contains("tags"));
    assert!(refused("tags = [\"a\"]").contains("tags"));
    assert!(refused("name = \"\"").contains("name"));
}

#[test]
fn the_shipped_registry_places_its_stations() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/devices.toml")).unwrap();
    let identities = parse_identities(&text).unwrap();
    let wharf = &identities.profiles["hau-ninh-kieu-01"];
    assert!(wharf.name.is_some() && wharf.location.is_some(), "{wharf:?}");
}

#[test]
fn dashboard_settings_are_read_and_checked() {
    let config = load_str("[dashboard]\ntile_url = \"https://tiles.cantho.example/{z}/{x}/{y}.png\"\n", &[]).unwrap();
    assert!(config.dashboard.enabled);
    assert_eq!(config.dashboard.tile_url, "https://tiles.cantho.example/{z}/{x}/{y}.png");
    let off = load_str("", &[("MEKONG__DASHBOARD__ENABLED", "false")]).unwrap();
    assert!(!off.dashboard.enabled);
    let e = error_of("[dashboard]\ntile_url = \"tiles.cantho.example/{z}/{x}/{y}.png\"\n", &[]);
    assert!(e.contains("[dashboard]") && e.contains("tile_url"), "{e}");
}
