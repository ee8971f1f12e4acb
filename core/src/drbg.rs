//! A deterministic random bit generator for devices: HMAC_DRBG with SHA-256 (NIST SP 800-90A
//! Rev. 1 §10.1.2, no prediction resistance), fed by an [`EntropySource`].
//!
//! - [`HmacDrbgState`] is the mechanism, sans-IO: instantiate, reseed and generate, each with
//!   the caller's entropy and additional input, and the reseed counter of §10.1.2.1: a
//!   generate request after [`RESEED_INTERVAL`] requests since the last (re)seed is refused
//!   ([`DrbgError::ReseedRequired`]), as is one over [`MAX_REQUEST`] bytes. Its working state
//!   (K and V) is wiped when it is dropped. Tested against the NIST CAVP HMAC_DRBG SHA-256
//!   vectors (`tests/tests/drbg_cavp.rs`).
//! - [`HmacDrbg`] owns the mechanism and an [`EntropySource`], and reseeds itself from it
//!   when the counter says so: the RNG a device passes to key generation and TLS.
//!
//! A board with a hardware TRNG implements [`EntropySource`] over it; a board without one
//! (QEMU's MPS2 machines) implements it over a per-device seed provisioned at build time and
//! says so plainly. Everything above the trait — key generation, TLS randoms and ephemeral
//! keys, rotation jitter seeds — is the same either way. (ECDSA signatures need no randomness:
//! `key::SoftwareKey` derives nonces deterministically, RFC 6979, so a repeated DRBG stream
//! cannot leak a key through a repeated nonce.)

use hmac::{Hmac, Mac as _};
use rand_core::{CryptoRng, RngCore};
use sha2::Sha256;
use zeroize::Zeroize as _;

/// Bytes of entropy input taken at instantiation (256-bit security strength plus a 128-bit
/// nonce, SP 800-90A §10.1).
pub const ENTROPY_LEN: usize = 48;
/// Bytes of entropy input taken at a reseed (the 256-bit security strength).
pub const RESEED_ENTROPY_LEN: usize = 32;
/// Generate requests allowed between two (re)seeds. SP 800-90A allows up to 2^48 for
/// HMAC_DRBG (Table 2); a device draws a few hundred times a day, so this reseeds it about
/// once in its life at most — from a TRNG, fresh entropy; from a provisioned seed, the same
/// seed again (a seed-only device has only the entropy it was given).
pub const RESEED_INTERVAL: u64 = 1 << 20;
/// The largest generate request, in bytes: 2^19 bits (SP 800-90A Table 2).
pub const MAX_REQUEST: usize = 1 << 16;

/// What a hardware TRNG (or a provisioned seed) provides.
pub trait EntropySource {
    /// Fills `out` with entropy.
    fn fill(&mut self, out: &mut [u8]);

    /// Whether every `fill` so far delivered entropy (a TRNG's health tests passed). A source
    /// that failed is not used to reseed: [`HmacDrbg`] then reports the failure.
    fn healthy(&self) -> bool {
        true
    }
}

impl<S: EntropySource + ?Sized> EntropySource for &mut S {
    fn fill(&mut self, out: &mut [u8]) {
        (**self).fill(out);
    }

    fn healthy(&self) -> bool {
        (**self).healthy()
    }
}

/// A per-device seed provisioned into the image, and a boot nonce (a boot counter kept in
/// flash, where the board has one). Only as good as the seed's secrecy and the nonce's
/// uniqueness: the same seed and nonce make the same keys.
#[derive(Clone)]
pub struct ProvisionedSeed {
    /// The device's secret seed.
    pub seed: [u8; 32],
    /// Distinct for every boot, or the DRBG repeats itself.
    pub boot_nonce: u32,
}

impl EntropySource for ProvisionedSeed {
    fn fill(&mut self, out: &mut [u8]) {
        // seed || boot nonce (little-endian) || zeros.
        let nonce = self.boot_nonce.to_le_bytes();
        out.fill(0);
        for (o, m) in out.iter_mut().zip(self.seed.iter().chain(nonce.iter())) {
            *o = *m;
        }
    }
}

impl Drop for ProvisionedSeed {
    fn drop(&mut self) {
        self.seed.zeroize();
    }
}

impl core::fmt::Debug for ProvisionedSeed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ProvisionedSeed")
            .field("boot_nonce", &self.boot_nonce)
            .finish_non_exhaustive()
    }
}

