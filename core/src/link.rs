//! The device ↔ relay link: frames over a byte stream (a UART), check-then-parse, with a length
//! limit and a CRC. Sans-IO and allocation-free: [`Frame::check`] says whether a buffer holds a
//! whole frame (or how much more to read), [`Frame::parse`] reads it without copying, and
//! [`Frame::emit`] writes one into a caller buffer.
//!
//! Wire format (all integers big-endian):
//!
//! ```text
//! magic 0x53 'S' | kind u8 | length u16 | payload (length bytes) | CRC-32 (IEEE) of kind..payload
//! ```
//!
//! Kinds:
//! - `SignRequest`: request number u32, then four fields, each `u16 length | bytes`: app ID,
//!   namespace, token, CSR (DER).
//! - `SignAnswer`: the request number it answers (u32), status u8 (a gRPC code; 0 = OK) then,
//!   when OK, the chain as `u16 length | DER` per certificate (leaf first), optionally followed
//!   by an empty field (`u16 0`) and Sentry's trust bundle, the roots in the same form (see
//!   [`Answer::anchors`]); else a UTF-8 message.
//! - `TlsData`: session number u16, then bytes of that TLS session, which the relay forwards
//!   to a sidecar's mTLS port.
//! - `TlsClose`: session number u16: that TLS session ended (either side).
//!
//! Request and session numbers are the device's: an answer to a request the device has given
//! up on, or bytes of a session that has ended, are recognised and dropped rather than taken
//! for the current one (a slow CA, a relay that reconnects, a device that reboots).
//!
//! A frame with a bad magic, an unknown kind, a length over [`MAX_PAYLOAD`] or a CRC mismatch
//! is an error. Both ends then resynchronise: they drop bytes up to the next [`MAGIC`] and
//! check again (a CRC-32 over the whole frame makes a false match vanishingly rare), so line
//! noise or a relay reconnecting mid-frame costs the frames it touched, not the link.

use core::time::Duration;

use crate::time::Instant;

/// Bytes before the payload: magic, kind, length.
pub const HEADER_LEN: usize = 4;
/// Bytes after the payload: the CRC.
pub const TRAILER_LEN: usize = 4;
/// Largest payload a frame may carry: a TLS record the device's peer sends (at most
/// [`MAX_TLS_RECORD`] of plaintext, about 2,070 bytes on the wire; the relay forwards them in
/// pieces of at most 2 KiB), and a sign answer — Sigil's P-256 leaf and issuer are about
/// 900 bytes, each root about 360, so the chain and up to four of Sentry's roots fit (the
/// relay sends the chain without the roots when they do not, and the device keeps its own).
/// Every byte here is the device's RAM twice over (its receive frame and the deframer's).
pub const MAX_PAYLOAD: usize = 2560;
/// Largest whole frame.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_PAYLOAD + TRAILER_LEN;

/// The largest TLS record plaintext a device's peer sends (the sidecar's
/// `max_fragment_size` on its mTLS port). embedded-tls parses one whole record at a time
/// and does not reassemble handshake messages split across records, so a device's TLS read
/// buffer must hold one such record ([`TLS_READ_BUFFER`]) and the server's whole handshake
/// flight (about 1.1 KB with a P-256 leaf and issuer) must fit in one record.
pub const MAX_TLS_RECORD: usize = 2048;
/// A device's TLS read buffer: one [`MAX_TLS_RECORD`] plus the record's AEAD tag and
/// content type, with room to spare (embedded-tls needs at least `MAX_TLS_RECORD + 12`).
pub const TLS_READ_BUFFER: usize = MAX_TLS_RECORD + 64;

/// The first byte of every frame.
pub const MAGIC: u8 = 0x53;

