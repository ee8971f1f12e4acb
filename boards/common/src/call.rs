//! One mutual-TLS call from the device: a TLS 1.3 session (embedded-tls) through the link to
//! the peer the relay forwards to, presenting the identity the device agent installed (its
//! chain, leaf first, and the key from the identity slot) and verifying the server with the
//! core's path validation and SPIFFE authorization ([`sigil_core::device_tls::Provider`]);
//! then `GET /<method>` over HTTP/1.1, and the answer checked in place: status 200, and the
//! server naming the device's SPIFFE ID (`… as <id> on /<method>`), which it can only have
//! taken from this session's client certificate.
//!
//! Buffers: the TLS read buffer holds one record of [`sigil_core::link::MAX_TLS_RECORD`]
//! plaintext (Sigil's sidecar caps its records there; embedded-tls does not reassemble a
//! handshake message across records), the write buffer [`TLS_TX`] (the largest record the
//! device writes is its Certificate message: leaf and issuer, about 950 B with P-256; an image
//! checks that its largest chain fits, [`fits_chain`]). The answer is read in the read buffer,
//! not copied.

use core::time::Duration;

use embedded_io::Write as _;
use embedded_tls::blocking::{Aes128GcmSha256, TlsConfig, TlsConnection, TlsContext, TlsError};
use rand_core::CryptoRngCore;
use sigil_core::agent::{DeviceAgent, FreshKey};
use sigil_core::chain::{Options, PeerName};
use sigil_core::crypto::RustCryptoSignatureVerifier;
use sigil_core::device_tls::{Guarded, Provider, ServerCertVerifier, ServerRefusal, SigningGuard};
use sigil_core::slot::IdentitySlot;
use sigil_core::spiffe::SpiffeId;
use sigil_core::UnixTime;

use crate::link::{Link, LinkError, Port};

/// The TLS read buffer.
pub const TLS_RX: usize = sigil_core::link::TLS_READ_BUFFER;
/// The TLS write buffer: it must hold the device's Certificate record, so its chain plus
/// [`CERTIFICATE_OVERHEAD`]; the images check their chain capacity against it at compile time
/// ([`fits_chain`]).
pub const TLS_TX: usize = 1600;
/// What a Certificate record adds to the chain's DER: record header (5), content type (1) and
/// AEAD tag (16), handshake header (4), request context (1), list length (3), and per
/// certificate its length (3) and empty extensions (2), for up to 4 certificates.
pub const CERTIFICATE_OVERHEAD: usize = 5 + 1 + 16 + 4 + 1 + 3 + 4 * 5;

/// Whether a chain of up to `chain` bytes fits the TLS write buffer in one Certificate record.
pub const fn fits_chain(chain: usize) -> bool {
    chain + CERTIFICATE_OVERHEAD <= TLS_TX
}
/// The most of an answer read (an app's is a few hundred bytes).
pub const MAX_ANSWER: usize = 4096;

/// What to call, and how.
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    /// The server's SPIFFE ID, exactly.
    pub peer: SpiffeId<'a>,
    /// The device's own SPIFFE ID, which the answer must name.
    pub own: SpiffeId<'a>,
    /// The `Host` header.
    pub host: &'a str,
    /// The path, without its leading `/`.
    pub method: &'a str,
    /// Allowed skew when validating the server: the no-RTC clock is a floor that lags true
    /// time by a request's latency.
    pub skew: Duration,
    /// A TLS read waits this long for the next frame.
    pub timeout_ms: u64,
}

/// A call that succeeded: the identity's generation in the slot, and the status line's start.
#[derive(Clone, Debug)]
pub struct Answered {
    /// The slot generation the call presented.
    pub generation: u32,
    /// `HTTP/1.1 200`.
    pub status: heapless::String<16>,
}

