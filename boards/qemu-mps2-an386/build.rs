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

/// The `device` image's provisioning, from the environment at build time (a factory would
/// write the same values into flash):
///
/// - `SIGIL_ANCHORS`: a PEM file of trust anchors (Sentry's `ca.crt`); default: the test
///   fixtures' root, which no real Sentry chains to;
/// - `SIGIL_APP_ID` (default `device`), `SIGIL_NAMESPACE` (`default`), `SIGIL_TRUST_DOMAIN`
///   (`public`, Dapr's workload default): the device's identity `spiffe://<td>/ns/<namespace>/<app-id>`;
/// - `SIGIL_PEER_APP` (default `echo`): the app whose sidecar the device calls, authorized as
///   `spiffe://<td>/ns/<namespace>/<peer>`; `SIGIL_METHOD` (default `hello`);
/// - `SIGIL_ISSUER_SKEW_SECS` (default 900): Sentry's `allowedClockSkew`, which the no-RTC
///   clock adds to notBefore.
fn provision_device(out: &std::path::Path) {
    for var in [
        "SIGIL_ANCHORS",
        "SIGIL_APP_ID",
        "SIGIL_NAMESPACE",
        "SIGIL_TRUST_DOMAIN",
        "SIGIL_PEER_APP",
        "SIGIL_METHOD",
        "SIGIL_ISSUER_SKEW_SECS",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let anchors: Vec<Vec<u8>> = match env::var("SIGIL_ANCHORS") {
        Ok(path) => {
            println!("cargo:rerun-if-changed={path}");
            let text =
                fs::read_to_string(&path).unwrap_or_else(|e| panic!("SIGIL_ANCHORS={path}: {e}"));
            let ders = pem_certificates(&text);
            assert!(
                !ders.is_empty(),
                "SIGIL_ANCHORS={path}: no CERTIFICATE block"
            );
            ders
        }
        Err(_) => {
            println!("cargo:rerun-if-changed=../../tests/fixtures/p256/root.der");
            vec![fs::read("../../tests/fixtures/p256/root.der").expect("fixture root")]
        }
    };
    let mut rs = String::from(
        "/// Trust anchors provisioned at build time (DER).\npub static ANCHORS: &[&[u8]] = &[\n",
    );
    for (i, der) in anchors.iter().enumerate() {
        let name = format!("anchor{i}.der");
        fs::write(out.join(&name), der).expect("OUT_DIR is writable");
        rs.push_str(&format!(
            "    include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}\")),\n"
        ));
    }
    rs.push_str("];\n");
    let var = |k: &str, d: &str| env::var(k).unwrap_or_else(|_| d.to_owned());
    let skew: u64 = var("SIGIL_ISSUER_SKEW_SECS", "900")
        .parse()
        .expect("SIGIL_ISSUER_SKEW_SECS is a number of seconds");
    for (name, key, default) in [
        ("APP_ID", "SIGIL_APP_ID", "device"),
        ("NAMESPACE", "SIGIL_NAMESPACE", "default"),
        ("TRUST_DOMAIN", "SIGIL_TRUST_DOMAIN", "public"),
        ("PEER_APP", "SIGIL_PEER_APP", "echo"),
        ("METHOD", "SIGIL_METHOD", "hello"),
    ] {
        rs.push_str(&format!(
            "pub const {name}: &str = {:?};\n",
            var(key, default)
        ));
    }
    rs.push_str(&format!("pub const ISSUER_SKEW_SECS: u64 = {skew};\n"));
    fs::write(out.join("provision.rs"), rs).expect("OUT_DIR is writable");
}

/// The DER of each CERTIFICATE block in a PEM text.
fn pem_certificates(text: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in text.lines().map(str::trim) {
        match (line, &mut body) {
            ("-----BEGIN CERTIFICATE-----", None) => body = Some(String::new()),
            ("-----END CERTIFICATE-----", Some(b)) => {
                out.push(base64_decode(b));
                body = None;
            }
            (l, Some(b)) => b.push_str(l),
            _ => {}
        }
    }
    out
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("SIGIL_ANCHORS: bad base64 character {:?}", char::from(c)),
        }
    };
    let digits: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = acc << 6 | value(c);
        }
        acc <<= 6 * (4 - chunk.len());
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}
