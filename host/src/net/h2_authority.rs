//! HTTP/2 from gRPC clients over a Unix socket, made acceptable to `h2`.
//!
//! gRPC C-core (the Python, C++, Ruby and PHP gRPC libraries, so py-spiffe) sends the socket's
//! path, percent-encoded, as `:authority`, and grpc-java sends it as is; neither is a URI
//! authority, and `h2` (under tonic and hyper) resets every such stream with `PROTOCOL_ERROR`
//! (hyperium/h2#487, grpc/grpc#38142, grpc/grpc-java#12664). A SPIFFE Workload API must serve
//! those clients as SPIRE's does, so the client-to-server bytes of its socket pass through a
//! [`Rewriter`]:
//!
//! - every frame but HEADERS and CONTINUATION passes unchanged;
//! - a header block (a HEADERS frame and its CONTINUATIONs) is decoded with HPACK, keeping the
//!   client's dynamic table (`loona-hpack`), and written again as literals that use no table
//!   (so the server's decoder never holds an entry the client did not mean), with an
//!   `:authority` that is not a valid authority replaced by `localhost`; padding is dropped,
//!   the priority and `END_STREAM` kept, the block split again into frames of at most 16 KiB
//!   (the server's default `SETTINGS_MAX_FRAME_SIZE`);
//! - a client that breaks the framing (a CONTINUATION out of place, a header block over
//!   [`MAX_HEADER_BLOCK`], of more than [`MAX_FIELDS`] fields or decoding to more than
//!   [`MAX_HEADER_LIST`], a block HPACK refuses) has its connection closed, as the server would
//!   close it.
//!
//! The server-to-client bytes are not touched. The dynamic table size the decoder allows is the
//! server's `SETTINGS_HEADER_TABLE_SIZE`: h2's default 4096, which the Workload API's tonic
//! server keeps (it sets no `header_table_size`; a server that advertised another size would
//! need this constant to follow).

/// The largest frame a client may send (the server accepts 16 KiB; more is its error to
/// report, not a reason to buffer megabytes here) and the largest header block, all its frames.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// The most fields a header block may hold (a gRPC call sends about ten). Counted before the
/// block is decoded, so a block cannot make the decoder expand thousands of references to a
/// large table entry, or build thousands of Huffman tables.
pub const MAX_FIELDS: usize = 256;
/// The largest decoded header list (name + value + 32 per field, as RFC 9113 counts it); the
/// server accepts 16 KiB (hyper's `SETTINGS_MAX_HEADER_LIST_SIZE`).
pub const MAX_HEADER_LIST: usize = 64 * 1024;
/// The HTTP/2 connection preface a client sends first.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The frame payload the server accepts (`SETTINGS_MAX_FRAME_SIZE`'s default).
const MAX_FRAME: usize = 16_384;
/// HPACK's default dynamic table size, the server's `SETTINGS_HEADER_TABLE_SIZE`.
const TABLE_SIZE: usize = 4096;

/// Why a client's connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HTTP/2 from the client: {0}")]
pub struct Broken(String);

fn broken(why: &str) -> Broken {
    Broken(why.to_owned())
}

/// A header block being reassembled.
struct Block {
    stream: [u8; 4],
    /// `END_STREAM` from the HEADERS frame.
    end_stream: bool,
    /// The HEADERS frame's priority fields, if it had them.
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

enum State {
    /// Waiting for the client's preface.
    Preface,
    /// Frames.
    Frames,
    /// Not HTTP/2 with prior knowledge: passed through (the server refuses it).
    Other,
}

/// One connection's client-to-server bytes, rewritten as the module doc says. Sans-IO: give it
/// the bytes as they come ([`Rewriter::feed`], split anywhere), pass on what it gives back.
pub struct Rewriter {
    state: State,
    buf: Vec<u8>,
    decoder: loona_hpack::Decoder<'static>,
    pending: Option<Block>,
}

impl Default for Rewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl Rewriter {
    /// A rewriter for a new connection.
    pub fn new() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        Self {
            state: State::Preface,
            buf: Vec::new(),
            decoder,
            pending: None,
        }
    }

