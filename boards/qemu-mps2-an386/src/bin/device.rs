//! The edge device, end to end: the firmware `ci/qemu-e2e.sh` runs under QEMU against a real
//! Sentry, relay, sidecar and app on the host.
//!
//! 1. The core's rotation machine (no real-time clock: [`Clock::Monotonic`], wall time taken
//!    from the certificates) asks for an identity; each request is a fresh P-256 key from the
//!    DRBG and a CSR, sent to the relay in a `SignRequest` frame over the UART; the relay asks
//!    Sentry.
//! 2. The answer's chain is validated against the anchors provisioned in flash and the
//!    workload profile, then installed and published to the identity slot.
//! 3. After each install the device opens an embedded-tls TLS 1.3 session through the relay
//!    to the sidecar of app `PEER_APP`, presenting its leaf from the slot and verifying the
//!    sidecar with the core's path validation and SPIFFE authorization
//!    ([`sigil_core::tls::Provider`]); it calls `GET /<METHOD>` and checks that the app answers
//!    200 and names the device's SPIFFE ID (which the sidecar took from the handshake).
//! 4. After the first identity and [`ROTATIONS`] renewals, each with its call, it prints
//!    [`SWAP_MARKER`]: the test swaps the relay for one backed by a foreign Sentry. The next
//!    renewal's chain must be refused (`Rejected(Path)`), the old identity must stay installed,
//!    and a call with it must still succeed.
//! 5. It prints a summary with the emulated times from boot to the first identity and to the
//!    first successful mTLS call, and the stack peak, and exits 0 only if all of this held.
#![no_std]
#![no_main]

use core::fmt::Write as _;
use core::time::Duration;

use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use embedded_io::Write as _;
use embedded_tls::blocking::{Aes128GcmSha256, TlsConfig, TlsConnection, TlsContext, TlsError};
use rand_core::RngCore as _;
use sigil_board_qemu_mps2_an386::link::{Link, LinkError};
use sigil_board_qemu_mps2_an386::{self as board, clock, stack, uart::Uart};
use sigil_core::bundle::OwnedTrustBundle;
use sigil_core::crypto::RustCryptoVerifier;
use sigil_core::drbg::{HmacDrbg, ProvisionedSeed};
use sigil_core::key::SoftwareKey;
use sigil_core::link::{Answer, Frame, MAX_FRAME};
use sigil_core::path::{Options, PeerName};
use sigil_core::rotation::{Action, Clock, Failure, Policy, Rejection, RequestId, Rotation};
use sigil_core::slot::IdentitySlot;
use sigil_core::spiffe::SpiffeId;
use sigil_core::tls::{Provider, Refusal, ServerVerifier};
use sigil_core::{Instant, UnixTime};

mod provision {
    include!(concat!(env!("OUT_DIR"), "/provision.rs"));
}
use provision::{ANCHORS, APP_ID, ISSUER_SKEW_SECS, METHOD, NAMESPACE, PEER_APP, TRUST_DOMAIN};

const DEVICE_SEED: [u8; 32] = include!(concat!(env!("OUT_DIR"), "/seed.rs"));

/// Bytes for one identity chain (leaf and issuer, about 1 KB from Sentry).
const CHAIN: usize = 2048;
/// Trust anchors the device holds, and their bytes.
const ANCHOR_COUNT: usize = 2;
const ANCHOR_BYTES: usize = 2048;
/// Renewals (installs after the first) to see, each followed by a call, before the negative
/// phase.
const ROTATIONS: u32 = 2;
/// A TLS read waits this long for the next frame.
const TLS_TIMEOUT_MS: u64 = 10_000;
/// The whole scenario must end within this time.
const RUN_LIMIT: Duration = Duration::from_secs(240);
/// Allowed skew when validating the sidecar: the no-RTC clock is a floor that lags true time
/// by a request's latency (the sidecar may have renewed since).
const PEER_SKEW: Duration = Duration::from_secs(5);
/// TLS record buffers: the sidecar limits its records to 4,000 bytes of plaintext.
const TLS_RX: usize = 4096 + 64;
const TLS_TX: usize = 1280;
/// The line that tells the test to swap in the foreign relay.
const SWAP_MARKER: &str = "e2e: negative phase: swap the relay";

static SLOT: IdentitySlot<SoftwareKey, CHAIN> = IdentitySlot::new();

type Machine<'id> = Rotation<'id, SoftwareKey, CHAIN, ANCHOR_COUNT, ANCHOR_BYTES>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Getting the first identity and the renewals, calling after each.
    Positive,
    /// Waiting for the foreign relay's answer to be refused.
    Negative,
}

#[derive(Default)]
struct Report {
    installed_ms: Option<u64>,
    first_call_ms: Option<u64>,
    installs: u32,
    calls: u32,
    foreign_refused: u32,
    requests: u32,
}

