//! The boards' shared code on the host: the device's answer matcher (`Finder`, which looks for
//! the caller's SPIFFE ID in an HTTP answer as it streams through the TLS read buffer, with no
//! buffer of its own) against a plain substring search, on random texts and streams.

use proptest::prelude::*;
use sigil_board_common::call::Finder;

/// Feeds `stream` to a finder of `pieces`.
fn finds(pieces: &[&str], stream: &[u8]) -> bool {
    let mut f = Finder::new(pieces);
    for &b in stream {
        f.push(b);
    }
    f.found()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_scenario_answers() {
    let pieces = [
        " as ",
        "spiffe://public/ns/default/device",
        " on /",
        "hello",
    ];
    let yes = b"HTTP/1.1 200 OK\r\ncontent-length: 70\r\n\r\nhello from echo as spiffe://public/ns/default/device on /hello\n";
    assert!(finds(&pieces, yes));
    // Go peer's answer.
    let go = b"hello spiffe://public/ns/default/device chain=2 (go_tls_peer: called as spiffe://public/ns/default/device on /hello)\n";
    assert!(finds(&pieces, go));
    // Another caller, another method, a prefix only, overlapping false starts.
    for no in [
        &b"... as spiffe://public/ns/default/other on /hello"[..],
        b"... as spiffe://public/ns/default/device on /bye",
        b"... as spiffe://public/ns/default/device on /hell",
        b" as  as spiffe://public/ns/default/devic on /hello",
    ] {
        assert!(!finds(&pieces, no), "{}", String::from_utf8_lossy(no));
    }
    assert!(finds(
        &pieces,
        b" as  as spiffe://public/ns/default/device on /hello"
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// On a small alphabet (so partial matches and overlaps are frequent), the finder agrees
    /// with a substring search, however the text is cut into pieces.
    #[test]
    fn agrees_with_a_substring_search(
        needle in "[ab]{1,8}",
        cuts in proptest::collection::vec(0usize..8, 0..4),
        haystack in "[ab]{0,40}",
    ) {
        let mut pieces: Vec<&str> = Vec::new();
        let mut rest = needle.as_str();
        for c in cuts {
            let at = c.min(rest.len());
            let (head, tail) = rest.split_at(at);
            pieces.push(head);
            rest = tail;
        }
        pieces.push(rest);
        prop_assert_eq!(
            finds(&pieces, haystack.as_bytes()),
            contains(haystack.as_bytes(), needle.as_bytes())
        );
    }

    /// With the needle planted in random bytes, it is found.
    #[test]
    fn a_planted_needle_is_found(
        needle in "[a-c ]{1,12}",
        before in proptest::collection::vec(any::<u8>(), 0..64),
        after in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut stream = before.clone();
        stream.extend_from_slice(needle.as_bytes());
        stream.extend_from_slice(&after);
        prop_assert!(finds(&[needle.as_str()], &stream));
    }
}
