//! The link step of every board image (each board's `Cargo.toml` names this file as its
//! build script): puts that board's `memory.x` where cortex-m-rt's `link.x` looks for it, and
//! links with `link.x`, per package, so the node library's host tests are untouched.
use std::{env, fs, path::PathBuf};

fn main() {
    // Cargo runs a build script with its package's directory in CARGO_MANIFEST_DIR, so this
    // is the board's own memory.x, not one beside this file.
    let board = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    if let Err(e) = fs::copy(board.join("memory.x"), out.join("memory.x")) {
        eprintln!("cannot copy {} into OUT_DIR: {e}", board.join("memory.x").display());
        std::process::exit(1);
    }
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rerun-if-changed=memory.x");
}
