//! The README's examples, run as a reader pastes them, against a live `mekong serve`, so that
//! the README cannot drift from what mekong does (as documentation tests keep a crate's docs
//! honest).
//!
//! The rule for README.md's fenced blocks:
//! - ```` ```sh ```` blocks are run, in the README's order, each by `bash -euo pipefail` in
//!   one scratch directory that links the workspace root's files and directories (so an
//!   example reads the repository's files as from a checkout, and what it writes, such as
//!   the keys of the TLS section's CA, is thrown away), against one server started as the
//!   quick start starts it (the workspace root as working directory, so
//!   `config/mekong.toml` and `config/devices.toml` apply; only the data directory and the
//!   ports are the test's). Each must exit 0 within [`BLOCK_TIMEOUT`].
//! - ```` ```sh no-run ```` blocks are not run: those that start the server or the test suite,
//!   build a release, need root, a service manager or a TLS server, or take minutes.
//! - Any other shell-like fence (`bash`, `shell`, `console`, a misspelt `sh` marker), or an
//!   unmarked block of commands, fails the test: a new example is run unless it says why not.
//! - ```` ```toml ```` blocks are configuration: each must load as mekong's configuration
//!   (`Config::load`: every key known, every value valid; files it names are not opened).
//! - Every `mekong` command line the README names, in a `sh` block of either kind or in
//!   inline code in the prose, must name subcommands and `--options` that exist (its
//!   `--help` lists them): what cannot be run is at least checked against the binary.
//!
//! What the test puts around a block, and nothing else (the [`PRELUDE`], shell functions):
//! `cargo run --release -p mekong -- ARGS` runs this test's `mekong` binary (any other
//! `cargo` fails the block); in the arguments of `cargo`, `curl` and
//! `mosquitto_pub`/`mosquitto_sub`, the README's ports (`:8080`, `:1883`, or alone) become
//! the test server's; `simulate` without `--broker`, and Mosquitto's clients, which the
//! README lets go to port 1883 by default, get the test broker's port.
//!
//! The checks beyond the exit status: every `curl` answer is JSON (but `/metrics`, which is
//! Prometheus text) and holds no empty list (but `reasons` of `/healthz`, empty when all is
//! well): the server has data for every example, so an empty list means an example that
//! asks for the wrong thing (a fixed date, a device that does not exist). Before the
//! blocks, the server gets one refused pack, so that the rejection log has something to
//! show. A block that publishes on `mekong/v1/{id}/up` must leave that pack stored: the
//! device's `packs` grow and its `rejected` do not. The publish example must carry the
//! golden pack (`crates/schema/fixtures/water-pack.hex`) whole. The certificate and key the
//! TLS section's CA recipe makes, if it ran, must pass `mekong check-config` under `[tls]`.
//!
//! A block that uses a tool of [`TOOLS`] that is missing here (Mosquitto's clients, `xxd`,
//! `openssl`) is skipped, and said, unless `MEKONG_REQUIRE_MOSQUITTO=1`: CI sets it and
//! installs them all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mekong_tests::{free_ports, get_url, Downlink, Sensor, TIMEOUT};
use serde_json::Value;

/// The longest a run block may take: the quick start's simulator sends an hour of backlog
/// for 12 stations, a few seconds on a debug build.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(180);

/// The tools beyond bash, coreutils and curl that run blocks may use, and their Debian
/// packages.
const TOOLS: [(&str, &str); 4] = [
    ("mosquitto_pub", "mosquitto-clients"),
    ("mosquitto_sub", "mosquitto-clients"),
    ("xxd", "xxd"),
    ("openssl", "openssl"),
];

