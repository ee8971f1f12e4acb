//! The edge device, end to end: the firmware `ci/qemu-e2e.sh` runs under QEMU against a real
//! Sentry, relay, sidecar and app on the host.
//!
//! The core's device agent ([`DeviceAgent`]) does the identity work: its rotation machine (no
//! real-time clock: [`Clock::Monotonic`], wall time taken from the certificates) asks for an
//! identity, each request a fresh P-256 key from the DRBG and a CSR in a `SignRequest` frame;
//! answers are matched to their request, validated against the anchors provisioned in flash
//! and the workload profile, installed, and published to the identity slot. This image is its
//! driver and the scenario:
//!
//! - **Driver**: frames from the UART go to [`DeviceAgent::handle_frame`], the frames it
//!   returns from [`DeviceAgent::poll_transmit`] go to the UART, and one deadline, armed from
//!   [`DeviceAgent::poll_timeout`], calls [`DeviceAgent::handle_timeout`]; between them the
//!   core sleeps (`wfi`) until the deadline or a byte on the UART.
//! - **Scenario**, on the agent's events only:
//!   1. after each install the device opens an embedded-tls TLS 1.3 session through the relay
//!      to app `PEER_APP`'s identity (the relay sends sessions in turn to its sidecar and to an
//!      independent Go TLS server holding its identity), presenting its chain (leaf and
//!      issuer) and the key from the slot, and verifying the server with the core's path
//!      validation and SPIFFE authorization ([`sigil_core::device_tls::Provider`]); it calls
//!      `GET /<METHOD>` and checks that the answer is 200 and names the device's SPIFFE ID
//!      (which the server took from the handshake); a call that fails fails the run;
//!   2. Sentry rotates its root while this runs (the test gives it 60 s roots and issuers):
//!      each answer carries Sentry's trust bundle, which the agent adopts once the answer's
//!      chain has installed (the provisioned root stays; the adopted roots are saved to a
//!      flash region, `flash_store`, loaded beside the provisioned ones at boot), so the
//!      device installs identities under a root it was never given and keeps calling (the
//!      servers validate its new chain with the issuer it sends, so no call waits for a
//!      server to renew);
//!   3. after the first identity, [`ROTATIONS`] renewals and a call with an identity under a
//!      root it was not provisioned with, it prints
//!      [`SWAP_MARKER`]: the test swaps the relay for one backed by a foreign Sentry. The next
//!      renewal's chain must be refused ([`Event::Rejected`] with a path error), the old
//!      identity must stay installed and in the slot, and a call with it must still succeed;
//!   4. it prints a summary with the emulated times from boot to the first identity and to the
//!      first successful mTLS call, and the stack peak, and exits 0 only if all of this held.
#![no_std]
#![no_main]

use core::time::Duration;

use cortex_m_rt::entry;
use rand_core::RngCore as _;
use sigil_board_common::call::{self, tls_name, Call, CallError};
use sigil_board_common::drive;
use sigil_board_qemu_mps2_an386::flash_store::FlashAnchorStore;
use sigil_board_qemu_mps2_an386::link::Link;
use sigil_board_qemu_mps2_an386::{self as board, clock, say, stack, uart::Uart};
use sigil_core::agent::{DeviceAgent, Event, Workload};
use sigil_core::bundle::{self as bundle, AnchorStore, OwnedTrustBundle};
use sigil_core::chain::{self, Options, TrustBundle};
use sigil_core::crypto::RustCryptoSignatureVerifier;
use sigil_core::drbg::{HmacDrbg, ProvisionedSeed};
use sigil_core::key::SoftwareKey;
use sigil_core::link::MAX_FRAME;
use sigil_core::rotation::{Clock, Policy, Rejection, Rotation};
use sigil_core::slot::IdentitySlot;
use sigil_core::spiffe::SpiffeId;
use sigil_core::{Instant, UnixTime};

mod provision {
    include!(concat!(env!("OUT_DIR"), "/provision.rs"));
}
use provision::{ANCHORS, APP_ID, ISSUER_SKEW_SECS, METHOD, NAMESPACE, PEER_APP, TRUST_DOMAIN};

