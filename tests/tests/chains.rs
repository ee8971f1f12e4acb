//! Path validation on chains rcgen builds, through both of Sigil's verifiers, and — where the
//! two define the same rule — against rustls-webpki on the same inputs.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, KeyPair, KeyUsagePurpose,
    NameConstraints, SanType, PKCS_ECDSA_P256_SHA256,
};
use sigil_core::chain::{
    self, ErrorKind, NameMismatch, Options, PeerName, Position, TrustBundle, Usage,
};
use sigil_core::crypto::{RustCryptoSignatureVerifier, SignatureVerifier};
use sigil_core::spiffe::{SpiffeId, TrustDomain};
use sigil_core::UnixTime;
use sigil_host::signature::RingSignatureVerifier;

/// 2030-01-01T00:00:00Z: every fixture is valid 2029–2031 unless a case says otherwise.
const NOW: u64 = 1_893_456_000;
const ID: &str = "spiffe://example.org/ns/default/app";

fn key() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap()
}

fn ca_params(org: &str, constraint: BasicConstraints) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, org);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(constraint);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::CrlSign,
    ];
    p.not_before = rcgen::date_time_ymd(2029, 1, 1);
    p.not_after = rcgen::date_time_ymd(2031, 1, 1);
    p.use_authority_key_identifier_extension = true;
    p
}

/// A CA certificate with its key, able to issue.
type Ca = CertifiedIssuer<'static, KeyPair>;

/// A self-signed root `O=<org>` (no path length limit) with `key`.
fn root_ca(org: &str, key: KeyPair) -> Ca {
    CertifiedIssuer::self_signed(ca_params(org, BasicConstraints::Unconstrained), key).unwrap()
}

/// An issuer `O=<org>` (no path length limit) with `key`, signed by `parent`.
fn issuer_ca(org: &str, key: KeyPair, parent: &Ca) -> Ca {
    CertifiedIssuer::signed_by(ca_params(org, BasicConstraints::Unconstrained), key, parent)
        .unwrap()
}

fn leaf_params() -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = vec![
        SanType::URI(ID.try_into().unwrap()),
        SanType::DnsName("app.example.org".try_into().unwrap()),
        SanType::IpAddress("10.1.2.3".parse().unwrap()),
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.not_before = rcgen::date_time_ymd(2029, 6, 1);
    p.not_after = rcgen::date_time_ymd(2030, 6, 1);
    p.use_authority_key_identifier_extension = true;
    p
}

/// root → intermediate → leaf, with hooks to change each.
struct Chain {
    root: Vec<u8>,
    intermediate: Vec<u8>,
    leaf: Vec<u8>,
}

fn chain_with(
    root: impl FnOnce(&mut CertificateParams),
    int: impl FnOnce(&mut CertificateParams),
    leaf: impl FnOnce(&mut CertificateParams),
) -> Chain {
    let mut rp = ca_params("Root", BasicConstraints::Unconstrained);
    root(&mut rp);
    let root = CertifiedIssuer::self_signed(rp, key()).unwrap();
    let mut ip = ca_params(
        "spiffe://example.org/ns/system/dapr-sentry",
        BasicConstraints::Unconstrained,
    );
    int(&mut ip);
    let int = CertifiedIssuer::signed_by(ip, key(), &root).unwrap();
    let mut lp = leaf_params();
    leaf(&mut lp);
    let leaf = lp.signed_by(&key(), &int).unwrap();
    Chain {
        root: root.der().to_vec(),
        intermediate: int.der().to_vec(),
        leaf: leaf.der().to_vec(),
    }
}

fn chain() -> Chain {
    chain_with(|_| {}, |_| {}, |_| {})
}

fn verify_both(
    leaf: &[u8],
    ints: &[&[u8]],
    anchors: &[&[u8]],
    options: &Options<'_>,
) -> Result<chain::VerifiedPath, chain::Error> {
    let mut bundle: TrustBundle<'_, 4> = TrustBundle::new();
    for a in anchors {
        bundle.add(a).unwrap();
    }
    let ours = chain::verify(leaf, ints, &bundle, &RustCryptoSignatureVerifier, options);
    let ring = chain::verify(leaf, ints, &bundle, &RingSignatureVerifier, options);
    assert_eq!(ours, ring, "the two verifiers disagree");
    ours
}

fn opts() -> Options<'static> {
    Options::new(UnixTime::from_secs(NOW))
}

/// rustls-webpki's verdict on the same inputs (server usage, at the same time).
fn webpki_server(leaf: &[u8], ints: &[&[u8]], anchor: &[u8], at: u64) -> Result<(), webpki::Error> {
    use rustls_pki_types::{CertificateDer, UnixTime as T};
    let anchor_der = CertificateDer::from(anchor);
    let anchors = [webpki::anchor_from_trusted_cert(&anchor_der)?];
    let leaf_der = CertificateDer::from(leaf);
    let ee = webpki::EndEntityCert::try_from(&leaf_der)?;
    let ints: Vec<CertificateDer<'_>> = ints.iter().map(|d| CertificateDer::from(*d)).collect();
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &ints,
        T::since_unix_epoch(Duration::from_secs(at)),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map(|_| ())
}

#[test]
fn valid_chain_agrees_with_webpki() {
    let c = chain();
    let found = verify_both(&c.leaf, &[&c.intermediate], &[&c.root], &opts()).unwrap();
    assert_eq!(found.anchor(), 0);
    assert_eq!(found.intermediates(), &[0]);
    webpki_server(&c.leaf, &[&c.intermediate], &c.root, NOW).unwrap();
}

