//! The device's mutual-TLS glue (`sigil_core::device_tls`, feature `tls`) against an independent peer:
//! an embedded-tls 0.19 blocking client using [`Provider`] talks to a rustls 0.23 (ring) server
//! over real loopback TCP. The PKI comes from rcgen (root → issuer → leaves, ECDSA P-256).
//!
//! The server requires a client certificate and checks it with rustls's stock
//! `WebPkiClientVerifier` trusting the root only, as daprd does: the device sends its chain
//! (leaf and issuer; embedded-tls with the `client_cert_chain` addition Sigil carries), and the
//! server validates it with the issuer the device sent. It reports what it saw of the client
//! (its URI SANs and how many certificates it sent) through a channel, then answers "ping"
//! with "pong".
//!
//! Every refusal is asserted through [`ServerCertVerifier::refusal`], which keeps the precise reason
//! embedded-tls reduces to one error code.
//!
//! A small hand-made TLS 1.3 server (ring primitives) sends the flights rustls never would: no
//! Certificate, no CertificateVerify, or CertificateVerify first. embedded-tls 0.19 completes the
//! handshake without Certificate/CertificateVerify, so `is_verified()` after `open()` is what
//! keeps a device from talking to an unauthenticated server.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use embedded_io_adapters::std::FromStd;
use embedded_tls::blocking::{
    Aes128GcmSha256, CryptoProvider, TlsConfig, TlsConnection, TlsContext, TlsError,
};
use rand_core::OsRng;
use rcgen::{CertifiedIssuer, KeyPair, SignatureAlgorithm, PKCS_ECDSA_P256_SHA256, PKCS_ED25519};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use sigil_board_common::replay::Replay;
use sigil_core::chain::{ErrorKind, NameMismatch, Options, PeerName, Position, TrustBundle};
use sigil_core::crypto::{PublicKey, RustCryptoSignatureVerifier, Scheme, SignError, Signer};
use sigil_core::device_tls::{Provider, ServerCertVerifier, ServerRefusal, SigningGuard};
use sigil_core::key::SoftwareKey;
use sigil_core::spiffe::SpiffeId;
use sigil_core::UnixTime;
use sigil_tests::fixtures::{ca_params, p256_key, workload_params};

const SERVER_ID: &str = "spiffe://localhost/ns/default/echo";
const CLIENT_ID: &str = "spiffe://localhost/ns/default/device";
const OTHER_ID: &str = "spiffe://localhost/ns/default/other";

/// A safety net against a hung peer; no test relies on it elapsing.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Anchors a test's bundle can hold.
const ANCHORS: usize = 2;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// root → issuer → {server leaf, client leaf}; keys as PKCS#8 DER.
struct Pki {
    root: Vec<u8>,
    issuer: Vec<u8>,
    server_leaf: Vec<u8>,
    server_key: Vec<u8>,
    server_not_after: u64,
    client_leaf: Vec<u8>,
    client_key: Vec<u8>,
}

impl Pki {
    /// The device's chain as it sends it: leaf, then issuer.
    fn client_chain(&self) -> [&[u8]; 2] {
        [&self.client_leaf, &self.issuer]
    }
}

fn pki_with(
    server_alg: &'static SignatureAlgorithm,
    client_alg: &'static SignatureAlgorithm,
) -> Pki {
    let now = now_secs();
    let day = 86_400;
    pki_issued(
        (server_alg, client_alg),
        (now - day, now + 30 * day),
        (now - 3600, now + day),
    )
}

/// Root → issuer (both valid over `ca`) → {server leaf, client leaf} (both over `leaves`),
/// the leaves' keys of the given algorithms.
fn pki_issued(
    (server_alg, client_alg): (&'static SignatureAlgorithm, &'static SignatureAlgorithm),
    ca: (u64, u64),
    leaves: (u64, u64),
) -> Pki {
    let root = CertifiedIssuer::self_signed(ca_params("Root", ca.0, ca.1), p256_key()).unwrap();
    let issuer =
        CertifiedIssuer::signed_by(ca_params("Issuer", ca.0, ca.1), p256_key(), &root).unwrap();
    let server_not_after = leaves.1;
    let server_key = KeyPair::generate_for(server_alg).unwrap();
    let server_leaf = workload_params(SERVER_ID, leaves.0, server_not_after)
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = KeyPair::generate_for(client_alg).unwrap();
    let client_leaf = workload_params(CLIENT_ID, leaves.0, leaves.1)
        .signed_by(&client_key, &issuer)
        .unwrap();
    Pki {
        root: root.der().to_vec(),
        issuer: issuer.der().to_vec(),
        server_leaf: server_leaf.der().to_vec(),
        server_key: server_key.serialize_der(),
        server_not_after,
        client_leaf: client_leaf.der().to_vec(),
        client_key: client_key.serialize_der(),
    }
}

fn pki() -> Pki {
    pki_with(&PKCS_ECDSA_P256_SHA256, &PKCS_ECDSA_P256_SHA256)
}

/// A different root (own name, own key): chains from [`pki`] do not lead to it.
fn foreign_root() -> Vec<u8> {
    let now = now_secs();
    CertifiedIssuer::self_signed(
        ca_params("Foreign root", now - 86_400, now + 86_400),
        p256_key(),
    )
    .unwrap()
    .der()
    .to_vec()
}

// ---------------------------------------------------------------------------------------------
// The rustls server

/// What the server saw of one connection.
#[derive(Debug)]
enum Report {
    /// The handshake completed; the client's leaf carries these URI SANs, and it sent this
    /// many certificates.
    Client(Vec<String>, usize),
    /// The handshake completed without a client certificate (never, with client auth required).
    NoClientCertificate,
    /// The handshake failed in TLS (our alert, the client's alert, a bad certificate...).
    Tls(rustls::Error),
    /// The handshake failed on the socket (e.g. the client hung up).
    Io(std::io::ErrorKind),
}