    /// Takes the next bytes from the client and appends to `out` what the server should read
    /// (whole frames only; a frame split across calls is held until it is complete).
    ///
    /// # Errors
    ///
    /// [`Broken`] for a client that breaks the framing or HPACK: close its connection (the
    /// rewriter is not to be fed again).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Broken> {
        if let State::Other = self.state {
            out.extend_from_slice(input);
            return Ok(());
        }
        self.buf.extend_from_slice(input);
        if let State::Preface = self.state {
            let n = self.buf.len().min(PREFACE.len());
            if self.buf.get(..n) != PREFACE.get(..n) {
                self.state = State::Other;
                out.append(&mut self.buf);
                return Ok(());
            }
            if n < PREFACE.len() {
                return Ok(());
            }
            out.extend(self.buf.drain(..PREFACE.len()));
            self.state = State::Frames;
        }
        let mut at = 0;
        let result = loop {
            let Some(&[l0, l1, l2, kind, flags, s0, s1, s2, s3]) = self.buf.get(at..at + 9) else {
                break Ok(());
            };
            let len = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
            if len > MAX_HEADER_BLOCK {
                break Err(broken("a frame over the limit"));
            }
            let Some(payload) = self.buf.get(at + 9..at + 9 + len) else {
                break Ok(());
            };
            let head = [l0, l1, l2, kind, flags, s0, s1, s2, s3];
            let stream = [s0 & 0x7f, s1, s2, s3];
            if let Err(e) = frame(
                &mut self.decoder,
                &mut self.pending,
                (head, stream),
                payload,
                out,
            ) {
                break Err(e);
            }
            at += 9 + len;
        };
        self.buf.drain(..at);
        result
    }
}

/// One complete frame.
fn frame(
    decoder: &mut loona_hpack::Decoder<'static>,
    pending: &mut Option<Block>,
    (head, stream): ([u8; 9], [u8; 4]),
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), Broken> {
    let [_, _, _, kind, flags, ..] = head;
    match kind {
        HEADERS => {
            if pending.is_some() {
                return Err(broken("HEADERS inside another header block"));
            }
            let block = headers_frame(stream, flags, payload)?;
            if flags & END_HEADERS != 0 {
                emit(decoder, &block, out)
            } else {
                *pending = Some(block);
                Ok(())
            }
        }
        CONTINUATION => {
            let Some(mut block) = pending.take() else {
                return Err(broken("CONTINUATION outside a header block"));
            };
            if block.stream != stream {
                return Err(broken("CONTINUATION on another stream"));
            }
            if block.fragment.len() + payload.len() > MAX_HEADER_BLOCK {
                return Err(broken("a header block over the limit"));
            }
            block.fragment.extend_from_slice(payload);
            if flags & END_HEADERS != 0 {
                emit(decoder, &block, out)
            } else {
                *pending = Some(block);
                Ok(())
            }
        }
        _ => {
            if pending.is_some() {
                return Err(broken("a frame inside a header block"));
            }
            out.extend_from_slice(&head);
            out.extend_from_slice(payload);
            Ok(())
        }
    }
}

/// The header block fragment of a HEADERS frame, without its padding.
fn headers_frame(stream: [u8; 4], flags: u8, payload: &[u8]) -> Result<Block, Broken> {
    let mut rest = payload;
    let mut pad = 0usize;
    if flags & PADDED != 0 {
        let (&n, after) = rest.split_first().ok_or_else(|| broken("no pad length"))?;
        pad = usize::from(n);
        rest = after;
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        let fields: [u8; 5] = rest
            .get(..5)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| broken("no priority fields"))?;
        priority = Some(fields);
        rest = rest.get(5..).unwrap_or_default();
    }
    let end = rest
        .len()
        .checked_sub(pad)
        .ok_or_else(|| broken("padding over the frame"))?;
    Ok(Block {
        stream,
        end_stream: flags & END_STREAM != 0,
        priority,
        fragment: rest.get(..end).unwrap_or_default().to_vec(),
    })
}