#[test]
fn spiffe_and_dns_and_ip_peer_names() {
    let c = chain();
    let (l, i, r) = (&c.leaf[..], &[&c.intermediate[..]][..], &[&c.root[..]][..]);
    let id = SpiffeId::parse(ID).unwrap();
    let with = |peer| Options { peer, ..opts() };
    verify_both(l, i, r, &with(PeerName::SpiffeId(id))).unwrap();
    verify_both(
        l,
        i,
        r,
        &with(PeerName::TrustDomain(
            TrustDomain::parse("example.org").unwrap(),
        )),
    )
    .unwrap();
    let dapr = |id: &SpiffeId<'_>| id.dapr().is_some_and(|d| d.app_id() == "app");
    verify_both(l, i, r, &with(PeerName::SpiffeMatching(&dapr))).unwrap();
    verify_both(l, i, r, &with(PeerName::Dns("APP.example.org"))).unwrap();
    verify_both(l, i, r, &with(PeerName::Ip(&[10, 1, 2, 3]))).unwrap();

    let other = SpiffeId::parse("spiffe://example.org/ns/default/other").unwrap();
    let mismatch = |peer| verify_both(l, i, r, &with(peer)).unwrap_err();
    for (peer, want) in [
        (PeerName::SpiffeId(other), NameMismatch::SpiffeId),
        (
            PeerName::TrustDomain(TrustDomain::parse("other.org").unwrap()),
            NameMismatch::SpiffeId,
        ),
        (PeerName::Dns("other.example.org"), NameMismatch::Dns),
        (PeerName::Ip(&[10, 1, 2, 4]), NameMismatch::Ip),
    ] {
        assert_eq!(
            mismatch(peer),
            chain::Error {
                cert: Position::Leaf,
                kind: ErrorKind::PeerNameMismatch(want)
            }
        );
    }
}

#[test]
fn validity_and_skew() {
    let c = chain();
    let (l, i, r) = (&c.leaf[..], &[&c.intermediate[..]][..], &[&c.root[..]][..]);
    let not_before = 1_874_966_400; // 2029-06-01
    let not_after = 1_906_502_400; // 2030-06-01
    let at = |t: u64, skew: u64| Options {
        time: UnixTime::from_secs(t),
        skew: Duration::from_secs(skew),
        ..opts()
    };
    verify_both(l, i, r, &at(not_before, 0)).unwrap();
    verify_both(l, i, r, &at(not_after, 0)).unwrap();
    let early = verify_both(l, i, r, &at(not_before - 300, 0)).unwrap_err();
    assert!(
        matches!(early.kind, ErrorKind::NotYetValid { .. }),
        "{early}"
    );
    verify_both(l, i, r, &at(not_before - 300, 900)).unwrap();
    assert!(verify_both(l, i, r, &at(not_before - 1200, 900)).is_err());
    let late = verify_both(l, i, r, &at(not_after + 1, 0)).unwrap_err();
    assert_eq!(late.cert, Position::Leaf);
    assert!(matches!(late.kind, ErrorKind::Expired { .. }), "{late}");
    assert!(late.to_string().contains("2030-06-01T00:00:00Z"), "{late}");
    verify_both(l, i, r, &at(not_after + 60, 900)).unwrap();
    assert!(webpki_server(l, i, &c.root, not_after + 10).is_err());
}

#[test]
fn expired_intermediate() {
    let c = chain_with(
        |_| {},
        |p| p.not_after = rcgen::date_time_ymd(2029, 12, 1),
        |_| {},
    );
    let e = verify_both(&c.leaf, &[&c.intermediate], &[&c.root], &opts()).unwrap_err();
    assert_eq!(e.cert, Position::Intermediate(0));
    assert!(matches!(e.kind, ErrorKind::Expired { .. }));
    assert!(webpki_server(&c.leaf, &[&c.intermediate], &c.root, NOW).is_err());
}

#[test]
fn extended_key_usage() {
    let c = chain_with(
        |_| {},
        |_| {},
        |p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth],
    );
    let (l, i, r) = (&c.leaf[..], &[&c.intermediate[..]][..], &[&c.root[..]][..]);
    let usage = |usage| Options { usage, ..opts() };
    verify_both(l, i, r, &usage(Usage::ClientAuth)).unwrap();
    verify_both(l, i, r, &usage(Usage::Any)).unwrap();
    let e = verify_both(l, i, r, &usage(Usage::ServerAuth)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::RequiredEkuNotFound(Usage::ServerAuth));
    assert!(webpki_server(l, i, &c.root, NOW).is_err());
}

#[test]
fn intermediate_must_be_a_ca_with_key_cert_sign() {
    let c = chain_with(|_| {}, |p| p.is_ca = IsCa::ExplicitNoCa, |_| {});
    let e = verify_both(&c.leaf, &[&c.intermediate], &[&c.root], &opts()).unwrap_err();
    assert_eq!(
        e,
        chain::Error {
            cert: Position::Intermediate(0),
            kind: ErrorKind::NotCa
        }
    );
    assert!(webpki_server(&c.leaf, &[&c.intermediate], &c.root, NOW).is_err());

    let c = chain_with(
        |_| {},
        |p| p.key_usages = vec![KeyUsagePurpose::DigitalSignature],
        |_| {},
    );
    let e = verify_both(&c.leaf, &[&c.intermediate], &[&c.root], &opts()).unwrap_err();
    assert_eq!(
        e,
        chain::Error {
            cert: Position::Intermediate(0),
            kind: ErrorKind::MissingKeyCertSign
        }
    );
}