/// Why a generate request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DrbgError {
    /// [`RESEED_INTERVAL`] requests since the last (re)seed: reseed first.
    ReseedRequired,
    /// More than [`MAX_REQUEST`] bytes in one request.
    RequestTooLarge,
    /// The entropy source failed its health tests: no reseed happened.
    EntropyFailed,
}

impl core::fmt::Display for DrbgError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::ReseedRequired => "DRBG reseed required",
            Self::RequestTooLarge => "DRBG request over 2^19 bits",
            Self::EntropyFailed => "DRBG entropy source failed: not reseeded",
        })
    }
}

impl core::error::Error for DrbgError {}

/// The HMAC_DRBG mechanism over SHA-256 (SP 800-90A §10.1.2): the working state K, V and the
/// reseed counter. Entropy and additional input come from the caller.
pub struct HmacDrbgState {
    k: [u8; 32],
    v: [u8; 32],
    reseed_counter: u64,
}

impl core::fmt::Debug for HmacDrbgState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HmacDrbgState")
            .field("reseed_counter", &self.reseed_counter)
            .finish_non_exhaustive()
    }
}

impl Drop for HmacDrbgState {
    fn drop(&mut self) {
        self.k.zeroize();
        self.v.zeroize();
    }
}

impl HmacDrbgState {
    /// HMAC_DRBG_Instantiate (§10.1.2.3): seed material = `entropy` || `nonce` ||
    /// `personalization`.
    pub fn instantiate(entropy: &[u8], nonce: &[u8], personalization: &[u8]) -> Self {
        let mut d = Self {
            k: [0; 32],
            v: [1; 32],
            reseed_counter: 1,
        };
        d.update(&[entropy, nonce, personalization]);
        d
    }

    /// HMAC_DRBG_Reseed (§10.1.2.4): seed material = `entropy` || `additional`; the counter
    /// starts again.
    pub fn reseed(&mut self, entropy: &[u8], additional: &[u8]) {
        self.update(&[entropy, additional]);
        self.reseed_counter = 1;
    }

    /// HMAC_DRBG_Generate (§10.1.2.5): fills `out` (at most [`MAX_REQUEST`] bytes) after
    /// mixing in `additional` (if not empty).
    ///
    /// # Errors
    ///
    /// [`DrbgError::ReseedRequired`] after [`RESEED_INTERVAL`] requests since the last
    /// (re)seed, [`DrbgError::RequestTooLarge`]; nothing is generated then.
    pub fn generate(&mut self, out: &mut [u8], additional: &[u8]) -> Result<(), DrbgError> {
        if self.reseed_counter > RESEED_INTERVAL {
            return Err(DrbgError::ReseedRequired);
        }
        if out.len() > MAX_REQUEST {
            return Err(DrbgError::RequestTooLarge);
        }
        if !additional.is_empty() {
            self.update(&[additional]);
        }
        for chunk in out.chunks_mut(32) {
            let mut mac = Self::mac(&self.k);
            mac.update(&self.v);
            self.v = mac.finalize().into_bytes().into();
            let n = chunk.len();
            chunk.copy_from_slice(self.v.get(..n).unwrap_or(&[]));
        }
        self.update(&[additional]);
        self.reseed_counter += 1;
        Ok(())
    }

    /// Generate requests since the last (re)seed, plus one (SP 800-90A's counter).
    pub const fn reseed_counter(&self) -> u64 {
        self.reseed_counter
    }

    fn mac(key: &[u8; 32]) -> Hmac<Sha256> {
        // HMAC takes keys of any length: this cannot fail.
        <Hmac<Sha256>>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
    }

    /// HMAC_DRBG_Update (§10.1.2.2) with `data` = the concatenation of the parts.
    fn update(&mut self, data: &[&[u8]]) {
        let empty = data.iter().all(|d| d.is_empty());
        for round in [0u8, 1u8] {
            if round == 1 && empty {
                break;
            }
            let mut mac = Self::mac(&self.k);
            mac.update(&self.v);
            mac.update(&[round]);
            for d in data {
                mac.update(d);
            }
            self.k = mac.finalize().into_bytes().into();
            let mut mac = Self::mac(&self.k);
            mac.update(&self.v);
            self.v = mac.finalize().into_bytes().into();
        }
    }
}

