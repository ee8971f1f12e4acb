//! Sigil's identity primitives beside the established implementations, on the same inputs in
//! the same process:
//!
//! - CSR build: sigil (RustCrypto P-256) vs rcgen (ring);
//! - certificate parse: sigil vs rustls-webpki (`EndEntityCert::try_from`);
//! - a 3-certificate P-256 chain with a SPIFFE leaf: sigil with the ring verifier and with the
//!   RustCrypto verifier vs rustls-webpki (ring), at the same time and usage;
//! - the same chain through the host's caching verifier (`CachingSignatureVerifier` on ring, as the
//!   sidecars and the Sentry client use it): cold (cache emptied before every validation) and
//!   warm (a new peer leaf every time, from a pool larger than the cache, so only the
//!   issuer -> root signature is remembered: 1 ECDSA verification against webpki's 2), and,
//!   for reference, the same peer again (both signatures remembered). webpki validates the
//!   same leaves in the same order.
//!
//! Criterion measures each; a summary at the end prints the ratios (sigil / baseline, lower
//! is faster) from a second, interleaved measurement of the same closures.
//! Run: `cargo bench -p sigil-tests --bench identity`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use rcgen::{
    CertificateParams, CertifiedIssuer, DistinguishedName, KeyPair, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::{CertificateDer, UnixTime as PkiTime};
use sigil_core::cert::Certificate;
use sigil_core::chain::{self, Options, PeerName, TrustBundle, Usage};
use sigil_core::crypto::RustCryptoSignatureVerifier;
use sigil_core::csr;
use sigil_core::key::SoftwareKey;
use sigil_core::spiffe::SpiffeId;
use sigil_core::UnixTime;
use sigil_host::signature::{
    CachingSignatureVerifier, RingSignatureVerifier, DEFAULT_CACHE_ENTRIES,
};
use sigil_tests::fixtures::{ca_params, workload_params};

const ID: &str = "spiffe://example.org/ns/default/app";
const NOW: u64 = 1_893_456_000; // 2030-01-01

struct Fixture {
    root: Vec<u8>,
    issuer: Vec<u8>,
    leaf: Vec<u8>,
    /// Other leaves of the same issuer: more than the cache holds.
    peers: Vec<Vec<u8>>,
}

/// Leaves in the warm measurement's pool: twice the cache, so no leaf is ever remembered.
const PEERS: usize = 2 * DEFAULT_CACHE_ENTRIES;

/// 2029-01-01 and 2031-01-01 (the CAs), 2029-06-01 and 2030-06-01 (the leaf).
const CA_FROM: u64 = 1_861_920_000;
const CA_UNTIL: u64 = 1_924_992_000;
const LEAF_FROM: u64 = 1_874_966_400;
const LEAF_UNTIL: u64 = 1_906_502_400;

fn ca(org: &str) -> CertificateParams {
    ca_params(org, CA_FROM, CA_UNTIL)
}

fn fixture() -> Fixture {
    let key = || KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let root = CertifiedIssuer::self_signed(ca("example.org"), key()).unwrap();
    let issuer = CertifiedIssuer::signed_by(
        ca("spiffe://example.org/ns/dapr-system/dapr-sentry"),
        key(),
        &root,
    )
    .unwrap();
    let p = workload_params(ID, LEAF_FROM, LEAF_UNTIL);
    let leaf = p.signed_by(&key(), &issuer).unwrap();
    let peers = (0..PEERS)
        .map(|_| p.signed_by(&key(), &issuer).unwrap().der().to_vec())
        .collect();
    Fixture {
        root: root.der().to_vec(),
        issuer: issuer.der().to_vec(),
        leaf: leaf.der().to_vec(),
        peers,
    }
}

fn sigil_verify(f: &Fixture, verifier: &impl sigil_core::crypto::SignatureVerifier) {
    sigil_verify_leaf(f, &f.leaf, verifier);
}

fn sigil_verify_leaf(
    f: &Fixture,
    leaf: &[u8],
    verifier: &impl sigil_core::crypto::SignatureVerifier,
) {
    let mut bundle: TrustBundle<'_, 2> = TrustBundle::new();
    bundle.add(&f.root).unwrap();
    let id = SpiffeId::parse(ID).unwrap();
    let options = Options {
        usage: Usage::ServerAuth,
        peer: PeerName::SpiffeId(id),
        ..Options::new(UnixTime::from_secs(NOW))
    };
    chain::verify(leaf, &[&f.issuer], &bundle, verifier, &options).unwrap();
}

fn webpki_verify(f: &Fixture) {
    webpki_verify_leaf(f, &f.leaf);
}

fn webpki_verify_leaf(f: &Fixture, leaf: &[u8]) {
    let root = CertificateDer::from(f.root.as_slice());
    let anchors = [webpki::anchor_from_trusted_cert(&root).unwrap()];
    let leaf = CertificateDer::from(leaf);
    let ee = webpki::EndEntityCert::try_from(&leaf).unwrap();
    let ints = [CertificateDer::from(f.issuer.as_slice())];
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &ints,
        PkiTime::since_unix_epoch(Duration::from_secs(NOW)),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .unwrap();
    // The same SPIFFE check sigil does: exactly one URI SAN, equal to the expected ID.
    let uris: Vec<_> = ee.valid_uri_names().collect();
    assert_eq!(uris, [ID]);
}

fn sigil_csr(key: &mut SoftwareKey, buf: &mut [u8]) -> usize {
    let id = SpiffeId::parse(ID).unwrap();
    csr::Builder::new()
        .with_spiffe_id(id)
        .build(key, buf)
        .unwrap()
        .len()
}

fn rcgen_csr(key: &KeyPair) -> usize {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = vec![SanType::URI(ID.try_into().unwrap())];
    p.serialize_request(key).unwrap().der().len()
}

