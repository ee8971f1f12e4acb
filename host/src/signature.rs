//! [`SignatureVerifier`]s for hosts: [`RingSignatureVerifier`], the same checks as the core's RustCrypto
//! verifier on `ring`, faster; and [`CachingSignatureVerifier`], which remembers the signatures it has
//! verified, so that the issuer certificate a mesh presents on every handshake costs one
//! signature check per process rather than one per handshake.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};

use ring::digest::{Context, SHA256};
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use sigil_core::crypto::{PublicKey, Scheme, SignatureError, SignatureVerifier};

/// Verifies signatures with `ring`.
///
/// `ring` accepts only uncompressed P-256 points; a compressed key fails as
/// [`SignatureError::Invalid`], as does any malformed signature (ring does not say which).
#[derive(Clone, Copy, Debug, Default)]
pub struct RingSignatureVerifier;

impl SignatureVerifier for RingSignatureVerifier {
    fn verify(
        &self,
        scheme: Scheme,
        key: PublicKey<'_>,
        message: &[u8],
        sig: &[u8],
    ) -> Result<(), SignatureError> {
        let alg: &'static dyn VerificationAlgorithm = match (scheme, key) {
            (Scheme::EcdsaP256Sha256, PublicKey::EcP256(_)) => &signature::ECDSA_P256_SHA256_ASN1,
            (Scheme::EcdsaP256Sha256Fixed, PublicKey::EcP256(_)) => {
                &signature::ECDSA_P256_SHA256_FIXED
            }
            (Scheme::Ed25519, PublicKey::Ed25519(_)) => &signature::ED25519,
            (Scheme::EcdsaP256Sha256 | Scheme::EcdsaP256Sha256Fixed | Scheme::Ed25519, _) => {
                return Err(SignatureError::BadKey)
            }
            (other, _) => return Err(SignatureError::UnsupportedScheme(other)),
        };
        UnparsedPublicKey::new(alg, key.as_bytes())
            .verify(message, sig)
            .map_err(|_| SignatureError::Invalid)
    }
}

/// Entries of the process-wide cache ([`shared`]): a mesh's issuers and anchors, with room for
/// the leaves of the peers seen lately.
pub const DEFAULT_CACHE_ENTRIES: usize = 256;

/// The process-wide caching verifier on `ring` ([`DEFAULT_CACHE_ENTRIES`] entries) that the
/// rustls verifiers (Sentry's client, the sidecars' mTLS) and the Sentry client's check of
/// issued chains share.
pub fn shared() -> &'static CachingSignatureVerifier<RingSignatureVerifier> {
    static SHARED: LazyLock<CachingSignatureVerifier<RingSignatureVerifier>> =
        LazyLock::new(|| {
            CachingSignatureVerifier::new(RingSignatureVerifier, DEFAULT_CACHE_ENTRIES)
        });
    &SHARED
}

/// A verifier that remembers the signatures `inner` accepted, bounded and thread-safe.
///
/// - **Exact bytes**: an entry is the SHA-256 of (scheme, key type, public key, message,
///   signature), each length-prefixed. A hit means that exactly these bytes were verified
///   before under exactly this key, so answering from the cache accepts nothing `inner` would
///   refuse (short of a SHA-256 collision).
/// - **Only successes** are remembered; a refused signature is checked again every time.
/// - **Bounded**: at most `capacity` entries; when full, the entry used least recently goes
///   (an issuer hit on every handshake stays while peers' leaves come and go). Entries are
///   added only after `inner` accepted a signature, so a peer can fill the cache only with
///   signatures that verify (under keys it may control): that costs hits, never correctness.
/// - **Thread-safe**: one mutex, held for a map lookup or insertion, never during `inner`'s
///   verification.
#[derive(Debug)]
pub struct CachingSignatureVerifier<V> {
    inner: V,
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Entry → the tick of its last use.
    entries: HashMap<[u8; 32], u64>,
    tick: u64,
    hits: u64,
    misses: u64,
}

/// A [`CachingSignatureVerifier`]'s counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Verifications answered from the cache.
    pub hits: u64,
    /// Verifications passed to the inner verifier.
    pub misses: u64,
    /// Entries held.
    pub entries: usize,
}

