//! Path validation over fuzzed certificates: the input is split into up to four DER elements
//! (leaf, two intermediates, one anchor) by a length prefix each. Never a panic, and the
//! budget always ends the search.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sigil_core::chain::{self, Options, TrustBundle};
use sigil_core::crypto::RustCryptoSignatureVerifier;
use sigil_core::UnixTime;

fn split(mut data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    while parts.len() < 4 && data.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([data[0], data[1]]));
        let rest = &data[2..];
        let take = len.min(rest.len());
        parts.push(&rest[..take]);
        data = &rest[take..];
    }
    parts
}

fuzz_target!(|data: &[u8]| {
    let parts = split(data);
    let [leaf, rest @ ..] = parts.as_slice() else {
        return;
    };
    let mut bundle: TrustBundle<'_, 2> = TrustBundle::new();
    let mut ints = Vec::new();
    for (i, p) in rest.iter().enumerate() {
        if i == rest.len() - 1 && bundle.add(p).is_ok() {
            continue;
        }
        ints.push(*p);
    }
    let _ = chain::verify(
        leaf,
        &ints,
        &bundle,
        &RustCryptoSignatureVerifier,
        &Options::new(UnixTime::from_secs(1_893_456_000)),
    );
});