/// Bash put before every run block; `README_*` are set by the test.
const PRELUDE: &str = r#"
readme_args() {
    README_ARGS=()
    local arg
    for arg in "$@"; do
        case $arg in
            1883) arg=$README_MQTT ;;
            8080) arg=$README_HTTP ;;
        esac
        arg=${arg//:1883/:$README_MQTT}
        README_ARGS+=("${arg//:8080/:$README_HTTP}")
    done
}
cargo() {
    if [[ "$*" != "run --release -p mekong -- "* ]]; then
        echo "readme test: a run block may call cargo only as 'cargo run --release -p mekong -- ...'; mark the block 'sh no-run' otherwise" >&2
        return 127
    fi
    shift 5
    if [[ "${1-}" == simulate && " $* " != *" --broker "* ]]; then
        set -- "$@" --broker localhost:1883
    fi
    readme_args "$@"
    "$README_MEKONG" "${README_ARGS[@]}"
}
curl() {
    local out
    out=$(mktemp "$README_OUT/curl-XXXXXX")
    readme_args "$@"
    printf '%s\n' "${README_ARGS[@]}" > "$out.args"
    command curl --fail-with-body --show-error "${README_ARGS[@]}" > "$out" || { cat "$out" >&2; return 22; }
    cat "$out"
}
mosquitto_pub() { readme_args "$@"; command mosquitto_pub -p "$README_MQTT" "${README_ARGS[@]}"; }
mosquitto_sub() { readme_args "$@"; command mosquitto_sub -p "$README_MQTT" "${README_ARGS[@]}"; }
"#;

/// What the test does with a fenced block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Run,
    NoRun,
    Toml,
    Other,
}

/// A fenced block: the line of its opening fence (1-based), its info string and its text
/// (without the fence's indentation).
#[derive(Debug)]
struct Block {
    line: usize,
    info: String,
    text: String,
}

/// The fenced blocks of a Markdown text, indented ones (in list items) included.
fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<(Block, usize)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        match open.take() {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    let indent = line.len() - trimmed.len();
                    open = Some((Block { line: i + 1, info: info.trim().to_owned(), text: String::new() }, indent));
                }
            }
            Some((block, _)) if trimmed.trim_end() == "```" => out.push(block),
            Some((mut block, indent)) => {
                let cut = line.len() - trimmed.len();
                block.text.push_str(&line[cut.min(indent)..]);
                block.text.push('\n');
                open = Some((block, indent));
            }
        }
    }
    assert!(open.is_none(), "a fenced block is not closed");
    out
}

/// How a block is to be treated, or why its marking is not allowed.
fn classify(block: &Block) -> Result<Kind, String> {
    const SHELLS: [&str; 6] = ["sh", "bash", "shell", "zsh", "console", "shell-session"];
    const COMMANDS: [&str; 7] = ["cargo ", "curl ", "mekong ", "mosquitto_", "sudo ", "apt ", "apt-get "];
    match block.info.as_str() {
        "sh" => return Ok(Kind::Run),
        "sh no-run" => return Ok(Kind::NoRun),
        "toml" => return Ok(Kind::Toml),
        _ => {}
    }
    let language = block.info.split_whitespace().next().unwrap_or("");
    if SHELLS.contains(&language) {
        return Err(format!("```{} is neither ```sh (run by this test) nor ```sh no-run", block.info));
    }
    if let Some(command) = block.text.lines().find(|l| COMMANDS.iter().any(|c| l.trim_start().starts_with(c))) {
        return Err(format!("looks like a shell command ({command:?}): mark the block ```sh or ```sh no-run"));
    }
    Ok(Kind::Other)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn readme() -> Vec<Block> {
    blocks(&std::fs::read_to_string(workspace().join("README.md")).unwrap())
}

/// Whether `tool` can be run here.
fn installed(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).stdout(Stdio::null()).status().unwrap().success()
}

