// The device images' provisioning from the environment at build time, shared by the boards'
// build scripts (`include!`d; they import `std::env` and `std::fs`).

/// A device image's provisioning, from the environment at build time (a factory would write
/// the same values into flash), as `OUT_DIR/provision.rs`:
///
/// - `SIGIL_ANCHORS`: a PEM file of trust anchors (Sentry's `ca.crt`); default: the test
///   fixtures' root, which no real Sentry chains to;
/// - `SIGIL_APP_ID` (default `device`), `SIGIL_NAMESPACE` (`default`), `SIGIL_TRUST_DOMAIN`
///   (`public`, Dapr's workload default): the device's identity `spiffe://<td>/ns/<namespace>/<app-id>`;
/// - `SIGIL_PEER_APP` (default `echo`): the app the device calls (its sidecar), authorized as
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