#[test]
fn ca_as_leaf_is_refused() {
    let c = chain_with(
        |_| {},
        |_| {},
        |p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained),
    );
    let e = verify_both(&c.leaf, &[&c.intermediate], &[&c.root], &opts()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::CaUsedAsEndEntity);
    assert!(webpki_server(&c.leaf, &[&c.intermediate], &c.root, NOW).is_err());
}

#[test]
fn path_len() {
    // Root allows no intermediate below it.
    let c = chain_with(
        |p| p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0)),
        |_| {},
        |_| {},
    );
    let e = verify_both(&c.leaf, &[&c.intermediate], &[&c.root], &opts()).unwrap_err();
    assert_eq!(
        e.kind,
        ErrorKind::PathLenExceeded {
            path_len: 0,
            below: 1
        }
    );
    // pathLen 0 on the intermediate itself is fine (no CA below it).
    let c = chain_with(
        |_| {},
        |p| p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0)),
        |_| {},
    );
    verify_both(&c.leaf, &[&c.intermediate], &[&c.root], &opts()).unwrap();
}

#[test]
fn foreign_root_and_rotation_overlap() {
    let a = chain();
    let b = chain();
    // A foreign root with the same name: its subjectKeyIdentifier is not the intermediate's
    // authorityKeyIdentifier, so it is no candidate (webpki tries it, and its key refuses).
    let e = verify_both(&a.leaf, &[&a.intermediate], &[&b.root], &opts()).unwrap_err();
    assert_eq!(e.cert, Position::Intermediate(0));
    assert_eq!(e.kind, ErrorKind::AuthorityKeyIdMismatch, "{e}");
    assert!(webpki_server(&a.leaf, &[&a.intermediate], &b.root, NOW).is_err());
    // A foreign root with another name: no candidate at all.
    let other = root_ca("Other", key());
    let e = verify_both(&a.leaf, &[&a.intermediate], &[other.der()], &opts()).unwrap_err();
    assert_eq!(
        e,
        chain::Error {
            cert: Position::Intermediate(0),
            kind: ErrorKind::UnknownIssuer
        }
    );
    // Both roots in the bundle, both sets of intermediates offered: each leaf finds its own.
    let ints: &[&[u8]] = &[&a.intermediate, &b.intermediate];
    let found = verify_both(&a.leaf, ints, &[&b.root, &a.root], &opts()).unwrap();
    assert_eq!((found.anchor(), found.intermediates()), (1, &[0][..]));
    let found = verify_both(&b.leaf, ints, &[&b.root, &a.root], &opts()).unwrap();
    assert_eq!((found.anchor(), found.intermediates()), (0, &[1][..]));
}

#[test]
fn bad_signature_tries_next_candidate_then_reports_it() {
    let c = chain();
    let mut bad = c.leaf.clone();
    let last = bad.len() - 3;
    bad[last] ^= 0x01;
    let e = verify_both(&bad, &[&c.intermediate], &[&c.root], &opts()).unwrap_err();
    assert_eq!(e.cert, Position::Leaf);
    assert!(matches!(e.kind, ErrorKind::BadSignature(_)), "{e}");
    assert!(webpki_server(&bad, &[&c.intermediate], &c.root, NOW).is_err());
}

#[test]
fn unknown_critical_extension() {
    let c = chain_with(
        |_| {},
        |_| {},
        |p| {
            let mut ext = CustomExtension::from_oid_content(&[1, 2, 3, 4], vec![0x05, 0x00]);
            ext.set_criticality(true);
            p.custom_extensions = vec![ext];
        },
    );
    let e = verify_both(&c.leaf, &[&c.intermediate], &[&c.root], &opts()).unwrap_err();
    assert_eq!(
        e.kind,
        ErrorKind::Malformed(sigil_core::cert::Error::UnsupportedCriticalExtension)
    );
    assert!(webpki_server(&c.leaf, &[&c.intermediate], &c.root, NOW).is_err());
    // The same extension, not critical, is ignored.
    let c = chain_with(
        |_| {},
        |_| {},
        |p| {
            p.custom_extensions = vec![CustomExtension::from_oid_content(
                &[1, 2, 3, 4],
                vec![0x05, 0x00],
            )];
        },
    );
    verify_both(&c.leaf, &[&c.intermediate], &[&c.root], &opts()).unwrap();
}