#[test]
fn the_rule_finds_unmarked_commands_and_misspelt_markers() {
    let doc = "text\n```sh\ncurl -s x\n```\n```sh no-run\ncargo bench\n```\n  ```toml\n  [api]\n  ```\n\
               ```\n83a4\n```\n```bash\nls\n```\n```sh norun\nls\n```\n```\n$ x\ncurl -s y\n```\n";
    let found: Vec<_> = blocks(doc).iter().map(|b| (b.line, classify(b).map_err(|_| ()))).collect();
    assert_eq!(
        found,
        [
            (2, Ok(Kind::Run)),
            (5, Ok(Kind::NoRun)),
            (8, Ok(Kind::Toml)),
            (11, Ok(Kind::Other)),
            (14, Err(())),
            (17, Err(())),
            (20, Err(())),
        ]
    );
    assert_eq!(blocks(doc)[2].text, "[api]\n", "the fence's indentation is not part of the text");
}

#[test]
fn every_shell_block_of_the_readme_is_run_or_says_why_not() {
    let blocks = readme();
    let wrong: Vec<String> =
        blocks.iter().filter_map(|b| classify(b).err().map(|e| format!("README.md:{}: {e}", b.line))).collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let run = blocks.iter().filter(|b| classify(b) == Ok(Kind::Run)).count();
    assert!(run >= 3, "only {run} runnable blocks: the quick start, the publish example and the API's examples run");
}

#[test]
fn the_readmes_configuration_blocks_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for block in readme().iter().filter(|b| classify(b) == Ok(Kind::Toml)) {
        let path = dir.path().join(format!("line-{}.toml", block.line));
        std::fs::write(&path, &block.text).unwrap();
        if let Err(e) = mekong::Config::load(&path, true, []) {
            panic!("README.md:{}: not a valid configuration: {e:#}\n{}", block.line, block.text);
        }
        checked += 1;
    }
    assert!(checked >= 2, "the retention and TLS examples are toml blocks");
}

/// The README with its fenced blocks blanked out (line numbers kept).
fn prose(markdown: &str) -> String {
    let mut fenced = false;
    let mut out = String::new();
    for line in markdown.lines() {
        let fence = line.trim_start().starts_with("```");
        if !fenced && !fence {
            out.push_str(line);
        }
        if fence {
            fenced = !fenced;
        }
        out.push('\n');
    }
    out
}

/// The arguments of every `mekong` command line in `text` (one shell line, or an inline code
/// span): after `cargo run --release -p mekong --`, or after a word `mekong` that is not an
/// option's value (`sudo -u mekong`, `-p mekong`) and is followed by one of `commands` or,
/// if `loose`, by any word of their shape (so that a renamed or misspelt subcommand is
/// found too; the prose names old commands as history, so it is read strictly).
fn mekong_args(text: &str, commands: &[String], loose: bool) -> Vec<Vec<String>> {
    let words: Vec<String> =
        text.split_whitespace().map(|w| w.trim_matches(|c| c == '\'' || c == '"').to_owned()).collect();
    let mut found = Vec::new();
    for i in 0..words.len() {
        let after = if words[i..].starts_with(&["run", "--release", "-p", "mekong", "--"].map(String::from)) {
            i + 5
        } else if words[i] == "mekong"
            && !(i > 0 && words[i - 1].starts_with('-'))
            && words.get(i + 1).is_some_and(|w| commands.contains(w) || (loose && looks_like_a_command(w)))
        {
            i + 1
        } else {
            continue;
        };
        found.push(words[after..].iter().take_while(|w| !matches!(w.as_str(), "|" | "&&" | ";")).cloned().collect());
    }
    found
}

/// Whether a word has the shape of a subcommand.
fn looks_like_a_command(word: &str) -> bool {
    word != "mekong"
        && word.starts_with(|c: char| c.is_ascii_lowercase())
        && word.chars().all(|c| c.is_ascii_lowercase() || c == '-')
}