struct Server {
    addr: SocketAddr,
    report: mpsc::Receiver<Report>,
    thread: JoinHandle<()>,
}

impl Server {
    /// What the server saw, once it is done with its one connection.
    fn finish(self) -> Report {
        let report = self.report.recv_timeout(IO_TIMEOUT).unwrap();
        self.thread.join().unwrap();
        report
    }
}

/// Serves one connection with `config`: handshake, report, then "ping" → "pong".
fn serve(config: ServerConfig) -> Server {
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, report) = mpsc::channel();
    let thread = thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        sock.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut conn = ServerConnection::new(config).unwrap();
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut sock) {
                // complete_io has already written our alert, if any.
                let seen = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    Some(tls) => Report::Tls(tls.clone()),
                    None => Report::Io(e.kind()),
                };
                tx.send(seen).unwrap();
                return;
            }
        }
        let sent = conn.peer_certificates().map_or(0, <[_]>::len);
        let seen = match conn.peer_certificates().and_then(<[_]>::first) {
            Some(leaf) => {
                let ee = webpki::EndEntityCert::try_from(leaf).unwrap();
                Report::Client(ee.valid_uri_names().map(str::to_owned).collect(), sent)
            }
            None => Report::NoClientCertificate,
        };
        tx.send(seen).unwrap();
        // The client may have hung up already: errors past this point are not ours to judge.
        let mut stream = rustls::Stream::new(&mut conn, &mut sock);
        let mut ping = [0u8; 4];
        if stream.read_exact(&mut ping).is_ok() && &ping == b"ping" {
            let _ = stream.write_all(b"pong");
            let _ = stream.flush();
        }
        conn.send_close_notify();
        let _ = conn.complete_io(&mut sock);
    });
    Server {
        addr,
        report,
        thread,
    }
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn chain(pki: &Pki) -> Vec<CertificateDer<'static>> {
    vec![
        CertificateDer::from(pki.server_leaf.clone()),
        CertificateDer::from(pki.issuer.clone()),
    ]
}

fn pkcs8(der: &[u8]) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.to_vec()))
}

/// TLS 1.3 only, client certificates required and checked against the issuer, records small
/// enough for the device's 4 KiB receive buffer, no session tickets. The server's certificate
/// comes from `resolver`, or is [`Pki`]'s server leaf and key.
fn server_config(pki: &Pki, resolver: Option<Arc<dyn ResolvesServerCert>>) -> ServerConfig {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(pki.root.clone())).unwrap();
    let client_verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), ring())
        .build()
        .unwrap();
    let builder = ServerConfig::builder_with_provider(ring())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(client_verifier);
    let mut config = match resolver {
        Some(resolver) => builder.with_cert_resolver(resolver),
        None => builder
            .with_single_cert(chain(pki), pkcs8(&pki.server_key))
            .unwrap(),
    };
    config.max_fragment_size = Some(sigil_core::link::MAX_TLS_RECORD);
    config.send_tls13_tickets = 0;
    config
}

/// Serves a fixed chain and signing key, which rustls then does not check against each other.
#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

fn fixed_cert(pki: &Pki, signing_key_pkcs8: &[u8]) -> Arc<dyn ResolvesServerCert> {
    let key = rustls::crypto::ring::sign::any_ecdsa_type(&pkcs8(signing_key_pkcs8)).unwrap();
    Arc::new(FixedCert(Arc::new(CertifiedKey::new(chain(pki), key))))
}

// ---------------------------------------------------------------------------------------------
// The device

/// How far the device got.
#[derive(Debug)]
struct Outcome {
    /// `TlsConnection::open`.
    open: Result<(), TlsError>,
    /// The "ping" → "pong" round trip, if `open` succeeded: the bytes read, or the first error.
    reply: Option<Result<Vec<u8>, TlsError>>,
    /// What the device's verifier concluded (filled in by [`dial_as`]).
    refusal: Option<ServerRefusal>,
    verified: bool,
}

impl Outcome {
    fn got_pong(&self) -> bool {
        matches!(&self.reply, Some(Ok(bytes)) if bytes == b"pong")
    }
}

type DeviceConnection<'a> = TlsConnection<'a, FromStd<TcpStream>, Aes128GcmSha256>;