#[entry]
fn main() -> ! {
    stack::paint();
    let Some(peripherals) = cortex_m::Peripherals::take() else {
        board::finish(Err("core peripherals taken twice"))
    };
    clock::start(peripherals.SYST);
    board::finish(run())
}

/// `spiffe://<td>/ns/<ns>/<app>` into `out`.
fn dapr_id<'a>(
    out: &'a mut heapless::String<256>,
    app: &str,
) -> Result<SpiffeId<'a>, &'static str> {
    write!(out, "spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/{app}")
        .map_err(|_| "SPIFFE ID too long")?;
    SpiffeId::parse(out.as_str()).map_err(|_| "provisioned SPIFFE ID does not parse")
}

fn run() -> Result<(), &'static str> {
    let mut rng = HmacDrbg::new(
        &mut ProvisionedSeed {
            seed: DEVICE_SEED,
            boot_nonce: 0,
        },
        b"sigil qemu-mps2-an386 device",
    );
    let mut own = heapless::String::<256>::new();
    let own_id = dapr_id(&mut own, APP_ID)?;
    let mut peer = heapless::String::<256>::new();
    let peer_id = dapr_id(&mut peer, PEER_APP)?;
    hprintln!("device: {} calling {} via the relay", own_id, peer_id);

    let mut bundle = OwnedTrustBundle::new();
    bundle
        .replace(ANCHORS)
        .map_err(|_| "provisioned trust anchors do not load")?;
    let policy = Policy {
        // The link answers in well under a second: a lost request is retried soon.
        request_timeout: Duration::from_secs(5),
        issuer_skew: Duration::from_secs(ISSUER_SKEW_SECS),
        ..Policy::default()
    };
    // From the DRBG, not the seed itself: renewal timing is visible on the network.
    let jitter_seed = rng.next_u64();
    let mut m: Machine<'_> =
        Rotation::new(policy, Clock::Monotonic, jitter_seed, Some(own_id), bundle);

    let uart = Uart::take().ok_or("UART taken twice")?;
    let mut rx = [0u8; MAX_FRAME];
    let mut link = Link::new(uart, &mut rx);
    let mut report = Report::default();
    let mut phase = Phase::Positive;
    let mut outstanding: Option<RequestId> = None;
    let mut calls = Calls {
        session: 0,
        peer: peer_id,
        own: own_id,
    };
    // The identity the negative phase must keep: generation, notAfter, install instant.
    let mut kept: Option<(u32, UnixTime, Instant)> = None;
    let limit = Instant::ZERO.saturating_add(RUN_LIMIT);

    loop {
        let now = clock::now();
        if now >= limit {
            hprintln!("timeout in phase {:?}", phase);
            return Err("scenario did not finish in time");
        }
        m.handle_timeout(now);
        while let Some(action) = m.poll_action() {
            match action {
                Action::Request => {
                    let key = SoftwareKey::generate(&mut rng);
                    let mut csr = [0u8; 320];
                    let (id, der) = m
                        .start_request(key, &mut csr)
                        .map_err(|_| "CSR for the request")?;
                    link.send(&Frame::SignRequest {
                        request: id.get(),
                        id: APP_ID,
                        namespace: NAMESPACE,
                        token: "",
                        csr: der,
                    })
                    .map_err(|_| "sign request does not fit a frame")?;
                    report.requests += 1;
                    outstanding = Some(id);
                    hprintln!("[{} ms] sign request {} sent", now.as_millis(), id.get());
                }
                Action::Installed {
                    generation,
                    not_after,
                } => {
                    let identity = m.identity().ok_or("installed identity missing")?;
                    SLOT.publish(
                        identity.chain(),
                        identity.key().clone(),
                        identity.not_after(),
                    )
                    .map_err(|_| "identity does not fit the slot")?;
                    report.installs += 1;
                    report.installed_ms.get_or_insert(clock::now().as_millis());
                    hprintln!(
                        "[{} ms] identity {} installed, notAfter {} (unix)",
                        clock::now().as_millis(),
                        generation,
                        not_after.as_secs()
                    );
                    let this = (generation, identity.not_after(), identity.installed());
                    if phase == Phase::Negative {
                        // The foreign relay was not in place yet: a genuine renewal.
                        hprintln!("renewed before the relay swap; still waiting");
                        kept = Some(this);
                        hprintln!("{}", SWAP_MARKER);
                        continue;
                    }
                    calls.call(&mut link, &mut rng, &m, &mut report)?;
                    if report.installs > ROTATIONS {
                        phase = Phase::Negative;
                        kept = Some(this);
                        hprintln!("{}", SWAP_MARKER);
                    }
                }
                Action::Rejected(Rejection::Path(e)) => {
                    hprintln!("[{} ms] answer refused: {}", clock::now().as_millis(), e);
                    if phase != Phase::Negative {
                        return Err("a chain from Sentry was refused in the positive phase");
                    }
                    report.foreign_refused += 1;
                    // The machine still holds the very identity installed before (same
                    // notAfter, same install instant), and the slot still publishes it.
                    let now_holding = m
                        .identity()
                        .map(|i| (i.not_after(), i.installed(), i.leaf()));
                    let slot_leaf_matches = |leaf: &[u8]| {
                        SLOT.lease()
                            .and_then(|l| l.with(|id| Some(id.leaf() == leaf)))
                            .unwrap_or(false)
                    };
                    let held = match (kept, now_holding) {
                        (Some((generation, not_after, installed)), Some((na, at, leaf))) => {
                            na == not_after
                                && at == installed
                                && SLOT.generation() == Some(generation)
                                && slot_leaf_matches(leaf)
                        }
                        _ => false,
                    };
                    if !held {
                        return Err("the old identity was not kept after a foreign chain");
                    }
                    let generation = kept.map_or(0, |k| k.0);
                    hprintln!("old identity {} kept; calling with it", generation);
                    calls.call(&mut link, &mut rng, &m, &mut report)?;
                    hprintln!(
                        "e2e: summary installs={} rotations={} calls={} foreign_refused={} requests={} link_rx={} link_tx={} frames_skipped={}",
                        report.installs,
                        report.installs.saturating_sub(1),
                        report.calls,
                        report.foreign_refused,
                        report.requests,
                        link.received,
                        link.sent,
                        link.skipped
                    );
                    hprintln!(
                        "e2e: timing boot_to_identity_ms={} boot_to_first_mtls_call_ms={} (QEMU, not cycle-accurate)",
                        report.installed_ms.unwrap_or(0),
                        report.first_call_ms.unwrap_or(0)
                    );
                    return Ok(());
                }
                Action::Rejected(r) => {
                    hprintln!("[{} ms] answer refused: {:?}", clock::now().as_millis(), r);
                }
                Action::Expired => return Err("the identity expired: rotation failed"),
                _ => {}
            }
        }

        match link.poll() {
            Ok(Some(frame)) => {
                if let Frame::SignAnswer { request, answer } = frame {
                    let now = clock::now();
                    // Only the answer to the request in flight counts; one to a request the
                    // machine gave up on (timed out, superseded) is dropped.
                    let current = outstanding.filter(|id| id.get() == request);
                    if current.is_some() {
                        outstanding = None;
                    }
                    match (current, answer) {
                        (Some(id), Answer::Chain(_)) => {
                            let mut chain: heapless::Vec<&[u8], 4> = heapless::Vec::new();
                            for cert in answer.certificates() {
                                if chain.push(cert).is_err() {
                                    break;
                                }
                            }
                            hprintln!("[{} ms] chain of {} received", now.as_millis(), chain.len());
                            m.handle_response(now, id, &chain, &RustCryptoVerifier);
                        }
                        (Some(id), Answer::Refused { code, message }) => {
                            hprintln!(
                                "[{} ms] Sentry refused ({}): {}",
                                now.as_millis(),
                                code,
                                message
                            );
                            let why = if code == 14 {
                                Failure::Unreachable
                            } else {
                                Failure::Refused
                            };
                            m.handle_failure(now, id, why);
                        }
                        (None, _) => {
                            hprintln!("answer to request {} ignored (not in flight)", request)
                        }
                    }
                }
            }
            Ok(None) => {
                if outstanding.is_none() {
                    // Idle until the next tick; the UART is polled, so only when nothing is
                    // expected on it.
                    cortex_m::asm::wfi();
                }
            }
            Err(e) => hprintln!("link: {}", e),
        }
    }
}

