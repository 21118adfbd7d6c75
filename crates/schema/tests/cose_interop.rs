//! Live cross-check of the COSE_Mac0 envelope with pycose (`cose_interop.py`, next to this
//! file): pycose verifies what we seal now and we open what pycose seals now, beyond the
//! committed vectors that the unit tests check without Python.
//!
//! Without a usable pycose this check cannot run. libtest has no way to report a test as
//! skipped once it has started, and a test that returns early is counted as passed, so this
//! file is its own harness (`harness = false`): it prints `SKIPPED` and why, and counts
//! nothing as passed. With `MEKONG_REQUIRE_PYCOSE=1` (CI sets it) a missing pycose fails
//! instead. `MEKONG_PYTHON` names the interpreter (default `python3`). Of libtest's
//! arguments it honours `--list`, name filters, `--exact`, `--skip` and `--ignored`.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, ExitCode, Output};

use mekong_schema::cose::{self, KEY_LEN, MAX_OVERHEAD};
use mekong_schema::{encode_pack, Base, Reading};

fn script(args: &[&str]) -> std::io::Result<Output> {
    let python = std::env::var("MEKONG_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cose_interop.py");
    Command::new(python).arg(script).args(args).output()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "cose_interop.py failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

/// Why pycose cannot run here, if it cannot.
fn pycose_missing() -> Option<String> {
    match script(&["probe"]) {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        Err(e) => Some(format!("cannot run python: {e}")),
    }
}

const NAME: &str = "pycose_and_mekong_read_each_other";

/// Whether libtest's arguments select this check: name filters (a part of the name, or the
/// name with `--exact`), `--skip`, and `--ignored` (which runs only ignored tests, and this
/// one is not), so that `cargo test some_other_test` does not start Python.
fn selected(args: &[String]) -> bool {
    let exact = args.iter().any(|a| a == "--exact");
    let matches = |f: &str| if exact { f == NAME } else { NAME.contains(f) };
    let (mut filters, mut skips) = (Vec::new(), Vec::new());
    let mut args = args.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--ignored" => return false,
            "--skip" => skips.extend(args.next()),
            // libtest's other options that take a value: the value is not a filter.
            "--test-threads" | "--format" | "--color" | "--logfile" | "--shuffle-seed" | "-Z" => {
                args.next();
            }
            a if a.starts_with('-') => {}
            f => filters.push(f),
        }
    }
    (filters.is_empty() || filters.iter().any(|f| matches(f))) && !skips.iter().any(|s| NAME.contains(s.as_str()))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        if selected(&args) {
            println!("{NAME}: test");
        }
        return ExitCode::SUCCESS;
    }
    if !selected(&args) {
        return ExitCode::SUCCESS;
    }
    if let Some(why) = pycose_missing() {
        if std::env::var("MEKONG_REQUIRE_PYCOSE").is_ok_and(|v| v == "1") {
            eprintln!("cose_interop: FAILED: MEKONG_REQUIRE_PYCOSE=1 but pycose is not usable: {why}");
            return ExitCode::FAILURE;
        }
        eprintln!(
            "cose_interop: SKIPPED {NAME}: pycose is not usable ({why}); the committed vectors are \
             still checked by the unit tests; `pip install pycose 'cbor2<6'` runs it, \
             MEKONG_REQUIRE_PYCOSE=1 makes this a failure"
        );
        return ExitCode::SUCCESS;
    }
    // A failed assertion panics, and the process exits with 101: cargo reports a failure.
    pycose_and_mekong_read_each_other();
    println!("cose_interop: {NAME} ... ok");
    ExitCode::SUCCESS
}

fn pycose_and_mekong_read_each_other() {
    // The committed vectors still hold for pycose.
    let checked = stdout(&script(&[]).unwrap());
    assert!(checked.starts_with("ok"), "{checked}");

    // pycose verifies an envelope we seal now, with values unlike the fixtures'.
    let readings = [Reading { name: "pm2_5", unit: Some("ug/m3"), value: 17.25, time: 0.0 }];
    let mut pack = [0u8; 64];
    let n = encode_pack(&mut pack, &Base { time: Some(1_790_000_000.5), ..Base::default() }, &readings).unwrap();
    let pack = &pack[..n];
    let key: [u8; KEY_LEN] = core::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
    let mut sealed = vec![0u8; pack.len() + MAX_OVERHEAD];
    let n = cose::seal(&mut sealed, &key, 300_000, "ninh-kieu-park-air", pack).unwrap();
    let verified = stdout(&script(&["verify", &hex(&sealed[..n]), &hex(&key)]).unwrap());
    assert_eq!(verified, format!("kid={} seq=300000 payload={}", hex(b"ninh-kieu-park-air"), hex(pack)));
    let mut wrong_key = key;
    wrong_key[0] ^= 1;
    let refused = script(&["verify", &hex(&sealed[..n]), &hex(&wrong_key)]).unwrap();
    assert!(!refused.status.success(), "pycose accepted a wrong key");

    // We open an envelope pycose seals now.
    let made = stdout(&script(&["make", &hex(&key), "cai-rang-07", "65536", &hex(pack)]).unwrap());
    let made = unhex(&made);
    let opened = cose::open(&made, &key).unwrap();
    assert_eq!((opened.kid, opened.seq, opened.payload), (&b"cai-rang-07"[..], 65_536, pack));
    assert_eq!(cose::open(&made, &wrong_key), Err(cose::CoseError::BadTag));
}
