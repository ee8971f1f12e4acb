//! embedded-tls 0.19 glue (feature `tls`): the device side of mutual TLS.
//!
//! [`Provider`] is the [`CryptoProvider`] a device hands to `TlsConnection::open`:
//!
//! - its [`verifier`](CryptoProvider::verifier) is a [`ServerCertVerifier`]: the server's chain goes
//!   through this crate's [`chain::verify`] (the same function Sentry, the sidecar and the
//!   rotation machine use) for `serverAuth`, and the leaf must carry the expected SPIFFE
//!   identity ([`PeerName`]); then the server's CertificateVerify signature is checked over the
//!   handshake transcript with the leaf's key. embedded-tls's default `verifier()` returns
//!   `Unimplemented` and the connection then skips verification silently: a device must never
//!   run without this one.
//! - its [`signer`](CryptoProvider::signer) and
//!   [`client_cert_chain`](CryptoProvider::client_cert_chain) are the device's identity: any
//!   [`Signer`] (a software key, a secure element) and its certificate chain, leaf first. The
//!   whole chain goes in the TLS Certificate message, so a server that validates a client
//!   with the intermediates it sends (a stock daprd, go-spiffe, Go's `crypto/tls`) accepts
//!   the device. Stock embedded-tls 0.19 sends one certificate only; `client_cert_chain` is
//!   the addition Sigil carries (`core/vendor/README.md`).
//! - its RNG is the caller's (the board's DRBG).
//!
//! embedded-tls reduces every refusal to one error code; [`ServerCertVerifier::refusal`] keeps the
//! precise reason.
//!
//! Two rules for the caller, both from embedded-tls 0.19's handshake:
//!
//! - **After `open()` returns `Ok`, check [`ServerCertVerifier::is_verified`]** (through
//!   [`Provider::verifier`]). embedded-tls does not require the server to send Certificate and
//!   CertificateVerify at all: a server that skips them gets a successful `open()` without
//!   this verifier ever finishing (and with no [`ServerRefusal`] either). Only `is_verified()` says
//!   the server proved its identity.
//! - As with any TLS 1.3 client, a server's refusal of *our* certificate arrives after the
//!   handshake: a connection is authenticated only after its first application round trip.
//!
//! **A signer that fails** (a secure element that refuses or times out) ends the handshake
//! with an error, never a panic: embedded-tls 0.19 calls the infallible `SignerMut::sign`
//! for CertificateVerify, so the provider's signer catches the failure there, records it
//! ([`Provider::signing_failure`], and the [`SigningGuard`] shared with a [`Guarded`]
//! transport) and hands back an empty signature; the guarded transport then refuses to write,
//! so that CertificateVerify never leaves the device and `open()` fails with an I/O error the
//! caller maps to the recorded failure. Without a guard embedded-tls goes on and sends the
//! empty signature and Finished, so `open()` may even return `Ok`: the server then refuses
//! the session at the first read; a caller without a guard must check
//! [`Provider::signing_failure`] after `open()`. Either way no panic, and the next handshake
//! (which clears the record and the guard) signs again.

use core::cell::Cell;

use embedded_tls::blocking::{
    Aes128GcmSha256, Certificate, CertificateChain, CertificateEntryRef, CertificateRef,
    CertificateVerifyRef, CryptoProvider, TlsError, TlsVerifier, MAX_CLIENT_INTERMEDIATES,
};
use embedded_tls::SignatureScheme;
use rand_core::CryptoRngCore;
use sha2::{Digest as _, Sha256};

use crate::cert;
use crate::chain::{self, Options, PeerName, TrustBundle, Usage, MAX_INTERMEDIATES};
use crate::crypto::{PublicKey, Scheme, SignError, SignatureVerifier, Signer, MAX_SIGNATURE_LEN};

/// The context string of a server's CertificateVerify (RFC 8446 §4.4.3).
const SERVER_CONTEXT: &[u8] = b"TLS 1.3, server CertificateVerify\0";

/// Why the server was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerRefusal {
    /// The server sent no certificate.
    NoCertificate,
    /// The server sent a raw public key, not an X.509 certificate.
    NotX509,
    /// More intermediates than [`MAX_INTERMEDIATES`].
    TooManyCertificates,
    /// The chain does not validate, or the leaf is not the expected peer.
    Path(chain::Error),
    /// The leaf's key could not be read.
    BadKey,
    /// CertificateVerify arrived before a certificate was accepted.
    NoVerifiedCertificate,
    /// The verifier was given no peer name ([`PeerName::Unchecked`]): any certificate of the
    /// trust domain, another device's included, would pass for the server.
    NoPeerName,
    /// The server signed with a scheme that does not fit its key, or one not supported here.
    UnsupportedScheme(u16),
    /// The CertificateVerify signature does not verify.
    BadSignature,
}