/// Why a call failed.
#[derive(Debug)]
enum CallError {
    NoIdentity,
    NoWallTime,
    Handshake(TlsError, Option<Refusal>),
    Io(TlsError),
    BadAnswer,
}

/// One mTLS call to the peer's sidecar with the identity in the slot.
/// The mTLS calls to the peer's sidecar: whom to call, as whom, and the session numbers.
struct Calls<'a> {
    /// The last session's number (each call is a new session).
    session: u16,
    peer: SpiffeId<'a>,
    own: SpiffeId<'a>,
}

impl Calls<'_> {
    /// One call with the identity in the slot, in a new session; counted in `report`.
    fn call(
        &mut self,
        link: &mut Link<'_>,
        rng: &mut HmacDrbg,
        m: &Machine<'_>,
        report: &mut Report,
    ) -> Result<(), &'static str> {
        self.session = self.session.wrapping_add(1);
        let started = clock::now();
        match call_once(link, self.session, rng, m, self.peer, self.own) {
            Ok((generation, status)) => {
                report.calls += 1;
                report.first_call_ms.get_or_insert(clock::now().as_millis());
                hprintln!(
                    "[{} ms] mTLS call with identity {}: {} in {} ms",
                    clock::now().as_millis(),
                    generation,
                    status,
                    clock::now().saturating_duration_since(started).as_millis()
                );
                Ok(())
            }
            Err(e) => {
                match e {
                    CallError::Handshake(tls, Some(why)) => {
                        hprintln!("mTLS handshake failed ({:?}): {}", tls, why);
                    }
                    CallError::Handshake(tls, None) => {
                        hprintln!("mTLS handshake failed: {:?}", tls)
                    }
                    CallError::Io(tls) => hprintln!("mTLS session failed: {:?}", tls),
                    other => hprintln!("mTLS call failed: {:?}", other),
                }
                Err("mTLS call to the sidecar failed")
            }
        }
    }
}

