//! The Debian package (`packaging/deb/build`), built from the `mekong` binary this test run
//! built: what it holds (paths, owners, modes, conffiles, control fields, checksums), its
//! systemd unit (the sandbox, checked line by line and by `systemd-analyze`) and its system
//! user (`systemd-sysusers` into a throwaway root); then the package extracted into a
//! throwaway root and started the way its unit starts it, with the packaged configuration
//! and systemd's directory variables: it answers, stores a pack under the state directory
//! and nowhere else, and stops cleanly on SIGTERM within the unit's stop timeout. Last, as
//! root, the package installed for real by dpkg, maintainer scripts and all, in a throwaway
//! root (an overlay on this machine's root, `package_install.sh`): the user and the owners
//! postinst makes, the service run as that user, and what a purge leaves.
//!
//! Needs dpkg-deb, dpkg-shlibdeps (dpkg-dev), systemd-analyze and systemd-sysusers
//! (systemd). Without them the tests print SKIPPED, unless `MEKONG_REQUIRE_DEB` is set (CI
//! sets it), which turns a missing tool into a failure; so does the install without root,
//! unless `MEKONG_REQUIRE_ROOT` is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mekong_tests::{free_ports, get_url, now_secs, pack, Downlink, Sensor};

/// Set to make a missing packaging tool a failure instead of a skip.
const REQUIRE: &str = "MEKONG_REQUIRE_DEB";

/// Whether the tools are here; if not, says so (or fails, with [`REQUIRE`] set).
fn tools_present() -> bool {
    let missing: Vec<&str> = ["dpkg-deb", "dpkg-shlibdeps", "systemd-analyze", "systemd-sysusers"]
        .into_iter()
        .filter(|tool| Command::new(tool).arg("--version").output().is_err())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(std::env::var_os(REQUIRE).is_none(), "{} missing (apt-get install dpkg-dev systemd)", missing.join(", "));
    eprintln!("SKIPPED: {} missing (apt-get install dpkg-dev systemd)", missing.join(", "));
    false
}

/// Runs `command` and returns its output, failing the test with its error output unless it
/// succeeds.
fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(command: &mut Command) -> String {
    String::from_utf8(run(command).stdout).unwrap()
}

/// Builds the package into `out` from the debug binary (uncompressed: the debug binary is
/// large and xz would cost the test a minute); its path.
fn build_package(out: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/deb/build");
    let printed = stdout(
        Command::new(script)
            .args(["--binary", env!("CARGO_BIN_EXE_mekong"), "--compression", "none", "--out"])
            .arg(out),
    );
    let deb = PathBuf::from(printed.trim());
    assert!(deb.is_file(), "the build printed {printed:?}, which is no file");
    deb
}

/// The package's files and directories: path (`./usr/bin/mekong`) to (mode, owner).
fn contents(deb: &Path) -> BTreeMap<String, (String, String)> {
    stdout(Command::new("dpkg-deb").arg("--contents").arg(deb))
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields.len(), 6, "unexpected line of dpkg-deb --contents: {line:?}");
            (fields[5].trim_end_matches('/').to_owned(), (fields[0].to_owned(), fields[1].to_owned()))
        })
        .collect()
}

/// `key: value` fields of the control file (a continued field keeps its first line).
fn control_fields(deb: &Path) -> BTreeMap<String, String> {
    stdout(Command::new("dpkg-deb").arg("--field").arg(deb))
        .lines()
        .filter(|line| !line.starts_with(' '))
        .filter_map(|line| line.split_once(": ").map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

/// A unit file as `Section.Key` to every value it is given, in order.
fn unit_settings(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else {
            let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not key=value: {line:?}"));
            settings.entry(format!("{section}.{}", key.trim())).or_default().push(value.trim().to_owned());
        }
    }
    settings
}

/// The one value of `key` in a unit.
fn setting<'a>(settings: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    match settings.get(key).map(Vec::as_slice) {
        Some([value]) => value,
        other => panic!("the unit sets {key} {other:?}, not once"),
    }
}

fn extract(deb: &Path, root: &Path) {
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root));
}

const UNIT: &str = "usr/lib/systemd/system/mekong.service";