/// Why a buffer does not hold a valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Not a whole frame yet: at least `needed` bytes in all are required. Read more.
    Incomplete {
        /// Bytes needed in all.
        needed: usize,
    },
    /// The first byte is not the frame magic.
    BadMagic(u8),
    /// The kind byte is unknown.
    UnknownKind(u8),
    /// The announced payload is longer than [`MAX_PAYLOAD`].
    TooLong {
        /// The announced length.
        length: usize,
    },
    /// The CRC does not match: the frame was corrupted.
    BadCrc {
        /// The CRC computed over the frame.
        computed: u32,
        /// The CRC the frame carries.
        received: u32,
    },
    /// The payload does not have the fields its kind requires.
    BadPayload,
    /// The output buffer is too small; `needed` bytes would do.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Incomplete { needed } => write!(f, "incomplete frame: {needed} bytes needed"),
            Self::BadMagic(b) => write!(f, "bad frame magic 0x{b:02x}"),
            Self::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            Self::TooLong { length } => {
                write!(f, "frame payload of {length} bytes exceeds {MAX_PAYLOAD}")
            }
            Self::BadCrc { computed, received } => write!(
                f,
                "frame CRC mismatch: computed 0x{computed:08x}, received 0x{received:08x}"
            ),
            Self::BadPayload => f.write_str("frame payload does not fit its kind"),
            Self::BufferTooSmall { needed } => {
                write!(f, "frame buffer too small: {needed} bytes needed")
            }
        }
    }
}

impl core::error::Error for Error {}

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// The device asks for a certificate.
    SignRequest {
        /// The device's number for this request, echoed in the answer.
        request: u32,
        /// App ID.
        id: &'a str,
        /// Namespace.
        namespace: &'a str,
        /// Token for Sentry's validator (may be empty).
        token: &'a str,
        /// The CSR, DER.
        csr: &'a [u8],
    },
    /// The relay answers request `request` with a chain (status 0) or an error.
    SignAnswer {
        /// The request answered.
        request: u32,
        /// The chain or the refusal.
        answer: Answer<'a>,
    },
    /// Bytes of TLS session `session`.
    TlsData {
        /// The device's number for the session.
        session: u16,
        /// The bytes.
        data: &'a [u8],
    },
    /// TLS session `session` ended.
    TlsClose {
        /// The device's number for the session.
        session: u16,
    },
}

/// A sign answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer<'a> {
    /// The chain, as a sequence of `u16 length | DER` (iterate with [`Answer::certificates`]),
    /// and after an empty field Sentry's roots ([`Answer::anchors`]).
    Chain(&'a [u8]),
    /// Sentry refused (or could not be reached): Dapr's gRPC code and the message.
    Refused {
        /// The gRPC status code (never 0).
        code: u8,
        /// The message.
        message: &'a str,
    },
}

impl<'a> Answer<'a> {
    /// The fields of a [`Answer::Chain`] (none for a refusal).
    fn fields(&self) -> impl Iterator<Item = &'a [u8]> {
        let mut rest = match self {
            Self::Chain(c) => *c,
            Self::Refused { .. } => &[],
        };
        core::iter::from_fn(move || {
            let (field, tail) = take_field(rest)?;
            rest = tail;
            Some(field)
        })
    }

    /// The certificates of a [`Answer::Chain`], leaf first (none for a refusal).
    pub fn certificates(&self) -> impl Iterator<Item = &'a [u8]> {
        self.fields().take_while(|f| !f.is_empty())
    }

    /// The trust bundle Sentry sent with the chain (its roots, DER), if the relay passed it on:
    /// the fields after the first empty one.
    pub fn anchors(&self) -> impl Iterator<Item = &'a [u8]> {
        self.fields().skip_while(|f| !f.is_empty()).skip(1)
    }
}

const KIND_SIGN_REQUEST: u8 = 1;
const KIND_SIGN_ANSWER: u8 = 2;
const KIND_TLS_DATA: u8 = 3;
const KIND_TLS_CLOSE: u8 = 4;

/// CRC-32 (IEEE 802.3, reflected, as zlib), bitwise: small rather than fast (frames are short).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xedb8_8320 & mask);
        }
    }
    !crc
}

pub(crate) fn take_field(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = buf.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    let field = rest.get(..len)?;
    Some((field, rest.get(len..)?))
}

fn take_u32(buf: &[u8]) -> Result<(u32, &[u8]), Error> {
    match buf {
        [a, b, c, d, rest @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), rest)),
        _ => Err(Error::BadPayload),
    }
}

fn take_u16(buf: &[u8]) -> Result<(u16, &[u8]), Error> {
    match buf {
        [a, b, rest @ ..] => Ok((u16::from_be_bytes([*a, *b]), rest)),
        _ => Err(Error::BadPayload),
    }
}

