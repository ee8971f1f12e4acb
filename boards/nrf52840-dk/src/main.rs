//! Sigil on the Nordic nRF52840 DK (Cortex-M4F, 64 MHz, 1 MB flash, 256 KB RAM), with no heap
//! and no PAC/HAL:
//!
//! 1. start the RNG peripheral (a true RNG, bias correction on) and instantiate the core's
//!    HMAC-DRBG from it, personalized with the board's name and the chip's FICR device ID; a
//!    repetition-count health test and a timeout guard the raw bytes;
//! 2. generate a P-256 key and build a CSR for `spiffe://example.org/ns/default/device`, then
//!    parse it back and check its self-signature;
//! 3. run the core's device agent once on monotonic time only (SysTick, 1 ms): its rotation
//!    machine asks for an identity and the agent sends the request, a fresh key's CSR in a
//!    link frame;
//! 4. validate the fixture chain (root → issuer → SPIFFE leaf) held in flash, at a pinned
//!    time, as a TLS client would validate its server (exact SPIFFE ID).
//!
//! LED1 (P0.13) shows the outcome: lit steadily when every step held; on failure it blinks
//! the failed step's number (1–4) and pauses, over and over; a panic blinks it fast forever.
//! There is no console: no semihosting or RTT, so the image runs without a probe attached.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use rand_core::RngCore as _;
use sigil_board_nrf52840_dk::trng::{self, Trng};
use sigil_board_nrf52840_dk::{blink, clock, hw};
use sigil_core::agent::{DeviceAgent, Event, Workload};
use sigil_core::bundle::OwnedTrustBundle;
use sigil_core::chain::{self, Options, PeerName, TrustBundle, Usage};
use sigil_core::crypto::{RustCryptoSignatureVerifier, Signer as _};
use sigil_core::csr::{self, Csr};
use sigil_core::drbg::HmacDrbg;
use sigil_core::key::SoftwareKey;
use sigil_core::link::Frame;
use sigil_core::rotation::{Clock, Policy, Rotation, State};
use sigil_core::spiffe::SpiffeId;
use sigil_core::UnixTime;

static ROOT: &[u8] = include_bytes!("../../../tests/fixtures/p256/root.der");
static ISSUER: &[u8] = include_bytes!("../../../tests/fixtures/p256/issuer.der");
static LEAF: &[u8] = include_bytes!("../../../tests/fixtures/p256/leaf.der");
/// Inside the fixtures' validity (generated 2026-11-22, valid 20 years).
const PINNED: UnixTime = UnixTime::from_secs(1_893_456_000); // 2030-01-01T00:00:00Z
const DEVICE_ID: &str = "spiffe://example.org/ns/default/device";

/// Which step failed; LED1 blinks its number.
#[derive(Clone, Copy, Debug)]
enum Failed {
    Entropy,
    Csr,
    Rotation,
    Chain,
}

impl Failed {
    const fn blinks(self) -> u32 {
        match self {
            Self::Entropy => 1,
            Self::Csr => 2,
            Self::Rotation => 3,
            Self::Chain => 4,
        }
    }
}

#[entry]
fn main() -> ! {
    hw::led1_init();
    if let Some(cp) = cortex_m::Peripherals::take() {
        clock::start(cp.SYST);
    }
    match run() {
        Ok(()) => {
            hw::led1(true);
            loop {
                cortex_m::asm::wfi();
            }
        }
        Err(step) => loop {
            blink(step.blinks());
        },
    }
}

fn run() -> Result<(), Failed> {
    let mut rng = drbg()?;
    // Each step is its own frame, so their buffers are never on the stack together.
    csr_step(&mut rng).map_err(|()| Failed::Csr)?;
    rotation_step(&mut rng).map_err(|()| Failed::Rotation)?;
    chain_step().map_err(|()| Failed::Chain)
}

fn drbg() -> Result<HmacDrbg<Trng>, Failed> {
    trng::drbg().ok_or(Failed::Entropy)
}

/// Key and CSR, parsed back and its self-signature checked.
#[inline(never)]
fn csr_step(rng: &mut HmacDrbg<Trng>) -> Result<(), ()> {
    let mut key = SoftwareKey::generate(rng);
    let id = SpiffeId::parse(DEVICE_ID).map_err(drop)?;
    let mut csr_buf = [0u8; 320];
    let der = csr::Builder::new()
        .with_spiffe_id(id)
        .build(&mut key, &mut csr_buf)
        .map_err(drop)?;
    let parsed = Csr::parse(der).map_err(drop)?;
    parsed
        .verify_signature(&RustCryptoSignatureVerifier)
        .map_err(drop)?;
    if parsed.public_key() == key.public_key() {
        Ok(())
    } else {
        Err(())
    }
}

/// The core's device agent, driven once on the monotonic clock: its rotation machine asks for
/// an identity and the agent sends the sign request, a fresh key's CSR in a link frame. (No
/// CA is reachable from this image; the QEMU board runs the rest of the cycle against a real
/// Sentry.)
#[inline(never)]
fn rotation_step(rng: &mut HmacDrbg<Trng>) -> Result<(), ()> {
    let id = SpiffeId::parse(DEVICE_ID).map_err(drop)?;
    let mut bundle = OwnedTrustBundle::new();
    bundle.replace(&[ROOT]).map_err(drop)?;
    let rotation = Rotation::new(
        Policy::default(),
        Clock::Monotonic,
        rng.next_u64(),
        Some(id),
        bundle,
    );
    let workload = Workload {
        app_id: "device",
        namespace: "default",
        token: "",
    };
    let mut agent: DeviceAgent<'_, SoftwareKey, RustCryptoSignatureVerifier, 1024, 2, 1024> =
        DeviceAgent::new(rotation, workload, RustCryptoSignatureVerifier);
    agent.handle_timeout(clock::now());
    let mut frame = [0u8; 640];
    let sent = agent.poll_transmit(rng, &mut frame).ok_or(())?;
    let Ok((Frame::SignRequest { request, csr, .. }, _)) = Frame::parse(sent) else {
        return Err(());
    };
    Csr::parse(csr)
        .map_err(drop)?
        .verify_signature(&RustCryptoSignatureVerifier)
        .map_err(drop)?;
    let awaiting = matches!(agent.rotation().state(), State::Awaiting(_));
    if agent.poll_event() == Some(Event::Requested { request })
        && awaiting
        && agent.rotation().identity().is_none()
    {
        Ok(())
    } else {
        Err(())
    }
}

/// The chain in flash validates at the pinned time for the device's SPIFFE ID.
#[inline(never)]
fn chain_step() -> Result<(), ()> {
    let server = SpiffeId::parse(DEVICE_ID).map_err(drop)?;
    let options = Options {
        usage: Usage::ServerAuth,
        peer: PeerName::SpiffeId(server),
        ..Options::new(PINNED)
    };
    let mut bundle: TrustBundle<'_, 2> = TrustBundle::new();
    bundle.add(ROOT).map_err(drop)?;
    match chain::verify(
        LEAF,
        &[ISSUER],
        &bundle,
        &RustCryptoSignatureVerifier,
        &options,
    ) {
        Ok(p) if p.intermediates() == [0] => Ok(()),
        _ => Err(()),
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    sigil_board_nrf52840_dk::panicked()
}
