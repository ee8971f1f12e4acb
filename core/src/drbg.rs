//! A deterministic random bit generator for devices: HMAC-DRBG with SHA-256 (NIST SP 800-90A
//! §10.1.2, no reseeding, no additional input), instantiated from an [`EntropySource`].
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

/// Bytes of entropy input taken at instantiation (256-bit security strength plus a 128-bit
/// nonce, SP 800-90A §10.1).
pub const ENTROPY_LEN: usize = 48;

/// What a hardware TRNG (or a provisioned seed) provides.
pub trait EntropySource {
    /// Fills `out` with entropy.
    fn fill(&mut self, out: &mut [u8]);
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

impl core::fmt::Debug for ProvisionedSeed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ProvisionedSeed")
            .field("boot_nonce", &self.boot_nonce)
            .finish_non_exhaustive()
    }
}

/// HMAC-DRBG with SHA-256.
pub struct HmacDrbg {
    k: [u8; 32],
    v: [u8; 32],
}

impl core::fmt::Debug for HmacDrbg {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("HmacDrbg { .. }")
    }
}

impl HmacDrbg {
    /// Instantiates from [`ENTROPY_LEN`] bytes of `source` and a personalization string (say,
    /// the board's name and the device's ID).
    pub fn new(source: &mut impl EntropySource, personalization: &[u8]) -> Self {
        let mut entropy = [0u8; ENTROPY_LEN];
        source.fill(&mut entropy);
        let mut d = Self {
            k: [0; 32],
            v: [1; 32],
        };
        d.update(&[&entropy, personalization]);
        entropy.fill(0);
        d
    }

    fn mac(key: &[u8; 32]) -> Hmac<Sha256> {
        // HMAC takes keys of any length: this cannot fail.
        <Hmac<Sha256>>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
    }

    /// HMAC_DRBG_Update (SP 800-90A §10.1.2.2) with `data` = the concatenation of the parts.
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

impl RngCore for HmacDrbg {
    fn next_u32(&mut self) -> u32 {
        rand_core::impls::next_u32_via_fill(self)
    }

    fn next_u64(&mut self) -> u64 {
        rand_core::impls::next_u64_via_fill(self)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(32) {
            let mut mac = Self::mac(&self.k);
            mac.update(&self.v);
            self.v = mac.finalize().into_bytes().into();
            let n = chunk.len();
            chunk.copy_from_slice(self.v.get(..n).unwrap_or(&[]));
        }
        self.update(&[]);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for HmacDrbg {}

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
        let mut source = ProvisionedSeed {
            seed: core::array::from_fn(|i| u8::try_from(i).unwrap()),
            boot_nonce: 7,
        };
        let mut d = HmacDrbg::new(&mut source, b"sigil test");
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
    }

    #[test]
    fn boot_nonce_and_seed_change_the_stream() {
        let out = |seed: [u8; 32], boot_nonce| {
            let mut d = HmacDrbg::new(&mut ProvisionedSeed { seed, boot_nonce }, b"p");
            d.next_u64()
        };
        assert_ne!(out([1; 32], 0), out([1; 32], 1));
        assert_ne!(out([1; 32], 0), out([2; 32], 0));
        assert_eq!(out([1; 32], 0), out([1; 32], 0));
    }
}
