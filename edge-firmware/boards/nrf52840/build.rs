//! Puts this board's `memory.x` where cortex-m-rt's `link.x` looks for it, and links with
//! `link.x` (per package, so the node library's host tests are untouched).
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    if let Err(e) = fs::write(out.join("memory.x"), include_bytes!("memory.x")) {
        println!("cargo:warning=cannot write memory.x: {e}");
    }
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rerun-if-changed=memory.x");
}
