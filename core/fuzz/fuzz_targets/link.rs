//! Any bytes into the link framing: never a panic, and a frame that parses re-emits to the
//! same bytes (the wire format has one encoding per frame).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sigil_core::link::{Frame, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    let _ = Frame::check(data);
    let Ok((frame, len)) = Frame::parse(data) else {
        return;
    };
    let mut out = [0u8; MAX_FRAME];
    let wire = frame.emit(&mut out).expect("a parsed frame emits");
    assert_eq!(wire, &data[..len]);
    if let Frame::SignAnswer { answer, .. } = frame {
        for cert in answer.certificates() {
            assert!(cert.len() <= len);
        }
    }
});
