//! Sigil's first scenario on the reference board (QEMU mps2-an386, Cortex-M4F), with no heap:
//!
//! 1. seed a DRBG from the provisioned device seed;
//! 2. generate a P-256 key and build a CSR for `spiffe://example.org/ns/default/device`, then
//!    parse it back and check its self-signature;
//! 3. validate the fixture chain (root → issuer with a URI name constraint → SPIFFE leaf) held
//!    in flash, at a pinned time, as a TLS client would validate its server (exact SPIFFE ID);
//! 4. check that a foreign root, a tampered leaf and an expired time are each refused for the
//!    right reason;
//! 5. (feature `rotation`, on by default) run the core's rotation machine with no real-time
//!    clock: it asks for an identity, installs the fixture chain answered for its key, publishes
//!    it to the identity slot where a reader leases it; a trust-bundle change that drops the
//!    root triggers renewal at once, and an answer that no longer chains is refused while the
//!    old identity keeps serving;
//! 6. report the peak stack and exit through semihosting: 0 only if every step held.
#![no_std]
#![no_main]

use sigil_board_qemu_mps2_an386::{self as board, stack};

use cortex_m_rt::entry;
#[cfg(feature = "rotation")]
use rand_core::RngCore as _;
use sigil_board_qemu_mps2_an386::say;
use sigil_core::chain::{self, ErrorKind, Options, PeerName, TrustBundle, Usage};
use sigil_core::crypto::{RustCryptoSignatureVerifier, Signer as _};
use sigil_core::csr::{self, Csr};
use sigil_core::drbg::{HmacDrbg, ProvisionedSeed};
use sigil_core::key::SoftwareKey;
use sigil_core::spiffe::SpiffeId;
use sigil_core::UnixTime;

static ROOT: &[u8] = include_bytes!("../../../tests/fixtures/p256/root.der");
static ISSUER: &[u8] = include_bytes!("../../../tests/fixtures/p256/issuer.der");
static LEAF: &[u8] = include_bytes!("../../../tests/fixtures/p256/leaf.der");
static FOREIGN: &[u8] = include_bytes!("../../../tests/fixtures/p256/foreign.der");
/// The fixture leaf's key: it stands in for the key the device generates, since the fixture
/// CA certified it (test material, provisioned nowhere else).
#[cfg(feature = "rotation")]
static LEAF_KEY: &[u8; 32] = include_bytes!("../../../tests/fixtures/p256/leaf-key.scalar");
#[cfg(feature = "rotation")]
static SLOT: sigil_core::slot::IdentitySlot<SoftwareKey, 1024> =
    sigil_core::slot::IdentitySlot::new();
const DEVICE_SEED: [u8; 32] = include!(concat!(env!("OUT_DIR"), "/seed.rs"));
/// Inside the fixtures' validity (generated 2026-11-22, valid 20 years).
const PINNED: UnixTime = UnixTime::from_secs(1_893_456_000); // 2030-01-01T00:00:00Z
const DEVICE_ID: &str = "spiffe://example.org/ns/default/device";

#[entry]
fn main() -> ! {
    stack::paint();
    board::finish(run())
}

fn check(ok: bool, step: &'static str) -> Result<(), &'static str> {
    if ok {
        say!("ok   ", step);
        Ok(())
    } else {
        Err(step)
    }
}

fn run() -> Result<(), &'static str> {
    let mut rng = HmacDrbg::new(
        ProvisionedSeed {
            seed: DEVICE_SEED,
            boot_nonce: 0,
        },
        b"sigil qemu-mps2-an386",
    );
    // Each step is its own frame, so their buffers are never on the stack together.
    csr_step(&mut rng)?;
    chain_step()?;
    refusals_step()?;
    #[cfg(feature = "rotation")]
    rotation_step(rng.next_u64())?;
    // The negative control: this must fail the run.
    check(
        !cfg!(feature = "fail"),
        "negative control (feature `fail` off)",
    )
}

/// Key and CSR, parsed back and its self-signature checked.
#[inline(never)]
fn csr_step(rng: &mut HmacDrbg<ProvisionedSeed>) -> Result<(), &'static str> {
    let mut key = SoftwareKey::generate(rng);
    let id = SpiffeId::parse(DEVICE_ID).map_err(|_| "device SPIFFE ID parses")?;
    let mut csr_buf = [0u8; 320];
    let der = csr::Builder::new()
        .with_spiffe_id(id)
        .build(&mut key, &mut csr_buf)
        .map_err(|_| "build CSR")?;
    say!("csr: ", der.len(), " bytes DER");
    let parsed = Csr::parse(der).map_err(|_| "parse own CSR")?;
    check(
        parsed
            .verify_signature(&RustCryptoSignatureVerifier)
            .is_ok(),
        "CSR self-signature verifies",
    )?;
    check(
        parsed.public_key() == key.public_key(),
        "CSR carries the device key",
    )
}

fn options() -> Result<Options<'static>, &'static str> {
    let server = SpiffeId::parse(DEVICE_ID).map_err(|_| "server SPIFFE ID parses")?;
    Ok(Options {
        usage: Usage::ServerAuth,
        peer: PeerName::SpiffeId(server),
        ..Options::new(PINNED)
    })
}

/// The chain in flash validates.
#[inline(never)]
fn chain_step() -> Result<(), &'static str> {
    let mut bundle: TrustBundle<'_, 2> = TrustBundle::new();
    bundle.add(ROOT).map_err(|_| "load trust anchor")?;
    let found = chain::verify(
        LEAF,
        &[ISSUER],
        &bundle,
        &RustCryptoSignatureVerifier,
        &options()?,
    );
    check(
        matches!(&found, Ok(p) if p.intermediates() == [0]),
        "chain root -> issuer -> leaf validates",
    )
}