/// Connects to `addr` as a device with `provider`, runs `TlsConnection::open` and hands its
/// result and the connection to `then`.
fn open_then<T>(
    addr: SocketAddr,
    provider: impl CryptoProvider<CipherSuite = Aes128GcmSha256>,
    then: impl FnOnce(Result<(), TlsError>, &mut DeviceConnection<'_>) -> T,
) -> T {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    sock.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut rx = [0u8; sigil_core::link::TLS_READ_BUFFER];
    let mut tx = [0u8; 2048];
    let mut conn = DeviceConnection::new(FromStd::new(sock), &mut rx, &mut tx);
    let config = TlsConfig::new();
    let open = conn.open(TlsContext::new(&config, provider));
    then(open, &mut conn)
}

/// Connects to `addr` as a device with `provider`, and on success sends "ping" and reads the
/// answer (4 bytes, or until an error or end of stream).
fn dial(addr: SocketAddr, provider: impl CryptoProvider<CipherSuite = Aes128GcmSha256>) -> Outcome {
    open_then(addr, provider, |open, conn| Outcome {
        reply: open.is_ok().then(|| round_trip(conn)),
        open,
        refusal: None,
        verified: false,
    })
}

/// The device verified the server, and the ping/pong round trip worked.
fn assert_accepted(outcome: &Outcome) {
    assert!(outcome.open.is_ok(), "{outcome:?}");
    assert!(outcome.verified, "{outcome:?}");
    assert!(outcome.got_pong(), "{outcome:?}");
}

/// [`dial`] as a device presenting `identity` (its leaf and key, or none), checking the server
/// against `anchors` with `options`; the outcome carries the verifier's conclusion.
fn dial_as<K: Signer>(
    addr: SocketAddr,
    identity: Option<(&[&[u8]], K)>,
    anchors: TrustBundle<'_, ANCHORS>,
    options: Options<'_>,
) -> Outcome {
    let mut rng = OsRng;
    let mut provider = Provider::new(
        &mut rng,
        identity,
        ServerCertVerifier::new(anchors, options, RustCryptoSignatureVerifier),
    );
    let outcome = dial(addr, &mut provider);
    Outcome {
        refusal: provider.verifier().refusal(),
        verified: provider.verifier().is_verified(),
        ..outcome
    }
}

/// Serves one connection with `config` and dials it as the device with the test PKI's client
/// identity, checking the server against `anchors` (DER) with `options`. Returns the device's
/// outcome and what the server saw.
fn meet(
    config: ServerConfig,
    pki: &Pki,
    anchors: &[&[u8]],
    options: Options<'_>,
) -> (Outcome, Report) {
    let server = serve(config);
    let chain = pki.client_chain();
    let identity = Some((&chain[..], client_key(pki)));
    let outcome = dial_as(server.addr, identity, bundle(anchors), options);
    (outcome, server.finish())
}

/// [`meet`] with the usual device: it trusts the test PKI's root and expects the echo server
/// now. The server presents the certificate from `resolver`, or its own leaf and key.
fn meet_server(pki: &Pki, resolver: Option<Arc<dyn ResolvesServerCert>>) -> (Outcome, Report) {
    let options = expecting(SERVER_ID, now_secs());
    meet(server_config(pki, resolver), pki, &[&pki.root], options)
}

fn round_trip<S: embedded_io::Read + embedded_io::Write>(
    conn: &mut TlsConnection<'_, S, Aes128GcmSha256>,
) -> Result<Vec<u8>, TlsError> {
    let mut sent = 0;
    while sent < 4 {
        sent += conn.write(&b"ping"[sent..])?;
    }
    conn.flush()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 16];
    while reply.len() < 4 {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    Ok(reply)
}

fn bundle<'a>(anchors: &[&'a [u8]]) -> TrustBundle<'a, ANCHORS> {
    let mut bundle = TrustBundle::new();
    for a in anchors {
        bundle.add(a).unwrap();
    }
    bundle
}

/// The device's options: expects `server_id`, validates at `time`.
fn expecting(server_id: &str, time: u64) -> Options<'_> {
    Options {
        peer: PeerName::SpiffeId(SpiffeId::parse(server_id).unwrap()),
        ..Options::new(UnixTime::from_secs(time))
    }
}

/// The device's view: expects `server_id`, validates at `time`.
fn verifier<'a>(
    anchors: TrustBundle<'a, ANCHORS>,
    server_id: &'a str,
    time: u64,
) -> ServerCertVerifier<'a, RustCryptoSignatureVerifier, ANCHORS> {
    ServerCertVerifier::new(
        anchors,
        expecting(server_id, time),
        RustCryptoSignatureVerifier,
    )
}

fn client_key(pki: &Pki) -> SoftwareKey {
    SoftwareKey::from_pkcs8_der(&pki.client_key).unwrap()
}

fn assert_client_seen(report: &Report) {
    match report {
        Report::Client(uris, sent) => {
            assert_eq!(uris, &[CLIENT_ID.to_owned()]);
            assert_eq!(*sent, 2, "the device sends its leaf and its issuer");
        }
        other => panic!("the server did not accept the device: {other:?}"),
    }
}

/// The device gave up on the server mid-handshake: the server saw it hang up (embedded-tls sends
/// no alert) and accepted no client.
fn assert_device_hung_up(report: &Report) {
    use std::io::ErrorKind as K;
    match report {
        Report::Io(
            K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe,
        )
        | Report::Tls(rustls::Error::AlertReceived(_)) => {}
        other => panic!("the server should see the device give up: {other:?}"),
    }
}

/// The device refused the server's certificate: `open` failed with `InvalidCertificate`, the
/// device did not verify the server, and the server saw it hang up. Returns the verifier's
/// refusal.
fn certificate_refusal(outcome: &Outcome, seen: &Report) -> Option<ServerRefusal> {
    assert!(
        matches!(outcome.open, Err(TlsError::InvalidCertificate)),
        "{outcome:?}"
    );
    assert!(!outcome.verified);
    assert_device_hung_up(seen);
    outcome.refusal
}

