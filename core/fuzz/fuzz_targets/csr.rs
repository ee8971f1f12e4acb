//! Any bytes into the CSR parser and its signature check: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sigil_core::crypto::RustCryptoSignatureVerifier;
use sigil_core::csr::Csr;

fuzz_target!(|data: &[u8]| {
    if let Ok(csr) = Csr::parse(data) {
        let _ = csr.verify_signature(&RustCryptoSignatureVerifier);
        if let Some(names) = csr.subject_alt_names() {
            let _ = names.iter().count();
        }
    }
});