fn call_once(
    link: &mut Link<'_>,
    session: u16,
    rng: &mut HmacDrbg,
    m: &Machine<'_>,
    peer: SpiffeId<'_>,
    own: SpiffeId<'_>,
) -> Result<(u32, heapless::String<16>), CallError> {
    let lease = SLOT.lease().ok_or(CallError::NoIdentity)?;
    let generation = lease.generation();
    let key = lease.key().ok_or(CallError::NoIdentity)?;
    let mut leaf = [0u8; 1024];
    let n = lease.copy_cert(0, &mut leaf).ok_or(CallError::NoIdentity)?;
    let leaf = leaf.get(..n).ok_or(CallError::NoIdentity)?;
    let wall: UnixTime = m.wall_time(clock::now()).ok_or(CallError::NoWallTime)?;

    let options = Options {
        skew: PEER_SKEW,
        peer: PeerName::SpiffeId(peer),
        ..Options::new(wall)
    };
    let verifier = ServerVerifier::new(m.bundle().as_bundle(), options, RustCryptoVerifier);
    let mut provider = Provider::new(rng, Some((leaf, key)), verifier);
    let config = TlsConfig::new();
    let mut rx = [0u8; TLS_RX];
    let mut tx = [0u8; TLS_TX];
    let mut tls: TlsConnection<'_, _, Aes128GcmSha256> =
        TlsConnection::new(link.tls(session, TLS_TIMEOUT_MS), &mut rx, &mut tx);
    if let Err(e) = tls.open(TlsContext::new(&config, &mut provider)) {
        let why = provider.verifier().refusal();
        if let Ok(channel) = tls.close() {
            channel.close();
        }
        return Err(CallError::Handshake(e, why));
    }
    if !provider.verifier().is_verified() {
        return Err(CallError::Handshake(TlsError::InvalidCertificate, None));
    }

    let mut request = heapless::String::<256>::new();
    write!(
        request,
        "GET /{METHOD} HTTP/1.1\r\nHost: {PEER_APP}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|_| CallError::BadAnswer)?;
    tls.write_all(request.as_bytes()).map_err(CallError::Io)?;
    tls.flush().map_err(CallError::Io)?;

    let mut answer = [0u8; 1024];
    let mut len = 0;
    let mut peer_closed = false;
    while let Some(space) = answer.get_mut(len..).filter(|s| !s.is_empty()) {
        match tls.read(space) {
            Ok(0) | Err(TlsError::ConnectionClosed) => {
                peer_closed = true;
                break;
            }
            Ok(n) => len += n,
            Err(e) => return Err(CallError::Io(e)),
        }
    }
    // After the sidecar's close_notify nothing more is sent in this session (TLS 1.3 needs
    // no answering alert); dropping the connection ends it at the relay with TlsClose.
    if !peer_closed {
        if let Ok(channel) = tls.close() {
            channel.close();
        }
    }
    let text =
        core::str::from_utf8(answer.get(..len).unwrap_or(&[])).map_err(|_| CallError::BadAnswer)?;
    let status = text.lines().next().unwrap_or("");
    // The app echoes who called: the sidecar took it from this session's client certificate.
    let mut caller = heapless::String::<300>::new();
    write!(caller, " as {own} on /{METHOD}").map_err(|_| CallError::BadAnswer)?;
    if !status.starts_with("HTTP/1.1 200") || !text.contains(caller.as_str()) {
        hprintln!("unexpected answer: {}", text);
        return Err(CallError::BadAnswer);
    }
    let mut short = heapless::String::<16>::new();
    let _ = short.push_str(status.get(..12).unwrap_or(status));
    Ok((generation, short))
}

impl From<LinkError> for CallError {
    fn from(_: LinkError) -> Self {
        Self::Io(TlsError::IoError)
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    board::panicked(info)
}