/// [`certificate_refusal`] for a chain that failed path validation: the validation error.
fn path_refusal(outcome: &Outcome, seen: &Report) -> sigil_core::chain::Error {
    match certificate_refusal(outcome, seen) {
        Some(ServerRefusal::Path(e)) => e,
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn mutual_tls_handshake_and_round_trip() {
    let pki = pki();
    let (outcome, seen) = meet_server(&pki, None);
    assert_accepted(&outcome);
    assert_eq!(outcome.refusal, None);
    assert_client_seen(&seen);
}

#[test]
fn trust_domain_peer_accepts_the_server() {
    let pki = pki();
    let options = Options {
        peer: PeerName::TrustDomain(SpiffeId::parse(SERVER_ID).unwrap().trust_domain()),
        ..Options::new(UnixTime::from_secs(now_secs()))
    };
    let (outcome, seen) = meet(server_config(&pki, None), &pki, &[&pki.root], options);
    assert_accepted(&outcome);
    assert_client_seen(&seen);
}

#[test]
fn wrong_server_id_is_refused() {
    let pki = pki();
    let options = expecting(OTHER_ID, now_secs());
    let (outcome, seen) = meet(server_config(&pki, None), &pki, &[&pki.root], options);
    let e = path_refusal(&outcome, &seen);
    assert_eq!(e.cert, Position::Leaf);
    assert_eq!(e.kind, ErrorKind::PeerNameMismatch(NameMismatch::SpiffeId));
}

#[test]
fn foreign_root_is_refused() {
    let pki = pki();
    let foreign = foreign_root();
    let options = expecting(SERVER_ID, now_secs());
    let (outcome, seen) = meet(server_config(&pki, None), &pki, &[&foreign], options);
    let e = path_refusal(&outcome, &seen);
    assert_eq!(e.kind, ErrorKind::UnknownIssuer, "{e:?}");
}

#[test]
fn impostor_root_with_the_same_name_is_refused() {
    let pki = pki();
    let now = now_secs();
    // Same subject as the real root, different key: its subjectKeyIdentifier is not the
    // issuer's authorityKeyIdentifier, so it is no candidate (and its signature could not
    // verify either).
    let impostor =
        CertifiedIssuer::self_signed(ca_params("Root", now - 86_400, now + 86_400), p256_key())
            .unwrap()
            .der()
            .to_vec();
    let options = expecting(SERVER_ID, now);
    let (outcome, seen) = meet(server_config(&pki, None), &pki, &[&impostor], options);
    let e = path_refusal(&outcome, &seen);
    assert_eq!(e.cert, Position::Intermediate(0), "{e:?}");
    assert_eq!(e.kind, ErrorKind::AuthorityKeyIdMismatch, "{e:?}");
}

#[test]
fn expired_server_certificate_is_refused() {
    let pki = pki();
    let time = pki.server_not_after + 1;
    let options = expecting(SERVER_ID, time);
    let (outcome, seen) = meet(server_config(&pki, None), &pki, &[&pki.root], options);
    let e = path_refusal(&outcome, &seen);
    assert_eq!(e.cert, Position::Leaf);
    assert_eq!(
        e.kind,
        ErrorKind::Expired {
            time: UnixTime::from_secs(time),
            not_after: UnixTime::from_secs(pki.server_not_after),
            skew_secs: 0,
        }
    );
}

#[test]
fn certificate_verify_by_the_certificate_key_is_accepted() {
    // The control for the next test: the same custom resolver, with the right key.
    let pki = pki();
    let (outcome, seen) = meet_server(&pki, Some(fixed_cert(&pki, &pki.server_key)));
    assert_accepted(&outcome);
    assert_client_seen(&seen);
}

#[test]
fn certificate_verify_by_another_key_is_refused() {
    let pki = pki();
    let wrong = p256_key().serialize_der();
    let (outcome, seen) = meet_server(&pki, Some(fixed_cert(&pki, &wrong)));
    assert!(
        matches!(outcome.open, Err(TlsError::InvalidSignature)),
        "{outcome:?}"
    );
    assert!(!outcome.verified);
    assert_eq!(outcome.refusal, Some(ServerRefusal::BadSignature));
    assert_device_hung_up(&seen);
}

#[test]
fn device_without_identity_is_refused_by_the_server() {
    let pki = pki();
    let server = serve(server_config(&pki, None));
    let outcome = dial_as(
        server.addr,
        None::<(&[&[u8]], SoftwareKey)>,
        bundle(&[&pki.root]),
        expecting(SERVER_ID, now_secs()),
    );
    // The device did verify the server; TLS 1.3 tells it of its own refusal only afterwards.
    assert!(outcome.verified);
    assert_eq!(outcome.refusal, None);
    if outcome.open.is_ok() {
        // An error (the server's alert, a reset or a broken pipe), or at most an end of stream.
        let failed = match &outcome.reply {
            Some(Err(_)) => true,
            Some(Ok(bytes)) => bytes.is_empty(),
            None => false,
        };
        assert!(failed, "the round trip should fail: {outcome:?}");
    }
    assert!(!outcome.got_pong(), "{outcome:?}");
    match server.finish() {
        Report::Tls(rustls::Error::NoCertificatesPresented) => {}
        other => panic!("the server should refuse for want of a certificate: {other:?}"),
    }
}

/// An Ed25519 device key held by `ring` (the core's `SoftwareKey` is P-256 only).
struct Ed25519Key {
    pair: ring::signature::Ed25519KeyPair,
    public: [u8; 32],
}

impl Ed25519Key {
    fn from_pkcs8(der: &[u8]) -> Self {
        use ring::signature::KeyPair as _;
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).unwrap();
        let public = pair.public_key().as_ref().try_into().unwrap();
        Self { pair, public }
    }
}

impl Signer for Ed25519Key {
    fn scheme(&self) -> Scheme {
        Scheme::Ed25519
    }

    fn public_key(&self) -> PublicKey<'_> {
        PublicKey::Ed25519(&self.public)
    }

    fn sign<'b>(&mut self, message: &[u8], out: &'b mut [u8]) -> Result<&'b [u8], SignError> {
        let sig = self.pair.sign(message);
        let sig = sig.as_ref();
        let out = out
            .get_mut(..sig.len())
            .ok_or(SignError::BufferTooSmall { needed: sig.len() })?;
        out.copy_from_slice(sig);
        Ok(out)
    }
}

#[test]
fn ed25519_server_is_verified() {
    let pki = pki_with(&PKCS_ED25519, &PKCS_ECDSA_P256_SHA256);
    let (outcome, seen) = meet_server(&pki, None);
    assert_accepted(&outcome);
    assert_client_seen(&seen);
}

/// The chain is what gets the device in: the same identity sent as its leaf alone is refused
/// by a server that trusts only the root (as daprd and go-spiffe do), for want of the issuer.
#[test]
fn a_leaf_sent_alone_is_refused_by_a_server_that_trusts_only_the_root() {
    let pki = pki();
    let server = serve(server_config(&pki, None));
    let leaf_only = [pki.client_leaf.as_slice()];
    let outcome = dial_as(
        server.addr,
        Some((&leaf_only[..], client_key(&pki))),
        bundle(&[&pki.root]),
        expecting(SERVER_ID, now_secs()),
    );
    // TLS 1.3: the device's handshake completes before the server judges its certificate.
    assert!(
        outcome.open.is_err() || outcome.reply.as_ref().is_some_and(Result::is_err),
        "{outcome:?}"
    );
    match server.finish() {
        Report::Tls(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) => {
        }
        other => panic!("expected the leaf alone to be refused for an unknown issuer: {other:?}"),
    }
}

