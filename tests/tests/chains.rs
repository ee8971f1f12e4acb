//! Path validation on chains rcgen builds, through both of Sigil's verifiers, and — where the
//! two define the same rule — against rustls-webpki on the same inputs.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, KeyPair, KeyUsagePurpose,
    NameConstraints, SanType, PKCS_ECDSA_P256_SHA256,
};
use sigil_core::crypto::{RustCryptoVerifier, SignatureVerifier};
use sigil_core::path::{
    self, ErrorKind, NameMismatch, Options, PeerName, Position, TrustBundle, Usage,
};
use sigil_core::spiffe::{SpiffeId, TrustDomain};
use sigil_core::UnixTime;
use sigil_host::verifier::RingVerifier;

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
) -> Result<path::VerifiedPath, path::Error> {
    let mut bundle: TrustBundle<'_, 4> = TrustBundle::new();
    for a in anchors {
        bundle.add(a).unwrap();
    }
    let ours = path::verify(leaf, ints, &bundle, &RustCryptoVerifier, options);
    let ring = path::verify(leaf, ints, &bundle, &RingVerifier, options);
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
            path::Error {
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
        path::Error {
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
        path::Error {
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
    // A foreign root with the same name: the candidate is tried and its key refuses.
    let e = verify_both(&a.leaf, &[&a.intermediate], &[&b.root], &opts()).unwrap_err();
    assert_eq!(e.cert, Position::Intermediate(0));
    assert!(matches!(e.kind, ErrorKind::BadSignature(_)), "{e}");
    assert!(webpki_server(&a.leaf, &[&a.intermediate], &b.root, NOW).is_err());
    // A foreign root with another name: no candidate at all.
    let other =
        CertifiedIssuer::self_signed(ca_params("Other", BasicConstraints::Unconstrained), key())
            .unwrap();
    let e = verify_both(&a.leaf, &[&a.intermediate], &[other.der()], &opts()).unwrap_err();
    assert_eq!(
        e,
        path::Error {
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
            path::Error {
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
        path::Error {
            cert: Position::Anchor(0),
            kind: ErrorKind::NameConstraintViolation
        }
    );
}

#[test]
fn depth_cap_and_budget() {
    // root → i1 → i2 → i3 → leaf
    let root = CertifiedIssuer::self_signed(ca_params("R", BasicConstraints::Unconstrained), key())
        .unwrap();
    let i1 = CertifiedIssuer::signed_by(
        ca_params("I1", BasicConstraints::Unconstrained),
        key(),
        &root,
    )
    .unwrap();
    let i2 =
        CertifiedIssuer::signed_by(ca_params("I2", BasicConstraints::Unconstrained), key(), &i1)
            .unwrap();
    let i3 =
        CertifiedIssuer::signed_by(ca_params("I3", BasicConstraints::Unconstrained), key(), &i2)
            .unwrap();
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
    let tight = path::Budget {
        signatures: 2,
        ..path::Budget::default()
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
        ErrorKind::BudgetExceeded(path::BudgetKind::Signatures)
    );
}

#[test]
fn many_same_named_intermediates_stay_within_budget() {
    // Eight intermediates all named like the leaf's issuer and each other, none valid: the
    // search must end with an error, not loop, and within the default budget.
    let root =
        CertifiedIssuer::self_signed(ca_params("Loop", BasicConstraints::Unconstrained), key())
            .unwrap();
    let cas: Vec<_> = (0..8)
        .map(|_| {
            CertifiedIssuer::signed_by(
                ca_params("Loop", BasicConstraints::Unconstrained),
                key(),
                &root,
            )
            .unwrap()
        })
        .collect();
    let leaf = leaf_params().signed_by(&key(), &cas[0]).unwrap();
    let other_root =
        CertifiedIssuer::self_signed(ca_params("Other", BasicConstraints::Unconstrained), key())
            .unwrap();
    let ints: Vec<&[u8]> = cas.iter().map(|c| c.der().as_ref()).collect();
    let e = verify_both(leaf.der(), &ints, &[other_root.der()], &opts()).unwrap_err();
    assert!(
        matches!(
            e.kind,
            ErrorKind::BudgetExceeded(_)
                | ErrorKind::BadSignature(_)
                | ErrorKind::UnknownIssuer
                | ErrorKind::MaxDepthExceeded { .. }
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
        csr.verify_signature(&RustCryptoVerifier).unwrap();
        csr.verify_signature(&RingVerifier).unwrap();
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
    let root = CertifiedIssuer::self_signed(ca_params("R", BasicConstraints::Unconstrained), key())
        .unwrap();
    let mut p = leaf_params();
    p.subject_alt_names = vec![SanType::URI(ID.try_into().unwrap())];
    let leaf = p.signed_by(&leaf_key, &root).unwrap();
    let cert = sigil_core::cert::Certificate::parse(leaf.der()).unwrap();
    let mine = PublicKey::EcP256(leaf_key.public_key_raw());
    let id = check_workload(&cert, mine, Some(SpiffeId::parse(ID).unwrap())).unwrap();
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
            Some(SpiffeId::parse("spiffe://example.org/ns/default/x").unwrap())
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
    let root = CertifiedIssuer::self_signed(
        ca_params("example.org", BasicConstraints::Unconstrained),
        ed(),
    )
    .unwrap();
    let int = CertifiedIssuer::signed_by(
        ca_params("issuer", BasicConstraints::Unconstrained),
        ed(),
        &root,
    )
    .unwrap();
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
        Some(id),
    )
    .unwrap();
    // A tampered Ed25519 signature is refused by both verifiers.
    let mut bad = leaf.der().to_vec();
    let last = bad.len() - 2;
    bad[last] ^= 0x40;
    let e = verify_both(&bad, &[int.der()], &[root.der()], &options).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::BadSignature(_)), "{e}");
}