#[test]
fn name_constraints_dns_ip_dn() {
    let nc = |permitted: Vec<GeneralSubtree>, excluded: Vec<GeneralSubtree>| {
        move |p: &mut CertificateParams| {
            p.name_constraints = Some(NameConstraints {
                permitted_subtrees: permitted,
                excluded_subtrees: excluded,
            })
        }
    };
    let ok = chain_with(
        |_| {},
        nc(vec![GeneralSubtree::DnsName("example.org".into())], vec![]),
        |_| {},
    );
    verify_both(&ok.leaf, &[&ok.intermediate], &[&ok.root], &opts()).unwrap();
    webpki_server(&ok.leaf, &[&ok.intermediate], &ok.root, NOW).unwrap();

    let cases = [
        nc(vec![GeneralSubtree::DnsName("evil.com".into())], vec![]),
        nc(vec![], vec![GeneralSubtree::DnsName("example.org".into())]),
        nc(
            vec![],
            vec![GeneralSubtree::IpAddress(
                "10.0.0.0/8".parse::<rcgen::CidrSubnet>().unwrap(),
            )],
        ),
        nc(
            vec![GeneralSubtree::IpAddress(
                "192.168.0.0/16".parse::<rcgen::CidrSubnet>().unwrap(),
            )],
            vec![],
        ),
    ];
    for (n, f) in cases.into_iter().enumerate() {
        let c = chain_with(|_| {}, f, |_| {});
        let e = verify_both(&c.leaf, &[&c.intermediate], &[&c.root], &opts()).unwrap_err();
        assert_eq!(
            e,
            chain::Error {
                cert: Position::Intermediate(0),
                kind: ErrorKind::NameConstraintViolation
            },
            "case {n}"
        );
        assert!(
            webpki_server(&c.leaf, &[&c.intermediate], &c.root, NOW).is_err(),
            "webpki case {n}"
        );
    }

    // directoryName: a leaf with subject O=Bad under a CA permitting O=Good only.
    let mut good = DistinguishedName::new();
    good.push(DnType::OrganizationName, "Good");
    let c = chain_with(
        |_| {},
        nc(vec![GeneralSubtree::DirectoryName(good.clone())], vec![]),
        |p| {
            let mut bad = DistinguishedName::new();
            bad.push(DnType::OrganizationName, "Bad");
            p.distinguished_name = bad;
        },
    );
    let e = verify_both(&c.leaf, &[&c.intermediate], &[&c.root], &opts()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NameConstraintViolation);
    let c = chain_with(
        |_| {},
        nc(vec![GeneralSubtree::DirectoryName(good.clone())], vec![]),
        |p| {
            p.distinguished_name = good.clone();
            p.distinguished_name.push(DnType::CommonName, "app");
        },
    );
    verify_both(&c.leaf, &[&c.intermediate], &[&c.root], &opts()).unwrap();
    // A root's constraints bind the whole path too.
    let c = chain_with(
        nc(vec![GeneralSubtree::DnsName("evil.com".into())], vec![]),
        |_| {},
        |_| {},
    );
    let e = verify_both(&c.leaf, &[&c.intermediate], &[&c.root], &opts()).unwrap_err();
    assert_eq!(
        e,
        chain::Error {
            cert: Position::Anchor(0),
            kind: ErrorKind::NameConstraintViolation
        }
    );
}

#[test]
fn depth_cap_and_budget() {
    // root → i1 → i2 → i3 → leaf
    let root = root_ca("R", key());
    let i1 = issuer_ca("I1", key(), &root);
    let i2 = issuer_ca("I2", key(), &i1);
    let i3 = issuer_ca("I3", key(), &i2);
    let leaf = leaf_params().signed_by(&key(), &i3).unwrap();
    let ints: Vec<&[u8]> = vec![i1.der(), i3.der(), i2.der()];
    let found = verify_both(leaf.der(), &ints, &[root.der()], &opts()).unwrap();
    assert_eq!(found.intermediates(), &[1, 2, 0]);
    let e = verify_both(
        leaf.der(),
        &ints,
        &[root.der()],
        &Options {
            max_depth: 2,
            ..opts()
        },
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::MaxDepthExceeded { max: 2 });
    let tight = chain::Budget {
        signatures: 2,
        ..chain::Budget::default()
    };
    let e = verify_both(
        leaf.der(),
        &ints,
        &[root.der()],
        &Options {
            budget: tight,
            ..opts()
        },
    )
    .unwrap_err();
    assert_eq!(
        e.kind,
        ErrorKind::BudgetExceeded(chain::BudgetKind::Signatures)
    );
}

#[test]
fn many_same_named_intermediates_stay_within_budget() {
    // Eight intermediates all named like the leaf's issuer and each other, none valid: the
    // search must end with an error, not loop, and within the default budget.
    let root = root_ca("Loop", key());
    let cas: Vec<_> = (0..8).map(|_| issuer_ca("Loop", key(), &root)).collect();
    let leaf = leaf_params().signed_by(&key(), &cas[0]).unwrap();
    let other_root = root_ca("Other", key());
    let ints: Vec<&[u8]> = cas.iter().map(|c| c.der().as_ref()).collect();
    let e = verify_both(leaf.der(), &ints, &[other_root.der()], &opts()).unwrap_err();
    assert!(
        matches!(
            e.kind,
            ErrorKind::BudgetExceeded(_)
                | ErrorKind::BadSignature(_)
                | ErrorKind::UnknownIssuer
                | ErrorKind::MaxDepthExceeded { .. }
                | ErrorKind::AuthorityKeyIdMismatch
        ),
        "{e}"
    );
}

#[test]
fn csrs_from_rcgen_parse_and_verify() {
    use sigil_core::csr::Csr;
    for san in [None, Some(ID)] {
        let k = key();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        if let Some(id) = san {
            p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
        }
        let req = p.serialize_request(&k).unwrap();
        let csr = Csr::parse(req.der()).unwrap();
        csr.verify_signature(&RustCryptoSignatureVerifier).unwrap();
        csr.verify_signature(&RingSignatureVerifier).unwrap();
        assert_eq!(csr.public_key().as_bytes(), k.public_key_raw());
        let uris: Vec<_> = csr
            .subject_alt_names()
            .into_iter()
            .flat_map(|n| n.iter())
            .collect();
        assert_eq!(uris.len(), usize::from(san.is_some()));
    }
}