/// `mekong ARGS --help`.
fn help(args: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mekong")).args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "mekong {} --help: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands a help text lists.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Whether `mekong` takes `args`' subcommands and `--options`; why not otherwise.
fn check_command(args: &[String], helps: &mut std::collections::HashMap<Vec<String>, String>) -> Result<(), String> {
    let mut path: Vec<String> = Vec::new();
    for arg in args {
        let text = helps.entry(path.clone()).or_insert_with(|| help(&path));
        if arg.starts_with('-') || !subcommands(text).contains(arg) {
            break;
        }
        path.push(arg.clone());
    }
    if path.is_empty() {
        return Err(format!("{} is not a subcommand of mekong", args.first().map_or("nothing", |a| a.as_str())));
    }
    let text = helps.entry(path.clone()).or_insert_with(|| help(&path));
    for option in args.iter().filter(|a| a.starts_with("--")) {
        let name = option.split('=').next().unwrap_or(option);
        let listed = text.match_indices(name).any(|(at, _)| {
            !text[at + name.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
        if !listed {
            return Err(format!("`mekong {} --help` does not list {name}", path.join(" ")));
        }
    }
    Ok(())
}

#[test]
fn a_misnamed_subcommand_or_option_is_found() {
    let commands = subcommands(&help(&[]));
    let args = |text: &str| mekong_args(text, &commands, true);
    assert_eq!(
        args("sudo -u mekong mekong token create x --scope read | cat"),
        [["token", "create", "x", "--scope", "read"].map(String::from)]
    );
    assert!(args("cargo build --release -p mekong -p mekong-bench; journalctl -u mekong -f").is_empty());
    assert_eq!(args("sudo -u mekong env A=b mekong compact"), [["compact"]]);
    assert!(mekong_args("`mekong tokens list` was", &commands, false).is_empty(), "read strictly");
    let mut helps = Default::default();
    let check = |line: &str, helps: &mut _| check_command(&args(line)[0], helps);
    assert_eq!(check("cargo run --release -p mekong -- simulate --history 60 --duration=0", &mut helps), Ok(()));
    assert!(check("mekong identity gateway gw --devices hau-01", &mut helps).is_err(), "--devices is --device");
    assert!(check("mekong simulate --hist 60", &mut helps).is_err(), "a prefix is not an option");
    assert!(check("mekong tokens list", &mut helps).is_err(), "the subcommand is token");
}

#[test]
fn the_readmes_mekong_command_lines_name_real_subcommands_and_options() {
    let markdown = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let commands = subcommands(&help(&[]));
    // (line, text, loose)
    let mut lines: Vec<(usize, String, bool)> = Vec::new();
    for block in readme().iter().filter(|b| matches!(classify(b), Ok(Kind::Run | Kind::NoRun))) {
        // One shell line per entry: continuations joined (the line numbers after one are a
        // little off), comments cut.
        for (i, line) in block.text.replace("\\\n", " ").lines().enumerate() {
            let code = line.split(" #").next().unwrap_or(line);
            lines.push((block.line + 1 + i, code.to_owned(), true));
        }
    }
    let prose = prose(&markdown);
    // Inline code: every other piece between backticks (the README has no double ones).
    let mut at = 0;
    for (i, piece) in prose.split('`').enumerate() {
        if i % 2 == 1 {
            lines.push((prose[..at].matches('\n').count() + 1, piece.replace('\n', " "), false));
        }
        at += piece.len() + 1;
    }
    let mut helps = Default::default();
    let (mut checked, mut wrong) = (0, Vec::new());
    for (line, text, loose) in &lines {
        // `cargo run --release -p mekong --` alone is a mention, not a command line.
        for args in mekong_args(text, &commands, *loose).into_iter().filter(|a| !a.is_empty()) {
            checked += 1;
            if let Err(e) = check_command(&args, &mut helps) {
                wrong.push(format!("README.md:{line}: {text:?}: {e}"));
            }
        }
    }
    eprintln!("{checked} mekong command lines checked");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(checked >= 20, "only {checked} mekong command lines found in the README");
}

/// The paths of the empty lists in `value`, but `reasons` (what is wrong: empty when nothing
/// is).
fn empty_lists(value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Array(items) if items.is_empty() => out.push(path.to_owned()),
        Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| empty_lists(v, &format!("{path}[{i}]"), out)),
        Value::Object(map) => map
            .iter()
            .filter(|(k, _)| k.as_str() != "reasons")
            .for_each(|(k, v)| empty_lists(v, &format!("{path}.{k}"), out)),
        _ => {}
    }
}

/// Checks the answers of the `curl` calls recorded in `dir` that are not in `seen`; returns
/// how many it checked.
fn check_answers(dir: &Path, seen: &mut std::collections::BTreeSet<PathBuf>, block: &Block) -> usize {
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some() || !seen.insert(path.clone()) {
            continue;
        }
        let args = std::fs::read_to_string(path.with_extension("args")).unwrap().replace('\n', " ");
        let body = std::fs::read_to_string(&path).unwrap();
        let at = format!("README.md:{}: curl {args}", block.line);
        assert!(!body.trim().is_empty(), "{at}: empty answer");
        checked += 1;
        if args.contains("/metrics") {
            continue;
        }
        // A CSV answer: a header row, then rows of data.
        if args.contains("format=csv") || args.contains("text/csv") {
            let rows: Vec<&str> = body.lines().collect();
            assert!(rows.len() >= 2 && rows[0].contains("t_ms"), "{at}: not a CSV with data: {body}");
            continue;
        }
        let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{at}: not JSON ({e}): {body}"));
        let mut empty = Vec::new();
        empty_lists(&json, "", &mut empty);
        assert!(
            empty.is_empty() && json != Value::Object(Default::default()),
            "{at}: empty {empty:?} although the server has data for every example: {body}"
        );
    }
    checked
}

/// The device ids a block publishes for (`mekong/v1/{id}/up`).
fn published_devices(text: &str) -> Vec<String> {
    text.split("mekong/v1/")
        .skip(1)
        .filter_map(|rest| rest.split_once("/up").map(|(id, _)| id.to_owned()))
        .filter(|id| id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        .collect()
}

/// `(packs, rejected)` of a device, zeros if the platform has not heard of it.
async fn device_counts(http: &reqwest::Client, port: u16, id: &str) -> (u64, u64) {
    let (status, body) = get_url(http, &format!("http://127.0.0.1:{port}/v1/devices/{id}")).await;
    if status == 404 {
        return (0, 0);
    }
    assert_eq!(status, 200, "{body}");
    (body["packs"].as_u64().unwrap(), body["rejected"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_examples_work_against_a_live_server() {
    let root = workspace();
    let blocks = readme();
    let http = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let answers = tempfile::tempdir().unwrap();

    // The server as the quick start runs it, from the workspace root with the shipped
    // configuration and registry; the data directory and the ports are the test's ("[::]"
    // serves both loopback addresses, as the README's localhost and [::1] need).
    let [mqtt, port] = free_ports();
    let child = Command::new(env!("CARGO_BIN_EXE_mekong"))
        .arg("serve")
        .current_dir(&root)
        .env("MEKONG__STORAGE__DATA_DIR", dir.path().join("data"))
        .env("MEKONG__BROKER__LISTEN", format!("[::]:{mqtt}"))
        .env("MEKONG__BROKER__LISTEN_V5", "")
        .env("MEKONG__API__LISTEN", format!("[::]:{port}"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("start mekong serve");
    let _server = common::Server { child, mqtt, http: port };
    common::wait_healthy(&http, port).await;

    // One refused pack, so that the rejection log has something to show.
    let mut refused = Sensor::device(([127, 0, 0, 1], mqtt).into(), "readme-refused").await;
    refused.publish("mekong/v1/readme-refused/up", vec![0xff]).await;
    let answer = refused.downlink().await;
    assert!(matches!(answer, Downlink::Refused { .. }), "{answer:?}");
    refused.disconnect().await;

    let golden = std::fs::read_to_string(root.join("crates/schema/fixtures/water-pack.hex")).unwrap();
    // A scratch directory that looks like the checkout: its top-level entries linked.
    let scratch = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&root).unwrap() {
        let name = entry.unwrap().file_name();
        if name != "target" && name != ".git" {
            std::os::unix::fs::symlink(root.join(&name), scratch.path().join(&name)).unwrap();
        }
    }
    let (mut ran, mut skipped, mut curls, mut publishes) = (0, 0, 0, 0);
    let mut seen = std::collections::BTreeSet::new();
    for block in blocks.iter().filter(|b| classify(b) == Ok(Kind::Run)) {
        let at = format!("README.md:{}", block.line);
        let missing: Vec<_> = TOOLS.iter().filter(|(tool, _)| block.text.contains(tool) && !installed(tool)).collect();
        if let Some((tool, package)) = missing.first() {
            assert!(std::env::var_os("MEKONG_REQUIRE_MOSQUITTO").is_none(), "{at}: {tool} is not installed");
            eprintln!("{at}: SKIPPED: {tool} is not installed (apt-get install {package})");
            skipped += 1;
            continue;
        }
        // The publish example: the README's pack, as hex, into mosquitto_pub.
        if block.text.contains("xxd -r -p") && block.text.contains("mosquitto_pub") {
            let hex: String =
                block.text.split_whitespace().filter(|w| w.chars().all(|c| c.is_ascii_hexdigit())).collect();
            assert!(hex.contains(golden.trim()), "{at}: the publish example does not carry the whole golden pack");
        }
        let devices = published_devices(&block.text);
        let mut before = Vec::new();
        for id in &devices {
            before.push(device_counts(&http, port, id).await);
        }

        let script = dir.path().join(format!("block-{}.sh", block.line));
        std::fs::write(&script, format!("{PRELUDE}\n# {at}\n{}", block.text)).unwrap();
        // coreutils' timeout ends the block's whole process group, a simulator left
        // running included.
        let mut command = Command::new("timeout");
        command
            .arg(BLOCK_TIMEOUT.as_secs().to_string())
            .args(["bash", "-euo", "pipefail"])
            .arg(&script)
            .current_dir(scratch.path())
            .env("README_MEKONG", env!("CARGO_BIN_EXE_mekong"))
            .env("README_MQTT", mqtt.to_string())
            .env("README_HTTP", port.to_string())
            .env("README_OUT", answers.path());
        let out = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
        assert!(
            out.status.success(),
            "{at}: the block failed ({}; 124 is a timeout of {BLOCK_TIMEOUT:?}):\n{}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            block.text,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!("{at}: ran; its output begins {:?}", stdout.chars().take(300).collect::<String>());
        ran += 1;
        curls += check_answers(answers.path(), &mut seen, block);

        // A publish is acknowledged by the broker before the pack is stored: wait for it.
        for (id, (packs, rejected)) in devices.iter().zip(before) {
            let deadline = Instant::now() + TIMEOUT;
            loop {
                let (now_packs, now_rejected) = device_counts(&http, port, id).await;
                assert_eq!(now_rejected, rejected, "{at}: the platform refused the pack for {id}");
                if now_packs > packs {
                    break;
                }
                assert!(Instant::now() < deadline, "{at}: the pack for {id} was not stored");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            publishes += 1;
        }
    }
    eprintln!(
        "readme: {ran} blocks run, {skipped} skipped, {curls} curl answers checked, {publishes} publishes stored"
    );
    assert!(ran >= 2 && curls >= 10, "{ran} blocks, {curls} curl answers: the README's examples were not found");
    assert!(publishes >= 1 || skipped >= 1, "the publish example was neither run nor skipped");

    // The TLS section's CA recipe, if it ran, must make a certificate and key mekong loads.
    let (cert, key) = (scratch.path().join("fullchain.pem"), scratch.path().join("privkey.pem"));
    if cert.exists() && key.exists() {
        let config = scratch.path().join("readme-tls.toml");
        std::fs::write(&config, format!("[tls]\ncert = {cert:?}\nkey = {key:?}\n")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_mekong"))
            .args(["check-config", "--config"])
            .arg(&config)
            .current_dir(scratch.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "the README's CA recipe makes a certificate mekong refuses: {stderr}");
        eprintln!("readme: the CA recipe's certificate loads");
    }
}
