//! Lays the request path's code out together in the `lakehouse` binary.
//!
//! `hot-symbols.txt` lists the functions a chat runs through, hottest first
//! (written by `scripts/hot_symbols.py` from a callgrind profile of the
//! benchmark's load). The linker places them at the start of `.text`, one
//! after the other, instead of wherever their crates put them in 90 MB of
//! code: a chat then touches ~140 pages of code instead of ~400, and the
//! proxy spent 8-25 % less CPU per request in the measurements of the commit
//! that added this. Names the build no longer has are skipped, so a stale
//! list costs only what it no longer covers.
//!
//! Only LLD reads such a list; Rust links x86_64 Linux with it from 1.90 on.
//! Anywhere else the binary is linked as usual.

use std::env;
use std::fs;
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=hot-symbols.txt");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    if !links_with_lld() {
        return;
    }
    // The linker reads a copy in OUT_DIR: cargo keeps this script's output
    // for as long as the list is unchanged, and a path into the source tree
    // that ran it breaks links from any other clone sharing the target dir.
    let (Ok(out_dir), Ok(list)) = (env::var("OUT_DIR"), fs::read("hot-symbols.txt")) else {
        return;
    };
    let copy = Path::new(&out_dir).join("hot-symbols.txt");
    if fs::write(&copy, list).is_err() {
        return;
    }
    let copy = copy.display();
    println!("cargo:rustc-link-arg-bin=lakehouse=-Wl,--symbol-ordering-file={copy}");
    println!("cargo:rustc-link-arg-bin=lakehouse=-Wl,--no-warn-symbol-ordering");
}

/// Whether rustc links this target with its own LLD: x86_64 Linux (GNU) from
/// Rust 1.90, unless the flags turn it off.
fn links_with_lld() -> bool {
    let var = |name: &str| env::var(name).unwrap_or_default();
    let target = var("TARGET");
    if target != "x86_64-unknown-linux-gnu" {
        return false;
    }
    // A linker of the user's choosing may not be LLD.
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    if env::var_os("RUSTC_LINKER").is_some()
        || flags.contains("linker-features=-lld")
        || flags.contains("linker=")
    {
        return false;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let version = String::from_utf8_lossy(&out.stdout);
    let mut numbers = version
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split('.')
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