#[test]
fn workload_profile() {
    use sigil_core::crypto::PublicKey;
    use sigil_core::profile::{check_workload, Error};
    let leaf_key = key();
    let root = root_ca("R", key());
    let mut p = leaf_params();
    p.subject_alt_names = vec![SanType::URI(ID.try_into().unwrap())];
    let leaf = p.signed_by(&leaf_key, &root).unwrap();
    let cert = sigil_core::cert::Certificate::parse(leaf.der()).unwrap();
    let mine = PublicKey::EcP256(leaf_key.public_key_raw());
    let id = check_workload(&cert, mine, Some(SpiffeId::parse(ID).unwrap().into())).unwrap();
    assert_eq!(id.as_str(), ID);
    let other = key();
    assert_eq!(
        check_workload(&cert, PublicKey::EcP256(other.public_key_raw()), None),
        Err(Error::KeyMismatch)
    );
    assert_eq!(
        check_workload(
            &cert,
            mine,
            Some(
                SpiffeId::parse("spiffe://example.org/ns/default/x")
                    .unwrap()
                    .into()
            )
        ),
        Err(Error::UnexpectedId)
    );
    // Two URIs, server-only EKU, CA: each refused.
    let mut p = leaf_params();
    p.subject_alt_names.push(SanType::URI(
        "spiffe://example.org/ns/default/b".try_into().unwrap(),
    ));
    let two = p.signed_by(&leaf_key, &root).unwrap();
    let cert = sigil_core::cert::Certificate::parse(two.der()).unwrap();
    assert_eq!(
        check_workload(&cert, mine, None),
        Err(Error::NotSvid { uris: 2 })
    );
    let mut p = leaf_params();
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let srv = p.signed_by(&leaf_key, &root).unwrap();
    let cert = sigil_core::cert::Certificate::parse(srv.der()).unwrap();
    assert_eq!(
        check_workload(&cert, mine, None),
        Err(Error::MissingEku("clientAuth"))
    );
}

#[allow(dead_code)]
fn assert_verifier<V: SignatureVerifier>(_: &V) {}

#[test]
fn ed25519_chain_as_dapr_1_18_issues() {
    // Dapr >= 1.18: Ed25519 root, issuer and workload keys.
    let ed = || KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let root = root_ca("example.org", ed());
    let int = issuer_ca("issuer", ed(), &root);
    let leaf_key = ed();
    let leaf = leaf_params().signed_by(&leaf_key, &int).unwrap();
    let id = SpiffeId::parse(ID).unwrap();
    let options = Options {
        peer: PeerName::SpiffeId(id),
        usage: Usage::ClientAuth,
        ..opts()
    };
    verify_both(leaf.der(), &[int.der()], &[root.der()], &options).unwrap();
    webpki_server(leaf.der(), &[int.der()], root.der(), NOW).unwrap();
    let cert = sigil_core::cert::Certificate::parse(leaf.der()).unwrap();
    assert_eq!(
        cert.signature_scheme(),
        Ok(sigil_core::crypto::Scheme::Ed25519)
    );
    let key: &[u8; 32] = leaf_key.public_key_raw().try_into().unwrap();
    sigil_core::profile::check_workload(
        &cert,
        sigil_core::crypto::PublicKey::Ed25519(key),
        Some(id.into()),
    )
    .unwrap();
    // A tampered Ed25519 signature is refused by both verifiers.
    let mut bad = leaf.der().to_vec();
    let last = bad.len() - 2;
    bad[last] ^= 0x40;
    let e = verify_both(&bad, &[int.der()], &[root.der()], &options).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::BadSignature(_)), "{e}");
}

/// The public half of an RSA key, for an anchor the core cannot verify with (rcgen's ring
/// backend cannot make RSA keys; the anchor's signature is never checked).
struct RsaPublicKey(Vec<u8>);

impl rcgen::PublicKeyData for RsaPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

/// A CA certificate named `org` whose key is RSA-2048 (`RSAPublicKey { n, e }`).
fn rsa_root(org: &str) -> Vec<u8> {
    let mut n = vec![0x02, 0x82, 0x01, 0x01, 0x00];
    n.extend((0..256).map(|i| 0xc5 ^ (i as u8)));
    let mut rsa = vec![0x30, 0x82, 0x01, 0x0a];
    rsa.extend(n);
    rsa.extend([0x02, 0x03, 0x01, 0x00, 0x01]);
    let params = ca_params(org, BasicConstraints::Unconstrained);
    let signer = rcgen::Issuer::new(params.clone(), key());
    params
        .signed_by(&RsaPublicKey(rsa), &signer)
        .unwrap()
        .der()
        .to_vec()
}

