//! Any text into the PEM reader, and every block decoded: never a panic, and what decodes
//! re-encodes to something that decodes to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sigil_core::pem;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    let mut buf = [0u8; 4096];
    let mut out = [0u8; 8192];
    let mut back = [0u8; 4096];
    for block in pem::blocks(text) {
        let Ok(block) = block else { break };
        let Ok(der) = block.decode(&mut buf) else {
            continue;
        };
        let Some(label) = block.label() else { continue };
        let Ok(encoded) = pem::encode(label, der, &mut out) else {
            continue;
        };
        let again = pem::decode_first(encoded, label, &mut back).expect("re-encoded PEM decodes");
        assert_eq!(again, der);
    }
    let _ = pem::decode_all::<4>(text, pem::Label::Certificate, &mut buf);
});
