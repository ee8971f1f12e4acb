//! What the load binaries (`sentry-load`, `sidecar-load`) share: their flags and the `sigil`
//! binary they start.

use std::path::PathBuf;

/// The number given as `name <n>` among `args`; `default` if the flag is absent or its value
/// is not a whole number.
pub fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

/// The `sigil` binary next to the running one; panics, saying how to build it, if it is not
/// there.
pub fn sigil_binary() -> PathBuf {
    let sigil = std::env::current_exe()
        .expect("own path")
        .with_file_name("sigil");
    assert!(
        sigil.exists(),
        "{} is missing: cargo build --release -p sigil-host --bin sigil",
        sigil.display()
    );
    sigil
}