/// Why a call failed.
#[derive(Clone, Debug)]
pub enum CallError {
    /// No identity is installed (or the slot and the agent disagree).
    NoIdentity,
    /// The device has no wall time yet (no certificate seen).
    NoWallTime,
    /// The handshake failed; the verifier's reason when it refused the server.
    Handshake(TlsError, Option<ServerRefusal>),
    /// The session failed after the handshake.
    Io(TlsError),
    /// The answer was not 200 naming the device.
    BadAnswer {
        /// Its status line's start.
        status: heapless::String<16>,
        /// Whether it named the device's SPIFFE ID.
        names_caller: bool,
    },
    /// The key refused to sign CertificateVerify: nothing signed was sent.
    Signer,
}

impl From<LinkError> for CallError {
    fn from(_: LinkError) -> Self {
        Self::Io(TlsError::IoError)
    }
}

/// One call with the identity the agent installed, in TLS session `session` (a new number for
/// every call).
///
/// # Errors
///
/// [`CallError`], with the reason.
pub fn call<P, R, K, const CHAIN: usize, const ANCHORS: usize, const BYTES: usize>(
    link: &mut Link<'_, P>,
    session: u16,
    rng: &mut R,
    agent: &DeviceAgent<'_, K, RustCryptoSignatureVerifier, CHAIN, ANCHORS, BYTES>,
    slot: &IdentitySlot<K, CHAIN>,
    call: &Call<'_>,
) -> Result<Answered, CallError>
where
    P: Port,
    R: CryptoRngCore,
    K: FreshKey,
{
    // The key and the generation from the slot; the certificates are read where they are held
    // already, in the rotation machine (not copied: 1.5 KB of stack), which published this very
    // identity to the slot (checked: same leaf).
    let lease = slot.lease().ok_or(CallError::NoIdentity)?;
    let generation = lease.generation();
    let key = lease.key().ok_or(CallError::NoIdentity)?;
    let identity = agent.rotation().identity().ok_or(CallError::NoIdentity)?;
    let chain: heapless::Vec<&[u8], 4> = identity.chain().take(4).collect();
    let leaf = chain.first().copied().unwrap_or(&[]);
    if lease.with(|id| Some(id.leaf() == leaf)) != Some(true) {
        return Err(CallError::NoIdentity);
    }
    let wall: UnixTime = agent
        .rotation()
        .wall_time(link.now())
        .ok_or(CallError::NoWallTime)?;

    let options = Options {
        skew: call.skew,
        peer: PeerName::SpiffeId(call.peer),
        ..Options::new(wall)
    };
    let verifier = ServerCertVerifier::new(
        agent.rotation().bundle().as_bundle(),
        options,
        RustCryptoSignatureVerifier,
    );
    // A signer that fails (a secure element) trips the guard: the transport then sends
    // nothing more, and the handshake ends with the signer's failure. The whole chain is sent
    // (leaf, issuer): a server that validates a client with the intermediates it sends
    // (daprd, go-spiffe, Go's crypto/tls) needs the issuer.
    let guard = SigningGuard::new();
    let mut provider = Provider::new(rng, Some((&chain, key)), verifier).with_guard(&guard);
    let config = TlsConfig::new();
    let mut rx = [0u8; TLS_RX];
    let mut tx = [0u8; TLS_TX];
    let transport = Guarded::new(link.tls(session, call.timeout_ms), &guard);
    let mut tls: TlsConnection<'_, _, Aes128GcmSha256> =
        TlsConnection::new(transport, &mut rx, &mut tx);
    if let Err(e) = tls.open(TlsContext::new(&config, &mut provider)) {
        let why = provider.verifier().refusal();
        if let Ok(channel) = tls.close() {
            channel.into_inner().close();
        }
        if guard.failure().is_some() {
            return Err(CallError::Signer);
        }
        return Err(CallError::Handshake(e, why));
    }
    if !provider.verifier().is_verified() {
        return Err(CallError::Handshake(TlsError::InvalidCertificate, None));
    }

    // Written piece by piece into the TLS write buffer (one record at the flush).
    for part in [
        "GET /",
        call.method,
        " HTTP/1.1\r\nHost: ",
        call.host,
        "\r\nConnection: close\r\n\r\n",
    ] {
        tls.write_all(part.as_bytes()).map_err(CallError::Io)?;
    }
    tls.flush().map_err(CallError::Io)?;

    // The answer is read in place, in the TLS read buffer, record by record (no copy): its
    // status line, and the server's echo of who called anywhere after it.
    let mut status = heapless::String::<16>::new();
    let caller = [" as ", call.own.as_str(), " on /", call.method];
    let mut names_caller = Finder::new(&caller);
    let mut peer_closed = false;
    let mut answered = 0usize;
    while answered < MAX_ANSWER {
        let mut record = match tls.read_buffered() {
            Ok(record) => record,
            Err(TlsError::ConnectionClosed) => {
                peer_closed = true;
                break;
            }
            Err(e) => return Err(CallError::Io(e)),
        };
        let bytes = record.pop_all();
        if bytes.is_empty() {
            peer_closed = true;
            break;
        }
        for &b in bytes {
            if status.len() < 12 {
                // A non-ASCII byte may not fit; the status check then fails, as it should.
                let _ = status.push(char::from(b));
            }
            names_caller.push(b);
        }
        answered += bytes.len();
    }
    // After the server's close_notify nothing more is sent in this session (TLS 1.3 needs no
    // answering alert); dropping the connection ends it at the relay with TlsClose.
    if !peer_closed {
        if let Ok(channel) = tls.close() {
            channel.into_inner().close();
        }
    }
    if status.as_str() != "HTTP/1.1 200" || !names_caller.found() {
        return Err(CallError::BadAnswer {
            status,
            names_caller: names_caller.found(),
        });
    }
    Ok(Answered { generation, status })
}

