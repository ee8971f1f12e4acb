//! Puts memory.x on the linker path and provisions the device: its DRBG seed, and for the
//! `device` image its trust anchors and identity.
use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::copy("memory.x", out.join("memory.x")).expect("memory.x is readable");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");

    // The per-device DRBG seed, provisioned at build time: 64 hex digits in SIGIL_DEVICE_SEED.
    println!("cargo:rerun-if-env-changed=SIGIL_DEVICE_SEED");
    let seed = match env::var("SIGIL_DEVICE_SEED") {
        Ok(hex) => {
            let hex = hex.trim();
            assert!(
                hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
                "SIGIL_DEVICE_SEED must be 64 hex digits"
            );
            hex.to_owned()
        }
        Err(_) => {
            println!(
                "cargo:warning=SIGIL_DEVICE_SEED not set: using the fixed DEVELOPMENT seed (every such image makes the same keys)"
            );
            "5349474c2d4445562d534545442d4e4f542d464f522d50524f44554354494f4e".to_owned()
        }
    };
    let bytes: Vec<String> = (0..32)
        .map(|i| format!("0x{}", &seed[2 * i..2 * i + 2]))
        .collect();
    fs::write(out.join("seed.rs"), format!("[{}]", bytes.join(", "))).expect("OUT_DIR is writable");
    provision_device(&out);
}

include!("../common/provision.rs");
