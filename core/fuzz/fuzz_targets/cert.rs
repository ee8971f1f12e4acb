//! Any bytes into the certificate parser: never a panic; every accessor usable after a parse.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sigil_core::cert::Certificate;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Certificate::parse(data) {
        let _ = (
            c.public_key(),
            c.signature_scheme(),
            c.is_ca(),
            c.key_usage(),
        );
        let _ = c.spiffe_ids().count();
        if let Some(names) = c.subject_alt_names() {
            let _ = names.iter().count();
        }
        if let Some(eku) = c.ext_key_usage() {
            let _ = eku.purposes().count();
        }
        if let Some(nc) = c.name_constraints() {
            let _ = nc.permitted().count() + nc.excluded().count();
        }
    }
});