/// Issue 11 (7a): an anchor the core cannot use (an RSA key, an unknown critical extension,
/// DER that does not parse) is refused by the bundle, and the host's loader skips it and
/// keeps the rest, so validation through the others succeeds (as with webpki and openssl).
#[test]
fn unusable_anchors_are_skipped_and_the_rest_kept() {
    use sigil_core::bundle::OwnedTrustBundle;
    use sigil_core::cert::Error as CertError;
    use sigil_core::chain::BundleError;
    use sigil_core::crypto::AlgorithmError;

    let c = chain();
    let rsa = rsa_root("RSA Root");
    let crit = CertifiedIssuer::self_signed(
        {
            let mut p = ca_params("Critical Root", BasicConstraints::Unconstrained);
            let mut ext = CustomExtension::from_oid_content(&[1, 2, 3, 4], vec![0x05, 0x00]);
            ext.set_criticality(true);
            p.custom_extensions = vec![ext];
            p
        },
        key(),
    )
    .unwrap()
    .der()
    .to_vec();
    let garbage = vec![0x30, 0x03, 0x02, 0x01, 0x00];

    // The core refuses each as an anchor, with the reason.
    let mut bundle: TrustBundle<'_, 4> = TrustBundle::new();
    assert_eq!(
        bundle.add(&rsa),
        Err(BundleError::UnsupportedKey(AlgorithmError::Unsupported))
    );
    assert_eq!(
        bundle.add(&crit),
        Err(BundleError::Malformed(
            CertError::UnsupportedCriticalExtension
        ))
    );
    assert!(matches!(
        bundle.add(&garbage),
        Err(BundleError::Malformed(_))
    ));
    assert!(bundle.is_empty());

    // The host's loader skips them, naming each, and keeps the right root (last).
    let ders = vec![rsa.clone(), crit.clone(), garbage.clone(), c.root.clone()];
    let (bundle, skipped) = sigil_host::pki::anchor_bundle::<4>(&ders);
    assert_eq!(bundle.len(), 1);
    let named: Vec<(usize, &str)> = skipped
        .iter()
        .map(|s| (s.index, s.subject.as_str()))
        .collect();
    assert_eq!(
        named,
        [
            (0, "O=RSA Root"),
            (1, "O=Critical Root"),
            (2, "(unparseable)")
        ]
    );
    assert_eq!(
        skipped[0].to_string(),
        "certificate #0 (O=RSA Root) skipped: trust anchor key: unsupported algorithm or curve \
         (only ECDSA P-256/SHA-256 and Ed25519)"
    );
    let found = chain::verify(
        &c.leaf,
        &[&c.intermediate],
        &bundle,
        &RingSignatureVerifier,
        &opts(),
    )
    .unwrap();
    assert_eq!(found.anchor(), 0);

    // webpki takes the RSA and the critical-extension roots as anchors (it ignores an anchor's
    // extensions) and validates through the right one.
    {
        use rustls_pki_types::{CertificateDer, UnixTime as T};
        let ders: Vec<CertificateDer<'_>> = [&rsa, &crit, &c.root]
            .iter()
            .map(|d| CertificateDer::from(d.as_slice()))
            .collect();
        let anchors: Vec<_> = ders
            .iter()
            .map(|d| webpki::anchor_from_trusted_cert(d).unwrap())
            .collect();
        let leaf = CertificateDer::from(c.leaf.as_slice());
        let ee = webpki::EndEntityCert::try_from(&leaf).unwrap();
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &[CertificateDer::from(c.intermediate.as_slice())],
            T::since_unix_epoch(Duration::from_secs(NOW)),
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .unwrap();
    }

    // The owned bundle (the rotation machine's) skips them too, and refuses a list with
    // nothing usable, keeping what it had.
    let mut owned: OwnedTrustBundle<4, 4096> = OwnedTrustBundle::new();
    assert_eq!(owned.replace(&[&rsa, &crit, &garbage, &c.root]), Ok(3));
    assert_eq!(owned.len(), 1);
    assert!(owned.as_bundle().contains(&c.root));
    assert_eq!(
        owned.replace(&[&rsa, &crit]),
        Err(BundleError::UnsupportedKey(AlgorithmError::Unsupported))
    );
    assert_eq!((owned.len(), owned.generation()), (1, 1));
    assert_eq!(owned.replace(&[]), Ok(0));
    assert!(owned.is_empty());
}

/// A CA named like its issuer (self-issued), signed by `issuer`.
fn self_issued_under(
    org: &str,
    issuer: &CertifiedIssuer<'static, KeyPair>,
) -> CertifiedIssuer<'static, KeyPair> {
    CertifiedIssuer::signed_by(
        ca_params(org, BasicConstraints::Unconstrained),
        key(),
        issuer,
    )
    .unwrap()
}

/// Issue 11 (7b): self-issued intermediates (a CA re-keying under its own name) count neither
/// toward pathLenConstraint nor toward the depth cap (RFC 5280 §6.1.4 (l)); openssl agrees
/// (host/tests/openssl.rs), rustls-webpki counts them against pathLenConstraint.
#[test]
fn self_issued_intermediates_do_not_count() {
    let root = root_ca("R", key());
    // I allows no CA below it; I' is I re-keyed (subject = issuer = O=I).
    let i = CertifiedIssuer::signed_by(
        ca_params("I", BasicConstraints::Constrained(0)),
        key(),
        &root,
    )
    .unwrap();
    let i2 = self_issued_under("I", &i);
    let leaf = leaf_params().signed_by(&key(), &i2).unwrap();
    let ints: Vec<&[u8]> = vec![i.der(), i2.der()];
    let found = verify_both(leaf.der(), &ints, &[root.der()], &opts()).unwrap();
    assert_eq!(found.intermediates(), &[1, 0]);
    // webpki counts I' against I's pathLenConstraint: no path (it reports the signature of
    // the other candidate it tried).
    assert!(webpki_server(leaf.der(), &ints, root.der(), NOW).is_err());

    // Depth cap 1: one intermediate that is not self-issued, plus I'.
    let one = Options {
        max_depth: 1,
        ..opts()
    };
    verify_both(leaf.der(), &ints, &[root.der()], &one).unwrap();
    // A chain of self-issued re-keyings is bounded by MAX_INTERMEDIATES, not by the cap.
    let mut chain = vec![i2];
    for _ in 0..6 {
        let next = self_issued_under("I", chain.last().unwrap());
        chain.push(next);
    }
    let deep = leaf_params()
        .signed_by(&key(), chain.last().unwrap())
        .unwrap();
    let mut ints: Vec<&[u8]> = vec![i.der()];
    ints.extend(chain.iter().map(|c| c.der().as_ref()));
    assert_eq!(ints.len(), chain::MAX_INTERMEDIATES);
    verify_both(deep.der(), &ints, &[root.der()], &one).unwrap();

    // Controls: an intermediate that is not self-issued counts for both rules.
    let j = issuer_ca("J", key(), &i);
    let leaf = leaf_params().signed_by(&key(), &j).unwrap();
    let ints: Vec<&[u8]> = vec![i.der(), j.der()];
    let e = verify_both(leaf.der(), &ints, &[root.der()], &opts()).unwrap_err();
    assert_eq!(
        e.kind,
        ErrorKind::PathLenExceeded {
            path_len: 0,
            below: 1
        }
    );
    let free = issuer_ca("I", key(), &root);
    let j = issuer_ca("J", key(), &free);
    let leaf = leaf_params().signed_by(&key(), &j).unwrap();
    let ints: Vec<&[u8]> = vec![free.der(), j.der()];
    let e = verify_both(leaf.der(), &ints, &[root.der()], &one).unwrap_err();
    assert_eq!(e.kind, ErrorKind::MaxDepthExceeded { max: 1 });
}