impl<'a> Frame<'a> {
    /// Whether `buf` starts with a whole, valid frame: its total length, or why not
    /// ([`Error::Incomplete`] means read more).
    ///
    /// # Errors
    ///
    /// [`Error`], naming the rule broken.
    pub fn check(buf: &[u8]) -> Result<usize, Error> {
        let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
            return Err(Error::Incomplete {
                needed: match buf.first() {
                    Some(&b) if b != MAGIC => return Err(Error::BadMagic(b)),
                    _ => HEADER_LEN,
                },
            });
        };
        let [magic, kind, hi, lo] = *header;
        if magic != MAGIC {
            return Err(Error::BadMagic(magic));
        }
        if !(KIND_SIGN_REQUEST..=KIND_TLS_CLOSE).contains(&kind) {
            return Err(Error::UnknownKind(kind));
        }
        let length = usize::from(u16::from_be_bytes([hi, lo]));
        if length > MAX_PAYLOAD {
            return Err(Error::TooLong { length });
        }
        let total = HEADER_LEN + length + TRAILER_LEN;
        let frame = buf
            .get(..total)
            .ok_or(Error::Incomplete { needed: total })?;
        let body = frame.get(1..HEADER_LEN + length).ok_or(Error::BadPayload)?;
        let received = frame
            .last_chunk::<TRAILER_LEN>()
            .map(|c| u32::from_be_bytes(*c))
            .ok_or(Error::BadPayload)?;
        let computed = crc32(body);
        if computed != received {
            return Err(Error::BadCrc { computed, received });
        }
        Ok(total)
    }

    /// Parses the frame at the start of `buf`; returns it and its total length.
    ///
    /// # Errors
    ///
    /// As [`Frame::check`], and [`Error::BadPayload`] if the payload does not fit its kind.
    pub fn parse(buf: &'a [u8]) -> Result<(Self, usize), Error> {
        let total = Self::check(buf)?;
        Self::parse_checked(buf, total).map(|f| (f, total))
    }

    /// Parses the frame of `total` bytes at the start of `buf`, which [`Frame::check`] passed.
    fn parse_checked(buf: &'a [u8], total: usize) -> Result<Self, Error> {
        let kind = *buf.get(1).ok_or(Error::BadPayload)?;
        let payload = buf
            .get(HEADER_LEN..total - TRAILER_LEN)
            .ok_or(Error::BadPayload)?;
        let text = |b: &'a [u8]| core::str::from_utf8(b).map_err(|_| Error::BadPayload);
        let frame = match kind {
            KIND_SIGN_REQUEST => {
                let (request, rest) = take_u32(payload)?;
                let (id, rest) = take_field(rest).ok_or(Error::BadPayload)?;
                let (namespace, rest) = take_field(rest).ok_or(Error::BadPayload)?;
                let (token, rest) = take_field(rest).ok_or(Error::BadPayload)?;
                let (csr, rest) = take_field(rest).ok_or(Error::BadPayload)?;
                if !rest.is_empty() {
                    return Err(Error::BadPayload);
                }
                Self::SignRequest {
                    request,
                    id: text(id)?,
                    namespace: text(namespace)?,
                    token: text(token)?,
                    csr,
                }
            }
            KIND_SIGN_ANSWER => {
                let (request, rest) = take_u32(payload)?;
                let (&code, rest) = rest.split_first().ok_or(Error::BadPayload)?;
                if code == 0 {
                    // Every field must be whole, and the first (the leaf) is not empty.
                    let mut r = rest;
                    let mut first = true;
                    while !r.is_empty() || first {
                        let (field, tail) = take_field(r).ok_or(Error::BadPayload)?;
                        if first && field.is_empty() {
                            return Err(Error::BadPayload);
                        }
                        r = tail;
                        first = false;
                    }
                    Self::SignAnswer {
                        request,
                        answer: Answer::Chain(rest),
                    }
                } else {
                    Self::SignAnswer {
                        request,
                        answer: Answer::Refused {
                            code,
                            message: text(rest)?,
                        },
                    }
                }
            }
            KIND_TLS_DATA => {
                let (session, data) = take_u16(payload)?;
                Self::TlsData { session, data }
            }
            KIND_TLS_CLOSE => match take_u16(payload)? {
                (session, []) => Self::TlsClose { session },
                _ => return Err(Error::BadPayload),
            },
            _ => return Err(Error::BadPayload),
        };
        Ok(frame)
    }

    /// The length of this frame on the wire.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len() + TRAILER_LEN
    }

    fn payload_len(&self) -> usize {
        match self {
            Self::SignRequest {
                id,
                namespace,
                token,
                csr,
                ..
            } => 4 + 8 + id.len() + namespace.len() + token.len() + csr.len(),
            Self::SignAnswer {
                answer: Answer::Chain(c),
                ..
            } => 4 + 1 + c.len(),
            Self::SignAnswer {
                answer: Answer::Refused { message, .. },
                ..
            } => 4 + 1 + message.len(),
            Self::TlsData { data, .. } => 2 + data.len(),
            Self::TlsClose { .. } => 2,
        }
    }

    /// Writes the frame into `out`; returns the bytes written.
    ///
    /// # Errors
    ///
    /// [`Error::TooLong`] if the payload (or a field) is too long, [`Error::BufferTooSmall`]
    /// (with `out` untouched), or [`Error::BadPayload`] for a refusal with code 0.
    pub fn emit<'b>(&self, out: &'b mut [u8]) -> Result<&'b [u8], Error> {
        let length = self.payload_len();
        if length > MAX_PAYLOAD {
            return Err(Error::TooLong { length });
        }
        let total = length + HEADER_LEN + TRAILER_LEN;
        let frame = out
            .get_mut(..total)
            .ok_or(Error::BufferTooSmall { needed: total })?;
        let mut w = Writer { buf: frame, at: 0 };
        let kind = match self {
            Self::SignRequest { .. } => KIND_SIGN_REQUEST,
            Self::SignAnswer { .. } => KIND_SIGN_ANSWER,
            Self::TlsData { .. } => KIND_TLS_DATA,
            Self::TlsClose { .. } => KIND_TLS_CLOSE,
        };
        let len16 = u16::try_from(length).map_err(|_| Error::TooLong { length })?;
        w.bytes(&[MAGIC, kind]);
        w.bytes(&len16.to_be_bytes());
        match self {
            Self::SignRequest {
                request,
                id,
                namespace,
                token,
                csr,
            } => {
                w.bytes(&request.to_be_bytes());
                for field in [id.as_bytes(), namespace.as_bytes(), token.as_bytes(), csr] {
                    let l = u16::try_from(field.len()).map_err(|_| Error::TooLong {
                        length: field.len(),
                    })?;
                    w.bytes(&l.to_be_bytes());
                    w.bytes(field);
                }
            }
            Self::SignAnswer {
                request,
                answer: Answer::Chain(c),
            } => {
                w.bytes(&request.to_be_bytes());
                w.bytes(&[0]);
                w.bytes(c);
            }
            Self::SignAnswer {
                request,
                answer: Answer::Refused { code, message },
            } => {
                if *code == 0 {
                    return Err(Error::BadPayload);
                }
                w.bytes(&request.to_be_bytes());
                w.bytes(&[*code]);
                w.bytes(message.as_bytes());
            }
            Self::TlsData { session, data } => {
                w.bytes(&session.to_be_bytes());
                w.bytes(data);
            }
            Self::TlsClose { session } => w.bytes(&session.to_be_bytes()),
        }
        let crc = crc32(w.buf.get(1..w.at).unwrap_or(&[]));
        w.bytes(&crc.to_be_bytes());
        Ok(frame)
    }
}