impl ServerRefusal {
    /// A short fixed name, for logs that cannot afford `core::fmt` (firmware).
    pub const fn name(&self) -> &'static str {
        match self {
            Self::NoCertificate => "no-certificate",
            Self::NotX509 => "not-x509",
            Self::TooManyCertificates => "too-many-certificates",
            Self::Path(e) => e.kind.name(),
            Self::BadKey => "bad-key",
            Self::NoVerifiedCertificate => "no-verified-certificate",
            Self::NoPeerName => "no-peer-name",
            Self::UnsupportedScheme(_) => "unsupported-scheme",
            Self::BadSignature => "bad-signature",
        }
    }
}

impl core::fmt::Display for ServerRefusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoCertificate => f.write_str("server sent no certificate"),
            Self::NotX509 => f.write_str("server sent a raw public key, not a certificate"),
            Self::TooManyCertificates => write!(
                f,
                "server chain has more than {MAX_INTERMEDIATES} intermediates"
            ),
            Self::Path(e) => write!(f, "server certificate refused: {e}"),
            Self::BadKey => f.write_str("server certificate key unreadable"),
            Self::NoVerifiedCertificate => f.write_str("CertificateVerify before a certificate"),
            Self::NoPeerName => f.write_str("no expected server identity configured"),
            Self::UnsupportedScheme(s) => write!(f, "server signature scheme 0x{s:04x} refused"),
            Self::BadSignature => f.write_str("server CertificateVerify signature invalid"),
        }
    }
}

impl core::error::Error for ServerRefusal {}

/// The server's leaf key, copied out of the handshake record between the two verifier calls.
#[derive(Clone, Copy)]
enum LeafKey {
    EcP256 { point: [u8; 65], len: usize },
    Ed25519([u8; 32]),
}

impl LeafKey {
    fn copy(key: PublicKey<'_>) -> Option<Self> {
        match key {
            PublicKey::EcP256(p) => {
                let mut point = [0u8; 65];
                point.get_mut(..p.len())?.copy_from_slice(p);
                Some(Self::EcP256 {
                    point,
                    len: p.len(),
                })
            }
            PublicKey::Ed25519(k) => Some(Self::Ed25519(*k)),
        }
    }

    fn get(&self) -> Option<PublicKey<'_>> {
        match self {
            Self::EcP256 { point, len } => point.get(..*len).map(PublicKey::EcP256),
            Self::Ed25519(k) => Some(PublicKey::Ed25519(k)),
        }
    }
}

/// Verifies a TLS server for a device: path validation to the trust bundle for `serverAuth`,
/// the peer's SPIFFE identity, and the CertificateVerify signature.
pub struct ServerCertVerifier<'a, V, const N: usize> {
    anchors: TrustBundle<'a, N>,
    options: Options<'a>,
    verifier: V,
    transcript: Option<Sha256>,
    key: Option<LeafKey>,
    refusal: Option<ServerRefusal>,
    verified: bool,
}

impl<'a, V: SignatureVerifier, const N: usize> ServerCertVerifier<'a, V, N> {
    /// A verifier accepting servers whose chain leads to `anchors` under `options` (the time,
    /// skew, budget and — above all — `options.peer`: pass [`PeerName::SpiffeId`] for one
    /// server, [`PeerName::TrustDomain`] for any in a trust domain; with
    /// [`PeerName::Unchecked`] every server is refused with [`ServerRefusal::NoPeerName`]). The usage
    /// is always `serverAuth`. Each handshake starts from a clean state (see
    /// [`ServerCertVerifier::begin`]).
    pub fn new(anchors: TrustBundle<'a, N>, options: Options<'a>, verifier: V) -> Self {
        Self {
            anchors,
            options: Options {
                usage: Usage::ServerAuth,
                ..options
            },
            verifier,
            transcript: None,
            key: None,
            refusal: None,
            verified: false,
        }
    }

    /// Forgets everything about the previous handshake: [`Provider`] calls this when
    /// embedded-tls starts a new one (it asks for randomness for the ClientHello before any
    /// server message), so a verdict can never carry over from one session to the next.
    pub fn begin(&mut self) {
        self.transcript = None;
        self.key = None;
        self.refusal = None;
        self.verified = false;
    }

    /// Why the last server was refused, if it was.
    pub const fn refusal(&self) -> Option<ServerRefusal> {
        self.refusal
    }