fn name_constrained(
    permitted: Vec<GeneralSubtree>,
    excluded: Vec<GeneralSubtree>,
) -> impl FnOnce(&mut CertificateParams) {
    move |p: &mut CertificateParams| {
        p.name_constraints = Some(NameConstraints {
            permitted_subtrees: permitted,
            excluded_subtrees: excluded,
        })
    }
}

fn with_sans(sans: Vec<SanType>) -> impl FnOnce(&mut CertificateParams) {
    move |p: &mut CertificateParams| p.subject_alt_names = sans
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().unwrap())
}

/// Issue 11 (7c): a wildcard dNSName satisfies DNS subtrees as a whole: permitted only if
/// every name it stands for is, excluded if any is (Go's CVE-2025-61727: `*.example.com` under
/// an excluded `bad.example.com`). rustls-webpki 0.103.17 agrees on every case; openssl 3.0
/// accepts the excluded one (host/tests/openssl.rs).
#[test]
fn wildcard_dns_san_against_subtrees() {
    let dns_tree = |n: &str| GeneralSubtree::DnsName(n.into());
    let cases = [
        (vec![], vec![dns_tree("bad.example.com")], false),
        (vec![], vec![dns_tree("example.com")], false),
        (vec![], vec![dns_tree("a.b.example.com")], true),
        (vec![], vec![dns_tree(".bad.example.com")], false),
        (vec![dns_tree("example.com")], vec![], true),
        (vec![dns_tree(".example.com")], vec![], true),
        (vec![dns_tree("www.example.com")], vec![], false),
        (vec![dns_tree("other.com")], vec![], false),
    ];
    for (n, (permitted, excluded, valid)) in cases.into_iter().enumerate() {
        let case = format!("case {n}: permitted {permitted:?} excluded {excluded:?}");
        let c = chain_with(
            |_| {},
            name_constrained(permitted, excluded),
            with_sans(vec![
                SanType::URI(ID.try_into().unwrap()),
                dns("*.example.com"),
            ]),
        );
        let ours = verify_both(&c.leaf, &[&c.intermediate], &[&c.root], &opts());
        let theirs = webpki_server(&c.leaf, &[&c.intermediate], &c.root, NOW);
        if valid {
            ours.unwrap_or_else(|e| panic!("{case}: {e}"));
            theirs.unwrap_or_else(|e| panic!("webpki {case}: {e}"));
        } else {
            let e = ours.expect_err(&case);
            assert_eq!(
                e,
                chain::Error {
                    cert: Position::Intermediate(0),
                    kind: ErrorKind::NameConstraintViolation
                },
                "{case}"
            );
            assert!(theirs.is_err(), "webpki {case}");
        }
    }
}