const DEVICE_SEED: [u8; 32] = include!(concat!(env!("OUT_DIR"), "/seed.rs"));

/// Bytes for one identity chain: leaf and issuer, about 900 B from Sigil's Sentry with P-256,
/// 750 B with Ed25519, about 1 KB from Dapr's (a chain that does not fit is refused, and the
/// identity in use stays). Held three times: by the rotation machine and by the slot's two
/// buffers.
const CHAIN: usize = 1536;
const _: () = assert!(
    sigil_board_common::call::fits_chain(CHAIN),
    "a chain the device accepts must fit its TLS write buffer"
);
/// Trust anchors the device holds, and their bytes: the provisioned one and Sentry's (during
/// a rotation: the old, the active and the prepared root; Sigil's P-256 roots are about
/// 400 B, Dapr's about 500 B).
const ANCHOR_COUNT: usize = 5;
const ANCHOR_BYTES: usize = 2560;
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
/// The line that tells the test to swap in the foreign relay.
const SWAP_MARKER: &str = "e2e: negative phase: swap the relay";

static SLOT: IdentitySlot<SoftwareKey, CHAIN> = IdentitySlot::new();

/// The device's RNG: the core's HMAC_DRBG over the provisioned seed (no TRNG here).
type Rng = HmacDrbg<ProvisionedSeed>;

type Agent<'a> =
    DeviceAgent<'a, SoftwareKey, RustCryptoSignatureVerifier, CHAIN, ANCHOR_COUNT, ANCHOR_BYTES>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Getting the first identity and the renewals, calling after each.
    Positive,
    /// Waiting for the foreign relay's answer to be refused.
    Negative,
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
    for part in ["spiffe://", TRUST_DOMAIN, "/ns/", NAMESPACE, "/", app] {
        out.push_str(part).map_err(|_| "SPIFFE ID too long")?;
    }
    SpiffeId::parse(out.as_str()).map_err(|_| "provisioned SPIFFE ID does not parse")
}

/// The driver: frames in, frames out, one timer; the scenario sees only the agent's events.
fn run() -> Result<(), &'static str> {
    let mut rng = HmacDrbg::new(
        ProvisionedSeed {
            seed: DEVICE_SEED,
            boot_nonce: 0,
        },
        b"sigil qemu-mps2-an386 device",
    );
    let mut own = heapless::String::<256>::new();
    let own_id = dapr_id(&mut own, APP_ID)?;
    let mut peer = heapless::String::<256>::new();
    let peer_id = dapr_id(&mut peer, PEER_APP)?;
    say!(
        "device: ",
        own_id.as_str(),
        " calling ",
        peer_id.as_str(),
        " via the relay"
    );

    // The roots adopted before a restart, beside the provisioned ones (in flash).
    let mut store = FlashAnchorStore::take().ok_or("anchor store taken twice")?;
    // The jitter seed from the DRBG, not the seed itself: renewal timing is visible on the
    // network.
    let mut agent = agent(own_id, rng.next_u64(), &mut store);

    let uart = Uart::take().ok_or("UART taken twice")?;
    let mut rx = [0u8; MAX_FRAME];
    let mut link = Link::new(uart, &mut rx);
    let mut scenario = Scenario {
        phase: Phase::Positive,
        report: Report::default(),
        kept: None,
        calls: Calls {
            session: 0,
            peer: peer_id,
            own: own_id,
        },
    };
    let limit = Instant::ZERO.saturating_add(RUN_LIMIT);

    loop {
        let now = clock::now();
        if now >= limit {
            say!(
                "timeout in phase ",
                match scenario.phase {
                    Phase::Positive => "positive",
                    Phase::Negative => "negative",
                }
            );
            return Err("scenario did not finish in time");
        }
        // In: a frame and the timer; out: frames, then events.
        if let Err(e) = drive::receive(&mut agent, &mut link, now) {
            say!("link: ", e.name());
        }
        drive::transmit(&mut agent, &mut rng, &mut link);
        while let Some(event) = agent.poll_event() {
            if scenario.on_event(event, &agent, &mut link, &mut rng)? {
                return Ok(());
            }
        }
        // Sleep until the timer or a byte.
        link.idle_until(agent.poll_timeout().unwrap_or(limit).min(limit));
    }
}