    /// Whether the server's certificate and its CertificateVerify signature both checked out.
    /// A session is only authenticated if this is true after `open()`: embedded-tls lets a
    /// server skip both messages.
    pub const fn is_verified(&self) -> bool {
        self.verified
    }

    /// The name the server must carry.
    pub const fn peer(&self) -> &PeerName<'a> {
        &self.options.peer
    }

    fn refuse(&mut self, why: ServerRefusal, error: TlsError) -> Result<(), TlsError> {
        self.refusal = Some(why);
        self.verified = false;
        self.key = None;
        self.transcript = None;
        Err(error)
    }

    fn check_certificate(&self, cert: &CertificateRef<'_>) -> Result<LeafKey, ServerRefusal> {
        if matches!(self.options.peer, PeerName::Unchecked) {
            return Err(ServerRefusal::NoPeerName);
        }
        let mut der: heapless::Vec<&[u8], { MAX_INTERMEDIATES + 1 }> = heapless::Vec::new();
        for entry in &cert.entries {
            let CertificateEntryRef::X509(bytes) = entry else {
                return Err(ServerRefusal::NotX509);
            };
            der.push(bytes)
                .map_err(|_| ServerRefusal::TooManyCertificates)?;
        }
        let (leaf, intermediates) = der.split_first().ok_or(ServerRefusal::NoCertificate)?;
        chain::verify(
            leaf,
            intermediates,
            &self.anchors,
            &self.verifier,
            &self.options,
        )
        .map_err(ServerRefusal::Path)?;
        let parsed = cert::Certificate::parse(leaf).map_err(|_| ServerRefusal::BadKey)?;
        let key = parsed.public_key().map_err(|_| ServerRefusal::BadKey)?;
        LeafKey::copy(key).ok_or(ServerRefusal::BadKey)
    }
}

impl<V: SignatureVerifier, const N: usize> TlsVerifier<Aes128GcmSha256>
    for ServerCertVerifier<'_, V, N>
{
    /// The server is authorized by SPIFFE ID (`options.peer`), not by host name: a name set
    /// in the TLS config is sent as SNI only.
    fn set_hostname_verification(&mut self, _hostname: &str) -> Result<(), TlsError> {
        Ok(())
    }

    fn verify_certificate(
        &mut self,
        transcript: &Sha256,
        cert: CertificateRef<'_>,
    ) -> Result<(), TlsError> {
        self.verified = false;
        match self.check_certificate(&cert) {
            Ok(key) => {
                // The transcript already covers the Certificate message; CertificateVerify
                // signs exactly this (RFC 8446 §4.4.3).
                self.transcript = Some(transcript.clone());
                self.key = Some(key);
                self.refusal = None;
                Ok(())
            }
            Err(why) => self.refuse(why, TlsError::InvalidCertificate),
        }
    }

    fn verify_signature(&mut self, verify: CertificateVerifyRef<'_>) -> Result<(), TlsError> {
        let (Some(transcript), Some(key)) = (self.transcript.take(), self.key.take()) else {
            return self.refuse(
                ServerRefusal::NoVerifiedCertificate,
                TlsError::InvalidCertificate,
            );
        };
        let code = verify.signature_scheme.as_u16();
        let scheme = match verify.signature_scheme {
            SignatureScheme::EcdsaSecp256r1Sha256 => Scheme::EcdsaP256Sha256,
            SignatureScheme::Ed25519 => Scheme::Ed25519,
            _ => {
                return self.refuse(
                    ServerRefusal::UnsupportedScheme(code),
                    TlsError::InvalidSignature,
                )
            }
        };
        let Some(public) = key.get() else {
            return self.refuse(ServerRefusal::BadKey, TlsError::InvalidCertificate);
        };
        // The scheme must be the leaf key's, whatever the signature verifier checks itself.
        if !scheme.fits(public) {
            return self.refuse(
                ServerRefusal::UnsupportedScheme(code),
                TlsError::InvalidSignature,
            );
        }
        let mut message = [0u8; 64 + SERVER_CONTEXT.len() + 32];
        let (pad, rest) = message.split_at_mut(64);
        pad.fill(0x20);
        let (context, hash) = rest.split_at_mut(SERVER_CONTEXT.len());
        context.copy_from_slice(SERVER_CONTEXT);
        hash.copy_from_slice(&transcript.finalize());
        match self
            .verifier
            .verify(scheme, public, &message, verify.signature)
        {
            Ok(()) => {
                self.verified = true;
                Ok(())
            }
            Err(
                crate::crypto::SignatureError::BadKey
                | crate::crypto::SignatureError::UnsupportedScheme(_),
            ) => self.refuse(
                ServerRefusal::UnsupportedScheme(code),
                TlsError::InvalidSignature,
            ),
            Err(_) => self.refuse(ServerRefusal::BadSignature, TlsError::InvalidSignature),
        }
    }
}