/// Issue 11 (7d): below any nameConstraints, a dNSName or rfc822Name that is not well-formed
/// is refused, whatever kinds the constraints are about; a non-ASCII name never parses.
/// rustls-webpki refuses a malformed dNSName only under DNS constraints (and every
/// rfc822Name under rfc822 constraints); openssl 3.0 compares bytes and accepts most of these
/// (host/tests/openssl.rs).
#[test]
fn malformed_names_under_name_constraints() {
    let email = |n: &str| SanType::Rfc822Name(n.try_into().unwrap());
    let ip_only = || {
        name_constrained(
            vec![GeneralSubtree::IpAddress(
                "10.0.0.0/8".parse::<rcgen::CidrSubnet>().unwrap(),
            )],
            vec![],
        )
    };
    let dns_only = || name_constrained(vec![GeneralSubtree::DnsName("example.com".into())], vec![]);
    let refused =
        |sans: Vec<SanType>, constraints: &dyn Fn() -> Box<dyn FnOnce(&mut CertificateParams)>| {
            let c = chain_with(|_| {}, constraints(), with_sans(sans));
            verify_both(&c.leaf, &[&c.intermediate], &[&c.root], &opts()).map(|_| ())
        };
    let ip_box = || -> Box<dyn FnOnce(&mut CertificateParams)> { Box::new(ip_only()) };
    let dns_box = || -> Box<dyn FnOnce(&mut CertificateParams)> { Box::new(dns_only()) };
    let ip_san = SanType::IpAddress("10.1.2.3".parse().unwrap());
    for bad in [
        dns("a..example.com"),
        dns("bad name.example.com"),
        dns("x.example.com."),
        dns(".example.com"),
        dns("*.*.example.com"),
        dns("f*.example.com"),
        dns("-x.example.com"),
        dns("10.1.2.3"),
        dns(""),
        email("a b@example.com"),
        email("a@b@example.com"),
        email("@example.com"),
        email("a@example..com"),
        email("example.com"),
    ] {
        let case = format!("{bad:?}");
        // Under an IP-only constraint (the leaf's IP is permitted)...
        let e = refused(vec![ip_san.clone(), bad.clone()], &ip_box).expect_err(&case);
        assert_eq!(e.kind, ErrorKind::NameConstraintViolation, "{case}");
        // ...and under a DNS constraint, where webpki refuses the malformed dNSNames too.
        let e = refused(vec![bad.clone()], &dns_box).expect_err(&case);
        assert_eq!(e.kind, ErrorKind::NameConstraintViolation, "{case}");
        if let SanType::DnsName(_) = bad {
            let c = chain_with(|_| {}, dns_only(), with_sans(vec![bad.clone()]));
            assert!(
                webpki_server(&c.leaf, &[&c.intermediate], &c.root, NOW).is_err(),
                "webpki {case}"
            );
        }
    }
    // webpki does not look at a dNSName's syntax when no DNS subtree is there.
    let c = chain_with(
        |_| {},
        ip_only(),
        with_sans(vec![ip_san.clone(), dns("a..example.com")]),
    );
    webpki_server(&c.leaf, &[&c.intermediate], &c.root, NOW).unwrap();
    // Controls: well-formed names pass both constraints.
    refused(
        vec![
            ip_san.clone(),
            dns("app.example.com"),
            email("first.last@example.com"),
        ],
        &ip_box,
    )
    .unwrap();
    refused(vec![dns("app.example.com"), dns("*.example.com")], &dns_box).unwrap();
    // Without nameConstraints names are not judged here (the peer-name check does that).
    let c = chain_with(|_| {}, |_| {}, with_sans(vec![dns("a..example.com")]));
    verify_both(&c.leaf, &[&c.intermediate], &[&c.root], &opts()).unwrap();

    // A non-ASCII dNSName (UTF-8 in the IA5String) does not parse at all.
    let c = chain_with(
        |_| {},
        |_| {},
        |p| {
            p.subject_alt_names = vec![];
            let name = "\u{e9}.example.com".as_bytes();
            let mut san = vec![0x30, u8::try_from(name.len() + 2).unwrap(), 0x82];
            san.push(u8::try_from(name.len()).unwrap());
            san.extend_from_slice(name);
            p.custom_extensions = vec![CustomExtension::from_oid_content(&[2, 5, 29, 17], san)];
        },
    );
    let e = verify_both(&c.leaf, &[&c.intermediate], &[&c.root], &opts()).unwrap_err();
    assert_eq!(
        e,
        chain::Error {
            cert: Position::Leaf,
            kind: ErrorKind::Malformed(sigil_core::cert::Error::BadExtension(
                sigil_core::cert::Extension::SubjectAltName
            ))
        }
    );
}

/// Issue 11 (7e): key identifiers are not required, but when a certificate's
/// authorityKeyIdentifier and a candidate issuer's subjectKeyIdentifier are both present and
/// differ, the candidate is not its issuer (openssl agrees; rustls-webpki ignores both).
#[test]
fn key_identifiers_rule_candidates_out_never_in() {
    // No authorityKeyIdentifier on the leaf: accepted by all.
    let c = chain_with(
        |_| {},
        |_| {},
        |p| p.use_authority_key_identifier_extension = false,
    );
    verify_both(&c.leaf, &[&c.intermediate], &[&c.root], &opts()).unwrap();
    webpki_server(&c.leaf, &[&c.intermediate], &c.root, NOW).unwrap();
    let leaf = sigil_core::cert::Certificate::parse(&c.leaf).unwrap();
    assert_eq!(leaf.authority_key_id(), None);

    // An authorityKeyIdentifier naming another key: refused here, accepted by webpki.
    let c = chain_with(
        |_| {},
        |_| {},
        |p| {
            p.use_authority_key_identifier_extension = false;
            let mut aki = vec![0x30, 0x16, 0x80, 0x14];
            aki.extend(1..=20u8);
            p.custom_extensions = vec![CustomExtension::from_oid_content(&[2, 5, 29, 35], aki)];
        },
    );
    let e = verify_both(&c.leaf, &[&c.intermediate], &[&c.root], &opts()).unwrap_err();
    assert_eq!(
        e,
        chain::Error {
            cert: Position::Leaf,
            kind: ErrorKind::AuthorityKeyIdMismatch
        }
    );
    webpki_server(&c.leaf, &[&c.intermediate], &c.root, NOW).unwrap();

    // During a root rotation with same-named roots, the other root costs no signature check:
    // two signatures suffice whichever root comes first.
    let a = chain();
    let b = chain();
    let two = Options {
        budget: chain::Budget {
            signatures: 2,
            ..chain::Budget::default()
        },
        ..opts()
    };
    let found = verify_both(&a.leaf, &[&a.intermediate], &[&b.root, &a.root], &two).unwrap();
    assert_eq!(found.anchor(), 1);
}