#[test]
fn the_package_holds_the_binary_its_configuration_and_a_sandboxed_service() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let deb = build_package(dir.path());

    // What it installs, with owners and modes: the registry, which will hold keys, is
    // readable by its owner only.
    let contents = contents(&deb);
    let files: BTreeMap<&str, &str> = contents
        .iter()
        .filter(|(_, (mode, _))| !mode.starts_with('d'))
        .map(|(path, (mode, _))| (path.as_str(), mode.as_str()))
        .collect();
    let expected = BTreeMap::from([
        ("./usr/bin/mekong", "-rwxr-xr-x"),
        ("./usr/lib/systemd/system/mekong.service", "-rw-r--r--"),
        ("./usr/lib/sysusers.d/mekong.conf", "-rw-r--r--"),
        ("./etc/mekong/mekong.toml", "-rw-r--r--"),
        ("./etc/mekong/devices.toml", "-rw-------"),
        ("./usr/share/doc/mekong/copyright", "-rw-r--r--"),
        ("./usr/share/doc/mekong/examples/mekong.toml", "-rw-r--r--"),
        ("./usr/share/doc/mekong/examples/devices.toml", "-rw-r--r--"),
    ]);
    assert_eq!(files, expected);
    for (path, (mode, owner)) in &contents {
        assert_eq!(owner, "root/root", "{path}");
        if mode.starts_with('d') {
            assert_eq!(mode, "drwxr-xr-x", "{path}");
        }
    }

    let fields = control_fields(&deb);
    assert_eq!(fields["Package"], "mekong");
    assert_eq!(fields["Version"], env!("CARGO_PKG_VERSION"));
    let arch = stdout(Command::new("dpkg").arg("--print-architecture"));
    assert_eq!(fields["Architecture"], arch.trim());
    let depends = &fields["Depends"];
    assert!(depends.contains("libc6 (>= ") && depends.contains("systemd"), "Depends: {depends}");
    assert!(fields["Installed-Size"].parse::<u64>().unwrap() > 1024, "{fields:?}");

    // Upgrades keep an administrator's edits of both files.
    let conffiles = stdout(Command::new("dpkg-deb").arg("--info").arg(&deb).arg("conffiles"));
    let conffiles: BTreeSet<&str> = conffiles.lines().collect();
    assert_eq!(conffiles, BTreeSet::from(["/etc/mekong/mekong.toml", "/etc/mekong/devices.toml"]));

    // postinst creates the user from the sysusers.d file, and hands the registry to it.
    let postinst = stdout(Command::new("dpkg-deb").arg("--info").arg(&deb).arg("postinst"));
    assert!(postinst.contains("systemd-sysusers mekong.conf"), "{postinst}");
    assert!(postinst.contains("own mekong mekong 0600 /etc/mekong/devices.toml"), "{postinst}");
    for script in ["postinst", "prerm", "postrm"] {
        let text = stdout(Command::new("dpkg-deb").arg("--info").arg(&deb).arg(script));
        let path = dir.path().join(script);
        std::fs::write(&path, text).unwrap();
        run(Command::new("sh").arg("-n").arg(&path));
    }

    let root = dir.path().join("root");
    extract(&deb, &root);
    // The checksums dpkg will keep (debsums, dpkg --verify) are those of the files.
    let control = dir.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    run(Command::new("md5sum").args(["--check", "--quiet"]).arg(control.join("md5sums")).current_dir(&root));

    // The unit: its own user, systemd's directories, the sandbox, the stop.
    let unit_text = std::fs::read_to_string(root.join(UNIT)).unwrap();
    let unit = unit_settings(&unit_text);
    for (key, value) in [
        ("Service.ExecStart", "/usr/bin/mekong serve"),
        ("Service.User", "mekong"),
        ("Service.Group", "mekong"),
        ("Service.StateDirectory", "mekong"),
        ("Service.ConfigurationDirectory", "mekong"),
        ("Service.ProtectSystem", "strict"),
        ("Service.ProtectHome", "yes"),
        ("Service.PrivateTmp", "yes"),
        ("Service.PrivateDevices", "yes"),
        ("Service.NoNewPrivileges", "yes"),
        ("Service.RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("Service.CapabilityBoundingSet", ""),
        ("Service.SystemCallFilter", "@system-service"),
        ("Service.Restart", "on-failure"),
        ("Service.KillSignal", "SIGTERM"),
        ("Install.WantedBy", "multi-user.target"),
    ] {
        assert_eq!(setting(&unit, key), value, "{key}");
    }
    let stop_secs: u64 = setting(&unit, "Service.TimeoutStopSec").parse().unwrap();
    assert!(stop_secs >= 60, "TimeoutStopSec={stop_secs} leaves little time for the last flush");
    let nofile: usize = setting(&unit, "Service.LimitNOFILE").parse().unwrap();
    let connections = mekong::Config::default().broker.max_connections;
    assert!(nofile > connections + 1000, "LimitNOFILE={nofile} for {connections} MQTT connections");

    // systemd's own reading of the unit: no unknown key, no bad value. It checks that
    // ExecStart names an executable, so the copy it reads names the extracted binary.
    let verify_dir = dir.path().join("verify");
    std::fs::create_dir(&verify_dir).unwrap();
    let rebased =
        unit_text.replace("ExecStart=/usr/bin/mekong", &format!("ExecStart={}", root.join("usr/bin/mekong").display()));
    std::fs::write(verify_dir.join("mekong.service"), rebased).unwrap();
    let verified = run(Command::new("systemd-analyze").arg("verify").arg(verify_dir.join("mekong.service")));
    let complaints = String::from_utf8_lossy(&verified.stderr);
    assert!(complaints.trim().is_empty(), "systemd-analyze verify: {complaints}");
    // Its rating of the sandbox (0 to 10, lower is safer; 2.0 and below is "OK").
    run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(verify_dir.join("mekong.service")));

    // The user, as postinst (and systemd at boot) creates it: a system account whose home is
    // the state directory, with no login shell.
    run(Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.display()))
        .arg(root.join("usr/lib/sysusers.d/mekong.conf")));
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let entry: Vec<&str> =
        passwd.lines().find(|l| l.starts_with("mekong:")).expect("no mekong user").split(':').collect();
    let uid: u32 = entry[2].parse().unwrap();
    assert!(uid < 1000, "uid {uid} is not a system account's");
    assert_eq!((entry[5], entry[6]), ("/var/lib/mekong", "/usr/sbin/nologin"));
}

