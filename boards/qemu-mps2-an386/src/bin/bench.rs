//! The device's work per operation, in **instructions** (not cycles): run under QEMU with
//! `-icount shift=0` (`ci/qemu-bench.sh`), where every instruction advances the virtual clock
//! by 1 ns. SysTick runs free from the 25 MHz core clock over its 24 bits, so one tick is
//! 40 virtual ns; the image calibrates that against `cortex_m::asm::delay` (cortex-m 0.7.10:
//! `delay(n)` runs `n + 1` rounds of a two-instruction loop) instead of assuming it. QEMU is not cycle-accurate:
//! a Cortex-M4 takes one cycle for most of these instructions and 2–3 for loads, stores and
//! taken branches, so cycles are these counts times about 1.2–1.5 (an estimate, not measured).
//!
//! Operations: P-256 key generation (from the DRBG), an ECDSA P-256 signature over 100 bytes
//! (RFC 6979 nonce, SHA-256), its verification, an ECDH key agreement (TLS 1.3 key share:
//! an ephemeral key, its public share and the shared secret), SHA-256 per KiB, AES-128-GCM
//! per KiB (the TLS record cipher, sealing), an Ed25519 verification (RFC 8032's test 2;
//! images built with the `ed25519` feature), a CSR, and a 3-certificate path validation (two
//! signature verifications, the fixture chain). Then a sum of a device's mutual-TLS handshake
//! from them (ECDHE, CertificateVerify signed, the server's chain and CertificateVerify
//! verified, transcript hashing of about 3 KiB, about 3 KiB of records sealed or opened): an
//! estimate of its crypto, labelled so; and **a whole handshake measured**: the device's
//! embedded-tls client, with the core's provider, replaying a handshake recorded against a
//! rustls server (`tests/fixtures/handshake`, made and checked byte for byte on the host by
//! `the_recorded_handshake_replays_byte_for_byte`): the same DRBG seed, identity and time make
//! the device write the recorded client bytes, so the recorded server bytes complete it —
//! ECDHE, the server's chain validated and its CertificateVerify checked, the device's chain
//! and CertificateVerify sent, both Finished, one ping/pong record each way. Every byte the
//! device writes is checked against the recording.
#![no_std]
#![no_main]

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::entry;
use rand_core::RngCore as _;
use sigil_board_qemu_mps2_an386::{self as board, say, stack};
use sigil_core::chain::{self, Options, PeerName, TrustBundle, Usage};
use sigil_core::crypto::{RustCryptoSignatureVerifier, SignatureVerifier as _, Signer as _};
use sigil_core::csr;
use sigil_core::drbg::{HmacDrbg, ProvisionedSeed};
use sigil_core::key::SoftwareKey;
use sigil_core::spiffe::SpiffeId;
use sigil_core::UnixTime;

static ROOT: &[u8] = include_bytes!("../../../../tests/fixtures/p256/root.der");
/// The recorded handshake (see the module doc).
mod recorded {
    pub(super) static ROOT: &[u8] = include_bytes!("../../../../tests/fixtures/handshake/root.der");
    pub(super) static ISSUER: &[u8] =
        include_bytes!("../../../../tests/fixtures/handshake/issuer.der");
    pub(super) static CLIENT: &[u8] =
        include_bytes!("../../../../tests/fixtures/handshake/client.der");
    pub(super) static CLIENT_KEY: &[u8] =
        include_bytes!("../../../../tests/fixtures/handshake/client-key.pk8");
    pub(super) static SERVER_BYTES: &[u8] =
        include_bytes!("../../../../tests/fixtures/handshake/server-to-client.bin");
    pub(super) static CLIENT_BYTES: &[u8] =
        include_bytes!("../../../../tests/fixtures/handshake/client-to-server.bin");
    /// The host test's: seed, personalization, expected server, time.
    pub(super) const SEED: [u8; 32] = [0x42; 32];
    pub(super) const PERSONALIZATION: &[u8] = b"sigil recorded handshake";
    pub(super) const SERVER_ID: &str = "spiffe://localhost/ns/default/echo";
    pub(super) const TIME: u64 = 1_893_456_000;
}
static ISSUER: &[u8] = include_bytes!("../../../../tests/fixtures/p256/issuer.der");
static LEAF: &[u8] = include_bytes!("../../../../tests/fixtures/p256/leaf.der");
const DEVICE_SEED: [u8; 32] = include!(concat!(env!("OUT_DIR"), "/seed.rs"));
/// Inside the fixtures' validity.
const PINNED: UnixTime = UnixTime::from_secs(1_893_456_000);
const DEVICE_ID: &str = "spiffe://example.org/ns/default/device";
/// Each operation's repetitions (the average is printed).
const ROUNDS: u32 = 4;
/// Instructions in the calibration delay.
const CALIBRATION: u32 = 4_000_000;