/// The device agent: the provisioned anchors and identity, the policy for this link, no
/// real-time clock. Out of line, so that the machine is built in place in the caller's frame
/// and its temporaries are not on the stack later; it returns the agent itself, not a
/// `Result` (the caller would hold both, 4.9 KB each), and ends the run on a bad provisioning.
/// Saved roots that do not fit beside the provisioned ones (a firmware update brought more) or
/// do not load are left out: the device then boots as on its first day and learns Sentry's
/// roots from its first answer.
#[inline(never)]
fn agent<'a>(own_id: SpiffeId<'a>, jitter_seed: u64, store: &'a mut dyn AnchorStore) -> Agent<'a> {
    let mut bundle = OwnedTrustBundle::new();
    {
        let mut boot: heapless::Vec<&[u8], ANCHOR_COUNT> = heapless::Vec::new();
        for a in ANCHORS {
            if !boot.contains(a) && boot.push(a).is_err() {
                board::finish(Err("more provisioned trust anchors than the device holds"));
            }
        }
        let provisioned = boot.len();
        for a in bundle::saved(store.records()) {
            if !boot.contains(&a) && boot.push(a).is_err() {
                say!("saved roots left out: more than the device holds");
                break;
            }
        }
        if bundle.replace(&boot).is_err() {
            say!("saved roots left out: they do not load beside the provisioned ones");
            boot.truncate(provisioned);
            if bundle.replace(&boot).is_err() {
                board::finish(Err("provisioned trust anchors do not load"));
            }
        }
    }
    let policy = Policy {
        // The link answers in well under a second: a lost request is retried soon.
        request_timeout: Duration::from_secs(5),
        issuer_skew: Duration::from_secs(ISSUER_SKEW_SECS),
        ..Policy::default()
    };
    let rotation = Rotation::new(policy, Clock::Monotonic, jitter_seed, Some(own_id), bundle);
    let workload = Workload {
        app_id: APP_ID,
        namespace: NAMESPACE,
        token: "",
    };
    DeviceAgent::new(rotation, workload, RustCryptoSignatureVerifier)
        .with_slot(&SLOT)
        .with_provisioned(ANCHORS)
        .with_store(store)
}

#[derive(Default)]
struct Report {
    installed_ms: Option<u64>,
    first_call_ms: Option<u64>,
    installs: u32,
    calls: u32,
    foreign_refused: u32,
    requests: u32,
    /// Times Sentry's bundle was adopted.
    anchors_adopted: u32,
    /// Calls made with an identity under a root the device was not provisioned with.
    new_root_calls: u32,
}

/// What the scenario has seen, and what it must see next.
struct Scenario<'a> {
    phase: Phase,
    report: Report,
    /// The identity the negative phase must keep: generation, notAfter, install instant.
    kept: Option<(u32, UnixTime, Instant)>,
    calls: Calls<'a>,
}

