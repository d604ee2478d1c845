//! Two things the compiler cannot see for itself.
//!
//! The migrations are embedded at compile time (`sqlx::migrate!` in `src/store/sqlite.rs` and
//! `src/store/postgres.rs`), and a macro cannot see a file added to their folders: without
//! this, a new migration is left out of the binary until something else changes.
//!
//! The code's layout: a release build linked by LLD places the functions start-up and the
//! common requests run (`bench/layout.txt`, written by `bench/layout.sh`) together, so the
//! code an idle server keeps resident is those functions and little else; its relocations,
//! all read at start-up, are packed (issue 17.3).
use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    if let Some(order) = layout() {
        println!("cargo:rustc-link-arg-bin=concierge=-Wl,--symbol-ordering-file={order}");
        // The file names functions a later build may have renamed or inlined away: those are
        // skipped, not errors.
        println!("cargo:rustc-link-arg-bin=concierge=-Wl,--no-warn-symbol-ordering");
        // Relative relocations packed (DT_RELR): the loader reads every relocation at start-up,
        // and packed they take some 20 KiB instead of 1 MiB of resident pages. The loader must
        // know the format: glibc 2.36 or later, checked where the build runs (the binary then
        // needs it too, as it needs the glibc it was linked against).
        if glibc_minor().is_some_and(|minor| minor >= 36) {
            println!("cargo:rustc-link-arg-bin=concierge=-Wl,-z,pack-relative-relocs");
        }
    }
}

/// The minor version of the build machine's glibc ("glibc 2.36" from getconf), when the
/// build is for the machine it runs on.
fn glibc_minor() -> Option<u32> {
    if env::var("HOST").ok()? != env::var("TARGET").ok()? {
        return None;
    }
    let out = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()?;
    String::from_utf8(out.stdout)
        .ok()?
        .trim()
        .strip_prefix("glibc 2.")?
        .parse()
        .ok()
}

/// The ordering file, when this build links with LLD: a release build for x86-64 Linux by a
/// compiler from 1.90 on (which links with its own LLD there), with no linker of the user's
/// choosing. `CONCIERGE_CODE_LAYOUT=0` turns it off, and the packed relocations with it.
fn layout() -> Option<String> {
    if env::var("PROFILE").ok()? != "release" {
        return None;
    }
    let order = Path::new(&env::var("CARGO_MANIFEST_DIR").ok()?).join("bench/layout.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-env-changed=CONCIERGE_CODE_LAYOUT");
    if env::var("CONCIERGE_CODE_LAYOUT").is_ok_and(|v| v == "0")
        || env::var("TARGET").ok()? != "x86_64-unknown-linux-gnu"
        // A linker configured for the target (RUSTC_LINKER), or flags that choose one.
        || env::var_os("RUSTC_LINKER").is_some()
        || env::var("CARGO_ENCODED_RUSTFLAGS").is_ok_and(|f| f.contains("link"))
    {
        return None;
    }
    let rustc = env::var("RUSTC").ok()?;
    let version = Command::new(rustc).arg("--version").output().ok()?;
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let minor: u32 = String::from_utf8(version.stdout)
        .ok()?
        .split_whitespace()
        .nth(1)?
        .split('.')
        .nth(1)?
        .parse()
        .ok()?;
    (minor >= 90 && order.is_file()).then(|| order.display().to_string())
}