/// Writes certificates (DER) as a chain payload (`u16 length | DER` each) into `out`.
///
/// # Errors
///
/// [`Error::BufferTooSmall`] or [`Error::TooLong`] for a certificate over 65,535 bytes.
pub fn encode_chain<'b, 'c>(
    certs: impl IntoIterator<Item = &'c [u8]>,
    out: &'b mut [u8],
) -> Result<&'b [u8], Error> {
    let mut at = 0usize;
    for c in certs {
        let l = u16::try_from(c.len()).map_err(|_| Error::TooLong { length: c.len() })?;
        let end = at + 2 + c.len();
        let dst = out
            .get_mut(at..end)
            .ok_or(Error::BufferTooSmall { needed: end })?;
        let (len, body) = dst.split_at_mut(2);
        len.copy_from_slice(&l.to_be_bytes());
        body.copy_from_slice(c);
        at = end;
    }
    out.get(..at).ok_or(Error::BufferTooSmall { needed: at })
}

/// Why a [`Deframer`] dropped bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Skip {
    /// A frame did not check or parse ([`Error`] says which rule it broke).
    Bad(Error),
    /// A partial frame got no further byte for the stall time (a corrupted length, a peer that
    /// went away mid-frame): waiting longer would hold back the frames behind it.
    Stalled {
        /// Bytes the frame announced.
        needed: usize,
    },
}