/// HMAC_DRBG with SHA-256 fed by `S`: instantiated from [`ENTROPY_LEN`] bytes of it, and
/// reseeded from it ([`RESEED_ENTROPY_LEN`] bytes) once [`RESEED_INTERVAL`] requests have been
/// served since the last (re)seed. Its state is wiped when it is dropped.
///
/// A source that fails its health tests ([`EntropySource::healthy`]) is never mixed in:
/// [`RngCore::try_fill_bytes`] then refuses (SP 800-90A's error), and
/// [`HmacDrbg::entropy_failed`] says so. `fill_bytes`, which cannot fail, goes on from the
/// current state past the interval (still secret, no fresh entropy) and retries the reseed at
/// every request: callers that must not go on without fresh entropy use `try_fill_bytes` or
/// check `entropy_failed` (a key generation, say).
pub struct HmacDrbg<S: EntropySource> {
    state: HmacDrbgState,
    source: S,
    entropy_failed: bool,
}

impl<S: EntropySource> core::fmt::Debug for HmacDrbg<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HmacDrbg")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<S: EntropySource> HmacDrbg<S> {
    /// Instantiates from [`ENTROPY_LEN`] bytes of `source` and a personalization string (say,
    /// the board's name and the device's ID).
    pub fn new(mut source: S, personalization: &[u8]) -> Self {
        let mut entropy = [0u8; ENTROPY_LEN];
        source.fill(&mut entropy);
        let (input, nonce) = entropy.split_at(RESEED_ENTROPY_LEN);
        let state = HmacDrbgState::instantiate(input, nonce, personalization);
        entropy.zeroize();
        let entropy_failed = !source.healthy();
        Self {
            state,
            source,
            entropy_failed,
        }
    }

    /// Reseeds from the source now, mixing in `additional`.
    ///
    /// # Errors
    ///
    /// [`DrbgError::EntropyFailed`] if the source failed its health tests: nothing is mixed
    /// in, the state stays as it was.
    pub fn reseed(&mut self, additional: &[u8]) -> Result<(), DrbgError> {
        let mut entropy = [0u8; RESEED_ENTROPY_LEN];
        self.source.fill(&mut entropy);
        let result = if self.source.healthy() {
            self.state.reseed(&entropy, additional);
            self.entropy_failed = false;
            Ok(())
        } else {
            self.entropy_failed = true;
            Err(DrbgError::EntropyFailed)
        };
        entropy.zeroize();
        result
    }

    /// Whether the source failed (at instantiation or at the last reseed attempt).
    pub const fn entropy_failed(&self) -> bool {
        self.entropy_failed
    }

    /// Fills `dest`, reseeding when the counter says so.
    fn generate(&mut self, dest: &mut [u8]) -> Result<(), DrbgError> {
        for chunk in dest.chunks_mut(MAX_REQUEST) {
            match self.state.generate(chunk, &[]) {
                Ok(()) => {}
                Err(DrbgError::ReseedRequired) => {
                    self.reseed(&[])?;
                    self.state.generate(chunk, &[])?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The mechanism (its reseed counter, for instance).
    pub const fn state(&self) -> &HmacDrbgState {
        &self.state
    }

    /// The entropy source (a TRNG's health flags, for instance).
    pub const fn source(&self) -> &S {
        &self.source
    }
}

impl<S: EntropySource> RngCore for HmacDrbg<S> {
    fn next_u32(&mut self) -> u32 {
        rand_core::impls::next_u32_via_fill(self)
    }

    fn next_u64(&mut self) -> u64 {
        rand_core::impls::next_u64_via_fill(self)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        if self.generate(dest).is_err() {
            // The source failed at a due reseed: go on from the current state (see the type's
            // doc); the counter stays past the interval, so every request retries the reseed.
            let counter = self.state.reseed_counter;
            self.state.reseed_counter = 1;
            for chunk in dest.chunks_mut(MAX_REQUEST) {
                let _ = self.state.generate(chunk, &[]);
            }
            self.state.reseed_counter = counter;
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.generate(dest).map_err(|e| match e {
            DrbgError::EntropyFailed => rand_core::Error::from(
                core::num::NonZeroU32::new(rand_core::Error::CUSTOM_START + 1)
                    .unwrap_or(core::num::NonZeroU32::MIN),
            ),
            _ => rand_core::Error::from(
                core::num::NonZeroU32::new(rand_core::Error::CUSTOM_START)
                    .unwrap_or(core::num::NonZeroU32::MIN),
            ),
        })
    }
}

impl<S: EntropySource> CryptoRng for HmacDrbg<S> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> std::vec::Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }

    /// Output computed independently with Python's `hmac`/`hashlib` (SP 800-90A HMAC_DRBG,
    /// SHA-256, entropy = seed 00..1f || nonce 7 (LE) || 12 zeros, personalization
    /// "sigil test"): two generate calls of 40 and 32 bytes.
    #[test]
    fn matches_an_independent_implementation() {
        let source = ProvisionedSeed {
            seed: core::array::from_fn(|i| u8::try_from(i).unwrap()),
            boot_nonce: 7,
        };
        let mut d = HmacDrbg::new(source, b"sigil test");
        let mut a = [0u8; 40];
        d.fill_bytes(&mut a);
        assert_eq!(
            a.to_vec(),
            hex("af379329810189a86294920db0f7c3e996dae814cf47d6b97199cb941d7a5019baadebf943a30de4")
        );
        let mut b = [0u8; 32];
        d.fill_bytes(&mut b);
        assert_eq!(
            b.to_vec(),
            hex("882085fcbe9af0bcc6ea7b370df72ff097fc57aa7d60f364bd1b21f1a650b611")
        );
        assert_eq!(d.state().reseed_counter(), 3);
    }

    #[test]
    fn boot_nonce_and_seed_change_the_stream() {
        let out = |seed: [u8; 32], boot_nonce| {
            let mut d = HmacDrbg::new(ProvisionedSeed { seed, boot_nonce }, b"p");
            d.next_u64()
        };
        assert_ne!(out([1; 32], 0), out([1; 32], 1));
        assert_ne!(out([1; 32], 0), out([2; 32], 0));
        assert_eq!(out([1; 32], 0), out([1; 32], 0));
    }

    /// A source that counts its draws and gives a different block each time.
    struct Counting(u8, u32);

    impl EntropySource for Counting {
        fn fill(&mut self, out: &mut [u8]) {
            self.1 += 1;
            self.0 = self.0.wrapping_add(1);
            out.fill(self.0);
        }
    }

    #[test]
    fn the_counter_refuses_past_the_interval_and_the_owner_reseeds_from_its_source() {
        let mut state = HmacDrbgState::instantiate(&[1; 32], &[2; 16], b"");
        state.reseed_counter = RESEED_INTERVAL;
        let mut out = [0u8; 16];
        assert!(state.generate(&mut out, &[]).is_ok());
        assert_eq!(
            state.generate(&mut out, &[]),
            Err(DrbgError::ReseedRequired)
        );
        state.reseed(&[3; 32], b"");
        assert_eq!(state.reseed_counter(), 1);
        assert!(state.generate(&mut out, &[]).is_ok());
        let mut big = std::vec![0u8; MAX_REQUEST + 1];
        assert_eq!(
            state.generate(&mut big, &[]),
            Err(DrbgError::RequestTooLarge)
        );

        let mut d = HmacDrbg::new(Counting(0, 0), b"");
        assert_eq!(d.source().1, 1);
        d.state.reseed_counter = RESEED_INTERVAL + 1;
        let before = d.next_u64();
        assert_eq!(d.source().1, 2, "reseeded from the source");
        assert_eq!(d.state().reseed_counter(), 2);
        assert_ne!(before, d.next_u64());
        // A source that fails its health tests is never mixed in: try_fill_bytes refuses,
        // fill_bytes goes on from the state it has, and the reseed is retried until it works.
        struct Failing(bool);
        impl EntropySource for Failing {
            fn fill(&mut self, out: &mut [u8]) {
                out.fill(0);
            }
            fn healthy(&self) -> bool {
                !self.0
            }
        }
        let mut f = HmacDrbg::new(Failing(false), b"");
        assert!(!f.entropy_failed());
        f.source.0 = true;
        f.state.reseed_counter = RESEED_INTERVAL + 1;
        let mut out = [0u8; 8];
        assert!(f.try_fill_bytes(&mut out).is_err());
        assert!(f.entropy_failed());
        let (a, b) = (f.next_u64(), f.next_u64());
        assert_ne!(a, b, "fill_bytes goes on from the state");
        assert_eq!(f.state().reseed_counter(), RESEED_INTERVAL + 1, "still due");
        f.source.0 = false;
        assert!(f.try_fill_bytes(&mut out).is_ok());
        assert!(!f.entropy_failed());
        assert_eq!(f.state().reseed_counter(), 2);
        // A request over the limit is split, not refused.
        let mut big = std::vec![0u8; MAX_REQUEST + 100];
        d.fill_bytes(&mut big);
        assert!(big[MAX_REQUEST..].iter().any(|b| *b != 0));
    }
}
