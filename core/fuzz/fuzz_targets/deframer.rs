//! The link reader over any byte stream, cut into pieces at any points and with time moving
//! at any pace: never a panic, every byte ends in exactly one frame, one skip or the buffer,
//! and at the end of the stream every partial frame stalls and is skipped.
//!
//! Input: a sequence of `control byte, piece` records; the control byte's low 6 bits are the
//! piece's length minus one, its high 2 bits how far time moves before it (0, 300, 600 or
//! 1,200 ms; the stall time is 1 s).
#![no_main]
use core::time::Duration;

use libfuzzer_sys::fuzz_target;
use sigil_core::link::{Deframer, Event, MAX_FRAME};
use sigil_core::Instant;

const STALL: Duration = Duration::from_millis(1000);

fn drain(d: &mut Deframer<'_>, now: Instant, accounted: &mut usize) {
    // Each event removes at least one byte from the buffer: the loop ends.
    while let Some(e) = d.poll_event(now) {
        *accounted += match e {
            Event::Frame(f) => f.buffer_len(),
            Event::Skipped { bytes, .. } => {
                assert!(bytes > 0, "a skip drops at least one byte");
                bytes
            }
        };
    }
}

fuzz_target!(|data: &[u8]| {
    let mut buf = [0u8; MAX_FRAME];
    let mut d = Deframer::new(&mut buf, STALL);
    let (mut now, mut fed, mut accounted) = (Instant::from_millis(0), 0usize, 0usize);
    let mut rest = data;
    while let [control, tail @ ..] = rest {
        now = now.saturating_add(Duration::from_millis(
            [0, 300, 600, 1200][usize::from(control >> 6)],
        ));
        let len = usize::from(control & 0x3f) + 1;
        let mut piece = &tail[..len.min(tail.len())];
        rest = &tail[piece.len()..];
        while !piece.is_empty() {
            let taken = d.handle_bytes(piece, now);
            fed += taken;
            piece = &piece[taken..];
            drain(&mut d, now, &mut accounted);
        }
        assert_eq!(accounted + d.buffered(), fed);
    }
    while d.buffered() > 0 {
        now = d
            .poll_timeout()
            .expect("buffered bytes have a stall deadline");
        drain(&mut d, now, &mut accounted);
    }
    assert_eq!(accounted, fed);
});
