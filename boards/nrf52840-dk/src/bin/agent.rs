//! The whole device agent on the nRF52840 DK: identity, rotation and mutual TLS over UART0 to
//! `sigil relay`, as the QEMU board's `device` image runs them end to end (built and
//! size-reported in CI; running it needs the board, see README.md).
//!
//! - **Entropy**: the RNG peripheral behind the core's HMAC-DRBG ([`trng`]).
//! - **Identity**: the core's device agent on monotonic time (no real-time clock: wall time
//!   is a floor taken from each certificate), a fresh P-256 key and CSR for every request,
//!   answers validated against the anchors provisioned at build time
//!   (`SIGIL_ANCHORS`, `../common/provision.rs`) plus the roots Sentry's answers carry, the
//!   identity published to the slot; renewed at the rotation machine's schedule.
//! - **Calls**: after each install and then every [`CALL_EVERY`], one mutual-TLS call through
//!   the relay to `SIGIL_PEER_APP` (`GET /SIGIL_METHOD`, the device's chain sent, the server
//!   checked by SPIFFE ID; [`sigil_board_common::call`]).
//! - **LED1**: lit while the device holds an identity and its last call succeeded; dark
//!   otherwise; blinking 1 if the TRNG failed its health test at start-up, 2 if the
//!   provisioning does not load, fast on a panic.
//!
//! The adopted roots live in RAM only (this image keeps no flash store: after a reset the
//! device starts again from its provisioned anchors, and learns Sentry's roots from its first
//! answer).
#![no_std]
#![no_main]

use core::time::Duration;

use cortex_m_rt::entry;
use rand_core::RngCore as _;
use sigil_board_common::call::{self, Call};
use sigil_board_common::drive;
use sigil_board_nrf52840_dk::link::Link;
use sigil_board_nrf52840_dk::trng::{self, Trng};
use sigil_board_nrf52840_dk::{blink, clock, hw};
use sigil_core::agent::{DeviceAgent, Event, Workload};
use sigil_core::bundle::OwnedTrustBundle;
use sigil_core::crypto::RustCryptoSignatureVerifier;
use sigil_core::drbg::HmacDrbg;
use sigil_core::key::SoftwareKey;
use sigil_core::link::MAX_FRAME;
use sigil_core::rotation::{Clock, Policy, Rotation};
use sigil_core::slot::IdentitySlot;
use sigil_core::spiffe::SpiffeId;
use sigil_core::Instant;

#[allow(unreachable_pub)] // generated for both boards: `pub` items in a private module
mod provision {
    include!(concat!(env!("OUT_DIR"), "/provision.rs"));
}
use provision::{ANCHORS, APP_ID, ISSUER_SKEW_SECS, METHOD, NAMESPACE, PEER_APP, TRUST_DOMAIN};

/// Bytes for one identity chain (leaf and issuer; see the QEMU board's `device` image).
const CHAIN: usize = 1536;
const _: () = assert!(
    sigil_board_common::call::fits_chain(CHAIN),
    "a chain the device accepts must fit its TLS write buffer"
);
/// Trust anchors the device holds, and their bytes.
const ANCHOR_COUNT: usize = 5;
const ANCHOR_BYTES: usize = 2560;
/// How often the device calls its peer while it holds an identity.
const CALL_EVERY: Duration = Duration::from_secs(60);
/// A TLS read waits this long for the next frame.
const TLS_TIMEOUT_MS: u64 = 10_000;
/// Allowed skew when validating the peer: the no-RTC clock lags true time by a request's
/// latency.
const PEER_SKEW: Duration = Duration::from_secs(5);

static SLOT: IdentitySlot<SoftwareKey, CHAIN> = IdentitySlot::new();

type Rng = HmacDrbg<Trng>;
type Agent<'a> =
    DeviceAgent<'a, SoftwareKey, RustCryptoSignatureVerifier, CHAIN, ANCHOR_COUNT, ANCHOR_BYTES>;

#[entry]
fn main() -> ! {
    hw::led1_init();
    if let Some(cp) = cortex_m::Peripherals::take() {
        clock::start(cp.SYST);
    }
    let Some(mut rng) = trng::drbg() else { halt(1) };
    run(&mut rng)
}

/// Blinks `code` forever: 1 the TRNG failed its health test, 2 the provisioning does not load.
fn halt(code: u32) -> ! {
    loop {
        blink(code);
    }
}

/// `spiffe://<td>/ns/<ns>/<app>` into `out`; `None` if it does not parse (a provisioning error).
fn dapr_id<'a>(out: &'a mut heapless::String<256>, app: &str) -> Option<SpiffeId<'a>> {
    for part in ["spiffe://", TRUST_DOMAIN, "/ns/", NAMESPACE, "/", app] {
        out.push_str(part).ok()?;
    }
    SpiffeId::parse(out.as_str()).ok()
}

/// The driver: frames in, frames out, one timer, and the calls.
fn run(rng: &mut Rng) -> ! {
    let mut own = heapless::String::<256>::new();
    let mut peer = heapless::String::<256>::new();
    let (Some(own_id), Some(peer_id)) = (dapr_id(&mut own, APP_ID), dapr_id(&mut peer, PEER_APP))
    else {
        halt(2)
    };
    let mut agent = agent(own_id, rng.next_u64());
    let Some(uart) = hw::Uart0::take() else {
        halt(2)
    };
    let mut rx = [0u8; MAX_FRAME];
    let mut link = Link::new(uart, &mut rx);
    let target = Call {
        peer: peer_id,
        own: own_id,
        host: PEER_APP,
        method: METHOD,
        skew: PEER_SKEW,
        timeout_ms: TLS_TIMEOUT_MS,
    };
    let mut session = 0u16;
    let mut next_call: Option<Instant> = None;
    loop {
        let now = clock::now();
        // A skipped frame needs nothing here: the reader resynchronises by itself.
        let _ = drive::receive(&mut agent, &mut link, now);
        drive::transmit(&mut agent, rng, &mut link);
        while let Some(event) = agent.poll_event() {
            match event {
                Event::Installed { .. } => next_call = Some(now),
                Event::Expired => {
                    hw::led1(false);
                    next_call = None;
                }
                _ => {}
            }
        }
        if next_call.is_some_and(|t| now >= t) {
            session = session.wrapping_add(1);
            let answered = call::call(&mut link, session, rng, &agent, &SLOT, &target);
            hw::led1(answered.is_ok());
            next_call = Some(clock::now().saturating_add(CALL_EVERY));
        }
        let wake = agent.poll_timeout().into_iter().chain(next_call).min();
        link.idle_until(wake.unwrap_or(Instant::from_millis(u64::MAX)));
    }
}

/// The device agent: the provisioned anchors, the policy for this link, no real-time clock.
/// Out of line, so that the machine is built in place and its temporaries leave the stack.
#[inline(never)]
fn agent<'a>(own_id: SpiffeId<'a>, jitter_seed: u64) -> Agent<'a> {
    let mut bundle = OwnedTrustBundle::new();
    if bundle.replace(ANCHORS).is_err() {
        halt(2)
    }
    let policy = Policy {
        request_timeout: Duration::from_secs(10),
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
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    sigil_board_nrf52840_dk::panicked()
}