/// A signature as embedded-tls puts it on the wire (DER for ECDSA).
#[derive(Clone, Debug)]
pub struct SignatureBytes(heapless::Vec<u8, MAX_SIGNATURE_LEN>);

impl AsRef<[u8]> for SignatureBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Whether the device's signer failed in the handshake: shared by a [`Provider`]
/// ([`Provider::with_guard`]) and a [`Guarded`] transport, which stops writing once it trips.
#[derive(Debug, Default)]
pub struct SigningGuard(Cell<Option<SignError>>);

impl SigningGuard {
    /// A guard that has not tripped.
    pub const fn new() -> Self {
        Self(Cell::new(None))
    }

    /// The signer's failure, if it failed.
    pub fn failure(&self) -> Option<SignError> {
        self.0.get()
    }

    /// Clears it for the next handshake.
    pub fn reset(&self) {
        self.0.set(None);
    }
}

/// A transport that refuses to write once its [`SigningGuard`] tripped: the CertificateVerify
/// embedded-tls builds around a failed signature never leaves the device.
#[derive(Debug)]
pub struct Guarded<'g, T> {
    inner: T,
    guard: &'g SigningGuard,
}

impl<'g, T> Guarded<'g, T> {
    /// `inner`, guarded by `guard`.
    pub const fn new(inner: T, guard: &'g SigningGuard) -> Self {
        Self { inner, guard }
    }

    /// The transport inside.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

/// A [`Guarded`] transport's error: its own, or the refusal to write after a signer failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardedError<E> {
    /// The signer failed: nothing more is written in this session.
    SignerFailed,
    /// The transport's own error.
    Io(E),
}

impl<E: embedded_io::Error> embedded_io::Error for GuardedError<E> {
    fn kind(&self) -> embedded_io::ErrorKind {
        match self {
            Self::SignerFailed => embedded_io::ErrorKind::Other,
            Self::Io(e) => e.kind(),
        }
    }
}

impl<E: core::fmt::Debug> core::fmt::Display for GuardedError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::SignerFailed => f.write_str("the signer failed: nothing more is sent"),
            Self::Io(e) => write!(f, "transport: {e:?}"),
        }
    }
}

impl<E: core::fmt::Debug> core::error::Error for GuardedError<E> {}

impl<T: embedded_io::ErrorType> embedded_io::ErrorType for Guarded<'_, T> {
    type Error = GuardedError<T::Error>;
}

impl<T: embedded_io::Read> embedded_io::Read for Guarded<'_, T> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        self.inner.read(buf).map_err(GuardedError::Io)
    }
}

impl<T: embedded_io::Write> embedded_io::Write for Guarded<'_, T> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        if self.guard.failure().is_some() {
            return Err(GuardedError::SignerFailed);
        }
        self.inner.write(buf).map_err(GuardedError::Io)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        if self.guard.failure().is_some() {
            return Err(GuardedError::SignerFailed);
        }
        self.inner.flush().map_err(GuardedError::Io)
    }
}

/// Adapts a [`Signer`] (software key or secure element) to the `signature` trait embedded-tls
/// calls for CertificateVerify, recording a failure instead of panicking (see the module doc).
struct TlsSigner<'k, K> {
    key: &'k mut K,
    failed: &'k Cell<Option<SignError>>,
    guard: Option<&'k SigningGuard>,
}

impl<K: Signer> TlsSigner<'_, K> {
    fn sign_bytes(&mut self, message: &[u8]) -> Result<SignatureBytes, SignError> {
        let mut buf = [0u8; MAX_SIGNATURE_LEN];
        let sig = self.key.sign(message, &mut buf)?;
        heapless::Vec::from_slice(sig)
            .map(SignatureBytes)
            .map_err(|_| SignError::BufferTooSmall { needed: sig.len() })
    }
}

impl<K: Signer> signature::SignerMut<SignatureBytes> for TlsSigner<'_, K> {
    fn try_sign(&mut self, message: &[u8]) -> Result<SignatureBytes, signature::Error> {
        self.sign_bytes(message)
            .map_err(|_| signature::Error::new())
    }

    /// What embedded-tls calls: never panics (the trait's default would).
    fn sign(&mut self, message: &[u8]) -> SignatureBytes {
        self.sign_bytes(message).unwrap_or_else(|e| {
            self.failed.set(Some(e));
            if let Some(g) = self.guard {
                g.0.set(Some(e));
            }
            SignatureBytes(heapless::Vec::new())
        })
    }
}