/// Decodes `block`, replaces an invalid `:authority`, and appends it as frames of literals.
fn emit(
    decoder: &mut loona_hpack::Decoder<'static>,
    block: &Block,
    out: &mut Vec<u8>,
) -> Result<(), Broken> {
    if field_count(&block.fragment).is_none_or(|n| n > MAX_FIELDS) {
        return Err(broken("a header block of too many fields, or not HPACK"));
    }
    let fields = decoder
        .decode(&block.fragment)
        .map_err(|e| broken(&format!("HPACK: {e}")))?;
    let list: usize = fields.iter().map(|(n, v)| n.len() + v.len() + 32).sum();
    if list > MAX_HEADER_LIST {
        return Err(broken("a header list over the limit"));
    }
    let mut encoded = Vec::with_capacity(block.fragment.len() + 64);
    for (name, value) in &fields {
        let value: &[u8] =
            if name == b":authority" && http::uri::Authority::try_from(&value[..]).is_err() {
                b"localhost"
            } else {
                value
            };
        // Literal without indexing, new name (RFC 7541 §6.2.2): no table on either side.
        encoded.push(0);
        string(&mut encoded, name);
        string(&mut encoded, value);
    }
    let mut flags = if block.end_stream { END_STREAM } else { 0 };
    let mut payload = Vec::new();
    if let Some(p) = block.priority {
        flags |= PRIORITY;
        payload.extend_from_slice(&p);
    }
    let room = MAX_FRAME - payload.len();
    let (first, mut rest) = encoded.split_at(room.min(encoded.len()));
    payload.extend_from_slice(first);
    let mut kind = HEADERS;
    loop {
        let last = rest.is_empty();
        let frame_flags = flags | if last { END_HEADERS } else { 0 };
        write_frame(out, kind, frame_flags, block.stream, &payload)?;
        if last {
            return Ok(());
        }
        let (next, after) = rest.split_at(MAX_FRAME.min(rest.len()));
        payload = next.to_vec();
        rest = after;
        kind = CONTINUATION;
        flags = 0;
    }
}

fn write_frame(
    out: &mut Vec<u8>,
    kind: u8,
    flags: u8,
    stream: [u8; 4],
    payload: &[u8],
) -> Result<(), Broken> {
    let len = u32::try_from(payload.len()).map_err(|_| broken("frame too long"))?;
    let [_, l0, l1, l2] = len.to_be_bytes();
    let [s0, s1, s2, s3] = stream;
    out.extend_from_slice(&[l0, l1, l2, kind, flags, s0, s1, s2, s3]);
    out.extend_from_slice(payload);
    Ok(())
}

/// How many field representations an HPACK block holds (table size updates not counted),
/// read without decoding a string or touching a table; `None` if it does not parse.
fn field_count(mut block: &[u8]) -> Option<usize> {
    let mut fields = 0usize;
    while let Some(&first) = block.first() {
        let (prefix, strings) = match first {
            b if b & 0x80 != 0 => (7, 0),
            b if b & 0xc0 == 0x40 => (6, 1),
            b if b & 0xe0 == 0x20 => (5, usize::MAX),
            _ => (4, 1),
        };
        let (index, used) = read_integer(block, prefix)?;
        block = block.get(used..)?;
        if strings == usize::MAX {
            continue;
        }
        fields += 1;
        // A literal: a new name (index 0) before its value.
        let strings = if strings == 1 && index == 0 {
            2
        } else {
            strings
        };
        for _ in 0..strings {
            let (len, used) = read_integer(block, 7)?;
            block = block.get(used.checked_add(len)?..)?;
        }
    }
    Some(fields)
}

/// An HPACK integer with an `n`-bit prefix at the start of `bytes`, and the bytes it took.
fn read_integer(bytes: &[u8], n: u32) -> Option<(usize, usize)> {
    let max = (1usize << n) - 1;
    let first = usize::from(*bytes.first()?) & max;
    if first < max {
        return Some((first, 1));
    }
    let mut value = max;
    for (i, &b) in bytes.get(1..)?.iter().enumerate().take(4) {
        value = value.checked_add(usize::from(b & 0x7f) << (7 * i))?;
        if b & 0x80 == 0 {
            return Some((value, i + 2));
        }
    }
    None
}

/// An HPACK string literal, not Huffman-coded (RFC 7541 §5.2).
fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    integer(out, 0, 7, bytes.len());
    out.extend_from_slice(bytes);
}