#[entry]
fn main() -> ! {
    stack::paint();
    let Some(mut p) = cortex_m::Peripherals::take() else {
        board::finish(Err("core peripherals taken twice"))
    };
    p.SYST.set_clock_source(SystClkSource::Core);
    p.SYST.set_reload(0x00FF_FFFF);
    p.SYST.clear_current();
    p.SYST.enable_counter();
    board::finish(run())
}

/// SysTick ticks `f` took (the counter counts down over 24 bits; every operation here is far
/// shorter than one wrap, 2^24 ticks = 671 M instructions).
fn ticks(mut f: impl FnMut()) -> u64 {
    let start = SYST::get_current();
    f();
    let end = SYST::get_current();
    u64::from(start.wrapping_sub(end) & 0x00FF_FFFF)
}

/// Runs `f` [`ROUNDS`] times; the average in instructions (from the calibration).
fn instructions(per_tick_x1000: u64, mut f: impl FnMut()) -> u64 {
    let mut total = 0;
    for _ in 0..ROUNDS {
        total += ticks(&mut f);
    }
    total * per_tick_x1000 / 1000 / u64::from(ROUNDS)
}

fn run() -> Result<(), &'static str> {
    // `delay(n)`: n + 1 rounds of `subs; bne`, so CALIBRATION instructions (and two more).
    let calibration = ticks(|| cortex_m::asm::delay(CALIBRATION / 2));
    if calibration == 0 {
        return Err("SysTick does not advance: run with -icount");
    }
    // Instructions per tick, times 1000 (40,000 if QEMU clocks SysTick at 25 MHz).
    let per_tick = u64::from(CALIBRATION) * 1000 / calibration;
    say!(
        "bench: calibration delay_instructions=",
        CALIBRATION,
        " ticks=",
        calibration,
        " instructions_per_tick_x1000=",
        per_tick
    );
    let mut rng = HmacDrbg::new(
        ProvisionedSeed {
            seed: DEVICE_SEED,
            boot_nonce: 1,
        },
        b"sigil qemu-mps2-an386 bench",
    );

    let keygen = instructions(per_tick, || {
        let _ = SoftwareKey::generate(&mut rng);
    });
    let mut key = SoftwareKey::generate(&mut rng);
    let message = [0x5a_u8; 100];
    let mut sig = [0u8; 72];
    let mut sig_len = 0;
    let sign = instructions(per_tick, || {
        sig_len = key.sign(&message, &mut sig).map_or(0, <[u8]>::len);
    });
    let signature = sig.get(..sig_len).ok_or("signature")?;
    let scheme = key.scheme();
    let mut ok = true;
    let verify = instructions(per_tick, || {
        ok &= RustCryptoSignatureVerifier
            .verify(scheme, key.public_key(), &message, signature)
            .is_ok();
    });
    if !ok || sig_len == 0 {
        return Err("signature did not verify");
    }
    // The server's key share, made outside the measurement: the device's part is one
    // ephemeral key and one shared secret.
    let theirs = p256::ecdh::EphemeralSecret::random(&mut rng).public_key();
    let ecdh = instructions(per_tick, || {
        let ours = p256::ecdh::EphemeralSecret::random(&mut rng);
        // The key share the device sends, then the shared secret.
        let share = ours.public_key();
        let shared = ours.diffie_hellman(&theirs);
        ok &= shared.raw_secret_bytes().iter().any(|b| *b != 0) && share != theirs;
    });
    let block = [0xa5_u8; 1024];
    let sha256_kib = instructions(per_tick, || {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(block);
        ok &= digest.iter().any(|b| *b != 0);
    });
    let aes_gcm_kib = {
        use aes_gcm::aead::{AeadInPlace as _, KeyInit as _};
        let cipher = aes_gcm::Aes128Gcm::new(&[0x11; 16].into());
        let mut record = [0x5a_u8; 1024];
        instructions(per_tick, || {
            let tag = cipher.encrypt_in_place_detached(&[0x22; 12].into(), b"hdr", &mut record);
            ok &= tag.is_ok();
        })
    };
    #[cfg(feature = "ed25519")]
    let ed25519_verify = {
        // RFC 8032, section 7.1, TEST 2: a one-byte message.
        const PUBLIC: [u8; 32] = [
            0x3d, 0x40, 0x17, 0xc3, 0xe8, 0x43, 0x89, 0x5a, 0x92, 0xb7, 0x0a, 0xa7, 0x4d, 0x1b,
            0x7e, 0xbc, 0x9c, 0x98, 0x2c, 0xcf, 0x2e, 0xc4, 0x96, 0x8c, 0xc0, 0xcd, 0x55, 0xf1,
            0x2a, 0xf4, 0x66, 0x0c,
        ];
        const SIGNATURE: [u8; 64] = [
            0x92, 0xa0, 0x09, 0xa9, 0xf0, 0xd4, 0xca, 0xb8, 0x72, 0x0e, 0x82, 0x0b, 0x5f, 0x64,
            0x25, 0x40, 0xa2, 0xb2, 0x7b, 0x54, 0x16, 0x50, 0x3f, 0x8f, 0xb3, 0x76, 0x22, 0x23,
            0xeb, 0xdb, 0x69, 0xda, 0x08, 0x5a, 0xc1, 0xe4, 0x3e, 0x15, 0x99, 0x6e, 0x45, 0x8f,
            0x36, 0x13, 0xd0, 0xf1, 0x1d, 0x8c, 0x38, 0x7b, 0x2e, 0xae, 0xb4, 0x30, 0x2a, 0xee,
            0xb0, 0x0d, 0x29, 0x16, 0x12, 0xbb, 0x0c, 0x00,
        ];
        instructions(per_tick, || {
            ok &= RustCryptoSignatureVerifier
                .verify(
                    sigil_core::crypto::Scheme::Ed25519,
                    sigil_core::crypto::PublicKey::Ed25519(&PUBLIC),
                    &[0x72],
                    &SIGNATURE,
                )
                .is_ok();
        })
    };
    let id = SpiffeId::parse(DEVICE_ID).map_err(|_| "device SPIFFE ID")?;
    let mut csr_buf = [0u8; 320];
    let csr = instructions(per_tick, || {
        ok &= csr::Builder::new()
            .with_spiffe_id(id)
            .build(&mut key, &mut csr_buf)
            .is_ok();
    });
    let mut bundle: TrustBundle<'_, 1> = TrustBundle::new();
    bundle.add(ROOT).map_err(|_| "trust anchor")?;
    let options = Options {
        usage: Usage::ServerAuth,
        peer: PeerName::SpiffeId(id),
        ..Options::new(PINNED)
    };
    let path = instructions(per_tick, || {
        ok &= chain::verify(
            LEAF,
            &[ISSUER],
            &bundle,
            &RustCryptoSignatureVerifier,
            &options,
        )
        .is_ok();
    });
    if !ok {
        return Err("an operation failed");
    }
    for (name, n) in [
        ("p256_keygen", keygen),
        ("p256_sign", sign),
        ("p256_verify", verify),
        ("p256_ecdh", ecdh),
        ("sha256_per_kib", sha256_kib),
        ("aes128gcm_seal_per_kib", aes_gcm_kib),
        ("csr_build", csr),
        ("path_validation_3_certs", path),
    ] {
        say!("bench: ", name, " instructions=", n);
    }
    #[cfg(feature = "ed25519")]
    say!("bench: ed25519_verify instructions=", ed25519_verify);
    // ECDHE, our CertificateVerify, the server's chain (the path) and CertificateVerify, about
    // 3 KiB of transcript hashing and about 3 KiB of records sealed or opened.
    let handshake = ecdh + sign + path + verify + 3 * sha256_kib + 3 * aes_gcm_kib;
    say!(
        "bench: handshake_crypto_estimate instructions=",
        handshake,
        " (the sum of its operations above)"
    );
    let mut replayed = Ok(());
    let measured = instructions(per_tick, || replayed = replay_handshake());
    replayed?;
    say!(
        "bench: mutual_tls_handshake instructions=",
        measured,
        " (measured: a recorded handshake replayed, with one ping/pong)"
    );
    let _ = rng.next_u32();
    Ok(())
}

