//! Randomness on a board without a TRNG.
//!
//! QEMU's MPS2 AN386 has no hardware random number generator, so keys come from an HMAC-DRBG
//! (NIST SP 800-90A, HMAC-SHA-256) seeded from a **per-device seed provisioned at build time**
//! (`SIGIL_DEVICE_SEED`) plus a boot nonce. That is only as good as the secrecy of the seed and
//! the uniqueness of the nonce: an image built without a seed uses a fixed development seed, and
//! this board has no persistent storage for a boot counter, so every boot of the same image
//! makes the same keys. A real device implements [`EntropySource`] with its TRNG (or keeps a
//! boot counter in flash) and nothing else changes.

use hmac::{Hmac, Mac};
use rand_core::{CryptoRng, RngCore};
use sha2::Sha256;

/// What a hardware TRNG (or a provisioned seed) provides.
pub trait EntropySource {
    /// Fills `out` with entropy.
    fn fill(&mut self, out: &mut [u8]);
}

/// The seed provisioned into this image at build time, and a boot nonce.
pub struct ProvisionedSeed {
    pub seed: [u8; 32],
    pub boot_nonce: u32,
}

impl EntropySource for ProvisionedSeed {
    fn fill(&mut self, out: &mut [u8]) {
        // Entropy input: seed || boot nonce || zeros.
        let nonce = self.boot_nonce.to_le_bytes();
        for (i, b) in out.iter_mut().enumerate() {
            *b = match i {
                0..=31 => self.seed[i],
                32..=35 => nonce[i - 32],
                _ => 0,
            };
        }
    }
}

/// HMAC-DRBG with SHA-256.
pub struct HmacDrbg {
    k: [u8; 32],
    v: [u8; 32],
}

impl HmacDrbg {
    /// Instantiates from 48 bytes of entropy input and a personalization string.
    pub fn new(source: &mut impl EntropySource, personalization: &[u8]) -> Self {
        let mut entropy = [0u8; 48];
        source.fill(&mut entropy);
        let mut d = Self {
            k: [0; 32],
            v: [1; 32],
        };
        d.update(&[&entropy, personalization]);
        entropy.fill(0);
        d
    }

    fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    fn update(&mut self, data: &[&[u8]]) {
        let empty = data.iter().all(|d| d.is_empty());
        for round in [0u8, 1u8] {
            if round == 1 && empty {
                break;
            }
            let mut mac =
                <Hmac<Sha256> as Mac>::new_from_slice(&self.k).unwrap_or_else(|_| unreachable!());
            mac.update(&self.v);
            mac.update(&[round]);
            for d in data {
                mac.update(d);
            }
            self.k = mac.finalize().into_bytes().into();
            self.v = Self::hmac(&self.k, &[&self.v]);
        }
    }
}

impl RngCore for HmacDrbg {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(32) {
            self.v = Self::hmac(&self.k, &[&self.v]);
            chunk.copy_from_slice(&self.v[..chunk.len()]);
        }
        self.update(&[]);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for HmacDrbg {}
