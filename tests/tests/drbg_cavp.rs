//! The core's HMAC_DRBG (`sigil_core::drbg::HmacDrbgState`) against the NIST CAVP HMAC_DRBG
//! SHA-256 vectors without prediction resistance (`tests/vectors/hmac_drbg_sha256.rsp`: 60
//! cases without reseed, 60 with a reseed, over every combination of personalization string
//! and additional input the CAVS file has), each run as the CAVP procedure says:
//! instantiate, (reseed,) generate twice, compare the second output.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use sigil_core::drbg::HmacDrbgState;

const VECTORS: &str = include_str!("../vectors/hmac_drbg_sha256.rsp");

/// One case: its fields in file order (AdditionalInput appears twice).
type Case = Vec<(String, Vec<u8>)>;

fn cases() -> Vec<(String, Case)> {
    let mut out: Vec<(String, Case)> = Vec::new();
    let mut section = String::new();
    for line in VECTORS.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[') {
            section = s.trim_end_matches(']').to_owned();
            continue;
        }
        let (name, value) = line.split_once('=').expect("a field");
        let (name, value) = (name.trim(), value.trim());
        if name == "COUNT" {
            out.push((format!("{section} #{value}"), Vec::new()));
            continue;
        }
        let bytes = hex::decode(value).expect("hex");
        out.last_mut()
            .expect("a COUNT first")
            .1
            .push((name.to_owned(), bytes));
    }
    out
}

fn field<'a>(case: &'a Case, name: &str) -> Vec<&'a [u8]> {
    case.iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
        .collect()
}

#[test]
fn nist_cavp_hmac_drbg_sha256_vectors() {
    let cases = cases();
    assert_eq!(cases.len(), 120, "the vector file is complete");
    let mut reseeded = 0;
    for (name, case) in &cases {
        let one = |n: &str| {
            field(case, n)
                .first()
                .copied()
                .unwrap_or_else(|| panic!("{name}: no {n}"))
        };
        let mut drbg = HmacDrbgState::instantiate(
            one("EntropyInput"),
            one("Nonce"),
            one("PersonalizationString"),
        );
        if let Some(entropy) = field(case, "EntropyInputReseed").first() {
            drbg.reseed(entropy, one("AdditionalInputReseed"));
            reseeded += 1;
        }
        let additional = field(case, "AdditionalInput");
        assert_eq!(additional.len(), 2, "{name}");
        let expected = one("ReturnedBits");
        let mut out = vec![0u8; expected.len()];
        drbg.generate(&mut out, additional[0]).unwrap();
        drbg.generate(&mut out, additional[1]).unwrap();
        assert_eq!(hex::encode(&out), hex::encode(expected), "{name}");
        assert_eq!(drbg.reseed_counter(), 3, "{name}");
    }
    assert_eq!(reseeded, 60);
}

/// The test can fail: one flipped bit in the entropy changes the output.
#[test]
fn a_changed_input_changes_the_output() {
    let cases = cases();
    let (_, case) = &cases[0];
    let mut entropy = field(case, "EntropyInput")[0].to_vec();
    entropy[0] ^= 1;
    let mut drbg = HmacDrbgState::instantiate(&entropy, field(case, "Nonce")[0], &[]);
    let expected = field(case, "ReturnedBits")[0];
    let mut out = vec![0u8; expected.len()];
    drbg.generate(&mut out, &[]).unwrap();
    drbg.generate(&mut out, &[]).unwrap();
    assert_ne!(out, expected);
}
