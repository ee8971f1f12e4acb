//! Wycheproof ECDSA P-256/SHA-256 vectors (DER and IEEE P1363 signatures) through both of
//! Sigil's signature verifiers: each vector must get exactly its expected verdict.

use serde::Deserialize;
use sigil_core::crypto::{PublicKey, RustCryptoSignatureVerifier, Scheme, SignatureVerifier};
use sigil_host::signature::RingSignatureVerifier;

#[derive(Deserialize)]
struct File {
    #[serde(rename = "testGroups")]
    groups: Vec<Group>,
}

#[derive(Deserialize)]
struct Group {
    #[serde(rename = "publicKeyDer")]
    public_key_der: String,
    tests: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    #[serde(rename = "tcId")]
    id: u32,
    comment: String,
    msg: String,
    sig: String,
    result: String,
}

fn run(name: &str, scheme: Scheme) {
    // A copy of the project's shared vectors (Wycheproof, Apache-2.0) lives in tests/vectors.
    let path = format!("{}/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let file: File = serde_json::from_str(&text).unwrap();
    let mut counted = (0, 0);
    for group in &file.groups {
        let spki = hex::decode(&group.public_key_der).unwrap();
        let key = PublicKey::from_spki_der(&spki).expect("vector key parses");
        for v in &group.tests {
            let msg = hex::decode(&v.msg).unwrap();
            let sig = hex::decode(&v.sig).unwrap();
            let want_valid = match v.result.as_str() {
                "valid" => true,
                "invalid" => false,
                other => panic!("tcId {}: unexpected result {other}", v.id),
            };
            for (name, got) in [
                (
                    "rustcrypto",
                    RustCryptoSignatureVerifier.verify(scheme, key, &msg, &sig),
                ),
                (
                    "ring",
                    RingSignatureVerifier.verify(scheme, key, &msg, &sig),
                ),
            ] {
                assert_eq!(
                    got.is_ok(),
                    want_valid,
                    "{name} tcId {} ({}) via {name}: got {got:?}",
                    v.id,
                    v.comment
                );
            }
            if want_valid {
                counted.0 += 1;
            } else {
                counted.1 += 1;
            }
        }
    }
    assert!(
        counted.0 > 50 && counted.1 > 50,
        "too few vectors: {counted:?}"
    );
    println!(
        "{name}: {} valid and {} invalid vectors agree",
        counted.0, counted.1
    );
}

#[test]
fn ecdsa_p256_sha256_der() {
    run(
        "wycheproof-ecdsa_secp256r1_sha256_test.json",
        Scheme::EcdsaP256Sha256,
    );
}

#[test]
fn ecdsa_p256_sha256_p1363() {
    run(
        "wycheproof-ecdsa_secp256r1_sha256_p1363_test.json",
        Scheme::EcdsaP256Sha256Fixed,
    );
}
