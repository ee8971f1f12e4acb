//! Puts memory.x on the linker path (cortex-m-rt's link.x includes it) and provisions the
//! `agent` image: its trust anchors and identity (see `../common/provision.rs`).
// A provisioning that does not load fails the build, with its message (the shared code panics).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
use std::env;
use std::fs;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn core::error::Error>> {
    let out = PathBuf::from(env::var_os("OUT_DIR").ok_or("cargo sets OUT_DIR")?);
    fs::copy("memory.x", out.join("memory.x"))?;
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
    provision_device(&out);
    Ok(())
}

include!("../common/provision.rs");