impl Scenario<'_> {
    /// Checks one event and acts on it (calls after an install); `Ok(true)` once the scenario
    /// has passed.
    #[inline(never)]
    fn on_event(
        &mut self,
        event: Event,
        agent: &Agent<'_>,
        link: &mut Link<'_>,
        rng: &mut Rng,
    ) -> Result<bool, &'static str> {
        let ms = clock::now().as_millis();
        match event {
            Event::Requested { request } => {
                self.report.requests += 1;
                say!("[", ms, " ms] sign request ", request, " sent");
            }
            Event::Installed {
                generation,
                not_after,
            } => {
                let identity = agent
                    .rotation()
                    .identity()
                    .ok_or("installed identity missing")?;
                self.report.installs += 1;
                self.report.installed_ms.get_or_insert(ms);
                say!(
                    "[",
                    ms,
                    " ms] identity ",
                    generation,
                    " installed, notAfter ",
                    not_after.as_secs(),
                    " (unix)"
                );
                if self.phase == Phase::Negative {
                    // The foreign relay was not in place yet: a genuine renewal.
                    say!("renewed before the relay swap; still waiting");
                    self.kept = Some((generation, identity.not_after(), identity.installed()));
                    say!(SWAP_MARKER);
                } else {
                    self.positive_call(agent, link, rng)?;
                }
            }
            Event::Rejected {
                reason: Rejection::Path(e),
                ..
            } => {
                say!(
                    "[",
                    ms,
                    " ms] answer refused: ",
                    e.cert.name(),
                    ": ",
                    e.kind.name()
                );
                if self.phase != Phase::Negative {
                    return Err("a chain from Sentry was refused in the positive phase");
                }
                self.report.foreign_refused += 1;
                self.check_kept(agent)?;
                let generation = self.kept.map_or(0, |k| k.0);
                say!("old identity ", generation, " kept; calling with it");
                self.calls.call(link, rng, agent, &mut self.report)?;
                let r = &self.report;
                say!(
                    "e2e: summary installs=",
                    r.installs,
                    " rotations=",
                    r.installs.saturating_sub(1),
                    " calls=",
                    r.calls,
                    " foreign_refused=",
                    r.foreign_refused,
                    " requests=",
                    r.requests,
                    " anchors_adopted=",
                    r.anchors_adopted,
                    " new_root_calls=",
                    r.new_root_calls,
                    " link_rx=",
                    link.received,
                    " link_tx=",
                    link.sent,
                    " frames_skipped=",
                    link.skipped
                );
                say!(
                    "e2e: timing boot_to_identity_ms=",
                    r.installed_ms.unwrap_or(0),
                    " boot_to_first_mtls_call_ms=",
                    r.first_call_ms.unwrap_or(0),
                    " (QEMU, not cycle-accurate)"
                );
                return Ok(true);
            }
            // The agent has backed off (refusals, other rejections) or changed nothing
            // (answers to requests no longer in flight).
            Event::Refused { request, code, .. } => {
                say!("[", ms, " ms] request ", request, " refused, code ", code);
            }
            Event::Rejected { request, .. } => {
                say!("[", ms, " ms] answer to request ", request, " refused");
            }
            Event::Dropped { request } => {
                say!(
                    "[",
                    ms,
                    " ms] answer to request ",
                    request,
                    " dropped: not in flight"
                );
            }
            Event::AnchorsAdopted { count, saved } => {
                self.report.anchors_adopted += 1;
                // Read back from the flash store (what a reboot would load): every saved root
                // is one in force.
                let stored = agent.stored_anchors().count();
                let in_force = agent
                    .stored_anchors()
                    .all(|a| agent.rotation().bundle().iter().any(|b| b == a));
                say!(
                    "[",
                    ms,
                    " ms] Sentry's trust bundle adopted: ",
                    count,
                    " anchors (saved: ",
                    matches!(saved, Some(Ok(()))),
                    ", read back: ",
                    stored,
                    ")"
                );
                if saved != Some(Ok(())) || stored == 0 || !in_force {
                    return Err("the adopted roots were not saved to flash");
                }
            }
            Event::AnchorsRefused(e) => {
                say!("[", ms, " ms] Sentry's trust bundle refused: ", e.name());
                return Err("Sentry's trust bundle was refused");
            }
            Event::Expired => return Err("the identity expired: rotation failed"),
            _ => return Err("a sign request could not be sent"),
        }
        Ok(false)
    }

    /// A call in the positive phase with the identity in the slot; once the renewals and a
    /// call under a root the device was not given are done, on to the negative phase.
    fn positive_call(
        &mut self,
        agent: &Agent<'_>,
        link: &mut Link<'_>,
        rng: &mut Rng,
    ) -> Result<(), &'static str> {
        self.calls.call(link, rng, agent, &mut self.report)?;
        let identity = agent
            .rotation()
            .identity()
            .ok_or("installed identity missing")?;
        if !under_provisioned_root(agent) {
            self.report.new_root_calls += 1;
            say!("  (under a root the device was not provisioned with)");
        }
        if self.report.installs <= ROTATIONS || self.report.new_root_calls == 0 {
            return Ok(());
        }
        self.phase = Phase::Negative;
        self.kept = SLOT
            .generation()
            .map(|g| (g, identity.not_after(), identity.installed()));
        say!(SWAP_MARKER);
        Ok(())
    }

    /// The agent still holds the very identity installed before the foreign chain (same
    /// notAfter, same install instant), and the slot still publishes it.
    fn check_kept(&self, agent: &Agent<'_>) -> Result<(), &'static str> {
        let now_holding = agent
            .rotation()
            .identity()
            .map(|i| (i.not_after(), i.installed(), i.leaf()));
        let slot_leaf_matches = |leaf: &[u8]| {
            SLOT.lease()
                .and_then(|l| l.with(|id| Some(id.leaf() == leaf)))
                .unwrap_or(false)
        };
        let held = match (self.kept, now_holding) {
            (Some((generation, not_after, installed)), Some((na, at, leaf))) => {
                na == not_after
                    && at == installed
                    && SLOT.generation() == Some(generation)
                    && slot_leaf_matches(leaf)
            }
            _ => false,
        };
        if held {
            Ok(())
        } else {
            Err("the old identity was not kept after a foreign chain")
        }
    }
}