/// A fixed name for embedded-tls's error (its `Debug` would link `core::fmt`).
pub const fn tls_name(e: &TlsError) -> &'static str {
    match e {
        TlsError::ConnectionClosed => "connection closed",
        TlsError::IoError => "I/O error",
        TlsError::InvalidCertificate => "invalid certificate",
        TlsError::InvalidSignature => "invalid signature",
        TlsError::AbortHandshake(..) => "handshake aborted by an alert",
        TlsError::DecodeError => "decode error",
        TlsError::InsufficientSpace => "insufficient space",
        _ => "TLS error",
    }
}

/// Finds a text, given in pieces, in a byte stream seen one byte at a time, with no buffer: it
/// keeps the length of the longest prefix of the text that ends the bytes seen (the
/// Knuth–Morris–Pratt automaton, its fallback computed when needed instead of tabled: a few
/// comparisons per byte for a text of about a hundred bytes).
pub struct Finder<'a> {
    pieces: &'a [&'a str],
    len: usize,
    matched: usize,
    found: bool,
}

impl<'a> Finder<'a> {
    /// A finder of the concatenation of `pieces`.
    pub fn new(pieces: &'a [&'a str]) -> Self {
        Self {
            pieces,
            len: pieces.iter().map(|p| p.len()).sum(),
            matched: 0,
            found: false,
        }
    }

    /// Byte `i` of the text.
    fn at(&self, mut i: usize) -> u8 {
        for p in self.pieces {
            match p.as_bytes().get(i) {
                Some(&b) => return b,
                None => i -= p.len(),
            }
        }
        0
    }

    /// The next byte of the stream.
    pub fn push(&mut self, b: u8) {
        if self.found || self.len == 0 {
            return;
        }
        // The longest k <= matched + 1 with text[..k] == (text[..matched] + b)[matched + 1 - k..].
        let seen = self.matched + 1;
        self.matched = (1..=seen.min(self.len))
            .rev()
            .find(|&k| {
                (0..k).all(|j| {
                    let from = seen - k + j;
                    let c = if from == self.matched {
                        b
                    } else {
                        self.at(from)
                    };
                    self.at(j) == c
                })
            })
            .unwrap_or(0);
        if self.matched == self.len {
            self.found = true;
        }
    }

    /// Whether the text has been seen.
    pub const fn found(&self) -> bool {
        self.found
    }
}