#[test]
fn ed25519_device_is_accepted() {
    let pki = pki_with(&PKCS_ECDSA_P256_SHA256, &PKCS_ED25519);
    let server = serve(server_config(&pki, None));
    let key = Ed25519Key::from_pkcs8(&pki.client_key);
    let chain = pki.client_chain();
    let outcome = dial_as(
        server.addr,
        Some((&chain[..], key)),
        bundle(&[&pki.root]),
        expecting(SERVER_ID, now_secs()),
    );
    assert_accepted(&outcome);
    assert_client_seen(&server.finish());
}

// ---------------------------------------------------------------------------------------------
// A hand-made TLS 1.3 server, to send flights rustls never would

/// What the hand-made server's encrypted flight carries between EncryptedExtensions and
/// Finished.
#[derive(Clone, Copy, Debug)]
enum Flight {
    /// Certificate([server leaf, issuer]) and a CertificateVerify by the server key: an honest
    /// server, the control for the others.
    Honest,
    /// Neither Certificate nor CertificateVerify: a man in the middle holding no certificate.
    NoCertificate,
    /// The real server's (public) chain, but no CertificateVerify: a man in the middle
    /// replaying a chain whose key it does not hold.
    NoCertificateVerify,
    /// CertificateVerify before Certificate.
    VerifyFirst,
}

fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&key, data).as_ref().to_vec()
}

/// HKDF-Expand-Label (RFC 8446 §7.1) for outputs of one SHA-256 block at most.
fn expand_label(secret: &[u8], label: &str, context: &[u8], len: usize) -> Vec<u8> {
    let label = format!("tls13 {label}");
    let mut info = u16::try_from(len).unwrap().to_be_bytes().to_vec();
    info.push(u8::try_from(label.len()).unwrap());
    info.extend_from_slice(label.as_bytes());
    info.push(u8::try_from(context.len()).unwrap());
    info.extend_from_slice(context);
    info.push(1);
    let mut out = hmac_sha256(secret, &info);
    out.truncate(len);
    out
}

/// The transcript so far followed by `messages`.
fn joined(transcript: &[u8], messages: &[Vec<u8>]) -> Vec<u8> {
    let mut all = transcript.to_vec();
    for m in messages {
        all.extend_from_slice(m);
    }
    all
}

/// A handshake message: type, 24-bit length, body.
fn handshake(kind: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).unwrap().to_be_bytes();
    let mut m = vec![kind, len[1], len[2], len[3]];
    m.extend_from_slice(body);
    m
}

fn with_u16_len(body: &[u8]) -> Vec<u8> {
    let mut v = u16::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn with_u24_len(body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).unwrap().to_be_bytes();
    let mut v = vec![len[1], len[2], len[3]];
    v.extend_from_slice(body);
    v
}

fn read_record(sock: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut header = [0u8; 5];
    sock.read_exact(&mut header).ok()?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes([header[3], header[4]]))];
    sock.read_exact(&mut body).ok()?;
    Some((header[0], body))
}

fn u16_at(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([b[at], b[at + 1]]))
}

/// The legacy session id and the secp256r1 key share of a ClientHello message.
fn parse_client_hello(m: &[u8]) -> (Vec<u8>, Vec<u8>) {
    assert_eq!(m[0], 1, "not a ClientHello");
    let mut p = 4 + 2 + 32;
    let session_id = m[p + 1..p + 1 + usize::from(m[p])].to_vec();
    p += 1 + session_id.len();
    p += 2 + u16_at(m, p);
    p += 1 + usize::from(m[p]);
    let end = p + 2 + u16_at(m, p);
    p += 2;
    while p < end {
        let (kind, len) = (u16_at(m, p), u16_at(m, p + 2));
        let data = &m[p + 4..p + 4 + len];
        if kind == 51 {
            let mut q = 2;
            while q < data.len() {
                let (group, klen) = (u16_at(data, q), u16_at(data, q + 2));
                if group == 0x0017 {
                    return (session_id, data[q + 4..q + 4 + klen].to_vec());
                }
                q += 4 + klen;
            }
        }
        p += 4 + len;
    }
    panic!("no secp256r1 key share");
}