impl core::fmt::Display for Skip {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Bad(e) => e.fmt(f),
            Self::Stalled { needed } => {
                write!(f, "partial frame stalled ({needed} bytes announced)")
            }
        }
    }
}

/// What a [`Deframer`] found in the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A whole, valid frame (its bytes stay in the buffer until the next
    /// [`Deframer::poll_event`]).
    Frame(Frame<'a>),
    /// `bytes` were dropped up to the next possible frame start, because of `reason`.
    Skipped {
        /// Bytes dropped.
        bytes: usize,
        /// Why.
        reason: Skip,
    },
}

/// The one link reader, for both ends (the relay and the boards): bytes in, frames and "skipped
/// because" events out, with its own stall timeout. Sans-IO, over a caller buffer of
/// [`MAX_FRAME`] bytes (a whole frame always fits).
///
/// Call order: put bytes in ([`Deframer::space`] then [`Deframer::handle_read`], or
/// [`Deframer::handle_bytes`]), then drain [`Deframer::poll_event`] until it returns `None`;
/// when it does and bytes are buffered, [`Deframer::poll_timeout`] says when a partial frame
/// counts as stalled (call `poll_event` again then). A frame returned by `poll_event` stays in
/// the buffer, readable through [`Deframer::frame_bytes`], until the next `poll_event`.
///
/// Resynchronisation: after a bad frame, bytes are dropped up to the next [`MAGIC`] after the
/// start, and checking starts again there; a CRC-32 over the whole frame makes a false match
/// vanishingly rare. Every byte given is, in the end, in exactly one returned frame, one
/// `Skipped` count, or still buffered.
#[derive(Debug)]
pub struct Deframer<'b> {
    buf: &'b mut [u8; MAX_FRAME],
    /// Bytes buffered (from the start of `buf`).
    len: usize,
    /// The length of the frame last returned, dropped at the next `poll_event`.
    taken: usize,
    /// When the reader last got a byte or was last ready for one.
    last_activity: Instant,
    stall: Duration,
}

impl<'b> Deframer<'b> {
    /// A reader over `buf` whose partial frames stall after `stall` without a byte.
    pub fn new(buf: &'b mut [u8; MAX_FRAME], stall: Duration) -> Self {
        Self {
            buf,
            len: 0,
            taken: 0,
            last_activity: Instant::ZERO,
            stall,
        }
    }

    /// The free part of the buffer to read into; then call [`Deframer::handle_read`]. Drops
    /// the frame returned last.
    pub fn space(&mut self) -> &mut [u8] {
        self.release();
        self.buf.get_mut(self.len..).unwrap_or_default()
    }

    /// `n` bytes were read into [`Deframer::space`] at `now`.
    pub fn handle_read(&mut self, n: usize, now: Instant) {
        self.len = (self.len + n).min(self.buf.len());
        if n > 0 {
            self.last_activity = now;
        }
    }

    /// Copies as much of `data` as fits; returns how many bytes were taken (all of them
    /// unless a whole frame's worth is buffered: drain [`Deframer::poll_event`] and offer the
    /// rest again).
    pub fn handle_bytes(&mut self, data: &[u8], now: Instant) -> usize {
        let space = self.space();
        let n = space.len().min(data.len());
        if let (Some(dst), Some(src)) = (space.get_mut(..n), data.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.handle_read(n, now);
        n
    }

    /// The reader is ready for bytes again at `now` (it was busy handling frames): time spent
    /// elsewhere does not count toward a stall.
    pub fn handle_ready(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// The next frame or skip, if the buffer holds one at `now`.
    pub fn poll_event(&mut self, now: Instant) -> Option<Event<'_>> {
        self.release();
        let data = self.buf.get(..self.len)?;
        if data.is_empty() {
            return None;
        }
        let reason = match Frame::check(data) {
            Ok(total) => match Frame::parse_checked(data, total) {
                Ok(_) => {
                    // Parsed again for the borrow's sake: field reads only, the CRC is done.
                    self.taken = total;
                    let frame = Frame::parse_checked(self.buf.get(..total)?, total).ok()?;
                    return Some(Event::Frame(frame));
                }
                Err(e) => Skip::Bad(e),
            },
            Err(Error::Incomplete { needed }) => {
                if now.saturating_duration_since(self.last_activity) < self.stall {
                    return None;
                }
                Skip::Stalled { needed }
            }
            Err(e) => Skip::Bad(e),
        };
        let bytes = self.resync();
        Some(Event::Skipped { bytes, reason })
    }

    /// When a buffered partial frame will count as stalled, if there is one.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.len > self.taken).then(|| self.last_activity.saturating_add(self.stall))
    }