fn main() {
    let f = fixture();
    let mut sigil_key = SoftwareKey::generate(&mut rand_core::OsRng);
    let rcgen_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut buf = [0u8; 512];
    let mut c = Criterion::default().configure_from_args();

    let mut g = c.benchmark_group("csr_build");
    g.bench_function("sigil", |b| b.iter(|| sigil_csr(&mut sigil_key, &mut buf)));
    g.bench_function("rcgen", |b| b.iter(|| rcgen_csr(&rcgen_key)));
    g.finish();

    let mut g = c.benchmark_group("cert_parse");
    g.bench_function("sigil", |b| {
        b.iter(|| Certificate::parse(black_box(&f.leaf)).unwrap().not_after())
    });
    g.bench_function("webpki", |b| {
        b.iter(|| {
            let der = CertificateDer::from(black_box(f.leaf.as_slice()));
            webpki::EndEntityCert::try_from(&der).map(|_| ()).unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("chain_verify_3_p256_spiffe");
    g.bench_function("sigil_ring", |b| {
        b.iter(|| sigil_verify(&f, &RingSignatureVerifier))
    });
    g.bench_function("sigil_rustcrypto", |b| {
        b.iter(|| sigil_verify(&f, &RustCryptoSignatureVerifier))
    });
    g.bench_function("webpki_ring", |b| b.iter(|| webpki_verify(&f)));
    let cache = CachingSignatureVerifier::new(RingSignatureVerifier, DEFAULT_CACHE_ENTRIES);
    g.bench_function("sigil_ring_cache_cold", |b| {
        b.iter(|| {
            cache.clear();
            sigil_verify(&f, &cache)
        })
    });
    let mut next = 0;
    g.bench_function("sigil_ring_cache_warm_new_leaf", |b| {
        b.iter(|| {
            next = (next + 1) % PEERS;
            sigil_verify_leaf(&f, &f.peers[next], &cache)
        })
    });
    g.finish();
    c.final_summary();

    // Ratios, from an interleaved measurement so that both sides see the same machine load.
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    println!("\nratios (sigil time / baseline time; < 1 means sigil is faster):");
    let ratio = |name: &str, a: &mut dyn FnMut(), b: &mut dyn FnMut()| {
        let (ta, tb) = interleaved(a, b);
        println!(
            "  {name:<58} {:>9.2} us vs {:>9.2} us   ratio {:.2}",
            ta * 1e6,
            tb * 1e6,
            ta / tb
        );
    };
    ratio(
        "csr_build: sigil / rcgen",
        &mut || {
            black_box(sigil_csr(&mut sigil_key, &mut buf));
        },
        &mut || {
            black_box(rcgen_csr(&rcgen_key));
        },
    );
    ratio(
        "cert_parse: sigil / webpki",
        &mut || {
            black_box(
                Certificate::parse(black_box(&f.leaf))
                    .map(|c| c.not_after())
                    .ok(),
            );
        },
        &mut || {
            let der = CertificateDer::from(black_box(f.leaf.as_slice()));
            black_box(webpki::EndEntityCert::try_from(&der).is_ok());
        },
    );
    ratio(
        "chain_verify: sigil(ring) / webpki(ring)",
        &mut || sigil_verify(&f, &RingSignatureVerifier),
        &mut || webpki_verify(&f),
    );
    ratio(
        "chain_verify: sigil(rustcrypto) / webpki(ring)",
        &mut || sigil_verify(&f, &RustCryptoSignatureVerifier),
        &mut || webpki_verify(&f),
    );
    let cache = CachingSignatureVerifier::new(RingSignatureVerifier, DEFAULT_CACHE_ENTRIES);
    ratio(
        "chain_verify cold: sigil(ring+cache) / webpki(ring)",
        &mut || {
            cache.clear();
            sigil_verify(&f, &cache);
        },
        &mut || webpki_verify(&f),
    );
    let (mut ours, mut theirs) = (0, 0);
    let before = cache.stats();
    ratio(
        "chain_verify warm: sigil(ring+cache) / webpki(ring)",
        &mut || {
            ours = (ours + 1) % PEERS;
            sigil_verify_leaf(&f, &f.peers[ours], &cache);
        },
        &mut || {
            theirs = (theirs + 1) % PEERS;
            webpki_verify_leaf(&f, &f.peers[theirs]);
        },
    );
    // Warm means one signature remembered (the issuer's) and one verified (the leaf's).
    let after = cache.stats();
    let (hits, misses) = (after.hits - before.hits, after.misses - before.misses);
    println!(
        "  (warm: {hits} cache hits, {misses} misses, {} entries)",
        after.entries
    );
    assert!(
        hits + 1 >= misses && misses + 1 >= hits,
        "{hits} hits, {misses} misses"
    );
    assert!(after.entries <= DEFAULT_CACHE_ENTRIES);
    ratio(
        "chain_verify same peer: sigil(ring+cache) / webpki(ring)",
        &mut || sigil_verify(&f, &cache),
        &mut || webpki_verify(&f),
    );
}

/// Seconds per call of `a` and of `b`: the minimum over 30 rounds of alternating batches.
fn interleaved(a: &mut dyn FnMut(), b: &mut dyn FnMut()) -> (f64, f64) {
    let batch = |f: &mut dyn FnMut()| {
        let mut n = 1u32;
        loop {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            let e = t.elapsed();
            if e > Duration::from_millis(10) {
                return e.as_secs_f64() / f64::from(n);
            }
            n *= 2;
        }
    };
    let (mut best_a, mut best_b) = (f64::MAX, f64::MAX);
    for _ in 0..30 {
        best_a = best_a.min(batch(a));
        best_b = best_b.min(batch(b));
    }
    (best_a, best_b)
}