/// The device's [`CryptoProvider`]: its RNG, its identity (certificate chain and key) and a
/// [`ServerCertVerifier`]. TLS 1.3 with AES-128-GCM/SHA-256 on P-256.
pub struct Provider<'a, R, K, V, const N: usize> {
    rng: &'a mut R,
    verifier: ServerCertVerifier<'a, V, N>,
    identity: Option<(&'a [&'a [u8]], K)>,
    failed: Cell<Option<SignError>>,
    guard: Option<&'a SigningGuard>,
}

impl<'a, R, K, V, const N: usize> Provider<'a, R, K, V, N>
where
    R: CryptoRngCore,
    K: Signer,
    V: SignatureVerifier,
{
    /// A provider presenting `identity` (its certificates as DER, leaf first, and the leaf's
    /// key; `None`, or no certificates, sends an empty Certificate, which a mutual-TLS server
    /// refuses) and verifying the server with `verifier`. The leaf and at most
    /// [`MAX_CLIENT_INTERMEDIATES`] certificates after it are sent (the rest are left out).
    pub fn new(
        rng: &'a mut R,
        identity: Option<(&'a [&'a [u8]], K)>,
        verifier: ServerCertVerifier<'a, V, N>,
    ) -> Self {
        Self {
            rng,
            verifier,
            identity,
            failed: Cell::new(None),
            guard: None,
        }
    }

    /// Trips `guard` too when the signer fails, so that a [`Guarded`] transport sends nothing
    /// more.
    #[must_use]
    pub const fn with_guard(mut self, guard: &'a SigningGuard) -> Self {
        self.guard = Some(guard);
        self
    }

    /// Why the signer failed in the last handshake, if it did (with a guard, `open()` then
    /// failed; without one, check this after `open()`: the server will refuse the session).
    pub fn signing_failure(&self) -> Option<SignError> {
        self.failed.get()
    }

    /// The verifier, to read [`ServerCertVerifier::refusal`] after a failed handshake.
    pub const fn verifier(&self) -> &ServerCertVerifier<'a, V, N> {
        &self.verifier
    }
}

impl<R, K, V, const N: usize> CryptoProvider for Provider<'_, R, K, V, N>
where
    R: CryptoRngCore,
    K: Signer,
    V: SignatureVerifier,
{
    type CipherSuite = Aes128GcmSha256;
    type Signature = SignatureBytes;

    /// embedded-tls asks for randomness first thing in a handshake (the ClientHello's random
    /// and key share), before any server message: the verifier starts clean here.
    fn rng(&mut self) -> impl CryptoRngCore {
        self.verifier.begin();
        self.failed.set(None);
        if let Some(g) = self.guard {
            g.reset();
        }
        &mut *self.rng
    }

    fn verifier(&mut self) -> Result<&mut impl TlsVerifier<Aes128GcmSha256>, TlsError> {
        Ok(&mut self.verifier)
    }

    fn signer(
        &mut self,
    ) -> Result<(impl signature::SignerMut<SignatureBytes>, SignatureScheme), TlsError> {
        let (_, key) = self.identity.as_mut().ok_or(TlsError::InvalidPrivateKey)?;
        let failed = &self.failed;
        let guard = self.guard;
        let scheme = match key.scheme() {
            Scheme::EcdsaP256Sha256 => SignatureScheme::EcdsaSecp256r1Sha256,
            Scheme::Ed25519 => SignatureScheme::Ed25519,
            // Fixed-size (P1363) ECDSA is not a TLS 1.3 encoding.
            _ => return Err(TlsError::InvalidSignatureScheme),
        };
        Ok((TlsSigner { key, failed, guard }, scheme))
    }

    fn client_cert(&mut self) -> Option<Certificate<impl AsRef<[u8]>>> {
        let (chain, _) = self.identity.as_ref()?;
        chain.first().map(|leaf| Certificate::X509(*leaf))
    }

    fn client_cert_chain(&mut self) -> Option<CertificateChain<impl AsRef<[u8]>>> {
        let (chain, _) = self.identity.as_ref()?;
        let (leaf, rest) = chain.split_first()?;
        Some(CertificateChain {
            cert: Certificate::X509(*leaf),
            intermediates: rest
                .iter()
                .copied()
                .take(MAX_CLIENT_INTERMEDIATES)
                .collect(),
        })
    }
}