/// One replay of the recorded handshake and ping/pong, from a fresh DRBG at the recorded
/// seed.
fn replay_handshake() -> Result<(), &'static str> {
    use embedded_io::Write as _;
    use embedded_tls::blocking::{Aes128GcmSha256, TlsConfig, TlsConnection, TlsContext};
    use sigil_board_common::replay::Replay;
    use sigil_core::device_tls::{Provider, ServerCertVerifier};

    let mut rng = HmacDrbg::new(
        ProvisionedSeed {
            seed: recorded::SEED,
            boot_nonce: 0,
        },
        recorded::PERSONALIZATION,
    );
    let key = SoftwareKey::from_pkcs8_der(recorded::CLIENT_KEY).map_err(|_| "recorded key")?;
    let chain = [recorded::CLIENT, recorded::ISSUER];
    let mut bundle: TrustBundle<'_, 1> = TrustBundle::new();
    bundle.add(recorded::ROOT).map_err(|_| "recorded root")?;
    let server = SpiffeId::parse(recorded::SERVER_ID).map_err(|_| "recorded server ID")?;
    let options = Options {
        peer: PeerName::SpiffeId(server),
        ..Options::new(UnixTime::from_secs(recorded::TIME))
    };
    let verifier = ServerCertVerifier::new(bundle, options, RustCryptoSignatureVerifier);
    let mut provider = Provider::new(&mut rng, Some((&chain, key)), verifier);
    let mut rx = [0u8; sigil_core::link::TLS_READ_BUFFER];
    let mut tx = [0u8; 1280];
    let mut replay = Replay::new(recorded::SERVER_BYTES, recorded::CLIENT_BYTES);
    {
        let mut tls: TlsConnection<'_, _, Aes128GcmSha256> =
            TlsConnection::new(&mut replay, &mut rx, &mut tx);
        let config = TlsConfig::new();
        tls.open(TlsContext::new(&config, &mut provider))
            .map_err(|_| "the recorded handshake did not replay")?;
        if !provider.verifier().is_verified() {
            return Err("the recorded server was not verified");
        }
        tls.write_all(b"ping").map_err(|_| "ping")?;
        tls.flush().map_err(|_| "ping")?;
        let mut pong = [0u8; 4];
        let mut got = 0;
        while let Some(space) = pong.get_mut(got..).filter(|s| !s.is_empty()) {
            match tls.read(space) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        if &pong != b"pong" {
            return Err("the recorded answer did not decrypt");
        }
    }
    if replay.unwritten() != 0 {
        return Err("the device did not write all the recorded client bytes");
    }
    Ok(())
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    board::panicked(info)
}