/// Serves one TLS 1.3 handshake (AES-128-GCM-SHA256, secp256r1) with the server part of
/// `flight`, then reads until the client hangs up. Reports nothing: only the device's view
/// matters here.
fn serve_raw(pki: &Pki, flight: Flight) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let chain = [pki.server_leaf.clone(), pki.issuer.clone()];
    let server_key = pki.server_key.clone();
    let addr = listener.local_addr().unwrap();
    let thread = thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let rng = ring::rand::SystemRandom::new();
        let (kind, hello) = read_record(&mut sock).unwrap();
        assert_eq!(kind, 22);
        let (session_id, client_share) = parse_client_hello(&hello);
        let mut transcript = hello;

        // ServerHello.
        let ephemeral =
            ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::ECDH_P256, &rng)
                .unwrap();
        let share = ephemeral.compute_public_key().unwrap();
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7u8; 32]);
        body.push(u8::try_from(session_id.len()).unwrap());
        body.extend_from_slice(&session_id);
        body.extend_from_slice(&[0x13, 0x01, 0]);
        let mut key_share = vec![0, 0x17];
        key_share.extend_from_slice(&with_u16_len(share.as_ref()));
        let mut extensions = vec![0, 43, 0, 2, 3, 4, 0, 51];
        extensions.extend_from_slice(&with_u16_len(&key_share));
        body.extend_from_slice(&with_u16_len(&extensions));
        let server_hello = handshake(2, &body);
        transcript.extend_from_slice(&server_hello);
        let mut record = vec![22, 3, 3];
        record.extend_from_slice(&with_u16_len(&server_hello));
        sock.write_all(&record).unwrap();

        // Handshake traffic keys.
        let shared = ring::agreement::agree_ephemeral(
            ephemeral,
            &ring::agreement::UnparsedPublicKey::new(&ring::agreement::ECDH_P256, client_share),
            <[u8]>::to_vec,
        )
        .unwrap();
        let early = hmac_sha256(&[0; 32], &[0; 32]);
        let derived = expand_label(&early, "derived", &sha256(b""), 32);
        let handshake_secret = hmac_sha256(&derived, &shared);
        let traffic = expand_label(&handshake_secret, "s hs traffic", &sha256(&transcript), 32);

        // The encrypted flight.
        let certificate = {
            let mut list = Vec::new();
            for der in &chain {
                list.extend_from_slice(&with_u24_len(der));
                list.extend_from_slice(&[0, 0]);
            }
            let mut body = vec![0];
            body.extend_from_slice(&with_u24_len(&list));
            handshake(11, &body)
        };
        let certificate_verify = |transcript: &[u8]| {
            let mut message = vec![0x20; 64];
            message.extend_from_slice(b"TLS 1.3, server CertificateVerify\0");
            message.extend_from_slice(&sha256(transcript));
            let key = ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                &server_key,
                &rng,
            )
            .unwrap();
            let signature = key.sign(&rng, &message).unwrap();
            let mut body = vec![0x04, 0x03];
            body.extend_from_slice(&with_u16_len(signature.as_ref()));
            handshake(15, &body)
        };
        let mut messages = vec![handshake(8, &[0, 0])];
        match flight {
            Flight::Honest => {
                messages.push(certificate);
                messages.push(certificate_verify(&joined(&transcript, &messages)));
            }
            Flight::NoCertificate => {}
            Flight::NoCertificateVerify => messages.push(certificate),
            Flight::VerifyFirst => {
                messages.push(certificate_verify(&joined(&transcript, &messages)));
                messages.push(certificate);
            }
        }
        let finished_key = expand_label(&traffic, "finished", &[], 32);
        let verify_data = hmac_sha256(&finished_key, &sha256(&joined(&transcript, &messages)));
        messages.push(handshake(20, &verify_data));

        let mut plaintext = messages.concat();
        plaintext.push(22);
        let key = ring::aead::LessSafeKey::new(
            ring::aead::UnboundKey::new(
                &ring::aead::AES_128_GCM,
                &expand_label(&traffic, "key", &[], 16),
            )
            .unwrap(),
        );
        // Sequence number 0: the nonce is the IV itself.
        let nonce = expand_label(&traffic, "iv", &[], 12);
        let len = u16::try_from(plaintext.len() + 16).unwrap().to_be_bytes();
        let header = [23, 3, 3, len[0], len[1]];
        key.seal_in_place_append_tag(
            ring::aead::Nonce::try_assume_unique_for_key(&nonce).unwrap(),
            ring::aead::Aad::from(header),
            &mut plaintext,
        )
        .unwrap();
        sock.write_all(&header).unwrap();
        sock.write_all(&plaintext).unwrap();

        // The client's Finished (or nothing), until it hangs up.
        while read_record(&mut sock).is_some() {}
    });
    (addr, thread)
}

/// Opens a connection to `addr` and hangs up: the device's view is in the provider.
fn open_only(
    addr: SocketAddr,
    provider: impl CryptoProvider<CipherSuite = Aes128GcmSha256>,
) -> Result<(), TlsError> {
    open_then(addr, provider, |open, _| open)
}

/// The device with the test PKI's client identity, trusting its root and expecting the echo
/// server now.
fn device_provider<'a>(
    rng: &'a mut OsRng,
    pki: &'a Pki,
    chain: &'a [&'a [u8]],
) -> Provider<'a, OsRng, SoftwareKey, RustCryptoSignatureVerifier, ANCHORS> {
    Provider::new(
        rng,
        Some((chain, client_key(pki))),
        verifier(bundle(&[&pki.root]), SERVER_ID, now_secs()),
    )
}

/// Runs `flight` against a device expecting the echo server; returns `open`'s result and the
/// device's verifier state (verified, refusal).
fn against_raw(flight: Flight) -> (Result<(), TlsError>, bool, Option<ServerRefusal>) {
    let pki = pki();
    let (addr, server) = serve_raw(&pki, flight);
    let mut rng = OsRng;
    let chain = pki.client_chain();
    let mut provider = device_provider(&mut rng, &pki, &chain);
    let open = open_only(addr, &mut provider);
    server.join().unwrap();
    let v = provider.verifier();
    (open, v.is_verified(), v.refusal())
}

#[test]
fn hand_made_server_with_an_honest_flight_is_verified() {
    // The control for the hand-made server: its key schedule, transcript and encodings are
    // right, so the tests below fail for the flight's sake only.
    let (open, verified, refusal) = against_raw(Flight::Honest);
    assert!(open.is_ok(), "{open:?}: {refusal:?}");
    assert!(verified);
    assert_eq!(refusal, None);
}

#[test]
fn server_without_certificate_is_not_verified() {
    // embedded-tls 0.19 does not require Certificate and CertificateVerify: it completes the
    // handshake with a server that sends neither (`open()` returns Ok). The verifier is never
    // called, so `is_verified()` is the device's only gate.
    let (open, verified, refusal) = against_raw(Flight::NoCertificate);
    assert!(!verified, "{open:?}");
    assert_eq!(refusal, None);
}

#[test]
fn server_without_certificate_verify_is_not_verified() {
    // A replayed (public) chain passes path validation; without the signature the server is
    // still not authenticated, though embedded-tls 0.19 lets `open()` return Ok.
    let (open, verified, refusal) = against_raw(Flight::NoCertificateVerify);
    assert!(!verified, "{open:?}");
    assert_eq!(refusal, None);
}

#[test]
fn certificate_verify_before_certificate_is_refused() {
    let (open, verified, refusal) = against_raw(Flight::VerifyFirst);
    assert!(
        matches!(open, Err(TlsError::InvalidCertificate)),
        "{open:?}"
    );
    assert!(!verified);
    assert_eq!(refusal, Some(ServerRefusal::NoVerifiedCertificate));
}