impl<V> CachingSignatureVerifier<V> {
    /// A cache of at most `capacity` entries in front of `inner` (0: nothing is cached).
    pub fn new(inner: V, capacity: usize) -> Self {
        Self {
            inner,
            capacity,
            state: Mutex::new(State::default()),
        }
    }

    /// The counters.
    pub fn stats(&self) -> CacheStats {
        let s = self.lock();
        CacheStats {
            hits: s.hits,
            misses: s.misses,
            entries: s.entries.len(),
        }
    }

    /// Forgets every entry (the counters stay).
    pub fn clear(&self) {
        self.lock().entries.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update leaves the state consistent, so a panic elsewhere cannot corrupt it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The cache entry for one verification, or `None` for a scheme or key this version does not
/// know how to name (such verifications are not cached).
fn entry(scheme: Scheme, key: PublicKey<'_>, message: &[u8], sig: &[u8]) -> Option<[u8; 32]> {
    let scheme_tag: u8 = match scheme {
        Scheme::EcdsaP256Sha256 => 1,
        Scheme::EcdsaP256Sha256Fixed => 2,
        Scheme::Ed25519 => 3,
        _ => return None,
    };
    let key_tag: u8 = match key {
        PublicKey::EcP256(_) => 1,
        PublicKey::Ed25519(_) => 2,
        _ => return None,
    };
    let mut h = Context::new(&SHA256);
    h.update(b"sigil verified signature v1");
    h.update(&[scheme_tag, key_tag]);
    for part in [key.as_bytes(), message, sig] {
        h.update(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
        h.update(part);
    }
    h.finish().as_ref().try_into().ok()
}

impl<V: SignatureVerifier> SignatureVerifier for CachingSignatureVerifier<V> {
    fn verify(
        &self,
        scheme: Scheme,
        key: PublicKey<'_>,
        message: &[u8],
        sig: &[u8],
    ) -> Result<(), SignatureError> {
        let Some(id) = entry(scheme, key, message, sig).filter(|_| self.capacity > 0) else {
            return self.inner.verify(scheme, key, message, sig);
        };
        {
            let mut s = self.lock();
            s.tick += 1;
            let tick = s.tick;
            if let Some(used) = s.entries.get_mut(&id) {
                *used = tick;
                s.hits += 1;
                return Ok(());
            }
            s.misses += 1;
        }
        self.inner.verify(scheme, key, message, sig)?;
        let mut s = self.lock();
        if s.entries.len() >= self.capacity && !s.entries.contains_key(&id) {
            // Least recently used; a scan of `capacity` entries after a signature check.
            if let Some(oldest) = s.entries.iter().min_by_key(|(_, &t)| t).map(|(k, _)| *k) {
                s.entries.remove(&oldest);
            }
        }
        s.tick += 1;
        let tick = s.tick;
        s.entries.insert(id, tick);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts the verifications that reach it; accepts a signature equal to the message
    /// reversed (so tests can make valid and invalid signatures without keys).
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl SignatureVerifier for Counting {
        fn verify(
            &self,
            _scheme: Scheme,
            _key: PublicKey<'_>,
            message: &[u8],
            sig: &[u8],
        ) -> Result<(), SignatureError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            let want: Vec<u8> = message.iter().rev().copied().collect();
            if sig == want {
                Ok(())
            } else {
                Err(SignatureError::Invalid)
            }
        }
    }

    const KEY: [u8; 65] = [4; 65];

    fn calls(c: &CachingSignatureVerifier<Counting>) -> usize {
        c.inner.0.load(Ordering::SeqCst)
    }

    fn check(c: &CachingSignatureVerifier<Counting>, key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
        c.verify(Scheme::EcdsaP256Sha256, PublicKey::EcP256(key), msg, sig)
            .is_ok()
    }

    #[test]
    fn a_hit_skips_the_inner_verifier() {
        let c = CachingSignatureVerifier::new(Counting::default(), 4);
        assert!(check(&c, &KEY, b"abc", b"cba"));
        assert!(check(&c, &KEY, b"abc", b"cba"));
        assert_eq!(calls(&c), 1);
        assert_eq!(
            c.stats(),
            CacheStats {
                hits: 1,
                misses: 1,
                entries: 1
            }
        );
    }

    #[test]
    fn any_byte_changed_misses() {
        let c = CachingSignatureVerifier::new(Counting::default(), 16);
        assert!(check(&c, &KEY, b"abc", b"cba"));
        let mut other_key = KEY;
        other_key[64] ^= 1;
        // Another key, message or signature: each goes to the inner verifier (which refuses
        // or accepts on its own terms).
        assert!(check(&c, &other_key, b"abc", b"cba"));
        assert!(!check(&c, &KEY, b"abd", b"cba"));
        assert!(!check(&c, &KEY, b"abc", b"cbb"));
        // The same bytes under another scheme are another entry.
        assert!(c
            .verify(
                Scheme::EcdsaP256Sha256Fixed,
                PublicKey::EcP256(&KEY),
                b"abc",
                b"cba"
            )
            .is_ok());
        // Length prefixes: moving a byte from the message to the signature is another entry.
        assert!(!check(&c, &KEY, b"ab", b"ccba"));
        assert_eq!(calls(&c), 6);
    }

    #[test]
    fn a_refused_signature_is_never_cached() {
        let c = CachingSignatureVerifier::new(Counting::default(), 16);
        for _ in 0..3 {
            assert_eq!(
                c.verify(
                    Scheme::EcdsaP256Sha256,
                    PublicKey::EcP256(&KEY),
                    b"abc",
                    b"bad"
                ),
                Err(SignatureError::Invalid)
            );
        }
        assert_eq!(calls(&c), 3);
        assert_eq!(c.stats().entries, 0);
    }

    #[test]
    fn bounded_and_least_recently_used_goes() {
        let c = CachingSignatureVerifier::new(Counting::default(), 3);
        let msg = |i: u8| [i, 0xff];
        let sig = |i: u8| [0xff, i];
        for i in 0..3 {
            assert!(check(&c, &KEY, &msg(i), &sig(i)));
        }
        // Use 0 again: 1 is now the least recently used.
        assert!(check(&c, &KEY, &msg(0), &sig(0)));
        assert!(check(&c, &KEY, &msg(3), &sig(3)));
        assert_eq!(c.stats().entries, 3);
        let before = calls(&c);
        assert!(check(&c, &KEY, &msg(0), &sig(0)));
        assert!(check(&c, &KEY, &msg(2), &sig(2)));
        assert!(check(&c, &KEY, &msg(3), &sig(3)));
        assert_eq!(calls(&c), before, "0, 2 and 3 are cached");
        assert!(check(&c, &KEY, &msg(1), &sig(1)));
        assert_eq!(calls(&c), before + 1, "1 was evicted");
        // Many more: never above the bound.
        for i in 10..200 {
            assert!(check(&c, &KEY, &msg(i), &sig(i)));
            assert!(c.stats().entries <= 3);
        }
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let c = CachingSignatureVerifier::new(Counting::default(), 0);
        assert!(check(&c, &KEY, b"abc", b"cba"));
        assert!(check(&c, &KEY, b"abc", b"cba"));
        assert_eq!(calls(&c), 2);
    }

    #[test]
    fn shared_between_threads() {
        let c = std::sync::Arc::new(CachingSignatureVerifier::new(Counting::default(), 8));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..50u8 {
                        let (m, s) = ([i % 4, 1], [1, i % 4]);
                        assert!(check(&c, &KEY, &m, &s));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let stats = c.stats();
        assert_eq!(stats.hits + stats.misses, 200);
        assert_eq!(stats.entries, 4);
        // Four distinct entries; threads racing on a first use may each verify it once.
        assert!(calls(&c) >= 4 && calls(&c) <= 16, "{}", calls(&c));
    }

    #[test]
    fn real_signatures_through_ring() {
        use ring::rand::SystemRandom;
        use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING};
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let sig = kp.sign(&rng, b"tbs").unwrap();
        let key = PublicKey::EcP256(kp.public_key().as_ref());
        let c = CachingSignatureVerifier::new(RingSignatureVerifier, 4);
        for _ in 0..2 {
            c.verify(Scheme::EcdsaP256Sha256, key, b"tbs", sig.as_ref())
                .unwrap();
        }
        assert_eq!(c.stats().hits, 1);
        let mut bad = sig.as_ref().to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        for _ in 0..2 {
            assert_eq!(
                c.verify(Scheme::EcdsaP256Sha256, key, b"tbs", &bad),
                Err(SignatureError::Invalid)
            );
        }
        assert_eq!(c.stats().entries, 1);
    }
}