/// A foreign root, a tampered leaf and a late time are each refused for their own reason.
#[inline(never)]
fn refusals_step() -> Result<(), &'static str> {
    let options = options()?;
    let mut foreign: TrustBundle<'_, 1> = TrustBundle::new();
    foreign.add(FOREIGN).map_err(|_| "load foreign anchor")?;
    let e = chain::verify(
        LEAF,
        &[ISSUER],
        &foreign,
        &RustCryptoSignatureVerifier,
        &options,
    );
    check(
        matches!(
            e,
            Err(chain::Error {
                kind: ErrorKind::BadSignature(_)
                    | ErrorKind::UnknownIssuer
                    | ErrorKind::AuthorityKeyIdMismatch,
                ..
            })
        ),
        "foreign root refused",
    )?;
    let mut bundle: TrustBundle<'_, 1> = TrustBundle::new();
    bundle.add(ROOT).map_err(|_| "load trust anchor")?;
    let mut tampered = [0u8; 600];
    let tampered = tampered.get_mut(..LEAF.len()).ok_or("leaf fits")?;
    tampered.copy_from_slice(LEAF);
    let last = tampered.len() - 3;
    tampered[last] ^= 0x01;
    let e = chain::verify(
        tampered,
        &[ISSUER],
        &bundle,
        &RustCryptoSignatureVerifier,
        &options,
    );
    check(
        matches!(
            e,
            Err(chain::Error {
                kind: ErrorKind::BadSignature(_),
                ..
            })
        ),
        "tampered leaf refused",
    )?;
    let late = Options {
        time: UnixTime::from_secs(2_524_608_000),
        ..options
    }; // 2050
    let e = chain::verify(
        LEAF,
        &[ISSUER],
        &bundle,
        &RustCryptoSignatureVerifier,
        &late,
    );
    check(
        matches!(
            e,
            Err(chain::Error {
                kind: ErrorKind::Expired { .. },
                ..
            })
        ),
        "expired chain refused",
    )
}

/// The rotation machine and the identity slot, on monotonic time only (no RTC).
#[cfg(feature = "rotation")]
#[inline(never)]
fn rotation_step(seed: u64) -> Result<(), &'static str> {
    use core::time::Duration;
    use sigil_core::bundle::OwnedTrustBundle;
    use sigil_core::rotation::{Action, Clock, Policy, Rejection, Rotation};
    use sigil_core::Instant;

    let id = SpiffeId::parse(DEVICE_ID).map_err(|_| "device SPIFFE ID parses")?;
    let mut bundle = OwnedTrustBundle::new();
    bundle.replace(&[ROOT]).map_err(|_| "trust bundle loads")?;
    let mut m: Rotation<'_, SoftwareKey, 1024, 2, 1024> =
        Rotation::new(Policy::default(), Clock::Monotonic, seed, Some(id), bundle);
    let key = || {
        p256::ecdsa::SigningKey::from_slice(LEAF_KEY)
            .map(SoftwareKey::from_signing_key)
            .map_err(|_| "fixture key loads")
    };
    let mut csr = [0u8; 320];

    let t0 = Instant::ZERO;
    m.handle_timeout(t0);
    check(
        m.poll_action() == Some(Action::Request),
        "machine asks for an identity",
    )?;
    let (request, _der) = m
        .start_request(key()?, &mut csr)
        .map_err(|_| "CSR for the request")?;
    let t1 = t0.saturating_add(Duration::from_millis(80));
    m.handle_response(t1, request, &[LEAF, ISSUER], &RustCryptoSignatureVerifier);
    check(
        matches!(
            m.poll_action(),
            Some(Action::Installed { generation: 1, .. })
        ),
        "answer validated and installed (no RTC: wall time from the certificate)",
    )?;
    let identity = m.identity().ok_or("identity in use")?;
    SLOT.publish(
        identity.chain(),
        identity.key().clone(),
        identity.not_after(),
    )
    .map_err(|_| "identity published to the slot")?;
    {
        let lease = SLOT.lease().ok_or("slot leases the identity")?;
        let key = lease.key().ok_or("leased key clones")?;
        check(
            lease.with(|leased| Some(leased.leaf() == LEAF)) == Some(true)
                && lease.generation() == 1
                && key.public_key() == identity.key().public_key(),
            "slot lease reads a consistent identity",
        )?;
    }

    // Trust bundle at run time: adding an anchor keeps the identity; dropping its root does not.
    let t2 = t1.saturating_add(Duration::from_secs(60));
    m.handle_trust_bundle(t2, &[ROOT, FOREIGN], &RustCryptoSignatureVerifier)
        .map_err(|_| "bundle with two anchors loads")?;
    check(
        m.poll_action().is_none(),
        "new anchor added, identity still trusted",
    )?;
    m.handle_trust_bundle(t2, &[FOREIGN], &RustCryptoSignatureVerifier)
        .map_err(|_| "bundle without the root loads")?;
    check(
        m.poll_action() == Some(Action::Request),
        "root removed: renewal at once",
    )?;
    let (request, _der) = m
        .start_request(key()?, &mut csr)
        .map_err(|_| "CSR for the renewal")?;
    m.handle_response(t2, request, &[LEAF, ISSUER], &RustCryptoSignatureVerifier);
    check(
        matches!(m.poll_action(), Some(Action::Rejected(Rejection::Path(_)))),
        "answer that no longer chains refused",
    )?;
    check(
        m.identity().is_some() && SLOT.generation() == Some(1),
        "old identity keeps serving",
    )
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    board::panicked(info)
}