#[test]
fn a_reused_provider_never_carries_a_verdict_into_the_next_handshake() {
    // One provider, two handshakes: an honest server, then one that skips Certificate and
    // CertificateVerify (which embedded-tls lets `open()` accept). The second must not be
    // reported as verified on the strength of the first.
    let pki = pki();
    let mut rng = OsRng;
    let chain = pki.client_chain();
    let mut provider = device_provider(&mut rng, &pki, &chain);
    let (addr, server) = serve_raw(&pki, Flight::Honest);
    open_only(addr, &mut provider).unwrap();
    server.join().unwrap();
    assert!(provider.verifier().is_verified());
    let (addr, server) = serve_raw(&pki, Flight::NoCertificate);
    let open = open_only(addr, &mut provider);
    server.join().unwrap();
    assert!(!provider.verifier().is_verified(), "{open:?}");
    assert_eq!(provider.verifier().refusal(), None);
}

#[test]
fn a_verifier_without_a_peer_name_refuses_every_server() {
    let pki = pki();
    let options = Options::new(UnixTime::from_secs(now_secs()));
    let (outcome, seen) = meet(server_config(&pki, None), &pki, &[&pki.root], options);
    assert_eq!(
        certificate_refusal(&outcome, &seen),
        Some(ServerRefusal::NoPeerName)
    );
}

// ---------------------------------------------------------------------------------------------
// A signer that fails

/// The device's key behind a switch: while `failing` is set it refuses to sign, as a secure
/// element that is busy, locked or timing out would.
struct Flaky<'a> {
    key: SoftwareKey,
    failing: &'a std::cell::Cell<bool>,
}

impl Signer for Flaky<'_> {
    fn scheme(&self) -> Scheme {
        self.key.scheme()
    }

    fn public_key(&self) -> PublicKey<'_> {
        self.key.public_key()
    }

    fn sign<'b>(&mut self, message: &[u8], out: &'b mut [u8]) -> Result<&'b [u8], SignError> {
        if self.failing.get() {
            return Err(SignError::Failed);
        }
        self.key.sign(message, out)
    }
}

/// One handshake with the flaky signer, the transport guarded by `guard` if given; the
/// device's outcome, its provider's recorded failure, and what the server saw.
fn dial_flaky(
    pki: &Pki,
    failing: &std::cell::Cell<bool>,
    guard: Option<&SigningGuard>,
) -> (Outcome, Option<SignError>, Report) {
    use sigil_core::device_tls::Guarded;
    let server = serve(server_config(pki, None));
    let key = Flaky {
        key: client_key(pki),
        failing,
    };
    let mut rng = OsRng;
    let chain = pki.client_chain();
    let mut provider = Provider::new(
        &mut rng,
        Some((&chain[..], key)),
        verifier(bundle(&[&pki.root]), SERVER_ID, now_secs()),
    );
    if let Some(g) = guard {
        provider = provider.with_guard(g);
    }
    let sock = TcpStream::connect(server.addr).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut rx = [0u8; sigil_core::link::TLS_READ_BUFFER];
    let mut tx = [0u8; 2048];
    let config = TlsConfig::new();
    let unguarded = SigningGuard::new();
    let transport = Guarded::new(FromStd::new(sock), guard.unwrap_or(&unguarded));
    let mut conn: TlsConnection<'_, _, Aes128GcmSha256> =
        TlsConnection::new(transport, &mut rx, &mut tx);
    let open = conn.open(TlsContext::new(&config, &mut provider));
    let reply = open.is_ok().then(|| round_trip(&mut conn));
    let failure = provider.signing_failure();
    let outcome = Outcome {
        open,
        reply,
        refusal: provider.verifier().refusal(),
        verified: provider.verifier().is_verified(),
    };
    drop(conn);
    (outcome, failure, server.finish())
}

/// Issue 15: a signer that fails during CertificateVerify ends the handshake with an error
/// the device can name (never a panic), sends nothing signed — with the guarded transport the
/// CertificateVerify never leaves, so the server accepts no client — and the next handshake,
/// with the signer back, succeeds.
#[test]
fn a_failing_signer_ends_the_handshake_with_its_error_and_the_next_one_succeeds() {
    let pki = pki();
    let failing = std::cell::Cell::new(true);
    let guard = SigningGuard::new();
    let (outcome, failure, seen) = dial_flaky(&pki, &failing, Some(&guard));
    assert!(outcome.open.is_err(), "{outcome:?}");
    assert_eq!(failure, Some(SignError::Failed));
    assert_eq!(guard.failure(), Some(SignError::Failed));
    assert!(
        outcome.verified,
        "the server was verified before the device signed"
    );
    assert_device_hung_up(&seen);

    // Recovered: the same provider type and key, the signer back.
    failing.set(false);
    // The same guard: the next handshake clears it itself.
    let (outcome, failure, seen) = dial_flaky(&pki, &failing, Some(&guard));
    assert_accepted(&outcome);
    assert_eq!(failure, None);
    assert_client_seen(&seen);

    // Without the guard the empty signature goes out and the server refuses it: still an
    // error, still no panic, still the failure recorded.
    failing.set(true);
    let (outcome, failure, seen) = dial_flaky(&pki, &failing, None);
    assert!(
        outcome.open.is_err() || outcome.reply.as_ref().is_some_and(Result::is_err),
        "{outcome:?}"
    );
    assert_eq!(failure, Some(SignError::Failed));
    assert!(
        !matches!(seen, Report::Client(..)),
        "the server accepted a client whose signer failed: {seen:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// A recorded handshake, for the firmware's instruction count of a whole handshake

/// Where the recorded handshake lives: the PKI (DER), the client's key (PKCS#8), and both
/// directions' bytes. The firmware bench (`boards/qemu-mps2-an386`, image `bench`) replays it.
const RECORDED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/handshake");
/// The replaying client's DRBG seed and personalization (the firmware bench uses the same).
const REPLAY_SEED: [u8; 32] = [0x42; 32];
const REPLAY_PERSONALIZATION: &[u8] = b"sigil recorded handshake";
/// When the replaying client validates the server: inside the recorded PKI's validity
/// (2026-01-01 to 2046-01-01), the firmware's pinned time (2030-01-01).
const REPLAY_TIME: u64 = 1_893_456_000;

/// An embedded-io transport over `inner` that keeps a copy of every byte each way.
struct Recording<S> {
    inner: S,
    read: Vec<u8>,
    written: Vec<u8>,
}

impl<S: embedded_io::ErrorType> embedded_io::ErrorType for Recording<S> {
    type Error = S::Error;
}

impl<S: embedded_io::Read> embedded_io::Read for Recording<S> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = self.inner.read(buf)?;
        self.read.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl<S: embedded_io::Write> embedded_io::Write for Recording<S> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        let n = self.inner.write(buf)?;
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.inner.flush()
    }
}