/// An HPACK integer with an `n`-bit prefix after the bits `first` (RFC 7541 §5.1).
fn integer(out: &mut Vec<u8>, first: u8, n: u32, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        // Fits the prefix: `value < max <= 255`.
        out.push(first | u8::try_from(value).unwrap_or(0));
        return;
    }
    out.push(first | u8::try_from(max).unwrap_or(0xff));
    let mut left = value - max;
    while left >= 128 {
        out.push(u8::try_from(left % 128).unwrap_or(0) | 0x80);
        left /= 128;
    }
    out.push(u8::try_from(left).unwrap_or(0));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// The frames of `bytes` after the preface: (kind, flags, stream, payload).
    fn frames(bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert_eq!(&bytes[..24], PREFACE);
        let mut rest = &bytes[24..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            let stream = u32::from_be_bytes(rest[5..9].try_into().unwrap());
            out.push((rest[3], rest[4], stream, rest[9..9 + len].to_vec()));
            rest = &rest[9 + len..];
        }
        out
    }

    /// The rewriter's output for `input`, fed in one go and byte by byte (the same).
    fn through(input: Vec<u8>) -> Result<Vec<u8>, Broken> {
        let mut whole = Vec::new();
        let one = Rewriter::new().feed(&input, &mut whole);
        let mut bytes = Vec::new();
        let mut r = Rewriter::new();
        let split = input.iter().try_for_each(|b| r.feed(&[*b], &mut bytes));
        assert_eq!(one.is_ok(), split.is_ok());
        if one.is_ok() {
            assert_eq!(whole, bytes);
        }
        one.map(|()| whole)
    }

    #[test]
    fn a_socket_path_authority_becomes_localhost_and_the_clients_table_is_kept() {
        // As gRPC C-core sends two calls: the authority added to its dynamic table, then
        // referred to by index (Huffman-coded strings, with incremental indexing).
        let mut enc = loona_hpack::Encoder::new();
        let call = |path: &'static [u8]| {
            vec![
                (&b":method"[..], &b"POST"[..]),
                (b":scheme", b"http"),
                (b":path", path),
                (b":authority", b"%2Ftmp%2Fw.sock"),
                (b"workload.spiffe.io", b"true"),
            ]
        };
        let first = enc.encode(call(b"/SpiffeWorkloadAPI/FetchX509SVID"));
        let second = enc.encode(call(b"/SpiffeWorkloadAPI/FetchJWTSVID"));
        assert!(
            loona_hpack::Decoder::new().decode(&second).is_err(),
            "the second block refers to the client's dynamic table"
        );
        let (a, b) = first.split_at(first.len() / 2);
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
                                             // The first block over two frames, padded, with priority.
        let mut padded = vec![3u8];
        padded.extend_from_slice(&[0, 0, 0, 0, 16]);
        padded.extend_from_slice(a);
        padded.extend_from_slice(&[0, 0, 0]);
        input.extend(frame(HEADERS, PADDED | PRIORITY, 1, &padded));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        input.extend(frame(0x0, END_STREAM, 1, b"data"));
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &second));
        let out = frames(&through(input).unwrap());
        assert_eq!(out.len(), 4, "{out:?}");
        assert_eq!((out[0].0, out[0].3.len()), (0x4, 0), "SETTINGS untouched");
        assert_eq!(
            out[2],
            (0x0, END_STREAM, 1, b"data".to_vec()),
            "DATA untouched"
        );
        // A fresh decoder (the server's) reads both blocks without any table state.
        let mut server = loona_hpack::Decoder::new();
        for (i, (kind, flags, stream, payload)) in [&out[1], &out[3]].into_iter().enumerate() {
            assert_eq!(*kind, HEADERS);
            assert_ne!(flags & END_HEADERS, 0);
            let block = if flags & PRIORITY != 0 {
                assert_eq!(&payload[..5], &[0, 0, 0, 0, 16], "priority kept");
                &payload[5..]
            } else {
                &payload[..]
            };
            let fields = server.decode(block).unwrap();
            assert!(
                fields.contains(&(b":authority".to_vec(), b"localhost".to_vec())),
                "{i}"
            );
            assert!(fields.contains(&(b"workload.spiffe.io".to_vec(), b"true".to_vec())));
            assert_eq!(fields[0], (b":method".to_vec(), b"POST".to_vec()));
            assert_eq!(*stream, [1, 3][i]);
            assert_eq!(flags & END_STREAM != 0, i == 1);
        }
    }

    #[test]
    fn a_valid_authority_stays_and_a_large_block_is_split_again() {
        let mut enc = loona_hpack::Encoder::new();
        let big = vec![b'x'; 40_000];
        let block = enc.encode(vec![
            (&b":authority"[..], &b"example.org:443"[..]),
            (b"big", &big[..]),
        ]);
        let mut input = PREFACE.to_vec();
        let (a, b) = block.split_at(MAX_FRAME);
        input.extend(frame(HEADERS, 0, 5, a));
        let (b1, b2) = b.split_at(MAX_FRAME.min(b.len()));
        input.extend(frame(CONTINUATION, 0, 5, b1));
        input.extend(frame(CONTINUATION, END_HEADERS, 5, b2));
        let out = frames(&through(input).unwrap());
        assert!(out.len() >= 3 && out.iter().all(|f| f.3.len() <= MAX_FRAME));
        assert_eq!(out[0].0, HEADERS);
        assert!(out[1..].iter().all(|f| f.0 == CONTINUATION && f.2 == 5));
        assert_ne!(out.last().unwrap().1 & END_HEADERS, 0);
        let joined: Vec<u8> = out.iter().flat_map(|f| f.3.clone()).collect();
        let fields = loona_hpack::Decoder::new().decode(&joined).unwrap();
        assert_eq!(
            fields[0],
            (b":authority".to_vec(), b"example.org:443".to_vec())
        );
        assert_eq!(fields[1].1.len(), 40_000);
    }

    #[test]
    fn broken_framing_and_hpack_close_the_connection() {
        let mut enc = loona_hpack::Encoder::new();
        let block = enc.encode(vec![(&b":path"[..], &b"/"[..])]);
        let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
            (
                "continuation alone",
                vec![frame(CONTINUATION, END_HEADERS, 1, &block)],
            ),
            (
                "data inside a block",
                vec![frame(HEADERS, 0, 1, &block), frame(0x0, 0, 1, b"x")],
            ),
            (
                "continuation on another stream",
                vec![
                    frame(HEADERS, 0, 1, &block),
                    frame(CONTINUATION, END_HEADERS, 3, &[]),
                ],
            ),
            (
                "bad hpack",
                vec![frame(
                    HEADERS,
                    END_HEADERS,
                    1,
                    &[0xff, 0xff, 0xff, 0xff, 0xff],
                )],
            ),
            (
                "padding over the frame",
                vec![frame(HEADERS, END_HEADERS | PADDED, 1, &[9, 0])],
            ),
            (
                "oversize",
                vec![frame(HEADERS, 0, 1, &vec![0; MAX_HEADER_BLOCK + 1])],
            ),
        ];
        for (what, frames) in cases {
            let mut input = PREFACE.to_vec();
            for f in frames {
                input.extend(f);
            }
            let e = through(input).unwrap_err();
            assert!(!e.0.is_empty(), "{what}");
        }
        // Not HTTP/2: passed through as it is (the server answers it).
        let out = through(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).unwrap();
        assert_eq!(out, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(through(Vec::new()).unwrap().is_empty());
    }

    #[test]
    fn a_block_that_would_expand_or_has_too_many_fields_is_refused_before_decoding() {
        // A 4 KB table entry, then a block of references to it.
        let big = vec![b'x'; 4000];
        let mut first = vec![0x40u8];
        string(&mut first, b"big");
        string(&mut first, &big);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &first));
        assert!(through(input.clone()).is_ok(), "one large field is fine");
        input.extend(frame(HEADERS, END_HEADERS, 3, &[0xbe; 100]));
        let e = through(input).unwrap_err();
        assert!(e.0.contains("limit"), "{e}");
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &[0x82; MAX_FIELDS + 1]));
        let e = through(input).unwrap_err();
        assert!(e.0.contains("too many fields"), "{e}");
        assert_eq!(
            field_count(&[0x82, 0x3f, 0xe1, 0x1f, 0x41, 0x01, b'a']),
            Some(2)
        );
        assert_eq!(
            field_count(&[0x41, 0x05, b'a']),
            None,
            "a string past the end"
        );
        assert_eq!(read_integer(&[31, 154, 10], 5), Some((1337, 3)));
        assert_eq!(read_integer(&[31, 0xff, 0xff, 0xff, 0xff, 0xff], 5), None);
    }

    #[test]
    fn hpack_integers_match_the_rfc_examples() {
        let mut out = Vec::new();
        integer(&mut out, 0, 5, 10);
        assert_eq!(out, [10]);
        out.clear();
        integer(&mut out, 0, 5, 1337);
        assert_eq!(out, [31, 154, 10]);
        out.clear();
        integer(&mut out, 0, 8, 42);
        assert_eq!(out, [42]);
    }
}
