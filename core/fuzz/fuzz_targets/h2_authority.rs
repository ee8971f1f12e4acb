//! The Workload API socket's HTTP/2 rewriter (the host's `net::h2_authority`, compiled in here
//! by path: it is sans-IO, on `loona-hpack` and `http`). The first input byte says where to cut
//! the rest in two; the rest follows the client's preface. Invariants: no panic; the output is
//! the same fed whole or in two pieces; when the input is accepted, the output after the
//! preface is whole frames whose header blocks decode with a decoder that has no table (nothing
//! of the client's table is left for the server to hold), each with a valid `:authority` if it
//! has one, in frames no larger than the server accepts.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unreachable_pub, clippy::all)]
#[path = "../../../host/src/net/h2_authority.rs"]
mod h2_authority;

use h2_authority::Rewriter;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let mut input = PREFACE.to_vec();
    input.extend_from_slice(rest);
    let mut whole = Vec::new();
    let one = Rewriter::new().feed(&input, &mut whole);
    let at = usize::from(cut) * input.len() / 256;
    let mut two = Vec::new();
    let mut r = Rewriter::new();
    let split = r
        .feed(&input[..at], &mut two)
        .and_then(|()| r.feed(&input[at..], &mut two));
    assert_eq!(one.is_ok(), split.is_ok());
    if one.is_err() {
        return;
    }
    assert_eq!(whole, two);
    assert_eq!(&whole[..24], PREFACE);
    let mut frames = &whole[24..];
    let mut block: Option<Vec<u8>> = None;
    while !frames.is_empty() {
        assert!(frames.len() >= 9, "a partial frame head");
        let len =
            usize::from(frames[0]) << 16 | usize::from(frames[1]) << 8 | usize::from(frames[2]);
        let (kind, flags) = (frames[3], frames[4]);
        let payload = &frames[9..9 + len];
        frames = &frames[9 + len..];
        if kind == 0x1 || kind == 0x9 {
            assert!(
                len <= 16_384,
                "a rewritten header frame over the server's frame size"
            );
        }
        let fragment = match kind {
            0x1 if flags & 0x20 != 0 => &payload[5..],
            0x1 | 0x9 => payload,
            _ => continue,
        };
        block
            .get_or_insert_with(Vec::new)
            .extend_from_slice(fragment);
        if flags & 0x4 != 0 {
            let fields = loona_hpack::Decoder::new()
                .decode(&block.take().unwrap_or_default())
                .expect("a rewritten block needs no table");
            for (name, value) in fields {
                if name == b":authority" {
                    assert!(http::uri::Authority::try_from(&value[..]).is_ok());
                }
            }
        }
    }
});