/// The extracted binary running as the unit would run it; SIGKILLed if the test ends first.
struct Service {
    child: Option<Child>,
    pid: u32,
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Service {
    /// Sends SIGTERM and waits for the exit, at most `within`; the exit status and the time
    /// it took.
    fn terminate(&mut self, within: Duration) -> (std::process::ExitStatus, Duration) {
        let mut child = self.child.take().expect("already stopped");
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let start = Instant::now();
        run(Command::new("kill").args(["-TERM", &self.pid.to_string()]));
        match rx.recv_timeout(within) {
            Ok(status) => {
                let _ = waiter.join();
                (status.unwrap(), start.elapsed())
            }
            Err(_) => {
                // The waiter still holds the child unreaped, so the pid is still its own.
                let _ = Command::new("kill").args(["-KILL", &self.pid.to_string()]).status();
                let _ = waiter.join();
                panic!("mekong did not stop within {within:?} of SIGTERM");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_packaged_binary_serves_with_the_packaged_configuration_and_stops_on_sigterm() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let deb = build_package(dir.path());
    let root = dir.path().join("root");
    extract(&deb, &root);
    let unit = unit_settings(&std::fs::read_to_string(root.join(UNIT)).unwrap());

    // What systemd does before ExecStart: the state directory (the configuration directory
    // is the package's), then the command line of the unit, its binary under the root.
    let state = root.join("var/lib/mekong");
    std::fs::create_dir_all(&state).unwrap();
    let configuration = root.join("etc/mekong");
    let exec_start = setting(&unit, "Service.ExecStart");
    let mut words = exec_start.split_whitespace();
    let binary = words.next().unwrap();
    let args: Vec<&str> = words.collect();
    // The working directory, empty: nothing may land there (a service's is /).
    let cwd = dir.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let log_path = dir.path().join("mekong.log");
    let log = std::fs::File::create(&log_path).unwrap();

    // The package's configuration as it is; only the ports are the test's, so that it can
    // run beside anything else. The environment is systemd's, not the test's.
    let [mqtt, mqtt5, http] = free_ports();
    let child = Command::new(root.join(binary.trim_start_matches('/')))
        .args(&args)
        .current_dir(&cwd)
        .env_clear()
        .env("STATE_DIRECTORY", &state)
        .env("CONFIGURATION_DIRECTORY", &configuration)
        .env("MEKONG__BROKER__LISTEN", format!("127.0.0.1:{mqtt}"))
        .env("MEKONG__BROKER__LISTEN_V5", format!("127.0.0.1:{mqtt5}"))
        .env("MEKONG__API__LISTEN", format!("127.0.0.1:{http}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut service = Service { child: Some(child), pid };
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let http_client = reqwest::Client::new();
    common::wait_healthy(&http_client, http).await;
    let (status, body) = get_url(&http_client, &format!("http://127.0.0.1:{http}/healthz")).await;
    assert_eq!(status, 200, "{body}\n{}", log_text());

    // A pack goes in and is acknowledged: it is on disk, in the state directory.
    let mut sensor = Sensor::device(([127, 0, 0, 1], mqtt).into(), "hau-01").await;
    let t = now_secs();
    sensor.publish("mekong/v1/hau-01/up", pack(t, &[("water_level", "cm", 182.5, 0.0)])).await;
    let ack = sensor.downlink().await;
    assert!(matches!(ack, Downlink::Ack { readings: 1, .. }), "{ack:?}");
    sensor.disconnect().await;

    let stop_within = Duration::from_secs(setting(&unit, "Service.TimeoutStopSec").parse().unwrap());
    let (status, took) = service.terminate(stop_within);
    let log = log_text();
    assert!(status.success(), "mekong exited with {status} on SIGTERM:\n{log}");
    assert!(log.contains("mekong stopped"), "no orderly stop in the log:\n{log}");
    eprintln!("stopped {took:?} after SIGTERM (the unit allows {stop_within:?})");

    // sled's files are in $STATE_DIRECTORY/data, and nothing is in the working directory.
    let data = state.join("data");
    assert!(data.join("db").is_file() && data.join("conf").is_file(), "no store in {}", data.display());
    let stray: Vec<_> = std::fs::read_dir(&cwd).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(stray.is_empty(), "written to the working directory: {stray:?}");
}

/// Whether this runs as root; if not, says so (or fails, with `MEKONG_REQUIRE_ROOT` set, as
/// for the other tests that need root).
fn is_root() -> bool {
    let uid = stdout(Command::new("id").arg("-u"));
    if uid.trim() == "0" {
        return true;
    }
    assert!(std::env::var_os(mekong_tests::REQUIRE_ROOT).is_none(), "installing the package needs root");
    eprintln!("SKIPPED: installing the package in a throwaway root needs root, as CI has");
    false
}

/// The throwaway root's script; SIGKILLed, with everything it started, if the test ends first.
struct Install(Child);

impl Drop for Install {
    fn drop(&mut self) {
        // unshare --kill-child takes the namespace's processes with it.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_package_installs_serves_as_its_own_user_and_purges_in_a_throwaway_root() {
    if !tools_present() || !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let deb = build_package(dir.path());
    let [mqtt, http] = free_ports();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/package_install.sh");
    // dpkg's and the service's output, shown when a check fails.
    let log_path = dir.path().join("install.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut install = Install(
        Command::new("unshare")
            .args(["--pid", "--mount-proc", "--propagation", "private", "--kill-child", "bash"])
            .arg(script)
            .arg(&deb)
            .args([mqtt.to_string(), http.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    // The script's `key: value` lines, as they come.
    let (tx, lines) = mpsc::channel();
    let out = install.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(out)) {
            let Ok(line) = line else { break };
            if let Some((key, value)) = line.split_once(": ") {
                let _ = tx.send((key.to_owned(), value.to_owned()));
            }
        }
    });
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut read_until = |last: &str| loop {
        let (key, value) = lines
            .recv_timeout(INSTALL_TIMEOUT)
            .unwrap_or_else(|_| panic!("no {last:?} from the script; so far {seen:?}\n{}", log()));
        seen.push((key.clone(), value));
        if key == last {
            return seen.clone();
        }
    };

    // dpkg ran postinst: the user, the owners of /etc/mekong, the unit enabled.
    let installed = read_until("started");
    let values =
        |key: &str| -> Vec<&str> { installed.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect() };
    let user: Vec<&str> = values("user")[0].split(':').collect();
    assert_eq!((user[0], user[5], user[6]), ("mekong", "/var/lib/mekong", "/usr/sbin/nologin"), "{user:?}");
    assert_eq!(
        values("owner"),
        [
            "mekong:mekong 750 /etc/mekong",
            "mekong:mekong 600 /etc/mekong/devices.toml",
            "root:root 644 /etc/mekong/mekong.toml"
        ]
    );
    assert!(values("enabled")[0].ends_with("/systemd/system/mekong.service"), "{installed:?}");

    // The service, as its own user, reads its configuration and registry and takes a pack.
    let http_client = reqwest::Client::new();
    common::wait_healthy(&http_client, http).await;
    let mut sensor = Sensor::device(([127, 0, 0, 1], mqtt).into(), "hau-01").await;
    sensor.publish("mekong/v1/hau-01/up", pack(now_secs(), &[("water_level", "cm", 182.5, 0.0)])).await;
    let ack = sensor.downlink().await;
    assert!(matches!(ack, Downlink::Ack { readings: 1, .. }), "{ack:?}");
    sensor.disconnect().await;

    // SIGTERM, then dpkg --purge: the configuration goes, the data stays.
    let stdin = install.0.stdin.as_mut().unwrap();
    std::io::Write::write_all(stdin, b"stop\n").unwrap();
    let after = read_until("done");
    let value = |key: &str| after.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap();
    assert_eq!(value("exit"), "0", "{after:?}\n{}", log());
    assert!(value("data").starts_with("mekong:mekong "), "{after:?}");
    assert!(["gone", "not-installed"].contains(&value("purged")), "{after:?}");
    assert_eq!(value("config left"), "none");
    assert_eq!(value("data left"), "data");
    assert_eq!(value("overrides left"), "none");
    let status = install.0.wait().unwrap();
    assert!(status.success(), "the install script failed: {status}\n{}", log());
}

/// How long the throwaway root's script may take for a step (dpkg, or the service's stop).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(120);