/// Whether the identity in use chains to an anchor the device was provisioned with. Out of
/// line: its bundle is not on the stack during a call.
#[inline(never)]
fn under_provisioned_root(agent: &Agent<'_>) -> bool {
    let Some(identity) = agent.rotation().identity() else {
        return false;
    };
    let Some(wall) = agent.rotation().wall_time(clock::now()) else {
        return false;
    };
    let mut provisioned = TrustBundle::<ANCHOR_COUNT>::new();
    for a in ANCHORS {
        let _ = provisioned.add(a);
    }
    let mut certs = identity.chain();
    let leaf = certs.next().unwrap_or(&[]);
    let mut rest: heapless::Vec<&[u8], 4> = heapless::Vec::new();
    for c in certs {
        let _ = rest.push(c);
    }
    let options = Options {
        skew: PEER_SKEW,
        ..Options::new(wall)
    };
    chain::verify(
        leaf,
        &rest,
        &provisioned,
        &RustCryptoSignatureVerifier,
        &options,
    )
    .is_ok()
}

/// The mTLS calls to the peer: whom to call, as whom, and the session numbers.
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
        rng: &mut Rng,
        agent: &Agent<'_>,
        report: &mut Report,
    ) -> Result<(), &'static str> {
        self.session = self.session.wrapping_add(1);
        let started = clock::now();
        let target = Call {
            peer: self.peer,
            own: self.own,
            host: PEER_APP,
            method: METHOD,
            skew: PEER_SKEW,
            timeout_ms: TLS_TIMEOUT_MS,
        };
        match call::call(link, self.session, rng, agent, &SLOT, &target) {
            Ok(answered) => {
                report.calls += 1;
                report.first_call_ms.get_or_insert(clock::now().as_millis());
                say!(
                    "[",
                    clock::now().as_millis(),
                    " ms] mTLS call with identity ",
                    answered.generation,
                    ": ",
                    answered.status.as_str(),
                    " in ",
                    u64::try_from(clock::now().saturating_duration_since(started).as_millis())
                        .unwrap_or(u64::MAX),
                    " ms"
                );
                Ok(())
            }
            Err(e) => {
                match e {
                    CallError::Handshake(tls, Some(why)) => {
                        say!("mTLS handshake failed (", tls_name(&tls), "): ", why.name());
                    }
                    CallError::Handshake(tls, None) => {
                        say!("mTLS handshake failed: ", tls_name(&tls));
                    }
                    CallError::Io(tls) => say!("mTLS session failed: ", tls_name(&tls)),
                    CallError::NoIdentity => say!("mTLS call failed: no identity in the slot"),
                    CallError::NoWallTime => say!("mTLS call failed: no wall time yet"),
                    CallError::BadAnswer {
                        status,
                        names_caller,
                    } => say!(
                        "mTLS call failed: unexpected answer: status ",
                        status.as_str(),
                        if names_caller {
                            ", names the caller"
                        } else {
                            ", does not name the caller"
                        }
                    ),
                    CallError::Signer => say!("mTLS handshake failed: the key did not sign"),
                }
                Err("mTLS call failed")
            }
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    board::panicked(info)
}