    /// The bytes of the frame [`Deframer::poll_event`] returned last (empty after the next
    /// call), for readers that keep reading its payload.
    pub fn frame_bytes(&self) -> &[u8] {
        self.buf.get(..self.taken).unwrap_or_default()
    }

    /// Bytes buffered and not yet returned or skipped.
    pub const fn buffered(&self) -> usize {
        self.len - self.taken
    }

    fn release(&mut self) {
        if self.taken > 0 {
            self.drop_front(self.taken);
            self.taken = 0;
        }
    }

    /// Drops bytes up to the next magic byte after the start (all if none); returns how many.
    fn resync(&mut self) -> usize {
        let skip = self
            .buf
            .get(1..self.len)
            .and_then(|rest| rest.iter().position(|&b| b == MAGIC))
            .map_or(self.len, |at| at + 1);
        self.drop_front(skip);
        skip
    }

    fn drop_front(&mut self, n: usize) {
        let n = n.min(self.len);
        self.buf.copy_within(n..self.len, 0);
        self.len -= n;
    }
}

struct Writer<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl Writer<'_> {
    /// Room was checked by the caller (the frame's exact length).
    fn bytes(&mut self, b: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.at..self.at + b.len()) {
            dst.copy_from_slice(b);
        }
        self.at += b.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        // The CRC-32/ISO-HDLC check value of "123456789".
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    /// Frames made by another implementation (Python's zlib CRC-32; the fuzz seeds) parse.
    #[test]
    fn frames_made_elsewhere_parse() {
        let answer = include_bytes!("../fuzz/seeds/link/sign_answer.bin");
        let (frame, len) = Frame::parse(answer).unwrap();
        assert_eq!(len, answer.len());
        let Frame::SignAnswer { request: 7, answer } = frame else {
            panic!("{frame:?}")
        };
        assert_eq!(answer.certificates().count(), 2);
        let refused = include_bytes!("../fuzz/seeds/link/refused.bin");
        assert!(matches!(
            Frame::parse(refused),
            Ok((
                Frame::SignAnswer {
                    request: 8,
                    answer: Answer::Refused { code: 7, .. }
                },
                _
            ))
        ));
        let request = include_bytes!("../fuzz/seeds/link/sign_request.bin");
        assert!(matches!(
            Frame::parse(request),
            Ok((
                Frame::SignRequest {
                    request: 7,
                    id: "device",
                    ..
                },
                _
            ))
        ));
        let data = include_bytes!("../fuzz/seeds/link/tls_data.bin");
        assert!(matches!(
            Frame::parse(data),
            Ok((
                Frame::TlsData {
                    session: 3,
                    data: [0x16, 0x03, 0x01, ..]
                },
                _
            ))
        ));
        let close = include_bytes!("../fuzz/seeds/link/tls_close.bin");
        assert_eq!(
            Frame::parse(close),
            Ok((Frame::TlsClose { session: 3 }, close.len()))
        );
    }

    #[test]
    fn frames_round_trip_and_corruption_is_caught() {
        let mut chain = [0u8; 64];
        let chain = encode_chain([&b"leaf"[..], &b"issuer"[..]], &mut chain).unwrap();
        let frames = [
            Frame::SignRequest {
                request: 1,
                id: "device",
                namespace: "default",
                token: "",
                csr: &[0x30, 0x03, 1, 2, 3],
            },
            Frame::SignAnswer {
                request: 1,
                answer: Answer::Chain(chain),
            },
            Frame::SignAnswer {
                request: u32::MAX,
                answer: Answer::Refused {
                    code: 7,
                    message: "permission denied",
                },
            },
            Frame::TlsData {
                session: 1,
                data: &[1, 2, 3, 4, 5],
            },
            Frame::TlsClose { session: 0xffff },
        ];
        for f in frames {
            let mut buf = [0u8; 256];
            let wire = f.emit(&mut buf).unwrap().to_vec();
            assert_eq!(wire.len(), f.buffer_len());
            assert_eq!(Frame::parse(&wire), Ok((f, wire.len())));
            for cut in 0..wire.len() {
                assert!(matches!(
                    Frame::check(wire.get(..cut).unwrap()),
                    Err(Error::Incomplete { .. })
                ));
            }
            // Any single flipped bit is refused (magic, kind, length or CRC).
            for i in 0..wire.len() {
                for bit in 0..8 {
                    let mut bad = wire.clone();
                    bad[i] ^= 1 << bit;
                    assert!(Frame::parse(&bad).is_err(), "flip {i}.{bit} accepted");
                }
            }
        }
        let mut b = [0u8; 64];
        let wire = Frame::SignAnswer {
            request: 2,
            answer: Answer::Chain(chain),
        }
        .emit(&mut b)
        .unwrap()
        .to_vec();
        let parsed = Frame::parse(&wire).unwrap().0;
        let Frame::SignAnswer { answer, .. } = parsed else {
            panic!("{parsed:?}")
        };
        let certs: std::vec::Vec<&[u8]> = answer.certificates().collect();
        assert_eq!(certs, [&b"leaf"[..], &b"issuer"[..]]);
    }

    #[test]
    fn limits_and_bad_input() {
        let big = [0u8; MAX_PAYLOAD + 1];
        let mut out = [0u8; MAX_FRAME + 16];
        assert_eq!(
            Frame::TlsData {
                session: 0,
                data: &big
            }
            .emit(&mut out),
            Err(Error::TooLong {
                length: MAX_PAYLOAD + 3
            })
        );
        let mut small = [0u8; 5];
        assert_eq!(
            Frame::TlsData {
                session: 0,
                data: &[1, 2, 3]
            }
            .emit(&mut small),
            Err(Error::BufferTooSmall { needed: 13 })
        );
        assert_eq!(small, [0u8; 5], "output untouched");
        assert_eq!(Frame::check(&[0x00]), Err(Error::BadMagic(0)));
        assert_eq!(Frame::check(&[MAGIC, 9, 0, 0]), Err(Error::UnknownKind(9)));
        assert_eq!(
            Frame::check(&[MAGIC, 3, 0xff, 0xff]),
            Err(Error::TooLong { length: 0xffff })
        );
        // A refusal must carry a non-zero code; a chain at least one certificate.
        assert_eq!(
            Frame::SignAnswer {
                request: 1,
                answer: Answer::Refused {
                    code: 0,
                    message: ""
                }
            }
            .emit(&mut out),
            Err(Error::BadPayload)
        );
        let empty_chain = Frame::SignAnswer {
            request: 1,
            answer: Answer::Chain(&[]),
        }
        .emit(&mut out)
        .unwrap()
        .to_vec();
        assert_eq!(Frame::parse(&empty_chain), Err(Error::BadPayload));
        // Numbers are required: a sign answer without its request number, a TLS frame
        // without its session number.
        let crc_of = |body: &[u8]| crc32(body).to_be_bytes();
        for body in [
            &[2u8, 0, 3, 0, 0, 1][..],
            &[3, 0, 1, 9][..],
            &[4, 0, 1, 1][..],
        ] {
            let mut wire = std::vec![MAGIC];
            wire.extend_from_slice(body);
            wire.extend_from_slice(&crc_of(body));
            assert_eq!(Frame::parse(&wire), Err(Error::BadPayload), "{body:?}");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Frame::parse(&bytes);
        }

        #[test]
        fn tls_data_round_trips(data in proptest::collection::vec(any::<u8>(), 0..MAX_PAYLOAD - 2)) {
            let mut out = std::vec![0u8; MAX_FRAME];
            let f = Frame::TlsData { session: 9, data: &data };
            let wire = f.emit(&mut out).unwrap().to_vec();
            prop_assert_eq!(Frame::parse(&wire), Ok((f, wire.len())));
        }

        #[test]
        fn sign_requests_round_trip(
            id in "[a-z0-9-]{1,64}",
            ns in "[a-z0-9-]{1,63}",
            token in "[A-Za-z0-9._-]{0,200}",
            csr in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let f = Frame::SignRequest { request: 5, id: &id, namespace: &ns, token: &token, csr: &csr };
            let mut out = std::vec![0u8; MAX_FRAME];
            let wire = f.emit(&mut out).unwrap().to_vec();
            prop_assert_eq!(Frame::parse(&wire), Ok((f, wire.len())));
        }

        /// Valid frames with garbage between them, fed in arbitrary pieces: every frame comes
        /// out whole and in order, and every byte is in a frame, a skip or the buffer.
        #[test]
        fn deframer_recovers_every_frame_and_accounts_for_every_byte(
            // Bytes biased toward magic bytes, frame kinds and small lengths, so garbage
            // often looks like the start of a frame (and swallows the real one behind it).
            items in proptest::collection::vec(
                (any::<bool>(), proptest::collection::vec(
                    prop_oneof![Just(MAGIC), 0u8..6, any::<u8>()], 0..300)), 1..12),
            pieces in proptest::collection::vec(1usize..700, 1..40),
        ) {
            let mut stream = std::vec::Vec::new();
            let mut sent = std::vec::Vec::new();
            for (i, (is_frame, bytes)) in items.iter().enumerate() {
                if *is_frame {
                    let session = u16::try_from(i).unwrap();
                    let mut out = std::vec![0u8; MAX_FRAME];
                    let wire = Frame::TlsData { session, data: bytes }.emit(&mut out).unwrap();
                    stream.extend_from_slice(wire);
                    sent.push((session, bytes.clone()));
                } else {
                    stream.extend_from_slice(bytes);
                }
            }
            let mut buf = [0u8; MAX_FRAME];
            let stall = Duration::from_millis(100);
            let mut d = Deframer::new(&mut buf, stall);
            let (mut now, mut got, mut in_frames, mut skipped) =
                (Instant::from_millis(1), std::vec::Vec::new(), 0usize, 0usize);
            let mut drain = |d: &mut Deframer<'_>, now: Instant| {
                while let Some(e) = d.poll_event(now) {
                    match e {
                        Event::Frame(f) => {
                            in_frames += f.buffer_len();
                            if let Frame::TlsData { session, data } = f {
                                got.push((session, data.to_vec()));
                            }
                        }
                        Event::Skipped { bytes, .. } => skipped += bytes,
                    }
                }
            };
            let mut rest = stream.as_slice();
            for p in pieces.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let piece = rest.get(..*p).unwrap_or(rest);
                let taken = d.handle_bytes(piece, now);
                rest = rest.get(taken..).unwrap_or_default();
                drain(&mut d, now);
            }
            // The end of the stream: partial frames stall and are skipped.
            while d.buffered() > 0 {
                now = d.poll_timeout().unwrap();
                drain(&mut d, now);
            }
            prop_assert_eq!(in_frames + skipped, stream.len());
            // Garbage can hold no valid frame (CRC), so every frame sent comes out, in order;
            // rarely, garbage before a frame is itself a valid TlsData frame: filter to ours.
            let ours: std::vec::Vec<_> = got.into_iter().filter(|g| sent.contains(g)).collect();
            prop_assert_eq!(ours, sent);
        }
    }

    #[test]
    fn deframer_skips_with_reasons_and_stalls_on_its_own_clock() {
        let mut buf = [0u8; MAX_FRAME];
        let mut d = Deframer::new(&mut buf, Duration::from_millis(1000));
        let mut out = [0u8; 64];
        let close = Frame::TlsClose { session: 7 }
            .emit(&mut out)
            .unwrap()
            .to_vec();
        let t0 = Instant::from_millis(10);
        // Noise without a magic byte, then a frame: one skip, then the frame.
        d.handle_bytes(b"\x00noise\xff", t0);
        d.handle_bytes(&close, t0);
        assert_eq!(
            d.poll_event(t0),
            Some(Event::Skipped {
                bytes: 7,
                reason: Skip::Bad(Error::BadMagic(0))
            })
        );
        assert_eq!(
            d.poll_event(t0),
            Some(Event::Frame(Frame::TlsClose { session: 7 }))
        );
        assert_eq!(d.frame_bytes(), close.as_slice());
        assert_eq!(d.poll_event(t0), None);
        assert_eq!(d.frame_bytes(), b"");
        // A header announcing more than comes: nothing until the stall, then skipped.
        d.handle_bytes(&[MAGIC, 3, 0x09, 0xff, 1, 2], t0);
        assert_eq!(d.poll_event(t0), None);
        assert_eq!(d.poll_timeout(), Some(Instant::from_millis(1010)));
        // Time spent busy elsewhere does not count.
        d.handle_ready(Instant::from_millis(900));
        assert_eq!(d.poll_event(Instant::from_millis(1010)), None);
        assert_eq!(
            d.poll_event(Instant::from_millis(1900)),
            Some(Event::Skipped {
                bytes: 6,
                reason: Skip::Stalled { needed: 2567 }
            })
        );
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.poll_timeout(), None);
    }
}