/// The recorded PKI: root → issuer → {server leaf, client leaf}, P-256, fixed validity.
fn recorded_pki() -> Pki {
    let validity = (1_767_225_600, 2_398_377_600); // 2026-01-01 .. 2046-01-01
    let p256 = &PKCS_ECDSA_P256_SHA256;
    pki_issued((p256, p256), validity, validity)
}

/// The replaying device: the recorded client identity, the DRBG at the recorded seed, the
/// server checked against the recorded root for its SPIFFE ID at [`REPLAY_TIME`].
fn replay_provider<'a>(
    rng: &'a mut sigil_core::drbg::HmacDrbg<sigil_core::drbg::ProvisionedSeed>,
    root: &'a [u8],
    chain: &'a [&'a [u8]],
    key: SoftwareKey,
) -> Provider<
    'a,
    sigil_core::drbg::HmacDrbg<sigil_core::drbg::ProvisionedSeed>,
    SoftwareKey,
    RustCryptoSignatureVerifier,
    ANCHORS,
> {
    Provider::new(
        rng,
        Some((chain, key)),
        verifier(bundle(&[root]), SERVER_ID, REPLAY_TIME),
    )
}

fn replay_rng() -> sigil_core::drbg::HmacDrbg<sigil_core::drbg::ProvisionedSeed> {
    sigil_core::drbg::HmacDrbg::new(
        sigil_core::drbg::ProvisionedSeed {
            seed: REPLAY_SEED,
            boot_nonce: 0,
        },
        REPLAY_PERSONALIZATION,
    )
}

/// Records one handshake and ping/pong of the deterministic device against the rustls server
/// into [`RECORDED`].
fn record_handshake() {
    let pki = recorded_pki();
    let server = serve(server_config(&pki, None));
    let sock = TcpStream::connect(server.addr).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut transport = Recording {
        inner: FromStd::new(sock),
        read: Vec::new(),
        written: Vec::new(),
    };
    let mut rng = replay_rng();
    let chain = pki.client_chain();
    let key = client_key(&pki);
    let mut provider = replay_provider(&mut rng, &pki.root, &chain, key);
    let mut rx = [0u8; sigil_core::link::TLS_READ_BUFFER];
    let mut tx = [0u8; 2048];
    {
        let mut conn: TlsConnection<'_, _, Aes128GcmSha256> =
            TlsConnection::new(&mut transport, &mut rx, &mut tx);
        let config = TlsConfig::new();
        conn.open(TlsContext::new(&config, &mut provider)).unwrap();
        assert_eq!(round_trip(&mut conn).unwrap(), b"pong");
    }
    assert!(provider.verifier().is_verified());
    assert_client_seen(&server.finish());
    let dir = std::path::Path::new(RECORDED);
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in [
        ("root.der", &pki.root),
        ("issuer.der", &pki.issuer),
        ("client.der", &pki.client_leaf),
        ("client-key.pk8", &pki.client_key),
        ("server-to-client.bin", &transport.read),
        ("client-to-server.bin", &transport.written),
    ] {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// The recorded handshake replays: a device with the same seed, identity and time writes
/// exactly the recorded client bytes and completes the handshake and the ping/pong on the
/// recorded server bytes. The firmware bench counts the instructions of this same replay.
/// `SIGIL_RECORD_HANDSHAKE=1` records it anew first (after a change to embedded-tls, the
/// core's TLS glue or the DRBG, which change the device's bytes).
#[test]
fn the_recorded_handshake_replays_byte_for_byte() {
    if std::env::var_os("SIGIL_RECORD_HANDSHAKE").is_some() {
        record_handshake();
    }
    let read = |name: &str| std::fs::read(std::path::Path::new(RECORDED).join(name)).unwrap();
    let (root, issuer, client) = (read("root.der"), read("issuer.der"), read("client.der"));
    let server_bytes = read("server-to-client.bin");
    let client_bytes = read("client-to-server.bin");
    let key = SoftwareKey::from_pkcs8_der(&read("client-key.pk8")).unwrap();
    let chain = [client.as_slice(), issuer.as_slice()];
    let mut rng = replay_rng();
    let mut provider = replay_provider(&mut rng, &root, &chain, key);
    let mut transport = Replay::new(&server_bytes, &client_bytes);
    let mut rx = [0u8; sigil_core::link::TLS_READ_BUFFER];
    let mut tx = [0u8; 2048];
    {
        let mut conn: TlsConnection<'_, _, Aes128GcmSha256> =
            TlsConnection::new(&mut transport, &mut rx, &mut tx);
        let config = TlsConfig::new();
        conn.open(TlsContext::new(&config, &mut provider))
            .expect("the replay's handshake (SIGIL_RECORD_HANDSHAKE=1 records it anew)");
        assert_eq!(round_trip(&mut conn).unwrap(), b"pong");
    }
    assert!(provider.verifier().is_verified());
    assert!(
        transport.unwritten() == 0,
        "{} recorded client bytes not written",
        transport.unwritten()
    );
}
